//! The sandbox pool: many threads, fewer sandboxes, a clean slate for every
//! call; exhaustion is a typed error; an unrecoverable sandbox is replaced.

use std::sync::Arc;
use std::time::Duration;

use cleanslate::{ErrorKind, Fault, PoolConfig, Runtime, Sandbox, SandboxPool, Val, Verify};

/// `canary(x)`: returns what memory and a global held at entry (0 in a
/// clean slate), after writing `x` to both and checking, after a pause,
/// that nobody else's write appeared (traps if one did).
const CANARY_WAT: &str = r#"(module
  (memory 1)
  (global $g (mut i32) (i32.const 0))
  (func (export "canary") (param $x i32) (result i32)
    (local $seen i32) (local $i i32)
    (local.set $seen (i32.add (i32.load (i32.const 0)) (global.get $g)))
    (i32.store (i32.const 0) (local.get $x))
    (global.set $g (local.get $x))
    (loop $pause
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $pause (i32.lt_u (local.get $i) (i32.const 2000))))
    (if (i32.ne (i32.load (i32.const 0)) (local.get $x)) (then unreachable))
    (if (i32.ne (global.get $g) (local.get $x)) (then unreachable))
    (local.get $seen))
  (func (export "spin") (loop $forever (br $forever))))"#;

fn pool(size: usize, wait: Duration) -> SandboxPool {
    let module = Runtime::new().unwrap().load_bytes(CANARY_WAT).unwrap();
    let builder = Sandbox::builder(&module)
        .timeout(Duration::from_millis(300))
        .verify(Verify::Always);
    SandboxPool::new(builder, PoolConfig::new(size).max_wait(wait)).unwrap()
}

#[test]
fn concurrent_callers_each_see_a_clean_slate() {
    let pool = Arc::new(pool(2, Duration::from_secs(10)));
    let threads: Vec<_> = (1..=6)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let canary = t * 10_000 + i;
                    let seen = pool.call("canary", &[Val::I32(canary)]).unwrap();
                    assert_eq!(
                        seen,
                        [Val::I32(0)],
                        "call {canary} saw another call's canary"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let m = pool.metrics();
    assert_eq!(m.calls("canary", "ok"), 1200);
    assert_eq!(m.reset_micros().count(), 1200);
    assert_eq!(m.in_use(), 0);
    assert_eq!(pool.idle(), 2);
}

#[test]
fn async_callers_share_the_pool() {
    let pool = pool(2, Duration::from_secs(10));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let calls = (0..20).map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.call_async(cleanslate::Call::values("canary", &[Val::I32(i + 1)]))
                    .await
            })
        });
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await.unwrap().unwrap());
        }
        out
    });
    assert!(results.iter().all(|r| r.values() == [Val::I32(0)]));
}

#[test]
fn exhaustion_is_a_typed_error_after_the_wait() {
    let pool = Arc::new(pool(1, Duration::from_millis(20)));
    let busy = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.call("spin", &[]).unwrap_err())
    };
    // Let the spinning call take the only sandbox.
    while pool.metrics().in_use() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let err = pool.call("canary", &[Val::I32(1)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolExhausted, "{err}");
    assert_eq!(busy.join().unwrap().kind(), ErrorKind::Timeout);
    // Free again, and clean.
    assert_eq!(pool.call("canary", &[Val::I32(2)]).unwrap(), [Val::I32(0)]);
    let m = pool.metrics();
    assert_eq!(m.exhausted(), 1);
    assert_eq!(m.calls("canary", "pool_exhausted"), 1);
    assert_eq!(m.calls("spin", "timeout"), 1);
}

#[test]
fn an_unrecoverable_sandbox_is_replaced_in_the_background() {
    let pool = pool(1, Duration::from_secs(10));
    pool.inject_fault(Fault::CorruptMemory);
    let err = pool.call("canary", &[Val::I32(7)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResetFailed, "{err}");
    // The replacement arrives; the next call waits for it and is clean.
    assert_eq!(pool.call("canary", &[Val::I32(8)]).unwrap(), [Val::I32(0)]);
    assert_eq!(pool.metrics().replacements(), 1);
    assert_eq!(pool.idle(), 1);
}

#[test]
fn a_pool_of_zero_or_of_absurd_size_is_refused() {
    let module = Runtime::new().unwrap().load_bytes(CANARY_WAT).unwrap();
    for size in [0, cleanslate::MAX_POOL_SIZE + 1, 100_000_000, usize::MAX] {
        // Refused before building (or allocating for) any sandbox.
        let err = SandboxPool::new(Sandbox::builder(&module), PoolConfig::new(size)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{size}: {err}");
    }
}

/// Async waiters that give up (their wait limit passes, or their future is
/// dropped mid-wait) never take a sandbox with them: the pool ends whole.
#[test]
fn async_waiters_that_give_up_lose_no_sandbox() {
    let pool = pool(1, Duration::from_millis(30));
    // No timers on this runtime: the pool's wait limit must not need them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let spinner = {
            let pool = pool.clone();
            tokio::task::spawn_blocking(move || pool.call("spin", &[]).unwrap_err())
        };
        while pool.metrics().in_use() == 0 {
            tokio::task::yield_now().await;
        }
        // Waiters that time out inside the pool.
        let waiters: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.call_async(cleanslate::Call::values("canary", &[Val::I32(i + 1)]))
                        .await
                })
            })
            .collect();
        for waiter in waiters {
            let err = waiter.await.unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::PoolExhausted, "{err}");
        }
        // Waiters whose futures are dropped while they wait.
        let cancelled: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.call_async_inline(&cleanslate::Call::values("canary", &[Val::I32(i)]))
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        for task in &cancelled {
            task.abort();
        }
        assert_eq!(spinner.await.unwrap().kind(), ErrorKind::Timeout);
    });
    assert_eq!(pool.idle(), 1, "a waiter kept the sandbox");
    assert_eq!(pool.call("canary", &[Val::I32(9)]).unwrap(), [Val::I32(0)]);
    assert_eq!(pool.metrics().exhausted(), 8);
}

/// Inline async calls on a runtime with one worker more than sandboxes:
/// every caller sees a clean slate, and while every sandbox runs a slow
/// guest, other tasks still run.
#[test]
fn inline_async_calls_leave_a_worker_free() {
    let pool = pool(2, Duration::from_secs(10));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .build()
        .unwrap();
    runtime.block_on(async {
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.call_async_inline(&cleanslate::Call::values("canary", &[Val::I32(i + 1)]))
                        .await
                })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap().values(), [Val::I32(0)]);
        }
        // Two spinning guests occupy both sandboxes (and two workers)...
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.call_async_inline(&cleanslate::Call::values("spin", &[]))
                        .await
                })
            })
            .collect();
        while pool.metrics().in_use() < 2 {
            tokio::task::yield_now().await;
        }
        // ...and the third worker still runs other tasks meanwhile.
        let other = tokio::spawn(async { 42 }).await.unwrap();
        assert_eq!(other, 42);
        assert!(
            pool.metrics().in_use() == 2,
            "the spinners ended before the other task ran"
        );
        for spinner in spinners {
            let err = spinner.await.unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);
        }
    });
    assert_eq!(pool.idle(), 2);
    assert_eq!(pool.metrics().calls("canary", "ok"), 40);
}

/// A slow inline call does not stop the runtime's I/O: while a guest spins
/// on the worker that was waiting for I/O (the one tokio leaves alone,
/// tokio-rs/tokio#4730), a task blocked on a socket is still woken. The
/// server's accept loop is such a task.
#[test]
fn a_slow_inline_call_leaves_the_runtime_its_io() {
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pool = pool(1, Duration::from_secs(10));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
        .unwrap();
    let (trigger, echo) = runtime.block_on(async {
        let trigger = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        (trigger, echo)
    });
    let trigger_address = trigger.local_addr().unwrap();
    let echo_address = echo.local_addr().unwrap();
    // Woken by I/O, this task runs the spinning guest (300 ms timeout).
    let spinner = runtime.spawn({
        let pool = pool.clone();
        async move {
            let (mut socket, _) = trigger.accept().await.unwrap();
            socket.read_u8().await.unwrap();
            pool.call_async_inline(&cleanslate::Call::values("spin", &[]))
                .await
        }
    });
    // Waits for I/O the whole time: it answers each connection with a byte.
    runtime.spawn(async move {
        loop {
            let (mut socket, _) = echo.accept().await.unwrap();
            socket.write_u8(7).await.unwrap();
        }
    });
    // Both workers park: one on the I/O driver, one on a condvar.
    std::thread::sleep(Duration::from_millis(50));
    std::net::TcpStream::connect(trigger_address)
        .unwrap()
        .write_all(&[1])
        .unwrap();
    let started = std::time::Instant::now();
    while pool.metrics().in_use() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no call started"
        );
        std::thread::yield_now();
    }
    let mut reply = [0u8];
    std::net::TcpStream::connect(echo_address)
        .unwrap()
        .read_exact(&mut reply)
        .unwrap();
    assert_eq!(reply, [7]);
    assert_eq!(
        pool.metrics().in_use(),
        1,
        "the I/O task was answered only after the guest ended"
    );
    let err = runtime.block_on(spinner).unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

/// `init` asks the host whether building may succeed (`env.gate`).
const GATED_WAT: &str = r#"(module
  (import "env" "gate" (func $gate))
  (memory 1)
  (func (export "init") (call $gate))
  (func (export "store") (param i32) (result i32)
    (i32.store (i32.const 0) (local.get 0))
    (local.get 0)))"#;

#[test]
fn a_dropped_pool_frees_its_sandboxes_and_stops_rebuilding() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let module = Runtime::new().unwrap().load_bytes(GATED_WAT).unwrap();
    let builds_fail = Arc::new(AtomicBool::new(false));
    // Held by the host function, so by every sandbox and every builder of
    // the pool: when the count falls back to 1, all of them are gone.
    let marker = Arc::new(());
    let builder = Sandbox::builder(&module)
        .init("init")
        .verify(Verify::Always)
        .host_fn("env", "gate", {
            let builds_fail = builds_fail.clone();
            let marker = marker.clone();
            move |_| {
                let _ = &marker;
                if builds_fail.load(Ordering::SeqCst) {
                    Err("building is failing on purpose".into())
                } else {
                    Ok(vec![])
                }
            }
        });
    let pool = SandboxPool::new(builder, PoolConfig::new(2)).unwrap();
    builds_fail.store(true, Ordering::SeqCst);
    // Both sandboxes become unrecoverable; their replacements keep failing
    // to build, so two rebuild threads retry with backoff.
    for _ in 0..2 {
        pool.inject_fault(Fault::CorruptMemory);
        let err = pool.call("store", &[Val::I32(7)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResetFailed, "{err}");
    }
    assert_eq!(pool.metrics().replacements(), 2);
    assert_eq!(pool.idle(), 0);
    drop(pool);
    let dropped = std::time::Instant::now();
    while Arc::strong_count(&marker) > 1 {
        assert!(
            dropped.elapsed() < Duration::from_secs(3),
            "3 s after the pool was dropped, {} holders of its sandboxes' host function remain (rebuild threads keeping the pool alive)",
            Arc::strong_count(&marker) - 1
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
