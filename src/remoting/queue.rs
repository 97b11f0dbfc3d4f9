//! `MessageQueue`: the (topic, broker, queue id) triple every consumer call is about.

use serde::{Deserialize, Serialize};

/// One queue of a topic on one broker.
///
/// Ordering is (topic, broker name, queue id), the order the Java client sorts queues in before
/// allocating them (rocketmq-remoting.md section 7.4), so every consumer of a group computes the
/// same allocation. Serialises as the Java JSON object `{"brokerName", "queueId", "topic"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageQueue {
    /// Topic name (may be `%RETRY%<group>`).
    pub topic: String,
    /// Broker name from the route (not an address).
    #[serde(rename = "brokerName")]
    pub broker_name: String,
    /// Queue number within the broker.
    #[serde(rename = "queueId")]
    pub queue_id: i32,
}

impl MessageQueue {
    /// A queue of `topic` on `broker_name`.
    pub fn new(topic: impl Into<String>, broker_name: impl Into<String>, queue_id: i32) -> Self {
        Self {
            topic: topic.into(),
            broker_name: broker_name.into(),
            queue_id,
        }
    }
}

impl std::fmt::Display for MessageQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}#{}", self.topic, self.broker_name, self.queue_id)
    }
}
