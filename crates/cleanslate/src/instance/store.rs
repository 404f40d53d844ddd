//! The host state every store carries: limits, interrupt and deadline,
//! the running call's context, and the handles host code uses to reach the
//! guest (memories, allocator, WASI context, captured stdio).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Memory;

use crate::engine::limits::GrowthLimiter;
use crate::error::Captured;
use crate::instance::interrupt::InterruptState;
use crate::instance::wasi::CallStdio;

/// Per-store host state.
pub(crate) struct StoreData {
    pub limiter: GrowthLimiter,
    pub interrupt: Arc<InterruptState>,
    /// When the running call must stop; `None` for no timeout.
    pub deadline: Option<Instant>,
    /// The call generation the interrupt state must match to cancel.
    pub generation: u64,
    /// The running call's cancel token, if it carries one.
    pub cancel: Option<crate::instance::CancelToken>,
    /// The export the running call entered (for host functions' context).
    pub current_export: String,
    /// Cap on data the guest hands the host in one piece.
    pub output_limit: usize,
    /// The guest's first memory, through which data crosses the boundary.
    pub memory: Option<Memory>,
    /// All the guest's memories, in index order (host functions reach them
    /// through [`HostContext`](crate::HostContext)).
    pub memories: Vec<Memory>,
    /// The guest's `cleanslate_alloc`, if it exports one of the right type.
    pub alloc: Option<wasmtime::TypedFunc<i32, i32>>,
    /// This call's WASI context (WASI guests only; a fresh one per call).
    pub wasi: Option<wasmtime_wasi::p1::WasiP1Ctx>,
    /// Where this call's stdout and stderr go.
    pub stdio: Option<CallStdio>,
}

impl StoreData {
    /// The WASI context, for wasmtime-wasi; an empty one if a WASI function
    /// is somehow reached before a call installed its context.
    pub(crate) fn wasi_context(&mut self) -> &mut wasmtime_wasi::p1::WasiP1Ctx {
        self.wasi
            .get_or_insert_with(|| wasmtime_wasi::WasiCtxBuilder::new().build_p1())
    }

    /// What the finished call wrote to stdout and stderr, clearing it.
    pub(crate) fn take_captured(&mut self) -> Captured {
        self.wasi = None;
        self.stdio
            .take()
            .map(|stdio| stdio.captured())
            .unwrap_or_default()
    }
}
