//! UPDATE_AND_CREATE_TOPIC (17): topic creation for the test harness (section 4.11).

use bytes::Bytes;

use super::{expect_success, FromCommand, Rpc};
use crate::remoting::command::{ExtFields, RemotingCommand};
use crate::remoting::{RemotingError, RequestCode};

/// Creates or updates a topic on one broker, which then registers it with the name servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateAndCreateTopic {
    /// Topic name.
    pub topic: String,
    /// Readable queues (what consumers see).
    pub read_queue_nums: i32,
    /// Writable queues.
    pub write_queue_nums: i32,
    /// Permission bits: 4 read, 2 write (6 = read-write).
    pub perm: i32,
    /// Orderly topic.
    pub order: bool,
}

impl Rpc for UpdateAndCreateTopic {
    type Response = ();

    fn command(&self) -> RemotingCommand {
        let ext = ExtFields::new()
            .with("topic", &self.topic)
            .with("defaultTopic", super::DEFAULT_TOPIC)
            .with("readQueueNums", self.read_queue_nums)
            .with("writeQueueNums", self.write_queue_nums)
            .with("perm", self.perm)
            .with("topicFilterType", "SINGLE_TAG")
            .with("topicSysFlag", 0)
            .with("order", self.order);
        RemotingCommand::request(RequestCode::UpdateAndCreateTopic, ext, Bytes::new())
    }

    fn parse(&self, response: RemotingCommand) -> Result<(), RemotingError> {
        expect_success(response).map(drop)
    }
}

impl FromCommand for UpdateAndCreateTopic {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        let ext = &command.ext_fields;
        Ok(Self {
            topic: ext.str("topic")?.to_owned(),
            read_queue_nums: ext.required_i32("readQueueNums")?,
            write_queue_nums: ext.required_i32("writeQueueNums")?,
            perm: ext.required_i32("perm")?,
            order: ext.optional_bool("order")?.unwrap_or(false),
        })
    }
}
