//! How long a run takes: `console.log(1+1)` and the reset to a snapshot
//! taken after the first turn. Printed, not asserted (timings depend on the
//! machine); run with `--nocapture` to see them.

mod common;

use std::time::{Duration, Instant};

use common::{Door, module, sandbox, turn};

#[test]
fn a_run_and_its_reset() {
    let Some(module) = module() else { return };
    let mut sandbox = sandbox(&module, None, &Door::default());
    let started = Instant::now();
    {
        let mut session = sandbox.session();
        assert_eq!(turn(&mut session, "globalThis.ready = true").status, 0);
        let snapshot = session.snapshot().unwrap();
        session.finish().unwrap();
        sandbox.restore(&snapshot).unwrap();
    }
    let setup = started.elapsed();
    let mut times: Vec<Duration> = Vec::new();
    for i in 0..220 {
        let started = Instant::now();
        let mut session = sandbox.session();
        let t = turn(&mut session, "console.log(1+1)");
        session.finish().unwrap();
        let elapsed = started.elapsed();
        assert_eq!((t.status, t.stdout.as_str()), (0, "2\n"));
        // The first runs fault the restored memory in.
        if i >= 20 {
            times.push(elapsed);
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let p90 = times[times.len() * 9 / 10];
    println!(
        "javascript guest: setup (first turn + snapshot + restore) {setup:?}; \
         console.log(1+1) + reset: median {median:?}, p90 {p90:?}, min {:?} over {} runs",
        times[0],
        times.len()
    );
}
