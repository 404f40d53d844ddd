//! The engine layer: the wasmtime runtime and its configuration, the
//! deadline timer, and the limits a sandbox enforces. Knows nothing of
//! modules, instances or resets.

pub(crate) mod features;
pub(crate) mod limits;
pub(crate) mod runtime;
pub(crate) mod timer;
