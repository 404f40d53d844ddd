//! What a reset of a module will cover on this machine, known before any
//! sandbox is built: which reset path its calls take and what sends them to
//! the fresh-instance path. For tools (`cleanslate inspect`) and embedders
//! deciding how to run a module.

use crate::engine::runtime::Runtime;
use crate::module::Module;
use crate::reset::FallbackReason;
use crate::tracking::DirtyTracker;

/// How resets of this module will run on this machine.
///
/// ```
/// use cleanslate::Runtime;
/// let module = Runtime::new()?.load_bytes(r#"(module (memory 1) (table 1 funcref)
///     (func (export "grow") (drop (table.grow (ref.null func) (i32.const 1)))))"#)?;
/// let coverage = module.reset_coverage();
/// assert!(coverage
///     .fallbacks()
///     .iter()
///     .any(|(reason, _)| *reason == cleanslate::FallbackReason::TableResized));
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetCoverage {
    in_place: Result<(), String>,
    fallbacks: Vec<(FallbackReason, &'static str)>,
    notes: Vec<&'static str>,
}

impl ResetCoverage {
    /// `Ok` when calls reset in place by default on this machine; otherwise
    /// why every reset takes the fresh-instance path.
    ///
    /// # Errors
    ///
    /// `Err` with a sentence saying why, when resets of this module cannot
    /// run in place on this machine: write tracking is unavailable (the
    /// same sentence as [`InPlaceResets::reason`]: a seccomp filter refuses
    /// `userfaultfd`, the kernel is too old, ...), or a memory is not a
    /// whole number of host pages. Every call then resets through a fresh
    /// instance.
    pub fn in_place(&self) -> Result<(), &str> {
        self.in_place.as_ref().map(|_| ()).map_err(|e| e.as_str())
    }

    /// What a call of this module can do that sends its reset down the
    /// fresh-instance path, with when it happens.
    pub fn fallbacks(&self) -> &[(FallbackReason, &'static str)] {
        &self.fallbacks
    }

    /// Other facts about what the reset covers.
    pub fn notes(&self) -> &[&'static str] {
        &self.notes
    }
}

/// Whether this machine lets resets run in place, and why: the machine's
/// half of [`ResetCoverage`], the same for every module. In place needs
/// Linux 6.7+ with user-mode `userfaultfd` (asynchronous write-protect) and
/// `PAGEMAP_SCAN` permitted, and 4 KiB pages; where any is missing every
/// reset replaces the instance instead, and [`reason`](Self::reason) says
/// which (for example a container's default seccomp profile refusing
/// `userfaultfd`, or a kernel too old) and what to do about it.
///
/// ```
/// use cleanslate::Runtime;
/// let resets = Runtime::new()?.in_place_resets();
/// if resets.available() {
///     println!("resets run in place: {}", resets.reason());
/// } else {
///     eprintln!("every reset replaces the instance: {}", resets.reason());
/// }
/// assert!(!resets.reason().is_empty());
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InPlaceResets {
    available: bool,
    reason: &'static str,
}

impl InPlaceResets {
    /// Whether calls reset in place on this machine (unless something a
    /// call did, or its module, sends a reset to the fresh-instance path;
    /// see [`Module::reset_coverage`]).
    pub fn available(&self) -> bool {
        self.available
    }

    /// One sentence saying why: what works here when resets run in place,
    /// otherwise what this machine refuses (seccomp filter, kernel release,
    /// permission, page size), what it costs and how to fix it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl Runtime {
    /// Whether this machine lets resets run in place, and why. Probed once
    /// per process; every runtime gives the same answer.
    ///
    /// ```
    /// let runtime = cleanslate::Runtime::new()?;
    /// assert_eq!(runtime.in_place_resets(), runtime.in_place_resets());
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn in_place_resets(&self) -> InPlaceResets {
        match DirtyTracker::availability() {
            Ok(reason) => InPlaceResets {
                available: true,
                reason,
            },
            Err(reason) => InPlaceResets {
                available: false,
                reason,
            },
        }
    }
}

impl Module {
    /// Which reset path calls of this module will take, and why.
    pub fn reset_coverage(&self) -> ResetCoverage {
        let layout = &self.inner.layout;
        let mutations = &layout.mutations;
        let mut fallbacks = Vec::new();
        if mutations.table_write {
            fallbacks.push((
                FallbackReason::TableResized,
                "after a call that grew a table (the module writes tables)",
            ));
        }
        if mutations.data_drop || mutations.elem_drop {
            fallbacks.push((
                FallbackReason::SegmentDropped,
                "after a call that dropped a passive segment (the module has data.drop or elem.drop)",
            ));
        }
        let mut notes = vec!["memory: only the pages a call wrote are copied back"];
        if mutations.memory_grow {
            notes.push(
                "a memory a call grew is lowered back in place: its grown pages are cleared and made inaccessible again",
            );
        }
        if layout.globals.iter().any(|g| g.mutable) {
            notes.push("mutable globals (exported or not) are restored after every call");
        }
        if mutations.table_write {
            notes.push("table slots a call changed are restored in place");
        }
        if self.uses_wasi() {
            notes.push(
                "WASI: every call gets a fresh context (no fd, buffer or RNG state survives)",
            );
        }
        // Tracking works in whole host pages. A memory that ends inside one
        // (a custom page size) is tracked all the same: its region is
        // registered as far as it can grow, whole pages, and the bytes of
        // its last host page past its end are compared and cleared with
        // the rest (reset/in_place.rs).
        let in_place = DirtyTracker::availability()
            .map(|_| ())
            .map_err(str::to_string);
        ResetCoverage {
            in_place,
            fallbacks,
            notes,
        }
    }
}
