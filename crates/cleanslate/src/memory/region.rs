//! One linear memory's reservation: address space for everything the
//! memory may grow to plus the engine's guard, of which only the memory's
//! current size is accessible.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};

use super::{HOST_PAGE, ImageFile, round_up_to_page};

/// A reserved range of address space holding one linear memory.
///
/// Bytes `[0, size)` are readable and writable, everything after is
/// inaccessible (up to `capacity` growth makes it accessible; the guard
/// after it never is), so compiled code that elides bounds checks against
/// the guard still traps on every access past `size`.
///
/// Changes (`grow_to`, `lower_to`, `map_image`, `reuse_at`, `settle`,
/// `discard`) need exclusive use of the store that owns the memory: the
/// engine grows it only while guest code runs in that store, and the reset
/// only while it holds the store, so no guest code and no host view of the
/// bytes can be in use at the time.
///
/// A region outlives its instance when the fresh-instance path recycles it
/// (instance/factory.rs): the next instance of the same snapshot gets it
/// back, with the pages the last one wrote still its own, and the reset
/// copies the snapshot's bytes over just those (found by what backs each
/// page, `tracking::PageScan::anonymous`), as wasmtime's pooling allocator
/// does with a slot.
#[derive(Debug)]
pub(crate) struct MemoryRegion {
    /// Start of the reservation (the memory's byte 0).
    base: usize,
    /// Bytes the memory may grow to without moving.
    capacity: usize,
    /// The whole reservation: capacity and guard; unmapped on drop.
    reserved: usize,
    /// The memory's size and how much of the reservation is accessible.
    extent: Mutex<Extent>,
    /// The image last mapped over the memory's start: every page of it not
    /// written since (no page of its own) still holds the image's bytes.
    backing: Mutex<Option<Arc<ImageFile>>>,
    /// The longest image ever mapped over the memory's start: up to there
    /// a page the memory never wrote reads as some image, beyond it as zero.
    mapped_len: Mutex<usize>,
    /// Part of the reservation may belong to someone else now (a failed
    /// mapping left a hole that could not be filled): never unmap it.
    leak_on_drop: AtomicBool,
    /// A mapping or protection change failed part-way: what the memory
    /// holds, or which of its pages are accessible, is unknown, so it
    /// is never given to another instance.
    damaged: AtomicBool,
    /// What the region was made for, as its creator describes it (an
    /// opaque fingerprint): it is offered again only for the same.
    purpose: AtomicU64,
}

/// A region's size as the guest sees it, and its accessible bytes.
#[derive(Debug, Clone, Copy)]
struct Extent {
    /// The memory's size as the guest sees it.
    size: usize,
    /// Bytes from the base that are readable and writable (whole host
    /// pages): `size` rounded up, except between `reuse_at` and `settle`,
    /// while no guest code runs.
    accessible: usize,
    /// The most bytes ever accessible: nothing past it was ever written.
    high_water: usize,
}

impl MemoryRegion {
    /// Reserve `capacity` bytes plus `guard` bytes of address space (no
    /// memory is committed) and make the first `minimum` accessible. The
    /// bytes read as zero.
    ///
    /// # Errors
    /// The system refuses the reservation or the protection change (address
    /// space or map count exhausted).
    pub(crate) fn reserve(minimum: usize, capacity: usize, guard: usize) -> io::Result<Self> {
        let too_big = || io::Error::new(io::ErrorKind::OutOfMemory, "memory size overflows");
        let capacity = round_up_to_page(capacity.max(minimum)).ok_or_else(too_big)?;
        let reserved = round_up_to_page(guard)
            .and_then(|g| capacity.checked_add(g))
            .ok_or_else(too_big)?;
        // SAFETY: a new private anonymous mapping at an address the kernel
        // picks: it cannot overlap anything this process uses, and it is
        // inaccessible until `grow_to` opens part of it.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                reserved,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        let region = MemoryRegion {
            base: base as usize,
            capacity,
            reserved,
            extent: Mutex::new(Extent {
                size: 0,
                accessible: 0,
                high_water: 0,
            }),
            backing: Mutex::new(None),
            mapped_len: Mutex::new(0),
            leak_on_drop: AtomicBool::new(false),
            damaged: AtomicBool::new(false),
            purpose: AtomicU64::new(0),
        };
        region.grow_to(minimum)?;
        Ok(region)
    }

    /// Record what the region is for (see [`fits`](Self::fits)).
    pub(crate) fn set_purpose(&self, purpose: u64) {
        self.purpose.store(purpose, Ordering::Relaxed);
    }

    /// Whether the region is what [`reserve`](Self::reserve) would make of
    /// these arguments (apart from the accessible size), made for
    /// `purpose`.
    pub(crate) fn fits(&self, purpose: u64, minimum: usize, capacity: usize, guard: usize) -> bool {
        if self.purpose.load(Ordering::Relaxed) != purpose {
            return false;
        }
        let capacity = round_up_to_page(capacity.max(minimum));
        let reserved = round_up_to_page(guard)
            .zip(capacity)
            .and_then(|(g, c)| c.checked_add(g));
        capacity == Some(self.capacity) && reserved == Some(self.reserved)
    }

    /// The memory's first byte.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base as *mut u8
    }

    /// Bytes accessible now.
    pub(crate) fn size(&self) -> usize {
        self.extent().size
    }

    /// The most bytes the memory ever had accessible: every byte past it
    /// is untouched (zero, unless an image is mapped there).
    pub(crate) fn high_water(&self) -> usize {
        self.extent().high_water
    }

    /// Bytes accessible now (whole host pages; past the size only between
    /// [`reuse_at`](Self::reuse_at) and [`settle`](Self::settle)).
    pub(crate) fn accessible(&self) -> usize {
        self.extent().accessible
    }

    fn extent(&self) -> std::sync::MutexGuard<'_, Extent> {
        self.extent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the memory may grow to without moving.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Make the memory `new` bytes long, `new` at least its size. The new
    /// bytes read as zero unless an earlier call left them otherwise and
    /// the reset did not clear them (the reset always does).
    ///
    /// # Errors
    /// `new` is smaller than the size or beyond the capacity, or the system
    /// refuses the protection change.
    pub(crate) fn grow_to(&self, new: usize) -> io::Result<()> {
        let mut extent = self.extent();
        if new < extent.size || new > self.capacity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot grow a memory of {} bytes to {new} bytes (room for {} bytes)",
                    extent.size, self.capacity
                ),
            ));
        }
        let accessible = round_up_to_page(new).unwrap_or(usize::MAX);
        if accessible > extent.accessible {
            // Raised first: a protection change that fails part-way may
            // still have opened pages, and a reuse must scan them.
            extent.high_water = extent.high_water.max(accessible);
            self.protect(
                extent.accessible,
                accessible,
                MprotectFlags::READ | MprotectFlags::WRITE,
            )?;
            extent.accessible = accessible;
        }
        extent.size = new;
        Ok(())
    }

    /// Make the memory `new` bytes long again, `new` at most its size: the
    /// bytes from `new` on become inaccessible. The reset calls this after
    /// clearing them, so a later growth finds them zero.
    ///
    /// # Errors
    /// `new` is larger than the size, or the system refuses the protection
    /// change (the size is then unchanged).
    pub(crate) fn lower_to(&self, new: usize) -> io::Result<()> {
        let mut extent = self.extent();
        if new > extent.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot lower a memory of {} bytes to {new} bytes",
                    extent.size
                ),
            ));
        }
        let accessible = round_up_to_page(new).unwrap_or(usize::MAX);
        self.protect(accessible, extent.accessible, MprotectFlags::empty())?;
        extent.accessible = extent.accessible.min(accessible);
        extent.size = new;
        Ok(())
    }

    /// Take the region for a new instance of `minimum` bytes (the engine
    /// creating a memory): the size becomes `minimum`, but bytes the last
    /// instance had accessible stay so, and keep what it left there, until
    /// [`settle`](Self::settle). Saves the two protection changes of
    /// lowering and growing again when the reset grows the memory back to
    /// the snapshot's size at once.
    ///
    /// Only for the fresh-instance path, which overwrites every byte the
    /// last instance left (it restores every page that differs from the
    /// snapshot, up to the high-water mark) and settles the region before
    /// any guest code runs.
    ///
    /// # Errors
    /// As [`grow_to`](Self::grow_to) when `minimum` exceeds the accessible
    /// bytes.
    pub(crate) fn reuse_at(&self, minimum: usize) -> io::Result<()> {
        {
            let mut extent = self.extent();
            if minimum <= extent.accessible {
                extent.size = minimum;
                return Ok(());
            }
        }
        self.grow_to(minimum)
    }

    /// Make exactly the memory's size accessible again (after
    /// [`reuse_at`](Self::reuse_at)), so every access past it traps.
    ///
    /// # Errors
    /// The system refuses the protection change.
    pub(crate) fn settle(&self) -> io::Result<()> {
        let size = self.size();
        self.lower_to(size)
    }

    /// Give back the pages of `range` (bytes from the base, page-aligned,
    /// inside the reservation): past every mapped image they read as zero
    /// afterwards, inside one as the image.
    ///
    /// # Errors
    /// The range is not page-aligned or leaves the capacity, or the system
    /// refuses.
    pub(crate) fn discard(&self, range: std::ops::Range<usize>) -> io::Result<()> {
        if !range.start.is_multiple_of(HOST_PAGE)
            || !range.end.is_multiple_of(HOST_PAGE)
            || range.end > self.capacity
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot discard {range:?} of a memory of {} bytes",
                    self.capacity
                ),
            ));
        }
        if range.is_empty() {
            return Ok(());
        }
        // SAFETY: the range lies inside this region's reservation (checked
        // above), so only this memory's pages are dropped; the caller holds
        // the store, so no guest code and no host slice reads them now.
        // MADV_DONTNEED on a private mapping only replaces contents (with
        // the file's, or zeros), never validity.
        unsafe {
            rustix::mm::madvise(
                self.base().add(range.start).cast(),
                range.len(),
                rustix::mm::Advice::LinuxDontNeed,
            )
        }?;
        Ok(())
    }

    /// Zero the pages of `range` past the memory's size that hold anything
    /// and keep them, so growing into them again costs no page fault; give
    /// back the ones already zero (nothing wrote them since they were last
    /// cleared, so they need not stay resident). `range` must be
    /// page-aligned, past the size rounded up to a page, and accessible.
    ///
    /// # Errors
    /// `range` is not such a range, or the system refuses to give pages
    /// back.
    pub(crate) fn clear_past_size(&self, range: std::ops::Range<usize>) -> io::Result<()> {
        let extent = *self.extent();
        let size_end = round_up_to_page(extent.size).unwrap_or(usize::MAX);
        if !range.start.is_multiple_of(HOST_PAGE)
            || !range.end.is_multiple_of(HOST_PAGE)
            || range.start < size_end
            || range.end > extent.accessible
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot clear {range:?} of a memory of {} bytes with {} accessible",
                    extent.size, extent.accessible
                ),
            ));
        }
        let mut give_back: Option<std::ops::Range<usize>> = None;
        for page in range.clone().step_by(HOST_PAGE) {
            // SAFETY: the page lies inside this region's accessible bytes
            // (checked above), so it is mapped readable and writable; it is
            // past the memory's size, where no host view of the memory
            // reaches, and the caller holds the store, so no guest code runs:
            // this slice is the only reference to these bytes while it lives.
            let bytes = unsafe { std::slice::from_raw_parts_mut(self.base().add(page), HOST_PAGE) };
            if bytes.iter().all(|b| *b == 0) {
                give_back = Some(match give_back {
                    Some(run) if run.end == page => run.start..page + HOST_PAGE,
                    Some(run) => {
                        self.discard(run)?;
                        page..page + HOST_PAGE
                    }
                    None => page..page + HOST_PAGE,
                });
            } else {
                bytes.fill(0);
            }
        }
        if let Some(run) = give_back {
            self.discard(run)?;
        }
        Ok(())
    }

    /// Whether another instance may take the region over: no mapping of it
    /// failed, and no image was mapped longer than `image` (past `image`,
    /// a page the memory never wrote must read as zero).
    pub(crate) fn recyclable_for(&self, image: &Arc<ImageFile>) -> bool {
        let same_image = self
            .backing()
            .is_some_and(|backing| Arc::ptr_eq(&backing, image));
        same_image
            && *self.mapped_len.lock().unwrap_or_else(|e| e.into_inner()) <= image.len()
            && !self.damaged.load(Ordering::Relaxed)
            && !self.leak_on_drop.load(Ordering::Relaxed)
    }

    /// Replace the memory's first `image.len()` bytes by a private
    /// copy-on-write mapping of `image`: they read as the image until
    /// written, and writes stay in this memory. The image must fit in the
    /// accessible bytes.
    ///
    /// # Errors
    /// The image is longer than the memory, or the system refuses the
    /// mapping (the memory is then unchanged, or — if the kernel failed
    /// half-way — the caller must not use it; the reset discards it).
    pub(crate) fn map_image(&self, image: &Arc<ImageFile>) -> io::Result<()> {
        let extent = self.extent();
        let accessible = round_up_to_page(extent.size).unwrap_or(usize::MAX);
        if image.len() > accessible {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "an image of {} bytes does not fit a memory of {} bytes",
                    image.len(),
                    extent.size
                ),
            ));
        }
        if image.len() == 0 {
            return Ok(());
        }
        // SAFETY: MAP_FIXED replaces exactly `[base, base + image.len())`,
        // which lies inside this region's own reservation (checked above:
        // within the accessible bytes), so no mapping of anyone else is
        // touched. The bytes it replaces belong to this memory alone, and
        // the caller holds the store exclusively, so no guest code and no
        // host slice over them is alive while they change. The mapping is
        // private: the sealed image file itself can never be written.
        let mapped = unsafe {
            rustix::mm::mmap(
                self.base().cast(),
                image.len(),
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::FIXED,
                image.fd(),
                0,
            )
        };
        if let Err(e) = mapped {
            self.damaged.store(true, Ordering::Relaxed);
            // A failed MAP_FIXED may have unmapped the range before failing
            // (older kernels): fill the hole at once, before another mapping
            // of this process can land there and be unmapped with the region.
            // SAFETY: the same range as above, inside this region's own
            // reservation; an inaccessible anonymous mapping replaces
            // whatever is left there, which only this memory used (its
            // instance is discarded after this error).
            let refilled = unsafe {
                rustix::mm::mmap_anonymous(
                    self.base().cast(),
                    image.len(),
                    ProtFlags::empty(),
                    MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NORESERVE,
                )
            };
            if refilled.is_err() {
                self.leak_on_drop.store(true, Ordering::Relaxed);
            }
            return Err(e.into());
        }
        *self.backing.lock().unwrap_or_else(|e| e.into_inner()) = Some(image.clone());
        let mut mapped_len = self.mapped_len.lock().unwrap_or_else(|e| e.into_inner());
        *mapped_len = (*mapped_len).max(image.len());
        Ok(())
    }

    /// The image mapped over the memory's start, if any: what its pages
    /// that were not written since hold.
    pub(crate) fn backing(&self) -> Option<Arc<ImageFile>> {
        self.backing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Set the protection of the host pages covering bytes `[from, to)`.
    fn protect(&self, from: usize, to: usize, flags: MprotectFlags) -> io::Result<()> {
        let overflow = || io::Error::new(io::ErrorKind::InvalidInput, "size overflows");
        let start = round_up_to_page(from).ok_or_else(overflow)?;
        let end = round_up_to_page(to).ok_or_else(overflow)?;
        if end <= start {
            return Ok(());
        }
        // SAFETY: `[start, end)` lies inside this region's reservation
        // (`to` never exceeds the capacity), so only this memory's pages
        // change protection. Making bytes inaccessible is done only past
        // the guest's size (`lower_to`), where no Rust reference can point:
        // host views of the memory are bounded by its size.
        let changed =
            unsafe { rustix::mm::mprotect(self.base().add(start).cast(), end - start, flags) };
        if changed.is_err() {
            // It may have failed part-way: which pages are accessible is
            // unknown, so the region is never handed to another instance.
            self.damaged.store(true, Ordering::Relaxed);
        }
        changed?;
        Ok(())
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        if self.leak_on_drop.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: the reservation was mapped by `reserve` and is unmapped
        // only here, once; the region is dropped when the last holder (the
        // engine's memory and any instance handle) lets go, so nothing can
        // use the addresses afterwards.
        let _ = unsafe { rustix::mm::munmap(self.base().cast(), self.reserved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_grows_lowers_and_maps_an_image() {
        let region = MemoryRegion::reserve(65536, 1 << 20, 1 << 16).unwrap();
        assert_eq!(region.size(), 65536);
        // SAFETY: (test) within the accessible first page.
        unsafe { region.base().write(7) };
        region.grow_to(2 * 65536).unwrap();
        // SAFETY: (test) the grown bytes are accessible and zero.
        unsafe {
            assert_eq!(region.base().add(65536).read(), 0);
            region.base().add(65536).write(9);
        }
        assert!(region.grow_to(2 << 20).is_err(), "beyond the capacity");
        assert!(region.lower_to(3 * 65536).is_err(), "lowering upwards");
        region.lower_to(65536).unwrap();
        assert_eq!(region.size(), 65536);

        let image =
            Arc::new(ImageFile::new(8192, [(4096usize, &b"image"[..])].into_iter()).unwrap());
        region.map_image(&image).unwrap();
        // SAFETY: (test) the first page is accessible.
        unsafe {
            assert_eq!(region.base().read(), 0, "the image replaced page 0");
            assert_eq!(*region.base().add(4096), b'i');
        }
        assert!(region.backing().is_some());
        let big = Arc::new(ImageFile::new(1 << 17, std::iter::empty()).unwrap());
        assert!(region.map_image(&big).is_err(), "longer than the memory");
    }

    #[test]
    fn a_recycled_region_keeps_its_pages_until_settled_and_discarded() {
        let region = MemoryRegion::reserve(65536, 1 << 20, 1 << 16).unwrap();
        region.set_purpose(7);
        assert!(region.fits(7, 65536, 1 << 20, 1 << 16));
        assert!(!region.fits(7, 65536, 1 << 21, 1 << 16), "another capacity");
        assert!(!region.fits(8, 65536, 1 << 20, 1 << 16), "another purpose");
        let image =
            Arc::new(ImageFile::new(65536, [(0usize, &b"snapshot"[..])].into_iter()).unwrap());
        region.map_image(&image).unwrap();
        assert!(region.recyclable_for(&image));
        let other = Arc::new(ImageFile::new(65536, std::iter::empty()).unwrap());
        assert!(!region.recyclable_for(&other), "maps another image");
        region.grow_to(3 * 65536).unwrap();
        assert_eq!(region.high_water(), 3 * 65536);
        // SAFETY: (test) the grown bytes are accessible.
        unsafe { region.base().add(2 * 65536).write(5) };
        // Taken over at one page: the rest stays accessible until settled.
        region.reuse_at(65536).unwrap();
        assert_eq!(region.size(), 65536);
        // SAFETY: (test) still accessible, and still what was written.
        unsafe { assert_eq!(region.base().add(2 * 65536).read(), 5) };
        region.discard(2 * 65536..3 * 65536).unwrap();
        region.grow_to(3 * 65536).unwrap();
        // SAFETY: (test) accessible; a discarded page past the image reads zero.
        unsafe {
            assert_eq!(region.base().add(2 * 65536).read(), 0);
            region.base().write(b'X');
        }
        region.discard(0..4096).unwrap();
        // SAFETY: (test) a discarded page inside the image reads as the image.
        unsafe { assert_eq!(region.base().read(), b's') };
        region.lower_to(65536).unwrap();
        region.settle().unwrap();
        assert!(region.discard(1..4096).is_err(), "not page-aligned");
        assert!(region.discard(0..(2 << 20)).is_err(), "past the capacity");
    }
}
