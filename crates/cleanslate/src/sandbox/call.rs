//! Entering the guest: resolve the export, arm the limits, run, and classify
//! how it ended into an [`Error`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::abi::{
    ALLOC_EXPORT, GuestMemory, GuestMemoryMut, GuestResult, check_size, is_data_signature,
    read_message,
};
use crate::engine::limits::Limits;
use crate::engine::runtime::Runtime;
use crate::error::{Captured, Error, ErrorKind, TrapCode};
use crate::instance::StoreData;
use crate::instance::host::{HostFault, panic_message};
use crate::instance::interrupt::Interruption;
use crate::instance::wasi::{CallEnv, WasiConfig};
use crate::instance::{InstanceFactory, LiveInstance};
use crate::sandbox::SandboxCore;
use crate::sandbox::request::{Call, CallInput, CallResult};
use crate::value::Val;

/// A callable export, resolved and type-checked before the guard is armed.
pub(crate) struct Target<'n> {
    pub name: &'n str,
    pub func: wasmtime::Func,
    pub result_count: usize,
}

/// Native stack kept free below the guest's stack limit for host functions
/// and the engine's own frames.
const STACK_RED_ZONE: usize = 256 * 1024;

impl SandboxCore {
    /// Find the export `name` and check `args` against it. Nothing runs, so
    /// failures here need no reset.
    pub(crate) fn resolve<'n>(&mut self, name: &'n str, args: &[Val]) -> Result<Target<'n>, Error> {
        let layout = &self.module.inner.layout;
        let Some(export) = layout.function(name) else {
            return Err(function_not_found(layout, name));
        };
        if let Some(bad) = export
            .signature
            .params()
            .iter()
            .chain(export.signature.results())
            .find(|t| !t.is_scalar())
        {
            return Err(Error::new(
                ErrorKind::InvalidArguments,
                format!(
                    "`{name}` has signature {}; values of type {bad} cannot cross the boundary",
                    export.signature
                ),
            ));
        }
        export.signature.check_args(name, args)?;
        let result_count = export.signature.results().len();
        let live = self.live()?;
        let func = live
            .instance
            .get_func(&mut live.store, name)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::FunctionNotFound,
                    format!("the instance lacks the export `{name}`"),
                )
            })?;
        Ok(Target {
            name,
            func,
            result_count,
        })
    }

    /// Run `target` under the sandbox's limits.
    pub(crate) fn invoke(&mut self, target: &Target<'_>, args: &[Val]) -> Result<Vec<Val>, Error> {
        let (outcome, captured) = self.invoke_captured(target, args, &CallEnv::default());
        outcome.map_err(|e| e.with_captured(captured))
    }

    fn invoke_captured(
        &mut self,
        target: &Target<'_>,
        args: &[Val],
        env: &CallEnv<'_>,
    ) -> (Result<Vec<Val>, Error>, Captured) {
        let live = match self.live.as_mut() {
            Some(live) => live,
            None => return (Err(no_instance()), Captured::default()),
        };
        let params: Vec<wasmtime::Val> = args.iter().map(|a| a.to_wasmtime()).collect();
        let (func, count) = (target.func, target.result_count);
        enter_with(
            self.module.runtime(),
            &self.factory,
            live,
            target.name,
            env,
            |live, limits| run_func(live, limits, target.name, func, &params, count),
        )
    }

    /// Find the data-ABI export `name` (docs/ABI.md) and check that the
    /// guest can receive `input`. Nothing runs, so failures need no reset.
    pub(crate) fn resolve_data(&mut self, name: &str, input: &[u8]) -> Result<DataFunc, Error> {
        let layout = &self.module.inner.layout;
        let Some(export) = layout.function(name) else {
            return Err(function_not_found(layout, name));
        };
        if !is_data_signature(&export.signature) {
            return Err(Error::new(
                ErrorKind::InvalidArguments,
                format!(
                    "`{name}` has signature {}; a bytes/JSON function needs (i32, i32) -> i32 (input pointer and length in, result record out; docs/ABI.md)",
                    export.signature
                ),
            ));
        }
        if layout.memories.first().is_none_or(|m| m.memory64) {
            return Err(Error::new(
                ErrorKind::InvalidArguments,
                format!(
                    "`{name}` cannot take bytes: the module defines no 32-bit memory 0 to pass them in"
                ),
            ));
        }
        let live = self.live()?;
        if !input.is_empty() && live.store.data().alloc.is_none() {
            return Err(Error::new(
                ErrorKind::FunctionNotFound,
                format!(
                    "the module exports no `{ALLOC_EXPORT}` (param i32) (result i32), which the host needs to place the input of `{name}` in guest memory (docs/ABI.md)"
                ),
            ));
        }
        live.instance
            .get_typed_func::<(i32, i32), i32>(&mut live.store, name)
            .map_err(|e| Error::new(ErrorKind::FunctionNotFound, format!("`{name}`: {e:#}")))
    }

    /// Resolve and check a [`Call`] before anything runs.
    pub(crate) fn prepare<'c>(&mut self, call: &'c Call) -> Result<Prepared<'c>, Error> {
        self.ensure_status_allows_calls()?;
        Ok(match &call.input {
            CallInput::Values(args) => Prepared::Values(self.resolve(&call.function, args)?, args),
            CallInput::Bytes(input) => {
                Prepared::Bytes(self.resolve_data(&call.function, input)?, input)
            }
        })
    }

    /// Run a prepared [`Call`] without resetting (the caller owns the reset).
    pub(crate) fn execute(
        &mut self,
        call: &Call,
        prepared: Prepared<'_>,
    ) -> Result<CallResult, Error> {
        let env = CallEnv {
            args: call.args.as_deref(),
            env: &call.env,
            stdin: &call.stdin,
            cancel: call.cancel.as_ref(),
        };
        let (outcome, captured) = match prepared {
            Prepared::Values(target, args) => {
                let (outcome, captured) = self.invoke_captured(&target, args, &env);
                (outcome.map(|values| (values, None)), captured)
            }
            Prepared::Bytes(func, input) => {
                let (outcome, captured) = self.data_captured(&call.function, func, input, &env);
                (outcome.map(|output| (Vec::new(), Some(output))), captured)
            }
        };
        // A WASI command's `_start` that returns (wasi-libc returns when
        // `main` returns 0) finished with exit status 0, as in a shell.
        let command_returned = call.function == "_start" && self.factory.wasi.is_some();
        match outcome {
            Ok((values, output)) => Ok(CallResult {
                values,
                output,
                stdout: captured.stdout,
                stderr: captured.stderr,
                exit_code: command_returned.then_some(0),
            }),
            // A WASI command ending with proc_exit finished normally.
            Err(e) if e.kind() == ErrorKind::Exited => Ok(CallResult {
                exit_code: e.exit_code(),
                stdout: captured.stdout,
                stderr: captured.stderr,
                ..CallResult::default()
            }),
            Err(e) => Err(e.with_captured(captured)),
        }
    }

    /// Run a data-ABI function on `input` (resolved by `resolve_data`).
    pub(crate) fn call_data(
        &mut self,
        name: &str,
        func: DataFunc,
        input: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let (outcome, captured) = self.data_captured(name, func, input, &CallEnv::default());
        outcome.map_err(|e| e.with_captured(captured))
    }

    fn data_captured(
        &mut self,
        name: &str,
        func: DataFunc,
        input: &[u8],
        env: &CallEnv<'_>,
    ) -> (Result<Vec<u8>, Error>, Captured) {
        let Some(live) = self.live.as_mut() else {
            return (Err(no_instance()), Captured::default());
        };
        enter_with(
            self.module.runtime(),
            &self.factory,
            live,
            name,
            env,
            |live, limits| exchange_bytes(live, limits, name, func, input),
        )
    }
}

/// A data-ABI export: (input pointer, input length) -> result record.
pub(crate) type DataFunc = wasmtime::TypedFunc<(i32, i32), i32>;

/// A [`Call`] resolved against the module, ready to run.
pub(crate) enum Prepared<'c> {
    Values(Target<'c>, &'c [Val]),
    Bytes(DataFunc, &'c [u8]),
}

/// No export `name`: say what the module does export.
fn function_not_found(layout: &crate::module::ModuleLayout, name: &str) -> Error {
    let mut known: Vec<&str> = layout.exports.iter().map(|e| e.name.as_str()).collect();
    known.truncate(20);
    Error::new(
        ErrorKind::FunctionNotFound,
        format!(
            "the module exports no function named `{name}`; it exports: {}",
            if known.is_empty() {
                "(no functions)".to_string()
            } else {
                known.join(", ")
            }
        ),
    )
}

fn no_instance() -> Error {
    Error::new(
        ErrorKind::Unrecoverable,
        "the sandbox has no instance: build a new sandbox",
    )
}

/// Place `input` in guest memory, call `func`, and copy its output out,
/// checking every guest-chosen pointer and length on the way.
fn exchange_bytes(
    live: &mut LiveInstance,
    limits: &Limits,
    name: &str,
    func: DataFunc,
    input: &[u8],
) -> Result<Vec<u8>, Error> {
    let memory = live.store.data().memory.ok_or_else(no_instance)?;
    let (ptr, len) = if input.is_empty() {
        (0, 0)
    } else {
        let len = u32::try_from(input.len())
            .ok()
            .filter(|&l| l <= i32::MAX as u32)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArguments,
                    format!(
                        "an input of {} bytes cannot fit a 32-bit guest",
                        input.len()
                    ),
                )
            })?;
        let alloc = live.store.data().alloc.clone().ok_or_else(no_instance)?;
        let ptr = run_guest(live, limits, ALLOC_EXPORT, |store| {
            alloc.call(store, len as i32)
        })? as u32;
        if ptr == 0 {
            return Err(Error::new(
                ErrorKind::OutOfMemory,
                format!(
                    "the guest's allocator could not give {len} bytes for the input of `{name}`; raise memory_limit if legitimate"
                ),
            ));
        }
        GuestMemoryMut::new(memory.data_mut(&mut live.store)).write(
            ptr,
            input,
            "room for the input",
        )?;
        (ptr, len)
    };
    let record = run_guest(live, limits, name, |store| {
        func.call(store, (ptr as i32, len as i32))
    })? as u32;
    let view = GuestMemory::new(memory.data(&live.store));
    match GuestResult::decode(&view, record)? {
        GuestResult::Output { ptr, len } => {
            check_size(
                format_args!("the output of `{name}`"),
                len.into(),
                limits.output,
            )?;
            Ok(view.read(ptr, len, "output")?.to_vec())
        }
        GuestResult::Error { ptr, len } => {
            let message = read_message(&view, ptr, len)?;
            Err(Error::from_guest(ErrorKind::GuestError, name, message))
        }
    }
}

/// Enter the guest: arm the limits, call `func`, and classify the outcome.
/// Used for initialisation, where nobody reads stdout.
pub(crate) fn enter(
    runtime: &Runtime,
    factory: &InstanceFactory,
    live: &mut LiveInstance,
    name: &str,
    func: wasmtime::Func,
    params: &[wasmtime::Val],
    result_count: usize,
) -> Result<Vec<Val>, Error> {
    let (outcome, captured) = enter_with(
        runtime,
        factory,
        live,
        name,
        &CallEnv::default(),
        |live, limits| run_func(live, limits, name, func, params, result_count),
    );
    outcome.map_err(|e| e.with_captured(captured))
}

/// The one place guest code is entered from for a call or initialisation:
/// arm the limits and a fresh WASI context, run `body` (which may enter the
/// guest several times, e.g. allocator then function) on a stack with room
/// for the guest, and collect what it wrote to stdout and stderr.
pub(crate) fn enter_with<R>(
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

/// A WASI guest wrote more to stdout or stderr than the output limit.
fn stdio_overflow(function: &str, limits: &Limits) -> Error {
    Error::new(
        ErrorKind::OutputTooLarge,
        format!(
            "`{function}` wrote more than the output limit of {} bytes to stdout or stderr; raise output_limit if legitimate",
            limits.output
        ),
    )
}

/// Call `func` with core values.
fn run_func(
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
fn run_guest<R>(
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

/// Set this call's fuel, deadline, memory-refusal flag and WASI context.
pub(crate) fn arm(
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

/// Turn an engine error into the library's error, naming what happened and
/// what the user can do.
pub(crate) fn classify(
    function: &str,
    err: wasmtime::Error,
    live: &LiveInstance,
    limits: &Limits,
) -> Error {
    if let Some(fault) = err.downcast_ref::<HostFault>() {
        // A Rust guest whose allocation failed panics ("memory allocation
        // of N bytes failed"): that is running out of memory, not a bug.
        if let (HostFault::GuestPanic { message }, Some(refused)) =
            (fault, live.store.data().limiter.refused_memory)
        {
            return Error::new(
                ErrorKind::OutOfMemory,
                format!(
                    "`{function}` ran out of memory: growing its memories from {} to {} bytes in all was refused by the memory limit of {} bytes for all memories together, and the guest then panicked: {message}; raise memory_limit if legitimate",
                    refused.current, refused.desired, refused.limit
                ),
            );
        }
        return fault.to_error(function);
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Error::exited(function, exit.0);
    }
    if err.is::<wasmtime::ThrownException>() {
        return Error::new(
            ErrorKind::UncaughtException,
            format!("`{function}` threw a WebAssembly exception that nothing caught"),
        );
    }
    if crate::instance::wasi::is_pipe_overflow(&err) {
        return stdio_overflow(function, limits);
    }
    if let Some(interruption) = err.downcast_ref::<Interruption>() {
        return match interruption {
            Interruption::Timeout => Error::new(
                ErrorKind::Timeout,
                format!(
                    "`{function}` ran longer than its timeout of {:?} and was stopped; raise the timeout if the work is legitimate",
                    limits.timeout.unwrap_or_default()
                ),
            ),
            Interruption::Cancelled => Error::new(
                ErrorKind::Cancelled,
                format!("`{function}` was cancelled through its interrupt handle"),
            ),
            Interruption::CancelledByToken => Error::new(
                ErrorKind::Cancelled,
                format!("`{function}` was cancelled through its cancel token"),
            ),
        };
    }
    let Some(trap) = err.downcast_ref::<wasmtime::Trap>() else {
        return Error::new(
            ErrorKind::Trap(TrapCode::Other),
            format!("`{function}` failed: {err:#}"),
        );
    };
    let code = match trap {
        wasmtime::Trap::StackOverflow => {
            return Error::new(
                ErrorKind::StackOverflow,
                format!(
                    "`{function}` overflowed its stack limit of {} KiB (deep recursion or large frames); raise stack_limit if legitimate",
                    limits.stack / 1024
                ),
            );
        }
        wasmtime::Trap::OutOfFuel => {
            return Error::new(
                ErrorKind::OutOfFuel,
                format!(
                    "`{function}` used up its fuel of {} units; raise the fuel limit if the work is legitimate",
                    limits.fuel.unwrap_or_default()
                ),
            );
        }
        wasmtime::Trap::Interrupt => {
            return Error::new(ErrorKind::Timeout, format!("`{function}` was interrupted"));
        }
        wasmtime::Trap::UnreachableCodeReached => TrapCode::Unreachable,
        wasmtime::Trap::MemoryOutOfBounds => TrapCode::MemoryOutOfBounds,
        wasmtime::Trap::IntegerDivisionByZero => TrapCode::IntegerDivideByZero,
        wasmtime::Trap::IntegerOverflow => TrapCode::IntegerOverflow,
        wasmtime::Trap::BadSignature => TrapCode::IndirectCallTypeMismatch,
        wasmtime::Trap::TableOutOfBounds => TrapCode::TableOutOfBounds,
        wasmtime::Trap::IndirectCallToNull | wasmtime::Trap::NullReference => {
            TrapCode::NullReference
        }
        wasmtime::Trap::BadConversionToInteger => TrapCode::BadConversionToInteger,
        wasmtime::Trap::HeapMisaligned => TrapCode::UnalignedAtomic,
        _ => TrapCode::Other,
    };
    let description = trap.to_string();
    let description = description
        .strip_prefix("wasm trap: ")
        .unwrap_or(&description);
    if let Some(refused) = live.store.data().limiter.refused_memory {
        return Error::new(
            ErrorKind::OutOfMemory,
            format!(
                "`{function}` ran out of memory: growing its memories from {} to {} bytes in all was refused by the memory limit of {} bytes for all memories together, and the call then failed ({description}); raise memory_limit if legitimate",
                refused.current, refused.desired, refused.limit
            ),
        );
    }
    Error::new(
        ErrorKind::Trap(code),
        format!("`{function}` trapped: {description}"),
    )
}
