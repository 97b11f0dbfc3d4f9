//! The push-consumer engine: rebalance, per-queue pull workers, process queues with flow
//! control, offset stores, concurrent and orderly consumption, retry and DLQ. No HTTP here: the
//! engine hands batches to a [`Handler`].
//!
//! Entry point: [`Consumer::start`] with a [`Config`] (one subscription) and a [`Handler`].

pub mod allocate;
pub mod config;
mod engine;
pub mod error;
pub mod handler;
mod inbound;
pub mod offset_store;
pub mod process_queue;
mod ready;
mod rebalance;
pub mod stats;
mod supervise;
mod worker;

pub use allocate::AllocateStrategy;
pub use config::{CacheBudget, Config, ConsumeFrom, Filter, Limits, Model, OrderlyExhausted};
pub use engine::{Consumer, Prepared, Probe, Runtime};
pub use error::ConsumerError;
pub use handler::{Batch, ConsumeMode, Handler, Outcome};
pub use offset_store::{
    FileFault, Holder, HolderPhase, LocalFileStore, OffsetStoreError, OffsetTable, StoreLock,
};
pub use process_queue::{Cached, FlowControl, FlowLimits, ProcessQueue};
pub use stats::{QueueState, Stats, StatsSnapshot};
