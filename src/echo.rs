//! `rocketmq-webhook echo`: a tiny webhook receiver for demos, docker-compose and tests. Prints
//! one JSON line per request (method, path, headers, body) and answers with a fixed status.

use std::future::IntoFuture as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use base64::Engine as _;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct EchoState {
    status: StatusCode,
    out: Arc<Mutex<tokio::io::Stdout>>,
}

/// How long open connections get to finish once `shutdown` completes.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves on `listen` until `shutdown` completes, answering every request with `status`; then
/// lets the requests in progress finish for at most 3 s.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    listen: SocketAddr,
    status: StatusCode,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = EchoState {
        status,
        out: Arc::new(Mutex::new(tokio::io::stdout())),
    };
    let app = Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    // Not eprintln!, which panics on a closed stderr.
    let _ = writeln!(
        std::io::stderr(),
        "echo: listening on http://{}",
        listener.local_addr()?
    );
    let stop = CancellationToken::new();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = server.as_mut() => return result,
        () = shutdown => stop.cancel(),
    }
    // axum's graceful shutdown waits for every connection without a limit: a client that sent
    // half a request, or a stdout nobody reads, held the exit for good.
    match tokio::time::timeout(STOP_TIMEOUT, server).await {
        Ok(result) => result,
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "echo: requests still open {STOP_TIMEOUT:?} after the signal; closing them"
            );
            Ok(())
        }
    }
}

async fn handle(
    State(state): State<EchoState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let mut line = serde_json::json!({
        "method": method.as_str(),
        "path": uri.to_string(),
        "headers": headers,
    });
    match std::str::from_utf8(&body) {
        Ok(text) => {
            // Show JSON bodies as JSON so the demo output is readable.
            line["body"] = serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()));
        }
        Err(_) => {
            line["bodyBase64"] =
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(&body));
        }
    }
    let mut text = line.to_string();
    text.push('\n');
    let mut out = state.out.lock().await;
    // A closed stdout (e.g. piped into `head`) must not fail the delivery.
    let _ = out.write_all(text.as_bytes()).await;
    let _ = out.flush().await;
    state.status
}
