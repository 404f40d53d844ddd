//! The Rust side of bench/overhead.py: `print(1+1)` from the setup snapshot
//! through `cleanslate_exec::CodeSandbox::run`, timed as the Python side
//! times `cleanslate.CodeSandbox.run` (the call, the result in hand).
//!
//! `overhead <runs> <guest> <module-cache>`: after one line `ready`, one
//! line per run: its time around the call and the run's own `duration`, in
//! nanoseconds.

use std::time::Instant;

use cleanslate_exec::CodeSandbox;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().ok_or("runs?")?.parse()?;
    let guest = args.next().ok_or("guest?")?;
    let cache = args.next().ok_or("module cache?")?;
    let mut sandbox = CodeSandbox::builder()
        .guest_path(guest)
        .module_cache(cache)
        .build()?;
    println!("ready");
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let result = sandbox.run("print(1+1)")?;
        samples.push((started.elapsed().as_nanos(), result.duration.as_nanos()));
        assert_eq!(result.stdout, b"2\n");
    }
    for (around, inside) in samples {
        println!("{around} {inside}");
    }
    Ok(())
}
