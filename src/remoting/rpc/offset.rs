//! Consumer-offset and queue-offset calls (sections 4.5-4.7). All go to the master of the
//! queue's broker; all answer with an `offset` (or `timestamp`) response field.

use bytes::Bytes;

use super::{expect_success, FromCommand, Rpc};
use crate::remoting::command::{ExtFields, RemotingCommand};
use crate::remoting::{RemotingError, RequestCode, ResponseCode};

/// QUERY_CONSUMER_OFFSET (14): the group's stored offset for a queue. QUERY_NOT_FOUND (22)
/// maps to `None` (a group's first start); other codes are errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryConsumerOffset {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic of the queue.
    pub topic: String,
    /// Queue id.
    pub queue_id: i32,
    /// 5.x: `Some(false)` forces QUERY_NOT_FOUND instead of the broker's "offset 0" shortcut.
    pub set_zero_if_not_found: Option<bool>,
}

impl Rpc for QueryConsumerOffset {
    type Response = Option<i64>;

    fn command(&self) -> RemotingCommand {
        let ext = ExtFields::new()
            .with("consumerGroup", &self.consumer_group)
            .with("topic", &self.topic)
            .with("queueId", self.queue_id)
            .with_opt("setZeroIfNotFound", self.set_zero_if_not_found);
        RemotingCommand::request(RequestCode::QueryConsumerOffset, ext, Bytes::new())
    }

    fn parse(&self, response: RemotingCommand) -> Result<Option<i64>, RemotingError> {
        if response.response_code() == ResponseCode::QueryNotFound {
            return Ok(None);
        }
        let response = expect_success(response)?;
        response.ext_fields.required_i64("offset").map(Some)
    }
}

impl FromCommand for QueryConsumerOffset {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        let ext = &command.ext_fields;
        Ok(Self {
            consumer_group: ext.str("consumerGroup")?.to_owned(),
            topic: ext.str("topic")?.to_owned(),
            queue_id: ext.required_i32("queueId")?,
            set_zero_if_not_found: ext.optional_bool("setZeroIfNotFound")?,
        })
    }
}

/// UPDATE_CONSUMER_OFFSET (15): stores the group's offset for a queue. Java sends it oneway
/// from the periodic persist; the connection decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConsumerOffset {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic of the queue.
    pub topic: String,
    /// Queue id.
    pub queue_id: i32,
    /// Next offset to consume.
    pub commit_offset: i64,
}

impl Rpc for UpdateConsumerOffset {
    type Response = ();

    fn command(&self) -> RemotingCommand {
        let ext = ExtFields::new()
            .with("consumerGroup", &self.consumer_group)
            .with("topic", &self.topic)
            .with("queueId", self.queue_id)
            .with("commitOffset", self.commit_offset);
        RemotingCommand::request(RequestCode::UpdateConsumerOffset, ext, Bytes::new())
    }

    fn parse(&self, response: RemotingCommand) -> Result<(), RemotingError> {
        expect_success(response).map(drop)
    }
}

impl FromCommand for UpdateConsumerOffset {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        let ext = &command.ext_fields;
        Ok(Self {
            consumer_group: ext.str("consumerGroup")?.to_owned(),
            topic: ext.str("topic")?.to_owned(),
            queue_id: ext.required_i32("queueId")?,
            commit_offset: ext.required_i64("commitOffset")?,
        })
    }
}

/// Defines a `{topic, queue_id}` request answering with one i64 response field.
macro_rules! queue_query {
    ($(#[$doc:meta])* $name:ident, $code:expr, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// Topic of the queue.
            pub topic: String,
            /// Queue id.
            pub queue_id: i32,
        }

        impl Rpc for $name {
            type Response = i64;

            fn command(&self) -> RemotingCommand {
                let ext = ExtFields::new()
                    .with("topic", &self.topic)
                    .with("queueId", self.queue_id);
                RemotingCommand::request($code, ext, Bytes::new())
            }

            fn parse(&self, response: RemotingCommand) -> Result<i64, RemotingError> {
                expect_success(response)?.ext_fields.required_i64($field)
            }
        }

        impl FromCommand for $name {
            fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
                Ok(Self {
                    topic: command.ext_fields.str("topic")?.to_owned(),
                    queue_id: command.ext_fields.required_i32("queueId")?,
                })
            }
        }
    };
}

queue_query!(
    /// GET_MAX_OFFSET (30): the offset the next message of the queue will get.
    GetMaxOffset,
    RequestCode::GetMaxOffset,
    "offset"
);
queue_query!(
    /// GET_MIN_OFFSET (31): the smallest offset still stored.
    GetMinOffset,
    RequestCode::GetMinOffset,
    "offset"
);
queue_query!(
    /// GET_EARLIEST_MSG_STORETIME (32): store time (ms) of the queue's min-offset message.
    GetEarliestMsgStoreTime,
    RequestCode::GetEarliestMsgStoreTime,
    "timestamp"
);

/// Which end of a run of equal store times SEARCH_OFFSET_BY_TIMESTAMP returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Boundary {
    /// First offset whose store time is at or after the timestamp (the broker default).
    #[default]
    Lower,
    /// Last offset whose store time is at or before the timestamp.
    Upper,
}

impl Boundary {
    /// The Java enum name sent as `boundaryType`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lower => "LOWER",
            Self::Upper => "UPPER",
        }
    }
}

/// SEARCH_OFFSET_BY_TIMESTAMP (29): the queue offset at a store time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchOffsetByTimestamp {
    /// Topic of the queue.
    pub topic: String,
    /// Queue id.
    pub queue_id: i32,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// 5.x `boundaryType`; 4.x brokers always search the lower boundary.
    pub boundary: Boundary,
}

impl Rpc for SearchOffsetByTimestamp {
    type Response = i64;

    fn command(&self) -> RemotingCommand {
        let ext = ExtFields::new()
            .with("topic", &self.topic)
            .with("queueId", self.queue_id)
            .with("timestamp", self.timestamp)
            .with("boundaryType", self.boundary.name());
        RemotingCommand::request(RequestCode::SearchOffsetByTimestamp, ext, Bytes::new())
    }

    fn parse(&self, response: RemotingCommand) -> Result<i64, RemotingError> {
        expect_success(response)?.ext_fields.required_i64("offset")
    }
}

impl FromCommand for SearchOffsetByTimestamp {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        let ext = &command.ext_fields;
        // Brokers read `boundaryType` case-insensitively and default to LOWER.
        let boundary = match ext.optional_str("boundaryType") {
            None => Boundary::Lower,
            Some(v) if v.eq_ignore_ascii_case("LOWER") => Boundary::Lower,
            Some(v) if v.eq_ignore_ascii_case("UPPER") => Boundary::Upper,
            Some(v) => {
                return Err(RemotingError::InvalidField {
                    field: "boundaryType",
                    value: v.to_owned(),
                })
            }
        };
        Ok(Self {
            topic: ext.str("topic")?.to_owned(),
            queue_id: ext.required_i32("queueId")?,
            timestamp: ext.required_i64("timestamp")?,
            boundary,
        })
    }
}
