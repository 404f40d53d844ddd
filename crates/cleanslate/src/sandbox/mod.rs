//! The sandbox: a module instance with limits and host functions that is
//! back at its snapshot after every call.

mod builder;
mod call;
pub(crate) mod guard;
mod request;
mod session;

use std::fmt;
use std::sync::Arc;

pub use builder::SandboxBuilder;
pub use request::{Call, CallResult};
pub use session::Session;

use crate::error::{Error, ErrorKind};
use crate::instance::{InstanceFactory, InterruptHandle, LiveInstance};
use crate::module::Module;
use crate::reset::{FallbackReason, ResetPlan, ResetReport, ResetStrategy, VerifySchedule};
use crate::sandbox::guard::ResetGuard;
use crate::snapshot::{Snapshot, SnapshotImage};
use crate::value::{Val, WasmValues};

/// Whether a sandbox can take calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// At its snapshot, ready for a call.
    Ready,
    /// A call inside a [`Session`] failed; the session's state is unknown.
    /// Dropping the session or [`Sandbox::restore`] recovers the sandbox.
    Poisoned,
    /// A reset failed; the sandbox refuses all calls. Build a new one.
    Unrecoverable,
}

impl Status {
    /// The snake_case name (`ready`, `poisoned`, `unrecoverable`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Poisoned => "poisoned",
            Status::Unrecoverable => "unrecoverable",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sandboxed instance of a module that starts every call from its snapshot.
///
/// Build one with [`Sandbox::builder`]. Building instantiates the module,
/// runs its start function, `_initialize` and the optional init export, and
/// takes the snapshot. After every [`call`](Sandbox::call) — whatever way it
/// ends — the sandbox is reset to that snapshot.
///
/// ```
/// use cleanslate::{ErrorKind, Runtime, Sandbox, Val};
///
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(r#"(module
///     (memory 1)
///     (func (export "stash") (param i32) (i32.store (i32.const 0) (local.get 0)))
///     (func (export "peek") (result i32) (i32.load (i32.const 0)))
///     (func (export "crash") (param i32) (i32.store (i32.const 0) (local.get 0)) unreachable))"#)?;
/// let mut sandbox = Sandbox::builder(&module).build()?;
///
/// sandbox.call("stash", &[Val::I32(42)])?;
/// assert_eq!(sandbox.call("peek", &[])?, [Val::I32(0)], "the write is gone");
///
/// let err = sandbox.call("crash", &[Val::I32(7)]).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Trap(cleanslate::TrapCode::Unreachable));
/// assert_eq!(sandbox.call("peek", &[])?, [Val::I32(0)], "also on the error path");
/// # Ok::<(), cleanslate::Error>(())
/// ```
pub struct Sandbox {
    core: SandboxCore,
}

/// The sandbox's state, shared by the call path, sessions and the guard.
pub(crate) struct SandboxCore {
    pub module: Module,
    pub factory: InstanceFactory,
    /// `None` only when unrecoverable.
    pub live: Option<LiveInstance>,
    /// The clean slate.
    pub baseline: Snapshot,
    pub status: Status,
    pub verify: VerifySchedule,
    pub strategy: ResetStrategy,
    pub last_reset: Option<ResetReport>,
    /// Resets attempted so far.
    pub resets: u64,
    /// Faults queued for the next reset (tests only).
    pub faults: crate::reset::PendingFaults,
}

impl Sandbox {
    /// Start building a sandbox for `module`.
    pub fn builder(module: &Module) -> SandboxBuilder {
        SandboxBuilder::new(module)
    }

    /// Call the exported function `name` with `args`; the sandbox is reset to
    /// its snapshot afterwards, whether the call succeeded or not.
    ///
    /// If the reset itself fails, the error is [`ErrorKind::ResetFailed`]
    /// with the call's own error in [`Error::original_error`], and the
    /// sandbox becomes [`Status::Unrecoverable`].
    ///
    /// # Errors
    ///
    /// Refused before any guest code runs (nothing needs resetting):
    /// - [`ErrorKind::FunctionNotFound`] when the module exports no function
    ///   `name`; the message lists what it does export.
    /// - [`ErrorKind::InvalidArguments`] when `args` do not match the
    ///   function's parameter types, or its signature has types other than i32,
    ///   i64, f32 and f64.
    /// - [`ErrorKind::Unrecoverable`] when an earlier reset failed: build a new
    ///   sandbox.
    ///
    /// When guest code ran and failed, the error has whatever kind the call
    /// ended with: a trap, a limit ([`ErrorKind::OutOfFuel`],
    /// [`ErrorKind::Timeout`], [`ErrorKind::StackOverflow`],
    /// [`ErrorKind::OutOfMemory`]), a host function's failure or panic, a
    /// cancellation, [`ErrorKind::UncaughtException`] when a WebAssembly
    /// exception escaped the function, ... ([`ErrorKind::is_guest_failure`]
    /// is true for all of these; see [`ErrorKind`] for the list). Also
    /// [`ErrorKind::Exited`] when a WASI guest called
    /// `proc_exit` with a non-zero code, or from a function that has results
    /// (use [`call_with`](Sandbox::call_with) to get exits as results). In
    /// every one of these cases the sandbox has been reset and is ready for the
    /// next call.
    ///
    /// [`ErrorKind::ResetFailed`] when the reset after the call failed:
    /// [`Error::original_error`] has the call's own error, if it failed too,
    /// and the sandbox is now [`Status::Unrecoverable`] and refuses further
    /// calls. Drop it and build a new one (a
    /// [`SandboxPool`](crate::SandboxPool) does that by itself).
    pub fn call(&mut self, name: &str, args: &[Val]) -> Result<Vec<Val>, Error> {
        self.core.ensure_status_allows_calls()?;
        let target = self.core.resolve(name, args)?;
        let returns_nothing = target.result_count == 0;
        let mut guard = ResetGuard::arm(&mut self.core);
        let outcome = guard.invoke(&target, args);
        let outcome = guard.finish(outcome);
        match outcome {
            // `proc_exit(0)` from a function with no results is a return.
            Err(e)
                if returns_nothing && e.kind() == ErrorKind::Exited && e.exit_code() == Some(0) =>
            {
                Ok(Vec::new())
            }
            other => other,
        }
    }

    /// Call the data-ABI export `name` with `input` bytes and return its
    /// output bytes; the sandbox is reset afterwards, as after every call.
    ///
    /// The guest exports `cleanslate_alloc` and a function taking (pointer,
    /// length) and returning a result record (docs/ABI.md; the Rust guest SDK
    /// `cleanslate-guest` writes all of it). Output over the sandbox's
    /// [`output_limit`](SandboxBuilder::output_limit) is
    /// [`ErrorKind::OutputTooLarge`]; an error the guest reports is
    /// [`ErrorKind::GuestError`]; pointers outside guest memory are
    /// [`ErrorKind::InvalidGuestOutput`].
    ///
    /// ```
    /// use cleanslate::{Runtime, Sandbox};
    ///
    /// let runtime = Runtime::new()?;
    /// // Returns its input unchanged: a result record {status 0, ptr, len} at 0.
    /// let module = runtime.load_bytes(r#"(module
    ///     (memory (export "memory") 1)
    ///     (func (export "cleanslate_alloc") (param i32) (result i32) (i32.const 1024))
    ///     (func (export "echo") (param $ptr i32) (param $len i32) (result i32)
    ///         (i32.store (i32.const 4) (local.get $ptr))
    ///         (i32.store (i32.const 8) (local.get $len))
    ///         (i32.const 0)))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// assert_eq!(sandbox.call_bytes("echo", b"hello")?, b"hello");
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`call`](Sandbox::call) (refusals, guest failures,
    /// [`ErrorKind::ResetFailed`]), and those of the data ABI:
    /// - [`ErrorKind::InvalidArguments`] when `name` does not have the data-ABI
    ///   signature `(i32, i32) -> i32`, the module has no 32-bit memory 0, or
    ///   `input` is too large for a 32-bit guest; nothing runs.
    /// - [`ErrorKind::FunctionNotFound`] also when `input` is not empty and the
    ///   module does not export `cleanslate_alloc`; nothing runs.
    /// - [`ErrorKind::GuestError`] when the guest reports an error
    ///   ([`Error::guest_message`] has its message), and
    ///   [`ErrorKind::GuestPanic`] when a guest built with the SDK panics.
    /// - [`ErrorKind::InvalidGuestOutput`] when the result record is malformed
    ///   or points outside guest memory.
    /// - [`ErrorKind::OutputTooLarge`] when the output is larger than the
    ///   sandbox's [`output_limit`](SandboxBuilder::output_limit).
    /// - [`ErrorKind::OutOfMemory`] also when the guest's allocator cannot give
    ///   room for `input`.
    ///
    /// After every error but [`ErrorKind::ResetFailed`] the sandbox is ready
    /// for the next call.
    pub fn call_bytes(&mut self, name: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.core.ensure_status_allows_calls()?;
        let func = self.core.resolve_data(name, input)?;
        let mut guard = ResetGuard::arm(&mut self.core);
        let outcome = guard.call_data(name, func, input);
        guard.finish(outcome)
    }

    /// Like [`call_bytes`](Sandbox::call_bytes), with the input serialised
    /// to JSON and the output deserialised from it. Output that is not JSON
    /// of type `Out` is [`ErrorKind::InvalidGuestOutput`].
    ///
    /// ```no_run
    /// # use cleanslate::{Runtime, Sandbox};
    /// # let runtime = Runtime::new()?;
    /// # let module = runtime.load_file("guest.wasm")?;
    /// # let mut sandbox = Sandbox::builder(&module).build()?;
    /// #[derive(serde::Serialize)]
    /// struct Order { items: Vec<u32> }
    /// #[derive(serde::Deserialize)]
    /// struct Total { sum: u64 }
    /// let total: Total = sandbox.call_json("total", &Order { items: vec![1, 2, 3] })?;
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`call_bytes`](Sandbox::call_bytes), and
    /// [`ErrorKind::InvalidArguments`] when `input` cannot be serialised as
    /// JSON (nothing runs); [`ErrorKind::InvalidGuestOutput`] also when the
    /// output is not JSON of type `Out` (the sandbox has been reset by then).
    pub fn call_json<In, Out>(&mut self, name: &str, input: &In) -> Result<Out, Error>
    where
        In: serde::Serialize + ?Sized,
        Out: serde::de::DeserializeOwned,
    {
        let input = serde_json::to_vec(input).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArguments,
                format!("the input to `{name}` cannot be serialised as JSON: {e}"),
            )
        })?;
        let output = self.call_bytes(name, &input)?;
        request::decode_json(&output)
    }

    /// Run a [`Call`]: values or bytes in, with a WASI guest's stdin, args
    /// and env for this call only; values or bytes out, with what the guest
    /// wrote to stdout and stderr and its exit code. `proc_exit(n)` is a
    /// result here, not an error. The sandbox is reset afterwards.
    ///
    /// ```
    /// use cleanslate::{Call, Runtime, Sandbox, Val};
    ///
    /// let runtime = Runtime::new()?;
    /// let module = runtime.load_bytes(r#"(module
    ///     (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// let result = sandbox.call_with(&Call::values("add", &[Val::I32(2), Val::I32(3)]))?;
    /// assert_eq!(result.values(), [Val::I32(5)]);
    /// assert_eq!(result.exit_code(), None);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`call`](Sandbox::call) for a [`Call::values`] call and of
    /// [`call_bytes`](Sandbox::call_bytes) for a [`Call::bytes`] or
    /// [`Call::json`] call, with these differences:
    /// - `proc_exit` is never an error: its code is in
    ///   [`CallResult::exit_code`], so there is no [`ErrorKind::Exited`].
    /// - [`ErrorKind::Cancelled`] also when the call's
    ///   [`CancelToken`](crate::CancelToken) is cancelled, before the call
    ///   starts or while it runs.
    /// - [`ErrorKind::OutputTooLarge`] also when a WASI guest writes more than
    ///   the output limit to stdout or stderr.
    ///
    /// The error of a call that ran carries what a WASI guest wrote before it
    /// failed, in [`Error::stdout`] and [`Error::stderr`].
    pub fn call_with(&mut self, call: &Call) -> Result<CallResult, Error> {
        let prepared = self.core.prepare(call)?;
        let mut guard = ResetGuard::arm(&mut self.core);
        let outcome = guard.execute(call, prepared);
        guard.finish(outcome)
    }

    /// Like [`call`](Sandbox::call) with Rust types for parameters and
    /// results: `()`, a scalar, or a tuple of scalars.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox};
    /// # let runtime = Runtime::new()?;
    /// let module = runtime.load_bytes(r#"(module (func (export "add") (param i32 i32) (result i32)
    ///     (i32.add (local.get 0) (local.get 1))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// let sum: i32 = sandbox.call_typed("add", (2, 3))?;
    /// assert_eq!(sum, 5);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`call`](Sandbox::call), and [`ErrorKind::InvalidArguments`]
    /// when the function's results do not convert to `R` (found after the call:
    /// the sandbox has been reset by then).
    pub fn call_typed<P: WasmValues, R: WasmValues>(
        &mut self,
        name: &str,
        params: P,
    ) -> Result<R, Error> {
        let results = self.call(name, &params.into_vals())?;
        R::from_vals(&results).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArguments,
                format!(
                    "`{name}` returned {results:?}, which does not fit the requested result type"
                ),
            )
        })
    }

    /// Start a session: calls made through it keep their state between them,
    /// and the sandbox is reset when the session is dropped (also when the
    /// holder panics).
    pub fn session(&mut self) -> Session<'_> {
        Session::new(&mut self.core)
    }

    /// Capture the sandbox's current state (outside a session this is its
    /// clean slate).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unrecoverable`] when the sandbox is unrecoverable (it has
    /// no instance since a reset failed: build a new sandbox), or when its
    /// state holds a reference a snapshot cannot capture. The sandbox is
    /// unchanged either way.
    pub fn snapshot(&mut self) -> Result<Snapshot, Error> {
        self.core.capture()
    }

    /// Make `snapshot` the sandbox's clean slate and reset to it. Recovers a
    /// [`Status::Poisoned`] sandbox. The snapshot must come from a sandbox
    /// of the same module.
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::InvalidArguments`] when `snapshot` comes from a sandbox
    ///   of another module; the sandbox is unchanged.
    /// - [`ErrorKind::InvalidSnapshot`] when `snapshot` (loaded from a file)
    ///   holds contents for a table no instruction of the module writes
    ///   other than every instance has; the sandbox is unchanged.
    /// - [`ErrorKind::Unrecoverable`] when the sandbox is already
    ///   [`Status::Unrecoverable`]: restoring does not revive it.
    /// - Any other error means the reset to `snapshot` failed (mostly
    ///   [`ErrorKind::ResetFailed`]; [`ErrorKind::Instantiation`] or
    ///   [`ErrorKind::OutOfMemory`] when no fresh instance could be made). The
    ///   sandbox is then [`Status::Unrecoverable`] and its clean slate is
    ///   unchanged: build a new sandbox.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), Error> {
        self.core.restore(snapshot)
    }

    /// A handle that cancels this sandbox's running call from any thread.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle {
            state: self.core.factory.interrupt.clone(),
        }
    }

    /// Whether the sandbox can take calls.
    pub fn status(&self) -> Status {
        self.core.status
    }

    /// What the most recent reset did; `None` before the first reset.
    pub fn last_reset(&self) -> Option<&ResetReport> {
        self.core.last_reset.as_ref()
    }

    /// How many resets this sandbox has attempted. Compare before and after
    /// a call to learn whether it needed one (a refused call does not).
    pub fn resets(&self) -> u64 {
        self.core.resets
    }

    /// The module this sandbox runs.
    pub fn module(&self) -> &Module {
        &self.core.module
    }

    /// How many GC roots the sandbox's current store holds between calls
    /// (tests of root leaks only; `None` if it cannot be read). Must not
    /// grow with the number of calls.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn gc_roots_held(&mut self) -> Option<usize> {
        self.core.live.as_mut()?.lifo_gc_roots()
    }

    /// Make the next reset suffer `fault` (tests of the verifier and of
    /// atomicity only). Faults queued together all apply to that reset, each
    /// at its own step; see [`Fault`](crate::Fault).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&mut self, fault: crate::reset::Fault) {
        self.core.faults.add(fault);
    }
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("status", &self.core.status)
            .field("last_reset", &self.core.last_reset)
            .finish_non_exhaustive()
    }
}

impl SandboxCore {
    /// Refuse anything that would build a new instance for an
    /// unrecoverable sandbox (a poisoned one may still be reset).
    fn ensure_recoverable(&self) -> Result<(), Error> {
        match self.status {
            Status::Unrecoverable => self.ensure_status_allows_calls(),
            Status::Ready | Status::Poisoned => Ok(()),
        }
    }

    pub(crate) fn ensure_status_allows_calls(&self) -> Result<(), Error> {
        match self.status {
            Status::Ready => Ok(()),
            Status::Poisoned => Err(Error::new(
                ErrorKind::Poisoned,
                "the sandbox is poisoned by a failed call in a session: drop the session or restore a snapshot",
            )),
            Status::Unrecoverable => Err(Error::new(
                ErrorKind::Unrecoverable,
                "the sandbox is unrecoverable after a failed reset and refuses calls: build a new sandbox",
            )),
        }
    }

    /// Put the sandbox back at its baseline, atomically: on success the new
    /// instance replaces the old; on failure no instance is left and the
    /// sandbox is unrecoverable.
    pub(crate) fn reset_to_baseline(&mut self) -> Result<(), Error> {
        // Never bring an unrecoverable sandbox back to life.
        self.ensure_recoverable()?;
        let verify = self.verify.next_is_due();
        let image = self.baseline.image.clone();
        self.reset_with(&image, verify, None)
    }

    fn reset_with(
        &mut self,
        image: &Arc<SnapshotImage>,
        verify: bool,
        force_fresh: Option<FallbackReason>,
    ) -> Result<(), Error> {
        self.resets += 1;
        let plan = ResetPlan {
            factory: &self.factory,
            image,
            verify,
            strategy: self.strategy,
            // The plan owns the used instance now: it is either restored in
            // place and handed back, or dropped, never left half-reset here.
            live: self.live.take(),
            force_fresh,
            faults: std::mem::take(&mut self.faults),
        };
        match plan.run() {
            Ok((live, report)) => {
                self.live = Some(live);
                self.last_reset = Some(report);
                self.status = Status::Ready;
                Ok(())
            }
            Err(e) => {
                self.status = Status::Unrecoverable;
                tracing::error!(error = %e, "reset failed; sandbox is unrecoverable");
                Err(e)
            }
        }
    }

    pub(crate) fn live(&mut self) -> Result<&mut LiveInstance, Error> {
        self.live.as_mut().ok_or_else(no_instance)
    }

    pub(crate) fn capture(&mut self) -> Result<Snapshot, Error> {
        // An unrecoverable sandbox has no instance: `live()` refuses.
        let module = self.module.clone();
        let live = self.live()?;
        let image = SnapshotImage::capture(&module, live)?;
        Ok(Snapshot {
            image: Arc::new(image),
            module_id: module_id(&module),
        })
    }

    pub(crate) fn restore(&mut self, snapshot: &Snapshot) -> Result<(), Error> {
        self.ensure_recoverable()?;
        if snapshot.module_id != module_id(&self.module) {
            return Err(Error::new(
                ErrorKind::InvalidArguments,
                "the snapshot belongs to a sandbox of another module and cannot be restored here",
            ));
        }
        // A table no instruction writes is never restored (every instance
        // holds the same there): a snapshot that says otherwise (one loaded
        // from a file can) would be restored only in part.
        let layout = &self.module.inner.layout;
        let fixed = (0..snapshot.image.tables.len()).find(|&i| {
            !layout.table_writable(i)
                && self.baseline.image.tables.get(i) != snapshot.image.tables.get(i)
        });
        if let Some(i) = fixed {
            return Err(Error::new(
                ErrorKind::InvalidSnapshot,
                format!(
                    "the snapshot holds other contents for table {i} than the module ever has (no instruction writes it)"
                ),
            ));
        }
        let verify = self.verify.next_is_due();
        self.reset_with(
            &snapshot.image,
            verify,
            Some(FallbackReason::SnapshotRestored),
        )?;
        self.baseline = snapshot.clone();
        Ok(())
    }
}

/// Identity of a loaded module, to match snapshots to sandboxes.
pub(crate) fn module_id(module: &Module) -> crate::snapshot::ModuleIdentity {
    crate::snapshot::ModuleIdentity::of(module)
}

/// What every use of an instance lost to a failed reset says.
pub(crate) fn no_instance() -> Error {
    Error::new(
        ErrorKind::Unrecoverable,
        "the sandbox is unrecoverable and has no instance: build a new sandbox",
    )
}
