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
    /// The value each call writes into memory, a global and a table slot
    /// (decimal, or hex as `0x4e5ec2e7`). With bit 30 set (the default), each
    /// call also grows memory and the table, writes the secret into the grown
    /// page and drops passive segments: changes only a fresh instance undoes.
    #[arg(long, default_value = "0x4e5ec2e7", value_parser = parse_secret)]
    pub secret: i32,
}

/// The guest's bit that makes a call also grow memory and the table and
/// drop segments (see `leave_secret` in guests/example.wat).
const EVERYWHERE_BIT: i32 = 0x4000_0000;

/// A secret in decimal or `0x` hex (the form the demo prints), as the
/// guest's 32-bit value.
fn parse_secret(text: &str) -> Result<i32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).map(|v| v as i32),
        None => text.parse::<i32>(),
    };
    parsed.map_err(|e| format!("`{text}` is not a 32-bit number in decimal or 0x hex: {e}"))
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
    let everywhere = args.secret & EVERYWHERE_BIT != 0;
    if everywhere {
        println!(
            "Each call below first writes the secret {:#x} into memory, a non-exported global,",
            args.secret
        );
        println!(
            "a table slot and a freshly grown page, grows the table and drops passive segments;"
        );
        println!("then it ends its own way.");
    } else {
        println!(
            "Each call below first writes the secret {:#x} into memory, a non-exported global and",
            args.secret
        );
        println!(
            "a table slot (bit 30 of the secret is clear: nothing is grown or dropped); then it ends its own way."
        );
    }
    println!("Resets are verified against the snapshot after every call (--verify always).\n");

    // The control: the same checks inside a session, where nothing is reset
    // between calls, must see the secret — so a "clean" below means clean.
    println!(" 0. control: the secret left in a session (no reset until it ends)");
    let control = {
        let mut session = sandbox.session();
        session
            .call("leave_secret", &[Val::I32(args.secret)])
            .map_err(|e| format!("the control call failed: {e}"))?;
        inspect(&mut |name| session.call(name, &[]).ok(), everywhere)
    };
    let seen = control.iter().filter(|check| !check.clean).count();
    println!("    seen   {}", describe(&control, "NOT SEEN", "visible"));
    if seen != control.len() {
        println!("    A check did not see the secret it exists to find: the demo is broken.");
        return Ok(EXIT_CALL_FAILED);
    }
    let after = inspect(&mut |name| sandbox.call(name, &[]).ok(), everywhere);
    println!(
        "    after  the session ended: {}\n",
        describe(&after, "clean", "LEAKED")
    );

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
        let checks = inspect(&mut |name| target.call(name, &[]).ok(), everywhere);
        println!("    after  {}", describe(&checks, "clean", "LEAKED"));
        if checks.iter().any(|check| !check.clean) {
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

/// One place the secret could survive, and whether it is gone.
struct Check {
    what: &'static str,
    clean: bool,
}

/// Look for the secret through the guest's own eyes; `call` makes a call
/// without arguments (on the sandbox, or inside a session). With
/// `everywhere`, also the grown page, the table's size and the dropped
/// segments.
fn inspect(call: &mut dyn FnMut(&str) -> Option<Vec<Val>>, everywhere: bool) -> Vec<Check> {
    let mut is = |name: &str, expected: Val| call(name).as_deref() == Some(&[expected][..]);
    let mut checks = vec![
        Check {
            what: "memory",
            clean: is("read_secret", Val::I32(0)),
        },
        Check {
            what: "global",
            clean: is("read_global", Val::I64(0)),
        },
        Check {
            what: "table slot",
            clean: is("table_slot_3_is_null", Val::I32(1)),
        },
    ];
    if everywhere {
        // Size first: `grow_and_read` grows again.
        let size = is("memory_pages", Val::I32(1));
        let zeroed = is("grow_and_read", Val::I32(0));
        checks.extend([
            Check {
                what: "grown page",
                clean: size && zeroed,
            },
            Check {
                what: "table size",
                clean: is("table_size", Val::I32(4)),
            },
            Check {
                what: "dropped segment",
                clean: is("read_passive", Val::I32(i32::from_le_bytes(*b"pass"))),
            },
        ]);
    }
    checks
}

fn describe(checks: &[Check], clean: &str, dirty: &str) -> String {
    let parts: Vec<String> = checks
        .iter()
        .map(|c| format!("{}: {}", c.what, if c.clean { clean } else { dirty }))
        .collect();
    parts.join(" · ")
}
