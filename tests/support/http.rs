//! [`Receiver`]: a programmable webhook endpoint for end-to-end tests of the daemon.
//!
//! It listens on a free loopback port, records every request (method, path, headers, body and
//! the time it arrived) and answers with a [`Reply`] chosen by a script the test can replace at
//! any moment ([`Receiver::respond`]): status code, extra headers (`Retry-After`), body, and a
//! delay before answering (a slow endpoint). [`Receiver::stop`] closes the listener and every
//! kept-alive connection, so the daemon sees "connection refused" (an outage); [`Receiver::resume`]
//! listens again on the same port.
//!
//! Invariants:
//! - a request is recorded when it arrives, before the scripted delay, so a request the daemon
//!   gave up on (timeout) is still counted;
//! - the script runs under no lock held across an await, so a slow reply never blocks other
//!   requests or the test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

/// Largest request body the receiver reads (far above any test batch).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long [`Receiver::stop`] lets in-flight requests finish before it aborts them.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// `POST`, `PUT`, ...
    pub(crate) method: String,
    /// The path and query, e.g. `/hook`.
    pub(crate) path: String,
    /// Header names lowercased, in arrival order (repeated names appear repeatedly).
    pub(crate) headers: Vec<(String, String)>,
    /// The raw body.
    pub(crate) body: Bytes,
    /// When it arrived.
    pub(crate) at: Instant,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    /// When the body is not JSON (the message shows it).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The headers as a JSON object (last value wins), for the Python verifiers.
    pub(crate) fn headers_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        serde_json::Value::Object(map)
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    /// `200` with an empty body.
    pub(crate) fn ok() -> Self {
        Self::status(200)
    }

    /// `status` with an empty body.
    pub(crate) fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    /// `200` with `body` as a JSON answer.
    pub(crate) fn json(body: &serde_json::Value) -> Self {
        Self::ok()
            .with_header("content-type", "application/json")
            .with_body(body.to_string())
    }

    /// Adds a response header.
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub(crate) fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// Waits `delay` before answering.
    pub(crate) fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Script = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

struct Shared {
    requests: Mutex<Vec<Request>>,
    script: Mutex<Script>,
    /// Requests being answered now, and the most there ever were at once.
    open: AtomicUsize,
    peak_open: AtomicUsize,
}

/// Counts a request as open until it is answered or its connection drops.
struct Open<'a>(&'a Shared);

impl<'a> Open<'a> {
    fn new(shared: &'a Shared) -> Self {
        let now = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_open.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn script(&self) -> Script {
        Arc::clone(&self.script.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The serving task of one listening period.
struct Server {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// A webhook endpoint on `127.0.0.1:<port>`; stops serving when dropped.
pub(crate) struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<Server>>,
    /// While stopped: the port, bound but not listening. Connections are refused all the same,
    /// but nothing else in the process (another test's `free_port`, an outgoing connection's
    /// local port) can take the port before `resume` binds it again.
    reserved: Mutex<Option<tokio::net::TcpSocket>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .field("requests", &self.requests().len())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Listens on a free loopback port and answers `200` to everything until told otherwise.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind a loopback port for the receiver: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("receiver has no local address: {e}"));
        let ok: Script = Arc::new(|_| Reply::ok());
        let receiver = Self {
            addr,
            shared: Arc::new(Shared {
                requests: Mutex::new(Vec::new()),
                script: Mutex::new(ok),
                open: AtomicUsize::new(0),
                peak_open: AtomicUsize::new(0),
            }),
            server: Mutex::new(None),
            reserved: Mutex::new(None),
        };
        receiver.serve(listener);
        receiver
    }

    /// The URL of `path` on this receiver, e.g. `http://127.0.0.1:4321/hook`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replaces the script: every later request is answered with `script(request)`.
    pub(crate) fn respond(&self, script: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
        *self
            .shared
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(script);
    }

    /// Every request received so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The most requests this receiver was answering at once (from arrival to answer).
    pub(crate) fn peak_in_flight(&self) -> usize {
        self.shared.peak_open.load(Ordering::SeqCst)
    }

    /// Polls every 50 ms until `check` holds for the requests so far and returns them.
    ///
    /// # Panics
    /// After `limit`, with `what` and a summary of the requests seen.
    pub(crate) async fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&[Request]) -> bool,
    ) -> Vec<Request> {
        let deadline = Instant::now() + limit;
        loop {
            let requests = self.requests();
            if check(&requests) {
                return requests;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for: {what}; {} requests received:\n{}",
                    requests.len(),
                    summary(&requests)
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops listening and closes every connection (idle ones at once, in-flight ones after
    /// their answer, aborted after 5 s): new connections are refused until [`Self::resume`].
    pub(crate) async fn stop(&self) {
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(Server { stop, mut task }) = server {
            stop.cancel();
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        // Best effort: without the reservation `resume` still retries for 10 s.
        let reserved = tokio::net::TcpSocket::new_v4().and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(self.addr)?;
            Ok(socket)
        });
        *self.reserved.lock().unwrap_or_else(PoisonError::into_inner) = reserved.ok();
    }

    /// Listens again on the same port after [`Self::stop`] (retrying for up to 10 s while the
    /// port is still being released).
    ///
    /// # Panics
    /// When the port cannot be bound again.
    pub(crate) async fn resume(&self) {
        drop(
            self.reserved
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match bind_reusable(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cannot listen on {} again: {e}", self.addr)
                }
                Err(_) => sleep(Duration::from_millis(100)).await,
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let stop = CancellationToken::new();
        let app = Router::new()
            .fallback(record_and_answer)
            .with_state(Arc::clone(&self.shared));
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        });
        let previous = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Server { stop, task });
        if let Some(old) = previous {
            old.stop.cancel();
            old.task.abort();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            server.stop.cancel();
            server.task.abort();
        }
    }
}

/// A listener with `SO_REUSEADDR`, so the port binds again while old connections linger in
/// TIME_WAIT.
fn bind_reusable(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn record_and_answer(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
) -> Response {
    let at = Instant::now();
    let _open = Open::new(&shared);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let recorded = Request {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        at,
    };
    let reply = (shared.script())(&recorded);
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(recorded);
    if !reply.delay.is_zero() {
        sleep(reply.delay).await;
    }
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}

/// One line per request (status-relevant headers and the start of the body), for failures.
pub(crate) fn summary(requests: &[Request]) -> String {
    let start = requests.first().map(|r| r.at);
    requests
        .iter()
        .map(|r| {
            let body = String::from_utf8_lossy(&r.body);
            let short: String = body.chars().take(300).collect();
            format!(
                "  +{:?} {} {} count={} {short}",
                start.map(|s| r.at - s).unwrap_or_default(),
                r.method,
                r.path,
                r.header("rocketmq-message-count").unwrap_or("?"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The messages of every JSON-envelope request, in arrival order.
pub(crate) fn messages(requests: &[Request]) -> Vec<serde_json::Value> {
    requests
        .iter()
        .filter(|r| {
            r.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json"))
        })
        .flat_map(|r| r.json()["messages"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The text body of one envelope message (empty when it has none).
pub(crate) fn body_of(m: &serde_json::Value) -> String {
    m["body"].as_str().unwrap_or_default().to_owned()
}
