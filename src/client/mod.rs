//! The I/O layer: connections, the connection pool, name servers and route snapshots.
//!
//! Built on the pure protocol in [`crate::remoting`]; this is the only layer that opens sockets.
//! - [`Connection`]: one task owns the socket; handles send typed requests
//!   ([`Connection::call`]) and get typed responses, matched by opaque; the first failure
//!   poisons the connection and fails every waiter (style.md rule 2).
//! - [`Pool`]: one connection per address, replaced when closed, with per-address reconnect
//!   backoff.
//! - [`NameServer`]: route look-ups with failover; [`RouteTable`] publishes [`Routes`]
//!   snapshots through `watch` (rule 6).
//! - [`Client`]: the client instance (id, pool, name servers, routes).
//! - [`ClientError`]: this layer's errors, classified by [`ClientError::is_retriable`] and
//!   [`ClientError::origin`] (rule 3).
//!
//! Every task started here is owned: the connection task by its handles (aborted when the last
//! one drops), broker-request handler tasks by their connection task (rule 4).

mod backoff;
mod connection;
mod error;
mod instance;
mod namesrv;
mod pool;
pub mod producer;
mod route;
mod tls;

#[cfg(test)]
mod tests;

pub(crate) use connection::Transport;
pub use connection::{BoxFuture, ConnectOptions, Connection, InboundHandler, NotSupported};
pub use error::{ClientError, CloseReason, Origin};
pub use instance::{Client, ClientConfig};
pub use namesrv::{NameServer, DEFAULT_NAMESRV_TIMEOUT};
pub use pool::Pool;
pub(crate) use route::MASTER_ID;
pub use route::{subscribe_queues, Lookup, PullAddr, RouteTable, Routes};
pub(crate) use tls::{read_certs, read_key};
pub use tls::{TlsConfig, TlsSetting};
