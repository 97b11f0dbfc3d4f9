//! [`Transport`]: what every webhook of the daemon shares: connection pools and one cap on
//! requests in flight.
//!
//! Each webhook bounds its own subscription (`webhook.concurrency`, Java's consume thread
//! count by default). The daemon also hands every subscription's webhook the same `Transport`
//! (`delivery.max_in_flight`): requests in flight hold a connection, its buffers and an encoded
//! body, so 16 subscriptions at 20 each would otherwise keep 320 open against what is usually
//! one application, more than it can serve at once.
//!
//! The cap alone would not bound the connections: each webhook's own pool would keep as many
//! as it ever had in flight at once (with 16 subscriptions under a cap of 128, about 290 in a
//! heap profile, 29 KB each). So webhooks with the same TLS settings share one pool, which keeps
//! at most the cap's worth of idle connections per endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Semaphore, SemaphorePermit};

use super::{tls_config, Pool, WebhookError, WebhookTls};

/// Shared connections and a process-wide cap on requests in flight. Cheap to clone; clones
/// share both. Waiters are served first come, first served (tokio's semaphore is fair), so no
/// subscription starves.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

struct Shared {
    permits: Semaphore,
    capacity: usize,
    waiting: AtomicUsize,
    /// One pool per distinct TLS settings; a daemon has one or a few, so a list beats a map.
    pools: Mutex<Vec<(WebhookTls, Pool)>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("capacity", &self.shared.capacity)
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A cap of `capacity` requests (at least 1: a cap of 0 would deliver nothing).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            shared: Arc::new(Shared {
                permits: Semaphore::new(capacity),
                capacity,
                waiting: AtomicUsize::new(0),
                pools: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The cap.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Requests holding a place now.
    pub fn in_flight(&self) -> usize {
        self.shared.capacity - self.shared.permits.available_permits()
    }

    /// Requests encoded and waiting for a place: above zero for long means the cap, not the
    /// endpoint or the broker, sets the pace.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// The pool for these TLS settings: the one built before for the same settings, else a new
    /// one that keeps at most the cap's worth of idle connections per endpoint.
    pub(crate) fn pool(&self, tls: &WebhookTls) -> Result<Pool, WebhookError> {
        // The lock is held while a pool is built (reads TLS files once): webhooks are built
        // at start, one after another, so nothing waits on it.
        let mut pools = self
            .shared
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, pool)) = pools.iter().find(|(t, _)| t == tls) {
            return Ok(pool.clone());
        }
        let pool = Pool::new(tls_config(tls)?, self.shared.capacity);
        pools.push((tls.clone(), pool.clone()));
        Ok(pool)
    }

    /// Distinct pools built so far (tests).
    #[cfg(test)]
    pub(crate) fn pools(&self) -> usize {
        self.shared
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits for a place; `None` only if the semaphore were closed, which nothing does.
    pub(crate) async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        // Counted down on drop, so a delivery cancelled while it waits is not counted forever.
        let _waiting = Waiting(&self.shared.waiting);
        self.shared.permits.acquire().await.ok()
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Transport, WebhookTls};

    #[tokio::test]
    async fn places_are_counted_and_waiters_too() {
        let limit = Transport::new(1);
        assert_eq!(
            (limit.capacity(), limit.in_flight(), limit.waiting()),
            (1, 0, 0)
        );
        let first = limit.acquire().await.expect("open");
        assert_eq!(limit.in_flight(), 1);
        let clone = limit.clone();
        let second = tokio::spawn(async move {
            let _place = clone.acquire().await.expect("open");
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            while limit.waiting() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the second request never waited");
        assert_eq!(limit.in_flight(), 1);
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second request never got a place")
            .expect("task");
        assert_eq!((limit.in_flight(), limit.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_is_not_counted() {
        let limit = Transport::new(1);
        let _held = limit.acquire().await.expect("open");
        let waiter = limit.acquire();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiter)
                .await
                .is_err(),
            "a second place was given"
        );
        assert_eq!(limit.waiting(), 0);
    }

    #[test]
    fn a_zero_cap_is_one() {
        assert_eq!(Transport::new(0).capacity(), 1);
    }

    #[test]
    fn webhooks_with_the_same_tls_settings_share_one_pool() {
        let transport = Transport::new(4);
        let plain = WebhookTls::default();
        let other = WebhookTls {
            insecure_skip_verify: true,
            ..WebhookTls::default()
        };
        transport.pool(&plain).expect("pool");
        transport.pool(&plain).expect("pool");
        assert_eq!(transport.pools(), 1);
        transport.pool(&other).expect("pool");
        transport.pool(&plain).expect("pool");
        assert_eq!(transport.pools(), 2);
    }
}
