//! LOCK_BATCH_MQ / UNLOCK_BATCH_MQ bodies (section 4.9): orderly consumers lock their queues on
//! the owning broker's master.

use serde::{Deserialize, Serialize};

use super::{fastjson, nullable};
use crate::remoting::{MessageQueue, RemotingError};

/// Asks a master to lock queues for `client_id` (or renew its locks).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockBatchRequest {
    /// Consumer group.
    #[serde(default, deserialize_with = "nullable")]
    pub consumer_group: String,
    /// The lock owner.
    #[serde(default, deserialize_with = "nullable")]
    pub client_id: String,
    /// Skip replica quorum (5.x strict mode); false from clients.
    #[serde(default, deserialize_with = "nullable")]
    pub only_this_broker: bool,
    /// Queues of this broker to lock.
    #[serde(default, deserialize_with = "nullable")]
    pub mq_set: Vec<MessageQueue>,
}

/// Releases locks owned by `client_id`; same shape as [`LockBatchRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnlockBatchRequest {
    /// Consumer group.
    #[serde(default, deserialize_with = "nullable")]
    pub consumer_group: String,
    /// The lock owner.
    #[serde(default, deserialize_with = "nullable")]
    pub client_id: String,
    /// Skip replica quorum (5.x strict mode); false from clients.
    #[serde(default, deserialize_with = "nullable")]
    pub only_this_broker: bool,
    /// Queues of this broker to unlock.
    #[serde(default, deserialize_with = "nullable")]
    pub mq_set: Vec<MessageQueue>,
}

/// The queues now locked by the requester (a subset of the request).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockBatchResponse {
    /// Locked queues.
    #[serde(rename = "lockOKMQSet", default, deserialize_with = "nullable")]
    pub lock_ok_mq_set: Vec<MessageQueue>,
}

macro_rules! json_body {
    ($ty:ty, $what:literal) => {
        impl $ty {
            /// The JSON body.
            pub fn to_json(&self) -> Vec<u8> {
                fastjson::to_string(self).into_bytes()
            }

            /// Parses the JSON body.
            ///
            /// # Errors
            /// [`RemotingError::MalformedBody`] if the body is not this shape.
            pub fn parse(body: &[u8]) -> Result<Self, RemotingError> {
                fastjson::from_slice(body, $what)
            }
        }
    };
}

json_body!(LockBatchRequest, "lock batch request");
json_body!(UnlockBatchRequest, "unlock batch request");
json_body!(LockBatchResponse, "lock batch response");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_shapes() {
        let req = LockBatchRequest {
            consumer_group: "G1".into(),
            client_id: "192.168.1.10@12345#8923744812".into(),
            only_this_broker: false,
            mq_set: vec![
                MessageQueue::new("T1", "broker-a", 0),
                MessageQueue::new("T1", "broker-a", 1),
            ],
        };
        let json: serde_json::Value = serde_json::from_slice(&req.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "clientId":"192.168.1.10@12345#8923744812","consumerGroup":"G1","onlyThisBroker":false,
                "mqSet":[{"brokerName":"broker-a","queueId":0,"topic":"T1"},{"brokerName":"broker-a","queueId":1,"topic":"T1"}]
            })
        );
        let resp = LockBatchResponse::parse(
            br#"{"lockOKMQSet":[{"brokerName":"broker-a","queueId":0,"topic":"T1"}]}"#,
        )
        .unwrap();
        assert_eq!(
            resp.lock_ok_mq_set,
            vec![MessageQueue::new("T1", "broker-a", 0)]
        );
        assert_eq!(
            String::from_utf8(resp.to_json()).unwrap(),
            r#"{"lockOKMQSet":[{"topic":"T1","brokerName":"broker-a","queueId":0}]}"#
        );
        assert!(LockBatchResponse::parse(b"{\"lockOKMQSet\":null}")
            .unwrap()
            .lock_ok_mq_set
            .is_empty());
    }

    fn mqs() -> impl Strategy<Value = Vec<MessageQueue>> {
        prop::collection::vec(
            ("[A-Za-z%]{1,8}", "[a-z-]{1,8}", any::<i32>())
                .prop_map(|(t, b, q)| MessageQueue::new(t, b, q)),
            0..5,
        )
    }

    proptest! {
        #[test]
        fn round_trip(group in ".{0,10}", client in ".{0,10}", only in any::<bool>(), set in mqs()) {
            let lock = LockBatchRequest { consumer_group: group.clone(), client_id: client.clone(), only_this_broker: only, mq_set: set.clone() };
            prop_assert_eq!(LockBatchRequest::parse(&lock.to_json()).unwrap(), lock);
            let unlock = UnlockBatchRequest { consumer_group: group, client_id: client, only_this_broker: only, mq_set: set.clone() };
            prop_assert_eq!(UnlockBatchRequest::parse(&unlock.to_json()).unwrap(), unlock);
            let resp = LockBatchResponse { lock_ok_mq_set: set };
            prop_assert_eq!(LockBatchResponse::parse(&resp.to_json()).unwrap(), resp);
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = LockBatchRequest::parse(&bytes);
            let _ = LockBatchResponse::parse(&bytes);
        }
    }
}
