//! ACL request signing (rocketmq-remoting.md section 9.1) against a real broker that enforces it.
//!
//! The Rust broker under test enforces signatures when started with `authenticationEnabled=true`
//! and a user seeded by `initAuthenticationUser=<user>:<password>` (ACL 2.0: the AccessKey is
//! the user name, the SecretKey its password). It then answers every request that is unsigned,
//! signed with a wrong secret or signed for an unknown user with code 16 (`NO_PERMISSION`) and
//! the remark "Authentication credentials are invalid"; the name server does not check
//! signatures. Each test starts its own servers, so a signing bug fails here rather than in a
//! user's deployment:
//! - a signed client creates a topic, sends, pulls and heartbeats (body-carrying requests too);
//! - unsigned and wrongly signed clients get a typed `ClientError::Broker` with that code, and
//!   what they asked for did not happen;
//! - the daemon with `ROCKETMQ_ACCESS_KEY` / `ROCKETMQ_SECRET_KEY` consumes and delivers.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rocketmq_webhook::client::producer::{Producer, ProducerConfig, ProducerError, QueueSelector};
use rocketmq_webhook::client::{Client, ClientConfig, ClientError, ConnectOptions, NotSupported};
use rocketmq_webhook::remoting::message::Message;
use rocketmq_webhook::remoting::rpc::{GetMaxOffset, PullMessage, PullStatus};
use rocketmq_webhook::remoting::{AclCredentials, ResponseCode};
use serde_json::json;

use support::daemon::{Daemon, Launch};
use support::http::{body_of, messages, Receiver, Request};
use support::{consumer_heartbeat, unique, RocketMq};

/// The user the broker is seeded with (its AccessKey) and its password (the SecretKey).
const ACCESS_KEY: &str = "webhook-ak";
const SECRET_KEY: &str = "webhook-sk";
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

// === helpers ===

/// A broker that refuses requests not signed by [`ACCESS_KEY`] / [`SECRET_KEY`].
async fn secured_broker() -> RocketMq {
    let user = format!("{ACCESS_KEY}:{SECRET_KEY}");
    RocketMq::start_with(&[
        ("authenticationEnabled", "true"),
        ("initAuthenticationUser", &user),
    ])
    .await
}

/// A client of `mq` that signs with `acl` (or not at all).
fn client(mq: &RocketMq, acl: Option<AclCredentials>) -> Client {
    Client::new(
        ClientConfig {
            namesrv_addr: mq.namesrv_addr(),
            connect: ConnectOptions {
                acl,
                ..ConnectOptions::default()
            },
            instance_name: Some(unique("acl-client")),
            client_ip: Some("127.0.0.1".to_owned()),
            namesrv_timeout: None,
        },
        Arc::new(NotSupported),
    )
    .unwrap_or_else(|e| panic!("cannot build a client: {e}"))
}

fn good() -> Option<AclCredentials> {
    Some(AclCredentials::new(ACCESS_KEY, SECRET_KEY))
}

fn producer(client: Client) -> Producer {
    Producer::new(client, ProducerConfig::default())
}

/// Asserts that `error` is the broker's authentication refusal.
fn assert_refused(error: &ClientError, what: &str) {
    match error {
        ClientError::Broker { code, remark, .. } => {
            assert_eq!(*code, ResponseCode::NoPermission, "{what}: {error}");
            assert!(
                remark
                    .as_deref()
                    .is_some_and(|r| r.contains("Authentication")),
                "{what}: remark {remark:?}"
            );
        }
        other => panic!("{what}: expected a NO_PERMISSION answer, got {other:?}"),
    }
}

/// The bodies of every message delivered in a JSON envelope.
fn delivered_bodies(requests: &[Request]) -> BTreeSet<String> {
    messages(requests).iter().map(body_of).collect()
}

// === tests ===

/// Topic creation, send (body signed), pull and heartbeat all succeed with the right key pair.
#[tokio::test]
async fn a_signed_client_creates_sends_pulls_and_heartbeats() {
    let mq = secured_broker().await;
    let client = client(&mq, good());
    let producer = producer(client.clone());
    let topic = unique("T_acl");
    let group = unique("g_acl");
    let addr = mq.broker_addr();

    let route = producer
        .create_topic(&topic, 2, false)
        .await
        .unwrap_or_else(|e| panic!("create topic: {e}\n{}", mq.log_tails(20)));
    assert_eq!(route.publish_queues(&topic).len(), 2);

    let sent = producer
        .send(
            Message::new(&topic, "signed body").with_tags("TagA"),
            &QueueSelector::Hash("k".into()),
        )
        .await
        .unwrap_or_else(|e| panic!("send: {e}\n{}", mq.log_tails(20)));
    let queue_id = sent.queue.queue_id;
    // The broker answers a send before its consume queue holds the message.
    mq.wait_pullable(&client, &topic, [(queue_id, sent.queue_offset)])
        .await;

    let max = client
        .pool()
        .call(
            &addr,
            &GetMaxOffset {
                topic: topic.clone(),
                queue_id,
            },
            CALL_TIMEOUT,
        )
        .await
        .expect("max offset");
    assert_eq!(max, 1);

    let pulled = client
        .pool()
        .call(
            &addr,
            &PullMessage::all_tags(&group, &topic, queue_id, 0, 32),
            CALL_TIMEOUT,
        )
        .await
        .expect("pull");
    assert_eq!(pulled.status, PullStatus::Found);
    assert_eq!(pulled.messages.len(), 1);
    assert_eq!(pulled.messages[0].body.as_ref(), b"signed body");
    assert_eq!(pulled.messages[0].msg_id(), sent.msg_id);

    client
        .pool()
        .call(
            &addr,
            &consumer_heartbeat(&client, &group, &[&topic]),
            CALL_TIMEOUT,
        )
        .await
        .expect("heartbeat");
}

/// Unsigned requests and requests signed with a wrong secret or an unknown access key are
/// refused with NO_PERMISSION, and nothing they asked for happened.
#[tokio::test]
async fn unsigned_and_wrongly_signed_requests_are_refused() {
    let mq = secured_broker().await;
    let addr = mq.broker_addr();
    let good_client = client(&mq, good());
    let topic = unique("T_acl_ok");
    producer(good_client.clone())
        .create_topic(&topic, 1, false)
        .await
        .unwrap_or_else(|e| panic!("create topic: {e}\n{}", mq.log_tails(20)));

    let cases = [
        ("unsigned", None),
        (
            "wrong secret",
            Some(AclCredentials::new(ACCESS_KEY, "not-the-secret")),
        ),
        (
            "unknown access key",
            Some(AclCredentials::new("nobody", SECRET_KEY)),
        ),
    ];
    for (what, acl) in cases {
        let bad = client(&mq, acl);
        let bad_producer = producer(bad.clone());

        // The route comes from the name server, which does not check signatures: the send
        // reaches the broker and is refused there.
        let send = bad_producer
            .send(
                Message::new(&topic, format!("{what} body")),
                &QueueSelector::RoundRobin,
            )
            .await;
        match send {
            Err(ProducerError::Client(e)) => assert_refused(&e, &format!("{what} send")),
            other => panic!("{what} send: expected a refusal, got {other:?}"),
        }

        let heartbeat = bad
            .pool()
            .call(
                &addr,
                &consumer_heartbeat(&bad, "g_bad", &[&topic]),
                CALL_TIMEOUT,
            )
            .await;
        match heartbeat {
            Err(e) => assert_refused(&e, &format!("{what} heartbeat")),
            Ok(r) => panic!("{what} heartbeat: accepted with {r:?}"),
        }

        let pull = bad
            .pool()
            .call(
                &addr,
                &PullMessage::all_tags("g_bad", &topic, 0, 0, 32),
                CALL_TIMEOUT,
            )
            .await;
        match pull {
            Err(e) => assert_refused(&e, &format!("{what} pull")),
            Ok(r) => panic!("{what} pull: accepted with {:?}", r.status),
        }

        let created_topic = unique("T_acl_refused");
        match bad_producer.create_topic(&created_topic, 1, false).await {
            Err(ProducerError::Client(e)) => assert_refused(&e, &format!("{what} create topic")),
            other => panic!("{what} create topic: expected a refusal, got {other:?}"),
        }
        // The refused creation left no route behind.
        match good_client.namesrv().route(&created_topic).await {
            Err(ClientError::NoRoute { .. }) => {}
            other => panic!("{what}: refused topic has a route: {other:?}"),
        }
    }

    // None of the refused sends was stored.
    let max = good_client
        .pool()
        .call(
            &addr,
            &GetMaxOffset {
                topic: topic.clone(),
                queue_id: 0,
            },
            CALL_TIMEOUT,
        )
        .await
        .expect("max offset");
    assert_eq!(max, 0, "a refused send was stored");
}

/// The daemon configured only through `ROCKETMQ_ACCESS_KEY` / `ROCKETMQ_SECRET_KEY` consumes
/// (route, heartbeat, rebalance, pull, offset commit all signed) and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_with_credentials_from_the_environment_delivers() {
    let mq = secured_broker().await;
    let topic = unique("T_acl_daemon");
    let group = unique("g_acl_daemon");
    let producer = producer(client(&mq, good()));
    producer
        .create_topic(&topic, 2, false)
        .await
        .unwrap_or_else(|e| panic!("create topic: {e}\n{}", mq.log_tails(20)));
    let receiver = Receiver::start().await;
    let launch = Launch::env_only()
        .env("ROCKETMQ_NAMESRV_ADDR", mq.namesrv_addr())
        .env("ROCKETMQ_CONSUMER_GROUP", group.clone())
        .env("ROCKETMQ_TOPIC", topic.clone())
        .env("ROCKETMQ_WEBHOOK_URL", receiver.url("/acl"))
        .env("ROCKETMQ_CONSUME_FROM_WHERE", "CONSUME_FROM_FIRST_OFFSET")
        .env("ROCKETMQ_CLIENT__REBALANCE_INTERVAL", "2s")
        .env("ROCKETMQ_ACCESS_KEY", ACCESS_KEY)
        .env("ROCKETMQ_SECRET_KEY", SECRET_KEY);
    let daemon = Daemon::start(&launch).await;
    for i in 0..4 {
        producer
            .send(
                Message::new(&topic, format!("acl-{i}")),
                &QueueSelector::RoundRobin,
            )
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
    }
    let requests = receiver
        .wait_until(Duration::from_secs(60), "all four messages", |r| {
            delivered_bodies(r).len() == 4
        })
        .await;
    let expected: BTreeSet<String> = (0..4).map(|i| format!("acl-{i}")).collect();
    assert_eq!(delivered_bodies(&requests), expected);
    assert_eq!(requests[0].json()["consumerGroup"], json!(group));
    let status = daemon.status().await;
    assert_eq!(
        status["subscriptions"][0]["group"],
        json!(group),
        "{status}"
    );
}
