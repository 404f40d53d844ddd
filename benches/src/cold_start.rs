//! `cold_start`: what it costs to get from bytes to a callable sandbox.
//!
//! - building a sandbox from a loaded small module (instantiate, run its
//!   init, take the snapshot);
//! - loading a small module compiled before (from the compiled-module
//!   cache) and compiling it afresh;
//! - a generated module of over 20 MB of code: first load (compile) and
//!   cached load side by side.
//!
//! Medians, all in one run; the result replaces the cold-start section of
//! docs/BENCHMARKS.md. Run: `cargo run --release -p cleanslate-benches --bin
//! cold_start` (`-- --quick` for a smoke run that writes nothing).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

mod doc_section;

use cleanslate::{CacheStatus, Runtime, RuntimeConfig, Sandbox};
use wasm_encoder::{
    CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, Module,
    TypeSection, ValType,
};

/// A small module with state a snapshot must hold: a memory with data,
/// mutable globals, a table, and an init function that changes them.
const SMALL: &str = r#"(module
  (memory 1 16)
  (data (i32.const 0) "cleanslate cold start")
  (global $counter (mut i32) (i32.const 0))
  (global $seed (mut i64) (i64.const 42))
  (table 4 funcref)
  (elem (i32.const 0) $add)
  (func $add (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "init")
    (global.set $counter (i32.const 1))
    (i32.store (i32.const 64) (i32.const 7))))"#;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cache = std::env::temp_dir().join(format!("cleanslate-cold-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let mut rows = Vec::new();

    // Sandbox build from a loaded module.
    let runtime = Runtime::new().expect("runtime");
    let small = runtime.load_bytes(SMALL).expect("small module");
    let builds = if quick { 50 } else { 3000 };
    let build = median(builds, || {
        let started = Instant::now();
        let sandbox = Sandbox::builder(&small)
            .init("init")
            .build()
            .expect("build");
        let took = started.elapsed();
        drop(sandbox);
        took
    });
    rows.push((
        "sandbox build from a loaded small module (instantiate + init + snapshot)",
        build,
        Some(Duration::from_micros(200)),
    ));

    // A small module: compiled, and from the cache.
    let cached_runtime =
        Runtime::with_config(RuntimeConfig::default().module_cache(&cache)).expect("runtime");
    cached_runtime.load_bytes(SMALL).expect("fill the cache");
    let loads = if quick { 20 } else { 300 };
    let compile_small = median(loads, || {
        timed_load(&runtime, SMALL.as_bytes(), &CacheStatus::Off)
    });
    let cached_small = median(loads, || {
        timed_load(&cached_runtime, SMALL.as_bytes(), &CacheStatus::Hit)
    });
    rows.push((
        "small module: load without the cache (compile)",
        compile_small,
        None,
    ));
    rows.push((
        "small module: load from the cache",
        cached_small,
        Some(Duration::from_millis(5)),
    ));

    // A large module: first load (compile and store) and cached load.
    let functions = if quick { 200 } else { 1_900 };
    let large = large_module(functions);
    let megabytes = large.len() as f64 / 1e6;
    let rounds = if quick { 1 } else { 5 };
    let _ = std::fs::remove_dir_all(&cache);
    let fresh =
        Runtime::with_config(RuntimeConfig::default().module_cache(&cache)).expect("runtime");
    let first = vec![timed_load(&fresh, &large, &CacheStatus::Miss)];
    // Each cached load in a new runtime, as a new process would have.
    let cached: Vec<_> = (0..rounds)
        .map(|_| {
            let again = Runtime::with_config(RuntimeConfig::default().module_cache(&cache))
                .expect("runtime");
            timed_load(&again, &large, &CacheStatus::Hit)
        })
        .collect();
    let first = middle(first);
    let cached = middle(cached);
    let _ = std::fs::remove_dir_all(&cache);

    let mut out = String::new();
    let _ = writeln!(out, "| what | median | target |\n|---|---:|---:|");
    for (what, took, target) in &rows {
        let target = target.map_or("—".to_string(), |t| {
            format!("≤ {} ({})", show(t), verdict(*took <= t))
        });
        let _ = writeln!(out, "| {what} | {} | {target} |", show(*took));
    }
    let ratio = first.as_secs_f64() / cached.as_secs_f64();
    let _ = writeln!(
        out,
        "| {megabytes:.1} MB generated module ({functions} functions): first load, compiling | {} | — |",
        show(first)
    );
    let _ = writeln!(
        out,
        "| {megabytes:.1} MB generated module: cached load (new runtime) | {} | ≥ 20× faster: **{ratio:.0}×** ({}) |",
        show(cached),
        verdict(ratio >= 20.0)
    );
    let _ = writeln!(
        out,
        "\n{builds} builds and {loads} small loads (medians), one compile of the large module and {rounds} cached loads of it (median). Loads include parsing, validation and the reset's rewrite of the module, which the cache does not skip; the cache skips the compiler."
    );
    println!("{out}");
    if !quick {
        write_section(&out).unwrap_or_else(|e| eprintln!("could not write the report: {e}"));
    }
}

fn timed_load(runtime: &Runtime, wasm: &[u8], expect: &CacheStatus) -> Duration {
    let started = Instant::now();
    let module = runtime.load_bytes(wasm).expect("load");
    let took = started.elapsed();
    assert_eq!(module.cache_status(), expect, "unexpected cache outcome");
    took
}

/// `functions` functions of about 9 KB of code each.
fn large_module(functions: u32) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    let mut section = FunctionSection::new();
    let mut exports = ExportSection::new();
    let mut code = CodeSection::new();
    for f in 0..functions {
        section.function(0);
        exports.export(&format!("f{f}"), ExportKind::Func, f);
        let mut body = Function::new([]);
        for k in 0..1_000i32 {
            body.instruction(&Instruction::LocalGet(0));
            body.instruction(&Instruction::I32Const(k.wrapping_mul(2_654_435) ^ f as i32));
            body.instruction(&Instruction::I32Add);
            body.instruction(&Instruction::LocalSet(0));
        }
        body.instruction(&Instruction::LocalGet(0));
        body.instruction(&Instruction::End);
        code.function(&body);
    }
    let mut module = Module::new();
    module
        .section(&types)
        .section(&section)
        .section(&exports)
        .section(&code);
    module.finish()
}

fn median(n: usize, mut sample: impl FnMut() -> Duration) -> Duration {
    for _ in 0..(n / 20).max(2) {
        sample();
    }
    middle((0..n).map(|_| sample()).collect())
}

fn middle(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

const BEGIN: &str = "<!-- cold-start:begin (written by `cargo run --release -p cleanslate-benches --bin cold_start`) -->";
const END: &str = "<!-- cold-start:end -->";

fn write_section(table: &str) -> std::io::Result<()> {
    doc_section::replace(
        "BENCHMARKS.md",
        BEGIN,
        END,
        &format!("## Cold start\n\n{}", table.trim_end()),
    )
}
