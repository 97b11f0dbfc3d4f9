//! Requests the broker sends to the client on a connection the client opened (section 5), and
//! the response commands the client answers with.
//!
//! Oneway requests (NOTIFY_CONSUMER_IDS_CHANGED, RESET_CONSUMER_CLIENT_OFFSET) must never be
//! answered; the connection checks [`RemotingCommand::is_oneway`] before sending anything these
//! helpers build. Every response copies the request's opaque.

use bytes::Bytes;

use super::FromCommand;
use crate::remoting::body::consume_directly::ConsumeMessageDirectlyResult;
use crate::remoting::body::offset_table::{parse_offset_table, write_consumer_status};
use crate::remoting::body::running_info::ConsumerRunningInfo;
use crate::remoting::command::RemotingCommand;
use crate::remoting::message::decode_message;
use crate::remoting::{MessageExt, MessageQueue, RemotingError, RequestCode, ResponseCode};

/// A broker-initiated request, typed.
// Not boxing `ConsumeDirectly`'s message: these requests are rare (admin actions) and
// short-lived, so the enum's size does not matter and handlers get a plain `MessageExt`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerRequest {
    /// NOTIFY_CONSUMER_IDS_CHANGED (40, oneway): a member joined or left; rebalance now.
    NotifyConsumerIdsChanged {
        /// The group whose membership changed.
        consumer_group: String,
    },
    /// RESET_CONSUMER_CLIENT_OFFSET (220, oneway): move the group's offsets.
    ResetOffset {
        /// Topic being reset.
        topic: String,
        /// Consumer group.
        group: String,
        /// Requested time (ms), or -1 for "latest".
        timestamp: i64,
        /// Whether to move backwards too.
        is_force: bool,
        /// New offset per queue, in body order.
        offsets: Vec<(MessageQueue, i64)>,
    },
    /// GET_CONSUMER_STATUS_FROM_CLIENT (221): report this client's offsets for a topic.
    ConsumerStatus {
        /// Topic asked about.
        topic: String,
        /// Consumer group.
        group: String,
    },
    /// GET_CONSUMER_RUNNING_INFO (307): report the consumer's configuration and queues.
    RunningInfo {
        /// Consumer group.
        consumer_group: String,
        /// The client id the admin asked for.
        client_id: String,
        /// Whether a thread dump is wanted (`jstackEnable`).
        jstack: bool,
    },
    /// CONSUME_MESSAGE_DIRECTLY (309): run the listener once on a stored message, without
    /// committing or sending back.
    ConsumeDirectly {
        /// Consumer group.
        consumer_group: String,
        /// The client id the admin asked for.
        client_id: String,
        /// The message id the admin asked for.
        msg_id: String,
        /// Broker that stores the message (`brokerName`, or 5.x `bname`).
        broker_name: Option<String>,
        /// The decoded message.
        message: MessageExt,
    },
    /// Any other code: answer [`not_supported_response`] unless oneway.
    Other {
        /// The request code.
        code: RequestCode,
    },
}

impl BrokerRequest {
    /// Types a request received from a broker. Unknown codes become [`BrokerRequest::Other`].
    ///
    /// # Errors
    /// A missing or invalid field, or a malformed body, of a known request.
    pub fn parse(command: &RemotingCommand) -> Result<Self, RemotingError> {
        let ext = &command.ext_fields;
        Ok(match command.request_code() {
            RequestCode::NotifyConsumerIdsChanged => Self::NotifyConsumerIdsChanged {
                consumer_group: ext.str("consumerGroup")?.to_owned(),
            },
            RequestCode::ResetConsumerClientOffset => Self::ResetOffset {
                topic: ext.str("topic")?.to_owned(),
                group: ext.str("group")?.to_owned(),
                timestamp: ext.required_i64("timestamp")?,
                is_force: ext.optional_bool("isForce")?.unwrap_or(false),
                offsets: if command.body.is_empty() {
                    Vec::new()
                } else {
                    parse_offset_table(&command.body)?
                },
            },
            RequestCode::GetConsumerStatusFromClient => Self::ConsumerStatus {
                topic: ext.str("topic")?.to_owned(),
                group: ext.str("group")?.to_owned(),
            },
            RequestCode::GetConsumerRunningInfo => Self::RunningInfo {
                consumer_group: ext.str("consumerGroup")?.to_owned(),
                client_id: ext.optional_str("clientId").unwrap_or_default().to_owned(),
                jstack: ext.optional_bool("jstackEnable")?.unwrap_or(false),
            },
            RequestCode::ConsumeMessageDirectly => {
                // The first record only, nothing after it read (a body is one stored message),
                // and copied: the message waits for its handler up to the consume timeout, and
                // views would keep the connection's whole read buffer alive that long.
                let message = decode_message(&command.body)?;
                Self::ConsumeDirectly {
                    consumer_group: ext.str("consumerGroup")?.to_owned(),
                    client_id: ext.optional_str("clientId").unwrap_or_default().to_owned(),
                    msg_id: ext.optional_str("msgId").unwrap_or_default().to_owned(),
                    broker_name: ext
                        .optional_str("brokerName")
                        .or_else(|| ext.optional_str("bname"))
                        .map(str::to_owned),
                    message,
                }
            }
            code => Self::Other { code },
        })
    }
}

impl FromCommand for BrokerRequest {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        Self::parse(command)
    }
}

/// SUCCESS with `body`.
pub fn success_response(request: &RemotingCommand, body: impl Into<Bytes>) -> RemotingCommand {
    RemotingCommand::response_to(request, ResponseCode::Success, None).with_body(body)
}

/// SYSTEM_ERROR with `remark`.
pub fn system_error_response(
    request: &RemotingCommand,
    remark: impl Into<String>,
) -> RemotingCommand {
    RemotingCommand::response_to(request, ResponseCode::SystemError, Some(remark.into()))
}

/// REQUEST_CODE_NOT_SUPPORTED with the remark Java uses.
pub fn not_supported_response(request: &RemotingCommand) -> RemotingCommand {
    let remark = format!(" request type {} not supported", request.code);
    RemotingCommand::response_to(request, ResponseCode::RequestCodeNotSupported, Some(remark))
}

/// SYSTEM_ERROR for a group this client does not run, worded as Java words it.
pub fn group_not_found_response(request: &RemotingCommand, group: &str) -> RemotingCommand {
    system_error_response(
        request,
        format!("The Consumer Group <{group}> not exist in this consumer"),
    )
}

/// Answer to GET_CONSUMER_RUNNING_INFO.
pub fn running_info_response(
    request: &RemotingCommand,
    info: &ConsumerRunningInfo,
) -> RemotingCommand {
    success_response(request, info.to_json())
}

/// Answer to CONSUME_MESSAGE_DIRECTLY.
pub fn consume_directly_response(
    request: &RemotingCommand,
    result: &ConsumeMessageDirectlyResult,
) -> RemotingCommand {
    success_response(request, result.to_json())
}

/// Answer to GET_CONSUMER_STATUS_FROM_CLIENT: this client's offsets for the topic.
pub fn consumer_status_response(
    request: &RemotingCommand,
    offsets: &[(MessageQueue, i64)],
) -> RemotingCommand {
    success_response(request, write_consumer_status(offsets))
}
