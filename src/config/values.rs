//! Typed leaf values of the configuration tree: enumerations, secrets, name-server lists,
//! timestamps, status-code classes, and the serde adapters that put units into types.
//!
//! Invariants: every value here is valid once constructed (parsing is the only way in), enum
//! names parse case-insensitively with `-` or `_`, and serialising a value yields text that
//! parses back to the same value (secrets excepted: they serialise as `***`).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::error::closest;
use super::AllocateQueue;

/// Upper-cases and turns `-`/space into `_` so `avg-by-circle` matches `AVG_BY_CIRCLE`.
fn normalize(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| match c {
            '-' | ' ' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

fn unknown_value(given: &str, names: &[&str]) -> String {
    let hint = closest(given, names.iter().copied())
        .map_or_else(String::new, |c| format!("; did you mean `{c}`?"));
    format!(
        "unknown value `{given}`, expected one of {}{hint}",
        names.join(", ")
    )
}

/// Declares a string-valued enumeration: canonical name, accepted aliases, `FromStr`,
/// `Display`, and serde impls that read and write the canonical name.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $canon:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// The canonical names, as written in YAML.
            pub const NAMES: &'static [&'static str] = &[$($canon),+];

            /// The canonical name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $canon),+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                let given = normalize(s);
                $(
                    if given == normalize($canon) $(|| given == normalize($alias))* {
                        return Ok(Self::$variant);
                    }
                )+
                Err(unknown_value(s, Self::NAMES))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(FromStrVisitor::<Self>::new(Self::NAMES))
            }
        }
    };
}

/// Deserialises a string through `FromStr<Err = String>`.
struct FromStrVisitor<T> {
    names: &'static [&'static str],
    _marker: std::marker::PhantomData<T>,
}

impl<T> FromStrVisitor<T> {
    fn new(names: &'static [&'static str]) -> Self {
        Self {
            names,
            _marker: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr<Err = String>> Visitor<'_> for FromStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "one of {}", self.names.join(", "))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

string_enum! {
    /// How the subscription expression is interpreted (broker-side filtering).
    pub enum ExpressionType {
        /// Tag list: `*`, or `tagA || tagB`.
        Tag => "TAG",
        /// SQL92 over message properties (the broker must enable `enablePropertyFilter`).
        Sql92 => "SQL92" | "SQL",
    }
}

string_enum! {
    /// How a consumer group shares a topic.
    pub enum MessageModel {
        /// Each message goes to one consumer of the group; queues are divided among them and
        /// offsets live on the broker.
        Clustering => "CLUSTERING",
        /// Every consumer of the group gets every message; offsets live in a local file.
        Broadcasting => "BROADCASTING",
    }
}

string_enum! {
    /// Where a group with no committed offset starts (ignored once an offset exists).
    pub enum ConsumeFrom {
        /// New messages only (the queue's max offset).
        LastOffset => "LAST_OFFSET" | "CONSUME_FROM_LAST_OFFSET",
        /// Everything still stored (the queue's min offset).
        FirstOffset => "FIRST_OFFSET" | "CONSUME_FROM_FIRST_OFFSET",
        /// Messages stored at or after `consume_timestamp`.
        Timestamp => "TIMESTAMP" | "CONSUME_FROM_TIMESTAMP",
    }
}

string_enum! {
    /// How the queues of a topic are divided among the consumers of a group (clustering).
    pub enum AllocateStrategy {
        /// Contiguous, nearly equal ranges (Java `AllocateMessageQueueAveragely`, "AVG").
        Average => "AVERAGE" | "AVG",
        /// Round-robin (Java `AllocateMessageQueueAveragelyByCircle`, "AVG_BY_CIRCLE").
        AverageByCircle => "AVERAGE_BY_CIRCLE" | "AVG_BY_CIRCLE",
        /// Consistent-hash ring over client ids (Java "CONSISTENT_HASH"); few moves on change.
        ConsistentHash => "CONSISTENT_HASH" | "HASH",
        /// Exactly the queues listed in `allocate_queues` (Java "CONFIG").
        Config => "CONFIG",
    }
}

string_enum! {
    /// What an orderly subscription does with a message that failed `max_reconsume_times`.
    pub enum OrderlyDlqPolicy {
        /// Send it to `%DLQ%<group>` and move the queue on (the Java behaviour).
        Dlq => "DLQ",
        /// Keep retrying in place; the queue stays blocked until the endpoint accepts it.
        Block => "BLOCK",
    }
}

string_enum! {
    /// How a batch is encoded in the HTTP request (architecture.md section 5).
    pub enum WebhookFormat {
        /// One JSON envelope per batch with a `messages` array.
        Json => "json",
        /// One message per request, body untouched, metadata in `rocketmq-*` headers.
        Raw => "raw",
        /// CloudEvents binary mode: one message per request, `ce-*` headers.
        CloudEvents => "cloudevents" | "cloudevents_binary",
        /// CloudEvents batch mode: `application/cloudevents-batch+json`.
        CloudEventsBatch => "cloudevents_batch",
    }
}

impl WebhookFormat {
    /// Whether each request carries one message, so that a batch becomes several requests
    /// (`raw`, `cloudevents`): its delivery can then take several `webhook.timeout`s.
    pub fn one_message_per_request(self) -> bool {
        matches!(self, Self::Raw | Self::CloudEvents)
    }
}

string_enum! {
    /// The HTTP method used for deliveries.
    pub enum HttpMethod {
        /// `POST` (default).
        Post => "POST",
        /// `PUT`.
        Put => "PUT",
        /// `PATCH`.
        Patch => "PATCH",
    }
}

string_enum! {
    /// Log output format.
    pub enum LogFormat {
        /// Human-readable lines.
        Pretty => "pretty" | "text",
        /// One JSON object per line.
        Json => "json",
    }
}

string_enum! {
    /// A built-in set of defaults, applied under the file: `config/profiles/<name>.yaml`.
    pub enum Profile {
        /// Large batches, many threads, deep caches.
        HighThroughput => "high_throughput",
        /// Single-message batches, short timeouts, fast failover.
        LowLatency => "low_latency",
        /// Few threads, small caches and batches.
        ResourceSaving => "resource_saving",
    }
}

/// Serde adapter for [`crate::consumer::ConsumeMode`]: case-insensitive on input, canonical
/// `CONCURRENT`/`ORDERLY` on output.
pub(crate) mod consume_mode {
    use super::{normalize, unknown_value};
    use crate::consumer::ConsumeMode;
    use serde::{de, Deserialize, Deserializer, Serializer};

    /// The canonical names.
    pub(crate) const NAMES: &[&str] = &["CONCURRENT", "ORDERLY"];

    pub(crate) fn parse(s: &str) -> Result<ConsumeMode, String> {
        match normalize(s).as_str() {
            "CONCURRENT" | "CONCURRENTLY" => Ok(ConsumeMode::Concurrent),
            "ORDERLY" | "ORDERED" => Ok(ConsumeMode::Orderly),
            _ => Err(unknown_value(s, NAMES)),
        }
    }

    pub(crate) fn name(mode: ConsumeMode) -> &'static str {
        match mode {
            ConsumeMode::Concurrent => "CONCURRENT",
            ConsumeMode::Orderly => "ORDERLY",
        }
    }

    pub(crate) fn serialize<S: Serializer>(mode: &ConsumeMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*mode))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ConsumeMode, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(de::Error::custom)
    }
}

/// Serde adapter for [`Duration`]: humantime text (`30s`, `1m 30s`, `500ms`) in and out. A bare
/// number is rejected because its unit would be a guess.
pub(crate) mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(DurationVisitor)
    }

    /// No setting needs more, and deadlines are `Instant::now() + duration`: a value of
    /// billions of years (which the syntax allows) would overflow that and panic at run time.
    const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration with a unit, such as `30s`, `500ms` or `15m`")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            let d = humantime::parse_duration(v.trim()).map_err(|e| {
                E::custom(format!(
                    "`{v}` is not a duration ({e}); write a number with a unit, such as `30s`, \
                     `500ms` or `15m`"
                ))
            })?;
            if d > LONGEST {
                return Err(E::custom(format!(
                    "`{v}` is longer than the longest duration accepted, 365 days"
                )));
            }
            Ok(d)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "`{v}` has no unit; write e.g. `{v}s` or `{v}ms`"
            )))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "`{v}` has no unit; write e.g. `{v}s` or `{v}ms`"
            )))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(format!("`{v}` has no unit; write e.g. `1500ms`")))
        }
    }
}

/// Serde adapter for [`bytesize::ByteSize`]: `100MiB`, `512KiB`, `1GiB` or a bare number of
/// bytes in; the largest exact binary unit out (so `100MiB` round-trips exactly, unlike
/// `ByteSize`'s own rounded display).
pub(crate) mod bytes {
    use bytesize::ByteSize;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn render(size: ByteSize) -> String {
        let n = size.as_u64();
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (unit, name) in UNITS {
            if n != 0 && n.is_multiple_of(unit) {
                return format!("{}{name}", n / unit);
            }
        }
        format!("{n}B")
    }

    pub(crate) fn serialize<S: Serializer>(size: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&render(*size))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        ByteSize::deserialize(d)
    }
}

// === impl Secret ===

/// A credential. `Debug`, `Display` and `Serialize` all print `***`; only [`Secret::expose`]
/// gives the value, so a secret cannot leak into logs or `check-config` output by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Call this only where the credential is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

// === impl NameServers ===

/// Name-server addresses, at least one, each `host:port` (IPv6 as `[::1]:9876`). Written as
/// `"h1:9876;h2:9876"` (RocketMQ's `;` separator; `,` is accepted too) or as a YAML list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameServers(Vec<String>);

impl NameServers {
    /// The addresses, in the order given.
    pub fn addrs(&self) -> &[String] {
        &self.0
    }
}

impl Default for NameServers {
    fn default() -> Self {
        Self(vec!["127.0.0.1:9876".to_owned()])
    }
}

/// Checks one `host:port`.
fn check_host_port(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("`{addr}` is not host:port (the port is missing)"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("`{addr}` has no valid port (1..=65535)")),
        Ok(_) => {}
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if host_ok {
        Ok(())
    } else {
        Err(format!("`{addr}` has an invalid host"))
    }
}

impl FromStr for NameServers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let addrs: Vec<String> = s
            .split([';', ','])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Self::from_list(addrs)
    }
}

impl NameServers {
    fn from_list(addrs: Vec<String>) -> Result<Self, String> {
        if addrs.is_empty() {
            return Err("at least one name server address (host:port) is required".to_owned());
        }
        for addr in &addrs {
            check_host_port(addr)?;
        }
        Ok(Self(addrs))
    }
}

impl fmt::Display for NameServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(";"))
    }
}

impl Serialize for NameServers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for NameServers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NameServers;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`host:port;host:port` or a list of host:port")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<NameServers, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<NameServers, A::Error> {
                let mut addrs = Vec::new();
                while let Some(addr) = seq.next_element::<String>()? {
                    addrs.push(addr.trim().to_owned());
                }
                NameServers::from_list(addrs).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

// === impl ConsumeTimestamp ===

/// The start point for `consume_from: TIMESTAMP`: RFC 3339 (`2024-05-01T08:00:00Z`, with a
/// `+hh:mm` offset, or a space instead of `T`) or RocketMQ's `yyyyMMddHHmmss`, which is read as
/// UTC (the Java client uses the JVM's zone; write an RFC 3339 offset to be explicit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeTimestamp {
    text: String,
    time: SystemTime,
}

impl ConsumeTimestamp {
    /// The instant.
    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// Milliseconds since the Unix epoch (what the broker's search-offset call takes).
    pub fn unix_millis(&self) -> u64 {
        self.time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl FromStr for ConsumeTimestamp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let bad = || {
            format!(
                "`{text}` is not a timestamp; write RFC 3339 (`2024-05-01T08:00:00Z`, \
                 `2024-05-01T16:00:00+08:00`) or yyyyMMddHHmmss (`20240501080000`, UTC)"
            )
        };
        let time = if text.len() == 14 && text.bytes().all(|b| b.is_ascii_digit()) {
            let iso = format!(
                "{}-{}-{}T{}:{}:{}Z",
                &text[0..4],
                &text[4..6],
                &text[6..8],
                &text[8..10],
                &text[10..12],
                &text[12..14]
            );
            humantime::parse_rfc3339(&iso).map_err(|_| bad())?
        } else {
            parse_rfc3339_with_offset(text).ok_or_else(bad)?
        };
        Ok(Self {
            text: text.to_owned(),
            time,
        })
    }
}

/// RFC 3339 with any `±hh:mm` offset (humantime alone accepts only UTC).
fn parse_rfc3339_with_offset(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    // The offset is the last 6 bytes; a multi-byte character there means there is none (and
    // splitting inside it would panic: found by tests/fuzz.rs).
    if bytes.len() > 6 && text.is_char_boundary(bytes.len() - 6) {
        let split = bytes.len() - 6;
        let (head, offset) = text.split_at(split);
        let ob = offset.as_bytes();
        if (ob[0] == b'+' || ob[0] == b'-') && ob[3] == b':' && head.contains(['T', 't', ' ']) {
            let hours: u64 = offset.get(1..3)?.parse().ok()?;
            let minutes: u64 = offset.get(4..6)?.parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let shift = Duration::from_secs(hours * 3600 + minutes * 60);
            let local = humantime::parse_rfc3339_weak(head).ok()?;
            // Local time = UTC + offset, so UTC = local - offset.
            return if ob[0] == b'+' {
                local.checked_sub(shift)
            } else {
                local.checked_add(shift)
            };
        }
    }
    humantime::parse_rfc3339_weak(text).ok()
}

impl fmt::Display for ConsumeTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ConsumeTimestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ConsumeTimestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConsumeTimestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or yyyyMMddHHmmss")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConsumeTimestamp, E> {
                v.parse().map_err(E::custom)
            }

            // An unquoted yyyyMMddHHmmss in YAML is a number.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConsumeTimestamp, E> {
                v.to_string().parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

// === impl StatusClass ===

/// An HTTP status code (`404`) or a class of them (`5xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusClass {
    first: u16,
    last: u16,
}

impl StatusClass {
    /// One exact code.
    pub fn code(code: u16) -> Result<Self, String> {
        if (100..=599).contains(&code) {
            Ok(Self {
                first: code,
                last: code,
            })
        } else {
            Err(format!("status code {code} is outside 100..=599"))
        }
    }

    /// The whole hundred `class`xx, e.g. `class(5)` is `5xx`.
    pub fn hundred(class: u16) -> Result<Self, String> {
        if (1..=5).contains(&class) {
            Ok(Self {
                first: class * 100,
                last: class * 100 + 99,
            })
        } else {
            Err(format!("status class {class}xx is outside 1xx..=5xx"))
        }
    }

    /// Whether `status` falls in this class.
    pub fn contains(self, status: u16) -> bool {
        (self.first..=self.last).contains(&status)
    }

    /// True for a whole hundred (`5xx`), false for one code.
    pub fn is_hundred(self) -> bool {
        self.first != self.last
    }
}

impl FromStr for StatusClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim().to_ascii_lowercase();
        if let Some(class) = text.strip_suffix("xx") {
            let class: u16 = class
                .parse()
                .map_err(|_| format!("`{s}` is not a status code or class like `5xx`"))?;
            return Self::hundred(class);
        }
        let code: u16 = text
            .parse()
            .map_err(|_| format!("`{s}` is not a status code or class like `5xx`"))?;
        Self::code(code)
    }
}

impl fmt::Display for StatusClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_hundred() {
            write!(f, "{}xx", self.first / 100)
        } else {
            write!(f, "{}", self.first)
        }
    }
}

impl Serialize for StatusClass {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_hundred() {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_u16(self.first)
        }
    }
}

impl<'de> Deserialize<'de> for StatusClass {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusClass;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code (404) or class (`5xx`)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusClass, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusClass, E> {
                let code =
                    u16::try_from(v).map_err(|_| E::custom(format!("{v} is not a status code")))?;
                StatusClass::code(code).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusClass, E> {
                let code =
                    u16::try_from(v).map_err(|_| E::custom(format!("{v} is not a status code")))?;
                StatusClass::code(code).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

// === impl AllocateQueue ===

impl FromStr for AllocateQueue {
    type Err = String;

    /// `<broker_name>:<queue_id>`, split at the last `:`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("`{s}` is not a queue; write `<broker_name>:<queue_id>`, e.g. `broker-a:0`");
        let (broker, queue) = s.trim().rsplit_once(':').ok_or_else(bad)?;
        let broker_name = broker.trim();
        if broker_name.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            broker_name: broker_name.to_owned(),
            queue_id: queue.trim().parse().map_err(|_| bad())?,
        })
    }
}

impl<'de> Deserialize<'de> for AllocateQueue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The mapping form, with serde's own messages for missing and unknown fields.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            broker_name: String,
            queue_id: u32,
        }

        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AllocateQueue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`{broker_name, queue_id}` or `<broker_name>:<queue_id>`")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<AllocateQueue, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<AllocateQueue, A::Error> {
                let f = Fields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(AllocateQueue {
                    broker_name: f.broker_name,
                    queue_id: f.queue_id,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_parse_case_insensitively_with_aliases() {
        assert_eq!(
            "avg".parse::<AllocateStrategy>(),
            Ok(AllocateStrategy::Average)
        );
        assert_eq!(
            "AVG_BY_CIRCLE".parse::<AllocateStrategy>(),
            Ok(AllocateStrategy::AverageByCircle)
        );
        assert_eq!(
            "hash".parse::<AllocateStrategy>(),
            Ok(AllocateStrategy::ConsistentHash)
        );
        assert_eq!(
            "consistent-hash".parse::<AllocateStrategy>(),
            Ok(AllocateStrategy::ConsistentHash)
        );
        assert_eq!(
            "CONSUME_FROM_FIRST_OFFSET".parse::<ConsumeFrom>(),
            Ok(ConsumeFrom::FirstOffset)
        );
        assert_eq!(
            "timestamp".parse::<ConsumeFrom>(),
            Ok(ConsumeFrom::Timestamp)
        );
        assert_eq!("sql92".parse::<ExpressionType>(), Ok(ExpressionType::Sql92));
        assert_eq!(
            "CloudEvents_Batch".parse::<WebhookFormat>(),
            Ok(WebhookFormat::CloudEventsBatch)
        );
        let err = "BROADCASTNG".parse::<MessageModel>().unwrap_err();
        assert!(err.contains("did you mean `BROADCASTING`"), "{err}");
    }

    #[test]
    fn name_servers_parse_host_port_lists() {
        let ns: NameServers = "a:9876; b.example:9877,[::1]:9876".parse().expect("valid");
        assert_eq!(ns.addrs(), ["a:9876", "b.example:9877", "[::1]:9876"]);
        assert_eq!(ns.to_string(), "a:9876;b.example:9877;[::1]:9876");
        assert!("a".parse::<NameServers>().is_err());
        assert!("a:0".parse::<NameServers>().is_err());
        assert!("a:99999".parse::<NameServers>().is_err());
        assert!(":9876".parse::<NameServers>().is_err());
        assert!(" ; ".parse::<NameServers>().is_err());
    }

    #[test]
    fn timestamps_accept_rfc3339_and_java_format() {
        let java: ConsumeTimestamp = "20240501080000".parse().expect("java format");
        let utc: ConsumeTimestamp = "2024-05-01T08:00:00Z".parse().expect("rfc3339");
        let offset: ConsumeTimestamp = "2024-05-01T16:00:00+08:00".parse().expect("offset");
        let negative: ConsumeTimestamp = "2024-05-01T03:00:00-05:00"
            .parse()
            .expect("negative offset");
        assert_eq!(java.time(), utc.time());
        assert_eq!(offset.time(), utc.time());
        assert_eq!(negative.time(), utc.time());
        assert_eq!(utc.unix_millis(), 1_714_550_400_000);
        assert!("yesterday".parse::<ConsumeTimestamp>().is_err());
        assert!("20241301080000".parse::<ConsumeTimestamp>().is_err());
    }

    #[test]
    fn status_classes() {
        let c: StatusClass = "5xx".parse().expect("class");
        assert!(c.contains(503) && !c.contains(499));
        assert_eq!(c.to_string(), "5xx");
        let one: StatusClass = "429".parse().expect("code");
        assert!(one.contains(429) && !one.contains(430));
        assert!("6xx".parse::<StatusClass>().is_err());
        assert!("99".parse::<StatusClass>().is_err());
    }

    #[test]
    fn byte_sizes_render_exactly() {
        assert_eq!(bytes::render(bytesize::ByteSize::mib(100)), "100MiB");
        assert_eq!(bytes::render(bytesize::ByteSize::kib(1536)), "1536KiB");
        assert_eq!(bytes::render(bytesize::ByteSize::b(1000)), "1000B");
        assert_eq!(bytes::render(bytesize::ByteSize::gib(1)), "1GiB");
    }

    #[test]
    fn queues_parse_from_text() {
        let q: AllocateQueue = " broker-a : 3 ".parse().expect("queue");
        assert_eq!((q.broker_name.as_str(), q.queue_id), ("broker-a", 3));
        for bad in ["broker-a", ":1", "broker-a:x", "broker-a:-1"] {
            assert!(bad.parse::<AllocateQueue>().is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(s.to_string(), "***");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }

    proptest::proptest! {
        #[test]
        fn durations_round_trip(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            let text = humantime::format_duration(d).to_string();
            proptest::prop_assert_eq!(humantime::parse_duration(&text).ok(), Some(d));
        }

        #[test]
        fn byte_sizes_round_trip(n in 0u64..(1 << 40)) {
            let size = bytesize::ByteSize::b(n);
            let text = bytes::render(size);
            proptest::prop_assert_eq!(text.parse::<bytesize::ByteSize>().ok(), Some(size));
        }
    }
}
