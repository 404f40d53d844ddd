//! Memory growth undone in place: after a call that grew a memory — on
//! every way a call can end — the reset clears the grown pages and lowers
//! the memory back to the snapshot's size without a new instance. Each test
//! checks the state against an independently built twin and through the
//! guest's own eyes: `memory.size`, a load past the snapshot's end traps,
//! and growing again finds zeros.
//!
//! The fresh-instance path undoes growth too: its new instance takes over
//! the replaced one's memory regions (no new mapping) and must leave them
//! exactly as the snapshot, size and protection included.

mod common;

use std::time::Duration;

use cleanslate::{
    ErrorKind, Module, ResetPath, ResetStrategy, Runtime, Sandbox, TrapCode, Val, Verify,
};
use common::{Twin, assert_matches_twin, twin};

/// One 64 KiB page at the snapshot (its first word set by `init`), room to
/// grow to 100 pages.
const GROWING_WAT: &str = r#"(module
    (memory 1 100)
    (global $g (mut i32) (i32.const 0))
    (func (export "init") (i32.store (i32.const 0) (i32.const 77)))
    ;; Grow by $pages and write $value into every 4 KiB of the new pages;
    ;; returns the old size in pages (-1: refused).
    (func $grow_and_fill (export "grow_and_fill") (param $pages i32) (param $value i32) (result i32)
        (local $old i32) (local $at i32) (local $end i32)
        (local.set $old (memory.grow (local.get $pages)))
        (if (i32.lt_s (local.get $old) (i32.const 0)) (then (return (i32.const -1))))
        (local.set $at (i32.mul (local.get $old) (i32.const 65536)))
        (local.set $end (i32.mul (memory.size) (i32.const 65536)))
        (block $done (loop $fill
            (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
            (i32.store (local.get $at) (local.get $value))
            (local.set $at (i32.add (local.get $at) (i32.const 4096)))
            (br $fill)))
        (global.set $g (local.get $value))
        (local.get $old))
    (func (export "grow_then_trap") (param i32 i32)
        (drop (call $grow_and_fill (local.get 0) (local.get 1))) unreachable)
    (func (export "grow_then_spin") (param i32 i32)
        (drop (call $grow_and_fill (local.get 0) (local.get 1)))
        (loop $forever (br $forever)))
    ;; Grow by $pages and OR together every word of the new pages: 0 when
    ;; growth finds zeros.
    (func (export "grow_and_or") (param $pages i32) (result i32)
        (local $at i32) (local $end i32) (local $acc i32)
        (local.set $at (i32.mul (memory.grow (local.get $pages)) (i32.const 65536)))
        (local.set $end (i32.mul (memory.size) (i32.const 65536)))
        (block $done (loop $scan
            (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
            (local.set $acc (i32.or (local.get $acc) (i32.load (local.get $at))))
            (local.set $at (i32.add (local.get $at) (i32.const 4)))
            (br $scan)))
        (local.get $acc))
    (func (export "size") (result i32) (memory.size))
    (func (export "global") (result i32) (global.get $g))
    (func (export "load") (param i32) (result i32) (i32.load (local.get 0))))"#;

fn module() -> Module {
    Runtime::new().unwrap().load_bytes(GROWING_WAT).unwrap()
}

fn growing_twin(verify: Verify) -> Twin {
    twin(&module(), |b| {
        b.init("init").verify(verify).fuel(50_000_000)
    })
}

/// The clean slate after a growing call, as state and as the guest sees it.
fn assert_growth_undone(tw: &mut Twin, grown_pages: i32) {
    if common::expect_tracking() {
        let report = tw.sandbox.last_reset().unwrap().clone();
        assert_eq!(report.path(), ResetPath::InPlace, "{report:?}");
        assert_eq!(report.fallback_reason(), None);
    }
    assert_growth_undone_as_seen(tw, grown_pages);
}

/// The clean slate after a growing call, whichever path reset it.
fn assert_growth_undone_as_seen(tw: &mut Twin, grown_pages: i32) {
    assert_matches_twin(tw);
    let sandbox = &mut tw.sandbox;
    assert_eq!(sandbox.call("size", &[]).unwrap(), [Val::I32(1)]);
    assert_eq!(sandbox.call("global", &[]).unwrap(), [Val::I32(0)]);
    assert_eq!(
        sandbox.call("load", &[Val::I32(0)]).unwrap(),
        [Val::I32(77)]
    );
    for past_the_end in [65536, 65536 * grown_pages.max(1) + 4092] {
        let err = sandbox.call("load", &[Val::I32(past_the_end)]).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Trap(TrapCode::MemoryOutOfBounds),
            "a load at {past_the_end}: {err}"
        );
    }
    assert_eq!(
        sandbox
            .call("grow_and_or", &[Val::I32(grown_pages)])
            .unwrap(),
        [Val::I32(0)],
        "growing again finds zeros"
    );
    assert_matches_twin(tw);
}

#[test]
fn a_call_that_grew_memory_is_reset_in_place() {
    for pages in [1, 16] {
        let mut tw = growing_twin(Verify::Off);
        let old = tw
            .sandbox
            .call("grow_and_fill", &[Val::I32(pages), Val::I32(0x5EC)])
            .unwrap();
        assert_eq!(old, [Val::I32(1)]);
        if common::expect_tracking() {
            let report = tw.sandbox.last_reset().unwrap();
            // Every host page of the grown memory was written: each is
            // cleared, and counts as restored.
            assert_eq!(report.dirty_pages(), 16 * pages as u64, "{report:?}");
        }
        assert_growth_undone(&mut tw, pages);
    }
}

/// Growth, then the call ends badly: a trap, fuel running out, a timeout.
#[test]
fn growth_then_a_failed_call_is_reset_in_place() {
    let module = module();
    let cases = [
        ("grow_then_trap", 3, ErrorKind::Trap(TrapCode::Unreachable)),
        ("grow_then_spin", 5, ErrorKind::OutOfFuel),
        ("grow_then_spin", 2, ErrorKind::Timeout),
    ];
    for (function, pages, kind) in cases {
        let mut tw = twin(&module, |b| {
            let b = b.init("init");
            match kind {
                ErrorKind::Timeout => b.timeout(Duration::from_millis(50)),
                _ => b.fuel(50_000_000),
            }
        });
        let err = tw
            .sandbox
            .call(function, &[Val::I32(pages), Val::I32(0x5EC)])
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{function}: {err}");
        assert_growth_undone(&mut tw, pages);
    }
}

#[test]
fn growth_beyond_the_memory_limit_is_refused_and_what_was_grown_is_undone() {
    let module = module();
    // Two pages allowed: the snapshot's one and one more.
    let mut tw = twin(&module, |b| b.init("init").memory_limit(2 * 65536));
    assert_eq!(
        tw.sandbox
            .call("grow_and_fill", &[Val::I32(1), Val::I32(9)])
            .unwrap(),
        [Val::I32(1)]
    );
    assert_growth_undone(&mut tw, 1);
    // Right after the reset the limit counts from the snapshot's size again.
    assert_eq!(
        tw.sandbox
            .call("grow_and_fill", &[Val::I32(2), Val::I32(9)])
            .unwrap(),
        [Val::I32(-1)],
        "three pages exceed the limit"
    );
    assert_eq!(
        tw.sandbox
            .call("grow_and_fill", &[Val::I32(1), Val::I32(9)])
            .unwrap(),
        [Val::I32(1)]
    );
    assert_growth_undone(&mut tw, 1);
}

/// Many growing calls in a row, each checked by the reset's own verifier:
/// pages the calls keep writing turn hot (left unprotected) and are still
/// cleared every time, including when a call grows less than the last.
#[test]
fn repeated_growth_stays_in_place_and_verified() {
    let mut tw = growing_twin(Verify::Always);
    for round in 0..40 {
        let pages = [4, 1, 8, 2][round % 4];
        tw.sandbox
            .call(
                "grow_and_fill",
                &[Val::I32(pages), Val::I32(round as i32 + 1)],
            )
            .unwrap();
        let report = tw.sandbox.last_reset().unwrap().clone();
        assert!(report.verified());
        if common::expect_tracking() {
            assert_eq!(
                report.path(),
                ResetPath::InPlace,
                "round {round}: {report:?}"
            );
        }
        if round % 10 == 9 {
            assert_growth_undone(&mut tw, pages);
        }
    }
}

/// A memory with a custom page size that ends inside a host page: growth
/// by a few bytes is undone too, and the bytes past the snapshot's end in
/// its last host page read as zero after growing again.
#[test]
fn growth_of_a_memory_ending_inside_a_host_page_is_undone() {
    partial_host_page_growth_is_undone(ResetStrategy::Auto);
}

/// The same on the fresh path, whose new instance reuses the memory: the
/// bytes past the snapshot's end in its last host page were written by the
/// last instance and must read as zero after growing again.
#[test]
fn partial_host_page_growth_is_undone_on_the_fresh_path() {
    partial_host_page_growth_is_undone(ResetStrategy::FreshInstance);
}

fn partial_host_page_growth_is_undone(strategy: ResetStrategy) {
    let module = Runtime::new()
        .unwrap()
        .load_bytes(
            r#"(module (memory 5000 (pagesize 1))
                (func (export "grow_and_poke") (param i32)
                    (drop (memory.grow (i32.const 3000)))
                    (i32.store8 (i32.const 4999) (local.get 0))
                    (i32.store8 (i32.const 5001) (local.get 0))
                    (i32.store8 (i32.const 7999) (local.get 0)))
                (func (export "size") (result i32) (memory.size))
                (func (export "load8") (param i32) (result i32) (i32.load8_u (local.get 0)))
                (func (export "grow_and_load8") (param i32) (result i32)
                    (drop (memory.grow (i32.const 3000)))
                    (i32.load8_u (local.get 0))))"#,
        )
        .unwrap();
    let mut tw = twin(&module, |b| {
        b.verify(Verify::Always).reset_strategy(strategy)
    });
    for value in [7, 255, 9, 1] {
        tw.sandbox
            .call("grow_and_poke", &[Val::I32(value)])
            .unwrap();
        assert_matches_twin(&mut tw);
        let sandbox: &mut Sandbox = &mut tw.sandbox;
        assert_eq!(sandbox.call("size", &[]).unwrap(), [Val::I32(5000)]);
        assert_eq!(
            sandbox.call("load8", &[Val::I32(4999)]).unwrap(),
            [Val::I32(0)]
        );
        let err = sandbox.call("load8", &[Val::I32(5001)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Trap(TrapCode::MemoryOutOfBounds));
        for at in [5001, 7999] {
            assert_eq!(
                sandbox.call("grow_and_load8", &[Val::I32(at)]).unwrap(),
                [Val::I32(0)]
            );
        }
    }
}

/// Growing calls on the fresh-instance path, whose new instances take over
/// the memories of the ones they replace: each time the memory is back at
/// the snapshot's size, a load past it traps (the pages the last instance
/// grew into are inaccessible again), growing finds zeros, and the state
/// equals a twin's — including after a call that grew less than the last.
#[test]
fn growth_is_undone_on_the_fresh_path_that_reuses_memories() {
    let mut tw = twin(&module(), |b| {
        b.init("init")
            .fuel(50_000_000)
            .reset_strategy(ResetStrategy::FreshInstance)
    });
    for (round, pages) in [16, 1, 8, 2, 16, 3].into_iter().enumerate() {
        let value = round as i32 + 1;
        let old = tw
            .sandbox
            .call("grow_and_fill", &[Val::I32(pages), Val::I32(value)])
            .unwrap();
        assert_eq!(old, [Val::I32(1)], "round {round}");
        let report = tw.sandbox.last_reset().unwrap().clone();
        assert_eq!(report.path(), ResetPath::FreshInstance, "{report:?}");
        // First thing after the reset (later resets would hide what this
        // one left): growing again finds zeros where the call wrote.
        assert_eq!(
            tw.sandbox.call("grow_and_or", &[Val::I32(pages)]).unwrap(),
            [Val::I32(0)],
            "round {round}: growing right after the reset finds zeros"
        );
        assert_growth_undone_as_seen(&mut tw, pages);
        // The checks' own calls were reset too; the next round starts clean.
        assert_matches_twin(&mut tw);
    }
}

/// A module that needs the engine's GC heap (it throws exceptions): the
/// heap is created before the memories and must not take the memory the
/// fresh path offers back, or reuse stops for good. With reuse the reset
/// reports the page the call wrote; on the mapping path it reports none.
#[test]
fn the_fresh_path_keeps_reusing_memory_in_a_module_with_exceptions() {
    let module = Runtime::new()
        .unwrap()
        .load_bytes(
            r#"(module (memory 1) (tag $e (param i32))
                (func (export "write_and_catch") (param i32) (result i32)
                    (i32.store (i32.const 8192) (local.get 0))
                    (block $caught (result i32)
                        (try_table (catch $e $caught) (throw $e (local.get 0)))
                        (i32.const -1)))
                (func (export "load") (param i32) (result i32) (i32.load (local.get 0))))"#,
        )
        .unwrap();
    let mut tw = twin(&module, |b| b.reset_strategy(ResetStrategy::FreshInstance));
    for round in 1..=4 {
        assert_eq!(
            tw.sandbox
                .call("write_and_catch", &[Val::I32(round)])
                .unwrap(),
            [Val::I32(round)]
        );
        let report = tw.sandbox.last_reset().unwrap().clone();
        if round > 2 {
            assert_eq!(report.dirty_pages(), 1, "round {round}: {report:?}");
        }
        assert_matches_twin(&mut tw);
    }
}
