//! The RocketMQ remoting protocol, pure: bytes in, values out.
//!
//! Nothing in this module opens a socket, spawns a task or reads a clock; callers pass in
//! timestamps and randomness where the protocol needs them. That keeps every codec here
//! deterministic, property-testable and fuzzable (style.md rule 1).
//!
//! The layout follows rocketmq-remoting.md: [`frame`] (section 1.2), [`command`] (1.3-1.6),
//! [`code`] (2), [`rpc`] (typed request/response pairs of sections 3-5), [`body`] (JSON bodies),
//! [`message`] (section 6), [`filter`] (7.14), [`acl`] (9.1).

pub mod acl;
pub mod body;
pub mod code;
pub mod command;
pub mod error;
pub mod filter;
pub mod frame;
pub mod message;
pub mod queue;
pub mod rpc;

pub use acl::AclCredentials;
pub use code::{RequestCode, ResponseCode};
pub use command::{ExtFields, LanguageCode, RemotingCommand, SerializeType};
pub use error::RemotingError;
pub use frame::FrameDecoder;
pub use message::MessageExt;
pub use message::{Message, Properties};
pub use queue::MessageQueue;
pub use rpc::{BrokerRequest, Rpc};
