//! [`Pool`]: keep-alive HTTP/1.1 connections, each driven by the request that uses it.
//!
//! Why not hyper-util's pooled client (used until this module): it runs every connection in a
//! task of its own, so each request crossed tasks twice (the request into the connection's
//! task, the answer back) and woke two tasks per exchange. With one message per request that
//! hand-off was a large part of the daemon's CPU, and in orderly delivery, where one request
//! waits for the one before, it was on the critical path. Here the future that sends a request
//! also polls hyper's connection (`http1::Connection`) until the answer's body has been read:
//! no task per connection, and the socket wakes the request's own task.
//!
//! An idle connection is polled by nobody. The next request that takes it polls it first: one
//! the endpoint closed meanwhile (its keep-alive timeout) shows up then, is dropped, and the
//! next one is taken, or a new one made. A request that a reused connection refused before
//! writing it (closed at the same moment) goes out once more on a new connection.
//!
//! A reaper task looks at the idle connections every [`REAP_INTERVAL`] and closes the ones the
//! endpoint closed and the ones idle longer than [`IDLE_TIMEOUT`], so a quiet daemon does not
//! sit on half-closed sockets. It is started with the first idle connection, holds the pool
//! only weakly and ends once the pool is gone.
//!
//! Invariants: a connection is idle in the pool only after an answer was read to its end; at
//! most `max_idle` connections per endpoint (scheme, host and port) stay idle, newest first;
//! none is used once idle longer than [`IDLE_TIMEOUT`]. The caller's timeout bounds an exchange
//! from connecting to the last byte of the answer: nothing here waits without it.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// How long an idle connection is kept (the value reqwest and then hyper-util used here).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How often the reaper looks at idle connections. Endpoints commonly close idle connections
/// after 5 s (Node.js) to 75 s (nginx); a few seconds keeps half-closed sockets short-lived for
/// a few system calls per idle connection.
const REAP_INTERVAL: Duration = Duration::from_secs(5);

/// TCP keepalive probes on pooled connections, so a silently dropped peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why an exchange failed. The text never holds the URL or the address (they may carry
/// credentials or internal names); the log line around it names the subscription.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    #[error("connect")]
    Connect(#[source] io::Error),
    #[error("TLS handshake")]
    Tls(#[source] io::Error),
    /// The connection failed before the request was written (HTTP handshake, or closed as the
    /// request was handed to it): nothing reached the endpoint.
    #[error("connection closed before the request was sent")]
    NotSent(#[source] hyper::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// An answer read to its end, or to [`super::MAX_ANSWER_BYTES`] (`truncated`).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) parts: http::response::Parts,
    pub(crate) body: Bytes,
    pub(crate) truncated: bool,
}

/// Connections for any number of endpoints with the same TLS settings. Cheap to clone; clones
/// share the idle connections.
#[derive(Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    tls: TlsConnector,
    max_idle: usize,
    idle_timeout: Duration,
    reap_interval: Duration,
    /// Set once the reaper task runs.
    reaper: OnceLock<()>,
    /// One entry per endpoint any webhook of this pool delivers to; a daemon has one or a few,
    /// so a list beats a map, and it is searched only when a webhook is built.
    endpoints: Mutex<Vec<Arc<Endpoint>>>,
}

/// Where requests go, and its idle connections. Webhooks look theirs up once ([`Pool::endpoint`]).
pub(crate) struct Endpoint {
    /// Host as the socket wants it: no brackets around IPv6 literals.
    host: String,
    port: u16,
    /// `Some` for `https`.
    server_name: Option<ServerName<'static>>,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// A connection's socket: plain TCP for `http`, rustls over TCP for `https`; the broker
/// client's stream type (Box's `AsyncWrite` forwards vectored writes, so hyper still writes
/// head and body with one `writev`).
type Socket = Box<dyn crate::client::Transport>;

type Driver = http1::Connection<TokioIo<Socket>, Full<Bytes>>;

/// One connection: the handle requests are sent on and the state machine that moves the bytes.
/// `driver` is `None` once the connection has ended. Always boxed: hyper's state machine is a
/// few hundred bytes, and every future that holds a connection would otherwise carry it inline
/// (and copy it whenever the future is moved, e.g. boxed by the consumer's worker).
struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
    driver: Option<Driver>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("max_idle", &self.shared.max_idle)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool that keeps at most `max_idle` idle connections per endpoint (at least one).
    pub(crate) fn new(tls: ClientConfig, max_idle: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                tls: TlsConnector::from(Arc::new(tls)),
                max_idle: max_idle.max(1),
                idle_timeout: IDLE_TIMEOUT,
                reap_interval: REAP_INTERVAL,
                reaper: OnceLock::new(),
                endpoints: Mutex::new(Vec::new()),
            }),
        }
    }

    /// This new pool, dropping idle connections after `idle_timeout` and reaping every
    /// `reap_interval` (tests).
    #[cfg(test)]
    pub(crate) fn with_timers(mut self, idle_timeout: Duration, reap_interval: Duration) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("a pool not yet shared");
        shared.idle_timeout = idle_timeout;
        shared.reap_interval = reap_interval;
        self
    }

    /// Idle connections of `endpoint` now (tests).
    #[cfg(test)]
    pub(crate) fn idle(endpoint: &Endpoint) -> usize {
        endpoint
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The endpoint of `uri` (`http` or `https`, with a host), shared with every webhook of this
    /// pool that delivers to the same scheme, host and port.
    ///
    /// # Errors
    /// The reason, when `uri` has no host or its host is not a valid TLS server name.
    pub(crate) fn endpoint(&self, uri: &Uri) -> Result<Arc<Endpoint>, String> {
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or("the URL has no host")?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let server_name = if https {
            Some(
                ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("the host is not a TLS server name: {e}"))?,
            )
        } else {
            None
        };
        let mut endpoints = self
            .shared
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = endpoints.iter().find(|e| {
            e.host == host && e.port == port && e.server_name.is_some() == server_name.is_some()
        }) {
            return Ok(Arc::clone(found));
        }
        let endpoint = Arc::new(Endpoint {
            host: host.to_owned(),
            port,
            server_name,
            idle: Mutex::new(Vec::new()),
        });
        endpoints.push(Arc::clone(&endpoint));
        Ok(endpoint)
    }

    /// Sends `request` to `endpoint` and reads the answer. `request` must be in origin form
    /// with its `Host` header set. Unbounded in time: the caller puts a timeout around it, and
    /// reads `handed` to learn whether the request was handed to a connection before it ran
    /// out (until then nothing can have reached the application).
    pub(crate) async fn exchange(
        &self,
        endpoint: &Endpoint,
        mut request: Request<Full<Bytes>>,
        handed: &AtomicBool,
    ) -> Result<Answer, ExchangeError> {
        let mut resent = false;
        loop {
            handed.store(false, Ordering::Relaxed);
            let pooled = if resent {
                None
            } else {
                self.ready_idle(endpoint).await
            };
            let (mut conn, reused) = match pooled {
                Some(conn) => (conn, true),
                // Boxed: connecting (DNS, TCP, TLS) is a large future that most requests
                // never run, and every request's future would otherwise be that large.
                None => (Box::pin(self.connect(endpoint)).await?, false),
            };
            handed.store(true, Ordering::Relaxed);
            let sent = drive(&mut conn.driver, conn.send.try_send_request(request)).await;
            let response = match sent {
                Ok(response) => response,
                Err(mut refused) => match refused.take_message() {
                    // Not written: the connection closed as it was taken. Once more, on a new
                    // connection (other idle ones may have been closed with it).
                    Some(unsent) if reused && !resent => {
                        request = unsent;
                        resent = true;
                        continue;
                    }
                    Some(_) => return Err(ExchangeError::NotSent(refused.into_error())),
                    None => return Err(refused.into_error().into()),
                },
            };
            let (parts, incoming) = response.into_parts();
            let (body, truncated) = read_body(&mut conn.driver, incoming).await?;
            if !truncated {
                self.put_back(endpoint, conn);
            }
            return Ok(Answer {
                parts,
                body,
                truncated,
            });
        }
    }

    /// The newest idle connection of `endpoint` that is still open and ready for a request;
    /// closed and expired ones are dropped on the way.
    async fn ready_idle(&self, endpoint: &Endpoint) -> Option<Box<Conn>> {
        loop {
            let mut conn = {
                let mut idle = endpoint.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let newest = idle.pop()?;
                if newest.since.elapsed() > self.shared.idle_timeout {
                    // Newest first: every other one is older still.
                    idle.clear();
                    return None;
                }
                newest.conn
            };
            // Polling the connection reads a close that arrived while it was idle; a
            // connection still open signals at once that it wants the next request.
            if drive(&mut conn.driver, conn.send.ready()).await.is_ok() && conn.driver.is_some() {
                return Some(conn);
            }
        }
    }

    fn put_back(&self, endpoint: &Endpoint, conn: Box<Conn>) {
        if conn.driver.is_none() || conn.send.is_closed() {
            return;
        }
        {
            let mut idle = endpoint.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= self.shared.max_idle {
                idle.remove(0);
            }
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
        self.start_reaper();
    }

    /// Starts the reaper, once, on the runtime of the first request that leaves a connection
    /// idle (requests always run on one).
    fn start_reaper(&self) {
        if self.shared.reaper.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.shared.reaper.set(()).is_ok() {
            runtime.spawn(reap(Arc::downgrade(&self.shared)));
        }
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<Conn>, ExchangeError> {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(ExchangeError::Connect)?;
        tcp.set_nodelay(true).map_err(ExchangeError::Connect)?;
        socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE))
            .map_err(ExchangeError::Connect)?;
        let stream: Socket = match &endpoint.server_name {
            None => Box::new(tcp),
            Some(name) => Box::new(
                self.shared
                    .tls
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(ExchangeError::Tls)?,
            ),
        };
        let (send, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ExchangeError::NotSent)?;
        let mut conn = Box::new(Conn {
            send,
            driver: Some(driver),
        });
        // A new connection wants its first request only once its driver has run.
        drive(&mut conn.driver, conn.send.ready())
            .await
            .map_err(ExchangeError::NotSent)?;
        Ok(conn)
    }
}

/// The reaper: every `reap_interval`, closes idle connections the endpoint closed or that idled
/// too long. Ends when the pool is dropped.
async fn reap(pool: Weak<Shared>) {
    let every = match pool.upgrade() {
        Some(shared) => shared.reap_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = pool.upgrade() else {
            return;
        };
        let endpoints: Vec<Arc<Endpoint>> = shared
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for endpoint in endpoints {
            let mut idle = endpoint.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.retain_mut(|i| i.since.elapsed() <= shared.idle_timeout && i.conn.still_open());
        }
    }
}

impl Conn {
    /// Polls the idle connection once: `false` when it has ended (the endpoint closed it, or
    /// sent something it should not have). The waker is a no-op: nobody waits on an idle
    /// connection, and the request that takes it next polls it with its own.
    fn still_open(&mut self) -> bool {
        let Some(driver) = self.driver.as_mut() else {
            return false;
        };
        let mut cx = Context::from_waker(Waker::noop());
        if Pin::new(driver).poll(&mut cx).is_ready() {
            self.driver = None;
            return false;
        }
        !self.send.is_closed()
    }
}

/// Reads `incoming` to its end, or up to the answer limit (`true`: cut off there).
async fn read_body(
    driver: &mut Option<Driver>,
    mut incoming: Incoming,
) -> Result<(Bytes, bool), ExchangeError> {
    let mut body = Vec::new();
    while let Some(frame) = drive(driver, incoming.frame()).await {
        // Trailers carry nothing classification reads; only data frames count.
        let Ok(chunk) = frame?.into_data() else {
            continue;
        };
        if !super::append_limited(&mut body, &chunk) {
            return Ok((Bytes::from(body), true));
        }
    }
    Ok((Bytes::from(body), false))
}

/// Polls `work` to completion, driving the connection meanwhile. When the connection ends, its
/// driver is dropped, which fails whatever still waits on it (`work` then ends with that
/// error).
async fn drive<F: Future>(driver: &mut Option<Driver>, work: F) -> F::Output {
    let mut work = pin!(work);
    poll_fn(|cx| loop {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        let Some(running) = driver.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(running).poll(cx) {
            // Ended (closed by the endpoint, or failed): `work` learns it on the next turn.
            Poll::Ready(_) => *driver = None,
            // What the driver just did (an answer parsed, a body chunk read) is there now:
            // looking once more saves a wake-up and another trip through the scheduler.
            Poll::Pending => return work.as_mut().poll(cx),
        }
    })
    .await
}
