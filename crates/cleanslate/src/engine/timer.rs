//! The deadline timer: one thread per runtime that advances the engines'
//! epochs when a running call's deadline arrives, so the call's epoch
//! callback sees its timeout.
//!
//! It wakes at deadlines, not on a fixed tick. A server whose calls run
//! under a 30 s timeout and finish in microseconds never wakes it: each new
//! deadline lies after the one the timer already sleeps towards, so
//! registering a call costs a lock and a map insert, never a system call.
//! (A 1 ms ticker woke a thousand times a second and, under load, cost a
//! context switch for many calls.)

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

/// How long the timer keeps its schedule after the last deadline before it
/// sleeps until the next registration wakes it.
const IDLE_GRACE: Duration = Duration::from_secs(1);

pub(crate) struct DeadlineTimer {
    state: Mutex<TimerState>,
    wake: Condvar,
}

struct TimerState {
    /// Deadlines, with an id that tells equal ones apart, and what to do
    /// then: advance the epochs (`None`: a running call's timeout) or wake
    /// a task (an async wait's limit).
    deadlines: BTreeMap<(Instant, u64), Option<Waker>>,
    next_id: u64,
    /// When the timer thread will next look; `None`: not until woken.
    wakes_at: Option<Instant>,
    /// Wakes closer together than this are postponed (a cap on the wake rate
    /// when many short timeouts run).
    min_gap: Duration,
    /// How long the timer keeps a schedule with no deadlines.
    idle_grace: Duration,
    /// The earliest the timer may wake next (last wake + `min_gap`).
    not_before: Instant,
    stopped: bool,
    engines: Vec<wasmtime::Engine>,
}

/// A running call's registration; dropping it withdraws the deadline.
pub(crate) struct DeadlineTicket {
    timer: Arc<DeadlineTimer>,
    key: (Instant, u64),
}

impl Drop for DeadlineTicket {
    fn drop(&mut self) {
        self.timer.lock().deadlines.remove(&self.key);
    }
}

impl DeadlineTimer {
    /// Start the timer thread. `min_gap` bounds how late a deadline fires.
    pub(crate) fn start(min_gap: Duration) -> Result<Arc<DeadlineTimer>, Error> {
        DeadlineTimer::start_with(min_gap, IDLE_GRACE)
    }

    fn start_with(min_gap: Duration, idle_grace: Duration) -> Result<Arc<DeadlineTimer>, Error> {
        let timer = Arc::new(DeadlineTimer {
            state: Mutex::new(TimerState {
                deadlines: BTreeMap::new(),
                next_id: 0,
                wakes_at: None,
                min_gap,
                idle_grace,
                not_before: Instant::now(),
                stopped: false,
                engines: Vec::new(),
            }),
            wake: Condvar::new(),
        });
        let thread_timer = timer.clone();
        thread::Builder::new()
            .name("cleanslate-deadlines".into())
            .spawn(move || thread_timer.run())
            .map_err(|e| {
                Error::new(
                    ErrorKind::Instantiation,
                    format!("cannot start the timeout thread: {e}"),
                )
            })?;
        Ok(timer)
    }

    fn lock(&self) -> MutexGuard<'_, TimerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Epochs of `engine` advance when a deadline arrives.
    pub(crate) fn register(&self, engine: wasmtime::Engine) {
        self.lock().engines.push(engine);
    }

    /// A call with `deadline` starts; the timer advances the epochs when the
    /// deadline arrives, unless the ticket is dropped first.
    pub(crate) fn schedule(self: &Arc<Self>, deadline: Instant) -> DeadlineTicket {
        self.schedule_action(deadline, None)
    }

    /// Wake `waker` at `deadline`, unless the ticket is dropped first.
    pub(crate) fn schedule_wake(
        self: &Arc<Self>,
        deadline: Instant,
        waker: Waker,
    ) -> DeadlineTicket {
        self.schedule_action(deadline, Some(waker))
    }

    fn schedule_action(
        self: &Arc<Self>,
        deadline: Instant,
        waker: Option<Waker>,
    ) -> DeadlineTicket {
        let mut state = self.lock();
        let key = (deadline, state.next_id);
        state.next_id += 1;
        state.deadlines.insert(key, waker);
        let wake_for_this = deadline.max(state.not_before);
        let must_wake = state.wakes_at.is_none_or(|at| wake_for_this < at);
        if must_wake {
            state.wakes_at = Some(wake_for_this);
        }
        drop(state);
        if must_wake {
            self.wake.notify_one();
        }
        DeadlineTicket {
            timer: self.clone(),
            key,
        }
    }

    pub(crate) fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_one();
    }

    /// The timer thread; it ends when the runtime calls [`stop`](Self::stop).
    fn run(&self) {
        let mut idle_since: Option<Instant> = None;
        let mut state = self.lock();
        loop {
            if state.stopped {
                return;
            }
            let now = Instant::now();
            if state.wakes_at.is_some_and(|at| at <= now) {
                let later = state.deadlines.split_off(&(now, u64::MAX));
                let due = std::mem::replace(&mut state.deadlines, later);
                if !due.is_empty() {
                    let mut wakers = Vec::new();
                    let mut calls_due = false;
                    for waker in due.into_values() {
                        match waker {
                            Some(waker) => wakers.push(waker),
                            None => calls_due = true,
                        }
                    }
                    // The due calls' epoch callbacks trap them; the others
                    // check their own deadline and carry on.
                    if calls_due {
                        for engine in &state.engines {
                            engine.increment_epoch();
                        }
                    }
                    state.not_before = now + state.min_gap;
                    if !wakers.is_empty() {
                        // A waker may run arbitrary code (even schedule a
                        // new deadline): never under the lock.
                        drop(state);
                        wakers.into_iter().for_each(Waker::wake);
                        state = self.lock();
                    }
                }
                state.wakes_at = match state.deadlines.first_key_value() {
                    Some((&(next, _), _)) => {
                        idle_since = None;
                        Some(next.max(state.not_before))
                    }
                    // Keep a schedule for a while, so that calls starting
                    // soon after need not wake the timer; then sleep until
                    // woken.
                    None => match idle_since {
                        Some(since) if now.duration_since(since) >= state.idle_grace => None,
                        Some(_) => Some(now + state.idle_grace),
                        None => {
                            idle_since = Some(now);
                            Some(now + state.idle_grace)
                        }
                    },
                };
            }
            state = match state.wakes_at {
                Some(at) => {
                    self.wake
                        .wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::task::Wake;

    /// A waker that reports its name on a channel.
    struct Report(&'static str, mpsc::Sender<&'static str>);

    impl Wake for Report {
        fn wake(self: Arc<Self>) {
            let _ = self.1.send(self.0);
        }
    }

    fn waker(name: &'static str, tx: &mpsc::Sender<&'static str>) -> Waker {
        Waker::from(Arc::new(Report(name, tx.clone())))
    }

    const PATIENCE: Duration = Duration::from_secs(10);

    #[test]
    fn an_earlier_deadline_wakes_a_timer_asleep_towards_a_later_one() {
        let timer = DeadlineTimer::start_with(Duration::from_micros(100), IDLE_GRACE).unwrap();
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let _late = timer.schedule_wake(now + Duration::from_secs(3600), waker("late", &tx));
        let _early = timer.schedule_wake(now + Duration::from_millis(20), waker("early", &tx));
        assert_eq!(rx.recv_timeout(PATIENCE), Ok("early"));
        assert!(
            Instant::now() >= now + Duration::from_millis(20),
            "fired before its deadline"
        );
        timer.stop();
    }

    #[test]
    fn a_withdrawn_deadline_never_fires() {
        let timer = DeadlineTimer::start_with(Duration::from_micros(100), IDLE_GRACE).unwrap();
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        drop(timer.schedule_wake(now + Duration::from_millis(10), waker("withdrawn", &tx)));
        let _kept = timer.schedule_wake(now + Duration::from_millis(40), waker("kept", &tx));
        assert_eq!(rx.recv_timeout(PATIENCE), Ok("kept"));
        assert!(rx.try_recv().is_err());
        timer.stop();
    }

    #[test]
    fn a_timer_that_went_idle_wakes_for_a_new_deadline() {
        let grace = Duration::from_millis(10);
        let timer = DeadlineTimer::start_with(Duration::from_micros(100), grace).unwrap();
        let (tx, rx) = mpsc::channel();
        let _first = timer.schedule_wake(Instant::now(), waker("first", &tx));
        assert_eq!(rx.recv_timeout(PATIENCE), Ok("first"));
        // Past two grace periods the timer sleeps until woken.
        std::thread::sleep(grace * 5);
        assert_eq!(
            timer.lock().wakes_at,
            None,
            "the idle timer still has a schedule"
        );
        let _second = timer.schedule_wake(
            Instant::now() + Duration::from_millis(5),
            waker("second", &tx),
        );
        assert_eq!(rx.recv_timeout(PATIENCE), Ok("second"));
        timer.stop();
    }

    #[test]
    fn deadlines_fire_in_order() {
        let timer = DeadlineTimer::start_with(Duration::from_micros(100), IDLE_GRACE).unwrap();
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let names = ["c", "a", "d", "b"];
        let offsets = [30, 10, 40, 20];
        let _tickets: Vec<_> = names
            .iter()
            .zip(offsets)
            .map(|(name, ms)| {
                timer.schedule_wake(now + Duration::from_millis(ms), waker(name, &tx))
            })
            .collect();
        let fired: Vec<_> = (0..4).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
        assert_eq!(fired, ["a", "b", "c", "d"]);
        timer.stop();
    }
}
