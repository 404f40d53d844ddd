//! `cleanslate serve` as clients see it: real HTTP requests to a server
//! process on an ephemeral loopback port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/example.wat");

/// `echo` returns its input (data ABI); `slow(n)` counts to n and returns n.
const GUEST_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "cleanslate_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (local.get $ptr))
  (func (export "echo") (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 20) (local.get $ptr))
    (i32.store (i32.const 24) (local.get $len))
    (i32.const 16))
  (func (export "slow") (param $n i32) (result i32) (local $i i32)
    (loop $more
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $i)))"#;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(module: &str, extra: &[&str]) -> Server {
        Server::start_logging_to(module, extra, Stdio::null())
    }

    /// As `start`, with the server's log (its stderr) going to `log`.
    fn start_logging_to(module: &str, extra: &[&str], log: Stdio) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
            .args(["serve", module, "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { child, port }
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> Response {
        request(self.port, method, path, body)
    }

    /// Poll /metrics until a call holds a sandbox (at most 5 s).
    fn wait_until_a_sandbox_is_busy(&self) {
        let started = Instant::now();
        while !self
            .request("GET", "/metrics", b"")
            .text()
            .contains("cleanslate_pool_in_use 1")
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no call started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, as an orchestrator stops a container.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn guest_file() -> String {
    let dir = std::env::temp_dir().join(format!("cleanslate-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guest.wat");
    std::fs::write(&path, GUEST_WAT).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn calls_succeed_and_every_error_has_its_status() {
    let server = Server::start(
        EXAMPLE,
        &["--pool", "2", "--timeout", "200ms", "--max-body", "1KiB"],
    );
    let ok = server.request("POST", "/call/add", br#"{"args":[2,3]}"#);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["results"], serde_json::json!([5]));
    assert!(ok.header("x-request-id").is_some());

    for (path, body, status, kind) in [
        (
            "/call/add",
            &br#"{"args":["two",3]}"#[..],
            400,
            "invalid_arguments",
        ),
        ("/call/add", &b"not json"[..], 400, "invalid_arguments"),
        ("/call/nope", &b""[..], 404, "function_not_found"),
        (
            "/call/trap_unreachable",
            &br#"{"args":[7]}"#[..],
            422,
            "trap",
        ),
        (
            "/call/stack_overflow",
            &br#"{"args":[1]}"#[..],
            422,
            "stack_overflow",
        ),
        (
            "/call/call_host",
            &br#"{"args":[7,1]}"#[..],
            500,
            "host_error",
        ),
        ("/call/spin", &br#"{"args":[7]}"#[..], 504, "timeout"),
    ] {
        let response = server.request("POST", path, body);
        assert_eq!(response.status, status, "{path}: {}", response.text());
        assert_eq!(response.json()["kind"], kind, "{path}");
        assert!(response.json()["message"].is_string());
    }
    let big = vec![b' '; 2048];
    let response = server.request("POST", "/call/add", &big);
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.json()["kind"], "body_too_large");

    // Whatever failed before, the next caller sees a clean slate.
    server.request("POST", "/call/leave_secret", br#"{"args":[99]}"#);
    let secret = server.request("POST", "/call/read_secret", b"");
    assert_eq!(secret.json()["results"], serde_json::json!([0]));

    let health = server.request("GET", "/healthz", b"");
    assert_eq!(health.status, 200);
    let index = server.request("GET", "/", b"");
    assert!(index.text().contains("/call/add"), "{}", index.text());

    let metrics = server.request("GET", "/metrics", b"");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for needle in [
        "cleanslate_pool_calls_total{function=\"add\",outcome=\"ok\"} 1",
        "cleanslate_pool_calls_total{function=\"trap_unreachable\",outcome=\"trap\"} 1",
        "cleanslate_pool_calls_total{function=\"spin\",outcome=\"timeout\"} 1",
        "cleanslate_pool_size 2",
        "cleanslate_http_responses_total{status=\"413\"} 1",
        "cleanslate_pool_reset_duration_microseconds_count",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[test]
fn bytes_functions_take_the_body_and_concurrent_callers_stay_apart() {
    let server = Server::start(&guest_file(), &["--pool", "2"]);
    let response = server.request("POST", "/call/echo", br#"{"hello":"world"}"#);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.body, br#"{"hello":"world"}"#);

    let port = server.port;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..25 {
                    let body = format!("caller {t} request {i}");
                    let response = request(port, "POST", "/call/echo", body.as_bytes());
                    assert_eq!(response.status, 200);
                    assert_eq!(response.text(), body, "cross-talk between requests");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_busy_pool_answers_503_with_retry_after() {
    let server = Server::start(
        EXAMPLE,
        &["--pool", "1", "--pool-wait", "10ms", "--timeout", "1s"],
    );
    let port = server.port;
    let busy = std::thread::spawn(move || request(port, "POST", "/call/spin", br#"{"args":[1]}"#));
    // Wait until the spin holds the only sandbox.
    server.wait_until_a_sandbox_is_busy();
    let refused = server.request("POST", "/call/add", br#"{"args":[1,2]}"#);
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["kind"], "pool_exhausted");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(busy.join().unwrap().status, 504);
}

#[test]
fn shutdown_lets_the_request_in_flight_finish() {
    let mut server = Server::start(&guest_file(), &["--pool", "1"]);
    let port = server.port;
    // About a second of guest work.
    let in_flight =
        std::thread::spawn(move || request(port, "POST", "/call/slow", br#"{"args":[400000000]}"#));
    server.wait_until_a_sandbox_is_busy();
    server.terminate();
    let response = in_flight.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["results"], serde_json::json!([400000000]));
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit {status:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "new connections are refused after shutdown"
    );
}

#[test]
fn startup_log_metrics_and_index_say_which_reset_path_this_machine_allows() {
    // The library's answer on this machine is what the server must report.
    let resets = cleanslate::Runtime::new().unwrap().in_place_resets();
    if std::env::var_os("CLEANSLATE_EXPECT_TRACKING").is_some() {
        assert!(resets.available(), "{}", resets.reason());
    }
    let log_path = std::env::temp_dir().join(format!(
        "cleanslate-serve-{}-reset-path.log",
        std::process::id()
    ));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = Server::start_logging_to(&guest_file(), &["--pool", "1"], log.into());

    let metrics = server.request("GET", "/metrics", b"").text();
    assert!(
        metrics.contains("# TYPE cleanslate_in_place_reset_available gauge\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# HELP cleanslate_in_place_reset_available "),
        "{metrics}"
    );
    let expected = format!(
        "\ncleanslate_in_place_reset_available {}\n",
        u8::from(resets.available())
    );
    assert!(metrics.contains(&expected), "{metrics}");

    let index = server.request("GET", "/", b"").text();
    assert!(index.contains("reset path on this machine: "), "{index}");
    assert!(index.contains(resets.reason()), "{index}");

    server.terminate();
    assert!(server.child.wait().unwrap().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let line = log
        .lines()
        .find(|l| l.contains("reset path: "))
        .unwrap_or_else(|| panic!("no reset path in the startup log:\n{log}"));
    assert!(line.contains(resets.reason()), "{line}");
    if resets.available() {
        assert!(
            line.contains("INFO") && line.contains("reset path: in place"),
            "{line}"
        );
    } else {
        assert!(
            line.contains("WARN") && line.contains("fresh instance"),
            "{line}"
        );
    }
}

/// A WASI guest writing to stdout and stderr (see the file's head).
const WASI_WAT: &str = include_str!("../../../guests/wasi_say.wat");

fn wasi_guest_file() -> String {
    let dir = std::env::temp_dir().join(format!("cleanslate-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wasi_guest.wat");
    std::fs::write(&path, WASI_WAT).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn wasi_guests_answer_with_their_stdout_stderr_and_exit_code() {
    let server = Server::start(&wasi_guest_file(), &["--pool", "2"]);
    let ok = server.request("POST", "/call/say", br#"{"args":[1]}"#);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = ok.json();
    assert_eq!(body["results"], serde_json::json!([1]), "{body}");
    assert_eq!(body["stdout"], "say 1\n", "{body}");
    assert_eq!(body["stderr"], "err 1\n", "{body}");

    let trapped = server.request("POST", "/call/say_and_trap", br#"{"args":[22]}"#);
    assert_eq!(trapped.status, 422, "{}", trapped.text());
    let body = trapped.json();
    assert_eq!(body["kind"], "trap", "{body}");
    assert_eq!(body["stdout"], "say 22\n", "{body}");
    assert_eq!(body["stderr"], "err 22\n", "{body}");

    let exited = server.request("POST", "/call/quit", br#"{"args":[3]}"#);
    assert_eq!(exited.status, 200, "{}", exited.text());
    let body = exited.json();
    assert_eq!(body["exit_code"], 3, "{body}");
    assert_eq!(body["stdout"], "say 3\n", "{body}");

    // Concurrent requests each get their own output, from a clean slate.
    let port = server.port;
    let threads: Vec<_> = (0..6)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..10 {
                    let n = 1000 * t + i;
                    let response = request(
                        port,
                        "POST",
                        "/call/say",
                        format!("{{\"args\":[{n}]}}").as_bytes(),
                    );
                    assert_eq!(response.status, 200, "{}", response.text());
                    let body = response.json();
                    assert_eq!(body["stdout"], format!("say {n}\n"), "output mixed: {body}");
                    assert_eq!(body["stderr"], format!("err {n}\n"), "output mixed: {body}");
                    assert_eq!(body["results"], serde_json::json!([1]), "{body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn the_request_timeout_stops_a_running_guest() {
    let server = Server::start(
        EXAMPLE,
        &[
            "--pool",
            "1",
            "--timeout",
            "10s",
            "--request-timeout",
            "300ms",
        ],
    );
    let started = Instant::now();
    let response = server.request("POST", "/call/spin", br#"{"args":[1]}"#);
    let took = started.elapsed();
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(response.json()["kind"], "timeout");
    let message = response.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("--request-timeout"), "{message}");
    // Not at the guest's own 10 s timeout.
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    // The stopped call left nothing behind, and the one sandbox is free.
    server.request("POST", "/call/leave_secret", br#"{"args":[99]}"#);
    let secret = server.request("POST", "/call/read_secret", b"");
    assert_eq!(secret.status, 200, "{}", secret.text());
    assert_eq!(secret.json()["results"], serde_json::json!([0]));
}

/// Send a request's head announcing a body of 1000 bytes, and one byte of
/// it; the connection stays open.
fn partial_body(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"POST /call/add HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{")
        .unwrap();
    stream
}

/// Send half a request's head; the connection stays open.
fn partial_head(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"POST /call/add HTTP/1.1\r\nHost: loc")
        .unwrap();
    stream
}

#[test]
fn slow_bodies_hold_no_capacity_and_time_out() {
    let server = Server::start(
        EXAMPLE,
        &[
            "--pool",
            "1",
            "--max-concurrency",
            "2",
            "--body-timeout",
            "1s",
        ],
    );
    let mut slow: Vec<TcpStream> = (0..6).map(|_| partial_body(server.port)).collect();
    // Let the server read the heads and start waiting for the bodies.
    std::thread::sleep(Duration::from_millis(200));
    let ok = server.request("POST", "/call/add", br#"{"args":[2,3]}"#);
    assert_eq!(
        ok.status,
        200,
        "slow clients lock others out: {}",
        ok.text()
    );
    assert_eq!(ok.json()["results"], serde_json::json!([5]));
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(
            read.is_ok(),
            "no answer to a half-sent body: {read:?} {text}"
        );
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("\"kind\":\"body_timeout\""), "{text}");
    }
}

#[test]
fn a_half_sent_head_is_closed_after_the_header_timeout() {
    let server = Server::start(EXAMPLE, &["--header-timeout", "500ms"]);
    let mut stream = partial_head(server.port);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    assert!(
        read.is_ok()
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the connection is still open: {read:?}"
    );
    // The server still serves others.
    let ok = server.request("POST", "/call/add", br#"{"args":[2,3]}"#);
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn shutdown_is_bounded_while_clients_hold_partial_requests() {
    let mut server = Server::start(
        EXAMPLE,
        &[
            "--header-timeout",
            "60s",
            "--body-timeout",
            "60s",
            "--shutdown-timeout",
            "1s",
        ],
    );
    let _head = partial_head(server.port);
    let _body = partial_body(server.port);
    std::thread::sleep(Duration::from_millis(200));
    server.terminate();
    let signalled = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "exit {status:?}");
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn timeouts_of_zero_or_beyond_representable_are_refused_with_a_message() {
    for (flag, value) in [
        ("--body-timeout", "0s"),
        ("--header-timeout", "0ms"),
        ("--request-timeout", "18446744073709551615s"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
            .args(["serve", EXAMPLE, "--listen", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
