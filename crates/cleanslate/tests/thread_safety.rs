//! Which public types may cross threads. Embedders build on these facts
//! (a pool shared by threads, a sandbox moved into a worker, a runtime in a
//! `static`), so losing one is a breaking change this test catches.

use cleanslate::metrics::Histogram;
use cleanslate::{
    Call, CallResult, CancelToken, DirAccess, Error, ErrorKind, FallbackReason, InterruptHandle,
    Module, PoolConfig, PoolMetrics, ResetCoverage, ResetPath, ResetReport, ResetStrategy, Runtime,
    RuntimeConfig, Sandbox, SandboxBuilder, SandboxPool, Session, Signature, Snapshot, Status,
    TrapCode, Val, ValType, Verify, WasiConfig,
};

fn send_and_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

#[test]
fn shared_handles_are_send_and_sync() {
    // Shared between threads: one runtime, its modules, a pool, snapshots,
    // and the handles that stop a call from elsewhere.
    send_and_sync::<Runtime>();
    send_and_sync::<RuntimeConfig>();
    send_and_sync::<Module>();
    send_and_sync::<SandboxPool>();
    send_and_sync::<Snapshot>();
    send_and_sync::<CancelToken>();
    send_and_sync::<InterruptHandle>();
}

#[test]
fn sandboxes_and_their_builders_move_between_threads() {
    // A sandbox runs one call at a time (`&mut self`), but may be built on
    // one thread and used on another.
    send::<Sandbox>();
    send::<SandboxBuilder>();
    send::<Session<'static>>();
}

#[test]
fn plain_values_are_send_and_sync() {
    send_and_sync::<Error>();
    send_and_sync::<ErrorKind>();
    send_and_sync::<TrapCode>();
    send_and_sync::<Val>();
    send_and_sync::<ValType>();
    send_and_sync::<Signature>();
    send_and_sync::<Call>();
    send_and_sync::<CallResult>();
    send_and_sync::<ResetReport>();
    send_and_sync::<ResetPath>();
    send_and_sync::<FallbackReason>();
    send_and_sync::<ResetStrategy>();
    send_and_sync::<ResetCoverage>();
    send_and_sync::<Verify>();
    send_and_sync::<Status>();
    send_and_sync::<PoolConfig>();
    send_and_sync::<PoolMetrics>();
    send_and_sync::<Histogram>();
    send_and_sync::<WasiConfig>();
    send_and_sync::<DirAccess>();
}
