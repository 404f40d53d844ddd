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

/// A WASI guest writing to stdout and stderr (see the file's head).
const SAY_WAT: &str = include_str!("../../../guests/wasi_say.wat");

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
