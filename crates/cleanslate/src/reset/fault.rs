//! Faults a test can make a reset suffer at each of its steps, to prove that
//! a failing step never leaves a half-reset instance callable: an in-place
//! step that fails hands over to the fresh-instance path, a fresh-instance
//! step that fails makes the sandbox `Unrecoverable` (and a pool replaces
//! it), and verification catches what a step got silently wrong.
//!
//! The enum always exists so the reset code names its steps the same way in
//! every build, but only the `fault-injection` feature exports it and lets a
//! caller queue one; without it [`PendingFaults`] is always empty.

/// A fault for the next reset to suffer. Each queued fault fires once, at the
/// first time the reset reaches its step.
///
/// ```
/// # #[cfg(feature = "fault-injection")] {
/// use cleanslate::{ErrorKind, Fault, Runtime, Sandbox, Status};
///
/// let module = Runtime::new()?.load_bytes(
///     r#"(module (memory 1) (func (export "f") (i32.store (i32.const 0) (i32.const 7))))"#,
/// )?;
/// let mut sandbox = Sandbox::builder(&module).build()?;
/// // Copying pages back fails, then so does the fallback's instantiation.
/// sandbox.inject_fault(Fault::FailCopy);
/// sandbox.inject_fault(Fault::FailInstantiation);
/// let err = sandbox.call("f", &[]).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::ResetFailed);
/// assert_eq!(sandbox.status(), Status::Unrecoverable);
/// # }
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub enum Fault {
    /// After restoring, flip one byte of memory 0 (a reset that silently
    /// missed a write). Only verification can notice.
    CorruptMemory,
    /// After restoring, change the first mutable global.
    CorruptGlobal,
    /// Finding or re-protecting the written pages fails (the page-map scan
    /// or the write-protect ioctl): the mapping step of the in-place path.
    FailTracking,
    /// Copying pages back from the image fails after half of them were
    /// copied: the in-place path stops with memory part-restored.
    FailCopy,
    /// Writing the snapshot's globals back fails, on whichever path runs.
    FailGlobalRestore,
    /// Creating the fresh instance fails.
    FailInstantiation,
    /// The in-place path does not look for dropped segments (a reset that
    /// silently misses an `elem.drop` or `data.drop`). Only verification
    /// can notice.
    IgnoreDroppedSegments,
}

impl Fault {
    /// The failure message, marked as injected so no one mistakes it.
    pub(crate) fn message(self) -> String {
        let step = match self {
            Fault::FailTracking => "scanning for written pages failed",
            Fault::FailCopy => "copying pages back from the image failed half-way",
            Fault::FailGlobalRestore => "restoring globals failed",
            Fault::FailInstantiation => "creating the fresh instance failed",
            Fault::CorruptMemory | Fault::CorruptGlobal => "corrupted the restored state",
            Fault::IgnoreDroppedSegments => "dropped segments were not looked for",
        };
        format!("injected fault: {step}")
    }
}

/// The faults queued for the next reset (always empty without the
/// `fault-injection` feature).
#[derive(Debug, Default)]
pub(crate) struct PendingFaults {
    queued: Vec<Fault>,
}

impl PendingFaults {
    /// Queue `fault` for the next reset.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn add(&mut self, fault: Fault) {
        self.queued.push(fault);
    }

    /// Whether `fault` is queued; consumes it, so it fires once.
    pub(crate) fn fire(&mut self, fault: Fault) -> bool {
        match self.queued.iter().position(|f| *f == fault) {
            Some(i) => {
                self.queued.remove(i);
                true
            }
            None => false,
        }
    }

    /// `Err(message)` if the failure `fault` is queued (consuming it).
    pub(crate) fn check(&mut self, fault: Fault) -> Result<(), String> {
        if self.fire(fault) {
            Err(fault.message())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_fault_fires_once_and_only_for_its_step() {
        let mut pending = PendingFaults {
            queued: vec![Fault::FailCopy, Fault::FailCopy, Fault::FailTracking],
        };
        assert!(pending.check(Fault::FailGlobalRestore).is_ok());
        let message = pending.check(Fault::FailCopy).unwrap_err();
        assert!(message.starts_with("injected fault"), "{message}");
        assert!(pending.check(Fault::FailCopy).is_err(), "queued twice");
        assert!(pending.check(Fault::FailCopy).is_ok(), "both fired");
        assert!(pending.fire(Fault::FailTracking));
        assert!(pending.queued.is_empty());
    }
}
