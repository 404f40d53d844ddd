//! `cleanslate.Sandbox` and `cleanslate.Session`: the core library's
//! sandboxes for plugin-style WebAssembly modules.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use cleanslate::{Module, Runtime, Sandbox, Signature, Val, ValType};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyString, PyTuple};

use crate::convert;
use crate::errors;

/// One runtime for every `Sandbox` of the process: its compiled modules,
/// engines and epoch thread are shared.
fn runtime() -> Result<&'static Runtime, cleanslate::Error> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = Runtime::new()?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// The Python exception a host function raised, kept to become the
/// `__cause__` of the call's error.
type Raised = Arc<Mutex<Option<PyErr>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a call failed: the library's error, or the session's thread was lost.
enum Failure {
    Core(cleanslate::Error),
    Gone(&'static str),
}

impl From<cleanslate::Error> for Failure {
    fn from(e: cleanslate::Error) -> Self {
        Failure::Core(e)
    }
}

/// A request to the thread that holds an open session.
enum Request {
    Values(
        String,
        Vec<Val>,
        mpsc::Sender<Result<Vec<Val>, cleanslate::Error>>,
    ),
    Bytes(
        String,
        Vec<u8>,
        mpsc::Sender<Result<Vec<u8>, cleanslate::Error>>,
    ),
}

/// An open session. `cleanslate::Session` borrows the sandbox, which a
/// Python object cannot hold across calls; so the sandbox moves into a
/// thread that holds the session and serves the calls, and comes back
/// (reset) when the session ends.
struct SessionThread {
    requests: mpsc::Sender<Request>,
    handle: JoinHandle<(Box<Sandbox>, Result<(), cleanslate::Error>)>,
}

impl SessionThread {
    fn start(mut sandbox: Box<Sandbox>) -> SessionThread {
        let (requests, incoming) = mpsc::channel::<Request>();
        let handle = std::thread::spawn(move || {
            let finished = {
                let mut session = sandbox.session();
                for request in incoming {
                    // A caller that went away (e.g. interrupted) just
                    // does not get its answer.
                    match request {
                        Request::Values(name, args, reply) => {
                            let _ = reply.send(session.call(&name, &args));
                        }
                        Request::Bytes(name, input, reply) => {
                            let _ = reply.send(session.call_bytes(&name, &input));
                        }
                    }
                }
                session.finish()
            };
            (sandbox, finished)
        });
        SessionThread { requests, handle }
    }

    fn call<T>(
        &self,
        request: impl FnOnce(mpsc::Sender<Result<T, cleanslate::Error>>) -> Request,
    ) -> Result<T, Failure> {
        let (reply, answer) = mpsc::channel();
        let gone = Failure::Gone("the session's thread is gone");
        if self.requests.send(request(reply)).is_err() {
            return Err(gone);
        }
        Ok(answer.recv().map_err(|_| gone)??)
    }

    /// End the session: the thread resets the sandbox and hands it back.
    fn end(self) -> (Option<Box<Sandbox>>, Result<(), Failure>) {
        drop(self.requests);
        match self.handle.join() {
            Ok((sandbox, finished)) => (Some(sandbox), finished.map_err(Failure::Core)),
            Err(_) => (None, Err(Failure::Gone("the session's thread panicked"))),
        }
    }
}

enum State {
    // Boxed: a sandbox is large, and the state moves between variants.
    Idle(Box<Sandbox>),
    InSession(SessionThread),
    /// After `close()`, or after a session whose thread was lost.
    Closed,
}

/// A WebAssembly module in a sandbox whose every call starts from a clean
/// slate: after each call — returned, trapped, out of memory, timed out or
/// failed in a host function — its memory, globals and tables are back at
/// the snapshot taken after instantiation (and ``init``).
///
/// Args:
///     module: a path to a ``.wasm`` or ``.wat`` file, or the module's
///         bytes (binary or WAT text).
///     memory_limit: bytes the module's memories may hold together
///         (default 64 MiB).
///     timeout: seconds (or a ``timedelta``) each call may take.
///     fuel: instructions (roughly) each call may run.
///     init: an export run once before the snapshot.
///     host_functions: ``{"module.name": fn}`` (or ``{(module, name): fn}``)
///         for the module's imports over numbers: ``fn`` gets the import's
///         parameters as ints/floats and returns its result (None, a
///         number, or a tuple for several).
///     bytes_host_functions: ``{"module.name": fn}`` for imports of the
///         data ABI (docs/ABI.md): ``fn`` takes bytes and returns bytes.
///     stack_limit: bytes of native stack a call may use.
///     output_limit: the most bytes a guest may return in one piece.
///
/// Example::
///
///     sb = cleanslate.Sandbox("guests/example.wat",
///                             host_functions={"cleanslate_demo.host_op": lambda m: 7})
///     assert sb.call("add", 2, 3) == 5
///     try:
///         sb.call("trap_unreachable", 1)
///     except cleanslate.TrapError as e:
///         print(e.trap_code)                  # unreachable
///     print(sb.last_reset["path"])            # in_place (or fresh)
///
/// Threads: a sandbox can be shared; calls take turns, without the GIL.
#[pyclass(module = "cleanslate._cleanslate", name = "Sandbox", frozen)]
pub(crate) struct PySandbox {
    state: Mutex<State>,
    module: Module,
    raised: Raised,
}

/// A number for a parameter of type `ty`.
fn to_val(value: &Bound<'_, PyAny>, ty: ValType, name: &str, index: usize) -> PyResult<Val> {
    let wrong = |what: &str| {
        errors::invalid(format!(
            "argument {index} of `{name}` must be {what}, not {}",
            value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    };
    let is_int = value.is_instance_of::<PyInt>() && !value.is_instance_of::<pyo3::types::PyBool>();
    match ty {
        ValType::I32 if is_int => match value.extract::<i64>() {
            // Unsigned values up to 2^32 - 1 are the same bits.
            Ok(v) if (i64::from(i32::MIN)..=i64::from(u32::MAX)).contains(&v) => {
                Ok(Val::I32(v as u32 as i32))
            }
            _ => Err(errors::invalid(format!(
                "argument {index} of `{name}` does not fit an i32"
            ))),
        },
        ValType::I64 if is_int => match value.extract::<i64>() {
            Ok(v) => Ok(Val::I64(v)),
            Err(_) => match value.extract::<u64>() {
                Ok(v) => Ok(Val::I64(v as i64)),
                Err(_) => Err(errors::invalid(format!(
                    "argument {index} of `{name}` does not fit an i64"
                ))),
            },
        },
        ValType::F32 | ValType::F64 if is_int || value.is_instance_of::<PyFloat>() => {
            let v: f64 = value.extract()?;
            Ok(if ty == ValType::F32 {
                Val::F32(v as f32)
            } else {
                Val::F64(v)
            })
        }
        ValType::I32 | ValType::I64 => Err(wrong("an int")),
        ValType::F32 | ValType::F64 => Err(wrong("a float")),
        _ => Err(errors::invalid(format!(
            "`{name}` takes a parameter of type {ty:?}, which Python cannot pass"
        ))),
    }
}

fn from_val(py: Python<'_>, value: &Val) -> PyResult<Py<PyAny>> {
    Ok(match *value {
        Val::I32(v) => v.into_pyobject(py)?.into_any().unbind(),
        Val::I64(v) => v.into_pyobject(py)?.into_any().unbind(),
        Val::F32(v) => f64::from(v).into_pyobject(py)?.into_any().unbind(),
        Val::F64(v) => v.into_pyobject(py)?.into_any().unbind(),
        // Val is non-exhaustive: a type added later is shown, not lost.
        _ => PyString::new(py, &format!("{value:?}")).into_any().unbind(),
    })
}

/// Results as Python: None, one value, or a tuple of several.
fn from_vals(py: Python<'_>, values: &[Val]) -> PyResult<Py<PyAny>> {
    match values {
        [] => Ok(py.None()),
        [one] => from_val(py, one),
        many => {
            let items = many
                .iter()
                .map(|v| from_val(py, v))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyTuple::new(py, items)?.into_any().unbind())
        }
    }
}

/// `"module.name"` or `(module, name)`.
fn import_name(key: &Bound<'_, PyAny>) -> PyResult<(String, String)> {
    if let Ok((module, name)) = key.extract::<(String, String)>() {
        return Ok((module, name));
    }
    let text: String = key.extract().map_err(|_| {
        errors::invalid("host functions are keyed by \"module.name\" or (module, name)")
    })?;
    match text.split_once('.') {
        Some((module, name)) if !module.is_empty() && !name.is_empty() => {
            Ok((module.to_string(), name.to_string()))
        }
        _ => Err(errors::invalid(format!(
            "the host function key {text:?} is not \"module.name\""
        ))),
    }
}

/// A value-typed host function: the Python callable over the import's
/// signature.
fn value_host_fn(
    function: Py<PyAny>,
    signature: Signature,
    what: String,
    raised: Raised,
) -> impl Fn(&[Val]) -> Result<Vec<Val>, cleanslate::HostFnError> + Send + Sync + 'static {
    move |args| {
        Python::attach(|py| {
            let outcome = (|| -> PyResult<Vec<Val>> {
                let args = args
                    .iter()
                    .map(|v| from_val(py, v))
                    .collect::<PyResult<Vec<_>>>()?;
                let result = function.bind(py).call1(PyTuple::new(py, args)?)?;
                let results = signature.results();
                let values: Vec<Bound<'_, PyAny>> = match results.len() {
                    0 => Vec::new(),
                    1 => vec![result],
                    n => {
                        let items: Vec<Bound<'_, PyAny>> = result.extract().map_err(|_| {
                            PyTypeError::new_err(format!("{what} must return {n} values"))
                        })?;
                        if items.len() != n {
                            return Err(PyTypeError::new_err(format!(
                                "{what} must return {n} values, not {}",
                                items.len()
                            )));
                        }
                        items
                    }
                };
                values
                    .iter()
                    .zip(results)
                    .enumerate()
                    .map(|(i, (v, ty))| to_val(v, *ty, &what, i))
                    .collect()
            })();
            outcome.map_err(|e| {
                let message = format!("{what} raised {}", errors::describe(py, &e));
                *lock(&raised) = Some(e);
                message.into()
            })
        })
    }
}

fn failure(py: Python<'_>, e: &Failure) -> PyErr {
    match e {
        Failure::Core(e) => errors::from_core(py, e),
        Failure::Gone(message) => errors::error(py, "unrecoverable", message, None),
    }
}

impl PySandbox {
    /// Run `f` on the sandbox without the GIL: directly when idle, through
    /// the session's thread when a session is open.
    fn with_sandbox<T: Send>(
        &self,
        py: Python<'_>,
        idle: impl FnOnce(&mut Sandbox) -> Result<T, cleanslate::Error> + Send,
        in_session: impl FnOnce(&SessionThread) -> Result<T, Failure> + Send,
    ) -> PyResult<T> {
        let outcome = py.detach(|| {
            let mut state = lock(&self.state);
            lock(&self.raised).take();
            let outcome = match &mut *state {
                State::Idle(sandbox) => Some(idle(sandbox).map_err(Failure::Core)),
                State::InSession(thread) => Some(in_session(thread)),
                State::Closed => None,
            };
            // Taken under the state lock: it belongs to this call, not to
            // another thread's.
            (outcome, lock(&self.raised).take())
        });
        match outcome {
            (None, _) => Err(errors::error(
                py,
                "unrecoverable",
                "the sandbox is closed",
                None,
            )),
            (Some(Ok(value)), _) => Ok(value),
            (Some(Err(e)), cause) => {
                let err = failure(py, &e);
                if let Some(cause) = cause {
                    err.set_cause(py, Some(cause));
                }
                Err(err)
            }
        }
    }

    /// The Python exception for `e`, caused by what a host function raised.
    fn raise(&self, py: Python<'_>, e: &Failure) -> PyErr {
        let err = failure(py, e);
        if let Some(cause) = lock(&self.raised).take() {
            err.set_cause(py, Some(cause));
        }
        err
    }

    fn args_for(&self, name: &str, args: &Bound<'_, PyTuple>) -> PyResult<Vec<Val>> {
        let Some(function) = self.module.function(name) else {
            // The library says what the module exports instead.
            return Ok(Vec::new());
        };
        let params = function.params();
        if params.len() != args.len() {
            return Err(errors::invalid(format!(
                "`{name}` takes {} arguments, not {}",
                params.len(),
                args.len()
            )));
        }
        args.iter()
            .zip(params)
            .enumerate()
            .map(|(i, (arg, ty))| to_val(&arg, *ty, name, i))
            .collect()
    }

    fn call_values(&self, py: Python<'_>, name: &str, args: Vec<Val>) -> PyResult<Py<PyAny>> {
        let name_owned = name.to_string();
        let values = self.with_sandbox(
            py,
            |sandbox| sandbox.call(name, &args),
            |thread| thread.call(|reply| Request::Values(name_owned, args.clone(), reply)),
        )?;
        from_vals(py, &values)
    }

    fn call_data(&self, py: Python<'_>, name: &str, input: &[u8]) -> PyResult<Vec<u8>> {
        let name_owned = name.to_string();
        self.with_sandbox(
            py,
            |sandbox| sandbox.call_bytes(name, input),
            |thread| thread.call(|reply| Request::Bytes(name_owned, input.to_vec(), reply)),
        )
    }

    fn begin_session(&self, py: Python<'_>) -> PyResult<()> {
        let outcome = py.detach(|| {
            let mut state = lock(&self.state);
            match std::mem::replace(&mut *state, State::Closed) {
                State::Idle(sandbox) => {
                    *state = State::InSession(SessionThread::start(sandbox));
                    Ok(())
                }
                State::InSession(thread) => {
                    *state = State::InSession(thread);
                    Err("a session is already open on this sandbox")
                }
                State::Closed => Err("the sandbox is closed"),
            }
        });
        outcome.map_err(|message| {
            let kind = if message.contains("closed") {
                "unrecoverable"
            } else {
                "invalid_arguments"
            };
            errors::error(py, kind, message, None)
        })
    }

    fn end_session(&self, py: Python<'_>) -> PyResult<()> {
        let finished = py.detach(|| {
            let mut state = lock(&self.state);
            match std::mem::replace(&mut *state, State::Closed) {
                State::InSession(thread) => {
                    let (sandbox, finished) = thread.end();
                    if let Some(sandbox) = sandbox {
                        *state = State::Idle(sandbox);
                    }
                    finished
                }
                other => {
                    *state = other;
                    Ok(())
                }
            }
        });
        finished.map_err(|e| self.raise(py, &e))
    }
}

#[pymethods]
impl PySandbox {
    #[new]
    #[pyo3(signature = (
        module, *, memory_limit = None, timeout = None, fuel = None, init = None,
        host_functions = None, bytes_host_functions = None, stack_limit = None,
        output_limit = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        module: &Bound<'_, PyAny>,
        memory_limit: Option<u64>,
        timeout: Option<&Bound<'_, PyAny>>,
        fuel: Option<u64>,
        init: Option<String>,
        host_functions: Option<&Bound<'_, PyDict>>,
        bytes_host_functions: Option<&Bound<'_, PyDict>>,
        stack_limit: Option<usize>,
        output_limit: Option<usize>,
    ) -> PyResult<Self> {
        let core = |e: cleanslate::Error| errors::from_core(py, &e);
        let runtime = runtime().map_err(core)?;
        let loaded = if let Ok(bytes) = module.extract::<PyBackedBytes>() {
            py.detach(|| runtime.load_bytes(&*bytes))
        } else {
            let path = convert::path(module, "module")?;
            py.detach(|| runtime.load_file(&path))
        };
        let module = loaded.map_err(core)?;
        let raised: Raised = Arc::default();
        let mut builder = Sandbox::builder(&module);
        if let Some(bytes) = memory_limit {
            builder = builder.memory_limit(bytes);
        }
        if let Some(timeout) = timeout {
            builder = builder.timeout(convert::duration(timeout, "timeout")?);
        }
        if let Some(units) = fuel {
            builder = builder.fuel(units);
        }
        if let Some(export) = init {
            builder = builder.init(export);
        }
        if let Some(bytes) = stack_limit {
            builder = builder.stack_limit(bytes);
        }
        if let Some(bytes) = output_limit {
            builder = builder.output_limit(bytes);
        }
        for (key, function) in host_functions.into_iter().flat_map(|d| d.iter()) {
            let (import_module, name) = import_name(&key)?;
            if !function.is_callable() {
                return Err(errors::invalid(format!(
                    "the host function {import_module}.{name} is not callable"
                )));
            }
            let signature = module
                .imports()
                .find(|i| i.module() == import_module && i.name() == name)
                .and_then(|i| i.signature().cloned())
                .ok_or_else(|| {
                    errors::invalid(format!(
                        "the module imports no function {import_module}.{name}"
                    ))
                })?;
            let what = format!("the host function {import_module}.{name}");
            builder = builder.host_fn(
                &import_module,
                &name,
                value_host_fn(function.unbind(), signature, what, raised.clone()),
            );
        }
        for (key, function) in bytes_host_functions.into_iter().flat_map(|d| d.iter()) {
            let (import_module, name) = import_name(&key)?;
            if !function.is_callable() {
                return Err(errors::invalid(format!(
                    "the host function {import_module}.{name} is not callable"
                )));
            }
            let function = function.unbind();
            let raised = raised.clone();
            let what = format!("the host function {import_module}.{name}");
            builder = builder.host_fn_bytes(&import_module, &name, move |_ctx, input| {
                Python::attach(|py| {
                    let outcome = function
                        .bind(py)
                        .call1((PyBytes::new(py, input),))
                        .and_then(|r| {
                            r.extract::<PyBackedBytes>()
                                .map(|b| b.to_vec())
                                .map_err(PyErr::from)
                        });
                    outcome.map_err(|e| {
                        let message = format!("{what} raised {}", errors::describe(py, &e));
                        *lock(&raised) = Some(e);
                        message.into()
                    })
                })
            });
        }
        let sandbox = py.detach(|| builder.build());
        let sandbox = sandbox.map_err(|e| {
            let err = errors::from_core(py, &e);
            if let Some(cause) = lock(&raised).take() {
                err.set_cause(py, Some(cause));
            }
            err
        })?;
        Ok(PySandbox {
            state: Mutex::new(State::Idle(Box::new(sandbox))),
            module,
            raised,
        })
    }

    /// Call the export ``name`` with numbers; returns None, a number, or a
    /// tuple for several results. Arguments are converted by the export's
    /// signature (i32/i64 from int, f32/f64 from float or int). The sandbox
    /// is reset afterwards, whether the call succeeded or not.
    ///
    /// Raises:
    ///     TrapError, TimeoutError, OutOfMemoryError, OutOfFuelError,
    ///     StackOverflowError, HostFunctionError: how the call failed (the
    ///     sandbox has been reset: the next call works).
    ///     FunctionNotFoundError: no such export.
    ///     InvalidArgumentsError: arguments that do not fit the signature.
    ///
    /// Example::
    ///
    ///     assert sb.call("add", 2, 3) == 5
    #[pyo3(signature = (name, *args))]
    fn call(&self, py: Python<'_>, name: &str, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let args = self.args_for(name, args)?;
        self.call_values(py, name, args)
    }

    /// Call the data-ABI export ``name`` (docs/ABI.md) with ``data`` and
    /// return its output bytes. The sandbox is reset afterwards.
    ///
    /// Raises:
    ///     GuestError: the guest reported an error (its message is the
    ///         exception's) or panicked.
    ///     and whatever :meth:`call` raises.
    ///
    /// Example::
    ///
    ///     assert sb.call_bytes("upper", b"hi") == b"HI"
    fn call_bytes<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        data: PyBackedBytes,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let output = self.call_data(py, name, &data)?;
        Ok(PyBytes::new(py, &output))
    }

    /// Like :meth:`call_bytes`, with ``obj`` sent as JSON and the output
    /// decoded from JSON.
    ///
    /// Raises:
    ///     Error: kind ``"invalid_guest_output"`` when the output is not
    ///         JSON; and whatever :meth:`call_bytes` raises.
    ///
    /// Example::
    ///
    ///     summary = sb.call_json("summarise", {"customer": "ada", "items": []})
    fn call_json(&self, py: Python<'_>, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let input = convert::py_to_json(obj)
            .map_err(|e| errors::invalid(format!("the input cannot be sent as JSON: {e}")))?;
        let input = serde_json::to_vec(&input).map_err(|e| errors::invalid(e.to_string()))?;
        let output = self.call_data(py, name, &input)?;
        let value: serde_json::Value = serde_json::from_slice(&output).map_err(|e| {
            errors::error(
                py,
                "invalid_guest_output",
                &format!("`{name}` returned output that is not JSON: {e}"),
                None,
            )
        })?;
        convert::json_to_py(py, &value)
    }

    /// A context manager whose calls keep their state between them; the
    /// sandbox is reset when it ends. Calls on the sandbox itself inside
    /// the ``with`` block are part of the session too. A call that fails in
    /// a session poisons it: later calls in it raise (kind ``poisoned``)
    /// until it ends.
    ///
    /// Example::
    ///
    ///     with sb.session() as s:
    ///         s.call("leave_secret", 7)
    ///         assert s.call("read_secret") == 7    # still there
    ///     assert sb.call("read_secret") == 0       # reset at the end
    fn session(slf: Bound<'_, Self>) -> PySession {
        PySession {
            sandbox: slf.unbind(),
        }
    }

    /// How the most recent reset went, as a dict (``path``,
    /// ``dirty_pages``, ``micros``, ``verified``, ...), or None before the
    /// first reset. Inside a session: the last reset before it.
    ///
    /// Example::
    ///
    ///     sb.call("add", 1, 2)
    ///     print(sb.last_reset["path"])     # "in_place" or "fresh"
    #[getter]
    fn last_reset(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let report = py.detach(|| match &*lock(&self.state) {
            State::Idle(sandbox) => sandbox.last_reset().cloned(),
            _ => None,
        });
        match report {
            Some(report) => convert::json_to_py(py, &cleanslate_exec::reset_json(Some(&report))),
            None => Ok(py.None()),
        }
    }

    /// The module's exported functions: ``{name: (params, results)}`` with
    /// type names such as ``"i32"``.
    ///
    /// Example::
    ///
    ///     assert sb.exports["add"] == (["i32", "i32"], ["i32"])
    #[getter]
    fn exports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let exports = PyDict::new(py);
        let names = |types: &[ValType]| -> Vec<String> {
            types
                .iter()
                .map(|t| format!("{t:?}").to_ascii_lowercase())
                .collect()
        };
        for function in self.module.functions() {
            exports.set_item(
                function.name(),
                (names(function.params()), names(function.results())),
            )?;
        }
        Ok(exports)
    }

    /// Free the sandbox. Later calls raise (kind ``unrecoverable``).
    fn close(&self, py: Python<'_>) {
        let old = py.detach(|| std::mem::replace(&mut *lock(&self.state), State::Closed));
        py.detach(move || {
            if let State::InSession(thread) = old {
                let _ = thread.end();
            }
        });
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        let exports: Vec<&str> = self.module.functions().map(|f| f.name()).collect();
        format!("Sandbox(exports={exports:?})")
    }
}

/// A session on a :class:`Sandbox` (see :meth:`Sandbox.session`): use it in
/// a ``with`` block; its calls keep their state, and the sandbox is reset
/// when the block ends.
///
/// Example::
///
///     with sb.session() as s:
///         s.call("leave_secret", 7)
///         print(s.call("read_secret"))   # 7
#[pyclass(module = "cleanslate._cleanslate", name = "Session", frozen)]
pub(crate) struct PySession {
    sandbox: Py<PySandbox>,
}

#[pymethods]
impl PySession {
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().sandbox.get().begin_session(slf.py())?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.sandbox.get().end_session(py)?;
        Ok(false)
    }

    /// :meth:`Sandbox.call` inside the session.
    ///
    /// Example::
    ///
    ///     with sb.session() as s:
    ///         s.call("add", 1, 2)
    #[pyo3(signature = (name, *args))]
    fn call(&self, py: Python<'_>, name: &str, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        self.sandbox.get().call(py, name, args)
    }

    /// :meth:`Sandbox.call_bytes` inside the session.
    ///
    /// Example::
    ///
    ///     with sb.session() as s:
    ///         s.call_bytes("echo", b"hi")
    fn call_bytes<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        data: PyBackedBytes,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.sandbox.get().call_bytes(py, name, data)
    }

    /// :meth:`Sandbox.call_json` inside the session.
    ///
    /// Example::
    ///
    ///     with sb.session() as s:
    ///         s.call_json("echo", {"a": 1})
    fn call_json(&self, py: Python<'_>, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.sandbox.get().call_json(py, name, obj)
    }
}
