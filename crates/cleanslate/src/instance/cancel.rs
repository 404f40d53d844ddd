//! Cancelling a call by token: from any thread, whichever sandbox runs it,
//! and whether it is running yet or still waiting for a pool's sandbox.
//!
//! An [`InterruptHandle`](crate::InterruptHandle) stops whatever one
//! sandbox is running right now; a token names *calls* instead, which is
//! what a caller of a pool (or a server whose client went away) has in hand.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

/// Cancels the calls that carry it ([`Call::cancel_token`](crate::Call::cancel_token)).
///
/// Once cancelled, a token stays cancelled: a call carrying it that has not
/// started yet never starts (it fails with
/// [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled) without running,
/// even while it waits for a pool's sandbox), and one that is running stops
/// at its next instruction boundary the engine checks. Either way the
/// sandbox is reset as after any other exit. Clones share one state.
///
/// ```
/// use std::time::Duration;
/// use cleanslate::{Call, CancelToken, ErrorKind, Runtime, Sandbox};
///
/// let module = Runtime::new()?.load_bytes(r#"(module (func (export "spin") (loop br 0)))"#)?;
/// let mut sandbox = Sandbox::builder(&module).build()?;
/// let token = CancelToken::new();
/// let canceller = {
///     let token = token.clone();
///     std::thread::spawn(move || {
///         std::thread::sleep(Duration::from_millis(20));
///         token.cancel();
///     })
/// };
/// let err = sandbox.call_with(&Call::values("spin", &[]).cancel_token(&token)).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Cancelled);
/// canceller.join().unwrap();
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<TokenState>,
}

#[derive(Default)]
struct TokenState {
    cancelled: AtomicBool,
    /// Engines running a call that carries this token (one entry per
    /// call), to wake into checking it, and tasks waiting for a sandbox.
    watchers: Mutex<Watchers>,
}

#[derive(Default)]
struct Watchers {
    engines: Vec<wasmtime::Engine>,
    /// Waiting tasks by registration number. Identity is the number, not
    /// `Waker::will_wake`, which is only best-effort (Miri showed two
    /// clones of one waker comparing unequal).
    tasks: Vec<(u64, Waker)>,
    next_task: u64,
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Cancel every call carrying this token, now and later.
    pub fn cancel(&self) {
        // The flag first: a call that attaches after this point sees it
        // when it checks before entering the guest; one attached before
        // is woken below.
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let watchers = std::mem::take(&mut *self.watchers());
        for engine in &watchers.engines {
            // Every running call of the engine checks its interruption
            // state at once instead of at its next deadline tick.
            engine.increment_epoch();
        }
        for (_, task) in watchers.tasks {
            task.wake();
        }
    }

    /// Whether [`cancel`](CancelToken::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, Watchers> {
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A call on `engine` is about to run; a cancel from now on wakes it.
    pub(crate) fn attach(&self, engine: &wasmtime::Engine) {
        self.watchers().engines.push(engine.clone());
    }

    /// The call attached on `engine` ended.
    pub(crate) fn detach(&self, engine: &wasmtime::Engine) {
        let mut watchers = self.watchers();
        if let Some(i) = watchers
            .engines
            .iter()
            .position(|e| wasmtime::Engine::same(e, engine))
        {
            watchers.engines.swap_remove(i);
        }
    }

    /// Wake `task` when the token is cancelled (a call waiting for a
    /// pool's sandbox). `registration` is the waiter's slot: empty the
    /// first time, then its number, so a re-poll replaces its waker instead
    /// of adding one. Returns whether the token is cancelled already.
    pub(crate) fn wake_on_cancel(&self, task: &Waker, registration: &mut Option<u64>) -> bool {
        let mut watchers = self.watchers();
        // Checked under the lock `cancel` takes after setting the flag, so
        // a cancel cannot fall between this check and the registration.
        if self.is_cancelled() {
            return true;
        }
        let existing =
            registration.and_then(|id| watchers.tasks.iter_mut().find(|(i, _)| *i == id));
        match existing {
            Some((_, waker)) => waker.clone_from(task),
            None => {
                let id = watchers.next_task;
                watchers.next_task += 1;
                watchers.tasks.push((id, task.clone()));
                *registration = Some(id);
            }
        }
        false
    }
}

impl CancelToken {
    /// Stop waking the task of `registration` (its wait ended): a token
    /// that lives long, across many calls, must not collect the wakers of
    /// every wait it saw.
    pub(crate) fn forget_task(&self, registration: Option<u64>) {
        if let Some(id) = registration {
            self.watchers().tasks.retain(|(i, _)| *i != id);
        }
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn cancelling_wakes_waiting_tasks_once_and_stays_cancelled() {
        let token = CancelToken::new();
        let count = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut registration = None;
        assert!(!token.wake_on_cancel(&waker, &mut registration));
        assert!(!token.wake_on_cancel(&waker.clone(), &mut registration));
        assert_eq!(token.watchers().tasks.len(), 1, "registered once");
        token.forget_task(registration.take());
        assert!(token.watchers().tasks.is_empty(), "forgotten");
        assert!(!token.wake_on_cancel(&waker, &mut registration));
        let clone = token.clone();
        clone.cancel();
        assert!(token.is_cancelled());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(token.wake_on_cancel(&waker, &mut None), "already cancelled");
        token.cancel();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "no second wake");
    }
}
