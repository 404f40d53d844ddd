//! A memory's contents as a sealed in-memory file, for copy-on-write
//! mappings: every instance mapped from it shares its pages until it
//! writes them, as the engine's own images do.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};

use rustix::fs::{MemfdFlags, SealFlags};

use super::{HOST_PAGE, round_up_to_page};

/// An image made on first use and kept. A failure is not kept: it may
/// pass (descriptors or memory short), so the next use tries again.
#[derive(Debug, Default)]
pub(crate) struct LazyImageFile(OnceLock<Arc<ImageFile>>);

impl LazyImageFile {
    /// The image, made now from `len` and `runs` (as [`ImageFile::new`])
    /// unless it was made before.
    ///
    /// # Errors
    /// Why the system refused the file this time.
    pub(crate) fn get_or_make<'a>(
        &self,
        len: usize,
        runs: impl Iterator<Item = (usize, &'a [u8])>,
    ) -> Result<&Arc<ImageFile>, String> {
        if let Some(file) = self.0.get() {
            return Ok(file);
        }
        let file = ImageFile::new(len, runs).map_err(|e| e.to_string())?;
        Ok(self.0.get_or_init(|| Arc::new(file)))
    }
}

/// Memory contents in a `memfd`, sealed against every change once written.
#[derive(Debug)]
pub(crate) struct ImageFile {
    file: File,
    /// Bytes, a multiple of the host page size.
    len: usize,
    /// The byte ranges that hold data, in order; the file is zero outside.
    populated: Vec<std::ops::Range<usize>>,
}

impl ImageFile {
    /// An image `len` bytes long (rounded up to whole host pages), zero
    /// except where `runs` (offset, bytes) put bytes. Pages of a run that
    /// are all zero are left out, so the file holds only the memory's
    /// non-zero pages.
    ///
    /// # Errors
    /// The system refuses the file (no memfd support, memory exhausted), or
    /// a run ends beyond `len`.
    pub(crate) fn new<'a>(
        len: usize,
        runs: impl Iterator<Item = (usize, &'a [u8])>,
    ) -> io::Result<ImageFile> {
        let len = round_up_to_page(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "image too large"))?;
        let fd = rustix::fs::memfd_create(
            "cleanslate-memory-image",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        let file = File::from(fd);
        file.set_len(len as u64)?;
        let mut populated = Vec::new();
        for (offset, bytes) in runs {
            if offset.checked_add(bytes.len()).is_none_or(|end| end > len) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} bytes at offset {offset} do not fit an image of {len} bytes",
                        bytes.len()
                    ),
                ));
            }
            write_non_zero(&file, offset, bytes, &mut populated)?;
        }
        // No one can change the image from now on, through this descriptor
        // or any other: every instance mapped from it sees these bytes.
        rustix::fs::fcntl_add_seals(
            &file,
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
        )?;
        populated.sort_unstable_by_key(|r: &std::ops::Range<usize>| r.start);
        Ok(ImageFile {
            file,
            len,
            populated,
        })
    }

    /// Read the image into `dst`, its first `dst.len()` bytes, where `dst`
    /// is all zero: only the ranges holding data are read.
    ///
    /// # Errors
    /// The read fails (it cannot, short of the system running out of
    /// memory: the file is in memory).
    pub(crate) fn read_into(&self, dst: &mut [u8]) -> io::Result<()> {
        for range in &self.populated {
            let end = range.end.min(dst.len());
            if range.start < end {
                self.file
                    .read_exact_at(&mut dst[range.start..end], range.start as u64)?;
            }
        }
        Ok(())
    }

    /// Bytes, a multiple of the host page size.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Write `bytes` at `offset`, skipping the host-page-aligned chunks that
/// are all zero (the file reads zero there already).
fn write_non_zero(
    file: &File,
    offset: usize,
    bytes: &[u8],
    populated: &mut Vec<std::ops::Range<usize>>,
) -> io::Result<()> {
    let mut write = |run: std::ops::Range<usize>| {
        populated.push(offset + run.start..offset + run.end);
        file.write_all_at(&bytes[run.clone()], (offset + run.start) as u64)
    };
    let mut pending: Option<std::ops::Range<usize>> = None;
    let mut at = 0;
    while at < bytes.len() {
        // Chunks end at the file's host page boundaries.
        let page_end = ((offset + at) / HOST_PAGE + 1) * HOST_PAGE;
        let end = (page_end - offset).min(bytes.len());
        if bytes[at..end].iter().any(|b| *b != 0) {
            pending = Some(pending.map_or(at, |run| run.start)..end);
        } else if let Some(run) = pending.take() {
            write(run)?;
        }
        at = end;
    }
    match pending {
        Some(run) => write(run),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(image: &ImageFile) -> Vec<u8> {
        let mut out = vec![0xAA; image.len()];
        image.file.read_exact_at(&mut out, 0).unwrap();
        out
    }

    #[test]
    fn an_image_holds_its_runs_on_zeros_and_is_sealed() {
        let mut page = vec![0u8; 3 * HOST_PAGE];
        page[10] = 1;
        page[2 * HOST_PAGE + 5] = 2; // the middle page stays all zero
        let image = ImageFile::new(
            5 * HOST_PAGE + 1,
            [(HOST_PAGE, &page[..]), (100, &b"xyz"[..])].into_iter(),
        )
        .unwrap();
        assert_eq!(image.len(), 6 * HOST_PAGE, "rounded up to pages");
        let bytes = read_all(&image);
        let mut expected = vec![0u8; 6 * HOST_PAGE];
        expected[HOST_PAGE..4 * HOST_PAGE].copy_from_slice(&page);
        expected[100..103].copy_from_slice(b"xyz");
        assert!(bytes == expected);
        let mut back = vec![0u8; 6 * HOST_PAGE];
        image.read_into(&mut back).unwrap();
        assert!(back == expected, "read back through its populated ranges");
        let mut short = vec![0u8; HOST_PAGE + 11];
        image.read_into(&mut short).unwrap();
        assert!(short[..] == expected[..HOST_PAGE + 11]);
        assert!(image.file.write_all_at(b"no", 0).is_err(), "sealed");
        assert!(image.file.set_len(0).is_err(), "sealed");
    }

    #[test]
    fn a_run_past_the_end_is_refused() {
        let err = ImageFile::new(HOST_PAGE, [(HOST_PAGE - 1, &b"ab"[..])].into_iter()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
