//! Calling the host's byte functions (registered on the host with
//! `SandboxBuilder::host_fn_bytes` or `host_fn_json`).
//!
//! A host function that fails fails the whole call (the host sees
//! `HostError`), so these functions return only on success.

use alloc::vec::Vec;

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "cleanslate")]
unsafe extern "C" {
    /// Returns (length << 32) | pointer of the output, which the host wrote
    /// into memory from this guest's `cleanslate_alloc`.
    #[link_name = "call_host"]
    fn cleanslate_call_host(name_ptr: u32, name_len: u32, ptr: u32, len: u32) -> u64;
}

/// Call the host function `name` (`"module.name"`, or a bare name the host
/// registered under one module) with `input`; return its output.
///
/// ```ignore
/// let colour = cleanslate_guest::host::call("kv.get", b"colour");
/// ```
pub fn call(name: &str, input: &[u8]) -> Vec<u8> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: the import only reads the two ranges given, which are
        // live borrowed slices, and returns a range it wrote into memory it
        // got from our allocator (or (0, 0) for empty output).
        let packed = unsafe {
            cleanslate_call_host(
                name.as_ptr() as u32,
                name.len() as u32,
                input.as_ptr() as u32,
                input.len() as u32,
            )
        };
        let (ptr, len) = (packed as u32, (packed >> 32) as u32);
        if len == 0 {
            return Vec::new();
        }
        // SAFETY: the host wrote exactly `len` bytes at `ptr`, in a block
        // our `cleanslate_alloc` handed out for this purpose and nothing
        // else references; it stays allocated until the sandbox resets.
        unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }.to_vec()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (name, input);
        panic!("cleanslate_guest::host::call works only inside a Cleanslate sandbox (wasm32)")
    }
}

/// Call a JSON host function: `input` is encoded to JSON and the answer
/// decoded from it.
///
/// ```ignore
/// #[derive(serde::Deserialize)]
/// struct Price { cents: u64 }
/// let price: Price = cleanslate_guest::host::call_json("shop.price", &"apple")?;
/// ```
///
/// # Errors
///
/// A [`serde_json::Error`] when `input` cannot be encoded as JSON, or the
/// host's answer is not JSON of type `Out`. A host function that fails does not
/// come back here: it fails the whole call, which the host sees as `HostError`.
#[cfg(feature = "json")]
pub fn call_json<In, Out>(name: &str, input: &In) -> Result<Out, serde_json::Error>
where
    In: serde::Serialize + ?Sized,
    Out: serde::de::DeserializeOwned,
{
    let input = serde_json::to_vec(input)?;
    serde_json::from_slice(&call(name, &input))
}
