//! Write [Cleanslate](https://example.invalid/cleanslate) guest functions in
//! Rust.
//!
//! A guest is a `cdylib` crate built for `wasm32-unknown-unknown` (or
//! `wasm32-wasip1`). Write ordinary functions over bytes or serde types and
//! export them with [`export_bytes!`] and [`export_json!`]; the host calls
//! them with `Sandbox::call_bytes` / `call_json` or `cleanslate run --input`.
//!
//! ```ignore
//! #![no_std]
//! extern crate alloc;
//! use alloc::{string::String, vec::Vec};
//!
//! fn shout(input: &[u8]) -> Result<Vec<u8>, String> {
//!     Ok(input.to_ascii_uppercase())
//! }
//! cleanslate_guest::export_bytes!(shout);
//! ```
//!
//! What this crate provides, so the guest does not have to:
//! - `cleanslate_alloc`, through which the host places input in guest memory;
//! - the result record each export returns (docs/ABI.md in the Cleanslate
//!   repository describes the ABI byte by byte);
//! - [`host::call`] to call the host's byte functions;
//! - a panic handler that sends the panic message to the host before the
//!   guest traps, so the host sees `GuestPanic` with the message;
//! - a bump allocator: the sandbox resets memory after every call, so
//!   nothing is ever freed and allocation is a pointer increment;
//! - [`log`] to the host's `tracing`.
//!
//! Features: `allocator` (the bump global allocator), `panic-handler` (for
//! `no_std` guests) and `json` are on by default; guests that use `std`
//! turn off `panic-handler`, turn on `std`, and call `install_panic_hook`.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "allocator")]
mod allocator;
pub mod host;
pub mod log;
mod panic;
mod record;

#[doc(hidden)]
pub mod __private;

#[cfg(feature = "std")]
pub use panic::install_panic_hook;

/// Export functions `fn(&[u8]) -> Result<Vec<u8>, E>` (any `E: Display`)
/// under their own names, following the data ABI.
///
/// An `Err` reaches the host as `GuestError` with `E`'s text as the message.
///
/// ```ignore
/// fn reverse(input: &[u8]) -> Result<Vec<u8>, &'static str> {
///     if input.is_empty() { return Err("nothing to reverse"); }
///     Ok(input.iter().rev().copied().collect())
/// }
/// cleanslate_guest::export_bytes!(reverse);
/// ```
#[macro_export]
macro_rules! export_bytes {
    ($($function:ident),+ $(,)?) => {
        $(
            const _: () = {
                #[unsafe(export_name = ::core::stringify!($function))]
                extern "C" fn __cleanslate_export(ptr: u32, len: u32) -> u32 {
                    $crate::__private::run_bytes(ptr, len, $function)
                }
            };
        )+
    };
}

/// Export functions `fn(In) -> Result<Out, E>` where `In: Deserialize`,
/// `Out: Serialize` and `E: Display`: the input is decoded from JSON and the
/// output encoded to JSON. Input that does not decode is a `GuestError`
/// naming what is wrong.
///
/// ```ignore
/// #[derive(serde::Deserialize)]
/// struct Order { items: Vec<u32> }
/// #[derive(serde::Serialize)]
/// struct Total { sum: u64 }
/// fn total(order: Order) -> Result<Total, core::convert::Infallible> {
///     Ok(Total { sum: order.items.iter().map(|&i| u64::from(i)).sum() })
/// }
/// cleanslate_guest::export_json!(total);
/// ```
#[cfg(feature = "json")]
#[macro_export]
macro_rules! export_json {
    ($($function:ident),+ $(,)?) => {
        $(
            const _: () = {
                #[unsafe(export_name = ::core::stringify!($function))]
                extern "C" fn __cleanslate_export(ptr: u32, len: u32) -> u32 {
                    $crate::__private::run_json(ptr, len, $function)
                }
            };
        )+
    };
}
