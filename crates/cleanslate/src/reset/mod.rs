//! Putting a sandbox back at its snapshot: the guard every call exit goes
//! through, the reset paths, and the verifier that checks their work.
//!
//! All paths sit behind [`ResetPlan::run`]: a path either returns a live
//! instance that equals the snapshot, or an error, in which case the caller
//! discards the sandbox's instance (the sandbox turns `Unrecoverable`). There
//! is no third outcome, so a half-reset instance can never be called.

mod fresh;
pub(crate) mod guard;
mod report;
mod verify;

use std::time::Instant;

pub use report::{ResetPath, ResetReport};
pub use verify::Verify;

pub(crate) use verify::VerifySchedule;

use crate::error::Error;
use crate::sandbox::instance::{InstanceFactory, LiveInstance};
use crate::snapshot::SnapshotImage;

/// Faults a test can make the next reset suffer, to prove that verification
/// and atomicity catch them. Only with the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// After restoring, flip one byte of memory 0 (a reset that silently
    /// missed a write). Only verification can notice.
    CorruptMemory,
    /// After restoring, change the first mutable global.
    CorruptGlobal,
    /// Make creating the fresh instance fail outright.
    FailInstantiation,
}

/// One reset to perform.
pub(crate) struct ResetPlan<'a> {
    pub factory: &'a InstanceFactory,
    pub image: &'a SnapshotImage,
    pub verify: bool,
    #[cfg(feature = "fault-injection")]
    pub fault: Option<Fault>,
}

impl ResetPlan<'_> {
    /// Produce an instance equal to the image. On error, nothing usable is
    /// left: the caller must not reuse any instance it had.
    pub(crate) fn run(self) -> Result<(LiveInstance, ResetReport), Error> {
        let started = Instant::now();
        #[cfg(feature = "fault-injection")]
        if self.fault == Some(Fault::FailInstantiation) {
            return Err(Error::new(
                crate::ErrorKind::ResetFailed,
                "injected fault: creating the fresh instance failed",
            ));
        }
        let (mut live, pages) = fresh::restore_fresh(self.factory, self.image)?;
        #[cfg(feature = "fault-injection")]
        verify::inject(&mut live, self.fault);
        if self.verify {
            verify::check(&self.factory.module, self.image, &mut live)?;
        }
        let report = ResetReport {
            path: ResetPath::FreshInstance,
            dirty_pages: pages,
            duration: started.elapsed(),
            verified: self.verify,
        };
        Ok((live, report))
    }
}
