//! The Rust side of bench/overhead.py: `print(1+1)` from the setup snapshot
//! through `cleanslate_exec::CodeSandbox::run`, timed as the Python side
//! times `cleanslate.CodeSandbox.run` (the call, the result in hand).
//!
//! `overhead <guest> <module-cache>`: builds the sandbox, prints `ready`,
//! then for each line `n` read from stdin does n runs and prints one line:
//! for each run, its time around the call and the run's own `duration`,
//! `around/inside` in nanoseconds. The script alternates small batches of
//! these with its own, so both sides see the same machine.

use std::io::{BufRead, Write};
use std::time::Instant;

use cleanslate_exec::CodeSandbox;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let guest = args.next().ok_or("guest?")?;
    let cache = args.next().ok_or("module cache?")?;
    let mut sandbox = CodeSandbox::builder()
        .guest_path(guest)
        .module_cache(cache)
        .build()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let runs: usize = line?.trim().parse()?;
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let result = sandbox.run("print(1+1)")?;
            let around = started.elapsed();
            assert_eq!(result.stdout, b"2\n");
            samples.push(format!(
                "{}/{}",
                around.as_nanos(),
                result.duration.as_nanos()
            ));
        }
        writeln!(out, "{}", samples.join(" "))?;
        out.flush()?;
    }
    Ok(())
}
