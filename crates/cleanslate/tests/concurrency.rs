//! Many threads, fewer sandboxes, cancellations from other threads at
//! random moments: every call sees a clean slate (its canary finds no one
//! else's), a cancel stops only the call it was meant for, and nothing is
//! lost or left dirty.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use cleanslate::{
    Call, CancelToken, ErrorKind, PoolConfig, Runtime, Sandbox, SandboxPool, Status, Val, Verify,
};

/// `canary(x, pause)`: returns what memory and a global held at entry (0
/// in a clean slate) after writing `x` to both, pausing `pause` loop turns
/// and checking nobody else's write appeared (traps if one did).
const CANARY_WAT: &str = r#"(module
  (memory 1)
  (global $g (mut i32) (i32.const 0))
  (func (export "canary") (param $x i32) (param $pause i32) (result i32)
    (local $seen i32) (local $i i32)
    (local.set $seen (i32.add (i32.load (i32.const 0)) (global.get $g)))
    (i32.store (i32.const 0) (local.get $x))
    (i32.store (i32.const 40000) (local.get $x))
    (global.set $g (local.get $x))
    (loop $pause
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $pause (i32.lt_u (local.get $i) (local.get $pause))))
    (if (i32.ne (i32.load (i32.const 0)) (local.get $x)) (then unreachable))
    (if (i32.ne (i32.load (i32.const 40000)) (local.get $x)) (then unreachable))
    (if (i32.ne (global.get $g) (local.get $x)) (then unreachable))
    (local.get $seen)))"#;

fn module() -> cleanslate::Module {
    Runtime::new().unwrap().load_bytes(CANARY_WAT).unwrap()
}

/// A small deterministic generator per thread (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn threads_outnumbering_the_pool_never_see_each_other_even_with_cancels_at_random_moments() {
    const THREADS: u64 = 8;
    const CALLS: u64 = 250;
    let builder = Sandbox::builder(&module())
        .timeout(Duration::from_secs(10))
        .verify(Verify::Always);
    let pool = Arc::new(
        SandboxPool::new(
            builder,
            PoolConfig::new(3).max_wait(Duration::from_secs(30)),
        )
        .unwrap(),
    );
    // Two cancellers: each takes (token, when) and cancels at that moment,
    // which may fall before the call gets a sandbox, during it, or after.
    let (to_cancel, cancel_rx) = mpsc::channel::<(CancelToken, Instant)>();
    let cancel_rx = Arc::new(std::sync::Mutex::new(cancel_rx));
    let cancellers: Vec<_> = (0..2)
        .map(|_| {
            let rx = cancel_rx.clone();
            std::thread::spawn(move || {
                loop {
                    let next = rx.lock().unwrap().recv();
                    let Ok((token, when)) = next else { break };
                    if let Some(wait) = when.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    token.cancel();
                }
            })
        })
        .collect();
    let (ok, cancelled) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let while_running = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (1..=THREADS)
        .map(|t| {
            let (pool, to_cancel) = (pool.clone(), to_cancel.clone());
            let (ok, cancelled) = (ok.clone(), cancelled.clone());
            let while_running = while_running.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9 * t);
                for i in 0..CALLS {
                    let canary = (t * 100_000 + i) as i32;
                    // Mostly short calls, one in four long enough (about a
                    // millisecond) for cancels to land while it runs.
                    let pause = match rng.below(4) {
                        0 => rng.below(2_000_000),
                        _ => rng.below(20_000),
                    } as i32;
                    let token = CancelToken::new();
                    let doomed = rng.below(3) == 0;
                    if doomed {
                        let at = Instant::now() + Duration::from_micros(rng.below(400));
                        to_cancel.send((token.clone(), at)).unwrap();
                    }
                    let call = Call::values("canary", &[Val::I32(canary), Val::I32(pause)])
                        .cancel_token(&token);
                    match pool.call_with(&call) {
                        Ok(result) => {
                            assert_eq!(
                                result.values(),
                                [Val::I32(0)],
                                "call {canary} saw another call's canary"
                            );
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == ErrorKind::Cancelled => {
                            assert!(doomed, "call {canary} was cancelled by no one: {e}");
                            cancelled.fetch_add(1, Ordering::Relaxed);
                            let text = e.to_string();
                            if !text.contains("never ran") && !text.contains("before it started") {
                                while_running.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => panic!("call {canary}: {e}"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    drop(to_cancel);
    for canceller in cancellers {
        canceller.join().unwrap();
    }
    let (ok, cancelled) = (
        ok.load(Ordering::Relaxed),
        cancelled.load(Ordering::Relaxed),
    );
    assert_eq!(ok + cancelled, THREADS * CALLS);
    let while_running = while_running.load(Ordering::Relaxed);
    eprintln!("{ok} ok, {cancelled} cancelled ({while_running} while running)");
    assert!(ok > 0 && cancelled > 0, "ok {ok}, cancelled {cancelled}");
    assert!(while_running > 0, "no cancel landed while a call ran");
    assert!(
        cancelled > while_running,
        "no cancel landed before a call ran"
    );
    let m = pool.metrics();
    assert_eq!(m.calls("canary", "ok"), ok);
    assert_eq!(m.calls("canary", "cancelled"), cancelled);
    assert_eq!(m.replacements(), 0, "no reset failed");
    // Every sandbox is clean and serving: as many calls at once as there
    // are sandboxes.
    assert_eq!(pool.idle(), 3);
    let clean: Vec<_> = (0..3)
        .map(|i| {
            let pool = pool.clone();
            std::thread::spawn(move || pool.call("canary", &[Val::I32(i + 1), Val::I32(50_000)]))
        })
        .collect();
    for call in clean {
        assert_eq!(call.join().unwrap().unwrap(), [Val::I32(0)]);
    }
}

#[test]
fn a_cancel_ends_a_wait_for_a_sandbox_and_the_call_never_runs() {
    let spin = r#"(module (memory 1)
      (func (export "spin") (i32.store (i32.const 8) (i32.const 1)) (loop br 0))
      (func (export "peek") (result i32) (i32.load (i32.const 8))))"#;
    let module = Runtime::new().unwrap().load_bytes(spin).unwrap();
    let pool = Arc::new(
        SandboxPool::new(
            Sandbox::builder(&module).timeout(Duration::from_secs(20)),
            PoolConfig::new(1).max_wait(Duration::from_secs(20)),
        )
        .unwrap(),
    );
    let busy_token = CancelToken::new();
    let busy = {
        let (pool, token) = (pool.clone(), busy_token.clone());
        std::thread::spawn(move || pool.call_with(&Call::values("spin", &[]).cancel_token(&token)))
    };
    while pool.idle() == 1 {
        std::thread::yield_now();
    }
    // A synchronous waiter and an async one both wait for the one sandbox.
    let waiting_token = CancelToken::new();
    let sync_waiter = {
        let (pool, token) = (pool.clone(), waiting_token.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let outcome = pool.call_with(&Call::values("peek", &[]).cancel_token(&token));
            (outcome, started.elapsed())
        })
    };
    let async_waiter = {
        let (pool, token) = (pool.clone(), waiting_token.clone());
        std::thread::spawn(move || {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let started = Instant::now();
            let outcome = tokio
                .block_on(pool.call_async_inline(&Call::values("peek", &[]).cancel_token(&token)));
            (outcome, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    waiting_token.cancel();
    for waiter in [sync_waiter, async_waiter] {
        let (outcome, waited) = waiter.join().unwrap();
        let err = outcome.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        assert!(err.to_string().contains("never ran"), "{err}");
        assert!(
            waited < Duration::from_secs(5),
            "the cancel ended the wait: {waited:?}"
        );
    }
    // The spinning call is still running; its own token stops it, and the
    // sandbox it leaves behind is clean.
    assert!(!busy.is_finished());
    busy_token.cancel();
    let err = busy.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert_eq!(pool.call("peek", &[]).unwrap(), [Val::I32(0)]);
}

#[test]
fn a_cancel_with_no_call_running_never_stops_a_later_call() {
    // A thread cancels through the handle as fast as it can while calls
    // come and go: some calls are cancelled, none is left dirty, and once
    // the cancels stop, no later call is affected.
    let module = module();
    let mut twin = common::twin(&module, |b| b.timeout(Duration::from_secs(10)));
    let handle = twin.sandbox.interrupt_handle();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut landed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                landed += u64::from(handle.cancel());
                std::thread::sleep(Duration::from_micros(50));
            }
            landed
        })
    };
    let (mut ok, mut cancelled) = (0, 0);
    for i in 0..2_000 {
        match twin
            .sandbox
            .call("canary", &[Val::I32(i + 1), Val::I32(5_000)])
        {
            Ok(seen) => {
                assert_eq!(seen, [Val::I32(0)]);
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
                cancelled += 1;
            }
        }
        assert_eq!(twin.sandbox.status(), Status::Ready);
        if i % 50 == 0 {
            common::assert_matches_twin(&mut twin);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let landed = hammer.join().unwrap();
    assert!(landed > 0 && cancelled > 0, "no cancel landed");
    assert!(ok > 0, "every call was cancelled");
    assert!(
        cancelled <= landed,
        "{cancelled} cancelled by {landed} cancels"
    );
    for i in 0..200 {
        assert_eq!(
            twin.sandbox
                .call("canary", &[Val::I32(i + 1), Val::I32(5_000)])
                .unwrap(),
            [Val::I32(0)]
        );
    }
    common::assert_matches_twin(&mut twin);
}
