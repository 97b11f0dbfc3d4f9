//! One remoting connection: a task that owns the socket, and cheap handles that send requests.
//!
//! Invariants (style.md rule 2):
//! - exactly one task reads and writes the socket; handles reach it through a bounded channel of
//!   encoded frames, so a stalled peer pushes back on callers instead of growing memory;
//! - responses are matched by `opaque` through the pending table `opaque -> oneshot`; a caller
//!   that gives up (timeout or cancellation) removes its own entry, so a late response finds no
//!   waiter and is logged and dropped;
//! - the first failure (I/O error, malformed frame, EOF) poisons the connection: the table is
//!   replaced by the [`CloseReason`] and every waiter, present and future, gets that reason; a
//!   task that ends any other way (a panic, a runtime shutting down) poisons it with
//!   [`CloseReason::Aborted`] as it is dropped, so the pool replaces it;
//! - frames without the response bit are broker-initiated requests, handed to the
//!   [`InboundHandler`] in tasks owned by the connection task (at most
//!   [`ConnectOptions::inbound_concurrency`] at once, and as many again for oneway ones;
//!   further ones are answered `SYSTEM_BUSY` (oneway ones are dropped with a warning), or
//!   ignored while the write queue is above its high-water mark), so a slow handler never
//!   stops the reading and a peer that does not read cannot grow our memory;
//! - dropping the last handle aborts the connection task, which drops (and so aborts) the handler
//!   tasks it owns: no task outlives its connection.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::remoting::acl::AclCredentials;
use crate::remoting::command::{
    LanguageCode, RemotingCommand, SerializeType, CLIENT_VERSION, FLAG_RESPONSE,
};
use crate::remoting::frame::{FrameDecoder, DEFAULT_MAX_FRAME_LEN};
use crate::remoting::rpc::{not_supported_response, Rpc};
use crate::remoting::{RequestCode, ResponseCode};

use super::error::{ClientError, CloseReason};
use super::tls::TlsConfig;

/// A boxed, sendable future: what [`InboundHandler::handle`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Answers requests that a broker sends to this client (rocketmq-remoting.md section 5).
pub trait InboundHandler: Send + Sync + 'static {
    /// Handles `request` received from the peer at `from`.
    ///
    /// The returned answer is written back with the request's opaque and the response flag set,
    /// unless the request is oneway (then it is discarded). `None` sends nothing. The call itself
    /// must return quickly: do the work in the returned future.
    fn handle(&self, from: &str, request: RemotingCommand) -> BoxFuture<Option<RemotingCommand>>;
}

/// An [`InboundHandler`] that answers every request `REQUEST_CODE_NOT_SUPPORTED`, as a peer
/// without a processor for the code must (section 1.6); a oneway request gets no answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotSupported;

impl InboundHandler for NotSupported {
    fn handle(&self, _from: &str, request: RemotingCommand) -> BoxFuture<Option<RemotingCommand>> {
        let answer = (!request.is_oneway()).then(|| not_supported_response(&request));
        Box::pin(std::future::ready(answer))
    }
}

/// How connections are opened and what every request carries.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Limit for the TCP connect plus TLS handshake (Java default 3 s).
    pub connect_timeout: Duration,
    /// Largest accepted frame (value of the length prefix); larger ones close the connection.
    pub max_frame_len: usize,
    /// When set, every request is signed (section 9.1).
    pub acl: Option<AclCredentials>,
    /// When set, connections use TLS (section 9.2).
    pub tls: Option<TlsConfig>,
    /// Language announced in request headers.
    pub language: LanguageCode,
    /// `MQVersion` ordinal announced in request headers (at least 401 for standard-JSON routes).
    pub version: i32,
    /// Header encoding of requests (responses are decoded whatever their encoding).
    pub serialize_type: SerializeType,
    /// Frames that may wait for the connection task before senders are held back.
    pub request_queue: usize,
    /// Broker-initiated requests handled at once per connection; oneway ones may use as many
    /// slots again.
    pub inbound_concurrency: usize,
    /// A connection on which nothing was read for this long, with no request awaiting an
    /// answer, is closed (Java's `clientChannelMaxIdleTimeSeconds`, 120 s). Zero keeps
    /// connections open however quiet.
    pub idle_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            acl: None,
            tls: None,
            language: LanguageCode::Rust,
            version: CLIENT_VERSION,
            serialize_type: SerializeType::Json,
            request_queue: 256,
            inbound_concurrency: 16,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Java's default for closing a quiet connection. Brokers in a route hear a heartbeat every
/// 30 s and name servers a route query as often, so only connections nothing uses any more go
/// quiet this long: to a broker that left the cluster (whose host may be gone, leaving the
/// socket open for good) or to a name server other than the one in use.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// What the connection task may own: a TCP or TLS stream, or an in-memory pipe in tests.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A handle to one connection. Clones share the connection; the last one dropped stops it.
#[derive(Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

/// What the handles share. Dropping it aborts the task.
struct Handle {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Bytes>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    acl: Option<AclCredentials>,
    language: LanguageCode,
    version: i32,
    serialize_type: SerializeType,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Nobody can wait on this connection any more: stop the task (and its handler tasks).
        // Closed first, so the abort is not taken for a failure (and logged as one).
        self.shared.close(CloseReason::Local);
        self.task.abort();
    }
}

/// State shared by the handles and the connection task.
struct Shared {
    addr: String,
    next_opaque: AtomicI32,
    pending: Mutex<Pending>,
    /// When the connection was opened: the origin of `last_read_us`.
    opened: Instant,
    /// Microseconds after `opened` of the last read that returned bytes.
    last_read_us: AtomicU64,
    /// Whether a frame from the peer decoded: it speaks the protocol (see `has_answered`).
    answered: AtomicBool,
}

/// The correlation table, or why there is none any more.
enum Pending {
    Open(HashMap<i32, oneshot::Sender<Result<RemotingCommand, CloseReason>>>),
    Closed(CloseReason),
}

impl Shared {
    /// Locks the table. A poisoned lock only means another thread panicked while holding it;
    /// the table itself is always consistent, so keep going.
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh opaque for this connection; wraps around like Java's counter.
    fn next_opaque(&self) -> i32 {
        self.next_opaque.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a waiter for `opaque`.
    fn register(
        &self,
        opaque: i32,
    ) -> Result<oneshot::Receiver<Result<RemotingCommand, CloseReason>>, CloseReason> {
        match &mut *self.pending() {
            Pending::Open(map) => {
                let (tx, rx) = oneshot::channel();
                map.insert(opaque, tx);
                Ok(rx)
            }
            Pending::Closed(reason) => Err(reason.clone()),
        }
    }

    /// Forgets the waiter for `opaque`, if still there.
    fn forget(&self, opaque: i32) {
        if let Pending::Open(map) = &mut *self.pending() {
            map.remove(&opaque);
        }
    }

    /// Delivers a response to its waiter; unknown opaques (late or unsolicited) are dropped.
    fn complete(&self, response: RemotingCommand) {
        let waiter = match &mut *self.pending() {
            Pending::Open(map) => map.remove(&response.opaque),
            Pending::Closed(_) => None,
        };
        match waiter {
            Some(tx) => {
                // The waiter may have given up between the lookup and now; nothing to do then.
                let _ = tx.send(Ok(response));
            }
            None => debug!(
                addr = %self.addr,
                opaque = response.opaque,
                code = response.code,
                "Response without a waiter dropped."
            ),
        }
    }

    /// Poisons the connection with `reason` and fails every waiter. Only the first call counts:
    /// the first reason is the cause, later ones are consequences.
    fn close(&self, reason: CloseReason) {
        let waiters = {
            let mut pending = self.pending();
            if matches!(*pending, Pending::Closed(_)) {
                return;
            }
            match std::mem::replace(&mut *pending, Pending::Closed(reason.clone())) {
                Pending::Open(map) => map,
                Pending::Closed(_) => HashMap::new(),
            }
        };
        if !matches!(reason, CloseReason::Local | CloseReason::Idle { .. }) {
            warn!(addr = %self.addr, %reason, waiters = waiters.len(), "Connection closed.");
        }
        for (_, tx) in waiters {
            let _ = tx.send(Err(reason.clone()));
        }
    }

    /// Closes the connection as idle if no request awaits an answer, checked and closed under
    /// one lock: a request registered before is answered first, and one registered after finds
    /// the connection closed before anything was sent, so an idle close never fails a request
    /// that reached the peer.
    fn close_if_unused(&self, idle: Duration) -> bool {
        {
            let mut pending = self.pending();
            match &*pending {
                Pending::Open(map) if map.is_empty() => {
                    *pending = Pending::Closed(CloseReason::Idle { after: idle });
                }
                _ => return false,
            }
        }
        debug!(addr = %self.addr, after = ?idle, "Idle connection closed.");
        true
    }

    /// When the peer last sent anything (the opening, before it did).
    fn last_read(&self) -> Instant {
        self.opened + Duration::from_micros(self.last_read_us.load(Ordering::Relaxed))
    }

    fn close_reason(&self) -> Option<CloseReason> {
        match &*self.pending() {
            Pending::Open(_) => None,
            Pending::Closed(reason) => Some(reason.clone()),
        }
    }
}

/// Removes a pending entry when the call ends in any way other than its response.
struct PendingGuard<'a> {
    shared: &'a Shared,
    opaque: i32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.forget(self.opaque);
    }
}

impl Connection {
    /// Opens a TCP (or, with [`ConnectOptions::tls`], TLS) connection to `addr` (`host:port`)
    /// and starts its task. Broker-initiated requests go to `inbound`.
    ///
    /// # Errors
    /// [`ClientError::Tls`] for an unusable TLS configuration, [`ClientError::Connect`] when the
    /// connect or handshake fails or exceeds [`ConnectOptions::connect_timeout`].
    pub async fn connect(
        addr: &str,
        options: &ConnectOptions,
        inbound: Arc<dyn InboundHandler>,
    ) -> Result<Self, ClientError> {
        let tls = match &options.tls {
            Some(config) => Some((config.connector()?, config.server_name(addr)?)),
            None => None,
        };
        let connect = async {
            let tcp = TcpStream::connect(addr).await?;
            // Requests are small and latency-bound; never wait for Nagle.
            tcp.set_nodelay(true)?;
            let stream: Box<dyn Transport> = match tls {
                Some((connector, name)) => Box::new(connector.connect(name, tcp).await?),
                None => Box::new(tcp),
            };
            Ok::<_, io::Error>(stream)
        };
        let stream = tokio::time::timeout(options.connect_timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", options.connect_timeout),
                ))
            })
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        debug!(%addr, tls = options.tls.is_some(), "Connected.");
        Ok(Self::from_stream(addr, stream, options, inbound))
    }

    /// Starts a connection over an already open stream (TCP, TLS or an in-memory pipe).
    pub(crate) fn from_stream(
        addr: &str,
        stream: Box<dyn Transport>,
        options: &ConnectOptions,
        inbound: Arc<dyn InboundHandler>,
    ) -> Self {
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            next_opaque: AtomicI32::new(1),
            pending: Mutex::new(Pending::Open(HashMap::new())),
            opened: Instant::now(),
            last_read_us: AtomicU64::new(0),
            answered: AtomicBool::new(false),
        });
        let (outgoing, requests) = mpsc::channel(options.request_queue.max(1));
        let cancel = CancellationToken::new();
        let driver = Driver {
            shared: Arc::clone(&shared),
            requests,
            inbound,
            cancel: cancel.clone(),
            max_frame_len: options.max_frame_len,
            inbound_concurrency: options.inbound_concurrency.max(1),
            serialize_type: options.serialize_type,
            language: options.language.clone(),
            version: options.version,
            busy_dropped: 0,
            idle_timeout: options.idle_timeout,
        };
        let task = tokio::spawn(driver.run(stream));
        Self {
            handle: Arc::new(Handle {
                shared,
                outgoing,
                cancel,
                task,
                acl: options.acl.clone(),
                language: options.language.clone(),
                version: options.version,
                serialize_type: options.serialize_type,
            }),
        }
    }

    /// The peer address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.handle.shared.addr
    }

    /// Whether the connection failed or was closed; a closed connection never reopens.
    pub fn is_closed(&self) -> bool {
        self.handle.shared.close_reason().is_some()
    }

    /// Why the connection closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.handle.shared.close_reason()
    }

    /// Closes the connection: waiters fail with [`CloseReason::Local`] and the task stops.
    pub fn close(&self) {
        self.handle.shared.close(CloseReason::Local);
        self.handle.cancel.cancel();
    }

    /// Whether the peer sent anything after `at` (any frame, any answer). A request that timed
    /// out on a connection that stayed silent since it was sent suggests the peer is gone; one
    /// that timed out while other answers arrived only met a slow peer.
    pub fn read_since(&self, at: Instant) -> bool {
        let shared = &self.handle.shared;
        let at_us = u64::try_from(at.saturating_duration_since(shared.opened).as_micros())
            .unwrap_or(u64::MAX);
        shared.last_read_us.load(Ordering::Relaxed) > at_us
    }

    /// Whether a frame the peer sent on this connection decoded. One that accepts and closes
    /// at once (a TLS broker refusing plain text, a load balancer without backends), or that
    /// answers in another protocol (an HTTP server on the wrong port), never has.
    pub fn has_answered(&self) -> bool {
        self.handle.shared.answered.load(Ordering::Relaxed)
    }

    /// Whether `self` and `other` are handles to the same connection.
    pub fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.handle, &other.handle)
    }

    /// Sends a typed request and parses its response.
    ///
    /// # Errors
    /// As [`Connection::call_raw`]; in addition [`ClientError::Broker`] when the peer answers
    /// with an error status and [`ClientError::Protocol`] when the answer does not parse.
    pub async fn call<R: Rpc>(
        &self,
        rpc: &R,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let response = self.call_raw(rpc.command(), timeout).await?;
        rpc.parse(response)
            .map_err(|e| ClientError::from_response(self.addr(), e))
    }

    /// Sends a typed oneway request: nothing is awaited beyond handing it to the connection,
    /// for at most `timeout` (the queue is full while the peer does not read). `Ok` means
    /// handed over, not written: a connection that closes first (idle included) drops it, as
    /// Java's `invokeOneway` may.
    ///
    /// # Errors
    /// [`ClientError::ConnectionClosed`] if the connection is closed, [`ClientError::Timeout`]
    /// if the queue had no room in time, [`ClientError::Encode`] if the request cannot be
    /// encoded.
    pub async fn oneway<R: Rpc>(&self, rpc: &R, timeout: Duration) -> Result<(), ClientError> {
        let mut command = rpc.command();
        command.set_oneway(true);
        let code = RequestCode::from(command.code);
        let (_, frame) = self.prepare(command)?;
        self.within(code, timeout, self.send(frame)).await
    }

    /// Sends `command` as a request and waits up to `timeout` for the response, whatever its
    /// code. The connection sets the opaque, language and version, and signs the request when
    /// ACL credentials are configured.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] (the waiter is removed; a late response is dropped),
    /// [`ClientError::ConnectionClosed`] with the reason when the connection is or becomes
    /// closed, [`ClientError::Encode`] if the request cannot be encoded.
    pub async fn call_raw(
        &self,
        command: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, ClientError> {
        let code = RequestCode::from(command.code);
        let (opaque, frame) = self.prepare(command)?;
        let shared = &*self.handle.shared;
        let waiter = shared
            .register(opaque)
            .map_err(|reason| self.closed(reason))?;
        let _guard = PendingGuard { shared, opaque };
        let exchange = async {
            self.send(frame).await?;
            match waiter.await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(reason)) => Err(self.closed(reason)),
                // The task dropped the table without a reason: it was aborted.
                Err(_) => Err(self.closed(shared.close_reason().unwrap_or(CloseReason::Local))),
            }
        };
        self.within(code, timeout, exchange).await
    }

    /// Runs `work` for request `code` for at most `timeout`; [`ClientError::Timeout`] after.
    async fn within<T>(
        &self,
        code: RequestCode,
        timeout: Duration,
        work: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Timeout {
                    addr: self.handle.shared.addr.clone(),
                    code,
                    after: timeout,
                })
            })
    }

    /// Closes the connection as its task does once it is idle.
    #[cfg(test)]
    pub(crate) fn idle_out(&self) -> bool {
        let closed = self.handle.shared.close_if_unused(Duration::ZERO);
        if closed {
            self.handle.cancel.cancel();
        }
        closed
    }

    /// Number of calls waiting for a response.
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        match &*self.handle.shared.pending() {
            Pending::Open(map) => map.len(),
            Pending::Closed(_) => 0,
        }
    }

    /// Stamps, signs and encodes a request.
    fn prepare(&self, mut command: RemotingCommand) -> Result<(i32, Bytes), ClientError> {
        let handle = &*self.handle;
        let opaque = handle.shared.next_opaque();
        command.opaque = opaque;
        command.flag &= !FLAG_RESPONSE;
        command.language = handle.language.clone();
        command.version = handle.version;
        if let Some(acl) = &handle.acl {
            acl.sign(&mut command);
        }
        let mut frame = BytesMut::new();
        command
            .encode(handle.serialize_type, &mut frame)
            .map_err(|source| ClientError::Encode {
                addr: handle.shared.addr.clone(),
                source,
            })?;
        Ok((opaque, frame.freeze()))
    }

    /// Hands an encoded frame to the connection task, waiting for room in its queue.
    async fn send(&self, frame: Bytes) -> Result<(), ClientError> {
        if let Some(reason) = self.handle.shared.close_reason() {
            return Err(self.closed(reason));
        }
        self.handle.outgoing.send(frame).await.map_err(|_| {
            self.closed(
                self.handle
                    .shared
                    .close_reason()
                    .unwrap_or(CloseReason::Local),
            )
        })
    }

    fn closed(&self, reason: CloseReason) -> ClientError {
        ClientError::ConnectionClosed {
            addr: self.handle.shared.addr.clone(),
            reason,
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.handle.shared.addr)
            .field("closed", &self.close_reason())
            .finish_non_exhaustive()
    }
}

// === impl Driver ===

/// Bytes queued for writing above which the task stops taking new frames (back-pressure) and
/// drops busy answers.
pub(super) const WRITE_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Read buffer headroom kept before each read.
const READ_CHUNK: usize = 64 * 1024;

/// The connection task's state.
struct Driver {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Bytes>,
    inbound: Arc<dyn InboundHandler>,
    cancel: CancellationToken,
    max_frame_len: usize,
    inbound_concurrency: usize,
    serialize_type: SerializeType,
    language: LanguageCode,
    version: i32,
    /// Busy answers dropped since the write queue last had room (0: not dropping).
    busy_dropped: u64,
    /// See [`ConnectOptions::idle_timeout`].
    idle_timeout: Duration,
}

/// Closes the connection when the task's future is dropped before it closed it. A panic in the
/// task (an inbound handler's `handle` runs on it) or a runtime shutting down drops the future
/// mid-await; without this the table would stay open: waiters would hang until their timeouts,
/// `is_closed()` would stay false and the pool would keep handing out a connection on which
/// every call fails.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        // A no-op after the task's own close: the first reason counts.
        self.0.close(CloseReason::Aborted);
    }
}

impl Driver {
    async fn run(mut self, stream: Box<dyn Transport>) {
        let _close = CloseOnDrop(Arc::clone(&self.shared));
        let (reader, writer) = tokio::io::split(stream);
        let reason = self.drive(reader, writer).await;
        self.shared.close(reason);
    }

    /// Reads, writes and answers until the connection fails or is closed; returns why.
    async fn drive(
        &mut self,
        mut reader: ReadHalf<Box<dyn Transport>>,
        mut writer: WriteHalf<Box<dyn Transport>>,
    ) -> CloseReason {
        use tokio::io::AsyncReadExt;

        let mut decoder = FrameDecoder::new(self.max_frame_len);
        let mut input = BytesMut::with_capacity(READ_CHUNK);
        let mut output: VecDeque<Bytes> = VecDeque::new();
        let mut queued = 0usize;
        // Bytes written since the last flush.
        let mut unflushed = false;
        // Handler tasks live here: dropping the set (when this task ends or is aborted) aborts
        // them.
        let mut handlers: JoinSet<Option<Bytes>> = JoinSet::new();
        // One timer for the connection's life, moved on when it fires early, rather than one
        // per read: reads are the hot path.
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        let idle_close = !self.idle_timeout.is_zero();

        loop {
            if input.capacity() - input.len() < READ_CHUNK / 4 {
                input.reserve(READ_CHUNK);
            }
            let room = queued < WRITE_HIGH_WATER;
            tokio::select! {
                () = self.cancel.cancelled() => return CloseReason::Local,
                () = &mut idle, if idle_close => {
                    let quiet_until = self.shared.last_read() + self.idle_timeout;
                    let unused = output.is_empty()
                        && !unflushed
                        && handlers.is_empty()
                        && self.requests.is_empty();
                    if quiet_until <= Instant::now()
                        && unused
                        && self.shared.close_if_unused(self.idle_timeout)
                    {
                        return CloseReason::Idle { after: self.idle_timeout };
                    }
                    // Something was read since: look again when that read is a full period
                    // old. Or a request is out (a long poll may be held 30 s without a byte):
                    // look again a full period from now.
                    let now = Instant::now();
                    idle.as_mut().reset(if quiet_until > now {
                        quiet_until
                    } else {
                        now + self.idle_timeout
                    });
                }
                // Writing, then flushing once the queue is empty (TLS buffers records; make
                // sure they leave), both inside the select: a flush awaited in an arm's body
                // stopped the reading until a peer slow to read took every record, so answers
                // that had arrived were not read and their calls timed out.
                written = async {
                    match output.front_mut() {
                        Some(front) => writer.write_buf(front).await.map(Some),
                        None => writer.flush().await.map(|()| None),
                    }
                }, if !output.is_empty() || unflushed => match written {
                    Ok(Some(0)) => {
                        return CloseReason::Io(Arc::new(io::ErrorKind::WriteZero.into()))
                    }
                    Ok(Some(n)) => {
                        queued -= n;
                        if output.front().is_some_and(|f| !f.has_remaining()) {
                            output.pop_front();
                        }
                        unflushed = true;
                    }
                    Ok(None) => unflushed = false,
                    Err(e) => return CloseReason::Io(Arc::new(e)),
                },
                read = reader.read_buf(&mut input) => match read {
                    Ok(0) if input.is_empty() => return CloseReason::PeerClosed,
                    Ok(0) => return CloseReason::EofMidFrame { buffered: input.len() },
                    Ok(_) => {
                        let now_us = u64::try_from(self.shared.opened.elapsed().as_micros())
                            .unwrap_or(u64::MAX);
                        self.shared.last_read_us.store(now_us, Ordering::Relaxed);
                        loop {
                        match decoder.decode(&mut input) {
                            Ok(Some(frame)) => {
                                let room = queued < WRITE_HIGH_WATER;
                                if let Some(answer) = self.dispatch(frame, &mut handlers, room) {
                                    match answer {
                                        Ok(bytes) => {
                                            queued += bytes.len();
                                            output.push_back(bytes);
                                        }
                                        Err(reason) => return reason,
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return CloseReason::Protocol(Arc::new(e)),
                        }
                        }
                    }
                    Err(e) => return CloseReason::Io(Arc::new(e)),
                },
                frame = self.requests.recv(), if room => match frame {
                    Some(bytes) => {
                        queued += bytes.len();
                        output.push_back(bytes);
                    }
                    // Every handle is gone: nobody can use this connection any more.
                    None => return CloseReason::Local,
                },
                Some(done) = handlers.join_next(), if room => match done {
                    Ok(Some(bytes)) => {
                        queued += bytes.len();
                        output.push_back(bytes);
                    }
                    Ok(None) => {}
                    Err(e) => warn!(addr = %self.shared.addr, error = %e, "Inbound handler failed."),
                },
            }
        }
    }

    /// Routes one frame. Returns a frame to write immediately (a busy answer), or the reason to
    /// close the connection. `room` says whether the write queue is below [`WRITE_HIGH_WATER`].
    fn dispatch(
        &mut self,
        frame: Bytes,
        handlers: &mut JoinSet<Option<Bytes>>,
        room: bool,
    ) -> Option<Result<Bytes, CloseReason>> {
        let command = match RemotingCommand::decode(frame) {
            Ok(c) => c,
            // The frame boundary is intact, but a peer that sends undecodable headers cannot be
            // trusted with the rest of the stream; Java closes the channel too.
            Err(e) => return Some(Err(CloseReason::Protocol(Arc::new(e)))),
        };
        self.shared.answered.store(true, Ordering::Relaxed);
        if command.is_response() {
            self.shared.complete(command);
            return None;
        }
        let addr = &self.shared.addr;
        let oneway = command.is_oneway();
        let opaque = command.opaque;
        // A oneway request (membership notice, offset reset) gets no SYSTEM_BUSY to try again
        // on: rejected, it is lost. It has a reserve of as many slots again, so requests that
        // wait on slow answers never crowd it out.
        let limit = if oneway {
            2 * self.inbound_concurrency
        } else {
            self.inbound_concurrency
        };
        if handlers.len() >= limit {
            // Reading never stops, so without this check a peer that floods requests but does not
            // read our writes would make us queue one busy answer per request, without bound.
            // Such a peer cannot be helped by more bytes: above the high-water mark the answer is
            // dropped (its request times out on the peer's side), keeping the queue within
            // WRITE_HIGH_WATER plus one answer. Logged once per episode, not per request.
            if !oneway && !room {
                if self.busy_dropped == 0 {
                    warn!(
                        %addr,
                        "Peer is not reading; dropping SYSTEM_BUSY answers until it does."
                    );
                }
                self.busy_dropped += 1;
                return None;
            }
            if self.busy_dropped > 0 {
                debug!(
                    %addr,
                    dropped = self.busy_dropped,
                    "Write queue has room again; answering SYSTEM_BUSY again."
                );
                self.busy_dropped = 0;
            }
            warn!(%addr, code = command.code, "Too many broker requests in flight; rejected.");
            if oneway {
                return None;
            }
            let busy = RemotingCommand::response_to(
                &command,
                ResponseCode::SystemBusy,
                Some("[REJECTREQUEST] too many requests in flight".to_owned()),
            );
            return self.encode_answer(busy, opaque).map(Ok);
        }
        debug!(%addr, code = command.code, opaque, oneway, "Broker request received.");
        let answer = self.inbound.handle(addr, command);
        let responder = Responder {
            addr: addr.clone(),
            serialize_type: self.serialize_type,
            language: self.language.clone(),
            version: self.version,
        };
        handlers.spawn(async move {
            let answer = answer.await?;
            if oneway {
                return None;
            }
            responder.encode(answer, opaque)
        });
        None
    }

    fn encode_answer(&self, answer: RemotingCommand, opaque: i32) -> Option<Bytes> {
        Responder {
            addr: self.shared.addr.clone(),
            serialize_type: self.serialize_type,
            language: self.language.clone(),
            version: self.version,
        }
        .encode(answer, opaque)
    }
}

/// Turns a handler's answer into a response frame.
struct Responder {
    addr: String,
    serialize_type: SerializeType,
    language: LanguageCode,
    version: i32,
}

impl Responder {
    fn encode(&self, mut answer: RemotingCommand, opaque: i32) -> Option<Bytes> {
        answer.opaque = opaque;
        answer.flag = FLAG_RESPONSE;
        answer.language = self.language.clone();
        answer.version = self.version;
        let mut frame = BytesMut::new();
        match answer.encode(self.serialize_type, &mut frame) {
            Ok(()) => Some(frame.freeze()),
            Err(e) => {
                warn!(addr = %self.addr, error = %e, "Cannot encode the answer to a broker request.");
                None
            }
        }
    }
}
