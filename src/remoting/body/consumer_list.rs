//! GET_CONSUMER_LIST_BY_GROUP answer (section 4.3): the client ids of a group's live members.

use serde::{Deserialize, Serialize};

use super::{fastjson, nullable};
use crate::remoting::RemotingError;

/// The members of a consumer group, in the broker's (hash) order: sort before allocating.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConsumerList {
    /// Client ids.
    #[serde(rename = "consumerIdList", default, deserialize_with = "nullable")]
    pub consumer_id_list: Vec<String>,
}

impl ConsumerList {
    /// Parses the body.
    ///
    /// # Errors
    /// [`RemotingError::MalformedBody`] if the body is not this shape.
    pub fn parse(body: &[u8]) -> Result<Self, RemotingError> {
        fastjson::from_slice(body, "consumer list")
    }

    /// The JSON body (test brokers).
    pub fn to_json(&self) -> Vec<u8> {
        fastjson::to_string(self).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses() {
        let l =
            ConsumerList::parse(br#"{"consumerIdList":["10.0.0.2@2#1","10.0.0.1@1#1"]}"#).unwrap();
        assert_eq!(l.consumer_id_list, vec!["10.0.0.2@2#1", "10.0.0.1@1#1"]);
        assert!(ConsumerList::parse(b"{}")
            .unwrap()
            .consumer_id_list
            .is_empty());
        assert!(ConsumerList::parse(br#"{"consumerIdList":[1]}"#).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(ids in prop::collection::vec(".{0,30}", 0..5)) {
            let l = ConsumerList { consumer_id_list: ids };
            prop_assert_eq!(ConsumerList::parse(&l.to_json()).unwrap(), l);
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
            let _ = ConsumerList::parse(&bytes);
        }
    }
}
