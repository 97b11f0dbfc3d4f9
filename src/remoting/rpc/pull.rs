//! PULL_MESSAGE (11): the long-polling pull of one queue (section 4.4).
//!
//! The four pull outcomes (SUCCESS, PULL_NOT_FOUND, PULL_RETRY_IMMEDIATELY, PULL_OFFSET_MOVED)
//! are statuses of a [`PullResult`], not errors; every other code is [`RemotingError::Status`].
//! Messages get the same post-processing as in the Java client's `processPullResult`: queue id
//! from the request, `offsetDelta` added, `MIN_OFFSET`/`MAX_OFFSET` properties set.

use std::ops::{BitOr, BitOrAssign};

use bytes::Bytes;

use super::{status_error, FromCommand, Rpc};
use crate::remoting::command::{ExtFields, RemotingCommand};
use crate::remoting::message::{
    decode_messages_within, properties, ByteString, MAX_BODY_DECODED_LEN,
};
use crate::remoting::{MessageExt, RemotingError, RequestCode, ResponseCode};

/// The `sysFlag` bit set of a pull request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PullSysFlag(pub i32);

impl PullSysFlag {
    /// The broker also stores `commitOffset` as the group's offset (master only).
    pub const COMMIT_OFFSET: Self = Self(0x1);
    /// The broker may hold the request (long polling) when no message is available.
    pub const SUSPEND: Self = Self(0x2);
    /// `subscription`/`expressionType` in the request are authoritative.
    pub const SUBSCRIPTION: Self = Self(0x4);
    /// Legacy class filter; never set.
    pub const CLASS_FILTER: Self = Self(0x8);
    /// Lite pull (request code 361 in Java).
    pub const LITE_PULL: Self = Self(0x10);

    /// The raw bits.
    pub fn bits(self) -> i32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// These bits with `other`'s cleared (e.g. COMMIT_OFFSET when pulling from a slave).
    #[must_use]
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl BitOr for PullSysFlag {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for PullSysFlag {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// A pull request for one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullMessage {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic of the queue (may be `%RETRY%<group>`).
    pub topic: String,
    /// Queue id.
    pub queue_id: i32,
    /// Offset to read from.
    pub queue_offset: i64,
    /// Most messages to return (Java default 32).
    pub max_msg_nums: i32,
    /// Request flags.
    pub sys_flag: PullSysFlag,
    /// The consumer's committed offset for this queue, stored when COMMIT_OFFSET is set.
    pub commit_offset: i64,
    /// How long the broker may hold the request (Java: 15000 ms).
    pub suspend_timeout_millis: i64,
    /// Subscription expression; sent with the SUBSCRIPTION flag.
    pub subscription: Option<String>,
    /// The subscription version announced by heartbeat.
    pub sub_version: i64,
    /// `TAG` or `SQL92`.
    pub expression_type: String,
    /// 5.x byte cap for the response.
    pub max_msg_bytes: Option<i32>,
    /// 5.x `bname`: the broker the queue belongs to.
    pub broker_name: Option<String>,
}

/// How a pull ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PullStatus {
    /// SUCCESS (0): messages in the body.
    Found,
    /// PULL_NOT_FOUND (19): caught up (after the long-poll hold).
    NoNewMsg,
    /// PULL_RETRY_IMMEDIATELY (20): entries scanned but none matched the filter.
    NoMatchedMsg,
    /// PULL_OFFSET_MOVED (21): the requested offset is invalid; use `next_begin_offset`.
    OffsetIllegal,
}

impl PullStatus {
    /// The status a response code stands for, if it is one of the four pull outcomes.
    pub fn from_code(code: ResponseCode) -> Option<Self> {
        match code {
            ResponseCode::Success => Some(Self::Found),
            ResponseCode::PullNotFound => Some(Self::NoNewMsg),
            ResponseCode::PullRetryImmediately => Some(Self::NoMatchedMsg),
            ResponseCode::PullOffsetMoved => Some(Self::OffsetIllegal),
            _ => None,
        }
    }

    /// The response code of this status.
    pub fn code(self) -> ResponseCode {
        match self {
            Self::Found => ResponseCode::Success,
            Self::NoNewMsg => ResponseCode::PullNotFound,
            Self::NoMatchedMsg => ResponseCode::PullRetryImmediately,
            Self::OffsetIllegal => ResponseCode::PullOffsetMoved,
        }
    }
}

/// The typed answer to a [`PullMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResult {
    /// How the pull ended.
    pub status: PullStatus,
    /// Offset to request next.
    pub next_begin_offset: i64,
    /// Queue min offset.
    pub min_offset: i64,
    /// Queue max offset (next write position).
    pub max_offset: i64,
    /// Broker id to pull this queue from next (0 = master).
    pub suggest_which_broker_id: i64,
    /// 5.x static topics: already added to every message's `queue_offset`.
    pub offset_delta: Option<i64>,
    /// Messages (only with [`PullStatus::Found`]), before client-side tag filtering.
    pub messages: Vec<MessageExt>,
}

impl PullMessage {
    /// A pull of every tag (`*`, carried in the request, so no heartbeat is needed) of up to
    /// `max_msg_nums` messages from `queue_offset`, answered at once (no hold) and committing
    /// nothing: the one-shot pull of tools, tests and the benchmark's pull ceiling. The
    /// consumer's own pulls set every field themselves.
    pub fn all_tags(
        group: &str,
        topic: &str,
        queue_id: i32,
        queue_offset: i64,
        max_msg_nums: i32,
    ) -> Self {
        Self {
            consumer_group: group.to_owned(),
            topic: topic.to_owned(),
            queue_id,
            queue_offset,
            max_msg_nums,
            sys_flag: PullSysFlag::SUBSCRIPTION,
            commit_offset: 0,
            suspend_timeout_millis: 0,
            subscription: Some("*".to_owned()),
            sub_version: 0,
            expression_type: "TAG".to_owned(),
            max_msg_bytes: None,
            broker_name: None,
        }
    }
}

impl Rpc for PullMessage {
    type Response = PullResult;

    fn command(&self) -> RemotingCommand {
        let ext = ExtFields::new()
            .with("consumerGroup", &self.consumer_group)
            .with("topic", &self.topic)
            .with("queueId", self.queue_id)
            .with("queueOffset", self.queue_offset)
            .with("maxMsgNums", self.max_msg_nums)
            .with("sysFlag", self.sys_flag.bits())
            .with("commitOffset", self.commit_offset)
            .with("suspendTimeoutMillis", self.suspend_timeout_millis)
            .with_opt("subscription", self.subscription.as_ref())
            .with("subVersion", self.sub_version)
            .with("expressionType", &self.expression_type)
            .with_opt("maxMsgBytes", self.max_msg_bytes)
            .with_opt("bname", self.broker_name.as_ref());
        RemotingCommand::request(RequestCode::PullMessage, ext, Bytes::new())
    }

    fn parse(&self, response: RemotingCommand) -> Result<PullResult, RemotingError> {
        let Some(status) = PullStatus::from_code(response.response_code()) else {
            return Err(status_error(&response));
        };
        let ext = &response.ext_fields;
        let mut next_begin_offset = ext.required_i64("nextBeginOffset")?;
        let min_offset = ext.required_i64("minOffset")?;
        let max_offset = ext.required_i64("maxOffset")?;
        // Java's fast header decoder tolerates a missing suggestion; 0 (master) is safe.
        let suggest_which_broker_id = ext.optional_i64("suggestWhichBrokerId")?.unwrap_or(0);
        let offset_delta = ext.optional_i64("offsetDelta")?;
        let mut messages = if status == PullStatus::Found {
            // The frame is a slice of the connection's read buffer (64 KiB and up), shared with
            // the frames read with it and with slack after them. Decoded messages are views and
            // may wait in a process queue for minutes, so they get an exact-size copy of their
            // own (one memcpy per pull, about 0.1 us per 1 KiB message) instead of keeping that
            // whole buffer alive.
            let decoded = decode_messages_within(
                &Bytes::copy_from_slice(&response.body),
                MAX_BODY_DECODED_LEN,
            )?;
            // The records decoded reached the budget (inflated bodies and messages built) or
            // the message cap: the next pull starts at the first record left, so nothing is
            // skipped and one pull holds a bounded amount.
            if let Some(rest) = decoded.rest_from {
                next_begin_offset = rest.wrapping_add(offset_delta.unwrap_or(0));
            }
            decoded.messages
        } else {
            Vec::new()
        };
        // One string each per pull, shared by every message (a refcount, not a copy).
        let (min, max) = (
            ByteString::from(min_offset.to_string()),
            ByteString::from(max_offset.to_string()),
        );
        for message in &mut messages {
            // The stored record may carry another queue id (e.g. for logical queues); the
            // queue we asked for is the one offsets are committed to.
            message.queue_id = self.queue_id;
            if let Some(delta) = offset_delta {
                message.queue_offset = message.queue_offset.wrapping_add(delta);
            }
            message.properties.reserve_exact(2);
            message
                .properties
                .insert(ByteString::from_static(properties::MIN_OFFSET), min.clone());
            message
                .properties
                .insert(ByteString::from_static(properties::MAX_OFFSET), max.clone());
        }
        Ok(PullResult {
            status,
            next_begin_offset,
            min_offset,
            max_offset,
            suggest_which_broker_id,
            offset_delta,
            messages,
        })
    }
}

impl FromCommand for PullMessage {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        let ext = &command.ext_fields;
        Ok(Self {
            consumer_group: ext.str("consumerGroup")?.to_owned(),
            topic: ext.str("topic")?.to_owned(),
            queue_id: ext.required_i32("queueId")?,
            queue_offset: ext.required_i64("queueOffset")?,
            max_msg_nums: ext.required_i32("maxMsgNums")?,
            sys_flag: PullSysFlag(ext.required_i32("sysFlag")?),
            commit_offset: ext.required_i64("commitOffset")?,
            suspend_timeout_millis: ext.required_i64("suspendTimeoutMillis")?,
            subscription: ext.optional_str("subscription").map(str::to_owned),
            sub_version: ext.required_i64("subVersion")?,
            expression_type: ext
                .optional_str("expressionType")
                .unwrap_or("TAG")
                .to_owned(),
            max_msg_bytes: ext.optional_i32("maxMsgBytes")?,
            broker_name: ext.optional_str("bname").map(str::to_owned),
        })
    }
}
