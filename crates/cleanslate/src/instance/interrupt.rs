//! Stopping a running call from another thread.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the epoch callback stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interruption {
    Timeout,
    Cancelled,
    CancelledByToken,
}

impl fmt::Display for Interruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interruption::Timeout => f.write_str("the call exceeded its timeout"),
            Interruption::Cancelled | Interruption::CancelledByToken => {
                f.write_str("the call was cancelled")
            }
        }
    }
}

impl std::error::Error for Interruption {}

/// Shared between a sandbox and its interrupt handles.
///
/// Each call gets a new generation number. A cancel names the generation
/// running at that moment, so a cancel that arrives when no call runs — or
/// after the call it aimed at ended — can never stop a later call.
pub(crate) struct InterruptState {
    /// Generation of the call in progress; 0 when none is.
    running: AtomicU64,
    /// Generation a cancel was requested for.
    cancel: AtomicU64,
    next: AtomicU64,
    engine: wasmtime::Engine,
}

impl InterruptState {
    pub(crate) fn new(engine: wasmtime::Engine) -> Arc<Self> {
        Arc::new(InterruptState {
            running: AtomicU64::new(0),
            cancel: AtomicU64::new(0),
            next: AtomicU64::new(1),
            engine,
        })
    }

    /// Mark a call as started; returns its generation.
    pub(crate) fn begin(&self) -> u64 {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        self.running.store(generation, Ordering::SeqCst);
        generation
    }

    /// The engine whose epoch wakes this sandbox's calls.
    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }

    pub(crate) fn end(&self) {
        self.running.store(0, Ordering::SeqCst);
    }

    /// Whether the call of `generation` must stop because of a cancel.
    pub(crate) fn requested(&self, generation: u64) -> Option<Interruption> {
        (generation != 0 && self.cancel.load(Ordering::SeqCst) == generation)
            .then_some(Interruption::Cancelled)
    }

    fn cancel(&self) -> bool {
        let generation = self.running.load(Ordering::SeqCst);
        if generation == 0 {
            return false;
        }
        self.cancel.store(generation, Ordering::SeqCst);
        // Make every running call of this engine check its interrupt state
        // now rather than at the next tick.
        self.engine.increment_epoch();
        true
    }
}

/// Stops a sandbox's call in progress from any thread.
///
/// ```
/// use std::time::Duration;
/// use cleanslate::{ErrorKind, Runtime, Sandbox};
///
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(r#"(module (func (export "spin") (loop br 0)))"#)?;
/// let mut sandbox = Sandbox::builder(&module).build()?;
/// let handle = sandbox.interrupt_handle();
/// assert!(!handle.cancel(), "nothing is running yet");
/// let canceller = std::thread::spawn(move || {
///     while !handle.cancel() {
///         std::thread::sleep(Duration::from_millis(5));
///     }
/// });
/// let err = sandbox.call("spin", &[]).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Cancelled);
/// canceller.join().unwrap();
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone)]
pub struct InterruptHandle {
    pub(crate) state: Arc<InterruptState>,
}

impl InterruptHandle {
    /// Stop the call in progress, if any. Returns whether a call was running.
    /// A cancel with no call running has no effect on later calls.
    pub fn cancel(&self) -> bool {
        self.state.cancel()
    }

    /// Whether a call is running right now.
    pub fn is_running(&self) -> bool {
        self.state.running.load(Ordering::SeqCst) != 0
    }
}

impl fmt::Debug for InterruptHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterruptHandle")
            .field("running", &self.is_running())
            .finish()
    }
}
