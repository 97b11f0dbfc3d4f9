//! Delivery counters of one webhook, for the lead to expose through Prometheus and `/status`.
//!
//! Plain atomics, no prometheus types: the metrics layer reads them at scrape time (or mirrors
//! them into its own collectors), so this module never touches a registry. All counters only
//! grow; `in_flight` goes up and down. Relaxed ordering is enough: each value is independent and
//! read only for reporting.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::consumer::Outcome;

// The request latency histogram has the daemon's latency buckets (an implicit `+Inf` follows),
// so the exported histogram lines up with the consumer's.
use crate::metrics::LATENCY_BUCKETS;

/// How a request ended, by class (the `status_class` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestClass {
    /// 1xx final answer (unusual).
    Informational,
    /// 2xx.
    Success,
    /// 3xx (redirects are not followed).
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// No answer within the request timeout.
    Timeout,
    /// Connection refused, reset, DNS or TLS failure.
    TransportError,
    /// Not sent: circuit open or endpoint paused by `Retry-After`.
    NotSent,
}

impl RequestClass {
    /// Every class, in gauge order.
    pub const ALL: [Self; 8] = [
        Self::Informational,
        Self::Success,
        Self::Redirection,
        Self::ClientError,
        Self::ServerError,
        Self::Timeout,
        Self::TransportError,
        Self::NotSent,
    ];

    /// The class of an HTTP status code.
    pub fn of_status(code: u16) -> Self {
        match code / 100 {
            1 => Self::Informational,
            2 => Self::Success,
            3 => Self::Redirection,
            4 => Self::ClientError,
            // Codes above 599 are not HTTP; count them with server errors.
            _ => Self::ServerError,
        }
    }

    /// `1xx` .. `5xx`, `timeout`, `transport_error`, `not_sent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "1xx",
            Self::Success => "2xx",
            Self::Redirection => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
            Self::Timeout => "timeout",
            Self::TransportError => "transport_error",
            Self::NotSent => "not_sent",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The kind of a per-message [`Outcome`] (the `outcome` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// [`Outcome::Success`].
    Success,
    /// [`Outcome::Retry`].
    Retry,
    /// [`Outcome::Drop`].
    Drop,
    /// [`Outcome::Later`].
    Later,
}

impl OutcomeKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [Self::Success, Self::Retry, Self::Drop, Self::Later];

    /// The kind of `outcome`.
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Success => Self::Success,
            Outcome::Retry { .. } => Self::Retry,
            Outcome::Drop => Self::Drop,
            Outcome::Later { .. } => Self::Later,
        }
    }

    /// `success`, `retry`, `drop`, `later`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Retry => "retry",
            Self::Drop => "drop",
            Self::Later => "later",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A point-in-time copy of the latency histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, cumulative count)` per bucket, `+Inf` excepted.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations, seconds.
    pub sum_seconds: f64,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
}

/// Counters of one webhook (one subscription).
#[derive(Debug, Default)]
pub struct WebhookStats {
    requests: [AtomicU64; 8],
    outcomes: [AtomicU64; 4],
    /// Non-cumulative per-bucket counts; the last slot is `+Inf`.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    in_flight: AtomicI64,
}

impl WebhookStats {
    /// Requests that ended in `class`.
    pub fn requests(&self, class: RequestClass) -> u64 {
        self.requests[class.index()].load(Ordering::Relaxed)
    }

    /// Messages that got an outcome of `kind`.
    pub fn outcomes(&self, kind: OutcomeKind) -> u64 {
        self.outcomes[kind.index()].load(Ordering::Relaxed)
    }

    /// Requests currently being sent.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The latency histogram of sent requests (timeouts and transport errors included).
    pub fn latency(&self) -> LatencySnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        cumulative += self.latency_buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        LatencySnapshot {
            buckets,
            // Micros fit f64 exactly up to 2^53 us (285 years of summed latency).
            sum_seconds: self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: cumulative,
        }
    }

    pub(crate) fn record_request(&self, class: RequestClass, latency: Option<Duration>) {
        self.requests[class.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = latency {
            let secs = latency.as_secs_f64();
            let slot = LATENCY_BUCKETS
                .iter()
                .position(|bound| secs <= *bound)
                .unwrap_or(LATENCY_BUCKETS.len());
            self.latency_buckets[slot].fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_outcomes(&self, outcomes: &[Outcome]) {
        for outcome in outcomes {
            self.outcomes[OutcomeKind::of(outcome).index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request in flight from now until the guard is dropped. A guard dropped before
    /// [`InFlight::finish`] was cut short (the batch's `consume_timeout`, or a shutdown that
    /// stopped waiting): it counts as a timeout then, so every request sent shows in
    /// `requests_total` and the latency histogram.
    pub(crate) fn in_flight_guard(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats: self,
            started: tokio::time::Instant::now(),
            finished: false,
        }
    }
}

/// Decrements `in_flight` on drop, so cancelled deliveries are not counted forever.
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    stats: &'a WebhookStats,
    started: tokio::time::Instant,
    finished: bool,
}

impl InFlight<'_> {
    /// The request ended and its caller records it: how long it took.
    pub(crate) fn finish(mut self) -> Duration {
        self.finished = true;
        self.started.elapsed()
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            self.stats
                .record_request(RequestClass::Timeout, Some(self.started.elapsed()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram() {
        let s = WebhookStats::default();
        s.record_request(RequestClass::of_status(204), Some(Duration::from_millis(3)));
        s.record_request(
            RequestClass::of_status(503),
            Some(Duration::from_millis(70)),
        );
        s.record_request(RequestClass::Timeout, Some(Duration::from_secs(60)));
        s.record_request(RequestClass::NotSent, None);
        assert_eq!(s.requests(RequestClass::Success), 1);
        assert_eq!(s.requests(RequestClass::ServerError), 1);
        assert_eq!(s.requests(RequestClass::Timeout), 1);
        assert_eq!(s.requests(RequestClass::NotSent), 1);
        assert_eq!(s.requests(RequestClass::ClientError), 0);
        let h = s.latency();
        assert_eq!(h.count, 3);
        let at = |bound: f64| h.buckets.iter().find(|b| b.0 == bound).copied();
        assert_eq!(at(0.0025), Some((0.0025, 0)));
        assert_eq!(at(0.005), Some((0.005, 1)));
        assert_eq!(at(0.05), Some((0.05, 1)));
        assert_eq!(at(0.1), Some((0.1, 2)));
        assert_eq!(at(30.0), Some((30.0, 2)));
        assert_eq!(at(60.0), Some((60.0, 3)));
        assert!((h.sum_seconds - 60.073).abs() < 1e-9);

        s.record_outcomes(&[
            Outcome::Success,
            Outcome::Drop,
            Outcome::Retry { delay_level: None },
            Outcome::Later {
                after: Duration::ZERO,
            },
            Outcome::Success,
        ]);
        let counts: Vec<u64> = OutcomeKind::ALL.iter().map(|k| s.outcomes(*k)).collect();
        assert_eq!(counts, vec![2, 1, 1, 1]);

        {
            let a = s.in_flight_guard();
            let _b = s.in_flight_guard();
            assert_eq!(s.in_flight(), 2);
            a.finish();
        }
        assert_eq!(s.in_flight(), 0);
        // The finished guard left the recording to its caller; the other was cut short.
        assert_eq!(s.requests(RequestClass::Timeout), 2);
        assert_eq!(s.latency().count, 4);
    }

    #[test]
    fn labels() {
        let names: Vec<&str> = RequestClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "1xx",
                "2xx",
                "3xx",
                "4xx",
                "5xx",
                "timeout",
                "transport_error",
                "not_sent"
            ]
        );
        assert_eq!(RequestClass::of_status(301), RequestClass::Redirection);
        assert_eq!(RequestClass::of_status(100), RequestClass::Informational);
        assert_eq!(OutcomeKind::Later.as_str(), "later");
    }
}
