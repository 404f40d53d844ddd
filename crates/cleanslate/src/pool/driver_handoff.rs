//! Keeps an async runtime's I/O and timers moving while an inline call
//! blocks one of its workers.
//!
//! A tokio multi-threaded runtime has one I/O and timer driver, polled by
//! whichever worker parks on it while the others sleep on a condvar. When
//! that worker is woken by I/O and runs a task that blocks (an inline guest
//! call), nothing polls the driver and no sleeping worker is told to take
//! it over (tokio-rs/tokio#4730): sockets and timers stall until the guest
//! returns, however many workers are free. A server stops accepting
//! connections for as long as its slowest guest runs.
//!
//! The fix costs a short call nothing but a timer entry: if the call still
//! runs after [`HANDOFF_AFTER`], the deadline timer's thread spawns an empty
//! task on the runtime. A task spawned from outside the runtime wakes a
//! sleeping worker; having run it, that worker parks on the driver, now
//! free. (`block_in_place` would also hand the driver on, but it hands the
//! worker's whole scheduler to another thread on every call: it halved the
//! server's throughput for microsecond calls.)

use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::engine::runtime::Runtime;
use crate::engine::timer::DeadlineTicket;

/// How long an inline call may hold a worker before another worker is woken
/// to poll the runtime's I/O and timers: the most it delays them.
pub(super) const HANDOFF_AFTER: Duration = Duration::from_millis(5);

/// Arm the hand-off for a call about to block this thread; dropping the
/// ticket when the call returns disarms it. `None` outside a multi-threaded
/// tokio runtime, where no other worker exists to take over.
pub(super) fn arm(runtime: &Runtime) -> Option<DeadlineTicket> {
    let handle = Handle::try_current().ok()?;
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        return None;
    }
    let waker = Waker::from(Arc::new(WakeAWorker(handle)));
    Some(runtime.schedule_wake(Instant::now() + HANDOFF_AFTER, waker))
}

/// Wakes a sleeping worker of a runtime by handing it a task from outside.
struct WakeAWorker(Handle);

impl Wake for WakeAWorker {
    fn wake(self: Arc<Self>) {
        // The task does nothing; being woken to run it is the point. Its
        // handle is not needed: dropping it detaches the task.
        drop(self.0.spawn(async {}));
    }
}
