//! Exponential reconnect backoff, kept per peer address by the [`Pool`](super::Pool).
//!
//! Invariants: delays start at `initial`, double after every failure, never exceed `max`, and
//! return to `initial` after a success. Pure arithmetic: the caller owns the clock.

use std::time::Duration;

/// The delay schedule for one address.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A schedule starting at `initial` and capped at `max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait after one more failure; advances the schedule.
    pub(crate) fn fail(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// The longest delay.
    pub(crate) fn max(&self) -> Duration {
        self.max
    }

    /// Forgets past failures.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    /// 100 ms doubling to 10 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..9).map(|_| b.fail().as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        b.reset();
        assert_eq!(b.fail(), Duration::from_millis(100));
    }

    proptest::proptest! {
        #[test]
        fn never_exceeds_max(initial in 1u64..5_000, max in 1u64..60_000, n in 0usize..80) {
            let max = Duration::from_millis(max.max(initial));
            let mut b = Backoff::new(Duration::from_millis(initial), max);
            for _ in 0..n {
                proptest::prop_assert!(b.fail() <= max);
            }
        }
    }
}
