//! Load generation and the ceilings: batched preloading, the open-loop producer, the pull
//! ceiling (our client pulling and decoding as fast as it can, nothing delivered), its
//! open-loop counterpart the pull floor (long polls, the broker's own store-to-consumer
//! latency) and the sink's own request ceiling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rocketmq_webhook::client::producer::{create_topic, Producer, ProducerConfig, QueueSelector};
use rocketmq_webhook::client::{Client, ClientConfig, NotSupported};
use rocketmq_webhook::remoting::message::Message;
use rocketmq_webhook::remoting::rpc::{PullMessage, PullStatus, PullSysFlag};
use tokio::time::Instant;

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

/// Sends `tag`ged single messages at `rate` per second for `duration` (open loop: sends are
/// started on schedule whether or not earlier ones finished, up to 256 in flight). Returns how
/// many were stored.
pub async fn open_loop(
    producer: &Producer,
    topic: &str,
    rate: f64,
    duration: Duration,
    size: usize,
    tag: &str,
) -> u64 {
    let start = Instant::now();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let sent = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let producer = producer.clone();
        let message = Message::new(topic.to_owned(), body(i, size)).with_tags(tag.to_owned());
        let sent = Arc::clone(&sent);
        set.spawn(async move {
            if producer
                .send(message, &QueueSelector::RoundRobin)
                .await
                .is_ok()
            {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
    sent.load(Ordering::Relaxed)
}

/// [`pull_ceiling`] on a thread of its own with a one-thread runtime and a client of its own,
/// as the daemon runs by default. On the harness's two-worker runtime the pull loop paid for
/// hand-offs between the workers, CPU the broker could have used: a ceiling measured that way
/// reads low.
pub async fn pull_ceiling_alone(
    namesrv: &str,
    topic: &str,
    batch: i32,
    expected: u64,
) -> Result<(u64, f64), String> {
    let (namesrv, topic) = (namesrv.to_owned(), topic.to_owned());
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
                        pull_ceiling(&client(&namesrv)?, &topic, batch, expected).await
                    })
                });
            let _ = tx.send(result);
        })
        .map_err(|e| format!("pull ceiling thread: {e}"))?;
    rx.await
        .map_err(|_| "the pull ceiling's thread ended without an answer".to_owned())?
}

/// The pull ceiling: every queue of `topic` pulled from offset 0 to its current end by one
/// task per queue (`batch` messages per pull, decoded by our client, then discarded).
/// Returns (messages, seconds).
pub async fn pull_ceiling(
    client: &Client,
    topic: &str,
    batch: i32,
    expected: u64,
) -> Result<(u64, f64), String> {
    let queues = read_queues(client, topic).await?;
    let group = format!("bench-ceiling-{}", crate::now_us());
    // The broker dispatches stored messages to its consume queues asynchronously: wait until
    // every queue's max offset adds up to what was stored, so the loop does not stop early.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut sum = 0;
        for (addr, broker, id) in &queues {
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
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (addr, broker, id) in queues {
        let pool = client.pool().clone();
        let topic = topic.to_owned();
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
    Ok((total, start.elapsed().as_secs_f64()))
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

/// The sink's request ceiling: `concurrency` reqwest senders posting envelopes of `batch`
/// messages of `size` bytes for `duration`. Returns (messages, requests, seconds).
pub async fn sink_ceiling(
    url: &str,
    batch: usize,
    size: usize,
    duration: Duration,
    concurrency: usize,
) -> (u64, u64, f64) {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let msgs = Arc::new(AtomicU64::new(0));
    let reqs = Arc::new(AtomicU64::new(0));
    let text = String::from_utf8_lossy(&body(0, size)).into_owned();
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (http, url, text) = (http.clone(), url.to_owned(), text.clone());
        let (msgs, reqs) = (Arc::clone(&msgs), Arc::clone(&reqs));
        set.spawn(async move {
            let mut n = 0_u64;
            while start.elapsed() < duration {
                let now = crate::now_us() / 1000;
                let messages: Vec<serde_json::Value> = (0..batch)
                    .map(|k| {
                        n += 1;
                        serde_json::json!({
                            "msgId": format!("C{worker}-{n}-{k}"), "topic": "ceiling", "queueId": 0,
                            "queueOffset": n, "tags": "load", "reconsumeTimes": 0,
                            "bornTimestamp": now, "storeTimestamp": now, "body": text,
                        })
                    })
                    .collect();
                let envelope = serde_json::json!({"topic": "ceiling", "consumerGroup": "c", "messages": messages});
                let ok = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&envelope).unwrap_or_default())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    msgs.fetch_add(batch as u64, Ordering::Relaxed);
                    reqs.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    (
        msgs.load(Ordering::Relaxed),
        reqs.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
    )
}

/// A one-message pull at offset 0 (its answer carries the queue's max offset).
fn probe_request(group: &str, topic: &str, id: i32, broker: &str) -> PullMessage {
    PullMessage {
        broker_name: Some(broker.to_owned()),
        ..PullMessage::all_tags(group, topic, id, 0, 1)
    }
}
