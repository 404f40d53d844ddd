//! Tells the test suite whether the C example guests can be built here
//! (clang with wasi-libc), so the tests that need them show as *ignored*,
//! with the reason, instead of passing without running.
//!
//! The probe compiles nothing of the library: it only sets the `c_toolchain`
//! cfg that `#[cfg_attr(not(c_toolchain), ignore = ...)]` on those tests
//! reads. `CLEANSLATE_EXPECT_C_TOOLCHAIN=1` (CI) forces the cfg on, so a
//! missing toolchain there fails the tests instead of skipping them.

use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(c_toolchain)");
    println!("cargo::rerun-if-env-changed=CLEANSLATE_EXPECT_C_TOOLCHAIN");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-changed=build.rs");
    let expected = std::env::var_os("CLEANSLATE_EXPECT_C_TOOLCHAIN").is_some();
    if expected || clang_builds_wasi() {
        println!("cargo::rustc-cfg=c_toolchain");
    }
}

/// Whether clang links a hello-world for wasm32-wasi (compiler, wasi-libc
/// and the builtins library all present).
fn clang_builds_wasi() -> bool {
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        return false;
    };
    let output = std::path::Path::new(&out_dir).join("probe.wasm");
    let child = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O0", "-x", "c", "-", "-o"])
        .arg(&output)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ =
            stdin.write_all(b"#include <stdio.h>\nint main(void) { puts(\"ok\"); return 0; }\n");
    }
    child.wait().is_ok_and(|status| status.success())
}
