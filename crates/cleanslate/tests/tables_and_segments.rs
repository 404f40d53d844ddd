//! Tables and segments of every reference type come back to the snapshot:
//! a dropped element segment whatever its type, whichever table uses it; the
//! verifier catches a dropped segment the reset missed. Each case checks the
//! slate against an independently built twin, on both reset strategies,
//! with every reset verified.

mod common;

use cleanslate::{
    ErrorKind, FallbackReason, Fault, ResetPath, ResetStrategy, Runtime, Status, Val, Verify,
};
use common::{Twin, assert_matches_twin, expect_tracking, on_both_strategies, twin};

/// Modules where `drop` drops a passive element segment and `probe` copies
/// it into a table (trapping once it is dropped), one per reference type and
/// table shape.
const DROPPED_SEGMENT_MODULES: [(&str, &str); 5] = [
    (
        "externref segment, externref table (issue 14 item 2)",
        r#"(module (table $t 4 externref)
          (elem $e externref (ref.null extern) (ref.null extern))
          (func (export "drop") (elem.drop $e))
          (func (export "probe") (result i32)
            (table.init $t $e (i32.const 0) (i32.const 0) (i32.const 2)) (i32.const 1)))"#,
    ),
    (
        "exnref segment, exnref table",
        r#"(module (table $t 2 exnref)
          (elem $e exnref (ref.null exn))
          (func (export "drop") (elem.drop $e))
          (func (export "probe") (result i32)
            (table.init $t $e (i32.const 1) (i32.const 0) (i32.const 1)) (i32.const 1)))"#,
    ),
    (
        "externref segment, 64-bit externref table beside a funcref table",
        r#"(module (table $f 1 funcref) (table $t i64 4 externref)
          (elem $e externref (ref.null extern))
          (func (export "drop") (elem.drop $e))
          (func (export "probe") (result i32)
            (table.init $t $e (i64.const 3) (i32.const 0) (i32.const 1)) (i32.const 1)))"#,
    ),
    (
        "funcref segment, the second of two funcref tables",
        r#"(module (table $a 1 funcref) (table $b 3 funcref)
          (elem $e func $g $g)
          (func $g)
          (func (export "drop") (elem.drop $e))
          (func (export "probe") (result i32)
            (table.init $b $e (i32.const 1) (i32.const 0) (i32.const 2)) (i32.const 1)))"#,
    ),
    (
        "data segment",
        r#"(module (memory 1)
          (data $d "abc")
          (func (export "drop") (data.drop $d))
          (func (export "probe") (result i32)
            (memory.init $d (i32.const 8) (i32.const 0) (i32.const 3)) (i32.const 1)))"#,
    ),
];

fn sandbox_of(wat: &str, strategy: ResetStrategy) -> Twin {
    let module = Runtime::new().unwrap().load_bytes(wat).unwrap();
    twin(&module, |b| {
        b.reset_strategy(strategy).verify(Verify::Always)
    })
}

fn probe(twin: &mut Twin, what: &str) {
    let result = twin.sandbox.call("probe", &[]);
    assert_eq!(
        result.as_deref().map_err(|e| e.to_string()),
        Ok(&[Val::I32(1)][..]),
        "{what}: the segment is back"
    );
}

#[test]
fn a_dropped_segment_of_any_reference_type_is_restored() {
    on_both_strategies(|strategy| {
        for (what, wat) in DROPPED_SEGMENT_MODULES {
            let mut twin = sandbox_of(wat, strategy);
            probe(&mut twin, what);
            twin.sandbox.call("drop", &[]).unwrap();
            let report = twin.sandbox.last_reset().unwrap().clone();
            assert!(report.verified(), "{what}");
            if strategy == ResetStrategy::Auto && expect_tracking() {
                assert_eq!(
                    report.fallback_reason(),
                    Some(FallbackReason::SegmentDropped),
                    "{what}: the drop is seen and undone by a fresh instance"
                );
            }
            assert_matches_twin(&mut twin);
            for _ in 0..3 {
                probe(&mut twin, what);
                assert_matches_twin(&mut twin);
            }
        }
    });
}

#[test]
fn the_verifier_catches_a_dropped_segment_the_in_place_reset_missed() {
    for (what, wat) in DROPPED_SEGMENT_MODULES {
        let mut twin = sandbox_of(wat, ResetStrategy::Auto);
        probe(&mut twin, what);
        if twin.sandbox.last_reset().unwrap().path() != ResetPath::InPlace {
            assert!(!expect_tracking(), "in-place resets must run here");
            return;
        }
        twin.sandbox.inject_fault(Fault::IgnoreDroppedSegments);
        let err = twin.sandbox.call("drop", &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResetFailed, "{what}: {err}");
        assert!(
            err.to_string().contains("dropped segments"),
            "{what}: names the mismatch: {err}"
        );
        assert!(err.original_error().is_none(), "{what}: the call succeeded");
        assert_eq!(twin.sandbox.status(), Status::Unrecoverable, "{what}");
    }
}

/// `tab(x)` catches an exception with `catch_all_ref` and stores the exnref
/// in a table slot and a global (issue 14 item 6); `throw` lets one escape.
const EXNREF_WAT: &str = r#"(module
  (tag $boom)
  (table $t 4 exnref)
  (global $g (mut exnref) (ref.null exn))
  (func $caught (result exnref)
    (block $h (result exnref)
      (try_table (catch_all_ref $h) (throw $boom))
      unreachable))
  (func (export "tab") (param $x i32)
    (table.set $t (i32.and (local.get $x) (i32.const 3)) (call $caught))
    (global.set $g (call $caught)))
  (func (export "throw") (throw $boom))
  (func (export "slot_is_null") (param $x i32) (result i32)
    (ref.is_null (table.get $t (i32.and (local.get $x) (i32.const 3))))))"#;

#[test]
fn an_exnref_left_in_a_table_leaks_no_gc_root_across_resets() {
    on_both_strategies(|strategy| {
        let mut twin = sandbox_of(EXNREF_WAT, strategy);
        // Warm up (the first resets start tracking, make hot pages, ...).
        for x in 0..4 {
            twin.sandbox.call("tab", &[Val::I32(x)]).unwrap();
        }
        let before = twin.sandbox.gc_roots_held().expect("roots can be counted");
        for x in 0..300 {
            twin.sandbox.call("tab", &[Val::I32(x)]).unwrap();
        }
        let after = twin.sandbox.gc_roots_held().unwrap();
        assert_eq!(
            after, before,
            "GC roots grew from {before} to {after} over 300 calls that left an exnref ({strategy:?})"
        );
        for _ in 0..300 {
            let err = twin.sandbox.call("throw", &[]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UncaughtException, "{err}");
        }
        let after = twin.sandbox.gc_roots_held().unwrap();
        assert_eq!(
            after, before,
            "GC roots grew from {before} to {after} over 300 uncaught exceptions ({strategy:?})"
        );
        for x in 0..4 {
            assert_eq!(
                twin.sandbox.call("slot_is_null", &[Val::I32(x)]).unwrap(),
                [Val::I32(1)]
            );
        }
        assert_matches_twin(&mut twin);
    });
}

/// Five funcref tables of 1,000 slots: `set0` writes `$t0` itself,
/// `via_call` writes `$t1` through a direct call, `via_indirect` writes
/// `$t2` through `call_indirect` (so any function that can be a funcref may
/// run), `copy` writes `$t3` by `table.copy` from `$t4`, which no instruction
/// writes; `empty` does nothing. Every write stores a non-null funcref.
const TABLES_WAT: &str = r#"(module
  (table $t0 1000 funcref) (table $t1 1000 funcref) (table $t2 1000 funcref)
  (table $t3 1000 funcref) (table $t4 1000 funcref)
  (type $v (func))
  (func $f)
  (func $w1 (table.set $t1 (i32.const 11) (ref.func $f)))
  (func $w2 (table.set $t2 (i32.const 22) (ref.func $f)))
  (elem (table $t4) (i32.const 0) func $w2 $f)
  (func (export "empty"))
  (func (export "set0") (table.set $t0 (i32.const 7) (ref.func $f)))
  (func (export "via_call") (call $w1))
  (func (export "via_indirect") (call_indirect $t4 (type $v) (i32.const 0)))
  (func (export "copy") (table.copy $t3 $t4 (i32.const 500) (i32.const 0) (i32.const 2)))
  (func (export "read") (param $table i32) (param $slot i32) (result i32)
    (block $done (result i32)
      (block $b4 (block $b3 (block $b2 (block $b1 (block $b0
        (br_table $b0 $b1 $b2 $b3 $b4 (local.get $table)))
        (br $done (ref.is_null (table.get $t0 (local.get $slot)))))
        (br $done (ref.is_null (table.get $t1 (local.get $slot)))))
        (br $done (ref.is_null (table.get $t2 (local.get $slot)))))
        (br $done (ref.is_null (table.get $t3 (local.get $slot)))))
      (ref.is_null (table.get $t4 (local.get $slot))))))"#;

/// (export, slots the in-place reset after it may read: the tables the
/// export can reach a write to, 1,000 slots each).
const TABLE_CALLS: [(&str, u64); 5] = [
    ("empty", 0),
    ("set0", 1000),
    ("via_call", 1000),
    ("copy", 1000),
    // An indirect call may reach every function that can be a funcref,
    // exported ones included: every table but `$t4`.
    ("via_indirect", 4000),
];

#[test]
fn table_restore_reads_only_the_tables_the_call_could_have_written() {
    on_both_strategies(|strategy| {
        let mut twin = sandbox_of(TABLES_WAT, strategy);
        twin.sandbox.call("empty", &[]).unwrap();
        let in_place = twin.sandbox.last_reset().unwrap().path() == ResetPath::InPlace;
        assert!(
            in_place || strategy == ResetStrategy::FreshInstance || !expect_tracking(),
            "in-place resets must run here"
        );
        for (name, slots) in TABLE_CALLS {
            twin.sandbox.call(name, &[]).unwrap();
            let report = twin.sandbox.last_reset().unwrap().clone();
            assert!(report.verified());
            let expected = if in_place { slots } else { 4000 };
            assert_eq!(
                report.table_slots(),
                expected,
                "`{name}` ({strategy:?}, {:?}): table slots read by the reset",
                report.path()
            );
            for (table, slot) in [(0, 7), (1, 11), (2, 22), (3, 500)] {
                assert_eq!(
                    twin.sandbox
                        .call("read", &[Val::I32(table), Val::I32(slot)])
                        .unwrap(),
                    [Val::I32(1)],
                    "after `{name}`: table {table} slot {slot} is null again"
                );
            }
            assert_matches_twin(&mut twin);
        }
        // A session's calls add up: the reset when it ends covers them all.
        {
            let mut session = twin.sandbox.session();
            session.call("set0", &[]).unwrap();
            session.call("via_call", &[]).unwrap();
        }
        let report = twin.sandbox.last_reset().unwrap().clone();
        assert_eq!(
            report.table_slots(),
            if in_place { 2000 } else { 4000 },
            "a session of `set0` and `via_call` ({strategy:?})"
        );
        assert_matches_twin(&mut twin);
    });
}
