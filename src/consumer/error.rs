//! The engine's error type.

use crate::client::ClientError;

/// What can stop the engine from starting or make one of its steps fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// A broker or name-server call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The broadcasting offset store could not be read or written, or another consumer holds
    /// its lock.
    #[error(transparent)]
    OffsetStore(#[from] super::offset_store::OffsetStoreError),
    /// The subscription cannot be started as configured.
    #[error("invalid consumer setting `{field}`: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No route (or no master address) is known for a broker the engine needs.
    #[error("no address known for broker `{broker}`")]
    NoBrokerAddress {
        /// Broker name.
        broker: String,
    },
}

impl ConsumerError {
    /// The `error_type` label of the error counter (see [`ClientError::error_type`]).
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Client(e) => e.error_type(),
            Self::OffsetStore(_) | Self::Invalid { .. } | Self::NoBrokerAddress { .. } => "other",
        }
    }

    /// Whether the failed step may succeed when retried later (the engine retries these on its
    /// own schedule; the others need an operator).
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Client(e) => e.is_retriable(),
            Self::OffsetStore(_) | Self::Invalid { .. } => false,
            Self::NoBrokerAddress { .. } => true,
        }
    }
}
