//! Configuration: defaults < YAML file < `ROCKETMQ_*` environment, one typed, validated tree.
//!
//! [`Config::load`] reads the layers given in [`Sources`] (never the process environment unless
//! [`Sources::from_process`] was used), merges them, deserialises the result with figment into
//! this tree and runs [`Config::validate`]; any failure is a [`ConfigError`] naming the key, its
//! [`Origin`] (file and line, profile, environment variable or default) and the bad value, and
//! the daemon exits with [`EXIT_CONFIG`] before anything binds or connects.
//!
//! Precedence, lowest first:
//! 1. defaults in code (the `Default` impls below; `config/reference.yaml` lists them all);
//! 2. the profile (`profile:` or `ROCKETMQ_PROFILE`): `config/profiles/<name>.yaml`, compiled in;
//! 3. the YAML file;
//! 4. the environment (see [`env`](mod@env) for the variable table and units).
//!
//! Subscriptions are a list, and lists do not merge key by key, so per-subscription settings
//! layer differently: code default < profile `subscription_defaults` < file
//! `subscription_defaults` < per-subscription environment variables (`ROCKETMQ_CONSUMER_GROUP`,
//! `ROCKETMQ_PULL_BATCH_SIZE`, ...) < the subscription's own entry in the file <
//! `ROCKETMQ_SUBSCRIPTIONS__<index>__<key>` overrides. The environment variables are thus
//! defaults for every subscription of the file, and the file wins where it says something.
//! With no `subscriptions:` in the file, those defaults become the one subscription (the
//! no-file mode driven by `ROCKETMQ_CONSUMER_GROUP`, `ROCKETMQ_TOPIC`, `ROCKETMQ_WEBHOOK_URL`).
//!
//! Invariants: a loaded [`Config`] has passed [`Config::validate`], every subscription has a
//! non-empty unique `name` and a `webhook.concurrency`, and secrets only leave through
//! [`Secret::expose`].

// A `ConfigError` is built once, at startup, on the way to exit code 2: its size never matters,
// and keeping origins and values inline keeps the messages complete.
#![allow(clippy::result_large_err)]

pub mod env;
mod error;
mod load;
mod profile;
mod tree;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize, Serializer};

use crate::consumer::ConsumeMode;

pub use error::{ConfigError, ConfigWarning, Origin, EXIT_CONFIG};
pub use load::Sources;
pub use values::{
    AllocateStrategy, ConsumeFrom, ConsumeTimestamp, ExpressionType, HttpMethod, LogFormat,
    MessageModel, NameServers, OrderlyDlqPolicy, Profile, Secret, StatusClass, WebhookFormat,
};

use tree::Provenance;

/// `worker_threads`: how many threads run the daemon, `0` for one per CPU the process may use.
/// A type of its own so that the default (one) holds wherever a `Config` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerThreads(pub u32);

impl Default for WorkerThreads {
    fn default() -> Self {
        Self(1)
    }
}

impl WorkerThreads {
    /// The configured count; `None` for one per CPU.
    pub fn count(self) -> Option<u32> {
        (self.0 != 0).then_some(self.0)
    }
}

/// The daemon's whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name-server addresses, `host:port` separated by `;` (or a YAML list).
    /// Env: `ROCKETMQ_NAMESRV_ADDR`, else `NAMESRV_ADDR`. Default `127.0.0.1:9876`.
    pub namesrv_addr: NameServers,
    /// Client instance name (the part after `@` in the client id the broker sees). Default:
    /// none, meaning `<process id>#<start time in ns>` (see [`Config::resolved_instance_name`]).
    /// Env: `ROCKETMQ_INSTANCE_NAME`.
    pub instance_name: Option<String>,
    /// Connection-level settings shared by every subscription.
    pub client: ClientConfig,
    /// The admin HTTP server (`/metrics`, `/healthz`, `/readyz`, `/status`).
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// Shutdown behaviour.
    pub shutdown: ShutdownConfig,
    /// Flow control for the whole process: messages pulled and waiting for delivery, all
    /// subscriptions together.
    pub cache: CacheConfig,
    /// Webhook requests for the whole process: how many may be in flight, all subscriptions
    /// together.
    pub delivery: DeliveryConfig,
    /// Threads running the daemon's tasks (count, 0..=1024; `0`: one per CPU the process may
    /// use, which counts a container's CPU quota). One thread runs tokio's current-thread
    /// scheduler. On the benchmark's 2 cores (shared with the broker and the endpoint) it spent
    /// 12-25 % less CPU per message than a thread per CPU, at about the same rates or higher,
    /// except 16 subscriptions at one message per request, 6-21 % slower: more threads pay when
    /// one thread is saturated and the machine has cores to spare (docs/performance.md).
    /// Env: `ROCKETMQ_WORKER_THREADS`. Default `1`.
    pub worker_threads: WorkerThreads,
    /// A built-in set of defaults applied under the file (`high_throughput`, `low_latency`,
    /// `resource_saving`). Env: `ROCKETMQ_PROFILE`. Default: none.
    pub profile: Option<Profile>,
    /// What to consume and where to deliver it. At least one. (The file may also hold
    /// `subscription_defaults:`, a partial subscription merged under every entry; it is folded
    /// in at load time and not kept in this tree.)
    pub subscriptions: Vec<Subscription>,
    /// Where each value came from, for error messages.
    #[serde(skip)]
    provenance: Provenance,
    /// Non-fatal findings of the loader.
    #[serde(skip)]
    warnings: Vec<ConfigWarning>,
}

impl Config {
    /// The instance name to register with: `instance_name`, or when unset
    /// `<process id>#<start time in ns>`, as the Java client names a clustering consumer. The
    /// process id alone is 1 in most containers: two replicas sharing an IP address (host
    /// networking) had one client id, so both took the same queues, and the same orderly
    /// locks. The same for the whole process.
    pub fn resolved_instance_name(&self) -> String {
        static DEFAULT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        self.instance_name.clone().unwrap_or_else(|| {
            DEFAULT
                .get_or_init(|| {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    format!("{}#{nanos}", std::process::id())
                })
                .clone()
        })
    }

    /// Non-fatal findings of [`Config::load`] (unknown `ROCKETMQ_*` variables, settings that
    /// have no effect, settings that risk a batch's deadline), to be logged once logging is set
    /// up.
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.warnings
    }

    /// The configuration as YAML with every secret (sensitive-looking headers, and a webhook
    /// URL's credentials and query values) as `***`: what `check-config` prints. Loading the
    /// output again gives the same configuration, those aside.
    pub fn redacted_yaml(&self) -> String {
        serde_yaml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }

    /// Where the value at `key` (a dotted path such as `subscriptions.0.webhook.url`) came from.
    /// [`display_key`] shows the same path as errors do.
    pub fn origin(&self, key: &str) -> Origin {
        self.provenance.origin(&dotted_path(key))
    }
}

/// A dotted key path (`subscriptions.0.webhook.url`) as errors show it
/// (`subscriptions[0].webhook.url`).
pub fn display_key(dotted: &str) -> String {
    tree::display_path(&dotted_path(dotted))
}

/// The segments of a dotted key path.
fn dotted_path(dotted: &str) -> Vec<String> {
    dotted.split('.').map(str::to_owned).collect()
}

/// Connection-level settings shared by every subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// How often to send heartbeats (subscriptions, client id) to every broker. Default `30s`.
    #[serde(with = "values::duration")]
    pub heartbeat_interval: Duration,
    /// How often to refresh topic routes from the name server. Default `30s`.
    #[serde(with = "values::duration")]
    pub poll_name_server_interval: Duration,
    /// How often to recompute queue allocation (also triggered by broker notifications).
    /// Default `20s`.
    #[serde(with = "values::duration")]
    pub rebalance_interval: Duration,
    /// Deadline of one request to a name server or broker (pulls add their long-poll time).
    /// Default `3s`.
    #[serde(with = "values::duration")]
    pub rpc_timeout: Duration,
    /// ACL access key; set together with `secret_key` to sign every request.
    /// Env: `ROCKETMQ_ACCESS_KEY`. Default: none.
    pub access_key: Option<String>,
    /// ACL secret key. Env: `ROCKETMQ_SECRET_KEY`. Default: none.
    pub secret_key: Option<Secret>,
    /// TLS to name servers and brokers.
    pub tls: TlsConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            poll_name_server_interval: Duration::from_secs(30),
            rebalance_interval: Duration::from_secs(20),
            rpc_timeout: Duration::from_secs(3),
            access_key: None,
            secret_key: None,
            tls: TlsConfig::default(),
        }
    }
}

/// TLS to name servers and brokers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Use TLS for every remoting connection. Default `false`.
    pub enabled: bool,
    /// PEM file of CA certificates to trust instead of the built-in web roots. Read and checked
    /// at startup (exit 2 when it does not parse), also with `insecure_skip_verify`. Default:
    /// none.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS (with `key_file`). Default: none.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`. Default: none.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only. Default `false`.
    pub insecure_skip_verify: bool,
    /// Name to verify the server certificate against, instead of the host of each address.
    /// Default: none.
    pub server_name: Option<String>,
}

/// The admin HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Socket address to serve `/metrics`, `/healthz`, `/readyz` and `/status` on.
    /// Default `0.0.0.0:9090`: all interfaces, because kubelet probes and Prometheus scrapes
    /// arrive on the pod IP, not on loopback; nothing on it changes state. Use
    /// `127.0.0.1:9090` to keep it local. Env: `ROCKETMQ_ADMIN_LISTEN`.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` (human-readable lines) or `json` (one object per line).
    /// Env: `ROCKETMQ_LOG_FORMAT`. Default `pretty`.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `info,rocketmq_webhook::client=debug`.
    /// Env: `ROCKETMQ_LOG_LEVEL`. Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

/// Shutdown behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Time allowed after SIGTERM to stop pulling, drain in-flight deliveries, persist offsets
    /// and unlock orderly queues; stragglers are then aborted. In-flight deliveries get this
    /// less twice `client.rpc_timeout` (but at least half of it), which leaves the final persist
    /// and unlock their time. The process exits at most 18 s after it (the daemon's
    /// `EXIT_AFTER_GRACE`). Default `30s`.
    #[serde(with = "values::duration")]
    pub grace_period: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(30),
        }
    }
}

/// Flow control for the whole process, so the daemon's memory stays bounded however many
/// subscriptions it runs. The size is shared evenly by every queue of every subscription; the
/// count is a common pool queues take room from before they pull (see
/// [`crate::consumer::CacheBudget`]). A queue also pauses at its subscription's share
/// (`max_cache_*_per_subscription`) and its own limit (`max_cache_*_per_queue`). No Java
/// counterpart (a Java consumer's heap limit plays that role).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Messages cached by the whole process (count, 1..=16777216).
    /// Env: `ROCKETMQ_CACHE_MAX_COUNT`. Default `10000`.
    pub max_count: u32,
    /// Body bytes cached by the whole process (1MiB..=64GiB).
    /// Env: `ROCKETMQ_CACHE_MAX_SIZE` in MiB. Default `32MiB`.
    #[serde(with = "values::bytes")]
    pub max_size: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_count: 10_000,
            max_size: ByteSize::mib(32),
        }
    }
}

/// Webhook requests for the whole process. Each subscription is bounded by its own
/// `webhook.concurrency`; this caps them together, as one application behind the sidecar
/// usually serves them all. No Java counterpart (each Java consumer has its own thread pool).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Webhook requests in flight, all subscriptions together (count, 1..=100000); a request
    /// waits for a place in both this and its subscription's `webhook.concurrency`. Webhooks
    /// with the same TLS settings share one connection pool that keeps at most this many idle
    /// connections per endpoint, so this bounds the connections and buffers many subscriptions
    /// hold.
    /// Env: `ROCKETMQ_DELIVERY_MAX_IN_FLIGHT`. Default: none, meaning
    /// [`DEFAULT_MAX_IN_FLIGHT`] or the largest `webhook.concurrency` of any subscription,
    /// whichever is larger (filled in at load time), so a single subscription is never held
    /// below its own setting.
    pub max_in_flight: Option<u32>,
}

/// `delivery.max_in_flight` when unset and no subscription asks for more: 128, room for six
/// subscriptions at the default 20 before the cap matters.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 128;

/// One consumer group subscribed to one topic, delivering to one webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Subscription {
    /// Label used in logs, metrics and `/status`; unique. Default `<group>/<topic>`.
    pub name: String,
    /// Consumer group. Required. Env: `ROCKETMQ_CONSUMER_GROUP`.
    pub group: String,
    /// Topic. Required. Env: `ROCKETMQ_TOPIC`.
    pub topic: String,
    /// Filter: tags (`*`, `a || b`) or a SQL92 condition. Env: `ROCKETMQ_EXPRESSION`.
    /// Default `*`.
    pub expression: String,
    /// `TAG` or `SQL92`. Env: `ROCKETMQ_EXPRESSION_TYPE`. Default `TAG`.
    pub expression_type: ExpressionType,
    /// `CLUSTERING` or `BROADCASTING`. Env: `ROCKETMQ_MESSAGE_MODEL`. Default `CLUSTERING`.
    pub message_model: MessageModel,
    /// `CONCURRENT` or `ORDERLY`. Env: `ROCKETMQ_CONSUME_MODE`. Default `CONCURRENT`.
    #[serde(with = "values::consume_mode")]
    pub consume_mode: ConsumeMode,
    /// Start point for a queue with no committed offset: `LAST_OFFSET` (its end; for a queue
    /// added to the topic while the daemon runs, what was stored since the daemon started),
    /// `FIRST_OFFSET` or `TIMESTAMP` (Java `CONSUME_FROM_*` names accepted). Env: `ROCKETMQ_CONSUME_FROM_WHERE`.
    /// Default `LAST_OFFSET`.
    pub consume_from: ConsumeFrom,
    /// For `TIMESTAMP`: RFC 3339 or `yyyyMMddHHmmss` (UTC). Default: none, meaning 30 minutes
    /// before start (the Java default). Env: `ROCKETMQ_CONSUME_TIMESTAMP`.
    pub consume_timestamp: Option<ConsumeTimestamp>,
    /// `AVERAGE`, `AVERAGE_BY_CIRCLE`, `CONSISTENT_HASH` or `CONFIG` (Java `AVG`,
    /// `AVG_BY_CIRCLE` and `hash` accepted). Env: `ROCKETMQ_ALLOCATE_STRATEGY`.
    /// Default `AVERAGE`.
    pub allocate_strategy: AllocateStrategy,
    /// For `CONFIG`: the queues this instance consumes, each `{broker_name, queue_id}` or the
    /// text `<broker_name>:<queue_id>`. Env (by path, comma-separated):
    /// `ROCKETMQ_SUBSCRIPTIONS__0__ALLOCATE_QUEUES=broker-a:0,broker-a:1`. Default: empty.
    pub allocate_queues: Vec<AllocateQueue>,
    /// Minimum consume concurrency (count, 1..=1000, at most `consume_thread_max`); accepted for
    /// compatibility, no effect. Env: `ROCKETMQ_CONSUME_THREAD_MIN`. Default `20` (or a
    /// profile's), lowered to `consume_thread_max` when that is smaller.
    pub consume_thread_min: u32,
    /// Maximum consume concurrency (count, 1..=1000, >= min). Env:
    /// `ROCKETMQ_CONSUME_THREAD_MAX`. Default `20`.
    pub consume_thread_max: u32,
    /// Messages per handler call / webhook request (count, 1..=1024).
    /// Env: `ROCKETMQ_CONSUME_BATCH_SIZE`. Default `1`.
    pub consume_batch_size: u32,
    /// Messages per pull request (count, 1..=1024). Env: `ROCKETMQ_PULL_BATCH_SIZE`.
    /// Default `32`.
    pub pull_batch_size: u32,
    /// Deadline of one batch's delivery (every request of it); a batch that misses it is
    /// retried (sent back, or rolled back and retried in place in orderly mode). Unlike Java's
    /// `consumeTimeout`, messages waiting in the process queue (an open circuit) do not age
    /// out. Must be longer than the subscription's `webhook.timeout`; a warning when the
    /// requests a batch may send one after another (`raw` and `cloudevents`) can take longer
    /// than it. Env: `ROCKETMQ_CONSUME_TIMEOUT` in minutes. Default `15m`.
    #[serde(with = "values::duration")]
    pub consume_timeout: Duration,
    /// Retries before a message goes to `%DLQ%<group>` (orderly too): 16 means 17 deliveries
    /// in all. Env: `ROCKETMQ_MAX_RETRY_TIMES` (`-1` = default). Default `16`.
    pub max_reconsume_times: u32,
    /// Flow control: stop pulling a queue holding this many messages (count, 1..=65535).
    /// Env: `ROCKETMQ_MAX_CACHE_COUNT_PER_QUEUE`. Default `1000`.
    pub max_cache_count_per_queue: u32,
    /// Flow control: stop pulling a queue holding this many body bytes (1MiB..=1024MiB).
    /// Env: `ROCKETMQ_MAX_CACHE_SIZE_PER_QUEUE` in MiB. Default `100MiB`.
    #[serde(with = "values::bytes")]
    pub max_cache_size_per_queue: ByteSize,
    /// Flow control for the whole subscription, shared evenly by the queues this instance holds
    /// (count, 1..=1048576): each queue pauses at the smaller of its share and
    /// `max_cache_count_per_queue`, so memory does not grow with the number of queues (Java
    /// `pullThresholdForTopic`, which is off by default and replaces the per-queue limit).
    /// Env: `ROCKETMQ_MAX_CACHE_COUNT_PER_SUBSCRIPTION`. Default `10000`.
    pub max_cache_count_per_subscription: u32,
    /// Body bytes for the whole subscription, shared like the count (1MiB..=16GiB; Java
    /// `pullThresholdSizeForTopic`). Env: `ROCKETMQ_MAX_CACHE_SIZE_PER_SUBSCRIPTION` in MiB.
    /// Default `32MiB`.
    #[serde(with = "values::bytes")]
    pub max_cache_size_per_subscription: ByteSize,
    /// Flow control (concurrent): stop pulling when the offsets held span more than this
    /// (count, 1..=65535). Default `2000`.
    pub max_span: u32,
    /// Pause between pulls of one queue (0s..=65535ms); `0s` relies on long polling.
    /// Default `0s`.
    #[serde(with = "values::duration")]
    pub pull_interval: Duration,
    /// How often consumed offsets are committed. Env: `ROCKETMQ_PERSIST_INTERVAL` in
    /// milliseconds. Default `5s`.
    #[serde(with = "values::duration")]
    pub persist_interval: Duration,
    /// Directory of the local offset store (BROADCASTING); `~` is the home directory.
    /// Env: `ROCKETMQ_OFFSET_STORE_PATH`. Default `~/.rocketmq_offsets`.
    pub offset_store_path: PathBuf,
    /// Orderly: pause of a queue after a failed batch before retrying it in place.
    /// Env: `ROCKETMQ_SUSPEND_CURRENT_QUEUE_TIME_MILLIS` in milliseconds. Default `1s`.
    #[serde(with = "values::duration")]
    pub suspend_current_queue_time: Duration,
    /// Orderly: how long the client trusts a broker queue lock without renewing it (1s..=60s;
    /// must stay under the broker's 60s). Env: `ROCKETMQ_LOCK_EXPIRE_TIME` in milliseconds.
    /// Default `30s`.
    #[serde(with = "values::duration")]
    pub lock_expire_time: Duration,
    /// Orderly: `DLQ` (after max reconsume times, dead-letter it and move on) or `BLOCK`
    /// (retry forever in place). Default `DLQ`.
    pub orderly_dlq_policy: OrderlyDlqPolicy,
    /// Accepted for compatibility with the seed design and otherwise ignored (`false` logs a
    /// warning): queue workers always back off and retry after broker or connection failures.
    /// Env: `ROCKETMQ_ENABLE_AUTO_RECOVERY`. Default `true`.
    pub enable_auto_recovery: bool,
    /// Where and how to deliver.
    pub webhook: WebhookConfig,
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            name: String::new(),
            group: String::new(),
            topic: String::new(),
            expression: "*".to_owned(),
            expression_type: ExpressionType::Tag,
            message_model: MessageModel::Clustering,
            consume_mode: ConsumeMode::Concurrent,
            consume_from: ConsumeFrom::LastOffset,
            consume_timestamp: None,
            allocate_strategy: AllocateStrategy::Average,
            allocate_queues: Vec::new(),
            consume_thread_min: 20,
            consume_thread_max: 20,
            consume_batch_size: 1,
            pull_batch_size: 32,
            consume_timeout: Duration::from_secs(15 * 60),
            max_reconsume_times: 16,
            max_cache_count_per_queue: 1000,
            max_cache_size_per_queue: ByteSize::mib(100),
            max_cache_count_per_subscription: 10_000,
            max_cache_size_per_subscription: ByteSize::mib(32),
            max_span: 2000,
            pull_interval: Duration::ZERO,
            persist_interval: Duration::from_secs(5),
            offset_store_path: PathBuf::from("~/.rocketmq_offsets"),
            suspend_current_queue_time: Duration::from_secs(1),
            lock_expire_time: Duration::from_secs(30),
            orderly_dlq_policy: OrderlyDlqPolicy::Dlq,
            enable_auto_recovery: true,
            webhook: WebhookConfig::default(),
        }
    }
}

impl Subscription {
    /// Deliveries allowed in flight at once: `webhook.concurrency`, else `consume_thread_max`.
    pub fn webhook_concurrency(&self) -> u32 {
        self.webhook.concurrency.unwrap_or(self.consume_thread_max)
    }
}

/// One queue for `allocate_strategy: CONFIG`: a mapping `{broker_name, queue_id}`, or the text
/// `<broker_name>:<queue_id>` (the form a comma-separated environment variable can hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllocateQueue {
    /// Broker name from the topic route (not an address).
    pub broker_name: String,
    /// Queue number on that broker.
    pub queue_id: u32,
}

/// Where and how a subscription delivers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` endpoint. Required. Env: `ROCKETMQ_WEBHOOK_URL`. Output shows
    /// its password (or a lone user name) and its query values as `***` (see `shown_url`).
    #[serde(serialize_with = "redact_url")]
    pub url: String,
    /// `POST`, `PUT` or `PATCH`. Default `POST`.
    pub method: HttpMethod,
    /// `json`, `raw`, `cloudevents` (binary) or `cloudevents_batch`.
    /// Env: `ROCKETMQ_WEBHOOK_FORMAT`. Default `json`.
    pub format: WebhookFormat,
    /// Deadline of one request, connection included. Default `10s`.
    #[serde(with = "values::duration")]
    pub timeout: Duration,
    /// Requests in flight at once. Default: `consume_thread_max`.
    pub concurrency: Option<u32>,
    /// Extra request headers. Values of sensitive-looking names (authorization, cookie, and
    /// names containing key, token, secret, password or auth) print as `***`. Names are
    /// case-insensitive: of two equal but for case, the one set by the layer with precedence
    /// stays. Env: `ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__HEADERS__X_API_KEY` sets `x-api-key`
    /// (`_` is `-` there, as a variable's name cannot hold `-`). Default: none.
    #[serde(serialize_with = "redact_headers")]
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer <token>`. Env: `ROCKETMQ_WEBHOOK_TOKEN`. Default: none.
    pub bearer_token: Option<Secret>,
    /// Standard Webhooks signing secret (`whsec_` + base64): adds `webhook-id`,
    /// `webhook-timestamp` and `webhook-signature` (HMAC-SHA256).
    /// Env: `ROCKETMQ_WEBHOOK_SECRET`. Default: none (unsigned).
    pub signing_secret: Option<Secret>,
    /// Status codes or classes (`429`, `5xx`) that mean RETRY. Timeouts and transport errors
    /// always retry; other 4xx not listed in `drop_codes` retry too.
    /// Default `[408, 425, 429, 5xx]`.
    pub retry_codes: Vec<StatusClass>,
    /// Status codes or classes that mean DROP (to the DLQ, never lost).
    /// Default `[400, 404, 410, 413, 415, 422]`.
    pub drop_codes: Vec<StatusClass>,
    /// Longest pause honoured from a `Retry-After` answer; `0s` ignores `Retry-After`, other
    /// values must be at least `1s`.
    /// Default `60s`.
    #[serde(with = "values::duration")]
    pub retry_after_cap: Duration,
    /// Stops spending reconsume attempts while the endpoint is down.
    pub circuit_breaker: CircuitBreakerConfig,
    /// TLS to `https` endpoints: custom CA and client certificate (mutual TLS).
    pub tls: WebhookTlsConfig,
}

/// TLS settings of a webhook endpoint. Default: verify `https` endpoints against the public web
/// roots, no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookTlsConfig {
    /// PEM bundle of CA certificates trusted in addition to the web roots. Default none.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS, with `key_file`. Default none.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`. Default none.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (tests only). Default `false`.
    pub insecure_skip_verify: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let codes = |list: &[u16]| {
            list.iter()
                .filter_map(|c| StatusClass::code(*c).ok())
                .collect::<Vec<_>>()
        };
        let mut retry_codes = codes(&[408, 425, 429]);
        retry_codes.extend(StatusClass::hundred(5).ok());
        Self {
            url: String::new(),
            method: HttpMethod::Post,
            format: WebhookFormat::Json,
            timeout: Duration::from_secs(10),
            concurrency: None,
            headers: BTreeMap::new(),
            bearer_token: None,
            signing_secret: None,
            retry_codes,
            drop_codes: codes(&[400, 404, 410, 413, 415, 422]),
            retry_after_cap: Duration::from_secs(60),
            circuit_breaker: CircuitBreakerConfig::default(),
            tls: WebhookTlsConfig::default(),
        }
    }
}

/// What an HTTP status means for the messages of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    /// 2xx not listed elsewhere: delivered (the body may still say otherwise).
    Success,
    /// Consume again later.
    Retry,
    /// Dead-letter without retrying.
    Drop,
}

impl WebhookConfig {
    /// Classifies a status code: the most specific matching entry of `retry_codes` /
    /// `drop_codes` wins (an exact code beats a class), then 2xx is success and anything else
    /// retries.
    pub fn status_action(&self, status: u16) -> StatusAction {
        let pick = |list: &[StatusClass], exact: bool| {
            list.iter()
                .any(|c| c.is_hundred() != exact && c.contains(status))
        };
        for exact in [true, false] {
            if pick(&self.drop_codes, exact) {
                return StatusAction::Drop;
            }
            if pick(&self.retry_codes, exact) {
                return StatusAction::Retry;
            }
        }
        if (200..300).contains(&status) {
            StatusAction::Success
        } else {
            StatusAction::Retry
        }
    }

    /// The HMAC key of `signing_secret`: base64 after the optional `whsec_` prefix. `None`
    /// when unset; validation guarantees it decodes when set.
    pub fn signing_key(&self) -> Option<Vec<u8>> {
        let secret = self.signing_secret.as_ref()?;
        validate::decode_signing_secret(secret.expose()).ok()
    }
}

/// A webhook URL for output: the password of its user info (the user name when there is no
/// password: a token), and every query parameter's value (or the parameter, when it has no
/// `=`), as `***`: services put keys in queries under many names (`code`, `sig`, `api_key`).
/// Scheme, host, path and parameter names stay, so `check-config` still shows where requests
/// go.
///
/// A URL that parses is read by the parser (which also drops tabs and line breaks and trims
/// spaces, and skips any run of slashes after `http:`) and shown as it normalises it. An `@` in
/// its path is taken for user info whose `/` was left unescaped (`https://tok/en@h` parses as
/// host `tok`): everything before it is masked, an `@` that really is in the path too. Text
/// that does not parse (a bad port, a `?` in a password) is what an error quotes: there
/// everything up to the last `@` is masked as user info. Masking too much beats too little.
pub(crate) fn shown_url(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(url) => shown_parsed(url),
        Err(_) => shown_text(text),
    }
}

fn shown_parsed(mut url: reqwest::Url) -> String {
    // Both setters fail only for URLs that cannot have user info, which have none.
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    } else if !url.username().is_empty() {
        let _ = url.set_username("***");
    }
    if let Some(query) = url.query().map(masked_query) {
        url.set_query(Some(&query));
    }
    let shown = url.to_string();
    if !url.path().contains('@') {
        return shown;
    }
    let mut start = url.scheme().len() + 1;
    while shown[start..].starts_with('/') {
        start += 1;
    }
    let cut = shown.find(['?', '#']).unwrap_or(shown.len());
    match shown[start..cut].rfind('@') {
        Some(at) => format!("{}***{}", &shown[..start], &shown[start + at..]),
        None => shown,
    }
}

fn shown_text(text: &str) -> String {
    let is_scheme = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    };
    let mut start = text
        .find(':')
        .filter(|&colon| is_scheme(&text[..colon]))
        .map_or(0, |colon| colon + 1);
    while text[start..].starts_with(['/', '\\']) {
        start += 1;
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    let rest = match text[start..].rfind('@').map(|at| start + at) {
        Some(at) => {
            if let Some(colon) = text[start..at].find(':') {
                out.push_str(&text[start..=start + colon]);
            }
            out.push_str("***");
            &text[at..]
        }
        None => &text[start..],
    };
    match rest.split_once('?') {
        Some((base, query)) => {
            out.push_str(base);
            out.push('?');
            out.push_str(&masked_query(query));
        }
        None => out.push_str(rest),
    }
    out
}

/// `query` with every value (and every parameter without `=`) as `***`, names as written.
fn masked_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=***"),
            None if pair.is_empty() => String::new(),
            None => "***".to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn redact_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    if url.is_empty() {
        return s.serialize_str(url);
    }
    s.serialize_str(&shown_url(url))
}

/// Header names whose values are redacted in output.
pub(crate) fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "cookie"
        || ["auth", "key", "token", "secret", "password"]
            .iter()
            .any(|word| name.contains(word))
}

fn redact_headers<S: Serializer>(
    headers: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = headers
        .iter()
        .map(|(k, v)| {
            let v = if is_sensitive_header(k) {
                "***"
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
        .collect();
    shown.serialize(s)
}

/// The circuit breaker of one webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failed requests (5xx, 408, 429, timeout, transport error, unreachable) that
    /// open the circuit. Default `5`.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe request; doubles after each failed
    /// probe. Default `5s`.
    #[serde(with = "values::duration")]
    pub open_duration: Duration,
    /// Upper bound of the doubling open period. Default `60s`.
    #[serde(with = "values::duration")]
    pub max_open_duration: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests;
