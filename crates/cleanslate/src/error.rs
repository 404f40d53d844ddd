//! The one error type of the library, and the vocabulary of what can go wrong.
//!
//! Every failure a caller can see is an [`Error`] with a [`kind()`](Error::kind).
//! Kinds are stable names (the CLI and the server print them in snake_case);
//! messages say what happened and what to do about it.
//!
//! A failed reset never hides the guest's own failure: an error of kind
//! [`ErrorKind::ResetFailed`] carries the call's original error in
//! [`Error::original_error`], and both appear in its message.

use std::fmt;
use std::sync::Arc;

/// Why a guest trapped.
///
/// Names follow the WebAssembly specification's trap conditions; `as_str`
/// gives the snake_case name the CLI prints.
///
/// ```
/// use cleanslate::TrapCode;
/// assert_eq!(TrapCode::Unreachable.as_str(), "unreachable");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrapCode {
    /// The guest executed `unreachable` (Rust guests do this when they panic).
    Unreachable,
    /// A load or store outside the linear memory's current size.
    MemoryOutOfBounds,
    /// Integer division or remainder by zero.
    IntegerDivideByZero,
    /// Signed integer division overflowed (`i32::MIN / -1`).
    IntegerOverflow,
    /// `call_indirect` found a function of the wrong type.
    IndirectCallTypeMismatch,
    /// A table access outside the table's current size.
    TableOutOfBounds,
    /// A call through a null table entry or a null reference.
    NullReference,
    /// A float-to-int conversion of NaN or of a value out of range.
    BadConversionToInteger,
    /// An atomic access at a misaligned address.
    UnalignedAtomic,
    /// Any other trap; the error's message has the engine's description.
    Other,
}

impl TrapCode {
    /// The snake_case name used in CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            TrapCode::Unreachable => "unreachable",
            TrapCode::MemoryOutOfBounds => "memory_out_of_bounds",
            TrapCode::IntegerDivideByZero => "integer_divide_by_zero",
            TrapCode::IntegerOverflow => "integer_overflow",
            TrapCode::IndirectCallTypeMismatch => "indirect_call_type_mismatch",
            TrapCode::TableOutOfBounds => "table_out_of_bounds",
            TrapCode::NullReference => "null_reference",
            TrapCode::BadConversionToInteger => "bad_conversion_to_integer",
            TrapCode::UnalignedAtomic => "unaligned_atomic",
            TrapCode::Other => "other",
        }
    }
}

impl fmt::Display for TrapCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure an [`Error`] is.
///
/// `as_str` gives the stable snake_case name printed by the CLI (`"trap"`,
/// `"out_of_memory"`, ...).
///
/// ```
/// use cleanslate::{ErrorKind, TrapCode};
/// assert_eq!(ErrorKind::OutOfFuel.as_str(), "out_of_fuel");
/// assert_eq!(ErrorKind::Trap(TrapCode::Unreachable).as_str(), "trap");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The guest trapped.
    Trap(TrapCode),
    /// The guest used more stack than the sandbox's stack limit.
    StackOverflow,
    /// The guest needed more memory than the sandbox's memory limit allows
    /// (a `memory.grow` was refused and the call then failed), or the module's
    /// initial memory is larger than the limit.
    OutOfMemory,
    /// The call used up its fuel.
    OutOfFuel,
    /// The call ran longer than the sandbox's timeout.
    Timeout,
    /// The call was stopped through an [`InterruptHandle`](crate::InterruptHandle).
    Cancelled,
    /// A host function returned an error.
    HostError,
    /// A host function panicked; the panic was caught and the sandbox reset.
    HostPanic,
    /// No exported function has that name.
    FunctionNotFound,
    /// The arguments do not match the function's signature, or a value given
    /// to the API is out of range.
    InvalidArguments,
    /// The bytes are not a valid WebAssembly module (binary or text).
    InvalidModule,
    /// The module imports something the sandbox does not provide.
    MissingImport,
    /// The module could not be instantiated or initialised.
    Instantiation,
    /// The reset after a call failed or could not be verified; the sandbox is
    /// now unrecoverable. [`Error::original_error`] has the call's own error.
    ResetFailed,
    /// The sandbox is unrecoverable (an earlier reset failed): build a new one.
    Unrecoverable,
    /// A call inside a session failed and left the session's state unknown:
    /// drop the session or `restore` a snapshot to recover.
    Poisoned,
    /// The guest reported an error through the data ABI (docs/ABI.md); the
    /// guest's own message is in [`Error::guest_message`].
    GuestError,
    /// A guest panicked (a Rust guest built with the SDK reports its panic
    /// message before trapping); the message is in [`Error::guest_message`].
    GuestPanic,
    /// The guest broke the data ABI: a pointer or length outside its memory,
    /// a malformed result record, or output that does not decode (bad JSON,
    /// bad UTF-8). The host read nothing outside the guest's memory.
    InvalidGuestOutput,
    /// The guest produced more output (or stdout/stderr, or host-call input)
    /// than the sandbox's output limit allows.
    OutputTooLarge,
    /// A WASI guest called `proc_exit` with a non-zero code, or exited from a
    /// function that must return values. [`Error::exit_code`] has the code;
    /// [`Sandbox::call_with`](crate::Sandbox::call_with) treats exits as
    /// results instead.
    Exited,
    /// Every sandbox of a [`SandboxPool`](crate::SandboxPool) stayed busy
    /// for the pool's wait limit. Retry later, or grow the pool.
    PoolExhausted,
    /// A WebAssembly exception (exception handling proposal) escaped the
    /// called function: the guest threw and nothing caught it.
    UncaughtException,
    /// A saved snapshot ([`Snapshot::save`](crate::Snapshot::save)) could
    /// not be written or read: the file is missing, damaged or truncated,
    /// was saved by another version of Cleanslate, or belongs to another
    /// module. Take the snapshot again.
    InvalidSnapshot,
}

impl ErrorKind {
    /// The stable snake_case name of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Trap(_) => "trap",
            ErrorKind::StackOverflow => "stack_overflow",
            ErrorKind::OutOfMemory => "out_of_memory",
            ErrorKind::OutOfFuel => "out_of_fuel",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::HostError => "host_error",
            ErrorKind::HostPanic => "host_panic",
            ErrorKind::FunctionNotFound => "function_not_found",
            ErrorKind::InvalidArguments => "invalid_arguments",
            ErrorKind::InvalidModule => "invalid_module",
            ErrorKind::MissingImport => "missing_import",
            ErrorKind::Instantiation => "instantiation",
            ErrorKind::ResetFailed => "reset_failed",
            ErrorKind::Unrecoverable => "unrecoverable",
            ErrorKind::Poisoned => "poisoned",
            ErrorKind::GuestError => "guest_error",
            ErrorKind::GuestPanic => "guest_panic",
            ErrorKind::InvalidGuestOutput => "invalid_guest_output",
            ErrorKind::OutputTooLarge => "output_too_large",
            ErrorKind::Exited => "exited",
            ErrorKind::PoolExhausted => "pool_exhausted",
            ErrorKind::UncaughtException => "uncaught_exception",
            ErrorKind::InvalidSnapshot => "invalid_snapshot",
        }
    }

    /// The trap code, when this kind is a trap.
    pub fn trap_code(self) -> Option<TrapCode> {
        match self {
            ErrorKind::Trap(code) => Some(code),
            _ => None,
        }
    }

    /// Whether guest code ran and failed (as opposed to a refused or
    /// malformed request, or a failure of the sandbox itself).
    pub fn is_guest_failure(self) -> bool {
        // Every kind is placed on purpose (no wildcard): a kind added later
        // does not compile until someone decides, since a guest failure
        // poisons a session and a refusal does not.
        match self {
            ErrorKind::Trap(_)
            | ErrorKind::StackOverflow
            | ErrorKind::OutOfMemory
            | ErrorKind::OutOfFuel
            | ErrorKind::Timeout
            | ErrorKind::Cancelled
            | ErrorKind::HostError
            | ErrorKind::HostPanic
            | ErrorKind::GuestError
            | ErrorKind::GuestPanic
            | ErrorKind::InvalidGuestOutput
            | ErrorKind::OutputTooLarge
            | ErrorKind::Exited
            | ErrorKind::UncaughtException => true,
            ErrorKind::FunctionNotFound
            | ErrorKind::InvalidArguments
            | ErrorKind::InvalidModule
            | ErrorKind::MissingImport
            | ErrorKind::Instantiation
            | ErrorKind::ResetFailed
            | ErrorKind::Unrecoverable
            | ErrorKind::Poisoned
            | ErrorKind::PoolExhausted
            | ErrorKind::InvalidSnapshot => false,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Trap(code) => write!(f, "trap ({code})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// An error from Cleanslate.
///
/// ```
/// use cleanslate::{ErrorKind, Runtime};
///
/// let runtime = Runtime::new()?;
/// let err = runtime.load_bytes(b"(module (func $f (result i32)))").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidModule);
/// println!("{err}"); // says where the module is broken
/// # Ok::<(), cleanslate::Error>(())
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The call's own error when a reset failed after it.
    original: Option<Box<Error>>,
    /// Where the module is broken, for `InvalidModule`.
    offset: Option<usize>,
    /// What the guest said, for `GuestError` and `GuestPanic`.
    guest_message: Option<String>,
    /// The exit code, for `Exited`.
    exit_code: Option<i32>,
    /// What a WASI guest wrote before the call failed.
    captured: Option<Box<Captured>>,
    /// The embedder's own error behind a `HostError` (what its host
    /// function returned), reachable through `source()`.
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// What a WASI guest wrote to stdout and stderr during one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            original: None,
            offset: None,
            guest_message: None,
            exit_code: None,
            captured: None,
            source: None,
        }
    }

    /// Keep the embedder's own error behind this one.
    pub(crate) fn with_source(
        mut self,
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = source;
        self
    }

    /// An error the guest itself reported (`GuestError`, `GuestPanic`),
    /// keeping its message apart from ours.
    pub(crate) fn from_guest(kind: ErrorKind, function: &str, message: String) -> Self {
        let what = match kind {
            ErrorKind::GuestPanic => "panicked",
            _ => "reported an error",
        };
        Error {
            guest_message: Some(message.clone()),
            ..Error::new(kind, format!("`{function}` {what}: {message}"))
        }
    }

    pub(crate) fn exited(function: &str, code: i32) -> Self {
        Error {
            exit_code: Some(code),
            ..Error::new(
                ErrorKind::Exited,
                format!("`{function}` exited with code {code} (proc_exit)"),
            )
        }
    }

    /// Attach what the guest wrote to stdout/stderr before failing.
    pub(crate) fn with_captured(mut self, captured: Captured) -> Self {
        if !captured.stdout.is_empty() || !captured.stderr.is_empty() {
            self.captured = Some(Box::new(captured));
        }
        self
    }

    pub(crate) fn invalid_module(message: impl Into<String>, offset: Option<usize>) -> Self {
        Error {
            offset,
            ..Error::new(ErrorKind::InvalidModule, message)
        }
    }

    /// A failed reset that happened after a call that itself ended with
    /// `original` (if it failed). The sandbox is unrecoverable from now on.
    pub(crate) fn reset_failed(reset_problem: impl Into<String>, original: Option<Error>) -> Self {
        Error {
            original: original.map(Box::new),
            ..Error::new(ErrorKind::ResetFailed, reset_problem)
        }
    }

    /// Prefix the message with context, keeping kind and details.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// An [`ErrorKind::InvalidArguments`] error, for embedders that check
    /// a request before handing it to a sandbox and want one error type.
    ///
    /// ```
    /// let err = cleanslate::Error::invalid_arguments("the body is empty");
    /// assert_eq!(err.kind(), cleanslate::ErrorKind::InvalidArguments);
    /// ```
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArguments, message)
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message alone, without the original error of a failed reset.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For [`ErrorKind::ResetFailed`]: the error the call itself ended with,
    /// if it failed before the reset did. The reset failure never hides it.
    pub fn original_error(&self) -> Option<&Error> {
        self.original.as_deref()
    }

    /// For [`ErrorKind::InvalidModule`]: the byte offset in the module where
    /// the problem was found, when the parser knows it.
    pub fn offset(&self) -> Option<usize> {
        self.offset
    }

    /// For [`ErrorKind::GuestError`] and [`ErrorKind::GuestPanic`]: the
    /// guest's own message, exactly as it reported it.
    ///
    /// ```
    /// use cleanslate::{ErrorKind, Runtime, Sandbox};
    ///
    /// let runtime = Runtime::new()?;
    /// let module = runtime.load_bytes(r#"(module
    ///     (memory (export "memory") 1)
    ///     (data (i32.const 16) "\01\00\00\00\40\00\00\00\03\00\00\00") ;; status 1, message at 64, 3 bytes
    ///     (data (i32.const 64) "no!")
    ///     (func (export "cleanslate_alloc") (param i32) (result i32) (i32.const 1024))
    ///     (func (export "refuse") (param i32 i32) (result i32) (i32.const 16)))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// let err = sandbox.call_bytes("refuse", b"input").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::GuestError);
    /// assert_eq!(err.guest_message(), Some("no!"));
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn guest_message(&self) -> Option<&str> {
        self.guest_message.as_deref()
    }

    /// For [`ErrorKind::Exited`]: the code the guest passed to `proc_exit`.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// What a WASI guest wrote to stdout before the call failed (empty for
    /// other guests).
    pub fn stdout(&self) -> &[u8] {
        self.captured.as_ref().map_or(&[], |c| &c.stdout)
    }

    /// What a WASI guest wrote to stderr before the call failed.
    pub fn stderr(&self) -> &[u8] {
        self.captured.as_ref().map_or(&[], |c| &c.stderr)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(offset) = self.offset {
            write!(f, " (at byte offset {offset:#x})")?;
        }
        if let Some(original) = &self.original {
            write!(
                f,
                "; the call itself had failed first with {}: {original}",
                original.kind
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("original", &self.original)
            .field("guest_message", &self.guest_message)
            .field("exit_code", &self.exit_code)
            .finish()
    }
}

/// The cause behind this error: the call's original error when a reset
/// failed after it, or the embedder's own error that a host function
/// returned (for `HostError`), so `downcast_ref` finds the embedder's type.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if let Some(original) = self.original.as_deref() {
            return Some(original);
        }
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A convenient alias for results of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_failure_keeps_the_original_error_in_message_and_value() {
        let original = Error::new(
            ErrorKind::Trap(TrapCode::Unreachable),
            "guest hit unreachable",
        );
        let err = Error::reset_failed("memory differs at page 3", Some(original));
        assert_eq!(err.kind(), ErrorKind::ResetFailed);
        let kept = err.original_error().expect("original kept");
        assert_eq!(kept.kind(), ErrorKind::Trap(TrapCode::Unreachable));
        let text = err.to_string();
        assert!(text.contains("memory differs at page 3"), "{text}");
        assert!(text.contains("guest hit unreachable"), "{text}");
        assert!(std::error::Error::source(&err).is_some());
    }

    /// Every kind, kept complete by the exhaustive match below: a new
    /// variant does not compile until it is listed here.
    fn every_kind() -> Vec<ErrorKind> {
        let kinds = vec![
            ErrorKind::Trap(TrapCode::Other),
            ErrorKind::StackOverflow,
            ErrorKind::OutOfMemory,
            ErrorKind::OutOfFuel,
            ErrorKind::Timeout,
            ErrorKind::Cancelled,
            ErrorKind::HostError,
            ErrorKind::HostPanic,
            ErrorKind::FunctionNotFound,
            ErrorKind::InvalidArguments,
            ErrorKind::InvalidModule,
            ErrorKind::MissingImport,
            ErrorKind::Instantiation,
            ErrorKind::ResetFailed,
            ErrorKind::Unrecoverable,
            ErrorKind::Poisoned,
            ErrorKind::GuestError,
            ErrorKind::GuestPanic,
            ErrorKind::InvalidGuestOutput,
            ErrorKind::OutputTooLarge,
            ErrorKind::Exited,
            ErrorKind::PoolExhausted,
            ErrorKind::UncaughtException,
            ErrorKind::InvalidSnapshot,
        ];
        for kind in &kinds {
            match kind {
                ErrorKind::Trap(_)
                | ErrorKind::StackOverflow
                | ErrorKind::OutOfMemory
                | ErrorKind::OutOfFuel
                | ErrorKind::Timeout
                | ErrorKind::Cancelled
                | ErrorKind::HostError
                | ErrorKind::HostPanic
                | ErrorKind::FunctionNotFound
                | ErrorKind::InvalidArguments
                | ErrorKind::InvalidModule
                | ErrorKind::MissingImport
                | ErrorKind::Instantiation
                | ErrorKind::ResetFailed
                | ErrorKind::Unrecoverable
                | ErrorKind::Poisoned
                | ErrorKind::GuestError
                | ErrorKind::GuestPanic
                | ErrorKind::InvalidGuestOutput
                | ErrorKind::OutputTooLarge
                | ErrorKind::Exited
                | ErrorKind::PoolExhausted
                | ErrorKind::UncaughtException
                | ErrorKind::InvalidSnapshot => {}
            }
        }
        kinds
    }

    #[test]
    fn the_readme_names_every_error_kind() {
        let readme = include_str!("../../../README.md");
        let missing: Vec<&str> = every_kind()
            .into_iter()
            .map(ErrorKind::as_str)
            .filter(|name| !readme.contains(&format!("`{name}`")))
            .collect();
        assert!(missing.is_empty(), "README.md does not name {missing:?}");
    }

    #[test]
    fn kinds_have_stable_snake_case_names() {
        assert_eq!(ErrorKind::StackOverflow.as_str(), "stack_overflow");
        assert_eq!(ErrorKind::HostPanic.as_str(), "host_panic");
        assert_eq!(
            TrapCode::IndirectCallTypeMismatch.as_str(),
            "indirect_call_type_mismatch"
        );
        assert!(ErrorKind::Timeout.is_guest_failure());
        assert!(!ErrorKind::FunctionNotFound.is_guest_failure());
    }
}
