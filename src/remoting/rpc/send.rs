//! Sending: SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320) for the test producer and the
//! retry fallback (section 4.10), and CONSUMER_SEND_MSG_BACK (36, section 4.8).
//!
//! Sends use the V2 header with one-letter keys, the form the Java producer uses and the only
//! one accepted for batches. FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT and SLAVE_NOT_AVAILABLE
//! mean "stored, durability incomplete" and are statuses of a [`SendResult`], not errors.

use bytes::Bytes;

use super::{expect_success, status_error, FromCommand, Rpc};
use crate::remoting::command::{ExtFields, RemotingCommand};
use crate::remoting::message::{encode_batch, properties, Message};
use crate::remoting::{RemotingError, RequestCode, ResponseCode};

/// The template topic brokers auto-create unknown topics from.
pub const DEFAULT_TOPIC: &str = "TBW102";
/// Queue count Java asks for when a send auto-creates a topic.
pub const DEFAULT_TOPIC_QUEUE_NUMS: i32 = 4;

/// The send header (`SendMessageRequestHeader`), written with the V2 one-letter keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMessageHeader {
    /// `a`: producer group.
    pub producer_group: String,
    /// `b`: destination topic.
    pub topic: String,
    /// `c`: template topic for auto-creation ([`DEFAULT_TOPIC`]).
    pub default_topic: String,
    /// `d`: queue count for auto-creation ([`DEFAULT_TOPIC_QUEUE_NUMS`]).
    pub default_topic_queue_nums: i32,
    /// `e`: target queue.
    pub queue_id: i32,
    /// `f`: MessageSysFlag (compression bits when the body is compressed).
    pub sys_flag: i32,
    /// `g`: when the message was created (ms since the epoch).
    pub born_timestamp: i64,
    /// `h`: user flag.
    pub flag: i32,
    /// `i`: the properties string (section 6.4), including `UNIQ_KEY`.
    pub properties: Option<String>,
    /// `j`: reconsume count, for messages sent to `%RETRY%` topics.
    pub reconsume_times: Option<i32>,
    /// `k`: unit mode; Java always sends `false`.
    pub unit_mode: bool,
    /// `l`: DLQ threshold, for `%RETRY%` topics.
    pub max_reconsume_times: Option<i32>,
    /// `m`: batch body; [`SendBatchMessage`] forces it on.
    pub batch: bool,
    /// `n`: 5.x broker name.
    pub broker_name: Option<String>,
}

impl SendMessageHeader {
    /// A header for `message` to queue `queue_id` of its topic: its flag and properties, no
    /// compression, the Java defaults for everything else.
    pub fn for_message(
        producer_group: impl Into<String>,
        message: &Message,
        queue_id: i32,
        born_timestamp: i64,
    ) -> Self {
        // A message for a `%RETRY%` topic (the consumer's send-back fallback) carries its
        // reconsume count and DLQ threshold in the header, where the broker's DLQ rule reads
        // them, not as properties (Java `sendKernelImpl`).
        let mut reconsume_times = None;
        let mut max_reconsume_times = None;
        let properties = if message.topic.starts_with("%RETRY%")
            && (message.properties.contains_key(properties::RECONSUME_TIME)
                || message
                    .properties
                    .contains_key(properties::MAX_RECONSUME_TIMES))
        {
            let mut props = message.properties.clone();
            let mut take = |key: &str| props.remove(key).and_then(|v| v.parse::<i32>().ok());
            reconsume_times = take(properties::RECONSUME_TIME);
            max_reconsume_times = take(properties::MAX_RECONSUME_TIMES);
            properties::encode(&props)
        } else {
            properties::encode(&message.properties)
        };
        Self {
            producer_group: producer_group.into(),
            topic: message.topic.clone(),
            default_topic: DEFAULT_TOPIC.to_owned(),
            default_topic_queue_nums: DEFAULT_TOPIC_QUEUE_NUMS,
            queue_id,
            sys_flag: 0,
            born_timestamp,
            flag: message.flag,
            properties: Some(properties),
            reconsume_times,
            unit_mode: false,
            max_reconsume_times,
            batch: false,
            broker_name: None,
        }
    }

    fn ext_fields(&self) -> ExtFields {
        ExtFields::new()
            .with("a", &self.producer_group)
            .with("b", &self.topic)
            .with("c", &self.default_topic)
            .with("d", self.default_topic_queue_nums)
            .with("e", self.queue_id)
            .with("f", self.sys_flag)
            .with("g", self.born_timestamp)
            .with("h", self.flag)
            .with_opt("i", self.properties.as_ref())
            .with_opt("j", self.reconsume_times)
            .with("k", self.unit_mode)
            .with_opt("l", self.max_reconsume_times)
            .with("m", self.batch)
            .with_opt("n", self.broker_name.as_ref())
    }

    fn from_ext_fields(ext: &ExtFields) -> Result<Self, RemotingError> {
        Ok(Self {
            producer_group: ext.str("a")?.to_owned(),
            topic: ext.str("b")?.to_owned(),
            default_topic: ext.str("c")?.to_owned(),
            default_topic_queue_nums: ext.required_i32("d")?,
            queue_id: ext.required_i32("e")?,
            sys_flag: ext.required_i32("f")?,
            born_timestamp: ext.required_i64("g")?,
            flag: ext.required_i32("h")?,
            properties: ext.optional_str("i").map(str::to_owned),
            reconsume_times: ext.optional_i32("j")?,
            unit_mode: ext.optional_bool("k")?.unwrap_or(false),
            max_reconsume_times: ext.optional_i32("l")?,
            batch: ext.optional_bool("m")?.unwrap_or(false),
            broker_name: ext.optional_str("n").map(str::to_owned),
        })
    }
}

/// How a send that stored the message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendStatus {
    /// SUCCESS (0).
    Ok,
    /// FLUSH_DISK_TIMEOUT (10): stored, not yet flushed.
    FlushDiskTimeout,
    /// FLUSH_SLAVE_TIMEOUT (12): stored, replication timed out.
    FlushSlaveTimeout,
    /// SLAVE_NOT_AVAILABLE (11): stored, no replica.
    SlaveNotAvailable,
}

impl SendStatus {
    /// The status a response code stands for, if the message was stored.
    pub fn from_code(code: ResponseCode) -> Option<Self> {
        match code {
            ResponseCode::Success => Some(Self::Ok),
            ResponseCode::FlushDiskTimeout => Some(Self::FlushDiskTimeout),
            ResponseCode::FlushSlaveTimeout => Some(Self::FlushSlaveTimeout),
            ResponseCode::SlaveNotAvailable => Some(Self::SlaveNotAvailable),
            _ => None,
        }
    }
}

/// The typed answer to a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// How it was stored.
    pub status: SendStatus,
    /// Offset msgId(s) of the stored record(s); comma-separated for batches.
    pub msg_id: String,
    /// Queue the message went to.
    pub queue_id: i32,
    /// Logical offset of the (first) message.
    pub queue_offset: i64,
    /// Transaction id, for transactional sends.
    pub transaction_id: Option<String>,
}

fn parse_send_response(response: &RemotingCommand) -> Result<SendResult, RemotingError> {
    let Some(status) = SendStatus::from_code(response.response_code()) else {
        return Err(status_error(response));
    };
    let ext = &response.ext_fields;
    Ok(SendResult {
        status,
        msg_id: ext.str("msgId")?.to_owned(),
        queue_id: ext.required_i32("queueId")?,
        queue_offset: ext.required_i64("queueOffset")?,
        transaction_id: ext.optional_str("transactionId").map(str::to_owned),
    })
}

/// SEND_MESSAGE_V2 (310): one message; `body` is the (possibly compressed) message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMessage {
    /// The send header.
    pub header: SendMessageHeader,
    /// The body as stored (compressed iff `header.sys_flag` says so).
    pub body: Bytes,
}

impl SendMessage {
    /// Sends `message` uncompressed to queue `queue_id` of its topic.
    pub fn for_message(
        producer_group: impl Into<String>,
        message: &Message,
        queue_id: i32,
        born_timestamp: i64,
    ) -> Self {
        Self {
            header: SendMessageHeader::for_message(
                producer_group,
                message,
                queue_id,
                born_timestamp,
            ),
            body: message.body.clone(),
        }
    }
}

impl Rpc for SendMessage {
    type Response = SendResult;

    fn command(&self) -> RemotingCommand {
        RemotingCommand::request(
            RequestCode::SendMessageV2,
            self.header.ext_fields(),
            self.body.clone(),
        )
    }

    fn parse(&self, response: RemotingCommand) -> Result<SendResult, RemotingError> {
        parse_send_response(&response)
    }
}

impl FromCommand for SendMessage {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        Ok(Self {
            header: SendMessageHeader::from_ext_fields(&command.ext_fields)?,
            body: command.body.clone(),
        })
    }
}

/// SEND_BATCH_MESSAGE (320): several messages of one topic in one record batch.
///
/// The batch body is encoded when the request is built, so an invalid batch (empty, mixed
/// topics, delayed messages) is rejected before it reaches a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendBatchMessage {
    /// The send header; `batch` is sent as `true` whatever it says. Its `properties` are the
    /// batch's own (Java: just `WAIT`).
    pub header: SendMessageHeader,
    /// The encoded batch.
    pub body: Bytes,
}

impl SendBatchMessage {
    /// A batch of `messages` under `header`.
    ///
    /// # Errors
    /// [`RemotingError::Encode`] from the batch encoder.
    pub fn new(header: SendMessageHeader, messages: &[Message]) -> Result<Self, RemotingError> {
        Ok(Self {
            header,
            body: encode_batch(messages)?,
        })
    }
}

impl Rpc for SendBatchMessage {
    type Response = SendResult;

    fn command(&self) -> RemotingCommand {
        let mut ext = self.header.ext_fields();
        ext.insert("m", true);
        RemotingCommand::request(RequestCode::SendBatchMessage, ext, self.body.clone())
    }

    fn parse(&self, response: RemotingCommand) -> Result<SendResult, RemotingError> {
        parse_send_response(&response)
    }
}

impl FromCommand for SendBatchMessage {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        Ok(Self {
            header: SendMessageHeader::from_ext_fields(&command.ext_fields)?,
            body: command.body.clone(),
        })
    }
}

/// CONSUMER_SEND_MSG_BACK (36): hands a failed message back to the broker that stores it,
/// which re-stores it in `%RETRY%<group>` with a delay, or in `%DLQ%<group>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSendMsgBack {
    /// The message's commit-log (physical) offset.
    pub offset: i64,
    /// Consumer group.
    pub group: String,
    /// 0 = broker picks `3 + reconsumeTimes`; n > 0 = that level; < 0 = straight to the DLQ.
    pub delay_level: i32,
    /// The message id the client saw (`UNIQ_KEY`, else the offset msgId).
    pub origin_msg_id: String,
    /// The real topic (after `%RETRY%` restore).
    pub origin_topic: String,
    /// DLQ threshold (Java default 16).
    pub max_reconsume_times: i32,
    /// 5.x `bname`.
    pub broker_name: Option<String>,
}

impl Rpc for ConsumerSendMsgBack {
    type Response = ();

    fn command(&self) -> RemotingCommand {
        let ext = ExtFields::new()
            .with("offset", self.offset)
            .with("group", &self.group)
            .with("delayLevel", self.delay_level)
            .with("originMsgId", &self.origin_msg_id)
            .with("originTopic", &self.origin_topic)
            // A primitive boolean in Java, so always present.
            .with("unitMode", false)
            .with("maxReconsumeTimes", self.max_reconsume_times)
            .with_opt("bname", self.broker_name.as_ref());
        RemotingCommand::request(RequestCode::ConsumerSendMsgBack, ext, Bytes::new())
    }

    fn parse(&self, response: RemotingCommand) -> Result<(), RemotingError> {
        expect_success(response).map(drop)
    }
}

impl FromCommand for ConsumerSendMsgBack {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        let ext = &command.ext_fields;
        Ok(Self {
            offset: ext.required_i64("offset")?,
            group: ext.str("group")?.to_owned(),
            delay_level: ext.required_i32("delayLevel")?,
            origin_msg_id: ext
                .optional_str("originMsgId")
                .unwrap_or_default()
                .to_owned(),
            origin_topic: ext
                .optional_str("originTopic")
                .unwrap_or_default()
                .to_owned(),
            // Absent means the group's `retryMaxTimes`, 16 unless configured otherwise.
            max_reconsume_times: ext.optional_i32("maxReconsumeTimes")?.unwrap_or(16),
            broker_name: ext.optional_str("bname").map(str::to_owned),
        })
    }
}
