//! The consumer engine against a real name server and broker (issue: consumer engine).
//!
//! Each test starts its own private RocketMQ (tests/support), produces with the crate's
//! producer, and consumes with [`Consumer`] and a recording [`Handler`].

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocketmq_webhook::client::producer::{Producer, ProducerConfig, QueueSelector};
use rocketmq_webhook::client::{Client, ClientConfig, NotSupported};
use rocketmq_webhook::consumer::{
    Batch, CacheBudget, ConsumeFrom, ConsumeMode, Consumer, Filter, Handler, LocalFileStore, Model,
    Outcome, Runtime,
};
use rocketmq_webhook::metrics::Metrics;
use rocketmq_webhook::remoting::message::Message;
use rocketmq_webhook::remoting::MessageExt;
use support::{unique, RocketMq};

/// What a handler saw of one message.
#[derive(Debug, Clone)]
struct Seen {
    body: String,
    queue_id: i32,
    queue_offset: i64,
    topic: String,
    reconsume_times: i32,
    tags: Option<String>,
}

type Decide = Arc<dyn Fn(&MessageExt) -> Outcome + Send + Sync>;

/// Records every message and answers with `decide`, after `delay`.
#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    decide: Decide,
    delay: Duration,
}

impl Recorder {
    fn new(_name: &str, seen: &Arc<Mutex<Vec<Seen>>>) -> Self {
        Self {
            seen: Arc::clone(seen),
            decide: Arc::new(|_| Outcome::Success),
            delay: Duration::ZERO,
        }
    }

    fn deciding(mut self, decide: impl Fn(&MessageExt) -> Outcome + Send + Sync + 'static) -> Self {
        self.decide = Arc::new(decide);
        self
    }

    fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl Handler for Recorder {
    async fn handle(&self, batch: &Batch) -> Vec<Outcome> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut seen = self.seen.lock().unwrap();
        batch
            .messages
            .iter()
            .map(|m| {
                seen.push(Seen {
                    body: String::from_utf8_lossy(&m.body).into_owned(),
                    queue_id: m.queue_id,
                    queue_offset: m.queue_offset,
                    topic: m.topic.clone(),
                    reconsume_times: m.reconsume_times,
                    tags: m.tags().map(str::to_owned),
                });
                (self.decide)(m)
            })
            .collect()
    }
}

fn client_config(mq: &RocketMq, instance: &str) -> ClientConfig {
    ClientConfig {
        namesrv_addr: mq.namesrv_addr(),
        instance_name: Some(instance.to_owned()),
        ..ClientConfig::default()
    }
}

/// Engine settings with short periods so tests converge in seconds.
fn fast_config(group: &str, topic: &str) -> rocketmq_webhook::consumer::Config {
    let mut c = rocketmq_webhook::consumer::Config::new(group, topic);
    c.consume_from = ConsumeFrom::FirstOffset;
    c.rebalance_interval = Duration::from_secs(2);
    c.heartbeat_interval = Duration::from_secs(5);
    c.route_interval = Duration::from_secs(3);
    c.persist_interval = Duration::from_millis(500);
    c.drain_timeout = Duration::from_secs(5);
    c.offset_store_dir = std::env::temp_dir().join(unique("offsets"));
    c
}

async fn start<H: Handler>(
    mq: &RocketMq,
    instance: &str,
    config: rocketmq_webhook::consumer::Config,
    handler: H,
) -> Consumer<H> {
    start_on(mq.namesrv_addr(), instance, config, handler).await
}

/// [`start`] recording into `metrics`, for tests that read the engine's gauges.
async fn start_metered<H: Handler>(
    mq: &RocketMq,
    instance: &str,
    config: rocketmq_webhook::consumer::Config,
    handler: H,
    metrics: &Metrics,
) -> Consumer<H> {
    Consumer::start(
        client_config(mq, instance),
        config,
        handler,
        Runtime {
            metrics: metrics.clone(),
            cache_budget: Arc::new(CacheBudget::unlimited()),
        },
    )
    .await
    .expect("consumer starts")
}

/// [`start`] with the name servers at `namesrv_addr` (a fake one in front of the real).
async fn start_on<H: Handler>(
    namesrv_addr: String,
    instance: &str,
    config: rocketmq_webhook::consumer::Config,
    handler: H,
) -> Consumer<H> {
    Consumer::start(
        ClientConfig {
            namesrv_addr,
            instance_name: Some(instance.to_owned()),
            ..ClientConfig::default()
        },
        config,
        handler,
        Runtime {
            metrics: Metrics::new(),
            cache_budget: Arc::new(CacheBudget::unlimited()),
        },
    )
    .await
    .expect("consumer starts")
}

async fn producer(mq: &RocketMq) -> Producer {
    let client = Client::new(
        client_config(mq, &unique("producer")),
        Arc::new(NotSupported),
    )
    .expect("client");
    Producer::new(client, ProducerConfig::default())
}

/// Produces `bodies` in batches of up to 32, round robin over the queues, and returns once
/// the broker serves every one of them: it answers a send before its consume queue shows the
/// message, and a consumer that starts at the queue's end (LAST_OFFSET, broadcasting) would
/// otherwise start inside what was just sent.
async fn produce(p: &Producer, topic: &str, bodies: &[String], tag: Option<&str>) {
    let mut sent: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for chunk in bodies.chunks(32) {
        let msgs = chunk
            .iter()
            .map(|b| {
                let m = Message::new(topic, b.clone().into_bytes());
                match tag {
                    Some(t) => m.with_tags(t),
                    None => m,
                }
            })
            .collect();
        let batch = p
            .send_batch(msgs, &QueueSelector::RoundRobin)
            .await
            .expect("batch sent");
        let last = batch.queue_offset + batch.msg_ids.len() as i64 - 1;
        sent.entry(batch.queue.broker_name)
            .or_default()
            .push((batch.queue.queue_id, last));
    }
    for (broker, queues) in sent {
        let addr = p
            .client()
            .routes()
            .snapshot()
            .master_addr(&broker)
            .expect("the broker of a queue just sent to")
            .to_owned();
        support::rocketmq::wait_served(p.client(), &addr, topic, queues, String::new).await;
    }
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Waits until `check` holds, polling every 100 ms, or panics with `what` after `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bodies_seen(seen: &Arc<Mutex<Vec<Seen>>>) -> BTreeSet<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|s| s.body.clone())
        .collect()
}

/// The offset the broker holds for `group` on queue `queue_id` of `topic`, if any.
async fn committed_offset(
    client: &Client,
    mq: &RocketMq,
    group: &str,
    topic: &str,
    queue_id: i32,
) -> Option<i64> {
    client
        .pool()
        .call(
            &mq.broker_addr(),
            &rocketmq_webhook::remoting::rpc::QueryConsumerOffset {
                consumer_group: group.to_owned(),
                topic: topic.to_owned(),
                queue_id,
                set_zero_if_not_found: Some(false),
            },
            Duration::from_secs(5),
        )
        .await
        .expect("offset query")
}

fn assigned(c: &Consumer<Recorder>, topic: &str) -> BTreeSet<String> {
    c.stats()
        .queues
        .keys()
        .filter(|k| k.starts_with(&format!("{topic}@")))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_eight_queues_and_take_over_when_one_leaves() {
    let mq = RocketMq::start().await;
    let topic = unique("T_share");
    let group = unique("G_share");
    let p = producer(&mq).await;
    p.create_topic(&topic, 8, false)
        .await
        .expect("topic created");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut members = Vec::new();
    for i in 0..3 {
        let name = format!("m{i}");
        members.push(
            start(
                &mq,
                &unique(&name),
                fast_config(&group, &topic),
                Recorder::new(&name, &seen),
            )
            .await,
        );
    }
    eventually(
        Duration::from_secs(60),
        "3 members own disjoint queues covering all 8",
        || {
            let sets: Vec<_> = members.iter().map(|m| assigned(m, &topic)).collect();
            let total: usize = sets.iter().map(BTreeSet::len).sum();
            let union: BTreeSet<_> = sets.iter().flatten().cloned().collect();
            total == 8 && union.len() == 8 && sets.iter().all(|s| !s.is_empty())
        },
    )
    .await;

    let first = bodies("share", 200);
    produce(&p, &topic, &first, None).await;
    eventually(
        Duration::from_secs(60),
        "first 200 messages handled",
        || first.iter().all(|b| bodies_seen(&seen).contains(b)),
    )
    .await;

    let leaving = members.pop().unwrap();
    leaving.shutdown().await;
    eventually(
        Duration::from_secs(60),
        "2 remaining members cover all 8 queues",
        || {
            let sets: Vec<_> = members.iter().map(|m| assigned(m, &topic)).collect();
            let total: usize = sets.iter().map(BTreeSet::len).sum();
            let union: BTreeSet<_> = sets.iter().flatten().cloned().collect();
            total == 8 && union.len() == 8
        },
    )
    .await;

    let second = bodies("after", 200);
    produce(&p, &topic, &second, None).await;
    eventually(
        Duration::from_secs(60),
        "messages after the departure handled",
        || second.iter().all(|b| bodies_seen(&seen).contains(b)),
    )
    .await;
    for m in members {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_redelivers_with_reconsume_times_then_dead_letters() {
    let mq = RocketMq::start().await;
    let topic = unique("T_retry");
    let group = unique("G_retry");
    let p = producer(&mq).await;
    p.create_topic(&topic, 2, false)
        .await
        .expect("topic created");

    let seen = Arc::new(Mutex::new(Vec::new()));
    // "fail" always asks for a retry with delay level 1 (1 s); "drop" goes to the DLQ at once.
    let handler = Recorder::new("c", &seen).deciding(|m| match &m.body[..] {
        b"fail" => Outcome::Retry {
            delay_level: Some(1),
        },
        b"drop" => Outcome::Drop,
        _ => Outcome::Success,
    });
    let mut cfg = fast_config(&group, &topic);
    cfg.max_reconsume_times = 2;
    let consumer = start(&mq, &unique("c"), cfg, handler).await;
    produce(
        &p,
        &topic,
        &["ok".into(), "fail".into(), "drop".into()],
        None,
    )
    .await;

    eventually(
        Duration::from_secs(90),
        "the failing message seen 3 times (0, 1, 2 reconsumes)",
        || {
            let s = seen.lock().unwrap();
            let times: BTreeSet<i32> = s
                .iter()
                .filter(|x| x.body == "fail")
                .map(|x| x.reconsume_times)
                .collect();
            times == BTreeSet::from([0, 1, 2])
        },
    )
    .await;
    {
        let s = seen.lock().unwrap();
        // Retried messages show their real topic, not %RETRY%group.
        assert!(
            s.iter()
                .filter(|x| x.body == "fail")
                .all(|x| x.topic == topic),
            "{s:?}"
        );
        assert_eq!(
            s.iter().filter(|x| x.body == "drop").count(),
            1,
            "drop is not redelivered: {s:?}"
        );
        assert_eq!(s.iter().filter(|x| x.body == "ok").count(), 1);
    }

    // Both the exhausted and the dropped message end up in %DLQ%group.
    let mut dlq_bodies = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dlq_bodies.len() < 2 && tokio::time::Instant::now() < deadline {
        dlq_bodies = mq.dlq_bodies(&group).await.into_iter().collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        dlq_bodies,
        BTreeSet::from(["drop".to_owned(), "fail".to_owned()])
    );
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_expression_with_spaces_delivers_exactly_the_tagged_messages() {
    let mq = RocketMq::start().await;
    let topic = unique("T_tags");
    let group = unique("G_tags");
    let p = producer(&mq).await;
    p.create_topic(&topic, 4, false)
        .await
        .expect("topic created");
    let a = bodies("a", 20);
    let b = bodies("b", 20);
    let c = bodies("c", 20);
    produce(&p, &topic, &a, Some("TagA")).await;
    produce(&p, &topic, &c, Some("TagC")).await;
    produce(&p, &topic, &b, Some("TagB")).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = fast_config(&group, &topic);
    cfg.filter = Filter::Tag("TagA || TagB".into());
    let consumer = start(&mq, &unique("c"), cfg, Recorder::new("c", &seen)).await;
    let wanted: BTreeSet<String> = a.iter().chain(&b).cloned().collect();
    eventually(
        Duration::from_secs(60),
        "all TagA and TagB messages",
        || bodies_seen(&seen) == wanted,
    )
    .await;
    // Let any stray TagC delivery surface before asserting there is none.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = seen.lock().unwrap().clone();
    assert!(s.iter().all(|x| x.tags.as_deref() != Some("TagC")), "{s:?}");
    assert_eq!(bodies_seen(&seen), wanted);
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql92_subscriptions_reach_the_broker_and_its_verdict_is_kept() {
    // The broker evaluates SQL92 only with property filtering switched on. It evaluates an
    // expression over properties as false for every message (docs/compatibility.md), so this
    // test uses the two constant expressions: sent as a tag subscription by mistake, `TRUE` would
    // deliver nothing; ignored by the broker, `FALSE` would deliver everything.
    let mq = RocketMq::start_with(&[("enablePropertyFilter", "true")]).await;
    let topic = unique("T_sql");
    let p = producer(&mq).await;
    p.create_topic(&topic, 4, false)
        .await
        .expect("topic created");
    let all = bodies("sql", 40);
    produce(&p, &topic, &all, Some("TagA")).await;

    let everything = Arc::new(Mutex::new(Vec::new()));
    let nothing = Arc::new(Mutex::new(Vec::new()));
    let mut consumers = Vec::new();
    for (name, expression, seen) in [("true", "TRUE", &everything), ("false", "FALSE", &nothing)] {
        let mut cfg = fast_config(&unique(&format!("G_sql_{name}")), &topic);
        cfg.filter = Filter::Sql92(expression.into());
        consumers.push(start(&mq, &unique(name), cfg, Recorder::new(name, seen)).await);
    }
    let wanted: BTreeSet<String> = all.iter().cloned().collect();
    eventually(
        Duration::from_secs(60),
        "all 40 messages under TRUE",
        || bodies_seen(&everything) == wanted,
    )
    .await;
    // The FALSE group has pulled the same queues by now; let a stray delivery surface.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bodies_seen(&nothing), BTreeSet::new());
    assert_eq!(bodies_seen(&everything), wanted);
    for c in consumers {
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_groups_start_from_first_last_or_timestamp() {
    let mq = RocketMq::start().await;
    let topic = unique("T_from");
    let p = producer(&mq).await;
    p.create_topic(&topic, 2, false)
        .await
        .expect("topic created");
    let old = bodies("old", 10);
    produce(&p, &topic, &old, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let boundary = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let middle = bodies("middle", 10);
    produce(&p, &topic, &middle, None).await;

    let mut consumers = Vec::new();
    let mut seen_by = HashMap::new();
    for (name, from) in [
        ("first", ConsumeFrom::FirstOffset),
        ("last", ConsumeFrom::LastOffset),
        ("time", ConsumeFrom::Timestamp(boundary)),
    ] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut cfg = fast_config(&unique(&format!("G_{name}")), &topic);
        cfg.consume_from = from;
        consumers.push(start(&mq, &unique(name), cfg, Recorder::new(name, &seen)).await);
        seen_by.insert(name, seen);
    }
    // Wait until every consumer holds both queues, then produce the "new" messages.
    eventually(
        Duration::from_secs(60),
        "each group holds both queues",
        || consumers.iter().all(|c| assigned(c, &topic).len() == 2),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let new = bodies("new", 10);
    produce(&p, &topic, &new, None).await;

    let all: BTreeSet<String> = old.iter().chain(&middle).chain(&new).cloned().collect();
    let after_boundary: BTreeSet<String> = middle.iter().chain(&new).cloned().collect();
    let only_new: BTreeSet<String> = new.iter().cloned().collect();
    eventually(
        Duration::from_secs(60),
        "each group got its messages",
        || {
            bodies_seen(&seen_by["first"]) == all
                && bodies_seen(&seen_by["time"]) == after_boundary
                && bodies_seen(&seen_by["last"]) == only_new
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bodies_seen(&seen_by["first"]), all);
    assert_eq!(bodies_seen(&seen_by["time"]), after_boundary);
    assert_eq!(bodies_seen(&seen_by["last"]), only_new);
    for c in consumers {
        c.shutdown().await;
    }
}

/// A LAST_OFFSET consumer of `topic` that records what it gets.
async fn last_offset_consumer(
    mq: &RocketMq,
    topic: &str,
    route_interval: Duration,
) -> (Consumer<Recorder>, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = fast_config(&unique("G_start"), topic);
    cfg.consume_from = ConsumeFrom::LastOffset;
    cfg.route_interval = route_interval;
    let c = start(mq, &unique("start"), cfg, Recorder::new("start", &seen)).await;
    (c, seen)
}

/// Produces `n` messages to `topic` and waits until `seen` holds exactly them.
async fn produce_and_await(p: &Producer, topic: &str, n: usize, seen: &Arc<Mutex<Vec<Seen>>>) {
    let sent = bodies(topic, n);
    produce(p, topic, &sent, None).await;
    let want: BTreeSet<String> = sent.into_iter().collect();
    eventually(
        Duration::from_secs(60),
        "every message sent is delivered",
        || bodies_seen(seen) == want,
    )
    .await;
}

/// Queues added to a topic while a LAST_OFFSET group consumes it (the topic scaled out) deliver
/// what producers sent to them before the consumer saw them in its route: started at their end
/// when assigned, they skipped it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_added_while_the_group_consumes_deliver_what_was_sent_to_them_first() {
    let mq = RocketMq::start().await;
    let topic = unique("T_grow");
    let p = producer(&mq).await;
    p.create_topic(&topic, 1, false)
        .await
        .expect("topic created");
    // A route interval long enough that the messages below reach the new queues before the
    // consumer's next route refresh shows it those queues.
    let (c, seen) = last_offset_consumer(&mq, &topic, Duration::from_secs(10)).await;
    eventually(
        Duration::from_secs(60),
        "the consumer holds the queue",
        || assigned(&c, &topic).len() == 1,
    )
    .await;
    p.create_topic(&topic, 4, false)
        .await
        .expect("topic scaled out");
    // Four batches, one per queue (round robin): three land on queues the consumer has not
    // seen yet.
    produce_and_await(&p, &topic, 128, &seen).await;
    assert_eq!(assigned(&c, &topic).len(), 4);
    c.shutdown().await;
}

/// The same for a topic created after the consumer started (the sidecar deployed first): the
/// name servers said it did not exist, so its queues all came later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_after_the_start_delivers_what_was_sent_before_it_was_seen() {
    let mq = RocketMq::start().await;
    let topic = unique("T_late");
    let (c, seen) = last_offset_consumer(&mq, &topic, Duration::from_secs(3)).await;
    // A rebalance pass (every 2 s here) finds no route after the name servers said the topic
    // does not exist.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let p = producer(&mq).await;
    p.create_topic(&topic, 2, false)
        .await
        .expect("topic created");
    produce_and_await(&p, &topic, 64, &seen).await;
    c.shutdown().await;
}

/// But a pass that finds no route only because no name server has answered yet is no look: a
/// new group's queues then start at their end when the route comes, not a minute before the
/// daemon started (the rebalancer's own timer runs its first pass whether or not the first
/// route look-up is done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_before_the_first_route_answer_leaves_a_new_group_at_the_end() {
    let mq = RocketMq::start().await;
    let topic = unique("T_slow_ns");
    let p = producer(&mq).await;
    p.create_topic(&topic, 1, false)
        .await
        .expect("topic created");
    // Stored just before the start: within the minute a queue that came later starts from.
    let old = bodies("old", 16);
    produce(&p, &topic, &old, None).await;
    // A name server that answers only after the first rebalance passes (every 2 s here, then
    // every second while unbalanced) have found no route: connections wait in its backlog.
    let (listener, namesrv_addr) = support::namesrv::listen().await;
    let real =
        Client::new(client_config(&mq, &unique("real")), Arc::new(NotSupported)).expect("client");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        support::namesrv::serve(listener, real, |_: &str, _: &mut _| {}).await;
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = fast_config(&unique("G_slow_ns"), &topic);
    cfg.consume_from = ConsumeFrom::LastOffset;
    let c = start_on(
        namesrv_addr,
        &unique("slow_ns"),
        cfg,
        Recorder::new("s", &seen),
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the consumer holds the queue",
        || assigned(&c, &topic).len() == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let new = bodies("new", 16);
    produce(&p, &topic, &new, None).await;
    let want: BTreeSet<String> = new.into_iter().collect();
    eventually(
        Duration::from_secs(60),
        "the new messages are delivered",
        || bodies_seen(&seen).is_superset(&want),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bodies_seen(&seen),
        want,
        "only what was sent after the start"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_keeps_the_cache_within_its_limit() {
    let mq = RocketMq::start().await;
    let topic = unique("T_flow");
    let group = unique("G_flow");
    let p = producer(&mq).await;
    p.create_topic(&topic, 1, false)
        .await
        .expect("topic created");
    produce(&p, &topic, &bodies("flow", 300), None).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = fast_config(&group, &topic);
    cfg.limits.max_cached_messages = 20;
    cfg.consume_concurrency = 2;
    let consumer = start(
        &mq,
        &unique("c"),
        cfg,
        Recorder::new("c", &seen).slow(Duration::from_millis(20)),
    )
    .await;
    let mut max_cached = 0;
    let mut paused_seen = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.lock().unwrap().len() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all messages handled"
        );
        let stats = consumer.stats();
        for q in stats.queues.values() {
            max_cached = max_cached.max(q.cached_messages);
            paused_seen |= q.paused.is_some();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(max_cached <= 20, "cached {max_cached} > limit 20");
    assert!(
        max_cached >= 10,
        "the cache never filled up ({max_cached}); the test did not exercise flow control"
    );
    assert!(paused_seen, "pulling never paused");
    consumer.shutdown().await;
}

/// While flow control holds a queue's pulls back (its handler is stuck, as behind a dead
/// endpoint), the lag still follows the broker: messages produced meanwhile are counted, where
/// it stood at what the last pull answer said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_follows_the_broker_while_pulls_are_held_back() {
    let mq = RocketMq::start().await;
    let topic = unique("T_lag");
    let group = unique("G_lag");
    mq.create_topic(&topic, 1).await;
    let p = producer(&mq).await;
    produce(&p, &topic, &bodies("lag", 30), None).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = fast_config(&group, &topic);
    cfg.limits.max_cached_messages = 10;
    cfg.consume_concurrency = 1;
    let consumer = start(
        &mq,
        &unique("c"),
        cfg,
        Recorder::new("c", &seen).slow(Duration::from_secs(3600)),
    )
    .await;
    eventually(Duration::from_secs(60), "the queue paused, lag 30", || {
        let stats = consumer.stats();
        stats.lag == 30
            && stats.lag_unknown_queues == 0
            && stats.queues.values().any(|q| q.paused.is_some())
    })
    .await;
    produce(&p, &topic, &bodies("more", 20), None).await;
    eventually(Duration::from_secs(30), "lag 50", || {
        consumer.stats().lag == 50
    })
    .await;
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasting_members_each_get_everything_and_keep_offsets_across_restarts() {
    let mq = RocketMq::start().await;
    let topic = unique("T_bcast");
    let group = unique("G_bcast");
    let p = producer(&mq).await;
    p.create_topic(&topic, 2, false)
        .await
        .expect("topic created");
    let dir = tempfile::tempdir().unwrap();
    // Two members share the directory, so each names its own file, as daemons sharing a
    // volume do with `instance_name`.
    let config = |dir: &std::path::Path, instance: &str| {
        let mut c = fast_config(&group, &topic);
        c.model = Model::Broadcasting;
        c.offset_store_dir = dir.to_path_buf();
        c.offset_store_instance = Some(instance.to_owned());
        c
    };

    let seen_a = Arc::new(Mutex::new(Vec::new()));
    let seen_b = Arc::new(Mutex::new(Vec::new()));
    let a = start(
        &mq,
        "bcast-a",
        config(dir.path(), "bcast-a"),
        Recorder::new("a", &seen_a),
    )
    .await;
    let b = start(
        &mq,
        "bcast-b",
        config(dir.path(), "bcast-b"),
        Recorder::new("b", &seen_b),
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "both members hold both queues",
        || assigned(&a, &topic).len() == 2 && assigned(&b, &topic).len() == 2,
    )
    .await;
    let first = bodies("b1", 40);
    produce(&p, &topic, &first, None).await;
    let want: BTreeSet<String> = first.iter().cloned().collect();
    eventually(
        Duration::from_secs(60),
        "both members got every message",
        || bodies_seen(&seen_a) == want && bodies_seen(&seen_b) == want,
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;

    // Restarted with the same instance name, member a resumes from its offsets file: it sees
    // only the messages produced while it was down.
    let second = bodies("b2", 10);
    produce(&p, &topic, &second, None).await;
    let seen_a2 = Arc::new(Mutex::new(Vec::new()));
    let a = start(
        &mq,
        "bcast-a",
        config(dir.path(), "bcast-a"),
        Recorder::new("a", &seen_a2),
    )
    .await;
    let want2: BTreeSet<String> = second.iter().cloned().collect();
    eventually(
        Duration::from_secs(60),
        "restarted member got the new messages",
        || bodies_seen(&seen_a2) == want2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        bodies_seen(&seen_a2),
        want2,
        "a restarted broadcasting member replayed old messages"
    );
    a.shutdown().await;

    // Corrupt offsets file and backup: the consumer refuses to start with an error naming both,
    // instead of silently starting over.
    let file = dir.path().join("bcast-a").join(&group).join("offsets.json");
    assert!(file.exists(), "offsets file at {}", file.display());
    std::fs::write(&file, b"{not json").unwrap();
    std::fs::write(file.with_extension("json.bak"), b"garbage").unwrap();
    let err = Consumer::start(
        client_config(&mq, "bcast-a"),
        config(dir.path(), "bcast-a"),
        Recorder::new("a", &seen_a2),
        Runtime {
            metrics: Metrics::new(),
            cache_budget: Arc::new(CacheBudget::unlimited()),
        },
    )
    .await
    .err()
    .expect("a corrupt offsets file must not be ignored");
    let text = err.to_string();
    assert!(text.contains("offsets.json"), "{text}");
    assert!(text.contains(".bak"), "{text}");
}

/// Broadcasting with LAST_OFFSET: a queue's start position is in the offsets file as soon as
/// the queue is assigned, not at the first periodic save. After a crash before that save, the
/// next start resolved the queue's end again and skipped what had arrived in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasting_start_positions_are_saved_when_the_queues_are_assigned() {
    let mq = RocketMq::start().await;
    let topic = unique("T_bfirst");
    let group = unique("G_bfirst");
    let p = producer(&mq).await;
    p.create_topic(&topic, 2, false)
        .await
        .expect("topic created");
    // History before the first start: the queues' ends are past 0.
    produce(&p, &topic, &bodies("old", 8), None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_config(&group, &topic);
    config.model = Model::Broadcasting;
    config.consume_from = ConsumeFrom::LastOffset;
    config.offset_store_dir = dir.path().to_path_buf();
    config.persist_interval = Duration::from_secs(600);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = start(&mq, "bfirst", config, Recorder::new("f", &seen)).await;
    eventually(Duration::from_secs(60), "both queues held", || {
        assigned(&consumer, &topic).len() == 2
    })
    .await;
    let store = LocalFileStore::new(dir.path(), None, &group);
    let saved = || {
        store
            .load()
            .unwrap_or_default()
            .into_iter()
            .filter(|(q, _)| q.topic == topic)
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(10), "start positions saved", || {
        saved().len() == 2
    })
    .await;
    let ends: i64 = saved().iter().map(|(_, offset)| offset).sum();
    assert_eq!(ends, 8, "not the queues' ends: {:?}", saved());
    assert!(bodies_seen(&seen).is_empty(), "history delivered");
    consumer.shutdown().await;
}

/// Clustering, a new group on an empty queue with LAST_OFFSET: the start position (0) reaches
/// the broker when the queue is assigned. Pulls carry a commit only from offset 1 up, so until
/// the first periodic save the broker had none; a crash then made the next start resolve the
/// queue's end again, past messages that arrived and were never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_queue_start_position_reaches_the_broker_when_assigned() {
    let mq = RocketMq::start().await;
    let topic = unique("T_young");
    let group = unique("G_young");
    let p = producer(&mq).await;
    p.create_topic(&topic, 2, false)
        .await
        .expect("topic created");
    let mut config = fast_config(&group, &topic);
    config.consume_from = ConsumeFrom::LastOffset;
    config.persist_interval = Duration::from_secs(600);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = start(&mq, "young", config, Recorder::new("y", &seen)).await;
    eventually(Duration::from_secs(60), "both queues held", || {
        assigned(&consumer, &topic).len() == 2
    })
    .await;
    let reader = Client::new(
        client_config(&mq, &unique("reader")),
        Arc::new(NotSupported),
    )
    .expect("client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for queue_id in 0..2 {
        loop {
            match committed_offset(&reader, &mq, &group, &topic, queue_id).await {
                Some(offset) => {
                    assert_eq!(offset, 0, "queue {queue_id}");
                    break;
                }
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => panic!("queue {queue_id}: no offset at the broker"),
            }
        }
    }
    consumer.shutdown().await;
}

/// A broadcasting consumer with no instance name (the daemon's default) gets a new client id
/// from every process (`ip@<pid>...`), and its container may get a new IP; its offsets must not
/// be keyed by either, or a restart finds no offsets and LAST_OFFSET skips everything produced
/// while it was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasting_without_instance_name_keeps_offsets_across_restarts() {
    let mq = RocketMq::start().await;
    let topic = unique("T_bdef");
    let group = unique("G_bdef");
    let p = producer(&mq).await;
    p.create_topic(&topic, 2, false)
        .await
        .expect("topic created");
    let dir = tempfile::tempdir().unwrap();
    let start_default = |seen: &Arc<Mutex<Vec<Seen>>>| {
        let mut config = fast_config(&group, &topic);
        config.model = Model::Broadcasting;
        config.consume_from = ConsumeFrom::LastOffset;
        config.offset_store_dir = dir.path().to_path_buf();
        let client = ClientConfig {
            namesrv_addr: mq.namesrv_addr(),
            instance_name: None,
            ..ClientConfig::default()
        };
        Consumer::start(
            client,
            config,
            Recorder::new("d", seen),
            Runtime {
                metrics: Metrics::new(),
                cache_budget: Arc::new(CacheBudget::unlimited()),
            },
        )
    };

    let seen1 = Arc::new(Mutex::new(Vec::new()));
    let first_run = start_default(&seen1).await.expect("consumer starts");
    eventually(Duration::from_secs(60), "both queues held", || {
        assigned(&first_run, &topic).len() == 2
    })
    .await;
    // Each queue's LAST_OFFSET start position is fixed when the queue is first pulled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = bodies("d1", 10);
    produce(&p, &topic, &first, None).await;
    let want1: BTreeSet<String> = first.iter().cloned().collect();
    eventually(Duration::from_secs(60), "first messages delivered", || {
        bodies_seen(&seen1) == want1
    })
    .await;
    let first_id = first_run.client_id().to_owned();
    first_run.shutdown().await;

    let second = bodies("d2", 10);
    produce(&p, &topic, &second, None).await;
    let seen2 = Arc::new(Mutex::new(Vec::new()));
    let second_run = start_default(&seen2).await.expect("consumer restarts");
    assert_ne!(
        second_run.client_id(),
        first_id,
        "the scenario needs a client id that changes across restarts"
    );
    let want2: BTreeSet<String> = second.iter().cloned().collect();
    eventually(
        Duration::from_secs(60),
        "messages produced while down delivered after the restart",
        || bodies_seen(&seen2) == want2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bodies_seen(&seen2), want2, "old messages replayed");
    second_run.shutdown().await;
    assert!(
        dir.path().join(&group).join("offsets.json").exists(),
        "offsets kept at <offset_store_dir>/<group>/offsets.json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderly_keeps_per_key_order_across_a_rebalance() {
    let mq = RocketMq::start().await;
    let topic = unique("T_order");
    let group = unique("G_order");
    let p = producer(&mq).await;
    p.create_topic(&topic, 4, true)
        .await
        .expect("topic created");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = fast_config(&group, &topic);
    cfg.mode = ConsumeMode::Orderly;
    cfg.lock_renew_interval = Duration::from_secs(2);
    let first = start(
        &mq,
        &unique("o1"),
        cfg.clone(),
        Recorder::new("o1", &seen).slow(Duration::from_millis(5)),
    )
    .await;

    let keys: Vec<String> = (0..8).map(|k| format!("key{k}")).collect();
    let send_round = |round: std::ops::Range<usize>| {
        let p = &p;
        let keys = &keys;
        let topic = &topic;
        async move {
            for i in round {
                for k in keys {
                    let m = Message::new(topic.as_str(), format!("{k}:{i}").into_bytes())
                        .with_keys([k.as_str()]);
                    p.send(m, &QueueSelector::Hash(k.clone()))
                        .await
                        .expect("sent");
                }
            }
        }
    };
    send_round(0..15).await;
    // A second member joins mid-stream: queues move between them.
    let second = start(
        &mq,
        &unique("o2"),
        cfg,
        Recorder::new("o2", &seen).slow(Duration::from_millis(5)),
    )
    .await;
    send_round(15..30).await;
    eventually(Duration::from_secs(90), "every message handled", || {
        let got = bodies_seen(&seen);
        keys.iter()
            .all(|k| (0..30).all(|i| got.contains(&format!("{k}:{i}"))))
    })
    .await;
    eventually(Duration::from_secs(30), "both members hold queues", || {
        !assigned(&first, &topic).is_empty() && !assigned(&second, &topic).is_empty()
    })
    .await;

    // Per key, the sequence of first deliveries is in send order; a redelivery (after a queue
    // moved) may repeat earlier messages but never jumps backwards past an undelivered one.
    let s = seen.lock().unwrap().clone();
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for x in &s {
        let (k, i) = x.body.split_once(':').unwrap();
        by_key
            .entry(k.to_owned())
            .or_default()
            .push(i.parse().unwrap());
    }
    for (k, seq) in by_key {
        let mut next = 0;
        for i in &seq {
            assert!(
                *i <= next,
                "key {k}: got {i} before {next} was delivered: {seq:?}"
            );
            if *i == next {
                next += 1;
            }
        }
        assert_eq!(next, 30, "key {k}: {seq:?}");
    }
    // A queue is held by one member at a time.
    let a = assigned(&first, &topic);
    let b = assigned(&second, &topic);
    assert!(a.is_disjoint(&b), "{a:?} / {b:?}");
    first.shutdown().await;
    second.shutdown().await;
}

/// Panics the first time it is handed a batch holding `body`; otherwise records like `inner`.
struct PanicsOnce {
    inner: Recorder,
    body: String,
    armed: Arc<AtomicBool>,
}

impl Handler for PanicsOnce {
    async fn handle(&self, batch: &Batch) -> Vec<Outcome> {
        let hit = batch
            .messages
            .iter()
            .any(|m| m.body == self.body.as_bytes());
        if hit && self.armed.swap(false, SeqCst) {
            panic!("test handler panics on {}", self.body);
        }
        self.inner.handle(batch).await
    }
}

/// A handler that panics mid-stream must not cost the batch it held: an orderly batch runs in
/// its queue's worker, and committing after a panic would skip messages nobody accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_batch_whose_handler_panicked_is_retried_in_order() {
    let mq = RocketMq::start().await;
    let topic = unique("T_panic");
    let group = unique("G_panic");
    let p = producer(&mq).await;
    p.create_topic(&topic, 1, true)
        .await
        .expect("topic created");
    let sent = bodies("p", 40);
    produce(&p, &topic, &sent, None).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = fast_config(&group, &topic);
    cfg.mode = ConsumeMode::Orderly;
    cfg.consume_batch_size = 4;
    cfg.suspend_time = Duration::from_millis(100);
    let armed = Arc::new(AtomicBool::new(true));
    let handler = PanicsOnce {
        inner: Recorder::new("panics", &seen),
        body: "p-9".to_owned(),
        armed: Arc::clone(&armed),
    };
    let c = start(&mq, &unique("panics"), cfg, handler).await;
    eventually(Duration::from_secs(60), "every message handled", || {
        bodies_seen(&seen).len() == sent.len()
    })
    .await;
    assert!(
        !armed.load(SeqCst),
        "the handler never panicked, so the test proved nothing"
    );
    // One queue, orderly: the messages arrive in send order, each exactly once (the panicked
    // batch was never recorded, only its retry).
    let order: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(order, sent);
    c.shutdown().await;
}

/// A concurrent batch whose handler panicked is retried through the retry topic: its offset
/// finishes like any refused message's, instead of staying in the process queue for good (where
/// it held the committed offset back and was never delivered again by this member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_batch_whose_handler_panicked_is_retried() {
    let mq = RocketMq::start().await;
    let topic = unique("T_cpanic");
    let group = unique("G_cpanic");
    let p = producer(&mq).await;
    p.create_topic(&topic, 2, false)
        .await
        .expect("topic created");
    let sent = bodies("cp", 20);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let armed = Arc::new(AtomicBool::new(true));
    let handler = PanicsOnce {
        inner: Recorder::new("cpanics", &seen),
        body: "cp-7".to_owned(),
        armed: Arc::clone(&armed),
    };
    let c = start(
        &mq,
        &unique("cpanics"),
        fast_config(&group, &topic),
        handler,
    )
    .await;
    produce(&p, &topic, &sent, None).await;
    eventually(Duration::from_secs(90), "every message handled", || {
        bodies_seen(&seen).len() == sent.len()
    })
    .await;
    assert!(
        !armed.load(SeqCst),
        "the handler never panicked, so the test proved nothing"
    );
    let retried: Vec<i32> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.body == "cp-7")
        .map(|s| s.reconsume_times)
        .collect();
    assert_eq!(retried, [1], "cp-7 came back once, from the retry topic");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_consumer_resumes_from_the_committed_offset() {
    let mq = RocketMq::start().await;
    let topic = unique("T_crash");
    let group = unique("G_crash");
    let p = producer(&mq).await;
    p.create_topic(&topic, 4, false)
        .await
        .expect("topic created");
    let all = bodies("crash", 400);
    produce(&p, &topic, &all, None).await;

    // The first consumer runs on its own runtime; dropping that runtime mid-stream kills every
    // task at its next await, without the shutdown path: no drain, no final persist.
    let seen1 = Arc::new(Mutex::new(Vec::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Slow enough that several offset persists (every 500 ms) happen before the crash.
    let handler = Recorder::new("c1", &seen1).slow(Duration::from_millis(10));
    let mut cfg = fast_config(&group, &topic);
    cfg.consume_concurrency = 2;
    let client = client_config(&mq, &unique("crash1"));
    rt.spawn(async move {
        let consumer = Consumer::start(
            client,
            cfg,
            handler,
            Runtime {
                metrics: Metrics::new(),
                cache_budget: Arc::new(CacheBudget::unlimited()),
            },
        )
        .await
        .expect("consumer starts");
        // Keep it alive until the runtime is dropped.
        std::future::pending::<()>().await;
        drop(consumer);
    });
    eventually(
        Duration::from_secs(60),
        "the first consumer handled 150 messages",
        || seen1.lock().unwrap().len() >= 150,
    )
    .await;
    rt.shutdown_background();
    let handled_before_crash: Vec<Seen> = seen1.lock().unwrap().clone();
    assert!(
        handled_before_crash.len() < all.len(),
        "crash came too late to test anything"
    );

    // What the broker has as committed offsets right after the crash.
    let client = Client::new(
        client_config(&mq, &unique("reader")),
        Arc::new(NotSupported),
    )
    .unwrap();
    let mut committed = BTreeMap::new();
    for q in 0..4 {
        let off = committed_offset(&client, &mq, &group, &topic, q)
            .await
            .unwrap_or(0);
        committed.insert(q, off);
    }
    assert!(
        committed.values().sum::<i64>() > 0,
        "no offset was committed before the crash: {committed:?}"
    );
    // At-least-once: everything below the committed offset was handled before the crash.
    let before: BTreeSet<(i32, i64)> = handled_before_crash
        .iter()
        .map(|s| (s.queue_id, s.queue_offset))
        .collect();
    for (q, c) in &committed {
        for off in 0..*c {
            assert!(
                before.contains(&(*q, off)),
                "queue {q} offset {off} committed ({c}) but never handled"
            );
        }
    }

    let seen2 = Arc::new(Mutex::new(Vec::new()));
    let second = start(
        &mq,
        &unique("crash2"),
        fast_config(&group, &topic),
        Recorder::new("c2", &seen2),
    )
    .await;
    let want: BTreeSet<String> = all.iter().cloned().collect();
    eventually(
        Duration::from_secs(60),
        "every message handled by one of the two",
        || {
            let mut got = bodies_seen(&seen1);
            got.extend(bodies_seen(&seen2));
            got == want
        },
    )
    .await;
    // The restarted consumer starts at the committed offsets: nothing below them is redelivered,
    // so duplicates are only the messages after the last persisted commit.
    let after = seen2.lock().unwrap().clone();
    for s in &after {
        let c = committed[&s.queue_id];
        assert!(
            s.queue_offset >= c,
            "queue {} offset {} redelivered below the committed offset {c}",
            s.queue_id,
            s.queue_offset
        );
    }
    let dupes = after
        .iter()
        .filter(|s| before.contains(&(s.queue_id, s.queue_offset)))
        .count();
    eprintln!(
        "crash test: handled before crash {}, after restart {}, duplicates {dupes}",
        handled_before_crash.len(),
        after.len()
    );
    second.shutdown().await;
}

/// Sends an admin request to the broker, which relays it to the consumer and returns its answer.
async fn admin_call(
    mq: &RocketMq,
    code: rocketmq_webhook::remoting::RequestCode,
    fields: &[(&str, &str)],
) -> rocketmq_webhook::remoting::RemotingCommand {
    admin_call_within(mq, code, fields, Duration::from_secs(10))
        .await
        .expect("admin call")
}

/// [`admin_call`], answered within `within` or an error.
async fn admin_call_within(
    mq: &RocketMq,
    code: rocketmq_webhook::remoting::RequestCode,
    fields: &[(&str, &str)],
    within: Duration,
) -> Result<rocketmq_webhook::remoting::RemotingCommand, rocketmq_webhook::client::ClientError> {
    use rocketmq_webhook::remoting::command::{ExtFields, RemotingCommand};
    let client = Client::new(client_config(mq, &unique("admin")), Arc::new(NotSupported)).unwrap();
    let mut ext = ExtFields::new();
    for (k, v) in fields {
        ext.insert(*k, v);
    }
    let conn = client.pool().connection(&mq.broker_addr()).await?;
    conn.call_raw(RemotingCommand::request(code, ext, Vec::new()), within)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_get_running_info_direct_consumption_and_offset_resets() {
    use rocketmq_webhook::remoting::{RequestCode, ResponseCode};
    let mq = RocketMq::start().await;
    let topic = unique("T_admin");
    let group = unique("G_admin");
    let p = producer(&mq).await;
    p.create_topic(&topic, 2, false)
        .await
        .expect("topic created");
    let first = bodies("adm", 20);
    produce(&p, &topic, &first, None).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = start(
        &mq,
        &unique("adm"),
        fast_config(&group, &topic),
        Recorder::new("c", &seen),
    )
    .await;
    let want: BTreeSet<String> = first.iter().cloned().collect();
    eventually(Duration::from_secs(60), "all messages consumed", || {
        bodies_seen(&seen) == want
    })
    .await;
    let client_id = consumer.client_id().to_owned();

    // GET_CONSUMER_RUNNING_INFO: real figures from the engine.
    let answer = admin_call(
        &mq,
        RequestCode::GetConsumerRunningInfo,
        &[
            ("consumerGroup", &group),
            ("clientId", &client_id),
            ("jstackEnable", "false"),
        ],
    )
    .await;
    assert_eq!(
        answer.response_code(),
        ResponseCode::Success,
        "{:?}",
        answer.remark
    );
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(
        text.contains(&topic),
        "running info names the subscription: {text}"
    );
    assert!(text.contains("mqTable"), "{text}");
    assert!(text.contains("commitOffset"), "{text}");

    // CONSUME_MESSAGE_DIRECTLY: the handler runs once more on the stored message; no offset or
    // send-back side effects.
    let target = p
        .send(
            Message::new(topic.as_str(), b"direct".to_vec()),
            &QueueSelector::RoundRobin,
        )
        .await
        .expect("sent");
    eventually(Duration::from_secs(30), "the new message consumed", || {
        bodies_seen(&seen).contains("direct")
    })
    .await;
    let before = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.body == "direct")
        .count();
    let answer = admin_call(
        &mq,
        RequestCode::ConsumeMessageDirectly,
        &[
            ("consumerGroup", &group),
            ("clientId", &client_id),
            ("msgId", &target.offset_msg_id),
            ("topic", &topic),
        ],
    )
    .await;
    assert_eq!(
        answer.response_code(),
        ResponseCode::Success,
        "{:?}",
        answer.remark
    );
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(text.contains("CR_SUCCESS"), "{text}");
    let after = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.body == "direct")
        .count();
    assert_eq!(
        after,
        before + 1,
        "the handler ran once for the direct consumption"
    );

    // INVOKE_BROKER_TO_RESET_OFFSET to the beginning: the next pulls answer OFFSET_MOVED and the
    // engine consumes the queue again from the reset offset.
    seen.lock().unwrap().clear();
    let answer = admin_call(
        &mq,
        RequestCode::InvokeBrokerToResetOffset,
        &[
            ("topic", &topic),
            ("group", &group),
            ("timestamp", "0"),
            ("isForce", "true"),
        ],
    )
    .await;
    assert_eq!(
        answer.response_code(),
        ResponseCode::Success,
        "{:?}",
        answer.remark
    );
    // A message produced now wakes the long polls; the answers carry the reset.
    produce(&p, &topic, &["wake-0".into(), "wake-1".into()], None).await;
    eventually(
        Duration::from_secs(60),
        "history replayed after the reset",
        || {
            let got = bodies_seen(&seen);
            first.iter().all(|b| got.contains(b))
        },
    )
    .await;
    consumer.shutdown().await;
}

/// The name servers stop naming a broker that still serves (two brokers, a name server restarted,
/// and only the other has registered again): the rebalance takes that broker's queues away,
/// and each queue's final commit must still reach it. Before the fix the broker's address left
/// the route table with the last route naming it, the final commits found no address, and the
/// queues' messages were delivered again once the broker was back in the routes.
///
/// One real broker plays both: while `renamed` is set, the routes name it `ghost` at the address
/// of a proxy that relays everything but pulls (so the ghost's queues, the same queues on the
/// broker, commit nothing while the test looks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_of_a_broker_the_routes_stop_naming_commit_their_final_offsets() {
    use rocketmq_webhook::remoting::body::route::TopicRouteData;
    use rocketmq_webhook::remoting::{RemotingCommand, RequestCode};
    use support::proxy::Verdict;
    let mq = RocketMq::start().await;
    let topic = unique("T_departed");
    let group = unique("G_departed");
    mq.create_topic(&topic, 2).await;
    let p = producer(&mq).await;
    let all = bodies("departed", 40);
    produce(&p, &topic, &all, None).await;

    let (proxy_listener, proxy_addr) = support::namesrv::listen().await;
    tokio::spawn(support::proxy::serve(
        proxy_listener,
        mq.broker_addr(),
        |command: &RemotingCommand| {
            if command.code == i32::from(RequestCode::PullMessage) {
                Verdict::Swallow
            } else {
                Verdict::Relay
            }
        },
    ));
    let renamed = Arc::new(AtomicBool::new(false));
    let (namesrv_listener, namesrv_addr) = support::namesrv::listen().await;
    let flag = Arc::clone(&renamed);
    tokio::spawn(support::namesrv::serve(
        namesrv_listener,
        mq.client(),
        move |_: &str, route: &mut TopicRouteData| {
            if !flag.load(SeqCst) {
                return;
            }
            for broker in &mut route.broker_datas {
                "ghost".clone_into(&mut broker.broker_name);
                for addr in broker.broker_addrs.values_mut() {
                    proxy_addr.clone_into(addr);
                }
            }
            for queue in &mut route.queue_datas {
                "ghost".clone_into(&mut queue.broker_name);
            }
        },
    ));

    let mut config = fast_config(&group, &topic);
    // Only the queues' final commits may carry the offsets to the broker: no periodic persist,
    // and the handler is slow enough that the pull following the only full one carries no
    // commit (it leaves before anything is handled and then waits 15 s at the broker).
    config.persist_interval = Duration::from_secs(3600);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = start_on(
        namesrv_addr,
        &unique("departed"),
        config,
        Recorder::new("c", &seen).slow(Duration::from_millis(300)),
    )
    .await;
    eventually(Duration::from_secs(60), "all 40 messages handled", || {
        bodies_seen(&seen).len() >= all.len()
    })
    .await;
    let broker_queues = |c: &Consumer<Recorder>| {
        assigned(c, &topic)
            .into_iter()
            .filter(|q| !q.contains("ghost"))
            .count()
    };
    assert_eq!(
        broker_queues(&consumer),
        2,
        "{:?}",
        assigned(&consumer, &topic)
    );

    renamed.store(true, SeqCst);
    eventually(
        Duration::from_secs(30),
        "the broker's queues released once the routes stop naming it",
        || broker_queues(&consumer) == 0,
    )
    .await;

    // Every message was handled, so each queue's final commit is its end.
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for s in seen.lock().unwrap().iter() {
        let end = ends.entry(s.queue_id).or_default();
        *end = (*end).max(s.queue_offset + 1);
    }
    let reader = Client::new(
        client_config(&mq, &unique("reader")),
        Arc::new(NotSupported),
    )
    .expect("client");
    for (&queue_id, &end) in &ends {
        let committed = committed_offset(&reader, &mq, &group, &topic, queue_id).await;
        assert_eq!(
            committed,
            Some(end),
            "queue {queue_id}: the final commit did not reach the broker"
        );
    }
    consumer.shutdown().await;
}

/// The broker sends RESET_CONSUMER_CLIENT_OFFSET with the whole topic's table to every member of
/// the group. Each member resets the queues it holds, and only those (Java's `resetOffset`
/// walks its own process-queue table): before the fix a member also wrote the other members'
/// queues, which could rewind an offset their owner had moved on from since.
///
/// Two members share four queues; member A reaches the broker through a proxy that hands A the
/// reset (so only A gets it, at a known moment) and records every offset A writes afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_reset_moves_only_the_queues_this_member_holds() {
    use rocketmq_webhook::remoting::body::offset_table::write_offset_table;
    use rocketmq_webhook::remoting::{ExtFields, MessageQueue, RemotingCommand, RequestCode};
    use support::proxy::{encode, Verdict};
    let mq = RocketMq::start().await;
    let topic = unique("T_reset_held");
    let group = unique("G_reset_held");
    mq.create_topic(&topic, 4).await;
    let p = producer(&mq).await;
    produce(&p, &topic, &bodies("held", 128), None).await;

    let table: Vec<(MessageQueue, i64)> = (0..4)
        .map(|q| (MessageQueue::new(&topic, mq.broker_name(), q), 0))
        .collect();
    let mut reset = RemotingCommand::request(
        RequestCode::ResetConsumerClientOffset,
        ExtFields::new()
            .with("topic", topic.as_str())
            .with("group", group.as_str())
            .with("timestamp", 0)
            .with("isForce", true),
        write_offset_table(&table, false).into_bytes(),
    );
    reset.set_oneway(true);
    let reset = encode(&reset);
    let armed = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicBool::new(false));
    let writes: Arc<Mutex<Vec<(i32, i64)>>> = Arc::new(Mutex::new(Vec::new()));
    let (proxy_listener, proxy_addr) = support::namesrv::listen().await;
    {
        let (armed, pushed, writes, topic) = (
            Arc::clone(&armed),
            Arc::clone(&pushed),
            Arc::clone(&writes),
            topic.clone(),
        );
        tokio::spawn(support::proxy::serve(
            proxy_listener,
            mq.broker_addr(),
            move |command: &RemotingCommand| {
                let field = |k: &str| command.ext_fields.get(k)?.parse::<i64>().ok();
                if pushed.load(SeqCst)
                    && command.code == i32::from(RequestCode::UpdateConsumerOffset)
                    && command.ext_fields.get("topic") == Some(topic.as_str())
                {
                    if let (Some(q), Some(o)) = (field("queueId"), field("commitOffset")) {
                        let q = i32::try_from(q).unwrap_or(-1);
                        writes.lock().unwrap().push((q, o));
                    }
                }
                if armed.swap(false, SeqCst) {
                    pushed.store(true, SeqCst);
                    Verdict::RelayAndPush(reset.clone())
                } else {
                    Verdict::Relay
                }
            },
        ));
    }
    let namesrv_addr = support::namesrv::through_proxy(mq.client(), proxy_addr).await;

    let seen_a = Arc::new(Mutex::new(Vec::new()));
    let a = start_on(
        namesrv_addr,
        &unique("reset_a"),
        fast_config(&group, &topic),
        Recorder::new("a", &seen_a),
    )
    .await;
    let seen_b = Arc::new(Mutex::new(Vec::new()));
    let b = start(
        &mq,
        &unique("reset_b"),
        fast_config(&group, &topic),
        Recorder::new("b", &seen_b),
    )
    .await;
    eventually(Duration::from_secs(60), "two queues each", || {
        assigned(&a, &topic).len() == 2 && assigned(&b, &topic).len() == 2
    })
    .await;
    eventually(Duration::from_secs(60), "everything consumed", || {
        bodies_seen(&seen_a).len() + bodies_seen(&seen_b).len() >= 128
    })
    .await;
    let queue_ids = |c: &Consumer<Recorder>| -> BTreeSet<i32> {
        assigned(c, &topic)
            .iter()
            .filter_map(|k| k.rsplit('#').next()?.parse().ok())
            .collect()
    };
    let (held_a, held_b) = (queue_ids(&a), queue_ids(&b));
    assert_eq!(held_a.len() + held_b.len(), 4, "{held_a:?} {held_b:?}");

    armed.store(true, SeqCst);
    eventually(
        Duration::from_secs(30),
        "A wrote the reset offset of a queue it holds",
        || {
            writes
                .lock()
                .unwrap()
                .iter()
                .any(|(q, o)| held_a.contains(q) && *o == 0)
        },
    )
    .await;
    // The reset's writes all happen in one pass; give a stray one time to surface.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let foreign: Vec<(i32, i64)> = writes
        .lock()
        .unwrap()
        .iter()
        .filter(|(q, _)| held_b.contains(q))
        .copied()
        .collect();
    assert!(
        foreign.is_empty(),
        "A wrote offsets of B's queues {held_b:?}: {foreign:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A pull answer names the broker to pull from next (`suggestWhichBrokerId`: a Java master
/// sends a lagging consumer to a slave with `slaveReadEnable`, the slave sends it back), and
/// the consumer follows it as Java's does. Pulls sent to a slave carry no commit: only the
/// master keeps the group's offsets.
///
/// The route names two proxies of the real broker, M as broker id 0 and S as id 1. M's pull
/// answers suggest 1 and S's suggest 0, so the pulls alternate between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_follow_the_suggested_broker_and_commit_only_at_the_master() {
    use rocketmq_webhook::remoting::rpc::PullSysFlag;
    use rocketmq_webhook::remoting::{RemotingCommand, RequestCode, ResponseCode};
    use support::proxy::{encode, Verdict};
    let mq = RocketMq::start().await;
    let topic = unique("T_suggest");
    let group = unique("G_suggest");
    mq.create_topic(&topic, 1).await;
    let p = producer(&mq).await;
    produce(&p, &topic, &bodies("suggest", 64), None).await;

    // (proxy, sysFlag, commitOffset) of every pull of the topic, in the order they came.
    type Pull = (&'static str, i32, i64);
    let pulls: Arc<Mutex<Vec<Pull>>> = Arc::default();
    let mut addrs = Vec::new();
    for (name, suggest) in [("M", 1), ("S", 0)] {
        let (listener, addr) = support::namesrv::listen().await;
        addrs.push(addr);
        let (pulls, topic) = (Arc::clone(&pulls), topic.clone());
        tokio::spawn(support::proxy::serve_rewriting(
            listener,
            mq.broker_addr(),
            move |command: &RemotingCommand| {
                // The broker behind S is M's: a second registration of the client id on
                // another connection would make it close the first (docs/compatibility.md).
                if name == "S"
                    && (command.code == i32::from(RequestCode::HeartBeat)
                        || command.code == i32::from(RequestCode::UnregisterClient))
                {
                    return Verdict::Answer(encode(&RemotingCommand::response_to(
                        command,
                        ResponseCode::Success,
                        None,
                    )));
                }
                if command.code == i32::from(RequestCode::PullMessage)
                    && command.ext_fields.get("topic") == Some(topic.as_str())
                {
                    let field = |k: &str| command.ext_fields.get(k)?.parse::<i64>().ok();
                    let flag = field("sysFlag").and_then(|f| i32::try_from(f).ok());
                    pulls.lock().unwrap().push((
                        name,
                        flag.unwrap_or(-1),
                        field("commitOffset").unwrap_or(-1),
                    ));
                }
                Verdict::Relay
            },
            move |answer: &mut RemotingCommand| {
                if !answer.ext_fields.contains_key("suggestWhichBrokerId") {
                    return false;
                }
                answer.ext_fields.insert("suggestWhichBrokerId", suggest);
                true
            },
        ));
    }
    let (namesrv_listener, namesrv_addr) = support::namesrv::listen().await;
    {
        let (master, slave) = (addrs[0].clone(), addrs[1].clone());
        tokio::spawn(support::namesrv::serve(
            namesrv_listener,
            mq.client(),
            move |_: &str, route: &mut rocketmq_webhook::remoting::body::route::TopicRouteData| {
                for broker in &mut route.broker_datas {
                    broker.broker_addrs = [(0, master.clone()), (1, slave.clone())].into();
                }
            },
        ));
    }

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut config = fast_config(&group, &topic);
    // Small pulls, so that 64 messages take many of them.
    config.pull_batch_size = 4;
    let consumer = start_on(
        namesrv_addr,
        &unique("suggest"),
        config,
        Recorder::new("c", &seen),
    )
    .await;
    eventually(Duration::from_secs(60), "everything consumed", || {
        bodies_seen(&seen).len() == 64
    })
    .await;
    consumer.shutdown().await;

    let pulls = pulls.lock().unwrap().clone();
    let commit = |flag: i32| flag & PullSysFlag::COMMIT_OFFSET.0 != 0;
    let to_slave: Vec<_> = pulls.iter().filter(|p| p.0 == "S").collect();
    assert!(
        to_slave.len() >= 4,
        "the suggestion to pull from the slave was not followed: {pulls:?}"
    );
    assert!(
        to_slave
            .iter()
            .all(|(_, flag, offset)| !commit(*flag) && *offset == 0),
        "a pull to the slave carried a commit: {pulls:?}"
    );
    // Back to the master after each slave answer, committing there once there is progress (a
    // failed pull from the slave goes back to the master too): no two pulls to the slave in a
    // row.
    assert!(
        pulls.windows(2).all(|w| !(w[0].0 == "S" && w[1].0 == "S")),
        "a pull after the slave's answer did not go back to the master: {pulls:?}"
    );
    assert!(
        pulls
            .iter()
            .any(|(name, flag, offset)| *name == "M" && commit(*flag) && *offset > 0),
        "no pull to the master carried a commit: {pulls:?}"
    );
    // The final offset reached the broker through the master.
    let reader = Client::new(
        client_config(&mq, &unique("reader")),
        Arc::new(NotSupported),
    )
    .expect("client");
    assert_eq!(
        committed_offset(&reader, &mq, &group, &topic, 0).await,
        Some(64)
    );
}

/// A consumer (`mode`) of one queue whose handler never answers within a test, with
/// `drain_timeout`, once a batch is in the handler; the gauge of batches in flight; its group
/// and topic.
async fn consumer_stuck_in_its_handler(
    mq: &RocketMq,
    name: &str,
    drain_timeout: Duration,
    mode: ConsumeMode,
) -> (Consumer<Recorder>, prometheus::IntGauge, String, String) {
    let topic = unique(&format!("T_{name}"));
    let group = unique(&format!("G_{name}"));
    mq.create_topic(&topic, 1).await;
    let p = producer(mq).await;
    produce(&p, &topic, &bodies("stuck", 4), None).await;
    let metrics = Metrics::new();
    let mut config = fast_config(&group, &topic);
    config.drain_timeout = drain_timeout;
    config.mode = mode;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = start_metered(
        mq,
        &unique(name),
        config,
        Recorder::new("c", &seen).slow(Duration::from_secs(3600)),
        &metrics,
    )
    .await;
    let gauge = metrics
        .batches_in_flight
        .with_label_values(&[group.as_str(), topic.as_str()]);
    eventually(Duration::from_secs(60), "a batch in the handler", || {
        gauge.get() >= 1
    })
    .await;
    (consumer, gauge, group, topic)
}

/// A batch still in the handler when the drain times out is dropped mid-await; the gauge of
/// batches in flight must give its unit back (it was decremented after the await only, and
/// crept up for good with every such drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dropped_by_the_drain_timeout_leaves_the_in_flight_gauge() {
    let mq = RocketMq::start().await;
    let (consumer, gauge, ..) = consumer_stuck_in_its_handler(
        &mq,
        "gauge",
        Duration::from_secs(1),
        ConsumeMode::Concurrent,
    )
    .await;
    consumer.shutdown().await;
    assert_eq!(gauge.get(), 0, "batches in flight after the drain gave up");
}

/// Orderly: a batch the drain gave up on may still be running at the endpoint (only this side
/// of its request was dropped), so its queue is not unlocked: another client is refused the
/// lock until the broker's expiry. Before, the unlock let the next owner deliver beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_batch_the_drain_gave_up_on_keeps_its_queue_locked() {
    use rocketmq_webhook::remoting::body::lock::LockBatchRequest;
    use rocketmq_webhook::remoting::rpc::LockBatchMq;
    use rocketmq_webhook::remoting::MessageQueue;
    let mq = RocketMq::start().await;
    let (consumer, _, group, topic) = consumer_stuck_in_its_handler(
        &mq,
        "orderly_abandon",
        Duration::from_secs(1),
        ConsumeMode::Orderly,
    )
    .await;
    consumer.shutdown().await;
    let other = mq.client();
    let queue = MessageQueue::new(&topic, mq.broker_name(), 0);
    let got = other
        .pool()
        .call(
            &mq.broker_addr(),
            &LockBatchMq {
                body: LockBatchRequest {
                    consumer_group: group,
                    client_id: other.client_id().to_owned(),
                    only_this_broker: false,
                    mq_set: vec![queue],
                },
            },
            Duration::from_secs(5),
        )
        .await
        .expect("lock call");
    assert!(got.is_empty(), "the queue was unlocked: {got:?}");
}

/// An owner that gives up on the drain (the daemon's deadline passed) drops the shutdown; the
/// rebalancer and its workers must stop with it, not go on unowned until the runtime dies. The
/// drain timeout here is far longer than the test waits, so only the abort ends the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_given_up_on_stops_the_workers() {
    let mq = RocketMq::start().await;
    let (consumer, gauge, ..) = consumer_stuck_in_its_handler(
        &mq,
        "abandon",
        Duration::from_secs(600),
        ConsumeMode::Concurrent,
    )
    .await;
    let gave_up = tokio::time::timeout(Duration::from_secs(1), consumer.shutdown()).await;
    assert!(gave_up.is_err(), "the drain cannot finish within a second");
    eventually(
        Duration::from_secs(10),
        "the batch dropped with its worker",
        || gauge.get() == 0,
    )
    .await;
}

/// A send-back the broker refuses, whose fallback publish to the retry topic is refused too, is
/// not a finished message: the message is consumed again locally (with its reconsume count
/// raised) until it is accepted, and no committed offset passes it before then. A proxy in
/// front of the broker refuses the first two CONSUMER_SEND_MSG_BACK requests (and the retry
/// topic sends meanwhile) and records every commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_back_keeps_the_message_until_it_is_accepted() {
    use rocketmq_webhook::remoting::{RemotingCommand, RequestCode};
    use tokio::time::Instant;
    let mq = RocketMq::start().await;
    let topic = unique("T_sendback");
    let group = unique("G_sendback");
    mq.create_topic(&topic, 1).await;
    let p = producer(&mq).await;
    produce(&p, &topic, &["fail-me".to_owned(), "fine".to_owned()], None).await;

    let commits: Arc<Mutex<Vec<(Instant, i64)>>> = Arc::new(Mutex::new(Vec::new()));
    let (namesrv_addr, refused) = {
        let (commits, topic) = (Arc::clone(&commits), topic.clone());
        refusing_send_backs(&mq, 2, false, move |command: &RemotingCommand| {
            let field = |k: &str| command.ext_fields.get(k)?.parse::<i64>().ok();
            let ours = command.ext_fields.get("topic") == Some(topic.as_str());
            let code = command.code;
            // Commits travel in UPDATE_CONSUMER_OFFSET and in pulls with the commit bit.
            let carries_commit = code == i32::from(RequestCode::UpdateConsumerOffset)
                || (code == i32::from(RequestCode::PullMessage)
                    && field("sysFlag").is_some_and(|f| f & 1 != 0));
            if let (true, Some(offset)) = (ours && carries_commit, field("commitOffset")) {
                commits.lock().unwrap().push((Instant::now(), offset));
            }
        })
        .await
    };

    // "fail-me" fails twice; both send-backs are refused, so its third delivery is the local one
    // with a reconsume count of 2.
    let accepted: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let accepted = Arc::clone(&accepted);
        Recorder::new("c", &seen).deciding(move |m| {
            if &m.body[..] != b"fail-me" {
                return Outcome::Success;
            }
            if m.reconsume_times < 2 {
                Outcome::Retry { delay_level: None }
            } else {
                accepted.lock().unwrap().get_or_insert_with(Instant::now);
                Outcome::Success
            }
        })
    };
    let consumer = start_on(
        namesrv_addr,
        &unique("sendback"),
        fast_config(&group, &topic),
        recorder,
    )
    .await;
    eventually(
        Duration::from_secs(90),
        "fail-me accepted after two refused send-backs",
        || accepted.lock().unwrap().is_some(),
    )
    .await;
    let accepted_at = accepted.lock().unwrap().expect("checked above");
    assert!(refused.load(SeqCst) >= 2, "the send-backs were not tried");
    // Offset 0 is fail-me: nothing may commit past it before it was accepted.
    let early: Vec<i64> = commits
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, offset)| *at < accepted_at && *offset > 0)
        .map(|(_, offset)| *offset)
        .collect();
    assert!(
        early.is_empty(),
        "committed past fail-me before it was accepted: {early:?}"
    );
    let attempts: Vec<i32> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.body == "fail-me")
        .map(|s| s.reconsume_times)
        .collect();
    assert_eq!(
        attempts,
        [0, 1, 2],
        "consumed again locally after each refusal"
    );
    consumer.shutdown().await;
}

/// A send-back the broker refuses falls back to publishing the message to the retry topic
/// (Java's `sendMessageBackAsNormalMessage`) with the reconsume count and DLQ threshold in the
/// send header, and the message's offset is committed. A Java broker delivers it again through
/// the retry queue; rocketmq-broker-rust 1.0.0 dead-letters every retry-topic send of a group
/// without orderly locks (docs/compatibility.md), which is accepted here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_back_is_published_to_the_retry_topic_instead() {
    use rocketmq_webhook::remoting::message::properties;
    let mq = RocketMq::start().await;
    let recorded = retry_sends_recorded(&mq, "republish", "fail-me").await;
    let (topic, group) = (recorded.topic.clone(), recorded.group.clone());
    // The redelivery: its reconsume count and RETRY_TOPIC.
    type Again = (i32, Option<String>);
    let again: Arc<Mutex<Option<Again>>> = Arc::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let again = Arc::clone(&again);
        Recorder::new("c", &seen).deciding(move |m| {
            if m.reconsume_times == 0 {
                return Outcome::Retry {
                    delay_level: Some(1),
                };
            }
            let retry_topic = m.properties.get(properties::RETRY_TOPIC).map(str::to_owned);
            again
                .lock()
                .unwrap()
                .get_or_insert((m.reconsume_times, retry_topic));
            Outcome::Success
        })
    };
    let consumer = start_on(
        recorded.namesrv_addr.clone(),
        &unique("republish"),
        fast_config(&group, &topic),
        recorder,
    )
    .await;
    let (reconsume, max, props) = recorded.first_publish().await;
    assert_eq!(reconsume.as_deref(), Some("1"), "reconsumeTimes header");
    assert_eq!(max.as_deref(), Some("16"), "maxReconsumeTimes header");
    // Properties travel as `key\u{1}value\u{2}`.
    for property in [
        "RETRY_TOPIC\u{1}",
        "ORIGIN_MESSAGE_ID\u{1}",
        "DELAY\u{1}1\u{2}",
    ] {
        assert!(
            props.contains(property),
            "{property:?} missing from {props:?}"
        );
    }
    assert!(!props.contains("RECONSUME_TIME"), "{props:?}");
    // Delivered again through the retry queue (a Java broker), or dead-lettered by
    // rocketmq-broker-rust 1.0.0: either way the broker has it.
    let mut back = false;
    for _ in 0..40 {
        back = again.lock().unwrap().is_some() || mq.dlq_count(&group).await == 1;
        if back {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        back,
        "the published retry is neither delivered again nor in the DLQ"
    );
    if let Some((times, retry_topic)) = again.lock().unwrap().clone() {
        assert_eq!(times, 1, "reconsume count of the published retry");
        assert_eq!(retry_topic.as_deref(), Some(topic.as_str()));
    }
    consumer.shutdown().await;
}

/// A DLQ send-back the broker refuses (for good once the broker deleted the stored record it
/// names) falls back to publishing the message to the retry topic with its reconsume count one
/// past the limit, so the broker's rule dead-letters it (as Java's orderly consumer
/// dead-letters every message), and the offset moves on. Before, the queue retried the
/// send-back every 5 s and never got past the message. rocketmq-broker-rust 1.0.0 dead-letters
/// every retry-topic send of this group (see the test above), so the DLQ check here does not
/// test the broker's rule; the header fields do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_dlq_send_back_is_published_at_the_reconsume_limit() {
    let mq = RocketMq::start().await;
    let recorded = retry_sends_recorded(&mq, "dead_letter", "drop-me").await;
    let (topic, group) = (recorded.topic.clone(), recorded.group.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut config = fast_config(&group, &topic);
    config.max_reconsume_times = 3;
    let consumer = start_on(
        recorded.namesrv_addr.clone(),
        &unique("dead_letter"),
        config,
        Recorder::new("c", &seen).deciding(|_| Outcome::Drop),
    )
    .await;
    let (reconsume, max, props) = recorded.first_publish().await;
    // Past the limit for a 5.x broker (reconsumeTimes > maxReconsumeTimes) as for 4.x (>=).
    assert_eq!(reconsume.as_deref(), Some("4"), "reconsumeTimes header");
    assert_eq!(max.as_deref(), Some("3"), "maxReconsumeTimes header");
    assert!(props.contains("RETRY_TOPIC\u{1}"), "{props:?}");
    // Straight to the DLQ, not first through the delay levels.
    assert!(!props.contains("DELAY\u{1}"), "{props:?}");
    // The broker's consume queue is written after the store answers: wait for it.
    let mut in_dlq = 0;
    for _ in 0..40 {
        in_dlq = mq.dlq_count(&group).await;
        if in_dlq == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(in_dlq, 1, "drop-me is not in the DLQ");
    assert_eq!(bodies_seen(&seen), BTreeSet::from(["drop-me".to_owned()]));
    consumer.shutdown().await;
}

/// Holds a second delivery of the body `gate` (a broker's consume-directly of it) until
/// `released`, for at most 8 s; everything else succeeds at once.
struct Gate {
    gate_calls: Arc<std::sync::atomic::AtomicUsize>,
    released: Arc<AtomicBool>,
}

impl Handler for Gate {
    async fn handle(&self, batch: &Batch) -> Vec<Outcome> {
        for m in &batch.messages {
            if &m.body[..] == b"gate" && self.gate_calls.fetch_add(1, SeqCst) >= 1 {
                let until = tokio::time::Instant::now() + Duration::from_secs(8);
                while !self.released.load(SeqCst) && tokio::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        vec![Outcome::Success; batch.messages.len()]
    }
}

/// A broker's consume-directly waits on the endpoint (seconds); the broker's other requests to
/// the same consumer (running info here; membership notices and offset resets alike) are
/// answered meanwhile, not queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_direct_consumption_does_not_hold_up_other_broker_requests() {
    use rocketmq_webhook::remoting::{RequestCode, ResponseCode};
    use std::sync::atomic::AtomicUsize;
    let mq = RocketMq::start().await;
    let topic = unique("T_direct");
    let group = unique("G_direct");
    mq.create_topic(&topic, 1).await;
    let p = producer(&mq).await;
    let target = p
        .send(
            Message::new(topic.as_str(), b"gate".to_vec()),
            &QueueSelector::RoundRobin,
        )
        .await
        .expect("sent");
    let gate_calls = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicBool::new(false));
    let consumer = start(
        &mq,
        &unique("direct"),
        fast_config(&group, &topic),
        Gate {
            gate_calls: Arc::clone(&gate_calls),
            released: Arc::clone(&released),
        },
    )
    .await;
    eventually(Duration::from_secs(60), "gate consumed", || {
        gate_calls.load(SeqCst) >= 1
    })
    .await;
    let client_id = consumer.client_id().to_owned();
    let direct_fields = [
        ("consumerGroup", group.as_str()),
        ("clientId", client_id.as_str()),
        ("msgId", target.offset_msg_id.as_str()),
        ("topic", topic.as_str()),
    ];
    let direct = admin_call_within(
        &mq,
        RequestCode::ConsumeMessageDirectly,
        &direct_fields,
        Duration::from_secs(20),
    );
    let meanwhile = async {
        eventually(
            Duration::from_secs(10),
            "the direct consumption began",
            || gate_calls.load(SeqCst) >= 2,
        )
        .await;
        // The endpoint holds the direct consumption for 8 s unless released; this must be
        // answered well before.
        let info = admin_call_within(
            &mq,
            RequestCode::GetConsumerRunningInfo,
            &[
                ("consumerGroup", &group),
                ("clientId", &client_id),
                ("jstackEnable", "false"),
            ],
            Duration::from_secs(3),
        )
        .await;
        released.store(true, SeqCst);
        info
    };
    let (direct, info) = tokio::join!(direct, meanwhile);
    let info =
        info.unwrap_or_else(|e| panic!("running info while a direct consumption waits: {e}"));
    assert_eq!(
        info.response_code(),
        ResponseCode::Success,
        "{:?}",
        info.remark
    );
    let direct = direct.unwrap_or_else(|e| panic!("consume directly: {e}"));
    assert_eq!(
        direct.response_code(),
        ResponseCode::Success,
        "{:?}",
        direct.remark
    );
    assert!(String::from_utf8_lossy(&direct.body).contains("CR_SUCCESS"));
    consumer.shutdown().await;
}

/// Orderly: a message whose body does not inflate goes to the DLQ; while that send fails, the
/// messages after it wait, as behind any failed message (before the fix they were delivered
/// past it). A proxy refuses the first two CONSUMER_SEND_MSG_BACK requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderly_waits_behind_an_undecodable_message_until_it_is_dead_lettered() {
    let mq = RocketMq::start().await;
    let topic = unique("T_undecodable_orderly");
    let group = unique("G_undecodable_orderly");
    let p = producer(&mq).await;
    p.create_topic(&topic, 1, true)
        .await
        .expect("topic created");
    produce(&p, &topic, &["a".to_owned()], None).await;
    mq.send_undecodable(&topic, "not zlib").await;
    produce(&p, &topic, &["b".to_owned()], None).await;

    let (namesrv_addr, send_backs) = refusing_send_backs(&mq, 2, false, |_| {}).await;
    // How many send-backs had been asked for when "b" first reached the handler.
    let at_b: Arc<Mutex<Option<usize>>> = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let (at_b, send_backs) = (Arc::clone(&at_b), Arc::clone(&send_backs));
        Recorder::new("c", &seen).deciding(move |m| {
            if &m.body[..] == b"b" {
                at_b.lock().unwrap().get_or_insert(send_backs.load(SeqCst));
            }
            Outcome::Success
        })
    };
    let mut config = fast_config(&group, &topic);
    config.mode = ConsumeMode::Orderly;
    config.consume_batch_size = 4;
    let consumer = start_on(namesrv_addr, &unique("undecodable"), config, recorder).await;
    eventually(Duration::from_secs(60), "b handled", || {
        at_b.lock().unwrap().is_some()
    })
    .await;
    let asked = at_b.lock().unwrap().expect("checked above");
    assert!(
        asked >= 3,
        "b was delivered after {asked} send-backs, before the third (the first that succeeds)"
    );
    let dlq = mq.dlq_bodies(&group).await;
    assert_eq!(dlq, ["not zlib"], "the DLQ holds the message once");
    consumer.shutdown().await;
}

/// A broker's consume-directly of a message whose body does not inflate is refused with a
/// reason; the endpoint never gets the stored bytes as if they were the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_directly_refuses_a_body_that_does_not_inflate() {
    use rocketmq_webhook::remoting::{RequestCode, ResponseCode};
    let mq = RocketMq::start().await;
    let topic = unique("T_direct_undecodable");
    let group = unique("G_direct_undecodable");
    mq.create_topic(&topic, 1).await;
    let p = producer(&mq).await;
    produce(&p, &topic, &["fine".to_owned()], None).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = start(
        &mq,
        &unique("direct_undecodable"),
        fast_config(&group, &topic),
        Recorder::new("c", &seen),
    )
    .await;
    eventually(Duration::from_secs(60), "fine consumed", || {
        bodies_seen(&seen).contains("fine")
    })
    .await;
    let msg_id = mq.send_undecodable(&topic, "not zlib").await;
    let client_id = consumer.client_id().to_owned();
    let answer = admin_call(
        &mq,
        RequestCode::ConsumeMessageDirectly,
        &[
            ("consumerGroup", &group),
            ("clientId", &client_id),
            ("msgId", &msg_id),
            ("topic", &topic),
        ],
    )
    .await;
    assert_eq!(
        answer.response_code(),
        ResponseCode::SystemError,
        "{:?}",
        answer.remark
    );
    assert!(
        answer
            .remark
            .as_deref()
            .unwrap_or("")
            .contains("does not inflate"),
        "{:?}",
        answer.remark
    );
    assert!(
        !bodies_seen(&seen).contains("not zlib"),
        "the handler got the stored bytes"
    );
    consumer.shutdown().await;
}

/// A send to the retry topic: its reconsumeTimes and maxReconsumeTimes header fields and its
/// properties.
type RetrySend = (Option<String>, Option<String>, String);

/// What [`retry_sends_recorded`] set up, and what it records behind its name server.
struct RetrySends {
    /// A one-queue topic holding the one message.
    topic: String,
    /// The consumer group, whose retry topic exists.
    group: String,
    namesrv_addr: String,
    /// Send-backs asked for (all refused).
    refused: Arc<std::sync::atomic::AtomicUsize>,
    /// Each send to the retry topic.
    sends: Arc<Mutex<Vec<RetrySend>>>,
    /// The offsets committed for the topic.
    commits: Arc<Mutex<Vec<i64>>>,
}

impl RetrySends {
    /// Waits until the message was published to the retry topic and its offset committed (a
    /// send-back having been tried first), and returns that publish.
    async fn first_publish(&self) -> RetrySend {
        eventually(
            Duration::from_secs(60),
            "the message published to the retry topic and committed",
            || !self.sends.lock().unwrap().is_empty() && self.commits.lock().unwrap().contains(&1),
        )
        .await;
        assert!(self.refused.load(SeqCst) >= 1, "no send-back was tried");
        self.sends.lock().unwrap()[0].clone()
    }
}

/// A topic (`T_<name>`) holding one message `body`, the retry topic of a group (`G_<name>`),
/// and [`refusing_send_backs`] refusing every send-back and relaying the fallback's sends,
/// which it records with the topic's commits.
async fn retry_sends_recorded(mq: &RocketMq, name: &str, body: &str) -> RetrySends {
    use rocketmq_webhook::remoting::{RemotingCommand, RequestCode};
    let topic = unique(&format!("T_{name}"));
    let group = unique(&format!("G_{name}"));
    mq.create_topic(&topic, 1).await;
    // The broker creates the retry topic on a send-back, which the proxy refuses here.
    mq.create_topic(&format!("%RETRY%{group}"), 1).await;
    produce(&producer(mq).await, &topic, &[body.to_owned()], None).await;
    let sends: Arc<Mutex<Vec<_>>> = Arc::default();
    let commits: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (sends_seen, commits_seen, watched) =
        (Arc::clone(&sends), Arc::clone(&commits), topic.clone());
    let (namesrv_addr, refused) =
        refusing_send_backs(mq, usize::MAX, true, move |command: &RemotingCommand| {
            let field = |k: &str| command.ext_fields.get(k).map(str::to_owned);
            if command.code == i32::from(RequestCode::SendMessageV2)
                && field("b").is_some_and(|t| t.starts_with("%RETRY%"))
            {
                sends_seen.lock().unwrap().push((
                    field("j"),
                    field("l"),
                    field("i").unwrap_or_default(),
                ));
            }
            if command.code == i32::from(RequestCode::UpdateConsumerOffset)
                && field("topic").as_deref() == Some(watched.as_str())
            {
                if let Some(offset) = field("commitOffset").and_then(|o| o.parse().ok()) {
                    commits_seen.lock().unwrap().push(offset);
                }
            }
        })
        .await;
    RetrySends {
        topic,
        group,
        namesrv_addr,
        refused,
        sends,
        commits,
    }
}

/// A fake name server whose routes lead to a proxy in front of the real broker. The proxy
/// refuses the first `refused` CONSUMER_SEND_MSG_BACK requests, and while it refuses them also
/// the consumer's fallback sends to the retry topic unless `relay_republish`, and shows every
/// other request to `watch` before relaying it. Returns the name server's address and how many
/// send-backs were asked for so far.
async fn refusing_send_backs(
    mq: &RocketMq,
    refused: usize,
    relay_republish: bool,
    watch: impl Fn(&rocketmq_webhook::remoting::RemotingCommand) + Clone + Send + Sync + 'static,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use rocketmq_webhook::remoting::{RemotingCommand, RequestCode, ResponseCode};
    use support::proxy::{encode, Verdict};
    let send_backs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (proxy_listener, proxy_addr) = support::namesrv::listen().await;
    {
        let send_backs = Arc::clone(&send_backs);
        tokio::spawn(support::proxy::serve(
            proxy_listener,
            mq.broker_addr(),
            move |command: &RemotingCommand| {
                let refuse = || {
                    Verdict::Answer(encode(&RemotingCommand::response_to(
                        command,
                        ResponseCode::SystemError,
                        Some("refused by the test".to_owned()),
                    )))
                };
                if command.code == i32::from(RequestCode::ConsumerSendMsgBack)
                    && send_backs.fetch_add(1, SeqCst) < refused
                {
                    return refuse();
                }
                let republish = (command.code == i32::from(RequestCode::SendMessageV2)
                    || command.code == i32::from(RequestCode::SendMessage))
                    && [command.ext_fields.get("b"), command.ext_fields.get("topic")]
                        .into_iter()
                        .flatten()
                        .any(|t| t.starts_with("%RETRY%"));
                if republish && !relay_republish && send_backs.load(SeqCst) <= refused {
                    return refuse();
                }
                watch(command);
                Verdict::Relay
            },
        ));
    }
    let namesrv_addr = support::namesrv::through_proxy(mq.client(), proxy_addr).await;
    (namesrv_addr, send_backs)
}

/// The orderly locks gauge follows the table at once: a queue's lock shows when it is granted
/// and leaves when the queue is released, not at the next renewal 20 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_locks_gauge_follows_grants_and_releases_at_once() {
    let mq = RocketMq::start().await;
    let topic = unique("T_locks_gauge");
    let group = unique("G_locks_gauge");
    let p = producer(&mq).await;
    p.create_topic(&topic, 2, true)
        .await
        .expect("topic created");
    let metrics = Metrics::new();
    let mut config = fast_config(&group, &topic);
    config.mode = ConsumeMode::Orderly;
    config.lock_renew_interval = Duration::from_secs(3600);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = start_metered(
        &mq,
        &unique("locks_gauge"),
        config,
        Recorder::new("c", &seen),
        &metrics,
    )
    .await;
    let gauge = metrics
        .locked_queues
        .with_label_values(&[group.as_str(), topic.as_str()]);
    eventually(Duration::from_secs(60), "both queues assigned", || {
        assigned(&consumer, &topic).len() == 2
    })
    .await;
    // Every held queue (the retry topic's too, once it has a route) was locked to be held.
    eventually(
        Duration::from_secs(10),
        "the gauge shows every lock",
        || {
            let held = consumer.stats().queues.len();
            held >= 2 && gauge.get() == i64::try_from(held).unwrap_or(-1)
        },
    )
    .await;
    consumer.shutdown().await;
    assert_eq!(gauge.get(), 0, "locks released but still shown");
}

/// A heartbeat round no broker takes (the broker refuses them here, as one still starting would)
/// is tried again within seconds, not a whole heartbeat interval later: until a broker has the
/// heartbeat, a broadcasting consumer is not ready (and a clustering one has no retry topic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_no_broker_took_is_tried_again_soon() {
    use rocketmq_webhook::remoting::{RemotingCommand, RequestCode, ResponseCode};
    use support::proxy::{encode, Verdict};
    let mq = RocketMq::start().await;
    let topic = unique("T_hb_retry");
    let group = unique("G_hb_retry");
    mq.create_topic(&topic, 1).await;
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (proxy_listener, proxy_addr) = support::namesrv::listen().await;
    {
        let refused = Arc::clone(&refused);
        tokio::spawn(support::proxy::serve(
            proxy_listener,
            mq.broker_addr(),
            move |command: &RemotingCommand| {
                // Two: the first round, and the one the first assignment asks for.
                if command.code == i32::from(RequestCode::HeartBeat)
                    && refused.fetch_add(1, SeqCst) < 2
                {
                    return Verdict::Answer(encode(&RemotingCommand::response_to(
                        command,
                        ResponseCode::SystemError,
                        Some("refused by the test".to_owned()),
                    )));
                }
                Verdict::Relay
            },
        ));
    }
    let namesrv_addr = support::namesrv::through_proxy(mq.client(), proxy_addr).await;
    let mut config = fast_config(&group, &topic);
    config.model = Model::Broadcasting;
    config.heartbeat_interval = Duration::from_secs(120);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = start_on(
        namesrv_addr,
        &unique("hb-retry"),
        config,
        Recorder::new("c", &seen),
    )
    .await;
    let probe = consumer.probe();
    eventually(
        Duration::from_secs(15),
        "ready after a retried heartbeat",
        || probe.is_ready(),
    )
    .await;
    assert!(
        refused.load(SeqCst) >= 3,
        "the first heartbeats were refused"
    );
    consumer.shutdown().await;
}
