//! Finding the pages a call wrote, so a reset copies back only those.
//!
//! Mechanism (Linux ≥ 6.7): a linear memory is registered with a
//! process-wide userfaultfd in asynchronous write-protect mode and its
//! present pages are write-protected. A guest write to a protected page costs
//! one minor fault that the kernel resolves by itself, clearing the page's
//! protection; `PAGEMAP_SCAN` then lists exactly the pages written since
//! they were last protected. After the reset copies those pages back from
//! the snapshot, it protects them again — in that order, so the copy itself
//! does not fault and mark them written.
//!
//! Pages the guest first touches after registration are not protected (they
//! did not exist yet) and so count as written: they are restored and
//! protected on the first reset after, which keeps the scan exact without
//! protecting (and populating page tables for) untouched memory up front.

mod heat;
mod sys;
mod tracked_memories;

pub(crate) use heat::{PageHeat, Restore};
pub(crate) use tracked_memories::TrackedMemories;

use std::io;
use std::ops::Range;
use std::sync::OnceLock;

use sys::{
    PAGE_IS_FILE, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_WRITTEN, PageRegion,
    Pagemap, ScanQuery, Userfault,
};

/// Host page size the tracker works in.
pub(crate) const PAGE: usize = 4096;

/// The process-wide tracker: one userfaultfd and one pagemap descriptor
/// serve every sandbox (both are safe to use from many threads at once).
pub(crate) struct DirtyTracker {
    userfault: Userfault,
    scan: &'static PageScan,
    /// Why in-place resets work here, for tools that report it.
    available: String,
}

/// Finding a memory's pages by what backs them (a page of its own, an
/// image file's page, the zero page, nothing), with `PAGEMAP_SCAN` alone:
/// unlike write tracking this needs no userfaultfd, so it also works where
/// seccomp refuses that (Docker's default profile).
pub(crate) struct PageScan {
    pagemap: Pagemap,
}

/// Why `PageScan` is unavailable.
#[derive(Debug)]
pub(crate) enum PageScanUnavailable {
    /// `/proc/self/pagemap` cannot be opened.
    Open(io::Error),
    /// The `PAGEMAP_SCAN` ioctl fails (kernel before 6.7, or refused).
    Scan(io::Error),
}

/// Byte ranges (relative to a memory's base) written since the last reset.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct DirtyPages {
    pub ranges: Vec<Range<usize>>,
}

impl DirtyPages {
    /// Add the page starting at byte `offset`, merging with the last run.
    pub(crate) fn push_page(&mut self, offset: usize) {
        match self.ranges.last_mut() {
            Some(last) if last.end == offset => last.end += PAGE,
            _ => self.ranges.push(offset..offset + PAGE),
        }
    }

    pub(crate) fn pages(&self) -> u64 {
        self.ranges.iter().map(|r| (r.len() / PAGE) as u64).sum()
    }
}

impl DirtyTracker {
    /// The tracker, or why this machine cannot provide one (kernel too old,
    /// userfaultfd not permitted, ...), probed once per process.
    pub(crate) fn get() -> Result<&'static DirtyTracker, &'static str> {
        static TRACKER: OnceLock<Result<DirtyTracker, String>> = OnceLock::new();
        TRACKER
            .get_or_init(DirtyTracker::probe)
            .as_ref()
            .map_err(|reason| reason.as_str())
    }

    /// Why resets run in place on this machine, or why they cannot: one
    /// sentence for logs and tools, the same for every caller.
    pub(crate) fn availability() -> Result<&'static str, &'static str> {
        DirtyTracker::get().map(|tracker| tracker.available.as_str())
    }

    fn probe() -> Result<DirtyTracker, String> {
        // Tracking, hot pages and resets all count in 4 KiB pages.
        let page_size = rustix::param::page_size();
        if page_size != PAGE {
            return Err(format!(
                "the system page size is {page_size} bytes; tracking written pages needs 4 KiB pages, so every reset replaces the instance"
            ));
        }
        let kernel = kernel_release();
        let userfault = Userfault::open()
            .map_err(|e| unavailable_reason(ProbeStep::Userfaultfd, &e, seccomp_mode(), &kernel))?;
        let scan = PageScan::get().map_err(|why| match why {
            PageScanUnavailable::Open(e) => format!("cannot open /proc/self/pagemap ({e}), which finding written pages needs (is /proc mounted?), so every reset replaces the instance"),
            PageScanUnavailable::Scan(e) => {
                unavailable_reason(ProbeStep::PagemapScan, e, seccomp_mode(), &kernel)
            }
        })?;
        Ok(DirtyTracker {
            userfault,
            scan,
            available: format!(
                "userfaultfd with asynchronous write-protect and PAGEMAP_SCAN work here (Linux {kernel}): calls reset in place, copying back only the pages they wrote"
            ),
        })
    }

    /// Start tracking writes to `[base, base+len)`, a page-aligned range of
    /// a linear memory's mapping.
    ///
    /// Only the pages mapped now are protected: protecting a whole range
    /// allocates page tables for all of it (2 MiB of them per GiB), and every
    /// page-table entry costs scan time at every reset. Unmapped pages need
    /// no protection: a first write gives them a page that was never
    /// protected, which the scan reports as written anyway.
    pub(crate) fn track(&self, base: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        // Huge pages would make a one-byte write dirty 2 MiB.
        // SAFETY: madvise only gives the kernel advice about the range's
        // paging; it never changes contents or validity, and the range is a
        // live mapping owned by the memory being tracked.
        unsafe { libc::madvise(base as *mut libc::c_void, len, libc::MADV_NOHUGEPAGE) };
        self.userfault.register(base, len)?;
        self.protect(base, &self.scan.present(base, len)?)
    }

    /// The pages of `[base, base+len)` written since they were last
    /// protected, as ranges relative to `base`.
    pub(crate) fn written(&self, base: usize, len: usize) -> io::Result<DirtyPages> {
        self.scan.scan_all(base, len, &written_query())
    }

    /// Protect `pages` again after they were restored. Exactly these runs:
    /// protecting a whole span would also protect the hot pages inside it.
    pub(crate) fn protect(&self, base: usize, pages: &DirtyPages) -> io::Result<()> {
        for r in &pages.ranges {
            self.userfault.protect(base + r.start, r.len())?;
        }
        Ok(())
    }
}

impl PageScan {
    /// The scanner, or why this machine has none, probed once per process.
    pub(crate) fn get() -> Result<&'static PageScan, &'static PageScanUnavailable> {
        static SCAN: OnceLock<Result<PageScan, PageScanUnavailable>> = OnceLock::new();
        SCAN.get_or_init(|| {
            let pagemap = Pagemap::open().map_err(PageScanUnavailable::Open)?;
            // A scan over an empty range proves the ioctl exists.
            let mut out = [PageRegion::default(); 1];
            pagemap
                .scan(0, 0, &written_query(), &mut out)
                .map_err(PageScanUnavailable::Scan)?;
            Ok(PageScan { pagemap })
        })
        .as_ref()
    }

    /// The pages of `[base, base+len)` that hold a page of their own,
    /// resident or swapped out (not the shared zero page, not unmapped): the
    /// only pages of anonymous memory that can be non-zero.
    pub(crate) fn present(&self, base: usize, len: usize) -> io::Result<DirtyPages> {
        let query = ScanQuery {
            required: 0,
            absent: PAGE_IS_PFNZERO,
            any_of: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        };
        self.scan_all(base, len, &query)
    }

    /// The pages of `[base, base+len)` that were written at some point:
    /// anonymous pages, resident or swapped. In a private copy-on-write
    /// mapping every other page still holds the file's (the data image's)
    /// content.
    pub(crate) fn anonymous(&self, base: usize, len: usize) -> io::Result<DirtyPages> {
        let query = ScanQuery {
            required: 0,
            absent: PAGE_IS_FILE | PAGE_IS_PFNZERO,
            any_of: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        };
        self.scan_all(base, len, &query)
    }

    /// Every page of `[base, base+len)` matching `query`, as merged ranges
    /// relative to `base`.
    fn scan_all(&self, base: usize, len: usize, query: &ScanQuery) -> io::Result<DirtyPages> {
        let mut dirty = DirtyPages::default();
        let mut out = [PageRegion::default(); 256];
        let end = base + len;
        let mut start = base;
        while start < end {
            let (filled, _walk_end) = self.pagemap.scan(start, end, query, &mut out)?;
            for region in &out[..filled] {
                let r = (region.start as usize - base)..(region.end as usize - base);
                match dirty.ranges.last_mut() {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ => dirty.ranges.push(r),
                }
            }
            if filled < out.len() {
                break;
            }
            // A full vector may leave a stale `walk_end`; resume after the
            // last region reported instead, which cannot repeat a page.
            start = out[filled - 1].end as usize;
        }
        Ok(dirty)
    }
}

/// Pages whose protection a write cleared, resident or swapped out (a
/// written page that was swapped must still be restored); the shared zero
/// page (mapped by a read of untouched memory) holds nothing and is excluded.
fn written_query() -> ScanQuery {
    ScanQuery {
        required: PAGE_IS_WRITTEN,
        absent: PAGE_IS_PFNZERO,
        any_of: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
    }
}

/// The probe step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeStep {
    /// The `userfaultfd` system call, or its handshake asking for
    /// asynchronous write-protect (`UFFDIO_API` with `UFFD_FEATURE_WP_ASYNC`).
    Userfaultfd,
    /// The `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap`.
    PagemapScan,
}

/// What every reason ends with: what it costs.
const CONSEQUENCE: &str = "so every reset replaces the instance (the slower fresh-instance path) instead of copying back only the pages a call wrote";

/// Why in-place resets are unavailable, from the probe step that failed, its
/// error, this process's seccomp mode (`Seccomp:` in `/proc/self/status`:
/// 0 none, 1 strict, 2 filter; `None` if unknown) and the running kernel's
/// release. Pure, so every case is tested without the condition being real.
pub(crate) fn unavailable_reason(
    step: ProbeStep,
    error: &io::Error,
    seccomp: Option<u32>,
    kernel: &str,
) -> String {
    let errno = error.raw_os_error();
    let filtered = seccomp == Some(2);
    match (step, errno) {
        (ProbeStep::Userfaultfd, Some(libc::EPERM | libc::ENOSYS | libc::EACCES)) if filtered => {
            format!(
                "the userfaultfd system call is refused by this process's seccomp filter ({error}; /proc/self/status shows Seccomp: 2). \
                 Container runtimes' default seccomp profiles (Docker's, and containerd's RuntimeDefault that Kubernetes uses) do not allow userfaultfd, \
                 {CONSEQUENCE}. To reset in place, run under a seccomp profile that also allows userfaultfd \
                 (the runtime's default plus userfaultfd; see docs/SERVER.md)"
            )
        }
        (ProbeStep::Userfaultfd, Some(libc::ENOSYS)) => format!(
            "this kernel (Linux {kernel}) has no userfaultfd system call (built without CONFIG_USERFAULTFD), {CONSEQUENCE}; \
             in-place resets need Linux 6.7+ with userfaultfd"
        ),
        (ProbeStep::Userfaultfd, Some(libc::EINVAL)) => format!(
            "this kernel (Linux {kernel}) lacks userfaultfd with asynchronous write-protect (UFFD_FEATURE_WP_ASYNC; {error}), {CONSEQUENCE}; \
             in-place resets need Linux 6.7+"
        ),
        (ProbeStep::Userfaultfd, Some(libc::EPERM | libc::EACCES)) => {
            let sandbox = match seccomp {
                Some(1) => "this process runs in strict seccomp mode",
                _ => {
                    "no seccomp filter is active, so a security module (SELinux, AppArmor) or a system setting refused it"
                }
            };
            format!(
                "the userfaultfd system call is not permitted ({error}; {sandbox}), {CONSEQUENCE}; \
                 allow user-mode userfaultfd for this process to reset in place"
            )
        }
        (ProbeStep::Userfaultfd, _) => format!(
            "userfaultfd with asynchronous write-protect is unavailable ({error}; Linux {kernel}), {CONSEQUENCE}; \
             in-place resets need Linux 6.7+ and permission for user-mode userfaultfd"
        ),
        (ProbeStep::PagemapScan, Some(libc::ENOTTY | libc::EINVAL | libc::ENOSYS)) => format!(
            "this kernel (Linux {kernel}) lacks the PAGEMAP_SCAN ioctl ({error}), {CONSEQUENCE}; in-place resets need Linux 6.7+"
        ),
        (ProbeStep::PagemapScan, _) => format!(
            "the PAGEMAP_SCAN ioctl failed ({error}; Linux {kernel}), {CONSEQUENCE}; in-place resets need Linux 6.7+ and a readable /proc/self/pagemap"
        ),
    }
}

/// This process's seccomp mode from `/proc/self/status` (0 none, 1 strict,
/// 2 filter), or `None` where the kernel does not say.
fn seccomp_mode() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_seccomp_mode(&status)
}

fn parse_seccomp_mode(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))
        .and_then(|mode| mode.trim().parse().ok())
}

/// The running kernel's release (as `uname -r` prints it).
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|_| "release unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn seccomp_mode_is_read_from_proc_status() {
        let status = "Name:\tx\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(parse_seccomp_mode(status), Some(2));
        assert_eq!(parse_seccomp_mode("Seccomp:\t0\n"), Some(0));
        assert_eq!(parse_seccomp_mode("Name:\tx\n"), None);
        assert!(seccomp_mode().is_some(), "Linux reports a seccomp mode");
    }

    #[test]
    fn a_seccomp_filter_refusing_userfaultfd_is_named_with_the_fix() {
        for code in [libc::EPERM, libc::ENOSYS, libc::EACCES] {
            let why = unavailable_reason(ProbeStep::Userfaultfd, &errno(code), Some(2), "6.8.0");
            assert!(why.contains("seccomp filter"), "{why}");
            assert!(why.contains("Docker"), "{why}");
            assert!(why.contains("RuntimeDefault"), "{why}");
            assert!(why.contains("replaces the instance"), "{why}");
            assert!(why.contains("allows userfaultfd"), "{why}");
            assert!(why.contains("docs/SERVER.md"), "{why}");
        }
    }

    #[test]
    fn a_kernel_without_userfaultfd_is_named_with_its_release() {
        let why = unavailable_reason(
            ProbeStep::Userfaultfd,
            &errno(libc::ENOSYS),
            Some(0),
            "5.4.0-150",
        );
        assert!(why.contains("no userfaultfd system call"), "{why}");
        assert!(why.contains("Linux 5.4.0-150"), "{why}");
        assert!(why.contains("6.7+"), "{why}");
        assert!(!why.contains("seccomp"), "{why}");
        // Unknown seccomp mode: the kernel is still the likeliest cause.
        let why = unavailable_reason(ProbeStep::Userfaultfd, &errno(libc::ENOSYS), None, "4.19");
        assert!(why.contains("no userfaultfd system call"), "{why}");
    }

    #[test]
    fn a_kernel_without_async_write_protect_or_pagemap_scan_is_too_old() {
        let why = unavailable_reason(
            ProbeStep::Userfaultfd,
            &errno(libc::EINVAL),
            Some(2),
            "6.1.0",
        );
        assert!(why.contains("asynchronous write-protect"), "{why}");
        assert!(why.contains("Linux 6.1.0"), "{why}");
        assert!(why.contains("6.7+"), "{why}");
        for code in [libc::ENOTTY, libc::EINVAL] {
            let why = unavailable_reason(ProbeStep::PagemapScan, &errno(code), Some(0), "6.6.30");
            assert!(why.contains("lacks the PAGEMAP_SCAN ioctl"), "{why}");
            assert!(why.contains("Linux 6.6.30"), "{why}");
            assert!(why.contains("6.7+"), "{why}");
        }
    }

    #[test]
    fn permission_refused_without_seccomp_points_elsewhere() {
        for code in [libc::EPERM, libc::EACCES] {
            let why = unavailable_reason(ProbeStep::Userfaultfd, &errno(code), Some(0), "6.8.0");
            assert!(why.contains("not permitted"), "{why}");
            assert!(why.contains("no seccomp filter is active"), "{why}");
            assert!(why.contains("SELinux"), "{why}");
            assert!(!why.contains("Docker"), "{why}");
        }
        let why = unavailable_reason(
            ProbeStep::Userfaultfd,
            &errno(libc::EPERM),
            Some(1),
            "6.8.0",
        );
        assert!(why.contains("strict seccomp mode"), "{why}");
    }

    #[test]
    fn other_failures_keep_the_error_and_the_requirements() {
        let why = unavailable_reason(
            ProbeStep::Userfaultfd,
            &errno(libc::EMFILE),
            Some(0),
            "6.8.0",
        );
        assert!(why.contains("unavailable"), "{why}");
        assert!(why.contains("Linux 6.8.0"), "{why}");
        assert!(why.contains(&errno(libc::EMFILE).to_string()), "{why}");
        let why = unavailable_reason(
            ProbeStep::PagemapScan,
            &errno(libc::EFAULT),
            Some(0),
            "6.8.0",
        );
        assert!(why.contains("PAGEMAP_SCAN ioctl failed"), "{why}");
    }

    #[test]
    fn this_machine_reports_one_sentence_either_way() {
        match DirtyTracker::availability() {
            Ok(why) => assert!(why.contains("reset in place"), "{why}"),
            Err(why) => assert!(why.contains("replaces the instance"), "{why}"),
        }
    }

    /// An anonymous private mapping, unmapped on drop.
    pub(super) struct Mapping {
        pub(super) base: usize,
        pub(super) len: usize,
    }

    impl Mapping {
        pub(super) fn new(pages: usize) -> Mapping {
            let len = pages * PAGE;
            // SAFETY: a fresh anonymous private mapping at an address the
            // kernel chooses; it aliases nothing, and we check for failure.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED);
            Mapping {
                base: ptr as usize,
                len,
            }
        }

        pub(super) fn write(&self, page: usize, value: u8) {
            assert!(page * PAGE < self.len);
            // SAFETY: the address is inside our live read-write mapping.
            unsafe { *((self.base + page * PAGE) as *mut u8) = value };
        }

        fn read(&self, page: usize) -> u8 {
            assert!(page * PAGE < self.len);
            // SAFETY: the address is inside our live read-write mapping.
            unsafe { *((self.base + page * PAGE) as *const u8) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping `new` created, once.
            unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
        }
    }

    #[test]
    fn reports_exactly_the_pages_written_since_the_last_protect() {
        let tracker = match DirtyTracker::get() {
            Ok(tracker) => tracker,
            Err(reason) => {
                // Only machines that must track (CI sets the variable) fail.
                assert!(
                    std::env::var_os("CLEANSLATE_EXPECT_TRACKING").is_none(),
                    "{reason}"
                );
                return;
            }
        };
        let memory = Mapping::new(64);
        for page in 0..32 {
            memory.write(page, 1); // populated before tracking
        }
        tracker.track(memory.base, memory.len).unwrap();
        assert_eq!(tracker.written(memory.base, memory.len).unwrap().pages(), 0);

        memory.write(3, 2);
        memory.write(4, 2);
        memory.write(10, 2);
        let _ = memory.read(20); // reads do not count
        let _ = memory.read(50); // nor does reading untouched memory
        memory.write(40, 2); // first touch after tracking started
        let dirty = tracker.written(memory.base, memory.len).unwrap();
        assert_eq!(
            dirty.ranges,
            vec![
                3 * PAGE..5 * PAGE,
                10 * PAGE..11 * PAGE,
                40 * PAGE..41 * PAGE
            ]
        );

        tracker.protect(memory.base, &dirty).unwrap();
        assert_eq!(tracker.written(memory.base, memory.len).unwrap().pages(), 0);
        memory.write(4, 3);
        let dirty = tracker.written(memory.base, memory.len).unwrap();
        assert_eq!(dirty.ranges, vec![4 * PAGE..5 * PAGE]);
    }

    #[test]
    fn many_scattered_pages_are_all_found_once() {
        let Ok(tracker) = DirtyTracker::get() else {
            return;
        };
        let memory = Mapping::new(2048);
        for page in 0..2048 {
            memory.write(page, 1);
        }
        tracker.track(memory.base, memory.len).unwrap();
        // 700 isolated runs: more than one scan vector holds.
        let pages: Vec<usize> = (0..700).map(|i| i * 2 + 1).collect();
        for &p in &pages {
            memory.write(p, 9);
        }
        let dirty = tracker.written(memory.base, memory.len).unwrap();
        let found: Vec<usize> = dirty
            .ranges
            .iter()
            .flat_map(|r| (r.start / PAGE)..(r.end / PAGE))
            .collect();
        assert_eq!(found, pages);
        tracker.protect(memory.base, &dirty).unwrap();
        assert_eq!(tracker.written(memory.base, memory.len).unwrap().pages(), 0);
    }
}
