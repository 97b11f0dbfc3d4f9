//! End-to-end tests of the `rocketmq-webhook run` daemon: the real binary as a child process
//! (tests/support/daemon.rs), a real name server and broker (tests/support/rocketmq.rs) and a
//! real HTTP endpoint that records requests and answers from a script (tests/support/http.rs).
//!
//! They check the product contract of architecture.md sections 4-6 from the outside: the JSON
//! envelope, how answers map to success / retry / DLQ, `Retry-After`, an outage, timeouts,
//! Standard Webhooks signatures and CloudEvents (verified with the Python reference libraries,
//! tests/python/), configuration errors, env-only configuration, SIGTERM draining, `/metrics`
//! and `/status`.
//!
//! Each test starts its own broker and uses unique names; every wait has a deadline.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rocketmq_webhook::client::producer::{QueueSelector, SendResult};
use rocketmq_webhook::consumer::{HolderPhase, LocalFileStore};
use rocketmq_webhook::remoting::message::Message;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

use support::daemon::{metric, Daemon, Launch};
use support::http::{body_of, messages, Receiver, Reply, Request};
use support::{unique, RocketMq};

/// Standard Webhooks' example secret (`whsec_` + base64 key).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// === helpers ===

/// One subscription of a test configuration.
struct Sub {
    group: String,
    topic: String,
    url: String,
    /// Extra `key: value` lines of the subscription entry.
    extra: Vec<String>,
    /// Extra `key: value` lines of its `webhook:` block.
    webhook: Vec<String>,
}

impl Sub {
    fn new(group: &str, topic: &str, url: String) -> Self {
        Self {
            group: group.to_owned(),
            topic: topic.to_owned(),
            url,
            extra: Vec::new(),
            webhook: Vec::new(),
        }
    }

    fn with(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    /// BROADCASTING, its offsets under `store`.
    fn broadcasting(self, store: &std::path::Path) -> Self {
        self.with("message_model: BROADCASTING")
            .with(&format!("offset_store_path: \"{}\"", store.display()))
    }

    fn with_webhook(mut self, line: &str) -> Self {
        self.webhook.push(line.to_owned());
        self
    }
}

/// A listener posing as the name server, to show a daemon never connected to it: nothing
/// accepts, so connections wait in its backlog for [`assert_never_connected`].
fn watched_namesrv() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    listener
}

/// Panics with `what` if anything connected to `namesrv` (see [`watched_namesrv`]).
fn assert_never_connected(namesrv: &std::net::TcpListener, what: &str) {
    assert!(namesrv.accept().is_err(), "{what}");
}

/// A YAML configuration with short intervals (rebalance 2 s, offsets persisted every second,
/// webhook timeout 3 s) so tests converge in seconds.
fn yaml(namesrv: &str, subs: &[Sub]) -> String {
    let mut out = format!(
        "namesrv_addr: \"{namesrv}\"\n\
         client:\n  rebalance_interval: 2s\n  heartbeat_interval: 5s\n  poll_name_server_interval: 5s\n\
         shutdown:\n  grace_period: 10s\n\
         subscriptions:\n"
    );
    for s in subs {
        out.push_str(&format!(
            "  - group: \"{}\"\n    topic: \"{}\"\n    consume_from: FIRST_OFFSET\n    persist_interval: 1s\n",
            s.group, s.topic
        ));
        for line in &s.extra {
            out.push_str(&format!("    {line}\n"));
        }
        out.push_str(&format!("    webhook:\n      url: \"{}\"\n", s.url));
        if !s.webhook.iter().any(|l| l.starts_with("timeout:")) {
            out.push_str("      timeout: 3s\n");
        }
        for line in &s.webhook {
            out.push_str(&format!("      {line}\n"));
        }
    }
    out
}

/// How often each body was delivered.
fn deliveries(requests: &[Request]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in messages(requests) {
        *out.entry(body_of(&m)).or_insert(0) += 1;
    }
    out
}

/// The set of bodies delivered with `reconsumeTimes == times`.
fn bodies_with_reconsume(requests: &[Request], times: i64) -> BTreeSet<String> {
    messages(requests)
        .iter()
        .filter(|m| m["reconsumeTimes"].as_i64() == Some(times))
        .map(body_of)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Sends `bodies` one by one, round robin over the queues.
async fn produce(mq: &RocketMq, topic: &str, bodies: &[&str]) -> Vec<SendResult> {
    let producer = mq.producer();
    let mut out = Vec::new();
    for body in bodies {
        out.push(
            producer
                .send(
                    Message::new(topic, body.to_string()),
                    &QueueSelector::RoundRobin,
                )
                .await
                .unwrap_or_else(|e| panic!("send {body} to {topic}: {e}")),
        );
    }
    out
}

/// Sends `messages` as one batch (one queue, consecutive offsets, visible to a pull at once).
async fn produce_batch(mq: &RocketMq, messages: Vec<Message>) {
    mq.producer()
        .send_batch(messages, &QueueSelector::RoundRobin)
        .await
        .unwrap_or_else(|e| panic!("batch send failed: {e}"));
}

/// The bodies in `%DLQ%<group>` queue 0 right now (empty when the topic does not exist).
async fn dlq_bodies(mq: &RocketMq, group: &str) -> Vec<String> {
    mq.dlq_bodies(group).await
}

/// The bodies in `%DLQ%<group>` once there are any (polled for up to 30 s; empty if none came).
async fn first_dlq_bodies(mq: &RocketMq, group: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dlq = dlq_bodies(mq, group).await;
        if !dlq.is_empty() || Instant::now() >= deadline {
            return dlq;
        }
        sleep(Duration::from_millis(300)).await;
    }
}

/// Polls `/metrics` every 200 ms until `check` holds; returns the text.
async fn wait_metrics(
    daemon: &Daemon,
    limit: Duration,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = daemon.metrics().await;
        if check(&text) {
            return text;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for metrics: {what}\n{text}");
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// The Python interpreter of the verifier environment: `$ROCKETMQ_TEST_PYTHON`, else the last
/// line printed by scripts/python-tools.sh (which creates `.tools/venv` when missing).
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("ROCKETMQ_TEST_PYTHON").filter(|p| !p.is_empty()) {
                return PathBuf::from(p);
            }
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/python-tools.sh");
            let out = std::process::Command::new(&script)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} failed ({}); the verifier tests need Python 3 with venv and pip:\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let last = stdout.lines().last().unwrap_or_default().trim().to_owned();
            assert!(
                !last.is_empty(),
                "{} printed no python path",
                script.display()
            );
            PathBuf::from(last)
        })
        .clone()
}

/// What a verifier script printed.
#[derive(Debug)]
struct PyOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for PyOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs tests/python/`script` with `args`, the requests as JSON on stdin.
async fn run_python(script: &str, args: &[&str], requests: &[(Value, Vec<u8>)]) -> PyOutput {
    use tokio::io::AsyncWriteExt as _;
    let input: Vec<Value> = requests
        .iter()
        .map(|(headers, body)| json!({"headers": headers, "body_base64": BASE64.encode(body)}))
        .collect();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut child = tokio::process::Command::new(python())
        .arg(&path)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(Value::from(input).to_string().as_bytes())
        .await
        .expect("write to the verifier");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    PyOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `count` subscriptions, each to its own new 4-queue topic and delivering to `/s<i>`.
async fn topics_and_subscriptions(
    mq: &RocketMq,
    receiver: &Receiver,
    prefix: &str,
    count: usize,
) -> Vec<Sub> {
    let mut subs = Vec::new();
    for i in 0..count {
        let topic = unique(&format!("T_{prefix}{i}"));
        mq.create_topic(&topic, 4).await;
        subs.push(Sub::new(
            &unique(&format!("G_{prefix}{i}")),
            &topic,
            receiver.url(&format!("/s{i}")),
        ));
    }
    subs
}

/// Sends `per_topic` messages to the topic of each subscription; returns every body.
async fn produce_to_each(mq: &RocketMq, subs: &[Sub], per_topic: usize) -> Vec<String> {
    let mut all = Vec::new();
    for sub in subs {
        let bodies: Vec<String> = (0..per_topic)
            .map(|n| format!("{}-{n}", sub.topic))
            .collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        produce(mq, &sub.topic, &refs).await;
        all.extend(bodies);
    }
    all
}

/// Starts a broker, a receiver and a topic with `queues` queues.
async fn setup(prefix: &str, queues: u16) -> (RocketMq, Receiver, String, String) {
    let mq = RocketMq::start().await;
    let topic = unique(&format!("T_{prefix}"));
    let group = unique(&format!("G_{prefix}"));
    mq.create_topic(&topic, queues).await;
    let receiver = Receiver::start().await;
    (mq, receiver, topic, group)
}

// === 1. delivery and the JSON envelope ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_the_json_envelope_with_every_documented_field() {
    let (mq, receiver, topic, group) = setup("json", 2).await;
    let started_ms = now_ms();
    let daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook"))],
    )))
    .await;

    let producer = mq.producer();
    let mut sent = Vec::new();
    for i in 0..3 {
        let message = Message::new(&topic, format!("hello-{i}"))
            .with_tags("TagA")
            .with_keys([format!("key-{i}")])
            .with_property("color", "blue");
        sent.push(
            producer
                .send(message, &QueueSelector::RoundRobin)
                .await
                .unwrap_or_else(|e| panic!("send: {e}")),
        );
    }
    let requests = receiver
        .wait_until(Duration::from_secs(60), "3 messages delivered", |r| {
            deliveries(r).len() == 3
        })
        .await;

    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/hook");
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("rocketmq-topic"), Some(topic.as_str()));
    assert_eq!(
        first.header("rocketmq-consumer-group"),
        Some(group.as_str())
    );
    for r in &requests {
        let envelope = r.json();
        assert_eq!(envelope["topic"], json!(topic), "{envelope}");
        assert_eq!(envelope["consumerGroup"], json!(group), "{envelope}");
        let count = envelope["messages"].as_array().map_or(0, Vec::len);
        assert_eq!(
            r.header("rocketmq-message-count"),
            Some(count.to_string().as_str())
        );
    }
    let delivered = messages(&requests);
    assert_eq!(
        deliveries(&requests).values().copied().collect::<Vec<_>>(),
        vec![1, 1, 1],
        "each message exactly once: {delivered:?}"
    );
    let now = now_ms();
    for (i, s) in sent.iter().enumerate() {
        let body = format!("hello-{i}");
        let m = delivered
            .iter()
            .find(|m| body_of(m) == body)
            .unwrap_or_else(|| panic!("{body} not delivered: {delivered:?}"));
        assert_eq!(m["msgId"], json!(s.msg_id), "{m}");
        assert_eq!(m["offsetMsgId"], json!(s.offset_msg_id), "{m}");
        assert_eq!(m["topic"], json!(topic), "{m}");
        assert_eq!(m["queueId"], json!(s.queue.queue_id), "{m}");
        assert_eq!(m["brokerName"], json!(mq.broker_name()), "{m}");
        assert_eq!(m["queueOffset"], json!(s.queue_offset), "{m}");
        assert_eq!(m["tags"], json!("TagA"), "{m}");
        assert_eq!(m["keys"], json!(format!("key-{i}")), "{m}");
        assert_eq!(m["reconsumeTimes"], json!(0), "{m}");
        let born = m["bornTimestamp"].as_i64().unwrap_or(-1);
        let stored = m["storeTimestamp"].as_i64().unwrap_or(-1);
        assert!(
            (started_ms - 60_000..=now + 60_000).contains(&born),
            "bornTimestamp {born} not near the test's clock: {m}"
        );
        assert!(
            (started_ms - 60_000..=now + 60_000).contains(&stored),
            "storeTimestamp {stored} not near the test's clock: {m}"
        );
        let born_host: std::net::SocketAddr = m["bornHost"]
            .as_str()
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| panic!("bornHost is not an address: {m}"));
        assert!(born_host.ip().is_loopback(), "{m}");
        assert_eq!(m["storeHost"], json!(mq.broker_addr()), "{m}");
        assert_eq!(m["properties"]["color"], json!("blue"), "{m}");
        assert_eq!(m["properties"]["UNIQ_KEY"], json!(s.msg_id), "{m}");
        assert!(
            m.get("bodyBase64").is_none(),
            "text bodies go in `body`: {m}"
        );
    }
    drop(daemon);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// === 2. {"status":"RETRY"} ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_answer_is_redelivered_with_a_higher_reconsume_count() {
    let (mq, receiver, topic, group) = setup("retry", 2).await;
    // The first delivery is answered RETRY (Dapr style), later ones succeed.
    receiver.respond(|r| {
        let first = messages(std::slice::from_ref(r))
            .iter()
            .any(|m| m["reconsumeTimes"] == json!(0));
        if first {
            Reply::json(&json!({"status": "RETRY"}))
        } else {
            Reply::ok()
        }
    });
    let _daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook"))],
    )))
    .await;
    let sent = produce(&mq, &topic, &["again-0"]).await;

    // Default delay level 3 + reconsumeTimes: the broker redelivers after about 10 s.
    let requests = receiver
        .wait_until(
            Duration::from_secs(90),
            "again-0 redelivered with reconsumeTimes 1",
            |r| bodies_with_reconsume(r, 1).contains("again-0"),
        )
        .await;
    let delivered = messages(&requests);
    let redelivered = delivered
        .iter()
        .find(|m| m["reconsumeTimes"] == json!(1))
        .expect("found above");
    assert_eq!(redelivered["msgId"], json!(sent[0].msg_id), "{redelivered}");
    assert_eq!(
        redelivered["topic"],
        json!(topic),
        "the real topic, not %RETRY%: {redelivered}"
    );
    assert_eq!(
        bodies_with_reconsume(&requests, 0),
        set(&["again-0"]),
        "{delivered:?}"
    );
}

// === 2b. orderly, one request per message ===

/// Orderly with a one-message-per-request format: a failing message stops the rest of its batch
/// (sent in order, so they are not attempted), the queue pauses for the suspend time between
/// attempts, the message reaches the DLQ once after its last attempt, and the queue moves on.
/// Before the fix the batch's unattempted messages cut the pause to 10 ms, and once the message
/// was dead-lettered the batch was rolled back with it: it was offered, and dead-lettered,
/// again and again, and the queue never got past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_message_out_of_attempts_is_dead_lettered_once_and_the_queue_moves_on() {
    let (mq, receiver, topic, group) = setup("orderly_poison", 1).await;
    receiver.respond(|r| {
        if &r.body[..] == b"poison" {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let _daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook"))
            .with("consume_mode: ORDERLY")
            .with("consume_batch_size: 4")
            .with("max_reconsume_times: 2")
            .with_webhook("format: raw")],
    )))
    .await;
    let bodies = ["a", "poison", "b", "c", "d", "e"];
    produce_batch(
        &mq,
        bodies.iter().map(|b| Message::new(&topic, *b)).collect(),
    )
    .await;

    receiver
        .wait_until(Duration::from_secs(60), "e delivered", |r| {
            r.iter().any(|q| &q.body[..] == b"e")
        })
        .await;
    // Waits for the DLQ to hold the message (checked below, once nothing more can come).
    first_dlq_bodies(&mq, &group).await;
    // Anything still to come would come within a few pauses.
    sleep(Duration::from_secs(3)).await;
    let requests = receiver.requests();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        *counts
            .entry(String::from_utf8_lossy(&r.body).into_owned())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = bodies
        .iter()
        .map(|b| ((*b).to_owned(), if *b == "poison" { 3 } else { 1 }))
        .collect();
    assert_eq!(
        counts, expected,
        "poison is tried 1 + max_reconsume_times times, everything else once"
    );
    let attempts: Vec<&Request> = requests
        .iter()
        .filter(|r| &r.body[..] == b"poison")
        .collect();
    let times: Vec<Option<&str>> = attempts
        .iter()
        .map(|r| r.header("rocketmq-reconsume-times"))
        .collect();
    assert_eq!(times, [Some("0"), Some("1"), Some("2")]);
    for pair in attempts.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(800),
            "attempts {gap:?} apart; suspend_current_queue_time is 1s"
        );
    }
    assert_eq!(
        dlq_bodies(&mq, &group).await,
        ["poison"],
        "%DLQ%{group} holds the message once"
    );
}

// === 2c. a stored body that does not inflate ===

/// Brokers store what producers send without checking it. A message whose sysFlag says
/// compressed over a body that is not (a producer bug) cannot be delivered: it goes to the DLQ,
/// and the messages around it are delivered. Before the fix the whole pull failed, every 3 s,
/// and the queue never moved past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_inflate_is_dead_lettered_and_the_queue_moves_on() {
    let (mq, receiver, topic, group) = setup("undecodable", 1).await;
    let _daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook"))],
    )))
    .await;
    produce(&mq, &topic, &["before"]).await;
    mq.send_undecodable(&topic, "not zlib").await;
    produce(&mq, &topic, &["after"]).await;

    receiver
        .wait_until(Duration::from_secs(60), "before and after", |r| {
            let d = deliveries(r);
            d.contains_key("before") && d.contains_key("after")
        })
        .await;
    let dlq = first_dlq_bodies(&mq, &group).await;
    assert_eq!(dlq, ["not zlib"], "%DLQ%{group} holds the stored message");
    let delivered = deliveries(&receiver.requests());
    assert!(
        !delivered.keys().any(|b| b.contains("zlib")),
        "the undecodable body reached the endpoint: {delivered:?}"
    );
}

// === 3. per-message statuses in a batch ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_statuses_redeliver_only_the_failed_messages() {
    // One queue, so the four messages of one send are pulled and delivered as one batch.
    let (mq, receiver, topic, group) = setup("statuses", 1).await;
    receiver.respond(|r| {
        let msgs = messages(std::slice::from_ref(r));
        if msgs.iter().all(|m| m["reconsumeTimes"] != json!(0)) {
            return Reply::json(&json!({"status": "SUCCESS"}));
        }
        let statuses: Vec<Value> = msgs
            .iter()
            .filter_map(|m| {
                let id = m["msgId"].clone();
                match body_of(m).split('-').next() {
                    Some("ok") => Some(json!({"id": id, "status": "SUCCESS"})),
                    // Dapr's field name is accepted too.
                    Some("dapr") => Some(json!({"entryId": id, "status": "SUCCESS"})),
                    Some("fail") => Some(json!({"id": id, "status": "RETRY", "delayLevel": 1})),
                    // "miss": left out of the answer, which means RETRY.
                    _ => None,
                }
            })
            .collect();
        Reply::json(&json!({ "statuses": statuses }))
    });
    let _daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook")).with("consume_batch_size: 8")],
    )))
    .await;
    produce_batch(
        &mq,
        ["ok-0", "fail-1", "dapr-2", "miss-3"]
            .iter()
            .map(|b| Message::new(&topic, b.to_string()))
            .collect(),
    )
    .await;

    let requests = receiver
        .wait_until(
            Duration::from_secs(90),
            "fail-1 and miss-3 redelivered",
            |r| bodies_with_reconsume(r, 1) == set(&["fail-1", "miss-3"]),
        )
        .await;
    let largest = requests
        .iter()
        .map(|r| messages(std::slice::from_ref(r)).len())
        .max()
        .unwrap_or(0);
    assert!(
        largest > 1,
        "the messages were never delivered as a batch, so per-message statuses were not exercised:\n{}",
        support::http::summary(&requests)
    );
    // Give a wrongly retried message the same time to come back as the failed ones had.
    sleep(Duration::from_secs(2)).await;
    let requests = receiver.requests();
    let counts = deliveries(&requests);
    assert_eq!(counts.get("ok-0"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("dapr-2"), Some(&1), "{counts:?}");
    assert_eq!(
        bodies_with_reconsume(&requests, 1),
        set(&["fail-1", "miss-3"]),
        "only the failed messages come back"
    );
}

// === 4. 500 retries, 404 dead-letters ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500_is_retried_and_404_goes_to_the_dlq() {
    let (mq, receiver, topic, group) = setup("codes", 2).await;
    receiver.respond(|r| {
        let msgs = messages(std::slice::from_ref(r));
        let Some(m) = msgs.first() else {
            return Reply::status(400);
        };
        match (body_of(m).as_str(), m["reconsumeTimes"].as_i64()) {
            ("five-0", Some(0)) => Reply::status(500).with_body("boom"),
            ("gone-0", _) => Reply::status(404),
            _ => Reply::ok(),
        }
    });
    let _daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook"))],
    )))
    .await;
    produce(&mq, &topic, &["five-0", "gone-0", "fine-0"]).await;

    let requests = receiver
        .wait_until(
            Duration::from_secs(90),
            "five-0 redelivered after the 500",
            |r| bodies_with_reconsume(r, 1).contains("five-0"),
        )
        .await;
    let counts = deliveries(&requests);
    assert_eq!(
        counts.get("gone-0"),
        Some(&1),
        "404 is not retried: {counts:?}"
    );
    assert_eq!(counts.get("fine-0"), Some(&1), "{counts:?}");

    let dlq = first_dlq_bodies(&mq, &group).await;
    assert_eq!(
        dlq,
        vec!["gone-0".to_owned()],
        "%DLQ%{group} holds the 404 only"
    );
}

// === 5. 429 + Retry-After ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_pauses_without_spending_a_reconsume_attempt() {
    let (mq, receiver, topic, group) = setup("throttle", 2).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    receiver.respond(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::status(429).with_header("Retry-After", "10")
        } else {
            Reply::ok()
        }
    });
    let daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook"))],
    )))
    .await;
    let sent = produce(&mq, &topic, &["slow-down-0"]).await;

    // While the pause lasts, the metrics and /status say so (the circuit alone read "closed").
    receiver
        .wait_until(Duration::from_secs(60), "the throttled request", |r| {
            !r.is_empty()
        })
        .await;
    // The receiver records a request before it answers: the daemon may not have read the
    // 429 yet, so both are polled until they show it (the pause lasts 10 s).
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let text = daemon.metrics().await;
        let pause = metric(
            &text,
            "rocketmq_webhook_webhook_pause_seconds",
            &[("consumer_group", &group)],
        );
        let status = daemon.status().await;
        let left = status["subscriptions"][0]["pause_left_ms"]
            .as_u64()
            .unwrap_or(0);
        assert!(pause <= 10.0 && left <= 10_000, "{text}\n{status}");
        if pause > 0.0 && left > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pause never showed: {text}\n{status}"
        );
        sleep(Duration::from_millis(50)).await;
    }

    let requests = receiver
        .wait_until(Duration::from_secs(60), "a second request", |r| {
            r.len() >= 2
        })
        .await;
    let delivered = messages(&requests);
    assert_eq!(
        delivered
            .iter()
            .map(|m| (body_of(m), m["reconsumeTimes"].clone()))
            .collect::<Vec<_>>(),
        vec![
            ("slow-down-0".to_owned(), json!(0)),
            ("slow-down-0".to_owned(), json!(0))
        ],
        "the delivery after the pause spent no reconsume attempt"
    );
    assert_eq!(delivered[1]["msgId"], json!(sent[0].msg_id));
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(9900),
        "Retry-After: 10 was not honoured: the next request came {gap:?} later"
    );
    // The throttled delivery was deferred, not sent back for a retry.
    let text = wait_metrics(&daemon, Duration::from_secs(10), "one success", |t| {
        metric(
            t,
            "rocketmq_webhook_consumer_messages_total",
            &[("consumer_group", &group), ("outcome", "success")],
        ) >= 1.0
    })
    .await;
    let outcome = |o: &str| {
        metric(
            &text,
            "rocketmq_webhook_consumer_messages_total",
            &[("consumer_group", &group), ("outcome", o)],
        )
    };
    assert_eq!(outcome("retry"), 0.0, "{text}");
    assert!(outcome("later") >= 1.0, "{text}");
}

// === 6. endpoint outage ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_outage_loses_nothing_and_fills_no_dlq() {
    let (mq, receiver, topic, group) = setup("outage", 2).await;
    // One reconsume attempt only: an outage that spent attempts would show in the DLQ.
    let daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook")).with("max_reconsume_times: 1")],
    )))
    .await;
    produce(&mq, &topic, &["before-0"]).await;
    receiver
        .wait_until(Duration::from_secs(60), "before-0 delivered", |r| {
            deliveries(r).contains_key("before-0")
        })
        .await;

    // Down: connections are refused.
    receiver.stop().await;
    let outage_started = Instant::now();
    let during: Vec<String> = (0..6).map(|i| format!("during-{i}")).collect();
    let during_refs: Vec<&str> = during.iter().map(String::as_str).collect();
    produce(&mq, &topic, &during_refs).await;
    wait_metrics(
        &daemon,
        Duration::from_secs(30),
        "transport errors counted",
        |t| {
            metric(
                t,
                "rocketmq_webhook_webhook_requests_total",
                &[
                    ("consumer_group", &group),
                    ("status_class", "transport_error"),
                ],
            ) >= 1.0
        },
    )
    .await;
    let mut circuit_opened = false;
    while outage_started.elapsed() < Duration::from_secs(20) {
        let status = daemon.status().await;
        circuit_opened |= status["subscriptions"][0]["circuit"] == json!("open");
        sleep(Duration::from_millis(250)).await;
    }
    let mut problems = Vec::new();
    if !circuit_opened {
        problems.push("the circuit never opened during a 20 s outage".to_owned());
    }
    let dlq_during = dlq_bodies(&mq, &group).await;
    if !dlq_during.is_empty() {
        problems.push(format!("in the DLQ during the outage: {dlq_during:?}"));
    }

    // Up again: every message arrives (or, if the contract is broken, shows up in the DLQ).
    receiver.resume().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let (requests, dlq) = loop {
        let requests = receiver.requests();
        let dlq = dlq_bodies(&mq, &group).await;
        let seen = deliveries(&requests);
        let settled = during
            .iter()
            .all(|b| seen.contains_key(b) || dlq.contains(b));
        if settled || Instant::now() >= deadline {
            break (requests, dlq);
        }
        sleep(Duration::from_millis(300)).await;
    };
    let seen = deliveries(&requests);
    let lost: Vec<&String> = during
        .iter()
        .filter(|b| !seen.contains_key(*b) && !dlq.contains(*b))
        .collect();
    if !lost.is_empty() {
        problems.push(format!("never delivered after the outage: {lost:?}"));
    }
    if !dlq.is_empty() {
        problems.push(format!("dead-lettered by the outage: {dlq:?}"));
    }
    let spent: Vec<String> = messages(&requests)
        .iter()
        .filter(|m| m["reconsumeTimes"] != json!(0))
        .map(|m| format!("{} reconsumeTimes={}", body_of(m), m["reconsumeTimes"]))
        .collect();
    if !spent.is_empty() {
        problems.push(format!(
            "an unreachable endpoint spent reconsume attempts (delivered again through the retry topic): {spent:?}"
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        daemon.output_tail(30)
    );
}

// === 7. slow endpoint ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_times_out_and_is_retried_until_it_is_fast() {
    let (mq, receiver, topic, group) = setup("slow", 2).await;
    let slow = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&slow);
    receiver.respond(move |_| {
        if flag.load(Ordering::SeqCst) {
            Reply::ok().with_delay(Duration::from_secs(4))
        } else {
            Reply::ok()
        }
    });
    let daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook")).with_webhook("timeout: 1s")],
    )))
    .await;
    produce(&mq, &topic, &["tortoise-0"]).await;
    receiver
        .wait_until(Duration::from_secs(60), "the first (slow) request", |r| {
            !r.is_empty()
        })
        .await;
    wait_metrics(&daemon, Duration::from_secs(30), "a timeout counted", |t| {
        metric(
            t,
            "rocketmq_webhook_webhook_requests_total",
            &[("consumer_group", &group), ("status_class", "timeout")],
        ) >= 1.0
    })
    .await;
    slow.store(false, Ordering::SeqCst);
    let fast_from = receiver.requests().len();

    let text = wait_metrics(
        &daemon,
        Duration::from_secs(90),
        "the message delivered once the endpoint is fast",
        |t| {
            metric(
                t,
                "rocketmq_webhook_consumer_messages_total",
                &[("consumer_group", &group), ("outcome", "success")],
            ) >= 1.0
        },
    )
    .await;
    let requests = receiver.requests();
    assert!(
        requests.len() > fast_from,
        "no request after the endpoint became fast"
    );
    let later = messages(&requests[fast_from..]);
    assert!(
        later.iter().any(|m| body_of(m) == "tortoise-0"),
        "{later:?}"
    );
    assert!(
        metric(
            &text,
            "rocketmq_webhook_consumer_messages_total",
            &[("consumer_group", &group), ("outcome", "retry")],
        ) >= 1.0,
        "the timed-out delivery was not counted as a retry:\n{text}"
    );
}

// === 8. signatures and CloudEvents, checked by the reference Python libraries ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_and_cloudevents_verify_with_the_reference_libraries() {
    let mq = RocketMq::start().await;
    let receiver = Receiver::start().await;
    let (t_signed, t_ce, t_batch) = (unique("T_signed"), unique("T_ce"), unique("T_cebatch"));
    for t in [&t_signed, &t_ce, &t_batch] {
        mq.create_topic(t, 1).await;
    }
    let subs = [
        Sub::new(&unique("G_signed"), &t_signed, receiver.url("/signed"))
            .with_webhook(&format!("signing_secret: \"{SECRET}\"")),
        Sub::new(&unique("G_ce"), &t_ce, receiver.url("/ce")).with_webhook("format: cloudevents"),
        Sub::new(&unique("G_cebatch"), &t_batch, receiver.url("/ce-batch"))
            .with("consume_batch_size: 8")
            .with_webhook("format: cloudevents_batch"),
    ];
    let _daemon = Daemon::start(&Launch::yaml(yaml(&mq.namesrv_addr(), &subs))).await;

    let structured = json!({
        "specversion": "1.0", "id": "evt-1", "source": "/app", "type": "com.example.created",
        "datacontenttype": "application/json", "data": {"x": 1}
    })
    .to_string();
    produce(&mq, &t_signed, &["signed-0", "signed-1"]).await;
    let ce_sent = {
        let producer = mq.producer();
        let mut out = Vec::new();
        for message in [
            Message::new(&t_ce, "plain text")
                .with_tags("TagC")
                .with_keys(["k-1"]),
            Message::new(&t_ce, r#"{"n":1}"#).with_property("CONTENT_TYPE", "application/json"),
            Message::new(&t_ce, structured.clone()),
        ] {
            out.push(
                producer
                    .send(message, &QueueSelector::RoundRobin)
                    .await
                    .unwrap_or_else(|e| panic!("send: {e}")),
            );
        }
        out
    };
    produce_batch(
        &mq,
        vec![
            Message::new(&t_batch, "batch text").with_tags("TagB"),
            Message::new(&t_batch, r#"{"n":2}"#),
            Message::new(&t_batch, structured.clone()),
        ],
    )
    .await;

    let requests = receiver
        .wait_until(Duration::from_secs(60), "every request", |r| {
            let on = |p: &str| r.iter().filter(|q| q.path == p).count();
            let batch_events: usize = r
                .iter()
                .filter(|q| q.path == "/ce-batch")
                .map(|q| q.json().as_array().map_or(0, Vec::len))
                .sum();
            on("/signed") >= 2 && on("/ce") >= 3 && batch_events >= 3
        })
        .await;
    let on = |p: &str| -> Vec<(Value, Vec<u8>)> {
        requests
            .iter()
            .filter(|q| q.path == p)
            .map(|q| (q.headers_json(), q.body.to_vec()))
            .collect()
    };

    // Standard Webhooks: every signature verifies; a changed body or a wrong key does not.
    let signed = on("/signed");
    for (headers, _) in &signed {
        for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            assert!(headers.get(h).is_some(), "{h} missing: {headers}");
        }
    }
    let ok = run_python("verify_signature.py", &[SECRET], &signed).await;
    assert_eq!(ok.code, Some(0), "signatures do not verify: {ok}");
    assert_eq!(ok.stdout.lines().count(), signed.len(), "{ok}");
    let tampered: Vec<(Value, Vec<u8>)> = signed
        .iter()
        .map(|(h, b)| {
            let mut b = b.clone();
            b.push(b' ');
            (h.clone(), b)
        })
        .collect();
    let bad = run_python("verify_signature.py", &[SECRET], &tampered).await;
    assert_eq!(bad.code, Some(1), "a changed body verified: {bad}");
    let other_key = run_python(
        "verify_signature.py",
        &["whsec_dGhpcyBpcyBub3QgdGhlIGtleQ=="],
        &signed,
    )
    .await;
    assert_eq!(other_key.code, Some(1), "a wrong key verified: {other_key}");

    // CloudEvents binary mode (and a structured event forwarded as it is).
    let parsed = run_python("parse_cloudevents.py", &[], &on("/ce")).await;
    assert_eq!(parsed.code, Some(0), "the SDK rejected a request: {parsed}");
    let events: Vec<Value> = serde_json::from_str::<Vec<Vec<Value>>>(&parsed.stdout)
        .unwrap_or_else(|e| panic!("parse_cloudevents.py output ({e}): {parsed}"))
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    let by_id = |id: &str| -> &Value {
        events
            .iter()
            .find(|e| e["id"] == json!(id))
            .unwrap_or_else(|| panic!("no event with id {id}: {events:?}"))
    };
    let text = by_id(&ce_sent[0].msg_id);
    assert_eq!(text["specversion"], json!("1.0"), "{text}");
    assert_eq!(text["type"], json!("org.apache.rocketmq.message"), "{text}");
    assert_eq!(
        text["source"],
        json!(format!("rocketmq://{}/{t_ce}", mq.broker_name())),
        "{text}"
    );
    assert_eq!(text["subject"], json!("TagC"), "{text}");
    assert!(text["time"].is_string(), "{text}");
    assert_eq!(text["extensions"]["rocketmqtopic"], json!(t_ce), "{text}");
    assert_eq!(text["extensions"]["rocketmqkeys"], json!("k-1"), "{text}");
    assert_eq!(
        text["extensions"]["rocketmqqueueoffset"],
        json!(ce_sent[0].queue_offset.to_string()),
        "{text}"
    );
    let text_data = text["data_base64"]
        .as_str()
        .and_then(|d| BASE64.decode(d).ok())
        .or_else(|| text["data"].as_str().map(|d| d.as_bytes().to_vec()));
    assert_eq!(text_data.as_deref(), Some(&b"plain text"[..]), "{text}");
    let json_event = by_id(&ce_sent[1].msg_id);
    assert_eq!(json_event["datacontenttype"], json!("application/json"));
    assert_eq!(json_event["data_json"], json!({"n": 1}), "{json_event}");
    let forwarded = by_id("evt-1");
    assert_eq!(
        forwarded["type"],
        json!("com.example.created"),
        "{forwarded}"
    );
    assert_eq!(
        forwarded["data_json"],
        json!({"x": 1}),
        "not wrapped twice: {forwarded}"
    );

    // CloudEvents batch mode.
    let batch_requests = on("/ce-batch");
    for (headers, _) in &batch_requests {
        assert!(
            headers["content-type"]
                .as_str()
                .is_some_and(|ct| ct.starts_with("application/cloudevents-batch+json")),
            "{headers}"
        );
    }
    let parsed = run_python("parse_cloudevents.py", &[], &batch_requests).await;
    assert_eq!(parsed.code, Some(0), "the SDK rejected a batch: {parsed}");
    let events: Vec<Value> = serde_json::from_str::<Vec<Vec<Value>>>(&parsed.stdout)
        .unwrap_or_else(|e| panic!("parse_cloudevents.py output ({e}): {parsed}"))
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    let texts: Vec<&Value> = events
        .iter()
        .filter(|e| e["subject"] == json!("TagB"))
        .collect();
    assert_eq!(texts.len(), 1, "{events:?}");
    assert_eq!(texts[0]["data"], json!("batch text"), "{events:?}");
    assert!(
        events.iter().any(|e| e["data_json"] == json!({"n": 2})),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["id"] == json!("evt-1") && e["data_json"] == json!({"x": 1})),
        "the structured event is forwarded as the array element: {events:?}"
    );
}

// === 9. bad configuration ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_key_and_its_source_before_connecting() {
    // A name server and a webhook that must never hear from the daemon.
    let namesrv = watched_namesrv();
    let namesrv_addr = namesrv.local_addr().expect("addr").to_string();
    let receiver = Receiver::start().await;
    let good = |extra: &[&str], webhook: &[&str]| {
        let mut sub = Sub::new("G_bad", "T_bad", receiver.url("/hook"));
        for l in extra {
            sub = sub.with(l);
        }
        for l in webhook {
            sub = sub.with_webhook(l);
        }
        yaml(&namesrv_addr, &[sub])
    };
    let missing_url = format!(
        "namesrv_addr: \"{namesrv_addr}\"\nsubscriptions:\n  - group: G_bad\n    topic: T_bad\n    webhook:\n      timeout: 3s\n"
    );
    struct Case {
        name: &'static str,
        launch: Launch,
        /// Every one of these must appear in the output.
        expect: Vec<String>,
        /// Whether the config file's path must be named.
        names_file: bool,
    }
    let cases = vec![
        Case {
            name: "unknown key in the file",
            launch: Launch::yaml(good(&["consume_form: FIRST_OFFSET"], &[])),
            expect: vec!["consume_form".into(), "consume_from".into(), "line".into()],
            names_file: true,
        },
        Case {
            name: "bad value in the environment",
            launch: Launch::yaml(good(&[], &[])).env("ROCKETMQ_CONSUME_BATCH_SIZE", "lots"),
            expect: vec![
                "ROCKETMQ_CONSUME_BATCH_SIZE".into(),
                "environment".into(),
                "lots".into(),
            ],
            names_file: false,
        },
        Case {
            name: "missing webhook url",
            launch: Launch::yaml(missing_url),
            expect: vec!["webhook.url".into()],
            names_file: false,
        },
        Case {
            name: "bad webhook url",
            launch: Launch::yaml(good(&[], &[])).env(
                "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__URL",
                "ftp://example.com/hook",
            ),
            expect: vec![
                "webhook.url".into(),
                "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__URL".into(),
            ],
            names_file: false,
        },
        Case {
            name: "bad webhook url in the file",
            launch: Launch::yaml(good(&[], &[]).replace(&receiver.url("/hook"), "not a url")),
            expect: vec!["webhook.url".into(), "line".into()],
            names_file: true,
        },
        Case {
            name: "unreadable file",
            launch: Launch::file("/nonexistent/rocketmq-webhook.yaml"),
            expect: vec![
                "/nonexistent/rocketmq-webhook.yaml".into(),
                "cannot read".into(),
            ],
            names_file: false,
        },
        Case {
            name: "bad duration",
            launch: Launch::yaml(good(&[], &["retry_after_cap: soon"])),
            expect: vec!["retry_after_cap".into(), "soon".into(), "line".into()],
            names_file: true,
        },
        Case {
            name: "bare number as a duration",
            launch: Launch::yaml(
                good(&[], &[]).replace("persist_interval: 1s", "persist_interval: 5"),
            ),
            expect: vec!["persist_interval".into(), "line".into()],
            names_file: true,
        },
    ];
    let mut failures = Vec::new();
    for case in cases {
        let mut daemon = Daemon::spawn(&case.launch);
        let status = daemon.wait_exit(Duration::from_secs(15)).await;
        let output = daemon.output();
        let mut problems = Vec::new();
        if status.code() != Some(2) {
            problems.push(format!("exit status {status}, expected 2"));
        }
        for e in &case.expect {
            if !output.contains(e.as_str()) {
                problems.push(format!("output does not contain {e:?}"));
            }
        }
        if case.names_file {
            let path = daemon
                .config_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if !output.contains(&path) {
                problems.push(format!("output does not name the file {path}"));
            }
        }
        if output.contains("panicked") {
            problems.push("the daemon panicked".to_owned());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{output}", case.name, problems.join("; ")));
        }
    }
    assert_never_connected(
        &namesrv,
        "a daemon with a bad configuration connected to the name server",
    );
    assert!(
        receiver.requests().is_empty(),
        "a daemon with a bad configuration called the webhook"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// === 10. environment only ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_only_configuration_delivers() {
    let mq = RocketMq::start().await;
    let topic = unique("T_env");
    // A numeric-looking group must stay the text "0001" (figment trap); the broker is private,
    // so the fixed name is unique.
    let group = "0001";
    mq.create_topic(&topic, 2).await;
    let receiver = Receiver::start().await;
    let workers = std::thread::available_parallelism().map_or(1, usize::from) + 1;
    let launch = Launch::env_only()
        .env("ROCKETMQ_NAMESRV_ADDR", mq.namesrv_addr())
        .env("ROCKETMQ_CONSUMER_GROUP", group)
        .env("ROCKETMQ_TOPIC", topic.clone())
        .env("ROCKETMQ_WEBHOOK_URL", receiver.url("/env"))
        .env("ROCKETMQ_CONSUME_FROM_WHERE", "CONSUME_FROM_FIRST_OFFSET")
        .env("ROCKETMQ_PERSIST_INTERVAL", "1000")
        .env("ROCKETMQ_CLIENT__REBALANCE_INTERVAL", "2s")
        // One more than the default (a thread per CPU), so the check below sees the setting.
        .env("ROCKETMQ_WORKER_THREADS", workers.to_string())
        // Set by RocketMQ's own images; must be ignored.
        .env("ROCKETMQ_HOME", "/opt/rocketmq");
    let daemon = Daemon::start(&launch).await;
    produce(&mq, &topic, &["env-0", "env-1"]).await;
    let requests = receiver
        .wait_until(Duration::from_secs(60), "both messages", |r| {
            deliveries(r).len() == 2
        })
        .await;
    assert_eq!(requests[0].path, "/env");
    assert_eq!(daemon.runtime_workers(), workers, "ROCKETMQ_WORKER_THREADS");
    assert_eq!(requests[0].json()["consumerGroup"], json!(group));
    assert_eq!(requests[0].json()["topic"], json!(topic));
    let status = daemon.status().await;
    assert_eq!(
        status["subscriptions"][0]["group"],
        json!(group),
        "{status}"
    );
}

// === 10b. broadcasting offsets across restarts ===

/// A BROADCASTING subscription of daemon `pod-a` from LAST_OFFSET, its offsets under `store`.
fn pod_a_broadcasting(
    mq: &RocketMq,
    receiver: &Receiver,
    group: &str,
    topic: &str,
    store: &std::path::Path,
) -> Launch {
    let config = format!(
        "instance_name: \"pod-a\"\n{}",
        yaml(
            &mq.namesrv_addr(),
            &[Sub::new(group, topic, receiver.url("/hook")).broadcasting(store)],
        )
    )
    .replace("consume_from: FIRST_OFFSET", "consume_from: LAST_OFFSET");
    Launch::yaml(config)
}

/// A broadcasting subscription's offsets are found again by the next process: they live under
/// `<offset_store_path>/<instance_name>/<group>/`, not under a path holding the process id (a
/// new one at every restart, which replayed or skipped the topic depending on `consume_from`).
/// Messages produced while the daemon is down are delivered after the restart, once each, and
/// nothing from before is delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasting_offsets_survive_a_restart() {
    let (mq, receiver, topic, group) = setup("bcast", 2).await;
    let store = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    // LAST_OFFSET, the broadcasting default: the down-time messages arrive only if the offsets
    // are found again.
    let launch = pod_a_broadcasting(&mq, &receiver, &group, &topic, store.path());
    let mut daemon = Daemon::start(&launch).await;
    produce(&mq, &topic, &["up-0", "up-1", "up-2", "up-3"]).await;
    receiver
        .wait_until(Duration::from_secs(60), "the first four", |r| {
            deliveries(r).len() == 4
        })
        .await;
    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", daemon.output_tail(30));
    drop(daemon);
    let file = store.path().join("pod-a").join(&group).join("offsets.json");
    assert!(file.is_file(), "no offsets at {}", file.display());

    produce(&mq, &topic, &["down-0", "down-1", "down-2", "down-3"]).await;
    let before = receiver.requests().len();
    let _again = Daemon::start(&launch).await;
    receiver
        .wait_until(
            Duration::from_secs(60),
            "the messages produced while the daemon was down",
            |r| deliveries(&r[before..]).len() == 4,
        )
        .await;
    sleep(Duration::from_secs(2)).await;
    let after = deliveries(&receiver.requests()[before..]);
    let expected: BTreeMap<String, usize> = (0..4).map(|i| (format!("down-{i}"), 1)).collect();
    assert_eq!(
        after, expected,
        "after the restart: the down-time messages, once each"
    );
}

// === 11. SIGTERM ===

/// While the first SIGTERM's drain waits on the endpoint, the daemon says it is stopping (and
/// not ready); a second SIGTERM ends the process at once, with the status a process killed by
/// SIGTERM has (143), as supervisors expect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once_with_status_143() {
    let (mq, receiver, topic, group) = setup("second_signal", 1).await;
    receiver.respond(|_| Reply::ok().with_delay(Duration::from_secs(60)));
    let mut daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook")).with_webhook("timeout: 60s")],
    )))
    .await;
    produce(&mq, &topic, &["held"]).await;
    receiver
        .wait_until(Duration::from_secs(60), "the held request", |r| {
            !r.is_empty()
        })
        .await;
    daemon.sigterm();
    // The drain now waits for the held request (grace period 10 s). A draining daemon takes no
    // new work: not ready, and /status says so.
    sleep(Duration::from_millis(500)).await;
    assert_eq!(daemon.readyz().await, Some(503), "/readyz while draining");
    let state = daemon.status().await["state"].clone();
    assert_eq!(state, "stopping", "/status while draining");
    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(
        status.code(),
        Some(143),
        "second SIGTERM: {status}\n{}",
        daemon.output_tail(20)
    );
}

/// Once the drain is over, the exit waits up to 10 s for blocking work still running (here a
/// save of the broadcasting offsets stuck opening a FIFO for writing, as a write on a hung
/// volume sticks); a signal then ends the process at once, with status 143. Before, the
/// signal's listener was a task of the runtime being shut down, and the exit took the 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_the_exit_waits_for_blocking_work_exits_at_once() {
    let (mq, receiver, topic, group) = setup("blocked_exit", 1).await;
    let store = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "instance_name: \"pod-fifo\"\n{}",
        yaml(
            &mq.namesrv_addr(),
            &[Sub::new(&group, &topic, receiver.url("/hook")).broadcasting(store.path())],
        )
    )
    .replace("grace_period: 10s", "grace_period: 1s");
    let mut daemon = Daemon::start(&Launch::yaml(config)).await;
    produce(&mq, &topic, &["one"]).await;
    receiver
        .wait_until(Duration::from_secs(60), "the delivery", |r| !r.is_empty())
        .await;
    // Every later save writes its new content here first: opening a FIFO for writing waits
    // for a reader, and none comes.
    let temp = store
        .path()
        .join("pod-fifo")
        .join(&group)
        .join("offsets.json.tmp");
    // Retried: a periodic save (every second) holds the name for a moment before its rename.
    let mut made = false;
    for _ in 0..50 {
        let status = std::process::Command::new("mkfifo")
            .arg(&temp)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run mkfifo");
        if status.success() {
            made = true;
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    assert!(made, "mkfifo {}", temp.display());
    daemon.sigterm();
    // The drain gives up on the stuck save after the grace period and its overrun.
    daemon
        .wait_output("Stopped.", Duration::from_secs(30), "the drain ends")
        .await;
    sleep(Duration::from_millis(500)).await;
    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(
        status.code(),
        Some(143),
        "a signal during the wait for blocking work: {status}\n{}",
        daemon.output_tail(20)
    );
}

/// The admin port is bound before any subscription starts: a port in use ends the daemon (exit
/// 1, naming the address) before it connects to RocketMQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_port_in_use_fails_before_anything_connects() {
    let namesrv = watched_namesrv();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let launch = Launch::yaml(yaml(
        &namesrv.local_addr().expect("addr").to_string(),
        &[Sub::new(
            "G_admin_taken",
            "T_admin_taken",
            "http://127.0.0.1:9/hook".to_owned(),
        )],
    ))
    .env("ROCKETMQ_ADMIN_LISTEN", taken_addr.clone());
    let mut daemon = Daemon::spawn(&launch);
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    let output = daemon.output();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("cannot bind the admin server") && output.contains(&taken_addr),
        "{output}"
    );
    assert_never_connected(
        &namesrv,
        "the daemon connected to the name server before it found the admin port taken",
    );
}

/// Every subscription's offset store is opened before any subscription connects: a second
/// subscription whose broadcasting offsets cannot be kept ends the daemon (exit 1, naming the
/// path) without the first having registered with RocketMQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_subscription_s_unusable_offsets_fail_before_any_connects() {
    let namesrv = watched_namesrv();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    // A file where the offsets directory should be.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"").expect("write");
    let launch = Launch::yaml(yaml(
        &namesrv.local_addr().expect("addr").to_string(),
        &[
            Sub::new("G_first", "T_first", "http://127.0.0.1:9/hook".to_owned()),
            Sub::new("G_second", "T_second", "http://127.0.0.1:9/hook".to_owned())
                .broadcasting(&blocker),
        ],
    ))
    // With a JSON log, the reason for the exit is a JSON line like the rest: a collector that
    // parses every line got the plain `rocketmq-webhook: ...` line as garbage.
    .env("ROCKETMQ_LOG_FORMAT", "json");
    let mut daemon = Daemon::spawn(&launch);
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    let output = daemon.output();
    assert_eq!(status.code(), Some(1), "{output}");
    let lines: Vec<Value> = output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = lines.last().unwrap_or_else(|| panic!("no output"));
    assert_eq!(last["level"], "ERROR", "{output}");
    let said = last["fields"]["message"].as_str().unwrap_or_default();
    assert!(said.contains(&blocker.display().to_string()), "{output}");
    assert_never_connected(
        &namesrv,
        "the first subscription connected before the second's offsets were found unusable",
    );
}

/// A daemon that waits for its broadcasting offsets' lock (held by an old daemon still
/// draining) answers health probes meanwhile, and stops at a signal, without waiting out the
/// lock and without having connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_ends_the_wait_for_a_held_offsets_lock() {
    let namesrv = watched_namesrv();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    // The lock an old daemon of group G_wait holds while it drains.
    let held = LocalFileStore::new(dir.path(), None, "G_wait")
        .lock()
        .expect("lock");
    held.mark(HolderPhase::Draining).expect("mark");
    let launch = Launch::yaml(yaml(
        &namesrv.local_addr().expect("addr").to_string(),
        &[
            Sub::new("G_wait", "T_wait", "http://127.0.0.1:9/hook".to_owned())
                .broadcasting(dir.path()),
        ],
    ));
    let mut daemon = Daemon::spawn(&launch);
    daemon
        .wait_output(
            "waiting for it to exit",
            Duration::from_secs(15),
            "no word of the wait",
        )
        .await;
    // The admin server answers during the wait: alive, not ready, starting.
    let status = daemon.status().await;
    assert_eq!(status["state"], "starting", "{status}");
    assert_eq!(status["subscriptions"], serde_json::json!([]), "{status}");
    assert_eq!(daemon.readyz().await, Some(503));
    let healthz = reqwest::get(format!("http://{}/healthz", daemon.admin()))
        .await
        .expect("GET /healthz");
    assert_eq!(healthz.status(), 200);
    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{}", daemon.output_tail(20));
    assert_never_connected(
        &namesrv,
        "the daemon connected while it waited for the offsets lock",
    );
    drop(held);
}

/// A running holder of the offsets lock (two daemons wrongly sharing one file) is not waited
/// for: the start fails at once, naming the lock file and its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_holder_of_the_offsets_lock_fails_the_start_at_once() {
    let namesrv = watched_namesrv();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let store = LocalFileStore::new(dir.path(), None, "G_shared");
    let _held = store.lock().expect("lock");
    let launch = Launch::yaml(yaml(
        &namesrv.local_addr().expect("addr").to_string(),
        &[
            Sub::new("G_shared", "T_shared", "http://127.0.0.1:9/hook".to_owned())
                .broadcasting(dir.path()),
        ],
    ));
    let mut daemon = Daemon::spawn(&launch);
    // Well within the 40 s (grace period 10 s + 30 s) a draining holder would get.
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    let output = daemon.output();
    assert_eq!(status.code(), Some(1), "{output}");
    let holder = format!("process {}, running", std::process::id());
    assert!(
        output.contains(&store.lock_path().display().to_string()) && output.contains(&holder),
        "{output}"
    );
    assert_never_connected(
        &namesrv,
        "the daemon connected although its offsets were locked",
    );
}

/// A restart that starts the new daemon while the old one drains on the same volume: the new
/// one waits for the old one's offsets lock (starting, not ready), then starts and consumes;
/// the message the old one was delivering when it was stopped is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_beside_a_draining_daemon_waits_for_its_offsets() {
    let (mq, receiver, topic, group) = setup("handover", 2).await;
    let store = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let held = Arc::new(AtomicBool::new(true));
    let hold = Arc::clone(&held);
    // The first request is held for 4 s: the old daemon's drain waits on it.
    receiver.respond(move |_| {
        if hold.swap(false, Ordering::SeqCst) {
            Reply::ok().with_delay(Duration::from_secs(4))
        } else {
            Reply::ok()
        }
    });
    let launch = pod_a_broadcasting(&mq, &receiver, &group, &topic, store.path());
    let mut old = Daemon::start(&launch).await;
    produce(&mq, &topic, &["in-flight"]).await;
    receiver
        .wait_until(Duration::from_secs(60), "the held request", |r| {
            !r.is_empty()
        })
        .await;
    old.sigterm();
    let mut new = Daemon::spawn(&launch);
    new.wait_output(
        "waiting for it to exit",
        Duration::from_secs(15),
        "the new daemon does not wait",
    )
    .await;
    assert_eq!(new.status().await["state"], "starting");
    let status = old.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", old.output_tail(20));
    new.wait_ready()
        .await
        .unwrap_or_else(|output| panic!("the new daemon did not start: {output}"));
    assert_eq!(new.status().await["state"], "running");
    produce(&mq, &topic, &["after"]).await;
    receiver
        .wait_until(
            Duration::from_secs(60),
            "the message sent after the handover",
            |r| deliveries(r).contains_key("after"),
        )
        .await;
    let seen = deliveries(&receiver.requests());
    assert!(seen.contains_key("in-flight"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_commits_and_a_restart_redelivers_nothing() {
    let (mq, receiver, topic, group) = setup("sigterm", 2).await;
    // Commits come from the shutdown, not from the periodic persist. Two threads: the daemon
    // runs on the multi-thread scheduler here (every other test uses the default, one thread on
    // the current-thread scheduler), so signals, the drain and the offset commit are shown to
    // work on both.
    let config = format!(
        "worker_threads: 2\n{}",
        yaml(
            &mq.namesrv_addr(),
            &[Sub::new(&group, &topic, receiver.url("/hook"))],
        )
    )
    .replace("persist_interval: 1s", "persist_interval: 60s");
    let launch = Launch::yaml(config);
    let mut daemon = Daemon::start(&launch).await;
    let bodies: Vec<String> = (0..10).map(|i| format!("first-{i}")).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    produce(&mq, &topic, &refs).await;
    receiver
        .wait_until(Duration::from_secs(60), "all 10 acknowledged", |r| {
            deliveries(r).len() == 10
        })
        .await;
    wait_metrics(&daemon, Duration::from_secs(30), "10 successes", |t| {
        metric(
            t,
            "rocketmq_webhook_consumer_messages_total",
            &[("consumer_group", &group), ("outcome", "success")],
        ) >= 10.0
    })
    .await;

    // One delivery in flight when SIGTERM arrives: draining lets it finish and commits it.
    receiver.respond(|_| Reply::ok().with_delay(Duration::from_secs(2)));
    let in_flight_from = receiver.requests().len();
    produce(&mq, &topic, &["inflight-0"]).await;
    receiver
        .wait_until(Duration::from_secs(60), "inflight-0 sent", |r| {
            deliveries(&r[in_flight_from..]).contains_key("inflight-0")
        })
        .await;
    daemon.sigterm();
    // Grace period 10 s, plus the daemon's 5 s guard and process exit.
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must exit 0\n{}",
        daemon.output_tail(30)
    );
    let output = daemon.output();
    drop(daemon);
    assert!(
        !output.contains("grace period exceeded"),
        "the drain did not finish within the grace period:\n{output}"
    );
    receiver.respond(|_| Reply::ok());

    let before = receiver.requests().len();
    let _again = Daemon::start(&launch).await;
    // New messages on both queues prove the restarted daemon consumes; anything redelivered
    // from before the restart would come ahead of them.
    produce(&mq, &topic, &["second-0", "second-1"]).await;
    receiver
        .wait_until(
            Duration::from_secs(60),
            "the new messages after the restart",
            |r| {
                let seen = deliveries(&r[before..]);
                seen.contains_key("second-0") && seen.contains_key("second-1")
            },
        )
        .await;
    sleep(Duration::from_secs(3)).await;
    let after = receiver.requests();
    let redelivered: Vec<String> = deliveries(&after[before..])
        .into_keys()
        .filter(|b| b.starts_with("first-") || b == "inflight-0")
        .collect();
    assert!(
        redelivered.is_empty(),
        "acknowledged messages were redelivered after a clean shutdown: {redelivered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_although_an_admin_client_stalled_mid_request() {
    use tokio::io::AsyncWriteExt;
    let (mq, receiver, topic, group) = setup("stalled_admin", 1).await;
    let config = yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook"))],
    );
    let mut daemon = Daemon::start(&Launch::yaml(config)).await;
    // Half a request line, then silence: a graceful HTTP shutdown waits for the rest.
    let mut stalled = tokio::net::TcpStream::connect(daemon.admin())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the admin server: {e}"));
    stalled
        .write_all(b"GET")
        .await
        .unwrap_or_else(|e| panic!("cannot write to the admin server: {e}"));
    sleep(Duration::from_millis(200)).await;
    daemon.sigterm();
    // Nothing is in flight, so the drain is quick; the admin server then gets 3 s. The limit is
    // the grace period (10 s) plus a few seconds, well before the stalled client gives up.
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must exit 0\n{}",
        daemon.output_tail(30)
    );
    drop(stalled);
}

// === 12. /metrics and /status ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_show_what_was_delivered() {
    let (mq, receiver, topic, group) = setup("observe", 2).await;
    receiver.respond(|r| {
        if messages(std::slice::from_ref(r))
            .iter()
            .any(|m| body_of(m) == "reject-0")
        {
            Reply::status(404)
        } else {
            Reply::ok()
        }
    });
    let daemon = Daemon::start(&Launch::yaml(yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook"))],
    )))
    .await;
    let bodies: Vec<String> = (0..5).map(|i| format!("seen-{i}")).collect();
    let mut refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    refs.push("reject-0");
    produce(&mq, &topic, &refs).await;
    receiver
        .wait_until(Duration::from_secs(60), "6 messages", |r| {
            deliveries(r).len() == 6
        })
        .await;

    let labels = |extra: (&'static str, &'static str)| {
        vec![
            ("consumer_group", group.clone()),
            ("topic", topic.clone()),
            (extra.0, extra.1.to_owned()),
        ]
    };
    let value = |text: &str, name: &str, l: Vec<(&str, String)>| {
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metric(text, name, &l)
    };
    let text = wait_metrics(
        &daemon,
        Duration::from_secs(30),
        "5 successes and 1 drop",
        |t| {
            value(
                t,
                "rocketmq_webhook_consumer_messages_total",
                labels(("outcome", "success")),
            ) >= 5.0
                && value(
                    t,
                    "rocketmq_webhook_consumer_messages_total",
                    labels(("outcome", "drop")),
                ) >= 1.0
        },
    )
    .await;
    assert!(
        value(
            &text,
            "rocketmq_webhook_webhook_requests_total",
            labels(("status_class", "2xx")),
        ) >= 5.0,
        "{text}"
    );
    assert!(
        value(
            &text,
            "rocketmq_webhook_webhook_requests_total",
            labels(("status_class", "4xx")),
        ) >= 1.0,
        "{text}"
    );
    assert!(text.contains("rocketmq_webhook_build_info"), "{text}");

    let status = daemon.status().await;
    let sub = &status["subscriptions"][0];
    assert_eq!(status["ready"], json!(true), "{status}");
    assert_eq!(sub["group"], json!(group), "{status}");
    assert_eq!(sub["topic"], json!(topic), "{status}");
    assert_eq!(sub["circuit"], json!("closed"), "{status}");
    // Present, and null while the subscription's own tasks all run.
    assert_eq!(sub.get("failure"), Some(&json!(null)), "{status}");
    assert!(
        sub["stats"]["processed"].as_u64().unwrap_or(0) >= 5,
        "{status}"
    );
    let queues: BTreeSet<String> = sub["stats"]["queues"]
        .as_object()
        .map(|q| q.keys().cloned().collect())
        .unwrap_or_default();
    for id in 0..2 {
        let key = format!("{topic}@{}#{id}", mq.broker_name());
        assert!(queues.contains(&key), "queue {key} missing: {status}");
    }
}

// === The image's health check ===

/// `rocketmq-webhook healthcheck ARGS` with only `env` set (no `ROCKETMQ_*` of the caller).
async fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_rocketmq-webhook");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("healthcheck")
        .args(args)
        .env_clear()
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
}

/// `/readyz` waits for a broker to take the consumer, not only for routes: with the name server
/// answering and every broker unreachable (a network policy, a firewall), a pod that said ready
/// would let a rolling update replace working pods with ones that consume nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_a_broker_to_take_the_consumer() {
    use rocketmq_webhook::remoting::body::route::TopicRouteData;
    let (mq, receiver, topic, group) = setup("ready", 2).await;
    let unreachable = Arc::new(AtomicBool::new(true));
    let (listener, namesrv_addr) = support::namesrv::listen().await;
    {
        let unreachable = Arc::clone(&unreachable);
        tokio::spawn(support::namesrv::serve(
            listener,
            mq.client(),
            move |_: &str, route: &mut TopicRouteData| {
                if unreachable.load(Ordering::Relaxed) {
                    for broker in &mut route.broker_datas {
                        for addr in broker.broker_addrs.values_mut() {
                            // Nothing listens on port 1.
                            "127.0.0.1:1".clone_into(addr);
                        }
                    }
                }
            },
        ));
    }
    let mut daemon = Daemon::spawn(&Launch::yaml(yaml(
        &namesrv_addr,
        &[Sub::new(&group, &topic, receiver.url("/hook"))],
    )));
    // Routes arrive at once; heartbeats and rebalances fail all along.
    let not_ready = daemon
        .never_ready(Duration::from_secs(6), "while no broker could be reached")
        .await;
    assert!(not_ready > 0, "/readyz never answered 503");
    // It had routes: it tried the brokers they name.
    let failed = metric(
        &daemon.metrics().await,
        "rocketmq_webhook_consumer_errors_total",
        &[("stage", "heartbeat")],
    );
    assert!(
        failed > 0.0,
        "no heartbeat was tried\n{}",
        daemon.output_tail(30)
    );

    // The brokers become reachable at the next route refresh (every 5 s here).
    unreachable.store(false, Ordering::Relaxed);
    daemon
        .wait_ready()
        .await
        .unwrap_or_else(|e| panic!("after the brokers became reachable: {e}"));
}

/// A topic whose route has no readable queue (write-only permission) gives the rebalance no
/// broker to ask for the group's members; readiness then rests on a broker having taken the
/// heartbeat, instead of never coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_comes_for_a_topic_without_readable_queues() {
    use rocketmq_webhook::remoting::body::route::TopicRouteData;
    let (mq, receiver, topic, group) = setup("ready_wo", 2).await;
    let (listener, namesrv_addr) = support::namesrv::listen().await;
    {
        let topic = topic.clone();
        tokio::spawn(support::namesrv::serve(
            listener,
            mq.client(),
            move |asked: &str, route: &mut TopicRouteData| {
                if asked == topic {
                    for queue in &mut route.queue_datas {
                        // PERM_WRITE only.
                        queue.perm = 2;
                    }
                }
            },
        ));
    }
    // Daemon::start waits for /readyz to answer 200 (at most a minute).
    let daemon = Daemon::start(&Launch::yaml(yaml(
        &namesrv_addr,
        &[Sub::new(&group, &topic, receiver.url("/hook"))],
    )))
    .await;
    let status = daemon.status().await;
    assert_eq!(status["ready"], json!(true), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_probes_the_admin_port_of_the_configuration_file() {
    let (mq, receiver, topic, group) = setup("health", 1).await;
    let config = yaml(
        &mq.namesrv_addr(),
        &[Sub::new(&group, &topic, receiver.url("/hook"))],
    );
    let daemon = Daemon::start(&Launch::yaml(config.clone())).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
    let file = |name: &str, listen: &str| {
        let path = dir.path().join(name);
        let text = format!("{config}admin:\n  listen: \"{listen}\"\n");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {name}: {e}"));
        path.display().to_string()
    };
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // Every interface, as the default binds: probed through loopback.
    let every = file("every.yaml", &format!("0.0.0.0:{}", daemon.admin().port()));
    let out = healthcheck(&["--config", &every], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    // ROCKETMQ_CONFIG works as --config does, and --ready asks /readyz.
    let out = healthcheck(&["--ready"], &[("ROCKETMQ_CONFIG", &every)]).await;
    assert!(out.status.success(), "{}", text(&out));
    // A proxy for the container's egress does not carry the local probe.
    let no_proxy_there = format!("http://{}", support::daemon::free_port());
    let proxied = [
        ("HTTP_PROXY", no_proxy_there.as_str()),
        ("http_proxy", no_proxy_there.as_str()),
    ];
    let out = healthcheck(&["--config", &every], &proxied).await;
    assert!(out.status.success(), "{}", text(&out));

    // ROCKETMQ_ADMIN_LISTEN beats the file, as it does for the daemon.
    let closed = support::daemon::free_port().to_string();
    let out = healthcheck(&["--config", &every], &[("ROCKETMQ_ADMIN_LISTEN", &closed)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("http://{closed}/healthz unreachable")),
        "{}",
        text(&out)
    );
    // A file that does not load fails the check and names the key.
    let bad = file("bad.yaml", "not-an-address");
    let out = healthcheck(&["--config", &bad], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("admin.listen"), "{}", text(&out));

    // Empty variables count as unset: clap took them for empty values, refused an empty path
    // (exit 2) and probed `http:///healthz`.
    let empty = [("ROCKETMQ_CONFIG", ""), ("ROCKETMQ_ADMIN_LISTEN", " ")];
    let out = healthcheck(&["--config", &every], &empty).await;
    assert!(out.status.success(), "{}", text(&out));
    // Without a file, the variables give the address as they give it to the daemon.
    let port = daemon.admin().port().to_string();
    let listen = format!("0.0.0.0:{port}");
    let namesrv = mq.namesrv_addr();
    let variables = [
        ("ROCKETMQ_NAMESRV_ADDR", namesrv.as_str()),
        ("ROCKETMQ_CONSUMER_GROUP", group.as_str()),
        ("ROCKETMQ_TOPIC", topic.as_str()),
        ("ROCKETMQ_WEBHOOK_URL", "http://127.0.0.1:1/hook"),
        ("ROCKETMQ_ADMIN__LISTEN", listen.as_str()),
    ];
    let out = healthcheck(&[], &variables).await;
    assert!(out.status.success(), "{}", text(&out));
    // A bad argument is a failed check, not Docker's reserved 2.
    let out = healthcheck(&["--no-such-flag"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

// === Secrets never leak ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_status_or_check_config() {
    let mq = RocketMq::start().await;
    let topic = unique("T_secret");
    let group = unique("G_secret");
    mq.create_topic(&topic, 1).await;
    let receiver = Receiver::start().await;
    let token = "tok-SUPERSECRET-7f3a";
    let signing = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Njc4OTA=";
    let acl_secret = "acl-SUPERSECRET-91bd";
    let launch = Launch::env_only()
        .env("ROCKETMQ_NAMESRV_ADDR", mq.namesrv_addr())
        .env("ROCKETMQ_CONSUMER_GROUP", group.clone())
        .env("ROCKETMQ_TOPIC", topic.clone())
        .env("ROCKETMQ_WEBHOOK_URL", receiver.url("/s"))
        .env("ROCKETMQ_CONSUME_FROM_WHERE", "FIRST_OFFSET")
        .env("ROCKETMQ_WEBHOOK_TOKEN", token)
        .env("ROCKETMQ_WEBHOOK_SECRET", signing)
        .env("ROCKETMQ_ACCESS_KEY", "ak-visible")
        .env("ROCKETMQ_SECRET_KEY", acl_secret)
        // Every level, every module.
        .env("RUST_LOG", "trace");
    let daemon = Daemon::start(&launch).await;
    produce(&mq, &topic, &["s-0"]).await;
    let requests = receiver
        .wait_until(Duration::from_secs(60), "the message", |r| {
            deliveries(r).len() == 1
        })
        .await;
    // The endpoint does get them (that is their purpose)...
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert!(requests[0].header("webhook-signature").is_some());
    // ...but nothing the operator reads does.
    let status = daemon.status().await.to_string();
    let log = daemon.output();
    assert!(
        log.len() > 1000,
        "trace logging produced output: {} bytes",
        log.len()
    );
    for secret in [
        token,
        signing,
        "c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Njc4OTA",
        acl_secret,
    ] {
        assert!(!log.contains(secret), "secret {secret} in the log");
        assert!(!status.contains(secret), "secret {secret} in /status");
    }
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_rocketmq-webhook"))
        .arg("check-config")
        .env_clear()
        .env("ROCKETMQ_NAMESRV_ADDR", mq.namesrv_addr())
        .env("ROCKETMQ_CONSUMER_GROUP", &group)
        .env("ROCKETMQ_TOPIC", &topic)
        .env("ROCKETMQ_WEBHOOK_URL", receiver.url("/s"))
        .env("ROCKETMQ_WEBHOOK_TOKEN", token)
        .env("ROCKETMQ_WEBHOOK_SECRET", signing)
        .env("ROCKETMQ_ACCESS_KEY", "ak-visible")
        .env("ROCKETMQ_SECRET_KEY", acl_secret)
        .output()
        .expect("check-config runs");
    assert!(check.status.success(), "{check:?}");
    let printed = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(
        printed.contains("ak-visible"),
        "the non-secret access key is shown: {printed}"
    );
    for secret in [token, signing, acl_secret] {
        assert!(
            !printed.contains(secret),
            "secret {secret} in check-config output: {printed}"
        );
    }
}

// === Several subscriptions in one daemon ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_subscriptions_share_a_daemon_without_disturbing_each_other() {
    let mq = RocketMq::start().await;
    let receiver = Receiver::start().await;
    let subs = topics_and_subscriptions(&mq, &receiver, "multi", 3).await;
    let daemon = Daemon::start(&Launch::yaml(yaml(&mq.namesrv_addr(), &subs))).await;
    let all = produce_to_each(&mq, &subs, 40).await;
    receiver
        .wait_until(
            Duration::from_secs(60),
            "every message of every subscription",
            |r| deliveries(r).len() == all.len(),
        )
        .await;
    // Each subscription has its own client id; connections are not kicked by the broker (it
    // closes a connection when the same client id registers on another one).
    let status = daemon.status().await;
    let ids: BTreeSet<String> = status["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{status}");
    let log = daemon.output();
    assert!(
        !log.contains("closed by peer"),
        "the broker closed connections: {}",
        daemon.output_tail(20)
    );
}

/// `delivery.max_in_flight` caps webhook requests of all subscriptions together: two
/// subscriptions that could each keep 20 requests open against a slow endpoint keep 3 between
/// them, everything is still delivered, and `/status` shows requests waiting for the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_limit_caps_requests_of_every_subscription_together() {
    const CAP: usize = 3;
    let mq = RocketMq::start().await;
    let receiver = Receiver::start().await;
    receiver.respond(|_| Reply::ok().with_delay(Duration::from_millis(100)));
    let subs = topics_and_subscriptions(&mq, &receiver, "cap", 2).await;
    let all = produce_to_each(&mq, &subs, 40).await;
    let config = format!(
        "delivery:\n  max_in_flight: {CAP}\n{}",
        yaml(&mq.namesrv_addr(), &subs)
    );
    let daemon = Daemon::start(&Launch::yaml(config)).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut peak_waiting = 0;
    while deliveries(&receiver.requests()).len() < all.len() && Instant::now() < deadline {
        let status = daemon.status().await;
        assert_eq!(status["delivery"]["max_in_flight"], json!(CAP), "{status}");
        peak_waiting = peak_waiting.max(status["delivery"]["waiting"].as_u64().unwrap_or(0));
        sleep(Duration::from_millis(50)).await;
    }
    let delivered = deliveries(&receiver.requests());
    let missing: Vec<&String> = all.iter().filter(|b| !delivered.contains_key(*b)).collect();
    assert!(
        missing.is_empty(),
        "not delivered: {missing:?}\n{}",
        daemon.output_tail(30)
    );
    // Without the cap the two subscriptions would have had up to 40 requests open.
    assert_eq!(receiver.peak_in_flight(), CAP, "{}", daemon.output_tail(30));
    assert!(
        peak_waiting > 0,
        "/status never showed a request waiting for the cap"
    );
    let text = daemon.metrics().await;
    assert!(
        text.contains("rocketmq_webhook_webhook_requests_waiting"),
        "{text}"
    );
}
