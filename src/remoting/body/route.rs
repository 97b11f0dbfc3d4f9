//! Topic route data: the GET_ROUTEINFO_BY_TOPIC answer of the name server (section 3), and the
//! queue sets consumers and producers derive from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{fastjson, nullable};
use crate::remoting::{MessageQueue, RemotingError};

/// `perm` bit: consumers may read the queues.
pub const PERM_READ: i32 = 1 << 2;
/// `perm` bit: producers may write the queues.
pub const PERM_WRITE: i32 = 1 << 1;
/// `perm` bit: template topic (TBW102 only).
pub const PERM_INHERIT: i32 = 1;
/// Broker id of a master in `brokerAddrs`.
pub const MASTER_ID: i64 = 0;
/// The largest queue count per broker a route may declare (`readQueueNums`, `writeQueueNums`,
/// each `orderTopicConf` entry); [`TopicRouteData::parse`] rejects larger values. Real topics use
/// at most a few hundred, rarely a few thousand, queues per broker. Java sets no limit, but every
/// queue becomes a [`MessageQueue`] value when a route is expanded, and we promise allocation in
/// proportion to the input: a 60-byte body declaring `2147483647` queues must not build 2^31 of
/// them.
pub const MAX_QUEUE_NUMS: i32 = 65_536;
/// The largest number of queues a route may declare in all: the sum of `readQueueNums` over its
/// queue datas, and likewise of `writeQueueNums` and of the `orderTopicConf` entries.
/// [`TopicRouteData::parse`] rejects larger totals. [`MAX_QUEUE_NUMS`] alone bounds each entry,
/// not their number: a 12.8 KB answer repeating `{"brokerName":"b","perm":6,
/// "readQueueNums":65536}` 256 times expanded to 16.8 million queues (1.38 GB) before
/// deduplication. Real topics have a few brokers of up to a few hundred queues each, and a name
/// server sends one queue data per broker.
pub const MAX_TOPIC_QUEUES: i32 = 65_536;
/// The most bytes of broker names a route's queues may copy: every queue a route expands to
/// holds its broker's name, so the sum over queue datas (and likewise `orderTopicConf` entries)
/// of queue count times name length. [`TopicRouteData::parse`] rejects more. The queue counts
/// alone do not bound it: one 1 MB broker name with 65,536 queues would copy 64 GB. 256 bytes
/// for each of [`MAX_TOPIC_QUEUES`] queues; real broker names are a few dozen bytes.
pub const MAX_ROUTE_NAME_BYTES: usize = 256 * MAX_TOPIC_QUEUES as usize;

/// Where a topic lives: its queues per broker and the brokers' addresses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicRouteData {
    /// Ordered-topic override `brokerName:queueNums;...` (only with namesrv `orderMessageEnable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    /// One entry per broker hosting the topic.
    #[serde(default, deserialize_with = "nullable")]
    pub queue_datas: Vec<QueueData>,
    /// The brokers named by `queue_datas`.
    #[serde(default, deserialize_with = "nullable")]
    pub broker_datas: Vec<BrokerData>,
    /// 5.x static-topic mapping, kept raw: present only for static topics, which this client does
    /// not support (a caller can refuse them by checking for `Some`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_queue_mapping_by_broker: Option<serde_json::Value>,
}

/// The queues of a topic on one broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueData {
    /// Broker name (not an address).
    #[serde(default, deserialize_with = "nullable")]
    pub broker_name: String,
    /// Queues consumers read: `0..read_queue_nums`.
    #[serde(default, deserialize_with = "nullable")]
    pub read_queue_nums: i32,
    /// Queues producers write: `0..write_queue_nums`.
    #[serde(default, deserialize_with = "nullable")]
    pub write_queue_nums: i32,
    /// Permission bits ([`PERM_READ`], [`PERM_WRITE`], [`PERM_INHERIT`]).
    #[serde(default, deserialize_with = "nullable")]
    pub perm: i32,
    /// Unit-topic flags; normally 0.
    #[serde(default, deserialize_with = "nullable")]
    pub topic_sys_flag: i32,
}

/// One broker (a master and its slaves).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerData {
    /// Cluster name.
    #[serde(default, deserialize_with = "nullable")]
    pub cluster: String,
    /// Broker name.
    #[serde(default, deserialize_with = "nullable")]
    pub broker_name: String,
    /// Broker id ([`MASTER_ID`] = master, ≥ 1 = slaves) → `host:port`.
    #[serde(default, deserialize_with = "nullable")]
    pub broker_addrs: BTreeMap<i64, String>,
    /// Zone (5.x); the Rust name server writes `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
    /// 5.x acting-master mode.
    #[serde(default, deserialize_with = "nullable")]
    pub enable_acting_master: bool,
}

impl BrokerData {
    /// The master's address, if the broker has a live master.
    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&MASTER_ID).map(String::as_str)
    }
}

impl TopicRouteData {
    /// Parses a route body in either of the name server's forms (standard JSON or fastjson
    /// with unquoted broker-id keys), tolerating `null`s and unknown keys.
    ///
    /// # Errors
    /// [`RemotingError::MalformedBody`] if the body is not (fast)JSON of this shape, or declares
    /// more than [`MAX_QUEUE_NUMS`] queues on a broker or [`MAX_TOPIC_QUEUES`] in all, or queues
    /// that would copy more than [`MAX_ROUTE_NAME_BYTES`] of broker names.
    pub fn parse(body: &[u8]) -> Result<Self, RemotingError> {
        let route: Self = fastjson::from_slice(body, WHAT)?;
        route.check_queue_nums()?;
        Ok(route)
    }

    /// Rejects a queue count above [`MAX_QUEUE_NUMS`], naming the broker, field and value; a
    /// total above [`MAX_TOPIC_QUEUES`], naming the field, total and number of entries; and
    /// broker-name copies above [`MAX_ROUTE_NAME_BYTES`], likewise.
    fn check_queue_nums(&self) -> Result<(), RemotingError> {
        self.check_queue_nums_per_broker()?;
        let ordered = self
            .order_topic_conf
            .as_deref()
            .into_iter()
            .flat_map(order_conf_entries);
        let datas = &self.queue_datas;
        let totals = [
            (
                "readQueueNums",
                total(
                    datas
                        .iter()
                        .map(|q| (q.broker_name.as_str(), q.read_queue_nums)),
                ),
            ),
            (
                "writeQueueNums",
                total(
                    datas
                        .iter()
                        .map(|q| (q.broker_name.as_str(), q.write_queue_nums)),
                ),
            ),
            ("orderTopicConf", total(ordered)),
        ];
        let malformed = |reason| RemotingError::MalformedBody { what: WHAT, reason };
        for (field, t) in totals {
            if t.queues > i64::from(MAX_TOPIC_QUEUES) {
                return Err(malformed(format!(
                    "{field} of {} entries add up to {} queues, more than the limit of \
                     {MAX_TOPIC_QUEUES} per topic",
                    t.entries, t.queues
                )));
            }
            if t.name_bytes > MAX_ROUTE_NAME_BYTES {
                return Err(malformed(format!(
                    "{field} of {} entries would copy {} bytes of broker names into their \
                     queues, more than the limit of {MAX_ROUTE_NAME_BYTES}",
                    t.entries, t.name_bytes
                )));
            }
        }
        Ok(())
    }

    /// The per-broker half of [`Self::check_queue_nums`].
    fn check_queue_nums_per_broker(&self) -> Result<(), RemotingError> {
        let counts = self.queue_datas.iter().flat_map(|q| {
            [
                (q.broker_name.as_str(), "readQueueNums", q.read_queue_nums),
                (q.broker_name.as_str(), "writeQueueNums", q.write_queue_nums),
            ]
        });
        let ordered = self
            .order_topic_conf
            .as_deref()
            .into_iter()
            .flat_map(order_conf_entries)
            .map(|(broker, nums)| (broker, "orderTopicConf", nums));
        match counts.chain(ordered).find(|(_, _, n)| *n > MAX_QUEUE_NUMS) {
            Some((broker, field, value)) => Err(RemotingError::MalformedBody {
                what: WHAT,
                reason: format!(
                    "broker `{broker}`: {field} {value} exceeds the limit of {MAX_QUEUE_NUMS} \
                     queues per broker"
                ),
            }),
            None => Ok(()),
        }
    }

    /// Standard JSON (quoted broker-id keys), as a name server answering version ≥ 4.9.4 writes.
    pub fn to_json(&self) -> Vec<u8> {
        fastjson::to_string(self).into_bytes()
    }

    /// The queues consumers of `topic` may read, sorted (topic, broker name, queue id): for every
    /// broker with a readable queue data, queue ids `0..readQueueNums` (the largest, if the
    /// broker is named twice). At most [`MAX_TOPIC_QUEUES`], which `parse` guarantees and which
    /// also bounds hand-built routes.
    pub fn subscribe_queues(&self, topic: &str) -> Vec<MessageQueue> {
        // Each broker once: a duplicate queue data costs a map lookup, not a queue set of its
        // own to sort and deduplicate. The map's order is the queues' order.
        let mut brokers: BTreeMap<&str, i32> = BTreeMap::new();
        for q in self.queue_datas.iter().filter(|q| q.perm & PERM_READ != 0) {
            let nums = brokers.entry(q.broker_name.as_str()).or_insert(0);
            *nums = (*nums).max(q.read_queue_nums.clamp(0, MAX_QUEUE_NUMS));
        }
        let len = total(brokers.iter().map(|(b, n)| (*b, *n))).queues;
        let len = usize::try_from(len.min(i64::from(MAX_TOPIC_QUEUES))).unwrap_or(0);
        let mut queues = Vec::with_capacity(len);
        queues.extend(
            brokers
                .into_iter()
                .flat_map(|(broker, nums)| {
                    (0..nums).map(move |i| MessageQueue::new(topic, broker, i))
                })
                .take(len),
        );
        queues
    }

    /// The queues producers of `topic` may write: brokers with write permission and a master,
    /// sorted by broker name then queue id. A non-empty `order_topic_conf` replaces this list
    /// (in its own order), as in Java.
    pub fn publish_queues(&self, topic: &str) -> Vec<MessageQueue> {
        if let Some(conf) = self.order_topic_conf.as_deref().filter(|c| !c.is_empty()) {
            return order_conf_entries(conf)
                .flat_map(|(broker, nums)| {
                    (0..nums.min(MAX_QUEUE_NUMS)).map(move |i| MessageQueue::new(topic, broker, i))
                })
                .collect();
        }
        let mut datas: Vec<&QueueData> = self
            .queue_datas
            .iter()
            .filter(|q| q.perm & PERM_WRITE != 0 && self.master_addr(&q.broker_name).is_some())
            .collect();
        datas.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
        datas
            .into_iter()
            .flat_map(|q| {
                (0..q.write_queue_nums.min(MAX_QUEUE_NUMS))
                    .map(|i| MessageQueue::new(topic, &q.broker_name, i))
            })
            .collect()
    }

    /// The broker named `broker_name`.
    pub fn broker(&self, broker_name: &str) -> Option<&BrokerData> {
        self.broker_datas
            .iter()
            .find(|b| b.broker_name == broker_name)
    }

    /// The master address of `broker_name`.
    pub fn master_addr(&self, broker_name: &str) -> Option<&str> {
        self.broker(broker_name).and_then(BrokerData::master_addr)
    }

    /// Every known address as (broker name, broker id, address): masters and slaves, the set a
    /// consumer heartbeats to.
    pub fn broker_addrs(&self) -> impl Iterator<Item = (&str, i64, &str)> + '_ {
        self.broker_datas.iter().flat_map(|b| {
            b.broker_addrs
                .iter()
                .map(move |(id, addr)| (b.broker_name.as_str(), *id, addr.as_str()))
        })
    }
}

/// The `what` of this body's [`RemotingError::MalformedBody`].
const WHAT: &str = "topic route";

/// What a set of `(broker name, queue count)` entries expands to.
#[derive(Debug, Default)]
struct Totals {
    /// Queues, a negative count taken as 0 (it declares none).
    queues: i64,
    /// Bytes of broker names the queues copy: count times name length, summed.
    name_bytes: usize,
    /// Entries.
    entries: usize,
}

fn total<'a>(entries: impl Iterator<Item = (&'a str, i32)>) -> Totals {
    entries.fold(Totals::default(), |t, (name, nums)| {
        // Non-negative: a count is at most i32::MAX, so it fits usize.
        let nums = nums.max(0);
        Totals {
            queues: t.queues.saturating_add(i64::from(nums)),
            name_bytes: t
                .name_bytes
                .saturating_add((nums as usize).saturating_mul(name.len())),
            entries: t.entries + 1,
        }
    })
}

/// The `(broker name, queue count)` entries of an `orderTopicConf` (`broker:nums;...`); entries
/// that do not parse are skipped, as in Java.
fn order_conf_entries(conf: &str) -> impl Iterator<Item = (&str, i32)> {
    conf.split(';').filter_map(|item| {
        let (broker, nums) = item.split_once(':')?;
        Some((broker, nums.trim().parse::<i32>().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STANDARD: &str = r#"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:10911"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],
 "filterServerTable":{},
 "queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#;

    #[test]
    fn parses_the_standard_form() {
        let r = TopicRouteData::parse(STANDARD.as_bytes()).unwrap();
        assert_eq!(r.queue_datas.len(), 1);
        assert_eq!(
            r.queue_datas[0],
            QueueData {
                broker_name: "broker-a".into(),
                read_queue_nums: 4,
                write_queue_nums: 4,
                perm: 6,
                topic_sys_flag: 0,
            }
        );
        assert_eq!(r.broker_datas[0].cluster, "DefaultCluster");
        assert_eq!(r.master_addr("broker-a"), Some("127.0.0.1:10911"));
        assert_eq!(r.master_addr("broker-b"), None);
        let subs = r.subscribe_queues("T1");
        assert_eq!(subs.len(), 4);
        assert_eq!(subs[3], MessageQueue::new("T1", "broker-a", 3));
    }

    #[test]
    fn parses_unquoted_broker_ids_and_rust_nulls() {
        let body = r#"{"orderTopicConf":null,"queueDatas":[{"brokerName":"b","readQueueNums":2,"writeQueueNums":2,"perm":6,"topicSysFlag":0}],
            "brokerDatas":[{"cluster":"C","brokerName":"b","brokerAddrs":{0:"127.0.0.1:10911",1:"127.0.0.1:10921"},"zoneName":null,"enableActingMaster":false}],
            "topicQueueMappingInfo":null,"filterServerTable":{}}"#;
        let r = TopicRouteData::parse(body.as_bytes()).unwrap();
        assert_eq!(r.order_topic_conf, None);
        assert_eq!(r.broker_datas[0].zone_name, None);
        assert_eq!(r.broker_datas[0].broker_addrs[&1], "127.0.0.1:10921");
        let addrs: Vec<_> = r.broker_addrs().collect();
        assert_eq!(
            addrs,
            vec![("b", 0, "127.0.0.1:10911"), ("b", 1, "127.0.0.1:10921")]
        );
        assert!(
            TopicRouteData::parse(b"{\"queueDatas\":null,\"brokerDatas\":null}")
                .unwrap()
                .queue_datas
                .is_empty()
        );
        assert!(TopicRouteData::parse(b"[1]").is_err());
        assert!(TopicRouteData::parse(b"{\"queueDatas\":").is_err());
    }

    #[test]
    fn permission_and_master_filters() {
        let r = TopicRouteData {
            queue_datas: vec![
                QueueData {
                    broker_name: "c".into(),
                    read_queue_nums: 1,
                    write_queue_nums: 1,
                    perm: 6,
                    topic_sys_flag: 0,
                },
                QueueData {
                    broker_name: "a".into(),
                    read_queue_nums: 2,
                    write_queue_nums: 1,
                    perm: PERM_READ,
                    topic_sys_flag: 0,
                },
                QueueData {
                    broker_name: "b".into(),
                    read_queue_nums: 1,
                    write_queue_nums: 2,
                    perm: PERM_WRITE,
                    topic_sys_flag: 0,
                },
                QueueData {
                    broker_name: "d".into(),
                    read_queue_nums: 1,
                    write_queue_nums: 1,
                    perm: 6,
                    topic_sys_flag: 0,
                },
            ],
            broker_datas: ["a", "b", "c"]
                .iter()
                .map(|n| BrokerData {
                    broker_name: (*n).into(),
                    broker_addrs: [(0, format!("{n}:1"))].into(),
                    ..BrokerData::default()
                })
                .chain([BrokerData {
                    broker_name: "d".into(),
                    broker_addrs: [(1, "d:2".into())].into(),
                    ..BrokerData::default()
                }])
                .collect(),
            ..TopicRouteData::default()
        };
        let mq = |b: &str, i| MessageQueue::new("T", b, i);
        assert_eq!(
            r.subscribe_queues("T"),
            vec![mq("a", 0), mq("a", 1), mq("c", 0), mq("d", 0)]
        );
        // "d" has no master; "a" cannot be written.
        assert_eq!(
            r.publish_queues("T"),
            vec![mq("b", 0), mq("b", 1), mq("c", 0)]
        );
        let ordered = TopicRouteData {
            order_topic_conf: Some("c:2;bad;a:1".into()),
            ..r
        };
        assert_eq!(
            ordered.publish_queues("T"),
            vec![mq("c", 0), mq("c", 1), mq("a", 0)]
        );
    }

    #[test]
    fn rejects_queue_counts_above_the_limit() {
        let body = |field: &str, value: &str| {
            format!(
                r#"{{"queueDatas":[{{"brokerName":"broker-a","perm":6,"{field}":{value}}}],"brokerDatas":[]}}"#
            )
        };
        for field in ["readQueueNums", "writeQueueNums"] {
            match TopicRouteData::parse(body(field, "2147483647").as_bytes()) {
                Err(RemotingError::MalformedBody { what, reason }) => {
                    assert_eq!(what, "topic route");
                    for part in ["broker-a", field, "2147483647", "65536"] {
                        assert!(reason.contains(part), "{part:?} not in {reason:?}");
                    }
                }
                other => panic!("{field}: expected MalformedBody, got {other:?}"),
            }
            let limit = MAX_QUEUE_NUMS.to_string();
            assert!(TopicRouteData::parse(body(field, &limit).as_bytes()).is_ok());
        }
        let ordered = br#"{"orderTopicConf":"a:4;b:2147483647","queueDatas":[]}"#;
        let err = TopicRouteData::parse(ordered).unwrap_err().to_string();
        assert!(
            err.contains("broker `b`: orderTopicConf 2147483647"),
            "{err}"
        );
        // A normal route still decodes.
        assert_eq!(
            TopicRouteData::parse(STANDARD.as_bytes())
                .unwrap()
                .subscribe_queues("T")
                .len(),
            4
        );
    }

    /// A route of `n` queue datas `{"brokerName":"<prefix><i>","perm":6,"<field>":<nums>}`, or
    /// with the same name `<prefix>` each if not `distinct`.
    fn repeated(n: usize, prefix: &str, distinct: bool, field: &str, nums: i32) -> String {
        let datas: Vec<String> = (0..n)
            .map(|i| {
                let name = if distinct {
                    format!("{prefix}{i}")
                } else {
                    prefix.to_owned()
                };
                format!(r#"{{"brokerName":"{name}","perm":6,"{field}":{nums}}}"#)
            })
            .collect();
        format!(r#"{{"brokerDatas":[],"queueDatas":[{}]}}"#, datas.join(","))
    }

    #[test]
    fn rejects_queue_totals_above_the_limit() {
        // The reviewer's answer: 12.8 KB, 256 times the most one broker may have.
        let body = repeated(256, "b", false, "readQueueNums", MAX_QUEUE_NUMS);
        assert!(body.len() < 13_000);
        match TopicRouteData::parse(body.as_bytes()) {
            Err(RemotingError::MalformedBody { what, reason }) => {
                assert_eq!(what, "topic route");
                for part in ["readQueueNums", "256 entries", "16777216", "65536"] {
                    assert!(reason.contains(part), "{part:?} not in {reason:?}");
                }
            }
            other => panic!("expected MalformedBody, got {other:?}"),
        }
        // Distinct brokers count the same; so do write queues.
        let err =
            TopicRouteData::parse(repeated(3, "b", true, "writeQueueNums", 30_000).as_bytes())
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("writeQueueNums of 3 entries add up to 90000"),
            "{err}"
        );
        // Up to the limit, and negative counts add nothing.
        let at_limit = repeated(256, "b", true, "readQueueNums", 256);
        let route = TopicRouteData::parse(at_limit.as_bytes()).unwrap();
        assert_eq!(route.subscribe_queues("T").len(), 65_536);
        assert!(
            TopicRouteData::parse(repeated(3, "b", true, "readQueueNums", -1).as_bytes()).is_ok()
        );
        let ordered = br#"{"orderTopicConf":"a:40000;b:40000","queueDatas":[]}"#;
        let err = TopicRouteData::parse(ordered).unwrap_err().to_string();
        assert!(
            err.contains("orderTopicConf of 2 entries add up to 80000"),
            "{err}"
        );
    }

    #[test]
    fn rejects_routes_copying_too_many_broker_name_bytes() {
        // 1 MB of broker name, copied into each of 65,536 queues: 64 GB.
        let name = "n".repeat(1 << 20);
        for field in ["readQueueNums", "writeQueueNums"] {
            let body = format!(
                r#"{{"queueDatas":[{{"brokerName":"{name}","perm":6,"{field}":{MAX_QUEUE_NUMS}}}]}}"#
            );
            let err = TopicRouteData::parse(body.as_bytes())
                .unwrap_err()
                .to_string();
            let copied = (1_usize << 20) * 65_536;
            assert!(
                err.contains(&format!("{field} of 1 entries would copy {copied} bytes")),
                "{}",
                &err[err.len().saturating_sub(200)..]
            );
            assert!(err.contains(&MAX_ROUTE_NAME_BYTES.to_string()));
        }
        let ordered = format!(r#"{{"orderTopicConf":"{name}:4096","queueDatas":[]}}"#);
        let err = TopicRouteData::parse(ordered.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("orderTopicConf of 1 entries would copy"));
        // 256-byte names for every queue of a full topic are fine, as is a long name for a few.
        let full = repeated(256, &"b".repeat(253), true, "readQueueNums", 256);
        let route = TopicRouteData::parse(full.as_bytes()).unwrap();
        assert!(route.queue_datas.iter().all(|q| q.broker_name.len() <= 256));
        assert_eq!(route.subscribe_queues("T").len(), 65_536);
        let over = repeated(256, &"b".repeat(254), true, "readQueueNums", 256);
        let err = TopicRouteData::parse(over.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bytes of broker names"), "{err}");
        let few =
            format!(r#"{{"queueDatas":[{{"brokerName":"{name}","perm":6,"readQueueNums":8}}]}}"#);
        assert!(TopicRouteData::parse(few.as_bytes()).is_ok());
    }

    #[test]
    fn expansion_is_bounded_for_hand_built_routes() {
        let huge = MAX_QUEUE_NUMS + 1;
        let r = TopicRouteData {
            order_topic_conf: None,
            queue_datas: vec![QueueData {
                broker_name: "a".into(),
                read_queue_nums: huge,
                write_queue_nums: huge,
                perm: 6,
                topic_sys_flag: 0,
            }],
            broker_datas: vec![BrokerData {
                broker_name: "a".into(),
                broker_addrs: [(0, "a:1".into())].into(),
                ..BrokerData::default()
            }],
            topic_queue_mapping_by_broker: None,
        };
        let limit = usize::try_from(MAX_QUEUE_NUMS).unwrap();
        assert_eq!(r.subscribe_queues("T").len(), limit);
        assert_eq!(r.publish_queues("T").len(), limit);
        let ordered = TopicRouteData {
            order_topic_conf: Some(format!("a:{huge}")),
            ..r
        };
        assert_eq!(ordered.publish_queues("T").len(), limit);
    }

    fn route() -> impl Strategy<Value = TopicRouteData> {
        let queue =
            ("[a-z]{1,8}", 0i32..16, 0i32..16, 0i32..16, 0i32..4).prop_map(|(n, r, w, p, f)| {
                QueueData {
                    broker_name: n,
                    read_queue_nums: r,
                    write_queue_nums: w,
                    perm: p,
                    topic_sys_flag: f,
                }
            });
        let broker = (
            "[A-Za-z]{1,8}",
            "[a-z-]{1,8}",
            prop::collection::btree_map(0i64..4, "[0-9.]{7,15}:[0-9]{1,5}", 0..3),
            prop::option::of("[a-z]{1,5}"),
            any::<bool>(),
        )
            .prop_map(
                |(cluster, broker_name, broker_addrs, zone_name, enable_acting_master)| {
                    BrokerData {
                        cluster,
                        broker_name,
                        broker_addrs,
                        zone_name,
                        enable_acting_master,
                    }
                },
            );
        (
            prop::option::of("[a-z]{1,4}:[0-9]"),
            prop::collection::vec(queue, 0..4),
            prop::collection::vec(broker, 0..4),
        )
            .prop_map(
                |(order_topic_conf, queue_datas, broker_datas)| TopicRouteData {
                    order_topic_conf,
                    queue_datas,
                    broker_datas,
                    topic_queue_mapping_by_broker: None,
                },
            )
    }

    /// The pre-4.9.4 fastjson form: broker-id keys without quotes.
    fn unquote_ids(json: &str) -> String {
        let mut out = json.to_owned();
        for id in 0..4 {
            out = out.replace(&format!("\"{id}\":\""), &format!("{id}:\""));
        }
        out
    }

    proptest! {
        #[test]
        fn round_trip(r in route()) {
            let json = String::from_utf8(r.to_json()).unwrap();
            prop_assert_eq!(&TopicRouteData::parse(json.as_bytes()).unwrap(), &r);
            prop_assert_eq!(&TopicRouteData::parse(unquote_ids(&json).as_bytes()).unwrap(), &r);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = TopicRouteData::parse(&bytes);
        }
    }
}
