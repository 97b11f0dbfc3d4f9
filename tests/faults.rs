//! The fault suite: real processes (name server, broker, the `rocketmq-webhook` daemon binary and
//! an HTTP receiver) on loopback, driven through crashes and outages while a producer keeps
//! sending. Each scenario prints one line
//!
//! `scenario=<name> produced=N delivered=N duplicated=N lost=N dlq=N max_rss_kib=N`
//!
//! and asserts `lost == 0` plus the scenario's own invariants. The receiver records the `msgId`
//! (the producer's `UNIQ_KEY`) of every message it ACCEPTED (answered 2xx); `produced` counts
//! the ids the broker confirmed, `delivered` the produced ids accepted at least once,
//! `duplicated` the accepted deliveries beyond the first of each id, `dlq` the messages in
//! `%DLQ%<group>` and `max_rss_kib` the highest peak RSS (VmHWM) of any daemon process.
//!
//! Sizes: small by default (the whole file runs in the test command in a few minutes);
//! `FAULTS_FULL=1` selects the sizes of issue 7 (20 kills per mode, a 60 s outage, ...).
//! `scripts/faults.sh` runs the full suite and writes target/faults/report.md; the figures of
//! the last run are in docs/reliability.md.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng as _;
use rocketmq_webhook::client::producer::{Producer, QueueSelector};
use rocketmq_webhook::remoting::message::Message;
use rocketmq_webhook::remoting::rpc::{GetMaxOffset, PullMessage, PullStatus, QueryConsumerOffset};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use support::daemon::{free_port, metric, Daemon, Launch};
use support::http::{Receiver, Reply, Request};
use support::{unique, RocketMq};

// === sizes ===

/// Whether the full sizes of issue 7 were asked for (`FAULTS_FULL=1`).
fn full() -> bool {
    std::env::var("FAULTS_FULL").is_ok_and(|v| v == "1")
}

/// Picks the quick or the full value.
fn size<T>(quick: T, full_size: T) -> T {
    if full() {
        full_size
    } else {
        quick
    }
}

/// How long to wait for the last message after the load stops.
fn drain_limit() -> Duration {
    size(Duration::from_secs(90), Duration::from_secs(240))
}

// === the ledger: what the receiver accepted ===

/// A receiver that accepts every request, and the ledger recording what it accepted.
async fn accepting_receiver() -> (Receiver, Arc<Ledger>) {
    let receiver = Receiver::start().await;
    let ledger = Arc::new(Ledger::default());
    ledger.install(&receiver, Arc::new(|_| Answer::OK));
    (receiver, ledger)
}

/// One message of one accepted request.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    body: String,
    topic: String,
    queue_id: i64,
    offset: i64,
    reconsume: i64,
    /// Which daemon incarnation delivered it (bumped by the test after each kill).
    epoch: usize,
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
struct Answer {
    status: u16,
    delay: Duration,
}

impl Answer {
    const OK: Self = Self {
        status: 200,
        delay: Duration::ZERO,
    };
}

/// How the receiver answers a request, given its sequence number (from 0).
type Decide = Arc<dyn Fn(u64) -> Answer + Send + Sync>;

/// Every accepted delivery, in arrival order.
#[derive(Default)]
struct Ledger {
    deliveries: Mutex<Vec<Delivery>>,
    epoch: AtomicUsize,
    requests: AtomicU64,
}

impl Ledger {
    /// Makes `receiver` answer with `decide` and record what it accepts.
    fn install(self: &Arc<Self>, receiver: &Receiver, decide: Decide) {
        let ledger = Arc::clone(self);
        receiver.respond(move |request: &Request| {
            let n = ledger.requests.fetch_add(1, Ordering::Relaxed);
            let answer = decide(n);
            if answer.status / 100 == 2 {
                ledger.record(request);
            }
            Reply::status(answer.status).with_delay(answer.delay)
        });
    }

    fn record(&self, request: &Request) {
        let Ok(envelope) = serde_json::from_slice::<Value>(&request.body) else {
            return;
        };
        let epoch = self.epoch.load(Ordering::SeqCst);
        let messages = envelope["messages"].as_array().cloned().unwrap_or_default();
        let mut out = lock(&self.deliveries);
        for m in messages {
            out.push(Delivery {
                id: m["msgId"].as_str().unwrap_or_default().to_owned(),
                body: m["body"].as_str().unwrap_or_default().to_owned(),
                topic: m["topic"].as_str().unwrap_or_default().to_owned(),
                queue_id: m["queueId"].as_i64().unwrap_or(-1),
                offset: m["queueOffset"].as_i64().unwrap_or(-1),
                reconsume: m["reconsumeTimes"].as_i64().unwrap_or(0),
                epoch,
            });
        }
    }

    fn snapshot(&self) -> Vec<Delivery> {
        lock(&self.deliveries).clone()
    }

    /// Distinct messages accepted so far.
    fn unique_count(&self) -> usize {
        let deliveries = lock(&self.deliveries);
        deliveries
            .iter()
            .map(|d| d.id.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    /// Starts a new incarnation: later deliveries carry the next epoch.
    fn next_epoch(&self) -> usize {
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Waits until every produced id was accepted; on timeout panics with where the missing
    /// ids were stored and `context` (awaited only then).
    async fn wait_all(&self, load: &Load, limit: Duration, context: impl AsyncFnOnce() -> String) {
        let deadline = Instant::now() + limit;
        loop {
            let produced = load.produced();
            let deliveries = self.snapshot();
            let accepted: HashSet<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
            let missing: Vec<&String> = produced
                .iter()
                .filter(|id| !accepted.contains(id.as_str()))
                .collect();
            if missing.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} of {} produced messages were never accepted after {limit:?} (LOSS); \
                     first missing: {:?}\n{}\n{}",
                    missing.len(),
                    produced.len(),
                    missing.iter().take(10).collect::<Vec<_>>(),
                    load.placement_report(&missing, &deliveries),
                    context().await
                );
            }
            sleep(Duration::from_millis(250)).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === load ===

/// What the load generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Batches round robin over the queues.
    Spread,
    /// Batches of one key each (`k<key>:<seq>` bodies), keys hashed onto queues.
    Keyed { keys: usize },
}

/// A background producer: `batch` messages every `every`, until stopped.
struct Load {
    /// Every confirmed batch and where the broker said it went, in send order.
    placements: Arc<Mutex<Vec<Placement>>>,
    /// Confirmed ids set apart as lost by the broker ([`Self::set_apart_unserved`]).
    broker_lost: Mutex<HashSet<String>>,
    failed_batches: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Load {
    fn start(producer: Producer, topic: &str, shape: Shape, batch: usize, every: Duration) -> Self {
        let placements = Arc::new(Mutex::new(Vec::new()));
        let failed_batches = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run_load(
            producer,
            topic.to_owned(),
            shape,
            batch,
            every,
            Arc::clone(&placements),
            Arc::clone(&failed_batches),
            Arc::clone(&stop),
        ));
        Self {
            placements,
            broker_lost: Mutex::default(),
            failed_batches,
            stop,
            task: Some(task),
        }
    }

    /// The usual background load: 16 messages every 50 ms, round robin over the queues.
    fn steady(producer: Producer, topic: &str) -> Self {
        Self::start(
            producer,
            topic,
            Shape::Spread,
            16,
            Duration::from_millis(50),
        )
    }

    /// Stops sending and waits for the batch in flight.
    async fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// The confirmed ids in send order, less those set apart as lost by the broker.
    fn produced(&self) -> Vec<String> {
        let lost = lock(&self.broker_lost);
        lock(&self.placements)
            .iter()
            .flat_map(|p| &p.ids)
            .filter(|id| !lost.contains(*id))
            .cloned()
            .collect()
    }

    fn failed_batches(&self) -> u64 {
        self.failed_batches.load(Ordering::Relaxed)
    }

    /// Removes from the produced ids those whose place the broker gives to another message, and
    /// returns them. The broker confirmed each at a (queue, offset); when reading the queues back
    /// finds a different id there, the broker handed that offset out twice and will never serve
    /// the confirmed message: no consumer can deliver it. Only that positive evidence sets an id
    /// apart; one that is merely absent (a failed read, a lagging dispatch) stays and must arrive.
    async fn set_apart_unserved(&self, mq: &RocketMq, topic: &str, queues: i32) -> Vec<String> {
        // The consume queue trails the commit log by a dispatch: read again for a while before
        // judging.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (served, ids) = loop {
            let served = served_ids(mq, topic, queues).await;
            let ids: HashSet<String> = served.values().cloned().collect();
            let all_served = self.produced().iter().all(|id| ids.contains(id));
            if all_served || Instant::now() >= deadline {
                break (served, ids);
            }
            sleep(Duration::from_millis(500)).await;
        };
        let mut unserved = Vec::new();
        let mut evidence = String::new();
        for p in lock(&self.placements).iter() {
            for (id, queue, offset) in p.places() {
                let there = served.get(&(queue, offset));
                if ids.contains(id) || there.is_none_or(|other| other == id) {
                    continue;
                }
                let _ = writeln!(
                    evidence,
                    "  {id}: confirmed at queue {queue} offset {offset}, where the broker serves {}",
                    there.map_or("", String::as_str)
                );
                unserved.push(id.clone());
            }
        }
        if unserved.is_empty() {
            return unserved;
        }
        eprintln!(
            "the broker gave the places of {} confirmed message(s) of {topic} to other messages; \
             they are left out of the delivery check (a broker fault, see docs/reliability.md):\n\
             {evidence}",
            unserved.len()
        );
        lock(&self.broker_lost).extend(unserved.iter().cloned());
        unserved
    }

    /// Where the broker said the `missing` ids went, and what else claims those places: the
    /// evidence that tells a broker that lost an acknowledged batch (its queue offsets were
    /// handed out again) from a consumer that moved past messages the broker still has.
    fn placement_report(&self, missing: &[&String], deliveries: &[Delivery]) -> String {
        let placements = lock(&self.placements);
        let mut claims: HashMap<(i32, i64), Vec<&str>> = HashMap::new();
        let mut place_of: HashMap<&str, (i32, i64, usize)> = HashMap::new();
        for (n, p) in placements.iter().enumerate() {
            for (id, queue, offset) in p.places() {
                claims.entry((queue, offset)).or_default().push(id);
                place_of.insert(id, (queue, offset, n));
            }
        }
        let mut delivered_at: HashMap<(i64, i64), &str> = HashMap::new();
        for d in deliveries {
            delivered_at.entry((d.queue_id, d.offset)).or_insert(&d.id);
        }
        let mut out = String::from("where the broker said the missing messages went:\n");
        for id in missing.iter().take(20) {
            let Some(&(queue, offset, batch)) = place_of.get(id.as_str()) else {
                let _ = writeln!(out, "  {id}: no placement recorded");
                continue;
            };
            let others: Vec<&&str> = claims[&(queue, offset)]
                .iter()
                .filter(|other| **other != id.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  {id}: batch #{batch} of {}, queue {queue} offset {offset}; also acknowledged \
                 there: {others:?}; delivered from there: {:?}",
                placements.len(),
                delivered_at.get(&(i64::from(queue), offset))
            );
        }
        out
    }
}

/// One acknowledged batch: its ids and the queue and first offset the broker reported.
#[derive(Debug, Clone)]
struct Placement {
    queue_id: i32,
    first_offset: i64,
    ids: Vec<String>,
}

impl Placement {
    /// Each id with the queue and offset the broker confirmed for it.
    fn places(&self) -> impl Iterator<Item = (&String, i32, i64)> {
        self.ids
            .iter()
            .zip(self.first_offset..)
            .map(|(id, offset)| (id, self.queue_id, offset))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_load(
    producer: Producer,
    topic: String,
    shape: Shape,
    batch: usize,
    every: Duration,
    placements: Arc<Mutex<Vec<Placement>>>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut seq = 0usize;
    let mut key_seq: Vec<usize> = match shape {
        Shape::Keyed { keys } => vec![0; keys],
        Shape::Spread => Vec::new(),
    };
    let mut turn = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let (messages, selector, next_key_seq) = match shape {
            Shape::Spread => {
                let msgs = (0..batch)
                    .map(|i| Message::new(topic.as_str(), format!("m-{}", seq + i)))
                    .collect::<Vec<_>>();
                (msgs, QueueSelector::RoundRobin, None)
            }
            Shape::Keyed { keys } => {
                let k = turn % keys;
                let start = key_seq[k];
                let key = format!("k{k}");
                let msgs = (0..batch)
                    .map(|i| {
                        Message::new(topic.as_str(), format!("{key}:{}", start + i))
                            .with_keys([key.as_str()])
                    })
                    .collect::<Vec<_>>();
                (msgs, QueueSelector::Hash(key), Some((k, start + batch)))
            }
        };
        match producer.send_batch(messages, &selector).await {
            Ok(result) => {
                lock(&placements).push(Placement {
                    queue_id: result.queue.queue_id,
                    first_offset: result.queue_offset,
                    ids: result.msg_ids,
                });
                seq += batch;
                turn += 1;
                if let Some((k, next)) = next_key_seq {
                    key_seq[k] = next;
                }
            }
            Err(e) => {
                // Stored or not is unknown: these ids are not counted as produced. A keyed
                // batch is resent with the same sequence numbers (new ids), so per-key sequences
                // stay gap-free among the confirmed ones.
                failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("load: batch send failed (retrying): {e}");
                sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        sleep(every).await;
    }
}

// === figures ===

/// The summary of one scenario run.
#[derive(Debug, Default, Clone)]
struct Figures {
    produced: usize,
    delivered: usize,
    duplicated: usize,
    lost: usize,
    dlq: u64,
    max_rss_kib: u64,
}

impl Figures {
    fn compute(produced: &[String], deliveries: &[Delivery], dlq: u64, max_rss_kib: u64) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for d in deliveries {
            *counts.entry(d.id.as_str()).or_insert(0) += 1;
        }
        let produced_set: HashSet<&str> = produced.iter().map(String::as_str).collect();
        let delivered = produced_set
            .iter()
            .filter(|id| counts.contains_key(**id))
            .count();
        let duplicated = counts.values().map(|n| n - 1).sum();
        Self {
            produced: produced_set.len(),
            delivered,
            duplicated,
            lost: produced_set.len() - delivered,
            dlq,
            max_rss_kib,
        }
    }

    /// Prints the summary line (the format scripts/faults.sh collects) and asserts no loss.
    fn report(&self, scenario: &str, extra: &str) {
        println!(
            "scenario={scenario} produced={} delivered={} duplicated={} lost={} dlq={} max_rss_kib={}",
            self.produced, self.delivered, self.duplicated, self.lost, self.dlq, self.max_rss_kib
        );
        if !extra.is_empty() {
            println!("detail scenario={scenario} {extra}");
        }
        assert!(self.produced > 0, "{scenario}: nothing was produced");
        assert_eq!(self.lost, 0, "{scenario}: messages were lost: {self:?}");
    }
}

// === processes ===

/// Peak RSS (VmHWM, KiB) of every daemon process seen, sampled before each stop.
#[derive(Debug, Default)]
struct Rss {
    max_kib: AtomicU64,
}

impl Rss {
    /// Records the current peak of `daemon`'s process.
    fn sample(&self, daemon: &Daemon) {
        if let Some(kib) = daemon_pid(daemon.admin()).and_then(peak_rss_kib) {
            self.max_kib.fetch_max(kib, Ordering::Relaxed);
        }
    }

    fn max(&self) -> u64 {
        self.max_kib.load(Ordering::Relaxed)
    }
}

/// The pid of the daemon whose admin server is `admin` (its environment names the address).
fn daemon_pid(admin: SocketAddr) -> Option<u32> {
    let needle = format!("ROCKETMQ_ADMIN_LISTEN={admin}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            let is_daemon = exe
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rocketmq-webhook"));
            (is_daemon
                && environ
                    .split(|b| *b == 0)
                    .any(|var| var == needle.as_bytes()))
            .then_some(pid)
        })
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A configuration for one subscription with short periods (rebalance 2 s, offsets persisted
/// every second) so scenarios converge in seconds.
struct Conf {
    namesrv: String,
    group: String,
    topic: String,
    url: String,
    timeout: Duration,
    top: Vec<String>,
    sub: Vec<String>,
    webhook: Vec<String>,
    /// More subscriptions (group, topic, url), with the same settings but not `sub`/`webhook`.
    more: Vec<(String, String, String)>,
}

impl Conf {
    fn new(namesrv: &str, group: &str, topic: &str, url: String) -> Self {
        Self {
            namesrv: namesrv.to_owned(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            url,
            timeout: Duration::from_secs(10),
            top: Vec::new(),
            sub: Vec::new(),
            webhook: Vec::new(),
            more: Vec::new(),
        }
    }

    /// Adds a subscription of `group` to `topic`, delivering to `url`.
    fn also(mut self, group: &str, topic: &str, url: String) -> Self {
        self.more.push((group.to_owned(), topic.to_owned(), url));
        self
    }

    fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn top(mut self, line: &str) -> Self {
        self.top.push(line.to_owned());
        self
    }

    fn sub(mut self, line: &str) -> Self {
        self.sub.push(line.to_owned());
        self
    }

    fn webhook(mut self, line: &str) -> Self {
        self.webhook.push(line.to_owned());
        self
    }

    fn yaml(&self) -> String {
        let mut out = format!(
            "namesrv_addr: \"{}\"\n\
             client:\n  rebalance_interval: 2s\n  heartbeat_interval: 5s\n  poll_name_server_interval: 5s\n\
             shutdown:\n  grace_period: 10s\n",
            self.namesrv
        );
        for l in &self.top {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("subscriptions:\n");
        self.push_subscription(&mut out, &self.group, &self.topic, &self.url, true);
        for (group, topic, url) in &self.more {
            self.push_subscription(&mut out, group, topic, url, false);
        }
        out
    }

    /// One entry of `subscriptions:`; `own` adds the `sub` and `webhook` lines.
    fn push_subscription(&self, out: &mut String, group: &str, topic: &str, url: &str, own: bool) {
        out.push_str(&format!(
            "  - group: \"{group}\"\n    topic: \"{topic}\"\n    consume_from: FIRST_OFFSET\n    persist_interval: 1s\n"
        ));
        if own {
            for l in &self.sub {
                out.push_str(&format!("    {l}\n"));
            }
        }
        out.push_str(&format!(
            "    webhook:\n      url: \"{url}\"\n      timeout: {}s\n",
            self.timeout.as_secs()
        ));
        if own {
            for l in &self.webhook {
                out.push_str(&format!("      {l}\n"));
            }
        }
    }

    fn launch(&self) -> Launch {
        Launch::yaml(self.yaml())
    }
}

/// The group's committed offset of each queue of `topic` on the broker (absent = none yet).
async fn committed(mq: &RocketMq, group: &str, topic: &str, queues: i32) -> BTreeMap<i64, i64> {
    let client = mq.client();
    let mut out = BTreeMap::new();
    for q in 0..queues {
        let rpc = QueryConsumerOffset {
            consumer_group: group.to_owned(),
            topic: topic.to_owned(),
            queue_id: q,
            set_zero_if_not_found: Some(false),
        };
        // A failed query must not read as "nothing committed": the checks built on these
        // offsets would pass without checking anything.
        let offset = client
            .pool()
            .call(&mq.broker_addr(), &rpc, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("committed offset of {topic} queue {q}: {e}"));
        if let Some(offset) = offset {
            out.insert(i64::from(q), offset);
        }
    }
    out
}

/// The id the broker serves at each (queue, offset) of `topic` (queues `0..queues`), read with
/// one-shot pulls that commit nothing.
async fn served_ids(mq: &RocketMq, topic: &str, queues: i32) -> HashMap<(i32, i64), String> {
    let client = mq.client();
    let reader = unique("G_served_reader");
    let mut out = HashMap::new();
    for q in 0..queues {
        let mut offset = 0;
        loop {
            let pull = PullMessage::all_tags(&reader, topic, q, offset, 32);
            let Ok(result) = client
                .pool()
                .call(&mq.broker_addr(), &pull, Duration::from_secs(5))
                .await
            else {
                break;
            };
            if result.status != PullStatus::Found || result.next_begin_offset <= offset {
                break;
            }
            for m in &result.messages {
                out.insert((q, m.queue_offset), m.msg_id().into_owned());
            }
            offset = result.next_begin_offset;
        }
    }
    out
}

/// Each queue's max offset on the broker next to the group's committed offset.
async fn queue_report(mq: &RocketMq, group: &str, topic: &str, queues: i32) -> String {
    let committed = committed(mq, group, topic, queues).await;
    let client = mq.client();
    let mut out = String::from("queues (broker max offset / committed offset):");
    for q in 0..queues {
        let rpc = GetMaxOffset {
            topic: topic.to_owned(),
            queue_id: q,
        };
        let max = client
            .pool()
            .call(&mq.broker_addr(), &rpc, Duration::from_secs(5))
            .await;
        let _ = write!(out, " q{q}={max:?}/{:?}", committed.get(&i64::from(q)));
    }
    out
}

/// Sum of a metric over the daemon's series matching `labels`.
async fn metric_now(daemon: &Daemon, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&daemon.metrics().await, name, labels)
}

fn random_between(low: Duration, high: Duration) -> Duration {
    let ms = rand::rng().random_range(low.as_millis()..=high.as_millis());
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

// === scenario 1: SIGKILL at random moments ===

/// What one kill left behind.
#[derive(Debug)]
struct Kill {
    /// The epoch the kill ended.
    epoch: usize,
    /// Committed offsets right after the kill.
    committed: BTreeMap<i64, i64>,
}

async fn sigkill_scenario(orderly: bool) {
    let name = if orderly {
        "sigkill_orderly"
    } else {
        "sigkill_concurrent"
    };
    let kills = size(3, 20);
    const QUEUES: i32 = 4;
    let mq = RocketMq::start().await;
    let topic = unique(&format!("T_{name}"));
    let group = unique(&format!("G_{name}"));
    mq.producer()
        .create_topic(&topic, QUEUES as u16, orderly)
        .await
        .unwrap_or_else(|e| panic!("create {topic}: {e}"));
    let (receiver, ledger) = accepting_receiver().await;
    // A fixed instance name keeps the client id across restarts, as a restarted pod keeps its
    // name: the broker then hands an orderly queue lock back to the same client at once
    // instead of after its expiry.
    let mut conf = Conf::new(&mq.namesrv_addr(), &group, &topic, receiver.url("/hook"))
        .top(&format!("instance_name: \"{name}\""));
    if orderly {
        conf = conf.sub("consume_mode: ORDERLY");
    }
    let launch = conf.launch();
    let rss = Rss::default();

    let mut daemon = Daemon::start(&launch).await;
    let shape = if orderly {
        Shape::Keyed { keys: 8 }
    } else {
        Shape::Spread
    };
    let mut load = Load::start(mq.producer(), &topic, shape, 16, Duration::from_millis(50));
    let mut record = Vec::new();
    for _ in 0..kills {
        sleep(random_between(
            Duration::from_millis(1500),
            Duration::from_millis(4000),
        ))
        .await;
        rss.sample(&daemon);
        daemon.sigkill();
        daemon.wait_exit(Duration::from_secs(10)).await;
        let ended = ledger.next_epoch() - 1;
        // Let the broker finish reading whatever the dead process had already written.
        sleep(Duration::from_millis(300)).await;
        record.push(Kill {
            epoch: ended,
            committed: committed(&mq, &group, &topic, QUEUES).await,
        });
        daemon = Daemon::start(&launch).await;
    }
    sleep(Duration::from_secs(2)).await;
    load.stop().await;
    ledger
        .wait_all(&load, drain_limit(), async || daemon.output_tail(40))
        .await;
    rss.sample(&daemon);
    let deliveries = ledger.snapshot();
    let figures = Figures::compute(
        &load.produced(),
        &deliveries,
        mq.dlq_count(&group).await,
        rss.max(),
    );

    // Duplicates come only from the un-persisted window: after kill k, nothing below the
    // offsets committed at that moment is delivered again, and everything below them had been
    // accepted before the kill.
    assert!(
        record.iter().any(|k| k.committed.values().any(|c| *c > 0)),
        "{name}: no kill saw a committed offset, so the checks below would check nothing"
    );
    let mut max_dupes_per_kill = 0usize;
    for kill in &record {
        let mut dupes = 0usize;
        let before: HashSet<&str> = deliveries
            .iter()
            .filter(|d| d.epoch <= kill.epoch)
            .map(|d| d.id.as_str())
            .collect();
        let accepted_before: HashSet<(i64, i64)> = deliveries
            .iter()
            .filter(|d| d.epoch <= kill.epoch && d.topic == topic && d.reconsume == 0)
            .map(|d| (d.queue_id, d.offset))
            .collect();
        for (q, c) in &kill.committed {
            let missing: Vec<i64> = (0..*c)
                .filter(|o| !accepted_before.contains(&(*q, *o)))
                .take(5)
                .collect();
            assert!(
                missing.is_empty(),
                "{name}: after kill of epoch {}, queue {q} was committed up to {c} but offsets {missing:?} had never been accepted",
                kill.epoch
            );
        }
        for d in deliveries.iter().filter(|d| d.epoch > kill.epoch) {
            if let Some(c) = kill.committed.get(&d.queue_id) {
                assert!(
                    d.topic != topic || d.reconsume > 0 || d.offset >= *c,
                    "{name}: queue {} offset {} delivered in epoch {} although offset {c} was committed before (kill of epoch {})",
                    d.queue_id,
                    d.offset,
                    d.epoch,
                    kill.epoch
                );
            }
            if d.epoch == kill.epoch + 1 && before.contains(d.id.as_str()) {
                dupes += 1;
            }
        }
        max_dupes_per_kill = max_dupes_per_kill.max(dupes);
    }
    if orderly {
        check_key_order(name, &deliveries);
    }
    figures.report(
        name,
        &format!(
            "kills={kills} max_duplicates_per_kill={max_dupes_per_kill} failed_batches={}",
            load.failed_batches()
        ),
    );
    assert_eq!(figures.dlq, 0, "{name}: nothing may reach the DLQ");
    daemon.sigterm();
    daemon.wait_exit(Duration::from_secs(30)).await;
}

/// Orderly: per key, deliveries never skip ahead; within one incarnation they advance by
/// exactly one; a step back happens only at a restart (a redelivery of the un-persisted window).
fn check_key_order(name: &str, deliveries: &[Delivery]) {
    let mut next: BTreeMap<String, usize> = BTreeMap::new();
    let mut last: HashMap<(String, usize), usize> = HashMap::new();
    for d in deliveries {
        let Some((key, seq)) = d.body.split_once(':') else {
            continue;
        };
        let Ok(seq) = seq.parse::<usize>() else {
            continue;
        };
        let expected = next.entry(key.to_owned()).or_insert(0);
        assert!(
            seq <= *expected,
            "{name}: key {key} got {seq} before {expected} was delivered (a gap in orderly delivery)"
        );
        if seq == *expected {
            *expected += 1;
        }
        if let Some(prev) = last.insert((key.to_owned(), d.epoch), seq) {
            assert_eq!(
                seq,
                prev + 1,
                "{name}: key {key} went from {prev} to {seq} within one daemon incarnation (epoch {})",
                d.epoch
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_concurrent() {
    sigkill_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_orderly() {
    sigkill_scenario(true).await;
}

// === scenario 2: broker restart, late name server ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_under_load() {
    let name = "broker_restart";
    const QUEUES: i32 = 4;
    let restarts = size(1, 3);
    let mut mq = RocketMq::start().await;
    let topic = unique("T_broker_restart");
    let group = unique("G_broker_restart");
    mq.create_topic(&topic, QUEUES as u16).await;
    let (receiver, ledger) = accepting_receiver().await;
    let launch = Conf::new(&mq.namesrv_addr(), &group, &topic, receiver.url("/hook")).launch();
    let rss = Rss::default();
    let mut daemon = Daemon::start(&launch).await;
    let mut load = Load::steady(mq.producer(), &topic);
    for _ in 0..restarts {
        sleep(Duration::from_secs(3)).await;
        mq.stop_broker().await;
        sleep(size(Duration::from_secs(3), Duration::from_secs(10))).await;
        mq.start_broker().await;
    }
    sleep(Duration::from_secs(5)).await;
    load.stop().await;
    // The broker under test can drop an acknowledged batch across a graceful restart (see
    // docs/reliability.md, "What the broker loses"). A consumer can only deliver what the broker
    // serves: ids it no longer serves are set apart and counted, every id it serves must arrive.
    let broker_lost = load.set_apart_unserved(&mq, &topic, QUEUES).await.len();
    ledger
        .wait_all(&load, drain_limit(), async || {
            format!(
                "{}\n{}\n{}",
                queue_report(&mq, &group, &topic, QUEUES).await,
                daemon.output_tail(40),
                mq.log_tails(20)
            )
        })
        .await;
    rss.sample(&daemon);
    let output = daemon.output();
    assert!(
        !output.contains("panicked"),
        "{name}: the daemon panicked:\n{output}"
    );
    let figures = Figures::compute(
        &load.produced(),
        &ledger.snapshot(),
        mq.dlq_count(&group).await,
        rss.max(),
    );
    figures.report(
        name,
        &format!(
            "restarts={restarts} failed_batches={} broker_lost={broker_lost}",
            load.failed_batches()
        ),
    );
    assert_eq!(figures.dlq, 0, "{name}: nothing may reach the DLQ");
    daemon.sigterm();
    daemon.wait_exit(Duration::from_secs(30)).await;
}

/// A TCP relay from `listen` to `target`, started only when the test says so: before that,
/// connections to `listen` are refused (a name server that is down).
async fn relay(listen: SocketAddr, target: String) -> JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| panic!("cannot bind the relay on {listen}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_server_down_at_start() {
    let name = "namesrv_late";
    let down = size(Duration::from_secs(6), Duration::from_secs(30));
    let mq = RocketMq::start().await;
    let topic = unique("T_namesrv_late");
    let group = unique("G_namesrv_late");
    mq.create_topic(&topic, 4).await;
    let (receiver, ledger) = accepting_receiver().await;
    // The daemon's name server is a relay that is not listening yet.
    let namesrv = free_port();
    let launch = Conf::new(&namesrv.to_string(), &group, &topic, receiver.url("/hook")).launch();
    let mut daemon = Daemon::spawn(&launch);
    let not_ready = daemon
        .never_ready(down, &format!("({name}) while the name server was down"))
        .await;
    assert!(
        not_ready > 0,
        "{name}: /readyz never answered 503 while the name server was down\n{}",
        daemon.output_tail(30)
    );
    let _relay = relay(namesrv, mq.namesrv_addr()).await;
    daemon
        .wait_ready()
        .await
        .unwrap_or_else(|e| panic!("{name}: after the name server came up: {e}"));
    let mut load = Load::steady(mq.producer(), &topic);
    sleep(size(Duration::from_secs(4), Duration::from_secs(15))).await;
    load.stop().await;
    ledger
        .wait_all(&load, drain_limit(), async || daemon.output_tail(40))
        .await;
    let rss = Rss::default();
    rss.sample(&daemon);
    let figures = Figures::compute(
        &load.produced(),
        &ledger.snapshot(),
        mq.dlq_count(&group).await,
        rss.max(),
    );
    figures.report(
        name,
        &format!("down_s={} readyz_503_seen={not_ready}", down.as_secs()),
    );
    assert_eq!(figures.dlq, 0);
    daemon.sigterm();
    daemon.wait_exit(Duration::from_secs(30)).await;
}

// === scenario 3: the HTTP receiver misbehaves ===

/// Receiver phases for scenario 3.
const NORMAL: u8 = 0;
const SLOW: u8 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_outage_errors_and_slowness() {
    let name = "receiver_faults";
    let outage = size(Duration::from_secs(8), Duration::from_secs(60));
    let slow_delay = size(Duration::from_secs(3), Duration::from_secs(20));
    let slow_for = size(Duration::from_secs(8), Duration::from_secs(45));
    const QUEUES: u64 = 4;
    const CACHE_COUNT: u64 = 100;
    const PULL_BATCH: u64 = 32;
    const CACHE_BYTES: u64 = 1024 * 1024;
    let mq = RocketMq::start().await;
    let topic = unique("T_receiver");
    let group = unique("G_receiver");
    mq.create_topic(&topic, QUEUES as u16).await;
    let receiver = Receiver::start().await;
    let ledger = Arc::new(Ledger::default());
    let phase = Arc::new(AtomicU8::new(NORMAL));
    let errors = Arc::new(AtomicU64::new(0));
    {
        let phase = Arc::clone(&phase);
        let errors = Arc::clone(&errors);
        ledger.install(
            &receiver,
            Arc::new(move |n| {
                // 1 % of requests fail with 500, in every phase.
                if n % 100 == 37 {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return Answer {
                        status: 500,
                        delay: Duration::ZERO,
                    };
                }
                if phase.load(Ordering::Relaxed) == SLOW {
                    Answer {
                        status: 200,
                        delay: slow_delay,
                    }
                } else {
                    Answer::OK
                }
            }),
        );
    }
    let launch = Conf::new(&mq.namesrv_addr(), &group, &topic, receiver.url("/hook"))
        .sub(&format!("max_cache_count_per_queue: {CACHE_COUNT}"))
        .sub("max_cache_size_per_queue: 1MiB")
        .sub(&format!("pull_batch_size: {PULL_BATCH}"))
        .timeout(slow_delay + Duration::from_secs(10))
        .webhook("circuit_breaker:")
        .webhook("  max_open_duration: 10s")
        .launch();
    let rss = Rss::default();
    let mut daemon = Daemon::start(&launch).await;
    let mut load = Load::start(
        mq.producer(),
        &topic,
        Shape::Spread,
        8,
        Duration::from_millis(50),
    );
    let mut peak = Cache::default();
    sleep(Duration::from_secs(3)).await;

    // The endpoint refuses connections.
    receiver.stop().await;
    let until = Instant::now() + outage;
    while Instant::now() < until {
        peak = peak.max(Cache::now(&daemon, &group).await);
        rss.sample(&daemon);
        sleep(Duration::from_millis(500)).await;
    }
    receiver.resume().await;
    sleep(Duration::from_secs(3)).await;

    // The endpoint answers, slowly.
    phase.store(SLOW, Ordering::Relaxed);
    let until = Instant::now() + slow_for;
    while Instant::now() < until {
        peak = peak.max(Cache::now(&daemon, &group).await);
        rss.sample(&daemon);
        sleep(Duration::from_millis(500)).await;
    }
    phase.store(NORMAL, Ordering::Relaxed);
    sleep(Duration::from_secs(2)).await;
    load.stop().await;
    ledger
        .wait_all(&load, drain_limit(), async || daemon.output_tail(40))
        .await;
    rss.sample(&daemon);
    let dlq_sent = metric_now(
        &daemon,
        "rocketmq_webhook_consumer_send_back_total",
        &[("consumer_group", group.as_str()), ("target", "dlq")],
    )
    .await;
    let figures = Figures::compute(
        &load.produced(),
        &ledger.snapshot(),
        mq.dlq_count(&group).await,
        rss.max(),
    );
    // The engine never asks for more than fits under the count limit, so a queue holds at most
    // max_cache_count_per_queue messages; the byte limit is checked before each pull, so a queue
    // may exceed it by one pull (32 messages of a few bytes here).
    let bytes_bound = CACHE_BYTES + PULL_BATCH * 1024;
    figures.report(
        name,
        &format!(
            "outage_s={} slow_delay_s={} errors_500={} max_cached_per_queue={} \
             cache_count_limit={CACHE_COUNT} max_cached_bytes_per_queue={} max_cached_total={} \
             max_cached_gauge={}",
            outage.as_secs(),
            slow_delay.as_secs(),
            errors.load(Ordering::Relaxed),
            peak.queue_messages,
            peak.queue_bytes,
            peak.total_messages,
            peak.gauge_messages
        ),
    );
    assert_eq!(
        figures.dlq, 0,
        "{name}: the outage sent messages to the DLQ"
    );
    assert_eq!(dlq_sent, 0.0, "{name}: the daemon sent messages to the DLQ");
    // The same series counts the 500s' send-backs to the retry topic: proof that the name and
    // labels read above exist (a missing series reads 0).
    let retry_sent = metric_now(
        &daemon,
        "rocketmq_webhook_consumer_send_back_total",
        &[("consumer_group", group.as_str()), ("target", "retry")],
    )
    .await;
    assert!(
        errors.load(Ordering::Relaxed) == 0 || retry_sent > 0.0,
        "{name}: {} answers of 500 but no send-back to the retry topic counted",
        errors.load(Ordering::Relaxed)
    );
    assert!(
        peak.total_messages > 0,
        "{name}: nothing was ever cached; the outage did not hold anything back"
    );
    assert!(
        peak.queue_messages <= CACHE_COUNT,
        "{name}: a queue cached {} messages, above max_cache_count_per_queue {CACHE_COUNT}",
        peak.queue_messages
    );
    assert!(
        peak.queue_bytes <= bytes_bound,
        "{name}: a queue cached {} bytes, above the bound {bytes_bound}",
        peak.queue_bytes
    );
    // README "Observability": the gauge reports what /status shows.
    assert!(
        peak.gauge_messages > 0.0,
        "{name}: /status showed up to {} cached messages but the \
         rocketmq_webhook_process_queue_cached_messages gauge never left 0",
        peak.total_messages
    );
    daemon.sigterm();
    daemon.wait_exit(Duration::from_secs(30)).await;
}

/// `max_cache_count_per_subscription` is shared by the queues a member holds: with the endpoint
/// down and messages arriving on 8 queues, the whole subscription caches no more than the
/// limit (the default per-queue limit of 1,000 alone would allow 8,000), and everything held
/// back is delivered once the endpoint returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_cache_limit_is_shared_by_the_queues() {
    let name = "subscription_cache_limit";
    const QUEUES: u16 = 8;
    const LIMIT: u64 = 40;
    let mq = RocketMq::start().await;
    let topic = unique("T_sublimit");
    let group = unique("G_sublimit");
    mq.create_topic(&topic, QUEUES).await;
    let (receiver, ledger) = accepting_receiver().await;
    let launch = Conf::new(&mq.namesrv_addr(), &group, &topic, receiver.url("/hook"))
        .sub(&format!("max_cache_count_per_subscription: {LIMIT}"))
        .launch();
    let mut daemon = Daemon::start(&launch).await;
    let mut load = Load::steady(mq.producer(), &topic);
    let peak = Cache::peak_during_outage(&receiver, &daemon, &group).await;
    receiver.resume().await;
    load.stop().await;
    ledger
        .wait_all(&load, drain_limit(), async || daemon.output_tail(40))
        .await;
    eprintln!(
        "{name}: produced={} peak_cached_total={} peak_cached_queue={} limit={LIMIT}",
        load.produced().len(),
        peak.total_messages,
        peak.queue_messages
    );
    assert_cache_limit_held(
        name,
        peak.total_messages,
        LIMIT,
        "the subscription, above max_cache_count_per_subscription",
    );
    daemon.sigterm();
    daemon.wait_exit(Duration::from_secs(30)).await;
}

/// `cache.max_count` bounds the whole process: with the endpoint down and messages arriving for
/// two subscriptions of 8 queues each, the daemon caches no more than the limit, although each
/// subscription's own default limit alone would allow 10,000; everything held back is delivered
/// once the endpoint returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_cache_limit_is_shared_by_the_subscriptions() {
    let name = "process_cache_limit";
    const QUEUES: u16 = 8;
    const LIMIT: u64 = 40;
    let mq = RocketMq::start().await;
    let [(topic_a, group_a), (topic_b, group_b)] = two_topics(&mq, "proclim", QUEUES).await;
    let (receiver, ledger) = accepting_receiver().await;
    let launch = Conf::new(&mq.namesrv_addr(), &group_a, &topic_a, receiver.url("/a"))
        .top(&format!("cache:\n  max_count: {LIMIT}"))
        .also(&group_b, &topic_b, receiver.url("/b"))
        .launch();
    let mut daemon = Daemon::start(&launch).await;
    let mut load_a = Load::steady(mq.producer(), &topic_a);
    let mut load_b = Load::steady(mq.producer(), &topic_b);
    let peak = Cache::peak_during_outage(&receiver, &daemon, &group_a).await;
    let status = daemon.status().await;
    receiver.resume().await;
    load_a.stop().await;
    load_b.stop().await;
    ledger
        .wait_all(&load_a, drain_limit(), async || daemon.output_tail(40))
        .await;
    ledger
        .wait_all(&load_b, drain_limit(), async || daemon.output_tail(40))
        .await;
    eprintln!(
        "{name}: produced={}+{} peak_cached_process={} peak_taken={} limit={LIMIT} cache={}",
        load_a.produced().len(),
        load_b.produced().len(),
        peak.process_messages,
        peak.process_taken,
        status["cache"]
    );
    assert_eq!(
        status["cache"]["max_messages"].as_u64(),
        Some(LIMIT),
        "{status}"
    );
    let shared_by = status["cache"]["queues"].as_u64().unwrap_or(0);
    assert!(
        shared_by >= 2 * u64::from(QUEUES),
        "{name}: /status says {shared_by} queues share the cache; the two subscriptions hold \
         at least {}",
        2 * QUEUES
    );
    // The pool counts pulls in flight and whole pull answers, so what it has taken reaches the
    // limit while fewer messages may be cached.
    assert_cache_limit_held(
        name,
        peak.process_taken,
        LIMIT,
        "the daemon's pool, above cache.max_count",
    );
    assert!(
        peak.process_messages <= LIMIT,
        "{name}: {} messages were cached by the daemon, above cache.max_count {LIMIT}",
        peak.process_messages
    );
    daemon.sigterm();
    daemon.wait_exit(Duration::from_secs(30)).await;
}

/// A process cache crowded by many queues (64 messages for 18 queues: an even share of 3) still
/// pulls in batches worth a round trip: a queue with a backlog takes a full pull's room from the
/// common pool, queues take turns, and everything is delivered. Once the backlog is gone, every
/// queue's idle long poll fits in the pool at once, so no queue is left waiting for room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowded_process_cache_still_pulls_whole_batches() {
    let name = "crowded_cache";
    const QUEUES: u16 = 8;
    const LIMIT: u64 = 64;
    let mq = RocketMq::start().await;
    let [(topic_a, group_a), (topic_b, group_b)] = two_topics(&mq, "crowd", QUEUES).await;
    // The backlog goes in before the daemon starts, so every queue has one from the start.
    let mut load_a = Load::start(
        mq.producer(),
        &topic_a,
        Shape::Spread,
        32,
        Duration::from_millis(10),
    );
    let mut load_b = Load::start(
        mq.producer(),
        &topic_b,
        Shape::Spread,
        32,
        Duration::from_millis(10),
    );
    sleep(Duration::from_millis(1500)).await;
    load_a.stop().await;
    load_b.stop().await;
    let produced = load_a.produced().len() + load_b.produced().len();
    assert!(
        produced >= 1000,
        "{name}: only {produced} messages were preloaded"
    );
    let (receiver, ledger) = accepting_receiver().await;
    let launch = Conf::new(&mq.namesrv_addr(), &group_a, &topic_a, receiver.url("/a"))
        .top(&format!("cache:\n  max_count: {LIMIT}"))
        .also(&group_b, &topic_b, receiver.url("/b"))
        .launch();
    let mut daemon = Daemon::start(&launch).await;
    let mut peak_taken = 0;
    let deadline = Instant::now() + drain_limit();
    while ledger.unique_count() < produced && Instant::now() < deadline {
        let status = daemon.status().await;
        peak_taken = peak_taken.max(status["cache"]["taken"].as_u64().unwrap_or(0));
        sleep(Duration::from_millis(100)).await;
    }
    ledger
        .wait_all(&load_a, Duration::from_secs(1), async || {
            daemon.output_tail(40)
        })
        .await;
    ledger
        .wait_all(&load_b, Duration::from_secs(1), async || {
            daemon.output_tail(40)
        })
        .await;
    let pulls = metric_now(&daemon, "rocketmq_webhook_pull_duration_seconds_count", &[]).await;
    let per_pull = produced as f64 / pulls.max(1.0);
    // Idle now: give every queue time to send its long poll.
    sleep(Duration::from_secs(3)).await;
    let status = daemon.status().await;
    let waiting: Vec<String> = status["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|sub| sub["stats"]["queues"].as_object().into_iter().flatten())
        .filter(|(_, q)| q["paused"].as_str().is_some_and(|p| p.contains("room")))
        .map(|(mq, q)| format!("{mq}: {}", q["paused"]))
        .collect();
    eprintln!(
        "{name}: produced={produced} pulls={pulls} msgs/pull={per_pull:.1} peak_taken={peak_taken} \
         idle cache={}",
        status["cache"]
    );
    assert!(
        peak_taken <= LIMIT,
        "{name}: {peak_taken} messages were taken from a pool of {LIMIT}"
    );
    // An even share would pull 1 to 3 messages at a time.
    assert!(
        per_pull >= 8.0,
        "{name}: {per_pull:.1} messages per pull ({produced} in {pulls} pulls); a queue with a \
         backlog should pull most of a batch of 32"
    );
    assert!(
        waiting.is_empty(),
        "{name}: idle queues wait for room in the cache: {waiting:?}; idle long polls should \
         ask for an even share only ({})",
        status["cache"]
    );
    let idle_taken = status["cache"]["taken"].as_u64().unwrap_or(u64::MAX);
    assert!(
        idle_taken <= LIMIT,
        "{name}: idle, {idle_taken} of {LIMIT} taken"
    );
    daemon.sigterm();
    daemon.wait_exit(Duration::from_secs(30)).await;
}

/// Two new topics of `queues` queues and a group for each, as (topic, group) pairs named after
/// `tag`: the two subscriptions of the process-cache tests.
async fn two_topics(mq: &RocketMq, tag: &str, queues: u16) -> [(String, String); 2] {
    let pairs = ["A", "B"].map(|side| {
        (
            unique(&format!("T_{tag}{side}")),
            unique(&format!("G_{tag}{side}")),
        )
    });
    for (topic, _) in &pairs {
        mq.create_topic(topic, queues).await;
    }
    pairs
}

/// The peak of cached messages came near `limit` (else the run showed nothing) and stayed
/// within it; `what` names who cached them and the limit in the message.
fn assert_cache_limit_held(name: &str, peak: u64, limit: u64, what: &str) {
    assert!(
        peak >= limit / 2,
        "{name}: at most {peak} messages were ever cached during the outage; the limit {limit} \
         was not reached, so this run shows nothing"
    );
    assert!(
        peak <= limit,
        "{name}: {peak} messages were cached by {what} {limit}"
    );
}

/// What the daemon holds in its process queues now.
#[derive(Debug, Default, Clone, Copy)]
struct Cache {
    /// Most messages cached by one queue (`/status`).
    queue_messages: u64,
    /// Most bytes cached by one queue (`/status`).
    queue_bytes: u64,
    /// Messages cached by the first subscription (`/status`).
    total_messages: u64,
    /// Messages cached by every subscription together (`/status`).
    process_messages: u64,
    /// Messages taken from the process pool (`/status` `cache.taken`): cached, counted by whole
    /// pull answer, plus pulls in flight.
    process_taken: u64,
    /// The `rocketmq_webhook_process_queue_cached_messages` gauge, summed.
    gauge_messages: f64,
}

impl Cache {
    async fn now(daemon: &Daemon, group: &str) -> Self {
        let status = daemon.status().await;
        let mut out = Self::default();
        if let Some(queues) = status["subscriptions"][0]["stats"]["queues"].as_object() {
            for q in queues.values() {
                let m = q["cached_messages"].as_u64().unwrap_or(0);
                let b = q["cached_bytes"].as_u64().unwrap_or(0);
                out.queue_messages = out.queue_messages.max(m);
                out.queue_bytes = out.queue_bytes.max(b);
                out.total_messages += m;
            }
        }
        for sub in status["subscriptions"].as_array().into_iter().flatten() {
            for q in sub["stats"]["queues"].as_object().into_iter().flatten() {
                out.process_messages += q.1["cached_messages"].as_u64().unwrap_or(0);
            }
        }
        out.process_taken = status["cache"]["taken"].as_u64().unwrap_or(0);
        out.gauge_messages = metric(
            &daemon.metrics().await,
            "rocketmq_webhook_process_queue_cached_messages",
            &[("consumer_group", group)],
        );
        out
    }

    /// After 3 s of delivery, stops the endpoint and samples the cache for 6 s; the endpoint
    /// stays down.
    async fn peak_during_outage(receiver: &Receiver, daemon: &Daemon, group: &str) -> Self {
        sleep(Duration::from_secs(3)).await;
        receiver.stop().await;
        let mut peak = Self::default();
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            peak = peak.max(Self::now(daemon, group).await);
            sleep(Duration::from_millis(200)).await;
        }
        peak
    }

    fn max(self, other: Self) -> Self {
        Self {
            queue_messages: self.queue_messages.max(other.queue_messages),
            queue_bytes: self.queue_bytes.max(other.queue_bytes),
            total_messages: self.total_messages.max(other.total_messages),
            process_messages: self.process_messages.max(other.process_messages),
            process_taken: self.process_taken.max(other.process_taken),
            gauge_messages: self.gauge_messages.max(other.gauge_messages),
        }
    }
}

// === scenario 4: members join and leave ===

async fn churn_scenario(members: usize) {
    let name = format!("group_churn_{members}");
    let churn = size(Duration::from_secs(16), Duration::from_secs(90));
    let mq = RocketMq::start().await;
    let topic = unique(&format!("T_churn{members}"));
    let group = unique(&format!("G_churn{members}"));
    mq.create_topic(&topic, 8).await;
    let (receiver, ledger) = accepting_receiver().await;
    let launch = Conf::new(&mq.namesrv_addr(), &group, &topic, receiver.url("/hook")).launch();
    let rss = Rss::default();
    let mut slots: Vec<Option<Daemon>> = Vec::new();
    for _ in 0..members {
        slots.push(Some(Daemon::start(&launch).await));
    }
    let mut load = Load::steady(mq.producer(), &topic);
    let until = Instant::now() + churn;
    let (mut joins, mut leaves, mut kills) = (0, 0, 0);
    // The random schedule goes on past `until` (for at most a minute) until it has had a clean
    // leave, a crash and a join: a short run could otherwise end without a crash.
    let give_up = until + Duration::from_secs(60);
    while Instant::now() < until
        || ((joins == 0 || leaves == 0 || kills == 0) && Instant::now() < give_up)
    {
        sleep(random_between(
            Duration::from_millis(1500),
            Duration::from_millis(3500),
        ))
        .await;
        let running = slots.iter().filter(|s| s.is_some()).count();
        let slot = rand::rng().random_range(0..members);
        match slots[slot].take() {
            Some(mut daemon) if running > 1 => {
                rss.sample(&daemon);
                // Most members leave cleanly; the second to go, and every third after it,
                // crashes.
                if (leaves + kills) % 3 == 1 {
                    daemon.sigkill();
                    kills += 1;
                } else {
                    daemon.sigterm();
                    leaves += 1;
                }
                let status = daemon.wait_exit(Duration::from_secs(30)).await;
                let output = daemon.output();
                assert!(
                    !output.contains("panicked"),
                    "{name}: a member panicked ({status}):\n{output}"
                );
            }
            Some(daemon) => slots[slot] = Some(daemon),
            None => {
                slots[slot] = Some(Daemon::start(&launch).await);
                joins += 1;
            }
        }
    }
    assert!(
        joins > 0 && leaves > 0 && kills > 0,
        "{name}: the schedule had joins={joins} leaves={leaves} kills={kills}; every kind is needed"
    );
    load.stop().await;
    let tails = || {
        slots
            .iter()
            .flatten()
            .map(|d| d.output_tail(20))
            .collect::<Vec<_>>()
            .join("\n")
    };
    ledger
        .wait_all(&load, drain_limit(), async || tails())
        .await;
    for daemon in slots.iter().flatten() {
        rss.sample(daemon);
    }
    let figures = Figures::compute(
        &load.produced(),
        &ledger.snapshot(),
        mq.dlq_count(&group).await,
        rss.max(),
    );
    figures.report(
        &name,
        &format!("members={members} joins={joins} leaves={leaves} kills={kills}"),
    );
    assert_eq!(figures.dlq, 0, "{name}: nothing may reach the DLQ");
    for daemon in slots.iter_mut().flatten() {
        daemon.sigterm();
    }
    for daemon in slots.iter_mut().flatten() {
        daemon.wait_exit(Duration::from_secs(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_joining_and_leaving() {
    churn_scenario(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_joining_and_leaving() {
    churn_scenario(3).await;
}
