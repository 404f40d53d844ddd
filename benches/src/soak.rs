//! The mixed-exit soak: a million calls (by default) into two sandboxes of
//! the example guest, cycling through every way a call can end — success,
//! each trap, out of memory, stack overflow (small and big frames), out of
//! fuel, timeout, host error, host panic, cancellation from another thread,
//! and growth of memory and table followed by a trap — in a shuffled order;
//! and calls of a second guest that leave exception references in a table
//! and a global, let an exception escape, and drop externref, exnref and
//! data segments (every reference type a table or segment can hold).
//!
//! Four sandboxes: one limited by fuel, one by a 2 ms timeout (for
//! timeouts and cancels), one with a 1 s timeout for the calls that must
//! reach the stack or memory limit, and one of the reference-types guest.
//! After every call: the call ended the
//! expected way, and the sandbox equals
//! the snapshot of an independently built twin (memory bytes and size,
//! globals, tables, segments). Resident memory, open descriptors and
//! mappings are read at start, after a warm-up of 1% of the calls and at
//! the end; the end must be within 1% of the warm-up.
//!
//! `cargo run --release -p cleanslate-benches --bin soak [CALLS]`; a run of
//! 1,000,000 calls or more writes its table into docs/RELIABILITY.md.

mod doc_section;
mod process;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use cleanslate::{ErrorKind, Runtime, Sandbox, SandboxBuilder, Snapshot, Status, TrapCode, Val};

const EXAMPLE_WAT: &str = include_str!("../../guests/example.wat");
/// What the example's failing calls leave in memory, a global and a table.
const SECRET: i32 = 0x5EC2E7;
/// Also grows memory and the table and drops segments: only the
/// fresh-instance path can undo that.
const SECRET_EVERYWHERE: i32 = SECRET | 0x4000_0000;

/// The reference-types guest: `tab(x)` catches an exception with
/// `catch_all_ref` and keeps the exnref in a table slot and a global (each
/// in-place reset once leaked a GC root on reading it back: issue 14 item
/// 6); `throw(x)` lets one escape; `drop_segments(x)` uses and drops
/// passive externref, exnref and data segments (a dropped externref
/// segment once stayed dropped: issue 14 item 2), then traps if `x` is odd.
const REFERENCES_WAT: &str = r#"(module
  (tag $boom)
  (memory 1)
  (table $exn 4 exnref)
  (table $ext 4 externref)
  (global $g (mut exnref) (ref.null exn))
  (elem $e_ext externref (ref.null extern) (ref.null extern))
  (elem $e_exn exnref (ref.null exn))
  (data $d "segment")
  (func $caught (result exnref)
    (block $h (result exnref)
      (try_table (catch_all_ref $h) (throw $boom))
      unreachable))
  (func (export "tab") (param $x i32)
    (table.set $exn (i32.and (local.get $x) (i32.const 3)) (call $caught))
    (global.set $g (call $caught)))
  (func (export "throw") (param $x i32) (throw $boom))
  (func (export "drop_segments") (param $x i32)
    (table.init $ext $e_ext (i32.const 0) (i32.const 0) (i32.const 2))
    (table.init $exn $e_exn (i32.const 3) (i32.const 0) (i32.const 1))
    (memory.init $d (i32.const 16) (i32.const 0) (i32.const 7))
    (elem.drop $e_ext)
    (elem.drop $e_exn)
    (data.drop $d)
    (if (i32.and (local.get $x) (i32.const 1)) (then unreachable))))"#;

/// Which of the sandboxes a call goes to.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// Limited by fuel (so a loop ends `out_of_fuel`).
    Fuelled,
    /// Limited by a short timeout only: loops end by timeout or
    /// cancellation.
    Timed,
    /// A generous timeout and no fuel: deep recursion and growth reach the
    /// stack and memory limits first (on a loaded machine they can take
    /// longer than the short timeout).
    Roomy,
    /// The reference-types guest, with a 1 s timeout.
    References,
}

/// One kind of call and how it must end.
struct ExitPath {
    name: &'static str,
    target: Target,
    function: &'static str,
    args: fn(i32) -> Vec<Val>,
    /// `None`: must succeed.
    expect: Option<ErrorKind>,
    /// Cancelled from another thread while it runs.
    cancel: bool,
}

fn secret(s: i32) -> Vec<Val> {
    vec![Val::I32(s)]
}

fn exit_paths() -> Vec<ExitPath> {
    use ErrorKind as K;
    let trap = |code| Some(K::Trap(code));
    let path = |name, target, function, args: fn(i32) -> Vec<Val>, expect| ExitPath {
        name,
        target,
        function,
        args,
        expect,
        cancel: false,
    };
    vec![
        path(
            "success",
            Target::Fuelled,
            "add",
            |s| vec![Val::I32(s), Val::I32(1)],
            None,
        ),
        path(
            "host function success",
            Target::Fuelled,
            "call_host",
            |s| vec![Val::I32(s), Val::I32(0)],
            None,
        ),
        path(
            "trap: unreachable",
            Target::Fuelled,
            "trap_unreachable",
            secret,
            trap(TrapCode::Unreachable),
        ),
        path(
            "trap: memory out of bounds",
            Target::Fuelled,
            "trap_memory_out_of_bounds",
            secret,
            trap(TrapCode::MemoryOutOfBounds),
        ),
        path(
            "trap: divide by zero",
            Target::Fuelled,
            "trap_divide_by_zero",
            secret,
            trap(TrapCode::IntegerDivideByZero),
        ),
        path(
            "trap: integer overflow",
            Target::Fuelled,
            "trap_integer_overflow",
            secret,
            trap(TrapCode::IntegerOverflow),
        ),
        path(
            "trap: bad conversion",
            Target::Fuelled,
            "trap_bad_conversion",
            secret,
            trap(TrapCode::BadConversionToInteger),
        ),
        path(
            "trap: indirect call type",
            Target::Fuelled,
            "trap_indirect_type_mismatch",
            secret,
            trap(TrapCode::IndirectCallTypeMismatch),
        ),
        path(
            "trap: table out of bounds",
            Target::Fuelled,
            "trap_table_out_of_bounds",
            secret,
            trap(TrapCode::TableOutOfBounds),
        ),
        path(
            "trap: null reference",
            Target::Fuelled,
            "trap_null_reference",
            secret,
            trap(TrapCode::NullReference),
        ),
        path(
            "grow memory, then trap",
            Target::Fuelled,
            "grow_then_trap",
            secret,
            trap(TrapCode::Unreachable),
        ),
        path(
            "out of fuel",
            Target::Fuelled,
            "spin",
            secret,
            Some(K::OutOfFuel),
        ),
        path(
            "host error",
            Target::Fuelled,
            "call_host",
            |s| vec![Val::I32(s), Val::I32(1)],
            Some(K::HostError),
        ),
        path(
            "host panic",
            Target::Fuelled,
            "call_host",
            |s| vec![Val::I32(s), Val::I32(2)],
            Some(K::HostPanic),
        ),
        path(
            "out of memory",
            Target::Roomy,
            "out_of_memory",
            secret,
            Some(K::OutOfMemory),
        ),
        path(
            "stack overflow",
            Target::Roomy,
            "stack_overflow",
            secret,
            Some(K::StackOverflow),
        ),
        path(
            "stack overflow, big frames",
            Target::Roomy,
            "stack_overflow_big_frames",
            secret,
            Some(K::StackOverflow),
        ),
        path("timeout", Target::Timed, "spin", secret, Some(K::Timeout)),
        ExitPath {
            cancel: true,
            ..path(
                "cancelled",
                Target::Timed,
                "spin",
                secret,
                Some(K::Cancelled),
            )
        },
        path(
            "exnref kept in a table and a global",
            Target::References,
            "tab",
            secret,
            None,
        ),
        path(
            "uncaught exception",
            Target::References,
            "throw",
            secret,
            Some(K::UncaughtException),
        ),
        path(
            "externref, exnref and data segments dropped",
            Target::References,
            "drop_segments",
            |s| vec![Val::I32(s & 0x7ffe)],
            None,
        ),
        path(
            "segments dropped, then trap",
            Target::References,
            "drop_segments",
            |s| vec![Val::I32(s | 1)],
            trap(TrapCode::Unreachable),
        ),
    ]
}

fn builder(module: &cleanslate::Module, target: Target) -> SandboxBuilder {
    if target == Target::References {
        return Sandbox::builder(module).timeout(Duration::from_secs(1));
    }
    let builder = Sandbox::builder(module)
        .init("init")
        .memory_limit(4 << 20)
        .host_fn("cleanslate_demo", "host_op", |args| match args {
            [Val::I32(0)] => Ok(vec![Val::I32(7)]),
            [Val::I32(1)] => Err("the host refused the operation".into()),
            [Val::I32(2)] => panic!("host function exploded on purpose"),
            other => Err(format!("unexpected arguments {other:?}").into()),
        });
    match target {
        Target::Fuelled => builder.fuel(200_000),
        Target::Timed => builder.timeout(Duration::from_millis(2)),
        Target::Roomy => builder.timeout(Duration::from_secs(1)),
        Target::References => unreachable!("built above"),
    }
}

/// A sandbox and the snapshot of its independently built twin.
struct Subject {
    sandbox: Sandbox,
    oracle: Snapshot,
}

fn subject(module: &cleanslate::Module, target: Target) -> Subject {
    let sandbox = builder(module, target).build().expect("the example builds");
    let oracle = builder(module, target)
        .build()
        .and_then(|mut twin| twin.snapshot())
        .expect("the twin snapshots");
    Subject { sandbox, oracle }
}

#[derive(Clone, Copy, Default)]
struct Resources {
    rss_kib: u64,
    fds: usize,
    mappings: usize,
}

fn resources() -> Resources {
    Resources {
        rss_kib: process::rss_kib(),
        fds: process::open_fds(),
        mappings: process::mappings(),
    }
}

/// Per exit path: calls, calls that ended another way, clean-slate
/// violations after it.
#[derive(Default, Clone, Copy)]
struct PathTally {
    calls: u64,
    wrong_outcome: u64,
    violations: u64,
    /// Cancellations that lost the race to the timeout (counted, allowed).
    cancel_became_timeout: u64,
}

/// A deterministic shuffle (xorshift), so runs are comparable.
fn shuffled(len: usize, state: &mut u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let j = (*state % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

fn main() {
    let calls: u64 = std::env::args()
        .nth(1)
        .map(|a| a.replace('_', "").parse().expect("CALLS is a number"))
        .unwrap_or(1_000_000);
    // Host panics are an exit path here: a million panic messages on
    // stderr would say nothing.
    std::panic::set_hook(Box::new(|_| {}));

    let runtime = Runtime::new().expect("runtime");
    let module = runtime.load_bytes(EXAMPLE_WAT).expect("the example loads");
    let references_module = runtime
        .load_bytes(REFERENCES_WAT)
        .expect("the reference-types guest loads");
    let module_for = |target| {
        if target == Target::References {
            &references_module
        } else {
            &module
        }
    };
    let at_start = resources();
    let mut fuelled = subject(&module, Target::Fuelled);
    let mut timed = subject(&module, Target::Timed);
    let mut roomy = subject(&module, Target::Roomy);
    let mut references = subject(&references_module, Target::References);

    // Cancels land from this thread: on request, it retries until a call is
    // running, then cancels it. After the call returns, the main thread
    // raises `stop` and waits for the acknowledgement before its next call,
    // so a late cancel can never hit a call it was not meant for.
    let (cancel_tx, cancel_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = timed.sandbox.interrupt_handle();
    let canceller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while cancel_rx.recv().is_ok() {
                while !handle.cancel() && !stop.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                let _ = done_tx.send(());
            }
        })
    };

    let paths = exit_paths();
    let mut tallies = vec![PathTally::default(); paths.len()];
    let warm_up = (calls / 100).max(1);
    let mut after_warm_up = Resources::default();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut order = Vec::new();
    let mut examples: Vec<String> = Vec::new();
    let started = Instant::now();
    for n in 0..calls {
        if n == warm_up {
            after_warm_up = resources();
        }
        if order.is_empty() {
            order = shuffled(paths.len(), &mut state);
        }
        let index = order.pop().expect("refilled above");
        let path = &paths[index];
        let tally = &mut tallies[index];
        // Every other round also grows memory and the table and drops
        // segments, so both reset paths run.
        let secret = if (n / paths.len() as u64).is_multiple_of(2) {
            SECRET
        } else {
            SECRET_EVERYWHERE
        };
        let subject = match path.target {
            Target::Fuelled => &mut fuelled,
            Target::Timed => &mut timed,
            Target::Roomy => &mut roomy,
            Target::References => &mut references,
        };
        if path.cancel {
            cancel_tx.send(()).expect("the canceller runs");
        }
        let outcome = subject.sandbox.call(path.function, &(path.args)(secret));
        if path.cancel {
            stop.store(true, Ordering::SeqCst);
            done_rx.recv().expect("the canceller acknowledges");
            stop.store(false, Ordering::SeqCst);
        }
        tally.calls += 1;
        let ended = outcome.as_ref().err().map(|e| e.kind());
        if ended != path.expect {
            if path.cancel && ended == Some(ErrorKind::Timeout) {
                tally.cancel_became_timeout += 1;
            } else {
                tally.wrong_outcome += 1;
                if examples.len() < 10 {
                    examples.push(format!("call {n} ({}): {outcome:?}", path.name));
                }
            }
        }
        let clean = subject.sandbox.status() == Status::Ready
            && subject.sandbox.snapshot().is_ok_and(|now| {
                subject.oracle.differences(&now).is_empty()
                    && now.memory_sizes() == subject.oracle.memory_sizes()
            });
        if !clean {
            tally.violations += 1;
            if examples.len() < 10 {
                examples.push(format!("call {n} ({}): not clean afterwards", path.name));
            }
            // Keep going with a sound sandbox, so one violation is counted once.
            *subject = self::subject(module_for(path.target), path.target);
        }
        if (n + 1) % 100_000 == 0 {
            eprintln!(
                "{} calls, {:.0} s, RSS {} KiB",
                n + 1,
                started.elapsed().as_secs_f64(),
                process::rss_kib()
            );
        }
    }
    let elapsed = started.elapsed();
    let at_end = resources();
    drop(cancel_tx);
    canceller.join().expect("the canceller ends");

    let report = report(
        calls,
        elapsed,
        &paths,
        &tallies,
        [at_start, after_warm_up, at_end],
    );
    println!("{report}");
    for example in &examples {
        eprintln!("  {example}");
    }
    if calls >= 1_000_000 {
        doc_section::replace("RELIABILITY.md", BEGIN, END, report.trim_end())
            .expect("docs/RELIABILITY.md is writable");
        eprintln!("wrote docs/RELIABILITY.md");
    }
    let failed: u64 = tallies.iter().map(|t| t.violations + t.wrong_outcome).sum();
    let grew = growth(after_warm_up, at_end) > 0.01
        || at_end.fds > after_warm_up.fds
        || at_end.mappings as f64 > after_warm_up.mappings as f64 * 1.01;
    if failed > 0 || grew {
        std::process::exit(1);
    }
}

const BEGIN: &str =
    "<!-- soak:begin (written by `cargo run --release -p cleanslate-benches --bin soak`) -->";
const END: &str = "<!-- soak:end -->";

fn growth(before: Resources, after: Resources) -> f64 {
    after.rss_kib as f64 / before.rss_kib.max(1) as f64 - 1.0
}

fn report(
    calls: u64,
    elapsed: Duration,
    paths: &[ExitPath],
    tallies: &[PathTally],
    [start, warm, end]: [Resources; 3],
) -> String {
    let mut out = String::new();
    let violations: u64 = tallies.iter().map(|t| t.violations).sum();
    let wrong: u64 = tallies.iter().map(|t| t.wrong_outcome).sum();
    let _ = writeln!(
        out,
        "{calls} calls in {:.0} s: **{violations} clean-slate violations**, {wrong} calls that ended an unexpected way.\n",
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| exit path | sandbox | calls | ended as expected | clean afterwards |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for (path, t) in paths.iter().zip(tallies) {
        let target = match path.target {
            Target::Fuelled => "fuel 200,000",
            Target::Timed => "timeout 2 ms",
            Target::Roomy => "timeout 1 s",
            Target::References => "references, timeout 1 s",
        };
        let expected = t.calls - t.wrong_outcome;
        let note = if t.cancel_became_timeout > 0 {
            format!(
                " ({} lost the race to the timeout)",
                t.cancel_became_timeout
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {target} | {} | {expected}{note} | {} |",
            path.name,
            t.calls,
            t.calls - t.violations
        );
    }
    let _ = writeln!(
        out,
        "\n| | at start | after warm-up ({} calls) | at end | end vs warm-up |",
        calls / 100
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| resident memory (KiB) | {} | {} | {} | {:+.2}% |",
        start.rss_kib,
        warm.rss_kib,
        end.rss_kib,
        growth(warm, end) * 100.0
    );
    let _ = writeln!(
        out,
        "| open file descriptors | {} | {} | {} | {:+} |",
        start.fds,
        warm.fds,
        end.fds,
        end.fds as i64 - warm.fds as i64
    );
    let _ = writeln!(
        out,
        "| mappings | {} | {} | {} | {:+} |",
        start.mappings,
        warm.mappings,
        end.mappings,
        end.mappings as i64 - warm.mappings as i64
    );
    out
}
