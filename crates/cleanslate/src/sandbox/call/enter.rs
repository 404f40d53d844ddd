//! Entering guest code: arming the per-call limits and WASI context, giving
//! the guest a native stack it cannot overrun, and collecting its stdio.
//! Every call and every initialisation goes through [`enter_with`], so the
//! limits cannot be forgotten on some path.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::engine::limits::Limits;
use crate::engine::runtime::Runtime;
use crate::error::{Captured, Error, ErrorKind};
use crate::instance::StoreData;
use crate::instance::host::panic_message;
use crate::instance::wasi::{CallEnv, WasiConfig};
use crate::instance::{InstanceFactory, LiveInstance};
use crate::value::Val;

use super::outcome::{classify, stdio_overflow};

/// Native stack kept free below the guest's stack limit for host functions
/// and the engine's own frames.
const STACK_RED_ZONE: usize = 256 * 1024;

/// Enter the guest to call `func` with core values, for initialisation,
/// where nobody reads stdout.
pub(crate) fn enter(
    runtime: &Runtime,
    factory: &InstanceFactory,
    live: &mut LiveInstance,
    name: &str,
    func: wasmtime::Func,
    params: &[wasmtime::Val],
    result_count: usize,
) -> Result<Vec<Val>, Error> {
    captured_into_error(enter_with(
        runtime,
        factory,
        live,
        name,
        &CallEnv::default(),
        |live, limits| run_func(live, limits, name, func, params, result_count),
    ))
}

/// For callers that return no stdio: what the guest wrote is kept only when
/// the call failed, where it may explain the failure.
pub(super) fn captured_into_error<R>(
    (outcome, captured): (Result<R, Error>, Captured),
) -> Result<R, Error> {
    outcome.map_err(|e| e.with_captured(captured))
}

/// Arm the limits and a fresh WASI context, run `body` (which may enter the
/// guest several times, e.g. allocator then function) on a stack with room
/// for the guest, and collect what it wrote to stdout and stderr.
pub(super) fn enter_with<R>(
    runtime: &Runtime,
    factory: &InstanceFactory,
    live: &mut LiveInstance,
    name: &str,
    env: &CallEnv<'_>,
    body: impl FnOnce(&mut LiveInstance, &Limits) -> Result<R, Error> + Send,
) -> (Result<R, Error>, Captured)
where
    R: Send,
{
    // Before anything of the call can write to the guest's memory.
    live.begin_call();
    live.note_entered(&factory.module, name);
    let limits = &factory.limits;
    if let Err(e) = arm(live, limits, factory.wasi.as_ref(), env) {
        return (Err(e), Captured::default());
    }
    let data = live.store.data_mut();
    data.current_export.clear();
    data.current_export.push_str(name);
    // Only timeouts need the timer; cancellation wakes the engine itself.
    let _deadline = data.deadline.map(|d| runtime.schedule_deadline(d));
    let generation = factory.interrupt.begin();
    live.store.data_mut().generation = generation;
    // Attached before the check below, so a cancel either is seen by the
    // check or wakes the engine after the deadline was armed: never lost.
    let engine = factory.interrupt.engine();
    if let Some(token) = env.cancel {
        token.attach(engine);
        live.store.data_mut().cancel = Some(token.clone());
    }

    let outcome = if env.cancel.is_some_and(|t| t.is_cancelled()) {
        Err(Error::new(
            ErrorKind::Cancelled,
            format!("`{name}` was cancelled through its cancel token before it started"),
        ))
    } else {
        let run = |live: &mut LiveInstance| {
            // Calls run on the caller's thread; make sure it has room for the
            // guest's whole stack allowance, switching to a larger stack if not.
            stacker::maybe_grow(
                limits.stack + STACK_RED_ZONE,
                limits.stack + 2 * STACK_RED_ZONE,
                || body(live, limits),
            )
        };
        if factory.wasi.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            outside_async_runtime(name, live, limits, run)
        } else {
            run(live)
        }
    };
    factory.interrupt.end();
    if let Some(token) = env.cancel {
        token.detach(engine);
        live.store.data_mut().cancel = None;
    }
    let mut captured = live.store.data_mut().take_captured();
    // The pipes hold one byte more than the limit, so a guest that wrote
    // past it is caught here (WASI reports a full pipe to the guest as a
    // short write, which the guest may ignore).
    let mut overflowed = false;
    for stream in [&mut captured.stdout, &mut captured.stderr] {
        if stream.len() > limits.output {
            stream.truncate(limits.output);
            overflowed = true;
        }
    }
    if overflowed
        && !outcome
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::OutputTooLarge)
    {
        return (Err(stdio_overflow(name, limits)), captured);
    }
    (outcome, captured)
}

/// Run a WASI guest's call on a helper thread that is in no tokio runtime.
///
/// wasmtime-wasi's synchronous preview-1 functions (`fd_write`, `fd_read`,
/// `poll_oneoff`, ...) block on a tokio runtime: the current thread's if it
/// has one, wasmtime-wasi's own otherwise. Blocking on the current runtime
/// from one of its tasks panics ("Cannot start a runtime from within a
/// runtime"), and on a blocking-pool thread it depends on that runtime
/// having timers. On a thread of its own the guest gets wasmtime-wasi's
/// runtime, as it does when called from plain threads. Only WASI guests
/// called from async code pay for the thread; everything else runs inline.
fn outside_async_runtime<R: Send>(
    name: &str,
    live: &mut LiveInstance,
    limits: &Limits,
    run: impl FnOnce(&mut LiveInstance) -> Result<R, Error> + Send,
) -> Result<R, Error> {
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("cleanslate-wasi-call".into())
            .stack_size(limits.stack + 2 * STACK_RED_ZONE)
            .spawn_scoped(scope, || {
                // The guest's page faults are taken on this thread, which
                // the reset's fault count cannot see: the window must know
                // the call crossed threads, so the reset scans.
                live.begin_call();
                run(live)
            });
        match helper {
            Ok(helper) => helper
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => Err(Error::new(
                ErrorKind::HostError,
                format!(
                    "`{name}` did not run: the thread a WASI call made from async code runs on could not be started ({e}); the host is short of threads or memory, retry later"
                ),
            )),
        }
    })
}

/// Set this call's fuel, deadline, memory-refusal flag and WASI context.
fn arm(
    live: &mut LiveInstance,
    limits: &Limits,
    wasi: Option<&WasiConfig>,
    env: &CallEnv<'_>,
) -> Result<(), Error> {
    let memory_total = live
        .memories
        .iter()
        .map(|m| m.data_size(&live.store) as u64)
        .sum();
    let data = live.store.data_mut();
    data.limiter.set_memory_total(memory_total);
    // A timeout too long to represent (e.g. `Duration::MAX`) is no deadline.
    data.deadline = limits.timeout.and_then(|t| Instant::now().checked_add(t));
    data.limiter.refused_memory = None;
    if let Some(config) = wasi {
        let (context, stdio) = config.fresh_context(env, limits.output)?;
        data.wasi = Some(context);
        data.stdio = Some(stdio);
    }
    live.store.set_epoch_deadline(1);
    if let Some(fuel) = limits.fuel {
        live.store
            .set_fuel(fuel)
            .map_err(|e| Error::new(ErrorKind::Instantiation, format!("cannot set fuel: {e:#}")))?;
    }
    Ok(())
}

/// Call `func` with core values.
pub(super) fn run_func(
    live: &mut LiveInstance,
    limits: &Limits,
    name: &str,
    func: wasmtime::Func,
    params: &[wasmtime::Val],
    result_count: usize,
) -> Result<Vec<Val>, Error> {
    let mut results = vec![wasmtime::Val::I32(0); result_count];
    run_guest(live, limits, name, |store| {
        func.call(store, params, &mut results)
    })?;
    Ok(results.iter().filter_map(Val::from_wasmtime).collect())
}

/// Run one entry into guest code, catching panics and classifying errors.
pub(super) fn run_guest<R>(
    live: &mut LiveInstance,
    limits: &Limits,
    name: &str,
    f: impl FnOnce(&mut wasmtime::Store<StoreData>) -> wasmtime::Result<R>,
) -> Result<R, Error> {
    match catch_unwind(AssertUnwindSafe(|| f(&mut live.store))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            // An uncaught exception stays in the store until taken: drop it
            // now, so nothing of this call outlives it. Taking it roots it;
            // the scope unroots it (the store outlives in-place resets).
            if e.is::<wasmtime::ThrownException>() {
                let mut scope = wasmtime::RootScope::new(&mut live.store);
                let _ = wasmtime::AsContextMut::as_context_mut(&mut scope).take_pending_exception();
            }
            Err(classify(name, e, live, limits))
        }
        // wasmtime re-raises host panics at the call boundary; ours are
        // caught earlier, but nothing may escape with a dirty sandbox.
        Err(payload) => Err(Error::new(
            ErrorKind::HostPanic,
            format!(
                "a panic escaped from `{name}`: {}",
                panic_message(payload.as_ref())
            ),
        )),
    }
}
