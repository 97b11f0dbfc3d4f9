//! GET_CONSUMER_RUNNING_INFO answer (section 5.4): a consumer's configuration, subscriptions
//! and per-queue state, relayed verbatim by the broker to admin tools.
//!
//! `mqTable` is a map keyed by queue *objects*, written in fastjson's object-key form like the
//! offset tables, so the body is assembled by hand around serde-serialised parts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::heartbeat::SubscriptionData;
use super::offset_table::queue_key;
use super::{fastjson, nullable};
use crate::remoting::{MessageQueue, RemotingError};

/// Property key: name server addresses (`addr1;addr2;`).
pub const PROP_NAMESERVER_ADDR: &str = "PROP_NAMESERVER_ADDR";
/// Property key: `CONSUME_PASSIVELY`.
pub const PROP_CONSUME_TYPE: &str = "PROP_CONSUME_TYPE";
/// Property key: client version, e.g. `V5_3_3`.
pub const PROP_CLIENT_VERSION: &str = "PROP_CLIENT_VERSION";
/// Property key: `true` for orderly consumers.
pub const PROP_CONSUMEORDERLY: &str = "PROP_CONSUMEORDERLY";
/// Property key: consumer thread count.
pub const PROP_THREADPOOL_CORE_SIZE: &str = "PROP_THREADPOOL_CORE_SIZE";
/// Property key: consumer start time (ms).
pub const PROP_CONSUMER_START_TIMESTAMP: &str = "PROP_CONSUMER_START_TIMESTAMP";

/// A consumer group's running state as one client sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConsumerRunningInfo {
    /// Configuration and the `PROP_*` keys.
    pub properties: BTreeMap<String, String>,
    /// Current subscriptions.
    pub subscription_set: Vec<SubscriptionData>,
    /// State of each held queue.
    pub mq_table: BTreeMap<MessageQueue, ProcessQueueInfo>,
    /// Per-topic throughput.
    pub status_table: BTreeMap<String, ConsumeStatus>,
    /// Free-form extra information.
    pub user_consumer_info: BTreeMap<String, String>,
    /// Thread dump, only when the admin asked for one.
    pub jstack: Option<String>,
}

/// The state of one held queue (Java `ProcessQueueInfo`, spelling included).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessQueueInfo {
    /// Offset committed (or to be committed) for the queue.
    pub commit_offset: i64,
    /// Smallest cached offset.
    pub cached_msg_min_offset: i64,
    /// Largest cached offset.
    pub cached_msg_max_offset: i64,
    /// Cached message count.
    pub cached_msg_count: i32,
    /// Cached body size in MiB.
    #[serde(rename = "cachedMsgSizeInMiB")]
    pub cached_msg_size_in_mib: i32,
    /// Orderly: smallest offset of the batch being consumed.
    pub transaction_msg_min_offset: i64,
    /// Orderly: largest offset of the batch being consumed.
    pub transaction_msg_max_offset: i64,
    /// Orderly: messages being consumed.
    pub transaction_msg_count: i32,
    /// Orderly: the broker lock is held.
    pub locked: bool,
    /// Orderly: unlock attempts deferred.
    pub try_unlock_times: i64,
    /// Orderly: last lock time (ms).
    pub last_lock_timestamp: i64,
    /// The queue was dropped (Java's spelling `droped`).
    #[serde(rename = "droped")]
    pub dropped: bool,
    /// Last pull time (ms).
    pub last_pull_timestamp: i64,
    /// Last consume time (ms).
    pub last_consume_timestamp: i64,
}

/// Per-topic throughput (Java `ConsumeStatus`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumeStatus {
    /// Mean pull latency (ms).
    #[serde(rename = "pullRT")]
    pub pull_rt: f64,
    /// Pulled messages per second.
    #[serde(rename = "pullTPS")]
    pub pull_tps: f64,
    /// Mean consume latency (ms).
    #[serde(rename = "consumeRT")]
    pub consume_rt: f64,
    /// Successfully consumed messages per second.
    #[serde(rename = "consumeOKTPS")]
    pub consume_ok_tps: f64,
    /// Failed messages per second.
    #[serde(rename = "consumeFailedTPS")]
    pub consume_failed_tps: f64,
    /// Failed messages in the last hour.
    #[serde(rename = "consumeFailedMsgs")]
    pub consume_failed_msgs: i64,
}

/// The standard-JSON part of the body; `mqTable` is handled separately.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jstack: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    properties: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    status_table: BTreeMap<String, ConsumeStatus>,
    #[serde(default, deserialize_with = "nullable")]
    subscription_set: Vec<SubscriptionData>,
    #[serde(default, deserialize_with = "nullable")]
    user_consumer_info: BTreeMap<String, String>,
    /// Object keys converted to their JSON text by the lenient reader.
    #[serde(default, deserialize_with = "nullable", skip_serializing)]
    mq_table: BTreeMap<String, ProcessQueueInfo>,
}

impl ConsumerRunningInfo {
    /// The JSON body (fastjson dialect: `mqTable` has object keys). `mqPopTable` is written
    /// empty: this client does not pop.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = Wire {
            jstack: self.jstack.clone(),
            properties: self.properties.clone(),
            status_table: self.status_table.clone(),
            subscription_set: self.subscription_set.clone(),
            user_consumer_info: self.user_consumer_info.clone(),
            mq_table: BTreeMap::new(),
        };
        let rest = fastjson::to_string(&wire);
        let rows: Vec<(String, String)> = self
            .mq_table
            .iter()
            .map(|(mq, info)| (queue_key(mq), fastjson::to_string(info)))
            .collect();
        let mut out = String::from("{\"mqPopTable\":{},\"mqTable\":");
        fastjson::write_object_key_map(
            &mut out,
            rows.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        // `rest` is a serialised struct, so it starts with `{`; splice its members in.
        match rest.strip_prefix('{') {
            Some("}") | None => out.push('}'),
            Some(members) => {
                out.push(',');
                out.push_str(members);
            }
        }
        out.into_bytes()
    }

    /// Parses the body (admin tools, tests).
    ///
    /// # Errors
    /// [`RemotingError::MalformedBody`] if the body is not this shape.
    pub fn parse(body: &[u8]) -> Result<Self, RemotingError> {
        const WHAT: &str = "consumer running info";
        let wire: Wire = fastjson::from_slice(body, WHAT)?;
        let mq_table = wire
            .mq_table
            .into_iter()
            .map(|(key, info)| {
                let mq: MessageQueue = fastjson::from_slice(key.as_bytes(), WHAT)?;
                Ok((mq, info))
            })
            .collect::<Result<_, RemotingError>>()?;
        Ok(Self {
            properties: wire.properties,
            subscription_set: wire.subscription_set,
            mq_table,
            status_table: wire.status_table,
            user_consumer_info: wire.user_consumer_info,
            jstack: wire.jstack,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::body::heartbeat::ExpressionType;
    use crate::remoting::filter::subscription;
    use proptest::prelude::*;

    #[test]
    fn writes_object_keys_and_java_names() {
        let mut info = ConsumerRunningInfo::default();
        info.properties
            .insert(PROP_CONSUME_TYPE.into(), "CONSUME_PASSIVELY".into());
        info.mq_table.insert(
            MessageQueue::new("T", "b", 1),
            ProcessQueueInfo {
                commit_offset: 5,
                dropped: true,
                cached_msg_size_in_mib: 2,
                ..Default::default()
            },
        );
        info.status_table.insert(
            "T".into(),
            ConsumeStatus {
                consume_ok_tps: 1.5,
                ..Default::default()
            },
        );
        let text = String::from_utf8(info.to_json()).unwrap();
        assert!(text.starts_with(r#"{"mqPopTable":{},"mqTable":{{"brokerName":"b","queueId":1,"topic":"T"}:{"commitOffset":5,"#), "{text}");
        for key in [
            "\"droped\":true",
            "\"cachedMsgSizeInMiB\":2",
            "\"consumeOKTPS\":1.5",
            "\"pullRT\":0.0",
            "\"properties\":{\"PROP_CONSUME_TYPE\":\"CONSUME_PASSIVELY\"}",
            "\"subscriptionSet\":[]",
            "\"userConsumerInfo\":{}",
        ] {
            assert!(text.contains(key), "{key} in {text}");
        }
        assert!(!text.contains("jstack"));
        assert_eq!(ConsumerRunningInfo::parse(text.as_bytes()).unwrap(), info);
    }

    proptest! {
        #[test]
        fn round_trip(
            props in prop::collection::btree_map(".{0,6}", ".{0,6}", 0..3),
            subs in prop::collection::vec(("[A-Z]{1,5}", "[A-Za-z|]{0,10}", any::<i64>()), 0..3),
            queues in prop::collection::btree_map(
                ("[A-Za-z]{1,5}", ".{0,5}", any::<i32>()).prop_map(|(t, b, q)| MessageQueue::new(t, b, q)),
                (any::<i64>(), any::<i32>(), any::<bool>(), any::<i64>()),
                0..4),
            status in prop::collection::btree_map("[A-Z]{1,5}", (-1e9f64..1e9, any::<i64>()), 0..3),
            jstack in prop::option::of(".{0,20}"),
        ) {
            let info = ConsumerRunningInfo {
                properties: props,
                subscription_set: subs.into_iter().map(|(t, e, v)| subscription(&t, &e, ExpressionType::Tag, v)).collect(),
                mq_table: queues.into_iter().map(|(mq, (o, c, l, t))| (mq, ProcessQueueInfo {
                    commit_offset: o, cached_msg_count: c, locked: l, last_pull_timestamp: t, ..Default::default()
                })).collect(),
                status_table: status.into_iter().map(|(t, (rt, n))| (t, ConsumeStatus {
                    pull_rt: rt, consume_failed_msgs: n, ..Default::default()
                })).collect(),
                user_consumer_info: BTreeMap::new(),
                jstack,
            };
            prop_assert_eq!(ConsumerRunningInfo::parse(&info.to_json()).unwrap(), info);
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = ConsumerRunningInfo::parse(&bytes);
        }
    }
}
