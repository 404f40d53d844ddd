//! Hot and cold pages: which pages stay write-protected between calls.
//!
//! A protected page costs a minor fault (~1.5 µs here) the first time each
//! call writes it; copying a page back costs ~0.3 µs. Pages a guest writes
//! on every call (its stack, the start of its heap, I/O buffers) would pay
//! that fault every call, so they are left unprotected ("hot"): the scan
//! then reports them on every reset, and the reset compares each with the
//! snapshot and copies back only those that differ. A hot page that comes
//! back unchanged for several resets in a row is protected again ("cold").
//!
//! Why this stays exact: an unprotected page always reports as written, so
//! every hot page is examined at every reset; a cold page is protected, so
//! any write to it is reported. Either way, no changed page is missed.

use std::collections::BTreeSet;

use super::{DirtyPages, PAGE};

/// A cold page written at two resets in a row becomes hot.
const PROMOTE_AFTER_CONSECUTIVE: u32 = 2;
/// A hot page found unchanged this many resets in a row becomes cold.
const DEMOTE_AFTER_UNCHANGED: u8 = 8;

/// Per-page state for one tracked memory.
#[derive(Debug, Default)]
pub(crate) struct PageHeat {
    /// 0: cold (protected). n > 0: hot, found unchanged n - 1 resets in a row.
    hot: Vec<u8>,
    /// The reset at which each cold page was last found written.
    last_written: Vec<u32>,
    /// Resets so far (wrapping; a wrap costs at most one early promotion).
    generation: u32,
    /// The hot pages, in order: a reset that needs no scan examines these.
    hot_set: BTreeSet<u32>,
}

/// How the reset restores one reported page.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Restore {
    /// Compare with the snapshot and copy back if different; keep unprotected.
    IfChanged,
    /// Copy back and keep unprotected (just promoted to hot).
    KeepHot,
    /// Copy back, then protect.
    ThenProtect,
}

impl PageHeat {
    pub(crate) fn new(pages: usize) -> PageHeat {
        PageHeat {
            hot: vec![0; pages],
            last_written: vec![u32::MAX; pages],
            generation: 0,
            hot_set: BTreeSet::new(),
        }
    }

    /// Cover pages up to `pages` (a memory grew): the new pages start cold,
    /// which they are — never written, or protected when last restored.
    pub(crate) fn cover(&mut self, pages: usize) {
        if pages > self.hot.len() {
            self.hot.resize(pages, 0);
            self.last_written.resize(pages, u32::MAX);
        }
    }

    /// Start a reset.
    pub(crate) fn next_reset(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Decide for a page the scan reported as written.
    pub(crate) fn on_written(&mut self, page: usize) -> Restore {
        if page >= self.hot.len() {
            return Restore::ThenProtect;
        }
        if self.hot[page] > 0 {
            return Restore::IfChanged;
        }
        let consecutive =
            self.last_written[page] == self.generation.wrapping_sub(PROMOTE_AFTER_CONSECUTIVE - 1);
        self.last_written[page] = self.generation;
        if consecutive {
            self.hot[page] = 1;
            self.hot_set.insert(page as u32);
            Restore::KeepHot
        } else {
            Restore::ThenProtect
        }
    }

    /// Record whether a hot page had changed; returns true when it should
    /// now be protected (demoted to cold).
    pub(crate) fn on_hot_compared(&mut self, page: usize, changed: bool) -> bool {
        if changed {
            self.hot[page] = 1;
            return false;
        }
        self.hot[page] = self.hot[page].saturating_add(1);
        if self.hot[page] > DEMOTE_AFTER_UNCHANGED {
            self.hot[page] = 0;
            self.hot_set.remove(&(page as u32));
            return true;
        }
        false
    }

    /// The hot pages as byte ranges: what a scan would report if nothing
    /// else was written (every hot page is unprotected, so it always
    /// reports as written).
    pub(crate) fn hot_runs(&self) -> DirtyPages {
        let mut runs = DirtyPages::default();
        for &page in &self.hot_set {
            runs.push_page(page as usize * PAGE);
        }
        runs
    }

    /// Number of hot pages (for tests and reports).
    #[cfg(test)]
    pub(crate) fn hot_pages(&self) -> usize {
        let count = self.hot.iter().filter(|h| **h > 0).count();
        assert_eq!(count, self.hot_set.len(), "the hot set lost track");
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_written_every_reset_turns_hot_and_cools_when_left_alone() {
        let mut heat = PageHeat::new(8);
        heat.next_reset();
        assert_eq!(heat.on_written(3), Restore::ThenProtect);
        heat.next_reset();
        assert_eq!(heat.on_written(3), Restore::KeepHot);
        assert_eq!(heat.hot_pages(), 1);
        assert_eq!(heat.hot_runs().ranges, vec![3 * PAGE..4 * PAGE]);
        heat.next_reset();
        assert_eq!(heat.on_written(3), Restore::IfChanged);
        assert!(!heat.on_hot_compared(3, true));
        let mut demoted = false;
        for _ in 0..DEMOTE_AFTER_UNCHANGED {
            heat.next_reset();
            assert_eq!(heat.on_written(3), Restore::IfChanged);
            demoted = heat.on_hot_compared(3, false);
        }
        assert!(
            demoted,
            "unchanged for {DEMOTE_AFTER_UNCHANGED} resets: protect again"
        );
        assert_eq!(heat.hot_pages(), 0);
        assert!(heat.hot_runs().ranges.is_empty());
    }

    #[test]
    fn writes_with_a_gap_do_not_promote() {
        let mut heat = PageHeat::new(8);
        heat.next_reset();
        assert_eq!(heat.on_written(1), Restore::ThenProtect);
        heat.next_reset(); // not written at this reset
        heat.next_reset();
        assert_eq!(heat.on_written(1), Restore::ThenProtect);
        assert_eq!(heat.hot_pages(), 0);
    }
}
