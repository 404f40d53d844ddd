//! Replacing a sandbox that came back unrecoverable, on a thread of its
//! own, so one failed reset never shrinks the pool for good and no caller
//! waits for a build.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::Shared;
use crate::sandbox::SandboxBuilder;

/// Whether a pool was dropped, for the threads that rebuild its sandboxes.
#[derive(Default)]
pub(super) struct PoolDropped {
    dropped: Mutex<bool>,
    signal: Condvar,
}

/// Start building a replacement for a sandbox the pool just dropped.
pub(super) fn replace_in_background(shared: &Arc<Shared>) {
    // The thread holds the pool only weakly, so a pool dropped while
    // replacements are being built (or keep failing) is freed, and its
    // threads stop.
    let builder = shared.builder.clone();
    let pool = Arc::downgrade(shared);
    let dropped = shared.dropped.clone();
    let spawned = std::thread::Builder::new()
        .name("cleanslate-pool-rebuild".into())
        .spawn(move || rebuild(builder, pool, &dropped));
    if let Err(e) = spawned {
        // The pool stays one sandbox short; the next unrecoverable
        // sandbox tries again.
        tracing::error!(error = %e, "cannot start a thread to rebuild a pool sandbox");
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
                    shared.free.put(sandbox);
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

// Tells the rebuilding threads at once, instead of after their backoff.
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
