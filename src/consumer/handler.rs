//! The contract between the engine and whatever processes messages (the webhook, tests).

use std::future::Future;
use std::time::Duration;

use crate::remoting::{MessageExt, MessageQueue};

/// How the engine consumes a subscription; the handler may want to know (orderly answers are
/// retried in place, concurrent ones are sent back to the broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsumeMode {
    /// Batches of a queue may be processed in parallel and out of order.
    Concurrent,
    /// One batch per queue at a time, in queue order, under a broker lock.
    Orderly,
}

/// One batch handed to a [`Handler`]: messages of one queue, in queue-offset order, with their
/// real topic restored (a retried message shows its original topic, not `%RETRY%group`).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Consumer group.
    pub group: String,
    /// The subscribed topic (never the retry topic).
    pub topic: String,
    /// The queue the messages were pulled from (may be a `%RETRY%` queue).
    pub queue: MessageQueue,
    /// How the subscription is consumed.
    pub mode: ConsumeMode,
    /// The messages, at least one.
    pub messages: Vec<MessageExt>,
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed; its offset may be committed.
    Success,
    /// Failed; consume it again later. Concurrent: sent back to the broker with this delay level
    /// (`None` = the broker's `3 + reconsumeTimes`), which counts a reconsume attempt. Orderly: the
    /// queue is suspended and the batch retried in place.
    Retry {
        /// RocketMQ delay level 1..=18, or `None` for the broker's default.
        delay_level: Option<i32>,
    },
    /// Never consume it again: hand it to the group's DLQ (`%DLQ%group`), never lose it.
    Drop,
    /// Not processed and not the message's fault (endpoint paused, circuit open): offer it again
    /// after `after` without spending a reconsume attempt.
    Later {
        /// How long to wait before offering the message again.
        after: Duration,
    },
}

/// Processes batches. Implemented by the webhook; tests implement it with closures and channels.
///
/// The engine awaits the returned future under its consume deadline; a handler that misses the
/// deadline gets `Retry` for every message. The returned vector must have one outcome per
/// message, in order; a short vector counts the missing ones as `Retry`.
pub trait Handler: Send + Sync + 'static {
    /// Processes one batch.
    fn handle(&self, batch: &Batch) -> impl Future<Output = Vec<Outcome>> + Send;
}
