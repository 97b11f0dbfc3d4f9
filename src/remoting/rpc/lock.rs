//! LOCK_BATCH_MQ (41) / UNLOCK_BATCH_MQ (42): queue locks for orderly consumption (section 4.9).
//! Both carry a JSON body and no ext fields; both go to the master owning the queues.

use bytes::Bytes;

use super::{expect_success, Rpc};
use crate::remoting::body::lock::{LockBatchRequest, LockBatchResponse, UnlockBatchRequest};
use crate::remoting::command::{ExtFields, RemotingCommand};
use crate::remoting::{MessageQueue, RemotingError, RequestCode};

/// Locks (or renews) queues; answers the subset now held by this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockBatchMq {
    /// Which queues, for which client and group.
    pub body: LockBatchRequest,
}

impl Rpc for LockBatchMq {
    type Response = Vec<MessageQueue>;

    fn command(&self) -> RemotingCommand {
        RemotingCommand::request(
            RequestCode::LockBatchMq,
            ExtFields::new(),
            Bytes::from(self.body.to_json()),
        )
    }

    fn parse(&self, response: RemotingCommand) -> Result<Vec<MessageQueue>, RemotingError> {
        let response = expect_success(response)?;
        Ok(LockBatchResponse::parse(&response.body)?.lock_ok_mq_set)
    }
}

/// Releases queue locks held by this client. Java sends it oneway when a queue is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockBatchMq {
    /// Which queues, for which client and group.
    pub body: UnlockBatchRequest,
}

impl Rpc for UnlockBatchMq {
    type Response = ();

    fn command(&self) -> RemotingCommand {
        RemotingCommand::request(
            RequestCode::UnlockBatchMq,
            ExtFields::new(),
            Bytes::from(self.body.to_json()),
        )
    }

    fn parse(&self, response: RemotingCommand) -> Result<(), RemotingError> {
        expect_success(response).map(drop)
    }
}
