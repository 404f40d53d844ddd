//! A run cannot see anything of an earlier run — globals, `sys.modules`,
//! patched builtins, files in /tmp and /output, the environment, random
//! state — however the earlier run ended: success, exception, timeout,
//! memory exhaustion, `os._exit`, oversized output.
//!
//! Each case first shows that inside the leaking run the state IS visible
//! (so the probe would see it if it leaked), then that a probe run after it
//! sees exactly what a probe run before it saw.

mod common;

use std::time::Duration;

use cleanslate_exec::{CodeSandbox, RunErrorKind};

/// Reports everything a run could have leaked, as one line of JSON.
const PROBE: &str = r#"
import json, os, sys, random, builtins
print(json.dumps({
    "global": "leaked" in globals(),
    "module": "fractions" in sys.modules,
    "builtin": len([]),
    "tmp": sorted(os.listdir("/tmp")),
    "output": sorted(os.listdir("/output")),
    "env": os.environ.get("LEAKED"),
    "random": random.random(),
    "setup": greeting,
}))
"#;

/// Leaves state everywhere, checks it is visible, then ends as `ending` says.
fn leak_then(ending: &str) -> String {
    format!(
        r#"
import os, sys, random, builtins
leaked = "secret of the previous user"
import fractions
builtins.len = lambda obj: 42
open("/tmp/leak.txt", "w").write("tmp secret")
open("/output/leak.txt", "w").write("output secret")
os.environ["LEAKED"] = "yes"
random.seed(1234)
greeting = "changed"
assert len([]) == 42 and "fractions" in sys.modules and os.listdir("/tmp") == ["leak.txt"]
assert os.environ["LEAKED"] == "yes" and open("/tmp/leak.txt").read() == "tmp secret"
print("state visible", flush=True)
{ending}
"#
    )
}

fn sandbox() -> Option<CodeSandbox> {
    let builder = common::builder()?;
    Some(
        builder
            .setup("import random\ngreeting = 'hello from setup'")
            .timeout(Duration::from_secs(2))
            .memory_limit(256 << 20)
            .output_limit(64 << 10)
            .output_files(true)
            .build()
            .expect("the sandbox builds"),
    )
}

/// Run the probe, the leaking run ending with `ending`, and the probe
/// again; the two probes must agree, and the leaking run must have seen
/// its own state. Returns the leaking run's result.
fn check(
    sandbox: &mut CodeSandbox,
    ending: &str,
    expect_error: Option<RunErrorKind>,
) -> cleanslate_exec::RunResult {
    let before = sandbox.run(PROBE).unwrap();
    assert!(before.ok(), "probe failed: {}", common::err(&before));
    let leaking = sandbox.run(&leak_then(ending)).unwrap();
    assert!(
        common::out(&leaking).starts_with("state visible"),
        "the leaking run did not get to see its own state: {}",
        common::err(&leaking)
    );
    assert_eq!(
        leaking.error.as_ref().map(|e| e.kind),
        expect_error,
        "the leaking run ended otherwise than expected: {:?} {}",
        leaking.error,
        common::err(&leaking)
    );
    let after = sandbox.run(PROBE).unwrap();
    assert!(after.ok(), "probe failed: {}", common::err(&after));
    assert_eq!(
        common::out(&after),
        common::out(&before),
        "something leaked"
    );
    let seen: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(seen["global"], false);
    assert_eq!(seen["module"], false);
    assert_eq!(seen["builtin"], 0);
    assert_eq!(seen["tmp"], serde_json::json!([]));
    assert_eq!(seen["output"], serde_json::json!([]));
    assert_eq!(seen["env"], serde_json::Value::Null);
    assert_eq!(seen["setup"], "hello from setup");
    leaking
}

#[test]
fn nothing_leaks_after_success() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(&mut sandbox, "print('done')", None);
    assert_eq!(leaking.exit_code, Some(0));
    // The run's /output file was handed back, and is gone from the sandbox.
    assert_eq!(leaking.files.len(), 1);
    assert_eq!(leaking.files[0].name, "leak.txt");
    assert_eq!(leaking.files[0].bytes, b"output secret");
}

#[test]
fn nothing_leaks_after_an_exception() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(&mut sandbox, "raise RuntimeError('boom')", None);
    assert_eq!(leaking.exit_code, Some(1));
    assert!(common::err(&leaking).contains("RuntimeError: boom"));
}

#[test]
fn nothing_leaks_after_a_timeout() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(
        &mut sandbox,
        "while True: pass",
        Some(RunErrorKind::Timeout),
    );
    assert_eq!(leaking.exit_code, None);
}

#[test]
fn nothing_leaks_after_memory_exhaustion() {
    let Some(mut sandbox) = sandbox() else { return };
    // Grows the heap to the limit, one MiB at a time.
    let leaking = check(
        &mut sandbox,
        "hog = []\nwhile True: hog.append(bytearray(1 << 20))",
        Some(RunErrorKind::OutOfMemory),
    );
    assert!(common::err(&leaking).contains("MemoryError"));
    assert!(leaking.reset.is_some());
}

#[test]
fn nothing_leaks_after_os_exit() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(&mut sandbox, "os._exit(7)", None);
    assert_eq!(leaking.exit_code, Some(7));
}

#[test]
fn nothing_leaks_after_sys_exit_and_quit() {
    let Some(mut sandbox) = sandbox() else { return };
    assert_eq!(check(&mut sandbox, "sys.exit(3)", None).exit_code, Some(3));
    assert_eq!(check(&mut sandbox, "quit()", None).exit_code, Some(0));
}

#[test]
fn nothing_leaks_after_output_too_large() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(
        &mut sandbox,
        "print('x' * (1 << 20))",
        Some(RunErrorKind::OutputTooLarge),
    );
    assert!(
        leaking.stdout.len() <= 64 << 10,
        "stdout is clipped at the limit"
    );
}

#[test]
fn nothing_leaks_after_a_cancel() {
    let Some(mut sandbox) = sandbox() else { return };
    let before = sandbox.run(PROBE).unwrap();
    let token = cleanslate::CancelToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            token.cancel();
        })
    };
    let leaking = sandbox
        .run_cancellable(&leak_then("while True: pass"), &token)
        .unwrap();
    canceller.join().unwrap();
    assert_eq!(
        leaking.error.as_ref().map(|e| e.kind),
        Some(RunErrorKind::Cancelled)
    );
    assert!(common::out(&leaking).starts_with("state visible"));
    let after = sandbox.run(PROBE).unwrap();
    assert_eq!(common::out(&after), common::out(&before));
}

#[test]
fn a_fork_starts_from_the_same_setup_and_leaks_nothing_to_its_parent() {
    let Some(mut sandbox) = sandbox() else { return };
    let before = sandbox.run(PROBE).unwrap();
    let mut fork = sandbox.fork().unwrap();
    let leaking = fork.run(&leak_then("print('done')")).unwrap();
    assert!(leaking.ok(), "{}", common::err(&leaking));
    assert_eq!(common::out(&fork.run(PROBE).unwrap()), common::out(&before));
    assert_eq!(
        common::out(&sandbox.run(PROBE).unwrap()),
        common::out(&before)
    );
}
