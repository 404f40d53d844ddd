//! What a run produced: [`RunResult`], and [`RunError`] when it did not
//! complete.

use std::fmt;
use std::time::Duration;

use cleanslate::ResetReport;
use serde_json::{Value, json};

use crate::files::OutputFile;

/// Why a run did not complete, as a stable snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunErrorKind {
    /// The run took longer than its timeout (tool calls included).
    Timeout,
    /// The run needed more memory than the limit: the interpreter ran out
    /// of memory (an uncaught `MemoryError`) or memory could not grow.
    OutOfMemory,
    /// stdout, stderr or the /output files were larger than the limit.
    OutputTooLarge,
    /// The run's [`CancelToken`](cleanslate::CancelToken) was cancelled.
    Cancelled,
    /// The guest's stack overflowed (e.g. recursion deeper than the
    /// interpreter could catch).
    StackOverflow,
    /// The interpreter trapped (a fault in native code).
    Trap,
}

impl RunErrorKind {
    /// `timeout`, `out_of_memory`, `output_too_large`, `cancelled`,
    /// `stack_overflow` or `trap`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunErrorKind::Timeout => "timeout",
            RunErrorKind::OutOfMemory => "out_of_memory",
            RunErrorKind::OutputTooLarge => "output_too_large",
            RunErrorKind::Cancelled => "cancelled",
            RunErrorKind::StackOverflow => "stack_overflow",
            RunErrorKind::Trap => "trap",
        }
    }
}

impl fmt::Display for RunErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run did not complete, with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunError {
    /// What stopped the run.
    pub kind: RunErrorKind,
    /// A human-readable explanation.
    pub message: String,
}

/// What one run produced. The sandbox is back at its setup snapshot by the
/// time you have it.
///
/// ```no_run
/// # let mut sandbox = cleanslate_exec::CodeSandbox::builder().build()?;
/// let result = sandbox.run("import sys; print('hi'); sys.exit(3)")?;
/// assert_eq!(result.stdout, b"hi\n");
/// assert_eq!(result.exit_code, Some(3));
/// assert!(!result.ok());
/// assert!(result.error.is_none(), "it completed, with a non-zero status");
/// # Ok::<(), cleanslate_exec::ExecError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunResult {
    /// What the code printed to stdout (at most the output limit).
    pub stdout: Vec<u8>,
    /// What it printed to stderr, with the traceback of an uncaught exception.
    pub stderr: Vec<u8>,
    /// 0; the `SystemExit` or `os._exit` code; 1 for an uncaught exception.
    /// `None` when the run did not complete ([`error`](RunResult::error)).
    pub exit_code: Option<i32>,
    /// Why the run did not complete, if it did not.
    pub error: Option<RunError>,
    /// The files the run left in /output (empty without an output folder).
    pub files: Vec<OutputFile>,
    /// Whether the sandbox has an /output folder (so `files` is meaningful).
    pub(crate) has_output: bool,
    /// The run's wall time: writing the code in, running it, the reset and
    /// collecting the files.
    pub duration: Duration,
    /// How the reset after the run went.
    pub reset: Option<ResetReport>,
}

impl RunResult {
    /// The run completed with exit code 0.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.exit_code == Some(0)
    }

    /// The stable JSON form: `{"ok","stdout","stderr","exit_code",
    /// "error"?,"files"?,"micros","reset"}`. `error` is
    /// `{"kind","message"}`; each file is `{"name","size","base64"}`.
    ///
    /// ```no_run
    /// # let mut sandbox = cleanslate_exec::CodeSandbox::builder().build()?;
    /// let json = sandbox.run("print(1+1)")?.to_json();
    /// assert_eq!(json["stdout"], "2\n");
    /// assert_eq!(json["ok"], true);
    /// # Ok::<(), cleanslate_exec::ExecError>(())
    /// ```
    pub fn to_json(&self) -> Value {
        use base64::Engine;
        let mut object = json!({
            "ok": self.ok(),
            "stdout": String::from_utf8_lossy(&self.stdout),
            "stderr": String::from_utf8_lossy(&self.stderr),
            "exit_code": self.exit_code,
        });
        if let Some(error) = &self.error {
            object["error"] = json!({"kind": error.kind.as_str(), "message": error.message});
        }
        if self.has_output {
            let files: Vec<Value> = self
                .files
                .iter()
                .map(|f| {
                    json!({
                        "name": f.name,
                        "size": f.bytes.len(),
                        "base64": base64::engine::general_purpose::STANDARD.encode(&f.bytes),
                    })
                })
                .collect();
            object["files"] = Value::Array(files);
        }
        object["micros"] = json!(self.duration.as_micros() as u64);
        object["reset"] = reset_json(self.reset.as_ref());
        object
    }
}

/// The reset report as the CLI's other verbs print it.
pub fn reset_json(report: Option<&ResetReport>) -> Value {
    match report {
        Some(r) => {
            let mut object = json!({
                "path": r.path().as_str(),
                "dirty_pages": r.dirty_pages(),
                "scanned_page_tables": r.scanned_page_tables(),
                "memory_lowered_bytes": r.memory_lowered_bytes(),
                "micros": (r.duration().as_nanos() as f64 / 10.0).round() / 100.0,
                "verified": r.verified(),
            });
            if let Some(reason) = r.fallback_reason() {
                object["reason"] = json!(reason.as_str());
            }
            object
        }
        None => json!({"path": "none"}),
    }
}
