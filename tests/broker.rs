//! Integration tests against the real RocketMQ name server and broker (tests/support), run in
//! every test run and never skipped (style.md rule 9c). Each test starts its own private
//! servers (about a second) and uses its own topic and group names.
//!
//! These are cross-implementation checks: the broker is the Rust port from crates.io, a different
//! implementation from this crate's codec and client.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rocketmq_webhook::client::producer::{QueueSelector, SendResult};
use rocketmq_webhook::client::{
    BoxFuture, Client, ClientError, CloseReason, InboundHandler, Origin,
};
use rocketmq_webhook::remoting::body::lock::{LockBatchRequest, UnlockBatchRequest};
use rocketmq_webhook::remoting::command::RemotingCommand;
use rocketmq_webhook::remoting::message::{properties, sys_flag, Message};
use rocketmq_webhook::remoting::rpc::{
    Boundary, ConsumerSendMsgBack, GetConsumerList, GetEarliestMsgStoreTime, GetMaxOffset,
    GetMinOffset, LockBatchMq, PullMessage, PullResult, PullStatus, PullSysFlag,
    QueryConsumerOffset, SearchOffsetByTimestamp, UnlockBatchMq, UpdateConsumerOffset,
};
use rocketmq_webhook::remoting::{MessageExt, MessageQueue, RequestCode};
use support::{consumer_heartbeat, raw, unique, RocketMq};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

// === helpers ===

/// A pull of up to 32 messages with the `*` subscription in the request (no heartbeat needed).
fn pull_request(
    group: &str,
    topic: &str,
    queue_id: i32,
    offset: i64,
    suspend_ms: i64,
) -> PullMessage {
    let mut request = PullMessage::all_tags(group, topic, queue_id, offset, 32);
    if suspend_ms > 0 {
        request.sys_flag |= PullSysFlag::SUSPEND;
        request.suspend_timeout_millis = suspend_ms;
    }
    request
}

async fn pull(
    client: &Client,
    addr: &str,
    group: &str,
    topic: &str,
    queue_id: i32,
    offset: i64,
) -> PullResult {
    client
        .pool()
        .call(
            addr,
            &pull_request(group, topic, queue_id, offset, 0),
            CALL_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("pull {topic}#{queue_id}@{offset} failed: {e}"))
}

/// Every message of one queue from offset 0.
async fn pull_all(
    client: &Client,
    addr: &str,
    group: &str,
    topic: &str,
    queue_id: i32,
) -> Vec<MessageExt> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let result = pull(client, addr, group, topic, queue_id, offset).await;
        if result.status != PullStatus::Found {
            return out;
        }
        offset = result.next_begin_offset;
        out.extend(result.messages);
    }
}

/// Pulls `topic` queue 0 until a message arrives or `within` passes (topics such as `%RETRY%`
/// and `%DLQ%` may not exist yet at first, so errors are retried too).
async fn pull_until_found(
    client: &Client,
    addr: &str,
    group: &str,
    topic: &str,
    within: Duration,
) -> MessageExt {
    let deadline = Instant::now() + within;
    let mut last = String::from("nothing yet");
    while Instant::now() < deadline {
        match client
            .pool()
            .call(addr, &pull_request(group, topic, 0, 0, 0), CALL_TIMEOUT)
            .await
        {
            Ok(result) if result.status == PullStatus::Found => {
                if let Some(m) = result.messages.into_iter().next() {
                    return m;
                }
            }
            Ok(result) => last = format!("{:?}", result.status),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no message in {topic} within {within:?} (last answer: {last})");
}

/// Forwards broker-initiated requests into a channel (and answers nothing: the ones tested are
/// oneway).
struct Forward(mpsc::Sender<(String, RemotingCommand)>);

impl InboundHandler for Forward {
    fn handle(&self, from: &str, request: RemotingCommand) -> BoxFuture<Option<RemotingCommand>> {
        let _ = self.0.try_send((from.to_owned(), request));
        Box::pin(std::future::ready(None))
    }
}

fn assert_same_message(got: &MessageExt, sent: &SendResult, body: &[u8]) {
    assert_eq!(got.body.as_ref(), body);
    assert_eq!(got.msg_id(), sent.msg_id, "UNIQ_KEY");
    assert_eq!(got.offset_msg_id(), sent.offset_msg_id, "offset msgId");
    assert_eq!(got.queue_offset, sent.queue_offset);
    assert_eq!(got.queue_id, sent.queue.queue_id);
}

// === tests ===

/// The harness itself: the broker's route is on the name server and the broker answers.
#[tokio::test]
async fn harness_starts_a_registered_broker() {
    let mq = RocketMq::start().await;
    let resp = raw::request(
        &mq.namesrv_addr(),
        105,
        &[("topic", "TBW102")],
        Duration::from_secs(3),
    )
    .await
    .expect("route request");
    assert_eq!(resp.code, 0, "{:?}", resp.remark);
    let body = String::from_utf8_lossy(&resp.body);
    assert!(
        body.contains(&mq.broker_addr()),
        "route {body} lacks {}",
        mq.broker_addr()
    );
}

/// Create a topic, read its route, send single and batch messages and pull them back with
/// every field checked.
#[tokio::test]
async fn topic_route_send_batch_and_pull_round_trip() {
    let mq = RocketMq::start().await;
    let topic = unique("RoundTrip");
    let group = unique("g_roundtrip");
    let created = mq.create_topic(&topic, 4).await;
    assert_eq!(created.publish_queues(&topic).len(), 4);

    let producer = mq.producer();
    let client = producer.client().clone();
    let route = client.namesrv().route(&topic).await.expect("route");
    assert_eq!(route.broker_datas.len(), 1);
    let broker = &route.broker_datas[0];
    assert_eq!(broker.broker_name, mq.broker_name());
    assert_eq!(broker.cluster, mq.cluster_name());
    assert_eq!(broker.master_addr(), Some(mq.broker_addr().as_str()));
    assert_eq!(route.queue_datas.len(), 1);
    assert_eq!(
        (
            route.queue_datas[0].read_queue_nums,
            route.queue_datas[0].write_queue_nums
        ),
        (4, 4)
    );
    assert_eq!(route.queue_datas[0].perm, 6);
    let expected: Vec<MessageQueue> = (0..4)
        .map(|i| MessageQueue::new(&topic, mq.broker_name(), i))
        .collect();
    assert_eq!(route.publish_queues(&topic), expected);
    assert_eq!(route.subscribe_queues(&topic), expected);

    // One message with tag, keys and a user property.
    let single = Message::new(&topic, "hello single")
        .with_tags("TagA")
        .with_keys(["k1", "k2"])
        .with_property("color", "blue");
    let sent = producer
        .send(single, &QueueSelector::Hash("single".into()))
        .await
        .expect("send");
    assert_eq!(sent.msg_id.len(), 32, "{sent:?}");
    assert_eq!(sent.queue.topic, topic);
    assert_eq!(sent.queue.broker_name, mq.broker_name());

    // A batch of three, all to one queue at consecutive offsets.
    let batch: Vec<Message> = (0..3)
        .map(|i| {
            Message::new(&topic, format!("batch-{i}"))
                .with_tags(format!("B{i}"))
                .with_keys([format!("bk{i}")])
        })
        .collect();
    let batch_sent = producer
        .send_batch(batch, &QueueSelector::Hash("batch".into()))
        .await
        .expect("batch");
    assert_eq!(batch_sent.msg_ids.len(), 3);
    assert_eq!(batch_sent.offset_msg_ids.len(), 3);
    assert_eq!(
        batch_sent.msg_ids.iter().collect::<BTreeSet<_>>().len(),
        3,
        "distinct ids"
    );

    let addr = mq.broker_addr();
    let last_of_batch = batch_sent.queue_offset + batch_sent.msg_ids.len() as i64 - 1;
    mq.wait_pullable(
        &client,
        &topic,
        [
            (sent.queue.queue_id, sent.queue_offset),
            (batch_sent.queue.queue_id, last_of_batch),
        ],
    )
    .await;
    let pulled = pull_all(&client, &addr, &group, &topic, sent.queue.queue_id).await;
    let got = pulled
        .iter()
        .find(|m| m.msg_id() == sent.msg_id)
        .expect("single message pulled");
    assert_same_message(got, &sent, b"hello single");
    assert_eq!(got.topic, topic);
    assert_eq!(got.tags(), Some("TagA"));
    assert_eq!(got.keys(), vec!["k1", "k2"]);
    assert_eq!(got.property("color"), Some("blue"));
    assert_eq!(got.reconsume_times, 0);
    assert_eq!(
        got.store_host.to_string(),
        addr,
        "store host is the advertised broker address"
    );
    assert_eq!(got.sys_flag & sys_flag::COMPRESSED, 0);

    let pulled = pull_all(&client, &addr, &group, &topic, batch_sent.queue.queue_id).await;
    for (i, id) in batch_sent.msg_ids.iter().enumerate() {
        let got = pulled
            .iter()
            .find(|m| &m.msg_id() == id)
            .unwrap_or_else(|| panic!("batch message {i} pulled"));
        assert_eq!(got.body.as_ref(), format!("batch-{i}").as_bytes());
        assert_eq!(got.tags(), Some(format!("B{i}").as_str()));
        assert_eq!(got.keys(), vec![format!("bk{i}")]);
        assert_eq!(got.queue_offset, batch_sent.queue_offset + i as i64);
        assert_eq!(got.offset_msg_id(), batch_sent.offset_msg_ids[i]);
        // The broker appends the batch's properties to each member, so WAIT is stored twice;
        // the decoded message has it once.
        let waits = got
            .properties
            .iter()
            .filter(|(k, _)| *k == properties::WAIT);
        assert_eq!(waits.collect::<Vec<_>>(), [(properties::WAIT, "true")]);
    }
}

/// A body of 4 KiB or more is sent zlib-compressed (flagged in sysFlag) and pulls back intact.
#[tokio::test]
async fn large_bodies_are_compressed_and_pull_back_intact() {
    let mq = RocketMq::start().await;
    let topic = unique("Compressed");
    mq.create_topic(&topic, 1).await;
    let producer = mq.producer();
    let body: Vec<u8> = (0..10_000u32)
        .map(|i| b"abcdefghij"[(i % 10) as usize])
        .collect();
    let sent = producer
        .send(
            Message::new(&topic, body.clone()),
            &QueueSelector::RoundRobin,
        )
        .await
        .expect("send");
    let small = producer
        .send(
            Message::new(&topic, vec![b'x'; 4095]),
            &QueueSelector::RoundRobin,
        )
        .await
        .expect("send");
    let stored = [&sent, &small].map(|r| (r.queue.queue_id, r.queue_offset));
    mq.wait_pullable(producer.client(), &topic, stored).await;
    let pulled = pull_all(
        producer.client(),
        &mq.broker_addr(),
        &unique("g"),
        &topic,
        0,
    )
    .await;
    assert_eq!(pulled.len(), 2);
    assert_same_message(&pulled[0], &sent, &body);
    // The decoder clears COMPRESSED after inflating; the type bits (3 = zlib) show how the
    // producer sent and the broker stored it.
    assert_eq!(
        pulled[0].sys_flag & sys_flag::COMPRESSION_TYPE_MASK,
        0x300,
        "sysFlag {:#x}",
        pulled[0].sys_flag
    );
    assert_same_message(&pulled[1], &small, &[b'x'; 4095]);
    assert_eq!(
        pulled[1].sys_flag & (sys_flag::COMPRESSED | sys_flag::COMPRESSION_TYPE_MASK),
        0,
        "4095 bytes stay uncompressed"
    );
}

/// The hash selector keeps every key on one queue and spreads distinct keys.
#[tokio::test]
async fn hash_selector_keeps_each_key_on_one_queue() {
    let mq = RocketMq::start().await;
    let topic = unique("Hashed");
    mq.create_topic(&topic, 8).await;
    let producer = mq.producer();
    let mut queues: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for i in 0..24 {
        let key = format!("order-{}", i % 4);
        let sent = producer
            .send(
                Message::new(&topic, format!("m{i}")).with_keys([key.clone()]),
                &QueueSelector::Hash(key.clone()),
            )
            .await
            .expect("send");
        queues.entry(key).or_default().insert(sent.queue.queue_id);
    }
    for (key, set) in &queues {
        assert_eq!(set.len(), 1, "{key} landed on {set:?}");
    }
    let distinct: BTreeSet<i32> = queues.values().flatten().copied().collect();
    assert_eq!(
        distinct.len(),
        4,
        "four keys with consecutive Java hashes use four queues: {queues:?}"
    );
}

/// A long-polling pull held by the broker returns as soon as a message is sent.
#[tokio::test]
async fn long_poll_pull_returns_a_message_sent_later() {
    let mq = RocketMq::start().await;
    let topic = unique("LongPoll");
    let group = unique("g_longpoll");
    mq.create_topic(&topic, 1).await;
    let client = mq.client();
    let addr = mq.broker_addr();

    let started = Instant::now();
    let held = {
        let client = client.clone();
        let request = pull_request(&group, &topic, 0, 0, 10_000);
        let addr = addr.clone();
        tokio::spawn(async move {
            client
                .pool()
                .call(&addr, &request, Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !held.is_finished(),
        "the broker answered an empty long poll at once"
    );
    let sent = mq.produce(&topic, 1, "late", None).await;
    let result = held.await.expect("pull task").expect("pull");
    let waited = started.elapsed();
    assert_eq!(result.status, PullStatus::Found);
    assert_eq!(result.messages.len(), 1);
    assert_same_message(&result.messages[0], &sent[0], b"late-0");
    assert!(
        waited >= Duration::from_millis(900),
        "returned after {waited:?}, before the send"
    );
    assert!(
        waited < Duration::from_secs(8),
        "held {waited:?}: not woken by the send"
    );
}

/// Consumer offsets: none for a new group, then what was stored; unknown group or topic fail.
#[tokio::test]
async fn consumer_offsets_query_and_update() {
    let mq = RocketMq::start().await;
    let topic = unique("Offsets");
    let group = unique("g_offsets");
    mq.create_topic(&topic, 2).await;
    mq.produce(&topic, 6, "o", None).await;
    let client = mq.client();
    let addr = mq.broker_addr();
    // The group must exist on the broker; a heartbeat creates it (autoCreateSubscriptionGroup).
    client
        .pool()
        .call(
            &addr,
            &consumer_heartbeat(&client, &group, &[&topic, &format!("%RETRY%{group}")]),
            CALL_TIMEOUT,
        )
        .await
        .expect("heartbeat");

    let query = |queue_id| QueryConsumerOffset {
        consumer_group: group.clone(),
        topic: topic.clone(),
        queue_id,
        set_zero_if_not_found: Some(false),
    };
    assert_eq!(
        client
            .pool()
            .call(&addr, &query(0), CALL_TIMEOUT)
            .await
            .expect("query"),
        None
    );
    for (queue_id, offset) in [(0, 2), (1, 3)] {
        let update = UpdateConsumerOffset {
            consumer_group: group.clone(),
            topic: topic.clone(),
            queue_id,
            commit_offset: offset,
        };
        client
            .pool()
            .call(&addr, &update, CALL_TIMEOUT)
            .await
            .expect("update");
    }
    assert_eq!(
        client
            .pool()
            .call(&addr, &query(0), CALL_TIMEOUT)
            .await
            .expect("query"),
        Some(2)
    );
    assert_eq!(
        client
            .pool()
            .call(&addr, &query(1), CALL_TIMEOUT)
            .await
            .expect("query"),
        Some(3)
    );
    // Moving forward overwrites.
    let forward = UpdateConsumerOffset {
        consumer_group: group.clone(),
        topic: topic.clone(),
        queue_id: 0,
        commit_offset: 5,
    };
    client
        .pool()
        .call(&addr, &forward, CALL_TIMEOUT)
        .await
        .expect("update");
    assert_eq!(
        client
            .pool()
            .call(&addr, &query(0), CALL_TIMEOUT)
            .await
            .expect("query"),
        Some(5)
    );
    // Moving back: Java stores the lower offset (with a warning); the Rust broker 1.0.0 answers
    // SUCCESS but keeps the higher one. Both are accepted here; the daemon must not rely on a
    // client-side offset decrease (use the broker's reset instead).
    let back = UpdateConsumerOffset {
        consumer_group: group.clone(),
        topic: topic.clone(),
        queue_id: 0,
        commit_offset: 1,
    };
    client
        .pool()
        .call(&addr, &back, CALL_TIMEOUT)
        .await
        .expect("update");
    let after_back = client
        .pool()
        .call(&addr, &query(0), CALL_TIMEOUT)
        .await
        .expect("query");
    assert!(
        matches!(after_back, Some(1 | 5)),
        "offset after moving back: {after_back:?}"
    );
}

/// Max/min offsets, earliest store time and search by timestamp on a queue with three messages.
#[tokio::test]
async fn queue_offsets_and_search_by_timestamp() {
    let mq = RocketMq::start().await;
    let topic = unique("QueueOffsets");
    mq.create_topic(&topic, 1).await;
    let client = mq.client();
    let addr = mq.broker_addr();
    let max = GetMaxOffset {
        topic: topic.clone(),
        queue_id: 0,
    };
    let min = GetMinOffset {
        topic: topic.clone(),
        queue_id: 0,
    };
    assert_eq!(
        client
            .pool()
            .call(&addr, &max, CALL_TIMEOUT)
            .await
            .expect("max"),
        0
    );
    assert_eq!(
        client
            .pool()
            .call(&addr, &min, CALL_TIMEOUT)
            .await
            .expect("min"),
        0
    );

    for i in 0..3 {
        mq.produce(&topic, 1, &format!("t{i}"), None).await;
        // Distinct store times, so a timestamp picks one message.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(
        client
            .pool()
            .call(&addr, &max, CALL_TIMEOUT)
            .await
            .expect("max"),
        3
    );
    assert_eq!(
        client
            .pool()
            .call(&addr, &min, CALL_TIMEOUT)
            .await
            .expect("min"),
        0
    );

    let stored = pull_all(&client, &addr, &unique("g"), &topic, 0).await;
    assert_eq!(stored.len(), 3);
    let earliest = GetEarliestMsgStoreTime {
        topic: topic.clone(),
        queue_id: 0,
    };
    assert_eq!(
        client
            .pool()
            .call(&addr, &earliest, CALL_TIMEOUT)
            .await
            .expect("earliest"),
        stored[0].store_timestamp
    );
    for (i, m) in stored.iter().enumerate() {
        let search = SearchOffsetByTimestamp {
            topic: topic.clone(),
            queue_id: 0,
            timestamp: m.store_timestamp,
            boundary: Boundary::Lower,
        };
        assert_eq!(
            client
                .pool()
                .call(&addr, &search, CALL_TIMEOUT)
                .await
                .expect("search"),
            i as i64,
            "message {i}"
        );
    }
}

/// CONSUMER_SEND_MSG_BACK: a delay level lands the message in `%RETRY%group` with
/// reconsumeTimes + 1; a negative level sends it to `%DLQ%group`.
#[tokio::test]
async fn send_back_goes_to_the_retry_topic_and_negative_level_to_the_dlq() {
    let mq = RocketMq::start().await;
    let topic = unique("SendBack");
    let group = unique("g_sendback");
    mq.create_topic(&topic, 1).await;
    let client = mq.client();
    let addr = mq.broker_addr();
    client
        .pool()
        .call(
            &addr,
            &consumer_heartbeat(&client, &group, &[&topic, &format!("%RETRY%{group}")]),
            CALL_TIMEOUT,
        )
        .await
        .expect("heartbeat");
    let sent = mq.produce(&topic, 2, "back", Some("TagR")).await;
    let original = pull_all(&client, &addr, &group, &topic, 0).await;
    assert_eq!(original.len(), 2);

    let send_back = |m: &MessageExt, delay_level| ConsumerSendMsgBack {
        offset: m.commit_log_offset,
        group: group.clone(),
        delay_level,
        origin_msg_id: m.msg_id().into_owned(),
        origin_topic: topic.clone(),
        max_reconsume_times: 16,
        broker_name: None,
    };
    client
        .pool()
        .call(&addr, &send_back(&original[0], 1), CALL_TIMEOUT)
        .await
        .expect("send back");
    let retry_topic = format!("%RETRY%{group}");
    let retried = pull_until_found(
        &client,
        &addr,
        &group,
        &retry_topic,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(retried.body.as_ref(), b"back-0");
    assert_eq!(retried.reconsume_times, original[0].reconsume_times + 1);
    assert_eq!(
        retried.msg_id(),
        sent[0].msg_id,
        "UNIQ_KEY survives the retry"
    );
    assert_eq!(
        retried.property(properties::RETRY_TOPIC),
        Some(topic.as_str())
    );
    assert_eq!(retried.tags(), Some("TagR"));
    assert_eq!(retried.topic, retry_topic);

    client
        .pool()
        .call(&addr, &send_back(&original[1], -1), CALL_TIMEOUT)
        .await
        .expect("send to DLQ");
    let dlq_topic = format!("%DLQ%{group}");
    let dead = pull_until_found(&client, &addr, &group, &dlq_topic, Duration::from_secs(20)).await;
    assert_eq!(dead.body.as_ref(), b"back-1");
    assert_eq!(dead.msg_id(), sent[1].msg_id);
    assert_eq!(dead.topic, dlq_topic);
}

/// LOCK_BATCH_MQ: a queue locked by one client is refused to another until unlocked.
#[tokio::test]
async fn queue_lock_is_exclusive_between_clients() {
    let mq = RocketMq::start().await;
    let topic = unique("Locked");
    let group = unique("g_lock");
    mq.create_topic(&topic, 2).await;
    let (a, b) = (mq.client(), mq.client());
    assert_ne!(a.client_id(), b.client_id());
    let addr = mq.broker_addr();
    let queues: Vec<MessageQueue> = (0..2)
        .map(|i| MessageQueue::new(&topic, mq.broker_name(), i))
        .collect();
    let lock = |client: &Client| LockBatchMq {
        body: LockBatchRequest {
            consumer_group: group.clone(),
            client_id: client.client_id().to_owned(),
            only_this_broker: false,
            mq_set: queues.clone(),
        },
    };
    let sorted = |mut v: Vec<MessageQueue>| {
        v.sort();
        v
    };
    let got_a = a
        .pool()
        .call(&addr, &lock(&a), CALL_TIMEOUT)
        .await
        .expect("lock a");
    assert_eq!(sorted(got_a), queues);
    let got_b = b
        .pool()
        .call(&addr, &lock(&b), CALL_TIMEOUT)
        .await
        .expect("lock b");
    assert!(got_b.is_empty(), "b got {got_b:?} while a holds the locks");
    // Renewal by the owner keeps them.
    let renewed = a
        .pool()
        .call(&addr, &lock(&a), CALL_TIMEOUT)
        .await
        .expect("renew a");
    assert_eq!(sorted(renewed), queues);

    let unlock = UnlockBatchMq {
        body: UnlockBatchRequest {
            consumer_group: group.clone(),
            client_id: a.client_id().to_owned(),
            only_this_broker: false,
            mq_set: vec![queues[0].clone()],
        },
    };
    a.pool()
        .call(&addr, &unlock, CALL_TIMEOUT)
        .await
        .expect("unlock a");
    let got_b = b
        .pool()
        .call(&addr, &lock(&b), CALL_TIMEOUT)
        .await
        .expect("lock b again");
    assert_eq!(
        got_b,
        vec![queues[0].clone()],
        "b gets exactly the released queue"
    );
}

/// HEART_BEAT registers a member (GET_CONSUMER_LIST_BY_GROUP shows it), and a second member
/// joining makes the broker send NOTIFY_CONSUMER_IDS_CHANGED to the first.
#[tokio::test]
async fn heartbeat_registers_members_and_a_join_notifies_the_others() {
    let mq = RocketMq::start().await;
    let topic = unique("Members");
    let group = unique("g_members");
    mq.create_topic(&topic, 2).await;
    let addr = mq.broker_addr();
    let (tx, mut rx) = mpsc::channel(16);
    let first = mq.client_with(Arc::new(Forward(tx)));
    let second = mq.client();

    first
        .pool()
        .call(
            &addr,
            &consumer_heartbeat(&first, &group, &[&topic, &format!("%RETRY%{group}")]),
            CALL_TIMEOUT,
        )
        .await
        .expect("heartbeat 1");
    let list = GetConsumerList {
        consumer_group: group.clone(),
    };
    let members = first
        .pool()
        .call(&addr, &list, CALL_TIMEOUT)
        .await
        .expect("consumer list");
    assert_eq!(members, vec![first.client_id().to_owned()]);

    second
        .pool()
        .call(
            &addr,
            &consumer_heartbeat(&second, &group, &[&topic, &format!("%RETRY%{group}")]),
            CALL_TIMEOUT,
        )
        .await
        .expect("heartbeat 2");
    let mut members = first
        .pool()
        .call(&addr, &list, CALL_TIMEOUT)
        .await
        .expect("consumer list");
    members.sort();
    let mut want = vec![first.client_id().to_owned(), second.client_id().to_owned()];
    want.sort();
    assert_eq!(members, want);

    let notified = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (from, request) = rx.recv().await?;
            if request.request_code() == RequestCode::NotifyConsumerIdsChanged {
                return Some((from, request));
            }
        }
    })
    .await
    .expect("NOTIFY_CONSUMER_IDS_CHANGED within 10 s")
    .expect("inbound channel open");
    assert_eq!(notified.0, addr, "sent by the broker");
    assert_eq!(
        notified.1.ext_fields.get("consumerGroup"),
        Some(group.as_str())
    );
    assert!(notified.1.is_oneway(), "the notification is oneway");
}

/// A peer that answers garbage gets its connection closed with a typed protocol error, while
/// the same pool keeps working against the real broker.
#[tokio::test]
async fn malformed_frame_closes_only_that_connection() {
    let mq = RocketMq::start().await;
    let topic = unique("Malformed");
    mq.create_topic(&topic, 1).await;
    let client = mq.client();

    let fake = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake peer");
    let fake_addr = fake.local_addr().expect("fake addr").to_string();
    let peer = tokio::spawn(async move {
        let (mut socket, _) = fake.accept().await.expect("accept");
        let mut buf = [0u8; 256];
        let _ = socket.read(&mut buf).await;
        // A frame of 8 bytes whose header claims 100 bytes: cannot be decoded.
        socket
            .write_all(&[0, 0, 0, 8, 0, 0, 0, 100, 1, 2, 3, 4])
            .await
            .expect("write garbage");
        // Keep the socket open: the client must close because of the bytes, not an EOF.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });

    let max = GetMaxOffset {
        topic: topic.clone(),
        queue_id: 0,
    };
    let err = client
        .pool()
        .call(&fake_addr, &max, CALL_TIMEOUT)
        .await
        .expect_err("garbage answer");
    match &err {
        ClientError::ConnectionClosed {
            addr,
            reason: CloseReason::Protocol(_),
        } => assert_eq!(addr, &fake_addr),
        other => panic!("expected a protocol close, got {other:?}"),
    }
    assert_eq!(err.origin(), Origin::Protocol, "{err:?}");

    mq.produce(&topic, 1, "still", None).await;
    let max_now = client
        .pool()
        .call(&mq.broker_addr(), &max, CALL_TIMEOUT)
        .await
        .expect("real broker still answers");
    assert_eq!(max_now, 1);
    peer.abort();
}

/// The harness can restart the broker on the same ports and store: messages survive and the
/// client reconnects.
#[tokio::test]
async fn restarted_broker_keeps_its_messages() {
    let mut mq = RocketMq::start().await;
    let topic = unique("Restart");
    mq.create_topic(&topic, 1).await;
    let before = mq.produce(&topic, 2, "before", None).await;
    let client = mq.client();
    let addr = mq.broker_addr();
    assert_eq!(
        pull_all(&client, &addr, &unique("g"), &topic, 0)
            .await
            .len(),
        2
    );

    mq.restart_broker().await;
    let after = mq.produce(&topic, 1, "after", None).await;
    let group = unique("g");
    // The old pooled connection died with the broker; the pool must open a new one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        match client
            .pool()
            .call(&addr, &pull_request(&group, &topic, 0, 0, 0), CALL_TIMEOUT)
            .await
        {
            Ok(_) => break pull_all(&client, &addr, &group, &topic, 0).await,
            Err(e) if Instant::now() < deadline => {
                eprintln!("pull after restart: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("no pull after restart: {e}"),
        }
    };
    let ids: Vec<String> = stored.iter().map(|m| m.msg_id().into_owned()).collect();
    let want: Vec<String> = before
        .iter()
        .chain(&after)
        .map(|r| r.msg_id.clone())
        .collect();
    assert_eq!(ids, want);
}

/// A producer whose name server stops answering keeps sending with the route it knows, as
/// Java keeps its publish info: the consumer's retry fallback publishes exactly when things are
/// failing. The route's lifetime is a millisecond, so every send asks the name server first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_sends_with_the_route_it_knows_when_the_name_server_is_gone() {
    use rocketmq_webhook::client::producer::{Producer, ProducerConfig};
    use rocketmq_webhook::client::{ClientConfig, NotSupported};
    use rocketmq_webhook::remoting::body::route::TopicRouteData;
    let mq = RocketMq::start().await;
    let topic = unique("T_known_route");
    mq.create_topic(&topic, 2).await;
    let (listener, namesrv_addr) = support::namesrv::listen().await;
    let namesrv = tokio::spawn(support::namesrv::serve(
        listener,
        mq.client(),
        |_: &str, _: &mut TopicRouteData| {},
    ));
    let client = Client::new(
        ClientConfig {
            namesrv_addr,
            ..ClientConfig::default()
        },
        Arc::new(NotSupported),
    )
    .expect("client");
    let producer = Producer::new(
        client,
        ProducerConfig {
            route_ttl: Duration::from_millis(1),
            ..ProducerConfig::default()
        },
    );
    let any = QueueSelector::RoundRobin;
    producer
        .send(Message::new(&topic, "first"), &any)
        .await
        .expect("first send");
    namesrv.abort();
    let _ = namesrv.await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sent = producer
        .send(Message::new(&topic, "second"), &any)
        .await
        .expect("sent with the route known");
    assert_eq!(sent.queue.topic, topic);
}
