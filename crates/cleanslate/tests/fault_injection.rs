//! A reset that fails at any step — finding the written pages, copying them
//! back, restoring globals, creating a fresh instance — never leaves a
//! half-reset instance callable. An in-place step that fails hands over to
//! the fresh-instance path (the slate is still clean); a fresh-instance step
//! that fails makes the sandbox `Unrecoverable` with the guest's own error
//! kept beside the reset error, and a pool replaces it without disturbing
//! its other sandboxes.

mod common;

use std::time::Duration;

use cleanslate::{
    ErrorKind, FallbackReason, Fault, PoolConfig, ResetPath, ResetStrategy, Runtime, Sandbox,
    SandboxPool, Status, TrapCode, Val, Verify,
};
use common::{Twin, assert_clean_slate, assert_matches_twin, expect_tracking, fixture, twin};

/// `scribble(x)` writes `x` to the start of all 16 host pages of its memory,
/// to a global and to a table slot, then traps if `x` is odd. Enough pages
/// that a copy failing half-way leaves memory part-restored.
const SCRIBBLE_WAT: &str = r#"(module
  (memory 1 1)
  (global $g (mut i32) (i32.const 5))
  (table 2 2 funcref)
  (func $f)
  (elem declare func $f)
  (func (export "scribble") (param $x i32)
    (local $at i32)
    (loop $pages
      (i32.store (local.get $at) (local.get $x))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br_if $pages (i32.lt_u (local.get $at) (i32.const 65536))))
    (global.set $g (local.get $x))
    (table.set (i32.const 1) (ref.func $f))
    (if (i32.and (local.get $x) (i32.const 1)) (then unreachable)))
  (func (export "sum") (result i32)
    (local $at i32) (local $sum i32)
    (loop $pages
      (local.set $sum (i32.add (local.get $sum) (i32.load (local.get $at))))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br_if $pages (i32.lt_u (local.get $at) (i32.const 65536))))
    (i32.add (local.get $sum) (global.get $g))))"#;

fn scribbler(strategy: ResetStrategy) -> Twin {
    let module = Runtime::new().unwrap().load_bytes(SCRIBBLE_WAT).unwrap();
    twin(&module, |b| b.reset_strategy(strategy))
}

/// Whether the in-place path runs on this machine; when it cannot (no
/// page tracking) the in-place steps never run and there is nothing to test.
fn in_place_runs(twin: &mut Twin) -> bool {
    twin.sandbox.call("scribble", &[Val::I32(2)]).unwrap();
    let runs = twin.sandbox.last_reset().unwrap().path() == ResetPath::InPlace;
    assert!(runs || !expect_tracking(), "in-place resets must run here");
    runs
}

const IN_PLACE_STEPS: [Fault; 3] = [
    Fault::FailTracking,
    Fault::FailCopy,
    Fault::FailGlobalRestore,
];

#[test]
fn a_failed_in_place_step_hands_over_to_a_fresh_instance_and_the_slate_is_clean() {
    for fault in IN_PLACE_STEPS {
        for input in [4, 7] {
            let mut twin = scribbler(ResetStrategy::Auto);
            if !in_place_runs(&mut twin) {
                return;
            }
            twin.sandbox.inject_fault(fault);
            let outcome = twin.sandbox.call("scribble", &[Val::I32(input)]);
            match input % 2 {
                0 => assert!(outcome.is_ok(), "{fault:?}: {outcome:?}"),
                _ => assert_eq!(
                    outcome.unwrap_err().kind(),
                    ErrorKind::Trap(TrapCode::Unreachable),
                    "{fault:?}: the guest's own error, not the reset's"
                ),
            }
            let report = twin.sandbox.last_reset().unwrap().clone();
            assert_eq!(report.path(), ResetPath::FreshInstance, "{fault:?}");
            assert_eq!(
                report.fallback_reason(),
                Some(FallbackReason::InPlaceFailed),
                "{fault:?}"
            );
            assert_matches_twin(&mut twin);
            assert_eq!(
                twin.sandbox.call("sum", &[]).unwrap(),
                [Val::I32(5)],
                "{fault:?}: the guest sees its snapshot"
            );
            // The replacement instance is tracked again: the next reset is
            // in place.
            twin.sandbox.call("scribble", &[Val::I32(8)]).unwrap();
            assert_eq!(
                twin.sandbox.last_reset().unwrap().path(),
                ResetPath::InPlace
            );
            assert_matches_twin(&mut twin);
        }
    }
}

#[test]
fn every_exit_path_of_the_example_survives_a_failed_in_place_copy() {
    // The example guest's full clean-slate check (memory, globals, table,
    // growth, segments, init's effects), after the in-place copy broke
    // off half-way on a trapping call.
    let mut fx = fixture(|b| b.reset_strategy(ResetStrategy::Auto));
    fx.sandbox.call("add", &[Val::I32(1), Val::I32(2)]).unwrap();
    if fx.sandbox.last_reset().unwrap().path() != ResetPath::InPlace {
        assert!(!expect_tracking());
        return;
    }
    fx.sandbox.inject_fault(Fault::FailCopy);
    let err = fx
        .sandbox
        .call("trap_unreachable", &[Val::I32(common::SECRET)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap(TrapCode::Unreachable));
    assert_eq!(
        fx.sandbox.last_reset().unwrap().fallback_reason(),
        Some(FallbackReason::InPlaceFailed)
    );
    assert_clean_slate(&mut fx);
}

/// Queue `faults`, make a call that traps, and check the sandbox is
/// unrecoverable with both errors reported.
fn assert_unrecoverable_after(twin: &mut Twin, faults: &[Fault]) {
    for fault in faults {
        twin.sandbox.inject_fault(*fault);
    }
    let err = twin.sandbox.call("scribble", &[Val::I32(9)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResetFailed, "{faults:?}: {err}");
    assert_eq!(
        err.original_error().map(|e| e.kind()),
        Some(ErrorKind::Trap(TrapCode::Unreachable)),
        "{faults:?}: the guest's error is kept"
    );
    let text = err.to_string();
    assert!(text.contains("injected fault"), "names the cause: {text}");
    assert!(text.contains("scribble"), "names the call: {text}");
    assert_eq!(twin.sandbox.status(), Status::Unrecoverable);
    // Nothing of the failed call can be read: no call runs at all.
    for function in ["sum", "scribble"] {
        let refused = twin.sandbox.call(function, &[Val::I32(0)]).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Unrecoverable, "{faults:?}");
    }
    assert_eq!(
        twin.sandbox.snapshot().unwrap_err().kind(),
        ErrorKind::Unrecoverable
    );
}

#[test]
fn a_failed_fresh_instance_step_leaves_the_sandbox_unrecoverable() {
    for fault in [Fault::FailInstantiation, Fault::FailGlobalRestore] {
        let mut twin = scribbler(ResetStrategy::FreshInstance);
        twin.sandbox.call("scribble", &[Val::I32(2)]).unwrap();
        assert_unrecoverable_after(&mut twin, &[fault]);
    }
}

#[test]
fn an_in_place_failure_whose_fallback_also_fails_leaves_the_sandbox_unrecoverable() {
    for fault in IN_PLACE_STEPS {
        let mut twin = scribbler(ResetStrategy::Auto);
        if !in_place_runs(&mut twin) {
            return;
        }
        assert_unrecoverable_after(&mut twin, &[fault, Fault::FailInstantiation]);
    }
}

#[test]
fn a_fault_applies_to_one_reset_only() {
    let mut twin = scribbler(ResetStrategy::FreshInstance);
    twin.sandbox.inject_fault(Fault::FailTracking); // no in-place step runs
    twin.sandbox.call("scribble", &[Val::I32(2)]).unwrap();
    assert_eq!(twin.sandbox.status(), Status::Ready);
    // Not carried over to the next reset either.
    twin.sandbox.call("scribble", &[Val::I32(4)]).unwrap();
    assert_matches_twin(&mut twin);
}

#[test]
fn the_pool_replaces_a_sandbox_whose_reset_failed_at_any_step_while_its_other_sandbox_serves_on() {
    let module = Runtime::new().unwrap().load_bytes(SCRIBBLE_WAT).unwrap();
    let faults: [&[Fault]; 4] = [
        // Restoring globals fails in place, then again on the fresh path.
        &[Fault::FailGlobalRestore, Fault::FailGlobalRestore],
        &[Fault::FailTracking, Fault::FailInstantiation],
        &[Fault::FailCopy, Fault::FailInstantiation],
        &[Fault::FailGlobalRestore, Fault::FailInstantiation],
    ];
    let builder = Sandbox::builder(&module).verify(Verify::Always);
    let pool = SandboxPool::new(
        builder,
        PoolConfig::new(2).max_wait(Duration::from_secs(10)),
    )
    .unwrap();
    let mut replaced = 0;
    for queued in faults {
        // One idle sandbox gets the faults; call until a reset suffers
        // them (the pool may hand out the other sandbox first).
        for fault in queued {
            pool.inject_fault(*fault);
        }
        let mut attempts = 0;
        let err = loop {
            attempts += 1;
            assert!(attempts <= 20, "{queued:?}: no reset suffered the faults");
            match pool.call("scribble", &[Val::I32(11)]) {
                Err(e) if e.kind() == ErrorKind::ResetFailed => break e,
                Err(e) => assert_eq!(
                    e.kind(),
                    ErrorKind::Trap(TrapCode::Unreachable),
                    "{queued:?}: {e}"
                ),
                Ok(v) => panic!("scribble(11) traps, got {v:?}"),
            }
        };
        assert_eq!(
            err.original_error().map(|e| e.kind()),
            Some(ErrorKind::Trap(TrapCode::Unreachable)),
            "{queued:?}"
        );
        replaced += 1;
        // The other sandbox serves on at once (the replacement is built in
        // the background), and whichever serves is clean.
        for _ in 0..4 {
            assert_eq!(pool.call("sum", &[]).unwrap(), [Val::I32(5)]);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.metrics().replacements() < replaced && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.metrics().replacements(), replaced);
    assert_eq!(pool.call("sum", &[]).unwrap(), [Val::I32(5)]);
}
