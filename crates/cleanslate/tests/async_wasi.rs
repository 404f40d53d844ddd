//! WASI guests called from async code: `SandboxPool::call_async`,
//! `call_async_inline`, and a plain `Sandbox::call_with` made inside a tokio
//! task, on multi-threaded and current-thread runtimes (with and without
//! timers). wasmtime-wasi's synchronous layer blocks on a tokio runtime for
//! every WASI call, which panicked ("Cannot start a runtime from within a
//! runtime") whenever the caller's thread was already inside one.

mod common;

use std::time::Duration;

use cleanslate::{Call, ErrorKind, PoolConfig, Runtime, Sandbox, SandboxPool, TrapCode, Val};
use common::build::c_guest;
use common::{assert_matches_twin, twin};

/// `say(n)` writes "say N\n" to stdout and "err N\n" to stderr with
/// `fd_write`, leaving the text in memory and counting calls in a global;
/// it returns the count (1 from a clean slate). `say_and_trap(n)` does the
/// same, then traps. `nap()` sleeps 1 ms through `poll_oneoff`, which needs
/// a timer. `echo_stdin()` copies stdin to stdout with `fd_read`.
/// `leftovers()` is non-zero when anything of an earlier call is visible.
const SAY_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $calls (mut i32) (i32.const 0))
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  ;; Writes "say N\n" and "err N\n"; the text ends at 211.
  (func $say (param $n i32) (result i32) (local $pos i32) (local $len i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (local.set $pos (i32.const 210))
    (i32.store8 (i32.const 210) (i32.const 10))
    (loop $digit
      (local.set $pos (i32.sub (local.get $pos) (i32.const 1)))
      (i32.store8 (local.get $pos)
        (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (local.set $pos (i32.sub (local.get $pos) (i32.const 4)))
    (local.set $len (i32.sub (i32.const 211) (local.get $pos)))
    (i32.store (local.get $pos) (i32.const 0x20796173)) ;; "say "
    (call $write (i32.const 1) (local.get $pos) (local.get $len))
    (i32.store (local.get $pos) (i32.const 0x20727265)) ;; "err "
    (call $write (i32.const 2) (local.get $pos) (local.get $len))
    (global.get $calls))
  (func (export "say") (param $n i32) (result i32) (call $say (local.get $n)))
  (func (export "say_and_trap") (param $n i32)
    (drop (call $say (local.get $n)))
    unreachable)
  (func (export "nap") (result i32)
    ;; One relative clock subscription of 1 ms (monotonic clock).
    (i64.store (i32.const 1024) (i64.const 0))
    (i32.store8 (i32.const 1032) (i32.const 0))
    (i32.store (i32.const 1040) (i32.const 1))
    (i64.store (i32.const 1048) (i64.const 1000000))
    (i64.store (i32.const 1056) (i64.const 0))
    (i32.store16 (i32.const 1064) (i32.const 0))
    (call $poll_oneoff (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 2100)))
  (func (export "echo_stdin") (result i32) (local $read i32)
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.const 1024))
    (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
    (local.set $read (i32.load (i32.const 24)))
    (call $write (i32.const 1) (i32.const 4096) (local.get $read))
    (local.get $read))
  (func (export "leftovers") (result i32)
    (i32.or (global.get $calls)
      (i32.or (i32.load (i32.const 0)) (i32.load (i32.const 208))))))"#;

fn say_module() -> cleanslate::Module {
    Runtime::new().unwrap().load_bytes(SAY_WAT).unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

fn say(n: i32) -> Call {
    Call::values("say", &[Val::I32(n)])
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap()
}

/// A current-thread runtime with no timers or I/O: WASI must not depend on
/// the caller's runtime having them.
fn bare_current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn assert_said(result: &cleanslate::CallResult, n: i32) {
    assert_eq!(text(result.stdout()), format!("say {n}\n"), "{result:?}");
    assert_eq!(text(result.stderr()), format!("err {n}\n"), "{result:?}");
    assert_eq!(
        result.values(),
        [Val::I32(1)],
        "the call counter started from the clean slate"
    );
}

/// Through the guest's own eyes: nothing of an earlier call is left in the
/// sandboxes the next calls get.
async fn assert_pool_clean(pool: &SandboxPool) {
    for _ in 0..pool.config().size() {
        let result = pool
            .call_async(Call::values("leftovers", &[]))
            .await
            .unwrap();
        assert_eq!(result.values(), [Val::I32(0)], "an earlier call is visible");
    }
}

#[test]
fn sandbox_call_inside_a_tokio_task_runs_wasi_and_resets() {
    let module = say_module();
    for (name, runtime) in [
        ("multi_thread", multi_thread()),
        ("current_thread", bare_current_thread()),
    ] {
        let mut fx = twin(&module, |b| b);
        runtime.block_on(async {
            let result = fx.sandbox.call_with(&say(42)).unwrap();
            assert_said(&result, 42);
            let with_token = say(7).cancel_token(&Default::default());
            assert_said(&fx.sandbox.call_with(&with_token).unwrap(), 7);
            assert_eq!(
                fx.sandbox.call("nap", &[]).unwrap(),
                [Val::I32(0)],
                "{name}: poll_oneoff"
            );
            let echoed = fx
                .sandbox
                .call_with(&Call::values("echo_stdin", &[]).stdin("from stdin"))
                .unwrap();
            assert_eq!(text(echoed.stdout()), "from stdin", "{name}");
        });
        assert_matches_twin(&mut fx);
    }
}

#[test]
fn a_failed_wasi_call_inside_a_tokio_task_keeps_its_output_and_resets() {
    let module = say_module();
    let mut fx = twin(&module, |b| b);
    multi_thread().block_on(async {
        let err = fx
            .sandbox
            .call_with(&Call::values("say_and_trap", &[Val::I32(5)]))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Trap(TrapCode::Unreachable), "{err}");
        assert_eq!(text(err.stdout()), "say 5\n");
        assert_eq!(text(err.stderr()), "err 5\n");
    });
    assert_matches_twin(&mut fx);
}

#[test]
fn pool_call_async_runs_wasi_on_any_runtime() {
    let pool = SandboxPool::new(Sandbox::builder(&say_module()), PoolConfig::new(2)).unwrap();
    for runtime in [multi_thread(), bare_current_thread()] {
        runtime.block_on(async {
            assert_said(&pool.call_async(say(12)).await.unwrap(), 12);
            let nap = pool.call_async(Call::values("nap", &[])).await.unwrap();
            assert_eq!(nap.values(), [Val::I32(0)]);
            let err = pool
                .call_async(Call::values("say_and_trap", &[Val::I32(3)]))
                .await
                .unwrap_err();
            assert_eq!(text(err.stdout()), "say 3\n", "{err}");
            assert_pool_clean(&pool).await;
        });
    }
}

#[test]
fn pool_call_async_inline_runs_wasi() {
    let pool = SandboxPool::new(Sandbox::builder(&say_module()), PoolConfig::new(2)).unwrap();
    multi_thread().block_on(async {
        assert_said(&pool.call_async_inline(&say(99)).await.unwrap(), 99);
        let nap = pool
            .call_async_inline(&Call::values("nap", &[]))
            .await
            .unwrap();
        assert_eq!(nap.values(), [Val::I32(0)]);
        assert_pool_clean(&pool).await;
    });
    // The current-thread runtime too: there the call holds the only thread.
    bare_current_thread().block_on(async {
        assert_said(&pool.call_async_inline(&say(98)).await.unwrap(), 98);
    });
}

#[test]
fn concurrent_async_wasi_calls_never_mix_their_output() {
    let pool = SandboxPool::new(
        Sandbox::builder(&say_module()),
        PoolConfig::new(3).max_wait(Duration::from_secs(20)),
    )
    .unwrap();
    let runtime = multi_thread();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for n in 0..48 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let result = if n % 2 == 0 {
                    pool.call_async(say(n)).await
                } else {
                    pool.call_async_inline(&say(n)).await
                };
                (n, result.unwrap())
            }));
        }
        for task in tasks {
            let (n, result) = task.await.unwrap();
            assert_said(&result, n);
        }
        assert_pool_clean(&pool).await;
    });
    assert_eq!(pool.metrics().calls_total(), 48 + 3);
}

#[test]
#[cfg_attr(
    not(c_toolchain),
    ignore = "needs clang + wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)"
)]
fn a_c_wasi_command_runs_through_call_async() {
    let path = c_guest("wasi_tool");
    let module = Runtime::new().unwrap().load_file(path).unwrap();
    let pool = SandboxPool::new(Sandbox::builder(&module), PoolConfig::new(1)).unwrap();
    multi_thread().block_on(async {
        for round in 0..2 {
            let call = Call::values("_start", &[])
                .arg("wasi_tool")
                .arg("echo")
                .stdin(format!("round {round}\n"));
            let result = pool.call_async(call).await.unwrap();
            assert_eq!(
                text(result.stdout()),
                format!("ROUND {round}\narg[0]=wasi_tool\narg[1]=echo\ngreeting=(unset)\n")
            );
            assert_eq!(text(result.stderr()), "note: echo done\n");
            assert_eq!(result.exit_code(), Some(0));
        }
    });
}
