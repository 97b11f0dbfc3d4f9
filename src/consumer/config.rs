//! The engine's settings for one subscription: typed, with units, validated by the daemon's
//! configuration layer before anything connects.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::allocate::AllocateStrategy;
use super::handler::ConsumeMode;

/// Where a group with no stored offset starts (rocketmq-remoting.md section 7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeFrom {
    /// The queue's end; for a queue that came into the route after the consumer's first look at
    /// it (a topic scaled out), the first message stored since the consumer started
    /// (`Shared::configured_start`).
    LastOffset,
    /// Offset 0 (corrected by the broker when older messages were deleted).
    FirstOffset,
    /// The first message stored at or after this time (milliseconds since the epoch).
    Timestamp(i64),
}

/// Clustering (the group shares the queues) or broadcasting (every member gets everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Queues are divided among the group; offsets live on the broker.
    Clustering,
    /// Every consumer reads every queue; offsets live in a local file.
    Broadcasting,
}

/// TAG or SQL92 filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `*` or `a || b || c`.
    Tag(String),
    /// An SQL92 expression over message properties (the broker needs `enablePropertyFilter`).
    Sql92(String),
}

/// What an orderly consumer does with a message that failed `max_reconsume_times` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderlyExhausted {
    /// Send it to `%DLQ%group` and move on (the default).
    DeadLetter,
    /// Keep retrying it in place, blocking the queue.
    Block,
}

/// Flow-control limits of one process queue; pulling pauses while any is exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Max cached messages per queue (Java `pullThresholdForQueue`, 1000).
    pub max_cached_messages: usize,
    /// Max cached body bytes per queue (Java `pullThresholdSizeForQueue`, 100 MiB).
    pub max_cached_bytes: u64,
    /// Max offset span cached per queue in concurrent mode (Java `consumeConcurrentlyMaxSpan`).
    pub max_span: u64,
    /// Max cached messages of the subscription, shared evenly by the queues held (Java
    /// `pullThresholdForTopic`); `usize::MAX` for no such limit.
    pub max_cached_messages_per_subscription: usize,
    /// Max cached body bytes of the subscription, shared like the count (Java
    /// `pullThresholdSizeForTopic`); `u64::MAX` for no such limit.
    pub max_cached_bytes_per_subscription: u64,
}

impl Limits {
    /// The count and byte limits of one queue while the subscription holds `queues` and the
    /// process `budget` is shared: the per-queue limits, lowered to an even share of the
    /// subscription's and of the process's. Unlike Java, where a topic threshold replaces the
    /// queue threshold, the smallest one wins, so a subscription with few queues keeps the
    /// per-queue bound. A share is at least one message and one byte (Java's `Math.max(1,
    /// ...)`), so every queue keeps pulling.
    ///
    /// The process's count share is at least `pull_batch`: with many queues an even share is a
    /// handful of messages, and pulls that small cost the broker and the daemon a round trip
    /// for every few messages. A queue may hold one batch and takes the room for it from the
    /// budget's common pool (see [`CacheBudget`]), which is what bounds the process.
    pub fn per_queue(
        &self,
        queues: usize,
        budget: &CacheBudget,
        pull_batch: usize,
    ) -> (usize, u64) {
        let queues = queues.max(1);
        // The budget's count includes these queues, but a rebalance updates the two counts one
        // after the other.
        let all = budget.queues().max(queues);
        let count = (self.max_cached_messages_per_subscription / queues)
            .min((budget.max_messages / all).max(pull_batch))
            .clamp(1, self.max_cached_messages.max(1));
        let bytes = (self.max_cached_bytes_per_subscription / queues as u64)
            .min(budget.max_bytes / all as u64)
            .clamp(1, self.max_cached_bytes.max(1));
        (count, bytes)
    }
}

/// The cache limits of the whole process, shared by every queue of every consumer started with
/// it: a sidecar's memory limit is its pod's, whatever the number of subscriptions. The Java
/// client has no such bound (its heap limit plays that role).
///
/// Bytes are shared evenly, as a per-queue limit. The message count is also a common pool of
/// room: a queue takes permits for the pull it is about to send and holds them for the pull's
/// messages until the last of them is finished (they share the answer's buffer). The pool
/// serves waiters first come, first served, so a queue that just gave room back cannot take it
/// again ahead of one already waiting.
#[derive(Debug)]
pub struct CacheBudget {
    max_messages: usize,
    max_bytes: u64,
    /// Queues held by all consumers together (main and retry topics).
    queues: AtomicUsize,
    /// Room left under `max_messages`; `None` without a process limit.
    room: Option<Arc<Semaphore>>,
}

impl CacheBudget {
    /// At most `max_messages` and `max_bytes` of bodies cached by all consumers together.
    pub fn new(max_messages: usize, max_bytes: u64) -> Self {
        Self {
            max_messages,
            max_bytes,
            queues: AtomicUsize::new(0),
            room: (max_messages < Semaphore::MAX_PERMITS)
                .then(|| Arc::new(Semaphore::new(max_messages))),
        }
    }

    /// No process-wide limit: the per-queue and per-subscription ones alone.
    pub fn unlimited() -> Self {
        Self::new(usize::MAX, u64::MAX)
    }

    /// Max messages cached by the process.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// Max body bytes cached by the process.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Queues held by all consumers now: the number the limits are shared by.
    pub fn queues(&self) -> usize {
        self.queues.load(Ordering::Relaxed)
    }

    /// Messages taken from the pool now: cached, or asked for by pulls in flight.
    pub fn taken(&self) -> usize {
        self.room
            .as_ref()
            .map_or(0, |room| self.max_messages - room.available_permits())
    }

    /// An even share of the count, at least one. A queue without a backlog asks for half of it,
    /// so that idle long polls together never hold more than half the pool.
    pub fn even_share(&self) -> usize {
        (self.max_messages / self.queues().max(1)).max(1)
    }

    /// The pool a queue takes its room from; `None` without a process limit.
    pub(crate) fn room(&self) -> Option<&Arc<Semaphore>> {
        self.room.as_ref()
    }

    /// One consumer went from holding `before` queues to `after`. Adds first, so a reader in
    /// between sees too many queues (a smaller share), never too few.
    pub(crate) fn held_changed(&self, before: usize, after: usize) {
        self.queues.fetch_add(after, Ordering::Relaxed);
        self.queues.fetch_sub(before, Ordering::Relaxed);
    }
}

/// Settings of one subscription. Defaults are the Java push consumer's.
#[derive(Debug, Clone)]
pub struct Config {
    /// Consumer group.
    pub group: String,
    /// Subscribed topic.
    pub topic: String,
    /// Tag or SQL92 filter.
    pub filter: Filter,
    /// Clustering or broadcasting.
    pub model: Model,
    /// Concurrent or orderly.
    pub mode: ConsumeMode,
    /// Start position for a group without a stored offset.
    pub consume_from: ConsumeFrom,
    /// How queues are divided among the group.
    pub strategy: AllocateStrategy,
    /// Messages per handler call.
    pub consume_batch_size: usize,
    /// Messages per pull (`maxMsgNums`).
    pub pull_batch_size: i32,
    /// Max batches in flight for the whole subscription (Java `consumeThreadMax`).
    pub consume_concurrency: usize,
    /// Handler deadline per batch; a late batch counts as `Retry`.
    pub consume_timeout: Duration,
    /// Retries before a message goes to the DLQ.
    pub max_reconsume_times: i32,
    /// Process-queue limits.
    pub limits: Limits,
    /// Pause between pulls of one queue after messages were found.
    pub pull_interval: Duration,
    /// How often offsets are persisted.
    pub persist_interval: Duration,
    /// Root of the broadcasting offset files.
    pub offset_store_dir: PathBuf,
    /// Broadcasting: the instance name the operator set, if any. The offsets file is
    /// `<offset_store_dir>/<offset_store_instance>/<group>/offsets.json`, so several daemons
    /// sharing one directory keep a file each; `None` gives `<offset_store_dir>/<group>/`. Not
    /// the instance part of the client id, which by default differs with every process and
    /// would lose the offsets on every restart. Must pass
    /// [`valid_path_component`](super::offset_store::valid_path_component).
    pub offset_store_instance: Option<String>,
    /// Broadcasting: how long [`Consumer::prepare`](super::Consumer::prepare) waits for the
    /// offset store's lock while its holder has recorded that it is draining (a daemon of the
    /// same group and instance name shutting down beside its successor). Zero, the default,
    /// fails at once.
    pub offset_lock_wait: Duration,
    /// Orderly: pause of a queue after a failed batch.
    pub suspend_time: Duration,
    /// Orderly: a lock not renewed for this long counts as lost (Java 30 s).
    pub lock_ttl: Duration,
    /// Orderly: how often held locks are renewed (Java 20 s). Keep it well under `lock_ttl`,
    /// or every lock lapses between renewals.
    pub lock_renew_interval: Duration,
    /// Orderly: what happens after `max_reconsume_times`.
    pub orderly_exhausted: OrderlyExhausted,
    /// Heartbeat period (Java 30 s).
    pub heartbeat_interval: Duration,
    /// Periodic rebalance (Java 20 s).
    pub rebalance_interval: Duration,
    /// Route refresh (Java 30 s).
    pub route_interval: Duration,
    /// Timeout of ordinary broker calls (Java 3 s).
    pub rpc_timeout: Duration,
    /// Time in-flight batches get to finish when a queue is revoked or at shutdown.
    pub drain_timeout: Duration,
}

impl Config {
    /// Settings with the Java defaults for `group` consuming `topic` with `*`.
    pub fn new(group: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            topic: topic.into(),
            filter: Filter::Tag("*".into()),
            model: Model::Clustering,
            mode: ConsumeMode::Concurrent,
            consume_from: ConsumeFrom::LastOffset,
            strategy: AllocateStrategy::Average,
            consume_batch_size: 1,
            pull_batch_size: 32,
            consume_concurrency: 20,
            consume_timeout: Duration::from_secs(15 * 60),
            max_reconsume_times: 16,
            limits: Limits {
                max_cached_messages: 1000,
                max_cached_bytes: 100 * 1024 * 1024,
                max_span: 2000,
                max_cached_messages_per_subscription: usize::MAX,
                max_cached_bytes_per_subscription: u64::MAX,
            },
            pull_interval: Duration::ZERO,
            persist_interval: Duration::from_secs(5),
            offset_store_dir: default_offset_dir(),
            offset_store_instance: None,
            offset_lock_wait: Duration::ZERO,
            suspend_time: Duration::from_secs(1),
            lock_ttl: Duration::from_secs(30),
            lock_renew_interval: Duration::from_secs(20),
            orderly_exhausted: OrderlyExhausted::DeadLetter,
            heartbeat_interval: Duration::from_secs(30),
            rebalance_interval: Duration::from_secs(20),
            route_interval: Duration::from_secs(30),
            rpc_timeout: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// `%RETRY%<group>`: where concurrent retries come back from.
    pub fn retry_topic(&self) -> String {
        format!("%RETRY%{}", self.group)
    }

    /// The topics this subscription pulls: the topic, plus the retry topic in clustering mode.
    pub fn topics(&self) -> Vec<String> {
        match self.model {
            Model::Clustering => vec![self.topic.clone(), self.retry_topic()],
            Model::Broadcasting => vec![self.topic.clone()],
        }
    }
}

fn default_offset_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".rocketmq_offsets")
}

#[cfg(test)]
mod tests {
    use super::{CacheBudget, Limits};

    fn limits(per_sub: usize, per_sub_bytes: u64) -> Limits {
        Limits {
            max_cached_messages: 1000,
            max_cached_bytes: 100 << 20,
            max_span: 2000,
            max_cached_messages_per_subscription: per_sub,
            max_cached_bytes_per_subscription: per_sub_bytes,
        }
    }

    #[test]
    fn queues_share_the_subscription_limits_and_keep_their_own() {
        let l = limits(10_000, 32 << 20);
        let none = CacheBudget::unlimited();
        // Few queues: the per-queue count limit is the smaller one.
        assert_eq!(l.per_queue(8, &none, 32), (1000, 4 << 20));
        assert_eq!(l.per_queue(64, &none, 32), (156, (32 << 20) / 64));
        // Nothing held yet counts as one queue.
        assert_eq!(l.per_queue(0, &none, 32), (1000, 32 << 20));
        // A share never reaches zero: every queue keeps pulling.
        assert_eq!(limits(3, 2).per_queue(9, &none, 32), (1, 1));
        // No subscription limit: the per-queue limits as they are.
        assert_eq!(
            limits(usize::MAX, u64::MAX).per_queue(512, &none, 32),
            (1000, 100 << 20)
        );
    }

    #[test]
    fn every_queue_of_the_process_shares_the_budget() {
        let l = limits(10_000, 32 << 20);
        let budget = CacheBudget::new(10_000, 32 << 20);
        // One subscription of 8 queues: the budget equals the subscription's limits.
        budget.held_changed(0, 8);
        assert_eq!(l.per_queue(8, &budget, 32), (1000, 4 << 20));
        // Fifteen more subscriptions of 8 queues: 128 queues share the budget.
        for _ in 0..15 {
            budget.held_changed(0, 8);
        }
        assert_eq!(budget.queues(), 128);
        assert_eq!(l.per_queue(8, &budget, 32), (78, (32 << 20) / 128));
        // A consumer that lets its queues go gives its share back.
        budget.held_changed(8, 0);
        assert_eq!(budget.queues(), 120);
        assert_eq!(l.per_queue(8, &budget, 32), (83, (32 << 20) / 120));
        // Counted before the budget saw them: never more than the subscription's own share.
        let fresh = CacheBudget::new(10_000, 32 << 20);
        assert_eq!(l.per_queue(64, &fresh, 32), (156, (32 << 20) / 64));
        // 1,040 queues: an even share is 9 messages, but a queue may hold one pull batch (the
        // pool bounds the process); bytes stay an even share.
        budget.held_changed(0, 920);
        assert_eq!(budget.queues(), 1040);
        assert_eq!(budget.even_share(), 9);
        assert_eq!(l.per_queue(64, &budget, 32), (32, (32 << 20) / 1040));
        // Never above the subscription's share or the queue's own limit.
        assert_eq!(
            limits(640, 32 << 20).per_queue(64, &budget, 32),
            (10, (32 << 20) / 1040)
        );
    }

    #[test]
    fn the_pool_counts_what_queues_take() {
        let budget = CacheBudget::new(100, 1 << 20);
        let room = budget.room().expect("a bounded budget has a pool");
        assert_eq!(budget.taken(), 0);
        room.try_acquire_many(30).expect("room for 30").forget();
        assert_eq!(budget.taken(), 30);
        assert!(room.try_acquire_many(71).is_err(), "only 70 left");
        room.add_permits(30);
        assert_eq!(budget.taken(), 0);
        // Unlimited: no pool, nothing taken.
        assert!(CacheBudget::unlimited().room().is_none());
        assert_eq!(CacheBudget::unlimited().taken(), 0);
    }
}
