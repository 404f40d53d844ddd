//! The shared engine: configuration, compiled-code variants and the epoch
//! ticker that drives timeouts and cancellation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::module::Module;

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
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            epoch_tick: Duration::from_millis(1),
        }
    }
}

impl RuntimeConfig {
    /// How often running calls check their timeout (default 1 ms). A timeout
    /// fires at most about one tick late. The ticker only runs while a call
    /// is in progress.
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.epoch_tick = tick.max(Duration::from_micros(100));
        self
    }
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
    ticker: Arc<Ticker>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

impl Runtime {
    /// A runtime with the default configuration.
    pub fn new() -> Result<Runtime, Error> {
        Runtime::with_config(RuntimeConfig::default())
    }

    /// A runtime with `config`.
    pub fn with_config(config: RuntimeConfig) -> Result<Runtime, Error> {
        let ticker = Ticker::start(config.epoch_tick)?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                config,
                engines: Mutex::new(HashMap::new()),
                ticker,
            }),
        })
    }

    /// Load a module from a `.wasm` (binary) or `.wat` (text) file.
    ///
    /// ```no_run
    /// # let runtime = cleanslate::Runtime::new()?;
    /// let module = runtime.load_file("guest.wasm")?;
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
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
    pub fn load_bytes(&self, bytes: impl AsRef<[u8]>) -> Result<Module, Error> {
        Module::load(self.clone(), bytes.as_ref())
    }

    pub(crate) fn engine(&self, flavor: EngineFlavor) -> Result<wasmtime::Engine, Error> {
        let mut engines = self.inner.engines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(engine) = engines.get(&flavor) {
            return Ok(engine.clone());
        }
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            // Copy-on-write images keep fresh instances cheap (no eager copy
            // of data segments); write tracking works on them as well as on
            // anonymous memory (tested by the in-place verification tests).
            .memory_init_cow(true)
            .consume_fuel(flavor.fuel)
            .max_wasm_stack(flavor.max_stack)
            // Only a bound here (no async calls are made); it must not be below
            // the stack limit.
            .async_stack_size(flavor.max_stack + (1 << 20))
            .wasm_bulk_memory(true)
            .wasm_multi_value(true)
            .wasm_multi_memory(true)
            .wasm_memory64(true)
            .wasm_simd(true)
            .wasm_relaxed_simd(true)
            .wasm_tail_call(true)
            .wasm_extended_const(true)
            .wasm_custom_page_sizes(true)
            .wasm_wide_arithmetic(true);
        let engine = wasmtime::Engine::new(&config).map_err(|e| {
            Error::new(
                ErrorKind::Instantiation,
                format!("cannot configure the engine: {e:#}"),
            )
        })?;
        self.inner.ticker.register(engine.clone());
        engines.insert(flavor, engine.clone());
        Ok(engine)
    }

    /// Mark a call as running so the ticker advances epochs until it ends.
    pub(crate) fn begin_call(&self) -> CallTicket {
        self.inner.ticker.begin();
        CallTicket {
            ticker: self.inner.ticker.clone(),
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Held for the duration of a guest call.
pub(crate) struct CallTicket {
    ticker: Arc<Ticker>,
}

impl Drop for CallTicket {
    fn drop(&mut self) {
        self.ticker.end();
    }
}

/// Advances every engine's epoch once per tick while any call runs, and
/// sleeps otherwise: an idle runtime costs no CPU.
struct Ticker {
    state: Mutex<TickerState>,
    wake: Condvar,
}

struct TickerState {
    active_calls: usize,
    stopped: bool,
    engines: Vec<wasmtime::Engine>,
}

impl Ticker {
    fn start(tick: Duration) -> Result<Arc<Ticker>, Error> {
        let ticker = Arc::new(Ticker {
            state: Mutex::new(TickerState {
                active_calls: 0,
                stopped: false,
                engines: Vec::new(),
            }),
            wake: Condvar::new(),
        });
        let weak: Weak<Ticker> = Arc::downgrade(&ticker);
        thread::Builder::new()
            .name("cleanslate-epoch".into())
            .spawn(move || Ticker::run(weak, tick))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Instantiation,
                    format!("cannot start the timeout ticker thread: {e}"),
                )
            })?;
        Ok(ticker)
    }

    fn run(weak: Weak<Ticker>, tick: Duration) {
        loop {
            let Some(ticker) = weak.upgrade() else { return };
            {
                let mut state = ticker.state.lock().unwrap_or_else(|e| e.into_inner());
                while state.active_calls == 0 && !state.stopped {
                    state = ticker.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.stopped {
                    return;
                }
                for engine in &state.engines {
                    engine.increment_epoch();
                }
            }
            drop(ticker);
            thread::sleep(tick);
        }
    }

    fn register(&self, engine: wasmtime::Engine) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .engines
            .push(engine);
    }

    fn begin(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.active_calls += 1;
        if state.active_calls == 1 {
            self.wake.notify_one();
        }
    }

    fn end(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.active_calls = state.active_calls.saturating_sub(1);
    }

    fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
        self.wake.notify_one();
    }
}
