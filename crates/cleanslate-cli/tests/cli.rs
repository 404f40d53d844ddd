//! The `cleanslate` command as a user runs it: real processes, real output.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/example.wat");

fn cleanslate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .args(args)
        .output()
        .unwrap()
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn run_json_prints_one_record_per_call_with_the_reset() {
    let out = cleanslate(&[
        "run",
        EXAMPLE,
        "--json",
        "add:2,3",
        "leave_secret:99",
        "read_secret",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = json_lines(&out);
    assert_eq!(records.len(), 3);
    let add = &records[0];
    assert_eq!(add["call"], "add");
    assert_eq!(add["args"], serde_json::json!([2, 3]));
    assert_eq!(add["ok"], true);
    assert_eq!(add["results"], serde_json::json!([5]));
    assert_eq!(add["reset"]["path"], "in_place");
    assert!(add["reset"]["dirty_pages"].is_u64());
    assert!(add["reset"]["micros"].as_f64().unwrap() > 0.0);
    assert_eq!(add["reset"]["verified"], false);
    // The secret written by the second call is gone for the third.
    assert_eq!(records[2]["results"], serde_json::json!([0]));
}

#[test]
fn failures_are_records_and_later_calls_still_run() {
    let out = cleanslate(&[
        "run",
        EXAMPLE,
        "--json",
        "--memory-limit",
        "1MiB",
        "--verify",
        "always",
        "trap_divide_by_zero:7",
        "out_of_memory:7",
        "nope",
        "add:1",
        "add:x,2",
        "read_secret",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let r = json_lines(&out);
    assert_eq!(r.len(), 6);
    assert_eq!(r[0]["ok"], false);
    assert_eq!(r[0]["error"]["kind"], "trap");
    assert_eq!(r[0]["error"]["trap"], "integer_divide_by_zero");
    assert_eq!(r[0]["reset"]["verified"], true);
    assert_eq!(r[1]["error"]["kind"], "out_of_memory");
    assert_eq!(r[2]["error"]["kind"], "function_not_found");
    assert_eq!(
        r[2]["reset"]["path"], "none",
        "nothing ran, nothing to reset"
    );
    assert_eq!(r[3]["error"]["kind"], "invalid_arguments");
    assert!(
        r[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(i32, i32) -> i32")
    );
    assert_eq!(r[4]["error"]["kind"], "invalid_arguments");
    assert_eq!(r[4]["args"], serde_json::json!(["x", "2"]));
    assert_eq!(r[5]["ok"], true);
    assert_eq!(r[5]["results"], serde_json::json!([0]));
}

#[test]
fn limits_from_flags_produce_the_right_kinds() {
    let out = cleanslate(&[
        "run",
        EXAMPLE,
        "--json",
        "--timeout",
        "50ms",
        "--stack-limit",
        "128KiB",
        "spin:1",
        "stack_overflow:1",
        "call_host:1,1",
        "call_host:1,2",
    ]);
    let kinds: Vec<Value> = json_lines(&out)
        .iter()
        .map(|r| r["error"]["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        ["timeout", "stack_overflow", "host_error", "host_panic"]
    );
    let out = cleanslate(&["run", EXAMPLE, "--json", "--fuel", "10000", "spin:1"]);
    assert_eq!(json_lines(&out)[0]["error"]["kind"], "out_of_fuel");
}

#[test]
fn calls_can_come_from_a_file_or_standard_input() {
    let dir = std::env::temp_dir().join(format!("cleanslate-cli-calls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("calls.txt");
    std::fs::write(&file, "# a comment\nadd:1,2\n\nadd:3,4\n").unwrap();
    let out = cleanslate(&["run", EXAMPLE, "--json", "--calls", file.to_str().unwrap()]);
    let results: Vec<Value> = json_lines(&out)
        .iter()
        .map(|r| r["results"][0].clone())
        .collect();
    assert_eq!(results, [3, 7]);

    let mut child = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .args(["run", EXAMPLE, "--json", "add:0,1", "--calls", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"add:5,5\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let results: Vec<Value> = json_lines(&out)
        .iter()
        .map(|r| r["results"][0].clone())
        .collect();
    assert_eq!(results, [1, 10]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn text_output_is_one_readable_line_per_call() {
    let out = cleanslate(&["run", EXAMPLE, "add:2,3", "trap_unreachable:1"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("add(2, 3) = 5"), "{text}");
    assert!(lines[0].contains("reset: in_place"), "{text}");
    assert!(lines[1].contains("failed [trap]"), "{text}");
}

#[test]
fn bad_usage_exits_2_with_one_clear_line() {
    let cases: &[&[&str]] = &[
        &["run", "/no/such/file.wasm", "f"],
        &["run", EXAMPLE],
        &["run", EXAMPLE, "--memory-limit", "lots", "add:1,2"],
        &["run", EXAMPLE, "--timeout", "5", "add:1,2"],
        &["run", EXAMPLE, "--verify", "sometimes", "add:1,2"],
        &["run", EXAMPLE, "--fuel", "0", "add:1,2"],
        &["run", EXAMPLE, "--init", "missing", "add:1,2"],
        &["run", EXAMPLE, "--calls", "/no/such/calls.txt"],
        &["bogus-verb"],
    ];
    for args in cases {
        let out = cleanslate(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?} printed no reason");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn an_invalid_module_is_exit_2_with_the_parser_message() {
    let dir = std::env::temp_dir().join(format!("cleanslate-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.wat");
    std::fs::write(&bad, "(module (func (result i32)))").unwrap();
    let out = cleanslate(&["run", bad.to_str().unwrap(), "f"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("type mismatch"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_walks_every_exit_path_and_finds_no_trace() {
    let out = cleanslate(&["demo"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    for kind in [
        "[trap]",
        "[stack_overflow]",
        "[out_of_memory]",
        "[timeout]",
        "[out_of_fuel]",
        "[cancelled]",
        "[host_error]",
        "[host_panic]",
    ] {
        assert!(text.contains(kind), "demo lacks {kind}");
    }
    assert!(!text.contains("LEAKED"), "{text}");
    assert!(text.contains("left no trace"), "{text}");
    // The default secret really grows memory and drops segments: those
    // resets take the fresh-instance path, and the control (no reset, in a
    // session) shows that every check can see what it looks for.
    assert!(text.contains("fresh_instance"), "{text}");
    let control = text
        .lines()
        .find(|l| l.trim_start().starts_with("seen"))
        .expect("a control line");
    for what in [
        "memory: visible",
        "global: visible",
        "table slot: visible",
        "grown page: visible",
        "table size: visible",
        "dropped segment: visible",
    ] {
        assert!(control.contains(what), "{control}");
    }
    assert!(text.contains("grown page: clean"), "{text}");
    assert!(text.contains("dropped segment: clean"), "{text}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn demo_takes_the_secret_in_the_hex_it_prints() {
    for secret in ["0x5EC2E7", "6210279"] {
        let out = cleanslate(&["demo", "--secret", secret]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{secret}: {text}");
        assert!(text.contains("0x5ec2e7"), "{text}");
        // Bit 30 clear: only memory, global and table slot are checked.
        assert!(!text.contains("grown page"), "{text}");
    }
}

#[test]
fn the_reset_object_names_the_path_and_why_it_fell_back() {
    // 1073741825 has bit 30 set: the guest also grows memory.
    let out = cleanslate(&[
        "run",
        EXAMPLE,
        "--json",
        "leave_secret:5",
        "leave_secret:1073741825",
    ]);
    let r = json_lines(&out);
    assert_eq!(r[0]["reset"]["path"], "in_place");
    assert_eq!(r[0]["reset"]["dirty_pages"], 1);
    assert!(r[0]["reset"].get("reason").is_none());
    // Memory growth is undone in place; the grown table is not.
    assert_eq!(r[1]["reset"]["path"], "fresh_instance");
    assert_eq!(r[1]["reset"]["reason"], "table_resized");

    let out = cleanslate(&[
        "run",
        EXAMPLE,
        "--json",
        "--reset",
        "fresh_instance",
        "add:1,2",
    ]);
    let r = json_lines(&out);
    assert_eq!(r[0]["reset"]["path"], "fresh_instance");
    assert_eq!(r[0]["reset"]["reason"], "requested");
}

#[test]
fn bench_json_is_one_line_with_the_contracted_fields() {
    let out = cleanslate(&[
        "bench",
        EXAMPLE,
        "leave_secret:5",
        "--calls",
        "300",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_lines(&out);
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!(r["calls"], 300);
    for field in ["median_us", "p90_us", "p99_us"] {
        assert!(r[field].as_f64().unwrap() > 0.0, "{field}: {r}");
    }
    assert!(r["median_us"].as_f64() <= r["p99_us"].as_f64());
    assert!(r["reset"]["median_us"].as_f64().unwrap() > 0.0);
    assert_eq!(
        r["reset"]["median_dirty_pages"], 1,
        "the call writes one page"
    );
    assert_eq!(r["reset"]["paths"]["in_place"], 300);
    assert_eq!(r["reset"]["paths"]["fresh_instance"], 0);

    let out = cleanslate(&["bench", EXAMPLE, "nope"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown function is a usage error"
    );
}

/// A data-ABI guest (docs/ABI.md): `upper` upper-cases its input; `raw`
/// returns two bytes that are not UTF-8; `complain` reports an error; and
/// `hello` writes to stdout through WASI.
const DATA_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 64) "\ff\fe")
  (data (i32.const 80) "hello from wasi\n")
  (data (i32.const 112) "no thanks")
  (func $alloc (export "cleanslate_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (local.get $ptr))
  (func $record (param $status i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 16) (local.get $status))
    (i32.store (i32.const 20) (local.get $ptr))
    (i32.store (i32.const 24) (local.get $len))
    (i32.const 16))
  (func (export "upper") (param $ptr i32) (param $len i32) (result i32)
    (local $i i32) (local $c i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (local.set $c (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
        (then (i32.store8 (i32.add (local.get $ptr) (local.get $i)) (i32.sub (local.get $c) (i32.const 32)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $record (i32.const 0) (local.get $ptr) (local.get $len)))
  (func (export "raw") (param i32 i32) (result i32)
    (call $record (i32.const 0) (i32.const 64) (i32.const 2)))
  (func (export "complain") (param i32 i32) (result i32)
    (call $record (i32.const 1) (i32.const 112) (i32.const 9)))
  (func (export "hello") (param i32 i32) (result i32)
    (i32.store (i32.const 0) (i32.const 80))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $record (i32.const 0) (i32.const 0) (i32.const 0))))"#;

/// The data guest as a file, written once per test process: tests run in
/// parallel, and rewriting it while another test's command reads it gave
/// that command an empty file.
fn data_guest() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cleanslate-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data.wat");
        std::fs::write(&path, DATA_WAT).unwrap();
        path
    })
    .clone()
}

#[test]
fn run_input_passes_bytes_from_text_file_and_stdin() {
    let guest = data_guest();
    let guest = guest.to_str().unwrap();
    let out = cleanslate(&["run", guest, "upper", "--input", "hello"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("upper() = HELLO  (reset: "), "{text}");

    let file = std::env::temp_dir().join(format!("cleanslate-input-{}.txt", std::process::id()));
    std::fs::write(&file, "from a file").unwrap();
    let at_file = format!("@{}", file.display());
    let out = cleanslate(&["run", guest, "upper", "--input", &at_file, "--json"]);
    assert_eq!(json_lines(&out)[0]["output"], "FROM A FILE");

    let mut child = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .args(["run", guest, "upper", "upper", "--input", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped in").unwrap();
    let out = child.wait_with_output().unwrap();
    let records = json_lines(&out);
    assert_eq!(records.len(), 2);
    for record in records {
        assert_eq!(
            record["output"], "PIPED IN",
            "each call gets the same input"
        );
        assert!(record.get("output_encoding").is_none());
    }
}

#[test]
fn run_json_gives_non_utf8_output_as_base64_and_guest_errors_typed() {
    let guest = data_guest();
    let guest = guest.to_str().unwrap();
    let out = cleanslate(&["run", guest, "raw", "complain", "--json"]);
    assert_eq!(out.status.code(), Some(1), "a call failed");
    let records = json_lines(&out);
    assert_eq!(records[0]["output"], "//4=");
    assert_eq!(records[0]["output_encoding"], "base64");
    assert_eq!(records[1]["ok"], false);
    assert_eq!(records[1]["error"]["kind"], "guest_error");
    assert!(
        records[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no thanks")
    );
}

#[test]
fn run_json_carries_wasi_stdout_per_call() {
    let guest = data_guest();
    let out = cleanslate(&["run", guest.to_str().unwrap(), "hello", "upper", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = json_lines(&out);
    assert_eq!(records[0]["stdout"], "hello from wasi\n");
    assert!(
        records[1].get("stdout").is_none(),
        "call 1's stdout leaked into call 2"
    );
    // Without --json the guest's stdout is printed as it is.
    let out = cleanslate(&["run", guest.to_str().unwrap(), "hello"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("hello from wasi\nhello() = "), "{text}");
}

#[test]
fn run_input_misuse_is_one_clear_line() {
    let guest = data_guest();
    let guest = guest.to_str().unwrap();
    for (args, says) in [
        (
            vec!["run", guest, "upper", "--input", "@/no/such/file"],
            "/no/such/file",
        ),
        (
            vec!["run", guest, "--calls", "-", "--input", "-"],
            "standard input",
        ),
        (
            vec!["run", guest, "upper", "--env", "NOEQUALS"],
            "KEY=VALUE",
        ),
    ] {
        let out = cleanslate(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // ARGs and --input together fail that call, typed.
    let out = cleanslate(&["run", guest, "upper:1,2", "--input", "x", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_lines(&out)[0]["error"]["kind"], "invalid_arguments");
}

#[test]
fn inspect_lists_the_example_guests_state_and_reset_paths() {
    let out = cleanslate(&["inspect", EXAMPLE, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = &json_lines(&out)[0];
    assert_eq!(report["imports"][0]["name"], "host_op");
    assert_eq!(report["imports"][0]["signature"], "(i32) -> i32");
    let add = report["exports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "add")
        .unwrap();
    assert_eq!(add["signature"], "(i32, i32) -> i32");
    assert_eq!(add["data_abi"], false);
    assert_eq!(report["memories"][0]["initial_bytes"], 65536);
    assert_eq!(report["tables"][0]["initial_elements"], 4);
    assert_eq!(report["globals"].as_array().unwrap().len(), 3);
    let reasons: Vec<&str> = report["reset"]["fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["table_resized", "segment_dropped"]);
    if std::env::var_os("CLEANSLATE_EXPECT_TRACKING").is_some() {
        assert_eq!(report["reset"]["default_path"], "in_place");
    }
    // This machine's answer, as the library gives it, in JSON and text.
    let resets = cleanslate::Runtime::new().unwrap().in_place_resets();
    let machine = &report["reset"]["machine"];
    assert_eq!(machine["in_place_available"], resets.available());
    assert_eq!(machine["reason"], resets.reason());
    assert_eq!(
        report["reset"]["default_path"] == "in_place",
        resets.available(),
        "the example guest's default path is the machine's"
    );
    let out = cleanslate(&["inspect", EXAMPLE]);
    let text = String::from_utf8(out.stdout).unwrap();
    let verdict = if resets.available() {
        "in-place resets available"
    } else {
        "in-place resets UNAVAILABLE"
    };
    assert!(
        text.contains(&format!("  this machine: {verdict}: {}\n", resets.reason())),
        "{text}"
    );

    // The data guest: its bytes functions are marked, WASI is noted.
    let guest = data_guest();
    let out = cleanslate(&["inspect", guest.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("upper: (i32, i32) -> i32  [bytes/JSON: --input]"),
        "{text}"
    );
    assert!(
        text.contains("wasi: imports wasi_snapshot_preview1"),
        "{text}"
    );
    // A module that does not load is exit 2 with one line.
    let out = cleanslate(&["inspect", "/no/such.wasm"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn inspect_reports_proposals_and_the_compiled_module_cache() {
    let dir = std::env::temp_dir().join(format!("cleanslate-cli-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().unwrap();
    let status = |extra: &[&str]| {
        let mut args = vec!["inspect", EXAMPLE, "--json"];
        args.extend_from_slice(extra);
        let out = cleanslate(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out)[0].clone()
    };
    let first = status(&["--cache-dir", dir_arg]);
    assert_eq!(first["compiled_module_cache"], "miss");
    assert_eq!(
        first["proposals"],
        serde_json::json!(["bulk-memory", "reference-types"])
    );
    assert_eq!(
        status(&["--cache-dir", dir_arg])["compiled_module_cache"],
        "hit"
    );
    assert_eq!(status(&["--no-cache"])["compiled_module_cache"], "off");
    let both = cleanslate(&["inspect", EXAMPLE, "--no-cache", "--cache-dir", dir_arg]);
    assert_eq!(both.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A guest with its own ABI: one import the CLI does not provide.
const HOST_CALL_WAT: &str = r#"(module
  (import "host" "call" (func $call (param i32 i32 i32 i32) (result i32)))
  (func (export "go") (result i32)
    (call $call (i32.const 1) (i32.const 2) (i32.const 3) (i32.const 4))))"#;

/// `wat` as a file named `name` in this test process's directory.
fn guest_file(name: &str, wat: &str) -> String {
    let dir = std::env::temp_dir().join(format!("cleanslate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, wat).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn stub_returns_its_value_from_the_import() {
    let guest = guest_file("host_call_value.wat", HOST_CALL_WAT);
    let out = cleanslate(&["run", &guest, "go", "--stub", "host.call=-1", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = json_lines(&out);
    assert_eq!(records[0]["ok"], true);
    assert_eq!(records[0]["results"], serde_json::json!([-1]));
    let out = cleanslate(&["run", &guest, "go", "--stub", "host.call=41"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("go() = 41  (reset: "), "{text}");
}

#[test]
fn stub_trap_fails_the_call_and_later_calls_still_run() {
    let guest = guest_file("host_call_trap.wat", HOST_CALL_WAT);
    let out = cleanslate(&[
        "run",
        &guest,
        "go",
        "go",
        "--stub",
        "host.call=trap",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "the calls failed");
    let records = json_lines(&out);
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(record["ok"], false);
        assert_eq!(record["error"]["kind"], "host_error");
        assert!(
            record["error"]["message"]
                .as_str()
                .unwrap()
                .contains("host.call"),
            "{record}"
        );
    }
}

#[test]
fn a_missing_import_names_the_stub_flag() {
    let guest = guest_file("host_call_missing.wat", HOST_CALL_WAT);
    let out = cleanslate(&["run", &guest, "go"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("host.call"), "{stderr}");
    assert!(stderr.contains("--stub MODULE.NAME=VALUE"), "{stderr}");
    assert!(!stderr.contains("host_fn"), "library advice: {stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn inspect_marks_imports_nothing_provides() {
    let guest = guest_file("host_call_inspect.wat", HOST_CALL_WAT);
    let out = cleanslate(&["inspect", &guest]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "host.call: (i32, i32, i32, i32) -> i32  [unresolved: --stub MODULE.NAME=VALUE]"
        ) || text.lines().any(
            |l| l.contains("host.call") && l.contains("[unresolved: --stub MODULE.NAME=VALUE]")
        ),
        "{text}"
    );
    let out = cleanslate(&["inspect", &guest, "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["imports"][0]["unresolved"], true);
    assert_eq!(report["imports"][0]["provided_by"], Value::Null);

    let out = cleanslate(&["inspect", &guest, "--json", "--stub", "host.call=0"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["imports"][0]["unresolved"], false);
    assert_eq!(report["imports"][0]["provided_by"], "stub");
    let out = cleanslate(&["inspect", &guest, "--stub", "host.call=0"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("unresolved"), "{text}");
    assert!(text.contains("[stub]"), "{text}");

    // The example guest's host_op is the CLI's own.
    let out = cleanslate(&["inspect", EXAMPLE, "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for import in report["imports"].as_array().unwrap() {
        assert_eq!(import["unresolved"], false, "{import}");
    }
}

#[test]
fn json_usage_and_load_errors_are_one_object_on_stdout() {
    let guest = guest_file("host_call_json_errors.wat", HOST_CALL_WAT);
    let object = |out: &Output| -> Value {
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
        let lines = json_lines(out);
        assert_eq!(lines.len(), 1, "one object");
        assert_eq!(lines[0]["ok"], false);
        lines[0]["error"].clone()
    };
    let error = object(&cleanslate(&["run", &guest, "go", "--json"]));
    assert_eq!(error["kind"], "missing_import");
    assert!(error["message"].as_str().unwrap().contains("--stub"));

    let error = object(&cleanslate(&[
        "run",
        &guest,
        "go",
        "--json",
        "--stub",
        "host.nope=1",
    ]));
    assert_eq!(error["kind"], "usage");
    assert!(error["message"].as_str().unwrap().contains("host.nope"));

    let error = object(&cleanslate(&[
        "run",
        &guest,
        "go",
        "--json",
        "--timeout",
        "soon",
    ]));
    assert_eq!(error["kind"], "usage");

    let bad = guest_file("not_a_module.wat", "(module (func");
    let error = object(&cleanslate(&["run", &bad, "go", "--json"]));
    assert_eq!(error["kind"], "invalid_module");

    let error = object(&cleanslate(&["inspect", &bad, "--json"]));
    assert_eq!(error["kind"], "invalid_module");

    // Without --json, stdout stays empty.
    let out = cleanslate(&["run", &bad, "go"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

/// A WASI command that writes `ARGV |ENV |STDIN` to stdout (NULs between
/// strings become spaces).
const ECHO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "|")
  (func $put (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12))))
  (func $spaces (param $ptr i32) (param $len i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (if (i32.eqz (i32.load8_u (local.get $ptr)))
          (then (i32.store8 (local.get $ptr) (i32.const 32))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next))))
  (func (export "_start")
    (drop (call $args_sizes (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (call $spaces (i32.const 4096) (i32.load (i32.const 20)))
    (call $put (i32.const 4096) (i32.load (i32.const 20)))
    (call $put (i32.const 100) (i32.const 1))
    (drop (call $env_sizes (i32.const 16) (i32.const 20)))
    (drop (call $env_get (i32.const 2048) (i32.const 16384)))
    (call $spaces (i32.const 16384) (i32.load (i32.const 20)))
    (call $put (i32.const 16384) (i32.load (i32.const 20)))
    (call $put (i32.const 100) (i32.const 1))
    (i32.store (i32.const 24) (i32.const 32768))
    (i32.store (i32.const 28) (i32.const 16384))
    (drop (call $fd_read (i32.const 0) (i32.const 24) (i32.const 1) (i32.const 40)))
    (call $put (i32.const 32768) (i32.load (i32.const 40)))))"#;

#[test]
fn calls_file_json_lines_carry_per_call_argv_stdin_and_env() {
    let guest = guest_file("echo.wat", ECHO_WAT);
    let calls = guest_file(
        "echo_calls.txt",
        r#"_start
{"call":"_start","argv":["tool","-v"],"stdin":"piped in","env":{"X":"y"}}
_start
{"call":"_start","argv":["other"],"bogus":1}
{"call":"_start","argv":"not a list"}
{"call":"_start","env":{"X":1}}
{"argv":["no call"]}
{"call":"_start","stdin":"second"}
_start
"#,
    );
    let out = cleanslate(&[
        "run", &guest, "--calls", &calls, "--arg", "prog", "--env", "BASE=1", "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "some calls are invalid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = json_lines(&out);
    assert_eq!(records.len(), 9, "{records:?}");
    let plain = "prog |BASE=1 |";
    assert_eq!(records[0]["stdout"], plain, "{}", records[0]);
    let second = records[1]["stdout"].as_str().unwrap();
    assert!(second.starts_with("tool -v |"), "{second}");
    assert!(
        second.contains("BASE=1 ") && second.contains("X=y "),
        "{second}"
    );
    assert!(second.ends_with("|piped in"), "{second}");
    assert_eq!(records[1]["call"], "_start");
    assert_eq!(
        records[2]["stdout"], plain,
        "call 2's argv, env or stdin leaked into call 3"
    );
    for record in &records[3..7] {
        assert_eq!(record["ok"], false, "{record}");
        assert_eq!(record["error"]["kind"], "invalid_arguments", "{record}");
        assert_eq!(record["reset"]["path"], "none", "{record}");
    }
    assert_eq!(records[3]["call"], "_start");
    assert_eq!(records[7]["stdout"], "prog |BASE=1 |second");
    assert_eq!(records[8]["stdout"], plain);
}

#[test]
fn calls_file_json_lines_take_args_and_input() {
    let calls = guest_file(
        "value_calls.txt",
        "{\"call\":\"add\",\"args\":[2,3]}\nadd:4,5\n{\"call\":\"add\",\"args\":[\"7\",1]}\n{\"call\":\"add\",\"args\":[[1],2]}\n",
    );
    let out = cleanslate(&["run", EXAMPLE, "--calls", &calls, "--json"]);
    let records = json_lines(&out);
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["results"], serde_json::json!([5]));
    assert_eq!(records[0]["args"], serde_json::json!([2, 3]));
    assert_eq!(records[1]["results"], serde_json::json!([9]));
    assert_eq!(records[2]["results"], serde_json::json!([8]));
    assert_eq!(records[3]["error"]["kind"], "invalid_arguments");

    let guest = data_guest();
    let calls = guest_file(
        "input_calls.txt",
        "{\"call\":\"upper\",\"input\":\"per call\"}\nupper\n",
    );
    let out = cleanslate(&[
        "run",
        guest.to_str().unwrap(),
        "--calls",
        &calls,
        "--input",
        "shared",
        "--json",
    ]);
    let records = json_lines(&out);
    assert_eq!(records[0]["output"], "PER CALL");
    assert_eq!(records[1]["output"], "SHARED");
}

#[test]
fn a_saved_snapshot_is_the_clean_slate_of_a_later_run() {
    let dir = std::env::temp_dir().join(format!("cleanslate-snap-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("counter.wat");
    std::fs::write(
        &module,
        r#"(module (memory 1) (global $n (mut i32) (i32.const 0))
          (func (export "setup") (global.set $n (i32.const 40)) (i32.store (i32.const 8) (i32.const 2)))
          (func (export "get") (result i32) (i32.add (global.get $n) (i32.load (i32.const 8))))
          (func (export "bump") (result i32)
            (global.set $n (i32.add (global.get $n) (i32.const 1))) (i32.store (i32.const 8) (i32.const 0))
            (global.get $n)))"#,
    )
    .unwrap();
    let module = module.to_str().unwrap();
    let snapshot = dir.join("setup.snapshot");
    let snapshot = snapshot.to_str().unwrap();
    // Saving needs no call.
    let out = cleanslate(&[
        "run",
        module,
        "--init",
        "setup",
        "--save-snapshot",
        snapshot,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the snapshot the state is the module's; with it, the setup's,
    // and every call starts from it.
    let plain = json_lines(&cleanslate(&["run", module, "--json", "get"]));
    assert_eq!(plain[0]["results"], serde_json::json!([0]));
    let out = cleanslate(&[
        "run",
        module,
        "--snapshot",
        snapshot,
        "--json",
        "get",
        "bump",
        "get",
    ]);
    let records = json_lines(&out);
    let results: Vec<&Value> = records.iter().map(|r| &r["results"]).collect();
    assert_eq!(
        results,
        [
            &serde_json::json!([42]),
            &serde_json::json!([41]),
            &serde_json::json!([42])
        ]
    );

    // Another module, or a damaged file: exit 2, one line naming the kind.
    let other = dir.join("other.wat");
    std::fs::write(
        &other,
        r#"(module (func (export "get") (result i32) (i32.const 1)))"#,
    )
    .unwrap();
    let mut damaged = std::fs::read(snapshot).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(dir.join("damaged"), damaged).unwrap();
    for (module, file) in [
        (other.to_str().unwrap(), snapshot),
        (module, dir.join("damaged").to_str().unwrap()),
        (module, dir.join("missing").to_str().unwrap()),
    ] {
        let out = cleanslate(&["run", module, "--snapshot", file, "get"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("cannot load the snapshot"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
