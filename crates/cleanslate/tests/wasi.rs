//! WASI preview 1: a C command built with clang + wasi-libc, and small WAT
//! guests. A fresh WASI context per call (stdout of one call never shows up
//! in the next), no filesystem without a preopen, read-only preopens,
//! deterministic clocks and randomness, and the clean slate after each call.

mod common;

use cleanslate::{
    Call, DirAccess, ErrorKind, Runtime, Sandbox, SandboxBuilder, TrapCode, Val, WasiConfig,
};
use common::build::c_guest;
use common::{Twin as Fixture, assert_matches_twin as assert_clean_slate};

fn fixture(wasm: &[u8], configure: impl Fn(SandboxBuilder) -> SandboxBuilder) -> Fixture {
    let module = Runtime::new().unwrap().load_bytes(wasm).unwrap();
    common::twin(&module, configure)
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

fn c_tool() -> Vec<u8> {
    std::fs::read(c_guest("wasi_tool")).unwrap()
}

fn start(mode: &str) -> Call {
    Call::values("_start", &[]).arg("wasi_tool").arg(mode)
}

#[test]
#[cfg_attr(
    not(c_toolchain),
    ignore = "needs clang + wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)"
)]
fn c_command_captures_stdio_per_call_with_args_env_and_exit_codes() {
    let wasm = c_tool();
    let mut fx = fixture(&wasm, |b| {
        b.wasi(WasiConfig::new().env("GREETING", "hello"))
    });
    let first = fx
        .sandbox
        .call_with(&start("echo").arg("extra").stdin("first input\n"))
        .unwrap();
    assert_eq!(
        text(first.stdout()),
        "FIRST INPUT\narg[0]=wasi_tool\narg[1]=echo\narg[2]=extra\ngreeting=hello\n"
    );
    assert_eq!(text(first.stderr()), "note: echo done\n");
    assert_eq!(first.exit_code(), Some(0), "{first:?}");
    assert_clean_slate(&mut fx);

    // The second call sees only its own input and output, and its own env.
    let second = fx
        .sandbox
        .call_with(
            &start("echo")
                .stdin("second\n")
                .env("GREETING", "bye")
                .env("EXIT_CODE", "7"),
        )
        .unwrap();
    assert_eq!(
        text(second.stdout()),
        "SECOND\narg[0]=wasi_tool\narg[1]=echo\ngreeting=bye\n"
    );
    assert_eq!(second.exit_code(), Some(7), "proc_exit(7) is a result");
    assert_clean_slate(&mut fx);

    // Through plain `call`, a non-zero exit is an error with the code (and
    // what the guest wrote), and exit code 0 is a plain return.
    let mut fx = fixture(&wasm, |b| b.wasi(WasiConfig::new().env("EXIT_CODE", "5")));
    let err = fx.sandbox.call("_start", &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exited, "{err}");
    assert_eq!(err.exit_code(), Some(5));
    assert!(text(err.stdout()).contains("greeting=(unset)"), "{err:?}");
    assert_clean_slate(&mut fx);
    let mut fx = fixture(&wasm, |b| b);
    assert_eq!(fx.sandbox.call("_start", &[]).unwrap(), []);
    assert_clean_slate(&mut fx);
}

#[test]
#[cfg_attr(
    not(c_toolchain),
    ignore = "needs clang + wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)"
)]
fn c_command_static_state_is_reset_between_runs() {
    let wasm = c_tool();
    let mut fx = fixture(&wasm, |b| b);
    for _ in 0..3 {
        let run = fx.sandbox.call_with(&start("leak")).unwrap();
        assert_eq!(
            text(run.stdout()),
            "left behind: []\n",
            "an earlier run leaked"
        );
        assert_clean_slate(&mut fx);
    }
}

#[test]
#[cfg_attr(
    not(c_toolchain),
    ignore = "needs clang + wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)"
)]
fn no_filesystem_without_a_preopen() {
    let wasm = c_tool();
    let mut fx = fixture(&wasm, |b| b);
    let run = fx.sandbox.call_with(&start("passwd")).unwrap();
    assert_eq!(run.exit_code(), Some(3), "{}", text(run.stdout()));
    assert!(
        text(run.stdout()).starts_with("cannot open /etc/passwd"),
        "{run:?}"
    );
    assert_clean_slate(&mut fx);
}

#[test]
#[cfg_attr(
    not(c_toolchain),
    ignore = "needs clang + wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)"
)]
fn read_only_preopen_reads_but_refuses_writes() {
    let wasm = c_tool();
    let dir = std::env::temp_dir().join(format!("cleanslate-wasi-ro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in.txt"), "from the host\n").unwrap();
    let config = WasiConfig::new().preopen_dir(&dir, "/data", DirAccess::ReadOnly);
    let mut fx = fixture(&wasm, |b| b.wasi(config.clone()));
    let run = fx.sandbox.call_with(&start("read")).unwrap();
    assert_eq!(text(run.stdout()), "from the host\n");
    let run = fx.sandbox.call_with(&start("write")).unwrap();
    assert_eq!(run.exit_code(), Some(4), "{}", text(run.stdout()));
    assert!(
        !dir.join("out.txt").exists(),
        "a read-only preopen was written"
    );
    // /etc stays out of reach even with a preopen.
    let run = fx.sandbox.call_with(&start("passwd")).unwrap();
    assert_eq!(run.exit_code(), Some(3));
    assert_clean_slate(&mut fx);

    let config = WasiConfig::new().preopen_dir(&dir, "/data", DirAccess::ReadWrite);
    let mut fx = fixture(&wasm, |b| b.wasi(config.clone()));
    let run = fx.sandbox.call_with(&start("write")).unwrap();
    assert!(matches!(run.exit_code(), None | Some(0)), "{run:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "written\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg_attr(
    not(c_toolchain),
    ignore = "needs clang + wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)"
)]
fn missing_preopen_directory_is_refused_at_build() {
    let wasm = c_tool();
    let module = Runtime::new().unwrap().load_bytes(&wasm).unwrap();
    let err = Sandbox::builder(&module)
        .wasi(WasiConfig::new().preopen_dir("/no/such/dir", "/data", DirAccess::ReadOnly))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{err}");
    assert!(err.message().contains("/no/such/dir"), "{err}");
}

/// Writes "partial output" to stdout with fd_write, then traps; `random`
/// and `now` read WASI's randomness and clock.
const WAT_WASI: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "partial output\n")
  (global $calls (mut i32) (i32.const 0))
  (func $write (param $len i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "write_then_trap")
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (call $write (i32.const 15))
    unreachable)
  (func (export "write_a_lot") (local $i i32)
    (loop $again
      (call $write (i32.const 15))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 100)))))
  (func (export "random") (result i64)
    (drop (call $random_get (i32.const 64) (i32.const 8)))
    (i64.load (i32.const 64)))
  (func (export "now") (result i64)
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 64)))
    (i64.load (i32.const 64)))
  (func (export "calls") (result i32) (global.get $calls)))"#;

#[test]
fn stdout_of_a_failed_call_comes_with_the_error_and_not_the_next_call() {
    let mut fx = fixture(WAT_WASI.as_bytes(), |b| b);
    let err = fx.sandbox.call("write_then_trap", &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap(TrapCode::Unreachable), "{err}");
    assert_eq!(err.stdout(), b"partial output\n");
    assert_clean_slate(&mut fx);
    assert_eq!(fx.sandbox.call("calls", &[]).unwrap(), [Val::I32(0)]);
    let next = fx.sandbox.call_with(&Call::values("calls", &[])).unwrap();
    assert!(
        next.stdout().is_empty(),
        "call 1's output leaked into call 2"
    );
}

#[test]
fn stdout_over_the_output_limit_is_typed() {
    let mut fx = fixture(WAT_WASI.as_bytes(), |b| b.output_limit(1000));
    let err = fx.sandbox.call("write_a_lot", &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutputTooLarge, "{err}");
    assert_clean_slate(&mut fx);
}

#[test]
fn deterministic_mode_repeats_clocks_and_randomness() {
    let module = Runtime::new().unwrap().load_bytes(WAT_WASI).unwrap();
    let sample = |config: WasiConfig| {
        let mut sandbox = Sandbox::builder(&module).wasi(config).build().unwrap();
        let random = sandbox.call("random", &[]).unwrap();
        let now = sandbox.call("now", &[]).unwrap();
        (random, now)
    };
    let a = sample(WasiConfig::new().deterministic(7));
    let b = sample(WasiConfig::new().deterministic(7));
    assert_eq!(a, b, "same seed, same values");
    assert_eq!(a.1, [Val::I64(1_700_000_000_000_000_000)]);
    let c = sample(WasiConfig::new().deterministic(8));
    assert_ne!(a.0, c.0, "another seed, other randomness");
    let real_1 = sample(WasiConfig::new());
    let real_2 = sample(WasiConfig::new());
    assert_ne!(real_1.0, real_2.0, "real randomness differs");
}

/// Three runs of a command in one sandbox, each with its own input: each
/// is exactly what a first run in a brand-new sandbox gives.
#[test]
#[cfg_attr(
    not(c_toolchain),
    ignore = "needs clang + wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)"
)]
fn repeated_command_runs_equal_first_runs() {
    let wasm = c_tool();
    let mut reused = fixture(&wasm, |b| b);
    for (input, code) in [("alpha\n", "0"), ("beta beta\n", "3"), ("", "0")] {
        let call = start("echo")
            .arg(input.trim())
            .stdin(input)
            .env("EXIT_CODE", code);
        let again = reused.sandbox.call_with(&call).unwrap();
        let mut fresh = fixture(&wasm, |b| b);
        let first = fresh.sandbox.call_with(&call).unwrap();
        assert_eq!(text(again.stdout()), text(first.stdout()));
        assert_eq!(text(again.stderr()), text(first.stderr()));
        assert_eq!(again.exit_code(), first.exit_code());
        assert_eq!(again.exit_code(), Some(code.parse().unwrap()));
        assert_clean_slate(&mut reused);
    }
}
