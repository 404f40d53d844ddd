//! Raw Linux interfaces for finding written pages: `userfaultfd` in
//! asynchronous write-protect mode and the `PAGEMAP_SCAN` ioctl (Linux 6.7+).
//!
//! The installed kernel headers predate these, so the constants and structs
//! are defined here from the kernel's UAPI (`linux/userfaultfd.h`,
//! `linux/fs.h`). Each `unsafe` block is one syscall or ioctl with a pointer
//! to a correctly sized, live struct of ours.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rustix::ioctl::opcode;

const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFD_API: u64 = 0xaa;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// The userfaultfd ioctl group (`UFFDIO` in `linux/userfaultfd.h`).
const UFFDIO: u8 = 0xaa;
// Request numbers as the kernel's `_IOWR` builds them, from the structs'
// sizes: a struct of the wrong size gives a number the kernel rejects,
// instead of a hand-typed constant that silently disagrees.
const UFFDIO_API: libc::c_ulong = opcode::read_write::<UffdioApi>(UFFDIO, 0x3f) as libc::c_ulong;
const UFFDIO_REGISTER: libc::c_ulong =
    opcode::read_write::<UffdioRegister>(UFFDIO, 0x00) as libc::c_ulong;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT: libc::c_ulong =
    opcode::read_write::<UffdioWriteprotect>(UFFDIO, 0x06) as libc::c_ulong;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

/// `_IOWR('f', 16, struct pm_scan_arg)` in `linux/fs.h`.
const PAGEMAP_SCAN: libc::c_ulong = opcode::read_write::<PmScanArg>(b'f', 16) as libc::c_ulong;
pub(crate) const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub(crate) const PAGE_IS_FILE: u64 = 1 << 2;
pub(crate) const PAGE_IS_PRESENT: u64 = 1 << 3;
pub(crate) const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub(crate) const PAGE_IS_PFNZERO: u64 = 1 << 5;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// `struct pm_scan_arg` (96 bytes).
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`: a run of pages with the same categories.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

const _: () = assert!(std::mem::size_of::<PmScanArg>() == 96);
const _: () = assert!(std::mem::size_of::<UffdioApi>() == 24);
const _: () = assert!(std::mem::size_of::<UffdioRegister>() == 32);
const _: () = assert!(std::mem::size_of::<UffdioWriteprotect>() == 24);
const _: () = assert!(std::mem::size_of::<PageRegion>() == 24);

/// A userfaultfd handshaken for asynchronous write-protection: writes to
/// protected pages are resolved by the kernel without a message to us, and
/// only clear the page's protection bit, which `PAGEMAP_SCAN` reports.
pub(crate) struct Userfault {
    fd: OwnedFd,
}

impl Userfault {
    pub(crate) fn open() -> io::Result<Userfault> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY;
        // SAFETY: userfaultfd takes only an integer flags argument and
        // returns a new descriptor or -1; no memory is passed.
        let raw = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor the kernel just created for us and
        // nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_ASYNC,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes exactly one `uffdio_api`
        // (24 bytes, asserted above), which `api` is, alive for the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api as *mut UffdioApi) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Userfault { fd })
    }

    /// Register `[start, start+len)` for write-protect tracking.
    pub(crate) fn register(&self, start: usize, len: usize) -> io::Result<()> {
        let mut register = UffdioRegister {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one `uffdio_register`
        // (32 bytes), which `register` is. The kernel validates the range
        // (it must be mapped, page aligned and of a supported kind) and fails
        // the call otherwise; registration changes no memory contents.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                UFFDIO_REGISTER,
                &mut register as *mut UffdioRegister,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Write-protect the present pages of `[start, start+len)`, so the next
    /// write to each is recorded.
    pub(crate) fn protect(&self, start: usize, len: usize) -> io::Result<()> {
        let mut wp = UffdioWriteprotect {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: UFFDIO_WRITEPROTECT_MODE_WP,
        };
        // SAFETY: UFFDIO_WRITEPROTECT reads one `uffdio_writeprotect`
        // (24 bytes), which `wp` is. It only changes page-table protection of
        // a registered range; contents are untouched, and in async mode a
        // later write is resolved by the kernel, never blocked.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                UFFDIO_WRITEPROTECT,
                &mut wp as *mut UffdioWriteprotect,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// An open `/proc/self/pagemap`, the file `PAGEMAP_SCAN` is issued on.
pub(crate) struct Pagemap {
    fd: OwnedFd,
}

/// What to look for in a scan.
pub(crate) struct ScanQuery {
    /// Categories every reported page must have (after inversion).
    pub required: u64,
    /// Categories that are required to be *absent* (inverted before test).
    pub absent: u64,
    /// At least one of these categories is required (0: no such test).
    pub any_of: u64,
}

impl Pagemap {
    pub(crate) fn open() -> io::Result<Pagemap> {
        let file = std::fs::File::open("/proc/self/pagemap")?;
        Ok(Pagemap { fd: file.into() })
    }

    /// Scan `[start, end)` for pages matching `query`, writing runs into
    /// `out`. Returns how many entries of `out` were filled and the address
    /// where the walk stopped.
    pub(crate) fn scan(
        &self,
        start: usize,
        end: usize,
        query: &ScanQuery,
        out: &mut [PageRegion],
    ) -> io::Result<(usize, usize)> {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: 0,
            start: start as u64,
            end: end as u64,
            walk_end: 0,
            vec: out.as_mut_ptr() as u64,
            vec_len: out.len() as u64,
            max_pages: 0,
            category_inverted: query.absent,
            category_mask: query.required | query.absent,
            category_anyof_mask: query.any_of,
            return_mask: query.required | query.any_of,
        };
        // SAFETY: PAGEMAP_SCAN reads and updates one `pm_scan_arg` (96 bytes,
        // asserted above), which `arg` is, and writes at most `vec_len`
        // `page_region`s to `vec`, which points at `out` of exactly that
        // length, mutably borrowed for the call. It only reads page tables
        // of the range; no memory contents change (no WP_MATCHING flag).
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                PAGEMAP_SCAN,
                &mut arg as *mut PmScanArg,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(((rc as usize).min(out.len()), arg.walk_end as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived request numbers are the kernel's (from its UAPI headers
    /// on x86_64 and aarch64).
    #[test]
    fn ioctl_request_numbers_match_the_kernel() {
        assert_eq!(PAGEMAP_SCAN, 0xc060_6610);
        assert_eq!(UFFDIO_API, 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER, 0xc020_aa00);
        assert_eq!(UFFDIO_WRITEPROTECT, 0xc018_aa06);
    }
}
