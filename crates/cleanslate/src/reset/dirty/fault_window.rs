//! Knowing, without a page-table scan, that a call wrote only hot pages.
//!
//! After an in-place reset every page of a tracked memory is in one of two
//! states: hot (unprotected, examined at every reset anyway) or not hot,
//! and then either write-protected or not mapped at all. A write to a
//! protected page, and the first touch of an unmapped one, are page faults,
//! and the kernel counts every page fault against the thread that took it
//! (`getrusage(RUSAGE_THREAD)`: faults in user code, faults inside system
//! calls that write user memory, and faults taken on the thread's behalf).
//! So if the one thread that ran every call since the last reset took no
//! page fault in that time, the calls wrote no page but hot ones, and the
//! reset may examine just the hot pages: `PAGEMAP_SCAN` walks every entry
//! of every page table under the memory (512 per 2 MiB touched), which is
//! most of a small reset's cost and grows with the memory's size.
//!
//! Any doubt means a scan: a call on another thread, a fault for any reason
//! (the host's own allocations included), an unreadable counter, or no
//! window at all (after a fresh instance). Faults only ever add scans.

use std::thread::{self, ThreadId};

/// The state since the last in-place reset: which thread it ran on and how
/// many page faults that thread had taken when it started.
#[derive(Debug)]
pub(crate) struct FaultWindow {
    thread: ThreadId,
    faults: u64,
    /// A call ran on another thread since the window opened.
    crossed_threads: bool,
}

impl FaultWindow {
    /// A window counted from `faults`, a reading of [`thread_faults`] on
    /// this thread taken before the reset that opens it began writing.
    pub(crate) fn open(faults: u64) -> FaultWindow {
        FaultWindow {
            thread: thread::current().id(),
            faults,
            crossed_threads: false,
        }
    }

    /// A call is about to run on the current thread.
    pub(crate) fn note_call(&mut self) {
        if thread::current().id() != self.thread {
            self.crossed_threads = true;
        }
    }

    /// Whether nothing but hot pages can have been written since the window
    /// opened, given `faults_now`, read on the current thread.
    pub(crate) fn only_hot_pages_written(&self, faults_now: Option<u64>) -> bool {
        !self.crossed_threads
            && thread::current().id() == self.thread
            && faults_now == Some(self.faults)
    }
}

/// Page faults, minor and major, taken by the current thread so far.
pub(crate) fn thread_faults() -> Option<u64> {
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

    #[test]
    fn a_page_fault_on_this_thread_is_counted() {
        let before = thread_faults().expect("getrusage works on Linux");
        // A fresh anonymous page: its first write is a fault.
        let mut pages = vec![0u8; 1 << 20];
        std::hint::black_box(&mut pages)[4096 * 100] = 1;
        let after = thread_faults().unwrap();
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn a_window_closes_on_a_fault_and_on_another_thread() {
        let window = FaultWindow::open(thread_faults().unwrap());
        assert!(window.only_hot_pages_written(thread_faults()));
        let mut pages = vec![0u8; 1 << 20];
        std::hint::black_box(&mut pages)[4096 * 100] = 1;
        assert!(!window.only_hot_pages_written(thread_faults()));

        let mut window = FaultWindow::open(thread_faults().unwrap());
        std::thread::scope(|s| {
            s.spawn(|| window.note_call());
        });
        assert!(!window.only_hot_pages_written(thread_faults()));
        assert!(!FaultWindow::open(0).only_hot_pages_written(None));
    }
}
