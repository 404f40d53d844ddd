//! `cleanslate bench`: one call, many times, in one sandbox; per-call time
//! (call + reset) and what the resets did.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use cleanslate::ResetPath;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::EXIT_OK;
use crate::call_io::CallIoArgs;
use crate::call_spec::CallSpec;
use crate::options::SandboxOptions;

/// Measure a call: run it N times in one sandbox (each followed by its reset).
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  cleanslate bench guests/example.wat add:2,3
  cleanslate bench guest.wasm work:1000 --calls 100000 --init setup --json
  cleanslate bench guests/example.wat leave_secret:5 --reset fresh_instance
  cleanslate bench json_transform.wasm shout --input @1KiB.txt
  cleanslate bench tool.wasm _start --arg tool --arg -v --stdin input.txt --dir ./data::/data:ro
  cleanslate bench jaq.wasm _start --arg jaq --arg .a --stdin in.json --deterministic 1 --calls 1000

A WASI command takes --arg, --stdin, --env and --dir as `run` does: each
measured call is the call `cleanslate run` makes with the same flags (its
stdout and stderr are captured, then dropped). Ending with proc_exit(0), or
`_start` returning, is a completed call. Other exit statuses are counted per
status (the `exits` line; \"exit_codes\" and \"nonzero_exits\" in --json),
as are failed calls (traps, limits; \"failed\"); the first call's non-zero
exit or failure is also reported on stderr, with the end of its stderr.

Times include the call and its reset. Quote medians, and compare runs made
on the same machine at the same time.

Exit status: 0 when the calls were measured (whatever they returned), 2 for
bad usage, a module that does not load, or a call that cannot be made.")]
pub struct BenchArgs {
    /// The module: a .wasm binary or .wat text file.
    pub module: PathBuf,
    /// The call to measure: FUNC or FUNC:ARG,ARG,...
    #[arg(value_name = "CALL")]
    pub call: String,
    /// How many measured calls (after a warm-up of 1%, at least 10).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub calls: u64,
    #[command(flatten)]
    pub io: CallIoArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxOptions,
}

#[derive(Serialize)]
struct BenchReport {
    calls: u64,
    median_us: f64,
    p90_us: f64,
    p99_us: f64,
    reset: ResetSummary,
    /// Measured calls that failed (trap, limit, host error, ...).
    failed: u64,
    /// A WASI command's measured calls by exit status (0 for `_start`
    /// returning or `proc_exit(0)`); absent for other functions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exit_codes: BTreeMap<i32, u64>,
    /// How many of `exit_codes` are not 0; absent with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    nonzero_exits: Option<u64>,
}

#[derive(Serialize)]
struct ResetSummary {
    median_us: f64,
    median_dirty_pages: u64,
    paths: BTreeMap<&'static str, u64>,
}

pub fn bench(args: BenchArgs) -> Result<u8, crate::CliError> {
    if args.calls == 0 {
        return Err("--calls must be at least 1".into());
    }
    args.io.check_one_stdin_reader(&[])?;
    let io = args.io.read()?;
    let (module, mut sandbox) = args.sandbox.load_and_build(&args.module)?;
    let spec = CallSpec::parse(&args.call);
    let request = spec
        .request(&module, io.input.as_deref())
        .map_err(|e| e.to_string())?;
    // The call `run` would make, built once: every measured call is the same.
    let call = io.call(&spec.function, request, None, None, &[]);
    // A call that cannot be made at all is a usage error, not a benchmark.
    match sandbox.call_with(&call) {
        Err(e) if !e.kind().is_guest_failure() => {
            return Err(format!("cannot benchmark `{}`: {e}", args.call).into());
        }
        Err(e) => eprintln!(
            "warning: the first call of `{}` failed: {e}{}; failed calls are counted and timed",
            args.call,
            stderr_tail(e.stderr())
        ),
        Ok(result) => {
            if let Some(code) = result.exit_code().filter(|&c| c != 0) {
                eprintln!(
                    "warning: the first call of `{}` exited with status {code}{}; non-zero exits are counted and timed",
                    args.call,
                    stderr_tail(result.stderr())
                );
            }
        }
    }

    let warmup = (args.calls / 100).max(10);
    for _ in 0..warmup {
        let _ = sandbox.call_with(&call);
    }
    let progress = progress_bar(args.calls);
    let mut call_ns = Vec::with_capacity(args.calls as usize);
    let mut reset_ns = Vec::with_capacity(args.calls as usize);
    let mut dirty = Vec::with_capacity(args.calls as usize);
    let mut paths: BTreeMap<&'static str, u64> = [ResetPath::InPlace, ResetPath::FreshInstance]
        .iter()
        .map(|p| (p.as_str(), 0))
        .collect();
    let mut failures = 0u64;
    let mut exit_codes: BTreeMap<i32, u64> = BTreeMap::new();
    for i in 0..args.calls {
        let started = Instant::now();
        let outcome = sandbox.call_with(&call);
        call_ns.push(started.elapsed().as_nanos() as u64);
        match outcome.map(|result| result.exit_code()) {
            Ok(Some(code)) => *exit_codes.entry(code).or_default() += 1,
            Ok(None) => {}
            Err(_) => failures += 1,
        }
        if let Some(report) = sandbox.last_reset() {
            reset_ns.push(report.duration().as_nanos() as u64);
            dirty.push(report.dirty_pages());
            *paths.entry(report.path().as_str()).or_default() += 1;
        }
        if i % 1024 == 0 {
            progress.set_position(i);
        }
    }
    progress.finish_and_clear();

    call_ns.sort_unstable();
    reset_ns.sort_unstable();
    dirty.sort_unstable();
    let report = BenchReport {
        calls: args.calls,
        median_us: micros(percentile(&call_ns, 50.0)),
        p90_us: micros(percentile(&call_ns, 90.0)),
        p99_us: micros(percentile(&call_ns, 99.0)),
        reset: ResetSummary {
            median_us: micros(percentile(&reset_ns, 50.0)),
            median_dirty_pages: percentile(&dirty, 50.0),
            paths,
        },
        failed: failures,
        nonzero_exits: (!exit_codes.is_empty()).then(|| {
            exit_codes
                .iter()
                .filter(|&(&code, _)| code != 0)
                .map(|(_, n)| n)
                .sum()
        }),
        exit_codes,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "{} calls of {} (each followed by its reset)",
            report.calls, args.call
        );
        println!(
            "  per call   median {:>9.2} µs   p90 {:>9.2} µs   p99 {:>9.2} µs",
            report.median_us, report.p90_us, report.p99_us
        );
        println!(
            "  reset      median {:>9.2} µs   median dirty pages {}",
            report.reset.median_us, report.reset.median_dirty_pages
        );
        let paths: Vec<String> = report
            .reset
            .paths
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        println!("  paths      {}", paths.join(", "));
        if !report.exit_codes.is_empty() {
            let exits: Vec<String> = report
                .exit_codes
                .iter()
                .map(|(code, n)| format!("status {code} ×{n}"))
                .collect();
            println!("  exits      {}", exits.join(", "));
        }
        if let Some(nonzero) = report.nonzero_exits.filter(|&n| n > 0) {
            println!(
                "  note       {nonzero} of the calls exited with a non-zero status (their time is that of the program's failure path)"
            );
        }
        if failures > 0 {
            println!(
                "  note       {failures} of the calls failed (their time includes the failure and its reset)"
            );
        }
    }
    Ok(EXIT_OK)
}

/// ` (its stderr ends: "…")` for a guest that wrote to stderr, else nothing.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let Some(last) = text.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
        return String::new();
    };
    let mut last = last.to_string();
    if let Some((cut, _)) = last.char_indices().nth(200) {
        last.truncate(cut);
        last.push('…');
    }
    format!(" (its stderr ends: {last:?})")
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} calls  {eta} left") {
        bar.set_style(style);
    }
    bar
}

/// The value at `pct` percent of sorted `values` (nearest rank).
fn percentile(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(nanos: u64) -> f64 {
    (Duration::from_nanos(nanos).as_secs_f64() * 1e8).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
