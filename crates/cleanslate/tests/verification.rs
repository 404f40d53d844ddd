//! The second check and atomicity: a reset that goes wrong is caught,
//! the sandbox turns unrecoverable, and the call's own error is kept.

mod common;

use cleanslate::{
    ErrorKind, FallbackReason, Fault, ResetPath, ResetStrategy, Status, TrapCode, Val, Verify,
};
use common::{SECRET, fixture};

#[test]
fn verify_always_catches_a_corrupted_reset_and_keeps_the_original_error() {
    common::on_every_path(|path| {
        let mut fx = path.fixture(|b| b.verify(Verify::Always));
        fx.sandbox.call("add", &[Val::I32(1), Val::I32(2)]).unwrap();
        assert!(fx.sandbox.last_reset().unwrap().verified());

        fx.sandbox.inject_fault(Fault::CorruptMemory);
        let err = fx
            .sandbox
            .call("trap_unreachable", &[Val::I32(path.secret)])
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
    });
}

#[test]
fn a_corrupted_global_is_caught_too() {
    common::on_every_path(|path| {
        let mut fx = path.fixture(|b| b.verify(Verify::Always));
        fx.sandbox.inject_fault(Fault::CorruptGlobal);
        let err = fx
            .sandbox
            .call("add", &[Val::I32(1), Val::I32(2)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResetFailed, "{err}");
        assert!(err.original_error().is_none(), "the call itself succeeded");
        assert!(err.to_string().contains("global"), "{err}");
        assert_eq!(fx.sandbox.status(), Status::Unrecoverable);
    });
}

#[test]
fn without_verification_the_same_corruption_goes_unnoticed() {
    common::on_every_path(|path| {
        // Shows what the verifier buys: the corruption is real and silent.
        let mut fx = path.fixture(|b| b.verify(Verify::Off));
        fx.sandbox.inject_fault(Fault::CorruptMemory);
        fx.sandbox.call("add", &[Val::I32(1), Val::I32(2)]).unwrap();
        assert!(!fx.sandbox.last_reset().unwrap().verified());
        assert_eq!(fx.sandbox.status(), Status::Ready);
        let now = fx.sandbox.snapshot().unwrap();
        assert!(
            !fx.fresh.differences(&now).is_empty(),
            "the injected corruption is there"
        );
    });
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
    common::on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        // On the in-place path, its copy fails first and hands over to a
        // fresh instance, which then cannot be created.
        fx.sandbox.inject_fault(Fault::FailCopy);
        fx.sandbox.inject_fault(Fault::FailInstantiation);
        let err = fx
            .sandbox
            .call("trap_divide_by_zero", &[Val::I32(path.secret)])
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
    });
}

#[test]
fn the_in_place_path_runs_when_it_covers_the_call_and_says_why_when_not() {
    let mut fx = fixture(|b| b.verify(Verify::Always));
    assert!(
        fx.sandbox.last_reset().is_none(),
        "no reset before the first call"
    );
    let report = |fx: &common::Fixture| fx.sandbox.last_reset().unwrap().clone();

    fx.sandbox.call("add", &[Val::I32(1), Val::I32(2)]).unwrap();
    let r = report(&fx);
    if r.path() == ResetPath::FreshInstance {
        assert_eq!(
            r.fallback_reason(),
            Some(FallbackReason::TrackingUnavailable)
        );
        assert!(
            !common::expect_tracking(),
            "this machine must track written pages"
        );
        return;
    }
    assert_eq!(r.path(), ResetPath::InPlace);
    assert_eq!(r.fallback_reason(), None);
    assert_eq!(r.dirty_pages(), 0, "add writes no memory");
    assert!(r.verified());

    // Memory, a global and a table slot: all undone in place; one page.
    fx.sandbox
        .call("leave_secret", &[Val::I32(SECRET)])
        .unwrap();
    let r = report(&fx);
    assert_eq!(
        (r.path(), r.dirty_pages()),
        (ResetPath::InPlace, 1),
        "{r:?}"
    );

    // A trap after the same writes: still in place.
    let _ = fx.sandbox.call("trap_unreachable", &[Val::I32(SECRET)]);
    assert_eq!(report(&fx).path(), ResetPath::InPlace);

    // Memory growth is undone in place too: the page written in the
    // second grown page counts (cleared), and the grown pages are gone.
    fx.sandbox
        .call("leave_secret", &[Val::I32(common::SECRET_IN_GROWN_MEMORY)])
        .unwrap();
    let r = report(&fx);
    assert_eq!(
        (r.path(), r.fallback_reason(), r.dirty_pages()),
        (ResetPath::InPlace, None, 2),
        "{r:?}"
    );
    assert_eq!(fx.sandbox.snapshot().unwrap().memory_sizes(), [65536]);

    // A grown table needs a fresh instance, and the report says so.
    fx.sandbox
        .call("leave_secret", &[Val::I32(common::SECRET_EVERYWHERE)])
        .unwrap();
    let r = report(&fx);
    assert_eq!(r.path(), ResetPath::FreshInstance);
    assert_eq!(r.fallback_reason(), Some(FallbackReason::TableResized));

    // The fresh instance is tracked again: the next reset is in place.
    fx.sandbox
        .call("leave_secret", &[Val::I32(SECRET)])
        .unwrap();
    assert_eq!(report(&fx).path(), ResetPath::InPlace);

    // Restoring a snapshot always builds a fresh instance.
    let snapshot = fx.sandbox.snapshot().unwrap();
    fx.sandbox.restore(&snapshot).unwrap();
    assert_eq!(
        report(&fx).fallback_reason(),
        Some(FallbackReason::SnapshotRestored)
    );
    common::assert_clean_slate(&mut fx);
}

#[test]
fn the_fresh_instance_strategy_is_honoured() {
    let mut fx = fixture(|b| b.reset_strategy(ResetStrategy::FreshInstance));
    fx.sandbox.call("add", &[Val::I32(1), Val::I32(2)]).unwrap();
    let r = fx.sandbox.last_reset().unwrap();
    assert_eq!(r.path(), ResetPath::FreshInstance);
    assert_eq!(r.fallback_reason(), Some(FallbackReason::Requested));
}

#[test]
fn pages_written_every_call_stay_restored_and_are_still_caught_after_cooling() {
    // A page written on every call is left unprotected ("hot") and compared
    // at every reset; once left alone it is protected again ("cold"). Each
    // phase is verified against the snapshot after every call.
    let mut fx = fixture(|b| b.verify(Verify::Always));
    let read_secret =
        |fx: &mut common::Fixture| fx.sandbox.call_typed::<(), i32>("read_secret", ()).unwrap();
    for i in 0..30 {
        fx.sandbox
            .call("leave_secret", &[Val::I32(SECRET + i)])
            .unwrap();
        assert_eq!(fx.sandbox.last_reset().unwrap().dirty_pages(), 1);
        assert_eq!(read_secret(&mut fx), 0);
    }
    for _ in 0..30 {
        fx.sandbox.call("add", &[Val::I32(1), Val::I32(2)]).unwrap();
        assert_eq!(fx.sandbox.last_reset().unwrap().dirty_pages(), 0);
    }
    fx.sandbox
        .call("leave_secret", &[Val::I32(SECRET)])
        .unwrap();
    assert_eq!(
        fx.sandbox.last_reset().unwrap().dirty_pages(),
        1,
        "a write to a cooled page is caught"
    );
    assert_eq!(read_secret(&mut fx), 0);
    // A failing call in the hot phase too.
    for _ in 0..5 {
        let _ = fx.sandbox.call("trap_unreachable", &[Val::I32(SECRET)]);
    }
    common::assert_clean_slate(&mut fx);
}
