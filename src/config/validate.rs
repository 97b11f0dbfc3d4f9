//! Cross-field and range checks run by [`Config::load`] before anything connects: everything
//! serde cannot express (Java's accepted ranges, URL schemes, pairs that must be set together,
//! unique names). Every problem is reported, not just the first.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;

use bytesize::ByteSize;

use super::error::{ConfigError, ConfigWarning, Origin};
use super::tree::{display_path, key_path, Path};
use super::values::bytes::render;
use super::values::{AllocateStrategy, ConsumeFrom, MessageModel};
use super::{is_sensitive_header, shown_url, Config, Subscription, WebhookConfig};
use crate::consumer::offset_store::valid_path_component;
use crate::consumer::ConsumeMode;

/// The largest `delivery.max_in_flight` accepted.
pub(super) const MAX_IN_FLIGHT_LIMIT: u32 = 100_000;

/// Collects problems with their origins.
struct Checker<'a> {
    config: &'a Config,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn fail(&mut self, key: Path, value: impl Display, reason: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            key: display_path(&key),
            origin: self.config.provenance.origin(&key),
            value: value.to_string(),
            reason: reason.into(),
        });
    }

    fn range(&mut self, key: Path, value: u32, min: u32, max: u32) {
        if !(min..=max).contains(&value) {
            self.fail(key, value, format!("must be between {min} and {max}"));
        }
    }

    /// A size between `min` and `max`, both written in the message as the config spells them.
    fn size_range(&mut self, key: Path, value: ByteSize, min: ByteSize, max: ByteSize) {
        if value < min || value > max {
            let (min, max) = (render(min), render(max));
            self.fail(
                key,
                render(value),
                format!(
                    "must be between {min} and {max} (a bare number is bytes; write e.g. `{max}`)"
                ),
            );
        }
    }

    fn positive(&mut self, key: Path, value: Duration) {
        if value.is_zero() {
            self.fail(key, show(value), "must be longer than 0s");
        }
    }

    /// An interval of periodic requests: each round asks every broker (or every held queue's
    /// broker) something, so a slip of unit (`ROCKETMQ_PERSIST_INTERVAL=1` is 1 ms) would
    /// flood them.
    fn interval(&mut self, key: Path, value: Duration, min: Duration) {
        if value < min {
            self.fail(
                key,
                show(value),
                format!(
                    "must be at least {}: each round sends requests to the brokers",
                    show(min)
                ),
            );
        }
    }
}

/// Headers the webhook transport sets itself (framing and connection management).
const TRANSPORT_HEADERS: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// The longest heartbeat interval that survives one lost heartbeat within the broker's 120 s
/// expiry.
const MAX_SAFE_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

fn show(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// Consumer group and topic names: RocketMQ's `^[%|a-zA-Z0-9_-]+$`.
fn valid_resource_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-'))
}

/// Decodes a Standard Webhooks secret: optional `whsec_` prefix, then standard base64.
pub(crate) fn decode_signing_secret(secret: &str) -> Result<Vec<u8>, String> {
    // The webhook's own reading, so what passes here is the key the daemon signs with.
    crate::webhook::sign::decode_secret(secret).map_err(|e| match e {
        crate::webhook::sign::SignError::EmptySecret => "must not be empty".to_owned(),
        _ => "must be `whsec_` followed by base64 (Standard Webhooks)".to_owned(),
    })
}

impl Config {
    /// Checks everything that can be checked without connecting: required keys, Java's ranges,
    /// URL and address formats, TLS files, cross-field rules, unique subscription names.
    /// [`Config::load`] runs it; call it again after changing a loaded config in code.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (or [`ConfigError::Several`]) naming each bad key with its
    /// origin, or [`ConfigError::NoSubscriptions`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut c = Checker {
            config: self,
            errors: Vec::new(),
        };
        self.check_global(&mut c);
        if self.subscriptions.is_empty() {
            c.errors.push(ConfigError::NoSubscriptions);
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut groups: HashMap<&str, usize> = HashMap::new();
        for (i, sub) in self.subscriptions.iter().enumerate() {
            sub.check(i, &mut c);
            let name = sub.name.as_str();
            if !name.is_empty() {
                if let Some(first) = names.insert(name, i) {
                    c.fail(
                        key_path!["subscriptions", i, "name"],
                        format!("{name:?}"),
                        format!(
                            "subscriptions[{first}] has the same name; names must be unique \
                             (the default is <group>/<topic>)"
                        ),
                    );
                }
            }
            // Each subscription is a client of its own (`ip@instance-<index>`), so two with one
            // group are two members of it with different subscriptions: each would split its
            // topic's queues with a member that never consumes them, leaving half unowned, and
            // both would consume the group's one retry topic. (Java refuses a group twice in
            // one client instance for the same reason.)
            if !sub.group.is_empty() {
                if let Some(first) = groups.insert(sub.group.as_str(), i) {
                    if self.subscriptions[first].name != sub.name {
                        c.fail(
                            key_path!["subscriptions", i, "group"],
                            format!("{:?}", sub.group),
                            format!(
                                "subscriptions[{first}] already uses this group (topic {:?}); \
                                 every member of a consumer group must subscribe the same \
                                 topics, so give each subscription a group of its own",
                                self.subscriptions[first].topic
                            ),
                        );
                    }
                }
            }
        }
        match ConfigError::from_list(c.errors) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Settings that are valid but deserve a warning: those accepted for compatibility with
    /// the seed design whose value changes nothing, and batch deadlines the requests of a batch
    /// may outlast. Found here with their origin, so that `check-config` shows them and `run`
    /// logs them (a warning emitted while the daemon is planned would come before logging is
    /// set up, and vanish).
    pub(super) fn setting_warnings(&self) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        if self.client.heartbeat_interval > MAX_SAFE_HEARTBEAT_INTERVAL {
            let key = key_path!["client", "heartbeat_interval"];
            warnings.push(ConfigWarning::Risk {
                key: display_path(&key),
                origin: self.provenance.origin(&key),
                value: show(self.client.heartbeat_interval).to_string(),
                reason: format!(
                    "brokers drop a consumer they have not heard from for 120 s (Java's \
                     channelExpiredTimeout) and rebalance its queues away, and this client \
                     closes a broker connection on which it has read nothing and awaited \
                     nothing for as long; one late or failed heartbeat at this interval lets \
                     that happen. Keep it at most {} (default 30s)",
                    show(MAX_SAFE_HEARTBEAT_INTERVAL)
                ),
            });
        }
        for (i, sub) in self.subscriptions.iter().enumerate() {
            if let Some(reason) = sub.deadline_risk() {
                let key = key_path!["subscriptions", i, "consume_timeout"];
                warnings.push(ConfigWarning::Risk {
                    key: display_path(&key),
                    origin: self.provenance.origin(&key),
                    value: show(sub.consume_timeout).to_string(),
                    reason,
                });
            }
            let bare_secret = sub
                .webhook
                .signing_secret
                .as_ref()
                .is_some_and(|secret| !secret.expose().starts_with("whsec_"));
            if bare_secret {
                let key = key_path!["subscriptions", i, "webhook", "signing_secret"];
                warnings.push(ConfigWarning::Risk {
                    key: display_path(&key),
                    origin: self.provenance.origin(&key),
                    value: "***".to_owned(),
                    reason: "it has no `whsec_` prefix: it is decoded as base64, as the Standard \
                             Webhooks libraries read it, not used as text. A receiver that uses \
                             the text itself as the HMAC key rejects every signature: give it the \
                             decoded key, or set this to `whsec_` followed by the base64 of the \
                             text the receiver uses (adding the prefix alone changes nothing)"
                        .to_owned(),
                });
            }
            if !sub.enable_auto_recovery {
                let key = key_path!["subscriptions", i, "enable_auto_recovery"];
                warnings.push(ConfigWarning::NoEffect {
                    key: display_path(&key),
                    origin: self.provenance.origin(&key),
                    value: "false".to_owned(),
                    reason: "queue workers always back off and retry after broker or \
                             connection failures"
                        .to_owned(),
                });
            }
        }
        warnings
    }

    /// Settings a subscription's modes never read that were written for it with a value other
    /// than their default ([`Subscription::unused_settings`]). Taken before `resolve`, which
    /// expands the `~` of `offset_store_path`: after it, the default written out
    /// (`config/reference.yaml`) no longer equals the default.
    pub(super) fn unused_setting_warnings(&self) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        for (i, sub) in self.subscriptions.iter().enumerate() {
            for (name, value, reason) in sub.unused_settings() {
                let key = key_path!["subscriptions", i, name];
                // A key no layer wrote reports the origin of its closest written parent (the
                // subscription's entry in the file): not a value anyone gave it.
                if !self.provenance.is_written(&key) {
                    continue;
                }
                let origin = self.provenance.origin(&key);
                // Defaults (a profile's, `subscription_defaults`, per-subscription variables)
                // are for every subscription: one that some subscription ignores is no mistake
                // unless it has no other subscription to apply to.
                let written_for_it = match &origin {
                    Origin::File { written: None, .. } => true,
                    Origin::Env { variable }
                        if variable.starts_with("ROCKETMQ_SUBSCRIPTIONS__") =>
                    {
                        true
                    }
                    Origin::File { .. } | Origin::Env { .. } => self.subscriptions.len() == 1,
                    _ => false,
                };
                if written_for_it {
                    warnings.push(ConfigWarning::NoEffect {
                        key: display_path(&key),
                        origin,
                        value,
                        reason: reason.to_owned(),
                    });
                }
            }
        }
        warnings
    }

    fn check_global(&self, c: &mut Checker<'_>) {
        if let Some(name) = &self.instance_name {
            if name.trim().is_empty() || name.contains('@') {
                c.fail(
                    key_path!["instance_name"],
                    format!("{name:?}"),
                    "must be non-empty and must not contain `@` (the client id separator)",
                );
            } else if !valid_path_component(name)
                && self
                    .subscriptions
                    .iter()
                    .any(|s| s.message_model == MessageModel::Broadcasting)
            {
                // Only broadcasting uses the name as a directory; clustering keeps any name.
                c.fail(
                    key_path!["instance_name"],
                    format!("{name:?}"),
                    "names the directory of the broadcasting offsets under offset_store_path, \
                     so it must not be `.` or `..` or contain `/` or `\\`",
                );
            }
        }
        let client = &self.client;
        for (name, value) in [
            ("heartbeat_interval", client.heartbeat_interval),
            (
                "poll_name_server_interval",
                client.poll_name_server_interval,
            ),
            ("rebalance_interval", client.rebalance_interval),
        ] {
            c.interval(key_path!["client", name], value, Duration::from_secs(1));
        }
        c.positive(key_path!["client", "rpc_timeout"], client.rpc_timeout);
        c.range(key_path!["worker_threads"], self.worker_threads.0, 0, 1024);
        c.range(
            key_path!["cache", "max_count"],
            self.cache.max_count,
            1,
            1 << 24,
        );
        c.size_range(
            key_path!["cache", "max_size"],
            self.cache.max_size,
            ByteSize::mib(1),
            ByteSize::gib(64),
        );
        if let Some(n) = self.delivery.max_in_flight {
            c.range(
                key_path!["delivery", "max_in_flight"],
                n,
                1,
                MAX_IN_FLIGHT_LIMIT,
            );
        }
        match (&client.access_key, &client.secret_key) {
            (Some(_), None) => c.fail(
                key_path!["client", "secret_key"],
                "(not set)",
                "access_key is set; ACL needs both access_key and secret_key",
            ),
            (None, Some(_)) => c.fail(
                key_path!["client", "access_key"],
                "(not set)",
                "secret_key is set; ACL needs both access_key and secret_key",
            ),
            (Some(ak), Some(_)) if ak.is_empty() => c.fail(
                key_path!["client", "access_key"],
                "\"\"",
                "must not be empty (ACL needs both access_key and secret_key)",
            ),
            (Some(_), Some(sk)) if sk.expose().is_empty() => c.fail(
                key_path!["client", "secret_key"],
                "\"\"",
                "must not be empty (ACL needs both access_key and secret_key)",
            ),
            _ => {}
        }
        let tls = &client.tls;
        // The files are read only when TLS is on; a pair half set is wrong either way.
        check_tls_files(
            c,
            key_path!["client", "tls"],
            [&tls.ca_file, &tls.cert_file, &tls.key_file],
            tls.enabled,
        );
        if let Some(name) = &tls.server_name {
            if name.trim().is_empty() {
                c.fail(
                    key_path!["client", "tls", "server_name"],
                    "\"\"",
                    "must not be empty",
                );
            }
        }
        if self.log.level.trim().is_empty() {
            c.fail(
                key_path!["log", "level"],
                "\"\"",
                "must not be empty: a filter without a directive turns logging off; use e.g. `info`",
            );
        } else if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            c.fail(
                key_path!["log", "level"],
                format!("{:?}", self.log.level),
                format!(
                    "not a tracing filter ({e}); use e.g. `info` or `info,rocketmq_webhook=debug`"
                ),
            );
        } else if let Some(why) = misread_directive(&self.log.level) {
            c.fail(
                key_path!["log", "level"],
                format!("{:?}", self.log.level),
                why,
            );
        }
    }
}

/// A directive the filter takes, but not as meant: a bare word that looks like a level but is
/// none (`warning`, `fatal`, `eror`) is read as a target to log at every level, so every other
/// line is filtered out and the daemon runs silent; a target with `-` (`rocketmq-webhook=debug`)
/// names no Rust module. A bare target (`rocketmq_webhook`, `hyper[conn]`) is meant as written:
/// every level of it.
fn misread_directive(filter: &str) -> Option<String> {
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let target = match directive.split_once('=') {
            Some((target, _)) => target,
            None if directive.contains('[') => continue,
            None if directive
                .parse::<tracing::level_filters::LevelFilter>()
                .is_ok() =>
            {
                continue
            }
            None if !looks_like_a_level(directive) => directive,
            None => {
                return Some(format!(
                    "`{directive}` is not a level (trace, debug, info, warn, error, off): a bare \
                     word is read as a target name, and everything else would be filtered out; \
                     write a level, or `<target>=<level>`"
                ))
            }
        };
        let target = target.split('[').next().unwrap_or_default();
        if target.contains('-') {
            return Some(format!(
                "target `{target}` has a `-`, which no module path has (crate names are written \
                 with `_`: `{}`)",
                target.replace('-', "_")
            ));
        }
    }
    None
}

/// Whether a word that is no level was meant as one: a level's name in other loggers
/// (`warning`, `fatal`), or a misspelt one (`eror`).
fn looks_like_a_level(word: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    const NOT_LEVELS: [&str; 9] = [
        "warning",
        "information",
        "informational",
        "fatal",
        "critical",
        "verbose",
        "notice",
        "all",
        "none",
    ];
    let word = word.to_ascii_lowercase();
    NOT_LEVELS.contains(&word.as_str()) || super::error::closest(&word, LEVELS).is_some()
}

impl Subscription {
    fn check(&self, i: usize, c: &mut Checker<'_>) {
        let key = |k: &str| key_path!["subscriptions", i, k];
        for (field, value, max_len, variable) in [
            ("group", &self.group, 255, "ROCKETMQ_CONSUMER_GROUP"),
            ("topic", &self.topic, 127, "ROCKETMQ_TOPIC"),
        ] {
            if value.is_empty() {
                c.fail(
                    key(field),
                    "\"\"",
                    format!("required: set `{field}:` in the subscription or {variable}"),
                );
            } else if value.len() > max_len || !valid_resource_name(value) {
                c.fail(
                    key(field),
                    format!("{value:?}"),
                    format!(
                        "must be at most {max_len} characters of letters, digits, `-`, `_`, \
                         `%` and `|`"
                    ),
                );
            }
        }
        if self.expression.trim().is_empty() {
            c.fail(
                key("expression"),
                "\"\"",
                "must not be empty (`*` takes every tag)",
            );
        } else if self.expression_type == super::ExpressionType::Tag
            && self
                .expression
                .split("||")
                .all(|part| part.trim().is_empty())
        {
            // `||` or ` || ` (a template whose parts came out empty) names no tag; taken as
            // `*`, it would deliver the whole topic to an endpoint that asked for some tags.
            c.fail(
                key("expression"),
                format!("{:?}", self.expression),
                "names no tag (`*` takes every tag)",
            );
        }
        c.range(key("consume_thread_min"), self.consume_thread_min, 1, 1000);
        c.range(key("consume_thread_max"), self.consume_thread_max, 1, 1000);
        // Against a maximum out of range the comparison says nothing new.
        if (1..=1000).contains(&self.consume_thread_max)
            && self.consume_thread_min > self.consume_thread_max
        {
            c.fail(
                key("consume_thread_min"),
                self.consume_thread_min,
                format!(
                    "must not exceed consume_thread_max ({})",
                    self.consume_thread_max
                ),
            );
        }
        c.range(key("consume_batch_size"), self.consume_batch_size, 1, 1024);
        c.range(key("pull_batch_size"), self.pull_batch_size, 1, 1024);
        c.range(
            key("max_cache_count_per_queue"),
            self.max_cache_count_per_queue,
            1,
            65535,
        );
        c.range(key("max_span"), self.max_span, 1, 65535);
        c.size_range(
            key("max_cache_size_per_queue"),
            self.max_cache_size_per_queue,
            ByteSize::mib(1),
            ByteSize::mib(1024),
        );
        c.range(
            key("max_cache_count_per_subscription"),
            self.max_cache_count_per_subscription,
            1,
            1 << 20,
        );
        c.size_range(
            key("max_cache_size_per_subscription"),
            self.max_cache_size_per_subscription,
            ByteSize::mib(1),
            ByteSize::gib(16),
        );
        if self.consume_timeout < Duration::from_secs(1) {
            c.fail(
                key("consume_timeout"),
                show(self.consume_timeout),
                "must be at least 1s",
            );
        } else if self.consume_timeout <= self.webhook.timeout {
            // Only the webhook's own timeout tells an endpoint that could not be reached
            // (nothing sent: the messages wait without spending an attempt, and the circuit
            // learns of it) from a failed delivery. A batch deadline that ends first gives up on
            // every message as failed, so a dead endpoint would drain the topic into the DLQ.
            let timeout = key_path!["subscriptions", i, "webhook", "timeout"];
            c.fail(
                key("consume_timeout"),
                show(self.consume_timeout),
                format!(
                    "must be longer than `{}` = {} ({}): a batch whose deadline ends before \
                     its request's is retried as a failed delivery, spending a reconsume \
                     attempt even when the endpoint could not be reached",
                    display_path(&timeout),
                    show(self.webhook.timeout),
                    c.config.provenance.origin(&timeout),
                ),
            );
        }
        if self.pull_interval > Duration::from_millis(65535) {
            c.fail(
                key("pull_interval"),
                show(self.pull_interval),
                "must be at most 65535ms",
            );
        }
        c.interval(
            key("persist_interval"),
            self.persist_interval,
            Duration::from_millis(100),
        );
        c.positive(
            key("suspend_current_queue_time"),
            self.suspend_current_queue_time,
        );
        if self.lock_expire_time < Duration::from_secs(1)
            || self.lock_expire_time > Duration::from_secs(60)
        {
            c.fail(
                key("lock_expire_time"),
                show(self.lock_expire_time),
                "must be between 1s and 60s (the broker drops an unrenewed lock after 60s)",
            );
        }
        if self.offset_store_path.as_os_str().is_empty() {
            c.fail(key("offset_store_path"), "\"\"", "must not be empty");
        } else if self.message_model == MessageModel::Broadcasting
            && self.offset_store_path.starts_with("~")
        {
            // Loading expands `~` from HOME; still here, HOME is unset or empty, and the
            // offsets would go to a directory named `~` under whatever the working directory is.
            c.fail(
                key("offset_store_path"),
                format!("{:?}", self.offset_store_path.display().to_string()),
                "`~` cannot be expanded: HOME is not set; give an absolute path",
            );
        }
        match (self.allocate_strategy, self.allocate_queues.is_empty()) {
            (AllocateStrategy::Config, true) => c.fail(
                key("allocate_queues"),
                "[]",
                "allocate_strategy CONFIG needs the queues to consume \
                 (`- {broker_name: broker-a, queue_id: 0}`)",
            ),
            (AllocateStrategy::Config, false) | (_, true) => {}
            (other, false) => c.fail(
                key("allocate_queues"),
                "(a list)",
                format!("only used with allocate_strategy CONFIG, not {other}"),
            ),
        }
        self.webhook.check(i, c);
    }
}

// === impl Subscription: warnings ===

impl Subscription {
    /// The settings this subscription's modes never read and that hold something other than
    /// their default, each with its value and why: changed anyway, they show the operator
    /// expects a behaviour the subscription does not have. (A default written out, as in
    /// `config/reference.yaml`, changes nothing and says nothing.)
    fn unused_settings(&self) -> Vec<(&'static str, String, &'static str)> {
        let default = Self::default();
        let orderly = self.consume_mode == ConsumeMode::Orderly;
        let broadcasting = self.message_model == MessageModel::Broadcasting;
        let only_orderly = "only ORDERLY subscriptions use it";
        let mut unused = Vec::new();
        if orderly && self.max_span != default.max_span {
            unused.push((
                "max_span",
                self.max_span.to_string(),
                "only CONCURRENT subscriptions check it; an ORDERLY queue holds no gaps",
            ));
        }
        if (!orderly || broadcasting) && self.lock_expire_time != default.lock_expire_time {
            unused.push((
                "lock_expire_time",
                show(self.lock_expire_time).to_string(),
                if orderly {
                    "BROADCASTING takes no broker queue locks: every instance consumes every \
                     queue on its own"
                } else {
                    only_orderly
                },
            ));
        }
        if !orderly && self.suspend_current_queue_time != default.suspend_current_queue_time {
            unused.push((
                "suspend_current_queue_time",
                show(self.suspend_current_queue_time).to_string(),
                only_orderly,
            ));
        }
        if !orderly && self.orderly_dlq_policy != default.orderly_dlq_policy {
            unused.push((
                "orderly_dlq_policy",
                self.orderly_dlq_policy.to_string(),
                only_orderly,
            ));
        }
        let every_queue = "every BROADCASTING instance consumes every queue";
        if broadcasting && self.allocate_strategy != default.allocate_strategy {
            unused.push((
                "allocate_strategy",
                self.allocate_strategy.to_string(),
                every_queue,
            ));
        }
        if broadcasting && !self.allocate_queues.is_empty() {
            unused.push(("allocate_queues", "(a list)".to_owned(), every_queue));
        }
        if !broadcasting && self.offset_store_path != default.offset_store_path {
            unused.push((
                "offset_store_path",
                format!("{:?}", self.offset_store_path.display().to_string()),
                "CLUSTERING offsets are stored at the broker; only BROADCASTING uses a local file",
            ));
        }
        if let (Some(at), false) = (
            &self.consume_timestamp,
            self.consume_from == ConsumeFrom::Timestamp,
        ) {
            unused.push((
                "consume_timestamp",
                at.to_string(),
                "only consume_from TIMESTAMP reads it",
            ));
        }
        unused
    }

    /// Why a batch's requests may outlast `consume_timeout`, when they may: with one message per
    /// request, an orderly batch sends its messages one after another, and a concurrent one at
    /// most `webhook.concurrency` at a time (other batches share those places too), each request
    /// allowed `webhook.timeout`. A warning, not an error: the requests usually answer long
    /// before their timeout. (One request per batch is the error [`Subscription::check`]
    /// reports.)
    fn deadline_risk(&self) -> Option<String> {
        let format = self.webhook.format;
        if !format.one_message_per_request() {
            return None;
        }
        let batch = self.consume_batch_size;
        let (in_sequence, how) = match self.consume_mode {
            ConsumeMode::Orderly => (batch, "one after another (ORDERLY)".to_owned()),
            ConsumeMode::Concurrent => {
                let places = self.webhook_concurrency().max(1);
                (
                    batch.div_ceil(places),
                    format!("{places} at a time (webhook.concurrency)"),
                )
            }
        };
        let timeout = self.webhook.timeout;
        let total = timeout.checked_mul(in_sequence);
        if in_sequence < 2 || total.is_some_and(|t| t < self.consume_timeout) {
            return None;
        }
        let total = total.map_or_else(|| "more than that".to_owned(), |t| show(t).to_string());
        Some(format!(
            "a batch of {batch} messages in format `{format}` is {batch} requests, sent {how}, \
             each allowed webhook.timeout = {timeout}: {total} for {in_sequence} in a row. A \
             batch that misses its deadline is retried whole, so messages the endpoint already \
             accepted are delivered again and every message spends a reconsume attempt; raise \
             consume_timeout, or lower consume_batch_size or webhook.timeout",
            timeout = show(timeout),
        ))
    }
}

impl WebhookConfig {
    fn check(&self, i: usize, c: &mut Checker<'_>) {
        let key = |k: &str| key_path!["subscriptions", i, "webhook", k];
        if self.url.trim().is_empty() {
            c.fail(
                key("url"),
                "\"\"",
                "required: set `webhook: {url: ...}` in the subscription or ROCKETMQ_WEBHOOK_URL",
            );
        } else {
            match reqwest::Url::parse(&self.url) {
                // Port 0 reaches nothing: every request would fail as unreachable, the
                // circuit open, and the queues stall with no error pointing here.
                Ok(url) if url.port() == Some(0) => c.fail(
                    key("url"),
                    format!("{:?}", shown_url(&self.url)),
                    "port 0 reaches nothing: give the endpoint's port (or none, for 80 / 443)",
                ),
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                Ok(url) => c.fail(
                    key("url"),
                    format!("{:?}", shown_url(&self.url)),
                    format!(
                        "must be an http:// or https:// URL with a host (scheme is `{}`)",
                        url.scheme()
                    ),
                ),
                Err(e) => c.fail(
                    key("url"),
                    format!("{:?}", shown_url(&self.url)),
                    format!("not a URL ({e})"),
                ),
            }
        }
        c.positive(key("timeout"), self.timeout);
        if let Some(n) = self.concurrency {
            c.range(key("concurrency"), n, 1, 10_000);
        }
        for (name, value) in &self.headers {
            let header_key = key_path!["subscriptions", i, "webhook", "headers", name];
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                c.fail(
                    header_key.clone(),
                    format!("{name:?}"),
                    "not a valid HTTP header name",
                );
            }
            // The transport frames each request and manages its connections: a configured
            // Content-Length would cut bodies short (after signing the whole body), and the
            // others would break keep-alive or framing.
            if TRANSPORT_HEADERS
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
            {
                c.fail(
                    header_key.clone(),
                    format!("{name:?}"),
                    "is set by the transport for each request; remove it",
                );
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                let shown = if is_sensitive_header(name) {
                    "***".to_owned()
                } else {
                    format!("{value:?}")
                };
                c.fail(header_key, shown, "not a valid HTTP header value");
            }
        }
        if let Some(token) = &self.bearer_token {
            if token.expose().trim().is_empty() {
                c.fail(key("bearer_token"), "***", "must not be empty");
            }
            if self
                .headers
                .keys()
                .any(|h| h.eq_ignore_ascii_case("authorization"))
            {
                c.fail(
                    key("bearer_token"),
                    "***",
                    "headers already set Authorization; use one or the other",
                );
            }
        }
        if let Some(secret) = &self.signing_secret {
            if let Err(reason) = decode_signing_secret(secret.expose()) {
                c.fail(key("signing_secret"), "***", reason);
            }
        }
        // The header counts whole seconds; a cap below that would turn every throttled answer
        // into a pause of a few milliseconds, close to the hot loop `0s` used to cause.
        if !self.retry_after_cap.is_zero() && self.retry_after_cap < Duration::from_secs(1) {
            c.fail(
                key("retry_after_cap"),
                show(self.retry_after_cap),
                "must be 0s (ignore Retry-After) or at least 1s",
            );
        }
        // The webhook reads its TLS files when it is built, whatever the URL's scheme.
        check_tls_files(
            c,
            key_path!["subscriptions", i, "webhook", "tls"],
            [&self.tls.ca_file, &self.tls.cert_file, &self.tls.key_file],
            true,
        );
        self.check_codes(i, c);
        let breaker = &self.circuit_breaker;
        let bkey = |k: &str| key_path!["subscriptions", i, "webhook", "circuit_breaker", k];
        c.range(
            bkey("failure_threshold"),
            breaker.failure_threshold,
            1,
            1_000_000,
        );
        c.positive(bkey("open_duration"), breaker.open_duration);
        if breaker.max_open_duration < breaker.open_duration {
            c.fail(
                bkey("max_open_duration"),
                show(breaker.max_open_duration),
                format!(
                    "must be at least open_duration ({})",
                    show(breaker.open_duration)
                ),
            );
        }
    }

    fn check_codes(&self, i: usize, c: &mut Checker<'_>) {
        for (list_name, list) in [
            ("retry_codes", &self.retry_codes),
            ("drop_codes", &self.drop_codes),
        ] {
            for (j, class) in list.iter().enumerate() {
                let key = key_path!["subscriptions", i, "webhook", list_name, j];
                if (200..=299).any(|status| class.contains(status)) {
                    c.fail(key, class, "2xx means success; list only non-2xx codes");
                }
            }
        }
        for (j, retry) in self.retry_codes.iter().enumerate() {
            if let Some(k) = self.drop_codes.iter().position(|d| d == retry) {
                c.fail(
                    key_path!["subscriptions", i, "webhook", "drop_codes", k],
                    retry,
                    format!("also listed in retry_codes[{j}]; a code can only mean one thing"),
                );
            }
        }
    }
}

/// The files of a TLS block under `base` (`ca_file`, `cert_file`, `key_file`, in that order):
/// the certificate and key set together (mutual TLS needs both), and, when `read`, each file
/// that is set a regular file. Whether it parses is checked when planning.
fn check_tls_files(
    c: &mut Checker<'_>,
    base: Vec<String>,
    files: [&Option<std::path::PathBuf>; 3],
    read: bool,
) {
    let key = |name: &str| {
        let mut path = base.clone();
        path.push(name.to_owned());
        path
    };
    let [ca_file, cert_file, key_file] = files;
    if cert_file.is_some() != key_file.is_some() {
        let missing = if cert_file.is_some() {
            "key_file"
        } else {
            "cert_file"
        };
        c.fail(
            key(missing),
            "(not set)",
            "cert_file and key_file must be set together (mutual TLS)",
        );
    }
    if read {
        for (name, file) in [
            ("ca_file", ca_file),
            ("cert_file", cert_file),
            ("key_file", key_file),
        ] {
            if let Some(file) = file {
                if !file.is_file() {
                    c.fail(
                        key(name),
                        file.display(),
                        "the file does not exist or is not a regular file",
                    );
                }
            }
        }
    }
}
