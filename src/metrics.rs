//! Every Prometheus metric of the daemon, declared once, on one registry that is passed down.
//!
//! Naming follows `rocketmq_webhook_<subsystem>_<name>_<unit>[_total]` with base units. Labels
//! are low-cardinality: `consumer_group`, `topic`, `outcome`, `status_class`, `error_type`,
//! `stage`; never a message id or queue id. Subsystems add to these collectors; nothing registers
//! a metric anywhere else.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Metric names, so docs and tests refer to the same strings as the code.
pub mod names {
    /// Messages handed to the handler, by outcome (success, retry, drop, later).
    pub const CONSUMER_MESSAGES_TOTAL: &str = "rocketmq_webhook_consumer_messages_total";
    /// Handler invocations (batches) and their duration.
    pub const CONSUMER_BATCH_DURATION_SECONDS: &str =
        "rocketmq_webhook_consumer_batch_duration_seconds";
    /// Messages per handler invocation.
    pub const CONSUMER_BATCH_SIZE_MESSAGES: &str = "rocketmq_webhook_consumer_batch_size_messages";
    /// Batches currently being handled.
    pub const CONSUMER_BATCHES_IN_FLIGHT: &str = "rocketmq_webhook_consumer_batches_in_flight";
    /// Messages pulled but not yet finished, summed over the subscription's process queues.
    pub const PROCESS_QUEUE_CACHED_MESSAGES: &str =
        "rocketmq_webhook_process_queue_cached_messages";
    /// Body bytes of those messages.
    pub const PROCESS_QUEUE_CACHED_BYTES: &str = "rocketmq_webhook_process_queue_cached_bytes";
    /// Times pulling paused because a process queue hit a flow-control limit, by limit.
    pub const PROCESS_QUEUE_FLOW_CONTROL_TOTAL: &str =
        "rocketmq_webhook_process_queue_flow_control_total";
    /// Messages between the committed offset and the broker's max offset.
    pub const CONSUMER_LAG_MESSAGES: &str = "rocketmq_webhook_consumer_lag_messages";
    /// Messages sent back to the broker, by target (`retry`, `dlq`).
    pub const CONSUMER_SEND_BACK_TOTAL: &str = "rocketmq_webhook_consumer_send_back_total";
    /// Messages given up locally (broadcasting has no DLQ).
    pub const CONSUMER_DROPPED_TOTAL: &str = "rocketmq_webhook_consumer_dropped_total";
    /// Offset commits sent to the broker or written to the local file.
    pub const OFFSET_COMMITS_TOTAL: &str = "rocketmq_webhook_offset_commits_total";
    /// Rebalances that changed the assignment.
    pub const REBALANCE_CHANGES_TOTAL: &str = "rocketmq_webhook_rebalance_changes_total";
    /// Queues currently assigned to this daemon.
    pub const REBALANCE_ASSIGNED_QUEUES: &str = "rocketmq_webhook_rebalance_assigned_queues";
    /// Orderly queue locks currently held.
    pub const REBALANCE_LOCKED_QUEUES: &str = "rocketmq_webhook_rebalance_locked_queues";
    /// Pull round trips (long polls included).
    pub const PULL_DURATION_SECONDS: &str = "rocketmq_webhook_pull_duration_seconds";
    /// Errors by type and stage (pull, send_back, offset, heartbeat, rebalance, route, lock).
    pub const CONSUMER_ERRORS_TOTAL: &str = "rocketmq_webhook_consumer_errors_total";
    /// Webhook HTTP requests by status class (2xx, 3xx, 4xx, 5xx, timeout, transport).
    pub const WEBHOOK_REQUESTS_TOTAL: &str = "rocketmq_webhook_webhook_requests_total";
    /// Webhook HTTP round trips (timeouts and transport errors included; requests not sent
    /// are not observed).
    pub const WEBHOOK_REQUEST_DURATION_SECONDS: &str =
        "rocketmq_webhook_webhook_request_duration_seconds";
    /// Webhook HTTP requests in flight.
    pub const WEBHOOK_REQUESTS_IN_FLIGHT: &str = "rocketmq_webhook_webhook_requests_in_flight";
    /// Webhook requests waiting for a place under `delivery.max_in_flight` (no labels: the
    /// cap is the whole process's).
    pub const WEBHOOK_REQUESTS_WAITING: &str = "rocketmq_webhook_webhook_requests_waiting";
    /// Circuit breaker state: 0 closed, 1 half-open, 2 open.
    pub const WEBHOOK_CIRCUIT_STATE: &str = "rocketmq_webhook_webhook_circuit_state";
    /// Seconds left of the endpoint's `Retry-After` pause (0 when there is none).
    pub const WEBHOOK_PAUSE_SECONDS: &str = "rocketmq_webhook_webhook_pause_seconds";
    /// Constant 1 with the version as a label.
    pub const BUILD_INFO: &str = "rocketmq_webhook_build_info";
}

/// Buckets of every latency histogram, seconds (the webhook's request histogram too).
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
const PULL_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 15.0, 20.0, 30.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

const GT: &[&str] = &["consumer_group", "topic"];

/// The daemon's collectors, registered on one [`Registry`].
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// See [`names::CONSUMER_MESSAGES_TOTAL`].
    pub messages: IntCounterVec,
    /// See [`names::CONSUMER_BATCH_DURATION_SECONDS`].
    pub batch_duration: HistogramVec,
    /// See [`names::CONSUMER_BATCH_SIZE_MESSAGES`].
    pub batch_size: HistogramVec,
    /// See [`names::CONSUMER_BATCHES_IN_FLIGHT`].
    pub batches_in_flight: IntGaugeVec,
    /// See [`names::PROCESS_QUEUE_CACHED_MESSAGES`].
    pub cached_messages: IntGaugeVec,
    /// See [`names::PROCESS_QUEUE_CACHED_BYTES`].
    pub cached_bytes: IntGaugeVec,
    /// See [`names::PROCESS_QUEUE_FLOW_CONTROL_TOTAL`].
    pub flow_control: IntCounterVec,
    /// See [`names::CONSUMER_LAG_MESSAGES`].
    pub lag: IntGaugeVec,
    /// See [`names::CONSUMER_SEND_BACK_TOTAL`].
    pub send_back: IntCounterVec,
    /// See [`names::CONSUMER_DROPPED_TOTAL`].
    pub dropped: IntCounterVec,
    /// See [`names::OFFSET_COMMITS_TOTAL`].
    pub offset_commits: IntCounterVec,
    /// See [`names::REBALANCE_CHANGES_TOTAL`].
    pub rebalances: IntCounterVec,
    /// See [`names::REBALANCE_ASSIGNED_QUEUES`].
    pub assigned_queues: IntGaugeVec,
    /// See [`names::REBALANCE_LOCKED_QUEUES`].
    pub locked_queues: IntGaugeVec,
    /// See [`names::PULL_DURATION_SECONDS`].
    pub pull_duration: HistogramVec,
    /// See [`names::CONSUMER_ERRORS_TOTAL`].
    pub errors: IntCounterVec,
}

impl Metrics {
    /// Creates every collector on a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let histogram = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("metric registered once");
            h
        };
        fn with(extra: &str) -> [&str; 3] {
            [GT[0], GT[1], extra]
        }
        let build = IntGaugeVec::new(
            Opts::new(names::BUILD_INFO, "Build information; always 1."),
            &["version"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build.clone()))
            .expect("metric registered once");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        Self {
            messages: counter(
                names::CONSUMER_MESSAGES_TOTAL,
                "Messages handled, by outcome.",
                &with("outcome"),
            ),
            batch_duration: histogram(
                names::CONSUMER_BATCH_DURATION_SECONDS,
                "Time the handler took per batch.",
                LATENCY_BUCKETS,
                GT,
            ),
            batch_size: histogram(
                names::CONSUMER_BATCH_SIZE_MESSAGES,
                "Messages per batch.",
                BATCH_BUCKETS,
                GT,
            ),
            batches_in_flight: gauge(
                names::CONSUMER_BATCHES_IN_FLIGHT,
                "Batches being handled now.",
                GT,
            ),
            cached_messages: gauge(
                names::PROCESS_QUEUE_CACHED_MESSAGES,
                "Messages pulled and not yet finished.",
                GT,
            ),
            cached_bytes: gauge(
                names::PROCESS_QUEUE_CACHED_BYTES,
                "Body bytes pulled and not yet finished.",
                GT,
            ),
            flow_control: counter(
                names::PROCESS_QUEUE_FLOW_CONTROL_TOTAL,
                "Pull pauses by flow-control limit.",
                &with("limit"),
            ),
            lag: gauge(
                names::CONSUMER_LAG_MESSAGES,
                "Messages between the committed offset and the broker's max offset.",
                GT,
            ),
            send_back: counter(
                names::CONSUMER_SEND_BACK_TOTAL,
                "Messages sent back to the broker, by target.",
                &with("target"),
            ),
            dropped: counter(
                names::CONSUMER_DROPPED_TOTAL,
                "Messages given up without a broker DLQ (broadcasting).",
                GT,
            ),
            offset_commits: counter(names::OFFSET_COMMITS_TOTAL, "Offset commits persisted.", GT),
            rebalances: counter(
                names::REBALANCE_CHANGES_TOTAL,
                "Rebalances that changed the assignment.",
                GT,
            ),
            assigned_queues: gauge(
                names::REBALANCE_ASSIGNED_QUEUES,
                "Queues assigned to this daemon.",
                GT,
            ),
            locked_queues: gauge(
                names::REBALANCE_LOCKED_QUEUES,
                "Orderly queue locks held.",
                GT,
            ),
            pull_duration: histogram(
                names::PULL_DURATION_SECONDS,
                "Pull round trips, long polls included.",
                PULL_BUCKETS,
                GT,
            ),
            errors: counter(
                names::CONSUMER_ERRORS_TOTAL,
                "Errors by type and stage.",
                &["consumer_group", "topic", "error_type", "stage"],
            ),
            registry,
        }
    }

    /// The registry to expose on `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every metric in the Prometheus text format.
    ///
    /// # Errors
    /// The encoder refused a family (one without metrics, which `gather` does not return).
    pub fn render(&self) -> prometheus::Result<String> {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subsystems a name may start with after the prefix; `build_info` is Prometheus' own
    /// convention and stands alone.
    const SUBSYSTEMS: &[&str] = &[
        "consumer",
        "process_queue",
        "offset",
        "rebalance",
        "pull",
        "webhook",
    ];

    /// Every name declared in [`names`], read from this file's source: the webhook's
    /// collectors are registered by the daemon, so no registry here holds them all.
    fn declared() -> Vec<&'static str> {
        let source = include_str!("metrics.rs");
        let module = &source[source.find("pub mod names {").expect("names module")..];
        let module = &module[..module.find("\n}\n").expect("end of names module")];
        let found: Vec<&str> = module
            .split('"')
            .filter(|part| part.starts_with("rocketmq_webhook_"))
            .collect();
        assert!(found.len() > 15, "only {} names found", found.len());
        found
    }

    #[test]
    fn every_metric_follows_the_naming_scheme() {
        for name in declared() {
            let rest = name
                .strip_prefix("rocketmq_webhook_")
                .unwrap_or_else(|| panic!("{name}: no rocketmq_webhook_ prefix"));
            if rest == "build_info" {
                continue;
            }
            let subsystem = SUBSYSTEMS
                .iter()
                .find(|s| rest.starts_with(&format!("{s}_")))
                .unwrap_or_else(|| panic!("{name}: no known subsystem"));
            let what = &rest[subsystem.len() + 1..];
            // `<subsystem>_total` says where it counts, not what.
            assert!(
                !what.is_empty() && what != "total",
                "{name}: nothing named after the subsystem"
            );
        }
    }

    #[test]
    fn consumer_counters_and_only_counters_end_in_total() {
        let m = Metrics::new();
        let gt = ["g", "t"];
        let gtx = ["g", "t", "x"];
        for counter in [&m.flow_control, &m.messages, &m.send_back] {
            counter.with_label_values(&gtx).inc();
        }
        for counter in [&m.dropped, &m.offset_commits, &m.rebalances] {
            counter.with_label_values(&gt).inc();
        }
        m.errors.with_label_values(&["g", "t", "x", "y"]).inc();
        for gauge in [
            &m.batches_in_flight,
            &m.cached_messages,
            &m.cached_bytes,
            &m.lag,
            &m.assigned_queues,
            &m.locked_queues,
        ] {
            gauge.with_label_values(&gt).set(1);
        }
        m.batch_duration.with_label_values(&gt).observe(0.1);
        m.batch_size.with_label_values(&gt).observe(1.0);
        m.pull_duration.with_label_values(&gt).observe(0.1);
        let text = m.render().unwrap();
        assert!(text.contains("rocketmq_webhook_consumer_messages_total{consumer_group=\"g\",outcome=\"x\",topic=\"t\"} 1"));
        let families = m.registry().gather();
        let declared = declared();
        for family in &families {
            let name = family.name();
            assert!(
                declared.contains(&name),
                "{name} is not declared in `names`"
            );
            let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(
                counter,
                name.ends_with("_total"),
                "{name}: `_total` iff a counter"
            );
        }
        // Every collector of the struct, plus `build_info`; the daemon registers the webhook's
        // (checked by its own test of the same rule).
        let webhook = declared.iter().filter(|n| n.contains("_webhook_webhook_"));
        assert_eq!(families.len() + webhook.count(), declared.len());
    }

    /// Operators learn the names from the README's table; a metric missing there is one
    /// nobody finds.
    #[test]
    fn every_metric_is_in_the_readme() {
        let readme = include_str!("../README.md");
        for name in declared() {
            assert!(
                readme.contains(&format!("`{name}")),
                "{name} is not in README.md"
            );
        }
    }
}
