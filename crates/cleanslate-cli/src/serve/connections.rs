//! Accepting connections and speaking HTTP/1.1 on them, with the bounds a
//! server facing untrusted clients needs: a client gets a limited time to
//! send its request's headers, and shutdown waits a limited time for the
//! requests in flight.
//!
//! (`axum::serve` offers neither: it sets no timer on hyper, so a client
//! that sends half its headers holds its connection for ever, and its
//! graceful shutdown waits for every connection to close, which such a
//! client never does.)

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Time bounds on connections.
pub struct ConnectionLimits {
    /// For the whole head of each request, from the first byte read for it
    /// (or from the end of the previous response, on a kept-alive
    /// connection, so this also closes idle connections).
    pub header_timeout: Duration,
    /// How long the requests in flight at shutdown may take to finish.
    pub shutdown_timeout: Duration,
}

/// Serve `app` on `listener` until `shutdown` completes, then stop
/// accepting, let the requests in flight finish for up to
/// `limits.shutdown_timeout`, and return. Returns whether every connection
/// closed in time.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // Connections watch `stop` to begin their graceful shutdown; each holds
    // a clone of `open`, whose sender sees when the last one is dropped.
    let (stop, stopping) = watch::channel(false);
    let (open, open_connections) = watch::channel(());
    drop(open_connections);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    pause_after_accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let mut stopping = stopping.clone();
        let still_open = open.subscribe();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let closed = tokio::select! {
                _ = connection.as_mut() => true,
                _ = stopping.wait_for(|stop| *stop) => false,
            };
            if !closed {
                // Finish the request in progress, if any, then close; a
                // connection between requests closes at once.
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
            drop(still_open);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    tokio::time::timeout(limits.shutdown_timeout, open.closed())
        .await
        .is_ok()
}

/// Accepting can fail for reasons of one connection (reset before it was
/// accepted: go on at once) or of the process (out of file descriptors:
/// wait a little, or the loop spins while the condition lasts).
async fn pause_after_accept_error(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
