//! A small producer for tests, the demo and benchmark preloading (not a full Java producer: no
//! transactions, no delayed-message API, no fault-latency broker avoidance).
//!
//! Invariants:
//! - every message leaves with a `UNIQ_KEY` (the id the consumer sees) and `WAIT=true`, so a
//!   successful send means the broker stored it;
//! - single bodies of at least [`ProducerConfig::compress_over`] bytes are zlib-compressed and
//!   flagged like the Java producer does; batches never are (section 4.10);
//! - queue choice is over the sorted publish queue list of the route
//!   ([`TopicRouteData::publish_queues`]), so [`QueueSelector::Hash`] maps a key to the same queue
//!   as long as the topic's queues do not change (and to the queue Java's
//!   `SelectMessageQueueByHash` picks for the same key and route);
//! - routes are fetched on first use and refreshed after [`ProducerConfig::route_ttl`] or a
//!   failed send; a refresh that fails keeps the known route (as Java keeps its publish info)
//!   and is not tried again for [`ROUTE_RETRY_AFTER_FAILURE`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::time::Instant;

use crate::remoting::body::route::TopicRouteData;
use crate::remoting::filter::java_hash;
use crate::remoting::message::compression::{self, Compression};
use crate::remoting::message::id::millis_since_month_start;
use crate::remoting::message::ByteString;
use crate::remoting::message::{encode_batch, properties, Message, UniqKeyGenerator};
use crate::remoting::rpc::{
    Rpc, SendBatchMessage, SendMessage, SendMessageHeader, SendResult as WireSendResult,
    SendStatus, UpdateAndCreateTopic, DEFAULT_TOPIC,
};
use crate::remoting::{MessageQueue, RemotingError};

use super::{Client, ClientError};

/// Largest body the broker accepts by default (`maxMessageSize`, 4 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// Java's `compressMsgBodyOverHowmuch`.
pub const DEFAULT_COMPRESS_OVER: usize = 4096;
/// Permission bits of a read-write topic.
const PERM_READ_WRITE: i32 = 6;

/// How a producer behaves.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Producer group announced in send headers.
    pub group: String,
    /// Time a broker has to answer one send.
    pub send_timeout: Duration,
    /// Extra attempts after a retriable failure (on a fresh route; Java default 2).
    pub retries: u32,
    /// Single bodies of at least this many bytes are zlib-compressed.
    pub compress_over: usize,
    /// Bodies (or batch bodies) larger than this are refused before sending.
    pub max_message_size: usize,
    /// How long a fetched route is used before it is fetched again.
    pub route_ttl: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            group: "rocketmq-webhook-producer".to_owned(),
            send_timeout: Duration::from_secs(3),
            retries: 2,
            compress_over: DEFAULT_COMPRESS_OVER,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            route_ttl: Duration::from_secs(30),
        }
    }
}

/// Which queue of the topic a send goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSelector {
    /// The next queue in turn (one counter per producer, shared by all topics).
    RoundRobin,
    /// A uniformly random queue.
    Random,
    /// The queue `|javaHash(key)| mod queues`: every message with one key lands on one queue,
    /// which keeps them in order for an orderly consumer.
    Hash(String),
}

impl QueueSelector {
    /// The index into a list of `len > 0` queues; `turn` is the round-robin counter value.
    fn index(&self, len: usize, turn: usize) -> usize {
        match self {
            Self::RoundRobin => turn % len,
            Self::Random => rand::rng().random_range(0..len),
            // Java's `String.hashCode`, as `SelectMessageQueueByHash` uses; `unsigned_abs`
            // avoids Java's `Math.abs(Integer.MIN_VALUE) < 0` trap.
            Self::Hash(key) => java_hash(key).unsigned_abs() as usize % len,
        }
    }
}

/// The outcome of a stored single message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// How it was stored (anything but [`SendStatus::Ok`] means durability is incomplete).
    pub status: SendStatus,
    /// The message id consumers see (`UNIQ_KEY`).
    pub msg_id: String,
    /// The broker's offset message id (store host + commit-log offset).
    pub offset_msg_id: String,
    /// The queue it was stored in.
    pub queue: MessageQueue,
    /// Its logical offset in that queue.
    pub queue_offset: i64,
}

/// The outcome of a stored batch: every message went to `queue`, at consecutive offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSendResult {
    /// How it was stored.
    pub status: SendStatus,
    /// The message ids (`UNIQ_KEY`s), in batch order.
    pub msg_ids: Vec<String>,
    /// The offset message ids, in batch order.
    pub offset_msg_ids: Vec<String>,
    /// The queue the batch was stored in.
    pub queue: MessageQueue,
    /// Logical offset of the first message.
    pub queue_offset: i64,
}

/// Why a send or topic creation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// Talking to a name server or broker failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The route of `topic` has no writable queue on a broker with a master.
    #[error("topic `{topic}` has no writable queue")]
    NoWritableQueue {
        /// The topic.
        topic: String,
    },
    /// The message (or batch) cannot be sent as it is.
    #[error("cannot send to topic `{topic}`: {reason}")]
    InvalidMessage {
        /// The destination topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// Compressing or encoding the request failed.
    #[error("cannot encode a message for topic `{topic}`: {source}")]
    Encode {
        /// The destination topic.
        topic: String,
        /// The codec's error.
        source: RemotingError,
    },
    /// No broker is known to create `topic` on (the route of `TBW102` is empty or missing).
    #[error("no broker found to create topic `{topic}` on (the name servers know no route for {DEFAULT_TOPIC})")]
    NoBroker {
        /// The topic to create.
        topic: String,
    },
    /// The topic was created but its route did not show every broker in time.
    #[error("topic `{topic}` was created but its route did not appear on the name servers within {after:?}")]
    RouteTimeout {
        /// The topic.
        topic: String,
        /// How long we waited.
        after: Duration,
    },
}

impl ProducerError {
    /// The `error_type` label of the consumer's error counter (see [`ClientError::error_type`]).
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Client(e) => e.error_type(),
            Self::RouteTimeout { .. } => "timeout",
            Self::NoWritableQueue { .. } | Self::NoBroker { .. } => "broker",
            Self::InvalidMessage { .. } | Self::Encode { .. } => "other",
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Client(e) => e.is_retriable(),
            Self::NoWritableQueue { .. } | Self::NoBroker { .. } | Self::RouteTimeout { .. } => {
                true
            }
            Self::InvalidMessage { .. } | Self::Encode { .. } => false,
        }
    }
}

/// Sends messages through a [`Client`]'s pool and name servers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    config: ProducerConfig,
    uniq: Mutex<UniqKeyGenerator>,
    turn: AtomicUsize,
    /// When each topic's route was last fetched; the routes live in the client's table.
    fetched: Mutex<HashMap<String, Instant>>,
    /// When a topic's last refresh failed, while the known route is used instead.
    refresh_failed: Mutex<HashMap<String, Instant>>,
}

impl Producer {
    /// A producer using `client`'s connections and name servers.
    pub fn new(client: Client, config: ProducerConfig) -> Self {
        let ip = client
            .client_id()
            .split_once('@')
            .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut rng = rand::rng();
        let uniq = UniqKeyGenerator::new(ip, std::process::id(), rng.random());
        Self {
            inner: Arc::new(Inner {
                client,
                config,
                uniq: Mutex::new(uniq),
                turn: AtomicUsize::new(rng.random_range(0..1024)),
                fetched: Mutex::new(HashMap::new()),
                refresh_failed: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The client this producer sends through.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The configuration.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Sends one message to the queue `selector` picks and waits until the broker stored it.
    /// Sets `UNIQ_KEY` (unless present) and `WAIT=true`; compresses large bodies.
    ///
    /// # Errors
    /// [`ProducerError::InvalidMessage`] for an empty or oversized body, route and broker
    /// failures otherwise (after [`ProducerConfig::retries`] further attempts for retriable
    /// ones).
    pub async fn send(
        &self,
        message: Message,
        selector: &QueueSelector,
    ) -> Result<SendResult, ProducerError> {
        let message = self.prepare(message)?;
        let topic = message.topic.clone();
        let mut header =
            SendMessageHeader::for_message(&self.inner.config.group, &message, 0, now_ms());
        let mut body = message.body.clone();
        if body.len() >= self.inner.config.compress_over {
            let compressed = compression::compress(Compression::Zlib, &body).map_err(|source| {
                ProducerError::Encode {
                    topic: topic.clone(),
                    source,
                }
            })?;
            body = compressed.into();
            header.sys_flag |= Compression::Zlib.sys_flag_bits();
        }
        let msg_id = message.uniq_key().unwrap_or_default().to_owned();
        let (queue, wire) = self
            .call_with_retries(&topic, selector, |queue_id| {
                header.queue_id = queue_id;
                Ok(SendMessage {
                    header: header.clone(),
                    body: body.clone(),
                })
            })
            .await?;
        Ok(SendResult {
            status: wire.status,
            msg_id,
            offset_msg_id: wire.msg_id,
            queue,
            queue_offset: wire.queue_offset,
        })
    }

    /// Sends `messages` (one topic, at least one) as one SEND_BATCH_MESSAGE to the queue
    /// `selector` picks. Every message gets its own `UNIQ_KEY`; batches are never compressed.
    ///
    /// # Errors
    /// [`ProducerError::InvalidMessage`] for an empty batch, mixed topics, delayed or retry-topic
    /// messages, or a batch over the size limit; route and broker failures otherwise.
    pub async fn send_batch(
        &self,
        messages: Vec<Message>,
        selector: &QueueSelector,
    ) -> Result<BatchSendResult, ProducerError> {
        let Some(first) = messages.first() else {
            return Err(ProducerError::InvalidMessage {
                topic: String::new(),
                reason: "empty batch".to_owned(),
            });
        };
        let topic = first.topic.clone();
        let invalid = |reason: String| ProducerError::InvalidMessage {
            topic: topic.clone(),
            reason,
        };
        if topic.starts_with("%RETRY%") {
            return Err(invalid("batches cannot target a retry topic".to_owned()));
        }
        let mut prepared = Vec::with_capacity(messages.len());
        for message in messages {
            if message.topic != topic {
                return Err(invalid(format!(
                    "mixed topics in one batch (`{}`)",
                    message.topic
                )));
            }
            if message.properties.contains_key(properties::DELAY) {
                return Err(invalid("batched messages cannot be delayed".to_owned()));
            }
            prepared.push(self.prepare(message)?);
        }
        // Encoded once for every attempt. The broker holds the encoded batch, each message's
        // framing and properties included, to its size limit (Java `Validators.checkMessage`
        // on the `MessageBatch`), so that is what is checked here.
        let body = encode_batch(&prepared).map_err(|source| ProducerError::Encode {
            topic: topic.clone(),
            source,
        })?;
        if body.len() > self.inner.config.max_message_size {
            return Err(invalid(format!(
                "the batch encodes to {} bytes (bodies with their framing and properties), over \
                 the limit of {} bytes",
                body.len(),
                self.inner.config.max_message_size
            )));
        }
        let msg_ids: Vec<String> = prepared
            .iter()
            .map(|m| m.uniq_key().unwrap_or_default().to_owned())
            .collect();
        // The batch's own properties are just WAIT, as in Java's MessageBatch.
        let envelope = Message::new(topic.clone(), bytes::Bytes::new()).with_wait(true);
        let mut header =
            SendMessageHeader::for_message(&self.inner.config.group, &envelope, 0, now_ms());
        header.batch = true;
        let (queue, wire) = self
            .call_with_retries(&topic, selector, |queue_id| {
                header.queue_id = queue_id;
                Ok(SendBatchMessage {
                    header: header.clone(),
                    body: body.clone(),
                })
            })
            .await?;
        Ok(BatchSendResult {
            status: wire.status,
            msg_ids,
            offset_msg_ids: wire.msg_id.split(',').map(str::to_owned).collect(),
            queue,
            queue_offset: wire.queue_offset,
        })
    }

    /// Sends the request `build` makes for the queue `selector` picks; a retriable failure is
    /// retried (up to [`ProducerConfig::retries`] times) on a freshly fetched route. Returns the
    /// queue the message went to (with the queue id the broker confirmed) and the answer.
    async fn call_with_retries<R: Rpc<Response = WireSendResult>>(
        &self,
        topic: &str,
        selector: &QueueSelector,
        mut build: impl FnMut(i32) -> Result<R, ProducerError>,
    ) -> Result<(MessageQueue, WireSendResult), ProducerError> {
        let mut attempt = 0;
        let mut failed_broker: Option<String> = None;
        loop {
            let (queue, addr) = self
                .pick_queue(topic, selector, failed_broker.as_deref())
                .await?;
            let rpc = build(queue.queue_id)?;
            match self
                .inner
                .client
                .pool()
                .call(&addr, &rpc, self.inner.config.send_timeout)
                .await
            {
                Ok(wire) => {
                    let confirmed = MessageQueue::new(topic, &queue.broker_name, wire.queue_id);
                    return Ok((confirmed, wire));
                }
                Err(e) if e.is_retriable() && attempt < self.inner.config.retries => {
                    tracing::debug!(%topic, %addr, error = %e, "Send failed; retrying on a fresh route.");
                    attempt += 1;
                    failed_broker = Some(queue.broker_name.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates (or updates) `topic` with `queues` read and write queues on every master and
    /// waits until the name servers show it; see [`create_topic`].
    ///
    /// # Errors
    /// As [`create_topic`].
    pub async fn create_topic(
        &self,
        topic: &str,
        queues: u16,
        order: bool,
    ) -> Result<TopicRouteData, ProducerError> {
        let route =
            create_topic(&self.inner.client, topic, queues, order, TOPIC_ROUTE_WAIT).await?;
        self.inner.client.routes().update(topic, route.clone());
        lock(&self.inner.fetched).insert(topic.to_owned(), Instant::now());
        Ok(route)
    }

    /// Validates `message` and adds `UNIQ_KEY` (unless set) and `WAIT=true`.
    fn prepare(&self, mut message: Message) -> Result<Message, ProducerError> {
        let invalid = |reason: String| ProducerError::InvalidMessage {
            topic: message.topic.clone(),
            reason,
        };
        if message.topic.is_empty() {
            return Err(invalid("the topic is empty".to_owned()));
        }
        if message.body.is_empty() {
            return Err(invalid("the body is empty".to_owned()));
        }
        if message.body.len() > self.inner.config.max_message_size {
            return Err(invalid(format!(
                "body of {} bytes is over the limit of {} bytes",
                message.body.len(),
                self.inner.config.max_message_size
            )));
        }
        if properties::contains_separator(&message.properties) {
            return Err(invalid(
                "a property contains a separator character (\\u0001 or \\u0002)".to_owned(),
            ));
        }
        if !message.properties.contains_key(properties::UNIQ_KEY) {
            let id = lock(&self.inner.uniq).next(millis_since_month_start(now_ms()));
            message
                .properties
                .insert(ByteString::from_static(properties::UNIQ_KEY), id.into());
        }
        message.properties.insert(
            ByteString::from_static(properties::WAIT),
            ByteString::from_static("true"),
        );
        Ok(message)
    }

    /// The queue for the next send of `topic` and its master's address. After a failed attempt
    /// on `failed_broker` the route is fetched again (see [`Self::route`]) and,
    /// as Java's `selectOneMessageQueue(lastBrokerName)` does, that broker's queues are skipped
    /// while another broker has some, unless the selector is a key hash (which must keep its
    /// queue). Queues are listed broker by broker, so the next queue in turn would otherwise
    /// usually be on the broker that just failed.
    async fn pick_queue(
        &self,
        topic: &str,
        selector: &QueueSelector,
        failed_broker: Option<&str>,
    ) -> Result<(MessageQueue, String), ProducerError> {
        let route = self.route(topic, failed_broker.is_some()).await?;
        let queues = avoiding(route.publish_queues(topic), selector, failed_broker);
        if queues.is_empty() {
            return Err(ProducerError::NoWritableQueue {
                topic: topic.to_owned(),
            });
        }
        let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed);
        let queue = queues[selector.index(queues.len(), turn)].clone();
        let addr = route
            .master_addr(&queue.broker_name)
            .map(str::to_owned)
            .ok_or_else(|| ProducerError::NoWritableQueue {
                topic: topic.to_owned(),
            })?;
        Ok((queue, addr))
    }

    /// The route of `topic`: the known one while younger than `route_ttl` (unless `refresh`),
    /// else a fresh one; when the look-up fails, the known one anyway, and for
    /// [`ROUTE_RETRY_AFTER_FAILURE`] no look-up is tried again (`refresh` or not): a name server
    /// that accepts connections and never answers would otherwise cost a timeout per server on
    /// every send, inside a worker's batch.
    async fn route(
        &self,
        topic: &str,
        refresh: bool,
    ) -> Result<Arc<TopicRouteData>, ProducerError> {
        let fresh = lock(&self.inner.fetched)
            .get(topic)
            .is_some_and(|at| at.elapsed() < self.inner.config.route_ttl);
        let held = lock(&self.inner.refresh_failed)
            .get(topic)
            .is_some_and(|at| at.elapsed() < ROUTE_RETRY_AFTER_FAILURE);
        if (!refresh && fresh) || held {
            if let Some(route) = self.inner.client.routes().snapshot().topic(topic) {
                return Ok(Arc::clone(route));
            }
        }
        match self.inner.client.refresh_route(topic).await {
            Ok(route) => {
                lock(&self.inner.fetched).insert(topic.to_owned(), Instant::now());
                lock(&self.inner.refresh_failed).remove(topic);
                Ok(route)
            }
            // The name servers are unreachable (or none has the route now): a route already
            // known is better than none, as Java keeps its publish info. The retry fallback
            // runs exactly when things are failing, and the consumer keeps this topic's route
            // in the same table.
            Err(e) => match self.inner.client.routes().snapshot().topic(topic) {
                Some(route) => {
                    tracing::debug!(%topic, error = %e, "Route refresh failed; sending with the route known.");
                    lock(&self.inner.refresh_failed).insert(topic.to_owned(), Instant::now());
                    Ok(Arc::clone(route))
                }
                None => Err(e.into()),
            },
        }
    }
}

/// `queues` without those of `failed_broker` while another broker has some, unless `selector`
/// is a key hash (see [`Producer::pick_queue`]).
fn avoiding(
    mut queues: Vec<MessageQueue>,
    selector: &QueueSelector,
    failed_broker: Option<&str>,
) -> Vec<MessageQueue> {
    if let (Some(failed), false) = (failed_broker, matches!(selector, QueueSelector::Hash(_))) {
        if queues.iter().any(|q| q.broker_name != failed) {
            queues.retain(|q| q.broker_name != failed);
        }
    }
    queues
}

/// How long a route refresh that failed is not tried again (the known route is used).
pub const ROUTE_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// How long [`Producer::create_topic`] waits for the route to appear.
pub const TOPIC_ROUTE_WAIT: Duration = Duration::from_secs(15);

/// Creates (or updates) `topic` with `queues` read and write queues on every master broker that
/// serves the template topic `TBW102` (every broker of the cluster that auto-creates topics),
/// then polls the name servers until the route lists each of those brokers with `queues`
/// writable queues. Returns that route.
///
/// # Errors
/// [`ProducerError::NoBroker`] when no broker is known, [`ProducerError::Client`] when a
/// name server or broker fails, [`ProducerError::RouteTimeout`] when the route does not appear
/// within `wait`.
pub async fn create_topic(
    client: &Client,
    topic: &str,
    queues: u16,
    order: bool,
    wait: Duration,
) -> Result<TopicRouteData, ProducerError> {
    let template = match client.namesrv().route(DEFAULT_TOPIC).await {
        Ok(route) => route,
        Err(ClientError::NoRoute { .. }) => {
            return Err(ProducerError::NoBroker {
                topic: topic.to_owned(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let masters: Vec<(String, String)> = template
        .broker_datas
        .iter()
        .filter_map(|b| {
            b.master_addr()
                .map(|addr| (b.broker_name.clone(), addr.to_owned()))
        })
        .collect();
    if masters.is_empty() {
        return Err(ProducerError::NoBroker {
            topic: topic.to_owned(),
        });
    }
    let rpc = UpdateAndCreateTopic {
        topic: topic.to_owned(),
        read_queue_nums: i32::from(queues),
        write_queue_nums: i32::from(queues),
        perm: PERM_READ_WRITE,
        order,
    };
    for (_, addr) in &masters {
        client
            .pool()
            .call(addr, &rpc, Duration::from_secs(5))
            .await?;
    }
    let deadline = Instant::now() + wait;
    loop {
        match client.namesrv().route(topic).await {
            Ok(route) if route_shows(&route, &masters, i32::from(queues)) => return Ok(route),
            Ok(_) | Err(ClientError::NoRoute { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Err(ProducerError::RouteTimeout {
                topic: topic.to_owned(),
                after: wait,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `route` lists every broker of `masters` with `queues` write queues.
fn route_shows(route: &TopicRouteData, masters: &[(String, String)], queues: i32) -> bool {
    masters.iter().all(|(name, _)| {
        route.queue_datas.iter().any(|q| {
            &q.broker_name == name && q.write_queue_nums == queues && q.read_queue_nums == queues
        })
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Locks a mutex that guards plain data; a panic elsewhere cannot leave it inconsistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_retry_avoids_the_broker_that_failed_unless_the_key_pins_the_queue() {
        let queues: Vec<MessageQueue> = ["a", "a", "b", "b"]
            .iter()
            .enumerate()
            .map(|(i, b)| MessageQueue::new("T", *b, i32::try_from(i % 2).unwrap()))
            .collect();
        let brokers = |qs: Vec<MessageQueue>| -> Vec<String> {
            qs.into_iter().map(|q| q.broker_name).collect()
        };
        let rr = QueueSelector::RoundRobin;
        assert_eq!(brokers(avoiding(queues.clone(), &rr, None)).len(), 4);
        assert_eq!(
            brokers(avoiding(queues.clone(), &rr, Some("a"))),
            ["b", "b"]
        );
        assert_eq!(
            brokers(avoiding(queues.clone(), &QueueSelector::Random, Some("b"))),
            ["a", "a"]
        );
        // A key keeps its queue; a broker that is the only one is not avoided.
        let hash = QueueSelector::Hash("k".to_owned());
        assert_eq!(avoiding(queues.clone(), &hash, Some("a")), queues);
        let only_a: Vec<MessageQueue> = queues[..2].to_vec();
        assert_eq!(avoiding(only_a.clone(), &rr, Some("a")), only_a);
    }

    #[test]
    fn java_hash_matches_known_values() {
        // Values of "…".hashCode() in Java.
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash("order-42"), 1_234_255_197);
        // Surrogate pairs count as two UTF-16 units, as in Java.
        assert_eq!(java_hash("\u{1F600}\u{e9}"), 54_960_102);
        // Overflow wraps and the result may be negative.
        assert_eq!(
            java_hash("The quick brown fox jumps over the lazy dog"),
            -609_428_141
        );
        assert_eq!(
            QueueSelector::Hash("The quick brown fox jumps over the lazy dog".into()).index(8, 0),
            609_428_141 % 8
        );
    }

    fn producer() -> Producer {
        let client = Client::new(
            crate::client::ClientConfig {
                namesrv_addr: "127.0.0.1:9876".to_owned(),
                client_ip: Some("10.1.2.3".to_owned()),
                ..crate::client::ClientConfig::default()
            },
            Arc::new(crate::client::NotSupported),
        )
        .expect("client");
        Producer::new(client, ProducerConfig::default())
    }

    #[tokio::test]
    async fn prepare_adds_a_unique_key_and_wait() {
        let p = producer();
        let a = p.prepare(Message::new("T", "x")).expect("valid");
        let b = p.prepare(Message::new("T", "y")).expect("valid");
        let id = a.properties.get(properties::UNIQ_KEY).expect("UNIQ_KEY");
        assert_eq!(id.len(), 32);
        // The prefix is the client's IP, as in Java's MessageClientIDSetter.
        assert!(id.starts_with("0A010203"), "{id}");
        assert_ne!(Some(id), b.properties.get(properties::UNIQ_KEY));
        assert_eq!(a.properties.get(properties::WAIT), Some("true"));
        let kept = p
            .prepare(Message::new("T", "x").with_uniq_key("MINE"))
            .expect("valid");
        assert_eq!(kept.uniq_key(), Some("MINE"));
    }

    #[tokio::test]
    async fn invalid_messages_are_refused_before_any_io() {
        let p = producer();
        let invalid = |r: Result<Message, ProducerError>| {
            matches!(r, Err(ProducerError::InvalidMessage { .. }))
        };
        assert!(invalid(p.prepare(Message::new("T", ""))));
        assert!(invalid(p.prepare(Message::new("", "x"))));
        assert!(invalid(p.prepare(Message::new(
            "T",
            vec![0u8; DEFAULT_MAX_MESSAGE_SIZE + 1]
        ))));
        assert!(invalid(
            p.prepare(Message::new("T", "x").with_property("k", "a\u{2}b"))
        ));
        assert!(invalid(
            p.prepare(Message::new("T", "x").with_property("k\u{1}", "a"))
        ));
        // A value may hold the key separator: decoding splits at the first one. Such values
        // come from brokers, and a retry's republish sends them back as they came.
        assert!(p
            .prepare(Message::new("T", "x").with_property("k", "a\u{1}b"))
            .is_ok());

        let any = QueueSelector::RoundRobin;
        for batch in [
            vec![],
            vec![Message::new("T", "a"), Message::new("U", "b")],
            vec![Message::new("T", "a").with_delay_level(2)],
            vec![Message::new("%RETRY%g", "a")],
            vec![
                Message::new("T", vec![0u8; 3 << 20]),
                Message::new("T", vec![0u8; 2 << 20]),
            ],
            // Bodies of exactly the limit: their framing and properties take it over.
            vec![
                Message::new("T", vec![0u8; 2 << 20]),
                Message::new("T", vec![0u8; 2 << 20]),
            ],
        ] {
            let err = p.send_batch(batch, &any).await.expect_err("invalid batch");
            assert!(
                matches!(err, ProducerError::InvalidMessage { .. }),
                "{err:?}"
            );
            assert!(!err.is_retriable());
        }
    }

    #[test]
    fn round_robin_cycles() {
        let picks: Vec<usize> = (0..6)
            .map(|t| QueueSelector::RoundRobin.index(4, t))
            .collect();
        assert_eq!(picks, [0, 1, 2, 3, 0, 1]);
    }

    proptest! {
        #[test]
        fn hash_is_stable_and_in_range(key in ".{0,40}", len in 1usize..64, t1: usize, t2: usize) {
            let s = QueueSelector::Hash(key);
            let a = s.index(len, t1);
            prop_assert!(a < len);
            prop_assert_eq!(a, s.index(len, t2));
        }

        #[test]
        fn random_is_in_range(len in 1usize..64, t: usize) {
            prop_assert!(QueueSelector::Random.index(len, t) < len);
        }
    }
}
