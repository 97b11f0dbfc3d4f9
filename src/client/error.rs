//! The I/O layer's error type, [`ClientError`], and its classifier.
//!
//! Invariants:
//! - every variant that concerns a peer names its address, so a log line is enough to tell
//!   which broker or name server misbehaved;
//! - [`ClientError::is_retriable`] and [`ClientError::origin`] are total: callers decide retry
//!   versus give up from them and never from the message text (style.md rule 3).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::remoting::error::Excerpt;
use crate::remoting::{RemotingError, RequestCode, ResponseCode};

/// Where a failure comes from; tells callers whom to blame (and what to alert on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The network or the peer's process: refused, reset, timed out, closed.
    Network,
    /// The peer answered, with an error status.
    Broker,
    /// The peer sent bytes this crate cannot decode.
    Protocol,
    /// Our own configuration: addresses, TLS files.
    Config,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Network => "network",
            Self::Broker => "broker",
            Self::Protocol => "protocol",
            Self::Config => "config",
        })
    }
}

/// Why a connection stopped. Shared by every waiter of the connection, hence `Clone` (the
/// underlying errors sit behind `Arc`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the socket between frames.
    PeerClosed,
    /// The peer closed the socket in the middle of a frame.
    EofMidFrame {
        /// Bytes of the unfinished frame that had arrived.
        buffered: usize,
    },
    /// Reading or writing the socket failed.
    Io(Arc<io::Error>),
    /// The peer sent a frame that does not decode (bad length, bad header, ...).
    Protocol(Arc<RemotingError>),
    /// This side closed the connection ([`Connection::close`](super::Connection::close) or
    /// [`Pool::close_all`](super::Pool::close_all)).
    Local,
    /// The connection's task ended without closing it: it panicked, or its runtime shut down.
    Aborted,
    /// Nothing was read on the connection for `after` and no request awaited an answer
    /// ([`ConnectOptions::idle_timeout`](super::ConnectOptions::idle_timeout)). A request
    /// that meets this reason was never sent.
    Idle {
        /// How long the connection was quiet.
        after: Duration,
    },
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerClosed => f.write_str("closed by peer"),
            Self::EofMidFrame { buffered } => {
                write!(
                    f,
                    "closed by peer in the middle of a frame ({buffered} bytes buffered)"
                )
            }
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Protocol(e) => write!(f, "malformed frame: {e}"),
            Self::Local => f.write_str("closed locally"),
            Self::Aborted => f.write_str("connection task ended abnormally"),
            Self::Idle { after } => write!(f, "closed after {after:?} without traffic"),
        }
    }
}

/// Everything that can go wrong talking to a name server or a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connect (or TLS handshake) to `addr` failed or timed out.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Peer address.
        addr: String,
        /// What the OS (or TLS) said.
        source: io::Error,
    },
    /// A connect attempt to `addr` failed recently; the pool waits before trying again so a dead
    /// broker is not hammered.
    #[error("{addr} is unreachable; next connect attempt in {retry_in:?}")]
    Backoff {
        /// Peer address.
        addr: String,
        /// Time until the pool tries again.
        retry_in: Duration,
    },
    /// Writing to or reading from `addr` failed outside of a connection's task. (Failures inside
    /// a connection surface as [`ClientError::ConnectionClosed`] with [`CloseReason::Io`], since
    /// every waiter shares them; no code path of this module produces this variant today.)
    #[error("I/O error with {addr}: {source}")]
    Io {
        /// Peer address.
        addr: String,
        /// What the OS said.
        source: io::Error,
    },
    /// No response to a request within its timeout. The connection itself stays usable;
    /// [`super::Pool::call`] closes it when the peer sent nothing since the request went out.
    /// From a oneway request: no room in the connection's queue in time, so nothing was sent.
    #[error("{addr} did not answer {code} within {after:?}")]
    Timeout {
        /// Peer address.
        addr: String,
        /// The request that was not answered.
        code: RequestCode,
        /// The timeout that expired.
        after: Duration,
    },
    /// The connection to `addr` closed before the answer arrived (or was already closed).
    #[error("connection to {addr} closed: {reason}")]
    ConnectionClosed {
        /// Peer address.
        addr: String,
        /// Why it closed.
        reason: CloseReason,
    },
    /// The answer from `addr` arrived but does not decode into the expected response.
    #[error("malformed answer from {addr}: {source}")]
    Protocol {
        /// Peer address.
        addr: String,
        /// The decoding error.
        source: RemotingError,
    },
    /// A request could not be encoded (a value does not fit the header encoding).
    #[error("cannot encode a request to {addr}: {source}")]
    Encode {
        /// Peer address.
        addr: String,
        /// The encoding error.
        source: RemotingError,
    },
    /// `addr` answered with an error status.
    #[error("{addr} answered {code}: {}", Excerpt(remark.as_deref().unwrap_or("")))]
    Broker {
        /// Peer address.
        addr: String,
        /// The response code.
        code: ResponseCode,
        /// The peer's explanation, if any (never parse it).
        remark: Option<String>,
    },
    /// The name servers know no route for `topic` (`TOPIC_NOT_EXIST`).
    #[error("no route for topic `{topic}`")]
    NoRoute {
        /// The topic.
        topic: String,
    },
    /// No name server answered; `last` is the error from the last one tried.
    #[error("no name server answered (tried {}): {last}", addrs.join(";"))]
    NoNameServer {
        /// The name servers tried, in order.
        addrs: Vec<String>,
        /// The last failure.
        #[source]
        last: Box<Self>,
    },
    /// An address (`host:port`) in the configuration is invalid.
    #[error("invalid address `{addr}`: {reason}")]
    InvalidAddress {
        /// The address as configured.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The TLS configuration cannot be used (unreadable or malformed certificate or key files).
    #[error("TLS configuration: {what}{}: {reason}", path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
    Tls {
        /// Which part of the configuration (e.g. `client key`).
        what: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
        /// What went wrong.
        reason: String,
    },
}

impl ClientError {
    /// Whether the same call may succeed when tried again later (on a new connection if the old
    /// one closed). Configuration and decoding problems never do; broker statuses depend on
    /// their code.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Backoff { .. }
            | Self::Io { .. }
            | Self::Timeout { .. }
            | Self::ConnectionClosed { .. }
            | Self::NoNameServer { .. } => true,
            // A route appears once the topic is created (or, for `%RETRY%` topics, after the
            // first heartbeat), so "no route" is a state that passes.
            Self::NoRoute { .. } => true,
            Self::Broker { code, .. } => code.is_retriable(),
            Self::Protocol { .. }
            | Self::Encode { .. }
            | Self::InvalidAddress { .. }
            | Self::Tls { .. } => false,
        }
    }

    /// Where the failure comes from.
    pub fn origin(&self) -> Origin {
        match self {
            Self::Connect { .. }
            | Self::Backoff { .. }
            | Self::Io { .. }
            | Self::Timeout { .. }
            | Self::NoNameServer { .. } => Origin::Network,
            Self::ConnectionClosed { reason, .. } => match reason {
                CloseReason::Protocol(_) => Origin::Protocol,
                _ => Origin::Network,
            },
            Self::Broker { .. } | Self::NoRoute { .. } => Origin::Broker,
            Self::Protocol { .. } | Self::Encode { .. } => Origin::Protocol,
            Self::InvalidAddress { .. } | Self::Tls { .. } => Origin::Config,
        }
    }

    /// The `error_type` label of the consumer's error counter: `timeout` (no answer in time),
    /// `network`, `broker` (the peer answered with an error) or `other`. From the variant, not
    /// the text: a timeout's text names neither, and a broker's remark may name anything.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::NoNameServer { last, .. } => last.error_type(),
            _ => match self.origin() {
                Origin::Network => "network",
                Origin::Broker => "broker",
                Origin::Protocol | Origin::Config => "other",
            },
        }
    }

    /// The peer address this error is about, if it is about one peer.
    pub fn addr(&self) -> Option<&str> {
        match self {
            Self::Connect { addr, .. }
            | Self::Backoff { addr, .. }
            | Self::Io { addr, .. }
            | Self::Timeout { addr, .. }
            | Self::ConnectionClosed { addr, .. }
            | Self::Protocol { addr, .. }
            | Self::Encode { addr, .. }
            | Self::Broker { addr, .. } => Some(addr),
            Self::NoRoute { .. }
            | Self::NoNameServer { .. }
            | Self::InvalidAddress { .. }
            | Self::Tls { .. } => None,
        }
    }

    /// Maps an error from a typed response parser: a status answer becomes [`Self::Broker`],
    /// anything else is a decoding failure of that peer's answer.
    pub(crate) fn from_response(addr: &str, error: RemotingError) -> Self {
        match error {
            RemotingError::Status { code, remark } => Self::Broker {
                addr: addr.to_owned(),
                code,
                remark,
            },
            source => Self::Protocol {
                addr: addr.to_owned(),
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let closed = ClientError::ConnectionClosed {
            addr: "a:1".into(),
            reason: CloseReason::PeerClosed,
        };
        assert!(closed.is_retriable());
        assert_eq!(closed.origin(), Origin::Network);
        assert_eq!(closed.addr(), Some("a:1"));

        let malformed = ClientError::ConnectionClosed {
            addr: "a:1".into(),
            reason: CloseReason::Protocol(Arc::new(RemotingError::InvalidFrameLength {
                value: -1,
            })),
        };
        assert_eq!(malformed.origin(), Origin::Protocol);
        assert_eq!(malformed.error_type(), "other");
        assert_eq!(closed.error_type(), "network");
        let timeout = ClientError::Timeout {
            addr: "broker-a:10911".into(),
            code: RequestCode::PullMessage,
            after: Duration::from_secs(30),
        };
        assert_eq!(timeout.error_type(), "timeout");
        let none_answered = ClientError::NoNameServer {
            addrs: vec!["ns:9876".into()],
            last: Box::new(timeout),
        };
        assert_eq!(none_answered.error_type(), "timeout");
        let busy = ClientError::Broker {
            addr: "b:1".into(),
            code: ResponseCode::SystemBusy,
            remark: Some("[TIMEOUT_CLEAN_QUEUE]broker busy".into()),
        };
        assert_eq!(busy.error_type(), "broker");

        let busy = ClientError::from_response(
            "b:2",
            RemotingError::Status {
                code: ResponseCode::SystemBusy,
                remark: Some("[OVERLOAD]".into()),
            },
        );
        assert!(matches!(
            busy,
            ClientError::Broker { code: ResponseCode::SystemBusy, ref addr, .. } if addr == "b:2"
        ));
        assert!(busy.is_retriable());
        assert_eq!(busy.origin(), Origin::Broker);

        let unsupported = ClientError::from_response(
            "b:2",
            RemotingError::Status {
                code: ResponseCode::RequestCodeNotSupported,
                remark: None,
            },
        );
        assert!(!unsupported.is_retriable());

        let bad = ClientError::from_response("b:2", RemotingError::MissingField { field: "x" });
        assert!(matches!(bad, ClientError::Protocol { .. }));
        assert!(!bad.is_retriable());
        assert_eq!(bad.origin(), Origin::Protocol);

        let cfg = ClientError::InvalidAddress {
            addr: "x".into(),
            reason: "missing port",
        };
        assert_eq!(cfg.origin(), Origin::Config);
        assert!(!cfg.is_retriable());
    }

    #[test]
    fn messages_name_the_peer() {
        let e = ClientError::Timeout {
            addr: "10.0.0.1:10911".into(),
            code: RequestCode::PullMessage,
            after: Duration::from_secs(3),
        };
        let text = e.to_string();
        assert!(text.contains("10.0.0.1:10911"), "{text}");
        assert!(text.contains("PullMessage"), "{text}");
    }
}
