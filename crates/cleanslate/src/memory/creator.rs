//! The engine's memory hook: every linear memory (and the engine's own GC
//! heap) is created as a [`MemoryRegion`], and the regions an instantiation
//! creates are handed to the code that instantiated.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use super::MemoryRegion;

/// Creates each memory the engine asks for as a [`MemoryRegion`].
#[derive(Debug, Default)]
pub(crate) struct GuestMemoryCreator;

/// Room reserved when the engine names no reservation (it always does as
/// configured here; this is the same 4 GiB it would name).
const DEFAULT_CAPACITY: usize = 4 << 30;

thread_local! {
    /// The regions created on this thread while `record_created` runs.
    static CREATED: RefCell<Option<Vec<Arc<MemoryRegion>>>> = const { RefCell::new(None) };
    /// Regions `record_created` offers to the memories created meanwhile,
    /// in the order they are expected.
    static OFFERED: RefCell<VecDeque<Arc<MemoryRegion>>> = const { RefCell::new(VecDeque::new()) };
}

/// Run `instantiate` and return, with its result, the regions created on
/// this thread meanwhile: the instance's memories (matched to them by base
/// address), and possibly a GC heap, which matches none.
///
/// Each memory created takes the next region of `offered` instead of a new
/// reservation when that one fits it (`MemoryRegion::fits`), after
/// `MemoryRegion::reuse_at`: it then holds what its last instance left, and
/// the caller must check which memory got it and restore it before any
/// guest code runs (or discard the instance). Offered regions not taken are
/// returned as the third value.
pub(crate) fn record_created<R>(
    offered: Vec<Arc<MemoryRegion>>,
    instantiate: impl FnOnce() -> R,
) -> (R, Vec<Arc<MemoryRegion>>, Vec<Arc<MemoryRegion>>) {
    /// Stops the recording however `instantiate` ends, unwinding included:
    /// a recording left on would keep every region this thread creates
    /// later (a GC heap's, during calls) alive forever, and an offer left
    /// standing would hand a used region to a later, unchecked memory.
    struct Recording;
    impl Drop for Recording {
        fn drop(&mut self) {
            CREATED.with(|created| created.borrow_mut().take());
            OFFERED.with(|offered| offered.borrow_mut().clear());
        }
    }
    CREATED.with(|created| *created.borrow_mut() = Some(Vec::new()));
    OFFERED.with(|queue| *queue.borrow_mut() = offered.into());
    let recording = Recording;
    let result = instantiate();
    let regions = CREATED.with(|created| created.borrow_mut().take());
    let unused = OFFERED.with(|queue| queue.borrow_mut().drain(..).collect());
    drop(recording);
    (result, regions.unwrap_or_default(), unused)
}

/// The next offered region, if it was made for a memory of this type and
/// these dimensions, and takes `minimum` bytes.
fn take_offered(
    purpose: u64,
    minimum: usize,
    capacity: usize,
    guard: usize,
) -> Option<Arc<MemoryRegion>> {
    let region = OFFERED.with(|queue| {
        let mut queue = queue.borrow_mut();
        let fits = queue
            .front()
            .is_some_and(|r| r.fits(purpose, minimum, capacity, guard));
        if fits { queue.pop_front() } else { None }
    })?;
    region.reuse_at(minimum).ok()?;
    Some(region)
}

// SAFETY: every memory is a reservation of its own
// (`MemoryRegion::reserve`): `reserved_size_in_bytes` plus `guard_size_in_bytes` of address
// space, page-aligned, with everything past the capacity inaccessible, so
// the guard the compiled code relies on to elide bounds checks is there.
// Growth never moves the base (the capacity is the whole reservation the
// engine asked for). A new reservation is zero-filled with exactly its size
// accessible. A recycled one (only while `record_created` offers it, to
// the fresh-instance path) has the same dimensions and may still hold its
// last instance's bytes and accessible pages past its size; the reset
// restores every such byte and settles the protection before guest code
// runs in the new instance (reset/fresh.rs), and the engine only writes
// data segments within the size meanwhile.
unsafe impl wasmtime::MemoryCreator for GuestMemoryCreator {
    fn new_memory(
        &self,
        ty: wasmtime::MemoryType,
        minimum: usize,
        _maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn wasmtime::LinearMemory>, String> {
        let capacity = reserved_size_in_bytes.unwrap_or(DEFAULT_CAPACITY);
        let purpose = purpose(&ty);
        let region = match take_offered(purpose, minimum, capacity, guard_size_in_bytes) {
            Some(region) => region,
            None => {
                let region = MemoryRegion::reserve(minimum, capacity, guard_size_in_bytes)
                    .map_err(|e| {
                        format!("cannot reserve a linear memory of {minimum} bytes: {e}")
                    })?;
                region.set_purpose(purpose);
                Arc::new(region)
            }
        };
        CREATED.with(|created| {
            if let Some(list) = created.borrow_mut().as_mut() {
                list.push(region.clone());
            }
        });
        Ok(Box::new(GuestMemory(region)))
    }
}

/// A fingerprint of a memory's type, so a region made for one memory is
/// offered again only to a memory of the same type: the engine's GC heap
/// (created before the memories when a module needs one, with the same
/// reservation and guard by default) must not take a linear memory's.
fn purpose(ty: &wasmtime::MemoryType) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        ty.minimum(),
        ty.maximum(),
        ty.is_64(),
        ty.is_shared(),
        ty.page_size_log2(),
    )
        .hash(&mut hasher);
    // Never 0, the purpose of a region nobody described.
    hasher.finish() | 1
}

/// The engine's view of a region.
struct GuestMemory(Arc<MemoryRegion>);

// SAFETY: the region upholds what the engine needs of a linear memory:
// `as_ptr` is page-aligned and never changes, `byte_size` bytes from it are
// accessible, growth up to `byte_capacity` keeps the base, and the guard
// after the capacity stays inaccessible (see `MemoryRegion`). The size may
// also be lowered by the reset, which then refreshes the engine's view of
// the memory before any guest code runs (reset/in_place.rs).
unsafe impl wasmtime::LinearMemory for GuestMemory {
    fn byte_size(&self) -> usize {
        self.0.size()
    }

    fn byte_capacity(&self) -> usize {
        self.0.capacity()
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        self.0.grow_to(new_size).map_err(wasmtime::Error::new)
    }

    fn as_ptr(&self) -> *mut u8 {
        self.0.base()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_ends_even_when_the_instantiation_panics() {
        let outcome = std::panic::catch_unwind(|| {
            record_created(Vec::new(), || panic!("instantiation failed"))
        });
        assert!(outcome.is_err());
        assert!(CREATED.with(|created| created.borrow().is_none()));
        let ((), regions, unused) = record_created(Vec::new(), || ());
        assert!(regions.is_empty() && unused.is_empty());
    }
}
