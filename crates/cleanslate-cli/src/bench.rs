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
use crate::call_spec::{CallRequest, CallSpec};
use crate::options::SandboxOptions;
use crate::run::read_input;

/// Measure a call: run it N times in one sandbox (each followed by its reset).
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  cleanslate bench guests/example.wat add:2,3
  cleanslate bench guest.wasm work:1000 --calls 100000 --init setup --json
  cleanslate bench guests/example.wat leave_secret:5 --reset fresh_instance
  cleanslate bench json_transform.wasm shout --input @1KiB.txt

Times include the call and its reset. Quote medians, and compare runs made
on the same machine at the same time.")]
pub struct BenchArgs {
    /// The module: a .wasm binary or .wat text file.
    pub module: PathBuf,
    /// The call to measure: FUNC or FUNC:ARG,ARG,...
    #[arg(value_name = "CALL")]
    pub call: String,
    /// How many measured calls (after a warm-up of 1%, at least 10).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub calls: u64,
    /// Input bytes for a data-ABI (bytes/JSON) function: TEXT, @FILE or `-`.
    #[arg(long, value_name = "TEXT|@FILE|-")]
    pub input: Option<String>,
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
    let input = args.input.as_deref().map(read_input).transpose()?;
    let (module, mut sandbox) = args.sandbox.load_and_build(&args.module)?;
    let spec = CallSpec::parse(&args.call);
    let request = spec
        .request(&module, input.as_deref())
        .map_err(|e| e.to_string())?;
    let function = spec.function.as_str();
    let call = move |sandbox: &mut cleanslate::Sandbox| -> Result<(), cleanslate::Error> {
        match &request {
            CallRequest::Values(values) => sandbox.call(function, values).map(drop),
            CallRequest::Bytes(input) => sandbox.call_bytes(function, input).map(drop),
        }
    };
    // A call that cannot be made at all is a usage error, not a benchmark.
    if let Err(e) = call(&mut sandbox)
        && !e.kind().is_guest_failure()
    {
        return Err(format!("cannot benchmark `{}`: {e}", args.call).into());
    }

    let warmup = (args.calls / 100).max(10);
    for _ in 0..warmup {
        let _ = call(&mut sandbox);
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
    for i in 0..args.calls {
        let started = Instant::now();
        let outcome = call(&mut sandbox);
        call_ns.push(started.elapsed().as_nanos() as u64);
        failures += outcome.is_err() as u64;
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
        if failures > 0 {
            println!(
                "  note       {failures} of the calls failed (their time includes the failure and its reset)"
            );
        }
    }
    Ok(EXIT_OK)
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
