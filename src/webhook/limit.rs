//! [`RequestLimit`]: one cap on webhook requests in flight, shared by several [`super::Webhook`]s.
//!
//! Each webhook bounds its own subscription (`webhook.concurrency`, Java's consume thread
//! count by default). The daemon also hands every subscription's webhook the same
//! `RequestLimit` (`delivery.max_in_flight`): requests in flight hold a connection, its buffers
//! and an encoded body, so 16 subscriptions at 20 each would otherwise keep 320 open against
//! what is usually one application, more than it can serve at once and most of the memory
//! that grows with the number of subscriptions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};

/// A process-wide cap on requests in flight. Cheap to clone; clones share the cap. Waiters are
/// served first come, first served (tokio's semaphore is fair), so no subscription starves.
#[derive(Debug, Clone)]
pub struct RequestLimit {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    permits: Semaphore,
    capacity: usize,
    waiting: AtomicUsize,
}

impl RequestLimit {
    /// A cap of `capacity` requests (at least 1: a cap of 0 would deliver nothing).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            shared: Arc::new(Shared {
                permits: Semaphore::new(capacity),
                capacity,
                waiting: AtomicUsize::new(0),
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

    use super::RequestLimit;

    #[tokio::test]
    async fn places_are_counted_and_waiters_too() {
        let limit = RequestLimit::new(1);
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
        let limit = RequestLimit::new(1);
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
        assert_eq!(RequestLimit::new(0).capacity(), 1);
    }
}
