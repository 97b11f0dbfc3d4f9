//! Test support shared by the integration tests: a private, real RocketMQ name server + broker.
//!
//! [`RocketMq::start`] launches the Rust RocketMQ binaries (broker-under-test.md) on free loopback
//! ports with a temporary store, and returns once the broker's route is visible on the name
//! server. Invariants:
//! - every instance has its own ports, store and `ROCKETMQ_HOME`, so tests and test binaries run
//!   side by side;
//! - the child processes are killed and reaped in `Drop`, also when the test panics;
//! - missing binaries FAIL the test with the install command; integration tests are never skipped
//!   (style.md rule 9c).
//!
//! Readiness is checked with a tiny raw GET_ROUTEINFO_BY_TOPIC exchange ([`raw`]) that does not use
//! the crate's client, so a broken client cannot make the harness itself misreport.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod daemon;
pub(crate) mod http;
pub(crate) mod namesrv;
pub(crate) mod proxy;
pub(crate) mod raw;
pub(crate) mod rocketmq;

pub(crate) use rocketmq::RocketMq;

/// A topic or group name that is unique within this test process (and readable in broker logs).
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

/// A heartbeat announcing `client` as a clustering consumer of `group`, subscribed to every tag
/// of each of `topics`: enough for the broker to accept the group's pulls, offsets and locks.
pub(crate) fn consumer_heartbeat(
    client: &rocketmq_webhook::client::Client,
    group: &str,
    topics: &[&str],
) -> rocketmq_webhook::remoting::rpc::HeartBeat {
    use rocketmq_webhook::remoting::body::heartbeat::{
        ConsumeFromWhere, ConsumeType, ConsumerData, ExpressionType, HeartbeatData, MessageModel,
    };
    use rocketmq_webhook::remoting::filter::subscription;
    rocketmq_webhook::remoting::rpc::HeartBeat {
        data: HeartbeatData {
            client_id: client.client_id().to_owned(),
            consumer_data_set: vec![ConsumerData {
                consume_from_where: ConsumeFromWhere::FirstOffset,
                consume_type: ConsumeType::Passively,
                group_name: group.to_owned(),
                message_model: MessageModel::Clustering,
                subscription_data_set: topics
                    .iter()
                    .map(|topic| subscription(topic, "*", ExpressionType::Tag, 1))
                    .collect(),
                unit_mode: false,
            }],
            heartbeat_fingerprint: 0,
            producer_data_set: Vec::new(),
            without_sub: false,
        },
    }
}
