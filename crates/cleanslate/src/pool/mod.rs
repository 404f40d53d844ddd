//! A pool of warm sandboxes of one module and one configuration, for hosts
//! that serve calls from many threads (or tasks) at once.
//!
//! A caller takes a free sandbox, calls, and the sandbox goes back already
//! reset (every call resets). When every sandbox is busy, the caller waits
//! up to the pool's wait limit, then gets [`ErrorKind::PoolExhausted`]. A
//! sandbox that comes back [`Status::Unrecoverable`] is dropped and a new one
//! is built on a background thread, so one failed reset never shrinks the
//! pool for good.

mod checkout;
mod driver_handoff;
mod free_list;
mod metrics;
mod rebuild;

use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

pub use metrics::{Histogram, PoolMetrics};

use crate::error::{Error, ErrorKind};
use crate::instance::CancelToken;
use crate::sandbox::{Call, CallResult, Sandbox, SandboxBuilder};
use crate::value::Val;
use free_list::FreeList;
use metrics::MetricsRecorder;
use rebuild::PoolDropped;

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

/// The most sandboxes one pool holds. Every sandbox is built up front, so a
/// mistyped size must fail with a message, not exhaust memory building.
pub const MAX_POOL_SIZE: usize = 10_000;

impl PoolConfig {
    /// `size` warm sandboxes (1 to [`MAX_POOL_SIZE`]); callers wait up to 1 s for a free one.
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
    free: FreeList<Sandbox>,
    metrics: MetricsRecorder,
    /// Told when the pool is dropped, so that threads building
    /// replacements stop at once instead of after their backoff.
    dropped: Arc<PoolDropped>,
}

impl SandboxPool {
    /// Build `config.size()` sandboxes from `builder` (all before returning,
    /// so a bad configuration fails here, not at the first call).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] when `config.size()` is 0 or more than
    /// [`MAX_POOL_SIZE`]. Otherwise the first error of
    /// [`SandboxBuilder::build`] for any of the sandboxes (those built before
    /// it are dropped).
    pub fn new(builder: SandboxBuilder, config: PoolConfig) -> Result<Self, Error> {
        if config.size == 0 {
            return Err(Error::invalid_arguments(
                "a pool needs at least one sandbox: give a size of 1 or more",
            ));
        }
        if config.size > MAX_POOL_SIZE {
            return Err(Error::invalid_arguments(format!(
                "a pool of {} sandboxes is more than the {MAX_POOL_SIZE} a pool holds: give a smaller size (a few per CPU is plenty)",
                config.size
            )));
        }
        let mut sandboxes = Vec::with_capacity(config.size);
        for _ in 0..config.size {
            sandboxes.push(builder.clone().build()?);
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
                free: FreeList::new(sandboxes),
                dropped: Arc::default(),
            }),
        })
    }

    /// [`Sandbox::call`] on a free sandbox.
    ///
    /// # Errors
    ///
    /// Those of [`Sandbox::call`], and the pool's own:
    /// [`ErrorKind::PoolExhausted`] when no sandbox became free within the
    /// pool's [`max_wait`](PoolConfig::max_wait): the call never ran; retry
    /// later, or grow the pool. [`ErrorKind::ResetFailed`] asks nothing of the
    /// caller: the pool drops the unrecoverable sandbox and builds a
    /// replacement in the background, so its calls never fail with
    /// [`ErrorKind::Unrecoverable`].
    pub fn call(&self, name: &str, args: &[Val]) -> Result<Vec<Val>, Error> {
        self.checkout(name, None)?
            .run(name, |sandbox| sandbox.call(name, args))
    }

    /// [`Sandbox::call_bytes`] on a free sandbox.
    ///
    /// # Errors
    ///
    /// Those of [`Sandbox::call_bytes`], and the pool's own listed under
    /// [`call`](SandboxPool::call) ([`ErrorKind::PoolExhausted`]).
    pub fn call_bytes(&self, name: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.checkout(name, None)?
            .run(name, |sandbox| sandbox.call_bytes(name, input))
    }

    /// [`Sandbox::call_json`] on a free sandbox.
    ///
    /// # Errors
    ///
    /// Those of [`Sandbox::call_json`], and the pool's own listed under
    /// [`call`](SandboxPool::call) ([`ErrorKind::PoolExhausted`]).
    pub fn call_json<In, Out>(&self, name: &str, input: &In) -> Result<Out, Error>
    where
        In: serde::Serialize + ?Sized,
        Out: serde::de::DeserializeOwned,
    {
        self.checkout(name, None)?
            .run(name, |sandbox| sandbox.call_json(name, input))
    }

    /// [`Sandbox::call_with`] on a free sandbox.
    ///
    /// # Errors
    ///
    /// Those of [`Sandbox::call_with`], and the pool's own listed under
    /// [`call`](SandboxPool::call) ([`ErrorKind::PoolExhausted`]).
    /// [`ErrorKind::Cancelled`] also when the call's [`CancelToken`] is
    /// cancelled while it waits for a sandbox (it never ran).
    pub fn call_with(&self, call: &Call) -> Result<CallResult, Error> {
        let name = call.function();
        self.checkout(name, call.cancel.as_ref())?
            .run(name, |sandbox| sandbox.call_with(call))
    }

    /// [`call_with`](SandboxPool::call_with) for async hosts. The wait for a
    /// free sandbox suspends the task (no thread is held while it waits);
    /// the call then runs on tokio's blocking threads, so a long guest call
    /// never stalls the runtime's workers.
    ///
    /// The wait's limit runs on the runtime's own timer thread, so any
    /// executor works (a tokio runtime without `enable_time` included).
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
    ///
    /// # Errors
    ///
    /// Those of [`call_with`](SandboxPool::call_with), and
    /// [`ErrorKind::HostPanic`] when the blocking task that runs the call did
    /// not complete (e.g. the tokio runtime is shutting down). The sandbox goes
    /// back to the pool either way.
    pub async fn call_async(&self, call: Call) -> Result<CallResult, Error> {
        let checkout = self
            .checkout_async(call.function(), call.cancel.as_ref())
            .await?;
        tokio::task::spawn_blocking(move || {
            let name = call.function();
            checkout.run(name, |sandbox| sandbox.call_with(&call))
        })
        .await
        .unwrap_or_else(|e| {
            Err(Error::new(
                ErrorKind::HostPanic,
                format!("the pool's blocking task failed: {e}"),
            ))
        })
    }

    /// [`call_async`](SandboxPool::call_async), but the call runs on the
    /// task's own thread: no hand-off to another thread, which on a busy
    /// server is most of a short call's cost.
    ///
    /// While it runs, the call occupies a runtime worker. The pool never
    /// runs more calls than it has sandboxes, so give the runtime more
    /// worker threads than the pool has sandboxes, and other tasks keep
    /// running even while every sandbox runs a slow guest (set a
    /// [`timeout`](crate::SandboxBuilder::timeout) to bound that). On a
    /// multi-threaded tokio runtime, a call still running after 5 ms wakes
    /// a free worker to poll the runtime's sockets and timers, which tokio
    /// would otherwise leave unpolled until the call returns if the call's
    /// worker was the one polling them.
    ///
    /// ```
    /// # use cleanslate::{Call, PoolConfig, Runtime, Sandbox, SandboxPool, Val};
    /// # let runtime = Runtime::new()?;
    /// # let module = runtime.load_bytes(r#"(module (func (export "one") (result i32) (i32.const 1)))"#)?;
    /// let pool = SandboxPool::new(Sandbox::builder(&module), PoolConfig::new(2))?;
    /// // Three workers for two sandboxes: one worker always stays free.
    /// let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(3).build().unwrap();
    /// let result = tokio.block_on(pool.call_async_inline(&Call::values("one", &[])))?;
    /// assert_eq!(result.values(), [Val::I32(1)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`call_with`](SandboxPool::call_with).
    pub async fn call_async_inline(&self, call: &Call) -> Result<CallResult, Error> {
        let name = call.function();
        let checkout = self.checkout_async(name, call.cancel.as_ref()).await?;
        let _handoff = driver_handoff::arm(self.shared.builder.module().runtime());
        checkout.run(name, |sandbox| sandbox.call_with(call))
    }

    /// [`call_async_inline`](SandboxPool::call_async_inline), cancelled at
    /// `deadline` wherever it is then: waiting for a sandbox (it never
    /// runs) or running (it stops, and its sandbox is reset as after any
    /// other exit). Either way it fails with [`ErrorKind::Cancelled`], and
    /// the call's [`CancelToken`], if it carries one, is cancelled.
    ///
    /// The deadline runs on the runtime's own timer thread. A timer of the
    /// async runtime could not do it: the call blocks the task's worker,
    /// and a task spawned from that worker to cancel it waits in the
    /// worker's own queue until the call returns.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use cleanslate::{Call, ErrorKind, PoolConfig, Runtime, Sandbox, SandboxPool};
    /// # let runtime = Runtime::new()?;
    /// # let module = runtime.load_bytes(r#"(module (func (export "spin") (loop br 0)))"#)?;
    /// let pool = SandboxPool::new(Sandbox::builder(&module), PoolConfig::new(1))?;
    /// let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    /// let deadline = Instant::now() + Duration::from_millis(50);
    /// let err = tokio
    ///     .block_on(pool.call_async_inline_until(&Call::values("spin", &[]), deadline))
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Cancelled);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`call_async_inline`](SandboxPool::call_async_inline), and
    /// [`ErrorKind::Cancelled`] when `deadline` passes first, as described
    /// above. [`ErrorKind::PoolExhausted`] still comes at the pool's wait limit
    /// when that is earlier than `deadline`.
    pub async fn call_async_inline_until(
        &self,
        call: &Call,
        deadline: Instant,
    ) -> Result<CallResult, Error> {
        let with_token;
        let (call, token) = match &call.cancel {
            Some(token) => (call, token.clone()),
            None => {
                let token = CancelToken::new();
                with_token = call.clone().cancel_token(&token);
                (&with_token, token)
            }
        };
        let runtime = self.shared.builder.module().runtime();
        let _alarm = runtime.schedule_wake(deadline, Waker::from(Arc::new(CancelOnWake(token))));
        self.call_async_inline(call).await
    }

    /// Make the next reset of one idle sandbox suffer `fault` (tests of the
    /// pool's replacement of unrecoverable sandboxes only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, fault: crate::reset::Fault) {
        self.shared
            .free
            .with_one(|sandbox| sandbox.inject_fault(fault));
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
        self.shared.free.len()
    }
}

/// Cancels a token when woken (by the timer thread, at a deadline).
struct CancelOnWake(CancelToken);

impl std::task::Wake for CancelOnWake {
    fn wake(self: Arc<Self>) {
        self.0.cancel();
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
