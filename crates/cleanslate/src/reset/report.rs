//! What a reset did, for the caller and for benchmarks.

use std::fmt;
use std::time::Duration;

/// Which mechanism put the sandbox back at its snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResetPath {
    /// The instance was replaced by a fresh one and the snapshot applied to
    /// it. Always correct; cost follows how much the snapshot differs from
    /// the module's initial state.
    FreshInstance,
}

impl ResetPath {
    /// The snake_case name used in CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetPath::FreshInstance => "fresh_instance",
        }
    }
}

impl fmt::Display for ResetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the last reset did.
///
/// ```
/// use cleanslate::{Runtime, Sandbox, ResetPath};
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(r#"(module (memory 1)
///     (func (export "poke") (i32.store (i32.const 64) (i32.const 1))))"#)?;
/// let mut sandbox = Sandbox::builder(&module).build()?;
/// sandbox.call("poke", &[])?;
/// let report = sandbox.last_reset().unwrap();
/// assert_eq!(report.path(), ResetPath::FreshInstance);
/// println!("reset took {:?}", report.duration());
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetReport {
    pub(crate) path: ResetPath,
    pub(crate) dirty_pages: u64,
    pub(crate) duration: Duration,
    pub(crate) verified: bool,
}

impl ResetReport {
    /// The mechanism that ran.
    pub fn path(&self) -> ResetPath {
        self.path
    }

    /// Host pages (4 KiB) of memory written back from the snapshot.
    pub fn dirty_pages(&self) -> u64 {
        self.dirty_pages
    }

    /// Wall time the reset took, including verification.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Whether the verifier re-checked the state against the snapshot.
    pub fn verified(&self) -> bool {
        self.verified
    }
}
