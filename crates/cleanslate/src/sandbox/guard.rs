//! The one mechanism every call exit goes through.
//!
//! A call arms a [`ResetGuard`] before guest code runs; the guard's `Drop`
//! performs the reset. Returning, trapping, `?` early exits and unwinding
//! panics all leave the scope the same way, so no exit path can skip the
//! reset — the error-path bug this project exists to prevent.

use std::ops::{Deref, DerefMut};

use crate::sandbox::SandboxCore;

/// Resets the sandbox when dropped, or when [`finish`](ResetGuard::finish)ed.
pub(crate) struct ResetGuard<'a> {
    /// Always `Some` until `finish` or `drop` takes it.
    core: Option<&'a mut SandboxCore>,
}

impl<'a> ResetGuard<'a> {
    pub(crate) fn arm(core: &'a mut SandboxCore) -> Self {
        ResetGuard { core: Some(core) }
    }

    /// Reset now and hand the core back, so the caller can read the reset's
    /// outcome. Dropping the guard instead resets the same way.
    pub(crate) fn finish(mut self) -> &'a mut SandboxCore {
        let core = self.core.take().expect("a guard is armed until finished");
        core.reset_to_baseline();
        core
    }
}

impl Deref for ResetGuard<'_> {
    type Target = SandboxCore;
    fn deref(&self) -> &SandboxCore {
        self.core
            .as_deref()
            .expect("a guard is armed until finished")
    }
}

impl DerefMut for ResetGuard<'_> {
    fn deref_mut(&mut self) -> &mut SandboxCore {
        self.core
            .as_deref_mut()
            .expect("a guard is armed until finished")
    }
}

impl Drop for ResetGuard<'_> {
    fn drop(&mut self) {
        // Reached on every exit that did not `finish`: early returns and
        // unwinding panics. The outcome stays recorded in the core.
        if let Some(core) = self.core.take() {
            core.reset_to_baseline();
        }
    }
}
