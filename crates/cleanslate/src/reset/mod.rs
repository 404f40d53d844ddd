//! Putting a sandbox back at its snapshot: the guard every call exit goes
//! through, the reset paths, and the verifier that checks their work.
//!
//! All paths sit behind [`ResetPlan::run`]: a path either returns a live
//! instance that equals the snapshot, or an error, in which case the caller
//! discards the sandbox's instance (the sandbox turns `Unrecoverable`). There
//! is no third outcome, so a half-reset instance can never be called.

mod coverage;
mod fault;
mod fresh;
mod in_place;
mod padded;
mod report;
mod verify;

use std::time::Instant;

pub use coverage::{InPlaceResets, ResetCoverage};
pub use fault::Fault;
pub use report::{FallbackReason, ResetPath, ResetReport};
pub use verify::Verify;

pub(crate) use fault::PendingFaults;
pub(crate) use verify::VerifySchedule;

use crate::error::{Error, ErrorKind};
use crate::instance::{InstanceFactory, LiveInstance};
use crate::snapshot::SnapshotImage;

/// Which reset paths a sandbox may use.
///
/// ```
/// use cleanslate::{ResetStrategy, Runtime, Sandbox};
/// # let module = Runtime::new()?.load_bytes("(module (memory 1) (func (export \"f\")))")?;
/// let sandbox = Sandbox::builder(&module).reset_strategy(ResetStrategy::FreshInstance).build()?;
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ResetStrategy {
    /// Reset in place (copy back only written pages) whenever that provably
    /// covers the call's changes, else replace the instance. The default.
    #[default]
    Auto,
    /// Always replace the instance with a fresh one.
    FreshInstance,
}

impl ResetStrategy {
    /// The snake_case name (`auto`, `fresh_instance`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResetStrategy::Auto => "auto",
            ResetStrategy::FreshInstance => "fresh_instance",
        }
    }
}

impl std::str::FromStr for ResetStrategy {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "auto" => Ok(ResetStrategy::Auto),
            "fresh" | "fresh_instance" => Ok(ResetStrategy::FreshInstance),
            _ => Err(Error::new(
                ErrorKind::InvalidArguments,
                format!("cannot read {text:?} as a reset strategy: use auto or fresh_instance"),
            )),
        }
    }
}

/// One reset to perform.
pub(crate) struct ResetPlan<'a> {
    pub factory: &'a InstanceFactory,
    pub image: &'a SnapshotImage,
    pub verify: bool,
    pub strategy: ResetStrategy,
    /// The used instance, if the in-place path may reuse it.
    pub live: Option<LiveInstance>,
    /// Forces the fresh path with this reason (e.g. a new snapshot).
    pub force_fresh: Option<FallbackReason>,
    /// Faults to suffer (tests only; always empty in production builds).
    pub faults: PendingFaults,
}

impl ResetPlan<'_> {
    /// Produce an instance equal to the image. On error, nothing usable is
    /// left: the caller must not reuse any instance it had.
    pub(crate) fn run(mut self) -> Result<(LiveInstance, ResetReport), Error> {
        let started = Instant::now();
        let module = &self.factory.module;
        let mut fallback = self.force_fresh.or(match self.strategy {
            ResetStrategy::FreshInstance => Some(FallbackReason::Requested),
            ResetStrategy::Auto => None,
        });
        let mut restored = None;
        let mut replaced = self.live.take();
        if let Some(mut live) = replaced.take_if(|_| fallback.is_none()) {
            match in_place::restore_in_place(module, self.image, &mut live, &mut self.faults) {
                Ok(done) => restored = Some((live, done)),
                Err(in_place::Declined::NotApplicable(reason)) => {
                    fallback = Some(reason);
                    replaced = Some(live);
                }
                Err(in_place::Declined::Failed(problem)) => {
                    tracing::warn!(%problem, "in-place reset failed; replacing the instance");
                    fallback = Some(FallbackReason::InPlaceFailed);
                    replaced = Some(live);
                }
            }
        }
        // The instance being replaced gives its memories to the next one.
        if let Some(old) = replaced {
            self.factory.retire(old);
        }
        let fresh = restored.is_none();
        let (mut live, done) = match restored {
            Some(done) => done,
            None => {
                let (live, pages, table_slots) =
                    fresh::restore_fresh(self.factory, self.image, &mut self.faults)?;
                let done = in_place::InPlaceDone {
                    pages,
                    scanned: false,
                    table_slots,
                    lowered_bytes: 0,
                };
                (live, done)
            }
        };
        verify::inject(&mut live, &mut self.faults);
        if self.verify {
            verify::check(module, self.image, &mut live)?;
        }
        // Tracking starts last, after everything that reads the memory.
        if fresh && self.strategy == ResetStrategy::Auto {
            live.start_tracking();
        }
        let report = ResetReport {
            path: if fallback.is_some() {
                ResetPath::FreshInstance
            } else {
                ResetPath::InPlace
            },
            fallback,
            dirty_pages: done.pages,
            scanned_page_tables: done.scanned,
            table_slots: done.table_slots,
            memory_lowered_bytes: done.lowered_bytes,
            duration: started.elapsed(),
            verified: self.verify,
        };
        Ok((live, report))
    }
}
