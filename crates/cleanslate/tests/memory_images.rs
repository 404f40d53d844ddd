//! How the host holds a module's memories: custom page sizes whose memories
//! end inside a host page, images that follow a module's data rather than
//! its offsets, and the memory limit as a total over all memories.

mod common;

use cleanslate::{ErrorKind, ResetPath, ResetStrategy, Runtime, Sandbox, Val};
use common::{assert_matches_twin, on_both_strategies, twin};

/// A 5000-byte memory (custom page size 1): its last host page is partial.
/// The start function writes its last byte, `poke` writes a call's value
/// there and next to the start of the partial page.
const PARTIAL_PAGE_WAT: &str = r#"(module (memory 5000 (pagesize 1))
    (global $g (mut i32) (i32.const 0))
    (func $s (i32.store8 (i32.const 4999) (i32.const 1))) (start $s)
    (func (export "r") (result i32) (i32.load8_u (i32.const 4999)))
    (func (export "init") (i32.store8 (i32.const 4097) (i32.const 9)))
    (func (export "poke") (param i32)
        (i32.store8 (i32.const 4999) (local.get 0))
        (i32.store8 (i32.const 4096) (local.get 0))
        (i32.store8 (i32.const 17) (local.get 0))
        (global.set $g (local.get 0)))
    (func (export "trap") (param i32)
        (i32.store8 (i32.const 4998) (local.get 0))
        unreachable))"#;

/// Regression (issue 14, item 5): a start function writing into a memory's
/// last partial host page made the snapshot copy a whole host page out of
/// a 5000-byte memory and panic ("range end index 8192 out of range for
/// slice of length 5000").
#[test]
fn a_start_function_writing_the_last_partial_host_page_snapshots() {
    let module = Runtime::new()
        .unwrap()
        .load_bytes(PARTIAL_PAGE_WAT)
        .unwrap();
    on_both_strategies(|strategy| {
        let mut tw = twin(&module, |b| b.reset_strategy(strategy));
        assert_eq!(tw.sandbox.call("r", &[]).unwrap(), [Val::I32(1)]);
        assert_eq!(tw.fresh.memory_sizes(), [5000]);
        assert_eq!(tw.fresh.memory(0).unwrap()[4999], 1);
        for value in [7, 0, 255] {
            tw.sandbox.call("poke", &[Val::I32(value)]).unwrap();
            assert_matches_twin(&mut tw);
            let err = tw.sandbox.call("trap", &[Val::I32(value)]).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Trap(_)), "{err}");
            assert_matches_twin(&mut tw);
            assert_eq!(tw.sandbox.call("r", &[]).unwrap(), [Val::I32(1)]);
        }
    });
}

/// The same through an init function writing into the partial page.
#[test]
fn an_init_writing_the_last_partial_host_page_snapshots() {
    let module = Runtime::new()
        .unwrap()
        .load_bytes(PARTIAL_PAGE_WAT)
        .unwrap();
    on_both_strategies(|strategy| {
        let mut tw = twin(&module, |b| b.reset_strategy(strategy).init("init"));
        assert_eq!(tw.fresh.memory(0).unwrap()[4097], 9, "init's write kept");
        tw.sandbox.call("poke", &[Val::I32(3)]).unwrap();
        assert_matches_twin(&mut tw);
        let err = tw.sandbox.call("trap", &[Val::I32(3)]).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Trap(_)), "{err}");
        assert_matches_twin(&mut tw);
    });
}

/// `inspect` (`Module::reset_coverage`) must tell which path the resets of
/// a module will take. A memory that ends inside a host page is tracked in
/// whole pages of its region like any other, so it resets in place too.
#[test]
fn reset_coverage_tells_the_path_partial_host_page_memories_take() {
    let runtime = Runtime::new().unwrap();
    for (wat, partial) in [
        (PARTIAL_PAGE_WAT, true),
        (
            r#"(module (memory 8192 (pagesize 1))
                (func (export "poke") (param i32) (i32.store8 (i32.const 4999) (local.get 0))))"#,
            false,
        ),
    ] {
        let module = runtime.load_bytes(wat).unwrap();
        let coverage = module.reset_coverage();
        let mut sandbox = Sandbox::builder(&module)
            .reset_strategy(ResetStrategy::Auto)
            .build()
            .unwrap();
        sandbox.call("poke", &[Val::I32(5)]).unwrap();
        let report = sandbox.last_reset().unwrap().clone();
        if common::expect_tracking() {
            assert!(coverage.in_place().is_ok(), "partial page: {partial}");
            assert_eq!(
                coverage.in_place().is_ok(),
                report.path() == ResetPath::InPlace,
                "coverage says {:?} but the reset was {report:?}",
                coverage.in_place()
            );
        }
    }
}

/// `count` memories of `pages` 64 KiB pages, each with a one-byte data
/// segment at every offset of `offsets`.
fn memories_with_bytes_at(count: usize, pages: u32, offsets: &[u64]) -> String {
    let mut wat = String::from("(module\n");
    for i in 0..count {
        wat.push_str(&format!("(memory {pages})\n"));
        for (k, offset) in offsets.iter().enumerate() {
            wat.push_str(&format!(
                "(data (memory {i}) (i32.const {offset}) \"{}\")\n",
                char::from(b'a' + k as u8)
            ));
        }
    }
    wat.push_str(&format!(
        "(func (export \"last\") (result i32) (i32.load8_u {} (i32.const {})))\n",
        count - 1,
        offsets.last().unwrap()
    ));
    wat.push_str(&format!(
        "(func (export \"poke\") (i32.store8 {} (i32.const {}) (i32.const 0)))\n",
        count - 1,
        offsets.last().unwrap()
    ));
    wat.push(')');
    wat
}

/// Host memory a sandbox of a module may cost beyond the pages its guest
/// actually holds: a bound far below what the regressions allocated.
const HOST_OVERHEAD_BOUND: u64 = 96 << 20;

/// Regression (issue 14, item 4): four one-page memories, each with one
/// data byte at offset 268435455 (a 1 KB module whose instantiation traps
/// out of bounds), made the host build a zeroed 256 MiB image per memory:
/// 1 GiB resident for a module that cannot even be instantiated.
#[test]
fn a_data_byte_at_a_far_offset_costs_no_image_of_that_size() {
    let wat = memories_with_bytes_at(4, 1, &[268_435_455]);
    assert!(wat.len() < 2048);
    let runtime = Runtime::new().unwrap();
    let before = common::rss_bytes();
    let module = runtime.load_bytes(&wat).unwrap();
    let err = Sandbox::builder(&module).build().unwrap_err();
    let grew = common::rss_bytes().saturating_sub(before);
    assert_eq!(err.kind(), ErrorKind::Instantiation, "{err}");
    assert!(
        grew < HOST_OVERHEAD_BOUND,
        "loading and building a {}-byte module made the host hold {} MiB more",
        wat.len(),
        grew >> 20
    );
    drop(module);
}

/// Regression (issue 14, item 4): memories of 64 MiB with one byte at each
/// end made the host hold a dense image of every memory twice (the
/// module's initial image and the snapshot's copy of it), double what a
/// guest filling all of them would cost.
#[test]
fn a_sparse_valid_module_costs_host_memory_by_its_data_not_its_offsets() {
    const MEMORIES: usize = 8;
    let wat = memories_with_bytes_at(MEMORIES, 1024, &[0, (64 << 20) - 1]);
    let module = Runtime::new().unwrap().load_bytes(&wat).unwrap();
    on_both_strategies(|strategy| {
        let configure = |b: cleanslate::SandboxBuilder| {
            b.reset_strategy(strategy)
                .memory_limit(MEMORIES as u64 * (64 << 20))
        };
        let before = common::rss_bytes();
        let mut sandbox = configure(Sandbox::builder(&module)).build().unwrap();
        assert_eq!(
            sandbox.call("last", &[]).unwrap(),
            [Val::I32(i32::from(b'b'))]
        );
        sandbox.call("poke", &[]).unwrap();
        let grew = common::rss_bytes().saturating_sub(before);
        assert!(
            grew < HOST_OVERHEAD_BOUND,
            "a sandbox of {MEMORIES} memories holding 2 bytes each made the host hold {} MiB more",
            grew >> 20
        );
        drop(sandbox);
        // And the sparse image is still the exact clean slate.
        let mut tw = twin(&module, configure);
        tw.sandbox.call("poke", &[]).unwrap();
        assert_matches_twin(&mut tw);
        let image = tw.fresh.memory(MEMORIES - 1).unwrap();
        assert_eq!((image[0], image[(64 << 20) - 1]), (b'a', b'b'));
        assert_eq!(
            tw.sandbox.call("last", &[]).unwrap(),
            [Val::I32(i32::from(b'b'))]
        );
    });
}

/// Three memories of one page and `grow{0,1,2}(pages)` for each; `grow_then_trap`
/// grows memory 2 and traps.
const THREE_MEMORIES_WAT: &str = r#"(module (memory 1) (memory 1) (memory 1)
    (func (export "grow0") (param i32) (result i32) (memory.grow 0 (local.get 0)))
    (func (export "grow1") (param i32) (result i32) (memory.grow 1 (local.get 0)))
    (func (export "grow2") (param i32) (result i32) (memory.grow 2 (local.get 0)))
    (func (export "grow_then_trap") (param i32)
        (if (i32.lt_s (memory.grow 2 (local.get 0)) (i32.const 0)) (then unreachable))
        (i32.store8 2 (i32.const 70000) (i32.const 1))
        unreachable))"#;

const PAGE: u64 = 65536;

/// Regression (issue 14, item 4): the memory limit applied to each memory,
/// so a module with N memories got N times the limit.
#[test]
fn the_memory_limit_is_the_total_over_all_memories() {
    let module = Runtime::new()
        .unwrap()
        .load_bytes(THREE_MEMORIES_WAT)
        .unwrap();
    on_both_strategies(|strategy| {
        let mut tw = twin(&module, |b| {
            b.reset_strategy(strategy).memory_limit(4 * PAGE)
        });
        {
            let mut session = tw.sandbox.session();
            assert_eq!(
                session.call("grow0", &[Val::I32(1)]).unwrap(),
                [Val::I32(1)]
            );
            // Four pages in all now: no memory may grow any further.
            for grow in ["grow1", "grow2", "grow0"] {
                assert_eq!(
                    session.call(grow, &[Val::I32(1)]).unwrap(),
                    [Val::I32(-1)],
                    "{grow} past the total"
                );
            }
        }
        assert_matches_twin(&mut tw);
        // After the reset the room is back.
        assert_eq!(
            tw.sandbox.call("grow1", &[Val::I32(1)]).unwrap(),
            [Val::I32(1)]
        );
        assert_matches_twin(&mut tw);
        // A refused growth followed by a failure is out of memory, and says
        // the limit is the total.
        let err = tw
            .sandbox
            .call("grow_then_trap", &[Val::I32(2)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
        assert!(err.to_string().contains("all memories"), "{err}");
        assert_matches_twin(&mut tw);
    });
    // Initial memories over the total: refused at build, typed.
    let err = Sandbox::builder(&module)
        .memory_limit(2 * PAGE)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
    assert!(
        Sandbox::builder(&module)
            .memory_limit(3 * PAGE)
            .build()
            .is_ok()
    );
}
