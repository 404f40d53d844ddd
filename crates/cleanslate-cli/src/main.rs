//! The `cleanslate` command: a thin layer that parses arguments, calls the
//! library and prints. Every decision about sandboxes lives in the library.

mod bench;
mod call_io;
mod call_spec;
mod demo;
mod demo_host;
mod exec;
mod inspect;
mod load;
mod mcp;
mod options;
mod record;
mod run;
mod serve;
mod stub;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run untrusted WebAssembly functions; every call starts from a clean slate.
#[derive(Parser)]
#[command(name = "cleanslate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::RunArgs),
    Bench(bench::BenchArgs),
    Demo(demo::DemoArgs),
    Inspect(inspect::InspectArgs),
    Serve(serve::ServeArgs),
    Exec(exec::ExecArgs),
    Mcp(mcp::McpArgs),
}

/// Exit status: all calls succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit status: at least one call failed.
pub const EXIT_CALL_FAILED: u8 = 1;
/// Exit status: bad usage, or a module that does not load.
pub const EXIT_USAGE: u8 = 2;

/// Why a verb could not run: bad usage (`usage`) or a module that does not
/// load or build (the library's error kind, e.g. `invalid_module`).
#[derive(Debug, Clone)]
pub struct CliError {
    pub kind: &'static str,
    pub message: String,
}

impl CliError {
    /// A library error, with `context` before its message.
    pub fn library(context: &str, error: &cleanslate::Error) -> CliError {
        CliError {
            kind: error.kind().as_str(),
            message: format!("{context}{error}"),
        }
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError {
            kind: "usage",
            message,
        }
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        CliError::from(message.to_string())
    }
}

impl From<CliError> for String {
    fn from(error: CliError) -> Self {
        error.message
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn main() -> ExitCode {
    quiet_demo_host_panics();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let json = match &cli.command {
        Command::Run(args) => args.json,
        Command::Bench(args) => args.json,
        Command::Inspect(args) => args.json,
        Command::Exec(args) => args.json,
        Command::Demo(_) | Command::Serve(_) | Command::Mcp(_) => false,
    };
    let outcome = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::bench(args),
        Command::Demo(args) => demo::demo(args).map_err(CliError::from),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Serve(args) => serve::serve(args).map_err(CliError::from),
        Command::Exec(args) => exec::exec(args),
        Command::Mcp(args) => mcp::mcp(args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => fail(&error, json),
    }
}

/// One line on stderr, and with `--json` one JSON object on stdout; exit
/// status 2.
fn fail(error: &CliError, json: bool) -> ExitCode {
    eprintln!("cleanslate: {}", error.message);
    if json {
        let object = serde_json::json!({
            "ok": false,
            "error": { "kind": error.kind, "message": error.message },
        });
        println!("{object}");
    }
    ExitCode::from(EXIT_USAGE)
}

/// Bad usage is one clear line and exit status 2; `--help` and
/// `--version` print as clap renders them.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let text = error.to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("bad usage");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // The command line did not parse, so whether `--json` was asked for is
    // read from the words themselves.
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    fail(&CliError::from(format!("{first} (see --help)")), json)
}

/// The built-in `host_op` panics on request to show that host panics are
/// caught; keep the default hook's backtrace noise out of the output for
/// that one, and only that one.
fn quiet_demo_host_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let from_demo_host = info
            .location()
            .is_some_and(|l| l.file().ends_with("demo_host.rs"));
        if !from_demo_host {
            default(info);
        }
    }));
}
