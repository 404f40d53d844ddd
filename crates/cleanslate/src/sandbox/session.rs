//! Sessions: several calls that share state, reset when the session ends.

use std::fmt;

use crate::abi::{GuestMemories, GuestMemory, GuestMemoryMut, no_such_memory};
use crate::error::{Error, ErrorKind};
use crate::instance::LiveInstance;
use crate::sandbox::guard::ResetGuard;
use crate::sandbox::{Call, CallResult, SandboxCore, Status, no_instance};
use crate::snapshot::Snapshot;
use crate::value::{Val, WasmValues};

/// Calls that keep their state between them; the sandbox is reset to its
/// snapshot when the session is dropped — including when the code holding
/// it panics.
///
/// A session can also read and write guest memory between calls
/// ([`read_memory`](Session::read_memory),
/// [`write_memory`](Session::write_memory), ...), which is how a guest with
/// its own ABI is driven: call its allocator, write the input, call the
/// function with the pointers, read the result (docs/ABI.md, "A guest's own
/// ABI"). Those writes are undone with everything else when the session
/// ends. Memory can still be read and written in a poisoned session (e.g.
/// to see what a failed call left); only calls are refused.
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

    /// The live instance, for memory access (none after a failed reset).
    fn instance(&self) -> Result<&LiveInstance, Error> {
        self.guard.live.as_ref().ok_or_else(no_instance)
    }

    /// A copy of the `len` bytes at `address` of memory 0.
    ///
    /// ```
    /// use cleanslate::{Runtime, Sandbox};
    /// let module = Runtime::new()?.load_bytes(r#"(module (memory 1) (data (i32.const 16) "hello"))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// let session = sandbox.session();
    /// assert_eq!(session.read_memory(16, 5)?, b"hello");
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if any byte of the range lies
    /// outside the memory's current size (nothing is read, and nothing is
    /// allocated: a copy is never larger than the memory) or the module
    /// defines no memory; [`ErrorKind::Unrecoverable`] after a failed reset.
    pub fn read_memory(&self, address: u64, len: usize) -> Result<Vec<u8>, Error> {
        self.read_memory_of(0, address, len)
    }

    /// Like [`read_memory`](Session::read_memory), from memory `memory` (0
    /// is the first).
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox};
    /// let module = Runtime::new()?.load_bytes(r#"(module (memory 1) (memory 1) (data (memory 1) (i32.const 0) "m1"))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// assert_eq!(sandbox.session().read_memory_of(1, 0, 2)?, b"m1");
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if there is no memory `memory` or the
    /// range lies outside it; [`ErrorKind::Unrecoverable`] after a failed
    /// reset.
    pub fn read_memory_of(&self, memory: u32, address: u64, len: usize) -> Result<Vec<u8>, Error> {
        self.instance()?.read_memory_of(memory, address, len)
    }

    /// The bytes of the NUL-terminated string at `address` of memory 0,
    /// without the NUL, looking at most `max_len` bytes (and never past the
    /// memory's end) for it. C strings need not be UTF-8: convert with
    /// `String::from_utf8` if yours are.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox};
    /// let module = Runtime::new()?.load_bytes(r#"(module (memory 1) (data (i32.const 8) "hi\00there"))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// assert_eq!(sandbox.session().read_c_string(8, 4096)?, b"hi");
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if `address` is outside the memory,
    /// or no NUL byte follows within `max_len` bytes or before the memory's
    /// end; [`ErrorKind::Unrecoverable`] after a failed reset.
    pub fn read_c_string(&self, address: u64, max_len: usize) -> Result<Vec<u8>, Error> {
        self.instance()?.read_c_string(address, max_len)
    }

    /// The little-endian u32 at `address` of memory 0 (e.g. what a guest
    /// stored through an out-pointer).
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox};
    /// let module = Runtime::new()?.load_bytes(r#"(module (memory 1) (data (i32.const 4) "\2a\00\00\00"))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// assert_eq!(sandbox.session().read_u32(4)?, 42);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if the 4 bytes are not all inside the
    /// memory; [`ErrorKind::Unrecoverable`] after a failed reset.
    pub fn read_u32(&self, address: u64) -> Result<u32, Error> {
        self.instance()?.read_u32(address)
    }

    /// The little-endian u64 at `address` of memory 0.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox};
    /// let module = Runtime::new()?.load_bytes(r#"(module (memory 1) (data (i32.const 8) "\01\00\00\00\01"))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// assert_eq!(sandbox.session().read_u64(8)?, (1 << 32) + 1);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if the 8 bytes are not all inside the
    /// memory; [`ErrorKind::Unrecoverable`] after a failed reset.
    pub fn read_u64(&self, address: u64) -> Result<u64, Error> {
        self.instance()?.read_u64(address)
    }

    /// Copy `bytes` to `address` of memory 0, e.g. a guest function's input
    /// into room its allocator gave. Like everything in a session, the
    /// write is undone when the session ends.
    ///
    /// ```
    /// use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module (memory 1)
    ///     (func (export "peek") (param i32) (result i32) (i32.load8_u (local.get 0))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// {
    ///     let mut session = sandbox.session();
    ///     session.write_memory(100, b"A")?;
    ///     assert_eq!(session.call("peek", &[Val::I32(100)])?, [Val::I32(65)]);
    /// } // reset here: the write is gone
    /// assert_eq!(sandbox.call("peek", &[Val::I32(100)])?, [Val::I32(0)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if any byte of the range lies outside
    /// the memory's current size (then nothing is written) or the module
    /// defines no memory; [`ErrorKind::Unrecoverable`] after a failed reset.
    pub fn write_memory(&mut self, address: u64, bytes: &[u8]) -> Result<(), Error> {
        self.write_memory_of(0, address, bytes)
    }

    /// Like [`write_memory`](Session::write_memory), to memory `memory`.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox};
    /// let module = Runtime::new()?.load_bytes("(module (memory 1) (memory 1))")?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// let mut session = sandbox.session();
    /// session.write_memory_of(1, 0, b"x")?;
    /// assert_eq!(session.read_memory_of(1, 0, 1)?, b"x");
    /// assert_eq!(session.read_memory_of(0, 0, 1)?, [0]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if there is no memory `memory` or the
    /// range lies outside it; [`ErrorKind::Unrecoverable`] after a failed
    /// reset.
    pub fn write_memory_of(
        &mut self,
        memory: u32,
        address: u64,
        bytes: &[u8],
    ) -> Result<(), Error> {
        self.guard.live()?.write_memory_of(memory, address, bytes)
    }

    /// Write `value` little-endian at `address` of memory 0.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox};
    /// let module = Runtime::new()?.load_bytes("(module (memory 1))")?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// let mut session = sandbox.session();
    /// session.write_u32(8, 0xC0FFEE)?;
    /// assert_eq!(session.read_memory(8, 4)?, [0xEE, 0xFF, 0xC0, 0]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if the 4 bytes are not all inside the
    /// memory; [`ErrorKind::Unrecoverable`] after a failed reset.
    pub fn write_u32(&mut self, address: u64, value: u32) -> Result<(), Error> {
        self.write_memory(address, &value.to_le_bytes())
    }

    /// Write `value` little-endian at `address` of memory 0.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox};
    /// let module = Runtime::new()?.load_bytes("(module (memory 1))")?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// let mut session = sandbox.session();
    /// session.write_u64(16, u64::MAX - 1)?;
    /// assert_eq!(session.read_u64(16)?, u64::MAX - 1);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if the 8 bytes are not all inside the
    /// memory; [`ErrorKind::Unrecoverable`] after a failed reset.
    pub fn write_u64(&mut self, address: u64, value: u64) -> Result<(), Error> {
        self.write_memory(address, &value.to_le_bytes())
    }

    /// Call `name` without resetting afterwards.
    ///
    /// # Errors
    ///
    /// Those of [`Sandbox::call`](crate::Sandbox::call), except that nothing is
    /// reset after the call, so there is no [`ErrorKind::ResetFailed`], and:
    /// - A failure of guest code (an error for which
    ///   [`ErrorKind::is_guest_failure`] is true) leaves the session's state
    ///   unknown and turns the sandbox [`Status::Poisoned`]. Refused calls
    ///   ([`ErrorKind::FunctionNotFound`], [`ErrorKind::InvalidArguments`]) do
    ///   not poison it.
    /// - [`ErrorKind::Poisoned`] for every call after that, until the session
    ///   is dropped or [`finish`](Session::finish)ed, which resets the sandbox.
    ///   Memory can still be read to see what the failed call left.
    /// - [`ErrorKind::Exited`] also for `proc_exit(0)`, which
    ///   [`Sandbox::call`](crate::Sandbox::call) treats as a return for
    ///   functions without results.
    pub fn call(&mut self, name: &str, args: &[Val]) -> Result<Vec<Val>, Error> {
        let core = &mut *self.guard;
        core.ensure_status_allows_calls()?;
        let target = core.resolve(name, args)?;
        let outcome = core.invoke(&target, args);
        self.poison_on_guest_failure(outcome)
    }

    /// Like [`Sandbox::call_bytes`](crate::Sandbox::call_bytes), without
    /// resetting afterwards.
    ///
    /// # Errors
    ///
    /// Those of [`Sandbox::call_bytes`](crate::Sandbox::call_bytes), with the
    /// differences of [`call`](Session::call): no reset, so no
    /// [`ErrorKind::ResetFailed`]; a failure of guest code (which includes
    /// [`ErrorKind::GuestError`], [`ErrorKind::InvalidGuestOutput`] and
    /// [`ErrorKind::OutputTooLarge`]) poisons the session, and later calls fail
    /// with [`ErrorKind::Poisoned`].
    pub fn call_bytes(&mut self, name: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let core = &mut *self.guard;
        core.ensure_status_allows_calls()?;
        let func = core.resolve_data(name, input)?;
        let outcome = core.call_data(name, func, input);
        self.poison_on_guest_failure(outcome)
    }

    /// Like [`Sandbox::call_with`](crate::Sandbox::call_with), without
    /// resetting afterwards.
    ///
    /// # Errors
    ///
    /// Those of [`Sandbox::call_with`](crate::Sandbox::call_with), with the
    /// differences of [`call`](Session::call): no reset, so no
    /// [`ErrorKind::ResetFailed`]; a failure of guest code poisons the session,
    /// and later calls fail with [`ErrorKind::Poisoned`]. An exit is a result
    /// here too and does not poison.
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
    ///
    /// # Errors
    ///
    /// Those of [`call`](Session::call), and [`ErrorKind::InvalidArguments`]
    /// when the function's results do not convert to `R` (this does not poison
    /// the session).
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

    /// Capture the session's current state, e.g. to
    /// [`restore`](crate::Sandbox::restore) it as the new clean slate later.
    ///
    /// # Errors
    ///
    /// Those of [`Sandbox::snapshot`](crate::Sandbox::snapshot). A poisoned
    /// session can still be captured (the snapshot then holds what the failed
    /// call left).
    pub fn snapshot(&mut self) -> Result<Snapshot, Error> {
        self.guard.capture()
    }

    /// The sandbox's status inside the session.
    pub fn status(&self) -> Status {
        self.guard.status
    }

    /// End the session now and report how the reset went (dropping the
    /// session resets the same way, without the report).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ResetFailed`] when the reset fails, or the sandbox was
    /// already unrecoverable; the sandbox is then [`Status::Unrecoverable`]:
    /// build a new one. [`Error::original_error`] is `None`: `finish` reports
    /// the reset alone.
    pub fn finish(self) -> Result<(), Error> {
        self.guard.finish(Ok(()))
    }
}

impl fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("status", &self.guard.status)
            .finish()
    }
}

/// The sandbox's instance, as a session reaches it between calls.
impl GuestMemories for LiveInstance {
    fn export(&self) -> &str {
        &self.store.data().current_export
    }

    fn memory(&self, index: u32) -> Result<GuestMemory<'_>, Error> {
        let memory = self
            .memories
            .get(index as usize)
            .ok_or_else(|| no_such_memory(index, self.memories.len()))?;
        Ok(GuestMemory::of(index, memory.data(&self.store)))
    }

    /// Every host write through a session comes here, and forgets the
    /// fault window first, so the next in-place reset scans the page
    /// tables.
    ///
    /// Why: the window lets a reset skip the scan when the thread that ran
    /// the calls took no page fault since the last reset. A session's
    /// write is no call, and may run on another thread (a session is
    /// `Send`): its page faults would then be counted against that thread,
    /// and a reset on the window's thread would see none and examine only
    /// the hot pages, missing the written page. Without a window the reset
    /// always scans; the scan reports every page whose write protection a
    /// write cleared — from whichever thread, guest or host, since
    /// userfaultfd write-protect is per page, not per thread — and every
    /// page first touched since tracking started. Hot (unprotected) pages
    /// are compared with the snapshot at every reset anyway. So nothing a
    /// session writes can be missed; the cost is one scan per session that
    /// wrote memory.
    fn memory_mut(&mut self, index: u32) -> Result<GuestMemoryMut<'_>, Error> {
        let memory = *self
            .memories
            .get(index as usize)
            .ok_or_else(|| no_such_memory(index, self.memories.len()))?;
        if let Some(tracking) = self.tracking.as_mut() {
            tracking.host_wrote();
        }
        Ok(GuestMemoryMut::of(index, memory.data_mut(&mut self.store)))
    }
}
