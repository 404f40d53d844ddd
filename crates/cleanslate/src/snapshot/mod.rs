//! Snapshots: the clean slate a sandbox returns to.

mod file;
pub(crate) mod image;

use std::fmt;
use std::sync::Arc;

pub(crate) use image::SnapshotImage;

/// A sandbox's complete guest state (memory bytes and sizes, globals, tables,
/// dropped segments) at one moment.
///
/// Take one with [`Sandbox::snapshot`](crate::Sandbox::snapshot) or
/// [`Session::snapshot`](crate::Session::snapshot); make it the sandbox's
/// clean slate with [`Sandbox::restore`](crate::Sandbox::restore). Two
/// snapshots compare equal when they hold the same state, even when taken
/// from different sandboxes of the same module.
///
/// ```
/// use cleanslate::{Runtime, Sandbox};
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(r#"(module (global $n (mut i32) (i32.const 0))
///     (func (export "bump") (result i32)
///         (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#)?;
/// let mut sandbox = Sandbox::builder(&module).build()?;
/// let clean = sandbox.snapshot()?;
/// {
///     let mut session = sandbox.session();
///     session.call("bump", &[])?;
///     let bumped = session.snapshot()?;
///     assert_ne!(bumped, clean);
/// }
/// assert_eq!(sandbox.snapshot()?, clean, "the session's changes are gone");
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) image: Arc<SnapshotImage>,
    /// Identity of the module it belongs to.
    pub(crate) module_id: ModuleIdentity,
}

/// Which loaded module a snapshot belongs to. A weak reference rather than
/// an address: it keeps the module's allocation (not its compiled code)
/// from being freed, so no module loaded later can ever share the identity
/// of one that is gone.
#[derive(Clone)]
pub(crate) struct ModuleIdentity(std::sync::Weak<crate::module::ModuleInner>);

impl ModuleIdentity {
    pub(crate) fn of(module: &crate::module::Module) -> ModuleIdentity {
        ModuleIdentity(Arc::downgrade(&module.inner))
    }

    /// The module, unless it has been dropped.
    pub(crate) fn module(&self) -> Option<Arc<crate::module::ModuleInner>> {
        self.0.upgrade()
    }
}

impl PartialEq for ModuleIdentity {
    fn eq(&self, other: &ModuleIdentity) -> bool {
        self.0.ptr_eq(&other.0)
    }
}

impl Snapshot {
    /// Bytes of linear memory the snapshot holds.
    pub fn memory_bytes(&self) -> usize {
        self.image.memory_bytes()
    }

    /// Sizes in bytes of each linear memory.
    pub fn memory_sizes(&self) -> Vec<usize> {
        self.image.memories.iter().map(|m| m.bytes.len()).collect()
    }

    /// The bytes of memory `index` (0 for the first memory).
    pub fn memory(&self, index: usize) -> Option<&[u8]> {
        self.image.memories.get(index).map(|m| m.bytes.as_slice())
    }

    /// Describe how `other` differs from this snapshot (empty when equal).
    /// At most a handful of differences are listed.
    pub fn differences(&self, other: &Snapshot) -> Vec<String> {
        let (a, b) = (&*self.image, &*other.image);
        let mut out = Vec::new();
        if a.memories.len() != b.memories.len() {
            out.push(format!(
                "{} memories vs {}",
                a.memories.len(),
                b.memories.len()
            ));
        }
        for (i, (ma, mb)) in a.memories.iter().zip(&b.memories).enumerate() {
            if ma.bytes.len() != mb.bytes.len() {
                out.push(format!(
                    "memory {i} size {} vs {} bytes",
                    ma.bytes.len(),
                    mb.bytes.len()
                ));
            }
            if let Some(at) = ma.bytes.iter().zip(&mb.bytes).position(|(x, y)| x != y) {
                out.push(format!("memory {i} differs first at byte {at:#x}"));
            }
        }
        for ((ia, va), (_, vb)) in a.globals.iter().zip(&b.globals) {
            if va != vb {
                out.push(format!("global {ia}: {va:?} vs {vb:?}"));
            }
        }
        for (i, (ta, tb)) in a.tables.iter().zip(&b.tables).enumerate() {
            if ta != tb {
                out.push(format!(
                    "table {i} differs (sizes {} vs {})",
                    ta.elements.len(),
                    tb.elements.len()
                ));
            }
        }
        if a.dropped_data != b.dropped_data {
            out.push(format!(
                "dropped data segments {:?} vs {:?}",
                a.dropped_data, b.dropped_data
            ));
        }
        if a.dropped_elements != b.dropped_elements {
            out.push(format!(
                "dropped element segments {:?} vs {:?}",
                a.dropped_elements, b.dropped_elements
            ));
        }
        out.truncate(8);
        out
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Snapshot) -> bool {
        self.differences(other).is_empty()
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("memory_sizes", &self.memory_sizes())
            .field("globals", &self.image.globals)
            .field("tables", &self.image.tables.len())
            .finish()
    }
}
