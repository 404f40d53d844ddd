//! Cleanslate runs untrusted WebAssembly functions in sandboxes and
//! guarantees that **every call starts from a clean slate**: after each call
//! — whether it returned, trapped, ran out of memory, overflowed its stack,
//! hit its timeout or fuel limit, or a host function failed or panicked —
//! the sandbox is back at its snapshot: memory bytes and size, globals,
//! tables and dropped segments.
//!
//! ```
//! use cleanslate::{Runtime, Sandbox, Val};
//!
//! let runtime = Runtime::new()?;
//! let module = runtime.load_bytes(r#"(module
//!     (memory 1)
//!     (func (export "remember") (param i32) (result i32)
//!         (i32.load (i32.const 0))                       ;; what the last caller left
//!         (i32.store (i32.const 0) (local.get 0))))"#)?;
//! let mut sandbox = Sandbox::builder(&module).build()?;
//! assert_eq!(sandbox.call("remember", &[Val::I32(1234)])?, [Val::I32(0)]);
//! assert_eq!(sandbox.call("remember", &[Val::I32(5678)])?, [Val::I32(0)], "nothing leaked");
//! # Ok::<(), cleanslate::Error>(())
//! ```
//!
//! The pieces: a [`Runtime`] loads [`Module`]s; [`Sandbox::builder`] sets
//! limits and host functions and builds a [`Sandbox`]; every
//! [`Sandbox::call`] is followed by a reset reported as a [`ResetReport`].
//! Failures are [`Error`]s with an [`ErrorKind`].

#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc)]

// The layers, lowest first; each module imports only from those above it
// in this list (ARCHITECTURE.md).
mod abi;
mod atomic_file;
mod error;
mod value;

mod memory;
mod tracking;

mod engine;
mod module;

mod instance;

mod snapshot;

mod reset;

mod sandbox;

mod pool;

pub use abi::DEFAULT_OUTPUT_LIMIT;
pub use engine::limits::{DEFAULT_MEMORY_LIMIT, MAX_STACK_LIMIT};
pub use engine::runtime::{Runtime, RuntimeConfig};
pub use error::{Error, ErrorKind, Result, TrapCode};
pub use instance::host::{HostContext, HostFnError};
pub use instance::wasi::{DirAccess, WasiConfig};
pub use instance::{CancelToken, InterruptHandle};
pub use module::{
    CacheStatus, FunctionInfo, GlobalInfo, ImportInfo, MemoryInfo, Module, TableInfo,
};
pub use pool::{MAX_POOL_SIZE, PoolConfig, PoolMetrics, SandboxPool};

/// The pieces of [`PoolMetrics`].
pub mod metrics {
    pub use crate::pool::Histogram;
}
#[cfg(feature = "fault-injection")]
pub use reset::Fault;
pub use reset::{
    FallbackReason, InPlaceResets, ResetCoverage, ResetPath, ResetReport, ResetStrategy, Verify,
};
pub use sandbox::{Call, CallResult, Sandbox, SandboxBuilder, Session, Status};
pub use snapshot::Snapshot;
pub use value::{Signature, Val, ValType, WasmScalar, WasmValues};

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
