//! Sessions: several calls that share state, reset when the session ends.

use std::fmt;

use crate::error::Error;
use crate::reset::guard::ResetGuard;
use crate::sandbox::{Call, CallResult, SandboxCore, Status};
use crate::snapshot::Snapshot;
use crate::value::{Val, WasmValues};

/// Calls that keep their state between them; the sandbox is reset to its
/// snapshot when the session is dropped — including when the code holding
/// it panics.
///
/// A call that fails inside a session leaves the guest's state unknown
/// (it may have stopped half-way through an update), so the sandbox turns
/// [`Status::Poisoned`] and the session refuses further calls until it is
/// dropped.
///
/// ```
/// use cleanslate::{Runtime, Sandbox, Val};
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(r#"(module (global $n (mut i64) (i64.const 0))
///     (func (export "next") (result i64)
///         (global.set $n (i64.add (global.get $n) (i64.const 1))) (global.get $n)))"#)?;
/// let mut sandbox = Sandbox::builder(&module).build()?;
/// {
///     let mut session = sandbox.session();
///     assert_eq!(session.call("next", &[])?, [Val::I64(1)]);
///     assert_eq!(session.call("next", &[])?, [Val::I64(2)]);
/// } // reset here
/// assert_eq!(sandbox.call("next", &[])?, [Val::I64(1)]);
/// # Ok::<(), cleanslate::Error>(())
/// ```
pub struct Session<'a> {
    guard: ResetGuard<'a>,
}

impl<'a> Session<'a> {
    pub(crate) fn new(core: &'a mut SandboxCore) -> Self {
        Session {
            guard: ResetGuard::arm(core),
        }
    }

    /// Call `name` without resetting afterwards.
    pub fn call(&mut self, name: &str, args: &[Val]) -> Result<Vec<Val>, Error> {
        let core = &mut *self.guard;
        core.ensure_status_allows_calls()?;
        let target = core.resolve(name, args)?;
        let outcome = core.invoke(&target, args);
        self.poison_on_guest_failure(outcome)
    }

    /// Like [`Sandbox::call_bytes`](crate::Sandbox::call_bytes), without
    /// resetting afterwards.
    pub fn call_bytes(&mut self, name: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let core = &mut *self.guard;
        core.ensure_status_allows_calls()?;
        let func = core.resolve_data(name, input)?;
        let outcome = core.call_data(name, func, input);
        self.poison_on_guest_failure(outcome)
    }

    /// Like [`Sandbox::call_with`](crate::Sandbox::call_with), without
    /// resetting afterwards.
    pub fn call_with(&mut self, call: &Call) -> Result<CallResult, Error> {
        let core = &mut *self.guard;
        let prepared = core.prepare(call)?;
        let outcome = core.execute(call, prepared);
        self.poison_on_guest_failure(outcome)
    }

    fn poison_on_guest_failure<T>(&mut self, outcome: Result<T, Error>) -> Result<T, Error> {
        if outcome.as_ref().is_err_and(|e| e.kind().is_guest_failure()) {
            self.guard.status = Status::Poisoned;
        }
        outcome
    }

    /// Like [`call`](Session::call) with Rust types.
    pub fn call_typed<P: WasmValues, R: WasmValues>(
        &mut self,
        name: &str,
        params: P,
    ) -> Result<R, Error> {
        let results = self.call(name, &params.into_vals())?;
        R::from_vals(&results).ok_or_else(|| {
            Error::new(
                crate::ErrorKind::InvalidArguments,
                format!(
                    "`{name}` returned {results:?}, which does not fit the requested result type"
                ),
            )
        })
    }

    /// Capture the session's current state, e.g. to
    /// [`restore`](crate::Sandbox::restore) it as the new clean slate later.
    pub fn snapshot(&mut self) -> Result<Snapshot, Error> {
        self.guard.capture()
    }

    /// The sandbox's status inside the session.
    pub fn status(&self) -> Status {
        self.guard.status
    }

    /// End the session now and report how the reset went (dropping the
    /// session resets the same way, without the report).
    pub fn finish(self) -> Result<(), Error> {
        let core = self.guard.finish();
        core.merge_reset_outcome(Ok(()))
    }
}

impl fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("status", &self.guard.status)
            .finish()
    }
}
