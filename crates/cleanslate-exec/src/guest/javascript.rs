//! The JavaScript guest: QuickJS, built from source for wasm32-wasip1 by
//! this repository (guests/javascript) and embedded in the library. It
//! speaks the Python guest's ABI (`host_alloc`, `turn`, `host.call`), so
//! one [`CodeSandbox`](crate::CodeSandbox) drives both.

use std::path::{Path, PathBuf};

use crate::error::{ExecError, ExecErrorKind};

/// Where the QuickJS guest's module comes from.
///
/// ```no_run
/// use cleanslate_exec::JavaScriptGuest;
/// // The guest built into this library:
/// let guest = JavaScriptGuest::locate(None)?;
/// // Or a QuickJS guest module of your own build:
/// let guest = JavaScriptGuest::locate(Some("target/js-guest/quickjs.wasm".as_ref()))?;
/// # Ok::<(), cleanslate_exec::ExecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JavaScriptGuest {
    source: Source,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Source {
    BuiltIn(&'static [u8]),
    File(PathBuf),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::BuiltIn(bytes) => write!(f, "BuiltIn({} bytes)", bytes.len()),
            Source::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl JavaScriptGuest {
    /// The guest module at `path` (a `.wasm` file speaking the guest ABI of
    /// guests/javascript), or without it the one built into this library.
    ///
    /// # Errors
    ///
    /// [`ExecErrorKind::GuestNotFound`] when `path` is not a file, or when
    /// no path is given and this library was built without the guest (no
    /// C toolchain for wasm32-wasip1 at build time): the message says what
    /// to install.
    pub fn locate(path: Option<&Path>) -> Result<JavaScriptGuest, ExecError> {
        match path {
            Some(path) if path.is_file() => Ok(JavaScriptGuest {
                source: Source::File(path.to_path_buf()),
            }),
            Some(path) => Err(ExecError::new(
                ExecErrorKind::GuestNotFound,
                format!(
                    "the JavaScript guest {} does not exist; leave --guest out to use the built-in one",
                    path.display()
                ),
            )),
            None => JavaScriptGuest::built_in(),
        }
    }

    /// The QuickJS guest built into this library.
    ///
    /// # Errors
    ///
    /// [`ExecErrorKind::GuestNotFound`] when the library was built without
    /// it; the message says why and what to install.
    pub fn built_in() -> Result<JavaScriptGuest, ExecError> {
        match built_in_module() {
            Ok(bytes) => Ok(JavaScriptGuest {
                source: Source::BuiltIn(bytes),
            }),
            Err(why) => Err(ExecError::new(
                ExecErrorKind::GuestNotFound,
                format!("this build has no JavaScript guest: {why}"),
            )),
        }
    }

    /// The module's file, when it is not the built-in one.
    pub fn module_path(&self) -> Option<&Path> {
        match &self.source {
            Source::File(path) => Some(path),
            Source::BuiltIn(_) => None,
        }
    }

    pub(crate) fn source(&self) -> &Source {
        &self.source
    }
}

fn built_in_module() -> Result<&'static [u8], String> {
    cleanslate_js_guest::module().map_err(|e| e.to_string())
}
