//! `cleanslate serve`: an HTTP/1.1 server over a pool of sandboxes; every
//! request starts from the clean slate.

mod connections;
mod exec;
mod prometheus;

use crate::units::{parse_duration, parse_size};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use cleanslate::{
    Call, CallResult, CancelToken, Error, ErrorKind, Module, PoolConfig, SandboxPool,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::EXIT_OK;
use crate::options::SandboxOptions;
use crate::record::{encode, json_value};

/// Serve a module's functions over HTTP; every request starts from the
/// module's snapshot.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  cleanslate serve guests/example.wat
  curl -X POST localhost:8080/call/add -d '{\"args\":[2,3]}'
  cleanslate serve summarise.wasm --listen 0.0.0.0:8080 --pool 4 --timeout 100ms
  cleanslate serve --exec python --setup 'import numpy as np' --pool 4
  curl -X POST localhost:8080/run -d '{\"code\":\"print(np.arange(4).sum())\"}'

POST /call/FUNC with the input as the body (bytes/JSON functions) or
{\"args\":[...]} (core-value functions). GET /healthz, /metrics, /.
Errors are JSON {\"kind\",\"message\"}: bad input 400, unknown function 404,
body not sent in time 408, body too large 413, guest fault 422, host failure
500, pool exhausted 503 (with Retry-After), timeout 504. A WASI guest's
\"stdout\", \"stderr\" and \"exit_code\" come in the JSON of successes and
errors alike. With --exec python (or javascript), POST /run with {\"code\":\"...\"} answers 200
with the run's JSON ({\"ok\",\"stdout\",\"stderr\",\"exit_code\",\"error\"?,
\"files\"?,\"micros\",\"reset\"}) however the code ended. SIGINT/SIGTERM stop
it gracefully, within --shutdown-timeout.")]
pub struct ServeArgs {
    /// The module: a .wasm binary or .wat text file (not with --exec).
    #[arg(required_unless_present = "exec", conflicts_with = "exec")]
    pub module: Option<PathBuf>,
    /// Serve a code-execution sandbox instead of a module: POST /run with
    /// {"code": "..."} runs the code from the setup snapshot and answers
    /// the JSON of `cleanslate exec --json`.
    #[arg(long, value_enum, value_name = "LANGUAGE")]
    pub exec: Option<crate::exec::Language>,
    #[command(flatten)]
    pub exec_options: crate::exec::ExecOptions,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Sandboxes in the pool (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub pool: Option<usize>,
    /// How long a request waits for a free sandbox before 503.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    pub pool_wait: Duration,
    /// Largest request body, e.g. 1MiB.
    #[arg(long, default_value = "1MiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_body: u64,
    /// Time limit for a request once its body arrived: waiting for a
    /// sandbox and the call, which is stopped at the limit (504).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Time a client has to send a request's headers; the connection is
    /// closed past it (also the longest a kept-alive connection may idle).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Time a client has to send a request's body (408 past it). A request
    /// takes a place under --max-concurrency only once its body arrived.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// After SIGINT/SIGTERM, how long requests in flight may take to finish
    /// before the server exits anyway (default: --body-timeout plus
    /// --request-timeout, the longest a request whose headers arrived can take).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Requests handled at once; more get 503 (default: 64 per sandbox).
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<std::num::NonZeroUsize>,
    #[command(flatten)]
    pub sandbox: SandboxOptions,
}

/// What every handler shares.
struct Server {
    module: Module,
    module_name: String,
    pool: SandboxPool,
    max_body: usize,
    request_timeout: Duration,
    body_timeout: Duration,
    /// Whether the module imports WASI: its responses then carry what the
    /// guest wrote to stdout and stderr, and its exit code.
    wasi: bool,
    /// Whether this machine lets resets run in place, and why.
    in_place: cleanslate::InPlaceResets,
    concurrency: Semaphore,
    next_request: AtomicU64,
    responses: ResponseCounters,
}

/// Responses by status, for /metrics: a counter per status this server
/// sends (and one per class for any other), so counting is one atomic add.
struct ResponseCounters {
    by_status: Vec<(&'static str, AtomicU64)>,
}

impl Default for ResponseCounters {
    fn default() -> Self {
        let labels = [
            "200", "400", "404", "405", "408", "413", "422", "500", "503", "504", "1xx", "2xx",
            "3xx", "4xx", "5xx",
        ];
        ResponseCounters {
            by_status: labels.iter().map(|&s| (s, AtomicU64::new(0))).collect(),
        }
    }
}

impl ResponseCounters {
    fn count(&self, status: StatusCode) {
        let exact = status.as_str();
        let class = match status.as_u16() / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        let slot = self
            .by_status
            .iter()
            .find(|(s, _)| *s == exact)
            .or_else(|| self.by_status.iter().find(|(s, _)| *s == class));
        if let Some((_, n)) = slot {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.by_status
            .iter()
            .map(|(s, n)| (*s, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
    }
}

pub fn serve(args: ServeArgs) -> Result<u8, String> {
    if args.max_body == 0 || args.max_body > u32::MAX as u64 {
        return Err("--max-body must be between 1 byte and 4 GiB".into());
    }
    for (flag, value) in [
        ("--request-timeout", args.request_timeout),
        ("--header-timeout", args.header_timeout),
        ("--body-timeout", args.body_timeout),
    ] {
        let representable = value
            .checked_mul(2)
            .and_then(|twice| Instant::now().checked_add(twice));
        if value.is_zero() || representable.is_none() {
            return Err(format!(
                "{flag} must be more than zero and less than a few centuries, not {value:?}"
            ));
        }
    }
    let shutdown_timeout = args
        .shutdown_timeout
        .unwrap_or(args.body_timeout + args.request_timeout);
    if args.exec.is_some() {
        return exec::serve(args, shutdown_timeout);
    }
    let Some(module_path) = args.module.clone() else {
        return Err("give a module to serve, or --exec python|javascript".into());
    };
    let module = args.sandbox.load.load(&module_path)?;
    let mut builder = args.sandbox.builder(&module)?;
    if args.sandbox.timeout.is_none() {
        // A guest must never outlive the request that started it.
        builder = builder.timeout(args.request_timeout);
    }
    let size = args
        .pool
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let pool = SandboxPool::new(builder, PoolConfig::new(size).max_wait(args.pool_wait))
        .map_err(|e| format!("cannot build the sandbox pool: {e}"))?;
    let concurrency = args.max_concurrency.map_or(size * 64, |n| n.get());
    if concurrency > Semaphore::MAX_PERMITS {
        return Err(format!(
            "--max-concurrency {concurrency} is more than the {} requests a server can track at once",
            Semaphore::MAX_PERMITS
        ));
    }
    let wasi = module
        .imports()
        .any(|i| i.module() == "wasi_snapshot_preview1");
    let server = Arc::new(Server {
        module_name: module_path.display().to_string(),
        pool,
        max_body: args.max_body as usize,
        request_timeout: args.request_timeout,
        body_timeout: args.body_timeout,
        wasi,
        in_place: module.runtime().in_place_resets(),
        concurrency: Semaphore::new(concurrency),
        next_request: AtomicU64::new(1),
        responses: ResponseCounters::default(),
        module,
    });
    init_logging();
    // Guest calls run on the async workers (no hand-off to another thread,
    // which cost a short call most of its time); the pool runs at most
    // `size` at once, so one more worker than sandboxes always stays free
    // for accepting connections, /healthz and /metrics.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(size + 1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let limits = connections::ConnectionLimits {
        header_timeout: args.header_timeout,
        shutdown_timeout,
    };
    let outcome = tokio.block_on(run(server, args.listen, limits));
    // A call still running past the shutdown bound holds a worker; exit
    // without waiting for it (its sandbox dies with the process).
    tokio.shutdown_background();
    outcome?;
    Ok(EXIT_OK)
}

pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLEANSLATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn run(
    server: Arc<Server>,
    listen: SocketAddr,
    limits: connections::ConnectionLimits,
) -> Result<(), String> {
    let app = Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/call/{function}", post(call))
        .layer(middleware::from_fn_with_state(server.clone(), log_request))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    // Tools (and the tests) read the chosen port from this line.
    println!("listening on http://{address}");
    tracing::info!(%address, module = %server.module_name, sandboxes = server.pool.config().size(), "serving");
    let reason = server.in_place.reason();
    if server.in_place.available() {
        tracing::info!(reason, "reset path: in place");
    } else {
        tracing::warn!(
            reason,
            "reset path: fresh instance for every call (in-place resets unavailable on this machine)"
        );
    }
    let shutdown_timeout = limits.shutdown_timeout;
    if connections::serve(listener, app, limits, shutdown_signal()).await {
        tracing::info!("stopped: in-flight requests finished");
    } else {
        tracing::warn!(
            ?shutdown_timeout,
            "stopped: requests still in flight after the shutdown timeout were dropped"
        );
    }
    Ok(())
}

/// SIGINT or SIGTERM: stop accepting, let in-flight requests finish.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: refusing new connections");
}

/// One log line per request, with an id that also goes back in a header.
/// Failures log at `info` (4xx) or `warn` (5xx); successes at `debug`, so
/// the default filter does not pay for a line per request at full load
/// (`CLEANSLATE_LOG=debug` logs every request).
async fn log_request(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    let id = server.next_request.fetch_add(1, Ordering::Relaxed);
    let method = request.method().clone();
    let started = Instant::now();
    let path = tracing::enabled!(tracing::Level::INFO).then(|| request.uri().path().to_string());
    let mut response = next.run(request).await;
    let status = response.status();
    let micros = started.elapsed().as_micros() as u64;
    let path = path.as_deref().unwrap_or("");
    let code = status.as_u16();
    if status.is_server_error() {
        tracing::warn!(id, %method, path, status = code, micros, "request failed");
    } else if status.is_client_error() {
        tracing::info!(id, %method, path, status = code, micros, "request refused");
    } else {
        tracing::debug!(id, %method, path, status = code, micros, "handled");
    }
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    server.responses.count(status);
    response
}

async fn index(State(server): State<Arc<Server>>) -> Response {
    let mut page = format!(
        "cleanslate serve: {}\nevery request starts from the module's snapshot\n\nfunctions (POST /call/NAME):\n",
        server.module_name
    );
    for f in server.module.functions() {
        let how = if f.is_data_function() {
            "body: input bytes/JSON"
        } else {
            "body: {\"args\":[...]}"
        };
        page.push_str(&format!(
            "  /call/{}  {}  ({how})\n",
            f.name(),
            f.signature()
        ));
    }
    page.push_str(&format!(
        "\nreset path on this machine: {}\n  {}\n",
        if server.in_place.available() {
            "in place"
        } else {
            "fresh instance for every call"
        },
        server.in_place.reason()
    ));
    page.push_str("\nGET /healthz  liveness and readiness\nGET /metrics  Prometheus metrics\n");
    text(StatusCode::OK, page)
}

async fn healthz(State(server): State<Arc<Server>>) -> Response {
    let m = server.pool.metrics();
    text(
        StatusCode::OK,
        format!(
            "ok: {} sandboxes, {} in use\n",
            server.pool.config().size(),
            m.in_use()
        ),
    )
}

async fn metrics(State(server): State<Arc<Server>>) -> Response {
    let mut body = prometheus::render(&server.pool.metrics());
    body.push_str(&prometheus::in_place_resets(&server.in_place));
    body.push_str("# HELP cleanslate_http_responses_total HTTP responses by status.\n# TYPE cleanslate_http_responses_total counter\n");
    for (status, n) in server.responses.counts() {
        body.push_str(&format!(
            "cleanslate_http_responses_total{{status=\"{status}\"}} {n}\n"
        ));
    }
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// A request's body, at most `max` bytes, arriving within `timeout`; else
/// the response refusing it (a late body also closes the connection: the
/// rest of it may still come).
async fn read_body(body: Body, timeout: Duration, max: usize) -> Result<Bytes, Response> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("the request body is larger than {max} bytes"),
        )),
        Err(_) => {
            let mut response = problem(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                &format!(
                    "the request body did not arrive within {timeout:?}: send it at once, or raise --body-timeout"
                ),
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

async fn call(
    State(server): State<Arc<Server>>,
    Path(function): Path<String>,
    body: Body,
) -> Response {
    // The body first, without taking a place: a client that sends slowly
    // must not hold any of the capacity meant for running guests.
    let body = match read_body(body, server.body_timeout, server.max_body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(_permit) = server.concurrency.try_acquire() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_requests",
            "the server is handling as many requests as it allows: retry later",
        );
    };
    let (call, data) = match build_call(&server.module, &function, &body) {
        Ok(planned) => planned,
        Err(refusal) => return problem(refusal.status, refusal.kind, &refusal.message),
    };
    // The request's deadline stops the call wherever it is: waiting for a
    // sandbox, or running.
    let deadline = Instant::now() + server.request_timeout;
    let token = CancelToken::new();
    let call = call.cancel_token(&token);
    let outcome = server.pool.call_async_inline_until(&call, deadline).await;
    match outcome {
        Err(error) if error.kind() == ErrorKind::Cancelled && token.is_cancelled() => {
            let mut body = json!({
                "kind": ErrorKind::Timeout.as_str(),
                "message": format!(
                    "the request took longer than its --request-timeout of {:?} and was stopped (the sandbox was reset): {error}",
                    server.request_timeout
                ),
            });
            if server.wasi {
                add_stdio(&mut body, error.exit_code(), error.stdout(), error.stderr());
            }
            json_error(StatusCode::GATEWAY_TIMEOUT, body)
        }
        Err(error) => error_response(&error, server.wasi),
        Ok(result) if data => bytes_response(result),
        Ok(result) => values_response(result, server.wasi),
    }
}

/// Why a request cannot become a call.
struct Refusal {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

/// The call a request makes, and whether it passes bytes (data ABI) rather
/// than core values.
fn build_call(module: &Module, function: &str, body: &Bytes) -> Result<(Call, bool), Refusal> {
    let Some(info) = module.function(function) else {
        return Err(Refusal {
            status: StatusCode::NOT_FOUND,
            kind: ErrorKind::FunctionNotFound.as_str(),
            message: format!("the module exports no function named `{function}`; GET / lists them"),
        });
    };
    if info.is_data_function() {
        return Ok((Call::bytes(function, body.to_vec()), true));
    }
    let bad = |message: String| Refusal {
        status: StatusCode::BAD_REQUEST,
        kind: ErrorKind::InvalidArguments.as_str(),
        message,
    };
    let args: Vec<String> = if body.is_empty() {
        Vec::new()
    } else {
        let parsed: Value = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the body is not JSON: {e}; send {{\"args\":[...]}}"
            ))
        })?;
        match parsed.get("args") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(bad(format!("argument {other} is not a number"))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(bad(format!("\"args\" must be an array, not {other}"))),
        }
    };
    let values = info
        .signature()
        .parse_args(function, &args)
        .map_err(|e| bad(e.to_string()))?;
    Ok((Call::values(function, &values), false))
}

fn bytes_response(result: CallResult) -> Response {
    let output = result.output().unwrap_or_default().to_vec();
    let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&output).is_ok() {
        "application/json"
    } else if std::str::from_utf8(&output).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    let mut response = (StatusCode::OK, output).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(code) = result.exit_code()
        && let Ok(value) = HeaderValue::from_str(&code.to_string())
    {
        response.headers_mut().insert("x-exit-code", value);
    }
    response
}

fn values_response(result: CallResult, wasi: bool) -> Response {
    let mut body = json!({
        "results": result.values().iter().map(json_value).collect::<Vec<_>>(),
    });
    if wasi {
        add_stdio(
            &mut body,
            result.exit_code(),
            result.stdout(),
            result.stderr(),
        );
    } else if let Some(code) = result.exit_code() {
        body["exit_code"] = json!(code);
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// What a WASI guest wrote and how it exited, under the names `cleanslate
/// run --json` uses: `stdout` and `stderr` always (empty when it wrote
/// nothing; base64 with `stdout_encoding` when not UTF-8), `exit_code` when
/// it exited or its `_start` returned.
fn add_stdio(body: &mut Value, exit_code: Option<i32>, stdout: &[u8], stderr: &[u8]) {
    if let Some(code) = exit_code {
        body["exit_code"] = json!(code);
    }
    for (key, bytes) in [("stdout", stdout), ("stderr", stderr)] {
        let (text, encoding) = encode(bytes);
        body[key] = json!(text);
        if let Some(encoding) = encoding {
            body[format!("{key}_encoding")] = json!(encoding);
        }
    }
}

/// An error's HTTP status: the caller's fault 4xx, the guest's 422, the
/// host's 500, capacity 503, time 504.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidArguments => StatusCode::BAD_REQUEST,
        ErrorKind::FunctionNotFound => StatusCode::NOT_FOUND,
        ErrorKind::Timeout | ErrorKind::Cancelled => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::PoolExhausted => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::HostError
        | ErrorKind::HostPanic
        | ErrorKind::ResetFailed
        | ErrorKind::Unrecoverable
        | ErrorKind::Instantiation
        | ErrorKind::MissingImport
        | ErrorKind::InvalidModule
        | ErrorKind::Poisoned => StatusCode::INTERNAL_SERVER_ERROR,
        // Traps, stack overflow, out of memory or fuel, guest errors and
        // panics, bad guest output, exits: the guest failed on this input.
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn error_response(error: &Error, wasi: bool) -> Response {
    let mut body = json!({ "kind": error.kind().as_str(), "message": error.to_string() });
    if wasi {
        add_stdio(&mut body, error.exit_code(), error.stdout(), error.stderr());
    }
    if let Some(trap) = error.kind().trap_code() {
        body["trap"] = json!(trap.as_str());
    }
    if let Some(message) = error.guest_message() {
        body["guest_message"] = json!(message);
    }
    json_error(status_of(error.kind()), body)
}

pub(crate) fn problem(status: StatusCode, kind: &str, message: &str) -> Response {
    json_error(status, json!({ "kind": kind, "message": message }))
}

/// An error body; a 503 also says when to retry.
pub(crate) fn json_error(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

pub(crate) fn text(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
