//! A memory's expected bytes read as zero past their end: a fresh
//! instance's memory beyond its data, or a snapshot's memory beyond the
//! size a call grew it past. Both reset paths compare and restore pages
//! against it.

use std::ops::Range;

use crate::tracking::PAGE;

/// A page of zeros to compare the bytes past the end with.
static ZEROS: [u8; PAGE] = [0; PAGE];

/// Bytes followed by zeros to any length.
pub(super) struct Padded<'a>(pub &'a [u8]);

impl Padded<'_> {
    /// Whether `self[range]` equals `other` (of the same length).
    pub(super) fn eq_at(&self, range: Range<usize>, other: &[u8]) -> bool {
        // Where the known bytes end, within the range.
        let known = self.0.len().clamp(range.start, range.end);
        let (head, tail) = other.split_at(known - range.start);
        let ours = self.0.get(range.start..known).unwrap_or(&[]);
        // Slice equality is a `memcmp`, many times faster than testing byte
        // by byte; empty slices are not compared at all, since a call of
        // `memcmp`/`memset` for no bytes measurably slows the reset's loop.
        ours == head && (tail.is_empty() || tail.chunks(PAGE).all(|c| c == &ZEROS[..c.len()]))
    }

    /// Write `self[range]` into `data[range]`.
    pub(super) fn copy_to(&self, data: &mut [u8], range: Range<usize>) {
        let known = self.0.len().clamp(range.start, range.end);
        if known > range.start {
            data[range.start..known].copy_from_slice(&self.0[range.start..known]);
        }
        // Only past the end: a `memset` of no bytes cost as much as a page's
        // copy here (measured: K = 16 resets took 1.5× as long with it).
        if known < range.end {
            data[known..range.end].fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_zero_past_their_end() {
        let padded = Padded(b"abc");
        assert!(padded.eq_at(1..5, b"bc\0\0"));
        assert!(!padded.eq_at(1..5, b"bc\0x"));
        assert!(padded.eq_at(10..10 + 2 * PAGE, &[0; 2 * PAGE]));
        let mut data = *b"xxxxxx";
        padded.copy_to(&mut data, 1..5);
        assert_eq!(&data, b"xbc\0\0x");
        padded.copy_to(&mut data, 4..6);
        assert_eq!(&data, b"xbc\0\0\0");
    }
}
