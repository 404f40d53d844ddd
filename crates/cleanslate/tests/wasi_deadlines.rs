//! Blocking WASI calls end with the call: a guest sleeping in `poll_oneoff`
//! stops at its timeout (`timeout`), at a cancel (`cancelled`), or when its
//! fuel cannot pay for the sleep (`out_of_fuel`), and the sandbox is back at
//! its snapshot afterwards. Sleeps within the limits still sleep.
//!
//! Bounds of 2 s below are correctness bounds (the guest asks for 5 s), not
//! speed assertions.

mod common;

use std::time::{Duration, Instant};

use cleanslate::{
    Call, CancelToken, ErrorKind, ResetStrategy, Runtime, Sandbox, SandboxBuilder, Val,
};
use common::{Twin, assert_matches_twin, on_both_strategies, twin};

/// `sleep(ns)` and `sleep_until(ns from now)` poll one monotonic clock
/// subscription (relative, resp. absolute) after leaving a secret in memory
/// and a global; `race(ns_a, ns_b)` polls two relative clocks. Each returns
/// the errno; `nevents` and `event_userdata` read what the last poll wrote.
const SLEEPER_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (global $secret (mut i64) (i64.const 0))
  ;; One subscription at $at: userdata, clock tag, monotonic id, timeout, flags.
  (func $subscribe (param $at i32) (param $userdata i64) (param $ns i64) (param $flags i32)
    (i64.store (local.get $at) (local.get $userdata))
    (i32.store8 offset=8 (local.get $at) (i32.const 0))
    (i32.store offset=16 (local.get $at) (i32.const 1))
    (i64.store offset=24 (local.get $at) (local.get $ns))
    (i64.store offset=32 (local.get $at) (i64.const 0))
    (i32.store16 offset=40 (local.get $at) (local.get $flags)))
  (func $leave_secret
    (i64.store (i32.const 512) (i64.const 0x5EC2E7))
    (global.set $secret (i64.const 0x5EC2E7)))
  (func (export "sleep") (param $ns i64) (result i32)
    (call $leave_secret)
    (call $subscribe (i32.const 1024) (i64.const 0x1234) (local.get $ns) (i32.const 0))
    (call $poll (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 3000)))
  (func (export "sleep_until") (param $ns i64) (result i32)
    (local $err i32)
    (call $leave_secret)
    (local.set $err (call $clock (i32.const 1) (i64.const 0) (i32.const 3008)))
    (if (local.get $err) (then (return (local.get $err))))
    (call $subscribe (i32.const 1024) (i64.const 0x5678)
      (i64.add (i64.load (i32.const 3008)) (local.get $ns)) (i32.const 1))
    (call $poll (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 3000)))
  (func (export "race") (param $a i64) (param $b i64) (result i32)
    (call $leave_secret)
    (call $subscribe (i32.const 1024) (i64.const 0xa) (local.get $a) (i32.const 0))
    (call $subscribe (i32.const 1072) (i64.const 0xb) (local.get $b) (i32.const 0))
    (call $poll (i32.const 1024) (i32.const 2048) (i32.const 2) (i32.const 3000)))
  (func (export "nevents") (result i32) (i32.load (i32.const 3000)))
  (func (export "event_userdata") (result i64) (i64.load (i32.const 2048)))
  (func (export "secret") (result i64) (i64.add (global.get $secret) (i64.load (i32.const 512)))))"#;

const FIVE_SECONDS: i64 = 5_000_000_000;
/// Far below the 5 s asked for: the call was cut short.
const BOUND: Duration = Duration::from_secs(2);

fn sleeper(configure: impl Fn(SandboxBuilder) -> SandboxBuilder) -> Twin {
    let module = Runtime::new().unwrap().load_bytes(SLEEPER_WAT).unwrap();
    twin(&module, configure)
}

/// Time `f`, returning its result and how long it took.
fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let start = Instant::now();
    let result = f();
    (result, start.elapsed())
}

fn assert_secret_gone(tw: &mut Twin) {
    assert_matches_twin(tw);
    assert_eq!(
        tw.sandbox.call("secret", &[]).unwrap(),
        [Val::I64(0)],
        "the interrupted call's secret is visible"
    );
}

/// Regression (issue 14, item 3): a 5 s relative sleep under a 100 ms
/// timeout returned `ok` after 5.00 s.
#[test]
fn a_sleep_past_the_timeout_ends_as_a_timeout() {
    on_both_strategies(|strategy| {
        let mut tw = sleeper(|b| {
            b.reset_strategy(strategy)
                .timeout(Duration::from_millis(100))
        });
        for export in ["sleep", "sleep_until"] {
            let (outcome, took) = timed(|| tw.sandbox.call(export, &[Val::I64(FIVE_SECONDS)]));
            let err = outcome.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout, "{export}: {err}");
            assert!(took < BOUND, "{export} held the thread for {took:?}");
            assert_secret_gone(&mut tw);
        }
    });
}

/// Regression (issue 14, item 3): with fuel and no timeout, the same sleep
/// returned `ok` after 5 s. Sleeping is charged as fuel (one unit per
/// microsecond), so 1,000 units pay for 1 ms of sleep.
#[test]
fn a_sleep_with_fuel_only_is_paid_for_with_fuel() {
    on_both_strategies(|strategy| {
        let mut tw = sleeper(|b| b.reset_strategy(strategy).fuel(1_000));
        let (outcome, took) = timed(|| tw.sandbox.call("sleep", &[Val::I64(FIVE_SECONDS)]));
        let err = outcome.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfFuel, "{err}");
        assert!(took < BOUND, "held the thread for {took:?}");
        assert_secret_gone(&mut tw);
    });
    // Enough fuel for the sleep: it sleeps and succeeds.
    let mut tw = sleeper(|b| b.fuel(1_000_000));
    let (outcome, took) = timed(|| tw.sandbox.call("sleep", &[Val::I64(20_000_000)]));
    assert_eq!(outcome.unwrap(), [Val::I32(0)]);
    assert!(took >= Duration::from_millis(20), "slept only {took:?}");
}

/// A cancel while the guest sleeps ends the call as `cancelled`, through a
/// cancel token and through the sandbox's interrupt handle.
#[test]
fn a_cancel_during_a_sleep_ends_it_as_cancelled() {
    on_both_strategies(|strategy| {
        let mut tw = sleeper(|b| b.reset_strategy(strategy));
        let token = CancelToken::new();
        let canceller = {
            let token = token.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                token.cancel();
            })
        };
        let call = Call::values("sleep", &[Val::I64(FIVE_SECONDS)]).cancel_token(&token);
        let (outcome, took) = timed(|| tw.sandbox.call_with(&call));
        canceller.join().unwrap();
        let err = outcome.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        assert!(took < BOUND, "held the thread for {took:?}");
        assert_secret_gone(&mut tw);

        let handle = tw.sandbox.interrupt_handle();
        let canceller = std::thread::spawn(move || {
            let start = Instant::now();
            while !handle.cancel() && start.elapsed() < BOUND {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let (outcome, took) = timed(|| tw.sandbox.call("sleep", &[Val::I64(FIVE_SECONDS)]));
        canceller.join().unwrap();
        let err = outcome.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        assert!(took < BOUND, "held the thread for {took:?}");
        assert_secret_gone(&mut tw);
    });
}

/// Sleeps that fit the limits sleep as long as asked and report their
/// clock events as wasmtime's `poll_oneoff` does: the earliest clock fires,
/// later ones are not reported.
#[test]
fn sleeps_within_the_limits_sleep_and_report_their_events() {
    let mut tw = sleeper(|b| b.timeout(Duration::from_secs(3)));
    let (outcome, took) = timed(|| tw.sandbox.session().call("sleep", &[Val::I64(20_000_000)]));
    assert_eq!(outcome.unwrap(), [Val::I32(0)]);
    assert!(took >= Duration::from_millis(20), "slept only {took:?}");

    let mut session = tw.sandbox.session();
    let (outcome, took) = timed(|| session.call("sleep_until", &[Val::I64(20_000_000)]));
    assert_eq!(outcome.unwrap(), [Val::I32(0)]);
    assert!(took >= Duration::from_millis(15), "slept only {took:?}");
    assert_eq!(session.call("nevents", &[]).unwrap(), [Val::I32(1)]);
    assert_eq!(
        session.call("event_userdata", &[]).unwrap(),
        [Val::I64(0x5678)]
    );
    drop(session);

    let mut session = tw.sandbox.session();
    let (outcome, took) =
        timed(|| session.call("race", &[Val::I64(FIVE_SECONDS), Val::I64(10_000_000)]));
    assert_eq!(outcome.unwrap(), [Val::I32(0)]);
    assert!(took < BOUND, "waited for the later clock: {took:?}");
    assert_eq!(session.call("nevents", &[]).unwrap(), [Val::I32(1)]);
    assert_eq!(
        session.call("event_userdata", &[]).unwrap(),
        [Val::I64(0xb)]
    );
    drop(session);
    assert_matches_twin(&mut tw);
}

/// The bounded sleep needs no tokio runtime and works inside one (a call
/// made from async code, e.g. a server's handler).
#[test]
fn bounded_sleeps_work_inside_a_tokio_runtime() {
    let module = Runtime::new().unwrap().load_bytes(SLEEPER_WAT).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let mut sandbox = Sandbox::builder(&module)
            .reset_strategy(ResetStrategy::Auto)
            .timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        assert_eq!(
            sandbox.call("sleep", &[Val::I64(1_000_000)]).unwrap(),
            [Val::I32(0)]
        );
        let (outcome, took) = timed(|| sandbox.call("sleep", &[Val::I64(FIVE_SECONDS)]));
        assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Timeout);
        assert!(took < BOUND, "held the thread for {took:?}");
    });
}
