//! The second check and atomicity: a reset that goes wrong is caught,
//! the sandbox turns unrecoverable, and the call's own error is kept.

mod common;

use cleanslate::{ErrorKind, Fault, Status, TrapCode, Val, Verify};
use common::{SECRET, fixture};

#[test]
fn verify_always_catches_a_corrupted_reset_and_keeps_the_original_error() {
    let mut fx = fixture(|b| b.verify(Verify::Always));
    fx.sandbox.call("add", &[Val::I32(1), Val::I32(2)]).unwrap();
    assert!(fx.sandbox.last_reset().unwrap().verified());

    fx.sandbox.inject_fault(Fault::CorruptMemory);
    let err = fx
        .sandbox
        .call("trap_unreachable", &[Val::I32(SECRET)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResetFailed, "{err}");
    let original = err.original_error().expect("the guest's error is kept");
    assert_eq!(original.kind(), ErrorKind::Trap(TrapCode::Unreachable));
    let text = err.to_string();
    assert!(
        text.contains("memory 0 differs"),
        "names the mismatch: {text}"
    );
    assert!(
        text.contains("trap_unreachable"),
        "names the original failure: {text}"
    );

    assert_eq!(fx.sandbox.status(), Status::Unrecoverable);
    let refused = fx
        .sandbox
        .call("add", &[Val::I32(1), Val::I32(2)])
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unrecoverable);
    assert_eq!(
        fx.sandbox.snapshot().unwrap_err().kind(),
        ErrorKind::Unrecoverable
    );
    // A session cannot bring it back to life either.
    drop(fx.sandbox.session());
    assert_eq!(fx.sandbox.status(), Status::Unrecoverable);
    let fresh = fx.fresh.clone();
    assert_eq!(
        fx.sandbox.restore(&fresh).unwrap_err().kind(),
        ErrorKind::Unrecoverable
    );
}

#[test]
fn a_corrupted_global_is_caught_too() {
    let mut fx = fixture(|b| b.verify(Verify::Always));
    fx.sandbox.inject_fault(Fault::CorruptGlobal);
    let err = fx
        .sandbox
        .call("add", &[Val::I32(1), Val::I32(2)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResetFailed, "{err}");
    assert!(err.original_error().is_none(), "the call itself succeeded");
    assert!(err.to_string().contains("global"), "{err}");
    assert_eq!(fx.sandbox.status(), Status::Unrecoverable);
}

#[test]
fn without_verification_the_same_corruption_goes_unnoticed() {
    // Shows what the verifier buys: the corruption is real and silent.
    let mut fx = fixture(|b| b.verify(Verify::Off));
    fx.sandbox.inject_fault(Fault::CorruptMemory);
    fx.sandbox.call("add", &[Val::I32(1), Val::I32(2)]).unwrap();
    assert!(!fx.sandbox.last_reset().unwrap().verified());
    assert_eq!(fx.sandbox.status(), Status::Ready);
    let now = fx.sandbox.snapshot().unwrap();
    assert!(
        !fx.fresh.differences(&now).is_empty(),
        "the injected corruption is there"
    );
}

#[test]
fn sampled_verification_checks_every_nth_reset() {
    let mut fx = fixture(|b| b.verify(Verify::Sampled(3)));
    let mut verified = Vec::new();
    for _ in 0..6 {
        fx.sandbox.call("add", &[Val::I32(1), Val::I32(2)]).unwrap();
        verified.push(fx.sandbox.last_reset().unwrap().verified());
    }
    assert_eq!(verified, [false, false, true, false, false, true]);
}

#[test]
fn a_reset_that_cannot_instantiate_leaves_the_sandbox_unrecoverable() {
    let mut fx = fixture(|b| b);
    fx.sandbox.inject_fault(Fault::FailInstantiation);
    let err = fx
        .sandbox
        .call("trap_divide_by_zero", &[Val::I32(SECRET)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResetFailed, "{err}");
    assert_eq!(
        err.original_error().map(|e| e.kind()),
        Some(ErrorKind::Trap(TrapCode::IntegerDivideByZero))
    );
    assert_eq!(fx.sandbox.status(), Status::Unrecoverable);
    assert_eq!(
        fx.sandbox
            .call("add", &[Val::I32(1), Val::I32(2)])
            .unwrap_err()
            .kind(),
        ErrorKind::Unrecoverable
    );
}

#[test]
fn every_reset_is_reported() {
    let mut fx = fixture(|b| b);
    assert!(
        fx.sandbox.last_reset().is_none(),
        "no reset before the first call"
    );
    fx.sandbox
        .call("leave_secret", &[Val::I32(SECRET)])
        .unwrap();
    let report = fx.sandbox.last_reset().unwrap().clone();
    assert_eq!(report.path(), cleanslate::ResetPath::FreshInstance);
    assert!(report.duration() > std::time::Duration::ZERO);
    // init wrote one page beyond the data segments: that page is restored.
    assert!(report.dirty_pages() >= 1, "{report:?}");
}
