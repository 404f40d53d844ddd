//! Driving a guest's own ABI: guest memory read and written by the host,
//! from a session between calls and from host functions during them. Every
//! write stays subject to the clean slate (checked against an independently
//! built twin, with the verifier on, on both reset strategies), and every
//! out-of-range access is a typed error. The worked example is a C library
//! built with clang and wasi-libc (guests/c/render.c).

mod common;

use std::sync::mpsc;
use std::thread;

use cleanslate::{
    ErrorKind, ResetPath, ResetStrategy, Runtime, Sandbox, SandboxBuilder, Session, Val, Verify,
};
use common::build::c_guest_with;
use common::{Twin, assert_matches_twin, expect_tracking, on_both_strategies, twin};

/// Eight wasm pages (128 host pages). `poke(page, value)` writes host page
/// `page`; `load(addr)` reads; `fill(ptr, len, out)` asks the host to fill
/// guest memory through `env.fill` and returns what it stored at `out`.
const WAT: &str = r#"(module
  (import "env" "fill" (func $fill (param i32 i32 i32)))
  (memory (export "memory") 8)
  (memory $second 1)
  (data (i32.const 0) "snapshot")
  (func (export "poke") (param $page i32) (param $value i32)
    (i32.store offset=8 (i32.mul (local.get $page) (i32.const 4096)) (local.get $value)))
  (func (export "load") (param $addr i32) (result i32)
    (i32.load (local.get $addr)))
  (func (export "load_second") (param $addr i32) (result i32)
    (i32.load $second (local.get $addr)))
  (func (export "fill") (param $ptr i32) (param $len i32) (param $out i32) (result i32)
    (call $fill (local.get $ptr) (local.get $len) (local.get $out))
    (i32.load (local.get $out))))"#;

/// Host pages the guest never touches; the host writes them.
const UNTOUCHED: [u64; 3] = [17, 64, 127];
const HOT: i32 = 1;
const SECRET: &[u8] = b"a secret the host left in guest memory";

/// `env.fill(ptr, len, out)`: writes `len` bytes of 0xAB at `ptr`, the
/// byte sum of what was there before at `out`, and the secret into memory 1.
fn with_fill(builder: SandboxBuilder) -> SandboxBuilder {
    builder.host_fn_with_context("env", "fill", |ctx, args| {
        let [Val::I32(ptr), Val::I32(len), Val::I32(out)] = args else {
            return Err("fill takes (ptr, len, out)".into());
        };
        let (ptr, len, out) = (*ptr as u32 as u64, *len as u32 as usize, *out as u32 as u64);
        let before = ctx.read_memory(ptr, len)?;
        ctx.write_memory(ptr, &vec![0xAB; len])?;
        let sum: u32 = before.iter().map(|&b| u32::from(b)).sum();
        ctx.write_u32(out, sum)?;
        ctx.write_memory_of(1, 100, SECRET)?;
        assert_eq!(ctx.read_memory_of(1, 100, SECRET.len())?, SECRET);
        assert_eq!(ctx.export(), "fill");
        Ok(vec![])
    })
}

fn new_twin(strategy: ResetStrategy) -> Twin {
    let module = Runtime::new().unwrap().load_bytes(WAT).unwrap();
    twin(&module, move |b| {
        with_fill(b).reset_strategy(strategy).verify(Verify::Always)
    })
}

fn poke(sandbox: &mut Sandbox, page: i32, value: i32) {
    sandbox
        .call("poke", &[Val::I32(page), Val::I32(value)])
        .unwrap();
}

fn load(sandbox: &mut Sandbox, addr: u64) -> i32 {
    sandbox.call_typed("load", addr as i32).unwrap()
}

/// Poke the hot page until resets skip the page-table scan: the state in
/// which a write the tracker did not see would be missed. False where this
/// machine cannot reset in place (or the strategy never does).
fn reach_steady_state(twin: &mut Twin) -> bool {
    for i in 0..4 {
        poke(&mut twin.sandbox, HOT, i + 1);
    }
    if twin.sandbox.last_reset().unwrap().path() != ResetPath::InPlace {
        return false;
    }
    assert_matches_twin(twin);
    for i in 0..20 {
        poke(&mut twin.sandbox, HOT, 100 + i);
        if !twin.sandbox.last_reset().unwrap().scanned_page_tables() {
            return true;
        }
    }
    panic!("resets never skipped the scan after hot-page writes alone");
}

fn write_secrets(session: &mut Session<'_>) {
    for page in UNTOUCHED {
        session.write_memory(page * 4096 + 12, SECRET).unwrap();
    }
    session.write_u32(UNTOUCHED[0] * 4096, 0xDEAD_BEEF).unwrap();
    session.write_u64(UNTOUCHED[1] * 4096, u64::MAX).unwrap();
    session.write_memory_of(1, 0, SECRET).unwrap();
}

fn assert_secrets_gone(sandbox: &mut Sandbox) {
    for page in UNTOUCHED {
        assert_eq!(load(sandbox, page * 4096 + 12), 0, "page {page} kept it");
        assert_eq!(load(sandbox, page * 4096), 0, "page {page} kept it");
    }
    let second: i32 = sandbox.call_typed("load_second", 0).unwrap();
    assert_eq!(second, 0, "memory 1 kept it");
}

#[test]
fn session_writes_to_pages_no_call_touched_are_reset() {
    on_both_strategies(|strategy| {
        let mut twin = new_twin(strategy);
        let steady = reach_steady_state(&mut twin);
        assert!(
            steady || strategy == ResetStrategy::FreshInstance || !expect_tracking(),
            "this machine must reset in place"
        );
        {
            let mut session = twin.sandbox.session();
            write_secrets(&mut session);
            // Read back through every accessor before the reset.
            let page = UNTOUCHED[2] * 4096;
            assert_eq!(
                session.read_memory(page + 12, SECRET.len()).unwrap(),
                SECRET
            );
            assert_eq!(session.read_u32(UNTOUCHED[0] * 4096).unwrap(), 0xDEAD_BEEF);
            assert_eq!(session.read_u64(UNTOUCHED[1] * 4096).unwrap(), u64::MAX);
            assert_eq!(session.read_c_string(page + 12, 4096).unwrap(), SECRET);
            assert_eq!(session.read_memory_of(1, 0, SECRET.len()).unwrap(), SECRET);
            // The guest sees the host's write.
            let seen: i32 = session.call_typed("load", (page + 12) as i32).unwrap();
            assert_eq!(seen.to_le_bytes(), SECRET[..4]);
            session.finish().unwrap();
        }
        let report = twin.sandbox.last_reset().unwrap();
        assert!(report.verified());
        if steady {
            assert_eq!(report.path(), ResetPath::InPlace);
            assert!(
                report.scanned_page_tables(),
                "a session that wrote must scan"
            );
            assert!(report.dirty_pages() >= UNTOUCHED.len() as u64);
        }
        assert_matches_twin(&mut twin);
        assert_secrets_gone(&mut twin.sandbox);
        assert_matches_twin(&mut twin);
    });
}

/// The case the fault window alone would miss: the host writes from a
/// thread that runs no call, and the reset runs on the thread whose fault
/// count did not move. The write must be restored all the same.
#[test]
fn session_writes_from_another_thread_are_reset() {
    on_both_strategies(|strategy| {
        let mut twin = new_twin(strategy);
        thread::scope(|s| {
            let (to_worker, worker_inbox) = mpsc::channel::<Session<'_>>();
            let (to_home, home_inbox) = mpsc::channel::<Session<'_>>();
            // Started before the steady state: starting a thread faults on
            // the thread that starts it.
            s.spawn(move || {
                for mut session in worker_inbox {
                    write_secrets(&mut session);
                    to_home.send(session).unwrap();
                }
            });
            let steady = reach_steady_state(&mut twin);
            assert!(
                steady || strategy == ResetStrategy::FreshInstance || !expect_tracking(),
                "this machine must reset in place"
            );
            to_worker.send(twin.sandbox.session()).unwrap();
            let session = home_inbox.recv().unwrap();
            drop(to_worker);
            // Back home, no call: nothing but the writes happened.
            session
                .finish()
                .expect("the reset (verified) restores the host's writes");
        });
        assert_matches_twin(&mut twin);
        assert_secrets_gone(&mut twin.sandbox);
    });
}

#[test]
fn host_functions_read_and_write_guest_memory_and_the_reset_undoes_it() {
    on_both_strategies(|strategy| {
        let mut twin = new_twin(strategy);
        let steady = reach_steady_state(&mut twin);
        let (ptr, len, out) = (UNTOUCHED[1] * 4096, 5000, UNTOUCHED[2] * 4096);
        for i in 0..3 {
            // The bytes were zero, and are again at every call.
            let sum: i32 = twin
                .sandbox
                .call_typed("fill", (ptr as i32, len, out as i32))
                .unwrap();
            assert_eq!(sum, 0, "an earlier call's fill leaked");
            let report = twin.sandbox.last_reset().unwrap();
            assert!(report.verified());
            if steady {
                assert_eq!(report.path(), ResetPath::InPlace);
                // The first write to these cold pages faulted on the call's
                // thread: a scan. Written at every reset, they turn hot,
                // and hot pages are compared without one.
                if i == 0 {
                    assert!(report.scanned_page_tables());
                }
            }
            assert_matches_twin(&mut twin);
        }
        assert_secrets_gone(&mut twin.sandbox);
    });
}

#[test]
fn host_function_accesses_out_of_range_fail_the_call_and_change_nothing() {
    let mut twin = new_twin(ResetStrategy::Auto);
    let size = 8 * 65536u64;
    // 0xAB-fill crossing the end: refused before anything is written.
    let err = twin
        .sandbox
        .call_typed::<(i32, i32, i32), i32>("fill", ((size - 4) as i32, 8, 0))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostError, "{err}");
    assert!(
        err.message()
            .contains("cannot read 8 byte(s) at 0x7fffc of memory 0"),
        "{err}"
    );
    assert_matches_twin(&mut twin);
}

#[test]
fn out_of_range_session_accesses_are_typed_errors_and_change_nothing() {
    let mut twin = new_twin(ResetStrategy::Auto);
    let size = 8 * 65536u64;
    {
        let mut session = twin.sandbox.session();
        let refused = |r: Result<Vec<u8>, cleanslate::Error>| {
            let err = r.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{err}");
            err.message().to_string()
        };
        // At the end: the empty read is fine, one byte more is not.
        assert_eq!(session.read_memory(size, 0).unwrap(), b"");
        assert_eq!(session.read_memory(size - 1, 1).unwrap(), [0]);
        let message = refused(session.read_memory(size - 1, 2));
        assert!(message.contains("524288 bytes (8 page(s)"), "{message}");
        assert!(message.contains("stay below 0x80000"), "{message}");
        // Huge lengths and addresses: refused without allocating.
        refused(session.read_memory(0, usize::MAX));
        refused(session.read_memory(u64::MAX, 1));
        refused(session.read_memory(u64::MAX, usize::MAX));
        refused(session.read_memory(size + 1, 0));
        // No memory 2 (there are two).
        let message = refused(session.read_memory_of(2, 0, 1));
        assert!(message.contains("no memory 2: it defines 2"), "{message}");
        // Writes: refused whole, nothing written.
        for (memory, address, len) in [(0, size - 2, 4), (0, u64::MAX, 1), (1, 65534, 3), (5, 0, 1)]
        {
            let err = session
                .write_memory_of(memory, address, &vec![0xEE; len])
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{err}");
        }
        assert_eq!(session.read_memory(size - 2, 2).unwrap(), [0, 0]);
        assert_eq!(session.read_memory_of(1, 65534, 2).unwrap(), [0, 0]);
        let err = session.write_u32(size - 3, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArguments);
        let err = session.write_u64(size - 7, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArguments);
        assert_eq!(session.read_u32(size - 4).unwrap(), 0);
        assert_eq!(
            session.read_u32(size - 3).unwrap_err().kind(),
            ErrorKind::InvalidArguments
        );
        assert_eq!(
            session.read_u64(size - 7).unwrap_err().kind(),
            ErrorKind::InvalidArguments
        );
        // C strings: bounded by max_len and by the memory's end.
        session.write_memory(size - 3, b"abc").unwrap();
        let message = refused(session.read_c_string(size - 3, 1 << 30));
        assert!(message.contains("the memory's end"), "{message}");
        session.write_memory(100, b"long string\0").unwrap();
        let message = refused(session.read_c_string(100, 4));
        assert!(message.contains("max_len 4"), "{message}");
        assert_eq!(session.read_c_string(100, 12).unwrap(), b"long string");
        assert_eq!(
            session.read_c_string(size - 1, 1).unwrap_err().kind(),
            ErrorKind::InvalidArguments
        );
        refused(session.read_c_string(size, 10));
        refused(session.read_c_string(u64::MAX, 10));
        // The session still works after refusals.
        assert_eq!(session.status(), cleanslate::Status::Ready);
    }
    assert_matches_twin(&mut twin);
}

#[test]
fn bytes_host_functions_read_guest_memory_through_their_context() {
    let module = Runtime::new()
        .unwrap()
        .load_bytes(
            r#"(module
              (import "kv" "get" (func $get (param i32 i32) (result i64)))
              (memory (export "memory") 1)
              (data (i32.const 64) "greeting\00")
              (func (export "cleanslate_alloc") (param i32) (result i32) (i32.const 1024))
              (func (export "ask") (result i64) (call $get (i32.const 64) (i32.const 8))))"#,
        )
        .unwrap();
    let mut twin = twin(&module, |b| {
        b.verify(Verify::Always)
            .host_fn_bytes("kv", "get", |ctx, key| {
                // The same bytes, read through the context as a C string.
                assert_eq!(ctx.read_c_string(64, 100)?, key);
                let err = ctx.read_memory(65536 - 4, 8).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidArguments);
                Ok(key.to_ascii_uppercase())
            })
    });
    let packed: i64 = twin.sandbox.call_typed("ask", ()).unwrap();
    assert_eq!(packed, (8 << 32) | 1024, "8 bytes placed at 1024");
    assert_matches_twin(&mut twin);
}

#[test]
fn a_poisoned_session_still_reads_and_writes_memory_and_is_reset() {
    on_both_strategies(|strategy| {
        let mut twin = new_twin(strategy);
        {
            let mut session = twin.sandbox.session();
            session.write_memory(UNTOUCHED[0] * 4096, SECRET).unwrap();
            // Page 1000 is past the memory's end: the guest traps.
            let err = session
                .call("poke", &[Val::I32(1000), Val::I32(1)])
                .unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Trap(_)), "{err}");
            assert_eq!(session.status(), cleanslate::Status::Poisoned);
            assert_eq!(
                session
                    .read_memory(UNTOUCHED[0] * 4096, SECRET.len())
                    .unwrap(),
                SECRET
            );
            session.write_memory(UNTOUCHED[1] * 4096, SECRET).unwrap();
        }
        assert_matches_twin(&mut twin);
        assert_secrets_gone(&mut twin.sandbox);
    });
}

#[test]
fn a_module_without_memory_says_so() {
    let module = Runtime::new()
        .unwrap()
        .load_bytes(r#"(module (func (export "f")))"#)
        .unwrap();
    let mut sandbox = Sandbox::builder(&module).build().unwrap();
    let mut session = sandbox.session();
    let err = session.read_memory(0, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArguments);
    assert!(err.message().contains("defines no memory"), "{err}");
    let err = session.write_memory(0, b"").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArguments);
}

// ---- The worked example: a C library with its own ABI ------------------

fn render_module() -> cleanslate::Module {
    let path = c_guest_with(
        "render",
        &[
            "-mexec-model=reactor",
            "-Wl,--export=malloc",
            "-Wl,--export=free",
        ],
    );
    Runtime::new().unwrap().load_file(path).unwrap()
}

/// Copy `text` into guest memory as a C string, in room from the guest's
/// own `malloc`.
fn c_string_in(session: &mut Session<'_>, text: &str) -> i32 {
    let ptr: i32 = session.call_typed("malloc", text.len() as i32 + 1).unwrap();
    assert_ne!(ptr, 0, "malloc failed");
    session
        .write_memory(ptr as u32 as u64, text.as_bytes())
        .unwrap();
    session
        .write_memory(ptr as u32 as u64 + text.len() as u64, &[0])
        .unwrap();
    ptr
}

/// Drive `render(input, format, &out_len)`: allocate, write the inputs,
/// call, read the length and the output. Free nothing: the session's end
/// takes it all back.
fn render(session: &mut Session<'_>, input: &str, format: &str) -> Result<String, String> {
    let input = c_string_in(session, input);
    let format = c_string_in(session, format);
    let out_len: i32 = session.call_typed("malloc", 4).unwrap();
    let out: i32 = session
        .call_typed("render", (input, format, out_len))
        .unwrap();
    if out == 0 {
        let why: i32 = session.call_typed("render_error", ()).unwrap();
        let why = session.read_c_string(why as u32 as u64, 1024).unwrap();
        return Err(String::from_utf8(why).unwrap());
    }
    let len = session.read_u32(out_len as u32 as u64).unwrap();
    let bytes = session
        .read_memory(out as u32 as u64, len as usize)
        .unwrap();
    // The output is also NUL-terminated right after those bytes.
    let c = session
        .read_c_string(out as u32 as u64, len as usize + 1)
        .unwrap();
    assert_eq!(bytes, c);
    Ok(String::from_utf8(bytes).unwrap())
}

const INPUT: &str = "name=ada\nlang=c\n";
const FORMAT: &str = "hello {{name|upper}}, written in {{lang}}; render {{@n}}, cache {{@cache}}";
const EXPECTED: &str = "hello ADA, written in c; render 1, cache miss";

#[test]
#[cfg_attr(
    not(c_toolchain),
    ignore = "needs clang + wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)"
)]
fn twenty_renders_in_one_sandbox_each_from_the_clean_slate() {
    let module = render_module();
    on_both_strategies(|strategy| {
        let mut twin = twin(&module, |b| {
            b.reset_strategy(strategy).verify(Verify::Always)
        });
        for i in 0..20 {
            let mut session = twin.sandbox.session();
            let output = render(&mut session, INPUT, FORMAT);
            session.finish().unwrap();
            assert_eq!(output.as_deref(), Ok(EXPECTED), "render {i}");
            let report = twin.sandbox.last_reset().unwrap();
            assert!(report.verified());
            if strategy == ResetStrategy::Auto && expect_tracking() {
                // The heap, the inputs the host wrote and the library's
                // statics, copied back in place (nothing grew).
                assert_eq!(report.path(), ResetPath::InPlace);
                assert!(report.dirty_pages() > 0);
            }
            assert_matches_twin(&mut twin);
        }
    });
}

#[test]
#[cfg_attr(
    not(c_toolchain),
    ignore = "needs clang + wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)"
)]
fn without_the_reset_the_library_state_would_leak() {
    let module = render_module();
    on_both_strategies(|strategy| {
        let mut twin = twin(&module, |b| {
            b.reset_strategy(strategy).verify(Verify::Always)
        });
        // Inside one session nothing is reset: the counter, the template
        // cache and the last error carry over, as they would without a
        // clean slate.
        {
            let mut session = twin.sandbox.session();
            assert_eq!(render(&mut session, INPUT, FORMAT).as_deref(), Ok(EXPECTED));
            assert_eq!(
                render(&mut session, INPUT, FORMAT).as_deref(),
                Ok("hello ADA, written in c; render 2, cache hit")
            );
            assert_eq!(
                render(&mut session, INPUT, "broken {{name"),
                Err("unterminated {{ in template".to_string())
            );
            assert_eq!(
                render(&mut session, "", "{{@n}} {{@cache}} {{missing}}.").as_deref(),
                Ok("4 miss .")
            );
        }
        assert_matches_twin(&mut twin);
        // Each new session starts from the snapshot: count 1, cold cache,
        // no error left behind.
        let mut session = twin.sandbox.session();
        let why: i32 = session.call_typed("render_error", ()).unwrap();
        assert_eq!(session.read_c_string(why as u32 as u64, 1024).unwrap(), b"");
        assert_eq!(render(&mut session, INPUT, FORMAT).as_deref(), Ok(EXPECTED));
        session.finish().unwrap();
        assert_matches_twin(&mut twin);
    });
}
