//! Loading a module: parse (binary or WAT), validate, analyse what a reset
//! must cover, rewrite so all state is reachable, compile.

mod cache;
mod initial_image;
mod inspect;
mod instrument;
mod layout;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use cache::CacheStatus;
pub(crate) use initial_image::{HOST_PAGE, InitialImage, differing_pages};
pub use inspect::{GlobalInfo, MemoryInfo, TableInfo};
pub(crate) use inspect::{WASI_PREVIEW1, is_wasi_module};
pub(crate) use instrument::Hooks;
pub(crate) use layout::ModuleLayout;

use crate::engine::limits::DEFAULT_STACK_LIMIT;
use crate::engine::runtime::{EngineFlavor, Runtime};
use crate::error::{Error, ErrorKind};
use crate::value::Signature;

/// A validated, compiled WebAssembly module. Cheap to clone.
///
/// ```
/// use cleanslate::Runtime;
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(br#"(module
///     (import "env" "now" (func (result i64)))
///     (func (export "twice") (param i32) (result i32) local.get 0 i32.const 2 i32.mul))"#)?;
/// let names: Vec<_> = module.functions().map(|f| f.name().to_string()).collect();
/// assert_eq!(names, ["twice"]);
/// assert_eq!(module.imports().next().unwrap().to_string(), "env.now: () -> i64");
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: Arc<ModuleInner>,
}

pub(crate) struct ModuleInner {
    pub runtime: Runtime,
    pub layout: ModuleLayout,
    pub hooks: Hooks,
    /// Per defined memory: what a fresh instance holds in its data extent
    /// (the active data segments applied to zeros), when that is known
    /// statically (every segment at a constant offset).
    pub initial_memory: Vec<Option<Arc<InitialImage>>>,
    /// The rewritten binary, compiled per engine flavor on demand.
    pub(crate) instrumented: Vec<u8>,
    compiled: Mutex<HashMap<EngineFlavor, wasmtime::Module>>,
    /// What the compiled-module cache did for the load-time compilation.
    cache_status: CacheStatus,
}

// The runtime's loading methods live with the loading they start: the engine
// layer below knows nothing of modules.
impl Runtime {
    /// Load a module from a `.wasm` (binary) or `.wat` (text) file.
    ///
    /// ```no_run
    /// # let runtime = cleanslate::Runtime::new()?;
    /// let module = runtime.load_file("guest.wasm")?;
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidModule`] when the file cannot be read, and for
    /// everything [`load_bytes`](Runtime::load_bytes) rejects; the message
    /// starts with the path.
    /// [`ErrorKind::Instantiation`] as for [`load_bytes`](Runtime::load_bytes).
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Module, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidModule,
                format!("cannot read module file {}: {e}", path.display()),
            )
        })?;
        Module::load(self.clone(), &bytes).map_err(|e| e.context(path.display()))
    }

    /// Load a module from bytes: the binary format or WAT text.
    ///
    /// ```
    /// # let runtime = cleanslate::Runtime::new()?;
    /// let module = runtime.load_bytes(br#"(module (func (export "f")))"#)?;
    /// assert!(module.function("f").is_some());
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidModule`] when the bytes are neither a valid binary
    /// module nor valid WAT text, use a WebAssembly feature the runtime does
    /// not support, or do not compile; [`Error::offset`] has the byte offset of
    /// the problem when it is known. [`ErrorKind::Instantiation`] when the
    /// engine cannot be set up on this machine.
    pub fn load_bytes(&self, bytes: impl AsRef<[u8]>) -> Result<Module, Error> {
        Module::load(self.clone(), bytes.as_ref())
    }
}

impl Module {
    pub(crate) fn load(runtime: Runtime, bytes: &[u8]) -> Result<Module, Error> {
        let binary = to_binary(bytes)?;
        let layout = layout::analyse(&binary)?;
        let (instrumented, hooks) = instrument::instrument(&binary, &layout)?;
        let initial_memory = initial_memory(&binary, &layout);
        // Compile once now so that problems surface at load time.
        let flavor = EngineFlavor {
            fuel: false,
            max_stack: DEFAULT_STACK_LIMIT,
        };
        let engine = runtime.engine(flavor)?;
        let (compiled, cache_status) = compile(&runtime, &instrumented, &engine, flavor);
        let compiled = compiled.map_err(compile_error)?;
        Ok(Module {
            inner: Arc::new(ModuleInner {
                runtime,
                layout,
                hooks,
                initial_memory,
                instrumented,
                compiled: Mutex::new(HashMap::from([(flavor, compiled)])),
                cache_status,
            }),
        })
    }

    /// What the compiled-module cache did when this module was loaded
    /// ([`CacheStatus::Off`] unless the runtime has
    /// [`module_cache`](crate::RuntimeConfig::module_cache) set).
    pub fn cache_status(&self) -> &CacheStatus {
        &self.inner.cache_status
    }

    /// The compiled code for an engine flavor, compiling it on first use.
    pub(crate) fn compiled(&self, flavor: EngineFlavor) -> Result<wasmtime::Module, Error> {
        let mut compiled = self
            .inner
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(module) = compiled.get(&flavor) {
            return Ok(module.clone());
        }
        let engine = self.inner.runtime.engine(flavor)?;
        // Flavors that differ only in stack limit generate identical code, so
        // reuse an existing compilation through (de)serialization instead of
        // running the compiler again.
        let sibling = compiled
            .iter()
            .find(|(f, _)| f.fuel == flavor.fuel)
            .map(|(_, m)| m.clone());
        let module = match sibling.and_then(|m| m.serialize().ok()) {
            // SAFETY: the bytes were produced just now by `serialize` from a
            // module of this same process and wasmtime build, with a
            // compatible engine configuration (only the stack limit, which
            // does not affect code, differs); wasmtime re-checks that
            // compatibility and rejects mismatches with an error.
            Some(bytes) => unsafe { wasmtime::Module::deserialize(&engine, &bytes) },
            None => {
                compile(
                    &self.inner.runtime,
                    &self.inner.instrumented,
                    &engine,
                    flavor,
                )
                .0
            }
        }
        .map_err(compile_error)?;
        compiled.insert(flavor, module.clone());
        Ok(module)
    }

    /// The runtime this module belongs to.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The exported functions a sandbox can call.
    pub fn functions(&self) -> impl Iterator<Item = FunctionInfo<'_>> {
        let has_allocator = self
            .inner
            .layout
            .function(crate::abi::ALLOC_EXPORT)
            .is_some_and(|f| crate::abi::is_alloc_signature(&f.signature));
        self.inner.layout.exports.iter().map(move |f| FunctionInfo {
            name: &f.name,
            signature: &f.signature,
            has_allocator,
        })
    }

    /// The exported function named `name`.
    pub fn function(&self, name: &str) -> Option<FunctionInfo<'_>> {
        self.functions().find(|f| f.name == name)
    }

    /// The functions this module imports, which the host must provide with
    /// [`SandboxBuilder::host_fn`](crate::SandboxBuilder::host_fn).
    pub fn imports(&self) -> impl Iterator<Item = ImportInfo<'_>> {
        self.inner
            .layout
            .function_imports
            .iter()
            .map(|i| ImportInfo {
                module: &i.module,
                name: &i.name,
                signature: Some(&i.signature),
            })
    }
}

/// Compile, or take the compiled code from the runtime's module cache
/// when it holds a trustworthy copy (module/cache.rs says what that
/// means).
fn compile(
    runtime: &Runtime,
    wasm: &[u8],
    engine: &wasmtime::Engine,
    flavor: EngineFlavor,
) -> (wasmtime::Result<wasmtime::Module>, CacheStatus) {
    let Some(dir) = &runtime.inner.config.module_cache else {
        return (wasmtime::Module::new(engine, wasm), CacheStatus::Off);
    };
    let entry = cache::CacheEntry::new(dir, wasm, engine, flavor.fuel);
    let rejected = match entry.read() {
        Ok(Some(bytes)) => {
            // SAFETY: `bytes` passed the cache's checks: our header and
            // a SHA-256 over the payload (so not truncated or damaged
            // since we wrote it), in a regular file and directory owned
            // by this user and writable by no one else (so written by
            // this library, which writes only `serialize` output of a
            // module compiled by an engine whose compatibility hash and
            // wasmtime version are part of the file's name). wasmtime
            // then re-checks its own header, version and engine
            // configuration, and returns an error on any mismatch.
            match unsafe { wasmtime::Module::deserialize(engine, &bytes) } {
                Ok(module) => return (Ok(module), CacheStatus::Hit),
                Err(e) => Some(format!("wasmtime refused it: {e}")),
            }
        }
        Ok(None) => None,
        Err(why) => Some(why),
    };
    if let Some(why) = &rejected {
        tracing::warn!(file = %entry.path().display(), reason = %why, "ignoring a compiled-module cache file; recompiling");
    }
    let module = match wasmtime::Module::new(engine, wasm) {
        Ok(module) => module,
        Err(e) => return (Err(e), CacheStatus::Off),
    };
    let stored = module
        .serialize()
        .map_err(|e| format!("cannot serialize: {e}"))
        .and_then(|bytes| entry.write(&bytes));
    let status = match (stored, rejected) {
        (Err(why), _) => {
            tracing::warn!(reason = %why, "cannot store compiled code in the module cache");
            CacheStatus::NotStored(why)
        }
        (Ok(()), Some(why)) => CacheStatus::Rebuilt(why),
        (Ok(()), None) => CacheStatus::Miss,
    };
    (Ok(module), status)
}

fn compile_error(e: wasmtime::Error) -> Error {
    Error::invalid_module(format!("cannot compile the module: {e:#}"), None)
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field(
                "exports",
                &self.functions().map(|f| f.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// An exported function: its name and signature.
#[derive(Clone, Copy, Debug)]
pub struct FunctionInfo<'a> {
    name: &'a str,
    signature: &'a Signature,
    has_allocator: bool,
}

impl<'a> FunctionInfo<'a> {
    /// The export name.
    pub fn name(&self) -> &'a str {
        self.name
    }
    /// The parameter and result types.
    pub fn signature(&self) -> &'a Signature {
        self.signature
    }
    /// The parameter types.
    pub fn params(&self) -> &'a [crate::value::ValType] {
        self.signature.params()
    }
    /// The result types.
    pub fn results(&self) -> &'a [crate::value::ValType] {
        self.signature.results()
    }
    /// Whether this looks like a bytes/JSON function of the data ABI
    /// (docs/ABI.md): type `(i32, i32) -> i32` in a module that exports
    /// `cleanslate_alloc`. Call it with
    /// [`Sandbox::call_bytes`](crate::Sandbox::call_bytes).
    pub fn is_data_function(&self) -> bool {
        self.has_allocator && crate::abi::is_data_signature(self.signature)
    }
}

impl fmt::Display for FunctionInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.signature)
    }
}

/// An import the module needs.
#[derive(Clone, Copy, Debug)]
pub struct ImportInfo<'a> {
    module: &'a str,
    name: &'a str,
    signature: Option<&'a Signature>,
}

impl<'a> ImportInfo<'a> {
    /// The import's module name (`"env"`, ...).
    pub fn module(&self) -> &'a str {
        self.module
    }
    /// The import's field name.
    pub fn name(&self) -> &'a str {
        self.name
    }
    /// The function signature, for function imports.
    pub fn signature(&self) -> Option<&'a Signature> {
        self.signature
    }
}

impl fmt::Display for ImportInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)?;
        if let Some(sig) = self.signature {
            write!(f, ": {sig}")?;
        }
        Ok(())
    }
}

/// For each defined memory, the data extent's initial content: the active
/// segments applied in order to zeros (as instantiation does). Sparse: it
/// holds at most the segments' own bytes, wherever they sit (a one-byte
/// segment at offset 256 MiB costs one byte, not 256 MiB).
fn initial_memory(binary: &[u8], layout: &ModuleLayout) -> Vec<Option<Arc<InitialImage>>> {
    layout
        .memories
        .iter()
        .enumerate()
        .map(|(i, memory)| {
            memory.data_extent?;
            let segments = layout
                .active_data
                .iter()
                .filter(|d| d.memory == i)
                .map(|d| (d.offset, &binary[d.bytes.clone()]))
                .collect::<Vec<_>>();
            InitialImage::from_segments(segments.into_iter()).map(Arc::new)
        })
        .collect()
}

/// Accept the binary format as is and translate WAT text.
fn to_binary(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::invalid_module(
            "not a WebAssembly module: neither the binary format (which starts with \\0asm) nor UTF-8 WAT text",
            Some(e.valid_up_to()),
        )
    })?;
    wat::parse_str(text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidModule,
            format!("invalid WAT text: {}", one_line_wat_error(&e.to_string())),
        )
    })
}

/// The parser's message is several lines (a source snippet under the
/// problem); errors here are one line, so keep the message and where.
fn one_line_wat_error(text: &str) -> String {
    let mut lines = text.lines();
    let message = lines.next().unwrap_or_default().trim();
    let place = lines
        .find_map(|l| l.trim().strip_prefix("--> "))
        .and_then(|place| {
            let mut parts = place.rsplitn(3, ':');
            let column = parts.next()?;
            let line = parts.next()?;
            Some(format!(" (line {line}, column {column})"))
        });
    format!("{message}{}", place.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wat_errors_are_one_line_naming_the_place() {
        let err = to_binary(b"(module\n  (func (result i32) nope))").unwrap_err();
        let text = err.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("(line 2, column"), "{text}");
        let err = to_binary(b"").unwrap_err();
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
    }
}
