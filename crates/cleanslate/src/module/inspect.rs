//! What a module holds and what a reset of it must cover, for tools
//! (`cleanslate inspect`) and embedders deciding how to run it.

use crate::module::Module;
use crate::reset::FallbackReason;
use crate::reset::dirty::{DirtyTracker, PAGE};
use crate::value::ValType;

/// A memory the module defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Size at instantiation, in bytes.
    pub initial_bytes: u64,
    /// The declared maximum, in bytes (the sandbox's memory limit applies
    /// on top of it).
    pub maximum_bytes: Option<u64>,
    /// A 64-bit memory (memory64).
    pub memory64: bool,
    /// How far active data segments initialise it, in bytes, when known.
    pub data_bytes: Option<u64>,
}

/// A table the module defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// Elements at instantiation.
    pub initial_elements: u64,
    /// The declared maximum.
    pub maximum_elements: Option<u64>,
    /// Holds function references.
    pub funcref: bool,
}

/// A global the module defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalInfo {
    /// Its type.
    pub ty: ValType,
    /// Whether code can change it (every mutable global is restored).
    pub mutable: bool,
}

/// How resets of this module will run on this machine.
///
/// ```
/// use cleanslate::Runtime;
/// let module = Runtime::new()?.load_bytes(r#"(module (memory 1)
///     (func (export "grow") (drop (memory.grow (i32.const 1)))))"#)?;
/// let coverage = module.reset_coverage();
/// assert!(coverage
///     .fallbacks()
///     .iter()
///     .any(|(reason, _)| *reason == cleanslate::FallbackReason::MemoryGrew));
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

impl Module {
    /// The memories the module defines.
    pub fn memories(&self) -> Vec<MemoryInfo> {
        self.inner
            .layout
            .memories
            .iter()
            .map(|m| MemoryInfo {
                initial_bytes: m.initial_bytes,
                maximum_bytes: m.maximum_bytes,
                memory64: m.memory64,
                data_bytes: m.data_extent,
            })
            .collect()
    }

    /// The tables the module defines.
    pub fn tables(&self) -> Vec<TableInfo> {
        self.inner
            .layout
            .tables
            .iter()
            .map(|t| TableInfo {
                initial_elements: t.initial_elements,
                maximum_elements: t.maximum_elements,
                funcref: t.funcref,
            })
            .collect()
    }

    /// The globals the module defines.
    pub fn globals(&self) -> Vec<GlobalInfo> {
        self.inner
            .layout
            .globals
            .iter()
            .map(|g| GlobalInfo {
                ty: g.ty,
                mutable: g.mutable,
            })
            .collect()
    }

    /// The WebAssembly proposals (beyond 1.0) the module uses, by their
    /// usual names, e.g. `"bulk-memory"`, `"simd"`, `"exception-handling"`.
    /// Validates the module once per proposal Cleanslate accepts, so it
    /// costs several validations of the module.
    ///
    /// ```
    /// # let runtime = cleanslate::Runtime::new()?;
    /// let module = runtime.load_bytes(r#"(module
    ///     (memory 1)
    ///     (func (export "fill") (memory.fill (i32.const 0) (i32.const 0) (i32.const 8))))"#)?;
    /// assert_eq!(module.proposals(), ["bulk-memory"]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn proposals(&self) -> Vec<&'static str> {
        super::features::proposals_used(&self.inner.instrumented)
    }

    /// Whether the module imports WASI preview 1.
    pub fn uses_wasi(&self) -> bool {
        self.inner
            .layout
            .function_imports
            .iter()
            .any(|i| crate::wasi::is_wasi_module(&i.module))
    }

    /// Which reset path calls of this module will take, and why.
    pub fn reset_coverage(&self) -> ResetCoverage {
        let layout = &self.inner.layout;
        let mutations = &layout.mutations;
        let mut fallbacks = Vec::new();
        if mutations.memory_grow {
            fallbacks.push((
                FallbackReason::MemoryGrew,
                "after a call that grew a memory (the module has memory.grow)",
            ));
        }
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
        // Tracking works in whole host pages: a memory that ends inside one
        // (a custom page size) cannot be tracked, and the sandbox resets by
        // replacing the instance (`tracking_unavailable`).
        let partial_page = layout
            .memories
            .iter()
            .find(|m| m.initial_bytes % PAGE as u64 != 0);
        let in_place = match (DirtyTracker::get(), partial_page) {
            (Err(why), _) => Err(why.to_string()),
            (Ok(_), Some(m)) => Err(format!(
                "memory {} is {} bytes, not a whole number of 4 KiB host pages (a custom page size): writes to it cannot be tracked, so every reset replaces the instance",
                m.index, m.initial_bytes
            )),
            (Ok(_), None) => Ok(()),
        };
        ResetCoverage {
            in_place,
            fallbacks,
            notes,
        }
    }
}
