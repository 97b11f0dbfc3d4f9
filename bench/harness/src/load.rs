//! Load generation and the ceilings: batched preloading, the open-loop producer, the pull
//! ceiling (our client pulling and decoding as fast as it can, nothing delivered), its
//! open-loop counterpart the pull floor (long polls, the broker's own store-to-consumer
//! latency) and the sink's own request ceiling.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rocketmq_webhook::client::producer::{create_topic, Producer, ProducerConfig, QueueSelector};
use rocketmq_webhook::client::{Client, ClientConfig, NotSupported};
use rocketmq_webhook::remoting::message::{
    decode_messages, encode_message, Message, MessageExt, Properties,
};
use rocketmq_webhook::remoting::rpc::{PullMessage, PullStatus, PullSysFlag};
use rocketmq_webhook::webhook::encode::{Context, Encoder, MessageView};
use rocketmq_webhook::webhook::Format;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::synthetic;

/// A client for tools (no broker-initiated requests are served).
pub fn client(namesrv: &str) -> Result<Client, String> {
    Client::new(
        ClientConfig {
            namesrv_addr: namesrv.to_owned(),
            ..ClientConfig::default()
        },
        Arc::new(NotSupported),
    )
    .map_err(|e| e.to_string())
}

/// Creates `topic` with `queues` queues and waits for its route.
pub async fn topic(client: &Client, topic: &str, queues: u16, order: bool) -> Result<(), String> {
    create_topic(client, topic, queues, order, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|e| format!("create topic {topic}: {e}"))
}

/// A body of exactly `size` bytes, printable (the JSON envelope carries it as text).
pub fn body(i: u64, size: usize) -> Bytes {
    let mut text = format!("message {i} ").into_bytes();
    text.resize(size.max(text.len()), b'.');
    text.truncate(size.max(1));
    Bytes::from(text)
}

/// Stores `count` messages of `size` bytes with batched sends (round robin over the queues),
/// `tasks` senders in parallel. Returns the seconds it took.
pub async fn preload(
    producer: &Producer,
    topic: &str,
    count: u64,
    size: usize,
    tasks: u64,
    queues: u64,
) -> Result<f64, String> {
    // Batches of up to 64 (and 2 MiB), small enough that every queue gets a share: a batch
    // lands on one queue.
    let batch = (((2 * 1024 * 1024) / size.max(1)) as u64)
        .min(64)
        .min(count / queues.max(1))
        .max(1);
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let producer = producer.clone();
        let topic = topic.to_owned();
        let next = Arc::clone(&next);
        handles.push(tokio::spawn(async move {
            loop {
                let low = next.fetch_add(batch, Ordering::SeqCst);
                if low >= count {
                    return Ok::<(), String>(());
                }
                let high = (low + batch).min(count);
                let messages: Vec<Message> = (low..high)
                    .map(|i| Message::new(topic.clone(), body(i, size)).with_tags("load"))
                    .collect();
                producer
                    .send_batch(messages, &QueueSelector::RoundRobin)
                    .await
                    .map_err(|e| format!("preload {topic}: {e}"))?;
            }
        }));
    }
    for h in handles {
        h.await.map_err(|e| e.to_string())??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// A producer for the tools.
pub fn producer(client: Client) -> Producer {
    Producer::new(
        client,
        ProducerConfig {
            group: "bench-producer".to_owned(),
            ..ProducerConfig::default()
        },
    )
}

/// One message the open loop stored.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Its msgId (`UNIQ_KEY`, what consumers deliver as msgId) as the sink keys it
    /// ([`crate::sink::id_key`]).
    pub id: u64,
    /// Unix microseconds when its send started.
    pub at_us: i64,
}

/// Sends `tag`ged single messages at `rate` per second for `duration` (open loop: sends are
/// started on schedule whether or not earlier ones finished, up to 256 in flight). Returns the
/// messages stored, by msgId: a count would let a send that failed after the broker stored
/// its message stand in for one the consumer lost.
pub async fn open_loop(
    producer: &Producer,
    topic: &str,
    rate: f64,
    duration: Duration,
    size: usize,
    tag: &str,
) -> Vec<Sent> {
    let start = Instant::now();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let mut set = tokio::task::JoinSet::new();
    let mut sent = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let producer = producer.clone();
        let message = Message::new(topic.to_owned(), body(i, size)).with_tags(tag.to_owned());
        set.spawn(async move {
            let at_us = crate::now_us();
            let stored = producer.send(message, &QueueSelector::RoundRobin).await;
            drop(permit);
            stored.ok().map(|r| Sent {
                id: crate::sink::id_key(&r.msg_id),
                at_us,
            })
        });
        while let Some(done) = set.try_join_next() {
            sent.extend(done.ok().flatten());
        }
    }
    while let Some(done) = set.join_next().await {
        sent.extend(done.ok().flatten());
    }
    sent
}

/// [`pull_ceiling`] on a thread of its own with a one-thread runtime and a client of its own,
/// as the daemon runs by default. On the harness's two-worker runtime the pull loop paid for
/// hand-offs between the workers, CPU the broker could have used: a ceiling measured that way
/// reads low.
pub async fn pull_ceiling_alone<M: Send + 'static>(
    namesrv: &str,
    topics: &[String],
    batch: i32,
    expected: u64,
    mark: impl Fn() -> M + Send + 'static,
) -> Result<PullCeiling<M>, String> {
    let (namesrv, topics) = (namesrv.to_owned(), topics.to_vec());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pull-ceiling".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(async {
                        pull_ceiling(&client(&namesrv)?, &topics, batch, expected, mark).await
                    })
                });
            let _ = tx.send(result);
        })
        .map_err(|e| format!("pull ceiling thread: {e}"))?;
    rx.await
        .map_err(|_| "the pull ceiling's thread ended without an answer".to_owned())?
}

/// What one pull ceiling read, and the marks taken just around its pull loop.
#[derive(Debug)]
pub struct PullCeiling<M> {
    /// Messages pulled, over every topic.
    pub messages: u64,
    /// Seconds from the first pull to the last answer: one window for all topics.
    pub secs: f64,
    /// Taken when the pulls start (after set-up and the wait for dispatch).
    pub before: M,
    /// Taken when the last pull has answered.
    pub after: M,
}

/// The pull ceiling: every queue of every topic in `topics` pulled from offset 0 to its current
/// end by one task per queue, all at once as a consumer of all of them would (`batch` messages
/// per pull, decoded by our client, then discarded). `mark` is called just before the first
/// pull and after the last, so figures taken through it (CPU) leave out the set-up and the
/// wait for the broker's dispatch.
pub async fn pull_ceiling<M>(
    client: &Client,
    topics: &[String],
    batch: i32,
    expected: u64,
    mark: impl Fn() -> M,
) -> Result<PullCeiling<M>, String> {
    let mut queues = Vec::new();
    for topic in topics {
        for (addr, broker, id) in read_queues(client, topic).await? {
            queues.push((topic.clone(), addr, broker, id));
        }
    }
    let group = format!("bench-ceiling-{}", crate::now_us());
    // The broker dispatches stored messages to its consume queues asynchronously: wait until
    // every queue's max offset adds up to what was stored, so the loop does not stop early.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut sum = 0;
        for (topic, addr, broker, id) in &queues {
            let probe = probe_request(&group, topic, *id, broker);
            if let Ok(r) = client
                .pool()
                .call(addr, &probe, Duration::from_secs(10))
                .await
            {
                sum += r.max_offset.max(0) as u64;
            }
        }
        if sum >= expected || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = mark();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (topic, addr, broker, id) in queues {
        let pool = client.pool().clone();
        let group = group.clone();
        set.spawn(async move {
            let (mut offset, mut end, mut got) = (0_i64, i64::MAX, 0_u64);
            while offset < end {
                let request = PullMessage {
                    broker_name: Some(broker.clone()),
                    ..PullMessage::all_tags(&group, &topic, id, offset, batch)
                };
                let r = pool
                    .call(&addr, &request, Duration::from_secs(10))
                    .await
                    .map_err(|e| format!("pull {topic}/{id}: {e}"))?;
                if end == i64::MAX {
                    end = r.max_offset;
                }
                got += r.messages.len() as u64;
                match r.status {
                    PullStatus::Found => offset = r.next_begin_offset,
                    PullStatus::NoNewMsg => break,
                    _ => offset = r.next_begin_offset.max(offset + 1),
                }
            }
            Ok::<u64, String>(got)
        });
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r.map_err(|e| e.to_string())??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(PullCeiling {
        messages: total,
        secs,
        before,
        after: mark(),
    })
}

/// (master address, broker name, queue id) of every readable queue of `topic`.
async fn read_queues(client: &Client, topic: &str) -> Result<Vec<(String, String, i32)>, String> {
    let route = client
        .refresh_route(topic)
        .await
        .map_err(|e| format!("route {topic}: {e}"))?;
    let mut queues = Vec::new();
    for q in &route.queue_datas {
        let addr = route
            .master_addr(&q.broker_name)
            .ok_or_else(|| format!("no master for {}", q.broker_name))?;
        for id in 0..q.read_queue_nums {
            queues.push((addr.to_owned(), q.broker_name.clone(), id));
        }
    }
    Ok(queues)
}

/// Latencies seen by the pull floor, milliseconds: broker store time and producer born time to
/// the pull's answer arriving.
#[derive(Debug, Default)]
pub struct Floor {
    pub store_ms: Vec<f64>,
    pub born_ms: Vec<f64>,
}

/// The pull floor of an open-loop case: one long-polling pull loop per queue of `topic` with
/// our client, from offset 0, as a consumer without delivery would run it. Records the latency
/// of every `tag`ged message into `floor` until the tasks are aborted; what the broker adds
/// between storing a message and answering a waiting pull, which no consumer can beat.
pub async fn pull_floor(
    client: &Client,
    topic: &str,
    tag: &'static str,
    floor: Arc<std::sync::Mutex<Floor>>,
) -> Result<tokio::task::JoinSet<Result<(), String>>, String> {
    let group = format!("bench-floor-{}", crate::now_us());
    let mut set = tokio::task::JoinSet::new();
    for (addr, broker, id) in read_queues(client, topic).await? {
        let pool = client.pool().clone();
        let (topic, group, floor) = (topic.to_owned(), group.clone(), Arc::clone(&floor));
        set.spawn(async move {
            let mut offset = 0;
            loop {
                let request = PullMessage {
                    broker_name: Some(broker.clone()),
                    sys_flag: PullSysFlag::SUBSCRIPTION | PullSysFlag::SUSPEND,
                    suspend_timeout_millis: 15_000,
                    ..PullMessage::all_tags(&group, &topic, id, offset, 32)
                };
                let r = pool
                    .call(&addr, &request, Duration::from_secs(30))
                    .await
                    .map_err(|e| format!("pull {topic}/{id}: {e}"))?;
                let now = crate::now_us();
                if r.status == PullStatus::Found {
                    let mut f = floor.lock().map_err(|e| e.to_string())?;
                    for m in r.messages.iter().filter(|m| m.tags() == Some(tag)) {
                        f.store_ms
                            .push((now - m.store_timestamp * 1000) as f64 / 1000.0);
                        f.born_ms
                            .push((now - m.born_timestamp * 1000) as f64 / 1000.0);
                    }
                }
                offset = r.next_begin_offset.max(offset);
            }
        });
    }
    Ok(set)
}

/// The sink's request ceiling: `concurrency` senders, each on a keep-alive connection of its
/// own, posting envelopes of `batch` messages of `size` bytes for `duration`. Returns
/// (messages, requests, seconds).
///
/// The request is the daemon's: its encoder writes the headers and the envelope once, from
/// decoded messages carrying the properties the preloaded ones do, and each request rewrites
/// the leading digits of every msgId in place, so the sink sees new messages while the
/// senders spend next to nothing. Before, reqwest senders built each envelope through
/// serde_json: they cost more per request than the daemon and the broker together, and the
/// daemon drove more requests through the sink than that "ceiling" did.
pub async fn sink_ceiling(
    addr: SocketAddr,
    batch: usize,
    size: usize,
    duration: Duration,
    concurrency: usize,
) -> Result<(u64, u64, f64), String> {
    let (request, ids) = ceiling_request(addr, batch, size)?;
    let start = Instant::now();
    let msgs = Arc::new(AtomicU64::new(0));
    let reqs = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for sender in 0..concurrency as u64 {
        let (mut request, ids) = (request.clone(), ids.clone());
        let (msgs, reqs) = (Arc::clone(&msgs), Arc::clone(&reqs));
        set.spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect to the sink at {addr}: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let mut answer = Vec::with_capacity(512);
            let mut n = 0_u64;
            while start.elapsed() < duration {
                n += 1;
                for &at in &ids {
                    write_hex(&mut request[at..at + ID_PREFIX], (sender << 48) | n);
                }
                stream
                    .write_all(&request)
                    .await
                    .map_err(|e| format!("send to the sink: {e}"))?;
                if read_answer(&mut stream, &mut answer).await? == 200 {
                    msgs.fetch_add(batch as u64, Ordering::Relaxed);
                    reqs.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<(), String>(())
        });
    }
    let mut failed = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.map_err(|e| e.to_string()).and_then(|r| r) {
            failed.get_or_insert(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok((
            msgs.load(Ordering::Relaxed),
            reqs.load(Ordering::Relaxed),
            start.elapsed().as_secs_f64(),
        )),
    }
}

/// Hex digits of a msgId that [`sink_ceiling`] rewrites per request (sender and request
/// number); the rest tells the batch's messages apart.
const ID_PREFIX: usize = 16;

/// The daemon's HTTP/1.1 request (its headers and JSON envelope) for `batch` messages of
/// `size` bytes, and where each msgId's text starts in it.
fn ceiling_request(
    addr: SocketAddr,
    batch: usize,
    size: usize,
) -> Result<(Vec<u8>, Vec<usize>), String> {
    let id = |k: usize| format!("{:0w$X}{k:016X}", 0, w = ID_PREFIX);
    let now = crate::now_us() / 1000;
    let mut wire = Vec::new();
    for k in 0..batch {
        let mut props = Properties::new();
        for (key, value) in [
            ("UNIQ_KEY", id(k)),
            ("WAIT", "true".to_owned()),
            ("TAGS", "load".to_owned()),
            ("CLUSTER", "DefaultCluster".to_owned()),
            ("MSG_REGION", "DefaultRegion".to_owned()),
            ("TRACE_ON", "true".to_owned()),
        ] {
            props.insert(key.into(), value.into());
        }
        let record = MessageExt {
            topic: "ceiling".into(),
            queue_id: 0,
            flag: 0,
            queue_offset: k as i64,
            commit_log_offset: (k * size) as i64,
            sys_flag: 0,
            born_timestamp: now,
            born_host: ([127, 0, 0, 1], 5000).into(),
            store_timestamp: now,
            store_host: ([127, 0, 0, 1], 10911).into(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body_crc: 0,
            body: body(k as u64, size),
            properties: props,
        };
        wire.extend_from_slice(&encode_message(&record).map_err(|e| e.to_string())?);
    }
    let mut messages = decode_messages(&Bytes::from(wire)).map_err(|e| e.to_string())?;
    synthetic::as_pulled(&mut messages);
    let views: Vec<MessageView<'_>> = messages
        .iter()
        .map(|m| MessageView::new(m, "broker-a"))
        .collect();
    let context = Context {
        group: "ceiling",
        topic: "ceiling",
    };
    let encoded = Encoder::new(Format::Json, "bench", None)
        .encode(context, &views)
        .map_err(|e| e.to_string())?;
    let mut request = format!("POST /sink HTTP/1.1\r\nhost: {addr}\r\n").into_bytes();
    for (name, value) in &encoded.headers {
        request.extend_from_slice(name.as_str().as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(format!("content-length: {}\r\n\r\n", encoded.body.len()).as_bytes());
    request.extend_from_slice(&encoded.body);
    let mut at = Vec::new();
    for k in 0..batch {
        let needle = id(k);
        let found = request
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle.as_bytes())
            .map(|(i, _)| i);
        let before = at.len();
        at.extend(found);
        if at.len() == before {
            return Err(format!("msgId {needle} is not in the encoded request"));
        }
    }
    Ok((request, at))
}

/// Writes `value` as upper-case hex digits filling `out`.
fn write_hex(out: &mut [u8], mut value: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789ABCDEF"[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Reads one HTTP/1.1 answer (head and a `content-length` body) and returns its status.
async fn read_answer(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Result<u16, String> {
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|e| e.to_string())?;
            let status = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("the sink answered {head:?}"))?;
            let length = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                read_some(stream, buf).await?;
            }
            return Ok(status);
        }
        read_some(stream, buf).await?;
    }
}

async fn read_some(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    match stream.read_buf(buf).await {
        Ok(0) => Err("the sink closed the connection".to_owned()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read from the sink: {e}")),
    }
}

/// A one-message pull at offset 0 (its answer carries the queue's max offset).
fn probe_request(group: &str, topic: &str, id: i32, broker: &str) -> PullMessage {
    PullMessage {
        broker_name: Some(broker.to_owned()),
        ..PullMessage::all_tags(group, topic, id, 0, 1)
    }
}
