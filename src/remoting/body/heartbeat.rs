//! HEART_BEAT body (section 4.1): the client's consumer groups and their subscriptions.
//!
//! Serialised in the full Java shape with Java enum names: the Rust broker rejects a heartbeat
//! missing any ConsumerData or SubscriptionData key (section 11.4 #2).

use serde::{Deserialize, Serialize};

use super::{fastjson, nullable};
use crate::remoting::RemotingError;

/// The heartbeat a client sends to every broker.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HeartbeatData {
    /// Client id (`ip@pid#nanos`, section 7.1). Capital `ID` on the wire.
    #[serde(rename = "clientID", default, deserialize_with = "nullable")]
    pub client_id: String,
    /// One entry per consumer group of this client.
    #[serde(rename = "consumerDataSet", default, deserialize_with = "nullable")]
    pub consumer_data_set: Vec<ConsumerData>,
    /// 5.x heartbeat-V2 fingerprint; 0 selects the classic path (always used here).
    #[serde(
        rename = "heartbeatFingerprint",
        default,
        deserialize_with = "nullable"
    )]
    pub heartbeat_fingerprint: i32,
    /// Producer groups (Java includes `CLIENT_INNER_PRODUCER`; may be empty).
    #[serde(rename = "producerDataSet", default, deserialize_with = "nullable")]
    pub producer_data_set: Vec<ProducerData>,
    /// 5.x heartbeat-V2: subscriptions omitted because the fingerprint is unchanged.
    #[serde(rename = "withoutSub", default, deserialize_with = "nullable")]
    pub without_sub: bool,
}

impl HeartbeatData {
    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        fastjson::to_string(self).into_bytes()
    }

    /// Parses a heartbeat body (test brokers).
    ///
    /// # Errors
    /// [`RemotingError::MalformedBody`] if the body does not have this shape.
    pub fn parse(body: &[u8]) -> Result<Self, RemotingError> {
        fastjson::from_slice(body, "heartbeat")
    }
}

/// A producer group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ProducerData {
    /// Group name.
    #[serde(rename = "groupName")]
    pub group_name: String,
}

/// One consumer group of the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerData {
    /// Where a new group starts (informational for the broker).
    pub consume_from_where: ConsumeFromWhere,
    /// Push, pull or pop.
    pub consume_type: ConsumeType,
    /// Consumer group.
    pub group_name: String,
    /// Clustering or broadcasting.
    pub message_model: MessageModel,
    /// One per subscribed topic, including `%RETRY%<group>` in clustering mode.
    pub subscription_data_set: Vec<SubscriptionData>,
    /// Unit mode; always false.
    pub unit_mode: bool,
}

/// One topic subscription. Build with [`crate::remoting::filter::subscription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionData {
    /// Class filter (removed in 5.x); always false.
    pub class_filter_mode: bool,
    /// Java `String.hashCode` of each tag, in `tags_set` order.
    pub code_set: Vec<i32>,
    /// Tag or SQL92 expression.
    pub expression_type: ExpressionType,
    /// The expression: `*`, `TagA||TagB` or SQL92 text.
    pub sub_string: String,
    /// Subscription version (ms timestamp), renewed when the topic's rebalance result changes.
    pub sub_version: i64,
    /// Parsed tags; empty for `*` and SQL92.
    pub tags_set: Vec<String>,
    /// Topic.
    pub topic: String,
}

/// How a consumer gets messages (Java `ConsumeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConsumeType {
    /// Pull consumer.
    #[serde(rename = "CONSUME_ACTIVELY")]
    Actively,
    /// Push consumer (this client).
    #[serde(rename = "CONSUME_PASSIVELY")]
    Passively,
    /// 5.x pop consumer.
    #[serde(rename = "CONSUME_POP")]
    Pop,
}

/// How a group shares messages (Java `MessageModel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageModel {
    /// Every consumer gets every message; offsets stored locally.
    #[serde(rename = "BROADCASTING")]
    Broadcasting,
    /// Queues are divided among the group; offsets stored on the broker.
    #[serde(rename = "CLUSTERING")]
    Clustering,
}

/// Where a new group starts (Java `ConsumeFromWhere`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConsumeFromWhere {
    /// The queue's max offset.
    #[serde(rename = "CONSUME_FROM_LAST_OFFSET")]
    LastOffset,
    /// The queue's min offset.
    #[serde(rename = "CONSUME_FROM_FIRST_OFFSET")]
    FirstOffset,
    /// The first message stored at or after a timestamp.
    #[serde(rename = "CONSUME_FROM_TIMESTAMP")]
    Timestamp,
    /// Deprecated Java value.
    #[serde(rename = "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST")]
    LastOffsetAndFromMinWhenBootFirst,
    /// Deprecated Java value.
    #[serde(rename = "CONSUME_FROM_MIN_OFFSET")]
    MinOffset,
    /// Deprecated Java value.
    #[serde(rename = "CONSUME_FROM_MAX_OFFSET")]
    MaxOffset,
}

/// Subscription expression language (Java `ExpressionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpressionType {
    /// `*` or `tag1||tag2`.
    #[serde(rename = "TAG")]
    Tag,
    /// SQL-92 over properties (needs broker `enablePropertyFilter`).
    #[serde(rename = "SQL92")]
    Sql92,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::filter::subscription;
    use proptest::prelude::*;

    fn example() -> HeartbeatData {
        HeartbeatData {
            client_id: "192.168.1.10@12345#8923744812".into(),
            consumer_data_set: vec![ConsumerData {
                consume_from_where: ConsumeFromWhere::LastOffset,
                consume_type: ConsumeType::Passively,
                group_name: "G1".into(),
                message_model: MessageModel::Clustering,
                subscription_data_set: vec![
                    SubscriptionData {
                        class_filter_mode: false,
                        code_set: vec![2598919, 2598920],
                        expression_type: ExpressionType::Tag,
                        sub_string: "TagA || TagB".into(),
                        sub_version: 1716880000000,
                        tags_set: vec!["TagA".into(), "TagB".into()],
                        topic: "T1".into(),
                    },
                    subscription("%RETRY%G1", "*", ExpressionType::Tag, 1716880000001),
                ],
                unit_mode: false,
            }],
            heartbeat_fingerprint: 0,
            producer_data_set: vec![ProducerData {
                group_name: "CLIENT_INNER_PRODUCER".into(),
            }],
            without_sub: false,
        }
    }

    #[test]
    fn matches_the_documented_body_exactly() {
        let want = r#"{"clientID":"192.168.1.10@12345#8923744812","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET",
 "consumeType":"CONSUME_PASSIVELY","groupName":"G1","messageModel":"CLUSTERING",
 "subscriptionDataSet":[
  {"classFilterMode":false,"codeSet":[2598919,2598920],"expressionType":"TAG","subString":"TagA || TagB","subVersion":1716880000000,"tagsSet":["TagA","TagB"],"topic":"T1"},
  {"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*","subVersion":1716880000001,"tagsSet":[],"topic":"%RETRY%G1"}],
 "unitMode":false}],
 "heartbeatFingerprint":0,"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}],"withoutSub":false}"#;
        let compact: String = want.split('\n').map(str::trim_start).collect();
        assert_eq!(String::from_utf8(example().to_json()).unwrap(), compact);
    }

    #[test]
    fn every_key_is_present() {
        let json: serde_json::Value = serde_json::from_slice(&example().to_json()).unwrap();
        for key in [
            "clientID",
            "producerDataSet",
            "consumerDataSet",
            "heartbeatFingerprint",
            "withoutSub",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        let consumer = &json["consumerDataSet"][0];
        for key in [
            "groupName",
            "consumeType",
            "messageModel",
            "consumeFromWhere",
            "subscriptionDataSet",
            "unitMode",
        ] {
            assert!(consumer.get(key).is_some(), "{key}");
        }
        let sub = &consumer["subscriptionDataSet"][0];
        for key in [
            "classFilterMode",
            "topic",
            "subString",
            "tagsSet",
            "codeSet",
            "subVersion",
            "expressionType",
        ] {
            assert!(sub.get(key).is_some(), "{key}");
        }
        assert_eq!(
            consumer["subscriptionDataSet"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn enum_names() {
        let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        assert_eq!(
            name(serde_json::to_value(ConsumeType::Actively).unwrap()),
            "CONSUME_ACTIVELY"
        );
        assert_eq!(
            name(serde_json::to_value(ConsumeType::Pop).unwrap()),
            "CONSUME_POP"
        );
        assert_eq!(
            name(serde_json::to_value(MessageModel::Broadcasting).unwrap()),
            "BROADCASTING"
        );
        assert_eq!(
            name(serde_json::to_value(ConsumeFromWhere::FirstOffset).unwrap()),
            "CONSUME_FROM_FIRST_OFFSET"
        );
        assert_eq!(
            name(serde_json::to_value(ConsumeFromWhere::Timestamp).unwrap()),
            "CONSUME_FROM_TIMESTAMP"
        );
        assert_eq!(
            name(serde_json::to_value(ExpressionType::Sql92).unwrap()),
            "SQL92"
        );
    }

    fn sub_data() -> impl Strategy<Value = SubscriptionData> {
        (
            "[A-Za-z%]{1,10}",
            "[A-Za-z |*]{0,20}",
            any::<bool>(),
            any::<i64>(),
        )
            .prop_map(|(t, e, sql, v)| {
                subscription(
                    &t,
                    &e,
                    if sql {
                        ExpressionType::Sql92
                    } else {
                        ExpressionType::Tag
                    },
                    v,
                )
            })
    }

    proptest! {
        #[test]
        fn round_trip(
            client_id in ".{0,20}",
            groups in prop::collection::vec(("[A-Za-z0-9_]{1,10}", prop::collection::vec(sub_data(), 0..3), 0usize..6, any::<bool>()), 0..3),
            producers in prop::collection::vec("[A-Z_]{1,20}", 0..2),
            fingerprint in any::<i32>(),
            without_sub in any::<bool>(),
        ) {
            let wheres = [ConsumeFromWhere::LastOffset, ConsumeFromWhere::FirstOffset, ConsumeFromWhere::Timestamp,
                ConsumeFromWhere::LastOffsetAndFromMinWhenBootFirst, ConsumeFromWhere::MinOffset, ConsumeFromWhere::MaxOffset];
            let hb = HeartbeatData {
                client_id,
                consumer_data_set: groups.into_iter().map(|(g, subs, w, b)| ConsumerData {
                    consume_from_where: wheres[w],
                    consume_type: if b { ConsumeType::Passively } else { ConsumeType::Pop },
                    group_name: g,
                    message_model: if b { MessageModel::Clustering } else { MessageModel::Broadcasting },
                    subscription_data_set: subs,
                    unit_mode: false,
                }).collect(),
                heartbeat_fingerprint: fingerprint,
                producer_data_set: producers.into_iter().map(|group_name| ProducerData { group_name }).collect(),
                without_sub,
            };
            prop_assert_eq!(HeartbeatData::parse(&hb.to_json()).unwrap(), hb);
        }
    }
}
