//! What a running host function sees: the call it serves and the calling
//! instance's memories.

use std::fmt;

use crate::abi::{GuestMemories, GuestMemory, GuestMemoryMut, no_such_memory};
use crate::error::Error;
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::instance::StoreData;

/// What a host function knows about the call it serves, and its access to
/// the calling instance's memories.
///
/// Host functions registered with
/// [`host_fn_with_context`](crate::SandboxBuilder::host_fn_with_context)
/// get `&mut HostContext` and may read and write guest memory, so they can
/// take and return pointers the way WASI does; bytes and JSON host
/// functions get `&HostContext` and may read. Every access is
/// bounds-checked against the memory's current size, as in sessions and the
/// data ABI. What a host function writes is part of the call: the reset
/// after it undoes it like any write of the guest.
///
/// ```
/// use cleanslate::{Runtime, Sandbox};
/// # let runtime = Runtime::new()?;
/// # let module = runtime.load_bytes("(module)")?;
/// let sandbox = Sandbox::builder(&module)
///     .host_fn_bytes("kv", "get", |ctx, key| {
///         tracing::debug!(host_fn = ctx.function(), export = ctx.export(), "lookup");
///         Ok(key.to_ascii_uppercase())
///     })
///     .build()?;
/// # Ok::<(), cleanslate::Error>(())
/// ```
///
/// A context is neither `Send` nor `Sync`: host functions touch guest
/// memory only on the thread that runs the call, which is what lets the
/// in-place reset account for their writes (it counts that thread's page
/// faults).
///
/// ```compile_fail
/// fn needs_send<T: Send>(_: &T) {}
/// fn host(ctx: &mut cleanslate::HostContext<'_>) { needs_send(ctx) }
/// ```
pub struct HostContext<'a> {
    function: &'a str,
    memories: &'a mut (dyn GuestMemories + 'a),
}

impl fmt::Debug for HostContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostContext")
            .field("function", &self.function)
            .field("export", &self.export())
            .finish_non_exhaustive()
    }
}

impl<'a> HostContext<'a> {
    pub(super) fn new(function: &'a str, memories: &'a mut (dyn GuestMemories + 'a)) -> Self {
        HostContext { function, memories }
    }

    /// The host function being called, as `module.name`.
    pub fn function(&self) -> &str {
        self.function
    }

    /// The guest export whose call this is.
    pub fn export(&self) -> &str {
        self.memories.export()
    }

    /// A copy of the `len` bytes at `address` of the calling instance's
    /// memory 0.
    ///
    /// ```
    /// use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module
    ///     (import "env" "print" (func $print (param i32 i32)))
    ///     (memory 1) (data (i32.const 16) "hello")
    ///     (func (export "run") (call $print (i32.const 16) (i32.const 5))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module)
    ///     .host_fn_with_context("env", "print", |ctx, args| {
    ///         let [Val::I32(ptr), Val::I32(len)] = args else { return Err("(ptr, len)".into()) };
    ///         let text = ctx.read_memory(*ptr as u64, *len as usize)?;
    ///         assert_eq!(text, b"hello");
    ///         Ok(vec![])
    ///     })
    ///     .build()?;
    /// sandbox.call("run", &[])?;
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if any byte of the range lies
    /// outside the memory's current size (nothing is read or allocated), or
    /// the module defines no memory. Returned from the host function with
    /// `?`, it fails the call with [`ErrorKind::HostError`].
    pub fn read_memory(&self, address: u64, len: usize) -> Result<Vec<u8>, Error> {
        self.read_memory_of(0, address, len)
    }

    /// Like [`read_memory`](HostContext::read_memory), from memory `memory`
    /// (0 is the first).
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module
    ///     (import "env" "peek" (func $peek (result i32)))
    ///     (memory 1) (memory 1) (data (memory 1) (i32.const 0) "\2a")
    ///     (func (export "run") (result i32) (call $peek)))"#)?;
    /// let mut sandbox = Sandbox::builder(&module)
    ///     .host_fn_with_context("env", "peek", |ctx, _| {
    ///         Ok(vec![Val::I32(ctx.read_memory_of(1, 0, 1)?[0].into())])
    ///     })
    ///     .build()?;
    /// assert_eq!(sandbox.call("run", &[])?, [Val::I32(42)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if there is no memory `memory` or
    /// the range lies outside it.
    pub fn read_memory_of(&self, memory: u32, address: u64, len: usize) -> Result<Vec<u8>, Error> {
        self.memories.read_memory_of(memory, address, len)
    }

    /// The bytes of the NUL-terminated string at `address` of memory 0,
    /// without the NUL, looking at most `max_len` bytes for it.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module
    ///     (import "env" "puts" (func $puts (param i32)))
    ///     (memory 1) (data (i32.const 8) "hi\00")
    ///     (func (export "run") (call $puts (i32.const 8))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module)
    ///     .host_fn_with_context("env", "puts", |ctx, args| {
    ///         let [Val::I32(ptr)] = args else { return Err("(ptr)".into()) };
    ///         assert_eq!(ctx.read_c_string(*ptr as u64, 1024)?, b"hi");
    ///         Ok(vec![])
    ///     })
    ///     .build()?;
    /// sandbox.call("run", &[])?;
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if `address` is outside the memory,
    /// or no NUL byte follows within `max_len` bytes or before the
    /// memory's end.
    pub fn read_c_string(&self, address: u64, max_len: usize) -> Result<Vec<u8>, Error> {
        self.memories.read_c_string(address, max_len)
    }

    /// The little-endian u32 at `address` of memory 0.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module
    ///     (import "env" "get" (func $get (param i32) (result i32)))
    ///     (memory 1) (data (i32.const 4) "\07\00\00\00")
    ///     (func (export "run") (result i32) (call $get (i32.const 4))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module)
    ///     .host_fn_with_context("env", "get", |ctx, args| {
    ///         let [Val::I32(ptr)] = args else { return Err("(ptr)".into()) };
    ///         Ok(vec![Val::I32(ctx.read_u32(*ptr as u64)? as i32 * 6)])
    ///     })
    ///     .build()?;
    /// assert_eq!(sandbox.call("run", &[])?, [Val::I32(42)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if the 4 bytes are not all inside
    /// the memory.
    pub fn read_u32(&self, address: u64) -> Result<u32, Error> {
        self.memories.read_u32(address)
    }

    /// The little-endian u64 at `address` of memory 0.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module
    ///     (import "env" "get" (func $get (param i32) (result i64)))
    ///     (memory 1) (data (i32.const 8) "\2a\00\00\00\00\00\00\00")
    ///     (func (export "run") (result i64) (call $get (i32.const 8))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module)
    ///     .host_fn_with_context("env", "get", |ctx, args| {
    ///         let [Val::I32(ptr)] = args else { return Err("(ptr)".into()) };
    ///         Ok(vec![Val::I64(ctx.read_u64(*ptr as u64)? as i64)])
    ///     })
    ///     .build()?;
    /// assert_eq!(sandbox.call("run", &[])?, [Val::I64(42)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if the 8 bytes are not all inside
    /// the memory.
    pub fn read_u64(&self, address: u64) -> Result<u64, Error> {
        self.memories.read_u64(address)
    }

    /// Copy `bytes` to `address` of the calling instance's memory 0, e.g. a
    /// result the guest passed a buffer for. The reset after the call
    /// undoes it.
    ///
    /// ```
    /// use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module
    ///     (import "env" "fill" (func $fill (param i32)))
    ///     (memory 1)
    ///     (func (export "run") (result i32) (call $fill (i32.const 64)) (i32.load8_u (i32.const 65))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module)
    ///     .host_fn_with_context("env", "fill", |ctx, args| {
    ///         let [Val::I32(ptr)] = args else { return Err("(ptr)".into()) };
    ///         ctx.write_memory(*ptr as u64, b"ok")?;
    ///         Ok(vec![])
    ///     })
    ///     .build()?;
    /// assert_eq!(sandbox.call("run", &[])?, [Val::I32(b'k' as i32)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if any byte of the range lies
    /// outside the memory's current size (then nothing is written), or the
    /// module defines no memory.
    pub fn write_memory(&mut self, address: u64, bytes: &[u8]) -> Result<(), Error> {
        self.write_memory_of(0, address, bytes)
    }

    /// Like [`write_memory`](HostContext::write_memory), to memory `memory`.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module
    ///     (import "env" "poke" (func $poke))
    ///     (memory 1) (memory $m1 1)
    ///     (func (export "run") (result i32) (call $poke) (i32.load8_u $m1 (i32.const 3))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module)
    ///     .host_fn_with_context("env", "poke", |ctx, _| {
    ///         ctx.write_memory_of(1, 3, &[9])?;
    ///         Ok(vec![])
    ///     })
    ///     .build()?;
    /// assert_eq!(sandbox.call("run", &[])?, [Val::I32(9)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if there is no memory `memory` or
    /// the range lies outside it.
    pub fn write_memory_of(
        &mut self,
        memory: u32,
        address: u64,
        bytes: &[u8],
    ) -> Result<(), Error> {
        // No fault-window bookkeeping is needed here, unlike in a session:
        // a context cannot leave the thread running the call (it is neither
        // Send nor Sync), and that thread is the one whose page faults the
        // in-place reset counts (or the call crossed threads, and the reset
        // scans anyway). A write to any page that is not hot is a fault on
        // it, exactly like a guest store or a WASI `fd_read` into guest
        // memory, so the reset scans and finds the page.
        self.memories.write_memory_of(memory, address, bytes)
    }

    /// Write `value` little-endian at `address` of memory 0 (e.g. through
    /// an out-pointer the guest passed).
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module
    ///     (import "env" "len" (func $len (param i32)))
    ///     (memory 1)
    ///     (func (export "run") (result i32) (call $len (i32.const 8)) (i32.load (i32.const 8))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module)
    ///     .host_fn_with_context("env", "len", |ctx, args| {
    ///         let [Val::I32(out)] = args else { return Err("(out)".into()) };
    ///         ctx.write_u32(*out as u64, 42)?;
    ///         Ok(vec![])
    ///     })
    ///     .build()?;
    /// assert_eq!(sandbox.call("run", &[])?, [Val::I32(42)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if the 4 bytes are not all inside
    /// the memory.
    pub fn write_u32(&mut self, address: u64, value: u32) -> Result<(), Error> {
        self.write_memory(address, &value.to_le_bytes())
    }

    /// Write `value` little-endian at `address` of memory 0.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module
    ///     (import "env" "now" (func $now (param i32)))
    ///     (memory 1)
    ///     (func (export "run") (result i64) (call $now (i32.const 8)) (i64.load (i32.const 8))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module)
    ///     .host_fn_with_context("env", "now", |ctx, args| {
    ///         let [Val::I32(out)] = args else { return Err("(out)".into()) };
    ///         ctx.write_u64(*out as u64, 1 << 40)?;
    ///         Ok(vec![])
    ///     })
    ///     .build()?;
    /// assert_eq!(sandbox.call("run", &[])?, [Val::I64(1 << 40)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] if the 8 bytes are not all inside
    /// the memory.
    pub fn write_u64(&mut self, address: u64, value: u64) -> Result<(), Error> {
        self.write_memory(address, &value.to_le_bytes())
    }
}

/// A host function's caller: the instance whose call it serves.
impl GuestMemories for wasmtime::Caller<'_, StoreData> {
    fn export(&self) -> &str {
        &self.data().current_export
    }

    fn memory(&self, index: u32) -> Result<GuestMemory<'_>, Error> {
        let memories = &self.data().memories;
        let memory = memories
            .get(index as usize)
            .ok_or_else(|| no_such_memory(index, memories.len()))?;
        Ok(GuestMemory::of(index, memory.data(self)))
    }

    fn memory_mut(&mut self, index: u32) -> Result<GuestMemoryMut<'_>, Error> {
        let memories = &self.data().memories;
        let memory = *memories
            .get(index as usize)
            .ok_or_else(|| no_such_memory(index, memories.len()))?;
        Ok(GuestMemoryMut::of(index, memory.data_mut(self)))
    }
}
