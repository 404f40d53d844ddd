//! Explicit state: sessions that keep state and reset on drop (also on
//! panic), and snapshots that move the clean slate on purpose.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use cleanslate::{ErrorKind, Runtime, Sandbox, Status, Val};
use common::{assert_clean_slate, on_every_path};

#[test]
fn a_session_keeps_state_between_calls_and_resets_when_dropped() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        fx.expect_in_place = false; // the session leaves a grown table
        {
            let mut session = fx.sandbox.session();
            session
                .call("leave_secret", &[Val::I32(common::SECRET_EVERYWHERE)])
                .unwrap();
            assert_eq!(
                session.call_typed::<(), i32>("read_secret", ()).unwrap(),
                common::SECRET_EVERYWHERE
            );
            assert_eq!(
                session.call_typed::<(), i64>("read_global", ()).unwrap(),
                common::SECRET_EVERYWHERE as i64
            );
            assert_eq!(
                session.call_typed::<(), i32>("memory_pages", ()).unwrap(),
                2
            );
            session.call("add", &[Val::I32(1), Val::I32(1)]).unwrap();
            session.call("add", &[Val::I32(1), Val::I32(1)]).unwrap();
            assert_eq!(session.call_typed::<(), i32>("read_calls", ()).unwrap(), 2);
        }
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn a_session_resets_when_its_holder_panics() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        let sandbox = &mut fx.sandbox;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut session = sandbox.session();
            session
                .call("leave_secret", &[Val::I32(path.secret)])
                .unwrap();
            panic!("the embedder's code failed while holding the session");
        }));
        assert!(result.is_err());
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn a_failed_call_poisons_the_session_until_it_ends() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        {
            let mut session = fx.sandbox.session();
            session
                .call("leave_secret", &[Val::I32(path.secret)])
                .unwrap();
            let err = session
                .call("trap_unreachable", &[Val::I32(path.secret)])
                .unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::Trap(cleanslate::TrapCode::Unreachable)
            );
            assert_eq!(session.status(), Status::Poisoned);
            let err = session
                .call("add", &[Val::I32(1), Val::I32(2)])
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Poisoned);
            // A refused request (not a guest failure) does not poison; but the
            // session is already poisoned here, so check finish reports Ok.
            session.finish().unwrap();
        }
        assert_eq!(fx.sandbox.status(), Status::Ready);
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn a_bad_request_in_a_session_does_not_poison_it() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        let mut session = fx.sandbox.session();
        session
            .call("leave_secret", &[Val::I32(path.secret)])
            .unwrap();
        assert_eq!(
            session.call("nope", &[]).unwrap_err().kind(),
            ErrorKind::FunctionNotFound
        );
        assert_eq!(
            session.call("add", &[]).unwrap_err().kind(),
            ErrorKind::InvalidArguments
        );
        assert_eq!(session.status(), Status::Ready);
        assert_eq!(
            session.call_typed::<(), i32>("read_secret", ()).unwrap(),
            path.secret
        );
        drop(session);
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn restore_moves_the_clean_slate_and_back() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        fx.expect_in_place = false; // a restore replaces the instance
        let original = fx.sandbox.snapshot().unwrap();
        let moved = {
            let mut session = fx.sandbox.session();
            session
                .call("leave_secret", &[Val::I32(common::SECRET_EVERYWHERE)])
                .unwrap();
            session.snapshot().unwrap()
        };
        assert_ne!(moved, original);
        fx.sandbox.restore(&moved).unwrap();
        // Now every call starts from the moved slate, including after failures.
        for _ in 0..3 {
            assert_eq!(
                fx.sandbox.call_typed::<(), i32>("read_secret", ()).unwrap(),
                common::SECRET_EVERYWHERE
            );
            let err = fx
                .sandbox
                .call("trap_divide_by_zero", &[Val::I32(99)])
                .unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::Trap(cleanslate::TrapCode::IntegerDivideByZero)
            );
            assert_eq!(fx.sandbox.snapshot().unwrap(), moved);
        }
        // The moved slate has a dropped passive segment: it stays dropped.
        let err = fx.sandbox.call("read_passive", &[]).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Trap(cleanslate::TrapCode::MemoryOutOfBounds)
        );
        assert_eq!(
            fx.sandbox.snapshot().unwrap().memory_sizes(),
            vec![2 * 65536]
        );
        fx.sandbox.restore(&original).unwrap();
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn restore_recovers_a_poisoned_sandbox() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        fx.expect_in_place = false; // a restore replaces the instance
        let original = fx.sandbox.snapshot().unwrap();
        let mut session = fx.sandbox.session();
        let _ = session.call("trap_unreachable", &[Val::I32(path.secret)]);
        assert_eq!(session.status(), Status::Poisoned);
        drop(session);
        fx.sandbox.restore(&original).unwrap();
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn snapshots_of_another_module_are_refused() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        let runtime = Runtime::new().unwrap();
        let other = runtime.load_bytes("(module (memory 1))").unwrap();
        let foreign = Sandbox::builder(&other)
            .build()
            .unwrap()
            .snapshot()
            .unwrap();
        let err = fx.sandbox.restore(&foreign).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArguments);
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn a_snapshot_of_a_dropped_module_is_refused_by_a_module_loaded_after_it() {
    // Same shape, different contents: a snapshot of the first restored into
    // a sandbox of the second would "work" and hand it the first's state.
    const FIRST: &str = r#"(module (memory 1) (data (i32.const 0) "first module's secret")
        (func (export "peek") (result i32) (i32.load (i32.const 0))))"#;
    const LATER: &str = r#"(module (memory 1) (data (i32.const 0) "a later module")
        (func (export "peek") (result i32) (i32.load (i32.const 0))))"#;
    let runtime = Runtime::new().unwrap();
    let foreign = {
        let first = runtime.load_bytes(FIRST).unwrap();
        Sandbox::builder(&first)
            .build()
            .unwrap()
            .snapshot()
            .unwrap()
        // The module and its sandbox are dropped here; only the snapshot
        // lives on. The allocator is free to give its address to the next
        // module loaded (with the address as identity, it often did).
    };
    let mut later = Vec::new();
    for attempt in 0..32 {
        let module = runtime.load_bytes(LATER).unwrap();
        let mut sandbox = Sandbox::builder(&module).build().unwrap();
        let before = sandbox.snapshot().unwrap();
        let outcome = sandbox.restore(&foreign);
        assert_eq!(
            outcome.as_ref().map_err(|e| e.kind()),
            Err(ErrorKind::InvalidArguments),
            "attempt {attempt}: a snapshot of a dropped module was accepted"
        );
        assert_eq!(sandbox.snapshot().unwrap(), before, "attempt {attempt}");
        assert_eq!(
            sandbox.call_typed::<(), i32>("peek", ()).unwrap(),
            i32::from_le_bytes(*b"a la")
        );
        // Kept alive, so each attempt's module takes a new allocation.
        later.push(module);
    }
}

#[test]
fn the_snapshot_is_taken_after_start_and_init_and_neither_runs_again() {
    let runtime = Runtime::new().unwrap();
    let module = runtime
        .load_bytes(
            r#"(module
                (memory 1)
                (global $starts (mut i32) (i32.const 0))
                (global $inits (mut i32) (i32.const 0))
                (func $start (global.set $starts (i32.add (global.get $starts) (i32.const 1))))
                (start $start)
                (func (export "init") (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
                (func (export "counts") (result i32 i32) (global.get $starts) (global.get $inits))
                (func (export "fail") unreachable))"#,
        )
        .unwrap();
    let mut sandbox = Sandbox::builder(&module).init("init").build().unwrap();
    for _ in 0..3 {
        assert_eq!(
            sandbox.call("counts", &[]).unwrap(),
            [Val::I32(1), Val::I32(1)]
        );
        assert!(sandbox.call("fail", &[]).is_err());
    }
}

#[test]
fn funcrefs_in_tables_survive_reset_as_the_same_functions() {
    // init stores a funcref into a table; after resets (fresh instances) the
    // slot must hold the same function of the new instance, not a stale one.
    let runtime = Runtime::new().unwrap();
    let module = runtime
        .load_bytes(
            r#"(module
                (table $t 2 funcref)
                (global $g (mut funcref) (ref.null func))
                (elem declare func $seven $eight)
                (func $seven (result i32) (i32.const 7))
                (func $eight (result i32) (i32.const 8))
                (func (export "init")
                    (table.set $t (i32.const 1) (ref.func $seven))
                    (global.set $g (ref.func $eight)))
                (func (export "via_table") (result i32)
                    (call_indirect $t (result i32) (i32.const 1)))
                (func (export "clobber")
                    (table.set $t (i32.const 1) (ref.func $eight))
                    (global.set $g (ref.null func)))
                (func (export "global_is_null") (result i32) (ref.is_null (global.get $g))))"#,
        )
        .unwrap();
    let mut sandbox = Sandbox::builder(&module)
        .init("init")
        .verify(cleanslate::Verify::Always)
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(sandbox.call("via_table", &[]).unwrap(), [Val::I32(7)]);
        sandbox.call("clobber", &[]).unwrap();
        assert_eq!(sandbox.call("global_is_null", &[]).unwrap(), [Val::I32(0)]);
    }
}
