//! `ProcessQueue`: the pulled-but-not-finished messages of one queue, and the offset that may be
//! committed for them (rocketmq-remoting.md sections 7.7, 7.8 and 7.12).
//!
//! A queue worker owns its `ProcessQueue` outright (style.md rule 6): every method takes `&mut
//! self` or `&self`, there are no locks and no clocks inside (the worker keeps its own pull and
//! consume timestamps). Messages are held in two ordered maps keyed by queue offset:
//!
//! - `cached`: pulled and not yet finished. Concurrent consumption leaves messages here while a
//!   handler works on copies, and [`ProcessQueue::remove`] drops them when their batch is done.
//! - `consuming`: orderly consumption only: the batch [`ProcessQueue::take`] handed out and that
//!   has neither been committed nor rolled back.
//!
//! Invariants (style.md rule 5, at-least-once by construction):
//! - the counters count every message in either map, so flow control sees in-flight work;
//! - an offset returned by [`ProcessQueue::remove`], [`ProcessQueue::commit`] or
//!   [`ProcessQueue::committable_offset`] is never greater than any offset still held, so
//!   committing it can never skip an unfinished message;
//! - the orderly path hands messages out in offset order and only a commit forgets them.

use std::collections::BTreeMap;

use crate::remoting::MessageExt;

/// A message as far as a [`ProcessQueue`] cares: where it sits in its queue and what it costs.
pub trait Cached {
    /// The message's queue offset, unique within its queue.
    fn offset(&self) -> i64;
    /// Bytes counted against the per-queue size threshold (Java counts the body length).
    fn size_bytes(&self) -> u64;
}

impl Cached for MessageExt {
    fn offset(&self) -> i64 {
        self.queue_offset
    }

    /// The decompressed body length, as Java counts `msg.getBody().length` after decoding.
    fn size_bytes(&self) -> u64 {
        self.body.len() as u64
    }
}

/// Per-queue flow-control thresholds (Java `pullThresholdForQueue`,
/// `pullThresholdSizeForQueue`, `consumeConcurrentlyMaxSpan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Pause pulling while more than this many messages are cached.
    pub max_count: usize,
    /// Pause pulling while more than this many bytes are cached.
    pub max_bytes: u64,
    /// Pause pulling while the cached offset span exceeds this (concurrent mode only: `None`
    /// for orderly queues, where the span check does not apply).
    pub max_span: Option<u64>,
}

/// Why a queue's pulling is paused: which limit of [`FlowLimits`] is exceeded, with the values,
/// so the worker can log and count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    /// Too many cached messages.
    Count {
        /// Messages cached now.
        cached: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Too many cached bytes.
    Bytes {
        /// Bytes cached now.
        cached: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The distance between the lowest and highest cached offset is too large: one slow message
    /// holds back the commit point while newer ones pile up behind it.
    Span {
        /// Highest minus lowest cached offset.
        span: u64,
        /// The configured limit.
        limit: u64,
    },
}

impl FlowControl {
    /// A short label for metrics (`count`, `bytes`, `span`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Count { .. } => "count",
            Self::Bytes { .. } => "bytes",
            Self::Span { .. } => "span",
        }
    }
}

/// The messages of one queue between pull and commit. See the module documentation.
#[derive(Debug, Clone)]
pub struct ProcessQueue<T = MessageExt> {
    cached: BTreeMap<i64, T>,
    consuming: BTreeMap<i64, T>,
    count: usize,
    bytes: u64,
    /// Offset of the highest message ever put; `None` until the first put.
    offset_max: Option<i64>,
}

impl<T> Default for ProcessQueue<T> {
    fn default() -> Self {
        Self {
            cached: BTreeMap::new(),
            consuming: BTreeMap::new(),
            count: 0,
            bytes: 0,
            offset_max: None,
        }
    }
}

impl<T: Cached> ProcessQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds pulled messages; offsets already held (cached or consuming) are ignored. Returns how
    /// many were added.
    pub fn put(&mut self, msgs: impl IntoIterator<Item = T>) -> usize {
        let mut added = 0;
        for msg in msgs {
            if self.insert(msg) {
                added += 1;
            }
        }
        added
    }

    /// Like [`Self::put`], but returns the offsets that were already held and so not added: the
    /// ones not to dispatch to concurrent consumption (a re-pulled duplicate is already being
    /// handled and must not be dispatched twice). Empty, without allocating, in the usual case.
    pub fn put_new(&mut self, msgs: impl IntoIterator<Item = T>) -> Vec<i64> {
        let mut held = Vec::new();
        for msg in msgs {
            let offset = msg.offset();
            if !self.insert(msg) {
                held.push(offset);
            }
        }
        held
    }

    fn insert(&mut self, msg: T) -> bool {
        let offset = msg.offset();
        if self.cached.contains_key(&offset) || self.consuming.contains_key(&offset) {
            return false;
        }
        self.count += 1;
        self.bytes += msg.size_bytes();
        self.offset_max = Some(self.offset_max.map_or(offset, |max| max.max(offset)));
        self.cached.insert(offset, msg);
        true
    }

    /// Concurrent commit rule (Java `removeMessage`): drops the finished `offsets` and returns
    /// the offset to commit with increase-only semantics.
    ///
    /// `None` when nothing was cached before the call (nothing to update); otherwise the lowest
    /// offset still cached, or the highest offset ever put + 1 when the queue is now empty.
    /// Offsets not held are ignored.
    pub fn remove(&mut self, offsets: impl IntoIterator<Item = i64>) -> Option<i64> {
        if self.cached.is_empty() {
            return None;
        }
        for offset in offsets {
            if let Some(msg) = self.cached.remove(&offset) {
                self.forget(&msg);
            }
        }
        match self.cached.keys().next() {
            Some(lowest) => Some(*lowest),
            // Saturating: the offsets come from the broker, and `i64::MAX` must not panic.
            None => self.offset_max.map(|max| max.saturating_add(1)),
        }
    }

    fn forget(&mut self, msg: &T) {
        self.count -= 1;
        self.bytes = self.bytes.saturating_sub(msg.size_bytes());
    }

    /// Orderly: moves up to `n` lowest cached messages into the consuming batch and returns
    /// copies of them, in offset order. Empty when nothing is waiting.
    pub fn take(&mut self, n: usize) -> Vec<T>
    where
        T: Clone,
    {
        let mut batch = Vec::with_capacity(n.min(self.cached.len()));
        while batch.len() < n {
            let Some((offset, msg)) = self.cached.pop_first() else {
                break;
            };
            batch.push(msg.clone());
            self.consuming.insert(offset, msg);
        }
        batch
    }

    /// Orderly: the consuming batch is done. Forgets it and returns the offset to commit: the
    /// last consuming offset + 1, or `None` when nothing was being consumed.
    ///
    /// Unlike Java, the result is capped at the lowest offset still cached, so a partial
    /// [`Self::reconsume`] followed by a commit cannot skip the message that was put back.
    pub fn commit(&mut self) -> Option<i64> {
        let (&last, _) = self.consuming.last_key_value()?;
        let done = std::mem::take(&mut self.consuming);
        for msg in done.values() {
            self.forget(msg);
        }
        let next = last.saturating_add(1);
        Some(match self.cached.keys().next() {
            Some(&lowest) => next.min(lowest),
            None => next,
        })
    }

    /// Orderly: the consuming batch failed; puts all of it back to be taken again first.
    pub fn rollback(&mut self) {
        let back = std::mem::take(&mut self.consuming);
        self.cached.extend(back);
    }

    /// Orderly: the consuming batch failed part-way. Forgets its `finished` messages (accepted
    /// by the handler, or handed to the DLQ), which must not be offered again, puts the rest
    /// back to be taken again first, and returns [`Self::committable_offset`]: the first
    /// message not finished, so an accepted prefix is committed while what follows waits.
    pub fn retry_unfinished(&mut self, finished: impl IntoIterator<Item = i64>) -> Option<i64> {
        for offset in finished {
            if let Some(msg) = self.consuming.remove(&offset) {
                self.forget(&msg);
            }
        }
        self.rollback();
        self.committable_offset()
    }

    /// Orderly (Java `makeMessageToConsumeAgain`): puts these messages of the consuming batch
    /// back, replacing the held copies (so an incremented reconsume count survives). Messages
    /// not in the consuming batch are ignored. Returns how many were put back.
    pub fn reconsume(&mut self, msgs: impl IntoIterator<Item = T>) -> usize {
        let mut moved = 0;
        for msg in msgs {
            let offset = msg.offset();
            if let Some(old) = self.consuming.remove(&offset) {
                // Counters already include the message; only a size change needs accounting.
                self.bytes = self.bytes.saturating_sub(old.size_bytes()) + msg.size_bytes();
                self.cached.insert(offset, msg);
                moved += 1;
            }
        }
        moved
    }

    /// The offset up to which everything is finished: the lowest offset still held (cached or
    /// consuming), the highest offset ever put + 1 when nothing is held, `None` when nothing was
    /// ever put. Idempotent, unlike [`Self::remove`]'s result.
    pub fn committable_offset(&self) -> Option<i64> {
        let lowest = match (self.cached.keys().next(), self.consuming.keys().next()) {
            (Some(a), Some(b)) => Some(*a.min(b)),
            (a, b) => a.or(b).copied(),
        };
        lowest.or_else(|| self.offset_max.map(|max| max.saturating_add(1)))
    }

    /// The first exceeded limit, checked in Java's order (count, bytes, span), or `None` when
    /// pulling may continue. Limits are exclusive, as in Java (`count > limit` pauses).
    pub fn flow_control(&self, limits: &FlowLimits) -> Option<FlowControl> {
        if self.count > limits.max_count {
            return Some(FlowControl::Count {
                cached: self.count,
                limit: limits.max_count,
            });
        }
        if self.bytes > limits.max_bytes {
            return Some(FlowControl::Bytes {
                cached: self.bytes,
                limit: limits.max_bytes,
            });
        }
        let limit = limits.max_span?;
        let span = self.max_span();
        (span > limit).then_some(FlowControl::Span { span, limit })
    }

    /// How many messages the next pull asks for, at most `batch`, or which limit it waits for.
    ///
    /// A pull never asks for more than the room left under the count limit, so the cached count
    /// never exceeds it (the Java client may overshoot by a batch). And it waits until the room
    /// is worth a pull, a full batch or half the limit if that is less: with many queues
    /// sharing a small cache, pulling whatever room each finished message left made pulls of
    /// one or two messages, each a round trip and a broker lookup.
    pub fn pull_size(&self, limits: &FlowLimits, batch: usize) -> Result<usize, FlowControl> {
        let room = limits.max_count.saturating_sub(self.count);
        let worthwhile = batch.clamp(1, (limits.max_count / 2).max(1));
        if room < worthwhile {
            return Err(FlowControl::Count {
                cached: self.count,
                limit: limits.max_count,
            });
        }
        match self.flow_control(limits) {
            Some(reason) => Err(reason),
            None => Ok(room.min(batch.max(1))),
        }
    }
}

impl<T> ProcessQueue<T> {
    /// Highest minus lowest offset waiting in the cached map (Java `maxSpan`), 0 when empty.
    pub fn max_span(&self) -> u64 {
        match (self.cached.first_key_value(), self.cached.last_key_value()) {
            (Some((first, _)), Some((last, _))) => last.abs_diff(*first),
            _ => 0,
        }
    }

    /// Messages held, cached and consuming.
    pub fn cached_count(&self) -> usize {
        self.count
    }

    /// Bytes held, cached and consuming.
    pub fn cached_bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing is held (neither cached nor consuming).
    pub fn is_empty(&self) -> bool {
        self.cached.is_empty() && self.consuming.is_empty()
    }

    /// Offset of the highest message ever put (Java `queueOffsetMax`); `None` before the first.
    pub fn queue_offset_max(&self) -> Option<i64> {
        self.offset_max
    }

    /// The lowest cached message (the consume-timeout sweeper looks at the head).
    pub fn first(&self) -> Option<&T> {
        self.cached.values().next()
    }

    /// The cached message at `offset` (e.g. to resubmit one whose send-back failed).
    pub fn get(&self, offset: i64) -> Option<&T> {
        self.cached.get(&offset)
    }

    /// Whether `offset` is held, cached or consuming.
    pub fn contains(&self, offset: i64) -> bool {
        self.cached.contains_key(&offset) || self.consuming.contains_key(&offset)
    }

    /// Whether any offset in `range` is held, cached or consuming.
    pub fn holds_any_in(&self, range: std::ops::RangeInclusive<i64>) -> bool {
        self.cached.range(range.clone()).next().is_some()
            || self.consuming.range(range).next().is_some()
    }

    /// Forgets everything, as a freshly created queue (Java `clear`, used on offset reset).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Msg {
        offset: i64,
        size: u64,
        tries: u32,
    }

    impl Cached for Msg {
        fn offset(&self) -> i64 {
            self.offset
        }
        fn size_bytes(&self) -> u64 {
            self.size
        }
    }

    fn msg(offset: i64) -> Msg {
        Msg {
            offset,
            size: 10,
            tries: 0,
        }
    }

    fn msgs(offsets: impl IntoIterator<Item = i64>) -> Vec<Msg> {
        offsets.into_iter().map(msg).collect()
    }

    fn offsets(batch: &[Msg]) -> Vec<i64> {
        batch.iter().map(|m| m.offset).collect()
    }

    #[test]
    fn put_counts_and_ignores_duplicates() {
        let mut pq = ProcessQueue::new();
        assert_eq!(pq.committable_offset(), None);
        assert_eq!(pq.put(msgs([5, 6, 7])), 3);
        assert_eq!(pq.put(msgs([7, 8])), 1);
        assert_eq!(pq.cached_count(), 4);
        assert_eq!(pq.cached_bytes(), 40);
        assert_eq!(pq.queue_offset_max(), Some(8));
        assert_eq!(pq.max_span(), 3);
        assert_eq!(pq.put_new(msgs([9, 8, 10])), vec![8]);
        assert_eq!(pq.cached_count(), 6);
        assert_eq!(pq.queue_offset_max(), Some(10));
    }

    #[test]
    fn concurrent_remove_follows_the_java_rule() {
        let mut pq = ProcessQueue::new();
        assert_eq!(pq.remove([1]), None, "empty map: no update");
        pq.put(msgs([10, 11, 12]));
        assert_eq!(pq.remove([11]), Some(10), "10 still in flight");
        assert_eq!(pq.committable_offset(), Some(10));
        assert_eq!(pq.remove([10]), Some(12));
        assert_eq!(pq.remove([12]), Some(13), "empty: max + 1");
        assert_eq!(pq.committable_offset(), Some(13));
        assert_eq!(pq.remove([12]), None);
        assert!(pq.is_empty());
        assert_eq!((pq.cached_count(), pq.cached_bytes()), (0, 0));
    }

    #[test]
    fn the_highest_offset_does_not_overflow() {
        let mut pq = ProcessQueue::new();
        pq.put(msgs([i64::MAX]));
        assert_eq!(pq.committable_offset(), Some(i64::MAX));
        assert_eq!(pq.remove([i64::MAX]), Some(i64::MAX));
        assert_eq!(pq.committable_offset(), Some(i64::MAX));
        pq.put(msgs([i64::MAX - 1, i64::MAX]));
        pq.take(2);
        assert_eq!(pq.commit(), Some(i64::MAX));
    }

    #[test]
    fn orderly_take_commit_rollback() {
        let mut pq = ProcessQueue::new();
        pq.put(msgs(0..5));
        assert_eq!(offsets(&pq.take(2)), vec![0, 1]);
        assert_eq!(pq.cached_count(), 5, "consuming messages still count");
        assert_eq!(pq.committable_offset(), Some(0));
        pq.rollback();
        assert_eq!(offsets(&pq.take(3)), vec![0, 1, 2]);
        assert_eq!(pq.commit(), Some(3));
        assert_eq!(pq.cached_count(), 2);
        assert_eq!(pq.commit(), None, "nothing consuming");
        let mut batch = pq.take(10);
        assert_eq!(offsets(&batch), vec![3, 4]);
        for m in &mut batch {
            m.tries += 1;
        }
        assert_eq!(pq.reconsume(batch), 2);
        let again = pq.take(10);
        assert_eq!(
            again.iter().map(|m| m.tries).collect::<Vec<_>>(),
            vec![1, 1]
        );
        assert_eq!(pq.commit(), Some(5));
        assert!(pq.is_empty());
        assert!(pq.take(1).is_empty());
    }

    #[test]
    fn a_batch_failed_part_way_commits_its_finished_prefix_only() {
        let mut pq = ProcessQueue::new();
        pq.put(msgs(0..6));
        assert_eq!(offsets(&pq.take(4)), vec![0, 1, 2, 3]);
        // 0 accepted, 1 failed, 2 handed to the DLQ, 3 not attempted.
        assert_eq!(pq.retry_unfinished([0, 2]), Some(1));
        assert_eq!(pq.cached_count(), 4);
        assert_eq!(
            offsets(&pq.take(10)),
            vec![1, 3, 4, 5],
            "2 is not offered again"
        );
        assert_eq!(
            pq.retry_unfinished([]),
            Some(1),
            "nothing finished: no progress"
        );
        assert_eq!(offsets(&pq.take(10)), vec![1, 3, 4, 5]);
        assert_eq!(pq.retry_unfinished([1, 3, 4]), Some(5));
        assert_eq!(offsets(&pq.take(10)), vec![5]);
        assert_eq!(pq.commit(), Some(6));
        assert!(pq.is_empty());
    }

    #[test]
    fn partial_reconsume_cannot_skip() {
        let mut pq = ProcessQueue::new();
        pq.put(msgs(0..3));
        let batch = pq.take(3);
        assert_eq!(pq.reconsume(vec![batch[1].clone()]), 1);
        assert_eq!(pq.commit(), Some(1), "offset 1 is back in the cache");
        assert_eq!(offsets(&pq.take(5)), vec![1]);
    }

    #[test]
    fn flow_control_names_the_limit() {
        let mut pq = ProcessQueue::new();
        pq.put(msgs([0, 1, 2, 50]));
        let limits = FlowLimits {
            max_count: 4,
            max_bytes: 40,
            max_span: Some(50),
        };
        assert_eq!(pq.flow_control(&limits), None, "limits are exclusive");
        let tight = FlowLimits {
            max_count: 3,
            ..limits
        };
        assert_eq!(
            pq.flow_control(&tight),
            Some(FlowControl::Count {
                cached: 4,
                limit: 3
            })
        );
        let tight = FlowLimits {
            max_bytes: 39,
            ..limits
        };
        assert_eq!(
            pq.flow_control(&tight),
            Some(FlowControl::Bytes {
                cached: 40,
                limit: 39
            })
        );
        let tight = FlowLimits {
            max_span: Some(49),
            ..limits
        };
        assert_eq!(
            pq.flow_control(&tight),
            Some(FlowControl::Span {
                span: 50,
                limit: 49
            })
        );
        let orderly = FlowLimits {
            max_span: None,
            ..tight
        };
        assert_eq!(pq.flow_control(&orderly), None);
    }

    #[test]
    fn pulls_wait_for_room_worth_a_batch() {
        let limits = |max_count| FlowLimits {
            max_count,
            max_bytes: u64::MAX,
            max_span: None,
        };
        let with = |n: i64| {
            let mut pq = ProcessQueue::new();
            pq.put(msgs(0..n));
            pq
        };
        let waits = |cached, limit| {
            Err(FlowControl::Count {
                cached,
                limit: limit as usize,
            })
        };
        // A large limit: full batches only, and never past the limit.
        assert_eq!(with(0).pull_size(&limits(1000), 32), Ok(32));
        assert_eq!(with(968).pull_size(&limits(1000), 32), Ok(32));
        assert_eq!(with(990).pull_size(&limits(1000), 32), waits(990, 1000));
        // A small share: half of it is worth a pull.
        assert_eq!(with(0).pull_size(&limits(38), 32), Ok(32));
        assert_eq!(with(32).pull_size(&limits(38), 32), waits(32, 38));
        assert_eq!(with(19).pull_size(&limits(38), 32), Ok(19));
        // The smallest shares still pull one message at a time.
        assert_eq!(with(0).pull_size(&limits(1), 32), Ok(1));
        assert_eq!(with(1).pull_size(&limits(1), 32), waits(1, 1));
        assert_eq!(with(1).pull_size(&limits(3), 32), Ok(2));
        // The other limits still apply when there is room.
        let bytes = FlowLimits {
            max_bytes: 5,
            ..limits(1000)
        };
        assert_eq!(
            with(1).pull_size(&bytes, 32),
            Err(FlowControl::Bytes {
                cached: 10,
                limit: 5
            })
        );
    }

    #[test]
    fn clear_forgets_everything() {
        let mut pq = ProcessQueue::new();
        pq.put(msgs([1, 2]));
        pq.take(1);
        pq.clear();
        assert!(pq.is_empty());
        assert_eq!(pq.committable_offset(), None);
        assert_eq!(pq.cached_count(), 0);
    }

    #[derive(Debug, Clone)]
    enum ConcurrentOp {
        /// A pull: `n` new offsets above the current max, separated by gaps (filtered messages).
        Pull { n: usize, gap: i64 },
        /// A re-pull of a still-cached offset (index into the cached set).
        Duplicate(usize),
        /// A finished batch: these indexes into the cached set, plus an offset never put.
        Finish(Vec<usize>),
    }

    fn concurrent_op() -> impl Strategy<Value = ConcurrentOp> {
        prop_oneof![
            (1..8usize, 1..4i64).prop_map(|(n, gap)| ConcurrentOp::Pull { n, gap }),
            any::<usize>().prop_map(ConcurrentOp::Duplicate),
            prop::collection::vec(any::<usize>(), 0..6).prop_map(ConcurrentOp::Finish),
        ]
    }

    proptest! {
        #[test]
        fn concurrent_commit_never_passes_a_cached_message(
            ops in prop::collection::vec(concurrent_op(), 1..60),
        ) {
            let mut pq = ProcessQueue::new();
            let mut held: BTreeSet<i64> = BTreeSet::new();
            let mut next = 0i64;
            let mut committed: Option<i64> = None;
            let mut max_put: Option<i64> = None;
            for op in ops {
                match op {
                    ConcurrentOp::Pull { n, gap } => {
                        let batch: Vec<i64> = (0..n as i64).map(|i| next + i * gap).collect();
                        next += n as i64 * gap;
                        max_put = batch.last().copied();
                        prop_assert_eq!(pq.put(msgs(batch.clone())), n);
                        held.extend(batch);
                    }
                    ConcurrentOp::Duplicate(i) => {
                        if let Some(&o) = held.iter().nth(i % held.len().max(1)) {
                            prop_assert_eq!(pq.put(msgs([o])), 0);
                        }
                    }
                    ConcurrentOp::Finish(picks) => {
                        let done: Vec<i64> = picks
                            .iter()
                            .filter_map(|i| held.iter().nth(i % held.len().max(1)).copied())
                            .chain([next + 1000])
                            .collect();
                        let was_empty = held.is_empty();
                        let result = pq.remove(done.iter().copied());
                        for o in &done {
                            held.remove(o);
                        }
                        prop_assert_eq!(result.is_none(), was_empty);
                        if let Some(offset) = result {
                            let before = committed;
                            // increase-only, as the worker applies it
                            committed = Some(committed.map_or(offset, |c| c.max(offset)));
                            prop_assert!(committed >= before);
                        }
                    }
                }
                prop_assert_eq!(pq.cached_count(), held.len());
                prop_assert_eq!(pq.cached_bytes(), held.len() as u64 * 10);
                if let (Some(c), Some(&lowest)) = (committed, held.first()) {
                    prop_assert!(c <= lowest, "committed {} passes cached {}", c, lowest);
                }
                let expected = held.first().copied().or(max_put.map(|m| m + 1));
                prop_assert_eq!(pq.committable_offset(), expected);
            }
        }

        #[test]
        fn orderly_keeps_order_and_never_skips(
            ops in prop::collection::vec((0..6u8, 1..6usize, any::<u64>()), 1..80),
        ) {
            let mut pq = ProcessQueue::new();
            let mut next = 0i64;
            let mut put: Vec<i64> = Vec::new();
            let mut done: BTreeSet<i64> = BTreeSet::new();
            let mut batch: Vec<Msg> = Vec::new();
            for (kind, n, bits) in ops {
                match kind {
                    0 => {
                        let fresh: Vec<i64> = (next..next + n as i64).collect();
                        next += n as i64;
                        pq.put(msgs(fresh.clone()));
                        put.extend(fresh);
                    }
                    1 => {
                        let taken = pq.take(n);
                        let got = offsets(&taken);
                        // In order, and the lowest offsets not done and not already consuming.
                        let consuming: BTreeSet<i64> = offsets(&batch).into_iter().collect();
                        let expected: Vec<i64> = put
                            .iter()
                            .filter(|o| !done.contains(o) && !consuming.contains(o))
                            .take(n)
                            .copied()
                            .collect();
                        prop_assert_eq!(&got, &expected);
                        batch.extend(taken);
                    }
                    2 => {
                        let result = pq.commit();
                        prop_assert_eq!(result.is_none(), batch.is_empty());
                        done.extend(offsets(&batch));
                        batch.clear();
                        if let Some(c) = result {
                            // Never skips: everything below the commit point is done.
                            for o in put.iter().filter(|o| **o < c) {
                                prop_assert!(done.contains(o), "commit {} skips {}", c, o);
                            }
                        }
                    }
                    3 => {
                        pq.rollback();
                        batch.clear();
                    }
                    5 => {
                        // The batch failed part-way: a random subset finished, the rest back.
                        let finished: Vec<i64> = offsets(&batch)
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| (bits >> (i % 64)) & 1 == 1)
                            .map(|(_, o)| o)
                            .collect();
                        let result = pq.retry_unfinished(finished.iter().copied());
                        done.extend(finished);
                        batch.clear();
                        if let Some(c) = result {
                            for o in put.iter().filter(|o| **o < c) {
                                prop_assert!(done.contains(o), "commit {} skips {}", c, o);
                            }
                        }
                    }
                    _ => {
                        // Put back a random subset of the consuming batch.
                        let mut back = Vec::new();
                        let mut keep = Vec::new();
                        for (i, m) in batch.drain(..).enumerate() {
                            if (bits >> (i % 64)) & 1 == 1 {
                                back.push(m);
                            } else {
                                keep.push(m);
                            }
                        }
                        batch = keep;
                        prop_assert_eq!(pq.reconsume(back.clone()), back.len());
                    }
                }
                prop_assert_eq!(pq.cached_count(), put.len() - done.len());
            }
        }
    }
}
