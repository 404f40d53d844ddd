//! The bytes-in, bytes-out calling convention (docs/ABI.md): the input goes
//! into guest memory through `cleanslate_alloc`, the output comes back as a
//! result record. Every pointer and length here is chosen by the guest, so
//! each is checked before the host reads or writes through it.

use crate::abi::{
    ALLOC_EXPORT, GuestMemory, GuestMemoryMut, GuestResult, check_size, read_message,
};
use crate::engine::limits::Limits;
use crate::error::{Error, ErrorKind};
use crate::instance::LiveInstance;

use super::enter::run_guest;
use super::no_instance;
use super::resolve::DataFunc;

/// Place `input` in guest memory, call `func`, and copy its output out.
pub(super) fn exchange_bytes(
    live: &mut LiveInstance,
    limits: &Limits,
    name: &str,
    func: DataFunc,
    input: &[u8],
) -> Result<Vec<u8>, Error> {
    let memory = live.store.data().memory.ok_or_else(no_instance)?;
    let (ptr, len) = if input.is_empty() {
        // No allocation: a guest without `cleanslate_alloc` can still take
        // an empty input.
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
