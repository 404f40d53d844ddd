//! `cleanslate serve --exec python|javascript`: `POST /run` with
//! `{"code": "..."}` runs the code in a pool of sandboxes sharing one setup
//! snapshot,
//! and answers the run's JSON (the object `cleanslate exec --json` prints).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use cleanslate_exec::{CodeSandboxPool, ExecErrorKind};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{ServeArgs, connections, init_logging, json_error, problem, shutdown_signal, text};
use crate::EXIT_OK;

/// What the handlers share.
struct ExecServer {
    language: cleanslate_exec::Language,
    pool: CodeSandboxPool,
    setup: Option<String>,
    max_body: usize,
    body_timeout: Duration,
    concurrency: Semaphore,
    runs: AtomicU64,
    /// Runs by outcome: ok, exit_nonzero, or the error kind.
    outcomes: [(&'static str, AtomicU64); 8],
    run_micros: AtomicU64,
    refused: AtomicU64,
}

pub fn serve(args: ServeArgs, shutdown_timeout: Duration) -> Result<u8, String> {
    let language = args.exec.unwrap_or(crate::exec::Language::Python);
    let exec_language = cleanslate_exec::Language::from(language);
    // Module options that mean nothing for a code sandbox are refused,
    // not silently ignored.
    let s = &args.sandbox;
    for (flag, given) in [
        ("--init", s.init.is_some()),
        ("--stack-limit", s.stack_limit.is_some()),
        ("--fuel", s.fuel.is_some()),
        ("--env", !s.env.is_empty()),
        ("--dir (use --input-dir / --output-dir)", !s.dirs.is_empty()),
        ("--deterministic", s.deterministic.is_some()),
        ("--stub", !s.stubs.is_empty()),
    ] {
        if given {
            return Err(format!("{flag} does not apply to --exec {exec_language}"));
        }
    }
    let options = &args.exec_options;
    let builder = options
        .builder(language, &args.sandbox.load)
        .map_err(|e| e.message)?
        // A run never outlives its request.
        .timeout(args.sandbox.timeout.unwrap_or(args.request_timeout))
        .memory_limit(args.sandbox.memory_limit.unwrap_or(1 << 30))
        .output_limit(
            args.sandbox
                .output_limit
                .map_or(1 << 20, |l| usize::try_from(l).unwrap_or(usize::MAX)),
        );
    let size = args
        .pool
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let pool = CodeSandboxPool::new(builder, size)
        .map_err(|e| format!("cannot build the {exec_language} sandboxes: {e}"))?;
    pool.set_max_wait(args.pool_wait);
    let concurrency = args.max_concurrency.map_or(size * 64, |n| n.get());
    let setup = options
        .setup
        .as_deref()
        .map(crate::exec::read_code)
        .transpose()
        .map_err(|e| e.message)?;
    let outcome_names = [
        "ok",
        "exit_nonzero",
        "timeout",
        "out_of_memory",
        "output_too_large",
        "cancelled",
        "stack_overflow",
        "trap",
    ];
    let server = Arc::new(ExecServer {
        language: exec_language,
        pool,
        setup,
        max_body: args.max_body as usize,
        body_timeout: args.body_timeout,
        concurrency: Semaphore::new(concurrency.min(Semaphore::MAX_PERMITS)),
        runs: AtomicU64::new(0),
        outcomes: outcome_names.map(|n| (n, AtomicU64::new(0))),
        run_micros: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    init_logging();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let limits = connections::ConnectionLimits {
        header_timeout: args.header_timeout,
        shutdown_timeout,
    };
    let outcome = tokio.block_on(run(server, args.listen, limits));
    tokio.shutdown_background();
    outcome?;
    Ok(EXIT_OK)
}

async fn run(
    server: Arc<ExecServer>,
    listen: SocketAddr,
    limits: connections::ConnectionLimits,
) -> Result<(), String> {
    let app = Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/run", post(run_code))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    // Tools (and the tests) read the chosen port from this line.
    println!("listening on http://{address}");
    tracing::info!(%address, sandboxes = server.pool.size(), setup_ms = server.pool.setup_time().as_millis() as u64, setup_from_cache = server.pool.setup_from_cache(), language = %server.language, "serving code execution");
    connections::serve(listener, app, limits, shutdown_signal()).await;
    Ok(())
}

async fn index(State(server): State<Arc<ExecServer>>) -> Response {
    text(
        StatusCode::OK,
        format!(
            "cleanslate serve --exec {}\nevery run starts from the setup snapshot\nsetup: {}\n\nPOST /run  {{\"code\": \"...\"}} -> {{\"ok\",\"stdout\",\"stderr\",\"exit_code\",\"error\"?,\"files\"?,\"micros\",\"reset\"}}\nGET /healthz  liveness and readiness\nGET /metrics  Prometheus metrics\n",
            server.language,
            server.setup.as_deref().unwrap_or("(none)")
        ),
    )
}

async fn healthz(State(server): State<Arc<ExecServer>>) -> Response {
    let size = server.pool.size();
    text(
        StatusCode::OK,
        format!(
            "ok: {size} sandboxes, {} in use\n",
            size.saturating_sub(server.pool.idle())
        ),
    )
}

async fn metrics(State(server): State<Arc<ExecServer>>) -> Response {
    let mut body = String::new();
    body.push_str("# HELP cleanslate_exec_runs_total Runs by outcome.\n# TYPE cleanslate_exec_runs_total counter\n");
    for (outcome, n) in &server.outcomes {
        body.push_str(&format!(
            "cleanslate_exec_runs_total{{outcome=\"{outcome}\"}} {}\n",
            n.load(Ordering::Relaxed)
        ));
    }
    body.push_str(&format!(
        "# HELP cleanslate_exec_run_seconds_sum Time spent in runs, resets included.\n# TYPE cleanslate_exec_run_seconds_sum counter\ncleanslate_exec_run_seconds_sum {}\n",
        server.run_micros.load(Ordering::Relaxed) as f64 / 1e6
    ));
    body.push_str(&format!(
        "# HELP cleanslate_exec_requests_refused_total Requests refused (bad body, busy).\n# TYPE cleanslate_exec_requests_refused_total counter\ncleanslate_exec_requests_refused_total {}\n",
        server.refused.load(Ordering::Relaxed)
    ));
    body.push_str(&format!(
        "# HELP cleanslate_pool_size Sandboxes in the pool.\n# TYPE cleanslate_pool_size gauge\ncleanslate_pool_size {}\n# HELP cleanslate_pool_in_use Sandboxes running code now.\n# TYPE cleanslate_pool_in_use gauge\ncleanslate_pool_in_use {}\n",
        server.pool.size(),
        server.pool.size().saturating_sub(server.pool.idle())
    ));
    let _ = server.runs.load(Ordering::Relaxed);
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn run_code(State(server): State<Arc<ExecServer>>, body: Body) -> Response {
    let refuse = |status, kind, message: &str| {
        server.refused.fetch_add(1, Ordering::Relaxed);
        problem(status, kind, message)
    };
    let body = match super::read_body(body, server.body_timeout, server.max_body).await {
        Ok(body) => body,
        Err(response) => {
            server.refused.fetch_add(1, Ordering::Relaxed);
            return response;
        }
    };
    let code = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => match object.get("code") {
            Some(Value::String(code)) => code.clone(),
            _ => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_arguments",
                    "the body must be {\"code\": \"...\"} with the code as a string",
                );
            }
        },
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_arguments",
                "the body must be the JSON object {\"code\": \"...\"}",
            );
        }
    };
    let Ok(_permit) = server.concurrency.try_acquire() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_requests",
            "the server is handling as many requests as it allows: retry later",
        );
    };
    let worker = server.clone();
    // The pool blocks while a run goes on: off the async workers.
    let outcome = tokio::task::spawn_blocking(move || worker.pool.run(&code)).await;
    match outcome {
        Ok(Ok(result)) => {
            server.runs.fetch_add(1, Ordering::Relaxed);
            server
                .run_micros
                .fetch_add(result.duration.as_micros() as u64, Ordering::Relaxed);
            let outcome = match (&result.error, result.exit_code) {
                (Some(error), _) => error.kind.as_str(),
                (None, Some(0)) => "ok",
                (None, _) => "exit_nonzero",
            };
            if let Some((_, n)) = server.outcomes.iter().find(|(o, _)| *o == outcome) {
                n.fetch_add(1, Ordering::Relaxed);
            }
            json_error(StatusCode::OK, result.to_json())
        }
        Ok(Err(error))
            if error.kind() == ExecErrorKind::Sandbox && error.sandbox_error().is_none() =>
        {
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"kind": "pool_exhausted", "message": error.to_string()}),
            )
        }
        Ok(Err(error)) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"kind": error.kind().as_str(), "message": error.to_string()}),
        ),
        Err(panicked) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"kind": "host_panic", "message": panicked.to_string()}),
        ),
    }
}
