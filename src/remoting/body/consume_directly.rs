//! CONSUME_MESSAGE_DIRECTLY answer (section 5.5): the outcome of running the listener once on a
//! message an admin pushed, without committing offsets or sending it back.

use serde::{Deserialize, Serialize};

use super::fastjson;
use crate::remoting::RemotingError;

/// The answer body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeMessageDirectlyResult {
    /// Whether the group consumes orderly.
    pub order: bool,
    /// Orderly auto-commit (Java reports true).
    pub auto_commit: bool,
    /// What the listener answered.
    pub consume_result: ConsumeResult,
    /// Free text, e.g. an error; `null` when absent.
    pub remark: Option<String>,
    /// Listener time in ms (Java's spelling, `Mills`).
    pub spent_time_mills: i64,
}

impl ConsumeMessageDirectlyResult {
    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        fastjson::to_string(self).into_bytes()
    }

    /// Parses the JSON body (test brokers, admin tools).
    ///
    /// # Errors
    /// [`RemotingError::MalformedBody`] if the body is not this shape.
    pub fn parse(body: &[u8]) -> Result<Self, RemotingError> {
        fastjson::from_slice(body, "consume directly result")
    }
}

/// Java `CMResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConsumeResult {
    /// Consumed.
    #[serde(rename = "CR_SUCCESS")]
    Success,
    /// Reconsume later (or orderly suspend).
    #[serde(rename = "CR_LATER")]
    Later,
    /// Orderly rollback.
    #[serde(rename = "CR_ROLLBACK")]
    Rollback,
    /// Orderly commit.
    #[serde(rename = "CR_COMMIT")]
    Commit,
    /// The listener failed.
    #[serde(rename = "CR_THROW_EXCEPTION")]
    ThrowException,
    /// The listener returned nothing.
    #[serde(rename = "CR_RETURN_NULL")]
    ReturnNull,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_shape() {
        let r = ConsumeMessageDirectlyResult {
            order: false,
            auto_commit: true,
            consume_result: ConsumeResult::Success,
            remark: None,
            spent_time_mills: 12,
        };
        assert_eq!(
            String::from_utf8(r.to_json()).unwrap(),
            r#"{"order":false,"autoCommit":true,"consumeResult":"CR_SUCCESS","remark":null,"spentTimeMills":12}"#
        );
    }

    proptest! {
        #[test]
        fn round_trip(order in any::<bool>(), auto in any::<bool>(), which in 0usize..6, remark in prop::option::of(".{0,20}"), spent in any::<i64>()) {
            let all = [ConsumeResult::Success, ConsumeResult::Later, ConsumeResult::Rollback,
                ConsumeResult::Commit, ConsumeResult::ThrowException, ConsumeResult::ReturnNull];
            let r = ConsumeMessageDirectlyResult { order, auto_commit: auto, consume_result: all[which], remark, spent_time_mills: spent };
            prop_assert_eq!(ConsumeMessageDirectlyResult::parse(&r.to_json()).unwrap(), r);
        }
    }
}
