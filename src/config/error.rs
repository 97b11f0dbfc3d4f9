//! Configuration errors and warnings: every one names the key, where its value came from and
//! (except for secrets) the bad value, so an operator can fix it without reading code.
//!
//! Invariant: a [`ConfigError`] is never retriable; the daemon exits with [`EXIT_CONFIG`].

use std::fmt;
use std::path::PathBuf;

use super::values::Profile;

/// Process exit code for any bad configuration (usage error), before anything connects.
pub const EXIT_CONFIG: i32 = 2;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default (nothing set the key).
    Default,
    /// The YAML file.
    File {
        /// Path of the file as given.
        path: PathBuf,
        /// 1-based line of the key, when it could be found in the text.
        line: Option<usize>,
        /// The key as written in the file, when it differs from the reported key (a value
        /// inherited from `subscription_defaults`).
        written: Option<String>,
    },
    /// A built-in profile (`profile:` or `ROCKETMQ_PROFILE`).
    Profile {
        /// The profile.
        profile: Profile,
        /// 1-based line in `config/profiles/<profile>.yaml`, when found.
        line: Option<usize>,
        /// The key as written in the profile file, when it differs from the reported key.
        written: Option<String>,
    },
    /// An environment variable.
    Env {
        /// The variable name, e.g. `ROCKETMQ_TOPIC`.
        variable: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File {
                path,
                line,
                written,
            } => {
                write!(f, "file {}", path.display())?;
                if let Some(line) = line {
                    write!(f, " line {line}")?;
                }
                if let Some(written) = written {
                    write!(f, " (as `{written}`)")?;
                }
                Ok(())
            }
            Self::Profile {
                profile,
                line,
                written,
            } => {
                write!(f, "profile {profile}, config/profiles/{profile}.yaml")?;
                if let Some(line) = line {
                    write!(f, " line {line}")?;
                }
                if let Some(written) = written {
                    write!(f, " (as `{written}`)")?;
                }
                Ok(())
            }
            Self::Env { variable } => write!(f, "environment {variable}"),
        }
    }
}

/// A bad configuration. Every variant names the key (as a path such as
/// `subscriptions[0].webhook.url`) and its [`Origin`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML (or its top level is not a mapping).
    #[error("{origin}: invalid YAML: {message}")]
    Syntax {
        /// The file (and line, when the parser reports one).
        origin: Origin,
        /// The parser's message.
        message: String,
    },
    /// A key that does not exist in the configuration tree.
    #[error("unknown key `{key}` ({origin}){}", did_you_mean(suggestion.as_deref()))]
    UnknownKey {
        /// The key path as written.
        key: String,
        /// Where it was written.
        origin: Origin,
        /// The closest valid key at the same level, if one is close.
        suggestion: Option<String>,
    },
    /// A key whose value is wrong (type, range, format or a cross-field rule).
    #[error("invalid `{key}` = {value} ({origin}): {reason}")]
    Invalid {
        /// The key path.
        key: String,
        /// Where the value came from.
        origin: Origin,
        /// The value as given (`***` for secrets).
        value: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// Neither the file nor the environment defines a subscription.
    #[error(
        "no subscriptions: list them under `subscriptions:` in the file, or set \
         ROCKETMQ_CONSUMER_GROUP, ROCKETMQ_TOPIC and ROCKETMQ_WEBHOOK_URL"
    )]
    NoSubscriptions,
    /// Several of the above, in the order found.
    #[error("{} configuration errors:\n{}", .0.len(), list(.0))]
    Several(Vec<Self>),
}

impl ConfigError {
    /// Configuration errors never go away by retrying.
    pub fn is_retriable(&self) -> bool {
        false
    }

    /// The process exit code for this error: always [`EXIT_CONFIG`].
    pub fn exit_code(&self) -> i32 {
        EXIT_CONFIG
    }

    /// The individual errors (one, or the members of [`ConfigError::Several`]).
    pub fn errors(&self) -> Vec<&Self> {
        match self {
            Self::Several(all) => all.iter().collect(),
            one => vec![one],
        }
    }

    /// Folds a list into one error: `None` when empty, the error itself when alone.
    pub(crate) fn from_list(mut errors: Vec<Self>) -> Option<Self> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Self::Several(errors)),
        }
    }
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!("; did you mean `{s}`?"))
}

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Something suspicious that does not stop the daemon. `run` logs these once logging is set up
/// (they are found before: logging is configured by the same file), and `check-config` prints
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigWarning {
    /// A `ROCKETMQ_*` variable that is not ours (other RocketMQ tools set their own).
    UnknownVariable {
        /// The environment variable.
        variable: String,
        /// The closest known variable, when the name looks like a typo.
        suggestion: Option<String>,
    },
    /// A setting accepted for compatibility whose value changes nothing.
    NoEffect {
        /// The key, e.g. `subscriptions[0].enable_auto_recovery`.
        key: String,
        /// Where its value came from.
        origin: Origin,
        /// The value as written.
        value: String,
        /// What happens instead.
        reason: String,
    },
    /// A setting that is valid but can break a promise of the delivery contract in some
    /// conditions (a batch deadline shorter than the requests the batch may send one after
    /// another): an error would refuse configurations that work while the endpoint answers
    /// quickly.
    Risk {
        /// The key, e.g. `subscriptions[0].consume_timeout`.
        key: String,
        /// Where its value came from.
        origin: Origin,
        /// The value as written.
        value: String,
        /// What can go wrong and how to avoid it.
        reason: String,
    },
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownVariable {
                variable,
                suggestion,
            } => write!(
                f,
                "ignoring unknown environment variable {variable}{}",
                did_you_mean(suggestion.as_deref())
            ),
            Self::NoEffect {
                key,
                origin,
                value,
                reason,
            } => write!(f, "`{key}` = {value} ({origin}) has no effect: {reason}"),
            Self::Risk {
                key,
                origin,
                value,
                reason,
            } => write!(f, "`{key}` = {value} ({origin}): {reason}"),
        }
    }
}

/// Levenshtein distance between two ASCII-ish strings (case-insensitive).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_ascii_lowercase().chars().collect();
    let b: Vec<char> = b.to_ascii_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if close enough to be a plausible typo: at most a third of
/// the word's length (at least 2, at most 3) edits away.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(2, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("topic", "topic"), 0);
        assert_eq!(edit_distance("topc", "topic"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn closest_rejects_far_words() {
        let keys = ["topic", "group", "expression"];
        assert_eq!(closest("topc", keys), Some("topic"));
        assert_eq!(closest("gruop", keys), Some("group"));
        assert_eq!(closest("zzzzzz", keys), None);
    }

    #[test]
    fn several_lists_every_error() {
        let err = ConfigError::from_list(vec![
            ConfigError::NoSubscriptions,
            ConfigError::Invalid {
                key: "a".into(),
                origin: Origin::Env {
                    variable: "ROCKETMQ_A".into(),
                },
                value: "1".into(),
                reason: "bad".into(),
            },
        ])
        .expect("two errors");
        let text = err.to_string();
        assert!(text.starts_with("2 configuration errors"), "{text}");
        assert!(text.contains("environment ROCKETMQ_A"), "{text}");
        assert_eq!(err.errors().len(), 2);
        assert_eq!(err.exit_code(), 2);
        assert!(!err.is_retriable());
    }
}
