//! The pool's free sandboxes and the callers waiting for one: threads
//! blocked on a condition variable, and async tasks in a FIFO queue of
//! wakers. Both wait under the one lock that guards the list, so an item
//! put back between a caller's look and its wait always wakes someone.
//!
//! The queue is hand-written because no kept crate keeps today's order of
//! who gets a sandbox. tokio's `Notify` (and the `event-listener` crate,
//! not in the dependency tree) send a woken task that lost the race for
//! the sandbox to the back of the queue; here it keeps its place at the
//! front. tokio's `Semaphore` hands each returned sandbox to the oldest
//! queued task: a caller arriving while a sandbox lies free could no
//! longer take it, so under load every return would wait for a task to
//! wake. And blocked threads, which a semaphore cannot park, would either
//! need a hand-made blocking poll of its futures or lose every race to the
//! queued tasks. So the queue stays, in this file, with tests of its own.
//!
//! Generic over the item so that its tests need no sandbox.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

/// Free items, and the threads and tasks waiting for one.
pub(super) struct FreeList<T> {
    state: Mutex<State<T>>,
    /// Threads waiting in [`FreeList::take_blocking`].
    available: Condvar,
}

struct State<T> {
    items: Vec<T>,
    /// Async waiters by ticket, oldest first.
    waiters: VecDeque<(u64, Waker)>,
    next_ticket: u64,
    /// Threads blocked on `FreeList::available`.
    threads_waiting: usize,
}

/// How a wait for an item ended.
// Made once per wait and unpacked at once, like the `Option` it replaced:
// boxing a sandbox would add an allocation per call for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum WaitEnd<T> {
    Taken(T),
    TimedOut,
    Cancelled,
}

/// How often a blocked thread checks whether its caller was cancelled (a
/// thread parked on the condition variable has no waker to wake).
const CANCEL_POLL: Duration = Duration::from_millis(5);

impl<T> FreeList<T> {
    pub(super) fn new(items: Vec<T>) -> Self {
        FreeList {
            state: Mutex::new(State {
                items,
                waiters: VecDeque::new(),
                next_ticket: 0,
                threads_waiting: 0,
            }),
            available: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // An item is whole or absent whatever panicked: the list stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Items free right now.
    pub(super) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Run `f` on one free item, if there is one.
    #[cfg(feature = "fault-injection")]
    pub(super) fn with_one(&self, f: impl FnOnce(&mut T)) {
        if let Some(item) = self.lock().items.last_mut() {
            f(item);
        }
    }

    /// Return an item, and wake a waiter for it.
    pub(super) fn put(&self, item: T) {
        let mut state = self.lock();
        state.items.push(item);
        self.wake_one(state);
    }

    /// Tell the first async waiter and one waiting thread that an item is
    /// free (the two race for it; the loser waits again). Each is told only
    /// if it exists: a notify is a system call.
    fn wake_one(&self, mut state: MutexGuard<'_, State<T>>) {
        let waiter = state.waiters.pop_front();
        let threads_waiting = state.threads_waiting > 0;
        drop(state);
        if let Some((_, waker)) = waiter {
            waker.wake();
        }
        if threads_waiting {
            self.available.notify_one();
        }
    }

    /// Take an item, blocking the thread until `deadline` (`None`: no
    /// limit) or until `cancelled` says so.
    pub(super) fn take_blocking(
        &self,
        deadline: Option<Instant>,
        cancelled: Option<impl Fn() -> bool>,
    ) -> WaitEnd<T> {
        let mut state = self.lock();
        loop {
            if cancelled.as_ref().is_some_and(|c| c()) {
                return WaitEnd::Cancelled;
            }
            if let Some(item) = state.items.pop() {
                return WaitEnd::Taken(item);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return WaitEnd::TimedOut;
            }
            let wake_at = match cancelled {
                Some(_) => Some(deadline.map_or(now + CANCEL_POLL, |d| d.min(now + CANCEL_POLL))),
                None => deadline,
            };
            state.threads_waiting += 1;
            state = match wake_at {
                Some(wake_at) => {
                    self.available
                        .wait_timeout(state, wake_at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self
                    .available
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner()),
            };
            state.threads_waiting -= 1;
        }
    }
}

/// An async caller's place in the queue, from its first look at the list
/// until it takes an item or is dropped. Dropping it leaves the queue, and
/// passes on a wake-up it got but never used, so a task dropped mid-wait
/// (a timeout, a cancelled request) cannot strand a free item.
pub(super) struct Waiter<'a, T> {
    list: &'a FreeList<T>,
    /// Its entry in the queue, once it has one.
    ticket: Option<u64>,
}

impl<'a, T> Waiter<'a, T> {
    pub(super) fn new(list: &'a FreeList<T>) -> Self {
        Waiter { list, ticket: None }
    }

    /// Take a free item, or take (or keep) a place in the queue, to be
    /// woken through `waker` when one is put back.
    pub(super) fn poll_take(&mut self, waker: &Waker) -> Option<T> {
        let mut state = self.list.lock();
        if let Some(item) = state.items.pop() {
            if let Some(ticket) = self.ticket.take() {
                state.waiters.retain(|(t, _)| *t != ticket);
            }
            return Some(item);
        }
        let waker = waker.clone();
        match self.ticket {
            Some(ticket) => match state.waiters.iter_mut().find(|(t, _)| *t == ticket) {
                Some(entry) => entry.1 = waker,
                // Woken, but another caller took the item first: keep the
                // place at the front of the queue.
                None => state.waiters.push_front((ticket, waker)),
            },
            None => {
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                state.waiters.push_back((ticket, waker));
                self.ticket = Some(ticket);
            }
        }
        None
    }
}

impl<T> Drop for Waiter<'_, T> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else { return };
        let mut state = self.list.lock();
        let queued = state.waiters.len();
        state.waiters.retain(|(t, _)| *t != ticket);
        // Not queued any more means this waiter was woken for an item it
        // will now never take: pass the wake-up on.
        if state.waiters.len() == queued && !state.items.is_empty() {
            self.list.wake_one(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Wake};

    /// Records the order in which waiters are woken.
    struct Recorder {
        id: u32,
        woken: Arc<Mutex<Vec<u32>>>,
    }

    impl Wake for Recorder {
        fn wake(self: Arc<Self>) {
            self.woken.lock().unwrap().push(self.id);
        }
    }

    fn recorder(id: u32, woken: &Arc<Mutex<Vec<u32>>>) -> Waker {
        Waker::from(Arc::new(Recorder {
            id,
            woken: woken.clone(),
        }))
    }

    fn taken<T>(end: WaitEnd<T>) -> Option<T> {
        match end {
            WaitEnd::Taken(item) => Some(item),
            WaitEnd::TimedOut | WaitEnd::Cancelled => None,
        }
    }

    const NO_CANCEL: Option<fn() -> bool> = None;

    #[test]
    fn async_waiters_are_woken_oldest_first() {
        let list = FreeList::<u32>::new(Vec::new());
        let woken = Arc::default();
        let mut waiters: Vec<_> = (0..3).map(|_| Waiter::new(&list)).collect();
        for (id, waiter) in (0..).zip(&mut waiters) {
            assert!(waiter.poll_take(&recorder(id, &woken)).is_none());
        }
        list.put(10);
        list.put(11);
        assert_eq!(*woken.lock().unwrap(), [0, 1]);
        assert_eq!(waiters[0].poll_take(Waker::noop()), Some(11));
        assert_eq!(waiters[1].poll_take(Waker::noop()), Some(10));
        list.put(12);
        assert_eq!(*woken.lock().unwrap(), [0, 1, 2]);
    }

    #[test]
    fn a_woken_waiter_that_loses_the_race_keeps_its_place() {
        let list = FreeList::<u32>::new(Vec::new());
        let woken = Arc::default();
        let mut first = Waiter::new(&list);
        let mut second = Waiter::new(&list);
        assert!(first.poll_take(&recorder(1, &woken)).is_none());
        assert!(second.poll_take(&recorder(2, &woken)).is_none());
        list.put(10);
        // A thread takes the item before the woken task runs.
        assert_eq!(taken(list.take_blocking(None, NO_CANCEL)), Some(10));
        assert!(first.poll_take(&recorder(1, &woken)).is_none());
        list.put(11);
        assert_eq!(*woken.lock().unwrap(), [1, 1]);
    }

    #[test]
    fn a_new_waker_replaces_the_old_one() {
        let list = FreeList::<u32>::new(Vec::new());
        let woken = Arc::default();
        let mut waiter = Waiter::new(&list);
        assert!(waiter.poll_take(&recorder(1, &woken)).is_none());
        assert!(waiter.poll_take(&recorder(2, &woken)).is_none());
        list.put(10);
        list.put(11);
        // One place in the queue, woken once, through the newest waker.
        assert_eq!(*woken.lock().unwrap(), [2]);
    }

    #[test]
    fn a_dropped_woken_waiter_passes_its_wake_up_on() {
        let list = FreeList::<u32>::new(Vec::new());
        let woken = Arc::default();
        let mut first = Waiter::new(&list);
        let mut second = Waiter::new(&list);
        assert!(first.poll_take(&recorder(1, &woken)).is_none());
        assert!(second.poll_take(&recorder(2, &woken)).is_none());
        list.put(10);
        drop(first);
        assert_eq!(*woken.lock().unwrap(), [1, 2]);
        assert_eq!(second.poll_take(Waker::noop()), Some(10));
    }

    #[test]
    fn a_dropped_waiting_waiter_leaves_the_queue_quietly() {
        let list = FreeList::<u32>::new(Vec::new());
        let woken = Arc::default();
        let mut first = Waiter::new(&list);
        let mut second = Waiter::new(&list);
        assert!(first.poll_take(&recorder(1, &woken)).is_none());
        assert!(second.poll_take(&recorder(2, &woken)).is_none());
        drop(first);
        assert!(woken.lock().unwrap().is_empty());
        list.put(10);
        assert_eq!(*woken.lock().unwrap(), [2]);
    }

    #[test]
    fn a_blocked_thread_times_out_is_cancelled_or_is_woken() {
        let list = Arc::new(FreeList::<u32>::new(Vec::new()));
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            list.take_blocking(Some(soon), NO_CANCEL),
            WaitEnd::TimedOut
        ));
        assert!(matches!(
            list.take_blocking(None, Some(|| true)),
            WaitEnd::Cancelled
        ));
        let cancel_at = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            list.take_blocking(None, Some(|| Instant::now() >= cancel_at)),
            WaitEnd::Cancelled
        ));
        let putter = {
            let list = list.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                list.put(10);
            })
        };
        assert_eq!(taken(list.take_blocking(None, NO_CANCEL)), Some(10));
        putter.join().unwrap();
    }

    async fn take_async(list: &FreeList<u32>) -> u32 {
        let mut waiter = Waiter::new(list);
        std::future::poll_fn(|cx| match waiter.poll_take(cx.waker()) {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        })
        .await
    }

    /// Round after round, `threads` threads and `tasks` tasks each take
    /// one of `items` items once and return it, while `quitters` tasks
    /// queue and give up. Each taker takes once, so none comes back to find
    /// an item someone slept through: a lost wake-up (or one swallowed by a
    /// quitter) can strand a round, which then never finishes. (The
    /// unit tests above pin the hand-over deterministically; this one
    /// looks for races between them.)
    fn hammer(items: u32, threads: u32, tasks: u32, quitters: u32) {
        const ROUNDS: u32 = 300;
        let list = Arc::new(FreeList::new((0..items).collect()));
        let (done, finished) = mpsc::channel();
        {
            let list = list.clone();
            std::thread::spawn(move || {
                let tokio = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(4)
                    .build()
                    .unwrap();
                for _ in 0..ROUNDS {
                    // Quitters first, so that they queue ahead of takers.
                    let quitters: Vec<_> = (0..quitters)
                        .map(|_| {
                            let list = list.clone();
                            tokio.spawn(async move {
                                let mut waiter = Waiter::new(&*list);
                                if let Some(item) = waiter.poll_take(Waker::noop()) {
                                    list.put(item);
                                }
                                // Long enough to be woken, often.
                                for _ in 0..3 {
                                    tokio::task::yield_now().await;
                                }
                            })
                        })
                        .collect();
                    let takers: Vec<_> = (0..tasks)
                        .map(|_| {
                            let list = list.clone();
                            tokio.spawn(async move {
                                let item = take_async(&list).await;
                                tokio::task::yield_now().await;
                                list.put(item);
                            })
                        })
                        .collect();
                    let threads: Vec<_> = (0..threads)
                        .map(|_| {
                            let list = list.clone();
                            std::thread::spawn(move || {
                                let item = taken(list.take_blocking(None, NO_CANCEL)).unwrap();
                                std::thread::yield_now();
                                list.put(item);
                            })
                        })
                        .collect();
                    tokio.block_on(async {
                        for task in takers.into_iter().chain(quitters) {
                            task.await.unwrap();
                        }
                    });
                    for thread in threads {
                        thread.join().unwrap();
                    }
                }
                done.send(()).unwrap();
            });
        }
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("a waiter slept through a free item (a lost wake-up)");
        let now = Some(Instant::now());
        let mut left: Vec<_> =
            std::iter::from_fn(|| taken(list.take_blocking(now, NO_CANCEL))).collect();
        left.sort_unstable();
        assert_eq!(left, (0..items).collect::<Vec<_>>());
    }

    #[test]
    fn no_wake_up_is_lost_to_tasks_that_give_up() {
        hammer(1, 0, 4, 4);
    }

    #[test]
    fn no_wake_up_is_lost_between_threads_and_tasks() {
        hammer(2, 3, 3, 2);
    }
}
