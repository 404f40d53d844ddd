//! `cleanslate demo`: the bundled example guest walks through a success and
//! every way a call can fail, showing after each one that the secret the
//! call left behind is gone, that the sandbox still works, and what the
//! reset cost.

use std::thread;
use std::time::Duration;

use clap::Args;
use cleanslate::{Runtime, Sandbox, Val, Verify};

use crate::{EXIT_CALL_FAILED, EXIT_OK};

/// The example guest, embedded so the demo needs no files.
pub const EXAMPLE_GUEST: &str = include_str!("../../../guests/example.wat");

/// Walk through every exit path on the bundled example guest.
#[derive(Args, Debug)]
#[command(
    after_help = "The guest's source is guests/example.wat. The demo exits 1 if any \
secret were still visible after a call (it never should be)."
)]
pub struct DemoArgs {
    /// The value each call writes into memory, a global, a table, a grown page.
    #[arg(long, default_value_t = 0x5EC2E7)]
    pub secret: i32,
}

enum Step {
    Call(&'static str, &'static [i32]),
    /// Call on the fuel-metered sandbox.
    Fueled(&'static str),
    /// Cancel from another thread after a moment.
    Cancelled(&'static str),
}

const STEPS: &[(&str, Step)] = &[
    (
        "success (and it writes the secret everywhere)",
        Step::Call("leave_secret", &[]),
    ),
    ("trap: unreachable", Step::Call("trap_unreachable", &[])),
    (
        "trap: out-of-bounds memory access",
        Step::Call("trap_memory_out_of_bounds", &[]),
    ),
    (
        "trap: integer divide by zero",
        Step::Call("trap_divide_by_zero", &[]),
    ),
    (
        "trap: integer overflow",
        Step::Call("trap_integer_overflow", &[]),
    ),
    (
        "trap: bad float-to-int conversion",
        Step::Call("trap_bad_conversion", &[]),
    ),
    (
        "trap: indirect call type mismatch",
        Step::Call("trap_indirect_type_mismatch", &[]),
    ),
    (
        "trap: table out of bounds",
        Step::Call("trap_table_out_of_bounds", &[]),
    ),
    (
        "trap: null reference",
        Step::Call("trap_null_reference", &[]),
    ),
    (
        "stack overflow (deep recursion)",
        Step::Call("stack_overflow", &[]),
    ),
    (
        "stack overflow (large frames)",
        Step::Call("stack_overflow_big_frames", &[]),
    ),
    (
        "out of memory (memory limit 4 MiB)",
        Step::Call("out_of_memory", &[]),
    ),
    (
        "growth within the limit, then a trap",
        Step::Call("grow_then_trap", &[]),
    ),
    (
        "timeout (infinite loop, 100 ms limit)",
        Step::Call("spin", &[]),
    ),
    (
        "out of fuel (infinite loop, 1M units)",
        Step::Fueled("spin"),
    ),
    ("cancelled from another thread", Step::Cancelled("spin")),
    ("host function error", Step::Call("call_host", &[1])),
    (
        "host function panic (caught)",
        Step::Call("call_host", &[2]),
    ),
];

pub fn demo(args: DemoArgs) -> Result<u8, String> {
    let runtime = Runtime::new().map_err(|e| e.to_string())?;
    let module = runtime
        .load_bytes(EXAMPLE_GUEST)
        .map_err(|e| e.to_string())?;
    let build = |fuel: Option<u64>| -> Result<Sandbox, String> {
        let mut builder = crate::demo_host::provide(Sandbox::builder(&module), &module)
            .init("init")
            .memory_limit(4 << 20)
            .stack_limit(256 << 10)
            .timeout(Duration::from_millis(100))
            .verify(Verify::Always);
        if let Some(fuel) = fuel {
            builder = builder.fuel(fuel);
        }
        builder
            .build()
            .map_err(|e| format!("cannot build the demo sandbox: {e}"))
    };
    let mut sandbox = build(None)?;
    let mut metered = build(Some(1_000_000))?;

    println!(
        "Cleanslate demo: every call starts from the snapshot, whatever way the last one ended."
    );
    println!(
        "Each call below first writes the secret {:#x} into memory, a non-exported global,",
        args.secret
    );
    println!(
        "a table slot, a freshly grown page, and drops a passive data segment; then it ends its own way."
    );
    println!("Resets are verified against the snapshot after every call (--verify always).\n");

    let mut leaks = 0;
    for (n, (title, step)) in STEPS.iter().enumerate() {
        println!("{:>2}. {title}", n + 1);
        let secret = Val::I32(args.secret);
        let (target, function, outcome) = match step {
            Step::Call(function, extra) => {
                let mut call_args = vec![secret];
                call_args.extend(extra.iter().map(|v| Val::I32(*v)));
                let outcome = sandbox.call(function, &call_args);
                (&mut sandbox, function, outcome)
            }
            Step::Fueled(function) => {
                let outcome = metered.call(function, &[secret]);
                (&mut metered, function, outcome)
            }
            Step::Cancelled(function) => {
                let handle = sandbox.interrupt_handle();
                let canceller = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(20));
                    handle.cancel()
                });
                let outcome = sandbox.call(function, &[secret]);
                let _ = canceller.join();
                (&mut sandbox, function, outcome)
            }
        };
        match &outcome {
            Ok(results) => println!("    call   {function} returned {results:?}"),
            Err(e) => println!("    call   {function} failed [{}]: {e}", e.kind().as_str()),
        }
        if let Some(report) = target.last_reset() {
            println!(
                "    reset  {} — {} page(s) restored in {:.1} µs{}",
                report.path(),
                report.dirty_pages(),
                report.duration().as_nanos() as f64 / 1000.0,
                if report.verified() { ", verified" } else { "" }
            );
        }
        let (line, clean) = inspect(target);
        println!("    after  {line}");
        if !clean {
            leaks += 1;
        }
        match target.call_typed::<(i32, i32), i32>("add", (2, 3)) {
            Ok(5) => println!("    next   add(2, 3) = 5: the sandbox works as new\n"),
            other => {
                println!("    next   add(2, 3) gave {other:?}: THE SANDBOX IS BROKEN\n");
                leaks += 1;
            }
        }
    }
    if leaks == 0 {
        println!(
            "All {} calls left no trace: memory, memory size, globals, tables and segments were back at the snapshot after each.",
            STEPS.len()
        );
        Ok(EXIT_OK)
    } else {
        println!("{leaks} step(s) left a trace. This is a bug in Cleanslate; please report it.");
        Ok(EXIT_CALL_FAILED)
    }
}

/// Look for the secret through the guest's own eyes.
fn inspect(sandbox: &mut Sandbox) -> (String, bool) {
    let checks = [
        (
            "memory",
            sandbox.call_typed::<(), i32>("read_secret", ()).ok() == Some(0),
        ),
        (
            "global",
            sandbox.call_typed::<(), i64>("read_global", ()).ok() == Some(0),
        ),
        (
            "table slot",
            sandbox
                .call_typed::<(), i32>("table_slot_3_is_null", ())
                .ok()
                == Some(1),
        ),
        (
            "grown page",
            sandbox.call_typed::<(), i32>("memory_pages", ()).ok() == Some(1),
        ),
        (
            "dropped segment",
            sandbox.call_typed::<(), i32>("read_passive", ()).is_ok(),
        ),
    ];
    let clean = checks.iter().all(|(_, ok)| *ok);
    let parts: Vec<String> = checks
        .iter()
        .map(|(what, ok)| format!("{what}: {}", if *ok { "clean" } else { "LEAKED" }))
        .collect();
    (parts.join(" · "), clean)
}
