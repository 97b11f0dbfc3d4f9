//! Typed request/response pairs (rocketmq-remoting.md sections 3-5).
//!
//! Every call the client makes is a struct implementing [`Rpc`]: it knows its request code, how
//! to flatten itself into ext fields and body, and how to turn the peer's answer into a typed
//! value. Requests the broker sends us are parsed by [`BrokerRequest::parse`].
//!
//! Invariants:
//! - Ext-field keys are the exact Java field names of the doc; each request's
//!   [`FromCommand`] reads back exactly what its [`Rpc::command`] writes.
//! - `command()` leaves `opaque` at 0: the connection owns the correlation counter.
//! - A response code that a call does not map to a value becomes [`RemotingError::Status`]
//!   carrying the code and remark, so callers classify it with `is_retriable()`.

mod admin;
mod broker;
mod client;
mod lock;
mod offset;
mod pull;
mod send;

pub use admin::UpdateAndCreateTopic;
pub use broker::{
    consume_directly_response, consumer_status_response, group_not_found_response,
    not_supported_response, running_info_response, success_response, system_error_response,
    BrokerRequest,
};
pub use client::{GetConsumerList, GetRouteInfo, HeartBeat, UnregisterClient};
pub use lock::{LockBatchMq, UnlockBatchMq};
pub use offset::{
    Boundary, GetEarliestMsgStoreTime, GetMaxOffset, GetMinOffset, QueryConsumerOffset,
    SearchOffsetByTimestamp, UpdateConsumerOffset,
};
pub use pull::{PullMessage, PullResult, PullStatus, PullSysFlag};
pub use send::{
    ConsumerSendMsgBack, SendBatchMessage, SendMessage, SendMessageHeader, SendResult, SendStatus,
    DEFAULT_TOPIC, DEFAULT_TOPIC_QUEUE_NUMS,
};

use super::code::ResponseCode;
use super::command::RemotingCommand;
use super::error::RemotingError;

/// One client call: a typed request and the typed value its response maps to.
pub trait Rpc {
    /// What a successful (or otherwise mapped) response becomes.
    type Response;

    /// The request to send, with `opaque` 0 (the connection assigns it).
    fn command(&self) -> RemotingCommand;

    /// Maps the peer's response to this request.
    ///
    /// # Errors
    /// [`RemotingError::Status`] for a response code this call does not map, or a decoding
    /// error when the response's fields or body are malformed.
    fn parse(&self, response: RemotingCommand) -> Result<Self::Response, RemotingError>;
}

/// Reads a typed request back out of a command: the receiving side of [`Rpc::command`].
///
/// The client uses it for nothing on the hot path; it exists so fakes in component tests (and
/// round-trip property tests) see requests as typed values rather than raw ext fields.
pub trait FromCommand: Sized {
    /// Parses `command`'s ext fields (and body where the request has one).
    ///
    /// # Errors
    /// [`RemotingError::MissingField`] / [`RemotingError::InvalidField`] naming the field.
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError>;
}

/// The [`RemotingError::Status`] for a response this call does not map to a value.
fn status_error(response: &RemotingCommand) -> RemotingError {
    RemotingError::Status {
        code: response.response_code(),
        remark: response.remark.clone(),
    }
}

/// Passes a SUCCESS response through and turns anything else into [`RemotingError::Status`].
fn expect_success(response: RemotingCommand) -> Result<RemotingCommand, RemotingError> {
    if response.response_code() == ResponseCode::Success {
        Ok(response)
    } else {
        Err(status_error(&response))
    }
}

#[cfg(test)]
mod tests;
