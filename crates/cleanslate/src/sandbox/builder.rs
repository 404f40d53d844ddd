//! Configuring and building a sandbox: limits, host functions, init, and
//! the snapshot that becomes the clean slate.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::limits::Limits;
use crate::engine::runtime::EngineFlavor;
use crate::error::{Error, ErrorKind};
use crate::instance::StoreData;
use crate::instance::host::{HostContext, HostFailure, HostFnError, HostFunctions};
use crate::instance::interrupt::InterruptState;
use crate::instance::wasi::WasiConfig;
use crate::instance::{InstanceFactory, LiveInstance};
use crate::module::Module;
use crate::reset::{ResetStrategy, Verify, VerifySchedule};
use crate::sandbox::call::enter;
use crate::sandbox::{Sandbox, SandboxCore, Status, module_id};
use crate::snapshot::{Snapshot, SnapshotImage};
use crate::value::Val;

/// Builds a [`Sandbox`]: limits, host functions, init function, verification.
///
/// ```
/// use std::time::Duration;
/// use cleanslate::{Runtime, Sandbox, Val, Verify};
///
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(r#"(module
///     (import "env" "double" (func $double (param i32) (result i32)))
///     (memory 1)
///     (global $ready (mut i32) (i32.const 0))
///     (func (export "setup") (global.set $ready (i32.const 1)))
///     (func (export "run") (param i32) (result i32)
///         (i32.add (call $double (local.get 0)) (global.get $ready))))"#)?;
/// let mut sandbox = Sandbox::builder(&module)
///     .memory_limit(1 << 20)
///     .stack_limit(256 * 1024)
///     .fuel(1_000_000)
///     .timeout(Duration::from_millis(200))
///     .init("setup")
///     .verify(Verify::Always)
///     .host_fn("env", "double", |args| match args {
///         [Val::I32(x)] => Ok(vec![Val::I32(x * 2)]),
///         _ => Err("double takes one i32".into()),
///     })
///     .build()?;
/// // `setup` ran once before the snapshot, so every call sees $ready = 1.
/// assert_eq!(sandbox.call("run", &[Val::I32(20)])?, [Val::I32(41)]);
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
#[derive(Clone)]
pub struct SandboxBuilder {
    module: Module,
    limits: Limits,
    init: Option<String>,
    verify: Verify,
    strategy: ResetStrategy,
    host: HostFunctions,
    wasi: Option<WasiConfig>,
}

impl SandboxBuilder {
    pub(crate) fn new(module: &Module) -> Self {
        SandboxBuilder {
            module: module.clone(),
            limits: Limits::default(),
            init: None,
            verify: Verify::Off,
            strategy: ResetStrategy::Auto,
            host: HostFunctions::default(),
            wasi: None,
        }
    }

    /// The most bytes the sandbox's linear memories may hold **together**
    /// (default 64 MiB): a module with several memories shares one limit
    /// among them. A module whose initial memories exceed it is refused at
    /// build with [`ErrorKind::OutOfMemory`]; a `memory.grow` beyond it
    /// returns -1 to the guest, and if the call then fails, it fails with
    /// [`ErrorKind::OutOfMemory`].
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.limits.memory = bytes;
        self
    }

    /// The most elements each table may grow to (default 100,000).
    pub fn table_limit(mut self, elements: u64) -> Self {
        self.limits.table_elements = elements;
        self
    }

    /// Native stack the guest may use, in bytes (default 512 KiB; 16 KiB to
    /// 64 MiB). Exceeding it is [`ErrorKind::StackOverflow`].
    pub fn stack_limit(mut self, bytes: usize) -> Self {
        self.limits.stack = bytes;
        self
    }

    /// Fuel units each call may consume (roughly one per instruction).
    /// Running out is [`ErrorKind::OutOfFuel`]. Without this, calls are
    /// unmetered (and run faster).
    ///
    /// A WASI guest's sleep (`poll_oneoff` on clocks) costs fuel too, one
    /// unit per microsecond, so that a sandbox limited by fuel alone cannot
    /// hold a thread for as long as the guest likes: a sleep the remaining
    /// fuel cannot pay for ends the call with [`ErrorKind::OutOfFuel`] when
    /// the fuel is spent.
    pub fn fuel(mut self, units: u64) -> Self {
        self.limits.fuel = Some(units);
        self
    }

    /// Wall-clock time each call may take. Exceeding it is
    /// [`ErrorKind::Timeout`]; precision is the runtime's epoch tick. A WASI
    /// guest sleeping (`poll_oneoff` on clocks) past it is stopped at the
    /// deadline too, as is one cancelled while it sleeps.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.limits.timeout = Some(timeout);
        self
    }

    /// An export to run once after instantiation (and after `_initialize`,
    /// if exported), before the snapshot: its effects are part of the clean
    /// slate. It must take no parameters.
    pub fn init(mut self, export: impl Into<String>) -> Self {
        self.init = Some(export.into());
        self
    }

    /// When to re-check resets against the snapshot (default [`Verify::Off`]).
    pub fn verify(mut self, verify: Verify) -> Self {
        self.verify = verify;
        self
    }

    /// Which reset paths the sandbox may use (default [`ResetStrategy::Auto`]:
    /// in place when provably complete, else a fresh instance).
    pub fn reset_strategy(mut self, strategy: ResetStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Provide the import `module`.`name` as a host function over core
    /// values. The closure gets the arguments as the import declares them
    /// and must return values of the import's result types. An `Err` fails
    /// the call with [`ErrorKind::HostError`]; a panic is caught and fails it
    /// with [`ErrorKind::HostPanic`]. Either way the sandbox is reset.
    pub fn host_fn<F>(mut self, module: &str, name: &str, f: F) -> Self
    where
        F: Fn(&[Val]) -> Result<Vec<Val>, HostFnError> + Send + Sync + 'static,
    {
        self.host
            .insert(module, name, Arc::new(move |_ctx, args| f(args)));
        self
    }

    /// Like [`host_fn`](SandboxBuilder::host_fn), with the call's
    /// [`HostContext`]: the closure can read and write the calling
    /// instance's memories, so it can take and return pointers the way WASI
    /// does (a guest passes a buffer and its length, or an out-pointer).
    /// Every access is bounds-checked; what it writes is undone by the
    /// reset after the call like any write of the guest.
    ///
    /// ```
    /// use cleanslate::{Runtime, Sandbox, Val};
    /// let module = Runtime::new()?.load_bytes(r#"(module
    ///     (import "env" "upcase" (func $upcase (param i32 i32)))
    ///     (memory (export "memory") 1) (data (i32.const 0) "shout")
    ///     (func (export "run") (result i32)
    ///         (call $upcase (i32.const 0) (i32.const 5)) (i32.load8_u (i32.const 0))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module)
    ///     .host_fn_with_context("env", "upcase", |ctx, args| {
    ///         let [Val::I32(ptr), Val::I32(len)] = args else { return Err("(ptr, len)".into()) };
    ///         let text = ctx.read_memory(*ptr as u64, *len as usize)?;
    ///         ctx.write_memory(*ptr as u64, &text.to_ascii_uppercase())?;
    ///         Ok(vec![])
    ///     })
    ///     .build()?;
    /// assert_eq!(sandbox.call("run", &[])?, [Val::I32(b'S' as i32)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn host_fn_with_context<F>(mut self, module: &str, name: &str, f: F) -> Self
    where
        F: Fn(&mut HostContext<'_>, &[Val]) -> Result<Vec<Val>, HostFnError>
            + Send
            + Sync
            + 'static,
    {
        self.host.insert(module, name, Arc::new(f));
        self
    }

    /// The most bytes a guest may hand the host in one piece: a data
    /// function's output, the input of a host function, or a WASI call's
    /// stdout or stderr (default 16 MiB). More is
    /// [`ErrorKind::OutputTooLarge`], refused before the host copies it.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.limits.output = bytes;
        self
    }

    /// Provide the host function `module`.`name` over bytes (docs/ABI.md).
    /// A guest reaches it by importing `module`.`name` with the type
    /// `(param i32 i32) (result i64)`, or through `cleanslate.call_host`
    /// (the Rust SDK's `host::call("module.name", bytes)`). The host reads the
    /// guest's bytes through a bounds-checked view and writes its answer
    /// into memory the guest's `cleanslate_alloc` provides.
    ///
    /// An `Err` fails the call with [`ErrorKind::HostError`]; a panic with
    /// [`ErrorKind::HostPanic`]. Either way the sandbox is reset.
    ///
    /// ```
    /// use cleanslate::{Runtime, Sandbox};
    /// # let runtime = Runtime::new()?;
    /// # let module = runtime.load_bytes("(module)")?;
    /// let sandbox = Sandbox::builder(&module)
    ///     .host_fn_bytes("kv", "get", |_ctx, key| match key {
    ///         b"colour" => Ok(b"teal".to_vec()),
    ///         _ => Err(format!("no key {:?}", String::from_utf8_lossy(key)).into()),
    ///     })
    ///     .build()?;
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn host_fn_bytes<F>(mut self, module: &str, name: &str, f: F) -> Self
    where
        F: Fn(&HostContext<'_>, &[u8]) -> Result<Vec<u8>, HostFnError> + Send + Sync + 'static,
    {
        self.host.insert_bytes(
            module,
            name,
            Arc::new(move |ctx, input| f(ctx, input).map_err(HostFailure::Host)),
        );
        self
    }

    /// Like [`host_fn_bytes`](SandboxBuilder::host_fn_bytes) with JSON on
    /// both sides: the guest's bytes are decoded into `In` (malformed JSON
    /// fails the call with [`ErrorKind::InvalidGuestOutput`]) and the
    /// result is encoded from `Out`.
    ///
    /// ```
    /// use cleanslate::{Runtime, Sandbox};
    /// # let runtime = Runtime::new()?;
    /// # let module = runtime.load_bytes("(module)")?;
    /// #[derive(serde::Deserialize)]
    /// struct Lookup { key: String }
    /// let sandbox = Sandbox::builder(&module)
    ///     .host_fn_json("kv", "lookup", |_ctx, req: Lookup| {
    ///         Ok(serde_json::json!({ "key": req.key, "value": 42 }))
    ///     })
    ///     .build()?;
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn host_fn_json<In, Out, F>(mut self, module: &str, name: &str, f: F) -> Self
    where
        In: serde::de::DeserializeOwned,
        Out: serde::Serialize,
        F: Fn(&HostContext<'_>, In) -> Result<Out, HostFnError> + Send + Sync + 'static,
    {
        self.host.insert_bytes(
            module,
            name,
            Arc::new(move |ctx, input| {
                let value: In = serde_json::from_slice(input).map_err(|e| {
                    HostFailure::BadInput(format!("not JSON of the expected shape: {e}"))
                })?;
                let out = f(ctx, value).map_err(HostFailure::Host)?;
                serde_json::to_vec(&out).map_err(|e| {
                    HostFailure::Host(format!("its result cannot be encoded as JSON: {e}").into())
                })
            }),
        );
        self
    }

    /// What WASI guests see (args, env, directories, deterministic clocks
    /// and randomness). A module that imports `wasi_snapshot_preview1` gets
    /// WASI without this call too, with [`WasiConfig::new`]'s defaults: no
    /// filesystem, no network, stdout and stderr captured per call.
    pub fn wasi(mut self, config: WasiConfig) -> Self {
        self.wasi = Some(config);
        self
    }

    /// The module the sandbox will run.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Instantiate, initialise and snapshot. The builder can be cloned to
    /// build several identical sandboxes (a [`SandboxPool`](crate::SandboxPool)
    /// does).
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::InvalidArguments`] for a configuration that cannot work:
    ///   a stack limit out of range, a fuel limit or timeout of zero, an output
    ///   limit of 0 bytes, a preopened directory (see [`WasiConfig`]) that does
    ///   not exist, or an init function that takes parameters.
    /// - [`ErrorKind::FunctionNotFound`] when the
    ///   [`init`](SandboxBuilder::init) function is not exported.
    /// - [`ErrorKind::MissingImport`] when the module imports a function that
    ///   no host function (and not WASI) provides, or one whose signature the
    ///   host function cannot serve; the message lists every unresolved import.
    /// - [`ErrorKind::OutOfMemory`] when the module's initial memory is larger
    ///   than the [`memory_limit`](SandboxBuilder::memory_limit).
    /// - [`ErrorKind::Instantiation`] when the module cannot be instantiated
    ///   otherwise (e.g. a data or element segment does not fit), or a
    ///   preopened directory cannot be opened.
    /// - Whatever kind a guest call can end with (see [`ErrorKind`]), when the
    ///   start function, `_initialize` or the init function fails under the
    ///   sandbox's limits; the message says which.
    ///
    /// Nothing is left behind: fix the configuration or the module and build
    /// again.
    pub fn build(self) -> Result<Sandbox, Error> {
        self.limits.validate()?;
        let flavor = EngineFlavor {
            fuel: self.limits.fuel.is_some(),
            max_stack: self.limits.stack,
        };
        let compiled = self.module.compiled(flavor)?;
        let engine = self.module.runtime().engine(flavor)?;
        let layout = &self.module.inner.layout;
        let imports_wasi = layout
            .function_imports
            .iter()
            .any(|i| crate::module::is_wasi_module(&i.module));
        // A configuration is checked even for a module that does not use
        // WASI: a directory that does not exist is a mistake either way.
        if let Some(config) = &self.wasi {
            config.validate()?;
        }
        let wasi = match (imports_wasi, self.wasi) {
            (true, config) => Some(config.unwrap_or_default()),
            (false, _) => None,
        };
        if self.limits.output == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArguments,
                "an output limit of 0 bytes refuses every output: give at least 1 byte",
            ));
        }
        let mut linker = wasmtime::Linker::new(&engine);
        if wasi.is_some() {
            wasmtime_wasi::p1::add_to_linker_sync(&mut linker, StoreData::wasi_context).map_err(
                |e| {
                    Error::new(
                        ErrorKind::MissingImport,
                        format!("cannot provide WASI: {e:#}"),
                    )
                },
            )?;
            crate::instance::wasi::bound_blocking_calls(&mut linker).map_err(|e| {
                Error::new(
                    ErrorKind::MissingImport,
                    format!("cannot provide WASI: {e:#}"),
                )
            })?;
        }
        self.host
            .link(&mut linker, &engine, layout, wasi.is_some())?;
        let pre = linker
            .instantiate_pre(&compiled)
            .map_err(|e| Error::new(ErrorKind::MissingImport, format!("{e:#}")))?;
        if let Some(init) = &self.init {
            check_init_export(&self.module, init)?;
        }
        let factory = InstanceFactory {
            module: self.module.clone(),
            engine: engine.clone(),
            pre,
            limits: self.limits.clone(),
            interrupt: InterruptState::new(engine),
            wasi,
            spare_regions: Default::default(),
            export_handles: Default::default(),
        };
        let mut live = factory.instantiate()?;
        initialise(&self.module, &factory, &mut live, self.init.as_deref())?;
        let image = SnapshotImage::capture(&self.module, &mut live)?;
        if self.strategy == ResetStrategy::Auto {
            live.start_tracking();
        }
        let baseline = Snapshot {
            image: Arc::new(image),
            module_id: module_id(&self.module),
        };
        Ok(Sandbox {
            core: SandboxCore {
                module: self.module,
                factory,
                live: Some(live),
                baseline,
                status: Status::Ready,
                verify: VerifySchedule::new(self.verify),
                strategy: self.strategy,
                last_reset: None,
                resets: 0,
                faults: Default::default(),
            },
        })
    }
}

fn check_init_export(module: &Module, init: &str) -> Result<(), Error> {
    match module.function(init) {
        None => Err(Error::new(
            ErrorKind::FunctionNotFound,
            format!("the init function `{init}` is not exported by the module"),
        )),
        Some(f) if !f.params().is_empty() => Err(Error::new(
            ErrorKind::InvalidArguments,
            format!(
                "the init function `{init}` must take no parameters, but its signature is {}",
                f.signature()
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// Run what makes up the module's initialisation, in order: the start
/// function, `_initialize`, then the user's init export. Each runs under
/// the sandbox's limits.
fn initialise(
    module: &Module,
    factory: &InstanceFactory,
    live: &mut LiveInstance,
    init: Option<&str>,
) -> Result<(), Error> {
    let mut steps: Vec<(String, String)> = Vec::new();
    if let Some(start) = &module.inner.hooks.start {
        steps.push((start.clone(), "the start function".into()));
    }
    if module
        .function("_initialize")
        .is_some_and(|f| f.params().is_empty())
    {
        steps.push(("_initialize".into(), "`_initialize`".into()));
    }
    if let Some(init) = init
        && init != "_initialize"
    {
        steps.push((init.to_string(), format!("the init function `{init}`")));
    }
    for (export, what) in steps {
        let func = live
            .instance
            .get_func(&mut live.store, &export)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::FunctionNotFound,
                    format!("{what} is not exported"),
                )
            })?;
        let results = func.ty(&live.store).results().len();
        enter(module.runtime(), factory, live, &export, func, &[], results)
            .map_err(|e| e.context(format!("{what} failed while building the sandbox")))?;
    }
    Ok(())
}
