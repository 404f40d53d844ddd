//! Entering the guest: resolve the export, arm the limits, run, and classify
//! how it ended into an [`Error`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::error::{Error, ErrorKind, TrapCode};
use crate::host::{HostFault, panic_message};
use crate::limits::Limits;
use crate::runtime::Runtime;
use crate::sandbox::SandboxCore;
use crate::sandbox::instance::{InstanceFactory, LiveInstance};
use crate::sandbox::interrupt::Interruption;
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
            let mut known: Vec<&str> = layout.exports.iter().map(|e| e.name.as_str()).collect();
            known.truncate(20);
            return Err(Error::new(
                ErrorKind::FunctionNotFound,
                format!(
                    "the module exports no function named `{name}`; it exports: {}",
                    if known.is_empty() {
                        "(no functions)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
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
        let live = self.live.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::Unrecoverable,
                "the sandbox has no instance: build a new sandbox",
            )
        })?;
        let params: Vec<wasmtime::Val> = args.iter().map(|a| a.to_wasmtime()).collect();
        enter(
            self.module.runtime(),
            &self.factory,
            live,
            target.name,
            target.func,
            &params,
            target.result_count,
        )
    }
}

/// Enter the guest: arm the limits, call `func`, and classify the outcome.
/// The one place guest code is run from for a call or initialisation.
pub(crate) fn enter(
    runtime: &Runtime,
    factory: &InstanceFactory,
    live: &mut LiveInstance,
    name: &str,
    func: wasmtime::Func,
    params: &[wasmtime::Val],
    result_count: usize,
) -> Result<Vec<Val>, Error> {
    let limits = &factory.limits;
    arm(live, limits)?;
    // Only timeouts need the ticker; cancellation wakes the engine itself.
    let _ticket = limits.timeout.map(|_| runtime.begin_call());
    let generation = factory.interrupt.begin();
    live.store.data_mut().generation = generation;

    let mut results = vec![wasmtime::Val::I32(0); result_count];
    // Calls run on the caller's thread; make sure it has room for the
    // guest's whole stack allowance, switching to a larger stack if not.
    let outcome = stacker::maybe_grow(
        limits.stack + STACK_RED_ZONE,
        limits.stack + 2 * STACK_RED_ZONE,
        || {
            catch_unwind(AssertUnwindSafe(|| {
                func.call(&mut live.store, params, &mut results)
            }))
        },
    );
    factory.interrupt.end();

    match outcome {
        Ok(Ok(())) => Ok(results.iter().filter_map(Val::from_wasmtime).collect()),
        Ok(Err(e)) => Err(classify(name, e, live, limits)),
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

/// Set this call's fuel, deadline and memory-refusal flag.
pub(crate) fn arm(live: &mut LiveInstance, limits: &Limits) -> Result<(), Error> {
    let data = live.store.data_mut();
    data.deadline = limits.timeout.map(|t| Instant::now() + t);
    data.limiter.refused_memory = None;
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
        return fault.to_error();
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
                "`{function}` ran out of memory: growing a memory from {} to {} bytes was refused by the limit of {} bytes, and the call then failed ({description}); raise memory_limit if legitimate",
                refused.current, refused.desired, refused.limit
            ),
        );
    }
    Error::new(
        ErrorKind::Trap(code),
        format!("`{function}` trapped: {description}"),
    )
}
