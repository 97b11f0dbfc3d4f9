//! The running consumer: owns every task of one subscription and the state they share.
//!
//! Task tree (all owned by [`Consumer`], all cancelled by its token, all joined at shutdown):
//! - the rebalancer, which owns one [`worker`](super::worker) task per assigned queue;
//! - the route refresher, the heartbeat, the offset persister, the orderly lock renewer;
//! - the broker-request task that answers what brokers ask this client.
//!
//! Shared state lives in [`Shared`]: immutable settings plus a few maps behind std mutexes held
//! for short synchronous sections only (style rule 6). Queue workers own their process queues
//! outright.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::producer::{Producer, ProducerConfig, ProducerError, QueueSelector};
use crate::client::{Client, ClientError, Routes};
use crate::metrics::Metrics;
use crate::remoting::body::heartbeat::{
    ConsumeFromWhere, ConsumeType, ConsumerData, ExpressionType, HeartbeatData, MessageModel,
    SubscriptionData,
};
use crate::remoting::body::lock::{LockBatchRequest, UnlockBatchRequest};
use crate::remoting::filter;
use crate::remoting::rpc::{
    ConsumerSendMsgBack, GetMaxOffset, HeartBeat, LockBatchMq, QueryConsumerOffset,
    SearchOffsetByTimestamp, UnlockBatchMq, UnregisterClient, UpdateConsumerOffset,
};
use crate::remoting::{MessageExt, MessageQueue, ResponseCode};
use prometheus::{Histogram, IntCounter, IntGauge};

use super::config::{CacheBudget, Config, ConsumeFrom, Filter, Model};
use super::error::ConsumerError;
use super::handler::{ConsumeMode, Handler};
use super::inbound::{self, BrokerEvent};
use super::offset_store::{
    valid_path_component, HolderPhase, LocalFileStore, OffsetStoreError, OffsetTable, StoreLock,
};
use super::rebalance::{PendingResets, Rebalancer};
use super::stats::{Stats, StatsSnapshot};
use super::supervise::{Failure, Supervisor};

/// Where a `%RETRY%<group>` queue without a stored offset starts, whatever `consume_from` says:
/// it holds only this group's sent-back messages, so all of them are to be consumed.
///
/// Java starts it at 0 for LAST_OFFSET but at the max offset for CONSUME_FROM_TIMESTAMP. The
/// retry topic is created by the first send-back, which the worker of its queue may start only
/// a route refresh later: started at the max offset, it skipped the messages sent back until
/// then (Java brokers mostly hide this by answering QUERY_CONSUMER_OFFSET with 0 for a queue
/// whose head is still in memory; this client asks them not to, see [`Shared::stored_offset`]).
const RETRY_QUEUE_START: i64 = 0;

/// How long before the daemon's start a LAST_OFFSET queue that came into the route later starts
/// ([`Shared::configured_start`]): the broker's store times and this host's clock may differ by
/// that much without a message of such a queue being skipped.
const LATER_QUEUE_MARGIN: Duration = Duration::from_secs(60);

/// How long a broadcasting offset save may take before a warning says so (and again as often).
const SLOW_SAVE_WARNING: Duration = Duration::from_secs(10);

/// Producer group of the send-back fallback, as Java's internal producer names it.
const INNER_PRODUCER_GROUP: &str = "CLIENT_INNER_PRODUCER";

/// State shared by the tasks of one subscription.
#[derive(Debug)]
pub(crate) struct Shared<H> {
    pub(crate) config: Config,
    pub(crate) client: Client,
    pub(crate) client_id: String,
    pub(crate) handler: Arc<H>,
    pub(crate) offsets: OffsetTable,
    pub(crate) local_store: Option<LocalFileStore>,
    /// Broadcasting: the store's lock. A save owns a clone until its blocking write is done,
    /// so the file lock outlives this state if a cut-short shutdown drops it mid-save: no other
    /// consumer can take the store while the last save is still writing.
    offsets_lock: Option<Arc<StoreLock>>,
    /// Held across one snapshot-and-save of the local offset file. Every worker persists when
    /// its queue is released (all at once at shutdown) and the periodic task persists too:
    /// unserialised, two saves shared one temporary file (one could truncate the other's before
    /// its rename) and an older snapshot could land after a newer one. It guards the last
    /// request ([`Self::save_requests`]) a successful save covered: the requests queued behind
    /// one save are all covered by the next, so a release of every queue at once (start,
    /// shutdown) writes the file a few times, not once per queue.
    local_save: Arc<tokio::sync::Mutex<u64>>,
    /// Broadcasting: requests to save the local offset file so far, each counted after the
    /// change to the table it asks to save.
    save_requests: AtomicU64,
    pub(crate) metrics: Metrics,
    /// The hot-path collectors with this subscription's labels resolved once.
    pub(crate) meters: Meters,
    pub(crate) stats: Arc<Stats>,
    /// Batches in flight across the subscription (Java `consumeThreadMax`).
    pub(crate) consume_slots: Arc<Semaphore>,
    pub(crate) rebalance_now: Notify,
    pub(crate) heartbeat_now: Notify,
    /// Orderly: a worker lost its lock; the lock task asks for every held queue's lock soon
    /// (see `lock_task`).
    pub(crate) relock_now: Notify,
    /// Orderly: the broker locks this member holds.
    pub(crate) locks: Mutex<HashMap<MessageQueue, HeldLock>>,
    /// Orderly: the last lock term handed out (see [`HeldLock::term`]).
    lock_terms: AtomicU64,
    /// Orderly: held across each LOCK_BATCH_MQ call; an unlock waits for the one in flight
    /// before it goes out, so that a renewal answered after a released queue's unlock cannot
    /// lock it again behind the release: the broker would then keep it ours, renewed by nobody,
    /// and the queue's next owner would wait out the broker's lock expiry (60 s in Java). A
    /// renewal that takes it later skips the queue, which left the stats before its unlock.
    lock_calls: tokio::sync::Mutex<()>,
    /// Orderly: queues released without their unlock (a batch the endpoint may still be
    /// working on), and until when this member leaves them alone. The broker re-grants a lock
    /// to the client that holds it, so without this a rebalance that gave the queue back to
    /// us (or an offset reset) would deliver it at once beside that batch; other members wait
    /// for the broker's expiry as long.
    lock_holds: Mutex<HashMap<MessageQueue, Instant>>,
    /// `subVersion` of the subscription; bumped when the assignment changes.
    pub(crate) sub_version: AtomicI64,
    /// When this consumer started (Unix ms): where LAST_OFFSET starts a queue that came into
    /// the route later (see [`Shared::configured_start`]).
    started_ms: i64,
    /// Queues with a running worker, main and retry topic together: the subscription-wide cache
    /// limits are shared by this many ([`super::Limits::per_queue`]). Changed through
    /// [`Shared::hold_queues`] only, which keeps `cache_budget` in step.
    queues_held: AtomicUsize,
    /// The process-wide cache limits, shared with every other consumer of the daemon.
    pub(crate) cache_budget: Arc<CacheBudget>,
    /// A broker took this consumer: its routes fetched and, in clustering mode, a broker listed
    /// it among the group's members; in broadcasting mode, a broker took its heartbeat. Latched:
    /// a later outage does not take the pod out of service (restarting it would not help).
    pub(crate) ready: Arc<AtomicBool>,
    /// A broker has taken a heartbeat of this consumer (broadcasting's readiness).
    pub(crate) heartbeat_taken: AtomicBool,
    /// The first heartbeat was asked for, once the main route was known (`refresh_routes`);
    /// later ones come from the heartbeat task's own retries.
    first_heartbeat_asked: AtomicBool,
    /// Topics the name servers said do not exist (TOPIC_NOT_EXIST), for the rebalancer: a pass
    /// that found no route for one of these has looked at it, and its queues, once they come,
    /// came later. A pass without a route for another reason (the first look-up still under
    /// way, or no name server answering) has not.
    absent_topics: Mutex<HashSet<String>>,
    /// Offset resets asked for by brokers, applied by the rebalancer.
    pub(crate) resets: PendingResets,
    /// Publishes a failed message to the retry topic itself when the broker refuses its
    /// send-back ([`Shared::republish_retry`]); shares the client's connections and routes.
    producer: Producer,
    /// Tests: the rebalancer's next pass panics, as a bug in it would.
    #[cfg(test)]
    pub(crate) panic_next_rebalance: AtomicBool,
}

/// Where a newly assigned queue starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    /// The first offset to pull.
    pub(crate) offset: i64,
    /// The offset store does not have it (it came from `consume_from`, or from a commit that
    /// could not be persisted): the worker saves it before it pulls. Until the first periodic
    /// save, a crash left the store without an offset, and the next start resolved
    /// `consume_from` again: for LAST_OFFSET the queue's end by then, past what had arrived
    /// in between.
    pub(crate) unsaved: bool,
}

/// A broker lock held by this member (orderly clustering).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldLock {
    /// When the broker last granted it.
    pub(crate) granted_at: Instant,
    /// Which unbroken run of grants it belongs to: the same while every renewal comes before
    /// the lock lapses, a new one after a lapse or a refusal.
    pub(crate) term: u64,
}

impl HeldLock {
    /// Whether the client still counts it as held (`lock_ttl` after the last grant; Java's
    /// 30 s, half the broker's own expiry).
    fn fresh(&self, ttl: Duration) -> bool {
        self.granted_at.elapsed() < ttl
    }
}

/// Collectors the per-message path touches, resolved for one subscription's labels so the hot
/// path does no label hashing.
#[derive(Debug)]
pub(crate) struct Meters {
    pub(crate) success: IntCounter,
    pub(crate) retry: IntCounter,
    pub(crate) drop: IntCounter,
    pub(crate) later: IntCounter,
    pub(crate) in_flight: IntGauge,
    pub(crate) batch_size: Histogram,
    pub(crate) batch_duration: Histogram,
    pub(crate) pull_duration: Histogram,
}

impl Meters {
    fn new(metrics: &Metrics, group: &str, topic: &str) -> Self {
        let outcome = |o: &str| metrics.messages.with_label_values(&[group, topic, o]);
        let labels = [group, topic];
        Self {
            success: outcome("success"),
            retry: outcome("retry"),
            drop: outcome("drop"),
            later: outcome("later"),
            in_flight: metrics.batches_in_flight.with_label_values(&labels),
            batch_size: metrics.batch_size.with_label_values(&labels),
            batch_duration: metrics.batch_duration.with_label_values(&labels),
            pull_duration: metrics.pull_duration.with_label_values(&labels),
        }
    }
}

/// What one route refresh found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteRefresh {
    /// The subscribed topic's route was fetched.
    pub(crate) main_ok: bool,
    /// Every topic (the retry topic too) has a route.
    pub(crate) complete: bool,
}

/// Milliseconds since the Unix epoch (the protocol's timestamps).
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl<H> Drop for Shared<H> {
    /// However the consumer ends, its queues stop counting against the process budget.
    fn drop(&mut self) {
        let held = *self.queues_held.get_mut();
        self.cache_budget.held_changed(held, 0);
    }
}

/// Locks a std mutex; poisoning only means another task panicked mid-update of plain data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<H: Handler> Shared<H> {
    pub(crate) fn group(&self) -> &str {
        &self.config.group
    }

    /// The subscription now holds `queues`; the process budget learns the change.
    pub(crate) fn hold_queues(&self, queues: usize) {
        let before = self.queues_held.swap(queues, Ordering::Relaxed);
        self.cache_budget.held_changed(before, queues);
    }

    /// The count and byte limits of one of this subscription's queues now.
    pub(crate) fn queue_cache_limits(&self) -> (usize, u64) {
        let batch = usize::try_from(self.config.pull_batch_size).unwrap_or(1);
        (self.config.limits).per_queue(
            self.queues_held.load(Ordering::Relaxed),
            &self.cache_budget,
            batch,
        )
    }

    pub(crate) fn labels(&self) -> [&str; 2] {
        [&self.config.group, &self.config.topic]
    }

    /// Counts an error of `stage`, of the `error_type` its error's `error_type()` says.
    pub(crate) fn count_error(&self, stage: &str, kind: &'static str) {
        self.metrics
            .errors
            .with_label_values(&[&self.config.group, &self.config.topic, kind, stage])
            .inc();
    }

    /// Master address of `broker_name` from the known routes.
    pub(crate) fn master_addr(&self, broker_name: &str) -> Result<String, ConsumerError> {
        self.addr_of(broker_name, |routes, name| {
            routes.master_addr(name).map(str::to_owned)
        })
    }

    /// Where to pull a queue of `broker_name` from, given the broker id its last pull answer
    /// suggested ([`Routes::pull_addr`]), and whether that address is a slave's.
    pub(crate) fn pull_addr(
        &self,
        broker_name: &str,
        suggested: i64,
    ) -> Result<(String, bool), ConsumerError> {
        self.addr_of(broker_name, |routes, name| {
            routes
                .pull_addr(name, suggested)
                .map(|p| (p.addr.to_owned(), p.slave))
        })
    }

    /// Master address of `broker_name`, or its last one if no route names it any more: for a
    /// queue's last words (its final offset, its lock), which a broker missing from the name
    /// servers' answers may still take.
    pub(crate) fn last_master_addr(&self, broker_name: &str) -> Result<String, ConsumerError> {
        self.addr_of(broker_name, |routes, name| {
            routes.last_master_addr(name).map(str::to_owned)
        })
    }

    /// What `pick` finds for `broker_name` in the current routes, or the error naming the broker.
    fn addr_of<T>(
        &self,
        broker_name: &str,
        pick: impl FnOnce(&Routes, &str) -> Option<T>,
    ) -> Result<T, ConsumerError> {
        pick(&self.client.routes().snapshot(), broker_name).ok_or_else(|| {
            ConsumerError::NoBrokerAddress {
                broker: broker_name.to_owned(),
            }
        })
    }

    /// Every broker address (masters and slaves) of the subscribed topics.
    pub(crate) fn broker_addrs(&self) -> BTreeSet<String> {
        let routes = self.client.routes().snapshot();
        routes
            .broker_addrs()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The readable queues of `topic`, sorted; `None` when the topic has no route yet.
    pub(crate) fn subscribe_queues(&self, topic: &str) -> Option<Vec<MessageQueue>> {
        let routes = self.client.routes().snapshot();
        routes.topic(topic).map(|_| routes.subscribe_queues(topic))
    }

    pub(crate) async fn call<R: crate::remoting::Rpc>(
        &self,
        addr: &str,
        rpc: &R,
    ) -> Result<R::Response, ClientError> {
        self.client
            .pool()
            .call(addr, rpc, self.config.rpc_timeout)
            .await
    }

    /// Fetches the routes of every subscribed topic. A missing `%RETRY%` route is normal before
    /// the first heartbeat created it.
    pub(crate) async fn refresh_routes(&self) -> RouteRefresh {
        let mut outcome = RouteRefresh {
            main_ok: true,
            complete: true,
        };
        for topic in self.config.topics() {
            // Changes are noticed through the table (see `route_task`), not here: the
            // send-back producer may have applied one first.
            let refreshed = self.client.refresh_route(&topic).await;
            if let Err(ClientError::NoRoute { .. }) = &refreshed {
                lock(&self.absent_topics).insert(topic.clone());
            }
            match refreshed {
                // Brokers learn the group (and create %RETRY%group) from the heartbeat; then
                // the retry topic's route appears and the rebalancer can assign it. Asked for
                // as soon as the main route is known, not after the retry topic's look-up,
                // which asks every name server while the topic does not exist.
                // Once: while no broker takes it, the heartbeat task retries on its own,
                // less and less often; asking on every route round (every 2 s until the retry
                // topic exists) would undo that.
                Ok(_) if topic == self.config.topic => {
                    if !self.first_heartbeat_asked.swap(true, Ordering::Relaxed) {
                        self.heartbeat_now.notify_one();
                    }
                }
                Ok(_) => {}
                Err(e) if topic != self.config.topic => {
                    outcome.complete &= self.client.routes().snapshot().topic(&topic).is_some();
                    debug!(group = %self.group(), %topic, error = %e, "Retry topic has no route yet.");
                }
                Err(e) => {
                    outcome.main_ok = false;
                    self.count_error("route", e.error_type());
                    warn!(group = %self.group(), %topic, error = %e, "Route refresh failed.");
                }
            }
        }
        outcome
    }

    /// Whether the name servers have said that `topic` does not exist.
    pub(crate) fn said_absent(&self, topic: &str) -> bool {
        lock(&self.absent_topics).contains(topic)
    }

    /// The subscription as the broker sees it (filter normalised: the broker under test skips
    /// messages silently when `||` has spaces around it).
    pub(crate) fn subscription_data(&self, topic: &str) -> SubscriptionData {
        let version = self.sub_version.load(Ordering::Relaxed);
        if topic != self.config.topic {
            return filter::subscription(topic, "*", ExpressionType::Tag, version);
        }
        match &self.config.filter {
            Filter::Tag(expr) => filter::subscription(
                topic,
                &filter::normalize_tag_expression(expr),
                ExpressionType::Tag,
                version,
            ),
            Filter::Sql92(expr) => {
                filter::subscription(topic, expr, ExpressionType::Sql92, version)
            }
        }
    }

    pub(crate) fn heartbeat_data(&self) -> HeartbeatData {
        let subscriptions = self
            .config
            .topics()
            .iter()
            .map(|t| self.subscription_data(t))
            .collect();
        HeartbeatData {
            client_id: self.client_id.clone(),
            producer_data_set: Vec::new(),
            consumer_data_set: vec![ConsumerData {
                group_name: self.config.group.clone(),
                consume_type: ConsumeType::Passively,
                message_model: match self.config.model {
                    Model::Clustering => MessageModel::Clustering,
                    Model::Broadcasting => MessageModel::Broadcasting,
                },
                consume_from_where: match self.config.consume_from {
                    ConsumeFrom::LastOffset => ConsumeFromWhere::LastOffset,
                    ConsumeFrom::FirstOffset => ConsumeFromWhere::FirstOffset,
                    ConsumeFrom::Timestamp(_) => ConsumeFromWhere::Timestamp,
                },
                subscription_data_set: subscriptions,
                unit_mode: false,
            }],
            ..HeartbeatData::default()
        }
    }

    /// Heartbeats every known broker; returns how many answered.
    pub(crate) async fn heartbeat_all(&self) -> usize {
        let data = self.heartbeat_data();
        let mut ok = 0;
        for addr in self.broker_addrs() {
            match self.call(&addr, &HeartBeat { data: data.clone() }).await {
                Ok(_) => {
                    ok += 1;
                    self.heartbeat_taken.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    self.count_error("heartbeat", e.error_type());
                    warn!(group = %self.group(), broker = %addr, error = %e, "Heartbeat failed.");
                }
            }
        }
        ok
    }

    /// Where a newly assigned queue starts (rocketmq-remoting.md section 7.6). `came_later`:
    /// the queue was not in its topic's route when this member first saw it.
    pub(crate) async fn start_offset(
        &self,
        mq: &MessageQueue,
        came_later: bool,
    ) -> Result<Start, ConsumerError> {
        if let Some(offset) = self.stored_offset(mq).await? {
            return Ok(Start {
                offset,
                unsaved: false,
            });
        }
        // Clustering: an offset an earlier worker of this queue committed but could not persist
        // as it ended (see `worker::release_as`). Without it a young group's queue restarted from
        // `consume_from`, which for LAST_OFFSET skipped what that worker had not finished.
        if self.config.model == Model::Clustering {
            if let Some(offset) = self.offsets.read(mq).filter(|o| *o >= 0) {
                return Ok(Start {
                    offset,
                    unsaved: true,
                });
            }
        }
        Ok(Start {
            offset: self.configured_start(mq, came_later).await?,
            unsaved: true,
        })
    }

    /// The queue's committed offset in the offset store (the broker, or the local table in
    /// broadcasting mode); `None` when there is none.
    pub(crate) async fn stored_offset(
        &self,
        mq: &MessageQueue,
    ) -> Result<Option<i64>, ConsumerError> {
        let stored = match self.config.model {
            Model::Clustering => {
                let addr = self.master_addr(&mq.broker_name)?;
                self.call(
                    &addr,
                    &QueryConsumerOffset {
                        consumer_group: self.config.group.clone(),
                        topic: mq.topic.clone(),
                        queue_id: mq.queue_id,
                        // A young queue would answer 0 instead of "not found" (the broker's
                        // shortcut of rocketmq-remoting.md 7.6), replaying the whole queue for a
                        // group that asked for LAST_OFFSET or a timestamp. Ask for the truth and
                        // apply consume-from-where ourselves; the retry topic starts at 0 anyway.
                        set_zero_if_not_found: Some(false),
                    },
                )
                .await?
            }
            Model::Broadcasting => self.offsets.read(mq),
        };
        Ok(stored.filter(|o| *o >= 0))
    }

    /// Where a queue without a stored offset starts: `consume_from`.
    ///
    /// With LAST_OFFSET, a queue that `came_later` into the route than this member's first look
    /// at it (a topic scaled out, created after the start, a broker added or back) starts at the
    /// first message stored since the daemon started, less [`LATER_QUEUE_MARGIN`], not at its
    /// end: producers see a new queue in their routes before this member does (up to a route
    /// interval and a rebalance later), and started at its end the queue skipped what they had
    /// sent to it. Java's consumer gets there through the broker's "young queue answers 0"
    /// shortcut, which this client turns off ([`Self::stored_offset`]). The queues of the first
    /// look start at their end, as before: no clock is involved, and a group whose offsets the
    /// broker lost does not replay what was stored since the start.
    pub(crate) async fn configured_start(
        &self,
        mq: &MessageQueue,
        came_later: bool,
    ) -> Result<i64, ConsumerError> {
        let is_retry = mq.topic.starts_with("%RETRY%");
        let offset = match self.config.consume_from {
            _ if is_retry => RETRY_QUEUE_START,
            ConsumeFrom::FirstOffset => 0,
            ConsumeFrom::LastOffset if came_later => {
                let since = self
                    .started_ms
                    .saturating_sub(LATER_QUEUE_MARGIN.as_millis() as i64);
                self.offset_at(mq, since).await?
            }
            ConsumeFrom::LastOffset => self.max_offset(mq).await?,
            ConsumeFrom::Timestamp(ts) => self.offset_at(mq, ts).await?,
        };
        info!(group = %self.group(), queue = %mq, offset, came_later, "No stored offset; starting from the configured position.");
        Ok(offset)
    }

    /// The offset of the first message of `mq` stored at or after `timestamp` (Unix ms); the
    /// queue's end when there is none.
    async fn offset_at(&self, mq: &MessageQueue, timestamp: i64) -> Result<i64, ConsumerError> {
        let addr = self.master_addr(&mq.broker_name)?;
        Ok(self
            .call(
                &addr,
                &SearchOffsetByTimestamp {
                    topic: mq.topic.clone(),
                    queue_id: mq.queue_id,
                    timestamp,
                    boundary: crate::remoting::rpc::Boundary::Lower,
                },
            )
            .await?)
    }

    pub(crate) async fn max_offset(&self, mq: &MessageQueue) -> Result<i64, ConsumerError> {
        let addr = self.master_addr(&mq.broker_name)?;
        Ok(self
            .call(
                &addr,
                &GetMaxOffset {
                    topic: mq.topic.clone(),
                    queue_id: mq.queue_id,
                },
            )
            .await?)
    }

    /// Persists the in-memory offset of `mq` now (clustering: to the broker; broadcasting: the
    /// whole local file). `false` when a clustering offset could not be stored.
    pub(crate) async fn persist(&self, mq: &MessageQueue) -> bool {
        match self.config.model {
            Model::Clustering => {
                let Some(offset) = self.offsets.read(mq) else {
                    return true;
                };
                let result = match self.last_master_addr(&mq.broker_name) {
                    Ok(addr) => self
                        .call(
                            &addr,
                            &UpdateConsumerOffset {
                                consumer_group: self.config.group.clone(),
                                topic: mq.topic.clone(),
                                queue_id: mq.queue_id,
                                commit_offset: offset,
                            },
                        )
                        .await
                        .map_err(ConsumerError::from),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        self.metrics
                            .offset_commits
                            .with_label_values(&self.labels())
                            .inc();
                        true
                    }
                    Err(e) => {
                        self.count_error("offset", e.error_type());
                        warn!(group = %self.group(), queue = %mq, offset, error = %e, "Offset persist failed.");
                        false
                    }
                }
            }
            // The table is the store, and stays: a failed save is retried by the next one.
            Model::Broadcasting => {
                self.persist_local().await;
                true
            }
        }
    }

    /// Persists every held queue's offset (the periodic task and shutdown).
    pub(crate) async fn persist_all(&self, held: &[MessageQueue]) {
        match self.config.model {
            Model::Clustering => {
                for mq in held {
                    // Released since the round took its list (a round against a slow broker
                    // takes a while): the queue's release persisted it, and an offset kept
                    // after a failed release persist is for this member's next start only.
                    // Written now, it could land after the next owner's and move it back.
                    if self.stats.holds(mq) {
                        self.persist(mq).await;
                    }
                }
            }
            Model::Broadcasting => self.persist_local().await,
        }
    }

    /// Broadcasting: records in the offsets lock file that this consumer is draining, so that
    /// a daemon started beside this one (a rolling restart) waits for the lock instead of
    /// failing.
    ///
    /// It touches only the lock file, not the saves' files, so it does not wait for a save in
    /// progress; on a volume that hangs it gives up after a second (the drain is already under
    /// way by then) and the newcomer fails at once, as without the record.
    async fn mark_draining(&self) {
        let Some(lock) = &self.offsets_lock else {
            return;
        };
        let lock = Arc::clone(lock);
        let marked = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::task::spawn_blocking(move || lock.mark(HolderPhase::Draining)),
        )
        .await;
        match marked {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                warn!(group = %self.group(), error = %e, "Cannot mark the offsets lock file as draining.");
            }
            Ok(Err(e)) => {
                warn!(group = %self.group(), error = %e, "Offsets lock marker task failed.")
            }
            Err(_) => {
                warn!(group = %self.group(), "Marking the offsets lock file as draining takes over a second; not waiting for it.")
            }
        }
    }

    /// Awaits `fut`, with a warning every [`SLOW_SAVE_WARNING`] it takes. A save cannot be
    /// skipped (a queue's start position must be on disk before its first pull, a released
    /// queue's final offset before it is given up), so on an offsets volume that hangs the
    /// queue waits as long; this says why its pulls stopped.
    async fn warn_while_slow<F: std::future::Future>(&self, fut: F, what: &str) -> F::Output {
        let started = Instant::now();
        let mut fut = std::pin::pin!(fut);
        loop {
            match tokio::time::timeout(SLOW_SAVE_WARNING, fut.as_mut()).await {
                Ok(out) => return out,
                Err(_) => warn!(
                    group = %self.group(),
                    waited = ?started.elapsed(),
                    "{what} takes long; waiting for it (the offsets volume may hang)."
                ),
            }
        }
    }

    async fn persist_local(&self) {
        let (Some(store), Some(lock)) = (&self.local_store, &self.offsets_lock) else {
            return;
        };
        let request = self.save_requests.fetch_add(1, Ordering::SeqCst) + 1;
        // Both owned and moved into the save: if this future is dropped (a cancelled shutdown
        // step), saves stay serialised and the file lock held until the blocking save is done.
        let mut saving = self
            .warn_while_slow(
                Arc::clone(&self.local_save).lock_owned(),
                "Waiting for the save before this one",
            )
            .await;
        if *saving >= request {
            // A save that took its snapshot after this request was made has written it.
            return;
        }
        let lock = Arc::clone(lock);
        // Read before the snapshot: every request up to here was made after its change to the
        // table, so the snapshot holds those changes.
        let covers = self.save_requests.load(Ordering::SeqCst);
        // Taken under the mutex, so the saves land in the order of their snapshots.
        let snapshot = self.offsets.snapshot();
        let store = store.clone();
        let save = tokio::task::spawn_blocking(move || {
            let saved = store.save(&snapshot);
            if saved.is_ok() {
                // A failed save covers nothing: the next request writes again.
                *saving = covers;
            }
            drop((saving, lock));
            saved
        });
        let result = self
            .warn_while_slow(save, "Writing the local offset file")
            .await;
        match result {
            Ok(Ok(())) => self
                .metrics
                .offset_commits
                .with_label_values(&self.labels())
                .inc(),
            Ok(Err(e)) => {
                self.count_error("offset", "other");
                warn!(group = %self.group(), error = %e, "Writing the local offset file failed.");
            }
            Err(e) => warn!(group = %self.group(), error = %e, "Offset writer task failed."),
        }
    }

    /// Hands a message back to the broker: `%RETRY%group` with `delay_level` (0 = broker
    /// default) or, with a negative level, `%DLQ%group`. Sent to the master of the broker that
    /// stores the message (it looks the message up by commit-log offset).
    pub(crate) async fn send_back(
        &self,
        mq: &MessageQueue,
        msg: &MessageExt,
        delay_level: i32,
    ) -> Result<(), ConsumerError> {
        let addr = self.master_addr(&mq.broker_name)?;
        let rpc = ConsumerSendMsgBack {
            offset: msg.commit_log_offset,
            group: self.config.group.clone(),
            delay_level,
            origin_msg_id: msg.msg_id().into_owned(),
            origin_topic: msg.topic.clone(),
            max_reconsume_times: self.config.max_reconsume_times,
            broker_name: Some(mq.broker_name.clone()),
        };
        self.client
            .pool()
            .call(
                &addr,
                &rpc,
                Duration::from_secs(5).max(self.config.rpc_timeout),
            )
            .await?;
        self.count_send_back(msg, delay_level < 0);
        Ok(())
    }

    /// Counts a message handed back to the broker, by where the broker's rule sends it.
    fn count_send_back(&self, msg: &MessageExt, dead_letter: bool) {
        let target = if dead_letter || msg.reconsume_times >= self.config.max_reconsume_times {
            "dlq"
        } else {
            "retry"
        };
        self.metrics
            .send_back
            .with_label_values(&[&self.config.group, &self.config.topic, target])
            .inc();
    }

    /// Java's fallback when a send-back fails (`sendMessageBackAsNormalMessage`,
    /// rocketmq-remoting.md 4.8): publishes a copy of `msg` to `%RETRY%<group>` with the
    /// properties the broker's send-back would have set, so the message is retried through the
    /// broker (and dead-lettered by its rule) even while the broker refuses send-backs, e.g. the
    /// queue's broker is down but the retry topic has queues elsewhere. `delay_level` as for
    /// [`Self::send_back`]; none (or 0) means Java's `3 + reconsumeTimes`.
    pub(crate) async fn republish_retry(
        &self,
        msg: &MessageExt,
        delay_level: Option<i32>,
    ) -> Result<(), ProducerError> {
        let delay = match delay_level {
            Some(level) if level > 0 => level,
            _ => msg.reconsume_times.saturating_add(3),
        };
        self.republish(msg, msg.reconsume_times.saturating_add(1), Some(delay))
            .await?;
        self.count_send_back(msg, false);
        Ok(())
    }

    /// The fallback when a DLQ send-back fails: publishes a copy of `msg` to `%RETRY%<group>`
    /// with its reconsume count past the limit, so the broker stores it in `%DLQ%<group>`
    /// instead (Java's orderly consumer dead-letters every message this way). One past the
    /// limit, because brokers differ on the rule: 4.x dead-letters a send at reconsumeTimes >=
    /// maxReconsumeTimes, 5.x only above it. A send-back names the message by its commit-log
    /// offset, so once the broker has deleted that record (retention, a full disk) it fails for
    /// good; this copy is made from the body in memory.
    pub(crate) async fn republish_dead_letter(
        &self,
        msg: &MessageExt,
    ) -> Result<(), ProducerError> {
        let past_limit = msg
            .reconsume_times
            .max(self.config.max_reconsume_times)
            .saturating_add(1);
        self.republish(msg, past_limit, None).await?;
        self.count_send_back(msg, true);
        Ok(())
    }

    /// Publishes a copy of `msg` to `%RETRY%<group>` with the properties the broker's
    /// send-back would have set: `reconsume` as its reconsume count, after `delay` (a delay
    /// level) when one is given.
    async fn republish(
        &self,
        msg: &MessageExt,
        reconsume: i32,
        delay: Option<i32>,
    ) -> Result<(), ProducerError> {
        use crate::remoting::message::properties::{self as keys, ByteString};
        let mut props = msg.properties.clone();
        let origin = match props.get(keys::ORIGIN_MESSAGE_ID) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => msg.msg_id().into_owned(),
        };
        for (key, value) in [
            (keys::ORIGIN_MESSAGE_ID, origin),
            // `msg.topic` is the real topic here (restored after the pull).
            (keys::RETRY_TOPIC, msg.topic.clone()),
            (keys::RECONSUME_TIME, reconsume.to_string()),
            (
                keys::MAX_RECONSUME_TIMES,
                self.config.max_reconsume_times.to_string(),
            ),
        ] {
            props.insert(ByteString::from_static(key), value.into());
        }
        match delay {
            Some(level) => {
                props.insert(
                    ByteString::from_static(keys::DELAY),
                    level.to_string().into(),
                );
            }
            None => {
                props.remove(keys::DELAY);
            }
        }
        props.remove(keys::TRAN_MSG);
        let copy = crate::remoting::message::Message {
            topic: self.config.retry_topic(),
            flag: msg.flag,
            body: msg.body.clone(),
            properties: props,
        };
        self.producer.send(copy, &QueueSelector::RoundRobin).await?;
        Ok(())
    }

    /// Restores the real topic of a message pulled from this group's `%RETRY%group` (section
    /// 7.11). Only this group's, as Java: a subscription may name another group's retry topic
    /// as its topic, whose messages keep it.
    pub(crate) fn restore_topic(&self, msg: &mut MessageExt) {
        msg.restore_retry_topic(&self.config.group);
    }

    /// Orderly: whether the broker lock of `mq` is held and fresh.
    pub(crate) fn lock_valid(&self, mq: &MessageQueue) -> bool {
        self.config.model == Model::Broadcasting || self.lock_term(mq).is_some()
    }

    /// Orderly clustering: the term of the broker lock of `mq` while it is held and fresh. A
    /// worker that sees the term change knows the lock lapsed in between, even if it never saw
    /// it lapse (during a long poll).
    pub(crate) fn lock_term(&self, mq: &MessageQueue) -> Option<u64> {
        lock(&self.locks)
            .get(mq)
            .filter(|held| held.fresh(self.config.lock_ttl))
            .map(|held| held.term)
    }

    /// Locks those of `mqs` (all on one broker) that are still `wanted` once no other lock call
    /// is in flight, and records the ones granted.
    pub(crate) async fn lock_queues(
        &self,
        broker_name: &str,
        mqs: Vec<MessageQueue>,
        wanted: impl Fn(&MessageQueue) -> bool,
    ) -> Vec<MessageQueue> {
        let _serial = self.lock_calls.lock().await;
        let mqs: Vec<MessageQueue> = mqs.into_iter().filter(|mq| wanted(mq)).collect();
        if mqs.is_empty() {
            return Vec::new();
        }
        let addr = match self.master_addr(broker_name) {
            Ok(a) => a,
            Err(e) => {
                warn!(group = %self.group(), broker = %broker_name, error = %e, "Cannot lock queues.");
                return Vec::new();
            }
        };
        let rpc = LockBatchMq {
            body: LockBatchRequest {
                consumer_group: self.config.group.clone(),
                client_id: self.client_id.clone(),
                only_this_broker: false,
                mq_set: mqs.clone(),
            },
        };
        // The broker starts a lock's expiry when it handles the request, after this; counted
        // from the answer instead, a slow answer would stretch the lock past the broker's
        // expiry by the round trip, up to the call's timeout.
        let sent = Instant::now();
        match self
            .client
            .pool()
            .call(
                &addr,
                &rpc,
                Duration::from_secs(1).max(self.config.rpc_timeout),
            )
            .await
        {
            Ok(granted) => {
                let ttl = self.config.lock_ttl;
                let mut locks = lock(&self.locks);
                for mq in &mqs {
                    if granted.contains(mq) {
                        // A lock that lapsed starts a new term: another member may have held the
                        // queue in between.
                        let term = match locks.get(mq) {
                            Some(held) if held.fresh(ttl) => held.term,
                            _ => self.lock_terms.fetch_add(1, Ordering::Relaxed) + 1,
                        };
                        locks.insert(
                            mq.clone(),
                            HeldLock {
                                granted_at: sent,
                                term,
                            },
                        );
                    } else {
                        // Refused: another member holds it now (the broker lost its locks in a
                        // restart and granted it to whoever asked first). As Java's `lockAll`,
                        // stop at once rather than consume beside that member until the lock
                        // would have expired.
                        locks.remove(mq);
                    }
                }
                self.publish_locked_queues(&locks);
                granted
            }
            Err(e) => {
                self.count_error("lock", e.error_type());
                warn!(group = %self.group(), broker = %broker_name, error = %e, "Locking queues failed.");
                Vec::new()
            }
        }
    }

    /// Sets the locks gauge to the locks held now (granted less than `lock_ttl` ago). Called
    /// wherever the table changes, so the gauge follows a new queue's lock and a release at
    /// once rather than at the next 20 s renewal.
    fn publish_locked_queues(&self, locks: &HashMap<MessageQueue, HeldLock>) {
        let held = locks
            .values()
            .filter(|held| held.fresh(self.config.lock_ttl))
            .count();
        self.metrics
            .locked_queues
            .with_label_values(&self.labels())
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Forgets this side's lock of `mq` without telling the broker (it expires there), after
    /// any lock call in flight (see `lock_calls`), which could otherwise record it again.
    pub(crate) async fn forget_lock(&self, mq: &MessageQueue) {
        drop(self.lock_calls.lock().await);
        let mut locks = lock(&self.locks);
        locks.remove(mq);
        self.publish_locked_queues(&locks);
    }

    /// Forgets `mq`'s lock and keeps this member off the queue for as long as the broker keeps
    /// the lock (see `lock_holds`).
    pub(crate) async fn leave_locked(&self, mq: &MessageQueue) {
        self.forget_lock(mq).await;
        let mut holds = lock(&self.lock_holds);
        let now = Instant::now();
        holds.retain(|_, until| *until > now);
        holds.insert(mq.clone(), now + BROKER_LOCK_EXPIRY);
    }

    /// Whether this member leaves `mq` alone for now (see `lock_holds`).
    pub(crate) fn lock_held_back(&self, mq: &MessageQueue) -> bool {
        lock(&self.lock_holds)
            .get(mq)
            .is_some_and(|until| *until > Instant::now())
    }

    /// When the first hold still running ends (see `lock_holds`), for the rebalancer's wake-up.
    pub(crate) fn lock_holds_end(&self) -> Option<Instant> {
        let now = Instant::now();
        lock(&self.lock_holds)
            .values()
            .filter(|until| **until > now)
            .min()
            .copied()
    }

    /// Releases the broker lock of `mq`, after any lock call in flight (see `lock_calls`).
    /// Unlocks do not wait for one another: a drain releasing many queues of a broker that
    /// stopped answering takes one call's timeout, not one per queue.
    pub(crate) async fn unlock_queue(&self, mq: &MessageQueue) {
        self.forget_lock(mq).await;
        let Ok(addr) = self.last_master_addr(&mq.broker_name) else {
            return;
        };
        let rpc = UnlockBatchMq {
            body: UnlockBatchRequest {
                consumer_group: self.config.group.clone(),
                client_id: self.client_id.clone(),
                only_this_broker: false,
                mq_set: vec![mq.clone()],
            },
        };
        if let Err(e) = self.call(&addr, &rpc).await {
            warn!(group = %self.group(), queue = %mq, error = %e, "Unlock failed; the broker expires it in 60 s.");
        }
    }

    pub(crate) fn is_orderly_clustering(&self) -> bool {
        self.config.mode == ConsumeMode::Orderly && self.config.model == Model::Clustering
    }
}

/// A running subscription. Dropping it cancels every task; call [`Consumer::shutdown`] for the
/// orderly drain (finish in-flight batches, persist offsets, unlock unless a batch was given
/// up on, unregister).
#[derive(Debug)]
pub struct Consumer<H: Handler> {
    shared: Arc<Shared<H>>,
    cancel: CancellationToken,
    /// The orderly lock renewals' own: they go on while the workers drain (a batch may outlast
    /// the broker's 60 s lock with a long grace period), and stop once every worker released.
    lock_cancel: CancellationToken,
    tasks: JoinSet<()>,
    rebalancer: Option<tokio::task::JoinHandle<Option<Vec<MessageQueue>>>>,
    supervisor: Supervisor,
}

/// Read-only view of a running consumer for status and readiness.
#[derive(Debug, Clone)]
pub struct Probe {
    stats: Arc<Stats>,
    ready: Arc<AtomicBool>,
    client_id: String,
    failure: Arc<Failure>,
}

impl Probe {
    /// Statistics now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Routes known and the first rebalance done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The consumer's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Why the consumer cannot go on, if one of its tasks ended (see [`Probe::failed`]).
    pub fn failure(&self) -> Option<&str> {
        self.failure.reason()
    }

    /// Waits until one of the consumer's own tasks (routes, heartbeats, offsets, locks, broker
    /// requests, rebalance) panics or ends before the shutdown, and returns why. Such a
    /// consumer stays broken (no heartbeats, no new queues, ...): the owner should stop it and
    /// start afresh.
    pub async fn failed(&self) -> String {
        self.failure.wait().await.to_owned()
    }
}

/// Everything the engine needs besides the subscription settings.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Where metrics go.
    pub metrics: Metrics,
    /// The process-wide cache limits, the same for every consumer of the process.
    pub cache_budget: Arc<CacheBudget>,
}

/// A consumer whose settings are checked and whose broadcasting offsets are locked and loaded,
/// but which has not connected to anything yet: [`Prepared::start`] starts it. A daemon
/// prepares every subscription before it starts any, so that one subscription's unusable
/// offset store stops the process before another has registered with a broker.
#[derive(Debug)]
pub struct Prepared<H: Handler> {
    shared: Arc<Shared<H>>,
    events: mpsc::Receiver<BrokerEvent>,
}

impl<H: Handler> Consumer<H> {
    /// [`Consumer::prepare`], then [`Prepared::start`].
    ///
    /// # Errors
    /// As [`Consumer::prepare`].
    pub async fn start(
        client_config: crate::client::ClientConfig,
        config: Config,
        handler: H,
        runtime: Runtime,
    ) -> Result<Self, ConsumerError> {
        Ok(Self::prepare(client_config, config, handler, runtime)
            .await?
            .start())
    }

    /// Checks the settings and, in broadcasting mode, locks, probes and loads the offset
    /// store, waiting up to [`Config::offset_lock_wait`] while another process holds its lock.
    /// Connects to nothing.
    ///
    /// # Errors
    /// A bad setting; in broadcasting mode, an offset store that cannot be written, is still
    /// locked by another consumer after the wait, or holds an unreadable file. Unreachable name
    /// servers or brokers are not errors: once started, the engine keeps retrying and
    /// `/readyz` says not ready.
    pub async fn prepare(
        client_config: crate::client::ClientConfig,
        config: Config,
        handler: H,
        runtime: Runtime,
    ) -> Result<Prepared<H>, ConsumerError> {
        if config.group.is_empty() {
            return Err(ConsumerError::Invalid {
                field: "group",
                reason: "empty".into(),
            });
        }
        if config.topic.is_empty() {
            return Err(ConsumerError::Invalid {
                field: "topic",
                reason: "empty".into(),
            });
        }
        if config.model == Model::Broadcasting {
            // The group and the instance name each name a directory of the offset store, so
            // neither may climb out of it.
            if !valid_path_component(&config.group) {
                return Err(ConsumerError::Invalid {
                    field: "group",
                    reason: format!(
                        "{:?} cannot name a directory of the broadcasting offset store",
                        config.group
                    ),
                });
            }
            if let Some(name) = config
                .offset_store_instance
                .as_deref()
                .filter(|name| !valid_path_component(name))
            {
                return Err(ConsumerError::Invalid {
                    field: "instance_name",
                    reason: format!(
                        "{name:?} cannot name a directory of the broadcasting offset store \
                         (it must not be empty, `.` or `..`, or contain `/` or `\\`)"
                    ),
                });
            }
        }
        let offsets = OffsetTable::default();
        let (local_store, offsets_lock) = match config.model {
            Model::Broadcasting => {
                let store = LocalFileStore::new(
                    &config.offset_store_dir,
                    config.offset_store_instance.as_deref(),
                    &config.group,
                );
                let (lock, loaded) = open_local_store(&store, config.offset_lock_wait).await?;
                info!(group = %config.group, path = %store.path().display(), queues = loaded.len(), "Broadcasting offsets loaded.");
                for (mq, offset) in loaded {
                    offsets.update(&mq, offset, false);
                }
                (Some(store), Some(lock))
            }
            Model::Clustering => (None, None),
        };
        let (events_tx, events_rx) = mpsc::channel::<BrokerEvent>(64);
        let client = Client::new(client_config, inbound::forwarder(events_tx))?;
        let client_id = client.client_id().to_owned();
        let meters = Meters::new(&runtime.metrics, &config.group, &config.topic);
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                group: INNER_PRODUCER_GROUP.to_owned(),
                send_timeout: config.rpc_timeout,
                // One more broker at most: the message is consumed again locally anyway if
                // this fails, and a batch settles its messages one after the other.
                retries: 1,
                ..ProducerConfig::default()
            },
        );
        let shared = Arc::new(Shared {
            meters,
            consume_slots: Arc::new(Semaphore::new(config.consume_concurrency.max(1))),
            config,
            client,
            client_id,
            handler: Arc::new(handler),
            offsets,
            local_store,
            offsets_lock: offsets_lock.map(Arc::new),
            local_save: Arc::new(tokio::sync::Mutex::new(0)),
            save_requests: AtomicU64::new(0),
            metrics: runtime.metrics,
            stats: Arc::new(Stats::new()),
            rebalance_now: Notify::new(),
            heartbeat_now: Notify::new(),
            relock_now: Notify::new(),
            locks: Mutex::new(HashMap::new()),
            lock_terms: AtomicU64::new(0),
            lock_calls: tokio::sync::Mutex::new(()),
            lock_holds: Mutex::new(HashMap::new()),
            sub_version: AtomicI64::new(now_millis()),
            started_ms: now_millis(),
            queues_held: AtomicUsize::new(0),
            cache_budget: runtime.cache_budget,
            ready: Arc::new(AtomicBool::new(false)),
            heartbeat_taken: AtomicBool::new(false),
            first_heartbeat_asked: AtomicBool::new(false),
            absent_topics: Mutex::new(HashSet::new()),
            resets: PendingResets::default(),
            producer,
            #[cfg(test)]
            panic_next_rebalance: AtomicBool::new(false),
        });
        Ok(Prepared {
            shared,
            events: events_rx,
        })
    }

    /// This consumer's client id (`ip@instance`).
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// Statistics for `/status`.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Whether routes are known and the first rebalance ran.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    /// A cheap handle for status pages that outlives borrowing the consumer.
    pub fn probe(&self) -> Probe {
        Probe {
            stats: Arc::clone(&self.shared.stats),
            ready: Arc::clone(&self.shared.ready),
            client_id: self.shared.client_id.clone(),
            failure: self.supervisor.failure(),
        }
    }

    /// The subscription settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Orderly shutdown: stop pulling, let in-flight batches finish within the drain timeout
    /// (unfinished ones stay uncommitted and are redelivered later), persist offsets, unlock
    /// orderly queues (but a queue whose batch was given up on, whose lock is left to expire),
    /// unregister from every broker.
    ///
    /// A panic while draining is recorded as the consumer's failure, so the daemon exits with
    /// an error instead of reporting a clean stop.
    pub async fn shutdown(mut self) {
        let supervisor = self.supervisor.clone();
        supervisor.run("shutdown", self.drain()).await;
    }

    async fn drain(&mut self) {
        info!(group = %self.shared.config.group, "Consumer shutting down.");
        self.cancel.cancel();
        self.shared.mark_draining().await;
        // The rebalancer cancels its workers; each drains its in-flight batches, persists its
        // offset and releases its orderly lock (or leaves it to expire, if it gave up on a
        // batch) before it ends. Awaited in place rather than
        // taken: if the owner gives up on the drain (its deadline passed), dropping the
        // consumer aborts the rebalancer and its workers instead of leaving them unowned.
        let rebalanced = match self.rebalancer.as_mut() {
            Some(h) => Some(h.await),
            None => None,
        };
        self.rebalancer = None;
        let held = match rebalanced {
            Some(joined) => match joined {
                Ok(Some(held)) => held,
                // It panicked (a bug, recorded as the consumer's failure): its workers were
                // aborted with it, without their release. Done here for every queue still in
                // the stats, as for one worker that panicked: committed offsets persisted (no
                // redelivery past the last periodic save), orderly locks forgotten and left to
                // expire (an aborted batch may still be at the endpoint).
                _ => {
                    let orphans: Vec<MessageQueue> =
                        self.shared.stats.queues().into_keys().collect();
                    futures_util::future::join_all(
                        orphans
                            .iter()
                            .map(|mq| super::worker::release_aborted(&self.shared, mq)),
                    )
                    .await;
                    orphans
                }
            },
            None => Vec::new(),
        };
        if self.shared.config.model == Model::Broadcasting {
            self.shared.persist_all(&held).await;
        }
        // Every worker has released its queue (unlocked, or left it to expire).
        self.lock_cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        for addr in self.shared.broker_addrs() {
            let rpc = UnregisterClient {
                client_id: self.shared.client_id.clone(),
                producer_group: None,
                consumer_group: Some(self.shared.config.group.clone()),
            };
            if let Err(e) = self.shared.call(&addr, &rpc).await {
                warn!(broker = %addr, error = %e, "Unregister failed.");
            }
        }
        self.shared.client.pool().close_all();
        info!(group = %self.shared.config.group, "Consumer stopped.");
    }
}

impl<H: Handler> Prepared<H> {
    /// Starts every task: they connect, heartbeat and rebalance.
    pub fn start(self) -> Consumer<H> {
        let Self { shared, events } = self;
        info!(group = %shared.config.group, topic = %shared.config.topic, client_id = %shared.client_id, "Consumer starting.");
        let cancel = CancellationToken::new();
        let supervisor = Supervisor::new(shared.config.group.clone(), cancel.clone());
        let mut tasks = JoinSet::new();
        let token = || cancel.child_token();
        // Boxed: one closure for tasks of different types (once per start).
        let mut spawn =
            |name, task: BoxFuture<'static, ()>| supervisor.spawn(&mut tasks, name, task);
        spawn("route", route_task(Arc::clone(&shared), token()).boxed());
        spawn(
            "heartbeat",
            heartbeat_task(Arc::clone(&shared), token()).boxed(),
        );
        spawn(
            "persist",
            persist_task(Arc::clone(&shared), token()).boxed(),
        );
        spawn("gauge", gauge_task(Arc::clone(&shared), token()).boxed());
        // Not a child of `cancel`: see `Consumer::lock_cancel`. Dropping the consumer still ends
        // it with the other tasks (the join set aborts them).
        let lock_cancel = CancellationToken::new();
        if shared.is_orderly_clustering() {
            spawn(
                "lock",
                lock_task(Arc::clone(&shared), lock_cancel.clone()).boxed(),
            );
        }
        spawn(
            "broker request",
            inbound::run(Arc::clone(&shared), events, token()).boxed(),
        );
        let rebalancer = Rebalancer::new(Arc::clone(&shared));
        let rebalancer = Some(tokio::spawn(
            supervisor.run("rebalancer", rebalancer.run(token())),
        ));
        Consumer {
            shared,
            cancel,
            lock_cancel,
            tasks,
            rebalancer,
            supervisor,
        }
    }
}

/// How often a held offset store lock is tried again, and how often the wait is logged.
const LOCK_RETRY: Duration = Duration::from_millis(250);
const LOCK_WAIT_LOG: Duration = Duration::from_secs(10);

/// Locks `store`, checks that saves can create their files, and loads it. While the lock's
/// holder has recorded that it is draining, waits for it, up to `wait`.
///
/// Locked before loading: a second consumer of the same file must neither load offsets the
/// first is about to move nor write over them. The wait covers a rolling restart that starts
/// the new daemon beside the old one on one volume: the old one releases the lock when it has
/// drained and exited, and failing at once would leave the new one to a crash loop's back-off.
/// A holder that is running (two daemons wrongly sharing a file) fails the start at once.
/// Checked for writes now, before anything connects: otherwise an unwritable store shows only
/// as a warning per persist while the consumer runs and reports ready, and the offsets are
/// gone at the next start.
async fn open_local_store(
    store: &LocalFileStore,
    wait: Duration,
) -> Result<(StoreLock, Vec<(MessageQueue, i64)>), ConsumerError> {
    let started = Instant::now();
    // The process seen draining. It never goes back to running, so a later read of its record
    // that fails (a torn read) does not end the wait; a record of another process, or a running
    // one, does: the draining record was a previous holder's, read before its successor (which
    // is running) wrote its own.
    let mut draining: Option<u32> = None;
    let mut logged: Option<Instant> = None;
    loop {
        let attempt = store.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let lock = attempt.lock()?;
            attempt.check_writable(&lock)?;
            Ok::<_, OffsetStoreError>((lock, attempt.load()?))
        })
        .await
        .map_err(|e| ConsumerError::Invalid {
            field: "offset_store_path",
            reason: e.to_string(),
        })?;
        let err = match opened {
            Ok(opened) => {
                if draining.is_some() {
                    info!(lock = %store.lock_path().display(), waited = ?started.elapsed(), "Broadcasting offsets lock taken.");
                }
                return Ok(opened);
            }
            Err(err) => err,
        };
        let held_by_drainer = match &err {
            OffsetStoreError::Locked { holder, .. } => match (holder, draining) {
                (Some(h), None) if h.phase == HolderPhase::Draining => {
                    draining = Some(h.pid);
                    true
                }
                (Some(h), Some(pid)) => h.phase == HolderPhase::Draining && h.pid == pid,
                (None, seen) => seen.is_some(),
                (Some(_), None) => false,
            },
            _ => false,
        };
        if !held_by_drainer || started.elapsed() >= wait {
            return Err(err.into());
        }
        if logged.is_none_or(|at| at.elapsed() >= LOCK_WAIT_LOG) {
            warn!(
                lock = %store.lock_path().display(),
                waited = ?started.elapsed(),
                wait = ?wait,
                "Broadcasting offsets are locked by a daemon that is draining; waiting for it to exit."
            );
            logged = Some(Instant::now());
        }
        tokio::time::sleep(LOCK_RETRY).await;
    }
}

impl<H: Handler> Drop for Consumer<H> {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.lock_cancel.cancel();
        // Dropped before its drain finished: nothing will await the rebalancer any more.
        if let Some(rebalancer) = &self.rebalancer {
            rebalancer.abort();
        }
    }
}

async fn route_task<H: Handler>(shared: Arc<Shared<H>>, cancel: CancellationToken) {
    // Watched rather than learnt from our own look-ups: the send-back producer shares the table
    // and refreshes the retry topic itself, and the change it applies is no news to a look-up
    // of ours that follows.
    let mut routes = shared.client.routes().subscribe();
    let mut seen = route_revisions(&shared, &routes.borrow_and_update());
    loop {
        // Not awaited past the cancel: with the name servers unreachable a round takes a
        // timeout per server and topic, and the drain must not wait for it.
        let refresh = tokio::select! {
            _ = cancel.cancelled() => return,
            refresh = shared.refresh_routes() => refresh,
        };
        // Until every route is known (the retry topic appears after the first heartbeat), look
        // again soon instead of waiting a whole interval.
        let wait = if refresh.main_ok && refresh.complete {
            shared.config.route_interval
        } else {
            Duration::from_secs(2).min(shared.config.route_interval)
        };
        let next = tokio::time::sleep(wait);
        tokio::pin!(next);
        loop {
            let now = route_revisions(&shared, &routes.borrow_and_update());
            if now != seen {
                seen = now;
                // New or vanished brokers and queues: re-allocate now rather than in 20 s.
                shared.rebalance_now.notify_one();
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                () = &mut next => break,
                // Never an error while `shared` holds the client; should it be, the branch is
                // off and the sleep still ends the wait.
                Ok(()) = routes.changed() => {}
            }
        }
    }
}

/// The revisions of the subscription's routes in `routes`: they differ from the last ones seen
/// exactly when one of them changed since.
fn route_revisions<H: Handler>(shared: &Shared<H>, routes: &Routes) -> Vec<Option<u64>> {
    shared
        .config
        .topics()
        .iter()
        .map(|topic| routes.revision(topic))
        .collect()
}

async fn heartbeat_task<H: Handler>(shared: Arc<Shared<H>>, cancel: CancellationToken) {
    let mut wait = shared.config.heartbeat_interval;
    // The last retry delay while no broker takes the heartbeat.
    let mut retry: Option<Duration> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shared.heartbeat_now.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        // Not awaited past the cancel: a round takes a timeout per unreachable broker.
        let answered = tokio::select! {
            _ = cancel.cancelled() => return,
            answered = shared.heartbeat_all() => answered,
        };
        // No broker took it (they are starting, or unreachable): until one does, the group
        // has no member here (no retry topic, no consumer list, not ready), so try again soon
        // rather than a whole interval later, then less often (doubling) while it lasts.
        let interval = shared.config.heartbeat_interval;
        retry = if answered == 0 && !shared.broker_addrs().is_empty() {
            Some(retry.map_or(HEARTBEAT_RETRY, |last| last * 2).min(interval))
        } else {
            None
        };
        wait = retry.unwrap_or(interval);
    }
}

/// How soon a heartbeat round that no broker took is first tried again; later retries wait
/// twice as long each, up to the heartbeat interval.
const HEARTBEAT_RETRY: Duration = Duration::from_secs(2);

/// Keeps the per-subscription gauges (cached messages and bytes, lag) in step with the queue
/// states the workers publish. Once a second is plenty for scrapes and costs one short lock.
async fn gauge_task<H: Handler>(shared: Arc<Shared<H>>, cancel: CancellationToken) {
    let labels = shared.labels();
    let cached = shared.metrics.cached_messages.with_label_values(&labels);
    let bytes = shared.metrics.cached_bytes.with_label_values(&labels);
    let lag = shared.metrics.lag.with_label_values(&labels);
    loop {
        let queues = shared.stats.queues();
        cached.set(queues.values().map(|q| q.cached_messages as i64).sum());
        bytes.set(queues.values().map(|q| q.cached_bytes as i64).sum());
        lag.set(super::stats::total_lag(queues.values()));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn persist_task<H: Handler>(shared: Arc<Shared<H>>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(shared.config.persist_interval) => {}
        }
        let held: Vec<MessageQueue> = shared.stats.queues().into_keys().collect();
        // Not awaited past the cancel: each worker persists its own queue as it is released,
        // and a round against a broker that hangs takes a timeout per queue.
        tokio::select! {
            _ = cancel.cancelled() => return,
            () = shared.persist_all(&held) => {}
        }
    }
}

/// Orderly: renews every held lock (Java `lockAll`, every 20 s). A queue missing from the
/// broker's answer loses its lock; its worker stops consuming until a later round gets it
/// back. A worker that lost its lock asks for a round sooner (`relock_now`), at most one per
/// [`RELOCK_DELAY`] (Java's `tryLockLaterAndReconsume` asks again 3 s after a refusal): one
/// call per broker for all of them, where a call per worker would queue up behind
/// `lock_calls` when a broker is slow to answer.
async fn lock_task<H: Handler>(shared: Arc<Shared<H>>, cancel: CancellationToken) {
    let mut last = Instant::now();
    loop {
        // Start to start: a slow round does not push the next one late, where a short
        // `lock_ttl` leaves little margin.
        let due = last + shared.config.lock_renew_interval;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
            _ = async {
                shared.relock_now.notified().await;
                tokio::time::sleep_until(last + RELOCK_DELAY).await;
            } => {}
        }
        last = Instant::now();
        // Awaited past the cancel, unlike the other rounds: dropped mid-call, its LOCK_BATCH_MQ
        // is already on the wire but no longer holds `lock_calls`, so a worker's UNLOCK at
        // release could overtake it and the broker keep the queue locked for us. A round is
        // bounded by the lock call's timeout per broker.
        renew_locks(&shared).await;
    }
}

/// How long a broker keeps a queue lock nobody renews (Java's `rebalance.lockMaxLiveTime`).
pub(crate) const BROKER_LOCK_EXPIRY: Duration = Duration::from_secs(60);

/// Orderly: the shortest time between two lock rounds that workers asked for.
pub(crate) const RELOCK_DELAY: Duration = Duration::from_secs(3);

/// One round of [`lock_task`]: the queues held now, broker by broker.
async fn renew_locks<H: Handler>(shared: &Shared<H>) {
    let held: Vec<MessageQueue> = shared.stats.queues().into_keys().collect();
    let mut by_broker: HashMap<String, Vec<MessageQueue>> = HashMap::new();
    for mq in held {
        by_broker
            .entry(mq.broker_name.clone())
            .or_default()
            .push(mq);
    }
    for (broker, mqs) in by_broker {
        // Only queues still held when the call goes out: a release in the meantime took its
        // queue out of the stats before unlocking it.
        let still_held = |mq: &MessageQueue| shared.stats.holds(mq);
        let granted = shared.lock_queues(&broker, mqs.clone(), still_held).await;
        for mq in mqs.iter().filter(|m| !granted.contains(m) && still_held(m)) {
            warn!(group = %shared.group(), queue = %mq, "Queue lock not renewed by the broker.");
        }
    }
    // Locks that lapsed since (no renewal granted) leave the gauge here.
    shared.publish_locked_queues(&lock(&shared.locks));
}

/// Whether a pull error means the broker lacks our subscription (heartbeat again).
pub(crate) fn needs_heartbeat(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::Broker {
            code: ResponseCode::SubscriptionNotExist | ResponseCode::SubscriptionNotLatest,
            ..
        }
    )
}

/// What the unit tests of the engine's tasks share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::consumer::handler::{Batch, Outcome};

    /// Accepts everything.
    #[derive(Debug)]
    pub(crate) struct Accept;

    impl Handler for Accept {
        async fn handle(&self, batch: &Batch) -> Vec<Outcome> {
            vec![Outcome::Success; batch.messages.len()]
        }
    }

    /// An address where nothing listens: connections are refused at once, so the engine's
    /// tasks fail fast and shut down without waiting for timeouts.
    pub(crate) fn refusing_addr() -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local addr")
    }

    /// Engine state built as [`Consumer::prepare`] does, with a name server that refuses
    /// connections: every broker call fails at once.
    pub(crate) async fn shared(config: Config) -> Arc<Shared<Accept>> {
        let client = crate::client::ClientConfig {
            namesrv_addr: refusing_addr().to_string(),
            client_ip: Some("127.0.0.1".to_owned()),
            ..crate::client::ClientConfig::default()
        };
        let runtime = Runtime {
            metrics: Metrics::new(),
            cache_budget: Arc::new(CacheBudget::unlimited()),
        };
        Consumer::prepare(client, config, Accept, runtime)
            .await
            .expect("prepare")
            .shared
    }

    /// Starts broker `b` for `mq` (its topic routed there, one queue): it serves each request
    /// in a task of its own, as a real one serves them on thread pools, so an UNLOCK_BATCH_MQ
    /// can overtake a slow LOCK_BATCH_MQ. The flag returned is its lock on `mq` as it stands
    /// after each request it finished; a LOCK takes 300 ms. The group's only member is this
    /// consumer; anything else gets a bare success. Abort the handle when done.
    pub(crate) async fn lock_broker<H: Handler>(
        shared: &Shared<H>,
        mq: &MessageQueue,
    ) -> (Arc<Mutex<bool>>, tokio::task::JoinHandle<()>) {
        let (held, _, broker) = switchable_lock_broker(shared, mq).await;
        (held, broker)
    }

    /// [`lock_broker`] that grants the lock only while the flag it returns is true (a broker
    /// that restarted and granted the queue to another member refuses it).
    pub(crate) async fn switchable_lock_broker<H: Handler>(
        shared: &Shared<H>,
        mq: &MessageQueue,
    ) -> (
        Arc<Mutex<bool>>,
        Arc<AtomicBool>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        shared.client.routes().update(&mq.topic, route(addr, 1));
        let held = Arc::new(Mutex::new(false));
        let grant = Arc::new(AtomicBool::new(true));
        let serve = serve_locks(
            listener,
            mq.clone(),
            shared.client_id.clone(),
            Arc::clone(&held),
            Arc::clone(&grant),
        );
        (held, grant, tokio::spawn(serve))
    }

    /// The broker of [`lock_broker`].
    async fn serve_locks(
        listener: tokio::net::TcpListener,
        mq: MessageQueue,
        client_id: String,
        held: Arc<Mutex<bool>>,
        grant: Arc<AtomicBool>,
    ) {
        use crate::remoting::body::lock::LockBatchResponse;
        use crate::remoting::frame::FrameDecoder;
        use crate::remoting::{RemotingCommand, RequestCode, SerializeType};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (socket, _) = listener.accept().await.expect("accept");
        let (mut read, write) = socket.into_split();
        let write = Arc::new(tokio::sync::Mutex::new(write));
        let (mut decoder, mut buf) = (FrameDecoder::default(), bytes::BytesMut::new());
        let mut tasks = tokio::task::JoinSet::new();
        while read.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
            while let Some(frame) = decoder.decode(&mut buf).expect("frame") {
                let request = RemotingCommand::decode(frame).expect("command");
                let (mq, held, write) = (mq.clone(), Arc::clone(&held), Arc::clone(&write));
                let granted = grant.load(Ordering::SeqCst);
                let members = format!(r#"{{"consumerIdList":["{client_id}"]}}"#);
                tasks.spawn(async move {
                    let answer =
                        RemotingCommand::response_to(&request, ResponseCode::Success, None);
                    let answer = match request.request_code() {
                        RequestCode::LockBatchMq => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            *lock(&held) = granted;
                            let body = LockBatchResponse {
                                lock_ok_mq_set: if granted { vec![mq] } else { Vec::new() },
                            };
                            answer.with_body(body.to_json())
                        }
                        RequestCode::UnlockBatchMq => {
                            *lock(&held) = false;
                            answer
                        }
                        RequestCode::GetConsumerListByGroup => answer.with_body(members),
                        _ => answer,
                    };
                    if !request.is_oneway() {
                        let mut out = bytes::BytesMut::new();
                        answer
                            .encode(SerializeType::Json, &mut out)
                            .expect("encode");
                        let _ = write.lock().await.write_all(&out).await;
                    }
                });
            }
        }
    }

    /// A route of `queues` queues on broker `b` at `addr`.
    pub(crate) fn route(
        addr: std::net::SocketAddr,
        queues: i32,
    ) -> crate::remoting::body::route::TopicRouteData {
        use crate::remoting::body::route::{BrokerData, QueueData, TopicRouteData};
        TopicRouteData {
            queue_datas: vec![QueueData {
                broker_name: "b".to_owned(),
                read_queue_nums: queues,
                write_queue_nums: queues,
                perm: 6,
                ..QueueData::default()
            }],
            broker_datas: vec![BrokerData {
                broker_name: "b".to_owned(),
                broker_addrs: [(0, addr.to_string())].into(),
                ..BrokerData::default()
            }],
            ..TopicRouteData::default()
        }
    }

    /// Queue 0 of `topic` on broker `b`.
    pub(crate) fn queue(topic: &str) -> MessageQueue {
        MessageQueue {
            topic: topic.to_owned(),
            broker_name: "b".to_owned(),
            queue_id: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};

    use super::testing::{self, queue, refusing_addr, Accept};
    use super::*;
    use crate::client::ClientConfig;
    use crate::consumer::QueueState;

    fn client(namesrv: SocketAddr) -> ClientConfig {
        ClientConfig {
            namesrv_addr: namesrv.to_string(),
            // As the daemon does by default: a client id of its own per start.
            instance_name: None,
            client_ip: Some("127.0.0.1".to_owned()),
            ..ClientConfig::default()
        }
    }

    fn broadcasting(dir: &Path, instance: Option<&str>) -> Config {
        let mut config = Config::new("G_store", "T_store");
        config.model = Model::Broadcasting;
        config.offset_store_dir = dir.to_owned();
        config.offset_store_instance = instance.map(str::to_owned);
        config
    }

    async fn start(namesrv: SocketAddr, config: Config) -> Result<Consumer<Accept>, ConsumerError> {
        let runtime = Runtime {
            metrics: Metrics::new(),
            cache_budget: Arc::new(CacheBudget::unlimited()),
        };
        Consumer::start(client(namesrv), config, Accept, runtime).await
    }

    #[tokio::test]
    async fn a_retry_queue_without_an_offset_starts_at_0_whatever_consume_from_says() {
        let retry = queue("%RETRY%G_start");
        for from in [
            ConsumeFrom::LastOffset,
            ConsumeFrom::FirstOffset,
            ConsumeFrom::Timestamp(now_millis()),
        ] {
            let mut config = Config::new("G_start", "T_start");
            config.consume_from = from;
            let shared = testing::shared(config).await;
            // No broker is asked (none answers here): the max offset would skip the messages
            // sent back before this queue's worker first started.
            let start = shared.configured_start(&retry, false).await;
            assert_eq!(start.ok(), Some(0), "{from:?}");
        }
    }

    #[tokio::test]
    async fn a_second_consumer_of_the_same_offsets_fails_until_the_first_stops() {
        let dir = tempfile::tempdir().expect("temp dir");
        let namesrv = refusing_addr();
        for instance in [None, Some("daemon-1")] {
            let first = start(namesrv, broadcasting(dir.path(), instance))
                .await
                .expect("first consumer starts");
            // A running holder is not waited for, however long the wait may be.
            let mut second = broadcasting(dir.path(), instance);
            second.offset_lock_wait = Duration::from_secs(600);
            let err = tokio::time::timeout(Duration::from_secs(10), start(namesrv, second))
                .await
                .expect("no wait for a running holder")
                .expect_err("a second consumer of the same store must not start");
            let lock = LocalFileStore::new(dir.path(), instance, "G_store").lock_path();
            assert!(
                matches!(
                    &err,
                    ConsumerError::OffsetStore(OffsetStoreError::Locked { lock: l, .. }) if *l == lock
                ),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(&lock.display().to_string()), "{text}");
            assert!(text.contains("instance_name"), "{text}");

            // Another instance name is another file: it may run beside the first.
            let beside = start(namesrv, broadcasting(dir.path(), Some("daemon-2")))
                .await
                .expect("another instance name starts");
            beside.shutdown().await;

            first.shutdown().await;
            let again = start(namesrv, broadcasting(dir.path(), instance))
                .await
                .expect("the store is free once the first consumer has shut down");
            again.shutdown().await;
        }
    }

    /// A rolling restart that starts the new daemon beside the old one: while the old one
    /// drains, the new consumer waits for the lock instead of failing, and starts once it is
    /// free; after `offset_lock_wait` it gives up.
    #[tokio::test]
    async fn a_consumer_waits_for_the_offsets_lock_of_one_that_is_draining() {
        let dir = tempfile::tempdir().expect("temp dir");
        let namesrv = refusing_addr();
        let store = LocalFileStore::new(dir.path(), None, "G_store");
        // The old daemon's lock, as its shutdown leaves it until the process exits.
        let old = store.lock().expect("the old daemon's lock");
        old.mark(HolderPhase::Draining).expect("mark");

        let mut short = broadcasting(dir.path(), None);
        short.offset_lock_wait = Duration::from_millis(600);
        let err = start(namesrv, short).await.expect_err("the wait ends");
        assert!(
            matches!(
                &err,
                ConsumerError::OffsetStore(OffsetStoreError::Locked { .. })
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("draining"), "{err}");

        let mut config = broadcasting(dir.path(), None);
        config.offset_lock_wait = Duration::from_secs(60);
        let new = tokio::spawn(start(namesrv, config));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            !new.is_finished(),
            "the new consumer must wait while the old one drains"
        );
        drop(old);
        let new = tokio::time::timeout(Duration::from_secs(10), new)
            .await
            .expect("the new consumer starts soon after the lock is free")
            .expect("task")
            .expect("the new consumer starts");
        new.shutdown().await;
    }

    /// A save still writing when the consumer's state is dropped (a shutdown cut short by the
    /// grace period) keeps the file lock until it is done: the next consumer must not load,
    /// probe or write the store under it.
    #[tokio::test]
    async fn the_offsets_lock_outlives_the_consumer_while_a_save_is_in_flight() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "G_store");
        let consumer = start(refusing_addr(), broadcasting(dir.path(), None))
            .await
            .expect("starts");
        // What a save owns while its blocking write runs.
        let saving = (
            Arc::clone(&consumer.shared.local_save).lock_owned().await,
            Arc::clone(consumer.shared.offsets_lock.as_ref().expect("broadcasting")),
        );
        let state = Arc::downgrade(&consumer.shared);
        drop(consumer);
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.upgrade().is_some() {
            assert!(
                Instant::now() < deadline,
                "the consumer's tasks did not end"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            matches!(store.lock(), Err(OffsetStoreError::Locked { .. })),
            "the lock was released under a save in flight"
        );
        drop(saving);
        let _next = store.lock().expect("free once the save is done");
    }

    /// A save in progress (on a slow or hung volume) does not hold up the shutdown's start:
    /// the consumer stops taking work at once and still marks its lock draining.
    #[tokio::test]
    async fn a_save_in_progress_does_not_delay_the_shutdown() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "G_store");
        let consumer = start(refusing_addr(), broadcasting(dir.path(), None))
            .await
            .expect("starts");
        let saving = Arc::clone(&consumer.shared.local_save).lock_owned().await;
        let cancel = consumer.cancel.clone();
        let shutdown = tokio::spawn(consumer.shutdown());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cancel.is_cancelled()
            || store.holder().map(|h| h.phase) != Some(HolderPhase::Draining)
        {
            assert!(
                Instant::now() < deadline,
                "the shutdown waited for the save before it cancelled and marked"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(saving);
        tokio::time::timeout(Duration::from_secs(10), shutdown)
            .await
            .expect("the shutdown ends once the save is done")
            .expect("task");
    }

    /// Saves requested while one is in progress (every queue released at once, at start or
    /// shutdown) are written by one save after it, not one each; a request made after that
    /// save's snapshot still gets a save of its own.
    #[tokio::test]
    async fn saves_queued_behind_one_are_written_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "G_store");
        let mut config = broadcasting(dir.path(), None);
        // No periodic save in the middle of the count.
        config.persist_interval = Duration::from_secs(3600);
        let consumer = start(refusing_addr(), config).await.expect("starts");
        let shared = Arc::clone(&consumer.shared);
        let saves = || {
            shared
                .metrics
                .offset_commits
                .with_label_values(&shared.labels())
                .get()
        };
        let before = saves();
        let in_progress = Arc::clone(&shared.local_save).lock_owned().await;
        let requested = shared.save_requests.load(Ordering::SeqCst);
        let mut queued = JoinSet::new();
        for id in 0..8 {
            shared.offsets.update(
                &MessageQueue::new("T_store", "b", id),
                10 + i64::from(id),
                false,
            );
            let shared = Arc::clone(&shared);
            queued.spawn(async move { shared.persist_local().await });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.save_requests.load(Ordering::SeqCst) < requested + 8 {
            assert!(Instant::now() < deadline, "the saves were not requested");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(in_progress);
        while queued.join_next().await.is_some() {}
        assert_eq!(
            saves() - before,
            1,
            "one save for the eight queued requests"
        );
        let mut saved = store.load().expect("loads");
        saved.sort_by_key(|(mq, _)| mq.queue_id);
        assert_eq!(
            saved.len(),
            8,
            "every queue's offset is in the file: {saved:?}"
        );
        assert_eq!(saved[7].1, 17);

        shared
            .offsets
            .update(&MessageQueue::new("T_store", "b", 3), 99, false);
        shared.persist_local().await;
        assert_eq!(saves() - before, 2, "a later request is saved again");
        let saved = store.load().expect("loads");
        assert!(saved
            .iter()
            .any(|(mq, offset)| mq.queue_id == 3 && *offset == 99));
        consumer.shutdown().await;
    }

    /// A draining record read just before a successor (running) wrote its own ends the wait
    /// as soon as the successor's record shows: a running holder is never waited for.
    #[tokio::test]
    async fn the_wait_ends_when_the_holder_turns_out_to_be_running() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "G_store");
        let holder = store.lock().expect("lock");
        holder.mark(HolderPhase::Draining).expect("mark");
        let mut config = broadcasting(dir.path(), None);
        config.offset_lock_wait = Duration::from_secs(60);
        let newcomer = tokio::spawn(start(refusing_addr(), config));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !newcomer.is_finished(),
            "waits while the record says draining"
        );
        holder.mark(HolderPhase::Running).expect("mark");
        let err = tokio::time::timeout(Duration::from_secs(5), newcomer)
            .await
            .expect("the wait ends")
            .expect("task")
            .expect_err("a running holder fails the start");
        assert!(err.to_string().contains("running"), "{err}");
    }

    /// A bug that ends one of the consumer's own tasks leaves the subscription broken: the
    /// probe says so (the daemon's liveness and exit status come from it), and the consumer
    /// still shuts down.
    #[tokio::test]
    async fn a_task_that_panicked_fails_the_consumer_which_still_shuts_down() {
        let consumer = start(refusing_addr(), Config::new("G_fail", "T_fail"))
            .await
            .expect("start");
        let probe = consumer.probe();
        assert_eq!(probe.failure(), None);
        consumer
            .shared
            .panic_next_rebalance
            .store(true, Ordering::Relaxed);
        consumer.shared.rebalance_now.notify_one();
        let reason = tokio::time::timeout(Duration::from_secs(10), probe.failed())
            .await
            .expect("the failure is recorded");
        assert!(
            reason.starts_with("the rebalancer task panicked: a rebalance pass panicked"),
            "{reason}"
        );
        assert_eq!(probe.failure(), Some(reason.as_str()));
        // A queue whose worker went down with the rebalancer: the shutdown releases it.
        let mq = queue("T_fail");
        consumer.shared.stats.set_queue(&mq, QueueState::default());
        tokio::time::timeout(Duration::from_secs(10), consumer.shutdown())
            .await
            .expect("shutdown ends");
        assert!(probe.stats().queues.is_empty(), "{:?}", probe.stats());
    }

    /// Every task ends when the consumer is shut down; none of those ends is a failure.
    #[tokio::test]
    async fn a_shutdown_is_not_a_failure() {
        for config in [
            Config::new("G_clean", "T_clean"),
            Config {
                mode: ConsumeMode::Orderly,
                ..Config::new("G_clean", "T_clean")
            },
        ] {
            let consumer = start(refusing_addr(), config).await.expect("start");
            let probe = consumer.probe();
            tokio::time::timeout(Duration::from_secs(10), consumer.shutdown())
                .await
                .expect("shutdown ends");
            assert_eq!(probe.failure(), None);
        }
    }

    /// A consumer's shutdown records in the lock file that it is draining, for the next one.
    #[tokio::test]
    async fn shutdown_marks_the_offsets_lock_draining() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "G_store");
        let consumer = start(refusing_addr(), broadcasting(dir.path(), None))
            .await
            .expect("starts");
        let phase = || store.holder().map(|h| h.phase);
        assert_eq!(phase(), Some(HolderPhase::Running));
        consumer.shutdown().await;
        // The record outlives the lock (the file is never truncated).
        assert_eq!(phase(), Some(HolderPhase::Draining));
        let _next = store.lock().expect("free once shut down");
        assert_eq!(
            phase(),
            Some(HolderPhase::Running),
            "the next holder's record"
        );
    }

    /// Orderly: a renewal the broker refuses ends the lock at once (Java's `lockAll`), instead
    /// of leaving it valid until `lock_ttl` after the last grant while another member consumes
    /// the queue; and a lock granted again after that has a new term, which tells the worker
    /// the queue may have been consumed elsewhere in between.
    #[tokio::test]
    async fn a_refused_renewal_ends_the_lock_and_a_new_grant_starts_a_new_term() {
        let mq = queue("T_refuse");
        let mut config = Config::new("G_refuse", "T_refuse");
        config.mode = ConsumeMode::Orderly;
        let shared = testing::shared(config).await;
        let (_held, grant, broker) = testing::switchable_lock_broker(&shared, &mq).await;
        shared.stats.set_queue(&mq, QueueState::default());

        renew_locks(&shared).await;
        let first = shared.lock_term(&mq).expect("locked");
        renew_locks(&shared).await;
        assert_eq!(
            shared.lock_term(&mq),
            Some(first),
            "a renewal keeps the term"
        );

        grant.store(false, Ordering::SeqCst);
        renew_locks(&shared).await;
        assert_eq!(
            shared.lock_term(&mq),
            None,
            "a refused renewal left the lock valid"
        );
        assert!(!shared.lock_valid(&mq));

        grant.store(true, Ordering::SeqCst);
        renew_locks(&shared).await;
        let second = shared.lock_term(&mq).expect("locked again");
        assert_ne!(
            second, first,
            "a lock granted after a refusal kept its old term"
        );

        // A lock that expired unrenewed starts a new term too.
        let ttl = shared.config.lock_ttl;
        lock(&shared.locks).get_mut(&mq).expect("held").granted_at -= ttl;
        assert_eq!(
            shared.lock_term(&mq),
            None,
            "an expired lock counts as held"
        );
        renew_locks(&shared).await;
        let third = shared.lock_term(&mq).expect("locked again");
        assert!(
            third != second && third != first,
            "an expired lock kept its term"
        );
        broker.abort();
    }

    /// Orderly: a worker that lost its lock gets a lock round within `RELOCK_DELAY`, not at
    /// the next regular round.
    #[tokio::test]
    async fn a_worker_asking_for_its_lock_gets_a_round_soon() {
        let mq = queue("T_relock");
        let mut config = Config::new("G_relock", "T_relock");
        config.mode = ConsumeMode::Orderly;
        config.lock_renew_interval = Duration::from_secs(600);
        let shared = testing::shared(config).await;
        let (_held, broker) = testing::lock_broker(&shared, &mq).await;
        shared.stats.set_queue(&mq, QueueState::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(lock_task(Arc::clone(&shared), cancel.clone()));
        shared.relock_now.notify_one();
        let deadline = Instant::now() + RELOCK_DELAY + Duration::from_secs(5);
        while shared.lock_term(&mq).is_none() {
            assert!(
                Instant::now() < deadline,
                "no lock round after the worker asked"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        task.await.expect("lock task");
        broker.abort();
    }

    /// Orderly: a queue released while a lock renewal naming it waits for the broker. The
    /// unlock went out at once, the broker took it first and then granted the renewal: the
    /// queue stayed locked for this consumer, renewed by nobody, and its next owner waited out
    /// the broker's lock expiry.
    #[tokio::test]
    async fn a_released_queue_is_not_locked_again_by_a_renewal_in_flight() {
        let mq = queue("T_lock");
        let mut config = Config::new("G_lock", "T_lock");
        config.mode = ConsumeMode::Orderly;
        let shared = testing::shared(config).await;
        let (held, broker) = testing::lock_broker(&shared, &mq).await;
        shared.stats.set_queue(&mq, QueueState::default());

        let renewal = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move { renew_locks(&shared).await }
        });
        // The renewal's LOCK_BATCH_MQ is at the broker now.
        tokio::time::sleep(Duration::from_millis(100)).await;
        crate::consumer::worker::release_as(&shared, &mq, true).await;
        renewal.await.expect("renewal");
        assert!(
            !*lock(&held),
            "the broker still locks the released queue for us"
        );
        assert!(!shared.lock_valid(&mq));
        broker.abort();
    }

    /// A route change applied by someone else on the shared table (the send-back producer
    /// refreshing the retry topic) asks for a rebalance at once, and an unchanged route does not.
    #[tokio::test]
    async fn a_route_changed_by_the_producer_triggers_a_rebalance() {
        let shared = testing::shared(Config::new("G_route", "T_route")).await;
        let retry = shared.config.retry_topic();
        let routes = shared.client.routes().clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(route_task(Arc::clone(&shared), cancel.clone()));
        let notified =
            || tokio::time::timeout(Duration::from_secs(1), shared.rebalance_now.notified());
        // The name server refuses: the task's own look-ups change nothing.
        assert!(
            notified().await.is_err(),
            "rebalance asked for without a change"
        );
        let broker = refusing_addr();
        let route = |queues| testing::route(broker, queues);
        for queues in [1, 2] {
            assert!(routes.update(&retry, route(queues)));
            notified()
                .await
                .expect("a changed route asks for a rebalance");
        }
        assert!(!routes.update(&retry, route(2)));
        assert!(
            notified().await.is_err(),
            "an unchanged route asked for a rebalance"
        );
        cancel.cancel();
        task.await.expect("route task");
    }

    /// Preparing touches the offset store only: nothing connects until `start`.
    #[tokio::test]
    async fn a_prepared_consumer_has_connected_to_nothing() {
        let namesrv = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = namesrv.local_addr().expect("local addr");
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = Runtime {
            metrics: Metrics::new(),
            cache_budget: Arc::new(CacheBudget::unlimited()),
        };
        let prepared = Consumer::prepare(
            client(addr),
            broadcasting(dir.path(), None),
            Accept,
            runtime,
        )
        .await
        .expect("prepared");
        let early = tokio::time::timeout(Duration::from_millis(500), namesrv.accept()).await;
        assert!(early.is_err(), "a prepared consumer connected: {early:?}");
        let consumer = prepared.start();
        tokio::time::timeout(Duration::from_secs(10), namesrv.accept())
            .await
            .expect("a started consumer asks the name server for routes")
            .expect("accept");
        drop(consumer);
    }

    #[tokio::test]
    async fn an_unwritable_offset_store_fails_the_start_before_anything_connects() {
        let namesrv = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = namesrv.local_addr().expect("local addr");
        let dir = tempfile::tempdir().expect("temp dir");
        let blocker = dir.path().join("not-a-directory");
        std::fs::write(&blocker, b"").expect("write");
        let mut roots = vec![blocker];
        if cfg!(target_os = "linux") {
            // Not even root can create directories here.
            roots.push(PathBuf::from("/proc/rocketmq-webhook-test/offsets"));
        }
        for root in roots {
            let err = start(addr, broadcasting(&root, None))
                .await
                .expect_err("an offset store that cannot be written must fail the start");
            let text = err.to_string();
            assert!(
                matches!(
                    err,
                    ConsumerError::OffsetStore(OffsetStoreError::Unwritable { .. })
                ),
                "{text}"
            );
            assert!(text.contains(&root.display().to_string()), "{text}");
            assert!(text.contains("offset_store_path"), "{text}");
        }
        let connected = tokio::time::timeout(Duration::from_millis(500), namesrv.accept()).await;
        assert!(
            connected.is_err(),
            "the name server was contacted by a consumer that failed to start"
        );
    }
}
