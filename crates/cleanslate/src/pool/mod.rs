//! A pool of warm sandboxes of one module and one configuration, for hosts
//! that serve calls from many threads (or tasks) at once.
//!
//! A caller takes a free sandbox, calls, and the sandbox goes back already
//! reset (every call resets). When every sandbox is busy, the caller waits
//! up to the pool's wait limit, then gets [`ErrorKind::PoolExhausted`]. A
//! sandbox that comes back [`Status::Unrecoverable`] is dropped and a new one
//! is built on a background thread, so one failed reset never shrinks the
//! pool for good.

mod metrics;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use metrics::{Histogram, PoolMetrics};

use crate::error::{Error, ErrorKind};
use crate::sandbox::{Call, CallResult, Sandbox, SandboxBuilder, Status};
use crate::value::Val;
use metrics::MetricsRecorder;

/// Sizes and waits of a [`SandboxPool`].
///
/// ```
/// use std::time::Duration;
/// let config = cleanslate::PoolConfig::new(4).max_wait(Duration::from_millis(50));
/// assert_eq!(config.size(), 4);
/// ```
#[derive(Clone, Debug)]
pub struct PoolConfig {
    size: usize,
    max_wait: Duration,
}

impl PoolConfig {
    /// `size` warm sandboxes; callers wait up to 1 s for a free one.
    pub fn new(size: usize) -> Self {
        PoolConfig {
            size,
            max_wait: Duration::from_secs(1),
        }
    }

    /// How long a caller waits for a free sandbox before
    /// [`ErrorKind::PoolExhausted`] (zero: fail at once when all are busy).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// The number of sandboxes.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// Warm sandboxes shared by many callers; each call runs on a free sandbox
/// and starts from the clean slate.
///
/// ```
/// use cleanslate::{PoolConfig, Runtime, Sandbox, SandboxPool, Val};
///
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(r#"(module
///     (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))"#)?;
/// let pool = SandboxPool::new(Sandbox::builder(&module), PoolConfig::new(2))?;
/// std::thread::scope(|s| {
///     for i in 0..4 {
///         let pool = &pool;
///         s.spawn(move || assert_eq!(pool.call("add", &[Val::I32(i), Val::I32(1)]).unwrap(), [Val::I32(i + 1)]));
///     }
/// });
/// assert_eq!(pool.metrics().calls_total(), 4);
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone)]
pub struct SandboxPool {
    shared: Arc<Shared>,
}

struct Shared {
    builder: SandboxBuilder,
    config: PoolConfig,
    idle: Mutex<Vec<Sandbox>>,
    available: Condvar,
    metrics: MetricsRecorder,
}

impl SandboxPool {
    /// Build `config.size()` sandboxes from `builder` (all before returning,
    /// so a bad configuration fails here, not at the first call).
    pub fn new(builder: SandboxBuilder, config: PoolConfig) -> Result<Self, Error> {
        if config.size == 0 {
            return Err(Error::invalid_arguments(
                "a pool needs at least one sandbox: give a size of 1 or more",
            ));
        }
        let mut idle = Vec::with_capacity(config.size);
        for _ in 0..config.size {
            idle.push(builder.clone().build()?);
        }
        let exports = builder
            .module()
            .functions()
            .map(|f| f.name().to_string())
            .collect();
        Ok(SandboxPool {
            shared: Arc::new(Shared {
                builder,
                metrics: MetricsRecorder::new(exports, config.size),
                config,
                idle: Mutex::new(idle),
                available: Condvar::new(),
            }),
        })
    }

    /// [`Sandbox::call`] on a free sandbox.
    pub fn call(&self, name: &str, args: &[Val]) -> Result<Vec<Val>, Error> {
        self.run(name, |sandbox| sandbox.call(name, args))
    }

    /// [`Sandbox::call_bytes`] on a free sandbox.
    pub fn call_bytes(&self, name: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.run(name, |sandbox| sandbox.call_bytes(name, input))
    }

    /// [`Sandbox::call_json`] on a free sandbox.
    pub fn call_json<In, Out>(&self, name: &str, input: &In) -> Result<Out, Error>
    where
        In: serde::Serialize + ?Sized,
        Out: serde::de::DeserializeOwned,
    {
        self.run(name, |sandbox| sandbox.call_json(name, input))
    }

    /// [`Sandbox::call_with`] on a free sandbox.
    pub fn call_with(&self, call: &Call) -> Result<CallResult, Error> {
        self.run(call.function(), |sandbox| sandbox.call_with(call))
    }

    /// [`call_with`](SandboxPool::call_with) for async hosts: the wait for a
    /// sandbox and the call run on tokio's blocking threads, never on the
    /// runtime's workers.
    ///
    /// ```
    /// # use cleanslate::{Call, PoolConfig, Runtime, Sandbox, SandboxPool, Val};
    /// # let runtime = Runtime::new()?;
    /// # let module = runtime.load_bytes(r#"(module (func (export "one") (result i32) (i32.const 1)))"#)?;
    /// let pool = SandboxPool::new(Sandbox::builder(&module), PoolConfig::new(1))?;
    /// let tokio = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let result = tokio.block_on(pool.call_async(Call::values("one", &[])))?;
    /// assert_eq!(result.values(), [Val::I32(1)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub async fn call_async(&self, call: Call) -> Result<CallResult, Error> {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || pool.call_with(&call))
            .await
            .unwrap_or_else(|e| {
                Err(Error::new(
                    ErrorKind::HostPanic,
                    format!("the pool's blocking task failed: {e}"),
                ))
            })
    }

    /// Make the next reset of one idle sandbox suffer `fault` (tests of the
    /// pool's replacement of unrecoverable sandboxes only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, fault: crate::reset::Fault) {
        let mut idle = self.shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sandbox) = idle.last_mut() {
            sandbox.inject_fault(fault);
        }
    }

    /// What the pool has done so far.
    pub fn metrics(&self) -> PoolMetrics {
        self.shared.metrics.snapshot()
    }

    /// The configuration the pool was built with.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Sandboxes free right now.
    pub fn idle(&self) -> usize {
        self.shared.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    fn run<T>(
        &self,
        function: &str,
        call: impl FnOnce(&mut Sandbox) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let waited = Instant::now();
        let mut sandbox = match self.take() {
            Ok(sandbox) => sandbox,
            Err(e) => {
                self.shared
                    .metrics
                    .record_exhausted(function, waited.elapsed());
                return Err(e);
            }
        };
        self.shared.metrics.record_checkout(waited.elapsed());
        let resets_before = sandbox.resets();
        // The sandbox's API catches guest and host panics, so `call`
        // returns and the sandbox always comes back here.
        let outcome = call(&mut sandbox);
        let reset = sandbox
            .last_reset()
            .filter(|_| sandbox.resets() != resets_before);
        self.shared.metrics.record_call(
            function,
            outcome.as_ref().err().map(|e| e.kind()),
            reset.map(|r| (r.duration(), r.dirty_pages())),
        );
        self.give_back(sandbox);
        outcome
    }

    /// Take a free sandbox, waiting up to the configured limit.
    fn take(&self) -> Result<Sandbox, Error> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.config.max_wait;
        let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(sandbox) = idle.pop() {
                return Ok(sandbox);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    ErrorKind::PoolExhausted,
                    format!(
                        "all {} sandboxes stayed busy for {:?}: retry later, or raise the pool size or wait",
                        shared.config.size, shared.config.max_wait
                    ),
                ));
            }
            idle = shared
                .available
                .wait_timeout(idle, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Return a sandbox; replace it in the background if it is unrecoverable.
    fn give_back(&self, sandbox: Sandbox) {
        self.shared.metrics.record_checkin();
        if sandbox.status() == Status::Ready {
            self.shared.put(sandbox);
            return;
        }
        drop(sandbox);
        self.shared.metrics.record_replacement();
        let shared = self.shared.clone();
        std::thread::spawn(move || rebuild(&shared));
    }
}

impl Shared {
    fn put(&self, sandbox: Sandbox) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push(sandbox);
        drop(idle);
        self.available.notify_one();
    }
}

/// Build a replacement, retrying with backoff while building fails (the
/// configuration built before, so failures are transient: e.g. the host is
/// short of memory). Stops when the pool itself is gone.
fn rebuild(shared: &Arc<Shared>) {
    let mut backoff = Duration::from_millis(10);
    while Arc::strong_count(shared) > 1 {
        match shared.builder.clone().build() {
            Ok(sandbox) => return shared.put(sandbox),
            Err(e) => {
                tracing::error!(error = %e, "rebuilding a pool sandbox failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

impl std::fmt::Debug for SandboxPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxPool")
            .field("size", &self.shared.config.size)
            .field("idle", &self.idle())
            .finish_non_exhaustive()
    }
}
