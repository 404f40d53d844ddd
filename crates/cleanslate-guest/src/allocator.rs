//! The bump allocator: allocation moves a pointer forward; nothing is ever
//! returned except the most recent block (which makes `Vec` growth cheap).
//!
//! This is sound and sufficient because the sandbox resets memory —
//! including this allocator's position — after every call: a call's
//! garbage lives exactly as long as the call. A guest whose single call
//! churns through more memory than its limit should turn off the
//! `allocator` feature and bring a freeing allocator.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code, unused_imports))]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

/// The global allocator of guests built with the `allocator` feature.
struct BumpAllocator {
    /// The first free byte; 0 until the first allocation.
    next: AtomicUsize,
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: BumpAllocator = BumpAllocator {
    next: AtomicUsize::new(0),
};

const PAGE: usize = 65536;

#[cfg(target_arch = "wasm32")]
fn heap_start() -> usize {
    unsafe extern "C" {
        /// Where the linker put the end of static data and stack.
        static __heap_base: u8;
    }
    core::ptr::addr_of!(__heap_base) as usize
}

#[cfg(target_arch = "wasm32")]
fn memory_end() -> usize {
    core::arch::wasm32::memory_size(0) * PAGE
}

/// Grow memory by `pages`; false if the host's memory limit refuses.
#[cfg(target_arch = "wasm32")]
fn grow(pages: usize) -> bool {
    core::arch::wasm32::memory_grow(0, pages) != usize::MAX
}

impl BumpAllocator {
    /// Carve `layout` out of `[next, end)`, growing `end` with `grow`.
    fn carve(
        &self,
        layout: Layout,
        start: impl Fn() -> usize,
        end: impl Fn() -> usize,
        grow: impl Fn(usize) -> bool,
    ) -> *mut u8 {
        let mut next = self.next.load(Ordering::Relaxed);
        if next == 0 {
            next = start();
        }
        let Some(begin) = next.checked_next_multiple_of(layout.align()) else {
            return core::ptr::null_mut();
        };
        let Some(finish) = begin.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        let end = end();
        if finish > end && !grow((finish - end).div_ceil(PAGE)) {
            return core::ptr::null_mut();
        }
        self.next.store(finish, Ordering::Relaxed);
        begin as *mut u8
    }
}

#[cfg(target_arch = "wasm32")]
// SAFETY: `alloc` hands out disjoint, suitably aligned blocks inside linear
// memory (growing it first when needed) and returns null when it cannot;
// `dealloc` only ever moves `next` back over the block it was given when
// that block is the most recent one, so no live block is handed out twice.
// Wasm guests run single-threaded, so the relaxed atomics never race.
unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.carve(layout, heap_start, memory_end, grow)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let end = ptr as usize + layout.size();
        if self.next.load(Ordering::Relaxed) == end {
            self.next.store(ptr as usize, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The most recent block grows in place.
        let end = ptr as usize + layout.size();
        if self.next.load(Ordering::Relaxed) == end
            && let Some(new_end) = (ptr as usize).checked_add(new_size)
        {
            let limit = memory_end();
            if new_end <= limit || grow((new_end - limit).div_ceil(PAGE)) {
                self.next
                    .store(new_end.max(ptr as usize), Ordering::Relaxed);
                return ptr;
            }
            return core::ptr::null_mut();
        }
        // SAFETY: as `GlobalAlloc::realloc` requires: a new block of
        // `new_size` with the old alignment, the old contents copied over.
        unsafe {
            let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                return core::ptr::null_mut();
            };
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn blocks_are_aligned_disjoint_and_growth_is_requested_in_pages() {
        let bump = BumpAllocator {
            next: AtomicUsize::new(0),
        };
        let end = Cell::new(PAGE);
        let grown = Cell::new(0);
        let grow = |pages: usize| {
            grown.set(grown.get() + pages);
            end.set(end.get() + pages * PAGE);
            true
        };
        let a = bump.carve(
            Layout::from_size_align(3, 1).unwrap(),
            || 1000,
            || end.get(),
            grow,
        ) as usize;
        let b = bump.carve(
            Layout::from_size_align(8, 8).unwrap(),
            || 1000,
            || end.get(),
            grow,
        ) as usize;
        assert_eq!(a, 1000);
        assert_eq!(b, 1008, "aligned past the first block");
        let c = bump.carve(
            Layout::from_size_align(PAGE * 2, 8).unwrap(),
            || 0,
            || end.get(),
            grow,
        ) as usize;
        assert_eq!(c, 1016);
        assert_eq!(grown.get(), 2, "{} pages", grown.get());
        let refused = bump.carve(
            Layout::from_size_align(PAGE, 8).unwrap(),
            || 0,
            || end.get(),
            |_| false,
        );
        assert!(refused.is_null(), "a refused grow is a null allocation");
    }
}
