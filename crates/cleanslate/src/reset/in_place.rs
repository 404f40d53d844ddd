//! The in-place path: keep the instance, copy back only the pages this call
//! wrote, clear the pages it grew a memory by and lower the memory again,
//! restore globals and table slots. Its cost follows the pages a call
//! dirtied, not the memory's size.
//!
//! It applies only when it can prove it covers every change; otherwise it
//! declines with a [`FallbackReason`] and the fresh-instance path runs.

use wasmtime::Ref;

use super::padded::Padded;
use super::report::FallbackReason;
use super::{Fault, PendingFaults};
use crate::instance::LiveInstance;
use crate::module::Module;
use crate::snapshot::SnapshotImage;
use crate::snapshot::image::{table_null, table_slot, write_globals};
use crate::tracking::{DirtyPages, PAGE, Restore};

/// Why the in-place path did not finish.
pub(super) enum Declined {
    /// It cannot cover this call's changes; nothing was restored, and the
    /// caller replaces the instance.
    NotApplicable(FallbackReason),
    /// It failed part-way; the instance must be discarded.
    Failed(String),
}

/// What an in-place reset did.
pub(super) struct InPlaceDone {
    /// Host pages copied back.
    pub pages: u64,
    /// Whether the page tables were scanned (else only hot pages were
    /// examined).
    pub scanned: bool,
    /// Table slots compared with the image.
    pub table_slots: u64,
    /// Bytes by which grown memories were lowered.
    pub lowered_bytes: u64,
}

/// Restore `live` to `image` in place.
pub(super) fn restore_in_place(
    module: &Module,
    image: &SnapshotImage,
    live: &mut LiveInstance,
    faults: &mut PendingFaults,
) -> Result<InPlaceDone, Declined> {
    // Held out of the instance while the reset runs and put back only when
    // it finishes: on every early return the instance is discarded anyway.
    let Some(mut tracking) = live.tracking.take() else {
        return Err(Declined::NotApplicable(FallbackReason::TrackingUnavailable));
    };
    // The probes run guest code (helper exports) on this thread: the scan
    // is decided after them, before any copy (TrackedMemories::decide).
    check_applicable(module, image, live, faults).map_err(Declined::NotApplicable)?;
    let scan = tracking.decide();

    let mut pages = 0;
    let mut lowered_bytes = 0;
    for (i, expected) in image.memories.iter().enumerate() {
        let memory = live.memories[i];
        let base = memory.data_ptr(&live.store) as usize;
        let len = memory.data_size(&live.store);
        faults
            .check(Fault::FailTracking)
            .map_err(Declined::Failed)?;
        let written = tracking.written(&scan, i, base, len).map_err(|e| {
            Declined::Failed(format!("scanning memory {i} for written pages failed: {e}"))
        })?;
        let heat = tracking.heat(i);
        // Injected: stop once half this memory's written pages were copied
        // back (or at the end, if fewer than two were).
        let copy_fails_at = faults
            .fire(Fault::FailCopy)
            .then(|| pages + written.pages() / 2);
        let data = memory.data_mut(&mut live.store);
        let mut protect = DirtyPages::default();
        // Adjacent pages to restore are copied as one run: one large copy
        // streams (glibc switches to non-temporal stores for big sizes),
        // where thousands of 4 KiB copies each pay their own setup.
        let mut copy = CopyRun::default();
        for run in &written.ranges {
            for offset in run.clone().step_by(PAGE) {
                // A memory's last host page may be partial (custom page
                // sizes): only its bytes up to the memory's end count.
                let page = offset..(offset + PAGE).min(len);
                let restore = match heat.on_written(offset / PAGE) {
                    Restore::IfChanged => {
                        // Past the snapshot's end a hot page is one a call
                        // grew into and wrote, and is likely written again:
                        // clearing it costs what comparing it with zeros
                        // would, so it is cleared without the comparison.
                        let changed = page.start >= expected.bytes.len()
                            || !Padded(&expected.bytes).eq_at(page.clone(), &data[page.clone()]);
                        if heat.on_hot_compared(offset / PAGE, changed) {
                            protect.push_page(offset);
                        }
                        changed
                    }
                    Restore::KeepHot => true,
                    Restore::ThenProtect => {
                        protect.push_page(offset);
                        true
                    }
                };
                if restore {
                    if copy_fails_at == Some(pages) {
                        copy.flush(data, &expected.bytes);
                        return Err(Declined::Failed(Fault::FailCopy.message()));
                    }
                    copy.add(page, data, &expected.bytes);
                    pages += 1;
                }
            }
        }
        copy.flush(data, &expected.bytes);
        if copy_fails_at.is_some() {
            return Err(Declined::Failed(Fault::FailCopy.message()));
        }
        tracking
            .protect(base, &protect)
            .map_err(|e| Declined::Failed(format!("re-protecting memory {i} failed: {e}")))?;
        if len > expected.bytes.len() {
            lower_memory(live, i, expected.bytes.len()).map_err(Declined::Failed)?;
            lowered_bytes += (len - expected.bytes.len()) as u64;
        }
    }
    faults
        .check(Fault::FailGlobalRestore)
        .map_err(Declined::Failed)?;
    write_globals(image, live).map_err(Declined::Failed)?;
    let table_slots = if module.inner.layout.mutations.table_write {
        restore_table_slots(module, image, live)?
    } else {
        0
    };
    live.tables_touched = Some(Default::default());
    let scanned = scan.scans();
    tracking.finish_reset(scan);
    live.tracking = Some(tracking);
    Ok(InPlaceDone {
        pages,
        scanned,
        table_slots,
        lowered_bytes,
    })
}

/// Lower memory `i`, whose bytes from `snapshot_len` on were just cleared,
/// back to the snapshot's size: the bytes past it become inaccessible again
/// (the region's protection), then a growth by zero pages makes the engine
/// read the memory's size afresh, so `memory.size` and every bounds check
/// agree with the snapshot before guest code can run again.
fn lower_memory(live: &mut LiveInstance, i: usize, snapshot_len: usize) -> Result<(), String> {
    let Some(region) = live.regions[i].clone() else {
        return Err(format!("memory {i} grew but cannot be lowered in place"));
    };
    region
        .lower_to(snapshot_len)
        .map_err(|e| format!("lowering memory {i} to {snapshot_len} bytes failed: {e}"))?;
    let memory = live.memories[i];
    memory
        .grow(&mut live.store, 0)
        .map_err(|e| format!("refreshing memory {i}'s size failed: {e:#}"))?;
    let now = memory.data_size(&live.store);
    if now != snapshot_len {
        return Err(format!(
            "memory {i} is {now} bytes after lowering it to {snapshot_len}"
        ));
    }
    Ok(())
}

/// A run of adjacent pages waiting to be copied back from the image.
#[derive(Default)]
struct CopyRun {
    pending: std::ops::Range<usize>,
}

impl CopyRun {
    /// Queue `page`; copies the queued run first if `page` does not extend it.
    fn add(&mut self, page: std::ops::Range<usize>, data: &mut [u8], image: &[u8]) {
        if self.pending.end != page.start || self.pending.is_empty() {
            self.flush(data, image);
            self.pending = page;
        } else {
            self.pending.end = page.end;
        }
    }

    fn flush(&mut self, data: &mut [u8], image: &[u8]) {
        let run = std::mem::take(&mut self.pending);
        if !run.is_empty() {
            Padded(image).copy_to(data, run);
        }
    }
}

/// Everything that only a fresh instance can undo.
fn check_applicable(
    module: &Module,
    image: &SnapshotImage,
    live: &mut LiveInstance,
    faults: &mut PendingFaults,
) -> Result<(), FallbackReason> {
    for (i, expected) in image.memories.iter().enumerate() {
        // A memory of our own is lowered back in place; one the engine
        // made (none, as configured) only a new instance can shrink.
        let size = live.memories[i].data_size(&live.store);
        let grew = size > expected.bytes.len();
        // (Smaller than the snapshot cannot happen in place: memories only
        // grow, and a restored snapshot always takes a fresh instance.)
        if size < expected.bytes.len() || (grew && live.regions[i].is_none()) {
            return Err(FallbackReason::MemoryGrew);
        }
    }
    for (i, expected) in image.tables.iter().enumerate() {
        if live.tables[i].size(&live.store) != expected.elements.len() as u64 {
            return Err(FallbackReason::TableResized);
        }
    }
    if faults.fire(Fault::IgnoreDroppedSegments) {
        return Ok(());
    }
    // A dropped segment cannot be un-dropped. Probes of still-present
    // segments return normally (cheap); one that traps was dropped.
    let hooks = &module.inner.hooks;
    let live_segments = hooks
        .data_segments
        .iter()
        .filter(|s| !image.dropped_data.contains(&s.segment))
        .chain(
            hooks
                .element_segments
                .iter()
                .filter(|s| !image.dropped_elements.contains(&s.segment)),
        );
    for segment in live_segments {
        if let Some(probe) = &segment.probe {
            match live.call_helper(probe) {
                Ok(false) => {}
                Ok(true) => return Err(FallbackReason::SegmentDropped),
                Err(_) => return Err(FallbackReason::SegmentDropped),
            }
        }
    }
    Ok(())
}

/// Rewrite only the table slots that differ from the image, in the tables
/// the calls since the last reset could have written: those the exports
/// they entered can reach a write to (the others cannot have changed).
fn restore_table_slots(
    module: &Module,
    image: &SnapshotImage,
    live: &mut LiveInstance,
) -> Result<u64, Declined> {
    let mut examined = 0;
    for (i, expected) in image.tables.iter().enumerate() {
        if !live.table_maybe_touched(module, i) {
            continue;
        }
        examined += expected.elements.len() as u64;
        let table = live.tables[i];
        for (slot, want) in expected.elements.iter().enumerate() {
            // A slot the image cannot describe (an exception object left
            // there) never equals the image: it is overwritten.
            if table_slot(live, i, slot as u64).as_ref() == Ok(want) {
                continue;
            }
            let value = match want {
                Some(_) => Ref::Func(live.function_ref(*want).map_err(Declined::Failed)?),
                None => table_null(live, i),
            };
            table
                .set(&mut live.store, slot as u64, value)
                .map_err(|e| {
                    Declined::Failed(format!("restoring table {i} slot {slot} failed: {e:#}"))
                })?;
        }
    }
    Ok(examined)
}
