//! Building the example guests from source for the tests: the Rust guests
//! with cargo for wasm32 (cargo's own caching keeps repeat runs fast), the C
//! guest with clang and wasi-libc.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `.wasm` of the Rust example guest `name` (a crate in guests/rust).
pub fn rust_guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let target_dir = repo().join("target/guests");
        ensure_wasm_target("wasm32-unknown-unknown");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                "wasm32-unknown-unknown",
            ])
            .arg("--manifest-path")
            .arg(repo().join("guests/rust/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the Rust example guests failed (they need the wasm32-unknown-unknown target: `rustup target add wasm32-unknown-unknown`)"
        );
        target_dir.join("wasm32-unknown-unknown/release")
    });
    out.join(format!("{}.wasm", name.replace('-', "_")))
}

/// Make sure the pinned toolchain has `target`. rustup installs the
/// targets of rust-toolchain.toml only when it installs the toolchain
/// itself; on a machine that already had the toolchain, the README's test
/// command would otherwise fail for want of `core` for wasm32.
pub fn ensure_wasm_target(target: &str) {
    static ADDED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut added = ADDED.lock().unwrap_or_else(|e| e.into_inner());
    if added.iter().any(|t| t == target) {
        return;
    }
    // Without rustup (a distribution's Rust), the build below says what is
    // missing; with it, this is quick when the target is already there.
    let outcome = Command::new("rustup")
        .args(["target", "add", target])
        .current_dir(repo())
        .output();
    match outcome {
        Ok(output) if !output.status.success() => eprintln!(
            "note: `rustup target add {target}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        _ => {}
    }
    added.push(target.to_string());
}

/// The C example guest, built with clang for wasm32-wasi. Tests that use it
/// carry `#[cfg_attr(not(c_toolchain), ignore = ...)]` (see this crate's
/// build.rs), so without clang + wasi-libc they are reported as ignored, not
/// passed; when they do run, a failed build fails them.
pub fn c_guest(name: &str) -> PathBuf {
    c_guest_with(name, &[])
}

/// Like [`c_guest`], with extra clang flags (e.g. `-mexec-model=reactor`
/// and `-Wl,--export=malloc` for a library).
pub fn c_guest_with(name: &str, flags: &[&str]) -> PathBuf {
    // One build at a time: tests of one binary run on parallel threads.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let source = repo().join(format!("guests/c/{name}.c"));
    let out_dir = repo().join("target/guests/c");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{name}.wasm"));
    let fresh = |out: &Path| {
        let built = std::fs::metadata(out).and_then(|m| m.modified()).ok();
        let changed = std::fs::metadata(&source).and_then(|m| m.modified()).ok();
        matches!((built, changed), (Some(b), Some(c)) if b >= c)
    };
    if fresh(&out) {
        return out;
    }
    // Build into a unique file and rename, so parallel tests never see a
    // half-written module.
    let partial = out_dir.join(format!("{name}.{}.wasm", std::process::id()));
    let result = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-Wall", "-Werror"])
        .args(flags)
        .arg("-o")
        .arg(&partial)
        .arg(&source)
        .output();
    match result {
        Ok(output) if output.status.success() => {
            std::fs::rename(&partial, &out).unwrap();
            out
        }
        outcome => {
            let why = match outcome {
                Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            panic!(
                "building the C guest {name} failed: {why} (it needs Debian's clang, lld, wasi-libc and libclang-rt-14-dev-wasm32)"
            );
        }
    }
}
