//! The environment layer: an explicit table of known variables, each with its key, its unit and
//! its parser, instead of figment's `Env` provider.
//!
//! Why a table: figment's `Env::prefixed("ROCKETMQ_")` would also read `ROCKETMQ_HOME` (set by
//! RocketMQ's own images) as an unknown key, and it guesses types from the text, so a group named
//! `0001` would become the number 1. Here text values stay text, numbers are parsed only for
//! numeric keys, and the original design's units (minutes, milliseconds, MiB) are converted to
//! typed values with their unit written out.
//!
//! Rules:
//! - an empty value counts as unset (Kubernetes manifests often template empty variables);
//! - `ROCKETMQ_HOME`, `ROCKETMQ_CONFIG` (the file's path, for the command line) and the
//!   repository scripts' variables (`ROCKETMQ_TOOLS_DIR`, `ROCKETMQ_TEST_*`, ...) are ignored;
//!   other unknown `ROCKETMQ_*` names are warnings (other RocketMQ tools set their own), with a
//!   suggestion when the name looks like a typo of a known one;
//! - `ROCKETMQ_<KEY>__<KEY>...` (double underscore) sets any key of the tree by path, e.g.
//!   `ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__URL` or `ROCKETMQ_CLIENT__TLS__ENABLED=true`; such
//!   names are ours, so a wrong key there is an error. The text is read as the key's YAML value
//!   would be (a bare size is bytes, a duration needs its unit: no seed units here), except that
//!   a list-typed key takes a comma-separated list (`...__RETRY_CODES=429,5xx`), as a variable
//!   cannot hold a YAML list; in a header name (`...__WEBHOOK__HEADERS__X_API_KEY`) `_` is `-`;
//! - per-subscription variables are defaults for every subscription (see the module docs of
//!   [`crate::config`]).

use std::collections::HashMap;

use figment::value::Value;

use super::error::{closest, ConfigError, ConfigWarning, Origin};
use super::tree::{display_path, Path};
use super::{Config, Subscription};

/// Where a variable's value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A top-level key of the tree.
    Global,
    /// A key of every subscription (through `subscription_defaults`).
    Subscription,
}

/// How a variable's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Text, kept as written (never turned into a number).
    Text,
    /// A whole number (a count).
    Count,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A bare number is minutes; a duration with a unit (`90s`) is accepted too.
    Minutes,
    /// A bare number is milliseconds; a duration with a unit is accepted too.
    Millis,
    /// A bare number is MiB; a size with a unit (`512KiB`) is accepted too.
    Mebibytes,
    /// A count where `-1` means "the default" (the Java convention).
    CountOrDefault,
}

/// One known environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// The name.
    pub name: &'static str,
    /// Top-level or per-subscription.
    pub scope: Scope,
    /// The key it sets, relative to the scope.
    pub key: &'static [&'static str],
    /// How its text is read.
    pub unit: Unit,
}

const fn var(
    name: &'static str,
    scope: Scope,
    key: &'static [&'static str],
    unit: Unit,
) -> Variable {
    Variable {
        name,
        scope,
        key,
        unit,
    }
}

use Scope::{Global as G, Subscription as S};

/// Every variable read, in the order applied (a later one wins over an earlier one with the same
/// key: `ROCKETMQ_NAMESRV_ADDR` over `NAMESRV_ADDR`).
pub const VARIABLES: &[Variable] = &[
    var("NAMESRV_ADDR", G, &["namesrv_addr"], Unit::Text),
    var("ROCKETMQ_NAMESRV_ADDR", G, &["namesrv_addr"], Unit::Text),
    var("ROCKETMQ_INSTANCE_NAME", G, &["instance_name"], Unit::Text),
    var(
        "ROCKETMQ_WORKER_THREADS",
        G,
        &["worker_threads"],
        Unit::Count,
    ),
    var("ROCKETMQ_ADMIN_LISTEN", G, &["admin", "listen"], Unit::Text),
    var(
        "ROCKETMQ_CACHE_MAX_COUNT",
        G,
        &["cache", "max_count"],
        Unit::Count,
    ),
    var(
        "ROCKETMQ_CACHE_MAX_SIZE",
        G,
        &["cache", "max_size"],
        Unit::Mebibytes,
    ),
    var(
        "ROCKETMQ_DELIVERY_MAX_IN_FLIGHT",
        G,
        &["delivery", "max_in_flight"],
        Unit::Count,
    ),
    var(
        "ROCKETMQ_ACCESS_KEY",
        G,
        &["client", "access_key"],
        Unit::Text,
    ),
    var(
        "ROCKETMQ_SECRET_KEY",
        G,
        &["client", "secret_key"],
        Unit::Text,
    ),
    var("ROCKETMQ_LOG_FORMAT", G, &["log", "format"], Unit::Text),
    var("ROCKETMQ_LOG_LEVEL", G, &["log", "level"], Unit::Text),
    var("ROCKETMQ_PROFILE", G, &["profile"], Unit::Text),
    var("ROCKETMQ_CONSUMER_GROUP", S, &["group"], Unit::Text),
    var("ROCKETMQ_TOPIC", S, &["topic"], Unit::Text),
    var("ROCKETMQ_EXPRESSION", S, &["expression"], Unit::Text),
    var(
        "ROCKETMQ_EXPRESSION_TYPE",
        S,
        &["expression_type"],
        Unit::Text,
    ),
    var("ROCKETMQ_CONSUME_MODE", S, &["consume_mode"], Unit::Text),
    var("ROCKETMQ_MESSAGE_MODEL", S, &["message_model"], Unit::Text),
    var(
        "ROCKETMQ_CONSUME_FROM_WHERE",
        S,
        &["consume_from"],
        Unit::Text,
    ),
    var(
        "ROCKETMQ_CONSUME_TIMESTAMP",
        S,
        &["consume_timestamp"],
        Unit::Text,
    ),
    var(
        "ROCKETMQ_ALLOCATE_STRATEGY",
        S,
        &["allocate_strategy"],
        Unit::Text,
    ),
    var(
        "ROCKETMQ_CONSUME_THREAD_MIN",
        S,
        &["consume_thread_min"],
        Unit::Count,
    ),
    var(
        "ROCKETMQ_CONSUME_THREAD_MAX",
        S,
        &["consume_thread_max"],
        Unit::Count,
    ),
    var(
        "ROCKETMQ_CONSUME_BATCH_SIZE",
        S,
        &["consume_batch_size"],
        Unit::Count,
    ),
    var(
        "ROCKETMQ_PULL_BATCH_SIZE",
        S,
        &["pull_batch_size"],
        Unit::Count,
    ),
    var(
        "ROCKETMQ_CONSUME_TIMEOUT",
        S,
        &["consume_timeout"],
        Unit::Minutes,
    ),
    var(
        "ROCKETMQ_MAX_RETRY_TIMES",
        S,
        &["max_reconsume_times"],
        Unit::CountOrDefault,
    ),
    var(
        "ROCKETMQ_MAX_CACHE_COUNT_PER_QUEUE",
        S,
        &["max_cache_count_per_queue"],
        Unit::Count,
    ),
    var(
        "ROCKETMQ_MAX_CACHE_SIZE_PER_QUEUE",
        S,
        &["max_cache_size_per_queue"],
        Unit::Mebibytes,
    ),
    var(
        "ROCKETMQ_MAX_CACHE_COUNT_PER_SUBSCRIPTION",
        S,
        &["max_cache_count_per_subscription"],
        Unit::Count,
    ),
    var(
        "ROCKETMQ_MAX_CACHE_SIZE_PER_SUBSCRIPTION",
        S,
        &["max_cache_size_per_subscription"],
        Unit::Mebibytes,
    ),
    var(
        "ROCKETMQ_PERSIST_INTERVAL",
        S,
        &["persist_interval"],
        Unit::Millis,
    ),
    var(
        "ROCKETMQ_OFFSET_STORE_PATH",
        S,
        &["offset_store_path"],
        Unit::Text,
    ),
    var(
        "ROCKETMQ_SUSPEND_CURRENT_QUEUE_TIME_MILLIS",
        S,
        &["suspend_current_queue_time"],
        Unit::Millis,
    ),
    var(
        "ROCKETMQ_LOCK_EXPIRE_TIME",
        S,
        &["lock_expire_time"],
        Unit::Millis,
    ),
    var(
        "ROCKETMQ_ENABLE_AUTO_RECOVERY",
        S,
        &["enable_auto_recovery"],
        Unit::Bool,
    ),
    var("ROCKETMQ_WEBHOOK_URL", S, &["webhook", "url"], Unit::Text),
    var(
        "ROCKETMQ_WEBHOOK_FORMAT",
        S,
        &["webhook", "format"],
        Unit::Text,
    ),
    var(
        "ROCKETMQ_WEBHOOK_TOKEN",
        S,
        &["webhook", "bearer_token"],
        Unit::Text,
    ),
    var(
        "ROCKETMQ_WEBHOOK_SECRET",
        S,
        &["webhook", "signing_secret"],
        Unit::Text,
    ),
];

/// Variables that are known to be someone else's and are skipped without a warning:
/// `ROCKETMQ_HOME` is the Java distribution's, `ROCKETMQ_CONFIG` names the configuration file
/// (read by the command line, not a setting), and the rest are this repository's scripts'
/// (installing the broker, running the tests), which a developer may export in the shell that
/// starts the daemon.
const IGNORED: &[&str] = &[
    "ROCKETMQ_HOME",
    "ROCKETMQ_CONFIG",
    "ROCKETMQ_BIN_DIR",
    "ROCKETMQ_INSTALL_TIMEOUT",
    "ROCKETMQ_PYTHON_VENV",
    "ROCKETMQ_RUST_VERSION",
    "ROCKETMQ_TEST_PYTHON",
    "ROCKETMQ_TEST_SCRATCH_DIR",
    "ROCKETMQ_TEST_TIMEOUT",
    "ROCKETMQ_TOOLS_DIR",
];

const PREFIX: &str = "ROCKETMQ_";

/// The key a [`Scope::Subscription`] variable is staged under before it is copied into each
/// subscription.
pub(crate) const SUBSCRIPTION_DEFAULTS: &str = "subscription_defaults";

/// One key set from the environment.
#[derive(Debug, Clone)]
pub(crate) struct EnvEntry {
    pub(crate) variable: String,
    /// Full path in the layer tree (`subscription_defaults.*` for per-subscription variables,
    /// `subscriptions.<i>.*` for indexed overrides).
    pub(crate) path: Path,
    pub(crate) value: Value,
}

/// The environment, read.
#[derive(Debug, Default)]
pub(crate) struct EnvLayer {
    pub(crate) entries: Vec<EnvEntry>,
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) warnings: Vec<ConfigWarning>,
    /// `HOME`, for expanding `~` in paths.
    pub(crate) home: Option<String>,
}

impl EnvLayer {
    /// The entry that sets `path`, if any (the last one wins).
    pub(crate) fn find(&self, path: &[&str]) -> Option<&EnvEntry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.path.iter().map(String::as_str).eq(path.iter().copied()))
    }
}

/// Reads `pairs` (name, value). Later duplicates of a name win, as in a process environment.
pub(crate) fn read(pairs: &[(String, String)]) -> EnvLayer {
    let vars: HashMap<&str, &str> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut layer = EnvLayer {
        // Empty is unset: joined to it, `~/x` would become the relative `x`.
        home: vars
            .get("HOME")
            .filter(|h| !h.trim().is_empty())
            .map(|h| (*h).to_owned()),
        ..EnvLayer::default()
    };
    for known in VARIABLES {
        let Some(text) = vars.get(known.name).map(|v| v.trim()) else {
            continue;
        };
        if text.is_empty() {
            continue;
        }
        let mut path: Path = match known.scope {
            Scope::Global => Vec::new(),
            Scope::Subscription => vec![SUBSCRIPTION_DEFAULTS.to_owned()],
        };
        path.extend(known.key.iter().map(|k| (*k).to_owned()));
        match convert(text, known.unit) {
            Ok(Some(value)) => layer.entries.push(EnvEntry {
                variable: known.name.to_owned(),
                path,
                value,
            }),
            Ok(None) => {}
            Err(reason) => layer.errors.push(ConfigError::Invalid {
                key: display_path(&path),
                origin: Origin::Env {
                    variable: known.name.to_owned(),
                },
                value: if is_secret_key(known.key) {
                    "***".to_owned()
                } else {
                    format!("{text:?}")
                },
                reason,
            }),
        }
    }
    let mut names: Vec<&str> = vars.keys().copied().collect();
    names.sort_unstable();
    let lists = list_keys();
    for name in names {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if IGNORED.contains(&name) || VARIABLES.iter().any(|v| v.name == name) {
            continue;
        }
        let text = vars.get(name).map_or("", |v| v.trim());
        if rest.contains("__") {
            if text.is_empty() {
                continue;
            }
            let mut path: Path = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) {
                layer.errors.push(ConfigError::UnknownKey {
                    key: display_path(&path),
                    origin: Origin::Env {
                        variable: name.to_owned(),
                    },
                    suggestion: None,
                });
                continue;
            }
            // A shell cannot put `-` in a variable's name, and nearly every header name has
            // one, while `_` in a header name is rare (nginx drops such headers by default):
            // under `webhook.headers`, `_` means `-`. A name that needs `_` goes in the file.
            if let [.., webhook, headers, header] = path.as_mut_slice() {
                if webhook == "webhook" && headers == "headers" {
                    *header = header.replace('_', "-");
                }
            }
            // `00` and `0` name the same subscription: one spelling, so that its provenance
            // and the check for a key set twice see one key.
            if let [first, index, ..] = path.as_mut_slice() {
                if first == "subscriptions" {
                    if let Ok(n) = index.parse::<usize>() {
                        *index = n.to_string();
                    }
                }
            }
            match path_value(&lists, &path, name, text) {
                Ok(value) => layer.entries.push(EnvEntry {
                    variable: name.to_owned(),
                    path,
                    value,
                }),
                Err(error) => layer.errors.push(error),
            }
        } else {
            layer.warnings.push(ConfigWarning::UnknownVariable {
                variable: name.to_owned(),
                suggestion: closest(name, VARIABLES.iter().map(|v| v.name))
                    .map(str::to_owned)
                    .or_else(|| variable_for_key(rest)),
            });
        }
    }
    // A plain variable and a path variable for one key (`ROCKETMQ_ADMIN_LISTEN` and
    // `ROCKETMQ_ADMIN__LISTEN`): one would win silently, and a tool that reads only one of
    // them (the health check reads the first) would disagree with the daemon. Two plain names
    // of one key are aliases with a documented order (`ROCKETMQ_NAMESRV_ADDR` over
    // `NAMESRV_ADDR`, which RocketMQ deployments commonly set for every container).
    for (i, later) in layer.entries.iter().enumerate() {
        let clash = layer.entries[..i].iter().find(|e| {
            e.path == later.path && (e.variable.contains("__") || later.variable.contains("__"))
        });
        if let Some(first) = clash {
            layer.errors.push(ConfigError::Invalid {
                key: display_path(&later.path),
                origin: Origin::Env {
                    variable: later.variable.clone(),
                },
                value: "(set)".to_owned(),
                reason: format!("{} sets it too: set one of them", first.variable),
            });
        }
    }
    layer
}

/// The variable for a name that spells out a key of the tree rather than a typo of a variable:
/// `ROCKETMQ_WEBHOOK_BEARER_TOKEN` (webhook.bearer_token, set by `ROCKETMQ_WEBHOOK_TOKEN`),
/// `ROCKETMQ_RPC_TIMEOUT` (client.rpc_timeout, which has only the path form). `rest` is the
/// name after the prefix; a subscription key is spelt without `subscriptions`, and a key's
/// leading sections may be left out when what is left names one key alone. Left unsuggested,
/// such a name was a warning only, and a token meant for the endpoint was never sent.
fn variable_for_key(rest: &str) -> Option<String> {
    let wanted = rest.to_ascii_lowercase();
    let mut leaves = Vec::new();
    if let Some(value) = default_shape() {
        collect_leaves(&value, &mut Vec::new(), &mut leaves);
    }
    let spelt = |key: &[String]| key.join("_");
    let mut found = leaves.iter().filter(|(_, key)| {
        let flat = spelt(key);
        flat == wanted || flat.ends_with(&format!("_{wanted}"))
    });
    let (scope, key) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let plain = VARIABLES
        .iter()
        .find(|v| v.scope == *scope && v.key.iter().copied().eq(key.iter().map(String::as_str)));
    if let Some(variable) = plain {
        return Some(variable.name.to_owned());
    }
    let mut path: Path = match scope {
        Scope::Global => Vec::new(),
        Scope::Subscription => vec![SUBSCRIPTION_DEFAULTS.to_owned()],
    };
    path.extend(key.iter().cloned());
    Some(format!("{PREFIX}{}", path.join("__").to_ascii_uppercase()))
}

/// The keys of the tree that hold values, by scope (a subscription's without its index).
fn collect_leaves(value: &Value, at: &mut Path, out: &mut Vec<(Scope, Path)>) {
    match value {
        Value::Dict(_, dict) if !dict.is_empty() => {
            for (key, child) in dict {
                at.push(key.clone());
                collect_leaves(child, at, out);
                at.pop();
            }
        }
        Value::Array(_, items) if at.as_slice() == ["subscriptions"] => {
            if let Some(Value::Dict(_, first)) = items.first() {
                let mut keys = Vec::new();
                for (key, child) in first {
                    collect_leaves(child, &mut vec![key.clone()], &mut keys);
                }
                out.extend(keys.into_iter().map(|(_, key)| (Scope::Subscription, key)));
            }
        }
        _ => out.push((Scope::Global, at.clone())),
    }
}

/// The list-typed keys of the tree, as paths with `*` for the subscription index
/// (`subscriptions.*.webhook.retry_codes`). Found from the shape of the defaults rather than
/// listed by hand, so that a list key added to the tree takes a comma-separated variable with
/// no table to update. (A list behind an `Option` that defaults to `None` would not be found;
/// there is none.)
pub(crate) fn list_keys() -> Vec<Path> {
    let mut keys = Vec::new();
    // No keys would only mean that lists are read as text, which extraction then reports as a
    // type error.
    if let Some(value) = default_shape() {
        collect_lists(&value, &mut Vec::new(), &mut keys);
    }
    keys
}

/// The default tree with one subscription, as a figment value: the shape of every key.
/// Serialising plain data cannot fail; `None` only if it somehow did.
fn default_shape() -> Option<Value> {
    let shape = Config {
        subscriptions: vec![Subscription::default()],
        ..Config::default()
    };
    Value::serialize(&shape).ok()
}

fn collect_lists(value: &Value, at: &mut Path, out: &mut Vec<Path>) {
    match value {
        Value::Dict(_, dict) => {
            for (key, child) in dict {
                at.push(key.clone());
                collect_lists(child, at, out);
                at.pop();
            }
        }
        // The list of subscriptions is indexed by the variable's name instead.
        Value::Array(_, items) if at.as_slice() == ["subscriptions"] => {
            if let Some(first) = items.first() {
                at.push("*".to_owned());
                collect_lists(first, at, out);
                at.pop();
            }
        }
        Value::Array(..) => out.push(at.clone()),
        _ => {}
    }
}

/// `path` with the subscription index (or `subscription_defaults`) as `*`, the form of
/// [`list_keys`].
fn key_shape(path: &[String]) -> Path {
    let mut shape = vec!["subscriptions".to_owned(), "*".to_owned()];
    match path.first().map(String::as_str) {
        Some(SUBSCRIPTION_DEFAULTS) => shape.extend_from_slice(&path[1..]),
        Some("subscriptions") if path.len() > 1 => shape.extend_from_slice(&path[2..]),
        _ => return path.to_vec(),
    }
    shape
}

/// The value of a variable that sets `path`: its text, or for a list-typed key the items of
/// a comma-separated list, each trimmed. A list is set whole, never item by item, so that one
/// variable always replaces one key of the layers below.
fn path_value(
    lists: &[Path],
    path: &[String],
    variable: &str,
    text: &str,
) -> Result<Value, ConfigError> {
    let shape = key_shape(path);
    let invalid = |key: &[String], reason: String| ConfigError::Invalid {
        key: display_path(key),
        origin: Origin::Env {
            variable: variable.to_owned(),
        },
        value: format!("{text:?}"),
        reason,
    };
    let Some(list) = lists.iter().find(|l| shape.starts_with(l)) else {
        return Ok(Value::from(text.to_owned()));
    };
    // The list's own path in `path`: `shape` and `path` differ in length by the index only.
    let list_len = list.len() + path.len() - shape.len();
    if path.len() > list_len {
        let whole: Vec<&str> = variable.split("__").take(list_len).collect();
        return Err(invalid(
            &path[..list_len],
            format!(
                "a list is set whole, as a comma-separated value: `{}=a,b`",
                whole.join("__")
            ),
        ));
    }
    // An empty variable counts as unset, so the empty list needs a spelling of its own: the
    // file's. Without it a list whose default is not empty (drop_codes) could not be cleared
    // from the environment.
    if text.trim() == "[]" {
        return Ok(Value::from(Vec::<Value>::new()));
    }
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if let Some(n) = items.iter().position(|item| item.is_empty()) {
        return Err(invalid(
            path,
            format!("item {} of the comma-separated list is empty", n + 1),
        ));
    }
    Ok(Value::from(
        items
            .into_iter()
            .map(|item| Value::from(item.to_owned()))
            .collect::<Vec<_>>(),
    ))
}

/// Whether a key holds a credential (its value is never echoed).
pub(crate) fn is_secret_key(key: &[impl AsRef<str>]) -> bool {
    key.last()
        .is_some_and(|k| matches!(k.as_ref(), "secret_key" | "bearer_token" | "signing_secret"))
}

/// Converts one value; `Ok(None)` means "leave the default".
fn convert(text: &str, unit: Unit) -> Result<Option<Value>, String> {
    let whole = || text.parse::<u64>().ok();
    let value = match unit {
        Unit::Text => Value::from(text.to_owned()),
        Unit::Count => {
            Value::from(whole().ok_or_else(|| format!("expected a whole number, got `{text}`"))?)
        }
        Unit::CountOrDefault => {
            if text == "-1" {
                return Ok(None);
            }
            Value::from(whole().ok_or_else(|| {
                format!("expected a whole number (or -1 for the default), got `{text}`")
            })?)
        }
        Unit::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::from(true),
            "false" | "0" | "no" | "off" => Value::from(false),
            _ => return Err(format!("expected true or false, got `{text}`")),
        },
        Unit::Minutes => Value::from(with_unit(text, "m", "minutes")?),
        Unit::Millis => Value::from(with_unit(text, "ms", "milliseconds")?),
        Unit::Mebibytes => {
            if let Some(n) = whole() {
                Value::from(format!("{n}MiB"))
            } else if text.parse::<bytesize::ByteSize>().is_ok() {
                Value::from(text.to_owned())
            } else {
                return Err(format!(
                    "expected a whole number of MiB (or a size such as `512MiB`), got `{text}`"
                ));
            }
        }
    };
    Ok(Some(value))
}

/// A bare number gets `unit`; text with its own unit must parse as a duration.
fn with_unit(text: &str, unit: &str, unit_name: &str) -> Result<String, String> {
    if let Ok(n) = text.parse::<u64>() {
        Ok(format!("{n}{unit}"))
    } else if humantime::parse_duration(text).is_ok() {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "expected a whole number of {unit_name} (or a duration such as `30s`), got `{text}`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn value(layer: &EnvLayer, path: &[&str]) -> Option<Value> {
        layer.find(path).map(|e| e.value.clone())
    }

    #[test]
    fn units_are_written_out() {
        let layer = read(&env(&[
            ("ROCKETMQ_CONSUME_TIMEOUT", "15"),
            ("ROCKETMQ_PERSIST_INTERVAL", "5000"),
            ("ROCKETMQ_MAX_CACHE_SIZE_PER_QUEUE", "100"),
            ("ROCKETMQ_MAX_CACHE_SIZE_PER_SUBSCRIPTION", "32"),
            ("ROCKETMQ_LOCK_EXPIRE_TIME", "90s"),
            ("ROCKETMQ_PULL_BATCH_SIZE", "64"),
            ("ROCKETMQ_ENABLE_AUTO_RECOVERY", "off"),
        ]));
        assert!(layer.errors.is_empty(), "{:?}", layer.errors);
        let d = |k: &str| value(&layer, &[SUBSCRIPTION_DEFAULTS, k]);
        assert_eq!(d("consume_timeout"), Some(Value::from("15m")));
        assert_eq!(d("persist_interval"), Some(Value::from("5000ms")));
        assert_eq!(d("max_cache_size_per_queue"), Some(Value::from("100MiB")));
        assert_eq!(
            d("max_cache_size_per_subscription"),
            Some(Value::from("32MiB"))
        );
        assert_eq!(d("lock_expire_time"), Some(Value::from("90s")));
        assert_eq!(d("pull_batch_size"), Some(Value::from(64u64)));
        assert_eq!(d("enable_auto_recovery"), Some(Value::from(false)));
    }

    #[test]
    fn text_stays_text_and_home_and_the_file_variable_are_ignored() {
        let layer = read(&env(&[
            ("ROCKETMQ_CONSUMER_GROUP", "0001"),
            ("ROCKETMQ_HOME", "/home/rocketmq/rocketmq-5.3.0"),
            ("ROCKETMQ_CONFIG", "/etc/rocketmq-webhook/config.yaml"),
            ("ROCKETMQ_TOOLS_DIR", "/opt/rocketmq-tools"),
            ("ROCKETMQ_EMPTY_THING", ""),
        ]));
        assert_eq!(
            value(&layer, &[SUBSCRIPTION_DEFAULTS, "group"]),
            Some(Value::from("0001"))
        );
        assert_eq!(layer.entries.len(), 1);
        assert_eq!(layer.warnings.len(), 1, "{:?}", layer.warnings);
        assert!(
            layer.warnings[0]
                .to_string()
                .contains("ROCKETMQ_EMPTY_THING"),
            "{:?}",
            layer.warnings
        );
    }

    #[test]
    fn typos_warn_with_a_suggestion() {
        let layer = read(&env(&[("ROCKETMQ_CONSUME_THREAD_MAXX", "4")]));
        assert!(layer.errors.is_empty());
        assert_eq!(
            layer.warnings,
            [ConfigWarning::UnknownVariable {
                variable: "ROCKETMQ_CONSUME_THREAD_MAXX".to_owned(),
                suggestion: Some("ROCKETMQ_CONSUME_THREAD_MAX".to_owned()),
            }]
        );
    }

    #[test]
    fn two_variables_for_one_key_are_an_error() {
        let layer = read(&env(&[
            ("ROCKETMQ_ADMIN_LISTEN", "0.0.0.0:9091"),
            ("ROCKETMQ_ADMIN__LISTEN", "0.0.0.0:9092"),
        ]));
        let text = layer
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(text[0].contains("`admin.listen`"), "{text:?}");
        assert!(
            text[0].contains("ROCKETMQ_ADMIN_LISTEN sets it too"),
            "{text:?}"
        );
        assert!(text[0].contains("ROCKETMQ_ADMIN__LISTEN"), "{text:?}");
        // A subscription's own key beside the default for all is layering, not a clash.
        let layer = read(&env(&[
            ("ROCKETMQ_TOPIC", "a"),
            ("ROCKETMQ_SUBSCRIPTIONS__0__TOPIC", "b"),
        ]));
        assert!(layer.errors.is_empty(), "{:?}", layer.errors);
    }

    /// Names that spell out a key instead of its variable's name are pointed to the variable
    /// (or the path form, for keys without one).
    #[test]
    fn names_that_spell_out_a_key_are_pointed_to_its_variable() {
        for (name, want) in [
            (
                "ROCKETMQ_WEBHOOK_BEARER_TOKEN",
                Some("ROCKETMQ_WEBHOOK_TOKEN"),
            ),
            (
                "ROCKETMQ_WEBHOOK_SIGNING_SECRET",
                Some("ROCKETMQ_WEBHOOK_SECRET"),
            ),
            (
                "ROCKETMQ_MAX_RECONSUME_TIMES",
                Some("ROCKETMQ_MAX_RETRY_TIMES"),
            ),
            ("ROCKETMQ_CONSUME_FROM", Some("ROCKETMQ_CONSUME_FROM_WHERE")),
            ("ROCKETMQ_RPC_TIMEOUT", Some("ROCKETMQ_CLIENT__RPC_TIMEOUT")),
            (
                "ROCKETMQ_WEBHOOK_TIMEOUT",
                Some("ROCKETMQ_SUBSCRIPTION_DEFAULTS__WEBHOOK__TIMEOUT"),
            ),
            // Several keys end so: no guess.
            ("ROCKETMQ_TIMEOUT", None),
            ("ROCKETMQ_SOMETHING_ELSE", None),
        ] {
            let layer = read(&env(&[(name, "x")]));
            assert_eq!(
                layer.warnings,
                [ConfigWarning::UnknownVariable {
                    variable: name.to_owned(),
                    suggestion: want.map(str::to_owned),
                }],
                "{name}"
            );
        }
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let layer = read(&env(&[("ROCKETMQ_CONSUME_TIMEOUT", "soon")]));
        let text = layer.errors[0].to_string();
        assert!(
            text.contains("environment ROCKETMQ_CONSUME_TIMEOUT"),
            "{text}"
        );
        assert!(text.contains("minutes"), "{text}");
    }

    #[test]
    fn rocketmq_prefix_beats_plain_namesrv_addr_and_minus_one_is_default() {
        let layer = read(&env(&[
            ("ROCKETMQ_NAMESRV_ADDR", "b:2"),
            ("NAMESRV_ADDR", "a:1"),
            ("ROCKETMQ_MAX_RETRY_TIMES", "-1"),
        ]));
        assert_eq!(value(&layer, &["namesrv_addr"]), Some(Value::from("b:2")));
        assert_eq!(
            value(&layer, &[SUBSCRIPTION_DEFAULTS, "max_reconsume_times"]),
            None
        );
        // Aliases with a documented order, not a clash.
        assert!(layer.errors.is_empty(), "{:?}", layer.errors);
    }

    #[test]
    fn the_list_keys_are_found_from_the_defaults() {
        let keys: Vec<String> = list_keys().iter().map(|k| k.join(".")).collect();
        assert_eq!(
            keys,
            [
                "subscriptions.*.allocate_queues",
                "subscriptions.*.webhook.drop_codes",
                "subscriptions.*.webhook.retry_codes",
            ]
        );
    }

    #[test]
    fn list_keys_take_comma_separated_items() {
        let layer = read(&env(&[
            (
                "ROCKETMQ_SUBSCRIPTIONS__1__WEBHOOK__RETRY_CODES",
                "429, 5xx ",
            ),
            ("ROCKETMQ_SUBSCRIPTION_DEFAULTS__WEBHOOK__DROP_CODES", "404"),
        ]));
        assert!(layer.errors.is_empty(), "{:?}", layer.errors);
        let list = |items: &[&str]| {
            Value::from(
                items
                    .iter()
                    .map(|i| Value::from((*i).to_owned()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            value(&layer, &["subscriptions", "1", "webhook", "retry_codes"]),
            Some(list(&["429", "5xx"]))
        );
        assert_eq!(
            value(&layer, &[SUBSCRIPTION_DEFAULTS, "webhook", "drop_codes"]),
            Some(list(&["404"]))
        );
        let layer = read(&env(&[(
            "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__DROP_CODES",
            " [] ",
        )]));
        assert_eq!(
            value(&layer, &["subscriptions", "0", "webhook", "drop_codes"]),
            Some(list(&[]))
        );
        let layer = read(&env(&[(
            "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__RETRY_CODES",
            "429,",
        )]));
        let text = layer.errors[0].to_string();
        assert!(
            text.contains("item 2 of the comma-separated list is empty"),
            "{text}"
        );
    }

    #[test]
    fn nested_variables_set_paths() {
        let layer = read(&env(&[(
            "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__URL",
            "http://h/x",
        )]));
        assert_eq!(
            value(&layer, &["subscriptions", "0", "webhook", "url"]),
            Some(Value::from("http://h/x"))
        );
    }
}
