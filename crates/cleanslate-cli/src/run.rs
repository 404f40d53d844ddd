//! `cleanslate run`: calls in one sandbox, one after another.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::Args;
use cleanslate::Sandbox;
use serde_json::Value;

use crate::call_spec::CallSpec;
use crate::options::SandboxOptions;
use crate::record::{CallRecord, ErrorRecord, ResetRecord, json_value};
use crate::{EXIT_CALL_FAILED, EXIT_OK};

/// Run calls in one sandbox; each starts from the snapshot.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  cleanslate run guests/example.wat add:2,3 trap_unreachable:7 read_secret
  cleanslate run guest.wasm --init setup --memory-limit 16MiB --timeout 200ms --json f:1 f:2
  printf 'add:1,2\\nadd:3,4\\n' | cleanslate run guest.wasm --calls -

Exit status: 0 when every call succeeded, 1 when some call failed,
2 for bad usage or a module that does not load.")]
pub struct RunArgs {
    /// The module: a .wasm binary or .wat text file.
    pub module: PathBuf,
    /// Calls to make, in order: FUNC or FUNC:ARG,ARG,...
    #[arg(value_name = "CALL")]
    pub calls: Vec<String>,
    /// Read more calls from FILE, one per line (`-` for standard input).
    #[arg(long = "calls", value_name = "FILE")]
    pub calls_file: Option<PathBuf>,
    /// Print one JSON object per call per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxOptions,
}

pub fn run(args: RunArgs) -> Result<u8, String> {
    let mut calls: Vec<String> = args.calls.clone();
    if let Some(path) = &args.calls_file {
        calls.extend(read_calls(path)?);
    }
    if calls.is_empty() {
        return Err(
            "no calls given: name at least one CALL (FUNC or FUNC:ARG,...) or use --calls FILE"
                .into(),
        );
    }
    let (module, mut sandbox) = args.sandbox.load_and_build(&args.module)?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut all_ok = true;
    for text in &calls {
        let record = call_once(&mut sandbox, &module, text);
        all_ok &= record.ok;
        let line = if args.json {
            serde_json::to_string(&record).map_err(|e| e.to_string())?
        } else {
            record.to_text()
        };
        if writeln!(out, "{line}").is_err() {
            // The reader went away (e.g. `| head`): stop quietly.
            break;
        }
    }
    Ok(if all_ok { EXIT_OK } else { EXIT_CALL_FAILED })
}

/// Make one call and describe it. A call that cannot be made is a failed
/// record, never an abort: later calls still run.
pub fn call_once(sandbox: &mut Sandbox, module: &cleanslate::Module, text: &str) -> CallRecord {
    let spec = CallSpec::parse(text);
    let parsed = spec.values(module);
    // The arguments as read by the signature, or as written when unreadable.
    let args = match &parsed {
        Ok(values) if values.len() == spec.args.len() => values.iter().map(json_value).collect(),
        _ => spec.args.iter().map(|a| Value::String(a.clone())).collect(),
    };
    let resets_before = sandbox.resets();
    let outcome = parsed.and_then(|values| sandbox.call(&spec.function, &values));
    let reset = ResetRecord::from_report(
        sandbox
            .last_reset()
            .filter(|_| sandbox.resets() != resets_before),
    );
    let (results, error) = match outcome {
        Ok(results) => (Some(results.iter().map(json_value).collect()), None),
        Err(error) => (None, Some(ErrorRecord::from_error(&error))),
    };
    CallRecord {
        call: spec.function,
        args,
        ok: error.is_none(),
        results,
        error,
        reset,
    }
}

fn read_calls(path: &PathBuf) -> Result<Vec<String>, String> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot read calls from {}: {e}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut calls = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(|e| format!("cannot read calls from {}: {e}", path.display()))?;
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') {
            calls.push(line.to_string());
        }
    }
    Ok(calls)
}
