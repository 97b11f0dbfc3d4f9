//! The circuit breaker (and `Retry-After` pause) guarding one endpoint.
//!
//! Why: when the application is down, every delivery would fail and spend a reconsume attempt;
//! after `maxReconsumeTimes` the broker moves the message to the DLQ, so a dead app would drain
//! the topic into the DLQ. While the circuit is open, deliveries are not sent and answer
//! `Later` instead (no attempt spent); the engine keeps the messages in its process queue and
//! pulling stops through flow control.
//!
//! States: `Closed` (send everything) -> `Open` after `failure_threshold` consecutive failed
//! requests (transport error, timeout, 5xx, 408, 429) -> after the open duration `HalfOpen`, which lets
//! exactly one probe through -> the probe's success closes the circuit, its failure reopens it
//! for twice as long (capped at `max_open_duration`). A probe that never reports (its future was
//! dropped) is forgotten after its deadline so the circuit cannot stay half-open forever.
//!
//! Each admission carries a [`Ticket`] naming the phase it was given in; a result counts only
//! in that same phase. A slow request sent before the circuit opened, or a probe given up on
//! and replaced, would otherwise count against the circuit that followed: stale failures could
//! reopen a freshly closed circuit, and a forgotten probe could decide its successor's phase.
//!
//! Pure state machine: every method takes `now` (tokio's `Instant`, so tests pause time); the
//! owner keeps it under a short synchronous lock.

use std::time::Duration;

use tokio::time::Instant;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed requests that open the circuit; 0 disables the breaker.
    pub failure_threshold: u32,
    /// How long the circuit first stays open.
    pub open_duration: Duration,
    /// The longest it stays open after repeated failed probes (the duration doubles each time).
    pub max_open_duration: Duration,
}

/// The configuration's `circuit_breaker` defaults: 5 failures, open 5 s, at most 60 s.
impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
        }
    }
}

/// The externally visible state, for metrics and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Requests flow.
    Closed,
    /// Requests wait; nothing is sent.
    Open,
    /// One probe request is allowed to test the endpoint.
    HalfOpen,
}

impl CircuitState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// Gauge value: 0 closed, 1 half-open, 2 open (higher is worse).
    pub fn gauge_value(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// The phase a request was admitted in; [`Breaker::record`] ignores results from other phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// Whether a request may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it; report the result with [`Breaker::record`].
    Send(Ticket),
    /// Send it as the half-open probe; its result decides the circuit.
    Probe(Ticket),
    /// Do not send; offer the messages again after this long.
    Wait(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_deadline: Instant },
}

/// Circuit breaker plus the endpoint-wide `Retry-After` pause.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    /// The longest a probe may take before another is allowed (the request timeout).
    probe_timeout: Duration,
    phase: Phase,
    /// Counts phase changes (every open, close and probe), so tickets of earlier phases differ.
    epoch: u64,
    consecutive_failures: u32,
    /// The open duration to use next time the circuit opens from a failed probe.
    current_open: Duration,
    paused_until: Option<Instant>,
}

impl Breaker {
    /// A closed breaker. `probe_timeout` is how long a probe may stay unanswered (use the
    /// request timeout).
    pub fn new(config: BreakerConfig, probe_timeout: Duration) -> Self {
        Self {
            config,
            probe_timeout,
            phase: Phase::Closed,
            epoch: 0,
            consecutive_failures: 0,
            current_open: config.open_duration,
            paused_until: None,
        }
    }

    /// The state at `now` (an expired `Open` already reads as `HalfOpen`).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { until } if now < until => CircuitState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// How long the `Retry-After` pause has left at `now` (zero when there is none).
    pub fn paused_for(&self, now: Instant) -> Duration {
        self.paused_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// Decides whether a request may go out at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        let paused = self
            .paused_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero());
        if paused.is_none() {
            self.paused_until = None;
        }
        let breaker_wait = match self.phase {
            Phase::Closed => None,
            Phase::Open { until } if now < until => Some(until - now),
            Phase::HalfOpen { probe_deadline } if now < probe_deadline => {
                // Someone else is probing; come back soon rather than at the probe deadline,
                // since a successful probe usually answers quickly.
                Some((probe_deadline - now).min(self.config.open_duration))
            }
            Phase::Open { .. } | Phase::HalfOpen { .. } => {
                if let Some(wait) = paused {
                    return Admission::Wait(wait);
                }
                self.enter(Phase::HalfOpen {
                    probe_deadline: now + self.probe_timeout.max(self.current_open),
                });
                return Admission::Probe(Ticket(self.epoch));
            }
        };
        match (paused, breaker_wait) {
            (None, None) => Admission::Send(Ticket(self.epoch)),
            (a, b) => Admission::Wait(a.unwrap_or_default().max(b.unwrap_or_default())),
        }
    }

    /// Reports the result of a request admitted with `admission` (`healthy`: it got an answer
    /// that was not a 5xx, 408 or 429).
    pub fn record(&mut self, now: Instant, admission: Admission, healthy: bool) {
        match (admission, self.phase) {
            (Admission::Probe(ticket), Phase::HalfOpen { .. }) if ticket.0 == self.epoch => {
                if healthy {
                    self.close();
                } else {
                    self.current_open = (self.current_open * 2).min(self.config.max_open_duration);
                    self.open(now);
                }
            }
            (Admission::Send(ticket), Phase::Closed) if ticket.0 == self.epoch => {
                if healthy {
                    self.consecutive_failures = 0;
                } else {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    if self.config.failure_threshold > 0
                        && self.consecutive_failures >= self.config.failure_threshold
                    {
                        self.open(now);
                    }
                }
            }
            // Results of requests admitted in an earlier phase say nothing about this one: the
            // circuit already opened or closed since, or another probe is deciding.
            _ => {}
        }
    }

    /// How long the circuit stays open from `now`; zero unless it is open.
    pub fn open_for(&self, now: Instant) -> Duration {
        match self.phase {
            Phase::Open { until } => until.saturating_duration_since(now),
            Phase::Closed | Phase::HalfOpen { .. } => Duration::ZERO,
        }
    }

    /// Pauses the endpoint for `after` (a `Retry-After`), extending but never shortening a pause.
    pub fn pause(&mut self, now: Instant, after: Duration) {
        let until = now + after;
        if self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
        }
    }

    fn open(&mut self, now: Instant) {
        self.enter(Phase::Open {
            until: now + self.current_open,
        });
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.epoch = self.epoch.wrapping_add(1);
    }

    fn close(&mut self) {
        self.enter(Phase::Closed);
        self.consecutive_failures = 0;
        self.current_open = self.config.open_duration;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const SEC: Duration = Duration::from_secs(1);

    fn breaker() -> Breaker {
        Breaker::new(
            BreakerConfig {
                failure_threshold: 3,
                open_duration: 2 * SEC,
                max_open_duration: 5 * SEC,
            },
            SEC,
        )
    }

    fn fail(b: &mut Breaker) {
        let a = b.admit(Instant::now());
        b.record(Instant::now(), a, false);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_only() {
        let mut b = breaker();
        fail(&mut b);
        fail(&mut b);
        // A success resets the count.
        let a = b.admit(Instant::now());
        assert!(matches!(a, Admission::Send(_)));
        b.record(Instant::now(), a, true);
        fail(&mut b);
        fail(&mut b);
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        fail(&mut b);
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
        assert_eq!(b.admit(Instant::now()), Admission::Wait(2 * SEC));
        advance(SEC / 2).await;
        assert_eq!(b.admit(Instant::now()), Admission::Wait(SEC * 3 / 2));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_probe_and_success_closes() {
        let mut b = breaker();
        for _ in 0..3 {
            fail(&mut b);
        }
        advance(2 * SEC).await;
        assert_eq!(b.state(Instant::now()), CircuitState::HalfOpen);
        let probe = b.admit(Instant::now());
        assert!(matches!(probe, Admission::Probe(_)));
        // Others wait while the probe is out.
        assert_eq!(b.admit(Instant::now()), Admission::Wait(2 * SEC));
        b.record(Instant::now(), probe, true);
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        assert!(matches!(b.admit(Instant::now()), Admission::Send(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn results_from_an_earlier_phase_are_ignored() {
        let mut b = breaker();
        // Three slow requests go out while the circuit is closed...
        let slow: Vec<_> = (0..3).map(|_| b.admit(Instant::now())).collect();
        // ...others fail meanwhile and open it, and a probe closes it again.
        for _ in 0..3 {
            fail(&mut b);
        }
        advance(2 * SEC).await;
        let probe = b.admit(Instant::now());
        // A success of an ordinary request does not close a half-open circuit.
        b.record(Instant::now(), slow[0], true);
        assert_eq!(b.state(Instant::now()), CircuitState::HalfOpen);
        b.record(Instant::now(), probe, true);
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        // The slow requests now fail: they belong to the first closed phase, not this one.
        for a in slow {
            b.record(Instant::now(), a, false);
        }
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        // Failures admitted in this phase still count.
        for _ in 0..3 {
            fail(&mut b);
        }
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_double_the_open_duration_up_to_the_cap() {
        let mut b = breaker();
        for _ in 0..3 {
            fail(&mut b);
        }
        let mut waits = Vec::new();
        for _ in 0..4 {
            let Admission::Wait(wait) = b.admit(Instant::now()) else {
                panic!("expected wait");
            };
            waits.push(wait);
            advance(wait).await;
            let probe = b.admit(Instant::now());
            assert!(matches!(probe, Admission::Probe(_)));
            b.record(Instant::now(), probe, false);
            assert_eq!(b.state(Instant::now()), CircuitState::Open);
        }
        assert_eq!(waits, vec![2 * SEC, 4 * SEC, 5 * SEC, 5 * SEC]);
        // Success resets to the base duration.
        advance(5 * SEC).await;
        let probe = b.admit(Instant::now());
        b.record(Instant::now(), probe, true);
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        for _ in 0..3 {
            fail(&mut b);
        }
        assert_eq!(b.admit(Instant::now()), Admission::Wait(2 * SEC));
    }

    #[tokio::test(start_paused = true)]
    async fn lost_probe_is_replaced_after_its_deadline() {
        let mut b = breaker();
        for _ in 0..3 {
            fail(&mut b);
        }
        advance(2 * SEC).await;
        let lost = b.admit(Instant::now());
        assert!(matches!(lost, Admission::Probe(_)));
        // The probe never reports; the deadline is max(probe timeout, open duration) = 2 s.
        advance(SEC).await;
        assert_eq!(b.admit(Instant::now()), Admission::Wait(SEC));
        advance(SEC).await;
        let second = b.admit(Instant::now());
        assert!(matches!(second, Admission::Probe(_)));
        // The first probe answers late: the second one decides, not it.
        b.record(Instant::now(), lost, false);
        assert_eq!(b.state(Instant::now()), CircuitState::HalfOpen);
        b.record(Instant::now(), second, true);
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_zero_never_opens() {
        let mut b = Breaker::new(
            BreakerConfig {
                failure_threshold: 0,
                ..BreakerConfig::default()
            },
            SEC,
        );
        for _ in 0..100 {
            fail(&mut b);
        }
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        assert!(matches!(b.admit(Instant::now()), Admission::Send(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pause() {
        let mut b = breaker();
        b.pause(Instant::now(), 10 * SEC);
        b.pause(Instant::now(), 3 * SEC); // never shortens
        assert_eq!(b.admit(Instant::now()), Admission::Wait(10 * SEC));
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        advance(10 * SEC).await;
        assert!(matches!(b.admit(Instant::now()), Admission::Send(_)));
        // A pause longer than the open period holds back the probe too.
        for _ in 0..3 {
            fail(&mut b);
        }
        b.pause(Instant::now(), 4 * SEC);
        assert_eq!(b.admit(Instant::now()), Admission::Wait(4 * SEC));
        advance(3 * SEC).await;
        assert_eq!(b.admit(Instant::now()), Admission::Wait(SEC));
        advance(SEC).await;
        assert!(matches!(b.admit(Instant::now()), Admission::Probe(_)));
    }

    #[test]
    fn state_names_and_gauge() {
        assert_eq!(CircuitState::Closed.as_str(), "closed");
        assert_eq!(CircuitState::Open.as_str(), "open");
        assert_eq!(CircuitState::HalfOpen.as_str(), "half_open");
        assert_eq!(CircuitState::Closed.gauge_value(), 0);
        assert_eq!(CircuitState::HalfOpen.gauge_value(), 1);
        assert_eq!(CircuitState::Open.gauge_value(), 2);
    }
}
