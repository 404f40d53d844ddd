//! QuickJS's own stack limit, which QuickJS-ng turns off for WASI.
//!
//! Without it, deep recursion runs until the engine's native stack (the
//! host's `stack_limit`) or the shadow stack in linear memory overflows,
//! which ends the whole turn with a trap. With it, QuickJS throws
//! `RangeError: Maximum call stack size exceeded`, which scripts can catch.
//!
//! QuickJS-ng compiles `update_stack_limit` for `__wasi__` to "no limit",
//! so `JS_SetMaxStackSize` is not enough: after it, the runtime's
//! `stack_limit` field is set here, directly. The field is found rather
//! than assumed: `JS_SetMaxStackSize` stores a marker in `stack_size`,
//! which is followed by `stack_top` and `stack_limit` (see `struct
//! JSRuntime` in quickjs.c of rquickjs-sys 0.14.0, pinned in Cargo.toml).
//! The layout is checked before anything is written; if it does not match,
//! the limit stays off.

use rquickjs_sys as q;

/// How much shadow stack QuickJS may use below the point where the
/// runtime was created before it throws RangeError, unless the
/// environment variable `CLEANSLATE_JS_STACK_SIZE` (bytes) says otherwise.
///
/// QuickJS measures only the shadow stack (linear memory), but each level
/// of recursion costs the engine about four times as much native stack
/// (the host's `stack_limit`, 512 KiB by default, which gives about 480
/// levels of plain recursion here): a host that raises its stack limit can
/// raise this to a quarter of it.
pub(crate) const JS_STACK: usize = 128 << 10;

/// The most `CLEANSLATE_JS_STACK_SIZE` may ask for: the 1 MiB shadow stack
/// (see build.rs) less room for the frames below QuickJS's check.
const MAX_JS_STACK: usize = 896 << 10;

/// The limit this instance uses.
fn js_stack() -> usize {
    std::env::var("CLEANSLATE_JS_STACK_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(JS_STACK, |v| v.clamp(16 << 10, MAX_JS_STACK))
}

/// How far into the runtime the marker is searched for, in words.
const SEARCH_WORDS: usize = 256;

/// Turn QuickJS's stack check on for `rt`; whether it worked.
///
/// # Safety
///
/// `rt` is a live runtime made by `JS_NewRuntime` of rquickjs-sys 0.14.0.
pub(crate) unsafe fn limit(rt: *mut q::JSRuntime) -> bool {
    const MARK: usize = 0x5a17_c0de;
    // SAFETY: the caller's contract. The search reads words of the runtime
    // (far larger than SEARCH_WORDS words) and stops at the marker; the one
    // write goes to a word whose neighbours were checked to be the fields
    // expected there.
    unsafe {
        q::JS_SetMaxStackSize(rt, MARK as q::size_t);
        let words = rt.cast::<usize>();
        let Some(at) = (0..SEARCH_WORDS).find(|&i| words.add(i).read() == MARK) else {
            return false;
        };
        let js_stack = js_stack();
        q::JS_SetMaxStackSize(rt, js_stack as q::size_t);
        let here = &raw const at as usize;
        let (size, top, limit) = (
            words.add(at).read(),
            words.add(at + 1).read(),
            words.add(at + 2).read(),
        );
        // stack_size now holds JS_STACK; stack_top is an address on the
        // shadow stack near this frame's; stack_limit was left at 0.
        if size != js_stack || limit != 0 || top.abs_diff(here) > 64 << 10 || top <= js_stack {
            return false;
        }
        words.add(at + 2).write(top - js_stack);
        true
    }
}
