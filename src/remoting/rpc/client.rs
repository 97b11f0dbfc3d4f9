//! Client bookkeeping calls: route lookup (section 3), heartbeat, unregister and the group's
//! member list (sections 4.1-4.3).

use bytes::Bytes;

use super::{expect_success, FromCommand, Rpc};
use crate::remoting::body::consumer_list::ConsumerList;
use crate::remoting::body::heartbeat::HeartbeatData;
use crate::remoting::body::route::TopicRouteData;
use crate::remoting::command::{ExtFields, RemotingCommand};
use crate::remoting::{RemotingError, RequestCode};

/// GET_ROUTEINFO_BY_TOPIC (105), sent to a name server. TOPIC_NOT_EXIST (17) is returned as
/// [`RemotingError::Status`]: no route is an error for every caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRouteInfo {
    /// Topic, including `%RETRY%<group>` and `%DLQ%<group>` topics.
    pub topic: String,
}

impl Rpc for GetRouteInfo {
    type Response = TopicRouteData;

    fn command(&self) -> RemotingCommand {
        let ext = ExtFields::new().with("topic", &self.topic);
        RemotingCommand::request(RequestCode::GetRouteInfoByTopic, ext, Bytes::new())
    }

    fn parse(&self, response: RemotingCommand) -> Result<TopicRouteData, RemotingError> {
        TopicRouteData::parse(&expect_success(response)?.body)
    }
}

impl FromCommand for GetRouteInfo {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        Ok(Self {
            topic: command.ext_fields.str("topic")?.to_owned(),
        })
    }
}

/// HEART_BEAT (34): registers this client's groups and subscriptions with a broker. The body
/// is the heartbeat JSON; there are no ext fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartBeat {
    /// What to register.
    pub data: HeartbeatData,
}

impl Rpc for HeartBeat {
    type Response = ();

    fn command(&self) -> RemotingCommand {
        RemotingCommand::request(
            RequestCode::HeartBeat,
            ExtFields::new(),
            Bytes::from(self.data.to_json()),
        )
    }

    fn parse(&self, response: RemotingCommand) -> Result<(), RemotingError> {
        expect_success(response).map(drop)
    }
}

/// UNREGISTER_CLIENT (35): leaves a group at shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnregisterClient {
    /// This client's id (`clientID`, capital ID on the wire).
    pub client_id: String,
    /// Producer group to leave; `None` for consumers.
    pub producer_group: Option<String>,
    /// Consumer group to leave.
    pub consumer_group: Option<String>,
}

impl Rpc for UnregisterClient {
    type Response = ();

    fn command(&self) -> RemotingCommand {
        let ext = ExtFields::new()
            .with("clientID", &self.client_id)
            .with_opt("producerGroup", self.producer_group.as_ref())
            .with_opt("consumerGroup", self.consumer_group.as_ref());
        RemotingCommand::request(RequestCode::UnregisterClient, ext, Bytes::new())
    }

    fn parse(&self, response: RemotingCommand) -> Result<(), RemotingError> {
        expect_success(response).map(drop)
    }
}

impl FromCommand for UnregisterClient {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        let ext = &command.ext_fields;
        Ok(Self {
            client_id: ext.str("clientID")?.to_owned(),
            producer_group: ext.optional_str("producerGroup").map(str::to_owned),
            consumer_group: ext.optional_str("consumerGroup").map(str::to_owned),
        })
    }
}

/// GET_CONSUMER_LIST_BY_GROUP (38): the client ids of a group's live members, in the broker's
/// (hash) order; callers sort before allocating. A group without members answers
/// SYSTEM_ERROR, returned as [`RemotingError::Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetConsumerList {
    /// Consumer group.
    pub consumer_group: String,
}

impl Rpc for GetConsumerList {
    type Response = Vec<String>;

    fn command(&self) -> RemotingCommand {
        let ext = ExtFields::new().with("consumerGroup", &self.consumer_group);
        RemotingCommand::request(RequestCode::GetConsumerListByGroup, ext, Bytes::new())
    }

    fn parse(&self, response: RemotingCommand) -> Result<Vec<String>, RemotingError> {
        let response = expect_success(response)?;
        Ok(ConsumerList::parse(&response.body)?.consumer_id_list)
    }
}

impl FromCommand for GetConsumerList {
    fn from_command(command: &RemotingCommand) -> Result<Self, RemotingError> {
        Ok(Self {
            consumer_group: command.ext_fields.str("consumerGroup")?.to_owned(),
        })
    }
}
