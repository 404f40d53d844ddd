//! The shared engine: configuration, compiled-code variants and the
//! deadline timer that drives timeouts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::timer::{DeadlineTicket, DeadlineTimer};
use crate::error::{Error, ErrorKind};
use crate::memory::GuestMemoryCreator;

/// Settings shared by every module and sandbox of a [`Runtime`].
///
/// ```
/// use std::time::Duration;
/// use cleanslate::{Runtime, RuntimeConfig};
/// let config = RuntimeConfig::default().epoch_tick(Duration::from_millis(5));
/// let runtime = Runtime::with_config(config)?;
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub(crate) epoch_tick: Duration,
    pub(crate) module_cache: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            epoch_tick: Duration::from_millis(1),
            module_cache: None,
        }
    }
}

impl RuntimeConfig {
    /// The timeout timer's resolution (default 1 ms): it wakes at the
    /// earliest running call's deadline, but never twice within one tick,
    /// so a timeout fires at most about one tick late. It costs nothing
    /// while no call with a timeout runs.
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.epoch_tick = tick.max(Duration::from_micros(100));
        self
    }

    /// Keep compiled code in `dir`, so loading a module compiled before
    /// (by this process or another) skips the compiler. Off by default.
    /// Files there are checked before use and ignored (and rebuilt) when
    /// corrupt, foreign, or writable by other users; see
    /// [`Module::cache_status`](crate::Module::cache_status).
    ///
    /// ```
    /// let dir = std::env::temp_dir().join("cleanslate-doc-cache");
    /// let config = cleanslate::RuntimeConfig::default().module_cache(&dir);
    /// let runtime = cleanslate::Runtime::with_config(config)?;
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn module_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.module_cache = Some(dir.into());
        self
    }

    /// [`module_cache`](Self::module_cache) in the user's cache directory:
    /// `$XDG_CACHE_HOME/cleanslate/modules`, else
    /// `~/.cache/cleanslate/modules`. Without either (no home directory),
    /// the cache stays off.
    pub fn module_cache_in_user_dir(self) -> Self {
        match user_cache_dir() {
            Some(dir) => self.module_cache(dir),
            None => self,
        }
    }

    /// No compiled-module cache.
    pub fn no_module_cache(mut self) -> Self {
        self.module_cache = None;
        self
    }
}

/// The XDG base-directory rule for caches (relative values are ignored, as
/// the specification says).
fn user_cache_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".cache"))
        })
        .map(|base| base.join("cleanslate").join("modules"))
}

/// Compile-relevant engine settings. Fuel metering changes the generated
/// code; the stack limit is a per-engine setting in wasmtime. Sandboxes with
/// different needs get different engines, and modules are compiled (or
/// cheaply re-loaded) per engine on first use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct EngineFlavor {
    pub fuel: bool,
    pub max_stack: usize,
}

/// The shared engine. Cheap to clone; clones share compiled code and the
/// timeout ticker.
///
/// ```
/// use cleanslate::Runtime;
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(br#"(module (func (export "nop")))"#)?;
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub config: RuntimeConfig,
    engines: Mutex<HashMap<EngineFlavor, wasmtime::Engine>>,
    timer: Arc<DeadlineTimer>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.timer.stop();
    }
}

impl Runtime {
    /// A runtime with the default configuration.
    ///
    /// # Errors
    ///
    /// Those of [`with_config`](Runtime::with_config).
    pub fn new() -> Result<Runtime, Error> {
        Runtime::with_config(RuntimeConfig::default())
    }

    /// A runtime with `config`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Instantiation`] when the thread that enforces timeouts
    /// cannot be started (the system refuses a new thread). Nothing in `config`
    /// can cause an error.
    pub fn with_config(config: RuntimeConfig) -> Result<Runtime, Error> {
        let timer = DeadlineTimer::start(config.epoch_tick)?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                config,
                engines: Mutex::new(HashMap::new()),
                timer,
            }),
        })
    }

    pub(crate) fn engine(&self, flavor: EngineFlavor) -> Result<wasmtime::Engine, Error> {
        let mut engines = self.inner.engines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(engine) = engines.get(&flavor) {
            return Ok(engine.clone());
        }
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            // Every linear memory is ours (memory/): a reset can lower a
            // grown memory in place and map a snapshot into a new instance
            // copy-on-write. The engine's own copy-on-write images work
            // only on its own memories, so they are off; ours replace them
            // (the load-time rewrite moves data segments into an image).
            .with_host_memory(Arc::new(GuestMemoryCreator))
            .memory_init_cow(false)
            .consume_fuel(flavor.fuel)
            .max_wasm_stack(flavor.max_stack)
            // Only a bound here (no async calls are made); it must not be below
            // the stack limit.
            .async_stack_size(flavor.max_stack + (1 << 20))
            // Exception objects need a GC heap; the ref-counting collector
            // frees a caught exception when the call lets go of it, so a
            // sandbox that throws on every call does not accumulate them.
            .collector(wasmtime::Collector::DeferredReferenceCounting);
        super::features::configure_engine(&mut config);
        let engine = wasmtime::Engine::new(&config).map_err(|e| {
            Error::new(
                ErrorKind::Instantiation,
                format!("cannot configure the engine: {e:#}"),
            )
        })?;
        self.inner.timer.register(engine.clone());
        engines.insert(flavor, engine.clone());
        Ok(engine)
    }

    /// A call with `deadline` starts: the timer stops it then, unless the
    /// returned ticket is dropped first.
    pub(crate) fn schedule_deadline(&self, deadline: Instant) -> DeadlineTicket {
        self.inner.timer.schedule(deadline)
    }

    /// Wake `waker` at `deadline` (a timer for async waits that needs no
    /// async runtime's timer), unless the ticket is dropped first.
    pub(crate) fn schedule_wake(
        &self,
        deadline: Instant,
        waker: std::task::Waker,
    ) -> DeadlineTicket {
        self.inner.timer.schedule_wake(deadline, waker)
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
