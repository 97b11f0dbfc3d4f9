//! The daemon: turns a validated [`Config`](crate::config::Config) into running
//! consumers (one per subscription, each delivering to its webhook), the admin server and
//! metrics, and shuts them down in order.
//!
//! Everything that can be wrong with the configuration is found in [`Plan::new`], before any
//! socket is opened, so bad configuration exits with code 2 and touches nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::client::{ClientConfig, ConnectOptions, TlsSetting};
use crate::config;
use crate::consumer::{self, CacheBudget, Consumer, ConsumerError, Prepared, Probe, Runtime};
use crate::metrics::{names, Metrics};
use crate::remoting::acl::AclCredentials;
use crate::remoting::MessageQueue;
use crate::webhook::stats::{LatencySnapshot, RequestClass};
use crate::webhook::{
    BearerToken, BreakerConfig, Format, SigningSecret, StatusClasses, StatusPattern, Transport,
    Webhook, WebhookError, WebhookOptions, WebhookTls,
};

/// A configuration problem found while planning (after the config module's own validation):
/// a file that does not parse, a value the library refuses. Like a [`config::ConfigError`], it
/// names the key and where its value came from.
#[derive(Debug, thiserror::Error)]
#[error("`{key}` ({origin}): {reason}")]
pub struct PlanError {
    /// The configuration key, e.g. `subscriptions[0].webhook.tls.ca_file`.
    pub key: String,
    /// Where the key's value came from.
    pub origin: config::Origin,
    /// What is wrong.
    pub reason: String,
}

impl PlanError {
    /// The error at `dotted`, a key path such as `subscriptions.0.webhook.tls.ca_file`.
    fn at(cfg: &config::Config, dotted: &str, reason: impl Into<String>) -> Self {
        Self {
            key: config::display_key(dotted),
            origin: cfg.origin(dotted),
            reason: reason.into(),
        }
    }
}

/// One subscription, ready to start.
#[derive(Debug)]
pub struct PlannedSubscription {
    /// The subscription's name (for logs and `/status`).
    pub name: String,
    /// Its client: each subscription has its own connections and client id, because brokers
    /// bind a connection to one client id and the Rust broker closes the older connection when
    /// the same id registers again from another one.
    pub client: ClientConfig,
    /// Engine settings.
    pub consumer: consumer::Config,
    /// The webhook handler.
    pub webhook: Webhook,
}

/// Everything the daemon will run, built without I/O.
#[derive(Debug)]
pub struct Plan {
    /// Client settings shared by all subscriptions.
    pub client: ClientConfig,
    /// The subscriptions.
    pub subscriptions: Vec<PlannedSubscription>,
    /// Admin listen address.
    pub admin: std::net::SocketAddr,
    /// Shutdown drain budget.
    pub grace: Duration,
    /// The process-wide cache limits, shared by every subscription's consumer.
    pub cache_budget: Arc<CacheBudget>,
    /// The webhook connections and the process-wide cap on requests in flight
    /// (`delivery.max_in_flight`), shared by every subscription's webhook.
    pub transport: Transport,
}

impl Plan {
    /// Maps the configuration onto engine and webhook settings.
    ///
    /// # Errors
    /// A webhook that cannot be built (URL, header or secret the HTTP layer rejects), or a
    /// broker TLS file that cannot be read or parsed.
    pub fn new(cfg: &config::Config) -> Result<Self, PlanError> {
        let acl = match (&cfg.client.access_key, &cfg.client.secret_key) {
            (Some(ak), Some(sk)) => Some(AclCredentials::new(ak.clone(), sk.expose().to_owned())),
            _ => None,
        };
        let tls = cfg.client.tls.enabled.then(|| {
            let t = &cfg.client.tls;
            crate::client::TlsConfig {
                ca_file: t.ca_file.clone(),
                client_cert: t.cert_file.clone(),
                client_key: t.key_file.clone(),
                insecure_skip_verify: t.insecure_skip_verify,
                server_name: t.server_name.clone(),
            }
        });
        if let Some(tls) = &tls {
            // Client::new builds the connector only once the consumers start; a file that does
            // not parse must instead be a configuration error naming its key, found by
            // check-config too.
            tls.check().map_err(|(setting, e)| {
                PlanError::at(cfg, &tls_key("client.tls", setting), e.to_string())
            })?;
        }
        let connect = ConnectOptions {
            acl,
            tls,
            ..ConnectOptions::default()
        };
        let client = ClientConfig {
            namesrv_addr: cfg.namesrv_addr.addrs().join(";"),
            connect,
            instance_name: Some(cfg.resolved_instance_name()),
            client_ip: None,
            namesrv_timeout: Some(cfg.client.rpc_timeout),
        };
        // Filled in at load time; the fallback only serves a tree built by hand.
        let transport = Transport::new(
            cfg.delivery
                .max_in_flight
                .unwrap_or(config::DEFAULT_MAX_IN_FLIGHT) as usize,
        );
        let mut subscriptions = Vec::new();
        for (i, sub) in cfg.subscriptions.iter().enumerate() {
            let key = |k: &str| format!("subscriptions.{i}.{k}");
            // `enable_auto_recovery: false` is reported by `Config::load` as a warning: this
            // runs before logging is set up, where a log line would vanish.
            let consumer = consumer_config(cfg, sub, i)?;
            let mut options = webhook_options(cfg, sub, &key)?;
            options.transport = Some(transport.clone());
            let webhook = Webhook::new(options).map_err(|e| match e {
                // The library names its own fields; the operator needs the configuration's.
                WebhookError::Tls {
                    setting,
                    path,
                    reason,
                } => PlanError::at(
                    cfg,
                    &tls_key(&key("webhook.tls"), Some(setting)),
                    format!("{path}: {reason}"),
                ),
                e @ WebhookError::InvalidUrl { .. } => {
                    PlanError::at(cfg, &key("webhook.url"), e.to_string())
                }
                other => PlanError::at(cfg, &key("webhook"), other.to_string()),
            })?;
            let mut sub_client = client.clone();
            if cfg.subscriptions.len() > 1 {
                // Distinct, stable ids: `ip@<instance>-<index>`.
                sub_client.instance_name = Some(format!("{}-{i}", cfg.resolved_instance_name()));
            }
            subscriptions.push(PlannedSubscription {
                client: sub_client,
                name: sub.name.clone(),
                consumer,
                webhook,
            });
        }
        Ok(Self {
            client,
            subscriptions,
            admin: cfg.admin.listen,
            grace: cfg.shutdown.grace_period,
            cache_budget: Arc::new(CacheBudget::new(
                cfg.cache.max_count as usize,
                cfg.cache.max_size.as_u64(),
            )),
            transport,
        })
    }
}

/// The configuration key of a TLS setting in the `tls` section at `section` (`client.tls`, or
/// a subscription's `webhook.tls`): both name their files alike.
fn tls_key(section: &str, setting: Option<TlsSetting>) -> String {
    let field = match setting {
        Some(TlsSetting::CaFile) => "ca_file",
        Some(TlsSetting::ClientCert) => "cert_file",
        Some(TlsSetting::ClientKey) => "key_file",
        Some(TlsSetting::ServerName) => "server_name",
        // No setting causes it (the TLS library's own protocol defaults).
        None => return section.to_owned(),
    };
    format!("{section}.{field}")
}

fn consumer_config(
    cfg: &config::Config,
    sub: &config::Subscription,
    index: usize,
) -> Result<consumer::Config, PlanError> {
    let mut c = consumer::Config::new(sub.group.clone(), sub.topic.clone());
    c.filter = match sub.expression_type {
        config::ExpressionType::Tag => consumer::Filter::Tag(sub.expression.clone()),
        config::ExpressionType::Sql92 => consumer::Filter::Sql92(sub.expression.clone()),
    };
    c.model = match sub.message_model {
        config::MessageModel::Clustering => consumer::Model::Clustering,
        config::MessageModel::Broadcasting => consumer::Model::Broadcasting,
    };
    c.mode = sub.consume_mode;
    c.consume_from = match sub.consume_from {
        config::ConsumeFrom::LastOffset => consumer::ConsumeFrom::LastOffset,
        config::ConsumeFrom::FirstOffset => consumer::ConsumeFrom::FirstOffset,
        config::ConsumeFrom::Timestamp => {
            consumer::ConsumeFrom::Timestamp(match &sub.consume_timestamp {
                Some(ts) => ts.unix_millis() as i64,
                // Java's default: half an hour ago.
                None => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64 - 30 * 60 * 1000)
                    .unwrap_or(0),
            })
        }
    };
    c.strategy = match sub.allocate_strategy {
        config::AllocateStrategy::Average => consumer::AllocateStrategy::Average,
        config::AllocateStrategy::AverageByCircle => consumer::AllocateStrategy::AverageByCircle,
        config::AllocateStrategy::ConsistentHash => consumer::AllocateStrategy::ConsistentHash {
            virtual_nodes: consumer::allocate::DEFAULT_VIRTUAL_NODES,
        },
        config::AllocateStrategy::Config => {
            let mut queues: Vec<MessageQueue> = Vec::new();
            for q in &sub.allocate_queues {
                let id = i32::try_from(q.queue_id).map_err(|_| {
                    PlanError::at(
                        cfg,
                        &format!("subscriptions.{index}.allocate_queues"),
                        format!("queue id {} is out of range", q.queue_id),
                    )
                })?;
                // The retry topic is shared out among the members (see AllocateStrategy::Config).
                queues.push(MessageQueue::new(
                    sub.topic.clone(),
                    q.broker_name.clone(),
                    id,
                ));
            }
            consumer::AllocateStrategy::Config(queues)
        }
    };
    c.consume_batch_size = sub.consume_batch_size.max(1) as usize;
    c.pull_batch_size = sub.pull_batch_size as i32;
    c.consume_concurrency = sub.consume_thread_max.max(1) as usize;
    c.consume_timeout = sub.consume_timeout;
    c.max_reconsume_times = sub.max_reconsume_times.min(i32::MAX as u32) as i32;
    c.limits = consumer::Limits {
        max_cached_messages: sub.max_cache_count_per_queue as usize,
        max_cached_bytes: sub.max_cache_size_per_queue.as_u64(),
        max_cached_messages_per_subscription: sub.max_cache_count_per_subscription as usize,
        max_cached_bytes_per_subscription: sub.max_cache_size_per_subscription.as_u64(),
        max_span: u64::from(sub.max_span),
    };
    c.pull_interval = sub.pull_interval;
    c.persist_interval = sub.persist_interval;
    c.offset_store_dir = sub.offset_store_path.clone();
    // The configured name only, never the PID default: broadcasting offsets must be found
    // again after a restart (groups are unique within a daemon, so no per-subscription suffix).
    c.offset_store_instance = cfg.instance_name.clone();
    c.suspend_time = sub.suspend_current_queue_time;
    c.lock_ttl = sub.lock_expire_time;
    // Java renews every 20 s a lock it counts as held for 30 s. A shorter lifetime keeps that
    // ratio: renewed only every 20 s, a lock of 15 s would lapse for 5 s of every 20.
    c.lock_renew_interval = (sub.lock_expire_time * 2 / 3).min(c.lock_renew_interval);
    c.orderly_exhausted = match sub.orderly_dlq_policy {
        config::OrderlyDlqPolicy::Dlq => consumer::OrderlyExhausted::DeadLetter,
        config::OrderlyDlqPolicy::Block => consumer::OrderlyExhausted::Block,
    };
    c.heartbeat_interval = cfg.client.heartbeat_interval;
    c.rebalance_interval = cfg.client.rebalance_interval;
    c.route_interval = cfg.client.poll_name_server_interval;
    c.rpc_timeout = cfg.client.rpc_timeout;
    c.drain_timeout = drain_timeout(cfg.shutdown.grace_period, cfg.client.rpc_timeout);
    // Long enough for a daemon of the same configuration to drain and exit (the grace period,
    // the 5 s the daemon adds, unregistering) when a rolling restart overlaps the two.
    c.offset_lock_wait = cfg.shutdown.grace_period + Duration::from_secs(30);
    Ok(c)
}

/// The time in-flight deliveries get at shutdown (and when a queue is revoked): the grace
/// period less room for what each worker does after its drain, a persist and an orderly unlock
/// of up to `rpc_timeout` each, so the whole sequence fits in `shutdown.grace_period` as
/// documented. A full-length drain used to leave those calls the 5 s the daemon adds to the
/// grace period, less than the two of them may take. At least half the grace period, so a short
/// grace period is still mostly spent delivering.
fn drain_timeout(grace: Duration, rpc_timeout: Duration) -> Duration {
    grace.saturating_sub(rpc_timeout * 2).max(grace / 2)
}

fn webhook_options(
    cfg: &config::Config,
    sub: &config::Subscription,
    key: &dyn Fn(&str) -> String,
) -> Result<WebhookOptions, PlanError> {
    let w = &sub.webhook;
    let mut o = WebhookOptions::new(w.url.clone());
    o.method = match w.method {
        config::HttpMethod::Post => reqwest::Method::POST,
        config::HttpMethod::Put => reqwest::Method::PUT,
        config::HttpMethod::Patch => reqwest::Method::PATCH,
    };
    o.format = match w.format {
        config::WebhookFormat::Json => Format::Json,
        config::WebhookFormat::Raw => Format::Raw,
        config::WebhookFormat::CloudEvents => Format::CloudEvents,
        config::WebhookFormat::CloudEventsBatch => Format::CloudEventsBatch,
    };
    o.timeout = w.timeout;
    o.concurrency = sub.webhook_concurrency().max(1) as usize;
    o.headers = w
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(token) = &w.bearer_token {
        o.bearer_token = Some(
            BearerToken::new(token.expose())
                .map_err(|e| PlanError::at(cfg, &key("webhook.bearer_token"), e.to_string()))?,
        );
    }
    if let Some(secret) = &w.signing_secret {
        o.signing_secret = Some(
            SigningSecret::parse(secret.expose())
                .map_err(|e| PlanError::at(cfg, &key("webhook.signing_secret"), e.to_string()))?,
        );
    }
    let pattern = |c: &config::StatusClass| -> StatusPattern {
        if c.is_hundred() {
            StatusPattern::Class((c_first_digit(c)) as u8)
        } else {
            StatusPattern::Code(c_first_code(c))
        }
    };
    o.status_classes = StatusClasses {
        success: StatusClasses::default().success,
        retry: w.retry_codes.iter().map(pattern).collect(),
        drop: w.drop_codes.iter().map(pattern).collect(),
    };
    o.retry_after_cap = w.retry_after_cap;
    o.tls = WebhookTls {
        ca_file: w.tls.ca_file.clone(),
        client_cert: w.tls.cert_file.clone(),
        client_key: w.tls.key_file.clone(),
        insecure_skip_verify: w.tls.insecure_skip_verify,
    };
    o.breaker = BreakerConfig {
        failure_threshold: w.circuit_breaker.failure_threshold,
        open_duration: w.circuit_breaker.open_duration,
        max_open_duration: w.circuit_breaker.max_open_duration,
    };
    Ok(o)
}

/// The lowest code a status class contains (`404` for "404", `500` for "5xx").
fn c_first_code(c: &config::StatusClass) -> u16 {
    (100..600).find(|code| c.contains(*code)).unwrap_or(0)
}

fn c_first_digit(c: &config::StatusClass) -> u16 {
    c_first_code(c) / 100
}

/// Exposes the webhooks' own counters (requests by status class, circuit state) on the
/// registry at scrape time, so the webhook module needs no Prometheus dependency.
#[derive(Debug)]
struct WebhookCollector {
    /// Only for [`Collector::desc`]; never written. Each scrape fills fresh families instead:
    /// the registry gathers under a read lock, so two scrapes can collect at once, and a
    /// shared vector reset and refilled by both read 0, twice or three times the true count.
    descs: WebhookFamilies,
    webhooks: Vec<(String, String, Webhook)>,
    transport: Transport,
}

/// The metric families of [`WebhookCollector`], empty when built.
#[derive(Debug)]
struct WebhookFamilies {
    requests: IntCounterVec,
    /// Built by hand at each scrape from the webhook's own buckets, so only described here.
    duration: Desc,
    circuit: IntGaugeVec,
    pause: GaugeVec,
    in_flight: IntGaugeVec,
    waiting: IntGauge,
}

const DURATION_HELP: &str =
    "Webhook HTTP round trips (timeouts and transport errors included), seconds.";

impl WebhookFamilies {
    fn new() -> Self {
        let labels = ["consumer_group", "topic"];
        Self {
            requests: IntCounterVec::new(
                Opts::new(
                    names::WEBHOOK_REQUESTS_TOTAL,
                    "Webhook requests by status class.",
                ),
                &["consumer_group", "topic", "status_class"],
            )
            .expect("valid metric"),
            duration: Desc::new(
                names::WEBHOOK_REQUEST_DURATION_SECONDS.to_owned(),
                DURATION_HELP.to_owned(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                std::collections::HashMap::new(),
            )
            .expect("valid metric"),
            circuit: IntGaugeVec::new(
                Opts::new(
                    names::WEBHOOK_CIRCUIT_STATE,
                    "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                ),
                &labels,
            )
            .expect("valid metric"),
            pause: GaugeVec::new(
                Opts::new(
                    names::WEBHOOK_PAUSE_SECONDS,
                    "Seconds left of the endpoint's Retry-After pause (0 when there is none).",
                ),
                &labels,
            )
            .expect("valid metric"),
            in_flight: IntGaugeVec::new(
                Opts::new(
                    names::WEBHOOK_REQUESTS_IN_FLIGHT,
                    "Webhook requests in flight.",
                ),
                &labels,
            )
            .expect("valid metric"),
            waiting: IntGauge::new(
                names::WEBHOOK_REQUESTS_WAITING,
                "Webhook requests waiting for a place under delivery.max_in_flight.",
            )
            .expect("valid metric"),
        }
    }
}

impl WebhookCollector {
    fn new(webhooks: Vec<(String, String, Webhook)>, transport: Transport) -> Self {
        Self {
            descs: WebhookFamilies::new(),
            webhooks,
            transport,
        }
    }
}

impl Collector for WebhookCollector {
    fn desc(&self) -> Vec<&Desc> {
        let f = &self.descs;
        let mut d = f.requests.desc();
        d.push(&f.duration);
        d.extend(f.circuit.desc());
        d.extend(f.pause.desc());
        d.extend(f.in_flight.desc());
        d.extend(f.waiting.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = WebhookFamilies::new();
        let mut durations = Vec::with_capacity(self.webhooks.len());
        for (group, topic, hook) in &self.webhooks {
            let stats = hook.stats();
            durations.push(duration_metric(group, topic, &stats.latency()));
            for class in RequestClass::ALL {
                let n = stats.requests(class);
                if n > 0 {
                    f.requests
                        .with_label_values(&[group, topic, class.as_str()])
                        .inc_by(n);
                }
            }
            f.circuit
                .with_label_values(&[group, topic])
                .set(hook.circuit_state().gauge_value());
            f.pause
                .with_label_values(&[group, topic])
                .set(hook.paused_for().as_secs_f64());
            f.in_flight
                .with_label_values(&[group, topic])
                .set(stats.in_flight());
        }
        f.waiting
            .set(i64::try_from(self.transport.waiting()).unwrap_or(i64::MAX));
        let mut out = f.requests.collect();
        let mut duration = MetricFamily::default();
        duration.set_name(names::WEBHOOK_REQUEST_DURATION_SECONDS.to_owned());
        duration.set_help(DURATION_HELP.to_owned());
        duration.set_field_type(MetricType::HISTOGRAM);
        duration.set_metric(durations);
        out.push(duration);
        out.extend(f.circuit.collect());
        out.extend(f.pause.collect());
        out.extend(f.in_flight.collect());
        out.extend(f.waiting.collect());
        out
    }
}

/// One webhook's request histogram as a Prometheus sample.
fn duration_metric(group: &str, topic: &str, latency: &LatencySnapshot) -> Metric {
    let label = |name: &str, value: &str| {
        let mut pair = LabelPair::default();
        pair.set_name(name.to_owned());
        pair.set_value(value.to_owned());
        pair
    };
    let buckets = latency
        .buckets
        .iter()
        .map(|&(bound, count)| {
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(bound);
            bucket.set_cumulative_count(count);
            bucket
        })
        .collect();
    let mut histogram = Histogram::default();
    histogram.set_sample_count(latency.count);
    histogram.set_sample_sum(latency.sum_seconds);
    histogram.set_bucket(buckets);
    let mut metric = Metric::default();
    // Sorted by name, as the encoder expects.
    metric.set_label(vec![label("consumer_group", group), label("topic", topic)]);
    metric.set_histogram(histogram);
    metric
}

/// One started subscription, as `/status` shows it.
struct SubscriptionStatus {
    name: String,
    config: consumer::Config,
    probe: Probe,
    webhook: Webhook,
}

/// Where the daemon is in its life, published by [`consume`] to the admin server.
#[derive(Clone)]
enum Phase {
    /// Subscriptions are being prepared (which may wait for a broadcasting offsets lock).
    Starting,
    /// Every subscription has started.
    Running(Arc<[SubscriptionStatus]>),
    /// The drain has begun: the daemon takes no new work, so it is not ready (a load balancer
    /// or orchestrator should stop counting on it).
    Stopping(Arc<[SubscriptionStatus]>),
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running(_) => "running",
            Self::Stopping(_) => "stopping",
        }
    }

    fn subscriptions(&self) -> &[SubscriptionStatus] {
        match self {
            Self::Starting => &[],
            Self::Running(subs) | Self::Stopping(subs) => subs,
        }
    }

    fn ready(&self) -> bool {
        match self {
            Self::Running(subs) => subs.iter().all(|s| s.probe.is_ready()),
            Self::Starting | Self::Stopping(_) => false,
        }
    }
}

/// `/status` and `/readyz` over the daemon's phase and its consumers.
struct DaemonStatus {
    phase: watch::Receiver<Phase>,
    cache_budget: Arc<CacheBudget>,
    transport: Transport,
}

impl crate::admin::StatusSource for DaemonStatus {
    fn ready(&self) -> bool {
        self.phase.borrow().ready()
    }

    fn failure(&self) -> Option<String> {
        first_failure(self.phase.borrow().subscriptions()).map(|e| e.to_string())
    }

    fn status(&self) -> serde_json::Value {
        let phase = self.phase.borrow().clone();
        let subs: Vec<serde_json::Value> = phase
            .subscriptions()
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "group": s.config.group,
                    "topic": s.config.topic,
                    "client_id": s.probe.client_id(),
                    "mode": s.config.mode,
                    "model": format!("{:?}", s.config.model).to_uppercase(),
                    "ready": s.probe.is_ready(),
                    "failure": s.probe.failure(),
                    "circuit": s.webhook.circuit_state().as_str(),
                    "pause_left_ms": u64::try_from(s.webhook.paused_for().as_millis())
                        .unwrap_or(u64::MAX),
                    "stats": s.probe.stats(),
                })
            })
            .collect();
        let budget = &self.cache_budget;
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "state": phase.name(),
            // From the same copy as `state`: read again, a change in between could show
            // `starting` and ready together.
            "ready": phase.ready(),
            "cache": {
                "max_messages": budget.max_messages(),
                "max_bytes": budget.max_bytes(),
                "queues": budget.queues(),
                "taken": budget.taken(),
            },
            "delivery": {
                "max_in_flight": self.transport.capacity(),
                "in_flight": self.transport.in_flight(),
                "waiting": self.transport.waiting(),
            },
            "subscriptions": subs,
        })
    }
}

/// How long the drain of every subscription may run past the grace period before it is
/// abandoned: each consumer's own steps (drain, persist, unlock, unregister) aim to end within
/// the grace period, and this is the margin for those that run late.
const DRAIN_OVERRUN: Duration = Duration::from_secs(5);

/// How long the exit waits, once the daemon has stopped, for blocking work still running (a
/// lock, load or save of broadcasting offsets on a volume that hangs, a DNS lookup). What it
/// leaves undone is safe to lose: an unsaved offset means redelivery.
pub const BLOCKING_SHUTDOWN: Duration = Duration::from_secs(10);

/// The longest the process takes to exit after the shutdown signal beyond
/// `shutdown.grace_period`: the drain's overrun, then the admin server's connections, then the
/// blocking work (18 s). The README states this bound and `scripts/check-deploy.sh` holds
/// `terminationGracePeriodSeconds` to it.
pub const EXIT_AFTER_GRACE: Duration = DRAIN_OVERRUN
    .saturating_add(crate::admin::STOP_TIMEOUT)
    .saturating_add(BLOCKING_SHUTDOWN);

/// Why [`run`] ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The admin server cannot listen on its address.
    #[error("cannot bind the admin server to {addr} (admin.listen): {source}")]
    AdminBind {
        /// `admin.listen`.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The webhook collector cannot join the metrics registry.
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A subscription cannot start: a bad setting, or an unusable broadcasting offset store.
    #[error(transparent)]
    Start(#[from] ConsumerError),
    /// A running subscription failed: one of its consumer's own tasks panicked or ended (see
    /// [`Probe::failed`]). The other subscriptions were drained.
    #[error("subscription {subscription}: {reason}")]
    SubscriptionFailed {
        /// The subscription's name.
        subscription: String,
        /// What failed, e.g. `the heartbeat task panicked: <message>`.
        reason: String,
    },
}

impl DaemonError {
    /// Whether running the daemon again may succeed without an operator: a failed
    /// subscription (a restart starts it afresh) and an offset store whose lock another
    /// process still holds may; a bad setting or an address in use needs a change first.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::SubscriptionFailed { .. } => true,
            Self::Start(e) => e.is_retriable(),
            Self::AdminBind { .. } | Self::Metrics(_) => false,
        }
    }
}

/// Runs the plan until `shutdown` completes or a subscription fails, then drains within the
/// grace period.
///
/// # Errors
/// The admin address cannot be bound; a consumer cannot start (an offset store that cannot
/// be written or read, or is still locked by another process after the wait); or a
/// subscription failed (one of its consumer's own tasks panicked or ended, see
/// [`Probe::failed`]).
pub async fn run(
    plan: Plan,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let metrics = Metrics::new();
    let collector = WebhookCollector::new(
        plan.subscriptions
            .iter()
            .map(|s| {
                (
                    s.consumer.group.clone(),
                    s.consumer.topic.clone(),
                    s.webhook.clone(),
                )
            })
            .collect(),
        plan.transport.clone(),
    );
    metrics.registry().register(Box::new(collector))?;

    // Bound before any consumer starts: a port in use (or one a non-root user may not bind) is
    // reported before anything connects to RocketMQ.
    let admin_listener = tokio::net::TcpListener::bind(plan.admin)
        .await
        .map_err(|source| DaemonError::AdminBind {
            addr: plan.admin,
            source,
        })?;
    // Served from the start: while the subscriptions are prepared (a wait for a broadcasting
    // offsets lock can take a minute), /healthz answers, so liveness probes do not kill a
    // daemon that is only waiting, /status says "starting" and /readyz says not ready.
    let (phase, phase_rx) = watch::channel(Phase::Starting);
    let source = Arc::new(DaemonStatus {
        phase: phase_rx,
        cache_budget: Arc::clone(&plan.cache_budget),
        transport: plan.transport.clone(),
    });
    let cancel = CancellationToken::new();
    let (bound, admin) = crate::admin::serve(
        admin_listener,
        metrics.clone(),
        Arc::clone(&source) as Arc<dyn crate::admin::StatusSource>,
        cancel.clone(),
    )
    .map_err(|source| DaemonError::AdminBind {
        addr: plan.admin,
        source,
    })?;
    info!(admin = %bound, "Admin server listening (/metrics, /healthz, /readyz, /status).");

    let runtime = Runtime {
        metrics,
        cache_budget: plan.cache_budget,
    };
    let result = consume(plan.subscriptions, plan.grace, &runtime, &phase, shutdown).await;
    cancel.cancel();
    // Bounded: the admin server closes connections still open a few seconds after the cancel.
    if let Err(e) = admin.await {
        error!(error = %e, "Admin server task failed.");
    }
    result?;
    info!("Stopped.");
    Ok(())
}

/// Prepares every subscription, starts them, publishes them on `phase`, and drains them once
/// `shutdown` completes or one of them fails.
///
/// Every subscription is prepared (settings checked, broadcasting offsets locked and loaded)
/// before any connects: one that cannot start must not leave another registered with a
/// broker. A signal during the preparation (which may wait for a lock) ends it at once.
async fn consume(
    subscriptions: Vec<PlannedSubscription>,
    grace: Duration,
    runtime: &Runtime,
    phase: &watch::Sender<Phase>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let prepared = tokio::select! {
        prepared = prepare(subscriptions, runtime) => prepared?,
        () = &mut shutdown => {
            info!("Signal received before the subscriptions started.");
            return Ok(());
        }
    };
    let mut consumers = Vec::new();
    let mut status = Vec::new();
    for sub in prepared {
        let consumer = sub.consumer.start();
        info!(subscription = %sub.name, group = %sub.config.group, topic = %sub.config.topic, client_id = %consumer.client_id(), "Subscription started.");
        status.push(SubscriptionStatus {
            name: sub.name,
            config: sub.config,
            probe: consumer.probe(),
            webhook: sub.webhook,
        });
        consumers.push(consumer);
    }
    let status: Arc<[SubscriptionStatus]> = status.into();
    phase.send_replace(Phase::Running(Arc::clone(&status)));

    // A subscription whose own task ended stays broken (no heartbeats, no new queues): the
    // daemon stops as it does on a signal and exits with an error, so that its supervisor
    // (restart policy, kubelet) starts a fresh process; the other subscriptions drain first.
    let signalled = tokio::select! {
        () = &mut shutdown => true,
        () = any_failed(&status) => {
            if let Some(failed) = first_failure(&status) {
                error!(reason = %failed, "A subscription failed; stopping so that the process is restarted.");
            }
            false
        }
    };
    phase.send_replace(Phase::Stopping(Arc::clone(&status)));
    info!(grace = ?grace, "Shutting down: draining in-flight deliveries.");
    let drain = tokio::time::timeout(
        grace + DRAIN_OVERRUN,
        futures_join_all(consumers.into_iter().map(|c| c.shutdown())),
    );
    let mut drain = std::pin::pin!(drain);
    // Stopping after a failure, the signal is still heard: the first one is noted (and arms
    // the second's exit at once) while the drain goes on.
    let drained = if signalled {
        drain.await
    } else {
        tokio::select! {
            drained = &mut drain => drained,
            () = &mut shutdown => drain.await,
        }
    };
    if drained.is_err() {
        warn!("Shutdown grace period exceeded; exiting with deliveries still in flight (they will be redelivered).");
    }
    // Also a failure that came during the drain (a task that panicked while stopping).
    match first_failure(&status) {
        Some(failed) => Err(failed),
        None => Ok(()),
    }
}

/// The first subscription, in configuration order, whose consumer failed (see
/// [`Probe::failed`]).
fn first_failure(subs: &[SubscriptionStatus]) -> Option<DaemonError> {
    subs.iter().find_map(|s| {
        s.probe
            .failure()
            .map(|reason| DaemonError::SubscriptionFailed {
                subscription: s.name.clone(),
                reason: reason.to_owned(),
            })
    })
}

/// Completes when any of `subs` fails; never when there is none.
async fn any_failed(subs: &[SubscriptionStatus]) {
    if subs.is_empty() {
        return std::future::pending().await;
    }
    futures_util::future::select_all(subs.iter().map(|s| Box::pin(s.probe.failed()))).await;
}

/// A subscription whose consumer is prepared, with what `/status` shows of it.
struct PreparedSubscription {
    name: String,
    config: consumer::Config,
    webhook: Webhook,
    consumer: Prepared<Webhook>,
}

/// Prepares each subscription in turn (see [`Consumer::prepare`]); the first failure drops
/// those prepared before it, which releases their offset locks.
async fn prepare(
    subscriptions: Vec<PlannedSubscription>,
    runtime: &Runtime,
) -> Result<Vec<PreparedSubscription>, ConsumerError> {
    let mut prepared = Vec::with_capacity(subscriptions.len());
    for sub in subscriptions {
        let webhook = sub.webhook.clone();
        let consumer = Consumer::prepare(
            sub.client,
            sub.consumer.clone(),
            sub.webhook,
            runtime.clone(),
        )
        .await?;
        prepared.push(PreparedSubscription {
            name: sub.name,
            config: sub.consumer,
            webhook,
            consumer,
        });
    }
    Ok(prepared)
}

/// Awaits every future concurrently (a tiny join_all without another dependency).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedder who builds `WebhookOptions::new` gets what an operator gets from a
    /// configuration that names only the URL.
    #[test]
    fn library_defaults_match_the_configuration_defaults() {
        let sub = config::Subscription {
            webhook: config::WebhookConfig {
                url: "http://127.0.0.1:8080/hook".to_owned(),
                ..config::WebhookConfig::default()
            },
            ..config::Subscription::default()
        };
        let configured =
            webhook_options(&config::Config::default(), &sub, &|k: &str| k.to_owned()).unwrap();
        let library = WebhookOptions::new("http://127.0.0.1:8080/hook");
        assert_eq!(configured.method, library.method);
        assert_eq!(configured.format, library.format);
        assert_eq!(configured.timeout, library.timeout);
        assert_eq!(configured.concurrency, library.concurrency);
        assert_eq!(configured.headers, library.headers);
        assert_eq!(configured.status_classes, library.status_classes);
        assert_eq!(configured.retry_after_cap, library.retry_after_cap);
        assert_eq!(configured.breaker, library.breaker);
        assert_eq!(configured.tls, library.tls);
    }

    /// A URL the webhook refuses after the configuration took it (here a token with an
    /// unescaped `/`, which parses as the host) is reported at `webhook.url` with its origin,
    /// masked as `check-config` masks it.
    #[test]
    fn a_webhook_url_refused_by_the_library_is_named_and_masked() {
        let sources = config::Sources::default()
            .with_env(
                "ROCKETMQ_WEBHOOK_URL",
                "https://AbC+dEf/gh==@example.com/hook",
            )
            .with_env("ROCKETMQ_CONSUMER_GROUP", "g")
            .with_env("ROCKETMQ_TOPIC", "t");
        let cfg = config::Config::load(&sources).expect("the configuration takes it");
        let e = Plan::new(&cfg).expect_err("the webhook refuses it");
        assert_eq!(e.key, "subscriptions[0].webhook.url");
        let shown = e.to_string();
        assert!(shown.contains("ROCKETMQ_WEBHOOK_URL"), "{shown}");
        assert!(shown.contains("https://***@example.com/hook"), "{shown}");
        assert!(!shown.to_ascii_lowercase().contains("gh=="), "{shown}");
    }

    /// `client.rpc_timeout` bounds name-server look-ups too, as documented.
    #[test]
    fn the_rpc_timeout_reaches_the_name_server_client() {
        let sources = config::Sources::default()
            .with_env("ROCKETMQ_WEBHOOK_URL", "http://127.0.0.1:8080/hook")
            .with_env("ROCKETMQ_CONSUMER_GROUP", "g")
            .with_env("ROCKETMQ_TOPIC", "t")
            .with_env("ROCKETMQ_CLIENT__RPC_TIMEOUT", "7s");
        let cfg = config::Config::load(&sources).expect("configuration");
        let plan = Plan::new(&cfg).expect("plan");
        assert_eq!(plan.client.namesrv_timeout, Some(Duration::from_secs(7)));
        assert_eq!(
            plan.subscriptions[0].consumer.rpc_timeout,
            Duration::from_secs(7)
        );
    }

    fn webhook_with(requests: &[(RequestClass, u64)]) -> Webhook {
        let hook = Webhook::new(WebhookOptions::new("http://127.0.0.1:1/hook")).unwrap();
        for &(class, n) in requests {
            for _ in 0..n {
                hook.stats().record_request(class, None);
            }
        }
        hook
    }

    /// The `webhook_requests_total` samples of one gather, by (group, status class).
    fn request_samples(families: &[MetricFamily]) -> Vec<(String, String, u64)> {
        let family = families
            .iter()
            .find(|f| f.name() == names::WEBHOOK_REQUESTS_TOTAL)
            .expect("the requests family is gathered");
        let mut out: Vec<(String, String, u64)> = family
            .get_metric()
            .iter()
            .map(|m| {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                (
                    label("consumer_group"),
                    label("status_class"),
                    m.get_counter().get_value() as u64,
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The webhook families are built here, not in `metrics.rs`: the same `_total` rule as
    /// its test of the consumer's families.
    #[test]
    fn webhook_counters_and_only_counters_end_in_total() {
        let ok = RequestClass::of_status(200);
        let webhooks = vec![("g".to_owned(), "t".to_owned(), webhook_with(&[(ok, 1)]))];
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(WebhookCollector::new(webhooks, Transport::new(4))))
            .unwrap();
        let families = registry.gather();
        assert_eq!(families.len(), 6, "one family per webhook collector");
        for family in &families {
            let name = family.name();
            let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(
                counter,
                name.ends_with("_total"),
                "{name}: `_total` iff a counter"
            );
        }
    }

    /// The request histogram reaches `/metrics` with the webhook's own observations.
    #[test]
    fn the_request_duration_histogram_is_exported() {
        let hook = webhook_with(&[]);
        hook.stats()
            .record_request(RequestClass::of_status(200), Some(Duration::from_millis(3)));
        hook.stats()
            .record_request(RequestClass::Timeout, Some(Duration::from_secs(10)));
        // Not sent: no round trip to observe.
        hook.stats().record_request(RequestClass::NotSent, None);
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(WebhookCollector::new(
                vec![("g".to_owned(), "t".to_owned(), hook)],
                Transport::new(4),
            )))
            .unwrap();
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        let name = names::WEBHOOK_REQUEST_DURATION_SECONDS;
        for line in [
            format!("# TYPE {name} histogram"),
            format!("{name}_bucket{{consumer_group=\"g\",topic=\"t\",le=\"0.0025\"}} 0"),
            format!("{name}_bucket{{consumer_group=\"g\",topic=\"t\",le=\"0.005\"}} 1"),
            format!("{name}_bucket{{consumer_group=\"g\",topic=\"t\",le=\"10\"}} 2"),
            format!("{name}_bucket{{consumer_group=\"g\",topic=\"t\",le=\"+Inf\"}} 2"),
            format!("{name}_sum{{consumer_group=\"g\",topic=\"t\"}} 10.003"),
            format!("{name}_count{{consumer_group=\"g\",topic=\"t\"}} 2"),
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }

    /// The bound operators size their termination periods by: stated in the README and held
    /// by `scripts/check-deploy.sh`, which cannot read it from here.
    #[test]
    fn the_exit_after_the_grace_period_is_bounded_as_documented_and_checked() {
        assert_eq!(EXIT_AFTER_GRACE, Duration::from_secs(18));
        let secs = EXIT_AFTER_GRACE.as_secs();
        let script = include_str!("../scripts/check-deploy.sh");
        assert!(
            script.contains(&format!("\nEXIT_AFTER_GRACE_S={secs}\n")),
            "scripts/check-deploy.sh must check for {secs} s"
        );
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&format!("`shutdown.grace_period` + {secs} s")),
            "README.md must state {secs} s"
        );
    }

    #[test]
    fn the_drain_leaves_room_in_the_grace_period_for_the_final_persist_and_unlock() {
        let rpc = Duration::from_secs(3);
        assert_eq!(
            drain_timeout(Duration::from_secs(30), rpc),
            Duration::from_secs(24)
        );
        assert_eq!(
            drain_timeout(Duration::from_secs(8), rpc),
            Duration::from_secs(4)
        );
        assert_eq!(drain_timeout(Duration::ZERO, rpc), Duration::ZERO);
    }

    #[test]
    fn concurrent_scrapes_all_read_the_true_request_counts() {
        let webhooks = vec![
            (
                "g1".to_owned(),
                "t".to_owned(),
                webhook_with(&[
                    (RequestClass::of_status(200), 5),
                    (RequestClass::of_status(503), 3),
                ]),
            ),
            (
                "g2".to_owned(),
                "t".to_owned(),
                webhook_with(&[(RequestClass::of_status(404), 2)]),
            ),
        ];
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(WebhookCollector::new(webhooks, Transport::new(4))))
            .unwrap();
        let expected = vec![
            ("g1".to_owned(), "2xx".to_owned(), 5),
            ("g1".to_owned(), "5xx".to_owned(), 3),
            ("g2".to_owned(), "4xx".to_owned(), 2),
        ];
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..2_000 {
                        assert_eq!(request_samples(&registry.gather()), expected);
                    }
                });
            }
        });
    }
}
