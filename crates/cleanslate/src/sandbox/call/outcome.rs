//! How a call ended, in the library's terms: each engine error, trap and
//! host fault becomes an [`Error`] whose kind callers can match on and
//! whose message names the limit involved and what to raise.

use crate::engine::limits::Limits;
use crate::error::{Error, ErrorKind, TrapCode};
use crate::instance::LiveInstance;
use crate::instance::host::HostFault;
use crate::instance::interrupt::Interruption;

/// A WASI guest wrote more to stdout or stderr than the output limit.
pub(super) fn stdio_overflow(function: &str, limits: &Limits) -> Error {
    Error::new(
        ErrorKind::OutputTooLarge,
        format!(
            "`{function}` wrote more than the output limit of {} bytes to stdout or stderr; raise output_limit if legitimate",
            limits.output
        ),
    )
}

/// Turn an engine error into the library's error, naming what happened and
/// what the user can do.
pub(super) fn classify(
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
