//! The clean-slate check every target makes after every call.

use cleanslate::{Sandbox, Snapshot, Status};

use crate::Finding;

/// The sandbox is `Ready` and its state equals `oracle` (the snapshot of an
/// independently built twin): memory bytes and sizes, globals, tables,
/// segments. `call` describes the call just made, for the finding.
pub(crate) fn assert_clean(
    sandbox: &mut Sandbox,
    oracle: &Snapshot,
    call: impl Fn() -> String,
) -> Result<(), Finding> {
    if sandbox.status() != Status::Ready {
        return Err(Finding(format!(
            "sandbox left {:?} after {}",
            sandbox.status(),
            call()
        )));
    }
    let now = sandbox
        .snapshot()
        .map_err(|e| Finding(format!("cannot snapshot ({e}) after {}", call())))?;
    let differences = oracle.differences(&now);
    if !differences.is_empty() || now.memory_sizes() != oracle.memory_sizes() {
        return Err(Finding(format!(
            "state differs from the oracle ({differences:?}, sizes {:?} vs {:?}) after {}",
            now.memory_sizes(),
            oracle.memory_sizes(),
            call()
        )));
    }
    Ok(())
}
