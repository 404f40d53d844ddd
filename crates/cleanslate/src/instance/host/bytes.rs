//! Bytes host functions over the data ABI (docs/ABI.md): the guest passes
//! (pointer, length) of its input, the host's output is placed in guest
//! memory through the guest's own allocator and returned packed. Every
//! guest-chosen pointer and length is checked before use, so a hostile
//! guest can fail its call but never make the host read or allocate out of
//! bounds.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{BytesClosure, HostContext, HostFailure, HostFault};
use crate::abi::{ALLOC_EXPORT, GuestMemory, GuestMemoryMut, check_size, pack};
use crate::error::{Error, ErrorKind};
use crate::instance::StoreData;
use crate::value::Signature;

/// The signature a guest imports a bytes host function with.
pub(super) fn bytes_import_signature() -> Signature {
    use crate::value::ValType::{I32, I64};
    Signature::new(vec![I32, I32], vec![I64])
}

/// Run `f` over a bounds-checked view of the guest's memory.
pub(super) fn with_memory<R>(
    caller: &mut wasmtime::Caller<'_, StoreData>,
    f: impl FnOnce(GuestMemory<'_>) -> Result<R, Error>,
) -> wasmtime::Result<R> {
    let memory = caller.data().memory.ok_or_else(no_memory)?;
    f(GuestMemory::new(memory.data(&*caller)))
        .map_err(|e| wasmtime::Error::new(HostFault::Guest(e)))
}

fn no_memory() -> wasmtime::Error {
    wasmtime::Error::new(HostFault::Guest(Error::new(
        ErrorKind::InvalidGuestOutput,
        "the guest passed data to the host but defines no memory",
    )))
}

/// One call of a bytes host function: read the guest's input, run the
/// closure, and place its output in guest memory through the guest's own
/// allocator. Returns the packed (pointer, length).
pub(super) fn call_bytes_host(
    mut caller: wasmtime::Caller<'_, StoreData>,
    function: &str,
    closure: &BytesClosure,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<i64> {
    let limit = caller.data().output_limit;
    let guest = |e: Error| wasmtime::Error::new(HostFault::Guest(e));
    check_size(
        format_args!("the input to host function `{function}`"),
        len.into(),
        limit,
    )
    .map_err(guest)?;
    let input = with_memory(&mut caller, |memory| {
        memory
            .read(
                ptr,
                len,
                format_args!("input to host function `{function}`"),
            )
            .map(<[u8]>::to_vec)
    })?;
    let outcome = {
        let context = HostContext::new(function, &mut caller);
        catch_unwind(AssertUnwindSafe(|| closure(&context, &input)))
    };
    let output = match outcome {
        Ok(Ok(output)) => output,
        Ok(Err(HostFailure::Host(e))) => return Err(HostFault::returned(function, e)),
        Ok(Err(HostFailure::BadInput(message))) => {
            return Err(guest(Error::new(
                ErrorKind::InvalidGuestOutput,
                format!("the guest's input to host function `{function}` is malformed: {message}"),
            )));
        }
        Err(payload) => return Err(HostFault::panicked(function, payload.as_ref())),
    };
    if output.is_empty() {
        return Ok(pack(0, 0));
    }
    let out_len = u32::try_from(output.len())
        .ok()
        .filter(|&l| (l as usize) < i32::MAX as usize)
        .ok_or_else(|| {
            wasmtime::Error::new(HostFault::Error {
                function: function.to_string(),
                message: format!(
                    "it returned {} bytes, more than a 32-bit guest can hold",
                    output.len()
                ),
                source: None,
            })
        })?;
    let alloc = caller.data().alloc.clone().ok_or_else(|| {
        guest(Error::new(
            ErrorKind::InvalidGuestOutput,
            format!(
                "host function `{function}` has output for the guest, but the guest exports no `{ALLOC_EXPORT}` to receive it (docs/ABI.md)"
            ),
        ))
    })?;
    let out_ptr = alloc.call(&mut caller, out_len as i32)? as u32;
    if out_ptr == 0 {
        return Err(guest(Error::new(
            ErrorKind::OutOfMemory,
            format!(
                "the guest's allocator could not give {out_len} bytes for the output of host function `{function}`"
            ),
        )));
    }
    let memory = caller.data().memory.ok_or_else(no_memory)?;
    GuestMemoryMut::new(memory.data_mut(&mut caller))
        .write(
            out_ptr,
            &output,
            format_args!("room for the output of host function `{function}`"),
        )
        .map_err(guest)?;
    Ok(pack(out_ptr, out_len))
}
