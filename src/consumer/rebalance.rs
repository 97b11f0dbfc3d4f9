//! The rebalancer: decides which queues this member consumes and owns their workers.
//!
//! Runs every `rebalance_interval`, at once when a broker says the group changed
//! (NOTIFY_CONSUMER_IDS_CHANGED), and after one second while the last run could not finish
//! ("not balanced", like the Java client). Revoked queues are drained by their worker before
//! the worker persists the offset and releases the queue; a queue is never re-added while its
//! previous worker is still draining, so one queue never has two workers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::remoting::rpc::GetConsumerList;
use crate::remoting::MessageQueue;

use super::config::Model;
use super::engine::{now_millis, Shared, Start};
use super::handler::Handler;
use super::worker;

/// Offset resets asked for by brokers (RESET_CONSUMER_CLIENT_OFFSET) and not applied yet: the
/// newest offset per queue. The inbound task adds to it without waiting: a queue of whole
/// requests, each applied only after its workers drained, filled up under a burst (one request
/// per broker, or an operator repeating a reset) and stalled the inbound task, and with it
/// every broker request behind. The rebalancer takes it whole.
#[derive(Debug, Default)]
pub(crate) struct PendingResets {
    offsets: std::sync::Mutex<HashMap<MessageQueue, i64>>,
    added: tokio::sync::Notify,
}

impl PendingResets {
    /// Records `offsets`, replacing what an earlier reset asked for the same queues.
    pub(crate) fn add(&self, offsets: impl IntoIterator<Item = (MessageQueue, i64)>) {
        super::engine::lock(&self.offsets).extend(offsets);
        self.added.notify_one();
    }

    /// Waits for resets and takes them all.
    pub(crate) async fn take(&self) -> Vec<(MessageQueue, i64)> {
        loop {
            self.added.notified().await;
            let taken = std::mem::take(&mut *super::engine::lock(&self.offsets));
            if !taken.is_empty() {
                return taken.into_iter().collect();
            }
        }
    }
}

pub(crate) struct Rebalancer<H> {
    shared: Arc<Shared<H>>,
    workers: JoinSet<MessageQueue>,
    /// Queues with a running worker: its cancel token and task id.
    active: HashMap<MessageQueue, (CancellationToken, tokio::task::Id)>,
    retiring: HashSet<MessageQueue>,
    /// Queues a reset stopped that are still ours but not started again: a further reset
    /// applies to them as to a running queue. Without this, a second reset asked for while the
    /// first drained was taken before the rebalance that restarts the queues, found none of them
    /// running, and was dropped without a word.
    reset_stopped: HashSet<MessageQueue>,
    ids: HashMap<tokio::task::Id, MessageQueue>,
    /// Queues whose worker ended while still assigned, for the restart back-off.
    crashes: HashMap<MessageQueue, Crashes>,
    sightings: Sightings,
}

/// Which queues of each topic came into its route after this member's first look at it: with
/// LAST_OFFSET they start at what was stored since the daemon started rather than at their end
/// (`Shared::configured_start`).
#[derive(Debug, Default)]
struct Sightings {
    /// Every queue seen in each topic's route so far.
    known: HashMap<String, HashSet<MessageQueue>>,
    /// Topics a pass found no route for, before one was seen, after the name servers said they
    /// do not exist (created after the start): every queue of theirs came later.
    unrouted: HashSet<String>,
    later: HashSet<MessageQueue>,
}

impl Sightings {
    fn no_route(&mut self, topic: &str) {
        if !self.known.contains_key(topic) {
            self.unrouted.insert(topic.to_owned());
        }
    }

    fn route(&mut self, topic: &str, queues: &[MessageQueue]) {
        let first_look = !self.known.contains_key(topic) && !self.unrouted.contains(topic);
        let known = self.known.entry(topic.to_owned()).or_default();
        for mq in queues {
            if known.insert(mq.clone()) && !first_look {
                self.later.insert(mq.clone());
            }
        }
    }

    fn came_later(&self, mq: &MessageQueue) -> bool {
        self.later.contains(mq)
    }
}

/// The first restart of a queue whose worker ended while assigned waits this long; each
/// further one twice as long as the one before, up to [`RESTART_BACKOFF_MAX`]. Such an end is
/// a bug (a panic past the handler's guard), and one a batch's content triggers would
/// otherwise redeliver that batch and panic again in a tight loop.
const RESTART_BACKOFF_FIRST: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A queue whose worker has not ended abnormally for this long starts its back-off afresh.
const CRASH_MEMORY: Duration = Duration::from_secs(600);

/// A queue's recent abnormal worker ends.
#[derive(Debug, Clone, Copy)]
struct Crashes {
    /// How many in a row, none more than [`CRASH_MEMORY`] after the one before.
    count: u32,
    last: Instant,
}

impl Crashes {
    /// When the queue's next worker may start.
    fn restart_at(&self) -> Instant {
        let doublings = self.count.saturating_sub(1).min(16);
        let delay = RESTART_BACKOFF_FIRST
            .saturating_mul(1 << doublings)
            .min(RESTART_BACKOFF_MAX);
        self.last + delay
    }
}

impl<H: Handler> Rebalancer<H> {
    pub(crate) fn new(shared: Arc<Shared<H>>) -> Self {
        Self {
            shared,
            workers: JoinSet::new(),
            active: HashMap::new(),
            retiring: HashSet::new(),
            reset_stopped: HashSet::new(),
            ids: HashMap::new(),
            crashes: HashMap::new(),
            sightings: Sightings::default(),
        }
    }

    /// Runs until `cancel`, then stops every worker (each drains and persists) and returns the
    /// queues that were held.
    pub(crate) async fn run(mut self, cancel: CancellationToken) -> Vec<MessageQueue> {
        // A deadline, not a period: a worker's end or a reset handled meanwhile does not push
        // the next pass back (with workers ending one after another it never came).
        let mut next_pass = Instant::now() + self.shared.config.rebalance_interval;
        loop {
            let sleep = self.next_wait(next_pass.saturating_duration_since(Instant::now()));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(done) = self.workers.join_next_with_id(), if !self.workers.is_empty() => {
                    self.reap(done).await;
                    continue;
                }
                reset = self.shared.resets.take() => {
                    // A reset waits for the affected workers to drain; a shutdown meanwhile
                    // must not wait for it (the workers drain and persist on their own; the
                    // reset is not applied, as if it had come after the shutdown).
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break,
                        () = self.reset(reset) => {}
                    }
                    next_pass = Instant::now() + Duration::from_millis(100);
                    continue;
                }
                _ = self.shared.rebalance_now.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            // A pass makes a request per new queue (offsets, locks), each up to rpc_timeout
            // against a broker that stopped answering: a shutdown does not wait for it, so the
            // workers get the whole grace period to drain and persist. A pass cut short leaves
            // only what it finished (workers it started stop like the others) and, in orderly
            // mode, broker locks of queues it did not start yet, which expire.
            let balanced = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                balanced = self.rebalance() => balanced,
            };
            next_pass = Instant::now()
                + if balanced {
                    self.shared.config.rebalance_interval
                } else {
                    Duration::from_secs(1)
                };
        }
        let held: Vec<MessageQueue> = self.active.keys().cloned().collect();
        for (token, _) in self.active.values() {
            token.cancel();
        }
        while let Some(done) = self.workers.join_next_with_id().await {
            if let Err(e) = done {
                self.release_panicked(e).await;
            }
        }
        held
    }

    /// One pass; returns whether every topic was balanced.
    async fn rebalance(&mut self) -> bool {
        let shared = Arc::clone(&self.shared);
        #[cfg(test)]
        assert!(
            !shared.panic_next_rebalance.load(Ordering::Relaxed),
            "a rebalance pass panicked (injected by a test)"
        );
        let mut balanced = true;
        let mut target: BTreeSet<MessageQueue> = BTreeSet::new();
        // Whether a broker took us for the subscribed topic in this pass (readiness).
        let mut taken = false;
        for topic in shared.config.topics() {
            let Some(mq_all) = shared.subscribe_queues(&topic) else {
                // Not while the first look-up is under way or no name server answers: the
                // rebalancer's own timer may run a pass before any route is known, and a new
                // group's queues would all have counted as later.
                if shared.said_absent(&topic) {
                    self.sightings.no_route(&topic);
                }
                if topic == shared.config.topic {
                    balanced = false;
                }
                continue;
            };
            self.sightings.route(&topic, &mq_all);
            let main = topic == shared.config.topic;
            match shared.config.model {
                Model::Broadcasting => {
                    if shared.heartbeat_taken.load(Ordering::Relaxed) {
                        taken |= main;
                    } else {
                        // Look again in a second rather than a whole interval: readiness
                        // waits for this.
                        balanced = false;
                    }
                    target.extend(mq_all);
                }
                // No readable queue to ask a broker about: a taken heartbeat is all there is.
                Model::Clustering if mq_all.is_empty() => {
                    taken |= main && shared.heartbeat_taken.load(Ordering::Relaxed);
                    target.extend(self.active.keys().filter(|mq| mq.topic == topic).cloned());
                }
                Model::Clustering => match self.consumer_ids(&mq_all).await {
                    Some(cids) => {
                        taken |= main;
                        let mine = shared.config.strategy.allocate(
                            &shared.config.group,
                            &shared.client_id,
                            &mq_all,
                            &cids,
                        );
                        debug!(group = %shared.group(), %topic, members = cids.len(), queues = mq_all.len(), assigned = mine.len(), "Allocation computed.");
                        // A queue that moved to another member is its new owner's to reset.
                        self.reset_stopped
                            .retain(|mq| mq.topic != topic || mine.contains(mq));
                        target.extend(mine);
                    }
                    None => {
                        // Keep what we hold for this topic: an unreachable broker is no reason
                        // to stop consuming.
                        balanced = false;
                        target.extend(self.active.keys().filter(|mq| mq.topic == topic).cloned());
                    }
                },
            }
        }

        let mut changed = false;
        // New workers start pulling while later ones are still being set up: they must already
        // take their share of the subscription's (and the process's) cache limits from the new
        // assignment.
        shared.hold_queues(target.len().max(self.active.len()));
        let held: Vec<MessageQueue> = self.active.keys().cloned().collect();
        for mq in held {
            if !target.contains(&mq) {
                self.revoke(&mq, "revoked");
                changed = true;
            }
        }
        for mq in target {
            if self.active.contains_key(&mq) {
                continue;
            }
            if self.retiring.contains(&mq) {
                balanced = false;
                continue;
            }
            // Not a reason to call the pass unbalanced: `next_wait` wakes the loop in time.
            if self.restart_pending(&mq) {
                continue;
            }
            if shared.is_orderly_clustering() {
                // Released with a batch that may still be at the endpoint: not before the
                // broker's lock expiry (see `Shared::leave_locked`).
                // Not a reason to call the pass unbalanced (a pass a second for a minute):
                // `next_wait` wakes the loop when the hold ends.
                if shared.lock_held_back(&mq) {
                    // Ours, not started: an offset reset meanwhile applies to it as to a
                    // queue a reset stopped (it would find no worker and be dropped).
                    self.reset_stopped.insert(mq.clone());
                    continue;
                }
                let granted = shared
                    .lock_queues(&mq.broker_name, vec![mq.clone()], |_| true)
                    .await;
                if !granted.contains(&mq) {
                    debug!(queue = %mq, "Queue is locked by another member; retrying soon.");
                    balanced = false;
                    continue;
                }
            }
            match shared
                .start_offset(&mq, self.sightings.came_later(&mq))
                .await
            {
                Ok(start) => {
                    self.spawn(mq, start);
                    changed = true;
                }
                Err(e) => {
                    shared.count_error("rebalance", e.error_type());
                    warn!(group = %shared.group(), queue = %mq, error = %e, "Cannot compute the start offset; retrying soon.");
                    // Nobody renews a lock of a queue without a worker: left to lapse, it
                    // would hold off another member the allocation moves the queue to.
                    if shared.is_orderly_clustering() {
                        shared.unlock_queue(&mq).await;
                    }
                    balanced = false;
                }
            }
        }
        if changed {
            shared.stats.record_rebalance();
            shared
                .metrics
                .rebalances
                .with_label_values(&shared.labels())
                .inc();
            // Only ever up: brokers ignore a subscription whose version is not above the one
            // they hold, and the wall clock may step back or repeat a millisecond.
            let _ = shared
                .sub_version
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(now_millis().max(v.saturating_add(1)))
                });
            shared.heartbeat_now.notify_one();
            info!(group = %shared.group(), queues = self.active.len(), "Assignment changed.");
        }
        shared.hold_queues(self.active.len());
        shared
            .metrics
            .assigned_queues
            .with_label_values(&shared.labels())
            .set(self.active.len() as i64);
        // Not on routes alone: a name server that answers while every broker is unreachable
        // (a network policy, wrong ACL keys) would let a rolling update replace working pods
        // with ones that consume nothing.
        if taken {
            shared.ready.store(true, Ordering::Relaxed);
        }
        balanced
    }

    /// The group's members, sorted, from the first master broker of the topic whose list holds
    /// this member; `None` when no broker answers with one.
    async fn consumer_ids(&self, mq_all: &[MessageQueue]) -> Option<Vec<String>> {
        let brokers: BTreeSet<&str> = mq_all.iter().map(|mq| mq.broker_name.as_str()).collect();
        for broker in brokers {
            let Ok(addr) = self.shared.master_addr(broker) else {
                continue;
            };
            let rpc = GetConsumerList {
                consumer_group: self.shared.config.group.clone(),
            };
            match self.shared.call(&addr, &rpc).await {
                Ok(mut ids) => {
                    ids.sort();
                    ids.dedup();
                    if !ids.contains(&self.shared.client_id) {
                        // This broker has not taken our heartbeat yet (it restarted, say);
                        // another may have, and its list is as good.
                        self.shared.heartbeat_now.notify_one();
                        continue;
                    }
                    return Some(ids);
                }
                Err(e) => {
                    self.shared.count_error("rebalance", e.error_type());
                    debug!(broker = %addr, error = %e, "Consumer list unavailable.");
                }
            }
        }
        None
    }

    /// Books a finished worker. A revoked one frees its queue for re-assignment; one that ended
    /// while still assigned (a panic: a bug) gives its queue up so a later rebalance starts a
    /// fresh worker from the committed offset, after a back-off that doubles with each such
    /// end in a row (see [`Crashes`]).
    ///
    /// A worker that panicked did not release its queue itself: that is done here, before the
    /// queue can be assigned again (this task starts the workers).
    async fn reap(
        &mut self,
        done: Result<(tokio::task::Id, MessageQueue), tokio::task::JoinError>,
    ) {
        let id = match &done {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let Some(mq) = self.ids.get(&id).cloned() else {
            return;
        };
        if let Err(e) = done {
            self.release_panicked(e).await;
        }
        self.ids.remove(&id);
        self.retiring.remove(&mq);
        if self
            .active
            .get(&mq)
            .is_some_and(|(_, active_id)| *active_id == id)
        {
            self.active.remove(&mq);
            self.shared.count_error("rebalance", "other");
            let now = Instant::now();
            let crashes = self.crashes.entry(mq.clone()).or_insert(Crashes {
                count: 0,
                last: now,
            });
            if now.duration_since(crashes.last) > CRASH_MEMORY {
                crashes.count = 0;
            }
            crashes.count = crashes.count.saturating_add(1);
            crashes.last = now;
            let restart_in = crashes.restart_at().duration_since(now);
            warn!(queue = %mq, ?restart_in, in_a_row = crashes.count, "Queue worker ended while still assigned; restarting it.");
        }
        self.crashes.retain(|_, c| c.last.elapsed() <= CRASH_MEMORY);
    }

    /// Whether `mq`'s worker ended abnormally too recently to start again yet.
    fn restart_pending(&self, mq: &MessageQueue) -> bool {
        self.crashes
            .get(mq)
            .is_some_and(|c| Instant::now() < c.restart_at())
    }

    /// How long the loop sleeps: `wait`, or less when a queue's restart back-off, or an
    /// orderly queue's lock hold (`Shared::leave_locked`), ends sooner.
    fn next_wait(&self, wait: Duration) -> Duration {
        let now = Instant::now();
        self.crashes
            .values()
            .map(Crashes::restart_at)
            .chain(self.shared.lock_holds_end())
            .filter(|at| *at > now)
            .map(|at| at.duration_since(now))
            .fold(wait, Duration::min)
    }

    /// Does what a worker that panicked (or was aborted) left undone when it ended: persists
    /// the offset it last committed (the lowest one not finished, so redelivery covers what
    /// it held), leaves the orderly queue's lock to expire (its batch may still be at the
    /// endpoint) and forgets the queue. Otherwise the persist task kept
    /// writing that offset, and the lock task renewing the lock, for a queue that may be
    /// someone else's by now.
    async fn release_panicked(&mut self, e: tokio::task::JoinError) {
        let Some(mq) = self.ids.get(&e.id()).cloned() else {
            return;
        };
        warn!(queue = %mq, error = %e, "Queue worker ended abnormally; releasing its queue.");
        worker::release_aborted(&self.shared, &mq).await;
    }

    fn spawn(&mut self, mq: MessageQueue, start: Start) {
        let token = CancellationToken::new();
        let shared = Arc::clone(&self.shared);
        let queue = mq.clone();
        let t = token.clone();
        let handle = self.workers.spawn(async move {
            worker::run(shared, queue.clone(), start, t).await;
            queue
        });
        self.ids.insert(handle.id(), mq.clone());
        self.reset_stopped.remove(&mq);
        self.active.insert(mq, (token, handle.id()));
    }

    fn revoke(&mut self, mq: &MessageQueue, why: &str) {
        if let Some((token, _)) = self.active.remove(mq) {
            info!(group = %self.shared.group(), queue = %mq, "Queue {why}; draining.");
            token.cancel();
            self.retiring.insert(mq.clone());
        }
    }

    /// Applies a broker-requested offset reset: stop the affected workers, let them drain, set
    /// the new offsets, persist them, and let the next rebalance start the queues again.
    async fn reset(&mut self, mut offsets: Vec<(MessageQueue, i64)>) {
        // Only the queues this member holds, as Java resets only its process-queue table's: the
        // broker sends the whole topic's table to every member, each owner resets its own, and
        // writing another member's queue from here could rewind an offset its owner has moved
        // on from since.
        // (A queue still draining after a rebalance belongs to its next owner already.)
        let asked = offsets.len();
        offsets.retain(|(mq, _)| self.active.contains_key(mq) || self.reset_stopped.contains(mq));
        info!(
            group = %self.shared.group(),
            queues = asked,
            held = offsets.len(),
            "Offset reset asked for; applying it to the queues this member holds."
        );
        for (mq, _) in &offsets {
            self.revoke(mq, "stopped for an offset reset");
        }
        // Wait for the affected workers to finish so their final commit cannot overwrite the
        // reset offset.
        while offsets.iter().any(|(mq, _)| self.retiring.contains(mq)) {
            match self.workers.join_next_with_id().await {
                Some(done) => self.reap(done).await,
                None => break,
            }
        }
        for (mq, offset) in &offsets {
            info!(group = %self.shared.group(), queue = %mq, offset, "Offset reset by the broker.");
            self.shared.offsets.update(mq, *offset, false);
            // The queue's next worker reads its offset from the broker first.
            if self.shared.persist(mq).await {
                // As in `worker::release_as`: the broker keeps it now, and an entry left here
                // would be reported as ours (GET_CONSUMER_STATUS) if the queue moves away.
                if self.shared.config.model == Model::Clustering {
                    self.shared.offsets.remove(mq);
                }
            } else {
                warn!(group = %self.shared.group(), queue = %mq, offset, "The reset offset could not be stored at the broker, so it does not take effect; reset the offset again.");
            }
            self.reset_stopped.insert(mq.clone());
        }
        self.shared.rebalance_now.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::engine::testing::{self, Accept};
    use crate::consumer::engine::{lock, HeldLock};
    use crate::consumer::handler::ConsumeMode;
    use crate::consumer::stats::QueueState;
    use crate::consumer::Config;

    /// A rebalancer of an orderly clustering consumer that reaches no broker.
    async fn rebalancer() -> Rebalancer<Accept> {
        let mut config = Config::new("G_reap", "T_reap");
        config.mode = ConsumeMode::Orderly;
        Rebalancer::new(testing::shared(config).await)
    }

    /// The queues of a topic's first route start at their end; those added later, or of a topic
    /// whose route came only after a pass had looked for it, at what was stored since the start.
    #[test]
    fn queues_that_come_into_the_route_later_are_told_apart() {
        let q = |topic: &str, id: i32| MessageQueue::new(topic, "b", id);
        let mut s = Sightings::default();
        s.route("T", &[q("T", 0), q("T", 1)]);
        s.route("T", &[q("T", 0), q("T", 1), q("T", 2)]);
        assert!(!s.came_later(&q("T", 0)));
        assert!(!s.came_later(&q("T", 1)));
        assert!(s.came_later(&q("T", 2)));
        // A queue gone from the route (its broker down) and back is known.
        s.route("T", &[q("T", 2)]);
        s.route("T", &[q("T", 0), q("T", 1), q("T", 2)]);
        assert!(!s.came_later(&q("T", 0)));
        s.no_route("U");
        s.route("U", &[q("U", 0)]);
        assert!(s.came_later(&q("U", 0)));
        // No route after one was seen (a name server lapse) changes nothing.
        s.no_route("T");
        s.route("T", &[q("T", 0)]);
        assert!(!s.came_later(&q("T", 0)));
    }

    #[tokio::test]
    async fn a_worker_that_panicked_leaves_no_queue_behind() {
        let mut rb = rebalancer().await;
        let mq = testing::queue("T_reap");
        let shared = Arc::clone(&rb.shared);
        let queue = mq.clone();
        // What a worker registers when it starts, then a panic before its own release.
        let handle = rb.workers.spawn(async move {
            shared.offsets.update(&queue, 7, false);
            shared.stats.set_queue(&queue, QueueState::default());
            lock(&shared.locks).insert(
                queue.clone(),
                HeldLock {
                    granted_at: tokio::time::Instant::now(),
                    term: 1,
                },
            );
            panic!("worker bug");
        });
        rb.ids.insert(handle.id(), mq.clone());
        rb.active
            .insert(mq.clone(), (CancellationToken::new(), handle.id()));
        let done = rb.workers.join_next_with_id().await.expect("a worker");
        assert!(done.is_err());
        rb.reap(done).await;
        assert!(!rb.active.contains_key(&mq));
        // The persist and lock tasks go by the stats' queues.
        assert!(
            !rb.shared.stats.queues().contains_key(&mq),
            "still in the stats"
        );
        // Its persist failed (no broker answers here), so the offset stays for the queue's
        // next start (see `worker::release_as`), though no task persists it any more.
        assert_eq!(rb.shared.offsets.read(&mq), Some(7));
        assert!(!rb.shared.lock_valid(&mq), "lock still held");
        // Its batch may still be at the endpoint: the lock is left to expire, and this member
        // keeps off the queue as long.
        assert!(rb.shared.lock_held_back(&mq));
    }

    /// Orderly: a queue released with a batch that may still be at the endpoint is not taken
    /// again by this member before the broker's lock expiry. The broker grants a lock again to
    /// the client that holds it, so a rebalance that gave the queue back delivered it beside
    /// that batch.
    #[tokio::test]
    async fn a_queue_left_locked_is_not_taken_again_at_once() {
        let mut rb = rebalancer().await;
        let mq = testing::queue("T_reap");
        let (held, broker) = testing::lock_broker(&rb.shared, &mq).await;
        // As a worker's end after a drain that gave up: the lock stays with the broker.
        *lock(&held) = true;
        rb.shared.leave_locked(&mq).await;
        rb.rebalance().await;
        assert!(rb.active.is_empty());
        // The loop wakes when the hold ends, not at the next regular pass.
        let wait = rb.next_wait(Duration::from_secs(3600));
        assert!(
            wait <= crate::consumer::engine::BROKER_LOCK_EXPIRY,
            "{wait:?}"
        );
        // Asked for, the lock would have been granted, then given back: the start offset
        // cannot be read here.
        assert!(*lock(&held), "the lock was asked for again");
        // Still ours: an offset reset meanwhile applies to it (it found no worker, and was
        // dropped). Applied, the offset is 5, or stored and forgotten here.
        rb.shared.offsets.update(&mq, 9, false);
        rb.reset(vec![(mq.clone(), 5)]).await;
        assert_ne!(
            rb.shared.offsets.read(&mq),
            Some(9),
            "the reset was dropped"
        );
        broker.abort();
    }

    /// Orderly: the broker granted a new queue's lock but its start offset could not be read
    /// (here the broker's answer lacks it). No worker starts, so nobody would renew the lock,
    /// and the member the allocation moves the queue to would wait out the broker's expiry.
    #[tokio::test]
    async fn a_queue_that_cannot_start_gives_its_lock_back() {
        let mut rb = rebalancer().await;
        let mq = testing::queue("T_reap");
        let (held, broker) = testing::lock_broker(&rb.shared, &mq).await;
        assert!(!rb.rebalance().await, "the queue started");
        assert!(rb.active.is_empty());
        assert!(!*lock(&held), "the broker still locks the queue for us");
        assert!(!rb.shared.lock_valid(&mq));
        broker.abort();
    }

    /// A second reset asked for while the first drained the queue was taken before the
    /// rebalance that starts the queue again, found it not running, and was dropped: the queue
    /// resumed at the first reset's offset.
    #[tokio::test]
    async fn a_reset_of_a_queue_a_reset_stopped_applies() {
        let mut rb = rebalancer().await;
        let mq = testing::queue("T_reap");
        let token = CancellationToken::new();
        let stopped = token.clone();
        let queue = mq.clone();
        let handle = rb.workers.spawn(async move {
            stopped.cancelled().await;
            queue
        });
        rb.ids.insert(handle.id(), mq.clone());
        rb.active.insert(mq.clone(), (token, handle.id()));
        rb.reset(vec![(mq.clone(), 5)]).await;
        assert!(rb.active.is_empty());
        // No broker answers here, so the offsets stay in the table, where they can be read.
        assert_eq!(rb.shared.offsets.read(&mq), Some(5));
        rb.reset(vec![(mq.clone(), 9)]).await;
        assert_eq!(
            rb.shared.offsets.read(&mq),
            Some(9),
            "the second reset was dropped"
        );
        // A queue this member never held is not touched.
        let other = MessageQueue {
            queue_id: mq.queue_id + 1,
            ..mq.clone()
        };
        rb.reset(vec![(other.clone(), 3)]).await;
        assert_eq!(rb.shared.offsets.read(&other), None);
    }

    /// Starts a worker of `mq` that panics at once, and reaps it.
    async fn crash(rb: &mut Rebalancer<Accept>, mq: &MessageQueue) {
        let handle = rb.workers.spawn(async { panic!("settlement bug") });
        rb.ids.insert(handle.id(), mq.clone());
        rb.active
            .insert(mq.clone(), (CancellationToken::new(), handle.id()));
        let done = rb.workers.join_next_with_id().await.expect("a worker");
        rb.reap(done).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_whose_worker_keeps_ending_restarts_later_each_time() {
        let mut rb = rebalancer().await;
        let mq = testing::queue("T_reap");
        let mut waits = Vec::new();
        for _ in 0..8 {
            crash(&mut rb, &mq).await;
            assert!(rb.restart_pending(&mq), "restarted at once");
            let wait = rb.next_wait(Duration::from_secs(3600));
            waits.push(wait.as_millis());
            tokio::time::advance(wait).await;
            assert!(!rb.restart_pending(&mq), "still waiting after the back-off");
        }
        // `release_aborted` inside `reap` may take some (paused, auto-advanced) time against no
        // broker before the wait is read, hence the slack below each step.
        let steps = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000];
        for (wait, step) in waits.iter().zip(steps) {
            assert!(*wait <= step && *wait + 100 >= step, "{waits:?}");
        }
        // Ten quiet minutes and the next end starts from the first step again.
        tokio::time::advance(CRASH_MEMORY + Duration::from_secs(1)).await;
        crash(&mut rb, &mq).await;
        assert!(rb.next_wait(Duration::from_secs(3600)) <= RESTART_BACKOFF_FIRST);
    }
}
