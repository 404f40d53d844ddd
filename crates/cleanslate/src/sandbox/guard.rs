//! The one mechanism every call exit goes through.
//!
//! A call arms a [`ResetGuard`] before guest code runs; the guard's `Drop`
//! performs the reset. Returning, trapping, `?` early exits and unwinding
//! panics all leave the scope the same way, so no exit path can skip the
//! reset — the error-path bug this project exists to prevent.

use std::ops::{Deref, DerefMut};

use crate::error::Error;
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

    /// Reset now and combine the call's `outcome` with the reset's: a failed
    /// reset never hides the call's own error. Dropping the guard instead
    /// resets the same way, with no one to tell.
    pub(crate) fn finish<T>(mut self, outcome: Result<T, Error>) -> Result<T, Error> {
        let core = self.core.take().expect("a guard is armed until finished");
        match core.reset_to_baseline() {
            Ok(()) => outcome,
            Err(reset_error) => {
                let message = format!("the reset after the call failed: {}", reset_error.message());
                Err(Error::reset_failed(message, outcome.err()))
            }
        }
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
        // unwinding panics. A failed reset is recorded where it matters: the
        // sandbox is unrecoverable and refuses the next call.
        if let Some(core) = self.core.take() {
            let _ = core.reset_to_baseline();
        }
    }
}
