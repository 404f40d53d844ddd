//! The JavaScript guest (QuickJS, built into the library): a run sees the
//! setup and nothing of an earlier run — globals, patched prototypes and
//! builtins, random state — however the earlier run ended: success, an
//! uncaught exception, a rejected promise, a timeout, memory exhaustion,
//! oversized output, a cancel. Plus console output, tools and limits.
//!
//! Skipped with a note when this build has no JavaScript guest (no C
//! toolchain for wasm32-wasip1), unless `CLEANSLATE_EXPECT_C_TOOLCHAIN` is
//! set, as in CI.

use std::time::Duration;

use cleanslate_exec::{CodeSandbox, CodeSandboxBuilder, JavaScriptGuest, Language, RunErrorKind};
use serde_json::{Value, json};

fn builder() -> Option<CodeSandboxBuilder> {
    match JavaScriptGuest::built_in() {
        Ok(guest) => Some(
            CodeSandbox::builder().guest(guest).module_cache(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../target/js-guest-module-cache"),
            ),
        ),
        Err(e) if std::env::var_os("CLEANSLATE_EXPECT_C_TOOLCHAIN").is_some() => {
            panic!("CLEANSLATE_EXPECT_C_TOOLCHAIN is set but {e}")
        }
        Err(e) => {
            eprintln!("note: skipping the JavaScript test: {e}");
            None
        }
    }
}

fn out(result: &cleanslate_exec::RunResult) -> String {
    String::from_utf8_lossy(&result.stdout).into_owned()
}

fn err(result: &cleanslate_exec::RunResult) -> String {
    String::from_utf8_lossy(&result.stderr).into_owned()
}

/// Reports everything a run could have leaked, as one line of JSON.
const PROBE: &str = r#"
console.log(JSON.stringify({
    global: typeof leaked !== "undefined" || "leaked2" in globalThis,
    lexical: typeof leakedLet !== "undefined",
    prototype: ({}).leakedMethod !== undefined,
    builtin: [].push(1),
    math: Math.random(),
    names: Object.getOwnPropertyNames(globalThis).sort(),
    setup: greeting,
    counter: counter.next(),
}));
"#;

/// Leaves state everywhere, checks it is visible, then ends as `ending` says.
fn leak_then(ending: &str) -> String {
    format!(
        r#"
var leaked = "secret of the previous user";
globalThis.leaked2 = "another secret";
let leakedLet = "a lexical secret";
Object.prototype.leakedMethod = function () {{ return "patched"; }};
Array.prototype.push = function () {{ return 42; }};
for (let i = 0; i < 5; i++) Math.random();
greeting = "changed";
counter.next(); counter.next();
if ([].push(1) !== 42 || ({{}}).leakedMethod() !== "patched" || leaked2 !== "another secret") {{
    throw new Error("the leaking run cannot see its own state");
}}
console.log("state visible");
{ending}
"#
    )
}

const SETUP: &str = r#"
var greeting = "hello from setup";
var counter = (() => { let n = 0; return { next: () => ++n }; })();
counter.next();
"#;

fn sandbox() -> Option<CodeSandbox> {
    Some(
        builder()?
            .setup(SETUP)
            .timeout(Duration::from_secs(2))
            .memory_limit(64 << 20)
            .output_limit(64 << 10)
            .build()
            .expect("the JavaScript sandbox builds"),
    )
}

/// Run the probe, the leaking run ending with `ending`, and the probe
/// again; the two probes must agree (and match the setup), and the leaking
/// run must have seen its own state. Returns the leaking run's result.
fn check(
    sandbox: &mut CodeSandbox,
    ending: &str,
    expect_error: Option<RunErrorKind>,
) -> cleanslate_exec::RunResult {
    let before = sandbox.run(PROBE).unwrap();
    assert!(before.ok(), "probe failed: {}", err(&before));
    let leaking = sandbox.run(&leak_then(ending)).unwrap();
    assert!(
        out(&leaking).starts_with("state visible"),
        "the leaking run did not get to see its own state: {}",
        err(&leaking)
    );
    assert_eq!(
        leaking.error.as_ref().map(|e| e.kind),
        expect_error,
        "the leaking run ended otherwise than expected: {:?} {}",
        leaking.error,
        err(&leaking)
    );
    let after = sandbox.run(PROBE).unwrap();
    assert!(after.ok(), "probe failed: {}", err(&after));
    assert_eq!(out(&after), out(&before), "something leaked");
    let seen: Value = serde_json::from_str(&out(&after)).unwrap();
    assert_eq!(seen["global"], false);
    assert_eq!(seen["lexical"], false);
    assert_eq!(seen["prototype"], false);
    assert_eq!(seen["builtin"], 1);
    assert_eq!(seen["setup"], "hello from setup");
    assert_eq!(seen["counter"], 2, "the setup's closure state is restored");
    leaking
}

#[test]
fn console_output_and_exit_status() {
    let Some(mut sandbox) = sandbox() else { return };
    let result = sandbox
        .run(r#"console.log(1 + 1, "two", [1, {a: 2}], null, undefined); console.error("to stderr"); print("printed")"#)
        .unwrap();
    assert!(result.ok(), "{}", err(&result));
    assert_eq!(result.exit_code, Some(0));
    let stdout = out(&result);
    let mut lines = stdout.lines();
    let first = lines.next().unwrap();
    assert!(first.starts_with("2 two "), "{first}");
    assert!(first.contains("null undefined"), "{first}");
    assert_eq!(lines.next(), Some("printed"));
    assert_eq!(err(&result), "to stderr\n");
    let sum = sandbox
        .run("console.log([1, 2, 3].reduce((a, b) => a + b))")
        .unwrap();
    assert_eq!(out(&sum), "6\n");
}

#[test]
fn nothing_leaks_after_success() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(&mut sandbox, "console.log('done')", None);
    assert_eq!(leaking.exit_code, Some(0));
}

#[test]
fn nothing_leaks_after_an_uncaught_exception() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(&mut sandbox, "throw new TypeError('boom')", None);
    assert_eq!(leaking.exit_code, Some(1));
    assert!(
        err(&leaking).contains("TypeError: boom"),
        "{}",
        err(&leaking)
    );
}

#[test]
fn nothing_leaks_after_a_rejected_promise() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(
        &mut sandbox,
        "(async () => { await null; throw new Error('later'); })()",
        None,
    );
    assert_eq!(leaking.exit_code, Some(1), "{}", err(&leaking));
    assert!(err(&leaking).contains("later"), "{}", err(&leaking));
}

#[test]
fn promises_run_to_completion_within_the_run() {
    let Some(mut sandbox) = sandbox() else { return };
    let result = sandbox
        .run("Promise.resolve(20).then(v => console.log(v + 1)); console.log('first')")
        .unwrap();
    assert_eq!(out(&result), "first\n21\n", "{}", err(&result));
}

#[test]
fn nothing_leaks_after_a_timeout() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(&mut sandbox, "while (true) {}", Some(RunErrorKind::Timeout));
    assert_eq!(leaking.exit_code, None);
}

#[test]
fn nothing_leaks_after_memory_exhaustion() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(
        &mut sandbox,
        "const hog = []; while (true) hog.push(new Array(1 << 16).fill(1.5));",
        Some(RunErrorKind::OutOfMemory),
    );
    assert!(leaking.reset.is_some());
}

#[test]
fn nothing_leaks_after_output_too_large() {
    let Some(mut sandbox) = sandbox() else { return };
    let leaking = check(
        &mut sandbox,
        "console.log('x'.repeat(1 << 20))",
        Some(RunErrorKind::OutputTooLarge),
    );
    assert!(leaking.stdout.len() <= 64 << 10);
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
        .run_cancellable(&leak_then("while (true) {}"), &token)
        .unwrap();
    canceller.join().unwrap();
    assert_eq!(
        leaking.error.as_ref().map(|e| e.kind),
        Some(RunErrorKind::Cancelled)
    );
    assert!(out(&leaking).starts_with("state visible"));
    assert_eq!(out(&sandbox.run(PROBE).unwrap()), out(&before));
}

#[test]
fn deep_recursion_is_a_range_error_and_the_sandbox_goes_on() {
    let Some(mut sandbox) = sandbox() else { return };
    let result = sandbox
        .run(
            "function f(n) { return f(n + 1) + 1; } try { f(0) } catch (e) { console.log(e.name) }",
        )
        .unwrap();
    assert_eq!(out(&result), "RangeError\n", "{}", err(&result));
    assert_eq!(out(&sandbox.run("console.log('next')").unwrap()), "next\n");
}

#[test]
fn tools_are_called_with_an_object_and_failures_are_exceptions() {
    let Some(builder) = builder() else { return };
    let mut sandbox = builder
        .tool("add", "Add a and b", |call| {
            let a = call.args["a"].as_f64().ok_or("a must be a number")?;
            let b = call.args["b"].as_f64().ok_or("b must be a number")?;
            Ok(json!({"sum": a + b}))
        })
        .build()
        .unwrap();
    let result = sandbox
        .run(
            r#"
console.log(call_tool("add", {a: 2, b: 3}).sum);
try { call_tool("add", {a: "x"}); } catch (e) { console.log(e instanceof ToolError, e.kind, e.message); }
try { call_tool("nope"); } catch (e) { console.log(e.kind); }
"#,
        )
        .unwrap();
    assert!(result.ok(), "{}", err(&result));
    assert_eq!(
        out(&result),
        "5\ntrue tool_error a must be a number\nunknown_tool\n"
    );
}

#[test]
fn the_language_can_be_chosen_by_name() {
    if builder().is_none() {
        return;
    }
    let mut sandbox = CodeSandbox::builder()
        .language("js".parse::<Language>().unwrap())
        .no_module_cache()
        .setup("const base = 40")
        .build()
        .unwrap();
    assert_eq!(sandbox.guest().language(), Language::JavaScript);
    assert_eq!(out(&sandbox.run("console.log(base + 2)").unwrap()), "42\n");
}

#[test]
fn a_failing_setup_is_a_setup_error_with_the_exception() {
    let Some(builder) = builder() else { return };
    let error = builder.setup("undefinedFunction()").build().unwrap_err();
    assert_eq!(error.kind(), cleanslate_exec::ExecErrorKind::SetupFailed);
    assert!(error.message().contains("undefinedFunction"), "{error}");
}
