//! `cleanslate.RunResult`: what one run of code did, for Python.

use cleanslate_exec::RunResult;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::convert;

/// What one :meth:`CodeSandbox.run` did.
///
/// Attributes:
///     ok: the code completed with exit code 0.
///     stdout, stderr: what it printed (decoded as UTF-8, invalid bytes
///         replaced); the raw bytes are ``stdout_bytes``, ``stderr_bytes``.
///     exit_code: 0, the ``sys.exit`` code, 1 for an uncaught exception;
///         None when the run did not complete (see ``error_kind``).
///     error_kind: None, or why the run did not complete: ``"timeout"``,
///         ``"out_of_memory"``, ``"output_too_large"``, ``"cancelled"``,
///         ``"stack_overflow"``, ``"trap"``.
///     error_message: the explanation, or None.
///     files: ``{name: bytes}``, the files the run left in ``/output``.
///     duration: the run's wall time in seconds (the reset included).
///     reset: how the reset after the run went, e.g. ``{"path": "in_place",
///         "dirty_pages": 12, ...}``.
///
/// Example::
///
///     r = sb.run("import sys; print('hi'); sys.exit(3)")
///     assert (r.ok, r.stdout, r.exit_code, r.error_kind) == (False, "hi\n", 3, None)
#[pyclass(module = "cleanslate._cleanslate", name = "RunResult", frozen)]
pub(crate) struct PyRunResult {
    result: RunResult,
}

impl From<RunResult> for PyRunResult {
    fn from(result: RunResult) -> Self {
        PyRunResult { result }
    }
}

#[pymethods]
impl PyRunResult {
    /// The code completed with exit code 0.
    #[getter]
    fn ok(&self) -> bool {
        self.result.ok()
    }

    /// stdout as text (UTF-8, invalid bytes replaced).
    #[getter]
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.result.stdout).into_owned()
    }

    /// stderr as text (UTF-8, invalid bytes replaced).
    #[getter]
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.result.stderr).into_owned()
    }

    /// stdout as bytes.
    #[getter]
    fn stdout_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.result.stdout)
    }

    /// stderr as bytes.
    #[getter]
    fn stderr_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.result.stderr)
    }

    /// 0, the exit code, 1 for an uncaught exception; None if the run did
    /// not complete.
    #[getter]
    fn exit_code(&self) -> Option<i32> {
        self.result.exit_code
    }

    /// Why the run did not complete, or None.
    #[getter]
    fn error_kind(&self) -> Option<&'static str> {
        self.result.error.as_ref().map(|e| e.kind.as_str())
    }

    /// The explanation of ``error_kind``, or None.
    #[getter]
    fn error_message(&self) -> Option<String> {
        self.result.error.as_ref().map(|e| e.message.clone())
    }

    /// ``{name: bytes}``: the files the run left in /output.
    #[getter]
    fn files<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let files = PyDict::new(py);
        for file in &self.result.files {
            files.set_item(&file.name, PyBytes::new(py, &file.bytes))?;
        }
        Ok(files)
    }

    /// The run's wall time in seconds.
    #[getter]
    fn duration(&self) -> f64 {
        self.result.duration.as_secs_f64()
    }

    /// How the reset after the run went, as a dict (``path`` is
    /// ``"in_place"``, ``"fresh"``... or ``"none"``).
    #[getter]
    fn reset(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        convert::json_to_py(py, &cleanslate_exec::reset_json(self.result.reset.as_ref()))
    }

    /// Everything as plain data: ``ok``, ``stdout``, ``stderr``,
    /// ``exit_code``, ``error`` (``{"kind", "message"}`` or None),
    /// ``files`` (``{name: bytes}``), ``duration`` (seconds) and ``reset``.
    ///
    /// Example::
    ///
    ///     import json
    ///     d = sb.run("print(1)").to_dict()
    ///     d.pop("files"); print(json.dumps(d))
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("ok", self.ok())?;
        dict.set_item("stdout", self.stdout())?;
        dict.set_item("stderr", self.stderr())?;
        dict.set_item("exit_code", self.exit_code())?;
        match &self.result.error {
            Some(error) => {
                let e = PyDict::new(py);
                e.set_item("kind", error.kind.as_str())?;
                e.set_item("message", &error.message)?;
                dict.set_item("error", e)?;
            }
            None => dict.set_item("error", py.None())?,
        }
        dict.set_item("files", self.files(py)?)?;
        dict.set_item("duration", self.duration())?;
        dict.set_item("reset", self.reset(py)?)?;
        Ok(dict)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let text = |s: String| -> PyResult<String> {
            let shown: String = if s.chars().count() > 60 {
                s.chars().take(57).chain("...".chars()).collect()
            } else {
                s
            };
            Ok(PyString::new(py, &shown).repr()?.to_string())
        };
        let mut repr = format!(
            "RunResult(ok={}, exit_code={}, stdout={}",
            if self.ok() { "True" } else { "False" },
            self.exit_code()
                .map_or_else(|| "None".to_string(), |c| c.to_string()),
            text(self.stdout())?,
        );
        if !self.result.stderr.is_empty() {
            repr += &format!(", stderr={}", text(self.stderr())?);
        }
        if let Some(error) = &self.result.error {
            repr += &format!(
                ", error_kind={:?}, error_message={}",
                error.kind.as_str(),
                text(error.message.clone())?
            );
        }
        if !self.result.files.is_empty() {
            let names: Vec<&str> = self.result.files.iter().map(|f| f.name.as_str()).collect();
            repr += &format!(", files={names:?}");
        }
        repr += &format!(", duration={:.6})", self.duration());
        Ok(repr)
    }
}
