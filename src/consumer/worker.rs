//! One task per assigned queue: long-polling pull -> process queue -> handler -> offsets.
//!
//! The worker owns its [`ProcessQueue`] outright. Handler batches are futures the worker polls
//! itself (`in_flight`), each holding a permit of the subscription's consume semaphore; the
//! worker is the only place that mutates the process queue and moves the committed offset.
//! Batches are not spawned as tasks: a batch mostly waits on its HTTP connection's task, and a
//! spawned batch cost every message two extra task hand-offs (spawn, and the completion back to
//! the worker), which in the one-message-per-request orderly case was a fifth of the daemon's
//! CPU. Batches of different queues still run in parallel, one worker task per queue.
//! Completions are handled before new pulls (`biased` select) so acks never wait behind fresh
//! messages (style rule 5).
//!
//! Invariant (at-least-once): the committed offset is the lowest offset not yet finished, where
//! finished means the handler accepted the message, or the message was handed back to the broker
//! (retry or DLQ topic). A retry whose send-back fails is published to the retry topic instead
//! (Java's fallback); a message that cannot be handed back either way stays in the process
//! queue and is tried again; it is never dropped.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use prometheus::IntGauge;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::{ClientError, MASTER_ID};
use crate::remoting::body::heartbeat::ExpressionType;
use crate::remoting::filter;
use crate::remoting::message::LogId;
use crate::remoting::rpc::{PullMessage, PullResult, PullStatus, PullSysFlag};
use crate::remoting::{MessageExt, MessageQueue, ResponseCode};

use super::config::{Model, OrderlyExhausted};
use super::engine::{needs_heartbeat, now_millis, Shared, Start};
use super::error::ConsumerError;
use super::handler::{Batch, ConsumeMode, Handler, Outcome};
use super::process_queue::{Cached, FlowControl, FlowLimits, ProcessQueue};
use super::ready::Ready;
use super::stats::QueueState;

/// Broker hold time of a long poll (Java 15 s).
const SUSPEND_MILLIS: i64 = 15_000;
/// Client timeout of a long poll: must exceed the hold time (Java 30 s).
const PULL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a pull error (Java `pullTimeDelayMillsWhenException`).
const PULL_ERROR_DELAY: Duration = Duration::from_secs(3);
/// Pause after FLOW_CONTROL (Java 20 ms).
const PULL_FLOW_CONTROL_DELAY: Duration = Duration::from_millis(20);
/// Re-check interval while a process-queue limit is exceeded (Java 50 ms).
const FLOW_CONTROL_RECHECK: Duration = Duration::from_millis(50);
/// How long the broker's max offset may go unrefreshed while no pull is in flight
/// ([`Worker::maybe_probe_max`]).
const MAX_OFFSET_REFRESH: Duration = Duration::from_secs(10);
/// How often a worker publishes its queue state (status page, gauges).
const STATE_PUBLISH_INTERVAL: Duration = Duration::from_millis(50);

/// Redelivery delay after a failed send-back (Java 5 s).
const SEND_BACK_RETRY_DELAY: Duration = Duration::from_secs(5);

type PullFuture = Pin<Box<dyn Future<Output = (Result<PullResult, ClientError>, Duration)> + Send>>;
type MaxProbe = Pin<Box<dyn Future<Output = Result<i64, ConsumerError>> + Send>>;
/// A handler batch (or a DLQ send-back) polled by the worker; `Err` when its code panicked.
type BatchFuture = Pin<Box<dyn Future<Output = Result<Done, ()>> + Send>>;
/// A wait for room in the process cache pool.
type RoomFuture = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A pull answer whose messages the queue holds, for the room it keeps in the process pool.
#[derive(Debug, Clone, Copy)]
struct HeldAnswer {
    /// The first and last offsets of its messages that the queue took.
    first: i64,
    last: i64,
    /// Its messages, filtered ones included: they share the answer's buffer.
    found: usize,
}

/// The room a worker holds in the process cache pool ([`super::CacheBudget`]): at least its
/// cached messages plus the size of its pull in flight. Given back on drop, so a queue that is
/// released, cancelled or panics returns its room whatever the exit path.
struct Claim {
    room: Option<Arc<Semaphore>>,
    held: usize,
}

impl Claim {
    /// Gives back whatever is held beyond `keep`.
    fn release_to(&mut self, keep: usize) {
        if self.held > keep {
            if let Some(room) = &self.room {
                room.add_permits(self.held - keep);
            }
            self.held = keep;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.release_to(0);
    }
}

/// What a worker's process queue holds: in concurrent mode only the offset and size of each
/// unfinished message (the message itself travels to its batch), in orderly mode the message
/// (batches are taken from the process queue in order and may be rolled back).
///
/// The message is boxed so that a mark stays 24 bytes: a process queue is a `BTreeMap` of
/// entries, and unboxed every concurrent mark would take the 250-odd bytes of a `MessageExt`.
#[derive(Debug, Clone)]
enum Entry {
    Mark { offset: i64, size: u64 },
    Message(Box<MessageExt>),
}

impl Entry {
    fn mark(m: &MessageExt) -> Self {
        Self::Mark {
            offset: m.queue_offset,
            size: m.size_bytes(),
        }
    }

    fn into_message(self) -> Option<MessageExt> {
        match self {
            Self::Message(m) => Some(*m),
            Self::Mark { .. } => None,
        }
    }
}

impl Cached for Entry {
    fn offset(&self) -> i64 {
        match self {
            Self::Mark { offset, .. } => *offset,
            Self::Message(m) => m.queue_offset,
        }
    }

    fn size_bytes(&self) -> u64 {
        match self {
            Self::Mark { size, .. } => *size,
            Self::Message(m) => m.size_bytes(),
        }
    }
}

/// The offset a pull carries for the broker to store: any the queue has, 0 included. Java
/// sends only offsets above 0, so a young queue's start (0) reached the broker through the
/// worker's first persist alone; when that failed and the member then crashed with nothing
/// finished, the next owner found no offset and a LAST_OFFSET start skipped what had arrived.
fn pull_commit<H: Handler>(shared: &Shared<H>, mq: &MessageQueue) -> Option<i64> {
    shared.offsets.read(mq).filter(|offset| *offset >= 0)
}

/// What to do later with a message that is not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Offer it to the handler again.
    Deliver,
    /// Try the DLQ send-back again.
    DeadLetter,
}

/// Result of one batch task.
#[derive(Debug)]
struct Done {
    /// A message of this batch could be handed back neither by send-back nor by the fallback
    /// publish: the rest of the batch's retries go straight to the local retry, since each try
    /// could cost both calls' timeouts while the batch holds a consume slot.
    hand_back_failed: bool,
    finished: Vec<i64>,
    later: Vec<(MessageExt, Duration, Pending)>,
    /// Orderly only: the raw outcomes, to decide commit or rollback.
    orderly_retry: bool,
    /// Orderly only: how long the queue pauses before the batch is offered again.
    orderly_suspend: Option<Duration>,
    orderly_retry_offsets: Vec<i64>,
}

struct Worker<H> {
    shared: Arc<Shared<H>>,
    mq: MessageQueue,
    is_retry_queue: bool,
    pq: ProcessQueue<Entry>,
    next_offset: i64,
    /// Concurrent: pulled messages waiting for a consume slot, in offset order.
    ready: Ready<MessageExt>,
    /// Messages to offer again (or dead-letter again) at a time.
    delayed: Vec<(Instant, MessageExt, Pending)>,
    /// Batches being handled; orderly has at most one.
    in_flight: FuturesUnordered<BatchFuture>,
    pull: Option<PullFuture>,
    /// The broker id the last pull answer suggested for the next pull (`suggestWhichBrokerId`,
    /// 0 = master), and whether the last pull went to a slave (for the log when it changes).
    pull_from: i64,
    pulling_slave: bool,
    /// Messages the pull in flight asked for (`maxMsgNums`).
    pull_asked: usize,
    /// The last pull found messages and the queue had more: the next pull asks for a full batch.
    backlog: bool,
    /// Room in the process cache pool: held, and the wait for more when the pool is empty.
    claim: Claim,
    waiting_room: Option<RoomFuture>,
    /// Each pull answer some of whose messages are still held, and its message count. Message
    /// bodies are slices of their answer's buffer, which lives until the last of them is
    /// finished: the pool counts the whole answer until then, so it bounds the memory held,
    /// not only the messages. In offset order, without overlaps ([`Self::hold_answer`]); a
    /// finished one stays in place with `found` 0 until it reaches the front.
    answers: VecDeque<HeldAnswer>,
    answers_held: usize,
    pull_not_before: Instant,
    /// The broker's max offset (for the lag), from the last pull answer or GET_MAX_OFFSET.
    max_offset: Option<i64>,
    /// When `max_offset` was last learned, or last asked for.
    max_offset_at: Instant,
    /// A GET_MAX_OFFSET in flight ([`Self::maybe_probe_max`]).
    max_probe: Option<MaxProbe>,
    paused: Option<Pause>,
    /// Orderly: local reconsume counts (retries never leave the process queue).
    local_reconsume: HashMap<i64, i32>,
    suspended_until: Option<Instant>,
    /// Orderly clustering: the term of the broker lock this worker consumes under (see
    /// `HeldLock::term`); `None` once it saw the lock lost.
    lock_term: Option<u64>,
    /// Orderly: the lock came back after being lost; re-read the offset before pulling.
    recompute_offset: bool,
    /// The broker moved the pull offset here (OFFSET_ILLEGAL). Until every message held is
    /// finished the worker does not pull, and no commit goes past this offset: below it the
    /// held messages may still be the broker's, at or above it they belong to what the queue
    /// was before it moved (a truncated or recreated queue reuses offsets). Then the worker
    /// continues from here with a fresh process queue.
    moved_to: Option<i64>,
    /// When the queue state was last published to the stats.
    last_published: Instant,
    /// When the last pull went out and the last batch started (Unix ms), for admin tools.
    last_pull_ms: i64,
    last_consume_ms: i64,
    /// Why the last pull failed, until one is answered.
    last_pull_error: Option<String>,
    /// Concurrent: a batch panicked after its handler, and its messages went with it. Their
    /// marks would hold the commit back for good (and the span limit would stop the pulls), so
    /// the worker ends; the rebalancer starts a fresh one from the committed offset, which
    /// delivers them again.
    restart: bool,
}

/// Runs the worker of `mq` from `start` until `cancel` fires, then drains, persists the
/// queue's offset and (orderly) releases its broker lock.
pub(crate) async fn run<H: Handler>(
    shared: Arc<Shared<H>>,
    mq: MessageQueue,
    start: Start,
    cancel: CancellationToken,
) {
    let start_offset = start.offset;
    shared.offsets.update(&mq, start_offset, false);
    if start.unsaved {
        // Before the first pull: a crash must find this position in the store (see `Start`).
        // Clustering pulls also carry it (0 included), but only once one goes out.
        shared.persist(&mq).await;
    }
    shared.stats.set_queue(
        &mq,
        QueueState {
            committed_offset: Some(start_offset),
            next_pull_offset: start_offset,
            locked: shared.is_orderly_clustering() && shared.lock_valid(&mq),
            last_pull_ms: now_millis(),
            last_consume_ms: now_millis(),
            ..QueueState::default()
        },
    );
    let mut w = Worker::new(shared, mq, start_offset);
    info!(group = %w.shared.group(), queue = %w.mq, offset = start_offset, "Queue assigned.");
    w.run(cancel).await;
    let abandoned = w.drain().await;
    // Orderly: a batch the drain gave up on may still be running at the endpoint (only our side
    // of its request was dropped). Unlocked now, the queue's next owner could deliver its
    // messages beside it; left locked, it waits for the broker's expiry (60 s after the last
    // renewal), as with Java's consumer, which keeps a queue whose batch it cannot stop. This
    // member waits as long (`Shared::leave_locked`): the broker would grant it the lock again.
    release_as(&w.shared, &w.mq, !abandoned).await;
}

/// What a worker that panicked (or was aborted) left undone: persists the committed offset,
/// leaves the orderly broker lock to expire (a batch may still be at the endpoint, as after a
/// drain that gave up; see `run`) and forgets the queue. Run by the rebalancer, since the
/// worker's own release never ran: the persist and lock tasks go by the queues in the stats,
/// so a queue left there kept its stale offset written and its lock renewed for good,
/// stalling the queue's next owner.
pub(crate) async fn release_aborted<H: Handler>(shared: &Shared<H>, mq: &MessageQueue) {
    release_as(shared, mq, false).await;
}

/// The end of a queue's worker, after its drain: persists the committed offset, releases the
/// orderly broker lock (only when `unlock`; otherwise leaves it to expire) and forgets the
/// queue.
pub(crate) async fn release_as<H: Handler>(shared: &Shared<H>, mq: &MessageQueue, unlock: bool) {
    let persisted = shared.persist(mq).await;
    // Clustering: the broker keeps the offset now, and whoever holds the queue next reads it
    // there; an entry left here would be reported as ours (GET_CONSUMER_STATUS) for good.
    // Unless the persist failed: then the entry is the only record of how far the queue got,
    // and `start_offset` falls back to it when the broker has none (a young group), instead of
    // starting from `consume_from` past what this worker had not finished.
    // Broadcasting: the table is the store itself, written to the file whole.
    if shared.config.model == Model::Clustering && persisted {
        shared.offsets.remove(mq);
    }
    // Out of the stats before the unlock: a lock renewal sent after it skips the queue (see
    // `Shared::lock_calls`).
    shared.stats.remove_queue(mq);
    if shared.is_orderly_clustering() {
        if unlock {
            shared.unlock_queue(mq).await;
        } else {
            shared.leave_locked(mq).await;
            warn!(group = %shared.group(), queue = %mq, "Queue released with a batch that may still be at the endpoint; its broker lock is left to expire (60 s), and no member, this one included, takes the queue before then.");
        }
    }
    info!(group = %shared.group(), queue = %mq, "Queue released.");
}

impl<H: Handler> Worker<H> {
    fn new(shared: Arc<Shared<H>>, mq: MessageQueue, start_offset: i64) -> Self {
        let room = shared.cache_budget.room().cloned();
        // The rebalancer locked the queue just before it started this worker.
        let lock_term = shared.lock_term(&mq);
        Self {
            // This group's retry topic only (its subscription is `*`); another group's, as the
            // subscribed topic, is filtered like any topic.
            is_retry_queue: mq.topic == shared.config.retry_topic(),
            shared,
            mq,
            pq: ProcessQueue::new(),
            next_offset: start_offset,
            ready: Ready::default(),
            delayed: Vec::new(),
            in_flight: FuturesUnordered::new(),
            pull: None,
            pull_from: 0,
            pulling_slave: false,
            pull_asked: 0,
            backlog: false,
            claim: Claim { room, held: 0 },
            waiting_room: None,
            answers: VecDeque::new(),
            answers_held: 0,
            pull_not_before: Instant::now(),
            max_offset: None,
            max_offset_at: Instant::now(),
            max_probe: None,
            paused: None,
            local_reconsume: HashMap::new(),
            suspended_until: None,
            lock_term,
            recompute_offset: false,
            moved_to: None,
            last_published: Instant::now(),
            last_pull_ms: now_millis(),
            last_consume_ms: now_millis(),
            last_pull_error: None,
            restart: false,
        }
    }

    fn orderly(&self) -> bool {
        self.shared.config.mode == ConsumeMode::Orderly
    }

    async fn run(&mut self, cancel: CancellationToken) {
        loop {
            if self.restart {
                return;
            }
            // After a failed attempt `relocate` waits out its back-off (`pull_not_before`);
            // the worker still wakes every 50 ms while its queue is paused.
            if self.recompute_offset
                && self.in_flight.is_empty()
                && Instant::now() >= self.pull_not_before
            {
                self.relocate().await;
            }
            // Orderly: not without the lock (the last held batch may have finished after it
            // lapsed); `maybe_pull` notices the loss and `relocate` then supersedes the move.
            if self.moved_to.is_some()
                && self.in_flight.is_empty()
                && self.pq.is_empty()
                && self.lock_ok()
            {
                self.finish_move().await;
            }
            if self.shared.is_orderly_clustering() {
                self.follow_lock();
            }
            self.move_due_delayed();
            self.maybe_pull();
            self.maybe_probe_max();
            self.settle_room();
            let wake = self.next_wake();
            let wants_slot = self.wants_slot();
            let slots = Arc::clone(&self.shared.consume_slots);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.on_batch_result(done).await;
                }
                result = in_slot(&mut self.pull), if self.pull.is_some() => {
                    self.pull = None;
                    self.on_pull(result.0, result.1).await;
                }
                max = in_slot(&mut self.max_probe), if self.max_probe.is_some() => {
                    self.max_probe = None;
                    match max {
                        Ok(max) => self.max_offset = Some(max),
                        Err(e) => debug!(group = %self.shared.group(), queue = %self.mq, error = %e, "Max offset not refreshed."),
                    }
                }
                got = in_slot(&mut self.waiting_room), if self.waiting_room.is_some() => {
                    self.waiting_room = None;
                    if let Ok(permit) = got {
                        self.claim.held += permit.num_permits();
                        permit.forget();
                    }
                }
                permit = slots.acquire_owned(), if wants_slot => {
                    if let Ok(permit) = permit {
                        self.dispatch(permit);
                    }
                }
                _ = sleep_until(wake) => {}
            }
            // The status page and gauges need fresh-enough figures, not one update per message.
            if self.last_published.elapsed() >= STATE_PUBLISH_INTERVAL {
                self.publish_state();
                self.last_published = Instant::now();
            }
        }
    }

    /// The next time something is due: a delayed message, the pull back-off, a suspension, or a
    /// periodic re-check (lock state, flow control).
    ///
    /// A time already past counts only when something then runs: the loop sleeps until it, so
    /// a past time that nothing acts on spins the worker at a full core.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(1);
        if let Some(t) = self.delayed.iter().map(|(t, _, _)| *t).min() {
            wake = wake.min(t);
        }
        // While a move waits for the held messages `maybe_pull` sends nothing, whatever the
        // back-off says; their batches and delays wake the worker.
        // Nor while the offset is to be re-read once the batches in flight are done: they wake
        // the worker, and `relocate` then runs or sets its own back-off.
        let relocating = self.recompute_offset && !self.in_flight.is_empty();
        if self.pull.is_none() && self.paused.is_none() && self.moved_to.is_none() && !relocating {
            wake = wake.min(self.pull_not_before);
        }
        // A queue waiting for room in the pool is woken by the pool itself.
        if self.paused.is_some() && self.waiting_room.is_none() {
            wake = wake.min(now + FLOW_CONTROL_RECHECK);
        }
        // Only until it ends: an orderly queue whose suspension is over but which cannot
        // dispatch (its lock lapsed, or `restart_at` emptied it) waits for the lock or for
        // messages, which the pull path and the periodic re-check bring.
        if let Some(t) = self.suspended_until.filter(|&t| t > now) {
            wake = wake.min(t);
        }
        wake
    }

    /// Asks the broker for the queue's max offset (GET_MAX_OFFSET) when no pull has told it for
    /// [`MAX_OFFSET_REFRESH`] and none is in flight: while flow control holds pulls back (an
    /// endpoint down, a slow one) or pulls fail, nothing else tells it, and the lag stood still
    /// at what the last answer said while the backlog grew, through the very outage a lag
    /// alert is for. A long poll in flight needs no probe: a new message ends it at once.
    fn maybe_probe_max(&mut self) {
        if self.pull.is_some()
            || self.max_probe.is_some()
            || self.max_offset_at.elapsed() < MAX_OFFSET_REFRESH
        {
            return;
        }
        self.max_offset_at = Instant::now();
        let shared = Arc::clone(&self.shared);
        let mq = self.mq.clone();
        self.max_probe = Some(Box::pin(async move { shared.max_offset(&mq).await }));
    }

    fn move_due_delayed(&mut self) {
        if self.delayed.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut due: Vec<(MessageExt, Pending)> = Vec::new();
        self.delayed.retain(|(t, m, p)| {
            if *t <= now {
                due.push((m.clone(), *p));
                false
            } else {
                true
            }
        });
        due.sort_by_key(|(m, _)| m.queue_offset);
        let mut dead_letters = Vec::new();
        for (msg, pending) in due {
            match pending {
                Pending::Deliver => self.ready.push(msg),
                Pending::DeadLetter => dead_letters.push(msg),
            }
        }
        if dead_letters.is_empty() {
            return;
        }
        // One task tries them in turn and stops at the first the broker refuses: one task per
        // message put every send-back (and fallback) of a whole dropped backlog on the wire at
        // the same instant, every 5 s, against a broker that was refusing them.
        let shared = Arc::clone(&self.shared);
        let mq = self.mq.clone();
        self.in_flight.push(batch_future(async move {
            let mut done = Done::empty();
            for msg in dead_letters {
                settle_drop(&shared, &mq, msg, &mut done).await;
            }
            done
        }));
    }

    async fn on_batch_result(&mut self, result: Result<Done, ()>) {
        match result {
            Ok(done) => self.on_done(done).await,
            // Orderly: rolled back and retried after the suspension, as if the endpoint had
            // refused the batch; committing would skip messages nobody accepted. (A handler's
            // own panic is settled in `consume`; this is one after it.)
            Err(()) if self.orderly() => {
                warn!(queue = %self.mq, "Batch settlement panicked; the batch is rolled back and retried.");
                let mut done = Done::empty();
                done.orderly_retry = true;
                self.on_orderly_done(done).await;
            }
            // Concurrent: a panic after the handler (a handler's own panic is settled in
            // `consume`). The messages went with the batch and cannot be offered again from
            // here, and their marks would stall the queue: the worker ends (see `restart`).
            Err(()) => {
                warn!(queue = %self.mq, "Batch settlement panicked; restarting the queue from its committed offset.");
                self.restart = true;
            }
        }
    }

    fn wants_slot(&self) -> bool {
        if self.orderly() {
            // Not while an offset is to be re-read: `relocate` drops what is cached.
            self.in_flight.is_empty()
                && !self.recompute_offset
                && self.suspended_until.is_none_or(|t| t <= Instant::now())
                && !self.pq.is_empty()
                && self.lock_ok()
        } else {
            !self.ready.is_empty()
        }
    }

    /// Orderly clustering: whether the lock is held under the term this worker knows. After a
    /// lapse it is not, until `follow_lock` took the new term and `relocate` re-read the
    /// offset: a batch of the old cache must not go out before that.
    fn lock_ok(&self) -> bool {
        !self.shared.is_orderly_clustering()
            || (self.lock_term.is_some() && self.shared.lock_term(&self.mq) == self.lock_term)
    }

    /// Orderly clustering: follows the queue's broker lock. Lost: pause, and have the lock
    /// task ask for it again soon rather than at its next 20 s round. Held under a new term
    /// (it lapsed, perhaps unseen during a long poll): another member may have consumed the
    /// queue meanwhile, so drop the pull in flight and re-read the offset, as the Java
    /// consumer does after re-locking.
    fn follow_lock(&mut self) {
        match self.shared.lock_term(&self.mq) {
            Some(term) if Some(term) == self.lock_term => {}
            Some(term) => {
                self.lock_term = Some(term);
                self.recompute_offset = true;
                self.pull = None;
            }
            None => {
                if self.lock_term.take().is_some() {
                    warn!(queue = %self.mq, "Queue lock lost; pausing this queue until it is locked again.");
                }
                self.paused = Some(Pause::LockNotHeld);
                self.shared.relock_now.notify_one();
            }
        }
    }

    /// Starts a handler batch with the acquired consume slot.
    fn dispatch(&mut self, permit: OwnedSemaphorePermit) {
        let size = self.shared.config.consume_batch_size.max(1);
        let msgs: Vec<MessageExt> = if self.orderly() {
            if !self.wants_slot() {
                return;
            }
            self.suspended_until = None;
            let mut taken: Vec<MessageExt> = self
                .pq
                .take(size)
                .into_iter()
                .filter_map(Entry::into_message)
                .collect();
            for m in &mut taken {
                if let Some(extra) = self.local_reconsume.get(&m.queue_offset) {
                    // Saturating: the count the broker sent may already be `i32::MAX`.
                    m.reconsume_times = m.reconsume_times.saturating_add(*extra);
                }
            }
            taken
        } else {
            self.ready.take(size)
        };
        if msgs.is_empty() {
            return;
        }
        self.last_consume_ms = now_millis();
        let shared = Arc::clone(&self.shared);
        let mq = self.mq.clone();
        self.in_flight.push(batch_future(async move {
            let done = consume(&shared, &mq, msgs).await;
            drop(permit);
            done
        }));
    }

    async fn on_done(&mut self, done: Done) {
        if self.orderly() {
            self.on_orderly_done(done).await;
            return;
        }
        for (msg, after, pending) in done.later {
            self.delayed.push((Instant::now() + after, msg, pending));
        }
        if let Some(offset) = self.pq.remove(done.finished.iter().copied()) {
            self.commit(offset, true);
        }
        self.release_answers(&done.finished);
    }

    async fn on_orderly_done(&mut self, done: Done) {
        if done.orderly_retry {
            for off in &done.orderly_retry_offsets {
                let n = self.local_reconsume.entry(*off).or_insert(0);
                *n = n.saturating_add(1);
            }
            for off in &done.finished {
                self.local_reconsume.remove(off);
            }
            // What was accepted before the failure, or handed to the DLQ, is not offered again
            // (a DLQ'd message offered again would be dead-lettered again, every round), and the
            // accepted prefix is committed.
            if let Some(offset) = self.pq.retry_unfinished(done.finished.iter().copied()) {
                self.commit(offset, true);
            }
            // Not necessarily a prefix: records dead-lettered at once and per-message answers
            // finish offsets behind one that failed, which stays at the front meanwhile.
            self.release_answers(&done.finished);
            let pause = done
                .orderly_suspend
                .unwrap_or(self.shared.config.suspend_time)
                .clamp(
                    Duration::from_millis(10),
                    Duration::from_secs(30).max(self.shared.config.suspend_time),
                );
            self.suspended_until = Some(Instant::now() + pause);
            debug!(queue = %self.mq, ?pause, "Orderly batch not accepted; queue suspended.");
        } else if let Some(offset) = self.pq.commit() {
            for off in &done.finished {
                self.local_reconsume.remove(off);
            }
            // Increase-only, unlike Java's orderly commit: the one commit that could go back is
            // an inner batch kept whole that starts below where the queue started (kept so that
            // it is dead-lettered), and it would move the queue back into messages already
            // finished. A position the broker moves the queue to is set by `restart_at`.
            self.commit(offset, true);
        }
    }

    /// Moves the committed offset to `offset` (increase-only, or not), never past an offset
    /// the broker moved the queue to while older messages are still held.
    fn commit(&self, offset: i64, increase_only: bool) {
        let offset = self.moved_to.map_or(offset, |to| offset.min(to));
        self.shared.offsets.update(&self.mq, offset, increase_only);
    }

    /// Forgets everything held and continues from `offset`, committed as is: a fresh process
    /// queue that knows nothing of the old offsets (its highest offset would otherwise become
    /// the commit once the new messages are done).
    fn restart_at(&mut self, offset: i64) {
        self.moved_to = None;
        // The suspension was for a batch of the old process queue.
        self.suspended_until = None;
        self.pq = ProcessQueue::new();
        self.answers.clear();
        self.answers_held = 0;
        self.local_reconsume.clear();
        self.next_offset = offset;
        self.shared.offsets.update(&self.mq, offset, false);
    }

    /// Every message held before the broker moved the offset is finished: continue from the
    /// offset it gave.
    async fn finish_move(&mut self) {
        let Some(offset) = self.moved_to else {
            return;
        };
        self.restart_at(offset);
        self.shared.persist(&self.mq).await;
        info!(group = %self.shared.group(), queue = %self.mq, offset, "Held messages finished; pulling from the moved offset.");
    }

    fn maybe_pull(&mut self) {
        if self.pull.is_some() || self.recompute_offset || Instant::now() < self.pull_not_before {
            return;
        }
        // Not without the lock (`follow_lock` pauses the queue and asks for it again).
        if !self.lock_ok() {
            return;
        }
        // Checked after the lock: a lock lost while a move waits must still lead to `relocate`,
        // which supersedes the move (another member may have consumed the queue meanwhile).
        if self.moved_to.is_some() {
            return;
        }
        let (max_count, max_bytes) = self.shared.queue_cache_limits();
        let limits = FlowLimits {
            max_count,
            max_bytes,
            max_span: if self.orderly() {
                None
            } else {
                Some(self.shared.config.limits.max_span)
            },
        };
        let batch = usize::try_from(self.shared.config.pull_batch_size).unwrap_or(1);
        let budget = &self.shared.cache_budget;
        let size = match self.pq.pull_size(&limits, batch) {
            Ok(size) => size,
            Err(reason) => {
                if self.paused.is_none() {
                    self.count_pause(reason.label());
                    debug!(queue = %self.mq, ?reason, "Pull paused by flow control.");
                }
                // No back-off: every finished batch runs this check again (and `next_wake`
                // re-checks every FLOW_CONTROL_RECHECK), so the pull goes out as soon as there
                // is room, not up to 50 ms later as in Java.
                self.paused = Some(Pause::Flow(reason));
                return;
            }
        };
        // Two caps keep the pool live. Without a backlog (the last pull caught up, or none yet)
        // a queue asks for at most half an even share: its long poll may hold that room for the
        // broker's whole hold time, and all such polls together then hold at most half the
        // pool. No pull asks for more than the other half, so the queue first in line for room
        // always gets it once the messages of the busy queues are done.
        let size = if self.backlog {
            size
        } else {
            size.min((budget.even_share() / 2).max(1))
        }
        .min((budget.max_messages() / 2).max(1));
        if !self.take_room(size) {
            if !matches!(self.paused, Some(Pause::Room { .. })) {
                self.count_pause("cache");
                debug!(queue = %self.mq, size, "Pull waits for room in the process cache.");
            }
            self.paused = Some(Pause::Room {
                taken: self.shared.cache_budget.taken(),
                limit: self.shared.cache_budget.max_messages(),
            });
            return;
        }
        self.paused = None;
        let (addr, slave) = match self.shared.pull_addr(&self.mq.broker_name, self.pull_from) {
            Ok(a) => a,
            Err(e) => {
                debug!(queue = %self.mq, error = %e, "No broker address; retrying the pull later.");
                self.last_pull_error = Some(e.to_string());
                self.pull_not_before = Instant::now() + PULL_ERROR_DELAY;
                return;
            }
        };
        if slave != self.pulling_slave {
            self.pulling_slave = slave;
            if slave {
                info!(group = %self.shared.group(), queue = %self.mq, %addr, suggested = self.pull_from, "Pulling from a slave (the broker suggested it, or the route has no master); offsets are committed to the master only.");
            } else {
                info!(group = %self.shared.group(), queue = %self.mq, %addr, "Pulling from the master again.");
            }
        }
        // A pull from a slave commits nothing (Java clears the flag too): the group's offsets
        // live on the master, and the persist task writes them there.
        let commits = self.shared.config.model == Model::Clustering && !slave;
        let sub = self.shared.subscription_data(&self.mq.topic);
        let mut request = PullMessage {
            consumer_group: self.shared.config.group.clone(),
            topic: self.mq.topic.clone(),
            queue_id: self.mq.queue_id,
            queue_offset: self.next_offset,
            max_msg_nums: i32::try_from(size).unwrap_or(i32::MAX),
            sys_flag: PullSysFlag::SUSPEND | PullSysFlag::SUBSCRIPTION,
            commit_offset: 0,
            suspend_timeout_millis: SUSPEND_MILLIS,
            subscription: Some(sub.sub_string.clone()),
            sub_version: sub.sub_version,
            expression_type: match sub.expression_type {
                ExpressionType::Sql92 => "SQL92".to_owned(),
                _ => "TAG".to_owned(),
            },
            max_msg_bytes: None,
            broker_name: Some(self.mq.broker_name.clone()),
        };
        let pool = self.shared.client.pool().clone();
        let shared = commits.then(|| (Arc::clone(&self.shared), self.mq.clone()));
        self.pull_asked = size;
        self.last_pull_ms = now_millis();
        self.pull = Some(Box::pin(async move {
            // The commit it carries is read when the pull goes out, not when it was built: the
            // worker finishes batches first, and an offset read earlier could reach the broker
            // after the persist task sent a newer one, moving the broker's offset back.
            if let Some(commit) = shared.and_then(|(shared, mq)| pull_commit(&shared, &mq)) {
                request.sys_flag |= PullSysFlag::COMMIT_OFFSET;
                request.commit_offset = commit;
            }
            let started = Instant::now();
            let r = pool.call(&addr, &request, PULL_TIMEOUT).await;
            (r, started.elapsed())
        }));
    }

    /// Counts a pull pause by the limit that caused it.
    fn count_pause(&self, limit: &str) {
        self.shared
            .metrics
            .flow_control
            .with_label_values(&[&self.shared.config.group, &self.shared.config.topic, limit])
            .inc();
    }

    /// Takes room in the process cache pool for `size` messages beyond what the held answers
    /// count. False when the pool has none now; the wait for it is then queued in
    /// `waiting_room`, behind the queues that asked first.
    fn take_room(&mut self, size: usize) -> bool {
        let Some(room) = self.claim.room.clone() else {
            return true;
        };
        if self.waiting_room.is_some() {
            return false;
        }
        let cached = self.answers_held();
        let need = (cached + size).saturating_sub(self.claim.held);
        if need == 0 {
            return true;
        }
        let n = u32::try_from(need).unwrap_or(u32::MAX);
        if let Ok(permit) = Arc::clone(&room).try_acquire_many_owned(n) {
            permit.forget();
            self.claim.held += need;
            return true;
        }
        // Wait for the whole pull, holding only the held answers' room meanwhile: room held
        // beyond them would be given back by `settle_room` during the wait (the queue has no
        // pull in flight), leaving the queue short again when the wait ends. Waiting queues so
        // hold nothing but what drains on its own, and the first in line always gets its turn.
        self.claim.release_to(cached);
        let n = u32::try_from(size).unwrap_or(u32::MAX);
        self.waiting_room = Some(Box::pin(room.acquire_many_owned(n)));
        false
    }

    /// Gives room back to the pool beyond the answers the queue holds and what its pull in
    /// flight asked for: finished answers and short pulls free room for other queues at once.
    fn settle_room(&mut self) {
        let in_flight = if self.pull.is_some() {
            self.pull_asked
        } else {
            0
        };
        let held = self.answers_held();
        self.claim.release_to(held + in_flight);
    }

    /// Messages of the pull answers still held: an answer is done once none of the offsets it
    /// brought is held any more. Not once everything below its last offset is finished: one
    /// slow message would then keep every later answer counted, finished or not, and the queue
    /// would take room from the process pool for all of them (up to the span limit) while other
    /// queues wait for it.
    ///
    /// Runs on every turn of the worker's loop, so it looks at the first answer only: answers
    /// behind it are let go by [`Self::release_answers`] when their last message finishes. An
    /// orderly queue commits in offset order, so its answers mostly end here, at the front.
    fn answers_held(&mut self) -> usize {
        while let Some(a) = self.answers.front() {
            if a.found != 0 && self.pq.holds_any_in(a.first..=a.last) {
                break;
            }
            self.answers_held -= a.found;
            self.answers.pop_front();
        }
        self.answers_held
    }

    /// Holds the answer that brought `first..=last` (`found` messages), keeping the answers in
    /// offset order without overlaps, as [`Self::release_answers`] needs: an answer reaching
    /// back into those held (a re-pulled range) is merged with them, and their room goes back
    /// together, once none of the merged range is held.
    fn hold_answer(&mut self, first: i64, last: i64, found: usize) {
        let mut answer = HeldAnswer { first, last, found };
        self.answers_held += found;
        while let Some(back) = self.answers.back() {
            if back.last < answer.first {
                break;
            }
            answer.first = answer.first.min(back.first);
            answer.last = answer.last.max(back.last);
            answer.found += back.found;
            self.answers.pop_back();
        }
        self.answers.push_back(answer);
    }

    /// Lets go of the answers that the offsets `finished`, just removed from the process
    /// queue, leave with nothing held: one look per answer a batch touched, not at every
    /// answer on every turn. Every message leaves the process queue in a finished batch, so no
    /// answer ends unseen.
    fn release_answers(&mut self, finished: &[i64]) {
        let mut looked_at = None;
        for &offset in finished {
            let i = self.answers.partition_point(|a| a.last < offset);
            let Some(a) = self.answers.get_mut(i) else {
                continue;
            };
            if a.first > offset || looked_at == Some(i) {
                continue;
            }
            looked_at = Some(i);
            if a.found != 0 && !self.pq.holds_any_in(a.first..=a.last) {
                self.answers_held -= a.found;
                a.found = 0;
            }
        }
    }

    async fn on_pull(&mut self, result: Result<PullResult, ClientError>, elapsed: Duration) {
        self.backlog = false;
        let result = match result {
            Ok(r) => {
                // Answered pulls only: a failure's time (a connect timeout, a refusal) is not
                // a round trip's, and the histogram's count is the answers.
                self.shared
                    .meters
                    .pull_duration
                    .observe(elapsed.as_secs_f64());
                self.last_pull_error = None;
                // A probe sent before this pull went out would answer an older max offset.
                self.max_probe = None;
                // Every answer says where to pull next (Java's `updatePullFromWhichNode`).
                self.pull_from = r.suggest_which_broker_id;
                r
            }
            Err(e) => {
                let delay = match &e {
                    ClientError::Broker {
                        code: ResponseCode::FlowControl,
                        ..
                    } => PULL_FLOW_CONTROL_DELAY,
                    _ => PULL_ERROR_DELAY,
                };
                if needs_heartbeat(&e) {
                    self.shared.heartbeat_now.notify_one();
                }
                self.shared.count_error("pull", e.error_type());
                // A slave the master suggested that fails (gone, refusing): the next pull goes
                // to the master, which suggests a slave again if the queue still lags. Java
                // keeps asking the slave until the route drops it, minutes for a dead one.
                if self.pulling_slave {
                    self.pull_from = MASTER_ID;
                }
                warn!(group = %self.shared.group(), queue = %self.mq, offset = self.next_offset, error = %e, "Pull failed; retrying.");
                self.last_pull_error = Some(e.to_string());
                self.pull_not_before = Instant::now() + delay;
                return;
            }
        };
        self.max_offset = Some(result.max_offset);
        self.max_offset_at = Instant::now();
        match result.status {
            PullStatus::Found => {
                // The offset this pull asked for: a pull in flight is dropped whenever the
                // worker moves its position.
                let asked = self.next_offset;
                self.next_offset = result.next_begin_offset;
                self.backlog = result.next_begin_offset < result.max_offset;
                // Counted before filtering: filtered messages share the answer's buffer.
                let found = result.messages.len();
                let sub = self.shared.subscription_data(&self.mq.topic);
                let check_tags = !self.is_retry_queue;
                // Below the offset asked for, a message is finished or held already: a broker
                // may answer from the start of a batch entry (5.x batch consume queues) or
                // serve a range again. Kept, a finished one was delivered again, and in orderly
                // mode its commit moved the queue's offset back. Except a record that cannot
                // be delivered: an inner batch kept whole carries its first offset and may
                // span the one asked for (a start inside it), and skipped, the commit below
                // went past its messages with none of them dead-lettered.
                let mut kept: Vec<MessageExt> = result
                    .messages
                    .into_iter()
                    .filter(|m| m.queue_offset >= asked || m.undeliverable().is_some())
                    .filter(|m| !check_tags || filter::matches_tags(&sub, m.tags()))
                    .collect();
                // Brokers answer in ascending offset order without repeats, and what follows
                // relies on it: the held range spans first to last (a reversed one panics the
                // worker, again after each restart), and a repeated offset would be both put
                // and skipped as held, so its mark stayed with no message to finish it, and the
                // commit point stood still for good. An answer that breaks the rule (a faulty
                // broker or proxy) is put right here, at the cost of one pass over it.
                if !kept
                    .windows(2)
                    .all(|pair| pair[0].queue_offset < pair[1].queue_offset)
                {
                    kept.sort_by_key(|m| m.queue_offset);
                    kept.dedup_by_key(|m| m.queue_offset);
                }
                for m in &mut kept {
                    self.shared.restore_topic(m);
                }
                // The answer's buffer lives while a message of it is held: its room is given
                // back once none of the offsets it brought is held. Trailing messages filtered
                // out here are never held, so they do not keep it.
                let mut held_range = kept
                    .first()
                    .zip(kept.last())
                    .map(|(a, b)| (a.queue_offset, b.queue_offset));
                if kept.is_empty() {
                    if self.pq.is_empty() {
                        self.commit(self.next_offset, true);
                    }
                } else if self.orderly() {
                    self.pq
                        .put(kept.into_iter().map(|m| Entry::Message(Box::new(m))));
                } else {
                    // Concurrent: the process queue only tracks offsets and sizes; the messages
                    // themselves wait in `ready`, in the vector they were decoded into, until a
                    // batch takes them.
                    // Offsets already held (a re-pull of an offset range the worker holds) are
                    // being handled or wait in `ready` already: dispatched again they would be
                    // delivered twice at once.
                    let held = self.pq.put_new(kept.iter().map(Entry::mark));
                    if !held.is_empty() {
                        kept.retain(|m| !held.contains(&m.queue_offset));
                        // The re-pulled copies are dropped with this answer.
                        held_range = kept
                            .first()
                            .zip(kept.last())
                            .map(|(a, b)| (a.queue_offset, b.queue_offset));
                    }
                    self.ready.append(kept);
                }
                if let Some((first, last)) = held_range {
                    self.hold_answer(first, last, found);
                }
                self.pull_not_before = Instant::now() + self.shared.config.pull_interval;
            }
            PullStatus::NoNewMsg | PullStatus::NoMatchedMsg => {
                self.next_offset = result.next_begin_offset;
                // Through `commit` like every other commit, so the cap of a pending move holds
                // here too (no pull goes out while one is pending, so none answers today).
                if self.pq.is_empty() {
                    self.commit(self.next_offset, true);
                }
            }
            PullStatus::OffsetIllegal => {
                let to = result.next_begin_offset;
                warn!(
                    group = %self.shared.group(),
                    queue = %self.mq,
                    requested = self.next_offset,
                    corrected = to,
                    held = self.pq.cached_count(),
                    "Broker moved the pull offset; finishing the held messages, then pulling from the corrected offset.",
                );
                // Java drops its process queue and writes the new offset 10 s later. Here the
                // held messages are still delivered (at-least-once for what was pulled), but a
                // committed offset past `to` is brought back now: it would count messages of
                // the moved queue as consumed before anyone received them.
                if self.shared.offsets.read(&self.mq).is_some_and(|c| c > to) {
                    self.shared.offsets.update(&self.mq, to, false);
                    self.shared.persist(&self.mq).await;
                }
                self.moved_to = Some(to);
            }
        }
    }

    /// Orderly: after the lock came back, drop what is cached and continue from the offset the
    /// broker has (the queue may have been consumed by another member meanwhile), or from this
    /// worker's own when the broker has none.
    async fn relocate(&mut self) {
        let offset = match self.shared.stored_offset(&self.mq).await {
            Ok(Some(offset)) => Ok((offset, "the broker's")),
            // Nobody's commit reached the broker (a new group whose broker restarted before
            // flushing offsets, which also drops the locks). What this worker committed itself
            // (the table is seeded when the worker starts) is a position known to be safe;
            // `consume_from` (LAST_OFFSET) could skip messages.
            Ok(None) => match self.shared.offsets.read(&self.mq) {
                Some(offset) => Ok((offset, "this worker's own")),
                // Not reached while the worker runs (the table is seeded when it starts, and
                // the entry removed after it ends), so whether the queue came later is moot.
                None => self
                    .shared
                    .configured_start(&self.mq, false)
                    .await
                    .map(|offset| (offset, "the configured start")),
            },
            Err(e) => Err(e),
        };
        match offset {
            Ok((offset, source)) => {
                info!(queue = %self.mq, offset, "Queue re-locked; resuming from {source} offset.");
                self.recompute_offset = false;
                // Supersedes a move the broker asked for before the lock was lost.
                self.restart_at(offset);
            }
            Err(e) => {
                warn!(queue = %self.mq, error = %e, "Cannot read the offset after re-locking; retrying.");
                self.pull_not_before = Instant::now() + PULL_ERROR_DELAY;
            }
        }
    }

    fn publish_state(&self) {
        let committed = self.shared.offsets.read(&self.mq);
        let state = QueueState {
            committed_offset: committed,
            next_pull_offset: self.next_offset,
            max_offset: self.max_offset,
            lag: match (self.max_offset, committed) {
                // Saturating: the broker's max offset is whatever it sent.
                (Some(max), Some(c)) => Some(max.saturating_sub(c).max(0)),
                _ => None,
            },
            cached_messages: self.pq.cached_count(),
            cached_bytes: self.pq.cached_bytes(),
            cached_range: self
                .pq
                .first()
                .map(Cached::offset)
                .zip(self.pq.queue_offset_max()),
            locked: self.shared.is_orderly_clustering() && self.shared.lock_valid(&self.mq),
            paused: self.paused.map(Pause::describe),
            last_pull_ms: self.last_pull_ms,
            last_consume_ms: self.last_consume_ms,
            last_pull_error: self.last_pull_error.clone(),
        };
        self.shared.stats.set_queue(&self.mq, state);
    }

    /// Stops pulling and gives in-flight batches the drain timeout to finish. Whatever is not
    /// finished by then stays uncommitted and is redelivered to the next owner. Returns whether
    /// a batch was given up on.
    async fn drain(&mut self) -> bool {
        self.pull = None;
        self.max_probe = None;
        let deadline = Instant::now() + self.shared.config.drain_timeout;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.next()).await {
                Ok(Some(Ok(done))) => {
                    // Results that ask for a later retry are simply left uncommitted.
                    let done = Done {
                        later: Vec::new(),
                        ..done
                    };
                    self.on_done(done).await;
                }
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    warn!(queue = %self.mq, batches = self.in_flight.len(), "Drain timeout; unfinished batches will be redelivered.");
                    self.in_flight.clear();
                    return true;
                }
            }
        }
        false
    }
}

impl Done {
    /// Orderly: the batch is offered again after at least `pause`.
    fn suspend_orderly(&mut self, pause: Duration) {
        self.orderly_retry = true;
        self.orderly_suspend = Some(self.orderly_suspend.map_or(pause, |d| d.max(pause)));
    }

    fn empty() -> Self {
        Self {
            hand_back_failed: false,
            finished: Vec::new(),
            later: Vec::new(),
            orderly_retry: false,
            orderly_suspend: None,
            orderly_retry_offsets: Vec::new(),
        }
    }
}

/// Why a queue is not pulling, for the status page (rendered only when published).
#[derive(Debug, Clone, Copy)]
enum Pause {
    /// A flow-control limit.
    Flow(FlowControl),
    /// Orderly: the broker lock is not held.
    LockNotHeld,
    /// The process cache pool has no room for the pull now.
    Room {
        /// Messages taken from the pool by all queues.
        taken: usize,
        /// `cache.max_count`.
        limit: usize,
    },
}

impl Pause {
    fn describe(self) -> String {
        match self {
            Self::Flow(FlowControl::Count { cached, limit }) => {
                format!(
                    "{cached} cached messages leave no room for a pull under the limit of {limit}"
                )
            }
            Self::Flow(FlowControl::Bytes { cached, limit }) => {
                format!("{cached} cached bytes exceed the limit of {limit}")
            }
            Self::Flow(FlowControl::Span { span, limit }) => {
                format!("cached offset span {span} exceeds the limit of {limit}")
            }
            Self::LockNotHeld => "orderly lock not held".to_owned(),
            Self::Room { taken, limit } => {
                format!("waiting for room in the process cache: {taken} of {limit} messages taken")
            }
        }
    }
}

/// A batch for `in_flight`. A panic in it ends the batch with `Err(())`, as a task's `JoinError`
/// would, instead of unwinding through the worker.
fn batch_future(f: impl Future<Output = Done> + Send + 'static) -> BatchFuture {
    Box::pin(AssertUnwindSafe(f).catch_unwind().map(|r| r.map_err(drop)))
}

/// The output of the future in `slot`, for a `select!` branch guarded by `slot.is_some()`
/// (the guard keeps an empty slot from being polled; pending covers it all the same).
async fn in_slot<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// One unit of a gauge for as long as it lives: a batch dropped mid-await (a drain that timed
/// out) gives its unit back too, where a `dec()` after the await never ran and the gauge crept
/// up for good.
struct GaugeHold<'a>(&'a IntGauge);

impl<'a> GaugeHold<'a> {
    fn new(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeHold<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Runs the handler on one batch and settles every message: finished (accepted, or handed back
/// to the broker) or to be offered again later.
async fn consume<H: Handler>(
    shared: &Arc<Shared<H>>,
    mq: &MessageQueue,
    mut msgs: Vec<MessageExt>,
) -> Done {
    let cfg = &shared.config;
    let mut done = Done::empty();
    if msgs.iter().any(|m| m.undeliverable().is_some()) {
        let (undeliverable, rest) = msgs.into_iter().partition(|m| m.undeliverable().is_some());
        msgs = rest;
        settle_undeliverable(shared, mq, undeliverable, &mut done).await;
        // Orderly: a message that could not be settled (its DLQ send failed) blocks what comes
        // after it like any failed message; the rest is not attempted and comes back with it.
        if msgs.is_empty() || done.orderly_retry {
            return done;
        }
    }
    let batch = Batch {
        group: cfg.group.clone(),
        topic: cfg.topic.clone(),
        queue: mq.clone(),
        mode: cfg.mode,
        messages: msgs,
    };
    let meters = &shared.meters;
    let in_flight = GaugeHold::new(&meters.in_flight);
    meters.batch_size.observe(batch.messages.len() as f64);
    let started = Instant::now();
    let handled = AssertUnwindSafe(shared.handler.handle(&batch)).catch_unwind();
    let outcomes = match timeout(cfg.consume_timeout, handled).await {
        Ok(Ok(o)) => o,
        // Settled like a batch nobody answered: every message is retried (sent back, or rolled
        // back in orderly mode), so each of its offsets finishes. Caught out here, where the
        // messages still are, the process queue can empty (a moved offset waits for that).
        Ok(Err(_)) => {
            warn!(group = %cfg.group, queue = %mq, "Handler panicked; the batch will be retried.");
            Vec::new()
        }
        Err(_) => {
            warn!(group = %cfg.group, queue = %mq, timeout = ?cfg.consume_timeout, "Handler missed the consume timeout; the batch will be retried.");
            Vec::new()
        }
    };
    let elapsed = started.elapsed();
    drop(in_flight);
    meters.batch_duration.observe(elapsed.as_secs_f64());

    let (mut ok, mut retried, mut dropped, mut deferred) = (0u64, 0u64, 0u64, 0u64);
    let orderly = cfg.mode == ConsumeMode::Orderly;
    for (i, msg) in batch.messages.into_iter().enumerate() {
        let outcome = outcomes
            .get(i)
            .copied()
            .unwrap_or(Outcome::Retry { delay_level: None });
        match outcome {
            Outcome::Success => &meters.success,
            Outcome::Retry { .. } => &meters.retry,
            Outcome::Drop => &meters.drop,
            Outcome::Later { .. } => &meters.later,
        }
        .inc();
        match outcome {
            Outcome::Success => {
                ok += 1;
                done.finished.push(msg.queue_offset);
            }
            Outcome::Later { after } => {
                deferred += 1;
                if orderly {
                    done.suspend_orderly(after);
                } else {
                    done.later.push((msg, after, Pending::Deliver));
                }
            }
            Outcome::Drop => {
                dropped += 1;
                settle_drop(shared, mq, msg, &mut done).await;
            }
            Outcome::Retry { delay_level } => {
                retried += 1;
                if orderly {
                    settle_orderly_retry(shared, mq, msg, &mut done).await;
                } else {
                    settle_retry(shared, mq, msg, delay_level, &mut done).await;
                }
            }
        }
    }
    shared
        .stats
        .record_batch(elapsed, ok, retried, dropped, deferred);
    done
}

/// Records that cannot be delivered, now or later (`MessageExt::undeliverable`: a body that
/// does not inflate, an inner batch that cannot be unwrapped): each goes to the DLQ at once
/// (the broker copies the stored record, so nothing is lost), loudly, like an answer of DROP.
async fn settle_undeliverable<H: Handler>(
    shared: &Arc<Shared<H>>,
    mq: &MessageQueue,
    undeliverable: Vec<MessageExt>,
    done: &mut Done,
) {
    for msg in undeliverable {
        let why = msg.undeliverable().unwrap_or("it cannot be decoded");
        let error = msg.inflate_error().map(tracing::field::display);
        warn!(group = %shared.group(), queue = %mq, offset = msg.queue_offset, msg_id = %LogId(&msg.msg_id()), sys_flag = format_args!("{:#x}", msg.sys_flag), stored_body_bytes = msg.body.len(), error, "Message cannot be delivered: {why}; moving it to the DLQ.");
        shared.count_error("decode", "other");
        if shared.config.model == Model::Broadcasting {
            give_up(shared, &msg, why, done);
        } else {
            settle_drop(shared, mq, msg, done).await;
        }
    }
}

/// Broadcasting has no broker DLQ: a message that cannot be delivered is given up, loudly.
fn give_up<H: Handler>(shared: &Arc<Shared<H>>, msg: &MessageExt, why: &str, done: &mut Done) {
    warn!(group = %shared.group(), msg_id = %LogId(&msg.msg_id()), attempts = msg.reconsume_times.saturating_add(1), why, "Broadcasting message dropped.");
    shared
        .metrics
        .dropped
        .with_label_values(&shared.labels())
        .inc();
    done.finished.push(msg.queue_offset);
}

async fn settle_drop<H: Handler>(
    shared: &Arc<Shared<H>>,
    mq: &MessageQueue,
    msg: MessageExt,
    done: &mut Done,
) {
    if shared.config.model == Model::Broadcasting {
        give_up(shared, &msg, "the handler asked to drop it", done);
        return;
    }
    // After a hand-back that failed both ways, the broker is not asked again for this batch:
    // each try could cost both calls' timeouts while the batch holds its consume slot.
    if !done.hand_back_failed && dead_letter(shared, mq, &msg).await {
        done.finished.push(msg.queue_offset);
        return;
    }
    done.hand_back_failed = true;
    if shared.config.mode == ConsumeMode::Orderly {
        done.suspend_orderly(shared.config.suspend_time);
    } else {
        done.later
            .push((msg, SEND_BACK_RETRY_DELAY, Pending::DeadLetter));
    }
}

/// Hands `msg` to the DLQ: a send-back, or if the broker refuses it, a copy published to the
/// retry topic past the reconsume limit, which the broker dead-letters. False when neither was
/// stored (the caller tries again later; the message is not finished). Orderly: the queue is
/// suspended meanwhile and the message comes back with its batch, as in Java.
async fn dead_letter<H: Handler>(
    shared: &Arc<Shared<H>>,
    mq: &MessageQueue,
    msg: &MessageExt,
) -> bool {
    let refused = match shared.send_back(mq, msg, -1).await {
        Ok(()) => return true,
        Err(e) => e,
    };
    shared.count_error("send_back", refused.error_type());
    // A record that cannot be decoded has no body a copy could carry: only the broker's own
    // copy of the stored record keeps it (flags included).
    if msg.undeliverable().is_some() {
        warn!(msg_id = %LogId(&msg.msg_id()), error = %refused, "DLQ send-back failed; trying again later.");
        return false;
    }
    match shared.republish_dead_letter(msg).await {
        Ok(()) => {
            warn!(msg_id = %LogId(&msg.msg_id()), error = %refused, "DLQ send-back failed; the message was published to the retry topic past its reconsume limit instead, which the broker dead-letters.");
            true
        }
        Err(e) => {
            shared.count_error("send_back", e.error_type());
            warn!(msg_id = %LogId(&msg.msg_id()), error = %refused, fallback_error = %e, "DLQ send-back and its fallback failed; trying again later.");
            false
        }
    }
}

async fn settle_retry<H: Handler>(
    shared: &Arc<Shared<H>>,
    mq: &MessageQueue,
    mut msg: MessageExt,
    delay_level: Option<i32>,
    done: &mut Done,
) {
    let cfg = &shared.config;
    if cfg.model == Model::Broadcasting {
        // No retry topic in broadcasting: retry locally with back-off, then give up.
        if msg.reconsume_times >= cfg.max_reconsume_times {
            give_up(shared, &msg, "it failed max_reconsume_times times", done);
        } else {
            let backoff = Duration::from_secs(1 << msg.reconsume_times.clamp(0, 6));
            msg.reconsume_times = msg.reconsume_times.saturating_add(1);
            done.later.push((msg, backoff, Pending::Deliver));
        }
        return;
    }
    if done.hand_back_failed {
        retry_locally(msg, done);
        return;
    }
    let refused = match shared.send_back(mq, &msg, delay_level.unwrap_or(0)).await {
        Ok(()) => {
            done.finished.push(msg.queue_offset);
            return;
        }
        Err(e) => e,
    };
    shared.count_error("send_back", refused.error_type());
    // Java's fallback: publish the retry ourselves. Stored, it is the broker's like a
    // send-back, so the message is finished here.
    match shared.republish_retry(&msg, delay_level).await {
        Ok(()) => {
            warn!(msg_id = %LogId(&msg.msg_id()), error = %refused, "Send-back failed; the message was published to the retry topic instead.");
            done.finished.push(msg.queue_offset);
        }
        Err(e) => {
            shared.count_error("send_back", e.error_type());
            warn!(msg_id = %LogId(&msg.msg_id()), error = %refused, fallback_error = %e, "Send-back and its fallback failed; consuming the message again locally in 5 s.");
            done.hand_back_failed = true;
            retry_locally(msg, done);
        }
    }
}

/// Offers a message the broker could not take back again in 5 s, counting the attempt here.
fn retry_locally(mut msg: MessageExt, done: &mut Done) {
    // Saturating: the count comes from the broker and may be `i32::MAX`; a panic here would
    // lose the batch's settlement.
    msg.reconsume_times = msg.reconsume_times.saturating_add(1);
    done.later
        .push((msg, SEND_BACK_RETRY_DELAY, Pending::Deliver));
}

/// Orderly retry: in place (the whole batch is rolled back and the queue suspended), or, once
/// the message is out of attempts, to the DLQ like a drop.
async fn settle_orderly_retry<H: Handler>(
    shared: &Arc<Shared<H>>,
    mq: &MessageQueue,
    msg: MessageExt,
    done: &mut Done,
) {
    let cfg = &shared.config;
    let exhausted = msg.reconsume_times >= cfg.max_reconsume_times;
    if exhausted && cfg.orderly_exhausted == OrderlyExhausted::DeadLetter {
        info!(group = %cfg.group, msg_id = %LogId(&msg.msg_id()), "Orderly message exhausted its retries; moving it to the DLQ.");
        settle_drop(shared, mq, msg, done).await;
        return;
    }
    // The queue's pause, whatever else the batch says: the rest of a batch delivered one
    // message per request comes back as `Later` with no wait (not attempted), and that must not
    // shorten the pause to nothing, which burnt every attempt within a second.
    done.suspend_orderly(cfg.suspend_time);
    done.orderly_retry_offsets.push(msg.queue_offset);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::engine::testing::{self, Accept};
    use crate::consumer::Config;

    fn queue() -> MessageQueue {
        testing::queue("T_worker")
    }

    /// A concurrent worker that reaches no broker.
    async fn worker() -> Worker<Accept> {
        let shared = testing::shared(Config::new("G_worker", "T_worker")).await;
        Worker::new(shared, queue(), 0)
    }

    fn message(offset: i64, tags: &str) -> MessageExt {
        let mut properties = crate::remoting::message::Properties::new();
        properties.insert(
            crate::remoting::message::properties::TAGS.into(),
            tags.into(),
        );
        MessageExt {
            topic: "T_worker".to_owned(),
            queue_id: 0,
            flag: 0,
            queue_offset: offset,
            commit_log_offset: 4096,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: "127.0.0.1:1".parse().expect("addr"),
            store_timestamp: 2,
            store_host: "127.0.0.1:2".parse().expect("addr"),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body_crc: 0,
            body: bytes::Bytes::from_static(b"x"),
            properties,
        }
    }

    /// Errors counted at the send-back stage, over every label set.
    fn send_back_errors(shared: &Shared<Accept>) -> u64 {
        shared
            .metrics
            .registry()
            .gather()
            .iter()
            .filter(|f| f.name() == crate::metrics::names::CONSUMER_ERRORS_TOTAL)
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "stage" && l.value() == "send_back")
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Once one message of a batch could be handed back neither way, the rest of the batch
    /// is retried locally at once: each further try could cost both calls' timeouts.
    #[tokio::test]
    async fn after_a_failed_hand_back_the_rest_of_the_batch_retries_locally() {
        let w = worker().await;
        let mut done = Done::empty();
        settle_retry(&w.shared, &w.mq, message(0, "a"), None, &mut done).await;
        // The send-back and the fallback publish were both tried (nothing answers here).
        assert_eq!(send_back_errors(&w.shared), 2);
        assert!(done.hand_back_failed);
        settle_retry(&w.shared, &w.mq, message(1, "a"), None, &mut done).await;
        settle_retry(&w.shared, &w.mq, message(2, "a"), None, &mut done).await;
        assert_eq!(send_back_errors(&w.shared), 2, "the broker was asked again");
        let offsets: Vec<i64> = done.later.iter().map(|(m, _, _)| m.queue_offset).collect();
        assert_eq!(offsets, [0, 1, 2]);
        assert!(done.finished.is_empty());
    }

    /// Drops too: once a DLQ hand-back failed both ways, the rest of the batch waits for the
    /// next round without asking the broker again.
    #[tokio::test]
    async fn after_a_failed_hand_back_the_rest_of_the_drops_wait() {
        let w = worker().await;
        let mut done = Done::empty();
        for offset in 0..3 {
            settle_drop(&w.shared, &w.mq, message(offset, "a"), &mut done).await;
        }
        assert_eq!(send_back_errors(&w.shared), 2, "the broker was asked again");
        let later: Vec<(i64, Pending)> = done
            .later
            .iter()
            .map(|(m, _, p)| (m.queue_offset, *p))
            .collect();
        assert_eq!(later, [0, 1, 2].map(|o| (o, Pending::DeadLetter)));
        assert!(done.finished.is_empty());
    }

    /// Dead letters that come due together are tried by one task, in offset order, which stops
    /// asking at the first refusal; before, each message had a task of its own.
    #[tokio::test]
    async fn dead_letters_due_together_are_tried_in_one_task() {
        let mut w = worker().await;
        let due = Instant::now() - Duration::from_millis(1);
        for offset in [2, 0, 1] {
            w.delayed
                .push((due, message(offset, "a"), Pending::DeadLetter));
        }
        w.move_due_delayed();
        assert!(w.delayed.is_empty());
        assert_eq!(w.in_flight.len(), 1);
        let done = w.in_flight.next().await.expect("a task").expect("no panic");
        assert_eq!(send_back_errors(&w.shared), 2, "the broker was asked again");
        let later: Vec<i64> = done.later.iter().map(|(m, _, _)| m.queue_offset).collect();
        assert_eq!(later, [0, 1, 2]);
    }

    /// A pull from a slave the master suggested failed, and the next one went to the same
    /// slave, every time, until the route dropped it: minutes for a dead one.
    #[tokio::test]
    async fn a_failed_pull_from_a_slave_sends_the_next_to_the_master() {
        let mut w = worker().await;
        w.pull_from = 1;
        w.pulling_slave = true;
        let gone = ClientError::Timeout {
            addr: "127.0.0.1:10921".into(),
            code: crate::remoting::RequestCode::PullMessage,
            after: Duration::from_secs(30),
        };
        w.on_pull(Err(gone), Duration::ZERO).await;
        assert_eq!(w.pull_from, MASTER_ID);
    }

    /// The status page says why pulls fail until one is answered, and the pull histogram counts
    /// answers only.
    #[tokio::test]
    async fn a_failed_pull_is_reported_until_one_is_answered() {
        let mut w = worker().await;
        let histogram = w.shared.meters.pull_duration.clone();
        let answers = || histogram.get_sample_count();
        let before = answers();
        let gone = ClientError::Timeout {
            addr: "127.0.0.1:10911".into(),
            code: crate::remoting::RequestCode::PullMessage,
            after: Duration::from_secs(30),
        };
        w.on_pull(Err(gone), Duration::from_secs(30)).await;
        w.publish_state();
        let error = w.shared.stats.queues()[&w.mq].last_pull_error.clone();
        assert!(error.is_some_and(|e| e.contains("127.0.0.1:10911")));
        assert_eq!(answers(), before, "a failure is not a round trip");
        w.on_pull(Ok(found(vec![message(0, "a")], 1)), Duration::ZERO)
            .await;
        w.publish_state();
        assert_eq!(w.shared.stats.queues()[&w.mq].last_pull_error, None);
        assert_eq!(answers(), before + 1);
    }

    /// A young queue starts at 0, and its pulls carry that 0 for the broker to store: only
    /// the first persist sent it before, and a crash after that persist failed left the next
    /// owner without an offset (LAST_OFFSET then skipped what had arrived).
    #[tokio::test]
    async fn pulls_carry_an_offset_of_zero() {
        let w = worker().await;
        assert_eq!(pull_commit(&w.shared, &w.mq), None);
        w.shared.offsets.update(&w.mq, 0, false);
        assert_eq!(pull_commit(&w.shared, &w.mq), Some(0));
    }

    /// A clustering worker whose final persist fails leaves its committed offset behind, and
    /// the queue's next start uses it when the broker has none: a young group's queue would
    /// otherwise restart from `consume_from` (LAST_OFFSET: the end) past what it had not
    /// finished.
    #[tokio::test]
    async fn an_offset_that_could_not_be_persisted_is_kept_for_the_next_start() {
        let w = worker().await;
        w.shared.offsets.update(&w.mq, 7, false);
        release_aborted(&w.shared, &w.mq).await;
        assert_eq!(w.shared.offsets.read(&w.mq), Some(7));
        assert!(!w.shared.stats.queues().contains_key(&w.mq));
    }

    #[tokio::test]
    async fn reconsume_counts_and_lag_from_the_broker_do_not_overflow() {
        let mut w = worker().await;
        // A failed send-back (no broker) counts an attempt locally.
        let mut msg = message(0, "a");
        msg.reconsume_times = i32::MAX;
        let mut done = Done::empty();
        settle_retry(&w.shared, &w.mq, msg.clone(), None, &mut done).await;
        assert_eq!(done.later[0].0.reconsume_times, i32::MAX);
        // Broadcasting gives up on it, logging the attempts.
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::new("G_worker", "T_worker");
        config.model = Model::Broadcasting;
        config.offset_store_dir = dir.path().to_owned();
        let shared = testing::shared(config).await;
        let mut done = Done::empty();
        settle_retry(&shared, &w.mq, msg, None, &mut done).await;
        assert_eq!(done.finished, vec![0]);
        // Lag against whatever max offset the broker sent.
        w.shared.offsets.update(&w.mq, 5, false);
        w.max_offset = Some(i64::MIN);
        w.publish_state();
        assert_eq!(w.shared.stats.queues()[&w.mq].lag, Some(0));
    }

    fn found(messages: Vec<MessageExt>, next_begin_offset: i64) -> PullResult {
        PullResult {
            status: PullStatus::Found,
            next_begin_offset,
            min_offset: 0,
            max_offset: next_begin_offset,
            suggest_which_broker_id: 0,
            offset_delta: None,
            messages,
        }
    }

    #[tokio::test]
    async fn an_answer_ending_in_filtered_messages_gives_its_room_back() {
        let mut config = Config::new("G_worker", "T_worker");
        config.filter = crate::consumer::Filter::Tag("a".into());
        let shared = testing::shared(config).await;
        let mut w = Worker::new(shared, queue(), 0);
        let answer = vec![
            message(0, "a"),
            message(1, "a"),
            message(2, "b"),
            message(3, "b"),
        ];
        w.on_pull(Ok(found(answer, 4)), Duration::ZERO).await;
        assert_eq!(
            w.answers_held(),
            4,
            "the whole answer counts while it is held"
        );
        let mut done = Done::empty();
        done.finished = vec![0, 1];
        w.on_done(done).await;
        assert!(w.pq.is_empty());
        assert_eq!(
            w.answers_held(),
            0,
            "nothing of the answer is held any more"
        );
    }

    /// A slow message keeps only its own answer's room: later answers whose messages all
    /// finished give theirs back, though the committed offset cannot pass the slow one.
    #[tokio::test]
    async fn a_slow_message_holds_only_its_own_answer() {
        let mut w = worker().await;
        let answer = |from: i64| {
            found(
                (from..from + 4).map(|o| message(o, "a")).collect(),
                from + 4,
            )
        };
        w.on_pull(Ok(answer(0)), Duration::ZERO).await;
        w.on_pull(Ok(answer(4)), Duration::ZERO).await;
        w.on_pull(Ok(answer(8)), Duration::ZERO).await;
        assert_eq!(w.answers_held(), 12);
        let mut done = Done::empty();
        done.finished = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        w.on_done(done).await;
        assert_eq!(w.pq.committable_offset(), Some(0));
        assert_eq!(
            w.answers_held(),
            8,
            "the first answer (offset 0 held) and the last (offset 11 held) count"
        );
        let mut done = Done::empty();
        done.finished = vec![0];
        w.on_done(done).await;
        assert_eq!(w.answers_held(), 4);
    }

    /// Only this group's retry topic is restored to the real topic and spared the tag check;
    /// another group's, subscribed as a topic, is a topic like any other.
    #[tokio::test]
    async fn only_this_groups_retry_topic_is_treated_as_one() {
        let mut config = Config::new("G_worker", "%RETRY%other");
        config.filter = crate::consumer::Filter::Tag("a".into());
        let shared = testing::shared(config).await;
        let mut w = Worker::new(Arc::clone(&shared), testing::queue("%RETRY%other"), 0);
        assert!(!w.is_retry_queue);
        let tagged = |topic: &str, tags: &str| {
            let mut m = message(0, tags);
            m.topic = topic.to_owned();
            m.properties.insert(
                crate::remoting::message::properties::RETRY_TOPIC.into(),
                "T_real".into(),
            );
            m
        };
        let mut other = tagged("%RETRY%other", "a");
        shared.restore_topic(&mut other);
        assert_eq!(other.topic, "%RETRY%other");
        let mut own = tagged("%RETRY%G_worker", "b");
        shared.restore_topic(&mut own);
        assert_eq!(own.topic, "T_real");
        // A message of the subscribed topic whose tag does not match is filtered out.
        w.on_pull(
            Ok(found(vec![tagged("%RETRY%other", "b")], 1)),
            Duration::ZERO,
        )
        .await;
        assert!(w.pq.is_empty());
        let own_retry = Worker::new(shared, testing::queue("%RETRY%G_worker"), 0);
        assert!(own_retry.is_retry_queue);
    }

    /// Answers behind a slow first one give their room back as soon as their last message
    /// finishes, however many are held.
    #[tokio::test]
    async fn answers_behind_a_slow_one_are_let_go_as_they_finish() {
        let mut w = worker().await;
        let one = |o: i64| found(vec![message(o, "a")], o + 1);
        for o in 0..40 {
            w.on_pull(Ok(one(o)), Duration::ZERO).await;
        }
        assert_eq!(w.answers_held(), 40);
        let mut done = Done::empty();
        done.finished = (1..20).rev().collect();
        w.on_done(done).await;
        assert_eq!(w.answers_held(), 21);
        let mut done = Done::empty();
        done.finished = vec![0];
        w.on_done(done).await;
        assert_eq!(w.answers_held(), 20);
        assert_eq!(
            w.answers.len(),
            20,
            "the finished ones are gone from the front"
        );
    }

    /// An answer reaching back into the held ones (a re-pulled range) is merged with them: the
    /// answers stay in order, and the merged room goes back once none of it is held.
    #[tokio::test]
    async fn a_re_pulled_range_is_merged_with_the_answers_it_overlaps() {
        let mut w = worker().await;
        let range = |from: i64, to: i64| found((from..to).map(|o| message(o, "a")).collect(), to);
        let finish = |offsets: Vec<i64>| {
            let mut done = Done::empty();
            done.finished = offsets;
            done
        };
        w.on_pull(Ok(range(0, 4)), Duration::ZERO).await;
        w.on_done(finish(vec![2])).await;
        // A broker that gave a next offset below what it served (the worker asks from there)
        // serves 0..8 again: 2 is no longer held and comes back, so the new answer spans
        // 2..=7, into the first one's 0..=3.
        w.next_offset = 0;
        w.on_pull(Ok(range(0, 8)), Duration::ZERO).await;
        assert_eq!(w.answers_held(), 12);
        let spans: Vec<(i64, i64)> = w.answers.iter().map(|a| (a.first, a.last)).collect();
        assert_eq!(spans, vec![(0, 7)]);
        w.on_done(finish(vec![0, 1, 3, 4, 5, 6])).await;
        assert_eq!(w.answers_held(), 12, "2 and 7 are held");
        w.on_done(finish(vec![2, 7])).await;
        assert_eq!(w.answers_held(), 0, "the merged answer went back whole");
    }

    #[tokio::test]
    async fn a_re_pulled_message_is_not_dispatched_twice() {
        let mut w = worker().await;
        let answer = || found(vec![message(0, "a"), message(1, "a")], 2);
        w.on_pull(Ok(answer()), Duration::ZERO).await;
        // The broker answers the same range again (an offset that went back).
        w.on_pull(Ok(answer()), Duration::ZERO).await;
        let queued: Vec<i64> = w.ready.take(10).iter().map(|m| m.queue_offset).collect();
        assert_eq!(queued, vec![0, 1]);
    }

    /// An answer out of order, with an offset twice: each message is queued once, in order,
    /// and the queue's commit point moves once they are finished (a reversed range panicked the
    /// worker; a repeat left a mark that nothing finished).
    #[tokio::test]
    async fn an_answer_out_of_order_or_with_repeats_is_put_right() {
        let mut w = worker().await;
        let answer = found(
            vec![
                message(2, "a"),
                message(0, "a"),
                message(1, "a"),
                message(0, "a"),
            ],
            3,
        );
        w.on_pull(Ok(answer), Duration::ZERO).await;
        assert_eq!(w.answers_held(), 4);
        let queued: Vec<i64> = w.ready.take(10).iter().map(|m| m.queue_offset).collect();
        assert_eq!(queued, vec![0, 1, 2]);
        assert_eq!(w.pq.remove([0, 1, 2]), Some(3));
    }

    /// An answer that starts below the offset asked for (a 5.x batch entry, a range served
    /// again): what was finished already is not delivered again.
    #[tokio::test]
    async fn messages_below_the_offset_asked_for_are_not_delivered_again() {
        let mut w = worker().await;
        w.on_pull(
            Ok(found(vec![message(0, "a"), message(1, "a")], 2)),
            Duration::ZERO,
        )
        .await;
        assert_eq!(w.ready.take(10).len(), 2);
        assert_eq!(w.pq.remove([0, 1]), Some(2));
        let answer = found(vec![message(0, "a"), message(1, "a"), message(2, "a")], 3);
        w.on_pull(Ok(answer), Duration::ZERO).await;
        let queued: Vec<i64> = w.ready.take(10).iter().map(|m| m.queue_offset).collect();
        assert_eq!(queued, vec![2]);
    }

    /// Except an inner batch the decoder kept whole: it carries its first offset, and a queue
    /// that starts inside it must still dead-letter it, not commit past its messages.
    #[tokio::test]
    async fn a_whole_batch_below_the_offset_asked_for_is_kept() {
        use crate::remoting::message::sys_flag::{INNER_BATCH, NEED_UNWRAP};
        let mut w = Worker::new(
            testing::shared(Config::new("G_worker", "T_worker")).await,
            queue(),
            5,
        );
        let mut batch = message(3, "a");
        batch.sys_flag |= NEED_UNWRAP | INNER_BATCH;
        w.on_pull(Ok(found(vec![batch, message(8, "a")], 9)), Duration::ZERO)
            .await;
        let queued: Vec<i64> = w.ready.take(10).iter().map(|m| m.queue_offset).collect();
        assert_eq!(queued, vec![3, 8]);
    }

    /// Orderly: finishing such a batch (dead-lettered) does not move the committed offset
    /// back below where the queue started, into messages finished before.
    #[tokio::test]
    async fn an_orderly_commit_does_not_go_below_where_the_queue_started() {
        use crate::remoting::message::sys_flag::{INNER_BATCH, NEED_UNWRAP};
        let mut config = Config::new("G_worker", "T_worker");
        config.mode = ConsumeMode::Orderly;
        let mut w = Worker::new(testing::shared(config).await, queue(), 5);
        w.shared.offsets.update(&w.mq, 5, false);
        let mut batch = message(3, "a");
        batch.sys_flag |= NEED_UNWRAP | INNER_BATCH;
        w.on_pull(Ok(found(vec![batch], 9)), Duration::ZERO).await;
        let taken: Vec<i64> = w.pq.take(10).iter().map(Cached::offset).collect();
        assert_eq!(taken, vec![3]);
        let mut done = Done::empty();
        done.finished = vec![3];
        w.on_done(done).await;
        assert_eq!(w.shared.offsets.read(&w.mq), Some(5));
    }

    /// A record the decoder left whole as an inner batch it could not unwrap never reaches the
    /// handler: it goes to the DLQ (here the send-back finds no broker, so it waits to be
    /// dead-lettered again), and the messages beside it are delivered.
    #[tokio::test]
    async fn an_inner_batch_left_whole_is_dead_lettered_not_delivered() {
        use crate::remoting::message::sys_flag::{INNER_BATCH, NEED_UNWRAP};
        let w = worker().await;
        let mut batch = message(0, "a");
        batch.sys_flag |= NEED_UNWRAP | INNER_BATCH;
        assert!(batch.undeliverable().is_some());
        let done = consume(&w.shared, &w.mq, vec![batch, message(1, "a")]).await;
        assert_eq!(done.finished, vec![1]);
        assert_eq!(done.later.len(), 1);
        let (msg, _, pending) = &done.later[0];
        assert_eq!(msg.queue_offset, 0);
        assert!(matches!(pending, Pending::DeadLetter));
    }

    /// One round of the run loop up to its sleep: the worker must sleep until a time still
    /// ahead, since nothing in these states can act on a time already past.
    fn assert_sleeps(w: &mut Worker<Accept>) {
        // The loop's steps before its sleep.
        w.maybe_pull();
        w.settle_room();
        let now = Instant::now();
        let wake = w.next_wake();
        assert!(
            wake > now,
            "the worker would wake at once, round after round: {:?} before now",
            now - wake
        );
    }

    /// Orderly: the lock lapsed while a failed batch's suspension ran, and a long poll is in
    /// flight. Once the suspension is over the queue still cannot dispatch, and the worker slept
    /// until the suspension's end, already past, again and again: a full core until the lock
    /// came back, and after that, on the emptied queue, until a message arrived.
    #[tokio::test]
    async fn an_orderly_queue_past_its_suspension_without_its_lock_sleeps() {
        let mut config = Config::new("G_worker", "T_worker");
        config.mode = ConsumeMode::Orderly;
        let mut w = Worker::new(testing::shared(config).await, queue(), 0);
        w.pq.put([Entry::Message(Box::new(message(0, "a")))]);
        w.pull = Some(Box::pin(std::future::pending()));
        w.suspended_until = Some(Instant::now() - Duration::from_millis(1));
        assert!(!w.wants_slot());
        assert_sleeps(&mut w);
        w.restart_at(0);
        assert_eq!(w.suspended_until, None);
        assert_sleeps(&mut w);
    }

    /// An orderly worker whose broker lock is held under `term` (`None`: not held).
    fn set_lock(shared: &Shared<Accept>, term: Option<u64>) {
        use crate::consumer::engine::{lock, HeldLock};
        let mut locks = lock(&shared.locks);
        match term {
            Some(term) => {
                let granted_at = Instant::now();
                locks.insert(queue(), HeldLock { granted_at, term });
            }
            None => {
                locks.remove(&queue());
            }
        }
    }

    async fn orderly_shared() -> Arc<Shared<Accept>> {
        let mut config = Config::new("G_worker", "T_worker");
        config.mode = ConsumeMode::Orderly;
        testing::shared(config).await
    }

    /// Orderly: a failed batch whose later offsets finished anyway (dead-lettered at once, or
    /// accepted one by one) gives back the room of an answer they emptied, while the failed
    /// one stays at the front.
    #[tokio::test]
    async fn an_orderly_batch_failing_before_its_finished_offsets_lets_their_answer_go() {
        let shared = orderly_shared().await;
        set_lock(&shared, Some(1));
        let mut w = Worker::new(shared, queue(), 0);
        let two = found(vec![message(0, "a"), message(1, "a")], 2);
        w.on_pull(Ok(two), Duration::ZERO).await;
        w.on_pull(Ok(found(vec![message(2, "a")], 3)), Duration::ZERO)
            .await;
        assert_eq!(w.answers_held(), 3);
        assert_eq!(w.pq.take(3).len(), 3);
        let mut done = Done::empty();
        done.orderly_retry = true;
        done.finished = vec![2];
        done.orderly_retry_offsets = vec![0, 1];
        w.on_done(done).await;
        assert_eq!(
            w.answers_held(),
            2,
            "the second answer's only message is finished"
        );
    }

    /// Orderly: the lock lapsed and was granted again under a new term while a long poll was
    /// in flight, so the worker never saw it lost. Another member may have consumed the queue
    /// in between: nothing of the cache goes out before `relocate` re-read the offset, and
    /// the pull in flight (its answer would reset the position) is dropped. The worker then
    /// sleeps until its batch in flight is done, rather than spin on a pull time long past.
    #[tokio::test]
    async fn an_orderly_queue_locked_again_under_a_new_term_re_reads_its_offset_first() {
        let shared = orderly_shared().await;
        set_lock(&shared, Some(1));
        let mut w = Worker::new(Arc::clone(&shared), queue(), 0);
        w.pq.put([Entry::Message(Box::new(message(0, "a")))]);
        assert!(w.wants_slot());
        w.pull = Some(Box::pin(std::future::pending()));
        w.pull_not_before = Instant::now() - Duration::from_secs(1);
        w.in_flight.push(Box::pin(std::future::pending()));
        set_lock(&shared, Some(2));
        assert!(!w.wants_slot(), "a batch of the old cache may go out");
        w.follow_lock();
        assert!(w.recompute_offset);
        assert!(w.pull.is_none(), "the pull in flight was kept");
        assert!(!w.wants_slot());
        assert_sleeps(&mut w);
    }

    /// Orderly: a worker that lost its lock pauses and asks the lock task for a round, and
    /// once the lock is back it re-reads the offset before consuming.
    #[tokio::test]
    async fn an_orderly_queue_that_lost_its_lock_asks_for_it_again() {
        let shared = orderly_shared().await;
        set_lock(&shared, Some(1));
        let mut w = Worker::new(Arc::clone(&shared), queue(), 0);
        set_lock(&shared, None);
        w.follow_lock();
        assert_eq!(w.lock_term, None);
        assert!(matches!(w.paused, Some(Pause::LockNotHeld)));
        let asked = tokio::time::timeout(Duration::from_millis(10), shared.relock_now.notified());
        assert!(
            asked.await.is_ok(),
            "the lock task was not asked for a round"
        );
        set_lock(&shared, Some(2));
        w.follow_lock();
        assert_eq!(w.lock_term, Some(2));
        assert!(
            w.recompute_offset,
            "consuming the old cache without re-reading the offset"
        );
    }

    /// The broker moved the offset while messages are held (here waiting for a later try):
    /// no pull goes out until they are finished, so the pull back-off, already past, must not
    /// wake the worker. It did, round after round, for as long as the messages were held.
    #[tokio::test]
    async fn a_queue_waiting_out_a_moved_offset_sleeps() {
        let mut w = worker().await;
        w.pq.put([Entry::Mark { offset: 0, size: 1 }]);
        w.delayed.push((
            Instant::now() + Duration::from_secs(5),
            message(0, "a"),
            Pending::Deliver,
        ));
        w.moved_to = Some(0);
        w.pull_not_before = Instant::now() - Duration::from_millis(1);
        assert_sleeps(&mut w);
    }

    #[tokio::test]
    async fn a_concurrent_batch_that_panicked_after_its_handler_restarts_the_queue() {
        let mut w = worker().await;
        // The batch's marks, and a batch whose settlement panics with its messages.
        w.pq.put([Entry::Mark { offset: 0, size: 1 }]);
        w.in_flight
            .push(batch_future(async { panic!("settlement bug") }));
        // Before: the worker carried on with the mark held for good (the commit stuck at 0).
        let ended = timeout(Duration::from_secs(5), w.run(CancellationToken::new())).await;
        assert!(ended.is_ok(), "the worker kept running with a lost batch");
        assert!(w.restart);
    }
}
