//! What every call of a `run` or `bench` gets besides its own arguments:
//! `--input` (a data-ABI function's bytes), and for a WASI command
//! `--stdin` and `--arg`. The flags, the reading of the files they name and
//! the library [`Call`] built from them are shared, so `bench` measures
//! exactly the call `run` makes.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use cleanslate::Call;

use crate::call_spec::CallRequest;

/// `--input`, `--stdin` and `--arg`, as written.
#[derive(Args, Debug, Clone)]
pub struct CallIoArgs {
    /// Input bytes for data-ABI (bytes/JSON) functions: TEXT, @FILE, or `-`
    /// for standard input. Every call gets the same input.
    #[arg(long, value_name = "TEXT|@FILE|-")]
    pub input: Option<String>,
    /// WASI: standard input for every call, from FILE or `-`.
    #[arg(long, value_name = "FILE|-")]
    pub stdin: Option<PathBuf>,
    /// WASI: an argument for every call (repeatable; the first is `argv[0]`).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
}

impl CallIoArgs {
    /// Refuse more than one reader of standard input: `--input -`,
    /// `--stdin -`, and the verb's own `others` (flag name, whether it
    /// reads `-`).
    pub fn check_one_stdin_reader(&self, others: &[(&str, bool)]) -> Result<(), String> {
        let mine = [
            ("--input", self.input.as_deref() == Some("-")),
            ("--stdin", self.stdin.as_deref().is_some_and(is_dash)),
        ];
        let readers: Vec<_> = others.iter().chain(&mine).collect();
        if readers.iter().filter(|(_, reads)| *reads).count() <= 1 {
            return Ok(());
        }
        let names: Vec<&str> = readers.iter().map(|(name, _)| *name).collect();
        let (last, rest) = names.split_last().expect("at least two readers");
        Err(format!(
            "only one of {} and {last} can read standard input (`-`)",
            rest.join(", ")
        ))
    }

    /// Read the files (or standard input) the flags name.
    pub fn read(&self) -> Result<CallIo, String> {
        Ok(CallIo {
            input: self.input.as_deref().map(read_input).transpose()?,
            stdin: self.stdin.as_deref().map(read_stdin).transpose()?,
            args: self.args.clone(),
        })
    }
}

/// What every call of one `run` or `bench` gets besides its own arguments.
#[derive(Default)]
pub struct CallIo {
    /// `--input`: makes calls data-ABI calls.
    pub input: Option<Vec<u8>>,
    pub stdin: Option<Vec<u8>>,
    pub args: Vec<String>,
}

impl CallIo {
    /// The library call of `function` with `request`: standard input and
    /// argv from `--stdin` and `--arg` unless `stdin` or `argv` replace
    /// them for this call, and `env` added to the sandbox's `--env`.
    pub fn call(
        &self,
        function: &str,
        request: CallRequest,
        stdin: Option<&[u8]>,
        argv: Option<&[String]>,
        env: &[(String, String)],
    ) -> Call {
        let mut call = match request {
            CallRequest::Values(values) => Call::values(function, &values),
            CallRequest::Bytes(input) => Call::bytes(function, input),
        };
        if let Some(stdin) = stdin.or(self.stdin.as_deref()) {
            call = call.stdin(stdin);
        }
        for arg in argv.unwrap_or(&self.args) {
            call = call.arg(arg);
        }
        for (key, value) in env {
            call = call.env(key, value);
        }
        call
    }
}

fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// `--input`: TEXT, @FILE or `-`.
pub fn read_input(spec: &str) -> Result<Vec<u8>, String> {
    if spec == "-" {
        return read_bounded(std::io::stdin(), "--input from standard input");
    }
    match spec.strip_prefix('@') {
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("cannot read --input file {path}: {e}"))?;
            read_bounded(file, &format!("--input file {path}"))
        }
        None => Ok(spec.as_bytes().to_vec()),
    }
}

/// `--stdin`: FILE or `-`.
fn read_stdin(path: &Path) -> Result<Vec<u8>, String> {
    if is_dash(path) {
        return read_bounded(std::io::stdin(), "standard input");
    }
    let file = std::fs::File::open(path).map_err(|e| {
        // `--input` takes @FILE; `--stdin` takes the name itself.
        let hint = if path.to_string_lossy().starts_with('@') {
            " (--stdin takes FILE, without the `@` that --input uses)"
        } else {
            ""
        };
        format!("cannot read --stdin file {}: {e}{hint}", path.display())
    })?;
    read_bounded(file, &format!("--stdin file {}", path.display()))
}

/// The most `--input` and `--stdin` read: more than any 32-bit guest's
/// default memory could take, far less than would endanger the host.
pub const MAX_INPUT_BYTES: u64 = 256 << 20;

/// Read at most [`MAX_INPUT_BYTES`] from `reader`; more is a usage error.
fn read_bounded(reader: impl Read, what: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "{what} is longer than {} MiB, the most a run reads",
            MAX_INPUT_BYTES >> 20
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_args(input: Option<&str>, stdin: Option<&str>) -> CallIoArgs {
        CallIoArgs {
            input: input.map(str::to_string),
            stdin: stdin.map(PathBuf::from),
            args: Vec::new(),
        }
    }

    #[test]
    fn only_one_flag_reads_standard_input() {
        assert!(
            io_args(Some("-"), Some("f"))
                .check_one_stdin_reader(&[])
                .is_ok()
        );
        assert_eq!(
            io_args(Some("-"), Some("-")).check_one_stdin_reader(&[]),
            Err("only one of --input and --stdin can read standard input (`-`)".into())
        );
        assert_eq!(
            io_args(None, Some("-")).check_one_stdin_reader(&[("--calls", true)]),
            Err("only one of --calls, --input and --stdin can read standard input (`-`)".into())
        );
    }
}
