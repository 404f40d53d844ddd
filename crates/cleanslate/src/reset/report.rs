//! What a reset did, for the caller and for benchmarks.

use std::fmt;
use std::time::Duration;

/// Which mechanism put the sandbox back at its snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResetPath {
    /// The instance was kept; only the pages the call wrote were copied back
    /// from the snapshot, and globals and changed table slots restored. Cost
    /// follows the pages a call dirtied, not the memory's size.
    InPlace,
    /// The instance was replaced by a fresh one and the snapshot applied to
    /// it. Always correct; cost follows how much the snapshot differs from
    /// the module's initial state.
    FreshInstance,
}

impl ResetPath {
    /// The snake_case name used in CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetPath::InPlace => "in_place",
            ResetPath::FreshInstance => "fresh_instance",
        }
    }
}

impl fmt::Display for ResetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a reset took the fresh-instance path rather than the in-place one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The sandbox was built with [`ResetStrategy::FreshInstance`](crate::ResetStrategy).
    Requested,
    /// This machine cannot track written pages (needs Linux 6.7+ with
    /// userfaultfd write-protect and `PAGEMAP_SCAN`).
    TrackingUnavailable,
    /// A memory grew during the call; memories cannot shrink in place.
    MemoryGrew,
    /// A table grew during the call.
    TableResized,
    /// The call dropped a passive segment, which cannot be undone in place.
    SegmentDropped,
    /// A new snapshot was restored with [`Sandbox::restore`](crate::Sandbox::restore).
    SnapshotRestored,
    /// The in-place path failed part-way (the instance was discarded).
    InPlaceFailed,
}

impl FallbackReason {
    /// The snake_case name used in CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Requested => "requested",
            FallbackReason::TrackingUnavailable => "tracking_unavailable",
            FallbackReason::MemoryGrew => "memory_grew",
            FallbackReason::TableResized => "table_resized",
            FallbackReason::SegmentDropped => "segment_dropped",
            FallbackReason::SnapshotRestored => "snapshot_restored",
            FallbackReason::InPlaceFailed => "in_place_failed",
        }
    }
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the last reset did.
///
/// ```
/// use cleanslate::{Runtime, Sandbox, ResetPath};
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(r#"(module (memory 1)
///     (func (export "poke") (i32.store (i32.const 64) (i32.const 1))))"#)?;
/// let mut sandbox = Sandbox::builder(&module).build()?;
/// sandbox.call("poke", &[])?;
/// let report = sandbox.last_reset().unwrap();
/// // In place where the machine can track written pages:
/// assert!(matches!(report.path(), ResetPath::InPlace | ResetPath::FreshInstance));
/// println!("reset took {:?}", report.duration());
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetReport {
    pub(crate) path: ResetPath,
    pub(crate) fallback: Option<FallbackReason>,
    pub(crate) dirty_pages: u64,
    pub(crate) scanned_page_tables: bool,
    pub(crate) table_slots: u64,
    pub(crate) memory_lowered_bytes: u64,
    pub(crate) duration: Duration,
    pub(crate) verified: bool,
}

impl ResetReport {
    /// The mechanism that ran.
    pub fn path(&self) -> ResetPath {
        self.path
    }

    /// Why the fresh-instance path ran, when it did.
    pub fn fallback_reason(&self) -> Option<FallbackReason> {
        self.fallback
    }

    /// Host pages (4 KiB) of memory written back from the snapshot.
    pub fn dirty_pages(&self) -> u64 {
        self.dirty_pages
    }

    /// Whether the in-place path walked the memory's page tables
    /// (`PAGEMAP_SCAN`) to find the pages written since the last reset.
    ///
    /// It skips the walk, whose cost grows with the memory's size, when it
    /// can prove the calls wrote only the pages it examines anyway: the
    /// "hot" pages it keeps unprotected because calls write them every time.
    /// The proof is that the one thread that ran those calls took no page
    /// fault meanwhile (a write to any other page faults). Always `false` on
    /// the fresh-instance path.
    pub fn scanned_page_tables(&self) -> bool {
        self.scanned_page_tables
    }

    /// Table slots the reset read or wrote: in place, every slot of each
    /// table the calls since the last reset could have written (through the
    /// exports they entered); on the fresh-instance path, the slots of each
    /// table any instruction can write. Tables no entered code can change
    /// are never read. Verification, which reads every slot, is not
    /// counted.
    pub fn table_slots(&self) -> u64 {
        self.table_slots
    }

    /// Bytes by which the in-place path lowered memories that the calls
    /// since the last reset grew, back to the snapshot's sizes (their
    /// written pages cleared, counted in [`dirty_pages`](Self::dirty_pages)).
    /// 0 when nothing grew, and on the fresh-instance path, whose new
    /// instance has the snapshot's sizes to begin with.
    ///
    /// ```
    /// use cleanslate::{Runtime, Sandbox, ResetPath};
    /// let module = Runtime::new()?.load_bytes(r#"(module (memory 1)
    ///     (func (export "grow") (drop (memory.grow (i32.const 2)))))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// sandbox.call("grow", &[])?;
    /// let report = sandbox.last_reset().unwrap();
    /// if report.path() == ResetPath::InPlace {
    ///     assert_eq!(report.memory_lowered_bytes(), 2 * 65536);
    /// }
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn memory_lowered_bytes(&self) -> u64 {
        self.memory_lowered_bytes
    }

    /// Wall time the reset took, including verification.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Whether the verifier re-checked the state against the snapshot.
    pub fn verified(&self) -> bool {
        self.verified
    }
}
