//! The push-consumer engine: rebalance, per-queue pull workers, process queues with flow
//! control, offset stores, concurrent and orderly consumption, retry and DLQ. No HTTP here: the
//! engine hands batches to a [`Handler`].

pub mod allocate;
pub mod handler;
pub mod offset_store;
pub mod process_queue;

pub use allocate::AllocateStrategy;
pub use handler::{Batch, ConsumeMode, Handler, Outcome};
pub use offset_store::{FileFault, LocalFileStore, OffsetStoreError, OffsetTable};
pub use process_queue::{Cached, FlowControl, FlowLimits, ProcessQueue};
