//! `cleanslate mcp --exec python|javascript`: a Model Context Protocol
//! server over stdio (with the `rmcp` SDK) offering one tool, `run_python`
//! or `run_javascript`, that runs
//! `code` from the setup snapshot and answers its stdout, stderr and exit
//! code as text. A run that fails (an exception, a non-zero exit, a
//! timeout, running out of memory) is a tool result with `isError: true`,
//! not a protocol error.

use std::sync::Arc;

use clap::Args;
use cleanslate_exec::{CodeSandboxPool, RunResult};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::json;

use crate::exec::{ExecLimits, ExecOptions, Language};
use crate::{CliError, EXIT_OK};

/// The tools' names: contracts with the clients' configurations.
const RUN_PYTHON: &str = "run_python";
const RUN_JAVASCRIPT: &str = "run_javascript";

/// Serve a code sandbox to MCP clients (agents) over stdio: the tool
/// `run_python` (or `run_javascript`) runs `code` from the setup snapshot,
/// each call from the same clean slate.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  cleanslate mcp --exec python
  cleanslate mcp --exec python --setup 'import numpy as np' --timeout 10s
  cleanslate mcp --exec javascript

A client configuration (e.g. Claude Desktop's claude_desktop_config.json):
  {\"mcpServers\": {\"cleanslate\": {\"command\": \"cleanslate\",
    \"args\": [\"mcp\", \"--exec\", \"python\"]}}}

The sandbox starts before the server answers (the first use compiles the
interpreter, which takes minutes). Exit status: 0 when the client closes the
connection, 2 for bad usage or a guest that cannot start.")]
pub struct McpArgs {
    /// The language of the tool (python: `run_python`, javascript:
    /// `run_javascript`).
    #[arg(long, value_enum, value_name = "LANGUAGE", default_value = "python")]
    pub exec: Language,
    #[command(flatten)]
    pub exec_options: ExecOptions,
    #[command(flatten)]
    pub limits: ExecLimits,
    /// Sandboxes that run calls side by side (a client may send several
    /// calls at once); calls beyond them wait for a free one.
    #[arg(long, default_value = "1", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub pool: u16,
    #[command(flatten)]
    pub load: crate::load::LoadOptions,
}

pub fn mcp(args: McpArgs) -> Result<u8, CliError> {
    let builder = args
        .limits
        .apply(args.exec_options.builder(args.exec, &args.load)?);
    let setup = args
        .exec_options
        .setup
        .as_deref()
        .map(crate::exec::read_code)
        .transpose()?;
    let sandbox = crate::exec::build(args.exec, builder)?;
    let pool = CodeSandboxPool::from_sandbox(sandbox, usize::from(args.pool))
        .map_err(|e| crate::exec::exec_error(&e))?;
    // A call waits for a sandbox as long as a client waits for it; a
    // cancel ends the run it waits behind.
    pool.set_max_wait(std::time::Duration::from_secs(24 * 3600));
    let server = McpServer {
        language: args.exec,
        pool: Arc::new(pool),
        setup,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let outcome = runtime.block_on(async move {
        let service = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| format!("the MCP handshake failed: {e}"))?;
        service
            .waiting()
            .await
            .map_err(|e| format!("the MCP server stopped: {e}"))?;
        Ok::<(), String>(())
    });
    // A read of stdin cannot be cancelled: do not wait for one at exit.
    runtime.shutdown_background();
    outcome?;
    Ok(EXIT_OK)
}

/// The handler: a pool of sandboxes of one setup.
struct McpServer {
    language: Language,
    pool: Arc<CodeSandboxPool>,
    setup: Option<String>,
}

impl McpServer {
    /// The tool's name.
    fn name(&self) -> &'static str {
        match self.language {
            Language::Python => RUN_PYTHON,
            Language::Javascript => RUN_JAVASCRIPT,
        }
    }

    /// The language's name for people.
    fn language_name(&self) -> &'static str {
        cleanslate_exec::Language::from(self.language).display_name()
    }

    fn tool(&self) -> Tool {
        let mut description = match self.language {
            Language::Python => String::from(
                "Run Python 3 code in a sandbox and get its stdout, stderr and exit code. \
                 Every call starts from the same clean slate: nothing (variables, imports, \
                 files) carries over from one call to the next, so send complete programs. \
                 Print what you want to see. No network; a time and memory limit apply.",
            ),
            Language::Javascript => String::from(
                "Run JavaScript (ES2023, QuickJS; no Node or browser APIs) in a sandbox and \
                 get its console output and exit code. Every call starts from the same clean \
                 slate: nothing (variables, globals) carries over from one call to the next, \
                 so send complete programs. Use console.log for what you want to see. No \
                 network or files; a time and memory limit apply.",
            ),
        };
        if let Some(setup) = &self.setup {
            description.push_str(&format!(
                " Each call starts after this setup code has run:\n{setup}"
            ));
        }
        let schema = json!({
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": format!("The {} source to run.", self.language_name()),
                }
            },
            "required": ["code"],
        });
        let serde_json::Value::Object(schema) = schema else {
            unreachable!("a JSON object")
        };
        Tool::new(self.name(), description, Arc::new(schema as JsonObject))
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("cleanslate", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "{} runs {} code in a sandbox, each call from a clean slate.",
                self.name(),
                self.language_name()
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![self.tool()]))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        (name == self.name()).then(|| self.tool())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = self.name();
        if request.name != name {
            return Err(ErrorData::invalid_params(
                format!("no tool named {:?} (there is {name})", request.name),
                None,
            ));
        }
        let code = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("code"))
            .and_then(|c| c.as_str())
            .ok_or_else(|| {
                ErrorData::invalid_params(format!("{name} takes `code`, a string"), None)
            })?
            .to_string();
        // A client's notifications/cancelled for this call stops the run
        // (the sandbox is reset as after any other end), so that the calls
        // queued behind it do not wait out its timeout.
        let cancel = cleanslate::CancelToken::new();
        let watcher = {
            let cancel = cancel.clone();
            let requested = context.ct.clone();
            tokio::spawn(async move {
                requested.cancelled().await;
                cancel.cancel();
            })
        };
        let pool = Arc::clone(&self.pool);
        let outcome =
            tokio::task::spawn_blocking(move || pool.run_cancellable(&code, &cancel)).await;
        watcher.abort();
        let outcome = outcome
            .map_err(|e| ErrorData::internal_error(format!("the run panicked: {e}"), None))?;
        let result = match outcome {
            Ok(result) => {
                let text = render(&result);
                if result.ok() {
                    CallToolResult::success(vec![ContentBlock::text(text)])
                } else {
                    CallToolResult::error(vec![ContentBlock::text(text)])
                }
            }
            Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
                "the sandbox could not run the code: {e}"
            ))]),
        };
        Ok(result.into())
    }
}

/// A run as text: its exit code (or why it did not complete), its stdout,
/// its stderr and the names of the files it left in /output.
fn render(result: &RunResult) -> String {
    let mut text = match (&result.error, result.exit_code) {
        (Some(error), _) => format!("error: {}: {}\n", error.kind, error.message),
        (None, Some(code)) => format!("exit code: {code}\n"),
        (None, None) => "exit code: none\n".to_string(),
    };
    for (name, bytes) in [("stdout", &result.stdout), ("stderr", &result.stderr)] {
        text.push_str(&format!("--- {name} ---\n"));
        let output = String::from_utf8_lossy(bytes);
        text.push_str(&output);
        if !output.is_empty() && !output.ends_with('\n') {
            text.push('\n');
        }
    }
    if !result.files.is_empty() {
        let names: Vec<&str> = result.files.iter().map(|f| f.name.as_str()).collect();
        text.push_str(&format!(
            "--- files written to the output folder ---\n{}\n",
            names.join("\n")
        ));
    }
    text
}
