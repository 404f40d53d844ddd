//! `cleanslate run`: calls in one sandbox, one after another.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use clap::Args;
use cleanslate::Sandbox;
use serde_json::Value;

use crate::call_io::{CallIo, CallIoArgs};
use crate::call_spec::{CallRequest, CallSpec};
use crate::options::SandboxOptions;
use crate::record::{CallRecord, ErrorRecord, ResetRecord, encode_field, json_value};
use crate::{EXIT_CALL_FAILED, EXIT_OK};

/// Run calls in one sandbox; each starts from the snapshot.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  cleanslate run guests/example.wat add:2,3 trap_unreachable:7 read_secret
  cleanslate run guest.wasm --init setup --memory-limit 16MiB --timeout 200ms --json f:1 f:2
  printf 'add:1,2\\nadd:3,4\\n' | cleanslate run guest.wasm --calls -
  cleanslate run summarise.wasm summarise --input @order.json --json
  cleanslate run tool.wasm _start --arg tool --arg -v --stdin input.txt --dir ./data::/data:ro
  cleanslate run own_abi.wasm go --stub env.log=0 --stub env.abort=trap
  cleanslate run guest.wasm --init setup --save-snapshot setup.snapshot
  cleanslate run guest.wasm --snapshot setup.snapshot f:1 f:2

Exit status: 0 when every call succeeded, 1 when some call failed,
2 for bad usage or a module that does not load.")]
pub struct RunArgs {
    /// The module: a .wasm binary or .wat text file.
    pub module: PathBuf,
    /// Calls to make, in order: FUNC or FUNC:ARG,ARG,...
    #[arg(value_name = "CALL")]
    pub calls: Vec<String>,
    /// Read more calls from FILE, one per line (`-` for standard input). A
    /// line beginning with `{` is a JSON call record: {"call":F, "args":[..],
    /// "argv":[..], "stdin":TEXT, "env":{K:V}, "input":TEXT} (all but call
    /// optional; they apply to that call only).
    #[arg(long = "calls", value_name = "FILE")]
    pub calls_file: Option<PathBuf>,
    #[command(flatten)]
    pub io: CallIoArgs,
    /// Print one JSON object per call per line.
    #[arg(long)]
    pub json: bool,
    /// Start from a snapshot saved with --save-snapshot (by any process,
    /// from a module with the same bytes) instead of the state the sandbox
    /// was built in: every call then starts from it.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Save the clean slate (after --init, or the --snapshot restored) to
    /// FILE before the calls, for --snapshot in later runs. With it, no
    /// CALL is needed. The file holds the guest's memory: it is readable by
    /// its owner only.
    #[arg(long, value_name = "FILE")]
    pub save_snapshot: Option<PathBuf>,
    #[command(flatten)]
    pub sandbox: SandboxOptions,
}

pub fn run(args: RunArgs) -> Result<u8, crate::CliError> {
    let calls_from_stdin = args
        .calls_file
        .as_deref()
        .is_some_and(|p| p.as_os_str() == "-");
    args.io
        .check_one_stdin_reader(&[("--calls", calls_from_stdin)])?;
    // Calls from the command line, then from --calls read one line at a
    // time as they run: a file of any length (or an endless pipe) costs
    // one line of memory.
    let file_calls = match &args.calls_file {
        Some(path) => Some(CallLines::open(path)?),
        None => None,
    };
    let mut calls = args
        .calls
        .iter()
        .cloned()
        .map(Ok)
        .chain(file_calls.into_iter().flatten())
        .peekable();
    match calls.peek() {
        None if args.save_snapshot.is_some() => {}
        None => {
            return Err(
                "no calls given: name at least one CALL (FUNC or FUNC:ARG,...) or use --calls FILE"
                    .into(),
            );
        }
        Some(Err(e)) => return Err(e.clone().into()),
        Some(Ok(_)) => {}
    }
    let io = args.io.read()?;
    let (module, mut sandbox) = args.sandbox.load_and_build(&args.module)?;
    if let Some(path) = &args.snapshot {
        let snapshot = cleanslate::Snapshot::load(&module, path)
            .map_err(|e| crate::CliError::library("cannot load the snapshot: ", &e))?;
        sandbox
            .restore(&snapshot)
            .map_err(|e| crate::CliError::library("cannot restore the snapshot: ", &e))?;
    }
    if let Some(path) = &args.save_snapshot {
        sandbox
            .snapshot()
            .and_then(|snapshot| snapshot.save(path))
            .map_err(|e| crate::CliError::library("cannot save the snapshot: ", &e))?;
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut all_ok = true;
    for text in calls {
        let text = text?;
        let (record, guest_stdout, guest_stderr) = call_once(&mut sandbox, &module, &text, &io);
        all_ok &= record.ok;
        let line = if args.json {
            serde_json::to_string(&record).map_err(|e| e.to_string())?
        } else {
            // The guest's own output first, as a program's would appear.
            let _ = std::io::stderr().write_all(&guest_stderr);
            if out.write_all(&guest_stdout).is_err() {
                break;
            }
            record.to_text()
        };
        if writeln!(out, "{line}").is_err() {
            // The reader went away (e.g. `| head`): stop quietly.
            break;
        }
    }
    Ok(if all_ok { EXIT_OK } else { EXIT_CALL_FAILED })
}

/// One call as written: a `FUNC:ARGS` line, or a JSON call record.
struct Planned {
    function: String,
    /// The argument texts, in order.
    args: Vec<String>,
    /// The input of a bytes/JSON function for this call (else `--input`).
    input: Option<Vec<u8>>,
    /// WASI arguments replacing `--arg`.
    argv: Option<Vec<String>>,
    /// WASI standard input replacing `--stdin`.
    stdin: Option<Vec<u8>>,
    /// WASI environment added to `--env`.
    env: Vec<(String, String)>,
}

/// A `--calls` line that begins with `{`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCall {
    call: String,
    #[serde(default)]
    args: Vec<Value>,
    argv: Option<Vec<String>>,
    stdin: Option<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    input: Option<String>,
}

impl Planned {
    /// Read `text`; a JSON record that cannot be read is the call's error:
    /// the function's name when it can be found, and what is wrong.
    fn parse(text: &str) -> Result<Planned, (String, String)> {
        if !text.trim_start().starts_with('{') {
            let spec = CallSpec::parse(text);
            return Ok(Planned {
                function: spec.function,
                args: spec.args,
                input: None,
                argv: None,
                stdin: None,
                env: Vec::new(),
            });
        }
        let call: JsonCall = serde_json::from_str(text).map_err(|e| {
            let name = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("call").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            (name, format!("not a JSON call record: {e}"))
        })?;
        let mut args = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            match arg {
                Value::Number(n) => args.push(n.to_string()),
                Value::String(s) => args.push(s.clone()),
                other => {
                    return Err((
                        call.call.clone(),
                        format!("`args` holds numbers (or \"nan\", \"inf\"), not {other}"),
                    ));
                }
            }
        }
        Ok(Planned {
            function: call.call,
            args,
            input: call.input.map(String::into_bytes),
            argv: call.argv,
            stdin: call.stdin.map(String::into_bytes),
            env: call.env.into_iter().collect(),
        })
    }
}

/// Make one call and describe it; also return what the guest wrote to
/// stdout and stderr. A call that cannot be made is a failed record, never
/// an abort: later calls still run.
pub fn call_once(
    sandbox: &mut Sandbox,
    module: &cleanslate::Module,
    text: &str,
    io: &CallIo,
) -> (CallRecord, Vec<u8>, Vec<u8>) {
    let (planned, spec, request) = match Planned::parse(text) {
        Ok(p) => {
            let spec = CallSpec {
                function: p.function.clone(),
                args: p.args.clone(),
            };
            let request = spec.request(module, p.input.as_deref().or(io.input.as_deref()));
            (Some(p), spec, request)
        }
        Err((function, message)) => (
            None,
            CallSpec {
                function,
                args: Vec::new(),
            },
            Err(cleanslate::Error::invalid_arguments(message)),
        ),
    };
    // The arguments as read by the signature, or as written when unreadable.
    let args = match &request {
        Ok(CallRequest::Values(values)) if values.len() == spec.args.len() => {
            values.iter().map(json_value).collect()
        }
        _ => spec.args.iter().map(|a| Value::String(a.clone())).collect(),
    };
    let resets_before = sandbox.resets();
    let outcome = request.and_then(|request| {
        let planned = planned.as_ref();
        let call = io.call(
            &spec.function,
            request,
            planned.and_then(|p| p.stdin.as_deref()),
            planned.and_then(|p| p.argv.as_deref()),
            planned.map(|p| p.env.as_slice()).unwrap_or_default(),
        );
        sandbox.call_with(&call)
    });
    let reset = ResetRecord::from_report(
        sandbox
            .last_reset()
            .filter(|_| sandbox.resets() != resets_before),
    );
    let mut record = CallRecord {
        call: spec.function,
        args,
        ok: true,
        results: None,
        output: None,
        output_encoding: None,
        exit_code: None,
        stdout: None,
        stdout_encoding: None,
        stderr: None,
        stderr_encoding: None,
        error: None,
        reset,
    };
    let (stdout, stderr) = match outcome {
        Ok(result) => {
            (record.output, record.output_encoding) = encode_field(result.output());
            if record.output.is_none() {
                record.results = Some(result.values().iter().map(json_value).collect());
            }
            record.exit_code = result.exit_code();
            (result.stdout().to_vec(), result.stderr().to_vec())
        }
        Err(error) => {
            record.ok = false;
            record.error = Some(ErrorRecord::from_error(&error));
            (error.stdout().to_vec(), error.stderr().to_vec())
        }
    };
    (record.stdout, record.stdout_encoding) = encode_field(present(&stdout));
    (record.stderr, record.stderr_encoding) = encode_field(present(&stderr));
    (record, stdout, stderr)
}

/// `bytes`, unless there are none.
fn present(bytes: &[u8]) -> Option<&[u8]> {
    (!bytes.is_empty()).then_some(bytes)
}

/// The longest line `--calls` accepts. A call line names a function and
/// its arguments; anything longer is a mistake (or `/dev/zero`), refused
/// before it is held in memory.
pub const MAX_CALL_LINE: usize = 1 << 20;

/// The calls of a `--calls` file, one per non-empty line that is not a
/// `#` comment, each at most [`MAX_CALL_LINE`] bytes.
struct CallLines {
    reader: Box<dyn BufRead>,
    source: String,
    line: usize,
    done: bool,
}

impl CallLines {
    fn open(path: &PathBuf) -> Result<Self, String> {
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("cannot read calls from {}: {e}", path.display()))?;
            Box::new(std::io::BufReader::new(file))
        };
        Ok(CallLines {
            reader,
            source: path.display().to_string(),
            line: 0,
            done: false,
        })
    }

    /// The next raw line without its newline; `None` at the end.
    fn next_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        let mut buffer = Vec::new();
        let limit = MAX_CALL_LINE as u64 + 1;
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut buffer)
            .map_err(|e| format!("cannot read calls from {}: {e}", self.source))?;
        if read == 0 {
            return Ok(None);
        }
        self.line += 1;
        if buffer.last() == Some(&b'\n') {
            buffer.pop();
        } else if buffer.len() > MAX_CALL_LINE {
            return Err(format!(
                "line {} of {} is longer than {} KiB, the longest call line accepted",
                self.line,
                self.source,
                MAX_CALL_LINE >> 10
            ));
        }
        Ok(Some(buffer))
    }
}

impl Iterator for CallLines {
    type Item = Result<String, String>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let bytes = match self.next_line() {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let Ok(text) = String::from_utf8(bytes) else {
                self.done = true;
                return Some(Err(format!(
                    "line {} of {} is not UTF-8 text",
                    self.line, self.source
                )));
            };
            let text = text.trim();
            if !text.is_empty() && !text.starts_with('#') {
                return Some(Ok(text.to_string()));
            }
        }
        self.done = true;
        None
    }
}
