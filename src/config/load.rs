//! Loading: read the layers named by [`Sources`], merge them into one figment tree with
//! provenance, extract the typed [`Config`] and validate it.
//!
//! The layers are merged here rather than by stacking figment providers because
//! `subscriptions:` is a list: figment replaces lists wholesale, but the environment and
//! `subscription_defaults` must fill in each entry key by key. figment still does the typed
//! extraction (lossy, so `"32"` from the environment can fill a number while `"0001"` stays a
//! string), and its error paths are mapped back to file lines and variable names.

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;

use super::env::{self, EnvLayer, SUBSCRIPTION_DEFAULTS};
use super::error::{closest, ConfigError, ConfigWarning, Origin};
use super::tree::{
    display_path, key_path, overlay, render_value, set_path, value_at, Layer, LineIndex, Path,
    Provenance,
};
use super::values::Profile;
use super::{Config, Subscription};

/// Where configuration comes from. Tests build one by hand; the daemon uses
/// [`Sources::from_process`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The YAML file, if any.
    pub file: Option<PathBuf>,
    /// Environment variables as (name, value) pairs; later duplicates win.
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The process environment plus an optional file. Variables whose name or value is not
    /// UTF-8 are skipped (none of ours can be).
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self { file, env }
    }

    /// The warnings the environment alone gives (unknown `ROCKETMQ_*` variables), for when
    /// [`Config::load`] failed and its warnings went with it: a misspelt variable is often
    /// what the error is about (`ROCKETMQ_TOPPIC` leaves the topic missing).
    pub fn env_warnings(&self) -> Vec<ConfigWarning> {
        env::read(&self.env).warnings
    }

    /// Sets the file.
    pub fn with_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// Adds one environment variable.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// Identity keys: when the file lists no subscriptions, any of these set in the defaults makes
/// the defaults a subscription of their own.
const IDENTITY: &[&[&str]] = &[&["group"], &["topic"], &["webhook", "url"]];

impl Config {
    /// Loads, merges and validates the configuration (see the [module docs](crate::config) for
    /// precedence). Nothing connects or binds here.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key, its origin and the bad value, for an unreadable file,
    /// invalid YAML, an unknown key (with the closest valid key), a value of the wrong type or
    /// out of range, or a failed cross-field check. Several problems come as
    /// [`ConfigError::Several`].
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let file = match &sources.file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some((path.clone(), text))
            }
            None => None,
        };
        let mut env = env::read(&sources.env);
        let mut errors = Vec::new();

        // One index of the file's lines serves its duplicate keys, a bad `profile:` and every
        // later error's origin.
        let file_index = file
            .as_ref()
            .map(|(path, text)| (path.clone(), LineIndex::new(text)));
        let file_dict = match (&file, &file_index) {
            (Some((path, text)), Some((_, index))) => {
                for (key, first, again) in index.duplicates() {
                    errors.push(ConfigError::Invalid {
                        key: display_path(key),
                        origin: Origin::File {
                            path: path.clone(),
                            line: Some(*again),
                            written: None,
                        },
                        value: "(repeated)".to_owned(),
                        reason: format!("the key is already set on line {first}"),
                    });
                }
                parse_yaml(text, Some(path))?
            }
            _ => Dict::new(),
        };

        let profile = match choose_profile(&env, &file_dict, file_index.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let profile_dict = match profile {
            Some(p) => parse_yaml(p.yaml(), None)?,
            None => Dict::new(),
        };

        let mut prov = Provenance::new(file_index, profile.map(|p| LineIndex::new(p.yaml())));
        let mut tree = Dict::new();
        if let Some(p) = profile {
            overlay(
                &mut tree,
                &profile_dict,
                &[],
                &[],
                &Layer::Profile(p),
                &mut prov,
            );
        }
        overlay(&mut tree, &file_dict, &[], &[], &Layer::File, &mut prov);
        let (indexed, plain): (Vec<_>, Vec<_>) = env
            .entries
            .iter()
            .partition(|e| e.path.first().map(String::as_str) == Some("subscriptions"));
        for entry in plain {
            let layer = Layer::Env(entry.variable.clone());
            set_path(
                &mut tree,
                &entry.path,
                entry.value.clone(),
                &layer,
                &mut prov,
            );
        }

        let subscriptions = expand_subscriptions(&mut tree, &mut prov, &mut errors);
        let mut subscriptions = subscriptions.unwrap_or_default();
        for entry in indexed {
            apply_indexed(entry, &mut subscriptions, &mut prov, &mut errors);
        }
        tree.insert("subscriptions".to_owned(), Value::from(subscriptions));

        errors.append(&mut env.errors);
        if let Some(error) = ConfigError::from_list(errors) {
            return Err(error);
        }

        let mut config: Self = Figment::from(Serialized::defaults(&tree))
            .extract_lossy()
            .map_err(|e| map_figment_error(e, &tree, &prov))?;
        config.provenance = prov;
        config.warnings = env.warnings.clone();
        let unused = config.unused_setting_warnings();
        config.resolve(&env, &tree);
        config.validate()?;
        let found = config.setting_warnings();
        config.warnings.extend(found);
        config.warnings.extend(unused);
        Ok(config)
    }

    /// Fills the values whose default depends on other values (`tree`: what the layers set).
    fn resolve(&mut self, env: &EnvLayer, tree: &Dict) {
        for (i, sub) in self.subscriptions.iter_mut().enumerate() {
            dedupe_headers(i, &mut sub.webhook.headers, &self.provenance);
            // The minimum has no effect (kept for compatibility): its default, or a profile's,
            // must not turn a smaller `consume_thread_max` into an error about a key the
            // operator never wrote.
            let min_key = key_path!["subscriptions", i, "consume_thread_min"];
            let written = value_at(tree, &min_key).is_some()
                && !matches!(self.provenance.origin(&min_key), Origin::Profile { .. });
            if !written {
                sub.consume_thread_min = sub.consume_thread_min.min(sub.consume_thread_max.max(1));
            }
        }
        for sub in &mut self.subscriptions {
            if sub.name.trim().is_empty() && !sub.group.is_empty() && !sub.topic.is_empty() {
                sub.name = format!("{}/{}", sub.group, sub.topic);
            }
            if sub.webhook.concurrency.is_none() {
                // At least 1: a maximum of 0 is reported under its own key, not a second time
                // as this derived value.
                sub.webhook.concurrency = Some(sub.consume_thread_max.max(1));
            }
            if let (Some(home), Ok(rest)) = (&env.home, sub.offset_store_path.strip_prefix("~")) {
                sub.offset_store_path = PathBuf::from(home).join(rest);
            }
        }
        if self.delivery.max_in_flight.is_none() {
            let largest = self
                .subscriptions
                .iter()
                .map(Subscription::webhook_concurrency);
            // Clamped to the valid range: an out-of-range `webhook.concurrency` is reported
            // under its own key, not a second time as this derived value.
            self.delivery.max_in_flight = largest
                .chain([super::DEFAULT_MAX_IN_FLIGHT])
                .max()
                .map(|n| n.min(super::validate::MAX_IN_FLIGHT_LIMIT));
        }
    }
}

/// Header names are case-insensitive, but the layers merge as maps with case-sensitive keys:
/// `X-Api-Key` from the file and `x-api-key` from a variable (always lower-case) would both be
/// sent. Of names equal but for case, the one of the layer with precedence stays.
fn dedupe_headers(index: usize, headers: &mut BTreeMap<String, String>, prov: &Provenance) {
    let mut winners: BTreeMap<String, (u8, String)> = BTreeMap::new();
    let mut key = key_path!["subscriptions", index, "webhook", "headers", ""];
    for name in headers.keys() {
        if let Some(last) = key.last_mut() {
            last.clone_from(name);
        }
        let rank = precedence(&prov.origin(&key));
        let lower = name.to_ascii_lowercase();
        match winners.get(&lower) {
            Some((best, _)) if *best >= rank => {}
            _ => {
                winners.insert(lower, (rank, name.clone()));
            }
        }
    }
    headers.retain(|name, _| winners.values().any(|(_, kept)| kept == name));
}

/// The order in which the layers of a subscription key are applied (see the [module
/// docs](crate::config)), highest last.
fn precedence(origin: &Origin) -> u8 {
    match origin {
        Origin::Default => 0,
        Origin::Profile { .. } => 1,
        // From `subscription_defaults:` (the key was written under another path).
        Origin::File {
            written: Some(_), ..
        } => 2,
        Origin::Env { variable } if !variable.starts_with("ROCKETMQ_SUBSCRIPTIONS__") => 3,
        Origin::File { .. } => 4,
        // `ROCKETMQ_SUBSCRIPTIONS__<i>__...`, and any origin added later: last.
        _ => 5,
    }
}

/// Parses YAML text into a figment map; an empty document is an empty map.
fn parse_yaml(text: &str, file: Option<&PathBuf>) -> Result<Dict, ConfigError> {
    let origin = |line: Option<usize>| match file {
        Some(path) => Origin::File {
            path: path.clone(),
            line,
            written: None,
        },
        None => Origin::Default,
    };
    let value: Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
        origin: origin(e.location().map(|l| l.line())),
        message: e.to_string(),
    })?;
    match value {
        Value::Dict(_, dict) => Ok(dict),
        Value::Empty(..) => Ok(Dict::new()),
        other => Err(ConfigError::Syntax {
            origin: origin(Some(1)),
            message: format!(
                "the top level must be a mapping of keys, found {}",
                render_value(Some(&other))
            ),
        }),
    }
}

/// `ROCKETMQ_PROFILE` wins over the file's `profile:`.
fn choose_profile(
    env: &EnvLayer,
    file: &Dict,
    file_index: Option<&(PathBuf, LineIndex)>,
) -> Result<Option<Profile>, ConfigError> {
    let (value, origin) = if let Some(entry) = env.find(&["profile"]) {
        (
            entry.value.clone(),
            Origin::Env {
                variable: entry.variable.clone(),
            },
        )
    } else if let Some(value) = file.get("profile") {
        let origin = Origin::File {
            path: file_index.map(|f| f.0.clone()).unwrap_or_default(),
            line: file_index.and_then(|(_, index)| index.line(&["profile".to_owned()])),
            written: None,
        };
        (value.clone(), origin)
    } else {
        return Ok(None);
    };
    match &value {
        Value::Empty(..) => Ok(None),
        Value::String(_, name) => name
            .parse::<Profile>()
            .map(Some)
            .map_err(|reason| invalid(&["profile".to_owned()], origin, &value, reason)),
        other => Err(invalid(
            &["profile".to_owned()],
            origin,
            other,
            format!("expected one of {}", Profile::NAMES.join(", ")),
        )),
    }
}

fn invalid(path: &[String], origin: Origin, value: &Value, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: display_path(path),
        origin,
        value: render_value(Some(value)),
        reason,
    }
}

/// Folds `subscription_defaults` into every entry of `subscriptions` (or into a single
/// subscription when the list is empty and the defaults name one) and removes both from the
/// tree. Returns the merged entries.
fn expand_subscriptions(
    tree: &mut Dict,
    prov: &mut Provenance,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<Value>> {
    let defaults_path = key_path![SUBSCRIPTION_DEFAULTS];
    let defaults = match tree.remove(SUBSCRIPTION_DEFAULTS) {
        None | Some(Value::Empty(..)) => Dict::new(),
        Some(Value::Dict(_, dict)) => dict,
        Some(other) => {
            errors.push(invalid(
                &defaults_path,
                prov.origin(&defaults_path),
                &other,
                "expected a mapping of subscription keys".to_owned(),
            ));
            return None;
        }
    };
    let list_path = key_path!["subscriptions"];
    let list = match tree.remove("subscriptions") {
        None | Some(Value::Empty(..)) => Vec::new(),
        Some(Value::Array(_, items)) => items,
        Some(other) => {
            errors.push(invalid(
                &list_path,
                prov.origin(&list_path),
                &other,
                "expected a list of subscriptions (`- group: ...`)".to_owned(),
            ));
            return None;
        }
    };

    let mut merged = Vec::new();
    if list.is_empty() {
        let names_one = IDENTITY.iter().any(|key| {
            let key: Path = key.iter().map(|k| (*k).to_owned()).collect();
            value_at(&defaults, &key).is_some()
        });
        if names_one {
            prov.copy(
                &defaults_path,
                &["subscriptions".to_owned(), "0".to_owned()],
            );
            merged.push(Value::from(defaults));
        }
        return Some(merged);
    }
    for (i, item) in list.into_iter().enumerate() {
        let item_path = key_path!["subscriptions", i];
        let Value::Dict(_, item) = item else {
            errors.push(invalid(
                &item_path,
                prov.origin(&item_path),
                &item,
                "expected a mapping (`group: ...`, `topic: ...`)".to_owned(),
            ));
            continue;
        };
        // The entry's own keys were recorded when the file was merged; re-record them on top of
        // the defaults' provenance.
        let item_layer = prov.layer(&item_path).cloned().unwrap_or(Layer::File);
        let mut sub = defaults.clone();
        prov.copy(&defaults_path, &item_path);
        overlay(&mut sub, &item, &item_path, &item_path, &item_layer, prov);
        merged.push(Value::from(sub));
    }
    Some(merged)
}

/// Applies `ROCKETMQ_SUBSCRIPTIONS__<i>__...` to entry `i`.
fn apply_indexed(
    entry: &env::EnvEntry,
    subscriptions: &mut [Value],
    prov: &mut Provenance,
    errors: &mut Vec<ConfigError>,
) {
    let origin = Origin::Env {
        variable: entry.variable.clone(),
    };
    let index = entry.path.get(1).and_then(|i| i.parse::<usize>().ok());
    let Some(index) = index else {
        errors.push(ConfigError::UnknownKey {
            key: display_path(&entry.path),
            origin,
            suggestion: Some("subscriptions[<index>].<key>".to_owned()),
        });
        return;
    };
    if entry.path.len() < 3 {
        // `set_path` below would be given an empty path and set nothing: a variable that
        // names a whole subscription must fail, not be ignored.
        errors.push(ConfigError::Invalid {
            key: display_path(&entry.path),
            origin,
            value: shown_value(&entry.path, Some(&entry.value)),
            reason: format!(
                "a subscription cannot be set by one variable; set its keys, e.g. \
                 {}__TOPIC",
                entry.variable
            ),
        });
        return;
    }
    let Some(Value::Dict(_, sub)) = subscriptions.get_mut(index) else {
        errors.push(ConfigError::Invalid {
            key: display_path(&entry.path),
            origin,
            value: shown_value(&entry.path, Some(&entry.value)),
            reason: format!(
                "there is no subscription {index}: {} are defined",
                subscriptions.len()
            ),
        });
        return;
    };
    // Paths inside the entry are relative to it; provenance is kept by full path.
    let layer = Layer::Env(entry.variable.clone());
    set_path(
        sub,
        &entry.path[2..],
        entry.value.clone(),
        &layer,
        &mut Provenance::default(),
    );
    prov.assign(&entry.path, &entry.value, &layer);
}

/// The value at `path` as an error quotes it: credentials (secrets, sensitive-looking header
/// values) as `***`, a webhook URL without its password, as `check-config` shows them.
fn shown_value(path: &[String], value: Option<&Value>) -> String {
    match value {
        Some(_) if is_credential(path) => "***".to_owned(),
        Some(Value::String(_, url)) if path.last().is_some_and(|k| k == "url") => {
            format!("{:?}", super::shown_url(url))
        }
        other => render_value(other),
    }
}

/// Whether the value at `path` is a credential: a secret, a sensitive-looking header, or a
/// mapping that holds them (headers, a webhook, a subscription) given as text by mistake, e.g.
/// `ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__HEADERS="Authorization: Bearer ..."`.
fn is_credential(path: &[String]) -> bool {
    let sensitive_header = path.len() >= 2
        && path[path.len() - 2] == "headers"
        && super::is_sensitive_header(&path[path.len() - 1]);
    let holds_credentials = matches!(
        path.last().map(String::as_str),
        Some("headers" | "webhook" | "subscriptions" | "subscription_defaults")
    ) || (path.len() == 2 && path[0] == "subscriptions");
    env::is_secret_key(path) || sensitive_header || holds_credentials
}

/// What kind of value is at hand, without the value (for errors about credentials).
fn value_kind(value: Option<&Value>) -> &'static str {
    match value {
        None => "nothing",
        Some(Value::String(..) | Value::Char(..)) => "text",
        Some(Value::Bool(..)) => "a boolean",
        Some(Value::Num(..)) => "a number",
        Some(Value::Empty(..)) => "null",
        Some(Value::Dict(..)) => "a mapping",
        Some(Value::Array(..)) => "a list",
    }
}

/// Turns a figment extraction error into a [`ConfigError`] with origin and value.
fn map_figment_error(error: figment::Error, tree: &Dict, prov: &Provenance) -> ConfigError {
    use figment::error::Kind;

    let errors = error
        .into_iter()
        .map(|e| {
            let path: Path = e.path.clone();
            let origin = prov.origin(&path);
            let value = || shown_value(&path, value_at(tree, &path));
            match &e.kind {
                Kind::UnknownField(field, expected) => ConfigError::UnknownKey {
                    key: display_path(&prov.written_key(&path)),
                    origin,
                    suggestion: closest(field, expected.iter().copied()).map(str::to_owned),
                },
                Kind::UnknownVariant(given, expected) => ConfigError::Invalid {
                    key: display_path(&path),
                    origin,
                    value: value(),
                    reason: format!(
                        "unknown value `{given}`, expected one of {}",
                        expected.join(", ")
                    ),
                },
                Kind::InvalidType(actual, expected) => {
                    // figment's `actual` quotes the value.
                    let mut reason = if is_credential(&path) {
                        format!(
                            "expected {expected}, found {}",
                            value_kind(value_at(tree, &path))
                        )
                    } else {
                        format!("expected {expected}, found {actual}")
                    };
                    if expected.contains("string") && is_number(value_at(tree, &path)) {
                        reason.push_str(
                            "; quote it in YAML (e.g. \"0001\") to keep it text, leading zeros \
                             included",
                        );
                    }
                    ConfigError::Invalid {
                        key: display_path(&path),
                        origin,
                        value: value(),
                        reason,
                    }
                }
                Kind::MissingField(field) => {
                    let mut full = path.clone();
                    full.push(field.to_string());
                    ConfigError::Invalid {
                        key: display_path(&full),
                        origin: prov.origin(&full),
                        value: "(not set)".to_owned(),
                        reason: "this key is required".to_owned(),
                    }
                }
                Kind::Message(message) => ConfigError::Invalid {
                    key: display_path(&path),
                    origin,
                    value: value(),
                    reason: message.clone(),
                },
                other => ConfigError::Invalid {
                    key: display_path(&path),
                    origin,
                    value: value(),
                    reason: other.to_string(),
                },
            }
        })
        .collect();
    ConfigError::from_list(errors).unwrap_or(ConfigError::NoSubscriptions)
}

fn is_number(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Num(..)))
}
