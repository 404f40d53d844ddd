//! What a fresh instance of the module holds in each memory, known from
//! the module alone: its active data segments applied to zeros. The fresh
//! reset path and snapshot capture compare memories against it page by page.

use std::ops::Range;
use std::sync::Arc;

use crate::memory::{ImageFile, LazyImageFile};

/// Granularity of memory comparison and copying: the host page size.
pub(crate) const HOST_PAGE: usize = 4096;

/// What a fresh instance holds in one memory's data extent: the active
/// data segments applied in order to zeros, as instantiation does. Kept as
/// the runs of bytes segments actually write (the last segment wins where
/// they overlap), so the host memory it costs follows the module's data,
/// never the offsets that data sits at.
#[derive(Debug, Default)]
pub(crate) struct InitialImage {
    /// Where the last segment ends: every byte from here on is zero.
    len: usize,
    /// Disjoint runs of bytes, sorted by offset; zero between them.
    runs: Vec<(usize, Box<[u8]>)>,
    /// The same bytes as a file to map, made on first use.
    file: LazyImageFile,
}

impl PartialEq for InitialImage {
    fn eq(&self, other: &Self) -> bool {
        (self.len, &self.runs) == (other.len, &other.runs)
    }
}

impl InitialImage {
    /// The image of `segments` (offset, bytes), applied in order. `None`
    /// when a segment ends beyond the address space (the module cannot be
    /// instantiated anyway).
    pub(crate) fn from_segments<'a>(
        segments: impl DoubleEndedIterator<Item = (u64, &'a [u8])>,
    ) -> Option<InitialImage> {
        // Later segments overwrite earlier ones: walk them from the last,
        // keeping of each only the parts no later segment covers. `covered`
        // maps the start of each covered span to its end; a span merges
        // with every span it overlaps, so each is visited once overall.
        let mut covered: std::collections::BTreeMap<usize, usize> = Default::default();
        let mut runs = Vec::new();
        let mut len = 0;
        for (offset, bytes) in segments.rev() {
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(bytes.len())?;
            len = len.max(end);
            if start == end {
                continue;
            }
            let overlapping: Vec<(usize, usize)> = covered
                .range(..end)
                .rev()
                .take_while(|(_, e)| **e > start)
                .map(|(s, e)| (*s, *e))
                .collect();
            let mut cursor = start;
            for &(s, e) in overlapping.iter().rev() {
                if s > cursor {
                    runs.push((cursor, bytes[cursor - start..s - start].into()));
                }
                cursor = cursor.max(e);
            }
            if cursor < end {
                runs.push((cursor, bytes[cursor - start..].into()));
            }
            let mut merged = start..end;
            for (s, e) in overlapping {
                covered.remove(&s);
                merged = merged.start.min(s)..merged.end.max(e);
            }
            covered.insert(merged.start, merged.end);
        }
        runs.sort_unstable_by_key(|(at, _)| *at);
        Some(InitialImage {
            len,
            runs,
            file: LazyImageFile::default(),
        })
    }

    /// The data extent: where the last segment ends.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The image as a sealed file, for mapping copy-on-write into a new
    /// instance's memory; made on first use.
    ///
    /// # Errors
    /// Why the system refused the file; the next use tries again.
    pub(crate) fn file(&self) -> Result<&Arc<ImageFile>, String> {
        let runs = self.runs.iter().map(|(at, bytes)| (*at, &bytes[..]));
        self.file.get_or_make(self.len, runs)
    }

    /// Write the image into `dst` (a memory's first bytes, all zero),
    /// as far as it reaches.
    pub(crate) fn write_to(&self, dst: &mut [u8]) {
        for (at, bytes) in &self.runs {
            let Some(room) = dst.len().checked_sub(*at) else {
                break;
            };
            let n = bytes.len().min(room);
            dst[*at..at + n].copy_from_slice(&bytes[..n]);
        }
    }

    /// Whether the image's bytes at `range` equal `other` (as long as the
    /// range): zero outside the runs, the runs' bytes inside.
    fn eq_at(&self, range: Range<usize>, other: &[u8]) -> bool {
        let first = self
            .runs
            .partition_point(|(at, bytes)| at + bytes.len() <= range.start);
        let mut cursor = range.start;
        for (at, bytes) in &self.runs[first..] {
            if *at >= range.end {
                break;
            }
            let run = (*at).max(range.start)..(at + bytes.len()).min(range.end);
            let zeros = &other[cursor - range.start..run.start - range.start];
            if zeros.iter().any(|b| *b != 0)
                || bytes[run.start - at..run.end - at]
                    != other[run.start - range.start..run.end - range.start]
            {
                return false;
            }
            cursor = run.end;
        }
        other[cursor - range.start..].iter().all(|b| *b == 0)
    }

    /// Host-page-aligned ranges where a fresh instance (this image) and
    /// `image` differ, merged when adjacent. Only `within` is compared:
    /// outside it the image is zero, and so is a fresh instance (whose
    /// non-zero bytes all lie in the data extent, which `within` covers).
    pub(crate) fn differing_ranges(
        &self,
        image: &[u8],
        within: &[Range<usize>],
    ) -> Vec<Range<usize>> {
        differing_pages(image, within, |range, bytes| self.eq_at(range, bytes))
    }
}

/// The host pages of `image` inside `within` where `same(range, bytes)` says
/// the other side differs, as ranges merged when adjacent.
pub(crate) fn differing_pages(
    image: &[u8],
    within: &[Range<usize>],
    mut same: impl FnMut(Range<usize>, &[u8]) -> bool,
) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for span in within {
        let span = span.start.min(image.len())..span.end.min(image.len());
        for start in span.clone().step_by(HOST_PAGE) {
            let end = (start + HOST_PAGE).min(span.end);
            if !same(start..end, &image[start..end]) {
                match ranges.last_mut() {
                    Some(last) if last.end == start => last.end = end,
                    _ => ranges.push(start..end),
                }
            }
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dense reference: segments applied in order to zeros.
    fn dense(segments: &[(u64, &[u8])]) -> Vec<u8> {
        let len = segments
            .iter()
            .map(|(at, b)| *at as usize + b.len())
            .max()
            .unwrap_or(0);
        let mut out = vec![0u8; len];
        for (at, bytes) in segments {
            out[*at as usize..*at as usize + bytes.len()].copy_from_slice(bytes);
        }
        out
    }

    #[test]
    fn initial_image_equals_segments_applied_in_order() {
        let cases: &[&[(u64, &[u8])]] = &[
            &[],
            &[(5, b"")],
            &[(0, b"abc")],
            &[(10, b"hello"), (12, b"XY")],
            &[(12, b"XY"), (10, b"hello")],
            &[
                (0, b"aaaaaa"),
                (2, b"bb"),
                (1, b"c"),
                (5, b"ddd"),
                (0, b"e"),
            ],
            &[(4, b"1234"), (0, b"zzzzzzzzzz"), (3, b"q")],
            &[(8190, b"across"), (4096, b"p"), (8191, b"!")],
        ];
        for segments in cases {
            let image = InitialImage::from_segments(segments.iter().copied()).unwrap();
            let want = dense(segments);
            assert_eq!(image.len(), want.len(), "{segments:?}");
            let mut got = vec![0u8; want.len() + 7];
            image.write_to(&mut got);
            assert_eq!(&got[..want.len()], &want[..], "{segments:?}");
            assert!(got[want.len()..].iter().all(|b| *b == 0));
            let held: usize = image.runs.iter().map(|(_, b)| b.len()).sum();
            let given: usize = segments.iter().map(|(_, b)| b.len()).sum();
            assert!(held <= given, "{segments:?}");
            // Comparison agrees with the dense bytes at every range between
            // the points where something starts or ends (and their
            // neighbours).
            let mut points: Vec<usize> = vec![0, want.len()];
            for (at, bytes) in segments.iter() {
                for p in [*at as usize, *at as usize + bytes.len()] {
                    points.extend([p.saturating_sub(1), p, p + 1]);
                }
            }
            points.retain(|p| *p <= want.len());
            points.sort_unstable();
            points.dedup();
            for &start in &points {
                for &end in points.iter().filter(|e| **e >= start) {
                    assert!(image.eq_at(start..end, &want[start..end]));
                    let mut other = want[start..end].to_vec();
                    if let Some(b) = other.last_mut() {
                        *b ^= 1;
                        assert!(
                            !image.eq_at(start..end, &other),
                            "{segments:?} {start}..{end}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn initial_image_of_far_offsets_holds_only_its_bytes() {
        let image = InitialImage::from_segments([(268_435_455u64, &b"x"[..])].into_iter()).unwrap();
        assert_eq!(image.len(), 268_435_456);
        assert_eq!(image.runs.len(), 1);
        assert!(InitialImage::from_segments([(u64::MAX, &b"x"[..])].into_iter()).is_none());
        // Differences against a memory-sized image are found page by page.
        let mut memory = vec![0u8; 3 * HOST_PAGE];
        let image = InitialImage::from_segments([(5u64, &b"ab"[..])].into_iter()).unwrap();
        assert_eq!(
            image.differing_ranges(&memory, std::slice::from_ref(&(0..memory.len()))),
            vec![0..HOST_PAGE]
        );
        memory[5] = b'a';
        memory[6] = b'b';
        assert!(
            image
                .differing_ranges(&memory, std::slice::from_ref(&(0..memory.len())))
                .is_empty()
        );
        memory[2 * HOST_PAGE + 1] = 1;
        assert_eq!(
            image.differing_ranges(&memory, std::slice::from_ref(&(0..memory.len()))),
            vec![2 * HOST_PAGE..3 * HOST_PAGE]
        );
    }
}
