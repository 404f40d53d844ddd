//! `cleanslate.CodeSession`: runs that share their state, in a sandbox of
//! their own (forked from the setup), on a thread of their own that holds
//! the Rust session; the Python object sends it code and waits, without
//! the GIL.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

use cleanslate_exec::{CodeSandbox, ExecError, RunResult};
use pyo3::prelude::*;

use crate::errors;
use crate::run_result::PyRunResult;

enum Request {
    Run(String),
    Finish,
}

enum Answer {
    Ran(Result<RunResult, ExecError>),
    Finished(Result<(), ExecError>),
}

/// The thread that owns the session, and the way to it.
struct Worker {
    requests: Sender<Request>,
    answers: Receiver<Answer>,
}

/// Runs that share their state (variables, imports, files in ``/tmp``), as
/// the cells of a notebook do, from :meth:`CodeSandbox.session`. When the
/// session closes, everything it did is gone.
///
/// A run that does not complete (a timeout, running out of memory) leaves
/// the interpreter mid-statement: the session's later runs raise
/// ``cleanslate.Error`` (kind ``"session_ended"``).
///
/// Example::
///
///     with sb.session() as s:
///         s.run("rows = [3, 1, 2]")
///         assert s.run("print(sorted(rows))").stdout == "[1, 2, 3]\n"
#[pyclass(name = "CodeSession", module = "cleanslate")]
pub struct PyCodeSession {
    worker: Mutex<Option<Worker>>,
}

impl PyCodeSession {
    /// A session in `sandbox` (which it owns), served by a new thread.
    pub(crate) fn start(sandbox: CodeSandbox) -> PyCodeSession {
        let (requests, inbox) = channel();
        let (outbox, answers) = channel();
        std::thread::spawn(move || serve(sandbox, inbox, outbox));
        PyCodeSession {
            worker: Mutex::new(Some(Worker { requests, answers })),
        }
    }

    fn closed(py: Python<'_>) -> PyErr {
        errors::error(py, "session_ended", "the session is closed", None)
    }
}

/// The session's thread: run what comes, finish when asked or when the
/// Python object is gone (its reset then happens here, as on a drop).
fn serve(mut sandbox: CodeSandbox, requests: Receiver<Request>, answers: Sender<Answer>) {
    let mut session = sandbox.session();
    let asked = loop {
        match requests.recv() {
            Ok(Request::Run(code)) => {
                if answers.send(Answer::Ran(session.run(&code))).is_err() {
                    break false;
                }
            }
            Ok(Request::Finish) => break true,
            Err(_) => break false,
        }
    };
    let finished = session.finish();
    if asked {
        let _ = answers.send(Answer::Finished(finished));
    }
}

#[pymethods]
impl PyCodeSession {
    /// Run ``code`` on the state the session's earlier runs left.
    ///
    /// Raises ``cleanslate.Error`` (kind ``"session_ended"``) once a run of
    /// the session did not complete, or after :meth:`close`.
    fn run(&self, py: Python<'_>, code: String) -> PyResult<PyRunResult> {
        // None: the session is closed (or its thread gone).
        let outcome = py.detach(|| {
            let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
            let worker = worker.as_ref()?;
            worker.requests.send(Request::Run(code)).ok()?;
            match worker.answers.recv() {
                Ok(Answer::Ran(outcome)) => Some(outcome),
                _ => None,
            }
        });
        match outcome {
            Some(outcome) => outcome
                .map(PyRunResult::from)
                .map_err(|e| errors::from_exec(py, &e)),
            None => Err(Self::closed(py)),
        }
    }

    /// End the session: its state is gone. Closing twice does nothing.
    ///
    /// Raises ``cleanslate.Error`` (kind ``"sandbox"``) if the reset at
    /// the end failed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let outcome = py.detach(|| {
            let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(worker) = worker else {
                return Ok(());
            };
            if worker.requests.send(Request::Finish).is_err() {
                return Ok(());
            }
            match worker.answers.recv() {
                Ok(Answer::Finished(outcome)) => outcome,
                _ => Ok(()),
            }
        });
        outcome.map_err(|e| errors::from_exec(py, &e))
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}
