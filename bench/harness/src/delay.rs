//! The sink's injected latency, kept to within a fraction of a millisecond.
//!
//! tokio's timer counts whole milliseconds and rounds a deadline up, then fires when the runtime
//! next turns its driver: measured through the orderly scenario on one queue, `sleep(1 ms)`
//! answered after 2.2 ms and `sleep(10 ms)` after 11.4 ms, so the "1 ms sink" was a 2.2 ms one.
//! Here one thread holds the deadlines in a heap and waits on its channel with the nearest one
//! as the timeout (a futex wait with a nanosecond deadline), then completes every due delay.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Requests the sink may hold at once before a delay falls back to tokio's timer: far more than
/// any scenario keeps in flight.
const QUEUE: usize = 65_536;

/// A delay waiting on the timer thread.
struct Due {
    at: Instant,
    /// Breaks ties, so equal deadlines need no ordering of their senders.
    seq: u64,
    done: oneshot::Sender<()>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The handle the sink's handlers wait through. The thread stops when the last handle is gone
/// (in the harness, with the process: the sink's server keeps one).
#[derive(Debug, Clone)]
pub struct Delays {
    tx: mpsc::SyncSender<(Instant, oneshot::Sender<()>)>,
}

impl Delays {
    /// Starts the timer thread.
    pub fn start() -> Self {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sink-delays".to_owned())
            .spawn(move || run(&rx))
            .expect("spawn the sink's timer thread");
        Self { tx }
    }

    /// Returns at `at`, give or take the kernel's timer slack (50 us by default).
    pub async fn until(&self, at: Instant) {
        let (done, wait) = oneshot::channel();
        match self.tx.try_send((at, done)) {
            Ok(()) => {
                let _ = wait.await;
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                tokio::time::sleep_until(at).await;
            }
        }
    }
}

fn run(rx: &mpsc::Receiver<(Instant, oneshot::Sender<()>)>) {
    let mut heap: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(due)) = heap.pop() else {
                break;
            };
            // The request may have been dropped meanwhile (its connection closed).
            let _ = due.done.send(());
        }
        let next = match heap.peek() {
            Some(Reverse(d)) => rx.recv_timeout(d.at.saturating_duration_since(now)),
            None => rx.recv_timeout(Duration::from_secs(3600)),
        };
        match next {
            // With everything queued behind it, so a delay due earlier that arrived later is
            // not passed over when the due ones are completed.
            Ok(first) => {
                for (at, done) in std::iter::once(first).chain(rx.try_iter()) {
                    seq += 1;
                    heap.push(Reverse(Due { at, seq, done }));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delays_end_in_deadline_order_and_not_before_it() {
        let delays = Delays::start();
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        for ms in [60u64, 20, 40] {
            let (delays, tx) = (delays.clone(), tx.clone());
            tokio::spawn(async move {
                let at = start + Duration::from_millis(ms);
                delays.until(at).await;
                tx.send((ms, Instant::now() >= at)).await.unwrap();
            });
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some((ms, on_time)) = rx.recv().await {
            assert!(on_time, "the {ms} ms delay ended early");
            order.push(ms);
        }
        assert_eq!(order, [20, 40, 60]);
    }
}
