//! The minimal HTTP sink every scenario delivers to: it parses the JSON envelope (the daemon's
//! `json` format, which the peer imitates), records one receipt per message and answers 200.
//!
//! Receipt time is taken when the request body has arrived, before any injected latency, so
//! latency figures measure delivery and not the sink's own sleep. Only messages of requests
//! answered 2xx count as received: a 500 or an outage answer is a failed delivery.
//! Invariants: the recorder is reset between runs; unique messages are keyed by msgId.
//!
//! Ordering is checked twice: a message whose queue offset is below one already received on
//! its queue, and a request that arrives while another for the same queue is still open (an
//! orderly consumer keeps at most one request per queue in flight). The second sees what the
//! first cannot: two overlapping requests sent in offset order arrive, and are answered, in
//! offset order.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use crate::delay::Delays;
use crate::now_us;

/// One received message.
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    /// Unix microseconds when the request arrived.
    pub recv_us: i64,
    /// Producer wall clock, unix milliseconds.
    pub born_ms: i64,
    /// Broker wall clock, unix milliseconds.
    pub store_ms: i64,
    /// How often it was redelivered by the broker.
    pub reconsume: i32,
    /// Warm-up messages are excluded from figures.
    pub warmup: bool,
    /// Its msgId as the sink keys it ([`id_key`]).
    pub id: u64,
}

/// What the sink saw of one topic.
#[derive(Debug)]
pub struct TopicState {
    /// The topic's name.
    pub name: String,
    /// First receipt (unix microseconds), warm-ups excluded.
    pub first_us: Option<i64>,
    /// The highest queue offset received, per queue id.
    last_offset: HashMap<i32, i64>,
    /// Requests open (arrived, not yet answered), per queue id.
    open: HashMap<i32, u32>,
}

/// What the sink saw since the last reset.
///
/// The per-message bookkeeping stays cheap because the sink shares the cores with the consumer
/// it measures: topics are found by name in a short list (a run has at most 16) starting with
/// the previous message's, where a map keyed by `(String, i32)` allocated a key per message;
/// msgIds are hashed once.
#[derive(Debug, Default)]
pub struct Recorder {
    /// First receipt of every unique message (by msgId).
    pub receipts: Vec<Receipt>,
    seen: HashSet<u64, BuildHasherDefault<Prehashed>>,
    /// Every topic received, in order of its first request.
    pub topics: Vec<TopicState>,
    /// Requests answered 2xx.
    pub requests: u64,
    /// Requests answered 500 (injected failure) or 503 (outage).
    pub failed_requests: u64,
    /// Messages received again after a 2xx (at-least-once duplicates).
    pub duplicates: u64,
    /// Messages whose queue offset was below one already received on the same queue
    /// (only meaningful for orderly subscriptions).
    pub order_violations: u64,
    /// Requests that arrived while another request for one of their queues was open (only
    /// meaningful for orderly subscriptions: concurrent ones overlap by design).
    pub overlaps: u64,
    /// Body bytes of 2xx requests.
    pub bytes: u64,
    /// Requests whose body was not a parsable envelope.
    pub bad_requests: u64,
}

impl Recorder {
    /// Unique non-warm-up messages received.
    pub fn count(&self) -> usize {
        self.receipts.iter().filter(|r| !r.warmup).count()
    }

    /// Whether the message with this msgId key ([`id_key`]) arrived in a request answered 2xx.
    pub fn received(&self, id: u64) -> bool {
        self.seen.contains(&id)
    }

    /// Notes a request for `queues` (topic, queue id; each once) as open, counting an overlap
    /// for every queue that already has one open.
    fn open(&mut self, queues: &[(String, i32)]) {
        let mut hint = 0;
        for (topic, queue) in queues {
            hint = self.topic_index(topic, hint);
            let open = self.topics[hint].open.entry(*queue).or_insert(0);
            self.overlaps += u64::from(*open > 0);
            *open += 1;
        }
    }

    /// Notes the request for `queues` answered. A request of a recorder since reset finds
    /// nothing to close.
    fn close(&mut self, queues: &[(String, i32)]) {
        for (topic, queue) in queues {
            let Some(t) = self.topics.iter_mut().find(|t| &t.name == topic) else {
                continue;
            };
            if let Some(open) = t.open.get_mut(queue) {
                *open = open.saturating_sub(1);
            }
        }
    }

    /// The index of `name` in `topics`, trying `hint` first; added if new.
    fn topic_index(&mut self, name: &str, hint: usize) -> usize {
        if self.topics.get(hint).is_some_and(|t| t.name == name) {
            return hint;
        }
        if let Some(i) = self.topics.iter().position(|t| t.name == name) {
            return i;
        }
        self.topics.push(TopicState {
            name: name.to_owned(),
            first_us: None,
            last_offset: HashMap::new(),
            open: HashMap::new(),
        });
        self.topics.len() - 1
    }
}

/// The hasher of a set of hashes: a `u64` passes through.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Fault injection, changeable while the sink runs.
#[derive(Debug, Default)]
pub struct Faults {
    /// Added latency per request, microseconds.
    pub latency_us: AtomicU64,
    /// Requests failing with 500, per million.
    pub fail_ppm: AtomicU64,
    /// Until this unix-millisecond time every request gets 503.
    pub outage_until_ms: AtomicU64,
    /// From this unix-millisecond time (the outage window's start).
    pub outage_from_ms: AtomicU64,
}

/// The running sink: its address, recorder and fault switches.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The shared recorder.
    pub recorder: Arc<Mutex<Recorder>>,
    /// The shared fault switches.
    pub faults: Arc<Faults>,
    /// Unique messages received, readable without the lock.
    pub unique: Arc<AtomicU64>,
    /// Waits out the injected latency more precisely than tokio's timer.
    delays: Delays,
}

impl Sink {
    /// Clears everything recorded and every fault.
    pub fn reset(&self) {
        *self.recorder.lock().expect("sink lock") = Recorder::default();
        self.unique.store(0, Ordering::SeqCst);
        self.faults.latency_us.store(0, Ordering::SeqCst);
        self.faults.fail_ppm.store(0, Ordering::SeqCst);
        self.faults.outage_from_ms.store(0, Ordering::SeqCst);
        self.faults.outage_until_ms.store(0, Ordering::SeqCst);
    }

    /// Takes the recorder's content, leaving it empty.
    pub fn take(&self) -> Recorder {
        std::mem::take(&mut *self.recorder.lock().expect("sink lock"))
    }

    /// The URL to deliver to.
    pub fn url(&self) -> String {
        format!("http://{}/sink", self.addr)
    }
}

#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    messages: Vec<Msg<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Msg<'a> {
    msg_id: &'a str,
    topic: &'a str,
    queue_id: i32,
    queue_offset: i64,
    #[serde(default)]
    tags: Option<&'a str>,
    #[serde(default)]
    reconsume_times: i32,
    born_timestamp: i64,
    store_timestamp: i64,
}

#[derive(Debug, Clone)]
struct AppState {
    sink: Sink,
}

/// Starts the sink on `listen` on the current runtime.
pub async fn start(listen: SocketAddr) -> std::io::Result<Sink> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let sink = Sink {
        addr,
        recorder: Arc::default(),
        faults: Arc::default(),
        unique: Arc::default(),
        delays: Delays::start(),
    };
    let app = Router::new()
        .route("/sink", post(receive))
        .with_state(AppState { sink: sink.clone() });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("bench sink stopped: {e}");
        }
    });
    Ok(sink)
}

/// The key the sink records a msgId under (its hash: the recorder keeps no strings).
pub fn id_key(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// A request's queues while it is open. Closed in the critical section that answers it, or
/// on drop when the handler goes away first (the client closed the connection).
struct OpenRequest {
    recorder: Arc<Mutex<Recorder>>,
    queues: Vec<(String, i32)>,
}

impl OpenRequest {
    /// Opens a request for the distinct queues of `env`.
    fn start(recorder: &Arc<Mutex<Recorder>>, env: &Envelope<'_>) -> Self {
        let mut queues: Vec<(String, i32)> = Vec::new();
        for m in &env.messages {
            if !queues.iter().any(|(t, q)| t == m.topic && *q == m.queue_id) {
                queues.push((m.topic.to_owned(), m.queue_id));
            }
        }
        recorder.lock().expect("sink lock").open(&queues);
        Self {
            recorder: Arc::clone(recorder),
            queues,
        }
    }

    fn close(mut self, rec: &mut Recorder) {
        rec.close(&std::mem::take(&mut self.queues));
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        if !self.queues.is_empty() {
            if let Ok(mut rec) = self.recorder.lock() {
                rec.close(&self.queues);
            }
        }
    }
}

async fn receive(State(state): State<AppState>, body: Bytes) -> StatusCode {
    let arrived = tokio::time::Instant::now();
    let recv_us = now_us();
    let faults = &state.sink.faults;
    let now_ms = (recv_us / 1000) as u64;
    let latency = faults.latency_us.load(Ordering::Relaxed);
    let outage = now_ms >= faults.outage_from_ms.load(Ordering::Relaxed)
        && now_ms < faults.outage_until_ms.load(Ordering::Relaxed);
    let fail_ppm = faults.fail_ppm.load(Ordering::Relaxed);
    // Parsed on arrival, so the request's queues count as open while it waits.
    let parsed: Result<Envelope<'_>, _> = serde_json::from_slice(&body);
    let open = parsed
        .as_ref()
        .ok()
        .map(|env| OpenRequest::start(&state.sink.recorder, env));
    let status = if outage {
        StatusCode::SERVICE_UNAVAILABLE
    } else if fail_ppm > 0 && rand::random_range(0..1_000_000) < fail_ppm {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    if latency > 0 {
        state
            .sink
            .delays
            .until(arrived + Duration::from_micros(latency))
            .await;
    }
    let mut rec = state.sink.recorder.lock().expect("sink lock");
    if let Some(open) = open {
        open.close(&mut rec);
    }
    if status != StatusCode::OK {
        rec.failed_requests += 1;
        return status;
    }
    let Ok(env) = parsed else {
        rec.bad_requests += 1;
        return StatusCode::BAD_REQUEST;
    };
    rec.requests += 1;
    rec.bytes += body.len() as u64;
    let mut topic_at = 0;
    for m in env.messages {
        let id = id_key(m.msg_id);
        if !rec.seen.insert(id) {
            rec.duplicates += 1;
            continue;
        }
        topic_at = rec.topic_index(m.topic, topic_at);
        let topic = &mut rec.topics[topic_at];
        let warmup = m.tags == Some("warmup");
        if !warmup && topic.first_us.is_none() {
            topic.first_us = Some(recv_us);
        }
        // Redeliveries are checked too: an orderly consumer retries in place, on the message's
        // own queue and offset, so a retried message must keep order like a first delivery.
        // (A message sent back through %RETRY% carries the retry queue's id and offset, which
        // makes this figure meaningless for concurrent subscriptions; it is read for orderly
        // ones only.)
        let violation = match topic.last_offset.entry(m.queue_id) {
            Entry::Occupied(e) if m.queue_offset < *e.get() => true,
            Entry::Occupied(mut e) => {
                *e.get_mut() = m.queue_offset;
                false
            }
            Entry::Vacant(e) => {
                e.insert(m.queue_offset);
                false
            }
        };
        rec.order_violations += u64::from(violation);
        rec.receipts.push(Receipt {
            recv_us,
            born_ms: m.born_timestamp,
            store_ms: m.store_timestamp,
            reconsume: m.reconsume_times,
            warmup,
            id,
        });
        if !warmup {
            state.sink.unique.fetch_add(1, Ordering::Relaxed);
        }
    }
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(list: &[(&str, i32)]) -> Vec<(String, i32)> {
        list.iter().map(|(t, q)| ((*t).to_owned(), *q)).collect()
    }

    #[test]
    fn a_request_opened_on_an_open_queue_is_an_overlap() {
        let mut rec = Recorder::default();
        let a0 = queues(&[("a", 0)]);
        rec.open(&a0);
        rec.open(&queues(&[("a", 1), ("b", 0)]));
        assert_eq!(rec.overlaps, 0, "other queues, other topics");
        rec.open(&a0);
        assert_eq!(rec.overlaps, 1);
        rec.close(&a0);
        rec.close(&a0);
        rec.open(&a0);
        assert_eq!(rec.overlaps, 1, "one after the other is no overlap");
    }

    #[test]
    fn closing_on_a_reset_recorder_finds_nothing() {
        let mut rec = Recorder::default();
        rec.close(&queues(&[("gone", 3)]));
        rec.open(&queues(&[("gone", 3)]));
        assert_eq!(rec.overlaps, 0);
    }

    /// A JSON envelope of messages (msgId, queue id, queue offset) on topic `t`.
    fn envelope(msgs: &[(&str, i32, i64)]) -> String {
        let messages: Vec<serde_json::Value> = msgs
            .iter()
            .map(|(id, queue, offset)| {
                serde_json::json!({
                    "msgId": id, "topic": "t", "queueId": queue, "queueOffset": offset,
                    "bornTimestamp": 1, "storeTimestamp": 1,
                })
            })
            .collect();
        serde_json::json!({ "messages": messages }).to_string()
    }

    async fn post(sink: &Sink, body: String) -> u16 {
        reqwest::Client::new()
            .post(sink.url())
            .body(body)
            .send()
            .await
            .expect("the sink answers")
            .status()
            .as_u16()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_requests_in_offset_order_are_counted() {
        let sink = start("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("sink");
        sink.faults.latency_us.store(200_000, Ordering::SeqCst);
        // Sent in offset order while the first is held: the offsets alone look clean.
        let first = tokio::spawn({
            let sink = sink.clone();
            async move { post(&sink, envelope(&[("m1", 0, 1)])).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = post(&sink, envelope(&[("m2", 0, 2), ("m3", 1, 7)])).await;
        assert_eq!((first.await.expect("first"), second), (200, 200));
        // One after the other, and on another queue: no overlap.
        assert_eq!(post(&sink, envelope(&[("m4", 0, 3)])).await, 200);
        let rec = sink.take();
        assert_eq!(rec.overlaps, 1);
        assert_eq!(rec.order_violations, 0);
        assert_eq!(rec.count(), 4);
    }

    #[tokio::test]
    async fn offsets_going_back_are_violations_redeliveries_included() {
        let sink = start("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("sink");
        assert_eq!(post(&sink, envelope(&[("m1", 0, 5)])).await, 200);
        let mut back = envelope(&[("m0", 0, 4)]);
        back = back.replace("\"queueOffset\"", "\"reconsumeTimes\":1,\"queueOffset\"");
        assert_eq!(post(&sink, back).await, 200);
        let rec = sink.take();
        assert_eq!(rec.order_violations, 1);
        assert_eq!(rec.overlaps, 0);
        assert!(rec.received(id_key("m0")) && rec.received(id_key("m1")));
        assert!(!rec.received(id_key("m2")));
    }
}
