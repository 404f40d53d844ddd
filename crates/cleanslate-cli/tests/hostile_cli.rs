//! Malformed command lines — bad sizes and durations, absurd numbers,
//! non-UTF-8 arguments, missing or unreadable files, broken call specs —
//! on every subcommand: each exits 2 with one clear line on stderr and
//! nothing on stdout; none panics or hangs.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/example.wat");

/// Run the command with a deadline, so a hang fails instead of blocking.
fn cleanslate(args: &[OsString]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .args(args)
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("cleanslate-hostile-cli-cache"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn assert_usage_error(args: &[OsString]) {
    let out = cleanslate(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    assert!(lines[0].len() > 10, "{args:?}: no reason given: {stderr}");
}

/// The limit flags every sandbox-building subcommand shares, with values
/// that must each be refused.
fn bad_limits() -> Vec<(&'static str, &'static str)> {
    vec![
        ("--memory-limit", "lots"),
        ("--memory-limit", ""),
        ("--memory-limit", "-1"),
        ("--memory-limit", "1.5.3MiB"),
        ("--memory-limit", "12XB"),
        ("--memory-limit", "99999999999999999999999"),
        ("--memory-limit", "18446744073709551615GiB"),
        ("--stack-limit", "1TiB"),
        ("--stack-limit", "0"),
        ("--output-limit", "0x10"),
        ("--timeout", "5"),
        ("--timeout", "-1s"),
        ("--timeout", "forever"),
        ("--timeout", "1e99s"),
        ("--timeout", "999999999999999999999999h"),
        ("--timeout", "0ms"),
        ("--fuel", "0"),
        ("--fuel", "-5"),
        ("--fuel", "18446744073709551616"),
        ("--verify", "sampled:0"),
        ("--verify", "sampled:x"),
        ("--reset", "sometimes"),
        ("--env", "NOEQUALS"),
        ("--init", "no_such_export"),
    ]
}

#[test]
fn bad_limits_are_refused_by_every_subcommand_that_builds_a_sandbox() {
    for (flag, value) in bad_limits() {
        for command in [
            vec!["run", EXAMPLE, flag, value, "add:1,2"],
            vec!["bench", EXAMPLE, "add", "--calls", "10", flag, value],
            vec!["serve", EXAMPLE, "--listen", "127.0.0.1:0", flag, value],
        ] {
            assert_usage_error(&os(&command));
        }
    }
}

#[test]
fn missing_unreadable_and_non_module_files_are_refused() {
    let dir = std::env::temp_dir().join(format!("cleanslate-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.wasm");
    std::fs::write(&empty, b"").unwrap();
    let noise = dir.join("noise.wasm");
    std::fs::write(&noise, [0u8, 0x61, 0x73, 0x6d, 9, 9, 9, 9, 1, 2, 3]).unwrap();
    let dir_str = dir.to_str().unwrap();
    for module in [
        "/no/such/file.wasm",
        dir_str,
        empty.to_str().unwrap(),
        noise.to_str().unwrap(),
    ] {
        assert_usage_error(&os(&["run", module, "f"]));
        assert_usage_error(&os(&["inspect", module]));
        assert_usage_error(&os(&["bench", module, "f", "--calls", "10"]));
        assert_usage_error(&os(&["serve", module, "--listen", "127.0.0.1:0"]));
    }
    assert_usage_error(&os(&["run", EXAMPLE, "--calls", "/no/such/calls.txt"]));
    assert_usage_error(&os(&[
        "run",
        EXAMPLE,
        "--input",
        "@/no/such/input",
        "add:1,2",
    ]));
    assert_usage_error(&os(&[
        "run",
        EXAMPLE,
        "--stdin",
        "/no/such/stdin",
        "add:1,2",
    ]));
    assert_usage_error(&os(&["run", EXAMPLE, "--dir", "/no/such/dir", "add:1,2"]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_utf8_arguments_are_refused_without_a_panic() {
    let bad = || OsString::from_vec(vec![b'a', 0xff, 0xfe, b'z']);
    let example = || OsString::from(EXAMPLE);
    let cases: Vec<Vec<OsString>> = vec![
        vec!["run".into(), bad(), "f".into()],
        vec!["run".into(), example(), bad()],
        vec![
            "run".into(),
            example(),
            "--timeout".into(),
            bad(),
            "add:1,2".into(),
        ],
        vec![
            "run".into(),
            example(),
            "--memory-limit".into(),
            bad(),
            "add:1,2".into(),
        ],
        vec!["inspect".into(), bad()],
        vec!["bench".into(), example(), bad()],
        vec!["serve".into(), example(), "--listen".into(), bad()],
        vec![bad()],
    ];
    for args in cases {
        assert_usage_error(&args);
    }
}

#[test]
fn a_broken_call_spec_fails_that_call_with_a_typed_error_and_runs_nothing() {
    // Calls are data, not usage: like a call that traps, a call that cannot
    // be made is reported as that call's result (exit 1), and the other
    // calls of the batch still run.
    for spec in [
        "add:1,,2",
        "add:one,2",
        "add:1,2,3",
        ":",
        "add:99999999999",
        "add:1.5,2",
        "add:",
    ] {
        let out = cleanslate(&os(&["run", EXAMPLE, spec, "add:2,3"]));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{spec}: {stdout}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{spec}: {stdout}");
        assert!(
            lines[0].contains("[invalid_arguments]") || lines[0].contains("[function_not_found]"),
            "{spec}: {stdout}"
        );
        assert!(lines[0].contains("nothing ran"), "{spec}: {stdout}");
        assert!(lines[1].starts_with("add(2, 3) = 5"), "{spec}: {stdout}");
    }
}

#[test]
fn broken_server_and_bench_settings_are_refused() {
    for (flag, value) in [
        ("--pool", "0"),
        ("--pool", "-1"),
        ("--pool", "100000000"),
        ("--listen", "not-an-address"),
        ("--listen", "127.0.0.1:99999"),
        ("--pool-wait", "soon"),
        ("--max-body", "huge"),
        ("--request-timeout", "0s"),
        ("--max-concurrency", "0"),
        ("--max-concurrency", "2305843009213693952"),
    ] {
        assert_usage_error(&os(&[
            "serve",
            EXAMPLE,
            "--listen",
            "127.0.0.1:0",
            flag,
            value,
        ]));
    }
    for calls in ["0", "-1", "many", "99999999999999999999"] {
        assert_usage_error(&os(&["bench", EXAMPLE, "add", "--calls", calls]));
    }
    assert_usage_error(&os(&[
        "bench",
        EXAMPLE,
        "no_such_function",
        "--calls",
        "10",
    ]));
}

#[test]
fn an_over_long_calls_line_is_a_usage_error_not_a_memory_hog() {
    let dir = std::env::temp_dir().join(format!("cleanslate-long-line-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("calls.txt");
    // One line of NUL bytes twice the accepted length, after a good call.
    let mut text = b"add:1,2\n".to_vec();
    text.extend(std::iter::repeat_n(0u8, 2 << 20));
    std::fs::write(&file, &text).unwrap();
    let mut args = os(&["run", EXAMPLE, "--calls"]);
    args.push(file.into_os_string());
    let out = cleanslate(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains("longer than"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // The good call before it ran.
    assert!(String::from_utf8_lossy(&out.stdout).contains("add(1, 2)"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn endless_inputs_are_refused_within_a_bound() {
    for args in [
        os(&["run", EXAMPLE, "--calls", "/dev/zero"]),
        os(&["run", EXAMPLE, "add:1,2", "--input", "@/dev/zero"]),
        os(&["run", EXAMPLE, "add:1,2", "--stdin", "/dev/zero"]),
    ] {
        assert_usage_error(&args);
    }
}

#[test]
fn malformed_or_mismatched_stubs_are_usage_errors() {
    let dir = std::env::temp_dir().join(format!("cleanslate-hostile-stub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let guest = dir.join("host_call.wat");
    std::fs::write(
        &guest,
        r#"(module
  (import "host" "call" (func $call (param i32 i32 i32 i32) (result i32)))
  (import "host" "wide" (func $wide (result i64)))
  (import "host" "float" (func $float (result f32)))
  (func (export "go") (result i32)
    (call $call (i32.const 1) (i32.const 2) (i32.const 3) (i32.const 4))))"#,
    )
    .unwrap();
    let guest = guest.to_str().unwrap();
    let fine = ["--stub", "host.wide=1", "--stub", "host.float=0.5"];
    for verb in ["run", "inspect"] {
        for stub in [
            "host.call",             // no VALUE
            "hostcall=1",            // no MODULE.NAME
            "host.call=",            // empty VALUE
            "host.nothing=1",        // names no import
            "other.call=1",          // names no import
            "host.call=1.5",         // not an i32
            "host.call=99999999999", // does not fit an i32
            "host.call=abc",
            "host.float=nope", // not a float
        ] {
            let mut args = vec![verb, guest];
            if verb == "run" {
                args.push("go");
            }
            args.extend(["--stub", stub]);
            if !stub.starts_with("host.wide") && !stub.starts_with("host.float") {
                args.extend(fine);
            } else {
                args.extend(["--stub", "host.wide=1", "--stub", "host.call=0"]);
            }
            let out = cleanslate(&os(&args));
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
    // The same stubs, well formed, run.
    let out = cleanslate(&os(&[
        "run",
        guest,
        "go",
        "--stub",
        "host.call=7",
        "--stub",
        "host.wide=-9000000000",
        "--stub",
        "host.float=0.5",
    ]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Twice the same import, or one the CLI provides.
    let out = cleanslate(&os(&[
        "run",
        EXAMPLE,
        "add:1,2",
        "--stub",
        "cleanslate_demo.host_op=1",
    ]));
    assert_eq!(out.status.code(), Some(2));
    let out = cleanslate(&os(&[
        "run",
        guest,
        "go",
        "--stub",
        "host.call=7",
        "--stub",
        "host.call=8",
        "--stub",
        "host.wide=1",
        "--stub",
        "host.float=0.5",
    ]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn hundreds_of_unprovided_imports_are_one_bounded_line() {
    let dir =
        std::env::temp_dir().join(format!("cleanslate-hostile-imports-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let guest = dir.join("many_imports.wat");
    let imports: String = (0..500)
        .map(|i| format!("(import \"env\" \"f{i}\" (func))\n"))
        .collect();
    std::fs::write(&guest, format!("(module {imports} (func (export \"go\")))")).unwrap();
    let out = cleanslate(&os(&["run", guest.to_str().unwrap(), "go"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.len() < 1000, "{} bytes", stderr.len());
    assert!(stderr.contains("500 function(s)"), "{stderr}");
    assert!(stderr.contains("and 492 more"), "{stderr}");
    assert!(stderr.contains("--stub MODULE.NAME=VALUE"), "{stderr}");
}
