//! Host functions: closures the guest can import, wrapped so that their
//! errors and panics come back as typed failures of the call, never as an
//! unwind through the embedder.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::abi::{
    ALLOC_EXPORT, GuestMemories, GuestMemory, GuestMemoryMut, IMPORT_MODULE, MESSAGE_LIMIT,
    check_size, no_such_memory, pack, read_message,
};
use crate::error::{Error, ErrorKind};
use crate::instance::StoreData;
use crate::module::ModuleLayout;
use crate::value::{Signature, Val};

/// The error type host functions return: anything that converts into a
/// boxed error (`String`, `&str`, `std::io::Error`, ...).
pub type HostFnError = Box<dyn std::error::Error + Send + Sync>;

/// A host function over values; `host_fn`'s closures ignore the context.
pub(crate) type HostClosure =
    Arc<dyn Fn(&mut HostContext<'_>, &[Val]) -> Result<Vec<Val>, HostFnError> + Send + Sync>;

/// A host function over bytes; `Err(HostFailure::BadInput)` blames the guest.
pub(crate) type BytesClosure =
    Arc<dyn Fn(&HostContext<'_>, &[u8]) -> Result<Vec<u8>, HostFailure> + Send + Sync>;

/// Why a bytes host function failed.
pub(crate) enum HostFailure {
    /// The host function itself failed: [`ErrorKind::HostError`].
    Host(HostFnError),
    /// The guest's input did not decode (e.g. malformed JSON):
    /// [`ErrorKind::InvalidGuestOutput`].
    BadInput(String),
}

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

impl HostContext<'_> {
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
        self.memories
            .memory(memory)?
            .bytes_at(address, len)
            .map(<[u8]>::to_vec)
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
        self.memories
            .memory(0)?
            .c_string_at(address, max_len)
            .map(<[u8]>::to_vec)
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
        self.memories.memory(0)?.u32_at(address)
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
        self.memories.memory(0)?.u64_at(address)
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
        self.memories.memory_mut(memory)?.write_at(address, bytes)
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

/// How the host provides one import.
#[derive(Clone)]
enum HostBinding {
    Values(HostClosure),
    Bytes(BytesClosure),
}

/// The host functions a sandbox provides, by (module, name).
#[derive(Clone, Default)]
pub(crate) struct HostFunctions {
    functions: BTreeMap<(String, String), HostBinding>,
}

/// How a host function (or a host-side check of the guest's data) failed;
/// carried through wasmtime as the error of the call so the sandbox can
/// classify it.
#[derive(Debug)]
pub(crate) enum HostFault {
    Error {
        function: String,
        message: String,
        /// The embedder's own error, kept so [`Error`]'s `source()` reaches it.
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    Panic {
        function: String,
        message: String,
    },
    /// The guest broke the data ABI or a limit while calling the host.
    Guest(Error),
    /// The guest reported a panic through `cleanslate.panic`.
    GuestPanic {
        message: String,
    },
}

impl fmt::Display for HostFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostFault::Error {
                function, message, ..
            } => {
                write!(f, "host function `{function}` returned an error: {message}")
            }
            HostFault::Panic { function, message } => {
                write!(f, "host function `{function}` panicked: {message}")
            }
            HostFault::Guest(error) => write!(f, "{error}"),
            HostFault::GuestPanic { message } => write!(f, "the guest panicked: {message}"),
        }
    }
}

impl std::error::Error for HostFault {}

impl HostFault {
    pub(crate) fn to_error(&self, export: &str) -> Error {
        match self {
            HostFault::Error { source, .. } => {
                Error::new(ErrorKind::HostError, format!("{self}")).with_source(source.clone())
            }
            HostFault::Panic { .. } => Error::new(ErrorKind::HostPanic, format!("{self}")),
            HostFault::Guest(error) => Error::new(error.kind(), error.message()),
            HostFault::GuestPanic { message } => {
                Error::from_guest(ErrorKind::GuestPanic, export, message.clone())
            }
        }
    }
}

impl HostFunctions {
    pub(crate) fn insert(&mut self, module: &str, name: &str, f: HostClosure) {
        self.functions.insert(
            (module.to_string(), name.to_string()),
            HostBinding::Values(f),
        );
    }

    pub(crate) fn insert_bytes(&mut self, module: &str, name: &str, f: BytesClosure) {
        self.functions.insert(
            (module.to_string(), name.to_string()),
            HostBinding::Bytes(f),
        );
    }

    /// The bytes host function `name` names for `cleanslate.call_host`:
    /// `module.name` exactly, or a bare `name` registered under one module.
    fn find_bytes(&self, name: &str) -> Result<(String, BytesClosure), String> {
        let bytes = |b: &HostBinding| match b {
            HostBinding::Bytes(f) => Some(f.clone()),
            HostBinding::Values(_) => None,
        };
        if let Some((module, function)) = name.split_once('.')
            && let Some(f) = self
                .functions
                .get(&(module.to_string(), function.to_string()))
                .and_then(bytes)
        {
            return Ok((name.to_string(), f));
        }
        let mut matches = self
            .functions
            .iter()
            .filter(|((_, n), _)| n == name)
            .filter_map(|((m, n), b)| bytes(b).map(|f| (format!("{m}.{n}"), f)));
        match (matches.next(), matches.next()) {
            (Some(found), None) => Ok(found),
            (Some((a, _)), Some((b, _))) => Err(format!(
                "host function name `{name}` is ambiguous ({a}, {b}, ...): call it as `module.name`"
            )),
            (None, _) => {
                let known: Vec<String> = self
                    .functions
                    .iter()
                    .filter(|(_, b)| matches!(b, HostBinding::Bytes(_)))
                    .map(|((m, n), _)| format!("{m}.{n}"))
                    .collect();
                Err(format!(
                    "the guest called host function `{name}`, which the host does not provide (it provides: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            }
        }
    }

    /// Define every function the module imports on `linker`; list every
    /// import that cannot be satisfied. WASI imports are left to the WASI
    /// linker when `wasi` is on.
    pub(crate) fn link(
        &self,
        linker: &mut wasmtime::Linker<StoreData>,
        engine: &wasmtime::Engine,
        layout: &ModuleLayout,
        wasi: bool,
    ) -> Result<(), Error> {
        let mut missing: Vec<String> = layout
            .other_imports
            .iter()
            .map(|i| {
                format!(
                    "{}.{} ({}: sandboxes own all their state and cannot import one)",
                    i.module, i.name, i.what
                )
            })
            .collect();
        for import in &layout.function_imports {
            let qualified = format!("{}.{}", import.module, import.name);
            if wasi && crate::module::is_wasi_module(&import.module) {
                continue;
            }
            if import.module == IMPORT_MODULE {
                match self.link_builtin(linker, &import.name, &import.signature) {
                    Ok(()) => {}
                    Err(problem) => missing.push(format!("{qualified}: {problem}")),
                }
                continue;
            }
            let key = (import.module.clone(), import.name.clone());
            let Some(binding) = self.functions.get(&key) else {
                let hint = if crate::module::is_wasi_module(&import.module) {
                    "(a WASI import: enable WASI on the builder)"
                } else {
                    "(provide it with host_fn or host_fn_bytes)"
                };
                missing.push(format!("{qualified}: {} {hint}", import.signature));
                continue;
            };
            let defined = match binding {
                HostBinding::Values(closure) => {
                    let ty = func_type(engine, &import.signature).ok_or_else(|| {
                        Error::new(
                            ErrorKind::MissingImport,
                            format!(
                                "import {qualified} has signature {}, which host functions cannot provide (only i32, i64, f32 and f64 cross the boundary)",
                                import.signature
                            ),
                        )
                    })?;
                    let wrapped =
                        wrap(qualified.clone(), import.signature.clone(), closure.clone());
                    linker.func_new(&import.module, &import.name, ty, wrapped)
                }
                HostBinding::Bytes(closure) => {
                    if import.signature != bytes_import_signature() {
                        missing.push(format!(
                            "{qualified}: the module imports it as {}, but it is a bytes host function, which needs {} (docs/ABI.md)",
                            import.signature,
                            bytes_import_signature()
                        ));
                        continue;
                    }
                    let closure = closure.clone();
                    let name = qualified.clone();
                    linker.func_wrap(
                        &import.module,
                        &import.name,
                        move |caller: wasmtime::Caller<'_, StoreData>, ptr: i32, len: i32| {
                            call_bytes_host(caller, &name, &closure, ptr as u32, len as u32)
                        },
                    )
                }
            };
            defined.map_err(|e| Error::new(ErrorKind::MissingImport, format!("{e:#}")))?;
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::MissingImport,
            format!(
                "the module has {} unresolved import(s): {}",
                missing.len(),
                summarise(&missing, LISTED_MISSING_IMPORTS)
            ),
        ))
    }

    /// Define one of the `cleanslate.*` imports every guest may use.
    fn link_builtin(
        &self,
        linker: &mut wasmtime::Linker<StoreData>,
        name: &str,
        signature: &Signature,
    ) -> Result<(), String> {
        use crate::ValType::I32;
        let expect = |params: Vec<crate::ValType>, results: Vec<crate::ValType>| {
            let wanted = Signature::new(params, results);
            if *signature == wanted {
                Ok(())
            } else {
                Err(format!(
                    "imported as {signature}, but it is {wanted} (docs/ABI.md)"
                ))
            }
        };
        let defined = match name {
            "call_host" => {
                expect(vec![I32; 4], vec![crate::ValType::I64])?;
                let functions = self.clone();
                linker.func_wrap(
                    IMPORT_MODULE,
                    "call_host",
                    move |mut caller: wasmtime::Caller<'_, StoreData>,
                          name_ptr: i32,
                          name_len: i32,
                          ptr: i32,
                          len: i32| {
                        let name = guest_string(&mut caller, name_ptr as u32, name_len as u32)?;
                        let (qualified, closure) = functions.find_bytes(&name).map_err(|m| {
                            wasmtime::Error::new(HostFault::Error {
                                function: name.clone(),
                                message: m,
                                source: None,
                            })
                        })?;
                        call_bytes_host(caller, &qualified, &closure, ptr as u32, len as u32)
                    },
                )
            }
            "panic" => {
                expect(vec![I32; 2], vec![])?;
                linker.func_wrap(
                    IMPORT_MODULE,
                    "panic",
                    |mut caller: wasmtime::Caller<'_, StoreData>, ptr: i32, len: i32| {
                        let message = with_memory(&mut caller, |memory| {
                            read_message(&memory, ptr as u32, len as u32)
                        })?;
                        Err::<(), _>(wasmtime::Error::new(HostFault::GuestPanic { message }))
                    },
                )
            }
            "log" => {
                expect(vec![I32; 3], vec![])?;
                linker.func_wrap(
                    IMPORT_MODULE,
                    "log",
                    |mut caller: wasmtime::Caller<'_, StoreData>,
                     level: i32,
                     ptr: i32,
                     len: i32| {
                        let message = with_memory(&mut caller, |memory| {
                            read_message(&memory, ptr as u32, len as u32)
                        })?;
                        let export = caller.data().current_export.as_str();
                        match level {
                            0 => tracing::error!(target: "cleanslate::guest", export, "{message}"),
                            1 => tracing::warn!(target: "cleanslate::guest", export, "{message}"),
                            2 => tracing::info!(target: "cleanslate::guest", export, "{message}"),
                            3 => tracing::debug!(target: "cleanslate::guest", export, "{message}"),
                            _ => tracing::trace!(target: "cleanslate::guest", export, "{message}"),
                        }
                        Ok(())
                    },
                )
            }
            other => {
                return Err(format!(
                    "`{other}` is not a function the host offers (cleanslate.call_host, cleanslate.panic and cleanslate.log are)"
                ));
            }
        };
        defined.map(|_| ()).map_err(|e| format!("{e:#}"))
    }
}

/// The signature a guest imports a bytes host function with.
fn bytes_import_signature() -> Signature {
    use crate::ValType::{I32, I64};
    Signature::new(vec![I32, I32], vec![I64])
}

/// Run `f` over a bounds-checked view of the guest's memory.
fn with_memory<R>(
    caller: &mut wasmtime::Caller<'_, StoreData>,
    f: impl FnOnce(GuestMemory<'_>) -> Result<R, Error>,
) -> wasmtime::Result<R> {
    let memory = caller.data().memory.ok_or_else(no_memory)?;
    f(GuestMemory::new(memory.data(&*caller)))
        .map_err(|e| wasmtime::Error::new(HostFault::Guest(e)))
}

fn no_memory() -> wasmtime::Error {
    wasmtime::Error::new(HostFault::Guest(Error::new(
        ErrorKind::InvalidGuestOutput,
        "the guest passed data to the host but defines no memory",
    )))
}

fn guest_string(
    caller: &mut wasmtime::Caller<'_, StoreData>,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<String> {
    if len > MESSAGE_LIMIT {
        return Err(wasmtime::Error::new(HostFault::Guest(Error::new(
            ErrorKind::InvalidGuestOutput,
            format!(
                "the guest named a host function with {len} bytes; names are at most {} KiB",
                MESSAGE_LIMIT / 1024
            ),
        ))));
    }
    with_memory(caller, |memory| {
        let bytes = memory.read(ptr, len, "a host function name")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Error::new(
                ErrorKind::InvalidGuestOutput,
                "the guest named a host function with bytes that are not UTF-8",
            )
        })
    })
}

/// One call of a bytes host function: read the guest's input, run the
/// closure, and place its output in guest memory through the guest's own
/// allocator. Returns the packed (pointer, length).
fn call_bytes_host(
    mut caller: wasmtime::Caller<'_, StoreData>,
    function: &str,
    closure: &BytesClosure,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<i64> {
    let limit = caller.data().output_limit;
    let guest = |e: Error| wasmtime::Error::new(HostFault::Guest(e));
    check_size(
        format_args!("the input to host function `{function}`"),
        len.into(),
        limit,
    )
    .map_err(guest)?;
    let input = with_memory(&mut caller, |memory| {
        memory
            .read(
                ptr,
                len,
                format_args!("input to host function `{function}`"),
            )
            .map(<[u8]>::to_vec)
    })?;
    let outcome = {
        let context = HostContext {
            function,
            memories: &mut caller,
        };
        catch_unwind(AssertUnwindSafe(|| closure(&context, &input)))
    };
    let output = match outcome {
        Ok(Ok(output)) => output,
        Ok(Err(HostFailure::Host(e))) => {
            return Err(wasmtime::Error::new(HostFault::Error {
                function: function.to_string(),
                message: e.to_string(),
                source: Some(Arc::from(e)),
            }));
        }
        Ok(Err(HostFailure::BadInput(message))) => {
            return Err(guest(Error::new(
                ErrorKind::InvalidGuestOutput,
                format!("the guest's input to host function `{function}` is malformed: {message}"),
            )));
        }
        Err(payload) => {
            return Err(wasmtime::Error::new(HostFault::Panic {
                function: function.to_string(),
                message: panic_message(payload.as_ref()),
            }));
        }
    };
    if output.is_empty() {
        return Ok(pack(0, 0));
    }
    let out_len = u32::try_from(output.len())
        .ok()
        .filter(|&l| (l as usize) < i32::MAX as usize)
        .ok_or_else(|| {
            wasmtime::Error::new(HostFault::Error {
                function: function.to_string(),
                message: format!(
                    "it returned {} bytes, more than a 32-bit guest can hold",
                    output.len()
                ),
                source: None,
            })
        })?;
    let alloc = caller.data().alloc.clone().ok_or_else(|| {
        guest(Error::new(
            ErrorKind::InvalidGuestOutput,
            format!(
                "host function `{function}` has output for the guest, but the guest exports no `{ALLOC_EXPORT}` to receive it (docs/ABI.md)"
            ),
        ))
    })?;
    let out_ptr = alloc.call(&mut caller, out_len as i32)? as u32;
    if out_ptr == 0 {
        return Err(guest(Error::new(
            ErrorKind::OutOfMemory,
            format!(
                "the guest's allocator could not give {out_len} bytes for the output of host function `{function}`"
            ),
        )));
    }
    let memory = caller.data().memory.ok_or_else(no_memory)?;
    GuestMemoryMut::new(memory.data_mut(&mut caller))
        .write(
            out_ptr,
            &output,
            format_args!("room for the output of host function `{function}`"),
        )
        .map_err(guest)?;
    Ok(pack(out_ptr, out_len))
}

/// How many unresolved imports an error names before it only counts the
/// rest: a module can have a hundred thousand, and one line must stay
/// readable.
const LISTED_MISSING_IMPORTS: usize = 10;

/// The first `shown` items joined, and a count of the others.
fn summarise(items: &[String], shown: usize) -> String {
    let listed = items[..items.len().min(shown)].join("; ");
    match items.len().checked_sub(shown) {
        Some(rest) if rest > 0 => format!("{listed}; ... and {rest} more"),
        _ => listed,
    }
}

fn func_type(engine: &wasmtime::Engine, signature: &Signature) -> Option<wasmtime::FuncType> {
    let convert = |t: &crate::ValType| -> Option<wasmtime::ValType> {
        Some(match t {
            crate::ValType::I32 => wasmtime::ValType::I32,
            crate::ValType::I64 => wasmtime::ValType::I64,
            crate::ValType::F32 => wasmtime::ValType::F32,
            crate::ValType::F64 => wasmtime::ValType::F64,
            _ => return None,
        })
    };
    let params: Option<Vec<_>> = signature.params().iter().map(convert).collect();
    let results: Option<Vec<_>> = signature.results().iter().map(convert).collect();
    Some(wasmtime::FuncType::new(engine, params?, results?))
}

type Trampoline = dyn Fn(
        wasmtime::Caller<'_, StoreData>,
        &[wasmtime::Val],
        &mut [wasmtime::Val],
    ) -> wasmtime::Result<()>
    + Send
    + Sync;

/// Adapt a user closure to wasmtime: convert values, check the results
/// against the import's signature, and turn errors and panics into
/// [`HostFault`]s.
fn wrap(function: String, signature: Signature, closure: HostClosure) -> Box<Trampoline> {
    Box::new(move |mut caller, params, results| {
        let args: Vec<Val> = params.iter().filter_map(Val::from_wasmtime).collect();
        let mut context = HostContext {
            function: &function,
            memories: &mut caller,
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| closure(&mut context, &args)));
        let values = match outcome {
            Ok(Ok(values)) => values,
            Ok(Err(e)) => {
                return Err(wasmtime::Error::new(HostFault::Error {
                    function: function.clone(),
                    message: e.to_string(),
                    source: Some(Arc::from(e)),
                }));
            }
            Err(payload) => {
                return Err(wasmtime::Error::new(HostFault::Panic {
                    function: function.clone(),
                    message: panic_message(payload.as_ref()),
                }));
            }
        };
        let fits = values.len() == signature.results().len()
            && values
                .iter()
                .zip(signature.results())
                .all(|(v, t)| v.ty() == *t);
        if !fits {
            let got: Vec<String> = values.iter().map(|v| v.ty().to_string()).collect();
            return Err(wasmtime::Error::new(HostFault::Error {
                function: function.clone(),
                message: format!(
                    "it returned ({}) but the import's signature is {signature}",
                    got.join(", ")
                ),
                source: None,
            }));
        }
        for (slot, value) in results.iter_mut().zip(values) {
            *slot = value.to_wasmtime();
        }
        Ok(())
    })
}

/// The text of a panic payload, when it has one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}
