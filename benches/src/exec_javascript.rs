//! `exec_javascript`: untrusted JavaScript through `cleanslate-exec`'s
//! `CodeSandbox` with the built-in QuickJS guest (a setup snapshot, reset
//! in place after every run) against the same guest on a fresh instance
//! per run (the interpreter created anew for every run), in one process.
//!
//! Rows: per-run time of `console.log(1+1)` and of a small data snippet,
//! from the setup snapshot (reset included) and on a fresh instance; the
//! setup snapshot's build time. Medians; the result replaces the
//! exec-javascript section of docs/BENCHMARKS.md.
//!
//! `cargo run --release -p cleanslate-benches --bin exec_javascript`
//! (`-- --quick` for a smoke run that writes nothing).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

mod doc_section;
mod samples;

use samples::{fmt, median, p90};

use cleanslate::{Call, ResetStrategy, Runtime, Sandbox, Val, WasiConfig};
use cleanslate_exec::{CodeSandbox, JavaScriptGuest};

const PRINT: &str = "console.log(1+1)";
const DATA_SETUP: &str =
    "const rows = Array.from({length: 1000}, (_, i) => ({id: i, score: (i * 37) % 101}));";
const DATA: &str = "const top = rows.filter(r => r.score > 90).map(r => r.id); console.log(top.length, JSON.stringify(top.slice(0, 3)))";

/// One run on a sandbox whose every call gets a new instance: the
/// interpreter is created by the first turn, as a host without snapshots
/// would have to.
fn fresh_run(sandbox: &mut Sandbox, code: &str) -> Duration {
    let started = Instant::now();
    let mut session = sandbox.session();
    let ptr: i32 = session
        .call_typed("host_alloc", (code.len() as i32,))
        .expect("host_alloc");
    session
        .write_memory(u64::from(ptr as u32), code.as_bytes())
        .expect("write the code");
    let call = Call::values("turn", &[Val::I32(ptr), Val::I32(code.len() as i32)]);
    let result = session.call_with(&call).expect("turn");
    assert!(
        !result.stdout().is_empty(),
        "{}",
        String::from_utf8_lossy(result.stderr())
    );
    session.finish().expect("reset");
    started.elapsed()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let guest = JavaScriptGuest::built_in().expect("this build has the JavaScript guest");
    let (runs, fresh_runs, setups) = if quick { (50, 10, 2) } else { (2000, 200, 20) };
    let builder = || {
        CodeSandbox::builder()
            .guest(guest.clone())
            .no_module_cache()
    };
    let mut rows: Vec<(String, String, String, String)> = Vec::new();

    let mut plain = builder().build().expect("build");
    let print_runs: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let result = plain.run(PRINT).expect("run");
            let took = started.elapsed();
            assert_eq!(result.stdout, b"2\n");
            took
        })
        .collect();
    let mut with_data = builder().setup(DATA_SETUP).build().expect("build");
    let expected = with_data.run(DATA).expect("run").stdout;
    let data_runs: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let result = with_data.run(DATA).expect("run");
            let took = started.elapsed();
            assert_eq!(result.stdout, expected);
            took
        })
        .collect();

    let runtime = Runtime::new().expect("runtime");
    let module = match guest.module_path() {
        Some(path) => runtime.load_file(path),
        None => runtime.load_bytes(cleanslate_js_guest::module().expect("the built-in guest")),
    }
    .expect("load");
    let mut fresh = Sandbox::builder(&module)
        .reset_strategy(ResetStrategy::FreshInstance)
        .host_fn("host", "call", |_| Ok(vec![Val::I32(-1)]))
        .wasi(WasiConfig::new().arg("qjs"))
        .build()
        .expect("sandbox");
    let fresh_print: Vec<Duration> = (0..fresh_runs)
        .map(|_| fresh_run(&mut fresh, PRINT))
        .collect();
    let data_program = format!("{DATA_SETUP}\n{DATA}");
    let fresh_data: Vec<Duration> = (0..fresh_runs)
        .map(|_| fresh_run(&mut fresh, &data_program))
        .collect();

    let setup_times: Vec<Duration> = (0..setups)
        .map(|_| {
            let started = Instant::now();
            let sandbox = builder().setup(DATA_SETUP).build().expect("setup");
            let took = started.elapsed();
            drop(sandbox);
            took
        })
        .collect();

    rows.push((
        "`console.log(1+1)`, from the setup snapshot (run + reset in place)".into(),
        fmt(median(print_runs.clone())),
        fmt(p90(print_runs)),
        "≤ 1 ms".into(),
    ));
    rows.push((
        "`console.log(1+1)`, interpreter created per run, fresh instance per run".into(),
        fmt(median(fresh_print.clone())),
        fmt(p90(fresh_print)),
        "—".into(),
    ));
    rows.push((
        "data snippet (filter + JSON of 1,000 rows made in the setup), from the setup snapshot"
            .into(),
        fmt(median(data_runs.clone())),
        fmt(p90(data_runs)),
        "—".into(),
    ));
    rows.push((
        "data snippet, interpreter created and rows made per run, fresh instance per run".into(),
        fmt(median(fresh_data.clone())),
        fmt(p90(fresh_data)),
        "—".into(),
    ));
    rows.push((
        "setup snapshot with the rows (module compiled in memory, no cache)".into(),
        fmt(median(setup_times.clone())),
        fmt(p90(setup_times)),
        "—".into(),
    ));

    let mut body = String::from("| what | median | p90 | target |\n|---|---:|---:|---:|\n");
    for (what, median, spread, target) in &rows {
        let _ = writeln!(body, "| {what} | {median} | {spread} | {target} |");
    }
    let _ = write!(
        body,
        "\n{runs} runs per snapshot row, {fresh_runs} per fresh-instance row, {setups} setups. Wall time around `CodeSandbox::run` (writing the code in, the run, the reset, the /tmp upkeep), and around one session of `host_alloc` + `turn` on a sandbox with `ResetStrategy::FreshInstance` (a new instance per run, the interpreter created by its first turn)."
    );
    println!("{body}");
    if !quick {
        doc_section::replace(
            "BENCHMARKS.md",
            "<!-- exec-javascript:begin -->",
            "<!-- exec-javascript:end -->",
            &body,
        )
        .expect("write docs/BENCHMARKS.md");
    }
}
