//! A pool of warm sandboxes of one module and one configuration, for hosts
//! that serve calls from many threads (or tasks) at once.
//!
//! A caller takes a free sandbox, calls, and the sandbox goes back already
//! reset (every call resets). When every sandbox is busy, the caller waits
//! up to the pool's wait limit, then gets [`ErrorKind::PoolExhausted`]. A
//! sandbox that comes back [`Status::Unrecoverable`] is dropped and a new one
//! is built on a background thread, so one failed reset never shrinks the
//! pool for good.

mod driver_handoff;
mod metrics;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use metrics::{Histogram, PoolMetrics};

use crate::engine::timer::DeadlineTicket;
use crate::error::{Error, ErrorKind};
use crate::instance::CancelToken;
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
    idle: Mutex<Idle>,
    /// Threads waiting in [`SandboxPool::call`] and friends.
    available: Condvar,
    metrics: MetricsRecorder,
    /// Told when the pool is dropped, so that threads building
    /// replacements stop at once instead of after their backoff.
    dropped: Arc<PoolDropped>,
}

/// Whether a pool was dropped, for the threads that rebuild its sandboxes.
#[derive(Default)]
struct PoolDropped {
    dropped: Mutex<bool>,
    signal: Condvar,
}

/// Free sandboxes, and the async callers waiting for one (FIFO).
struct Idle {
    sandboxes: Vec<Sandbox>,
    waiters: VecDeque<(u64, Waker)>,
    next_waiter: u64,
    /// Threads blocked on `Shared::available`.
    threads_waiting: usize,
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
                idle: Mutex::new(Idle {
                    sandboxes,
                    waiters: VecDeque::new(),
                    next_waiter: 0,
                    threads_waiting: 0,
                }),
                available: Condvar::new(),
                dropped: Arc::default(),
            }),
        })
    }

    /// [`Sandbox::call`] on a free sandbox.
    pub fn call(&self, name: &str, args: &[Val]) -> Result<Vec<Val>, Error> {
        self.checkout(name, None)?
            .run(name, |sandbox| sandbox.call(name, args))
    }

    /// [`Sandbox::call_bytes`] on a free sandbox.
    pub fn call_bytes(&self, name: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.checkout(name, None)?
            .run(name, |sandbox| sandbox.call_bytes(name, input))
    }

    /// [`Sandbox::call_json`] on a free sandbox.
    pub fn call_json<In, Out>(&self, name: &str, input: &In) -> Result<Out, Error>
    where
        In: serde::Serialize + ?Sized,
        Out: serde::de::DeserializeOwned,
    {
        self.checkout(name, None)?
            .run(name, |sandbox| sandbox.call_json(name, input))
    }

    /// [`Sandbox::call_with`] on a free sandbox.
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
        let mut idle = self.shared.lock_idle();
        if let Some(sandbox) = idle.sandboxes.last_mut() {
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
        self.shared.lock_idle().sandboxes.len()
    }

    /// Take a free sandbox, blocking the thread up to the configured wait.
    fn checkout(&self, function: &str, cancel: Option<&CancelToken>) -> Result<Checkout, Error> {
        let shared = &self.shared;
        let waited = Instant::now();
        // A wait too long to represent (e.g. `Duration::MAX`) is no limit.
        let deadline = waited.checked_add(shared.config.max_wait);
        let mut idle = shared.lock_idle();
        loop {
            if cancel.is_some_and(|t| t.is_cancelled()) {
                drop(idle);
                return Err(self.cancelled_waiting(function, waited));
            }
            if let Some(sandbox) = idle.sandboxes.pop() {
                drop(idle);
                return Ok(self.checked_out(sandbox, waited));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                drop(idle);
                return Err(self.exhausted(function, waited));
            }
            // A waiting thread polls its cancel token this often (a thread
            // parked on the condition variable has no waker to wake).
            let deadline = match cancel {
                Some(_) => Some(deadline.map_or(now + CANCEL_POLL, |d| d.min(now + CANCEL_POLL))),
                None => deadline,
            };
            idle.threads_waiting += 1;
            idle = match deadline {
                Some(deadline) => {
                    shared
                        .available
                        .wait_timeout(idle, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => shared
                    .available
                    .wait(idle)
                    .unwrap_or_else(|e| e.into_inner()),
            };
            idle.threads_waiting -= 1;
        }
    }

    /// Take a free sandbox, suspending the task up to the configured wait.
    async fn checkout_async(
        &self,
        function: &str,
        cancel: Option<&CancelToken>,
    ) -> Result<Checkout, Error> {
        let waited = Instant::now();
        let wait = WaitForSandbox {
            shared: &self.shared,
            ticket: None,
            deadline: waited.checked_add(self.shared.config.max_wait),
            alarm: None,
            cancel,
            cancel_registration: None,
        };
        match wait.await {
            WaitEnd::Sandbox(sandbox) => Ok(self.checked_out(sandbox, waited)),
            WaitEnd::TimedOut => Err(self.exhausted(function, waited)),
            WaitEnd::Cancelled => Err(self.cancelled_waiting(function, waited)),
        }
    }

    fn cancelled_waiting(&self, function: &str, waited: Instant) -> Error {
        self.shared
            .metrics
            .record_call(function, Some(ErrorKind::Cancelled), None);
        Error::new(
            ErrorKind::Cancelled,
            format!(
                "`{function}` was cancelled through its cancel token after waiting {:?} for a sandbox; it never ran",
                waited.elapsed()
            ),
        )
    }

    fn checked_out(&self, sandbox: Sandbox, waited: Instant) -> Checkout {
        self.shared.metrics.record_checkout(waited.elapsed());
        Checkout {
            pool: self.clone(),
            sandbox: Some(sandbox),
        }
    }

    fn exhausted(&self, function: &str, waited: Instant) -> Error {
        let shared = &self.shared;
        shared.metrics.record_exhausted(function, waited.elapsed());
        Error::new(
            ErrorKind::PoolExhausted,
            format!(
                "all {} sandboxes stayed busy for {:?}: retry later, or raise the pool size or wait",
                shared.config.size, shared.config.max_wait
            ),
        )
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
        // The thread holds the pool only weakly, so a pool dropped while
        // replacements are being built (or keep failing) is freed, and
        // its threads stop.
        let builder = self.shared.builder.clone();
        let pool = Arc::downgrade(&self.shared);
        let dropped = self.shared.dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("cleanslate-pool-rebuild".into())
            .spawn(move || rebuild(builder, pool, &dropped));
        if let Err(e) = spawned {
            // The pool stays one sandbox short; the next unrecoverable
            // sandbox tries again.
            tracing::error!(error = %e, "cannot start a thread to rebuild a pool sandbox");
        }
    }
}

/// A sandbox taken from the pool; it goes back when this is dropped, so no
/// path (an error, a dropped future, a panic) can lose one.
struct Checkout {
    pool: SandboxPool,
    sandbox: Option<Sandbox>,
}

impl Checkout {
    fn run<T>(
        mut self,
        function: &str,
        call: impl FnOnce(&mut Sandbox) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let Some(sandbox) = self.sandbox.as_mut() else {
            unreachable!("a checkout holds its sandbox until dropped")
        };
        let resets_before = sandbox.resets();
        // The sandbox's API catches guest and host panics, so `call`
        // returns and the sandbox always comes back.
        let outcome = call(sandbox);
        let reset = sandbox
            .last_reset()
            .filter(|_| sandbox.resets() != resets_before);
        self.pool.shared.metrics.record_call(
            function,
            outcome.as_ref().err().map(|e| e.kind()),
            reset.map(|r| (r.duration(), r.dirty_pages())),
        );
        outcome
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            self.pool.give_back(sandbox);
        }
    }
}

/// Cancels a token when woken (by the timer thread, at a deadline).
struct CancelOnWake(CancelToken);

impl std::task::Wake for CancelOnWake {
    fn wake(self: Arc<Self>) {
        self.0.cancel();
    }
}

/// How often a thread waiting for a sandbox checks its call's cancel token.
const CANCEL_POLL: Duration = Duration::from_millis(5);

/// How an async wait for a sandbox ended.
// Made once per wait and unpacked at once, like the `Option<Sandbox>` it
// replaced: boxing would add an allocation per call for nothing.
#[allow(clippy::large_enum_variant)]
enum WaitEnd {
    Sandbox(Sandbox),
    TimedOut,
    Cancelled,
}

/// An async caller's place in the queue for a free sandbox, until one is
/// free, the wait limit passes or the call's cancel token is cancelled.
///
/// Its time limit runs on the runtime's own deadline timer, not the async
/// runtime's, so it works on any executor (a tokio runtime built without
/// timers included).
struct WaitForSandbox<'a> {
    shared: &'a Shared,
    /// Its entry in `Idle::waiters`, once it has one.
    ticket: Option<u64>,
    /// `None`: wait without limit.
    deadline: Option<Instant>,
    /// The timer's wake-up at `deadline`, and the waker it will wake.
    alarm: Option<(DeadlineTicket, Waker)>,
    /// The call's cancel token, which wakes the task when cancelled.
    cancel: Option<&'a CancelToken>,
    /// Its registration with the token, once it has one.
    cancel_registration: Option<u64>,
}

impl Future for WaitForSandbox<'_> {
    type Output = WaitEnd;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitEnd> {
        let shared = self.shared;
        // Dropping `self` leaves the queue.
        if let Some(token) = self.cancel {
            let mut registration = self.cancel_registration;
            let cancelled = token.wake_on_cancel(cx.waker(), &mut registration);
            self.cancel_registration = registration;
            if cancelled {
                return Poll::Ready(WaitEnd::Cancelled);
            }
        }
        let mut idle = shared.lock_idle();
        if let Some(sandbox) = idle.sandboxes.pop() {
            if let Some(ticket) = self.ticket.take() {
                idle.waiters.retain(|(t, _)| *t != ticket);
            }
            return Poll::Ready(WaitEnd::Sandbox(sandbox));
        }
        let Some(deadline) = self.deadline else {
            return self.queue(cx.waker(), idle);
        };
        if Instant::now() >= deadline {
            return Poll::Ready(WaitEnd::TimedOut);
        }
        let waker = cx.waker();
        let stale_alarm = self
            .alarm
            .as_ref()
            .is_none_or(|(_, armed)| !armed.will_wake(waker));
        if stale_alarm {
            let runtime = shared.builder.module().runtime();
            let alarm = runtime.schedule_wake(deadline, waker.clone());
            self.alarm = Some((alarm, waker.clone()));
        }
        self.queue(waker, idle)
    }
}

impl WaitForSandbox<'_> {
    /// Take (or keep) a place in the queue, to be woken when a sandbox is
    /// returned.
    fn queue(&mut self, waker: &Waker, mut idle: MutexGuard<'_, Idle>) -> Poll<WaitEnd> {
        let waker = waker.clone();
        match self.ticket {
            Some(ticket) => match idle.waiters.iter_mut().find(|(t, _)| *t == ticket) {
                Some(entry) => entry.1 = waker,
                // Woken, but another caller took the sandbox first: keep
                // the place at the front of the queue.
                None => idle.waiters.push_front((ticket, waker)),
            },
            None => {
                let ticket = idle.next_waiter;
                idle.next_waiter += 1;
                idle.waiters.push_back((ticket, waker));
                self.ticket = Some(ticket);
            }
        }
        Poll::Pending
    }
}

impl Drop for WaitForSandbox<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.cancel {
            token.forget_task(self.cancel_registration);
        }
        let Some(ticket) = self.ticket else { return };
        let mut idle = self.shared.lock_idle();
        let queued = idle.waiters.len();
        idle.waiters.retain(|(t, _)| *t != ticket);
        // Not queued any more means this waiter was woken for a sandbox it
        // will now never take: pass the wake-up on.
        if idle.waiters.len() == queued && !idle.sandboxes.is_empty() {
            self.shared.wake_one(idle);
        }
    }
}

impl Shared {
    fn lock_idle(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, sandbox: Sandbox) {
        let mut idle = self.lock_idle();
        idle.sandboxes.push(sandbox);
        self.wake_one(idle);
    }

    /// Tell the first async waiter and one waiting thread that a sandbox is
    /// free (the two race for it; the loser waits again). Each is told only
    /// if it exists: a notify is a system call.
    fn wake_one(&self, mut idle: MutexGuard<'_, Idle>) {
        let waiter = idle.waiters.pop_front();
        let threads_waiting = idle.threads_waiting > 0;
        drop(idle);
        if let Some((_, waker)) = waiter {
            waker.wake();
        }
        if threads_waiting {
            self.available.notify_one();
        }
    }
}

/// Build a replacement, retrying with backoff while building fails (the
/// configuration built before, so failures are transient: e.g. the host is
/// short of memory). Stops when the pool itself is gone.
fn rebuild(builder: SandboxBuilder, pool: Weak<Shared>, dropped: &PoolDropped) {
    let mut backoff = Duration::from_millis(10);
    while pool.strong_count() > 0 {
        match builder.clone().build() {
            Ok(sandbox) => {
                if let Some(shared) = pool.upgrade() {
                    shared.put(sandbox);
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "rebuilding a pool sandbox failed; retrying");
                let flag = dropped.dropped.lock().unwrap_or_else(|e| e.into_inner());
                let (flag, _) = dropped
                    .signal
                    .wait_timeout_while(flag, backoff, |dropped| !*dropped)
                    .unwrap_or_else(|e| e.into_inner());
                if *flag {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        *self
            .dropped
            .dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
        self.dropped.signal.notify_all();
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
