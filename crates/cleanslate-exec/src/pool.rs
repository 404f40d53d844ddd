//! [`CodeSandboxPool`]: several [`CodeSandbox`]es of one setup, for many
//! threads.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cleanslate::CancelToken;

use crate::error::{ExecError, ExecErrorKind};
use crate::result::RunResult;
use crate::sandbox::{CodeSandbox, CodeSandboxBuilder};

/// A pool of sandboxes that share one setup: the setup runs once, the
/// other members are forks of its snapshot. [`run`](CodeSandboxPool::run)
/// takes a free one (waiting up to the pool's wait), runs, and gives it
/// back; a member whose reset failed is replaced by a new fork.
///
/// ```no_run
/// use std::time::Duration;
/// use cleanslate_exec::{CodeSandbox, CodeSandboxPool};
///
/// let pool = CodeSandboxPool::new(CodeSandbox::builder().setup("import math"), 4)?;
/// std::thread::scope(|s| {
///     for i in 0..8 {
///         let pool = &pool;
///         s.spawn(move || pool.run(&format!("print(math.factorial({i}))")));
///     }
/// });
/// # Ok::<(), cleanslate_exec::ExecError>(())
/// ```
pub struct CodeSandboxPool {
    idle: Mutex<Vec<CodeSandbox>>,
    returned: Condvar,
    /// A member to fork replacements from (never runs code). In a mutex
    /// only so that the pool is `Sync`: a sandbox is `Send`, not `Sync`.
    template: Mutex<CodeSandbox>,
    setup_time: Duration,
    setup_from_cache: bool,
    size: usize,
    max_wait: Mutex<Duration>,
}

impl CodeSandboxPool {
    /// Build `size` sandboxes (1 to 1024) from `builder`: one runs the
    /// setup, the rest are forked from its snapshot.
    ///
    /// # Errors
    ///
    /// Those of [`CodeSandboxBuilder::build`] and [`CodeSandbox::fork`];
    /// [`ExecErrorKind::InvalidArguments`] for a size of 0 or over 1024.
    pub fn new(builder: CodeSandboxBuilder, size: usize) -> Result<CodeSandboxPool, ExecError> {
        check_size(size)?;
        CodeSandboxPool::from_sandbox(builder.build()?, size)
    }

    /// A pool of `size` sandboxes (1 to 1024) forked from `template`'s
    /// setup snapshot; `template` itself only serves to fork replacements.
    ///
    /// ```no_run
    /// use cleanslate_exec::{CodeSandbox, CodeSandboxPool};
    ///
    /// let template = CodeSandbox::builder().setup("import math").build()?;
    /// let pool = CodeSandboxPool::from_sandbox(template, 2)?;
    /// assert_eq!(pool.run("print(math.pi > 3)")?.stdout, b"True\n");
    /// # Ok::<(), cleanslate_exec::ExecError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`CodeSandbox::fork`]; [`ExecErrorKind::InvalidArguments`]
    /// for a size of 0 or over 1024.
    pub fn from_sandbox(template: CodeSandbox, size: usize) -> Result<CodeSandboxPool, ExecError> {
        check_size(size)?;
        let idle = (0..size)
            .map(|_| template.fork())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CodeSandboxPool {
            idle: Mutex::new(idle),
            returned: Condvar::new(),
            setup_time: template.setup_time(),
            setup_from_cache: template.setup_from_cache(),
            template: Mutex::new(template),
            size,
            max_wait: Mutex::new(Duration::from_secs(30)),
        })
    }

    /// How long [`run`](CodeSandboxPool::run) waits for a free sandbox
    /// (default 30 s).
    pub fn set_max_wait(&self, wait: Duration) {
        *self.max_wait.lock().unwrap_or_else(PoisonError::into_inner) = wait;
    }

    /// How many sandboxes the pool holds.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How many are free now.
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// How long the setup took ([`CodeSandbox::setup_time`] of its sandbox).
    pub fn setup_time(&self) -> Duration {
        self.setup_time
    }

    /// Another sandbox of the pool's setup, not a member: forked from its
    /// snapshot, as members are (for a caller that needs a sandbox of its
    /// own for a while, e.g. for a [`session`](CodeSandbox::session)).
    ///
    /// # Errors
    ///
    /// Those of [`CodeSandbox::fork`].
    pub fn fork(&self) -> Result<CodeSandbox, ExecError> {
        self.template
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fork()
    }

    /// Whether the pool's setup came from the setup cache
    /// ([`CodeSandbox::setup_from_cache`]).
    pub fn setup_from_cache(&self) -> bool {
        self.setup_from_cache
    }

    /// Run `code` in a free sandbox.
    ///
    /// # Errors
    ///
    /// Those of [`CodeSandbox::run`], and [`ExecErrorKind::Sandbox`] when no
    /// sandbox became free within the pool's wait.
    pub fn run(&self, code: &str) -> Result<RunResult, ExecError> {
        self.run_inner(code, None)
    }

    /// Like [`run`](CodeSandboxPool::run), cancellable by `token`.
    ///
    /// # Errors
    ///
    /// Those of [`run`](CodeSandboxPool::run).
    pub fn run_cancellable(&self, code: &str, token: &CancelToken) -> Result<RunResult, ExecError> {
        self.run_inner(code, Some(token))
    }

    fn run_inner(&self, code: &str, token: Option<&CancelToken>) -> Result<RunResult, ExecError> {
        let mut sandbox = self.take()?;
        let outcome = match token {
            Some(token) => sandbox.run_cancellable(code, token),
            None => sandbox.run(code),
        };
        // A sandbox whose reset failed is unrecoverable: replace it.
        if outcome
            .as_ref()
            .is_err_and(|e| e.kind() == ExecErrorKind::Sandbox)
        {
            let template = self.template.lock().unwrap_or_else(PoisonError::into_inner);
            match template.fork() {
                Ok(fresh) => sandbox = fresh,
                Err(e) => {
                    tracing_note(&e);
                }
            }
        }
        self.give_back(sandbox);
        outcome
    }

    fn take(&self) -> Result<CodeSandbox, ExecError> {
        let wait = *self.max_wait.lock().unwrap_or_else(PoisonError::into_inner);
        let deadline = Instant::now() + wait;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(sandbox) = idle.pop() {
                return Ok(sandbox);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ExecError::new(
                    ExecErrorKind::Sandbox,
                    format!("no sandbox of the pool became free within {wait:?}"),
                ));
            }
            idle = self
                .returned
                .wait_timeout(idle, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn give_back(&self, sandbox: CodeSandbox) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sandbox);
        self.returned.notify_one();
    }
}

fn check_size(size: usize) -> Result<(), ExecError> {
    if (1..=1024).contains(&size) {
        Ok(())
    } else {
        Err(ExecError::invalid(format!(
            "a pool holds 1 to 1024 sandboxes, not {size}"
        )))
    }
}

/// A replacement that could not be made: the broken member stays, and its
/// next run reports the failure again.
fn tracing_note(error: &ExecError) {
    eprintln!("cleanslate-exec: cannot replace a failed sandbox: {error}");
}

impl std::fmt::Debug for CodeSandboxPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeSandboxPool")
            .field("size", &self.size)
            .field("idle", &self.idle())
            .finish_non_exhaustive()
    }
}
