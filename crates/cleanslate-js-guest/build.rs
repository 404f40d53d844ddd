//! Builds the JavaScript guest (guests/javascript: QuickJS for
//! wasm32-wasip1) with a nested `cargo build` and embeds the result.
//!
//! The nested build has a target folder of its own, `js-guest` in the outer
//! build's target folder, outside OUT_DIR: `cargo clippy` and `cargo test`
//! (whose build scripts run in different OUT_DIRs) share its cache, and its
//! lock is not the outer build's, so the two cargos never wait on each other.
//!
//! Without the C toolchain (clang, lld, llvm-ar, wasi-libc, the wasm32
//! builtins) or the wasm32-wasip1 target the build degrades: the crate
//! compiles, `module()` returns why, and a `cargo:warning` says so. With
//! `CLEANSLATE_EXPECT_C_TOOLCHAIN` set (CI), a failed guest build fails the
//! build instead. `CLEANSLATE_JS_GUEST_SKIP=1` skips the guest altogether.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to install when the guest cannot be built.
const HOW_TO_FIX: &str = "install clang, lld, llvm (for llvm-ar), wasi-libc and libclang-rt-14-dev-wasm32 \
(Debian: apt-get install clang lld llvm wasi-libc libclang-rt-14-dev-wasm32) and the wasm32-wasip1 \
Rust target (rustup target add wasm32-wasip1), then rebuild";

/// How many of the nested build's last stderr lines the error keeps.
const TAIL_LINES: usize = 12;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for var in [
        "CLEANSLATE_EXPECT_C_TOOLCHAIN",
        "CLEANSLATE_JS_GUEST_SKIP",
        "CC_wasm32_wasip1",
        "AR_wasm32_wasip1",
        "CFLAGS_wasm32_wasip1",
        "PATH",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guest_dir = manifest_dir.join("../../guests/javascript");
    for input in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        ".cargo/config.toml",
    ] {
        println!(
            "cargo::rerun-if-changed={}",
            guest_dir.join(input).display()
        );
    }

    let outcome = if env::var_os("CLEANSLATE_JS_GUEST_SKIP").is_some_and(|v| v == "1") {
        Err(Failure::new(
            "the JavaScript guest was not built: CLEANSLATE_JS_GUEST_SKIP=1 was set; \
             unset it and rebuild"
                .to_string(),
        ))
    } else {
        build_guest(&guest_dir, &out_dir, &manifest_dir)
    };

    let generated = match &outcome {
        Ok(wasm) => format!(
            "/// The guest's bytes.\npub(crate) const MODULE: Result<&[u8], &str> = Ok(include_bytes!({:?}));\n",
            wasm.display()
        ),
        Err(Failure { reason, output }) => {
            if env::var_os("CLEANSLATE_EXPECT_C_TOOLCHAIN").is_some()
                && env::var_os("CLEANSLATE_JS_GUEST_SKIP").is_none_or(|v| v != "1")
            {
                eprintln!("{output}");
                eprintln!(
                    "CLEANSLATE_EXPECT_C_TOOLCHAIN is set, but the JavaScript guest could not be built:\n{reason}"
                );
                std::process::exit(1);
            }
            let first = reason.lines().next().unwrap_or_default();
            println!("cargo::warning=the JavaScript guest is unavailable: {first}");
            format!(
                "/// Why the guest is missing.\npub(crate) const MODULE: Result<&[u8], &str> = Err({reason:?});\n"
            )
        }
    };
    fs::write(out_dir.join("guest.rs"), generated).expect("cannot write OUT_DIR/guest.rs");
}

/// Why the guest was not built: the explanation `module()` returns, and
/// the nested build's whole output (printed when the build must fail).
struct Failure {
    reason: String,
    output: String,
}

impl Failure {
    fn new(reason: String) -> Failure {
        Failure {
            reason,
            output: String::new(),
        }
    }
}

/// Build the guest; the path of a copy of its wasm in `out_dir`, or why not.
fn build_guest(guest_dir: &Path, out_dir: &Path, manifest_dir: &Path) -> Result<PathBuf, Failure> {
    let manifest = guest_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(Failure::new(format!(
            "the JavaScript guest's sources are not at {} (this crate builds only inside the Cleanslate repository)",
            guest_dir.display()
        )));
    }
    let guest_dir = &guest_dir
        .canonicalize()
        .unwrap_or_else(|_| guest_dir.to_path_buf());
    let manifest = guest_dir.join("Cargo.toml");
    let target_dir = target_dir(out_dir, manifest_dir).join("js-guest");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target")
        .arg("wasm32-wasip1")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        // Cargo reads .cargo/config.toml (the C toolchain settings) from
        // the folder it runs in.
        .current_dir(guest_dir);
    scrub_env(&mut command);
    if env::var_os("AR_wasm32_wasip1").is_none()
        && let Some(ar) = find_llvm_ar()
    {
        command.env("AR_wasm32_wasip1", ar);
    }

    let output = command.output().map_err(|e| {
        Failure::new(format!(
            "cannot run cargo for the JavaScript guest: {e}; {HOW_TO_FIX}"
        ))
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        return Err(Failure {
            reason: format!(
                "the JavaScript guest (QuickJS for wasm32-wasip1) could not be built ({}); {HOW_TO_FIX}.\n\
                 The nested `cargo build` of {} said:\n{tail}",
                output.status,
                manifest.display()
            ),
            output: format!("{}{stderr}", String::from_utf8_lossy(&output.stdout)),
        });
    }
    let built = target_dir.join("wasm32-wasip1/release/cleanslate_js_guest_wasm.wasm");
    let copy = out_dir.join("javascript.wasm");
    fs::copy(&built, &copy).map_err(|e| {
        Failure::new(format!(
            "the JavaScript guest was built but {} cannot be copied: {e}",
            built.display()
        ))
    })?;
    Ok(copy)
}

/// The outer build's target folder: the ancestor of OUT_DIR that cargo
/// marked with CACHEDIR.TAG, else the workspace's `target`.
fn target_dir(out_dir: &Path, manifest_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.join("../../target"))
}

/// Remove what the outer cargo told this build script, which would change
/// or break the nested build: its flags, wrappers (clippy's among them),
/// target folder and build-script variables.
fn scrub_env(command: &mut Command) {
    const KEEP: &[&str] = &["CARGO_HOME", "CARGO_MAKEFLAGS"];
    const KEEP_PREFIXES: &[&str] = &[
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
    ];
    const REMOVE: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
        "NUM_JOBS",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
    ];
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let cargo_var = key.starts_with("CARGO_")
            && !KEEP.contains(&key)
            && !KEEP_PREFIXES.iter().any(|p| key.starts_with(p));
        if cargo_var || REMOVE.contains(&key) || key == "CARGO" {
            command.env_remove(key);
        }
    }
}

/// An llvm-ar when the one guests/javascript/.cargo/config.toml names
/// (`llvm-ar-14`, Debian 12's) is missing: the guest's C archive needs a
/// symbol index that GNU ar does not write for wasm objects. None when the
/// configured one is there, so that this build and a build by hand in that
/// folder see the same settings and share the compiled C.
fn find_llvm_ar() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    if env::split_paths(&path).any(|dir| dir.join("llvm-ar-14").is_file()) {
        return None;
    }
    let names = [
        "llvm-ar",
        "llvm-ar-19",
        "llvm-ar-18",
        "llvm-ar-17",
        "llvm-ar-16",
        "llvm-ar-15",
    ];
    names.iter().find_map(|name| {
        env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}
