//! Taking a sandbox from the pool and giving it back: a thread blocks, a
//! task suspends, both up to the pool's wait limit or until the call's
//! cancel token is cancelled; what comes back unrecoverable is rebuilt.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::free_list::{WaitEnd, Waiter};
use super::{SandboxPool, Shared, rebuild};
use crate::engine::timer::DeadlineTicket;
use crate::error::{Error, ErrorKind};
use crate::instance::CancelToken;
use crate::sandbox::{Sandbox, Status};

impl SandboxPool {
    /// Take a free sandbox, blocking the thread up to the configured wait.
    pub(super) fn checkout(
        &self,
        function: &str,
        cancel: Option<&CancelToken>,
    ) -> Result<Checkout, Error> {
        let waited = Instant::now();
        // A wait too long to represent (e.g. `Duration::MAX`) is no limit.
        let deadline = waited.checked_add(self.shared.config.max_wait);
        let cancelled = cancel.map(|token| || token.is_cancelled());
        let end = self.shared.free.take_blocking(deadline, cancelled);
        self.wait_ended(end, function, waited)
    }

    /// Take a free sandbox, suspending the task up to the configured wait.
    pub(super) async fn checkout_async(
        &self,
        function: &str,
        cancel: Option<&CancelToken>,
    ) -> Result<Checkout, Error> {
        let waited = Instant::now();
        let wait = WaitForSandbox {
            shared: &self.shared,
            waiter: Waiter::new(&self.shared.free),
            deadline: waited.checked_add(self.shared.config.max_wait),
            alarm: None,
            cancel,
            cancel_registration: None,
        };
        let end = wait.await;
        self.wait_ended(end, function, waited)
    }

    fn wait_ended(
        &self,
        end: WaitEnd<Sandbox>,
        function: &str,
        waited: Instant,
    ) -> Result<Checkout, Error> {
        match end {
            WaitEnd::Taken(sandbox) => Ok(self.checked_out(sandbox, waited)),
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
            self.shared.free.put(sandbox);
            return;
        }
        drop(sandbox);
        self.shared.metrics.record_replacement();
        rebuild::replace_in_background(&self.shared);
    }
}

/// A sandbox taken from the pool; it goes back when this is dropped, so no
/// path (an error, a dropped future, a panic) can lose one.
pub(super) struct Checkout {
    pool: SandboxPool,
    sandbox: Option<Sandbox>,
}

impl Checkout {
    pub(super) fn run<T>(
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

/// An async caller's wait for a free sandbox, until one is free, the wait
/// limit passes or the call's cancel token is cancelled.
///
/// Its time limit runs on the runtime's own deadline timer, not the async
/// runtime's, so it works on any executor (a tokio runtime built without
/// timers included).
struct WaitForSandbox<'a> {
    shared: &'a Shared,
    /// Its place in the queue for a free sandbox; dropping it leaves.
    waiter: Waiter<'a, Sandbox>,
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
    type Output = WaitEnd<Sandbox>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitEnd<Sandbox>> {
        if let Some(token) = self.cancel {
            let mut registration = self.cancel_registration;
            let cancelled = token.wake_on_cancel(cx.waker(), &mut registration);
            self.cancel_registration = registration;
            if cancelled {
                return Poll::Ready(WaitEnd::Cancelled);
            }
        }
        let waker = cx.waker();
        if let Some(sandbox) = self.waiter.poll_take(waker) {
            return Poll::Ready(WaitEnd::Taken(sandbox));
        }
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        if Instant::now() >= deadline {
            return Poll::Ready(WaitEnd::TimedOut);
        }
        let stale_alarm = self
            .alarm
            .as_ref()
            .is_none_or(|(_, armed)| !armed.will_wake(waker));
        if stale_alarm {
            let runtime = self.shared.builder.module().runtime();
            let alarm = runtime.schedule_wake(deadline, waker.clone());
            self.alarm = Some((alarm, waker.clone()));
        }
        Poll::Pending
    }
}

impl Drop for WaitForSandbox<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.cancel {
            token.forget_task(self.cancel_registration);
        }
    }
}
