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
