//! Standard proposals that real toolchains emit run and reset; `proposals()`
//! names what a module uses.

mod common;

use cleanslate::{ErrorKind, ResetPath, Runtime, Status, TrapCode, Val};
use common::{assert_matches_twin, on_both_strategies, twin};

/// Exception handling: a tag, `throw`, `try_table` with `catch` and
/// `catch_ref`, and a mutable `exnref` global that a call fills.
const EXCEPTIONS_WAT: &str = r#"(module
  (tag $boom (param i32))
  (memory 1)
  (global $g (mut i32) (i32.const 0))
  (global $held (mut exnref) (ref.null exn))
  (func $thrower (param i32)
    (i32.store (i32.const 0) (local.get 0))
    (global.set $g (local.get 0))
    (throw $boom (local.get 0)))
  (func (export "catch") (param i32) (result i32)
    (block $caught (result i32)
      (try_table (catch $boom $caught)
        (call $thrower (local.get 0)))
      (i32.const -1)))
  (func (export "hold") (param i32) (result i32)
    (block $caught (result i32 exnref)
      (try_table (catch_ref $boom $caught)
        (call $thrower (local.get 0)))
      (unreachable))
    (global.set $held)
    (i32.add (i32.const 1)))
  (func (export "rethrow_held")
    (throw_ref (global.get $held)))
  (func (export "held_is_null") (result i32) (ref.is_null (global.get $held)))
  (func (export "escape") (param i32) (call $thrower (local.get 0)))
  (func (export "peek") (result i32) (i32.add (i32.load (i32.const 0)) (global.get $g))))"#;

#[test]
fn exception_handling_runs_and_resets_on_every_outcome() {
    let module = Runtime::new().unwrap().load_bytes(EXCEPTIONS_WAT).unwrap();
    assert!(module.proposals().contains(&"exception-handling"));
    on_both_strategies(|strategy| {
        let mut t = twin(&module, |b| b.reset_strategy(strategy));
        // Thrown and caught inside the call.
        assert_eq!(
            t.sandbox.call("catch", &[Val::I32(7)]).unwrap(),
            [Val::I32(7)]
        );
        assert_matches_twin(&mut t);
        // An exception object left in a global after the call.
        assert_eq!(
            t.sandbox.call("hold", &[Val::I32(8)]).unwrap(),
            [Val::I32(9)]
        );
        assert_matches_twin(&mut t);
        assert_eq!(t.sandbox.call("held_is_null", &[]).unwrap(), [Val::I32(1)]);
        // ... so a later call cannot rethrow the earlier call's exception:
        // throw_ref of null traps.
        let err = t.sandbox.call("rethrow_held", &[]).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Trap(TrapCode::NullReference),
            "{err}"
        );
        assert_matches_twin(&mut t);
        // An exception that escapes the call is an error, and leaves no trace.
        let err = t.sandbox.call("escape", &[Val::I32(9)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UncaughtException, "{err}");
        assert_matches_twin(&mut t);
        assert_eq!(t.sandbox.call("peek", &[]).unwrap(), [Val::I32(0)]);
        if strategy == cleanslate::ResetStrategy::Auto && common::expect_tracking() {
            assert_eq!(t.sandbox.last_reset().unwrap().path(), ResetPath::InPlace);
        }
    });
}

/// Many thrown-and-caught exceptions in one sandbox: the GC heap does not
/// fill up (the reset keeps the instance; the collector frees them).
#[test]
fn exceptions_do_not_accumulate_across_calls() {
    let module = Runtime::new().unwrap().load_bytes(EXCEPTIONS_WAT).unwrap();
    let mut sandbox = cleanslate::Sandbox::builder(&module).build().unwrap();
    for i in 0..20_000 {
        assert_eq!(
            sandbox.call("hold", &[Val::I32(i)]).unwrap(),
            [Val::I32(i + 1)]
        );
    }
    assert_eq!(sandbox.call("held_is_null", &[]).unwrap(), [Val::I32(1)]);
}

#[test]
fn proposals_names_what_a_module_uses() {
    let runtime = Runtime::new().unwrap();
    let plain = runtime
        .load_bytes(r#"(module (func (export "f") (result i32) (i32.const 1)))"#)
        .unwrap();
    assert!(plain.proposals().is_empty(), "{:?}", plain.proposals());
    let simd_and_tail = runtime
        .load_bytes(
            r#"(module
              (func $g (result v128) (v128.const i32x4 1 2 3 4))
              (func (export "f") (result v128) (return_call $g)))"#,
        )
        .unwrap();
    assert_eq!(simd_and_tail.proposals(), ["simd", "tail-call"]);
}

/// Regression (found by the reset-invariant search, seed 479): a table of
/// exception references. Resetting a slot wrote an externref null into it,
/// which does not type-check, so the reset failed; and a slot holding an
/// exception object could not be compared with the image at all.
#[test]
fn a_table_of_exception_references_resets() {
    let module = Runtime::new()
        .unwrap()
        .load_bytes(
            r#"(module
              (tag $boom)
              (table $t 2 exnref)
              (func $caught (result exnref)
                (block $caught (result exnref)
                  (try_table (catch_all_ref $caught) (throw $boom))
                  (unreachable)))
              (func (export "keep_then_trap")
                (table.set $t (i32.const 1) (call $caught))
                (unreachable))
              (func (export "keep")
                (table.set $t (i32.const 0) (call $caught)))
              (func (export "slot_is_null") (param i32) (result i32)
                (ref.is_null (table.get $t (local.get 0)))))"#,
        )
        .unwrap();
    on_both_strategies(|strategy| {
        let mut t = twin(&module, |b| b.reset_strategy(strategy));
        let err = t.sandbox.call("keep_then_trap", &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Trap(TrapCode::Unreachable), "{err}");
        assert_matches_twin(&mut t);
        t.sandbox.call("keep", &[]).unwrap();
        assert_matches_twin(&mut t);
        for slot in 0..2 {
            assert_eq!(
                t.sandbox.call("slot_is_null", &[Val::I32(slot)]).unwrap(),
                [Val::I32(1)]
            );
        }
    });
}

/// Reference types: a mutable `funcref` global whose initial value is a
/// function that no export, element segment or code names (found by the
/// `load_module` fuzz target: building failed with `unrecoverable`, the
/// snapshot could not name the function).
#[test]
fn a_global_holding_an_otherwise_unnamed_function_snapshots_and_resets() {
    let module = Runtime::new()
        .unwrap()
        .load_bytes(
            r#"(module
              (func $hidden (result i32) (i32.const 42))
              (type $give (func (result i32)))
              (table 1 funcref)
              (global $g (mut funcref) (ref.func $hidden))
              (func (export "clear") (global.set $g (ref.null func)))
              (func (export "call_it") (result i32)
                (table.set (i32.const 0) (global.get $g))
                (call_indirect (type $give) (i32.const 0))))"#,
        )
        .unwrap();
    on_both_strategies(|strategy| {
        let mut twin = twin(&module, |b| b.reset_strategy(strategy));
        assert_eq!(twin.sandbox.call("call_it", &[]).unwrap(), [Val::I32(42)]);
        twin.sandbox.call("clear", &[]).unwrap();
        assert_matches_twin(&mut twin);
        // The global holds the function again, not null.
        assert_eq!(twin.sandbox.call("call_it", &[]).unwrap(), [Val::I32(42)]);
        assert_matches_twin(&mut twin);
    });
}

/// An exception that escapes a call inside a session stopped guest code
/// part-way, as a trap does: the session is poisoned until it ends, and the
/// reset at its end leaves no trace of it.
#[test]
fn an_uncaught_exception_poisons_the_session_until_it_ends() {
    let module = Runtime::new().unwrap().load_bytes(EXCEPTIONS_WAT).unwrap();
    on_both_strategies(|strategy| {
        let mut t = twin(&module, |b| b.reset_strategy(strategy));
        {
            let mut session = t.sandbox.session();
            let err = session.call("escape", &[Val::I32(5)]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UncaughtException, "{err}");
            assert_eq!(session.status(), Status::Poisoned);
            let err = session.call("peek", &[]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Poisoned, "{err}");
            session.finish().unwrap();
        }
        assert_matches_twin(&mut t);
        assert_eq!(t.sandbox.call("peek", &[]).unwrap(), [Val::I32(0)]);
    });
}
