//! Per-subscription statistics (the seed design's `get_stats`) for `/status` and the broker's
//! GET_CONSUMER_RUNNING_INFO: TPS, success rate, latency percentiles, counts, queue states.
//!
//! Counters are atomics; the latency window and the queue table sit behind std mutexes held only
//! for a few instructions, never across an await.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::remoting::MessageQueue;

const LATENCY_WINDOW: usize = 2048;
const TPS_WINDOW_SECS: u64 = 10;

/// What the engine knows about one assigned queue, for the status page.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueState {
    /// Offset committed in memory (next message to consume).
    pub committed_offset: Option<i64>,
    /// Next offset to pull.
    pub next_pull_offset: i64,
    /// Broker's max offset: from the last pull answer, or asked for every 10 s while no pull
    /// is in flight.
    pub max_offset: Option<i64>,
    /// `max_offset - committed_offset`.
    pub lag: Option<i64>,
    /// Messages pulled and not finished.
    pub cached_messages: usize,
    /// Their body bytes.
    pub cached_bytes: u64,
    /// Lowest and highest cached offset.
    pub cached_range: Option<(i64, i64)>,
    /// Orderly: whether the broker lock is held.
    pub locked: bool,
    /// Why pulling is paused, if it is.
    pub paused: Option<String>,
    /// When the last pull went out (Unix ms; the queue's start before the first).
    pub last_pull_ms: i64,
    /// When the last batch was handed to the handler (Unix ms; the queue's start before the
    /// first). Admin tools (`mqadmin consumerStatus`) take a queue holding messages with no
    /// batch for a minute as blocked.
    pub last_consume_ms: i64,
    /// Why the last pull failed, until a pull is answered again (`last_pull_ms` keeps moving
    /// while pulls fail: it is when one went out).
    pub last_pull_error: Option<String>,
}

/// Counters and windows of one subscription.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    succeeded: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    deferred: AtomicU64,
    batches: AtomicU64,
    rebalances: AtomicU64,
    latency: Mutex<LatencyWindow>,
    throughput: Mutex<VecDeque<(u64, u64)>>,
    queues: Mutex<BTreeMap<MessageQueue, QueueState>>,
}

#[derive(Debug, Default)]
struct LatencyWindow {
    recent: VecDeque<Duration>,
    max: Duration,
    total: Duration,
    count: u64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Messages finished per second over the last 10 s.
    pub consume_tps: f64,
    /// Successful messages / all messages with an outcome, since start (1.0 when none).
    pub success_rate: f64,
    /// Messages the handler accepted.
    pub processed: u64,
    /// Messages the handler failed (retry or drop).
    pub failed: u64,
    /// Messages sent back for retry.
    pub retried: u64,
    /// Messages dropped to the DLQ (or given up in broadcasting).
    pub dropped: u64,
    /// Messages deferred without spending a reconsume attempt (endpoint paused).
    pub deferred: u64,
    /// Handler invocations.
    pub batches: u64,
    /// Average handler latency in milliseconds.
    pub latency_avg_ms: f64,
    /// p50 of the recent handler latencies, milliseconds.
    pub latency_p50_ms: f64,
    /// p99 of the recent handler latencies, milliseconds.
    pub latency_p99_ms: f64,
    /// Max handler latency since start, milliseconds.
    pub latency_max_ms: f64,
    /// Rebalances that changed the assignment.
    pub rebalances: u64,
    /// Assigned queues and their state.
    pub queues: BTreeMap<String, QueueState>,
    /// Total cached messages.
    pub cached_messages: usize,
    /// Total lag (sum over queues that know it).
    pub lag: i64,
    /// Queues whose lag is not known yet (no max offset from their broker, or no committed
    /// offset): `lag` leaves them out, so it is a lower bound while this is not 0.
    pub lag_unknown_queues: usize,
    /// Seconds since the consumer started.
    pub uptime_secs: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty statistics starting now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            succeeded: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            latency: Mutex::new(LatencyWindow::default()),
            throughput: Mutex::new(VecDeque::new()),
            queues: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one handler invocation and the outcome counts of its messages.
    pub fn record_batch(
        &self,
        elapsed: Duration,
        succeeded: u64,
        retried: u64,
        dropped: u64,
        deferred: u64,
    ) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.succeeded.fetch_add(succeeded, Ordering::Relaxed);
        self.retried.fetch_add(retried, Ordering::Relaxed);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        self.deferred.fetch_add(deferred, Ordering::Relaxed);
        {
            let mut w = lock(&self.latency);
            if w.recent.len() == LATENCY_WINDOW {
                w.recent.pop_front();
            }
            w.recent.push_back(elapsed);
            w.max = w.max.max(elapsed);
            w.total += elapsed;
            w.count += 1;
        }
        let finished = succeeded + retried + dropped;
        if finished > 0 {
            let sec = self.started.elapsed().as_secs();
            let mut t = lock(&self.throughput);
            match t.back_mut() {
                Some((s, n)) if *s == sec => *n += finished,
                _ => t.push_back((sec, finished)),
            }
            while t.front().is_some_and(|(s, _)| s + TPS_WINDOW_SECS < sec) {
                t.pop_front();
            }
        }
    }

    /// Counts a rebalance that changed the assignment.
    pub fn record_rebalance(&self) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the state of one queue.
    pub fn set_queue(&self, mq: &MessageQueue, state: QueueState) {
        lock(&self.queues).insert(mq.clone(), state);
    }

    /// Changes the state of one queue in place (no-op when the queue is not tracked).
    pub fn update_queue(&self, mq: &MessageQueue, f: impl FnOnce(&mut QueueState)) {
        if let Some(s) = lock(&self.queues).get_mut(mq) {
            f(s);
        }
    }

    /// Forgets a revoked queue.
    pub fn remove_queue(&self, mq: &MessageQueue) {
        lock(&self.queues).remove(mq);
    }

    /// Whether `mq` is tracked (held by a running worker), without copying the table.
    pub fn holds(&self, mq: &MessageQueue) -> bool {
        lock(&self.queues).contains_key(mq)
    }

    /// The queues currently tracked.
    pub fn queues(&self) -> BTreeMap<MessageQueue, QueueState> {
        lock(&self.queues).clone()
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> StatsSnapshot {
        let succeeded = self.succeeded.load(Ordering::Relaxed);
        let retried = self.retried.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let (avg, p50, p99, max) = {
            // Copied under the lock and sorted after it: every batch records into it, and a
            // status page polled often would hold them up for each sort.
            let (mut v, avg, max) = {
                let w = lock(&self.latency);
                let v: Vec<Duration> = w.recent.iter().copied().collect();
                let avg = if w.count == 0 {
                    0.0
                } else {
                    ms(w.total) / w.count as f64
                };
                (v, avg, ms(w.max))
            };
            v.sort_unstable();
            let pct = |p: f64| -> f64 {
                if v.is_empty() {
                    return 0.0;
                }
                let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
                ms(v[idx.min(v.len() - 1)])
            };
            (avg, pct(0.50), pct(0.99), max)
        };
        let elapsed = self.started.elapsed();
        let now_sec = elapsed.as_secs();
        let tps = {
            let t = lock(&self.throughput);
            let n: u64 = t
                .iter()
                .filter(|(s, _)| s + TPS_WINDOW_SECS > now_sec)
                .map(|(_, n)| n)
                .sum();
            // The window is the current second so far and the full ones before it, and no
            // more than the time since start: divided by the whole window, the rate read up to
            // 10 % low, and far lower in the first seconds.
            let secs = elapsed.as_secs_f64();
            let covered = secs.min((TPS_WINDOW_SECS - 1) as f64 + secs.fract());
            // A floor against the first instants, where one message would read as thousands.
            n as f64 / covered.max(0.1)
        };
        let queues = self.queues();
        let all = succeeded + retried + dropped;
        StatsSnapshot {
            consume_tps: tps,
            success_rate: if all == 0 {
                1.0
            } else {
                succeeded as f64 / all as f64
            },
            processed: succeeded,
            failed: retried + dropped,
            retried,
            dropped,
            deferred: self.deferred.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            latency_avg_ms: avg,
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            latency_max_ms: max,
            rebalances: self.rebalances.load(Ordering::Relaxed),
            cached_messages: queues.values().map(|q| q.cached_messages).sum(),
            lag: total_lag(queues.values()),
            lag_unknown_queues: queues.values().filter(|q| q.lag.is_none()).count(),
            queues: queues
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            uptime_secs: now_sec,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Locks a stats mutex; a poisoned one (a panic elsewhere) still holds valid counters.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lag of the queues that know it, summed without overflow (each queue's lag is whatever
/// its broker's max offset makes it).
pub(crate) fn total_lag<'a>(queues: impl Iterator<Item = &'a QueueState>) -> i64 {
    queues.filter_map(|q| q.lag).fold(0, i64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reports_rates_and_percentiles() {
        let s = Stats::new();
        for i in 1..=100u64 {
            s.record_batch(Duration::from_millis(i), 1, 0, 0, 0);
        }
        s.record_batch(Duration::from_millis(5), 0, 1, 1, 0);
        let snap = s.snapshot();
        assert_eq!(snap.processed, 100);
        assert_eq!(snap.failed, 2);
        assert_eq!(snap.batches, 101);
        assert!((snap.success_rate - 100.0 / 102.0).abs() < 1e-9);
        assert_eq!(snap.latency_max_ms, 100.0);
        assert!(snap.latency_p99_ms >= 98.0, "{}", snap.latency_p99_ms);
        // Over the time since start (well under the 10 s window here), not the whole window:
        // divided by 10 s it read about 10.
        assert!(snap.consume_tps > 20.0, "{}", snap.consume_tps);
    }
}
