//! Resets that skip the page-table scan: once a call's writes land only on
//! hot pages, the in-place path examines just those, and every way a write
//! could land elsewhere (a cold page, a page never touched, another thread)
//! brings the scan back. Each case checks the slate against a fresh twin.

mod common;

use std::sync::mpsc;
use std::thread;

use cleanslate::{ResetPath, Runtime, Sandbox, Session, Val};
use common::{Twin, assert_matches_twin, expect_tracking, twin};

/// `poke(page, value)` writes `value` into host page `page` (of 64);
/// `poke_two` writes two pages.
const WAT: &str = r#"(module
  (memory (export "memory") 4)
  (data (i32.const 0) "snapshot")
  (func $poke (export "poke") (param $page i32) (param $value i32)
    (i32.store offset=8 (i32.mul (local.get $page) (i32.const 4096)) (local.get $value)))
  (func (export "poke_two") (param $a i32) (param $b i32) (param $value i32)
    (call $poke (local.get $a) (local.get $value))
    (call $poke (local.get $b) (local.get $value))))"#;

const HOT: i32 = 1;

fn new_twin() -> Twin {
    let module = Runtime::new().unwrap().load_bytes(WAT).unwrap();
    twin(&module, |b| b)
}

/// A twin whose sandbox resets without scanning, or `None` on a machine
/// that cannot reset in place.
fn steady_sandbox() -> Option<Twin> {
    let mut twin = new_twin();
    reach_steady_state(&mut twin).then_some(twin)
}

/// Poke the hot page until resets skip the scan; false if this machine
/// cannot reset in place.
fn reach_steady_state(twin: &mut Twin) -> bool {
    // Written at every reset, the page turns hot after two.
    for i in 0..4 {
        poke(&mut twin.sandbox, HOT, i + 1);
    }
    if twin.sandbox.last_reset().unwrap().path() != ResetPath::InPlace {
        assert!(!expect_tracking(), "this machine must reset in place");
        return false;
    }
    assert_matches_twin(twin);
    // The check above read all of memory, faulting on this thread: the
    // next reset scans. Then a hot-page write alone needs no scan (a stray
    // page fault of the test thread forces one: allow a few).
    let mut quiet = false;
    for i in 0..20 {
        poke(&mut twin.sandbox, HOT, 100 + i);
        quiet = !last_scanned(&twin.sandbox);
        if quiet {
            break;
        }
    }
    assert!(
        quiet,
        "writes to a hot page alone still scanned every reset"
    );
    true
}

fn poke(sandbox: &mut Sandbox, page: i32, value: i32) {
    sandbox
        .call("poke", &[Val::I32(page), Val::I32(value)])
        .unwrap();
}

fn last_scanned(sandbox: &Sandbox) -> bool {
    sandbox.last_reset().unwrap().scanned_page_tables()
}

#[test]
fn a_write_to_a_cold_page_beside_the_hot_one_is_found_and_restored() {
    let Some(mut twin) = steady_sandbox() else {
        return;
    };
    // Page 2 is protected (never written); page 9 was never touched.
    for cold in [2, 9] {
        twin.sandbox
            .call(
                "poke_two",
                &[Val::I32(HOT), Val::I32(cold), Val::I32(0x5EC2E7)],
            )
            .unwrap();
        assert!(last_scanned(&twin.sandbox), "page {cold}: no scan");
        assert_matches_twin(&mut twin);
    }
}

#[test]
fn a_call_on_another_thread_is_scanned() {
    let Some(mut twin) = steady_sandbox() else {
        return;
    };
    // The reset runs on the other thread too: a thread whose faults the
    // window did not count.
    thread::scope(|s| {
        s.spawn(|| {
            twin.sandbox
                .call("poke_two", &[Val::I32(HOT), Val::I32(3), Val::I32(7)])
                .unwrap();
            assert!(last_scanned(&twin.sandbox));
        });
    });
    assert_matches_twin(&mut twin);
}

#[test]
fn a_session_that_moves_between_threads_is_scanned_when_it_finishes_at_home() {
    let mut twin = new_twin();
    thread::scope(|s| {
        let (to_worker, worker_inbox) = mpsc::channel::<Session<'_>>();
        let (to_home, home_inbox) = mpsc::channel::<Session<'_>>();
        // The worker starts before the steady state is reached: starting a
        // thread faults on the thread that starts it, which would force the
        // scan for a reason other than the one under test.
        s.spawn(move || {
            for mut session in worker_inbox {
                // The cold write faults on this thread.
                session
                    .call("poke", &[Val::I32(5), Val::I32(0x5EC2E7)])
                    .unwrap();
                to_home.send(session).unwrap();
            }
        });
        if !reach_steady_state(&mut twin) {
            return drop(to_worker);
        }
        to_worker.send(twin.sandbox.session()).unwrap();
        let mut session = home_inbox.recv().unwrap();
        drop(to_worker);
        // The reset runs back on this thread, whose own fault count need
        // not have moved.
        session.call("poke", &[Val::I32(HOT), Val::I32(1)]).unwrap();
        session.finish().unwrap();
    });
    assert!(last_scanned(&twin.sandbox));
    assert_matches_twin(&mut twin);
}

#[test]
fn a_hot_page_left_alone_turns_cold_and_is_still_restored_when_written_again() {
    let Some(mut twin) = steady_sandbox() else {
        return;
    };
    // Calls that write nothing: the hot page is compared, found unchanged,
    // and protected again after a few resets.
    for _ in 0..12 {
        poke(&mut twin.sandbox, 0, 0);
        assert_matches_twin(&mut twin);
    }
    poke(&mut twin.sandbox, HOT, 0x5EC2E7);
    assert!(
        last_scanned(&twin.sandbox),
        "a write to a page protected again must fault and force a scan"
    );
    assert_matches_twin(&mut twin);
}
