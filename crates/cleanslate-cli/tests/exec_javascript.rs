//! `cleanslate exec javascript` and `cleanslate serve --exec javascript`
//! with the built-in QuickJS guest (skipped with a note where this build
//! has none, unless CLEANSLATE_EXPECT_C_TOOLCHAIN is set, as in CI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::{javascript_guest_built, repo};

fn cleanslate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cleanslate"));
    command
        .args(["exec", "javascript", "--cache-dir"])
        .arg(repo().join("target/js-guest-module-cache"));
    command
}

#[test]
fn exec_javascript_runs_each_code_from_the_setup_and_prints_json() {
    if !javascript_guest_built() {
        return;
    }
    let output = cleanslate()
        .args([
            "--json",
            "--setup",
            "var greeting = 'hi'",
            "--timeout",
            "1s",
        ])
        .args([
            "var x = 1; console.log(greeting)",
            "throw new RangeError('no')",
            "console.log(greeting, typeof x)",
            "for (;;) {}",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let runs: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        runs.len(),
        4,
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(runs[0]["stdout"], "hi\n");
    assert_eq!(runs[0]["ok"], true);
    assert_eq!(runs[1]["exit_code"], 1);
    assert!(
        runs[1]["stderr"]
            .as_str()
            .unwrap()
            .contains("RangeError: no")
    );
    assert_eq!(
        runs[2]["stdout"], "hi undefined\n",
        "the earlier run's x is gone"
    );
    assert_eq!(runs[3]["error"]["kind"], "timeout");
    for run in &runs {
        for key in ["ok", "stdout", "stderr", "exit_code", "micros", "reset"] {
            assert!(run.get(key).is_some(), "{key} missing in {run}");
        }
    }
    assert_eq!(output.status.code(), Some(1), "a run failed");
}

#[test]
fn exec_javascript_calls_tool_commands() {
    if !javascript_guest_built() {
        return;
    }
    let output = cleanslate()
        .args([
            "--tool",
            "double=python3 -c 'import json,sys; print(json.load(sys.stdin)[\"n\"] * 2)'",
        ])
        .args(["--tool", "broken=echo oops >&2; exit 3"])
        .arg("console.log(call_tool('double', {n: 21}))")
        .arg("try { call_tool('broken') } catch (e) { console.log(e.kind, e.message.includes('oops')) }")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "42\ntool_error true\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn exec_javascript_with_a_missing_guest_file_is_guest_not_found() {
    let output = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .args([
            "exec",
            "javascript",
            "--guest",
            "/nonexistent/quickjs.wasm",
            "--json",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "guest_not_found");
}

fn post(port: u16, body: &str) -> Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap()
}

#[test]
fn serve_exec_javascript_answers_post_run() {
    if !javascript_guest_built() {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .args(["serve", "--exec", "javascript", "--cache-dir"])
        .arg(repo().join("target/js-guest-module-cache"))
        .args(["--setup", "const base = 40", "--pool", "2"])
        .args(["--listen", "127.0.0.1:0", "--timeout", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let run = post(
        port,
        r#"{"code": "globalThis.secret = 1; console.log(base + 2)"}"#,
    );
    assert_eq!(run["stdout"], "42\n", "{run}");
    for _ in 0..3 {
        let run = post(port, r#"{"code": "console.log('secret' in globalThis)"}"#);
        assert_eq!(run["stdout"], "false\n", "{run}");
    }
    let run = post(port, r#"{"code": "while (true) {}"}"#);
    assert_eq!(run["error"]["kind"], "timeout");
    let _ = child.kill();
    let _ = child.wait();
}
