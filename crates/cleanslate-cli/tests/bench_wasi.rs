//! `cleanslate bench` on WASI commands: `--arg` and `--stdin` reach every
//! measured call as they reach `run`'s, exit statuses are counted, and bad
//! `--stdin` values are one clear usage error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Run the command with `stdin` on its standard input.
fn cleanslate_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn cleanslate(args: &[&str]) -> Output {
    cleanslate_with_stdin(args, b"")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one JSON object a `bench --json` prints, after checking it exited 0.
fn bench_json(args: &[&str], stdin: &[u8]) -> (Value, String) {
    let out = cleanslate_with_stdin(args, stdin);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let report = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {text}"));
    (report, stderr(&out))
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cleanslate-bench-wasi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(name: &str, bytes: &[u8]) -> String {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

/// A WASI command that ends with `proc_exit(0)` only when its argv is
/// exactly `prog x -y` and its standard input exactly `hello stdin\n`;
/// otherwise it exits 3 (argv) or 4 (stdin). Standard input is read once,
/// so a call that found it consumed by an earlier one would exit 4.
const CHECK_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "prog\00x\00-y\00")
  (data (i32.const 300) "hello stdin\n")
  ;; whether the `len` bytes at `a` and `b` are equal
  (func $same (param $a i32) (param $b i32) (param $len i32) (result i32)
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $len)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (i32.const 0))
  (func (export "_start")
    (drop (call $args_sizes (i32.const 16) (i32.const 20)))
    (if (i32.ne (i32.load (i32.const 20)) (i32.const 10)) (then (call $exit (i32.const 3))))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (if (i32.eqz (call $same (i32.const 4096) (i32.const 200) (i32.const 10)))
      (then (call $exit (i32.const 3))))
    (i32.store (i32.const 24) (i32.const 32768))
    (i32.store (i32.const 28) (i32.const 16384))
    (drop (call $fd_read (i32.const 0) (i32.const 24) (i32.const 1) (i32.const 40)))
    (if (i32.ne (i32.load (i32.const 40)) (i32.const 12)) (then (call $exit (i32.const 4))))
    (if (i32.eqz (call $same (i32.const 32768) (i32.const 300) (i32.const 12)))
      (then (call $exit (i32.const 4))))
    (call $exit (i32.const 0))))"#;

const ARGV: [&str; 6] = ["--arg", "prog", "--arg", "x", "--arg", "-y"];

fn bench_args<'a>(guest: &'a str, calls: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["bench", guest, "_start", "--calls", calls, "--json"];
    args.extend_from_slice(rest);
    args
}

#[test]
fn bench_arg_and_stdin_reach_every_measured_call() {
    let guest = write("check.wat", CHECK_WAT.as_bytes());
    let input = write("in.txt", b"hello stdin\n");
    let mut rest: Vec<&str> = ARGV.to_vec();
    rest.extend(["--stdin", &input]);

    // proc_exit(0) on every call: each got the argv and stdin.
    let (r, warnings) = bench_json(&bench_args(&guest, "300", &rest), b"");
    assert_eq!(r["calls"], 300, "{r}");
    assert_eq!(r["exit_codes"], serde_json::json!({"0": 300}), "{r}");
    assert_eq!(r["nonzero_exits"], 0, "{r}");
    assert_eq!(r["failed"], 0, "a proc_exit(0) is a completed call: {r}");
    assert_eq!(r["reset"]["paths"]["in_place"], 300, "{r}");
    assert!(r["median_us"].as_f64().unwrap() > 0.0, "{r}");
    assert!(warnings.is_empty(), "{warnings}");

    // `run` with the same flags makes the same call.
    let mut run = vec!["run", &guest, "_start", "_start", "--json"];
    run.extend_from_slice(&rest);
    let out = cleanslate(&run);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["exit_code"], 0, "{record}");
    }

    // `--stdin -`: the command's own standard input, read once, given to
    // every call.
    let mut piped: Vec<&str> = ARGV.to_vec();
    piped.extend(["--stdin", "-"]);
    let (r, _) = bench_json(&bench_args(&guest, "200", &piped), b"hello stdin\n");
    assert_eq!(r["exit_codes"], serde_json::json!({"0": 200}), "{r}");
}

#[test]
fn bench_counts_and_reports_non_zero_exits() {
    let guest = write("check_exits.wat", CHECK_WAT.as_bytes());
    let other = write("other.txt", b"something else\n");

    // Other stdin: every call exits 4, counted and reported on stderr.
    let mut rest: Vec<&str> = ARGV.to_vec();
    rest.extend(["--stdin", &other]);
    let (r, warnings) = bench_json(&bench_args(&guest, "100", &rest), b"");
    assert_eq!(r["exit_codes"], serde_json::json!({"4": 100}), "{r}");
    assert_eq!(r["nonzero_exits"], 100, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(
        warnings.contains("exited with status 4"),
        "the first non-zero exit is reported: {warnings}"
    );

    // No stdin and a different argv: exit 3.
    let (r, _) = bench_json(&bench_args(&guest, "50", &["--arg", "prog"]), b"");
    assert_eq!(r["exit_codes"], serde_json::json!({"3": 50}), "{r}");

    // The table says it too.
    let out = cleanslate(&["bench", &guest, "_start", "--calls", "50", "--arg", "x"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("exits      status 3 ×50"), "{table}");
    assert!(
        table.contains("50 of the calls exited with a non-zero status"),
        "{table}"
    );
}

#[test]
fn bad_stdin_is_one_clear_usage_error() {
    let guest = write("check_usage.wat", CHECK_WAT.as_bytes());
    let missing = scratch().join("no-such-stdin.txt");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["bench", &guest, "_start", "--stdin", "@missing"],
        vec!["bench", &guest, "_start", "--stdin", missing],
        vec!["bench", &guest, "_start", "--stdin", "-", "--input", "-"],
        vec!["bench", &guest, "_start", "--stdin", missing, "--json"],
    ] {
        let out = cleanslate(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let lines: Vec<&str> = err.trim().lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(
            lines[0].contains("--stdin") || lines[0].contains("standard input"),
            "{args:?}: {err}"
        );
        if args.contains(&"--json") {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["ok"], false, "{v}");
            assert_eq!(v["error"]["kind"], "usage", "{v}");
        } else {
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
    // As in `run`, --stdin names a file without `@`; the error says so.
    let out = cleanslate(&["bench", &guest, "_start", "--stdin", "@missing"]);
    let err = stderr(&out);
    assert!(err.contains("cannot read --stdin file @missing"), "{err}");
    assert!(err.contains("without the `@`"), "{err}");
}

/// The C example guest (guests/c/wasi_tool.c) built with clang and
/// wasi-libc, or `None` with a note where they are missing. This crate has
/// no build script to set the `c_toolchain` cfg the library's tests use,
/// so it decides at run time; `CLEANSLATE_EXPECT_C_TOOLCHAIN` (CI) turns a
/// missing toolchain into a failure.
fn c_tool() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let source = repo.join("guests/c/wasi_tool.c");
    let out = scratch().join("wasi_tool.wasm");
    let built = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&source)
        .output();
    let why = match built {
        Ok(output) if output.status.success() => return Some(out),
        Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
        Err(e) => e.to_string(),
    };
    if std::env::var_os("CLEANSLATE_EXPECT_C_TOOLCHAIN").is_some() {
        panic!("building the C guest failed: {why}");
    }
    eprintln!(
        "note: skipping the C guest test: clang + wasi-libc cannot build it here \
         (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32): {why}"
    );
    None
}

#[test]
fn bench_measures_the_c_command_as_run_runs_it() {
    let Some(tool) = c_tool() else { return };
    let tool = tool.to_str().unwrap();
    let input = write("c_in.txt", b"some input\n");
    let echo = [
        "--arg",
        "wasi_tool",
        "--arg",
        "echo",
        "--stdin",
        &input,
        "--env",
        "GREETING=hi",
    ];

    // What `run` prints for this command line...
    let mut run = vec!["run", tool, "_start", "--json"];
    run.extend_from_slice(&echo);
    let out = cleanslate(&run);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        record["stdout"], "SOME INPUT\narg[0]=wasi_tool\narg[1]=echo\ngreeting=hi\n",
        "{record}"
    );
    assert_eq!(record["exit_code"], 0, "{record}");

    // ...`bench` measures: a completed call every time.
    let (r, warnings) = bench_json(&bench_args(tool, "200", &echo), b"");
    assert_eq!(r["exit_codes"], serde_json::json!({"0": 200}), "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(warnings.is_empty(), "{warnings}");

    // argv picks the mode: an unknown one exits 2 on every call.
    let (r, warnings) = bench_json(
        &bench_args(tool, "100", &["--arg", "wasi_tool", "--arg", "nope"]),
        b"",
    );
    assert_eq!(r["exit_codes"], serde_json::json!({"2": 100}), "{r}");
    assert_eq!(r["nonzero_exits"], 100, "{r}");
    assert!(warnings.contains("unknown mode nope"), "{warnings}");

    // --env reaches the program too: proc_exit(7) from main's return.
    let mut seven: Vec<&str> = echo.to_vec();
    seven.extend(["--env", "EXIT_CODE=7"]);
    let (r, _) = bench_json(&bench_args(tool, "100", &seven), b"");
    assert_eq!(r["exit_codes"], serde_json::json!({"7": 100}), "{r}");
}
