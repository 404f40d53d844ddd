//! [`CodeSession`]: several runs that share their state, as the cells of a
//! notebook do, and one reset when the session ends.

use std::time::Instant;

use cleanslate::{CancelToken, Session, Status};

use crate::error::{ExecError, ExecErrorKind};
use crate::files::Scratch;
use crate::result::{RunErrorKind, RunResult};
use crate::sandbox::{CodeSandbox, Shared, check_code, turn};
use crate::tools::Door;

impl CodeSandbox {
    /// Start a session: its runs see what the earlier runs of the session
    /// left (variables, imports, files in /tmp), and when it ends —
    /// [`finish`](CodeSession::finish) or drop — the sandbox is back at the
    /// setup snapshot, as after a single run. Each run has the sandbox's
    /// limits; files in /output are handed back after each run.
    ///
    /// A run that does not complete (a timeout, running out of memory, a
    /// cancel) leaves the interpreter in an unknown state: the session's
    /// later runs are refused ([`ExecErrorKind::SessionEnded`]) until it
    /// ends. An exception or an exit is a completed run.
    ///
    /// ```no_run
    /// use cleanslate_exec::CodeSandbox;
    /// let mut sandbox = CodeSandbox::builder().build()?;
    /// {
    ///     let mut session = sandbox.session();
    ///     session.run("rows = [3, 1, 2]")?;
    ///     assert_eq!(session.run("print(sorted(rows))")?.stdout, b"[1, 2, 3]\n");
    ///     session.finish()?;
    /// }
    /// // The session's state is gone.
    /// assert_eq!(sandbox.run("print('rows' in dir())")?.stdout, b"False\n");
    /// # Ok::<(), cleanslate_exec::ExecError>(())
    /// ```
    pub fn session(&mut self) -> CodeSession<'_> {
        let CodeSandbox {
            shared,
            sandbox,
            door,
            scratch,
            code_buffer,
            ..
        } = self;
        CodeSession {
            session: Some(sandbox.session()),
            shared,
            door,
            scratch,
            code_buffer: *code_buffer,
            ended: None,
        }
    }
}

/// Runs that share their state, from [`CodeSandbox::session`].
pub struct CodeSession<'a> {
    /// `None` once finished.
    session: Option<Session<'a>>,
    shared: &'a Shared,
    door: &'a Door,
    scratch: &'a mut Scratch,
    code_buffer: u32,
    /// Why an earlier run left the interpreter unusable.
    ended: Option<RunErrorKind>,
}

impl CodeSession<'_> {
    /// Run `code` on the state the session's earlier runs left. The result's
    /// `reset` is `None`: the reset comes when the session ends.
    ///
    /// # Errors
    ///
    /// - [`ExecErrorKind::SessionEnded`] when an earlier run of the session
    ///   did not complete (the state it left is unknown): finish the
    ///   session and start another.
    /// - [`ExecErrorKind::InvalidArguments`] for code larger than the guest
    ///   takes; [`ExecErrorKind::Io`] for the output folder.
    pub fn run(&mut self, code: &str) -> Result<RunResult, ExecError> {
        self.run_inner(code, None)
    }

    /// Like [`run`](CodeSession::run); cancelling `token` stops the run
    /// (and so ends the session's state).
    ///
    /// # Errors
    ///
    /// As for [`run`](CodeSession::run).
    pub fn run_cancellable(
        &mut self,
        code: &str,
        token: &CancelToken,
    ) -> Result<RunResult, ExecError> {
        self.run_inner(code, Some(token))
    }

    fn run_inner(
        &mut self,
        code: &str,
        cancel: Option<&CancelToken>,
    ) -> Result<RunResult, ExecError> {
        check_code(code)?;
        if let Some(kind) = self.ended {
            return Err(ExecError::new(
                ExecErrorKind::SessionEnded,
                format!(
                    "an earlier run of this session did not complete ({}): its state is gone; finish the session and start another",
                    kind.as_str()
                ),
            ));
        }
        let Some(session) = self.session.as_mut() else {
            return Err(ExecError::new(
                ExecErrorKind::SessionEnded,
                "the session has finished",
            ));
        };
        let started = Instant::now();
        self.door
            .start_run(Some(started + self.shared.config.run_timeout()));
        let outcome = turn(session, code.as_bytes(), Some(self.code_buffer), cancel);
        let poisoned = session.status() == Status::Poisoned;
        let collected = self.scratch.take_output(self.shared.config.files_limit());
        let mut result = self
            .shared
            .result_of(outcome, self.scratch.output.is_some())?;
        self.shared.hand_over_files(&mut result, collected?)?;
        if poisoned {
            self.ended = Some(result.error.as_ref().map_or(RunErrorKind::Trap, |e| e.kind));
        }
        result.duration = started.elapsed();
        Ok(result)
    }

    /// End the session: the sandbox is back at the setup snapshot (as it
    /// is when the session is dropped; this says whether that worked).
    ///
    /// # Errors
    ///
    /// [`ExecErrorKind::Sandbox`] when the reset failed (the sandbox is
    /// then unrecoverable: build a new one); [`ExecErrorKind::Io`] for the
    /// scratch folders.
    pub fn finish(mut self) -> Result<(), ExecError> {
        self.end()
    }

    fn end(&mut self) -> Result<(), ExecError> {
        let reset = match self.session.take() {
            Some(session) => session.finish(),
            None => return Ok(()),
        };
        // Whatever happened to the reset, no file of the session stays.
        let _ = self.scratch.take_output(0);
        self.scratch.reset_tmp()?;
        reset.map_err(|e| ExecError::sandbox("the reset after the session failed", e))
    }
}

impl Drop for CodeSession<'_> {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

impl std::fmt::Debug for CodeSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeSession")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
