//! The write tracking of one instance's memories, and the one place that
//! decides whether a reset may skip the page-table scan.
//!
//! [`TrackedMemories`] is the whole state: per memory which pages are hot
//! ([`PageHeat`]), and since the last in-place reset the fault window. It is
//! changed only through its methods: the call path says a call begins
//! ([`begin_call`](TrackedMemories::begin_call)) or the host wrote guest
//! memory ([`host_wrote`](TrackedMemories::host_wrote)); the in-place reset
//! asks which pages to examine ([`decide`](TrackedMemories::decide),
//! [`written`](TrackedMemories::written)) and opens the next window
//! ([`finish_reset`](TrackedMemories::finish_reset)). So the argument below
//! is checked against this file alone.
//!
//! # Knowing, without a page-table scan, that a call wrote only hot pages
//!
//! What the scan-skip relies on: **after an in-place reset (or the start of
//! tracking), a write by the tracked thread to any page of a tracked memory
//! that is not hot takes a page fault, and the kernel counts that fault in
//! the thread's own `getrusage(RUSAGE_THREAD)` (`ru_minflt + ru_majflt`).**
//! It is not that every such page is write-protected: a non-hot page is in
//! one of these states, and a write faults in each.
//!
//! - Present and write-protected through userfaultfd (a page the reset
//!   copied back and protected, or one tracking protected when it began):
//!   the write takes a write-protect fault, which the kernel resolves itself
//!   (asynchronous mode) by lifting the protection.
//! - Mapped to the shared zero page (a never-written anonymous page that was
//!   read): the zero page is never mapped writable, so the write faults to
//!   get a private copy.
//! - Mapped to a file page (the module's data image, a private mapping):
//!   mapped read-only until copied on write, so the write faults to copy it.
//!   Fault-around on reads maps neighbours read-only too, never writable.
//! - Not mapped at all (never touched, or discarded): any access faults.
//!
//! A hot page is present and writable and its writes go uncounted; it is
//! compared at every reset whether or not the scan runs. The count is per
//! thread and includes faults taken inside system calls that write user
//! memory (a WASI `fd_read` into guest memory) and host code that writes the
//! memory on that thread; a write from any other thread is the one thing
//! the count cannot see, which is why a call on another thread closes the
//! window (the data ABI and WASI write guest memory on the calling thread;
//! user host functions get values and copied bytes, never the memory).
//! So if the one thread that ran every call since the last reset took no
//! page fault in that time, the calls wrote no page but hot ones, and the
//! reset may examine just the hot pages: `PAGEMAP_SCAN` walks every entry
//! of every page table under the memory (512 per 2 MiB touched), which is
//! most of a small reset's cost and grows with the memory's size.
//!
//! Any doubt means a scan: a call on another thread, a fault for any reason
//! (the host's own allocations included), an unreadable counter, or no
//! window at all (after a fresh instance). Faults only ever add scans.

use std::io;
use std::thread::{self, ThreadId};

use super::{DirtyPages, DirtyTracker, PAGE, PageHeat};

/// Write tracking of one instance's memories. `None` in an instance's
/// place means untracked: every reset replaces the instance.
pub(crate) struct TrackedMemories {
    tracker: &'static DirtyTracker,
    /// Per tracked memory, in index order: which pages are left unprotected.
    heat: Vec<PageHeat>,
    /// Since the last in-place reset: whether a fault-free single thread
    /// ran the calls, so the next reset may skip the scan. `None`: scan.
    window: Option<FaultWindow>,
}

/// How one reset examines the memories, decided once for all of them.
#[derive(Debug)]
pub(crate) struct ResetScan {
    /// The current thread's fault count when the reset decided (read before
    /// it copies anything: the reset's own faults count against the next
    /// window, which can only cost that window a scan).
    faults: Option<u64>,
    /// Only hot pages can have been written: examine just those.
    only_hot: bool,
}

impl ResetScan {
    /// Whether the page tables are scanned (else only hot pages examined).
    pub(crate) fn scans(&self) -> bool {
        !self.only_hot
    }
}

impl TrackedMemories {
    /// Start tracking the memories at `regions` (base address, current
    /// length, and the length they can grow to in place), from their
    /// current contents on. The first reset after scans.
    ///
    /// # Errors
    /// Why tracking is unavailable (no userfaultfd, a region the kernel
    /// refuses); the instance then stays untracked.
    pub(crate) fn start(
        regions: impl ExactSizeIterator<Item = (usize, usize, usize)>,
    ) -> Result<TrackedMemories, String> {
        let tracker = DirtyTracker::get().map_err(str::to_string)?;
        let mut heat = Vec::with_capacity(regions.len());
        for (base, len, reach) in regions {
            // Registered as far as the memory can grow, so the pages a call
            // grows into are tracked like the rest.
            tracker
                .track(base, reach.max(len))
                .map_err(|e| e.to_string())?;
            heat.push(PageHeat::new(len / PAGE));
        }
        Ok(TrackedMemories {
            tracker,
            heat,
            window: None,
        })
    }

    /// Guest code is about to run on the current thread. Call before
    /// anything of the call can write guest memory, and again from any
    /// thread the call moves to.
    pub(crate) fn begin_call(&mut self) {
        if let Some(window) = self.window.as_mut() {
            window.note_call();
        }
    }

    /// The host is about to write guest memory where the window cannot
    /// vouch for the thread (a session's mutable memory view may travel to
    /// another thread): the next reset scans.
    pub(crate) fn host_wrote(&mut self) {
        self.window = None;
    }

    /// The reset decides how to examine the memories. Call after the reset
    /// ran anything on this thread that might write guest memory (the
    /// segment probes), so whatever they wrote is covered by this decision,
    /// and before it copies anything back.
    pub(crate) fn decide(&mut self) -> ResetScan {
        let window = self.window.take();
        let faults = thread_faults();
        let only_hot = window.is_some_and(|window| window.only_hot_pages_written(faults));
        ResetScan { faults, only_hot }
    }

    /// Memory `index`'s pages to examine at this reset, at `base`/`len`:
    /// its hot pages if `scan` allows, else what the page tables report.
    /// Also starts the reset in the memory's heat.
    pub(crate) fn written(
        &mut self,
        scan: &ResetScan,
        index: usize,
        base: usize,
        len: usize,
    ) -> io::Result<DirtyPages> {
        let heat = &mut self.heat[index];
        // A memory may end inside a host page (custom page sizes): that
        // page is tracked whole.
        let len = len.div_ceil(PAGE) * PAGE;
        heat.cover(len / PAGE);
        heat.next_reset();
        if scan.only_hot {
            // Hot pages past the memory's end (left there when a reset
            // lowered it) are inaccessible and were cleared: skip them.
            let mut runs = heat.hot_runs();
            runs.ranges.retain_mut(|run| {
                run.end = run.end.min(len);
                run.start < run.end
            });
            return Ok(runs);
        }
        self.tracker.written(base, len)
    }

    /// Memory `index`'s page heat, for the reset's copy loop.
    pub(crate) fn heat(&mut self, index: usize) -> &mut PageHeat {
        &mut self.heat[index]
    }

    /// Write-protect `pages` of the memory at `base` again, after they were
    /// copied back (copy first: protecting first would make the copy fault
    /// and mark them written again).
    pub(crate) fn protect(&self, base: usize, pages: &DirtyPages) -> io::Result<()> {
        self.tracker.protect(base, pages)
    }

    /// The reset finished in place: open the window the next reset decides
    /// by, counted from the faults read at `scan`'s decision.
    pub(crate) fn finish_reset(&mut self, scan: ResetScan) {
        self.window = scan.faults.map(FaultWindow::open);
    }
}

/// The state since the last in-place reset: which thread it ran on and how
/// many page faults that thread had taken when it started.
#[derive(Debug)]
struct FaultWindow {
    thread: ThreadId,
    faults: u64,
    /// A call ran on another thread since the window opened.
    crossed_threads: bool,
}

impl FaultWindow {
    /// A window counted from `faults`, a reading of [`thread_faults`] on
    /// this thread taken before the reset that opens it began writing.
    fn open(faults: u64) -> FaultWindow {
        FaultWindow {
            thread: thread::current().id(),
            faults,
            crossed_threads: false,
        }
    }

    /// A call is about to run on the current thread.
    fn note_call(&mut self) {
        if thread::current().id() != self.thread {
            self.crossed_threads = true;
        }
    }

    /// Whether nothing but hot pages can have been written since the window
    /// opened, given `faults_now`, read on the current thread.
    fn only_hot_pages_written(&self, faults_now: Option<u64>) -> bool {
        !self.crossed_threads
            && thread::current().id() == self.thread
            && faults_now == Some(self.faults)
    }
}

/// Page faults, minor and major, taken by the current thread so far.
fn thread_faults() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `getrusage` writes a whole `rusage` into the pointer it is
    // given, which points to writable memory of exactly that type; it reads
    // nothing from it. The value is used only if the call reports success.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the call succeeded, so it initialised the whole struct.
    let usage = unsafe { usage.assume_init() };
    Some(usage.ru_minflt as u64 + usage.ru_majflt as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes the allocator always serves from a new mapping.
    const FRESH: usize = 64 << 20;

    #[test]
    fn a_page_fault_on_this_thread_is_counted() {
        let before = thread_faults().expect("getrusage works on Linux");
        // A fresh anonymous page: its first write is a fault. (Above 32 MiB
        // the allocator always maps new memory; a smaller buffer may reuse
        // pages another test already touched, and not fault.)
        let mut pages = vec![0u8; FRESH];
        std::hint::black_box(&mut pages)[4096 * 100] = 1;
        let after = thread_faults().unwrap();
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn a_window_closes_on_a_fault_and_on_another_thread() {
        let window = FaultWindow::open(thread_faults().unwrap());
        assert!(window.only_hot_pages_written(thread_faults()));
        let mut pages = vec![0u8; FRESH];
        std::hint::black_box(&mut pages)[4096 * 100] = 1;
        assert!(!window.only_hot_pages_written(thread_faults()));

        let mut window = FaultWindow::open(thread_faults().unwrap());
        std::thread::scope(|s| {
            s.spawn(|| window.note_call());
        });
        assert!(!window.only_hot_pages_written(thread_faults()));
        assert!(!FaultWindow::open(0).only_hot_pages_written(None));
    }

    #[test]
    fn a_reset_skips_the_scan_only_after_a_fault_free_window_on_one_thread() {
        use crate::tracking::tests::Mapping;
        if let Err(reason) = DirtyTracker::get() {
            // Only machines that must track (CI sets the variable) fail.
            assert!(
                std::env::var_os("CLEANSLATE_EXPECT_TRACKING").is_none(),
                "{reason}"
            );
            return;
        }
        let memory = Mapping::new(16);
        memory.write(0, 1);
        let mut tracked =
            TrackedMemories::start([(memory.base, memory.len, memory.len)].into_iter()).unwrap();

        let scan = tracked.decide();
        assert!(scan.scans(), "no window before the first reset");
        tracked.finish_reset(scan);

        tracked.begin_call();
        let scan = tracked.decide();
        assert!(!scan.scans(), "one thread, no fault: only hot pages");
        tracked.finish_reset(scan);

        tracked.begin_call();
        memory.write(9, 1); // never touched: the write faults
        let scan = tracked.decide();
        assert!(scan.scans(), "a fault means a scan");
        tracked.finish_reset(scan);

        std::thread::scope(|s| {
            s.spawn(|| tracked.begin_call());
        });
        let scan = tracked.decide();
        assert!(scan.scans(), "a call on another thread means a scan");
        tracked.finish_reset(scan);

        tracked.host_wrote();
        assert!(tracked.decide().scans(), "a host write means a scan");
    }
}
