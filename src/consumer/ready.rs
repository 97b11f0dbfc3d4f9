//! [`Ready`]: a concurrent queue's pulled messages waiting for a consume slot, in offset order.
//!
//! The messages stay in the vectors a pull decoded them into (one run per pull answer) and each
//! run's buffer is freed once its last message is taken. A single deque of messages would copy
//! every message in, and keep room for the most it ever held while the queue is busy: about 8
//! MB at 64 queues x 16 subscriptions in a heap profile of the scale benchmark, more than a
//! third of what the cached messages themselves took.

use std::collections::VecDeque;

/// Messages (`T`: `MessageExt`; anything in tests) in runs, taken from the front.
#[derive(Debug)]
pub(crate) struct Ready<T> {
    runs: VecDeque<std::vec::IntoIter<T>>,
    /// Messages in all runs.
    len: usize,
}

impl<T> Default for Ready<T> {
    fn default() -> Self {
        Self {
            runs: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Ready<T> {
    /// Appends the messages of one pull (or any run), keeping their vector.
    pub(crate) fn append(&mut self, run: Vec<T>) {
        if run.is_empty() {
            return;
        }
        self.len += run.len();
        self.runs.push_back(run.into_iter());
    }

    /// Appends one message (a delayed message that is due again).
    pub(crate) fn push(&mut self, message: T) {
        self.append(vec![message]);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes up to `n` messages from the front, across runs.
    pub(crate) fn take(&mut self, n: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(n.min(self.len));
        while out.len() < n {
            let Some(run) = self.runs.front_mut() else {
                break;
            };
            out.extend(run.by_ref().take(n - out.len()));
            if run.len() == 0 {
                // Frees the run's buffer.
                self.runs.pop_front();
            }
        }
        self.len -= out.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Ready;

    #[test]
    fn takes_in_order_across_runs_and_frees_emptied_runs() {
        let mut ready: Ready<i64> = Ready::default();
        assert!(ready.is_empty());
        assert!(ready.take(4).is_empty());
        ready.append(vec![0, 1, 2]);
        ready.append(Vec::new());
        ready.append(vec![3, 4]);
        ready.push(9);
        assert_eq!((ready.len, ready.runs.len()), (6, 3));
        assert_eq!(ready.take(2), [0, 1]);
        assert_eq!(ready.runs.len(), 3);
        assert_eq!(ready.take(2), [2, 3]);
        assert_eq!((ready.len, ready.runs.len()), (2, 2));
        assert_eq!(ready.take(10), [4, 9]);
        assert!(ready.is_empty());
        assert!(ready.runs.is_empty());
    }
}
