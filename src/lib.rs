//! rocketmq-webhook: a RocketMQ push-consumer engine that delivers messages to an HTTP endpoint.
//!
//! Layers, each depending only on the ones above it in this list:
//! - [`remoting`]: the pure wire protocol (bytes in, values out; no I/O, no clocks).
//! - [`client`]: connections, pool, name-server and broker calls.
//! - [`consumer`]: the push-consumer engine (rebalance, pull, process queues, offsets).
//! - [`webhook`], [`config`], [`admin`]: the daemon around the engine.

pub mod admin;
pub mod client;
pub mod config;
pub mod consumer;
pub mod daemon;
pub mod echo;
pub mod metrics;
pub mod remoting;
pub mod webhook;
