//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz`
//! (readiness: routes fetched and every subscription running), `/status` (JSON per
//! subscription).
//!
//! The server knows nothing about the engine: it asks a [`StatusSource`] for readiness and the
//! status document, so it can be tested with a fake source.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the admin server reports on.
pub trait StatusSource: Send + Sync + 'static {
    /// Whether the daemon is ready to receive traffic (every subscription running).
    fn ready(&self) -> bool;
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
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(ready_handler))
        .route("/status", get(status_handler))
        .with_state(AppState { metrics, source })
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
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

/// Binds `listen` and serves until `cancel` fires.
///
/// # Errors
/// The address cannot be bound (in use, no permission).
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    source: Arc<dyn StatusSource>,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let app = router(metrics, source);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "Admin server failed.");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Fake(AtomicBool);
    impl StatusSource for Fake {
        fn ready(&self) -> bool {
            self.0.load(Ordering::Relaxed)
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
            "127.0.0.1:0".parse().unwrap(),
            metrics,
            Arc::clone(&fake) as Arc<dyn StatusSource>,
            cancel.clone(),
        )
        .await
        .unwrap();
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        let get = |p: &str| http.get(format!("{base}{p}")).send();
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        assert_eq!(get("/readyz").await.unwrap().status(), 503);
        fake.0.store(true, Ordering::Relaxed);
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let text = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(
            text.contains("rocketmq_webhook_rebalance_total{consumer_group=\"g\",topic=\"t\"} 1"),
            "{text}"
        );
        let status: serde_json::Value = get("/status").await.unwrap().json().await.unwrap();
        assert_eq!(status["subscriptions"][0]["group"], "g");
        cancel.cancel();
        task.await.unwrap();
    }
}
