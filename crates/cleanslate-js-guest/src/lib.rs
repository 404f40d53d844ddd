//! The JavaScript guest for Cleanslate: QuickJS (QuickJS-ng, MIT licence)
//! compiled for wasm32-wasip1 from `guests/javascript`, built by this
//! crate's build script and embedded.
//!
//! The guest is a WASI preview-1 reactor with the same ABI as the Python
//! guest, so the same host code drives both:
//!
//! - `host_alloc(size: i32) -> i32`: `malloc`; 0 when memory ran out.
//! - `turn(ptr: i32, len: i32) -> i32`: evaluate the UTF-8 source at
//!   `[ptr, ptr+len)` as a global script in the one persistent context (so
//!   globals of one turn, `let`/`const` included, are seen by the next), run
//!   the promise jobs it queued, and await a promise the script evaluates
//!   to. It returns 0; 1 after an uncaught exception or an unhandled
//!   rejection (stderr: `Uncaught TypeError: ...` or
//!   `Uncaught (in promise) ...`, then the stack); `code & 0xFF` after
//!   `exit(code)`.
//! - It imports `host.call(ptr, len, out_ptr_ptr, out_len_ptr) -> i32`,
//!   the tool door behind the global `call_tool(name, args = {})`.
//! - Globals: `console` (`log`/`info`/`debug` to stdout, `error`/`warn` to
//!   stderr), `print`, `call_tool`, `ToolError` (with `.kind`), `exit`.
//! - When memory runs out, the turn ends with status 1 and stderr
//!   containing `InternalError: out of memory`; deep recursion throws
//!   `RangeError: Maximum call stack size exceeded`.
//!
//! ```no_run
//! let wasm = cleanslate_js_guest::module()?;
//! assert_eq!(&wasm[..4], b"\0asm");
//! # Ok::<(), cleanslate_js_guest::GuestUnavailable>(())
//! ```
//!
//! Building it needs clang, lld, llvm-ar, wasi-libc and the wasm32 builtins
//! of compiler-rt (Debian: `clang lld llvm wasi-libc
//! libclang-rt-14-dev-wasm32`) and the `wasm32-wasip1` Rust target.
//! Without them the crate still builds and [`module`] says what is missing;
//! with `CLEANSLATE_EXPECT_C_TOOLCHAIN` set a failed guest build fails the
//! build; `CLEANSLATE_JS_GUEST_SKIP=1` skips the guest.

#![deny(missing_docs)]

use std::fmt;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/guest.rs"));
}

/// The QuickJS guest's wasm bytes.
///
/// ```no_run
/// match cleanslate_js_guest::module() {
///     Ok(wasm) => println!("the guest is {} bytes", wasm.len()),
///     Err(why) => eprintln!("{why}"),
/// }
/// ```
///
/// # Errors
///
/// [`GuestUnavailable`] when the build could not make the guest (no C
/// toolchain for wasm32-wasip1, no `wasm32-wasip1` Rust target, or
/// `CLEANSLATE_JS_GUEST_SKIP=1`); its message says why and how to fix it.
pub fn module() -> Result<&'static [u8], GuestUnavailable> {
    generated::MODULE.map_err(|reason| GuestUnavailable { reason })
}

/// Why the JavaScript guest was not built, and how to get it.
///
/// ```no_run
/// if let Err(why) = cleanslate_js_guest::module() {
///     eprintln!("no JavaScript: {why}");
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestUnavailable {
    reason: &'static str,
}

impl GuestUnavailable {
    /// The build's explanation (with the nested build's last stderr lines
    /// when it failed).
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for GuestUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for GuestUnavailable {}
