//! The fresh-instance path: a new instance from the module, brought to the
//! snapshot: each memory maps the snapshot's bytes copy-on-write (or, where
//! that is unavailable, gets the pages that differ from a fresh instance
//! copied in), then globals, tables and dropped segments are applied.
//!
//! The new instance usually takes over the memories of the one it replaces
//! (`InstanceFactory::retire`, `instantiate_for`): each still maps the
//! snapshot, so only the pages of their own — the ones written since, found
//! by a page scan — get the snapshot's bytes copied over, and pages past
//! the snapshot's size are given back. No mapping is made or torn down.

use wasmtime::Ref;

use super::padded::Padded;
use super::{Fault, PendingFaults};
use crate::error::{Error, ErrorKind};
use crate::instance::{InstanceFactory, LiveInstance};
use crate::snapshot::SnapshotImage;
use crate::snapshot::image::{HOST_PAGE, differing_pages, table_null, write_globals};
use crate::tracking::PageScan;

/// Instantiate and apply `image`; returns the instance, the number of
/// host pages copied and of table slots written.
pub(super) fn restore_fresh(
    factory: &InstanceFactory,
    image: &SnapshotImage,
    faults: &mut PendingFaults,
) -> Result<(LiveInstance, u64, u64), Error> {
    faults.check(Fault::FailInstantiation).map_err(failed)?;
    let files: Vec<_> = image.memories.iter().map(|m| m.file().ok()).collect();
    let made = factory.instantiate_for(&files)?;
    let mut live = made.live;
    let pages = if made.recycled {
        restore_recycled_memories(&mut live, image)?
    } else {
        apply_memories(factory, &mut live, image)?
    };
    faults.check(Fault::FailGlobalRestore).map_err(failed)?;
    write_globals(image, &mut live).map_err(failed)?;
    let table_slots = if factory.module.inner.layout.mutations.table_write {
        apply_tables(factory, &mut live, image)?
    } else {
        0
    };
    apply_dropped_segments(factory, &mut live, image)?;
    Ok((live, pages, table_slots))
}

fn failed(what: String) -> Error {
    Error::new(ErrorKind::ResetFailed, what)
}

fn apply_memories(
    factory: &InstanceFactory,
    live: &mut LiveInstance,
    image: &SnapshotImage,
) -> Result<u64, Error> {
    let mut pages = 0;
    for (i, target) in image.memories.iter().enumerate() {
        let memory = live.memories[i];
        let wanted = target.bytes.len();
        grow_to_snapshot(live, i, wanted)?;
        // A memory of our own takes the snapshot's bytes as a copy-on-write
        // mapping: nothing copied now, and pages no call writes are shared
        // with every other instance made from this snapshot.
        if let (Some(region), Ok(file)) = (&live.regions[i], target.file()) {
            region
                .map_image(file)
                .map_err(|e| failed(format!("cannot map memory {i}'s snapshot: {e}")))?;
            continue;
        }
        let data = memory.data_mut(&mut live.store);
        // What a fresh instance holds is known from the module when its data
        // image is: then the diff is computed without reading (and mapping)
        // the new instance's memory.
        let initial = factory
            .module
            .inner
            .initial_memory
            .get(i)
            .cloned()
            .flatten();
        let ranges = target.diff_from_fresh.get_or_init(|| match &initial {
            Some(initial) => initial.differing_ranges(&target.bytes, &target.populated),
            None => differing_pages(&target.bytes, &target.populated, |range, bytes| {
                Padded(data).eq_at(range, bytes)
            }),
        });
        for range in ranges {
            data[range.clone()].copy_from_slice(&target.bytes[range.clone()]);
            pages += (range.len() / HOST_PAGE) as u64;
        }
    }
    live.store.data_mut().limiter.refused_memory = None;
    Ok(pages)
}

/// Grow memory `i` of a fresh instance, through the engine (which counts
/// it against the memory limit), to the snapshot's `wanted` bytes.
fn grow_to_snapshot(live: &mut LiveInstance, i: usize, wanted: usize) -> Result<(), Error> {
    let memory = live.memories[i];
    let current = memory.data_size(&live.store);
    if wanted < current {
        return Err(failed(format!(
            "memory {i} of a fresh instance ({current} bytes) is larger than the snapshot's ({wanted} bytes)"
        )));
    }
    if wanted > current {
        let page = memory.page_size(&live.store) as usize;
        memory
            .grow(&mut live.store, ((wanted - current) / page) as u64)
            .map_err(|e| {
                failed(format!(
                    "cannot grow memory {i} to the snapshot's size: {e:#}"
                ))
            })?;
    }
    Ok(())
}

/// Bring memories that are recycled regions (each mapping its snapshot
/// image, holding what the last instance wrote) to the snapshot: the size
/// first, then every page of their own gets the snapshot's bytes, up to the
/// highest byte ever accessible.
fn restore_recycled_memories(live: &mut LiveInstance, image: &SnapshotImage) -> Result<u64, Error> {
    let scan = PageScan::get().map_err(|e| {
        failed(format!(
            "internal error: recycled memories but no page scan: {e:?}"
        ))
    })?;
    let mut pages = 0;
    for (i, target) in image.memories.iter().enumerate() {
        let memory = live.memories[i];
        let Some(region) = live.regions[i].clone() else {
            return Err(failed(format!(
                "internal error: recycled memory {i} has no region"
            )));
        };
        let wanted = target.bytes.len();
        grow_to_snapshot(live, i, wanted)?;
        let base = memory.data_ptr(&live.store) as usize;
        let own = scan
            .anonymous(base, region.high_water())
            .map_err(|e| failed(format!("cannot scan memory {i}'s pages: {e}")))?;
        // A page of its own inside the size that differs from the snapshot
        // was written by the last instance: it gets the snapshot's bytes
        // and stays resident, as the next call will likely write it again.
        // One that equals the snapshot was not written since the reset
        // before: it is given back (to read as the image again), so pages
        // stay resident only while calls keep writing them. The host page
        // the size ends inside (custom page sizes) is given back too: the
        // image's last page holds zeros past the snapshot's size. Past the
        // size, pages the last instance grew into and wrote are zeroed and
        // kept for the next growth, as long as they are still accessible;
        // the rest is given back (reads as zero).
        let whole = wanted / HOST_PAGE * HOST_PAGE;
        let size_end = wanted.next_multiple_of(HOST_PAGE);
        let accessible = region.accessible();
        let data = memory.data_mut(&mut live.store);
        let mut give_back = Vec::new();
        let mut clear = Vec::new();
        for range in own.ranges {
            pages += (range.len() / HOST_PAGE) as u64;
            for page in (range.start..range.end.min(whole)).step_by(HOST_PAGE) {
                let at = page..page + HOST_PAGE;
                if data[at.clone()] == target.bytes[at.clone()] {
                    push_range(&mut give_back, at);
                } else {
                    data[at.clone()].copy_from_slice(&target.bytes[at]);
                }
            }
            push_range(
                &mut give_back,
                range.start.max(whole)..range.end.min(size_end).max(whole),
            );
            let past = range.start.max(size_end)..range.end.max(size_end);
            push_range(
                &mut clear,
                past.start..past.end.min(accessible).max(past.start),
            );
            push_range(&mut give_back, past.start.max(accessible)..past.end);
        }
        let problem = |e: std::io::Error| failed(format!("cannot clear memory {i}'s pages: {e}"));
        for range in clear {
            region.clear_past_size(range).map_err(problem)?;
        }
        for range in give_back {
            region.discard(range).map_err(problem)?;
        }
        // Past the size nothing may stay accessible: the last instance may
        // have grown further.
        region
            .settle()
            .map_err(|e| failed(format!("cannot protect memory {i} past its size: {e}")))?;
    }
    live.store.data_mut().limiter.refused_memory = None;
    Ok(pages)
}

/// Append `range` to `ranges`, merged with the last one when adjacent.
fn push_range(ranges: &mut Vec<std::ops::Range<usize>>, range: std::ops::Range<usize>) {
    if range.is_empty() {
        return;
    }
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

fn apply_tables(
    factory: &InstanceFactory,
    live: &mut LiveInstance,
    image: &SnapshotImage,
) -> Result<u64, Error> {
    let layout = &factory.module.inner.layout;
    let mut written = 0;
    for (i, target) in image.tables.iter().enumerate() {
        // No instruction can write it: a fresh instance's table already
        // holds what every instance of the module ever holds there.
        if !layout.table_writable(i) {
            continue;
        }
        written += target.elements.len() as u64;
        let table = live.tables[i];
        let null = table_null(live, i);
        let current = table.size(&live.store);
        let wanted = target.elements.len() as u64;
        if wanted > current {
            table
                .grow(&mut live.store, wanted - current, null.clone())
                .map_err(|e| failed(format!("cannot grow table {i}: {e:#}")))?;
        }
        for (slot, element) in target.elements.iter().enumerate() {
            let value = match element {
                Some(_) => Ref::Func(live.function_ref(*element).map_err(failed)?),
                None => null.clone(),
            };
            table
                .set(&mut live.store, slot as u64, value)
                .map_err(|e| failed(format!("cannot restore table {i} slot {slot}: {e:#}")))?;
        }
    }
    Ok(written)
}

fn apply_dropped_segments(
    factory: &InstanceFactory,
    live: &mut LiveInstance,
    image: &SnapshotImage,
) -> Result<(), Error> {
    let hooks = &factory.module.inner.hooks;
    let drops = hooks
        .data_segments
        .iter()
        .filter(|s| image.dropped_data.contains(&s.segment))
        .chain(
            hooks
                .element_segments
                .iter()
                .filter(|s| image.dropped_elements.contains(&s.segment)),
        );
    for segment in drops {
        if live.call_helper(&segment.drop)? {
            return Err(failed(format!(
                "dropping segment {} of a fresh instance trapped",
                segment.segment
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;

    fn differing_ranges(
        fresh: &Padded<'_>,
        image: &[u8],
        within: &[Range<usize>],
    ) -> Vec<Range<usize>> {
        differing_pages(image, within, |range, bytes| fresh.eq_at(range, bytes))
    }

    #[test]
    fn differing_ranges_are_page_aligned_and_merged() {
        let a = vec![0u8; HOST_PAGE * 4];
        let mut b = a.clone();
        b[10] = 1; // page 0
        b[HOST_PAGE + 5] = 1; // page 1, adjacent: merged
        b[3 * HOST_PAGE] = 1; // page 3
        let all: Vec<Range<usize>> = std::iter::once(0..a.len()).collect();
        assert_eq!(
            differing_ranges(&Padded(&a), &b, &all),
            vec![0..2 * HOST_PAGE, 3 * HOST_PAGE..4 * HOST_PAGE]
        );
        assert!(differing_ranges(&Padded(&a), &a, &all).is_empty());
        // A short fresh image is zero beyond its end.
        let short = Padded(&a[..10]);
        assert!(differing_ranges(&short, &a, &all).is_empty());
        assert_eq!(
            differing_ranges(&short, &b, &all),
            vec![0..2 * HOST_PAGE, 3 * HOST_PAGE..4 * HOST_PAGE]
        );
        // Only the given spans are compared.
        assert_eq!(
            differing_ranges(
                &Padded(&a),
                &b,
                std::slice::from_ref(&(3 * HOST_PAGE..4 * HOST_PAGE))
            ),
            vec![3 * HOST_PAGE..4 * HOST_PAGE]
        );
    }
}
