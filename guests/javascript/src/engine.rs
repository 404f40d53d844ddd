//! The one QuickJS runtime and context, the native functions the prelude
//! builds on, and what a turn does with exceptions, jobs and promises.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_int, c_void};
use std::io::Write;
use std::ptr::null_mut;

use rquickjs_sys as q;
use rquickjs_sys::{JSContext, JSRuntime, JSValue};

/// Defines console, print, call_tool and ToolError (see the file).
const PRELUDE: &str = concat!(include_str!("prelude.js"), "\0");

/// What stack traces call the turn's code.
const FILENAME: &CStr = c"<input>";

thread_local! {
    static ENGINE: Cell<Option<(*mut JSRuntime, *mut JSContext)>> = const { Cell::new(None) };
    /// Set by `exit(code)`: the turn ends with this status.
    static EXIT: Cell<Option<i32>> = const { Cell::new(None) };
    /// Whether an allocation of QuickJS failed during this turn.
    static OUT_OF_MEMORY: Cell<bool> = const { Cell::new(false) };
    /// Rejected promises nobody has handled yet (promise, reason), owned.
    static REJECTIONS: RefCell<Vec<(JSValue, JSValue)>> = const { RefCell::new(Vec::new()) };
}

/// Run one turn's code; the turn's status.
pub(crate) fn run(code: &[u8]) -> i32 {
    EXIT.set(None);
    OUT_OF_MEMORY.set(false);
    let Some((rt, ctx)) = engine() else {
        crate::report("Uncaught InternalError: out of memory (QuickJS could not start)\n");
        return 1;
    };
    // QuickJS's parser wants the source NUL-terminated; the host's buffer
    // has no room for that.
    let mut source = Vec::new();
    if source.try_reserve_exact(code.len() + 1).is_err() {
        crate::report("Uncaught InternalError: out of memory (no room to copy the code)\n");
        return 1;
    }
    source.extend_from_slice(code);
    source.push(0);
    // SAFETY: `source` is NUL-terminated and outlives the call; ctx is live.
    let value = unsafe {
        q::JS_Eval(
            ctx,
            source.as_ptr().cast(),
            code.len() as q::size_t,
            FILENAME.as_ptr(),
            q::JS_EVAL_TYPE_GLOBAL as c_int,
        )
    };
    drop(source);
    // SAFETY: value came from JS_Eval in ctx.
    if unsafe { q::JS_IsException(value) } {
        return uncaught(ctx, "Uncaught ");
    }
    if let Some(status) = drain_jobs(rt, ctx) {
        // SAFETY: we own value.
        unsafe { q::JS_FreeValue(ctx, value) };
        return status;
    }
    let mut status = 0;
    // A script whose value is a promise (e.g. an async IIFE) is awaited:
    // the jobs above settled whatever could settle.
    // SAFETY: value is a live value of ctx; JS_PromiseResult returns a new
    // reference, freed below.
    unsafe {
        if q::JS_IsPromise(value)
            && q::JS_PromiseState(ctx, value) == q::JSPromiseStateEnum_JS_PROMISE_REJECTED
        {
            forget_rejection(ctx, value);
            let reason = q::JS_PromiseResult(ctx, value);
            print_uncaught(ctx, reason, "Uncaught ");
            q::JS_FreeValue(ctx, reason);
            status = 1;
        }
        q::JS_FreeValue(ctx, value);
    }
    if report_rejections(ctx) {
        status = 1;
    }
    status
}

/// Start the engine now if it is not running; whether it runs.
pub(crate) fn start_once() -> bool {
    engine().is_some()
}

/// The engine, started on first use.
fn engine() -> Option<(*mut JSRuntime, *mut JSContext)> {
    if let Some(engine) = ENGINE.get() {
        return Some(engine);
    }
    // SAFETY: a fresh runtime and context, used only from this (the only)
    // thread; every value made here is freed or handed over.
    let engine = unsafe { start() }?;
    ENGINE.set(Some(engine));
    Some(engine)
}

/// # Safety
///
/// Call once, from the instance's only thread.
unsafe fn start() -> Option<(*mut JSRuntime, *mut JSContext)> {
    // SAFETY: see the function's contract; each value is consumed once.
    unsafe {
        let rt = q::JS_NewRuntime2(&ALLOCATOR, null_mut());
        if rt.is_null() {
            return None;
        }
        let ctx = q::JS_NewContext(rt);
        if ctx.is_null() {
            return None;
        }
        crate::stack::limit(rt);
        // Rust's stdout allocates its buffer on first use: now, not in a
        // turn that may already have used up the memory.
        let _ = std::io::stdout().flush();
        q::JS_SetInterruptHandler(rt, Some(interrupt), null_mut());
        q::JS_SetHostPromiseRejectionTracker(rt, Some(track_rejection), null_mut());

        let global = q::JS_GetGlobalObject(ctx);
        let exit = function(ctx, js_exit, c"exit", 1);
        // JS_SetPropertyStr takes over the value.
        let defined = q::JS_SetPropertyStr(ctx, global, c"exit".as_ptr(), exit);
        q::JS_FreeValue(ctx, global);
        if defined < 0 {
            return failed_start(ctx);
        }

        let prelude = q::JS_Eval(
            ctx,
            PRELUDE.as_ptr().cast(),
            (PRELUDE.len() - 1) as q::size_t,
            c"<prelude>".as_ptr(),
            q::JS_EVAL_TYPE_GLOBAL as c_int,
        );
        if q::JS_IsException(prelude) {
            return failed_start(ctx);
        }
        let mut natives = [
            function(ctx, js_write, c"write", 2),
            function(ctx, js_door, c"door", 1),
        ];
        let done = q::JS_Call(
            ctx,
            prelude,
            q::JS_UNDEFINED,
            natives.len() as c_int,
            natives.as_mut_ptr(),
        );
        for native in natives {
            q::JS_FreeValue(ctx, native);
        }
        q::JS_FreeValue(ctx, prelude);
        if q::JS_IsException(done) {
            return failed_start(ctx);
        }
        q::JS_FreeValue(ctx, done);
        Some((rt, ctx))
    }
}

/// Report why the engine could not start.
///
/// # Safety
///
/// `ctx` is live and has a pending exception.
unsafe fn failed_start(ctx: *mut JSContext) -> Option<(*mut JSRuntime, *mut JSContext)> {
    // SAFETY: the caller's contract.
    unsafe {
        let exception = q::JS_GetException(ctx);
        print_uncaught(ctx, exception, "QuickJS could not start: ");
        q::JS_FreeValue(ctx, exception);
    }
    None
}

use crate::{free, malloc};

unsafe extern "C" {
    fn calloc(count: usize, size: usize) -> *mut c_void;
    fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn malloc_usable_size(ptr: *const c_void) -> usize;
}

/// QuickJS's default allocator (the C library's), noting failures: when
/// memory runs out completely QuickJS cannot even make its
/// `InternalError: out of memory` and throws `null`.
static ALLOCATOR: q::JSMallocFunctions = q::JSMallocFunctions {
    js_calloc: Some(js_calloc),
    js_malloc: Some(js_malloc),
    js_free: Some(js_free),
    js_realloc: Some(js_realloc),
    js_malloc_usable_size: Some(js_malloc_usable_size),
};

fn noted(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() && size != 0 {
        OUT_OF_MEMORY.set(true);
    }
    ptr
}

unsafe extern "C" fn js_calloc(_: *mut c_void, count: q::size_t, size: q::size_t) -> *mut c_void {
    // SAFETY: the C allocator, as QuickJS's default allocator calls it.
    noted(
        unsafe { calloc(count as usize, size as usize) },
        (count * size) as usize,
    )
}

unsafe extern "C" fn js_malloc(_: *mut c_void, size: q::size_t) -> *mut c_void {
    // SAFETY: as above.
    noted(unsafe { malloc(size as usize) }, size as usize)
}

unsafe extern "C" fn js_free(_: *mut c_void, ptr: *mut c_void) {
    // SAFETY: QuickJS frees only what these functions allocated.
    unsafe { free(ptr) }
}

unsafe extern "C" fn js_realloc(_: *mut c_void, ptr: *mut c_void, size: q::size_t) -> *mut c_void {
    // SAFETY: as above; QuickJS passes null or a block of ours.
    noted(unsafe { realloc(ptr, size as usize) }, size as usize)
}

unsafe extern "C" fn js_malloc_usable_size(ptr: *const c_void) -> q::size_t {
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: a block of ours.
    unsafe { malloc_usable_size(ptr) as q::size_t }
}

type Native = unsafe extern "C" fn(*mut JSContext, JSValue, c_int, *mut JSValue) -> JSValue;

/// A JS function calling `f`.
///
/// # Safety
///
/// `ctx` is live.
unsafe fn function(ctx: *mut JSContext, f: Native, name: &CStr, length: c_int) -> JSValue {
    // SAFETY: the caller's contract; `name` is copied into an atom.
    unsafe {
        q::JS_NewCFunction2(
            ctx,
            Some(f),
            name.as_ptr(),
            length,
            q::JSCFunctionEnum_JS_CFUNC_generic,
            0,
        )
    }
}

/// The arguments of a native call as a slice.
///
/// # Safety
///
/// `argv` holds `argc` values (QuickJS passes at least `length` of them,
/// padded with undefined).
unsafe fn args<'a>(argc: c_int, argv: *mut JSValue) -> &'a [JSValue] {
    if argc <= 0 || argv.is_null() {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(argv, argc as usize) }
}

/// Run `f` over the UTF-8 bytes of `value`'s string form; None (with an
/// exception pending) when it has none or memory ran out.
///
/// # Safety
///
/// `ctx` is live and `value` belongs to it.
unsafe fn with_utf8<R>(
    ctx: *mut JSContext,
    value: JSValue,
    f: impl FnOnce(&[u8]) -> R,
) -> Option<R> {
    let mut len: usize = 0;
    // SAFETY: the caller's contract; the C string is freed right after use.
    unsafe {
        let text = q::JS_ToCStringLen(ctx, &mut len, value);
        if text.is_null() {
            return None;
        }
        let result = f(std::slice::from_raw_parts(text.cast::<u8>(), len));
        q::JS_FreeCString(ctx, text);
        Some(result)
    }
}

/// `write(fd, text)`: the prelude's console and print write through this,
/// straight from QuickJS's string so that printing a huge string needs no
/// copy of it.
unsafe extern "C" fn js_write(
    ctx: *mut JSContext,
    _this: JSValue,
    argc: c_int,
    argv: *mut JSValue,
) -> JSValue {
    // SAFETY: QuickJS calls natives with a live ctx and argc values.
    unsafe {
        let args = args(argc, argv);
        let (Some(&fd), Some(&text)) = (args.first(), args.get(1)) else {
            return q::JS_UNDEFINED;
        };
        let fd = q::JS_VALUE_GET_INT(fd);
        let written = with_utf8(ctx, text, |bytes| {
            // A refused write (the host's output limit) ends nothing here:
            // the host reports it.
            let _ = if fd == 2 {
                std::io::stderr().write_all(bytes)
            } else {
                std::io::stdout().write_all(bytes)
            };
        });
        match written {
            Some(()) => q::JS_UNDEFINED,
            None => q::JS_EXCEPTION,
        }
    }
}

/// `door(frame)`: the answer frame (a string) or the door's status (a
/// number).
unsafe extern "C" fn js_door(
    ctx: *mut JSContext,
    _this: JSValue,
    argc: c_int,
    argv: *mut JSValue,
) -> JSValue {
    // SAFETY: QuickJS calls natives with a live ctx and argc values.
    unsafe {
        let Some(&frame) = args(argc, argv).first() else {
            return q::JS_UNDEFINED;
        };
        let Some(answer) = with_utf8(ctx, frame, crate::door) else {
            return q::JS_EXCEPTION;
        };
        match answer {
            Ok(bytes) => q::JS_NewStringLen(ctx, bytes.as_ptr().cast(), bytes.len() as q::size_t),
            Err(status) => q::JS_MKVAL(q::JS_TAG_INT, status),
        }
    }
}

/// `exit(code = 0)`: end the turn with status `code & 0xFF`. It throws an
/// error try/catch cannot catch; the interrupt handler stops whatever code
/// still runs (an async function turns even that error into a rejection).
unsafe extern "C" fn js_exit(
    ctx: *mut JSContext,
    _this: JSValue,
    argc: c_int,
    argv: *mut JSValue,
) -> JSValue {
    // SAFETY: QuickJS calls natives with a live ctx and argc values; the
    // exception is taken, marked and thrown again (JS_Throw takes it over).
    unsafe {
        let mut code: i32 = 0;
        if let Some(&value) = args(argc, argv).first()
            && !q::JS_IsUndefined(value)
            && q::JS_ToInt32(ctx, &mut code, value) < 0
        {
            return q::JS_EXCEPTION;
        }
        EXIT.set(Some(code & 0xFF));
        q::JS_ThrowInternalError(ctx, c"%s".as_ptr(), c"exit() was called".as_ptr());
        let error = q::JS_GetException(ctx);
        q::JS_SetUncatchableError(ctx, error);
        q::JS_Throw(ctx, error)
    }
}

unsafe extern "C" fn interrupt(_rt: *mut JSRuntime, _opaque: *mut c_void) -> c_int {
    c_int::from(EXIT.get().is_some())
}

unsafe extern "C" fn track_rejection(
    ctx: *mut JSContext,
    promise: JSValue,
    reason: JSValue,
    is_handled: bool,
    _opaque: *mut c_void,
) {
    // SAFETY: QuickJS passes live values of ctx; the list owns the
    // references it keeps.
    unsafe {
        if is_handled {
            forget_rejection(ctx, promise);
            return;
        }
        REJECTIONS.with_borrow_mut(|list| {
            // Without room to remember it, the rejection goes unreported.
            if list.try_reserve(1).is_ok() {
                list.push((q::JS_DupValue(ctx, promise), q::JS_DupValue(ctx, reason)));
            }
        });
    }
}

/// Drop `promise` from the unhandled rejections.
///
/// # Safety
///
/// `ctx` is live.
unsafe fn forget_rejection(ctx: *mut JSContext, promise: JSValue) {
    // Removed one by one: no allocation, as memory may have run out.
    while let Some((p, r)) = REJECTIONS.with_borrow_mut(|list| {
        let at = list.iter().position(|(p, _)| *p == promise)?;
        Some(list.remove(at))
    }) {
        // SAFETY: the list owned these references.
        unsafe {
            q::JS_FreeValue(ctx, p);
            q::JS_FreeValue(ctx, r);
        }
    }
}

/// Print the rejections nobody handled, as Node does; whether there were any.
fn report_rejections(ctx: *mut JSContext) -> bool {
    let list = REJECTIONS.with_borrow_mut(std::mem::take);
    let any = !list.is_empty();
    for (promise, reason) in list {
        // SAFETY: the list owned these references; ctx is live.
        unsafe {
            print_uncaught(ctx, reason, "Uncaught (in promise) ");
            q::JS_FreeValue(ctx, promise);
            q::JS_FreeValue(ctx, reason);
        }
    }
    any
}

/// Forget the unhandled rejections without reporting them: exit() ended
/// the turn (in an async function, its error becomes a rejection).
fn discard_rejections(ctx: *mut JSContext) {
    for (promise, reason) in REJECTIONS.with_borrow_mut(std::mem::take) {
        // SAFETY: the list owned these references; ctx is live.
        unsafe {
            q::JS_FreeValue(ctx, promise);
            q::JS_FreeValue(ctx, reason);
        }
    }
}

/// Run queued jobs until none is left; Some(status) when one ended the turn.
fn drain_jobs(rt: *mut JSRuntime, ctx: *mut JSContext) -> Option<i32> {
    loop {
        if let Some(code) = EXIT.get() {
            discard_rejections(ctx);
            return Some(code);
        }
        let mut job_ctx: *mut JSContext = null_mut();
        // SAFETY: rt is live; job_ctx receives the job's context.
        let ran = unsafe { q::JS_ExecutePendingJob(rt, &mut job_ctx) };
        match ran {
            0 => return None,
            n if n < 0 => {
                let ctx = if job_ctx.is_null() { ctx } else { job_ctx };
                return Some(uncaught(ctx, "Uncaught "));
            }
            _ => {}
        }
    }
}

/// The pending exception ends the turn: its status (exit's code, or 1
/// after printing it).
fn uncaught(ctx: *mut JSContext, prefix: &str) -> i32 {
    // SAFETY: ctx is live and an exception is pending (taken here).
    unsafe {
        let exception = q::JS_GetException(ctx);
        if let Some(code) = EXIT.get() {
            q::JS_FreeValue(ctx, exception);
            discard_rejections(ctx);
            return code;
        }
        print_uncaught(ctx, exception, prefix);
        q::JS_FreeValue(ctx, exception);
    }
    // The exception's own rejections (if any) are part of the same failure.
    report_rejections(ctx);
    1
}

/// `prefix` and the value's string form, then its stack if it has one.
///
/// # Safety
///
/// `ctx` is live and `value` belongs to it (borrowed).
unsafe fn print_uncaught(ctx: *mut JSContext, value: JSValue, prefix: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(prefix.as_bytes());
    // SAFETY: the caller's contract; every value made here is freed.
    unsafe {
        if OUT_OF_MEMORY.get() && (q::JS_IsNull(value) || q::JS_IsUndefined(value)) {
            let _ = err.write_all(b"InternalError: out of memory\n");
            return;
        }
        let printed = if q::JS_IsError(value) || !q::JS_IsObject(value) {
            let text = q::JS_ToString(ctx, value);
            let ok = !q::JS_IsException(text)
                && with_utf8(ctx, text, |b| {
                    let _ = err.write_all(b);
                })
                .is_some();
            q::JS_FreeValue(ctx, text);
            ok
        } else {
            let json = q::JS_JSONStringify(ctx, value, q::JS_UNDEFINED, q::JS_UNDEFINED);
            let ok = !q::JS_IsException(json)
                && q::JS_IsString(json)
                && with_utf8(ctx, json, |b| {
                    let _ = err.write_all(b);
                })
                .is_some();
            q::JS_FreeValue(ctx, json);
            ok
        };
        if !printed {
            // Formatting failed, nearly always because memory ran out.
            let second = q::JS_GetException(ctx);
            let described = with_utf8(ctx, second, |b| {
                let _ = err.write_all(b"<an exception that could not be printed: ");
                let _ = err.write_all(b);
                let _ = err.write_all(b">");
            });
            q::JS_FreeValue(ctx, second);
            if described.is_none() {
                let _ = q::JS_GetException(ctx);
                let _ = err.write_all(
                    b"<an exception that could not be printed: InternalError: out of memory>",
                );
            }
        }
        let _ = err.write_all(b"\n");
        if q::JS_IsObject(value) {
            let stack = q::JS_GetPropertyStr(ctx, value, c"stack".as_ptr());
            if q::JS_IsString(stack) {
                let _ = with_utf8(ctx, stack, |b| {
                    let _ = err.write_all(b);
                    if !b.is_empty() && !b.ends_with(b"\n") {
                        let _ = err.write_all(b"\n");
                    }
                });
            }
            if q::JS_IsException(stack) {
                q::JS_FreeValue(ctx, q::JS_GetException(ctx));
            }
            q::JS_FreeValue(ctx, stack);
        }
    }
}
