//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (liveness: no subscription
//! has failed), `/readyz` (readiness: routes fetched and every subscription running),
//! `/status` (JSON per subscription).
//!
//! The server knows nothing about the engine: it asks a [`StatusSource`] for readiness and the
//! status document, so it can be tested with a fake source.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutWriter;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the admin server reports on.
pub trait StatusSource: Send + Sync + 'static {
    /// Whether the daemon is ready to receive traffic (every subscription running).
    fn ready(&self) -> bool;
    /// Why the daemon is broken beyond repair in place (a subscription whose own task ended),
    /// if it is: liveness fails with this text.
    fn failure(&self) -> Option<String>;
    /// The `/status` document.
    fn status(&self) -> serde_json::Value;
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    source: Arc<dyn StatusSource>,
}

/// The admin router (exposed for tests and embedding).
pub fn router(metrics: Metrics, source: Arc<dyn StatusSource>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(live_handler))
        .route("/readyz", get(ready_handler))
        .route("/status", get(status_handler))
        .with_state(AppState { metrics, source })
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        // A 500 makes the scrape fail visibly (`up` = 0) instead of recording a page of nothing.
        Err(e) => {
            tracing::warn!(error = %e, "Cannot render the metrics.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("metrics encoding failed: {e}\n"),
            )
                .into_response()
        }
    }
}

async fn live_handler(State(state): State<AppState>) -> Response {
    match state.source.failure() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failed: {reason}\n"),
        )
            .into_response(),
    }
}

async fn ready_handler(State(state): State<AppState>) -> Response {
    if state.source.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn status_handler(State(state): State<AppState>) -> Response {
    axum::Json(state.source.status()).into_response()
}

/// How long a request may take to send its headers. Also closes an idle keep-alive connection
/// after as long, since hyper reads the next request's head from then on. Short: a probe or a
/// scrape sends its head at once, and a client holding [`MAX_CONNECTIONS`] silent connections
/// makes the kubelet's probes wait in the backlog, past their timeout (3 s in the manifests),
/// until a healthy pod is restarted. A scraper's kept-alive connection closing between scrapes
/// costs a connect per scrape.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a write to a client may wait for the client to read. A scrape of even a large
/// registry fits the socket buffers; a client that asks and never reads would otherwise hold its
/// connection (one of [`MAX_CONNECTIONS`]) for as long as it stays connected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections get to finish after `cancel` before they are closed. A scrape takes
/// milliseconds; a client that sent half a request and went quiet would otherwise hold the
/// daemon's exit for as long as it stays connected.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// How many connections the admin server serves at once. Probes and scrapes need a handful;
/// the cap keeps a client that opens connections without end from taking the file
/// descriptors the broker connections need. Connections past it wait in the listen backlog
/// until one closes (an idle one closes after [`HEADER_READ_TIMEOUT`]).
const MAX_CONNECTIONS: usize = 64;

/// The least time between two warnings that the admin server is at its connection cap.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The limits of the admin server (constants in production; small in tests).
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read: Duration,
    write: Duration,
    stop: Duration,
    connections: usize,
}

impl Limits {
    const DEFAULT: Self = Self {
        header_read: HEADER_READ_TIMEOUT,
        write: WRITE_TIMEOUT,
        stop: STOP_TIMEOUT,
        connections: MAX_CONNECTIONS,
    };
}

/// Serves on `listener` (bound by the caller first, so a port in use is found before anything
/// else starts) until `cancel` fires; the returned task then lets open connections finish for
/// at most a few seconds and closes the rest, so it always ends soon after `cancel`.
///
/// # Errors
/// The listener's address cannot be read.
pub fn serve(
    listener: TcpListener,
    metrics: Metrics,
    source: Arc<dyn StatusSource>,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(listener, router(metrics, source), cancel, Limits::DEFAULT)
}

fn serve_with(
    listener: TcpListener,
    app: Router,
    cancel: CancellationToken,
    limits: Limits,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let bound = listener.local_addr()?;
    // Our own accept loop rather than `axum::serve`: that one spawns every connection as a
    // detached task and waits for all of them on graceful shutdown, without a limit.
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        // At most one warning a minute: a client holding the cap keeps it there, connection
        // after connection, but a second episode an hour later is news.
        let mut last_cap_warning: Option<tokio::time::Instant> = None;
        loop {
            let room = connections.len() < limits.connections;
            if !room && last_cap_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                last_cap_warning = Some(tokio::time::Instant::now());
                tracing::warn!(
                    open = connections.len(),
                    "Admin server at its connection cap; further connections wait until one \
                     closes (logged at most once a minute)."
                );
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                accepted = listener.accept(), if room => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(
                            stream,
                            peer,
                            app.clone(),
                            cancel.clone(),
                            limits,
                        ));
                    }
                    Err(e) => accept_failed(&e, &cancel).await,
                },
                // Reaps finished connections so the set does not grow with every scrape.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let drained = tokio::time::timeout(limits.stop, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                after = ?limits.stop,
                "Admin connections still open at shutdown; closing them."
            );
            connections.shutdown().await;
        }
    });
    Ok((bound, task))
}

/// Serves one connection; on `cancel` it finishes the request in progress and closes.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    cancel: CancellationToken,
    limits: Limits,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let mut stream = TimeoutWriter::new(stream);
    stream.set_timeout(Some(limits.write));
    let conn = builder.serve_connection(
        TokioIo::new(Box::pin(stream)),
        TowerToHyperService::new(app),
    );
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "Admin connection failed.");
    }
}

/// Handles a failed `accept`: a connection that failed before it was accepted is the peer's
/// problem; anything else (out of file descriptors) is waited out briefly, so the loop does
/// not spin while it lasts.
async fn accept_failed(e: &std::io::Error, cancel: &CancellationToken) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(error = %e, "Admin server cannot accept connections; retrying in 1 s.");
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn local() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    struct Fake(AtomicBool);
    impl StatusSource for Fake {
        fn ready(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
        fn failure(&self) -> Option<String> {
            // Ready and failed at once does not happen in the daemon; one flag serves both.
            (!self.0.load(Ordering::Relaxed)).then(|| "the heartbeat task panicked".to_owned())
        }
        fn status(&self) -> serde_json::Value {
            serde_json::json!({"subscriptions": [{"group": "g"}]})
        }
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let metrics = Metrics::new();
        metrics.rebalances.with_label_values(&["g", "t"]).inc();
        let fake = Arc::new(Fake(AtomicBool::new(false)));
        let cancel = CancellationToken::new();
        let (addr, task) = serve(
            local().await,
            metrics,
            Arc::clone(&fake) as Arc<dyn StatusSource>,
            cancel.clone(),
        )
        .unwrap();
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        let get = |p: &str| http.get(format!("{base}{p}")).send();
        let live = get("/healthz").await.unwrap();
        assert_eq!(live.status(), 503);
        assert_eq!(
            live.text().await.unwrap(),
            "failed: the heartbeat task panicked\n"
        );
        assert_eq!(get("/readyz").await.unwrap().status(), 503);
        fake.0.store(true, Ordering::Relaxed);
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let text = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(
            text.contains(
                "rocketmq_webhook_rebalance_changes_total{consumer_group=\"g\",topic=\"t\"} 1"
            ),
            "{text}"
        );
        let status: serde_json::Value = get("/status").await.unwrap().json().await.unwrap();
        assert_eq!(status["subscriptions"][0]["group"], "g");
        cancel.cancel();
        task.await.unwrap();
    }

    /// A client that sent `GET` and went quiet: graceful shutdown would wait for the rest of
    /// its request forever.
    async fn stalled_client(addr: SocketAddr) -> TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(b"GET").await.unwrap();
        stalled
    }

    fn fake() -> Router {
        router(
            Metrics::new(),
            Arc::new(Fake(AtomicBool::new(true))) as Arc<dyn StatusSource>,
        )
    }

    /// Reads until the server closes the connection.
    async fn closed_by_server(stream: &mut TcpStream) {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        // Hyper may answer a half-read request with an error status before closing.
        let _ = stream.read_to_end(&mut rest).await;
    }

    #[tokio::test]
    async fn a_stalled_client_holds_the_stop_no_longer_than_the_limit() {
        let cancel = CancellationToken::new();
        let limits = Limits {
            header_read: Duration::from_secs(600),
            stop: Duration::from_millis(300),
            ..Limits::DEFAULT
        };
        let (addr, task) = serve_with(local().await, fake(), cancel.clone(), limits).unwrap();
        let mut stalled = stalled_client(addr).await;
        // Lets the server read the bytes, so the connection is mid-request at the cancel.
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the admin server waited for the stalled client")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), closed_by_server(&mut stalled))
            .await
            .expect("the stalled connection is still open after the server stopped");
    }

    #[tokio::test]
    async fn a_stalled_client_is_closed_after_the_header_read_timeout() {
        let cancel = CancellationToken::new();
        let limits = Limits {
            header_read: Duration::from_millis(300),
            stop: Duration::from_secs(600),
            ..Limits::DEFAULT
        };
        let (addr, task) = serve_with(local().await, fake(), cancel.clone(), limits).unwrap();
        let mut stalled = stalled_client(addr).await;
        tokio::time::timeout(Duration::from_secs(5), closed_by_server(&mut stalled))
            .await
            .expect("a client that never finished its headers kept its connection");
        // With nothing left open, the stop needs none of its (here very long) limit.
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the admin server did not stop")
            .unwrap();
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_until_one_closes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cancel = CancellationToken::new();
        let limits = Limits {
            header_read: Duration::from_secs(600),
            stop: Duration::from_millis(300),
            connections: 2,
            ..Limits::DEFAULT
        };
        let (addr, task) = serve_with(local().await, fake(), cancel.clone(), limits).unwrap();
        let first = stalled_client(addr).await;
        let _second = stalled_client(addr).await;
        // The kernel completes the handshake from the backlog; the request waits unread.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut answer)).await;
        assert!(early.is_err(), "a connection past the cap was served");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut answer))
            .await
            .expect("the waiting connection was not served after one closed")
            .unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_its_answer_frees_its_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Far more than the loopback's socket buffers hold, so the server's write stalls.
        let big = || async { vec![b'x'; 64 << 20] };
        let app = fake().route("/big", get(big));
        let cancel = CancellationToken::new();
        let limits = Limits {
            header_read: Duration::from_secs(600),
            write: Duration::from_millis(300),
            stop: Duration::from_millis(300),
            connections: 1,
        };
        let (addr, task) = serve_with(local().await, app, cancel.clone(), limits).unwrap();
        let mut reader_that_never_reads = TcpStream::connect(addr).await.unwrap();
        reader_that_never_reads
            .write_all(b"GET /big HTTP/1.1\r\nhost: admin\r\n\r\n")
            .await
            .unwrap();
        // The only connection slot is taken; this one waits in the backlog until it frees.
        let mut probe = TcpStream::connect(addr).await.unwrap();
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(10), probe.read_exact(&mut answer))
            .await
            .expect("a client that never read its answer kept the only connection slot")
            .unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        drop(reader_that_never_reads);
        cancel.cancel();
        task.await.unwrap();
    }
}
