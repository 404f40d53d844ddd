//! Loading a module: parse (binary or WAT), validate, analyse what a reset
//! must cover, rewrite so all state is reachable, compile.

mod cache;
mod initial_image;
mod inspect;
mod instrument;
mod layout;
mod wire;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

pub use cache::CacheStatus;
pub(crate) use initial_image::{HOST_PAGE, InitialImage, differing_pages};
pub use inspect::{GlobalInfo, MemoryInfo, TableInfo};
pub(crate) use inspect::{WASI_PREVIEW1, is_wasi_module};
pub(crate) use instrument::{Hooks, SegmentHooks};
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
    /// The rewritten binary, compiled per engine flavor on demand. Set at
    /// load, unless the load was a cache hit: then made from `binary` when
    /// first needed ([`ModuleInner::instrumented`]).
    instrumented: OnceLock<Vec<u8>>,
    /// The module as loaded (binary format), kept after a cache hit to make
    /// `instrumented` from; empty otherwise. (Either way one copy of the
    /// module is kept, as a compilation for another flavor may need it.)
    binary: Vec<u8>,
    /// The digest of the module as loaded: its key in the compiled-module
    /// cache, and what a saved snapshot names its module by.
    pub(crate) digest: [u8; 32],
    compiled: Mutex<HashMap<EngineFlavor, wasmtime::Module>>,
    /// What the compiled-module cache did for the load-time compilation.
    cache_status: CacheStatus,
}

impl ModuleInner {
    /// The rewritten binary; after a cache hit, the first call re-runs the
    /// analysis and the rewrite on the module as loaded (and refuses a
    /// result that differs from what the cache said they make).
    pub(crate) fn instrumented(&self) -> Result<&[u8], Error> {
        if let Some(wasm) = self.instrumented.get() {
            return Ok(wasm);
        }
        let layout = analyse(&self.binary)?;
        let (wasm, hooks) = instrument::instrument(&self.binary, &layout)?;
        let now = encode_analysis(&layout, &hooks);
        if now.is_err() || now != encode_analysis(&self.layout, &self.hooks) {
            return Err(Error::invalid_module(
                "the compiled-module cache's record of this module differs from its analysis now; clear the cache",
                None,
            ));
        }
        Ok(self.instrumented.get_or_init(|| wasm))
    }
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
        Module::load(self.clone(), Cow::Owned(bytes)).map_err(|e| e.context(path.display()))
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
        Module::load(self.clone(), Cow::Borrowed(bytes.as_ref()))
    }
}

impl Module {
    pub(crate) fn load(runtime: Runtime, bytes: Cow<'_, [u8]>) -> Result<Module, Error> {
        let binary = to_binary(bytes)?;
        // Compile once now so that problems surface at load time.
        let flavor = EngineFlavor {
            fuel: false,
            max_stack: DEFAULT_STACK_LIMIT,
        };
        let engine = runtime.engine(flavor)?;
        let digest = cache::module_digest(&binary);
        let cached = lookup(&runtime, &digest, &engine, flavor, Some(&binary));
        let module =
            |layout, hooks, initial_memory, instrumented, binary, compiled, cache_status| Module {
                inner: Arc::new(ModuleInner {
                    runtime: runtime.clone(),
                    layout,
                    hooks,
                    initial_memory,
                    instrumented,
                    binary,
                    digest,
                    compiled: Mutex::new(HashMap::from([(flavor, compiled)])),
                    cache_status,
                }),
            };
        if let Cached::Hit {
            analysis,
            module: compiled,
        } = cached
        {
            // The analysis and the rewrite are skipped: the cache holds
            // their results for exactly these bytes.
            let initial_memory = initial_memory(&binary, &analysis.layout);
            return Ok(module(
                analysis.layout,
                analysis.hooks,
                initial_memory,
                OnceLock::new(),
                binary.into_owned(),
                compiled,
                CacheStatus::Hit,
            ));
        }
        let layout = analyse(&binary)?;
        let (instrumented, hooks) = instrument::instrument(&binary, &layout)?;
        let initial_memory = initial_memory(&binary, &layout);
        drop(binary);
        let compiled = wasmtime::Module::new(&engine, &instrumented).map_err(compile_error)?;
        let cache_status = store(cached, &compiled, &layout, &hooks);
        Ok(module(
            layout,
            hooks,
            initial_memory,
            OnceLock::from(instrumented),
            Vec::new(),
            compiled,
            cache_status,
        ))
    }

    /// The BLAKE3 digest of the module's bytes as loaded (WAT text is
    /// digested in its binary form): the same for the same module in every
    /// process, so it can key what is stored about the module, as saved
    /// snapshots ([`Snapshot::save`](crate::Snapshot::save)) do.
    ///
    /// ```
    /// use cleanslate::Runtime;
    /// let wat = r#"(module (func (export "nop")))"#;
    /// let one = Runtime::new()?.load_bytes(wat)?;
    /// let two = Runtime::new()?.load_bytes(wat)?;
    /// assert_eq!(one.digest(), two.digest());
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn digest(&self) -> [u8; 32] {
        self.inner.digest
    }

    /// What the compiled-module cache did when this module was loaded
    /// ([`CacheStatus::Off`] unless the runtime has
    /// [`module_cache`](crate::RuntimeConfig::module_cache) set).
    pub fn cache_status(&self) -> &CacheStatus {
        &self.inner.cache_status
    }

    /// The page size in bytes of each defined memory, in index order.
    pub(crate) fn memory_page_sizes(&self) -> Result<Vec<u64>, Error> {
        // The flavor every module is compiled for at load: no compile here.
        let compiled = self.compiled(EngineFlavor {
            fuel: false,
            max_stack: DEFAULT_STACK_LIMIT,
        })?;
        let hooks = &self.inner.hooks.memories;
        hooks
            .iter()
            .map(|hook| match compiled.get_export(hook) {
                Some(wasmtime::ExternType::Memory(ty)) => Ok(ty.page_size()),
                _ => Err(Error::new(
                    ErrorKind::Instantiation,
                    format!("the rewrite's memory export {hook} is missing"),
                )),
            })
            .collect()
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
                let inner = &self.inner;
                match lookup(&inner.runtime, &inner.digest, &engine, flavor, None) {
                    Cached::Hit { module, .. } => Ok(module),
                    cached => {
                        let module = wasmtime::Module::new(&engine, inner.instrumented()?);
                        if let Ok(module) = &module {
                            store(cached, module, &inner.layout, &inner.hooks);
                        }
                        module
                    }
                }
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

/// Count the analyses, so tests can tell that a cache hit runs none.
fn analyse(binary: &[u8]) -> Result<ModuleLayout, Error> {
    #[cfg(test)]
    tests::ANALYSES.with(|n| n.set(n.get() + 1));
    layout::analyse(binary)
}

/// What a cache entry records next to the compiled code: everything the
/// analysis and the rewrite produce that a [`Module`] keeps.
#[derive(serde::Deserialize)]
struct Analysis {
    layout: ModuleLayout,
    hooks: Hooks,
}

/// [`Analysis`], borrowed, for writing.
#[derive(serde::Serialize)]
struct AnalysisRef<'a> {
    layout: &'a ModuleLayout,
    hooks: &'a Hooks,
}

fn encode_analysis(layout: &ModuleLayout, hooks: &Hooks) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(&AnalysisRef { layout, hooks })
        .map_err(|e| format!("cannot encode the analysis: {e}"))
}

/// What the runtime's module cache has for a module and an engine flavor.
enum Cached {
    /// The runtime has no cache.
    Off,
    /// A trustworthy entry: the analysis it records and its code, loaded.
    Hit {
        analysis: Box<Analysis>,
        module: wasmtime::Module,
    },
    /// No usable entry; `rejected` says why an entry that is there was not
    /// used.
    Absent {
        entry: cache::CacheEntry,
        rejected: Option<String>,
    },
}

/// Look the module (by its cache digest) up in the runtime's cache;
/// `binary`, when given, is checked against the record's data ranges.
fn lookup(
    runtime: &Runtime,
    digest: &[u8; 32],
    engine: &wasmtime::Engine,
    flavor: EngineFlavor,
    binary: Option<&[u8]>,
) -> Cached {
    let Some(dir) = &runtime.inner.config.module_cache else {
        return Cached::Off;
    };
    let entry = cache::CacheEntry::new(dir, digest, engine, flavor.fuel);
    let rejected = match entry.read() {
        Ok(Some(found)) => match decode_analysis(&found.record, binary) {
            Err(why) => Some(why),
            // SAFETY: the code file passed the cache's checks
            // (module/cache.rs): a regular file in a directory, both owned
            // by this user and writable by no one else (so written by this
            // library, which writes only `serialize` output of a module
            // compiled by an engine whose compatibility hash and wasmtime
            // version are part of the key), whose length and every byte,
            // read through this same descriptor, match the digest of an
            // entry that itself passed our header and digest check.
            // wasmtime maps this descriptor's file, so what it maps is the
            // file that was checked; it could differ from what was checked
            // only if rewritten in place after the check, which this
            // library never does (it writes a new file and renames it;
            // the open descriptor and the mapping keep the old one) and
            // which only this user (or root) has the permission to do:
            // someone who can already change this process's own files.
            // wasmtime then re-checks its own header, version and engine
            // configuration, and returns an error on any mismatch.
            Ok(analysis) => {
                match unsafe { wasmtime::Module::deserialize_open_file(engine, found.code) } {
                    Ok(module) => return Cached::Hit { analysis, module },
                    Err(e) => Some(format!("wasmtime refused it: {e:#}")),
                }
            }
        },
        Ok(None) => None,
        Err(why) => Some(why),
    };
    if let Some(why) = &rejected {
        tracing::warn!(file = %entry.path().display(), reason = %why, "ignoring a compiled-module cache entry; recompiling");
    }
    Cached::Absent { entry, rejected }
}

fn decode_analysis(record: &[u8], binary: Option<&[u8]>) -> Result<Box<Analysis>, String> {
    let analysis: Box<Analysis> =
        postcard::from_bytes(record).map_err(|e| format!("cannot decode its record: {e}"))?;
    if let Some(binary) = binary
        && analysis
            .layout
            .active_data
            .iter()
            .any(|d| d.bytes.end > binary.len() || d.bytes.start > d.bytes.end)
    {
        return Err("its record does not fit the module".into());
    }
    Ok(analysis)
}

/// Store a fresh compilation in the cache when the lookup found no usable
/// entry, and say what the cache did.
fn store(
    cached: Cached,
    module: &wasmtime::Module,
    layout: &ModuleLayout,
    hooks: &Hooks,
) -> CacheStatus {
    let Cached::Absent { entry, rejected } = cached else {
        return CacheStatus::Off;
    };
    let stored = encode_analysis(layout, hooks).and_then(|record| {
        let code = module
            .serialize()
            .map_err(|e| format!("cannot serialize: {e}"))?;
        entry.write(&record, &code)
    });
    match (stored, rejected) {
        (Err(why), _) => {
            tracing::warn!(reason = %why, "cannot store compiled code in the module cache");
            CacheStatus::NotStored(why)
        }
        (Ok(()), Some(why)) => CacheStatus::Rebuilt(why),
        (Ok(()), None) => CacheStatus::Miss,
    }
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
fn to_binary(bytes: Cow<'_, [u8]>) -> Result<Cow<'_, [u8]>, Error> {
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes);
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::invalid_module(
            "not a WebAssembly module: neither the binary format (which starts with \\0asm) nor UTF-8 WAT text",
            Some(e.valid_up_to()),
        )
    })?;
    wat::parse_str(text).map(Cow::Owned).map_err(|e| {
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
    use crate::{RuntimeConfig, Sandbox, Val};
    use std::cell::Cell;

    thread_local! {
        /// Analyses run on this thread (loads run them on the caller's).
        pub(super) static ANALYSES: Cell<usize> = const { Cell::new(0) };
    }

    fn analyses() -> usize {
        ANALYSES.with(|n| n.get())
    }

    /// A module with some of everything the analysis records.
    const WAT: &str = r#"(module
      (memory 1)
      (data (i32.const 16) "hello")
      (data $p "passive")
      (table 2 funcref)
      (elem (i32.const 0) $get)
      (elem $e funcref (ref.func $get))
      (global $g (mut i32) (i32.const 5))
      (func $get (export "get") (result i32) (global.get $g))
      (func (export "bump") (result i32)
        (global.set $g (i32.add (global.get $g) (i32.const 1)))
        (i32.store8 (i32.const 16) (i32.const 72))
        (data.drop $p) (elem.drop $e)
        (global.get $g)))"#;

    fn cache_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cleanslate-module-cache-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn cached(dir: &Path) -> Runtime {
        Runtime::with_config(RuntimeConfig::default().module_cache(dir)).unwrap()
    }

    fn assert_resets(module: &Module, fuel: Option<u64>) {
        let mut builder = Sandbox::builder(module);
        if let Some(fuel) = fuel {
            builder = builder.fuel(fuel);
        }
        let mut sandbox = builder.build().unwrap();
        for _ in 0..2 {
            assert_eq!(sandbox.call("bump", &[]).unwrap(), [Val::I32(6)]);
            assert_eq!(sandbox.call("get", &[]).unwrap(), [Val::I32(5)]);
        }
    }

    #[test]
    fn a_hit_runs_no_analysis_and_gives_the_same_module() {
        let dir = cache_dir("same");
        let first = cached(&dir).load_bytes(WAT).unwrap();
        assert_eq!(first.cache_status(), &CacheStatus::Miss);
        let before = analyses();
        let second = cached(&dir).load_bytes(WAT).unwrap();
        assert_eq!(second.cache_status(), &CacheStatus::Hit);
        assert_eq!(analyses(), before, "a hit runs no analysis");
        let (a, b) = (&first.inner, &second.inner);
        assert_eq!(format!("{:?}", a.layout), format!("{:?}", b.layout));
        assert_eq!(format!("{:?}", a.hooks), format!("{:?}", b.hooks));
        assert_eq!(
            encode_analysis(&a.layout, &a.hooks),
            encode_analysis(&b.layout, &b.hooks)
        );
        assert_eq!(a.initial_memory, b.initial_memory);
        assert_resets(&first, None);
        assert_resets(&second, None);
        // The rewritten bytes, made again on demand, are the same.
        assert_eq!(first.proposals(), second.proposals());
        assert_eq!(a.instrumented().unwrap(), b.instrumented().unwrap());
        assert_eq!(analyses(), before + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fuel_works_after_a_hit_with_or_without_its_own_entry() {
        let dir = cache_dir("fuel");
        cached(&dir).load_bytes(WAT).unwrap();
        // A hit, then a flavor the cache does not have: compiled from the
        // module as loaded (one analysis, to rewrite it again), and stored.
        let module = cached(&dir).load_bytes(WAT).unwrap();
        assert_eq!(module.cache_status(), &CacheStatus::Hit);
        let before = analyses();
        assert_resets(&module, Some(100_000));
        assert_eq!(analyses(), before + 1);
        // Now both flavors hit.
        let module = cached(&dir).load_bytes(WAT).unwrap();
        assert_eq!(module.cache_status(), &CacheStatus::Hit);
        let before = analyses();
        assert_resets(&module, Some(100_000));
        assert_eq!(analyses(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_well_formed_entry_wasmtime_refuses_is_rebuilt() {
        let dir = cache_dir("refused");
        let runtime = cached(&dir);
        let module = runtime.load_bytes(WAT).unwrap();
        // Our framing and correct digests around bytes that are not a
        // compiled module: wasmtime's own checks refuse them.
        let engine = runtime
            .engine(EngineFlavor {
                fuel: false,
                max_stack: DEFAULT_STACK_LIMIT,
            })
            .unwrap();
        let binary = to_binary(Cow::Borrowed(WAT.as_bytes())).unwrap();
        let entry = cache::CacheEntry::new(&dir, &cache::module_digest(&binary), &engine, false);
        let record = encode_analysis(&module.inner.layout, &module.inner.hooks).unwrap();
        entry.write(&record, b"not a compiled module").unwrap();
        let module = cached(&dir).load_bytes(WAT).unwrap();
        match module.cache_status() {
            CacheStatus::Rebuilt(why) => assert!(why.contains("wasmtime refused"), "{why}"),
            other => panic!("expected a rebuild, got {other:?}"),
        }
        assert_resets(&module, None);
        // A record that is not ours is refused before wasmtime is asked.
        entry
            .write(b"\xff\xff\xff", b"not a compiled module")
            .unwrap();
        match cached(&dir).load_bytes(WAT).unwrap().cache_status() {
            CacheStatus::Rebuilt(why) => assert!(why.contains("record"), "{why}"),
            other => panic!("expected a rebuild, got {other:?}"),
        }
        assert_eq!(
            cached(&dir).load_bytes(WAT).unwrap().cache_status(),
            &CacheStatus::Hit
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wat_errors_are_one_line_naming_the_place() {
        let err = to_binary(Cow::Borrowed(b"(module\n  (func (result i32) nope))")).unwrap_err();
        let text = err.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("(line 2, column"), "{text}");
        let err = to_binary(Cow::Borrowed(b"")).unwrap_err();
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
    }
}
