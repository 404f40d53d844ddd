//! What the export macros expand to. Not a public API.

use alloc::string::ToString;
use alloc::vec::Vec;
use core::fmt::Display;

use crate::record::{STATUS_ERROR, STATUS_OK, leak_record};

/// Run a bytes export on the input the host placed at (`ptr`, `len`).
pub fn run_bytes<E: Display>(ptr: u32, len: u32, f: fn(&[u8]) -> Result<Vec<u8>, E>) -> u32 {
    let input = input(ptr, len);
    match f(input) {
        Ok(output) => leak_record(STATUS_OK, output),
        Err(e) => leak_record(STATUS_ERROR, e.to_string().into_bytes()),
    }
}

/// Run a JSON export on the input the host placed at (`ptr`, `len`).
#[cfg(feature = "json")]
pub fn run_json<In, Out, E>(ptr: u32, len: u32, f: fn(In) -> Result<Out, E>) -> u32
where
    In: serde::de::DeserializeOwned,
    Out: serde::Serialize,
    E: Display,
{
    let input = match serde_json::from_slice::<In>(input(ptr, len)) {
        Ok(input) => input,
        Err(e) => {
            let message = alloc::format!("the input is not JSON of the expected shape: {e}");
            return leak_record(STATUS_ERROR, message.into_bytes());
        }
    };
    match f(input).map(|out| serde_json::to_vec(&out)) {
        Ok(Ok(output)) => leak_record(STATUS_OK, output),
        Ok(Err(e)) => leak_record(
            STATUS_ERROR,
            alloc::format!("the output cannot be encoded as JSON: {e}").into_bytes(),
        ),
        Err(e) => leak_record(STATUS_ERROR, e.to_string().into_bytes()),
    }
}

/// The input bytes. `len == 0` comes with `ptr == 0`, which is never
/// dereferenced.
fn input<'a>(ptr: u32, len: u32) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the host wrote exactly `len` bytes at `ptr`, into memory it got
    // from this guest's `cleanslate_alloc` for this call; nothing else owns
    // or writes that memory while the export runs, and it lives (leaked)
    // until the sandbox resets after the call.
    unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
}

/// Give the host `len` bytes to write the input into (0 if there is no
/// room). Exported as `cleanslate_alloc` on wasm targets.
#[cfg_attr(target_arch = "wasm32", unsafe(export_name = "cleanslate_alloc"))]
pub extern "C" fn cleanslate_alloc(len: u32) -> u32 {
    let Ok(layout) = core::alloc::Layout::from_size_align(len.max(1) as usize, 8) else {
        return 0;
    };
    // SAFETY: the layout has a non-zero size. The memory is handed to the
    // host to write into and is never freed (the sandbox resets after the
    // call), so no aliasing or double free can arise.
    let ptr = unsafe { alloc::alloc::alloc(layout) };
    crate::record::address(ptr)
}
