//! The connection pool: one [`Connection`] per peer address, shared by every caller.
//!
//! Invariants:
//! - at most one live connection per address; a closed one is replaced on the next request;
//! - concurrent callers for the same address share one connect attempt (they queue on the
//!   address's connect lock and find the fresh connection when it is their turn);
//! - after a failed connect the address backs off exponentially (100 ms doubling to 10 s, reset
//!   once a connection is answered on); within that window callers fail fast with
//!   [`ClientError::Backoff`] instead of hammering a dead broker. A connection the peer closed
//!   before answering anything counts as a failed connect;
//! - [`Pool::invalidate`] closes a connection only if it is still the cached one, so a caller
//!   holding an old handle never tears down the connection another caller just opened
//!   (rskafka's generation check);
//! - no lock is held across an `.await` except the per-address connect lock (a tokio mutex);
//! - a connection closes itself once idle ([`ConnectOptions::idle_timeout`]); a request that
//!   meets it closing was never sent and goes once more, on a new connection;
//! - an address nobody holds, without a live connection, whose last failed connect is more than
//!   the longest backoff delay past its retry time, is forgotten when a new address is added, so
//!   addresses of brokers that left do not pile up; one that failed more recently keeps its
//!   schedule.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::remoting::rpc::Rpc;

use super::backoff::Backoff;
use super::connection::{ConnectOptions, Connection, InboundHandler};
use super::{ClientError, CloseReason};

/// Connections to name servers and brokers, keyed by address. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    options: ConnectOptions,
    inbound: Arc<dyn InboundHandler>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    backoff: Backoff,
}

/// One address.
struct Slot {
    /// The cached connection; read on the fast path without waiting for a connect.
    current: Mutex<Option<Connection>>,
    /// Serialises connect attempts and holds the backoff state.
    connect: tokio::sync::Mutex<Attempts>,
}

struct Attempts {
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// Number of connections opened so far (for logs).
    generation: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Slot {
    fn live(&self) -> Option<Connection> {
        lock(&self.current)
            .as_ref()
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// Whether the pool may drop this slot (called under the slots lock): no caller holds it
    /// (handles are only cloned under that lock, so none can appear meanwhile), it has no live
    /// connection, and its backoff is over by more than the longest delay. A broker that comes
    /// back into use sooner resumes its schedule instead of starting again at the shortest
    /// delay; one unused for longer than the longest delay may start afresh.
    fn forgettable(self: &Arc<Self>, now: Instant) -> bool {
        Arc::strong_count(self) == 1
            && self.live().is_none()
            && self.connect.try_lock().is_ok_and(|attempts| {
                attempts
                    .retry_at
                    .is_none_or(|at| at + attempts.backoff.max() <= now)
            })
    }
}

impl Pool {
    /// A pool opening connections with `options`; broker-initiated requests on any of them go
    /// to `inbound`.
    pub fn new(options: ConnectOptions, inbound: Arc<dyn InboundHandler>) -> Self {
        Self::with_backoff(options, inbound, Backoff::default())
    }

    pub(crate) fn with_backoff(
        options: ConnectOptions,
        inbound: Arc<dyn InboundHandler>,
        backoff: Backoff,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                options,
                inbound,
                slots: Mutex::new(HashMap::new()),
                backoff,
            }),
        }
    }

    /// The options connections are opened with.
    pub fn options(&self) -> &ConnectOptions {
        &self.inner.options
    }

    /// The live connection to `addr`, opening one if needed.
    ///
    /// # Errors
    /// [`ClientError::Backoff`] while `addr` is backing off after a failed connect;
    /// otherwise the errors of [`Connection::connect`].
    pub async fn connection(&self, addr: &str) -> Result<Connection, ClientError> {
        let slot = self.slot(addr);
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        let mut attempts = slot.connect.lock().await;
        // Another caller may have connected while we waited for the lock.
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        let now = Instant::now();
        // The connection this one replaces: one the peer closed before a frame of it decoded
        // counts as a failed connect, or a peer that accepts and drops (a TLS broker refusing
        // plain text, a load balancer without backends, an HTTP server on the wrong port) would
        // be reconnected to at every call; one that was answered on forgets past failures.
        // Our own closes (idle, local, aborted) say nothing about the peer.
        if let Some(previous) = lock(&slot.current).take() {
            let closed_by_peer = matches!(
                previous.close_reason(),
                Some(
                    CloseReason::PeerClosed
                        | CloseReason::EofMidFrame { .. }
                        | CloseReason::Io(_)
                        | CloseReason::Protocol(_)
                )
            );
            if previous.has_answered() {
                attempts.backoff.reset();
            } else if closed_by_peer {
                let delay = attempts.backoff.fail();
                attempts.retry_at = Some(now + delay);
                warn!(%addr, retry_in = ?delay, "The peer closed the connection before answering anything; waiting before connecting again.");
            }
        }
        if let Some(at) = attempts.retry_at.filter(|at| *at > now) {
            return Err(ClientError::Backoff {
                addr: addr.to_owned(),
                retry_in: at - now,
            });
        }
        match Connection::connect(addr, &self.inner.options, Arc::clone(&self.inner.inbound)).await
        {
            Ok(conn) => {
                // The backoff is reset once the peer answers on it (see above), not here.
                attempts.retry_at = None;
                attempts.generation += 1;
                debug!(%addr, generation = attempts.generation, "Pool connection opened.");
                *lock(&slot.current) = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                let delay = attempts.backoff.fail();
                attempts.retry_at = Some(Instant::now() + delay);
                warn!(%addr, error = %e, retry_in = ?delay, "Connect failed.");
                Err(e)
            }
        }
    }

    /// Sends a typed request to `addr` (connecting if needed) and parses the response. A
    /// request that times out closes its connection (see below); the next one reconnects.
    ///
    /// # Errors
    /// As [`Pool::connection`] and [`Connection::call`].
    pub async fn call<R: Rpc>(
        &self,
        addr: &str,
        rpc: &R,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let mut conn = self.connection(addr).await?;
        let mut sent = Instant::now();
        let mut result = conn.call(rpc, timeout).await;
        if let Err(ClientError::ConnectionClosed {
            reason: CloseReason::Idle { .. },
            ..
        }) = &result
        {
            // The connection idled out just before this request: it was never sent.
            conn = self.connection(addr).await?;
            sent = Instant::now();
            result = conn.call(rpc, timeout).await;
        }
        if let Err(e @ ClientError::Timeout { .. }) = &result {
            // A peer that stopped answering without a reset (a NAT or firewall that forgot the
            // flow, a host gone) would otherwise keep this connection until the kernel gives up
            // retransmitting, about 15 minutes, while every request on it times out and
            // heartbeats lapse. The Java client closes a connection on any synchronous timeout
            // (clientCloseSocketIfTimeout); here only if nothing at all was read on it since
            // this request went out, so a broker that is slow to answer one request does not
            // cost every long poll sharing the connection. The requests in flight on a closed
            // connection fail and are retried on a new one.
            if conn.read_since(sent) {
                debug!(%addr, error = %e, "A request timed out; the peer still answers others.");
            } else {
                warn!(%addr, error = %e, "Closing the connection: a request timed out and the peer sent nothing since.");
                self.invalidate(&conn);
            }
        }
        result
    }

    /// Sends a typed oneway request to `addr` (connecting if needed); `timeout` bounds the
    /// hand-over to the connection, the connect timeout the connecting.
    ///
    /// # Errors
    /// As [`Pool::connection`] and [`Connection::oneway`].
    pub async fn oneway<R: Rpc>(
        &self,
        addr: &str,
        rpc: &R,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        self.connection(addr).await?.oneway(rpc, timeout).await
    }

    /// Closes `conn` and forgets it, but only if it is still the pool's connection for its
    /// address (a newer one is left alone).
    pub fn invalidate(&self, conn: &Connection) {
        let slot = lock(&self.inner.slots).get(conn.addr()).cloned();
        if let Some(slot) = slot {
            let mut current = lock(&slot.current);
            if current.as_ref().is_some_and(|c| c.same_as(conn)) {
                *current = None;
                // Taken out here, so the next connect does not see it: a connection that was
                // answered on forgets past failures now. Not waited for: a connect in progress
                // holds the lock, and its own outcome decides.
                if conn.has_answered() {
                    if let Ok(mut attempts) = slot.connect.try_lock() {
                        attempts.backoff.reset();
                    }
                }
            }
        }
        conn.close();
    }

    /// Closes every connection; waiters fail with a local close reason. The pool stays usable
    /// and reconnects on the next request.
    pub fn close_all(&self) {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Some(conn) = lock(&slot.current).take() {
                conn.close();
            }
        }
    }

    /// Addresses with a live connection, sorted.
    pub fn addrs(&self) -> Vec<String> {
        let slots: Vec<(String, Arc<Slot>)> = lock(&self.inner.slots)
            .iter()
            .map(|(a, s)| (a.clone(), Arc::clone(s)))
            .collect();
        let mut addrs: Vec<String> = slots
            .into_iter()
            .filter(|(_, s)| s.live().is_some())
            .map(|(a, _)| a)
            .collect();
        addrs.sort();
        addrs
    }

    /// Every address the pool keeps a slot for, live or not, sorted.
    #[cfg(test)]
    pub(crate) fn known_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = lock(&self.inner.slots).keys().cloned().collect();
        addrs.sort();
        addrs
    }

    fn slot(&self, addr: &str) -> Arc<Slot> {
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.get(addr) {
            return Arc::clone(slot);
        }
        // New addresses come with route changes, rarely: the sweep is cheap at that pace.
        let now = Instant::now();
        slots.retain(|_, slot| !slot.forgettable(now));
        let slot = Arc::new(Slot {
            current: Mutex::new(None),
            connect: tokio::sync::Mutex::new(Attempts {
                backoff: self.inner.backoff.clone(),
                retry_at: None,
                generation: 0,
            }),
        });
        slots.insert(addr.to_owned(), Arc::clone(&slot));
        slot
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("options", &self.inner.options)
            .field("addrs", &self.addrs())
            .finish_non_exhaustive()
    }
}
