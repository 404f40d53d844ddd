//! Configuring and building a sandbox: limits, host functions, init, and
//! the snapshot that becomes the clean slate.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::host::{HostFnError, HostFunctions};
use crate::limits::Limits;
use crate::module::Module;
use crate::reset::{ResetStrategy, Verify, VerifySchedule};
use crate::runtime::EngineFlavor;
use crate::sandbox::call::enter;
use crate::sandbox::instance::{InstanceFactory, LiveInstance};
use crate::sandbox::interrupt::InterruptState;
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
pub struct SandboxBuilder {
    module: Module,
    limits: Limits,
    init: Option<String>,
    verify: Verify,
    strategy: ResetStrategy,
    host: HostFunctions,
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
        }
    }

    /// The most bytes each linear memory may grow to (default 64 MiB). A
    /// `memory.grow` beyond it returns -1 to the guest; if the call then
    /// fails, it fails with [`ErrorKind::OutOfMemory`].
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
    pub fn fuel(mut self, units: u64) -> Self {
        self.limits.fuel = Some(units);
        self
    }

    /// Wall-clock time each call may take. Exceeding it is
    /// [`ErrorKind::Timeout`]; precision is the runtime's epoch tick.
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
        self.host.insert(module, name, Arc::new(f));
        self
    }

    /// Instantiate, initialise and snapshot.
    pub fn build(self) -> Result<Sandbox, Error> {
        self.limits.validate()?;
        let flavor = EngineFlavor {
            fuel: self.limits.fuel.is_some(),
            max_stack: self.limits.stack,
        };
        let compiled = self.module.compiled(flavor)?;
        let engine = self.module.runtime().engine(flavor)?;
        let mut linker = wasmtime::Linker::new(&engine);
        self.host
            .link(&mut linker, &engine, &self.module.inner.layout)?;
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
                reset_outcome: None,
                #[cfg(feature = "fault-injection")]
                fault: None,
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
