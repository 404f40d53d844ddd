//! The bump allocator: allocation moves a pointer forward; nothing is ever
//! returned except the most recent block (which makes `Vec` growth cheap).
//!
//! This is sound and sufficient because the sandbox resets memory —
//! including this allocator's position — after every call: a call's
//! garbage lives exactly as long as the call. A guest whose single call
//! churns through more memory than its limit should turn off the
//! `allocator` feature and bring a freeing allocator.
//!
//! The allocator works on offsets into a [`Heap`]; only the heap turns an
//! offset into a pointer. On wasm32 the heap is linear memory itself; the
//! tests (run under Miri too) give it a buffer, so every pointer the
//! `GlobalAlloc` implementation hands out, reads or copies through is
//! checked against real bounds and provenance.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code, unused_imports))]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

const PAGE: usize = 65536;

/// Where the allocator carves blocks from.
trait Heap {
    /// The offset of the first byte it may hand out.
    fn start(&self) -> usize;
    /// The offset one past the last byte it may hand out now.
    fn end(&self) -> usize;
    /// Make `pages` more pages available; false if refused.
    fn grow(&self, pages: usize) -> bool;
    /// The pointer to the byte at `offset` (below `end`).
    fn at(&self, offset: usize) -> *mut u8;
}

/// The global allocator of guests built with the `allocator` feature.
struct BumpAllocator<H> {
    /// The first free offset; 0 until the first allocation.
    next: AtomicUsize,
    heap: H,
}

/// Linear memory 0, from the end of the linker's static data and stack.
#[cfg(target_arch = "wasm32")]
struct LinearMemory;

#[cfg(target_arch = "wasm32")]
impl Heap for LinearMemory {
    fn start(&self) -> usize {
        unsafe extern "C" {
            /// Where the linker put the end of static data and stack.
            static __heap_base: u8;
        }
        core::ptr::addr_of!(__heap_base) as usize
    }

    fn end(&self) -> usize {
        core::arch::wasm32::memory_size(0) * PAGE
    }

    fn grow(&self, pages: usize) -> bool {
        core::arch::wasm32::memory_grow(0, pages) != usize::MAX
    }

    fn at(&self, offset: usize) -> *mut u8 {
        // Linear memory starts at address 0: an offset is an address.
        core::ptr::with_exposed_provenance_mut(offset)
    }
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: BumpAllocator<LinearMemory> = BumpAllocator {
    next: AtomicUsize::new(0),
    heap: LinearMemory,
};

impl<H: Heap> BumpAllocator<H> {
    /// Carve `layout` out of `[next, end)`, growing the heap when needed;
    /// the block's offset, or `None` if the heap cannot hold it.
    fn carve(&self, layout: Layout) -> Option<usize> {
        let mut next = self.next.load(Ordering::Relaxed);
        if next == 0 {
            next = self.heap.start();
        }
        let begin = next.checked_next_multiple_of(layout.align())?;
        let finish = begin.checked_add(layout.size())?;
        self.ensure(finish)?;
        self.next.store(finish, Ordering::Relaxed);
        Some(begin)
    }

    /// Make the heap reach at least `offset`.
    fn ensure(&self, offset: usize) -> Option<()> {
        let end = self.heap.end();
        (offset <= end || self.heap.grow((offset - end).div_ceil(PAGE))).then_some(())
    }

    /// The offset of `ptr`, which this allocator handed out.
    fn offset(&self, ptr: *mut u8) -> usize {
        ptr as usize - self.heap.at(0) as usize
    }
}

// SAFETY: `alloc` hands out disjoint, suitably aligned blocks inside the
// heap (growing it first when needed) and returns null when it cannot;
// `dealloc` only ever moves `next` back over the block it was given when
// that block is the most recent one, so no live block is handed out twice;
// `realloc` grows the most recent block in place only after the heap holds
// its new end. Wasm guests run single-threaded, so the relaxed atomics
// never race (and the tests use one allocator per thread).
unsafe impl<H: Heap> GlobalAlloc for BumpAllocator<H> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.carve(layout) {
            Some(offset) => self.heap.at(offset),
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let start = self.offset(ptr);
        if self.next.load(Ordering::Relaxed) == start + layout.size() {
            self.next.store(start, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = self.offset(ptr);
        // The most recent block grows (or shrinks) in place.
        if self.next.load(Ordering::Relaxed) == start + layout.size() {
            let Some(new_end) = start.checked_add(new_size) else {
                return core::ptr::null_mut();
            };
            if self.ensure(new_end).is_none() {
                return core::ptr::null_mut();
            }
            self.next.store(new_end, Ordering::Relaxed);
            return ptr;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: `new_layout` has a non-zero size (`realloc`'s contract
        // gives `new_size > 0`) and the alignment of a valid layout.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: `ptr` is a live block of `layout.size()` bytes, `new`
            // a fresh block of `new_size` bytes carved after every live
            // block, so they do not overlap and both hold the copied length.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use alloc::vec::Vec;
    use core::cell::{Cell, UnsafeCell};

    /// A heap of `capacity` bytes of which `end` are available; growth
    /// beyond capacity is refused, like a memory limit.
    struct BufferHeap {
        bytes: Vec<UnsafeCell<u8>>,
        start: usize,
        end: Cell<usize>,
        grown_pages: Cell<usize>,
    }

    impl BufferHeap {
        fn new(start: usize, end: usize, capacity: usize) -> Self {
            BufferHeap {
                bytes: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
                start,
                end: Cell::new(end),
                grown_pages: Cell::new(0),
            }
        }
    }

    impl Heap for BufferHeap {
        fn start(&self) -> usize {
            self.start
        }
        fn end(&self) -> usize {
            self.end.get()
        }
        fn grow(&self, pages: usize) -> bool {
            let new_end = self.end.get() + pages * PAGE;
            if new_end > self.bytes.len() {
                return false;
            }
            self.end.set(new_end);
            self.grown_pages.set(self.grown_pages.get() + pages);
            true
        }
        fn at(&self, offset: usize) -> *mut u8 {
            // Offsets up to and including the end are valid to point at;
            // the allocator only dereferences inside handed-out blocks.
            self.bytes
                .as_ptr()
                .cast::<u8>()
                .cast_mut()
                .wrapping_add(offset)
        }
    }

    fn bump(start: usize, end: usize, capacity: usize) -> BumpAllocator<BufferHeap> {
        BumpAllocator {
            next: AtomicUsize::new(0),
            heap: BufferHeap::new(start, end, capacity),
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_growth_is_requested_in_pages() {
        let bump = bump(1000, PAGE, 4 * PAGE);
        // SAFETY: non-zero sizes, valid layouts.
        let (a, b, c) = unsafe {
            (
                bump.alloc(layout(3, 1)),
                bump.alloc(layout(8, 8)),
                bump.alloc(layout(PAGE * 2, 8)),
            )
        };
        let offset = |p: *mut u8| bump.offset(p);
        assert_eq!(offset(a), 1000);
        assert_eq!(offset(b), 1008, "aligned past the first block");
        assert_eq!(offset(c), 1016);
        assert_eq!(bump.heap.grown_pages.get(), 2);
        // SAFETY: as above.
        let refused = unsafe { bump.alloc(layout(2 * PAGE, 8)) };
        assert!(
            refused.is_null(),
            "growth past the limit is a null allocation"
        );
    }

    #[test]
    fn written_blocks_keep_their_contents_through_reallocation() {
        // Under Miri this checks every pointer the allocator produced stays
        // inside the heap and blocks never overlap (writes through one
        // would clobber another's pattern).
        let bump = bump(16, 256, 2 * PAGE);
        let mut blocks: Vec<(*mut u8, usize, u8)> = Vec::new();
        for (i, size) in [1usize, 7, 32, 3, 100].into_iter().enumerate() {
            // SAFETY: non-zero size, valid layout.
            let block = unsafe { bump.alloc(layout(size, 1 << (i % 4))) };
            assert!(!block.is_null());
            // SAFETY: the block holds `size` bytes.
            unsafe { block.write_bytes(i as u8 + 1, size) };
            blocks.push((block, size, i as u8 + 1));
        }
        // The most recent block grows in place, across a page boundary.
        let (last, size, fill) = blocks.pop().unwrap();
        // SAFETY: `last` came from `alloc` with this layout.
        let grown = unsafe { bump.realloc(last, layout(size, 1 << 0), PAGE) };
        assert_eq!(grown, last, "the most recent block grows in place");
        // SAFETY: the grown block holds PAGE bytes.
        unsafe { grown.add(size).write_bytes(fill, PAGE - size) };
        blocks.push((grown, PAGE, fill));
        // An older block moves, keeping its bytes.
        let (old, old_size, old_fill) = blocks.remove(1);
        // SAFETY: `old` came from `alloc` with size 7 and alignment 2.
        let moved = unsafe { bump.realloc(old, layout(old_size, 2), 64) };
        assert_ne!(moved, old);
        // SAFETY: the moved block holds 64 bytes, the first 7 copied.
        let kept = unsafe { core::slice::from_raw_parts(moved, old_size) };
        assert!(kept.iter().all(|b| *b == old_fill));
        // SAFETY: as above.
        unsafe { moved.add(old_size).write_bytes(old_fill, 64 - old_size) };
        blocks.push((moved, 64, old_fill));
        for (block, size, fill) in &blocks {
            // SAFETY: each block is live and holds `size` bytes.
            let bytes = unsafe { core::slice::from_raw_parts(*block, *size) };
            assert!(bytes.iter().all(|b| b == fill), "block of {fill} clobbered");
        }
    }

    #[test]
    fn freeing_the_most_recent_block_reuses_it_and_older_frees_are_ignored() {
        let bump = bump(8, PAGE, PAGE);
        // SAFETY: non-zero sizes, valid layouts; frees pass the same layout.
        unsafe {
            let a = bump.alloc(layout(16, 8));
            let b = bump.alloc(layout(16, 8));
            bump.dealloc(a, layout(16, 8)); // not the most recent: ignored
            let c = bump.alloc(layout(16, 8));
            assert!(c > b, "an older block is never handed out again");
            bump.dealloc(c, layout(16, 8));
            assert_eq!(bump.alloc(layout(16, 8)), c, "the most recent is reused");
        }
    }

    #[test]
    fn impossible_requests_are_null_not_wrapping() {
        let bump = bump(8, PAGE, PAGE);
        // SAFETY: valid layouts; the sizes are what is being tested.
        unsafe {
            assert!(bump.alloc(layout(isize::MAX as usize - 64, 1)).is_null());
            let a = bump.alloc(layout(8, 8));
            assert!(
                bump.realloc(a, layout(8, 8), isize::MAX as usize - 64)
                    .is_null()
            );
        }
    }
}
