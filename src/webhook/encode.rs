//! Request encoding: the headers and body of one HTTP request for each delivery format.
//!
//! Pure: message views in, [`EncodedRequest`] out; method, URL, configured headers and
//! authentication are added by the sender. Formats (architecture.md section 5):
//! - [`Format::Json`]: one envelope per batch, `{"topic", "consumerGroup", "messages": [...]}`,
//!   each body as text when valid UTF-8, otherwise base64 in `bodyBase64`;
//! - [`Format::Raw`]: exactly one message, body untouched, `Content-Type` from the message's
//!   `CONTENT_TYPE` property (default `application/octet-stream`);
//! - [`Format::CloudEvents`]: CloudEvents 1.0 HTTP binary mode, one message, `ce-*` headers;
//! - [`Format::CloudEventsBatch`]: `application/cloudevents-batch+json`, an array of structured
//!   events with `data` (JSON or text) or `data_base64`.
//!
//! Invariants: every request carries `rocketmq-topic`, `rocketmq-consumer-group` and
//! `rocketmq-message-count`; a request with one message also carries its metadata as
//! `rocketmq-*` headers. A body that already is a structured CloudEvent is forwarded as-is
//! (structured mode for one message, the array element in a batch), never wrapped twice. Metadata
//! that cannot be an HTTP header value is left out of headers, never sent mangled; so is metadata
//! past the header budget (`METADATA_HEADER_BUDGET`), so that no message is refused for its
//! headers.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde::de::IgnoredAny;
use serde::Serialize;

use super::{json, sign};
use crate::remoting::message::{properties, Properties};
use crate::remoting::MessageExt;

/// Header: the subscribed topic.
pub const HEADER_TOPIC: &str = "rocketmq-topic";
/// Header: the consumer group.
pub const HEADER_CONSUMER_GROUP: &str = "rocketmq-consumer-group";
/// Header: how many messages the request carries.
pub const HEADER_MESSAGE_COUNT: &str = "rocketmq-message-count";
/// Prefix of message properties sent as headers (`rocketmq-property-<lowercased key>`).
pub const HEADER_PROPERTY_PREFIX: &str = "rocketmq-property-";

/// The property a producer sets to describe the body's media type.
pub const CONTENT_TYPE_PROPERTY: &str = "CONTENT_TYPE";
/// The default CloudEvents `type`.
pub const DEFAULT_CLOUDEVENTS_TYPE: &str = "org.apache.rocketmq.message";

/// Headers whose size the producer controls (msgId, tag, keys, properties, and in binary
/// CloudEvents `ce-id`, `ce-subject` and `ce-rocketmqkeys`) stop being added beyond this many
/// bytes, counted as `name: value\r\n`. Servers commonly refuse requests with more than 8 KiB
/// of headers (431), and that answer is RETRY: a deliverable message would spend its attempts
/// and reach the DLQ.
/// One budget for all of them rather than a cap per header, because servers limit the total:
/// four capped headers plus properties could still pass it. 4 KiB leaves the other half of
/// 8 KiB to the bounded headers (offset msgId, offsets, hosts: about 600 bytes), `ce-source`/
/// `ce-type`, signing and the configured headers. The msgId is charged too: it is the
/// producer's `UNIQ_KEY`, 32 characters from every client library but any length from a
/// producer that sets it itself. A header that does not fit is left out (see
/// [`EncodedRequest::left_out`]): the `json` and `cloudevents_batch` bodies carry every value
/// anyway, and for `raw` and binary `cloudevents` delivering the body matters more.
const METADATA_HEADER_BUDGET: usize = 4096;

/// The most `rocketmq-property-*` headers on one request. Servers limit the number of headers
/// too, not only their size (Tomcat, so Spring Boot: 100 by default, then 400, a DROP); the
/// other headers of a request number about 40 with signing and `ce-*` ones.
const MAX_PROPERTY_HEADERS: usize = 40;

/// The CloudEvents extension attribute carrying the message keys.
const KEYS_EXTENSION: &str = "rocketmqkeys";

/// What `ce-*` header values percent-encode besides non-ASCII, after the CloudEvents HTTP
/// protocol binding 1.0.2, section 3.1.3.2: space, double quote and percent MUST be (so no
/// quoting is needed and `%` is unambiguous), and the controls U+0000-U+001F and U+007F are
/// RECOMMENDED. [`utf8_percent_encode`] encodes every byte of a non-ASCII character's UTF-8
/// form, in the upper-case hex the spec prefers.
const CE_HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// What a broker or topic name must have encoded to be one part of the default `source`
/// URI-reference: everything but RFC 3986's unreserved characters. Topic names may hold `%`
/// (namespaces: `ns%orders`) and `|`, which SDKs parsing `source` as a URI (Go's, Java's)
/// refuse unencoded.
const URI_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Properties already sent under their own header name.
const PROPERTIES_WITH_OWN_HEADER: [&str; 3] = ["UNIQ_KEY", "TAGS", "KEYS"];

const OCTET_STREAM: &str = "application/octet-stream";
const APPLICATION_JSON: &str = "application/json";
const CE_STRUCTURED: &str = "application/cloudevents+json; charset=utf-8";
const CE_BATCH: &str = "application/cloudevents-batch+json; charset=utf-8";

/// How messages are put into HTTP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// One JSON envelope per batch.
    #[default]
    Json,
    /// One message per request, body untouched.
    Raw,
    /// CloudEvents binary mode, one message per request.
    CloudEvents,
    /// CloudEvents batch mode, one array per batch.
    CloudEventsBatch,
}

impl Format {
    /// Whether each request carries exactly one message (the sender splits batches).
    pub fn one_message_per_request(self) -> bool {
        matches!(self, Self::Raw | Self::CloudEvents)
    }

    /// `json`, `raw`, `cloudevents` or `cloudevents-batch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Raw => "raw",
            Self::CloudEvents => "cloudevents",
            Self::CloudEventsBatch => "cloudevents-batch",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown webhook format {0:?}: expected json, raw, cloudevents or cloudevents-batch")]
pub struct FormatParseError(pub String);

impl FromStr for Format {
    type Err = FormatParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "json" => Ok(Self::Json),
            "raw" => Ok(Self::Raw),
            "cloudevents" | "cloudevents-binary" => Ok(Self::CloudEvents),
            "cloudevents-batch" => Ok(Self::CloudEventsBatch),
            _ => Err(FormatParseError(s.to_owned())),
        }
    }
}

/// Why a request could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A one-message format was given another number of messages (a bug in the caller).
    #[error("format {format} carries exactly one message per request, got {count}")]
    NotOneMessage {
        /// The format.
        format: Format,
        /// How many messages were given.
        count: usize,
    },
    /// JSON serialisation failed.
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
}

impl EncodeError {
    /// Never: encoding the same input again fails the same way.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

/// What the encoder needs to know about one message: a borrowed view of a pulled message plus
/// the broker it came from.
#[derive(Debug, Clone)]
pub struct MessageView<'a> {
    /// The msgId users see (`UNIQ_KEY`, or the offset msgId when absent).
    pub msg_id: Cow<'a, str>,
    /// The broker-assigned id (store host + commit log offset).
    pub offset_msg_id: String,
    /// The message's (real) topic.
    pub topic: &'a str,
    /// Queue id.
    pub queue_id: i32,
    /// The broker the message was pulled from.
    pub broker_name: &'a str,
    /// Queue offset.
    pub queue_offset: i64,
    /// Tag, if any.
    pub tags: Option<&'a str>,
    /// Business keys (space separated), if any.
    pub keys: Option<&'a str>,
    /// Earlier delivery attempts.
    pub reconsume_times: i32,
    /// Producer time, ms since the epoch.
    pub born_timestamp: i64,
    /// Broker store time, ms since the epoch.
    pub store_timestamp: i64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// Broker address.
    pub store_host: SocketAddr,
    /// All properties.
    pub properties: &'a Properties,
    /// The (decompressed) body.
    pub body: &'a Bytes,
}

impl<'a> MessageView<'a> {
    /// A view of `msg`, pulled from `broker_name`.
    pub fn new(msg: &'a MessageExt, broker_name: &'a str) -> Self {
        let [uniq_key, tags, keys] =
            msg.properties
                .get_all([properties::UNIQ_KEY, properties::TAGS, properties::KEYS]);
        let offset_msg_id = msg.offset_msg_id();
        Self {
            // An empty `UNIQ_KEY` names nothing (an event `id` must not be empty): the offset
            // msgId stands in, as when there is none.
            msg_id: uniq_key
                .filter(|id| !id.is_empty())
                .map_or_else(|| offset_msg_id.clone().into(), Into::into),
            offset_msg_id,
            topic: &msg.topic,
            queue_id: msg.queue_id,
            broker_name,
            queue_offset: msg.queue_offset,
            tags,
            keys,
            reconsume_times: msg.reconsume_times,
            born_timestamp: msg.born_timestamp,
            store_timestamp: msg.store_timestamp,
            born_host: msg.born_host,
            store_host: msg.store_host,
            properties: &msg.properties,
            body: &msg.body,
        }
    }

    fn content_type(&self) -> Option<&str> {
        self.properties
            .get(CONTENT_TYPE_PROPERTY)
            .filter(|ct| !ct.trim().is_empty())
    }
}

/// The subscription a request belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Consumer group.
    pub group: &'a str,
    /// Subscribed topic.
    pub topic: &'a str,
}

/// Headers and body of one request (method, URL and authentication are the sender's).
#[derive(Debug, Clone)]
pub struct EncodedRequest {
    /// Content type, `rocketmq-*` and `ce-*` headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// MsgId, tag and key headers (`rocketmq-msg-id`, `rocketmq-tags`, `rocketmq-keys`,
    /// `ce-subject`, `ce-rocketmqkeys`) left out because they did not fit in the header budget
    /// or their value cannot be a header value (a line break),
    /// for the sender to log: in `raw` and binary `cloudevents` the receiver gets the message
    /// without them. Properties cut by the budget are not listed (they never were headers the
    /// receiver could count on). A `ce-id` that did not fit is not listed either: it is
    /// replaced, never left out (see [`Self::event_ids`]).
    pub left_out: Vec<HeaderName>,
    /// (index in the request, id) for each other id the receiver knows a message by, besides
    /// its msgId, and may name it by in a `statuses` answer: the `id` of a body that already
    /// was a structured CloudEvent and went out as written; the digest sent as `ce-id` for a
    /// msgId too long for it; the offset msgId when `rocketmq-msg-id` was left out. Empty in
    /// the common case.
    pub event_ids: Vec<(usize, String)>,
}

/// Builds requests in one format.
#[derive(Debug, Clone)]
pub struct Encoder {
    format: Format,
    ce_type: String,
    ce_source: Option<String>,
}

impl Encoder {
    /// An encoder for `format`. `ce_type` is the CloudEvents `type` (see
    /// [`DEFAULT_CLOUDEVENTS_TYPE`]); `ce_source` the `source`, by default
    /// `rocketmq://<brokerName>/<topic>`.
    pub fn new(format: Format, ce_type: impl Into<String>, ce_source: Option<String>) -> Self {
        Self {
            format,
            ce_type: ce_type.into(),
            ce_source,
        }
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Encodes one request carrying `messages` (exactly one for one-message formats).
    ///
    /// # Errors
    /// [`EncodeError::NotOneMessage`] when a one-message format gets another count;
    /// [`EncodeError::Json`] if serialisation fails.
    pub fn encode(
        &self,
        ctx: Context<'_>,
        messages: &[MessageView<'_>],
    ) -> Result<EncodedRequest, EncodeError> {
        // Sized for the per-message headers of a one-message request, so the map never regrows.
        let mut headers = HeaderMap::with_capacity(if messages.len() == 1 { 32 } else { 8 });
        let mut budget = HeaderBudget::new();
        let mut event_ids = Vec::new();
        common_headers(&mut headers, ctx, messages);
        let body = match (self.format, messages) {
            (Format::Json, _) => {
                set(&mut headers, CONTENT_TYPE, APPLICATION_JSON);
                // Sized up front: growing a buffer from a small default to a few KiB costs
                // several copies per request.
                let mut out = Vec::with_capacity(
                    messages
                        .iter()
                        .map(|m| m.body.len() + 640 + m.properties.text_len() * 2)
                        .sum::<usize>()
                        + 128,
                );
                write_envelope(&mut out, ctx, messages);
                Bytes::from(out)
            }
            (Format::Raw, [msg]) => {
                let ct = msg.content_type().unwrap_or(OCTET_STREAM);
                set(&mut headers, CONTENT_TYPE, ct);
                if !headers.contains_key(CONTENT_TYPE) {
                    set(&mut headers, CONTENT_TYPE, OCTET_STREAM);
                }
                msg.body.clone()
            }
            (Format::CloudEvents, [msg]) => {
                if let Some(id) = structured_cloudevent_id(msg.body) {
                    set(&mut headers, CONTENT_TYPE, CE_STRUCTURED);
                    event_ids.push((0, id));
                } else if let Some(id) = self.binary_headers(&mut headers, msg, &mut budget) {
                    event_ids.push((0, id));
                }
                msg.body.clone()
            }
            (Format::CloudEventsBatch, _) => {
                set(&mut headers, CONTENT_TYPE, CE_BATCH);
                let mut out = Vec::with_capacity(
                    messages
                        .iter()
                        .map(|m| m.body.len() * 4 / 3 + 512)
                        .sum::<usize>()
                        + 2,
                );
                out.push(b'[');
                for (i, msg) in messages.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if let Some(id) = self.structured_event(&mut out, msg)? {
                        event_ids.push((i, id));
                    }
                }
                out.push(b']');
                Bytes::from(out)
            }
            (format @ (Format::Raw | Format::CloudEvents), _) => {
                return Err(EncodeError::NotOneMessage {
                    format,
                    count: messages.len(),
                });
            }
        };
        // After the `ce-*` headers: in binary CloudEvents they are the attributes a receiver's
        // SDK reads, so they get the budget first and the `rocketmq-*` copies what is left.
        if let [msg] = messages {
            metadata_headers(&mut headers, msg, &mut budget);
            // Without `rocketmq-msg-id`, a `raw` or binary request names its message only by
            // `rocketmq-offset-msg-id` (and a binary event by its `ce-id`): an answer may too.
            if budget.left_out.contains(&H_MSG_ID) {
                event_ids.push((0, msg.offset_msg_id.clone()));
            }
        }
        Ok(EncodedRequest {
            headers,
            body,
            left_out: budget.left_out,
            event_ids,
        })
    }

    fn source(&self, msg: &MessageView<'_>) -> String {
        self.ce_source.clone().unwrap_or_else(|| {
            format!(
                "rocketmq://{}/{}",
                utf8_percent_encode(msg.broker_name, URI_PART),
                utf8_percent_encode(msg.topic, URI_PART)
            )
        })
    }

    /// CloudEvents HTTP binary mode: attributes as `ce-*` headers, data as the body. The id,
    /// the tag (`subject`) and keys are charged to `budget`; the other attributes are bounded
    /// (numbers, offset msgIds, topic and broker names) or configured. Returns the event's id
    /// when it is not the msgId (see [`sign::id_digest`]).
    fn binary_headers(
        &self,
        headers: &mut HeaderMap,
        msg: &MessageView<'_>,
        budget: &mut HeaderBudget,
    ) -> Option<String> {
        set(
            headers,
            CONTENT_TYPE,
            msg.content_type().unwrap_or(OCTET_STREAM),
        );
        if !headers.contains_key(CONTENT_TYPE) {
            set(headers, CONTENT_TYPE, OCTET_STREAM);
        }
        // Every attribute value is encoded (the spec's rule is for string values; numbers and
        // RFC 3339 times hold nothing it encodes), and the budget charges the encoded length.
        set(headers, ce("specversion"), "1.0");
        // `id` is required, and the msgId is the producer's `UNIQ_KEY`, of any length. One that
        // does not fit gives way to its digest, the one a signed request's `webhook-id` carries:
        // bounded, and the same on every redelivery, so a receiver that drops repeated ids
        // still does. The receiver may name the message by it in a `statuses` answer.
        let mut other_id = None;
        if budget
            .append(headers, ce("id"), &ce_value(&msg.msg_id))
            .is_err()
        {
            let digest = sign::id_digest(&msg.msg_id);
            set(headers, ce("id"), &digest);
            other_id = Some(digest);
        }
        set(headers, ce("source"), &ce_value(&self.source(msg)));
        set(headers, ce("type"), &ce_value(&self.ce_type));
        set(headers, ce("time"), &rfc3339(msg.store_timestamp));
        if let Some(tags) = msg.tags {
            budget.add(headers, ce("subject"), &ce_value(tags));
        }
        for (name, value) in extensions(msg) {
            let value = value.to_string();
            if name == KEYS_EXTENSION {
                budget.add(headers, ce(name), &ce_value(&value));
            } else {
                set(headers, ce(name), &ce_value(&value));
            }
        }
        other_id
    }

    /// Appends one structured-mode event (JSON object) to `out`; the event's `id` when the
    /// body already was one and went out as written.
    fn structured_event(
        &self,
        out: &mut Vec<u8>,
        msg: &MessageView<'_>,
    ) -> Result<Option<String>, EncodeError> {
        if let Some(id) = structured_cloudevent_id(msg.body) {
            // Already a complete, valid JSON event: forward it byte for byte.
            out.extend_from_slice(msg.body.trim_ascii());
            return Ok(Some(id));
        }
        let data = Data::of(msg);
        let source = self.source(msg);
        let time = rfc3339(msg.store_timestamp);
        let mut attributes = serde_json::Map::new();
        for (name, value) in extensions(msg) {
            let value = match value {
                Extension::Text(s) => serde_json::Value::from(s),
                Extension::Int(i) => serde_json::Value::from(i),
                Extension::Long(i) => serde_json::Value::from(i.to_string()),
            };
            attributes.insert(name.to_owned(), value);
        }
        let event = StructuredEvent {
            specversion: "1.0",
            id: &msg.msg_id,
            source: &source,
            ty: &self.ce_type,
            time: &time,
            subject: msg.tags,
            datacontenttype: data.content_type,
            data_text: match &data.value {
                DataValue::Text(s) => Some(*s),
                _ => None,
            },
            data_base64: match &data.value {
                DataValue::Base64(s) => Some(s.as_str()),
                _ => None,
            },
            extensions: attributes,
        };
        let start = out.len();
        serde_json::to_writer(&mut *out, &event)?;
        if let DataValue::Json(raw) = data.value {
            // Splice the already-validated JSON body in as `data`, so numbers and formatting
            // survive exactly (a parse/re-serialise round trip would lose big-number precision).
            if out.last() == Some(&b'}') && out.len() > start {
                out.pop();
                if out.len() > start + 1 {
                    out.push(b',');
                }
                out.extend_from_slice(br#""data":"#);
                out.extend_from_slice(raw);
                out.push(b'}');
            }
        }
        Ok(None)
    }
}

/// The header name `ce-<attribute>`.
fn ce(attribute: &str) -> HeaderName {
    HeaderName::from_str(&format!("ce-{attribute}"))
        .unwrap_or_else(|_| HeaderName::from_static("ce-invalid"))
}

/// A CloudEvents attribute value as a `ce-*` header value (see [`CE_HEADER_VALUE`]); borrowed
/// when there is nothing to encode.
fn ce_value(value: &str) -> Cow<'_, str> {
    utf8_percent_encode(value, CE_HEADER_VALUE).into()
}

/// Inserts a header when `value` is a valid header value; leaves it out otherwise.
fn set(headers: &mut HeaderMap, name: impl reqwest::header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// What is left of [`METADATA_HEADER_BUDGET`] while one request's headers are built, and the
/// msgId, tag and key headers left out.
#[derive(Debug)]
struct HeaderBudget {
    left: usize,
    left_out: Vec<HeaderName>,
}

impl HeaderBudget {
    fn new() -> Self {
        Self {
            left: METADATA_HEADER_BUDGET,
            left_out: Vec::new(),
        }
    }

    /// Appends `name: value` if it fits in what is left and is a valid header value; gives
    /// `name` back, with why, when not. An invalid value costs nothing.
    fn append(
        &mut self,
        headers: &mut HeaderMap,
        name: HeaderName,
        value: &str,
    ) -> Result<(), (HeaderName, Refused)> {
        // Checked before the value is copied: the value may be tens of KB.
        let cost = name.as_str().len() + value.len() + 4;
        if cost > self.left {
            return Err((name, Refused::TooBig));
        }
        match HeaderValue::from_str(value) {
            Ok(value) => {
                self.left -= cost;
                headers.append(name, value);
                Ok(())
            }
            Err(_) => Err((name, Refused::Invalid)),
        }
    }

    /// [`Self::append`] for a msgId, tag or key header, noting it in `left_out` when it does not
    /// fit or cannot be a header value (a line break): a request without `rocketmq-msg-id` then
    /// names its message by the offset msgId. Later, smaller headers may still fit: one
    /// oversized value does not end the others.
    fn add(&mut self, headers: &mut HeaderMap, name: HeaderName, value: &str) {
        if let Err((name, _)) = self.append(headers, name, value) {
            self.left_out.push(name);
        }
    }
}

/// Why [`HeaderBudget::append`] left a header out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// It does not fit in what is left of the budget.
    TooBig,
    /// Its value cannot be a header value.
    Invalid,
}

// Header names are built at compile time: parsing them for every request showed up in
// profiles of one-message-per-request delivery.
const H_TOPIC: HeaderName = HeaderName::from_static(HEADER_TOPIC);
const H_CONSUMER_GROUP: HeaderName = HeaderName::from_static(HEADER_CONSUMER_GROUP);
const H_MESSAGE_COUNT: HeaderName = HeaderName::from_static(HEADER_MESSAGE_COUNT);
const H_MSG_ID: HeaderName = HeaderName::from_static("rocketmq-msg-id");
const H_OFFSET_MSG_ID: HeaderName = HeaderName::from_static("rocketmq-offset-msg-id");
const H_QUEUE_ID: HeaderName = HeaderName::from_static("rocketmq-queue-id");
const H_BROKER_NAME: HeaderName = HeaderName::from_static("rocketmq-broker-name");
const H_QUEUE_OFFSET: HeaderName = HeaderName::from_static("rocketmq-queue-offset");
const H_TAGS: HeaderName = HeaderName::from_static("rocketmq-tags");
const H_KEYS: HeaderName = HeaderName::from_static("rocketmq-keys");
const H_RECONSUME_TIMES: HeaderName = HeaderName::from_static("rocketmq-reconsume-times");
const H_BORN_TIMESTAMP: HeaderName = HeaderName::from_static("rocketmq-born-timestamp");
const H_STORE_TIMESTAMP: HeaderName = HeaderName::from_static("rocketmq-store-timestamp");
const H_BORN_HOST: HeaderName = HeaderName::from_static("rocketmq-born-host");
const H_STORE_HOST: HeaderName = HeaderName::from_static("rocketmq-store-host");

/// The headers of every request, and for a request with one message its metadata whose size is
/// bounded (the rest is [`metadata_headers`]).
fn common_headers(headers: &mut HeaderMap, ctx: Context<'_>, messages: &[MessageView<'_>]) {
    set(headers, H_TOPIC, ctx.topic);
    set(headers, H_CONSUMER_GROUP, ctx.group);
    headers.insert(H_MESSAGE_COUNT, HeaderValue::from(messages.len()));
    let [msg] = messages else { return };
    set(headers, H_OFFSET_MSG_ID, &msg.offset_msg_id);
    headers.insert(H_QUEUE_ID, HeaderValue::from(msg.queue_id));
    set(headers, H_BROKER_NAME, msg.broker_name);
    headers.insert(H_QUEUE_OFFSET, HeaderValue::from(msg.queue_offset));
    headers.insert(H_RECONSUME_TIMES, HeaderValue::from(msg.reconsume_times));
    headers.insert(H_BORN_TIMESTAMP, HeaderValue::from(msg.born_timestamp));
    headers.insert(H_STORE_TIMESTAMP, HeaderValue::from(msg.store_timestamp));
    headers.insert(H_BORN_HOST, socket_value(msg.born_host));
    headers.insert(H_STORE_HOST, socket_value(msg.store_host));
}

/// The metadata headers of a one-message request whose size the producer controls: msgId
/// (`UNIQ_KEY`), tag, keys, then properties, as long as they fit in `budget`.
fn metadata_headers(headers: &mut HeaderMap, msg: &MessageView<'_>, budget: &mut HeaderBudget) {
    budget.add(headers, H_MSG_ID, &msg.msg_id);
    if let Some(tags) = msg.tags {
        budget.add(headers, H_TAGS, tags);
    }
    if let Some(keys) = msg.keys {
        budget.add(headers, H_KEYS, keys);
    }
    let mut name = String::with_capacity(64);
    let mut sent = 0;
    for (key, value) in msg.properties {
        if PROPERTIES_WITH_OWN_HEADER.contains(&key) {
            continue;
        }
        if sent == MAX_PROPERTY_HEADERS {
            break;
        }
        let header = match known_property_header(key) {
            Some(known) => Ok(known),
            None => {
                name.clear();
                name.push_str(HEADER_PROPERTY_PREFIX);
                name.extend(key.chars().map(|c| c.to_ascii_lowercase()));
                HeaderName::from_bytes(name.as_bytes())
            }
        };
        let Ok(header) = header else { continue };
        // The first property that does not fit ends them (the budget is spent); one whose
        // value cannot be a header value is only skipped.
        match budget.append(headers, header, value) {
            Ok(()) => sent += 1,
            Err((_, Refused::TooBig)) => break,
            Err((_, Refused::Invalid)) => {}
        }
    }
}

/// The header of a property that producers, brokers or this consumer set on most messages,
/// built at compile time: building and parsing the name (and allocating it) for each of them
/// cost about 800 instructions per one-message request in bench/harness's encode-cost.
fn known_property_header(key: &str) -> Option<HeaderName> {
    KNOWN_PROPERTY_HEADERS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, name)| name.clone())
}

/// See [`known_property_header`]; built by `const fn`s, so the names are checked at compile
/// time, and a `static`, so a lookup does not copy the table.
static KNOWN_PROPERTY_HEADERS: [(&str, HeaderName); 15] = [
    ("WAIT", HeaderName::from_static("rocketmq-property-wait")),
    (
        "CLUSTER",
        HeaderName::from_static("rocketmq-property-cluster"),
    ),
    (
        "MIN_OFFSET",
        HeaderName::from_static("rocketmq-property-min_offset"),
    ),
    (
        "MAX_OFFSET",
        HeaderName::from_static("rocketmq-property-max_offset"),
    ),
    (
        "CONSUME_START_TIME",
        HeaderName::from_static("rocketmq-property-consume_start_time"),
    ),
    (
        "TRACE_ON",
        HeaderName::from_static("rocketmq-property-trace_on"),
    ),
    (
        "MSG_REGION",
        HeaderName::from_static("rocketmq-property-msg_region"),
    ),
    (
        "RETRY_TOPIC",
        HeaderName::from_static("rocketmq-property-retry_topic"),
    ),
    (
        "REAL_TOPIC",
        HeaderName::from_static("rocketmq-property-real_topic"),
    ),
    (
        "REAL_QID",
        HeaderName::from_static("rocketmq-property-real_qid"),
    ),
    (
        "ORIGIN_MESSAGE_ID",
        HeaderName::from_static("rocketmq-property-origin_message_id"),
    ),
    ("DELAY", HeaderName::from_static("rocketmq-property-delay")),
    (
        "__SHARDINGKEY",
        HeaderName::from_static("rocketmq-property-__shardingkey"),
    ),
    (
        "RECONSUME_TIME",
        HeaderName::from_static("rocketmq-property-reconsume_time"),
    ),
    (
        "MAX_RECONSUME_TIMES",
        HeaderName::from_static("rocketmq-property-max_reconsume_times"),
    ),
];

/// `ip:port` as a header value.
fn socket_value(addr: SocketAddr) -> HeaderValue {
    let mut text = Vec::with_capacity(24);
    json::socket_addr_text(&mut text, addr);
    HeaderValue::from_maybe_shared(Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
const RFC3339_MAX_MS: u64 = 253_402_300_799_999;

/// RFC 3339 UTC with milliseconds; timestamps before the epoch read as the epoch, and those
/// past year 9999 as its last millisecond. The stamp is whatever the broker sent, and
/// humantime's formatter fails past 9999, which `to_string` turns into a panic.
fn rfc3339(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0).min(RFC3339_MAX_MS);
    let t = UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A CloudEvents extension attribute value.
#[derive(Debug)]
enum Extension<'a> {
    Text(&'a str),
    /// A CloudEvents Integer: signed 32 bits.
    Int(i32),
    /// A number that may not fit an Integer (an offset, milliseconds since the epoch): a
    /// String attribute holding its decimal digits. As a JSON number, SDKs that check the
    /// type system (Go's, so Knative's) refuse the whole event.
    Long(i64),
}

impl fmt::Display for Extension<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Int(i) => write!(f, "{i}"),
            Self::Long(i) => write!(f, "{i}"),
        }
    }
}

/// RocketMQ metadata as CloudEvents extension attributes (names: lowercase alphanumeric, at most
/// 20 characters, as the spec recommends).
fn extensions<'a>(msg: &'a MessageView<'a>) -> Vec<(&'static str, Extension<'a>)> {
    let mut out = vec![
        ("rocketmqtopic", Extension::Text(msg.topic)),
        ("rocketmqbroker", Extension::Text(msg.broker_name)),
        ("rocketmqqueueid", Extension::Int(msg.queue_id)),
        ("rocketmqqueueoffset", Extension::Long(msg.queue_offset)),
        ("rocketmqoffsetmsgid", Extension::Text(&msg.offset_msg_id)),
        ("rocketmqreconsume", Extension::Int(msg.reconsume_times)),
        ("rocketmqborntime", Extension::Long(msg.born_timestamp)),
    ];
    if let Some(keys) = msg.keys {
        out.push((KEYS_EXTENSION, Extension::Text(keys)));
    }
    out
}

/// The event's `id` when `body` is a JSON object with the four required CloudEvents attributes
/// as non-empty strings (`specversion`, `id`, `source`, `type`): a structured CloudEvent.
pub fn structured_cloudevent_id(body: &[u8]) -> Option<String> {
    let trimmed = body.trim_ascii_start();
    if !trimmed.starts_with(b"{") || !contains(body, b"\"specversion\"") {
        return None;
    }
    // Forwarded byte for byte as JSON, so it must be UTF-8 whole, not only in the four
    // attributes read here: serde_json checks UTF-8 only in the strings it keeps.
    let body = std::str::from_utf8(body).ok()?;
    #[derive(serde::Deserialize)]
    struct Required<'a> {
        #[serde(borrow)]
        specversion: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        source: std::borrow::Cow<'a, str>,
        #[serde(borrow, rename = "type")]
        ty: std::borrow::Cow<'a, str>,
    }
    let r = serde_json::from_str::<Required<'_>>(body).ok()?;
    [&r.specversion, &r.id, &r.source, &r.ty]
        .iter()
        .all(|s| !s.trim().is_empty())
        .then(|| r.id.into_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The media type without parameters, lowercased.
fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media(ct: &str) -> bool {
    let m = media_type(ct);
    m == APPLICATION_JSON || m == "text/json" || m.ends_with("+json")
}

fn is_text_media(ct: &str) -> bool {
    let m = media_type(ct);
    m.starts_with("text/")
        || m.ends_with("+xml")
        || m == "application/xml"
        || m == "application/x-www-form-urlencoded"
        || ct.to_ascii_lowercase().contains("charset=")
}

#[derive(Debug)]
enum DataValue<'a> {
    Json(&'a [u8]),
    Text(&'a str),
    Base64(String),
}

/// How a body goes into a structured event (CloudEvents JSON format section 3.1).
#[derive(Debug)]
struct Data<'a> {
    content_type: &'a str,
    value: DataValue<'a>,
}

impl<'a> Data<'a> {
    fn of(msg: &'a MessageView<'a>) -> Self {
        let body: &'a [u8] = msg.body;
        let declared = msg.content_type();
        let text = std::str::from_utf8(body).ok();
        // JSON copied into a request must be UTF-8 whole: serde_json checks UTF-8 only in the
        // strings it keeps, not in those it skips, so the text is checked first.
        let json_ok = declared.is_none_or(is_json_media)
            && text.is_some_and(|t| serde_json::from_str::<IgnoredAny>(t).is_ok());
        if json_ok {
            return Self {
                content_type: declared.unwrap_or(APPLICATION_JSON),
                value: DataValue::Json(body),
            };
        }
        match (declared, text) {
            (None, Some(t)) => Self {
                content_type: "text/plain; charset=utf-8",
                value: DataValue::Text(t),
            },
            // A body declared JSON that does not parse goes as base64: a JSON content type with
            // a string `data` would claim the string itself is the JSON value.
            (Some(ct), Some(t)) if is_text_media(ct) && !is_json_media(ct) => Self {
                content_type: ct,
                value: DataValue::Text(t),
            },
            (declared, _) => Self {
                content_type: declared.unwrap_or(OCTET_STREAM),
                value: DataValue::Base64(BASE64.encode(body)),
            },
        }
    }
}

#[derive(Serialize)]
struct StructuredEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    datacontenttype: &'a str,
    #[serde(rename = "data", skip_serializing_if = "Option::is_none")]
    data_text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<&'a str>,
    #[serde(flatten)]
    extensions: serde_json::Map<String, serde_json::Value>,
}

/// The `json` format: `{"topic", "consumerGroup", "messages": [...]}`, each message with its
/// metadata, properties and the body as text (`body`) or, when not UTF-8, as `bodyBase64`.
/// Written directly (see [`super::json`]); the field order is part of the output.
fn write_envelope(out: &mut Vec<u8>, ctx: Context<'_>, messages: &[MessageView<'_>]) {
    out.push(b'{');
    json::key(out, "topic");
    json::string(out, ctx.topic);
    out.push(b',');
    json::key(out, "consumerGroup");
    json::string(out, ctx.group);
    out.extend_from_slice(br#","messages":["#);
    for (i, msg) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_message(out, msg);
    }
    out.extend_from_slice(b"]}");
}

fn write_message(out: &mut Vec<u8>, msg: &MessageView<'_>) {
    let optional = |out: &mut Vec<u8>, value: Option<&str>| match value {
        Some(v) => json::string(out, v),
        None => out.extend_from_slice(b"null"),
    };
    out.extend_from_slice(br#"{"msgId":"#);
    json::string(out, &msg.msg_id);
    out.extend_from_slice(br#","offsetMsgId":"#);
    json::string(out, &msg.offset_msg_id);
    out.extend_from_slice(br#","topic":"#);
    json::string(out, msg.topic);
    out.extend_from_slice(br#","queueId":"#);
    json::int(out, msg.queue_id);
    out.extend_from_slice(br#","brokerName":"#);
    json::string(out, msg.broker_name);
    out.extend_from_slice(br#","queueOffset":"#);
    json::int(out, msg.queue_offset);
    out.extend_from_slice(br#","tags":"#);
    optional(out, msg.tags);
    out.extend_from_slice(br#","keys":"#);
    optional(out, msg.keys);
    out.extend_from_slice(br#","reconsumeTimes":"#);
    json::int(out, msg.reconsume_times);
    out.extend_from_slice(br#","bornTimestamp":"#);
    json::int(out, msg.born_timestamp);
    out.extend_from_slice(br#","storeTimestamp":"#);
    json::int(out, msg.store_timestamp);
    out.extend_from_slice(br#","bornHost":"#);
    json::socket_addr(out, msg.born_host);
    out.extend_from_slice(br#","storeHost":"#);
    json::socket_addr(out, msg.store_host);
    out.extend_from_slice(br#","properties":{"#);
    for (i, (k, v)) in msg.properties.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::key(out, k);
        json::string(out, v);
    }
    out.push(b'}');
    match std::str::from_utf8(msg.body) {
        Ok(text) => {
            out.extend_from_slice(br#","body":"#);
            json::string(out, text);
        }
        Err(_) => {
            out.extend_from_slice(br#","bodyBase64":""#);
            let start = out.len();
            out.resize(
                start + base64::encoded_len(msg.body.len(), true).unwrap_or(0),
                0,
            );
            let written = BASE64
                .encode_slice(msg.body, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_property_headers_are_the_built_names() {
        for (key, name) in &super::KNOWN_PROPERTY_HEADERS {
            let built = format!(
                "{}{}",
                super::HEADER_PROPERTY_PREFIX,
                key.to_ascii_lowercase()
            );
            assert_eq!(name.as_str(), built, "{key}");
        }
    }

    use super::*;
    use serde_json::{json, Value};

    /// Any stamp a broker sends formats; the years RFC 3339 cannot write are clamped.
    #[test]
    fn event_times_of_any_stamp_format() {
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        let last = "9999-12-31T23:59:59.999Z";
        assert_eq!(rfc3339(253_402_300_799_999), last);
        assert_eq!(rfc3339(253_402_300_800_000), last);
        assert_eq!(rfc3339(i64::MAX), last);
    }

    /// The fixtures' offset msgId.
    const OFFSET_ID: &str = "0A00000100002A9F0000000000000010";

    struct Fixture {
        props: Properties,
        body: Bytes,
    }

    impl Fixture {
        fn new(body: &[u8], props: &[(&str, &str)]) -> Self {
            Self {
                props: props
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
                body: Bytes::copy_from_slice(body),
            }
        }

        fn view(&self, id: &str) -> MessageView<'_> {
            MessageView {
                msg_id: id.to_owned().into(),
                offset_msg_id: OFFSET_ID.to_owned(),
                topic: "orders",
                queue_id: 3,
                broker_name: "broker-a",
                queue_offset: 42,
                tags: Some("TagA"),
                keys: Some("k1 k2"),
                reconsume_times: 1,
                born_timestamp: 1_700_000_000_123,
                store_timestamp: 1_700_000_000_456,
                born_host: "10.0.0.2:50000".parse().unwrap(),
                store_host: "10.0.0.1:10911".parse().unwrap(),
                properties: &self.props,
                body: &self.body,
            }
        }
    }

    const CTX: Context<'static> = Context {
        group: "g1",
        topic: "orders",
    };

    fn encoder(format: Format) -> Encoder {
        Encoder::new(format, DEFAULT_CLOUDEVENTS_TYPE, None)
    }

    fn header<'h>(r: &'h EncodedRequest, name: &str) -> Option<&'h str> {
        r.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json_body(r: &EncodedRequest) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn json_envelope_for_a_batch() {
        let text = Fixture::new(b"hello", &[("UNIQ_KEY", "ID1"), ("TAGS", "TagA")]);
        let binary = Fixture::new(&[0xff, 0x00, 0x80], &[]);
        let r = encoder(Format::Json)
            .encode(CTX, &[text.view("ID1"), binary.view("ID2")])
            .unwrap();
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(header(&r, HEADER_TOPIC), Some("orders"));
        assert_eq!(header(&r, HEADER_CONSUMER_GROUP), Some("g1"));
        assert_eq!(header(&r, HEADER_MESSAGE_COUNT), Some("2"));
        // Batch requests carry no per-message headers.
        assert_eq!(header(&r, "rocketmq-msg-id"), None);
        let v = json_body(&r);
        assert_eq!(
            v["messages"][0],
            json!({
                "msgId": "ID1",
                "offsetMsgId": "0A00000100002A9F0000000000000010",
                "topic": "orders",
                "queueId": 3,
                "brokerName": "broker-a",
                "queueOffset": 42,
                "tags": "TagA",
                "keys": "k1 k2",
                "reconsumeTimes": 1,
                "bornTimestamp": 1_700_000_000_123_i64,
                "storeTimestamp": 1_700_000_000_456_i64,
                "bornHost": "10.0.0.2:50000",
                "storeHost": "10.0.0.1:10911",
                "properties": {"UNIQ_KEY": "ID1", "TAGS": "TagA"},
                "body": "hello"
            })
        );
        assert_eq!(v["topic"], "orders");
        assert_eq!(v["consumerGroup"], "g1");
        assert_eq!(v["messages"][1]["bodyBase64"], "/wCA");
        assert!(v["messages"][1].get("body").is_none());
        assert!(v["messages"][0].get("bodyBase64").is_none());
    }

    #[test]
    fn single_message_requests_carry_metadata_headers() {
        let f = Fixture::new(
            b"x",
            &[
                ("UNIQ_KEY", "ID1"),
                ("Color", "red"),
                ("bad header", "v"),
                ("NEWLINE", "a\nb"),
            ],
        );
        let r = encoder(Format::Json).encode(CTX, &[f.view("ID1")]).unwrap();
        assert_eq!(header(&r, HEADER_MESSAGE_COUNT), Some("1"));
        assert_eq!(header(&r, "rocketmq-msg-id"), Some("ID1"));
        assert_eq!(
            header(&r, "rocketmq-offset-msg-id"),
            Some("0A00000100002A9F0000000000000010")
        );
        assert_eq!(header(&r, "rocketmq-queue-id"), Some("3"));
        assert_eq!(header(&r, "rocketmq-broker-name"), Some("broker-a"));
        assert_eq!(header(&r, "rocketmq-queue-offset"), Some("42"));
        assert_eq!(header(&r, "rocketmq-tags"), Some("TagA"));
        assert_eq!(header(&r, "rocketmq-keys"), Some("k1 k2"));
        assert_eq!(header(&r, "rocketmq-reconsume-times"), Some("1"));
        assert_eq!(header(&r, "rocketmq-born-timestamp"), Some("1700000000123"));
        assert_eq!(
            header(&r, "rocketmq-store-timestamp"),
            Some("1700000000456")
        );
        assert_eq!(header(&r, "rocketmq-born-host"), Some("10.0.0.2:50000"));
        assert_eq!(header(&r, "rocketmq-store-host"), Some("10.0.0.1:10911"));
        assert_eq!(header(&r, "rocketmq-property-color"), Some("red"));
        assert_eq!(header(&r, "rocketmq-property-uniq_key"), None);
        assert_eq!(header(&r, "rocketmq-property-newline"), None);
        assert!(!r.headers.keys().any(|k| k.as_str().contains("bad")));
    }

    #[test]
    fn property_headers_are_bounded() {
        let big = "v".repeat(1000);
        let props: Vec<(String, String)> =
            (0..20).map(|i| (format!("P{i:02}"), big.clone())).collect();
        let props: Vec<(&str, &str)> = props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let f = Fixture::new(b"x", &props);
        let r = encoder(Format::Raw).encode(CTX, &[f.view("ID1")]).unwrap();
        let n = r
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with(HEADER_PROPERTY_PREFIX))
            .count();
        // Each costs 21 + 1000 + 4 bytes: three fit in the 4096-byte budget.
        assert_eq!(n, 3);
    }

    /// Bytes the encoder's headers take on the wire (`name: value\r\n`).
    fn header_bytes(r: &EncodedRequest) -> usize {
        r.headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum()
    }

    /// `view` encoded in `format`, its headers checked to stay under the 8 KiB servers accept.
    fn encode_fitting(format: Format, view: &MessageView<'_>) -> EncodedRequest {
        let r = encoder(format)
            .encode(CTX, std::slice::from_ref(view))
            .unwrap();
        let bytes = header_bytes(&r);
        assert!(bytes < 8192, "{format}: {bytes} bytes");
        r
    }

    /// JSON whose strings are not UTF-8 (GBK text, say) is no JSON a request may carry: it goes
    /// as `data_base64`, and a "structured event" with such bytes is wrapped, not forwarded.
    #[test]
    fn json_that_is_not_utf8_is_not_copied_into_a_request() {
        let gbk: &[u8] = b"{\"name\":\"\xD6\xD0\"}";
        let event: &[u8] =
            b"{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"/s\",\"type\":\"t\",\"data\":\"\xff\"}";
        assert_eq!(structured_cloudevent_id(event), None);
        for body in [gbk, event] {
            for declared in [None, Some("application/json")] {
                let props: Vec<(&str, &str)> =
                    declared.iter().map(|ct| ("CONTENT_TYPE", *ct)).collect();
                let f = Fixture::new(body, &props);
                let r = encoder(Format::CloudEventsBatch)
                    .encode(CTX, &[f.view("A")])
                    .unwrap();
                let text = std::str::from_utf8(&r.body).expect("the request is UTF-8");
                let v: Value = serde_json::from_str(text).unwrap();
                let data = BASE64
                    .decode(v[0]["data_base64"].as_str().unwrap())
                    .unwrap();
                assert_eq!(data, body);
                let r = encoder(Format::CloudEvents)
                    .encode(CTX, &[f.view("A")])
                    .unwrap();
                assert_eq!(header(&r, "ce-id"), Some("A"), "wrapped in binary mode");
                assert_eq!(&r.body[..], body);
            }
        }
    }

    /// A KEYS property of tens of KB must not push the request past what servers accept (8 KiB
    /// of headers is a common limit; the answer, 431, would retry the message into the DLQ).
    #[test]
    fn tag_and_key_headers_are_bounded() {
        let keys = "k".repeat(40_000);
        let f = Fixture::new(b"x", &[("KEYS", &keys), ("Color", "red")]);
        let mut view = f.view("ID1");
        view.keys = Some(&keys);
        let r = encoder(Format::Json)
            .encode(CTX, std::slice::from_ref(&view))
            .unwrap();
        assert!(header_bytes(&r) < 8192, "{} bytes", header_bytes(&r));
        assert_eq!(header(&r, "rocketmq-keys"), None);
        // What fits still goes, and the body still carries the keys.
        assert_eq!(header(&r, "rocketmq-tags"), Some("TagA"));
        assert_eq!(header(&r, "rocketmq-property-color"), Some("red"));
        assert_eq!(json_body(&r)["messages"][0]["keys"], keys.as_str());

        // Binary CloudEvents: the tag and keys go twice (`rocketmq-*` and `ce-*`); a huge tag
        // and huge keys are left out of both, and the body is delivered untouched.
        let tags = "t".repeat(5_000);
        view.tags = Some(&tags);
        for format in [Format::Raw, Format::CloudEvents] {
            let r = encode_fitting(format, &view);
            for name in [
                "rocketmq-tags",
                "rocketmq-keys",
                "ce-subject",
                "ce-rocketmqkeys",
            ] {
                assert_eq!(header(&r, name), None, "{format}: {name}");
            }
            assert_eq!(&r.body[..], b"x");
        }

        // Keys that fit once but not twice go as `ce-rocketmqkeys`, the attribute a
        // CloudEvents receiver reads; `rocketmq-keys` is the copy left out.
        let keys = "k".repeat(3_000);
        view.keys = Some(&keys);
        view.tags = Some("TagA");
        let r = encoder(Format::CloudEvents)
            .encode(CTX, std::slice::from_ref(&view))
            .unwrap();
        assert_eq!(header(&r, "ce-rocketmqkeys"), Some(keys.as_str()));
        assert_eq!(header(&r, "rocketmq-keys"), None);
        assert_eq!(header(&r, "ce-subject"), Some("TagA"));
        assert_eq!(header(&r, "rocketmq-tags"), Some("TagA"));
        assert!(header_bytes(&r) < 8192, "{} bytes", header_bytes(&r));
    }

    /// Many short properties stop at a count of headers, not only at the byte budget.
    #[test]
    fn property_headers_are_bounded_in_number() {
        let names: Vec<String> = (0..100).map(|i| format!("p{i:03}")).collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        let f = Fixture::new(b"x", &pairs);
        for format in [Format::Raw, Format::CloudEvents] {
            let r = encoder(format).encode(CTX, &[f.view("A")]).unwrap();
            let properties = r
                .headers
                .keys()
                .filter(|h| h.as_str().starts_with(HEADER_PROPERTY_PREFIX))
                .count();
            assert_eq!(properties, MAX_PROPERTY_HEADERS, "{format}");
            assert!(
                r.headers.len() < 100,
                "{format}: {} headers",
                r.headers.len()
            );
        }
    }

    /// A msgId that cannot be a header value is left out like one that does not fit, so the
    /// request names its message by the offset msgId; an empty one is no msgId at all.
    #[test]
    fn a_msg_id_that_cannot_be_a_header_is_replaced_by_the_offset_msg_id() {
        let f = Fixture::new(
            b"x",
            &[("UNIQ_KEY", "id\r\nx-injected: 1"), ("Color", "red\n")],
        );
        let view = f.view("id\r\nx-injected: 1");
        let r = encoder(Format::Raw)
            .encode(CTX, std::slice::from_ref(&view))
            .unwrap();
        assert_eq!(header(&r, "rocketmq-msg-id"), None);
        assert_eq!(header(&r, "x-injected"), None);
        assert!(r.left_out.iter().any(|h| h == "rocketmq-msg-id"));
        assert_eq!(r.event_ids, vec![(0, OFFSET_ID.to_owned())]);
        // A property whose value cannot be a header is skipped; it does not end the others.
        assert_eq!(header(&r, "rocketmq-property-color"), None);
        assert_eq!(&r.body[..], b"x");
    }

    /// A producer that sets its own `UNIQ_KEY` can make the msgId any length. It goes in the
    /// body; in headers only while it fits. A binary event then needs another `id`.
    #[test]
    fn a_huge_msg_id_is_bounded_in_headers() {
        let id = "u".repeat(10_000);
        let f = Fixture::new(b"x", &[("UNIQ_KEY", &id)]);
        let view = f.view(&id);
        for format in [Format::Json, Format::Raw, Format::CloudEvents] {
            let r = encode_fitting(format, &view);
            assert_eq!(header(&r, "rocketmq-msg-id"), None, "{format}");
            assert!(
                r.left_out.iter().any(|h| h == "rocketmq-msg-id"),
                "{format}: {:?}",
                r.left_out
            );
            // What fits still goes.
            assert_eq!(header(&r, "rocketmq-tags"), Some("TagA"), "{format}");
            assert_eq!(&r.body[..] == b"x", format != Format::Json, "{format}");
            // The receiver still has the offset msgId, and an answer may name the message by it.
            assert_eq!(header(&r, "rocketmq-offset-msg-id"), Some(OFFSET_ID));
            assert!(r.event_ids.contains(&(0, OFFSET_ID.to_owned())), "{format}");
        }
        let r = encoder(Format::Json)
            .encode(CTX, std::slice::from_ref(&view))
            .unwrap();
        assert_eq!(json_body(&r)["messages"][0]["msgId"], id.as_str());

        // The required `ce-id` falls back to the msgId's digest, the same on every redelivery
        // (the offset msgId of a retried message is new), and an answer may name it.
        let r = encode_fitting(Format::CloudEvents, &view);
        let digest = sign::id_digest(&id);
        assert_eq!(digest.len(), 32);
        assert_eq!(header(&r, "ce-id"), Some(digest.as_str()));
        assert_eq!(
            r.event_ids,
            [(0, digest.clone()), (0, OFFSET_ID.to_owned())]
        );
        let redelivered = Fixture::new(b"x", &[("UNIQ_KEY", &id)]);
        let mut view = redelivered.view(&id);
        view.offset_msg_id = "0A00000100002A9F0000000000FF0010".to_owned();
        let again = encode_fitting(Format::CloudEvents, &view);
        assert_eq!(header(&again, "ce-id"), Some(digest.as_str()));

        // An id that fits goes as `ce-id`, and no other id is recorded.
        let r = encoder(Format::CloudEvents)
            .encode(CTX, &[f.view("ID1")])
            .unwrap();
        assert_eq!(header(&r, "ce-id"), Some("ID1"));
        assert_eq!(header(&r, "rocketmq-msg-id"), Some("ID1"));
        assert!(r.event_ids.is_empty());
    }

    #[test]
    fn headers_left_out_for_size_are_named() {
        let keys = "k".repeat(5_000);
        let f = Fixture::new(b"x", &[]);
        let mut view = f.view("ID1");
        let r = encoder(Format::CloudEvents)
            .encode(CTX, std::slice::from_ref(&view))
            .unwrap();
        assert!(r.left_out.is_empty());
        view.keys = Some(&keys);
        let r = encoder(Format::CloudEvents)
            .encode(CTX, std::slice::from_ref(&view))
            .unwrap();
        let names: Vec<&str> = r.left_out.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, ["ce-rocketmqkeys", "rocketmq-keys"]);
        // Batch requests carry no per-message headers, so nothing is left out.
        let r = encoder(Format::Json)
            .encode(CTX, &[view.clone(), view.clone()])
            .unwrap();
        assert!(r.left_out.is_empty());
    }

    #[test]
    fn raw_is_one_untouched_body() {
        let f = Fixture::new(&[0xff, 1, 2], &[]);
        let r = encoder(Format::Raw).encode(CTX, &[f.view("ID1")]).unwrap();
        assert_eq!(&r.body[..], &[0xff, 1, 2]);
        assert_eq!(header(&r, "content-type"), Some(OCTET_STREAM));
        assert_eq!(header(&r, "rocketmq-msg-id"), Some("ID1"));
        let f = Fixture::new(b"<a/>", &[(CONTENT_TYPE_PROPERTY, "application/xml")]);
        let r = encoder(Format::Raw).encode(CTX, &[f.view("ID1")]).unwrap();
        assert_eq!(header(&r, "content-type"), Some("application/xml"));
        assert_eq!(&r.body[..], b"<a/>");
        let err = encoder(Format::Raw)
            .encode(CTX, &[f.view("A"), f.view("B")])
            .unwrap_err();
        assert!(matches!(err, EncodeError::NotOneMessage { count: 2, .. }));
        assert!(!err.is_retriable());
        assert!(encoder(Format::CloudEvents).encode(CTX, &[]).is_err());
    }

    #[test]
    fn cloudevents_binary_mode() {
        let f = Fixture::new(
            br#"{"a":1}"#,
            &[(CONTENT_TYPE_PROPERTY, "application/json")],
        );
        let r = encoder(Format::CloudEvents)
            .encode(CTX, &[f.view("ID1")])
            .unwrap();
        assert_eq!(&r.body[..], br#"{"a":1}"#);
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(header(&r, "ce-specversion"), Some("1.0"));
        assert_eq!(header(&r, "ce-id"), Some("ID1"));
        assert_eq!(header(&r, "ce-source"), Some("rocketmq://broker-a/orders"));
        assert_eq!(header(&r, "ce-type"), Some("org.apache.rocketmq.message"));
        assert_eq!(header(&r, "ce-time"), Some("2023-11-14T22:13:20.456Z"));
        assert_eq!(header(&r, "ce-subject"), Some("TagA"));
        assert_eq!(header(&r, "ce-rocketmqqueueoffset"), Some("42"));
        assert_eq!(header(&r, "ce-rocketmqkeys"), Some("k1%20k2"));
        assert_eq!(header(&r, "rocketmq-msg-id"), Some("ID1"));
        let custom = Encoder::new(
            Format::CloudEvents,
            "com.example.order",
            Some("/orders".into()),
        );
        let r = custom.encode(CTX, &[f.view("ID1")]).unwrap();
        assert_eq!(header(&r, "ce-type"), Some("com.example.order"));
        assert_eq!(header(&r, "ce-source"), Some("/orders"));
        let plain = Fixture::new(b"bytes", &[]);
        let r = custom.encode(CTX, &[plain.view("ID1")]).unwrap();
        assert_eq!(header(&r, "content-type"), Some(OCTET_STREAM));
    }

    fn header_bytes_of<'h>(r: &'h EncodedRequest, name: &str) -> Option<&'h [u8]> {
        r.headers.get(name).map(HeaderValue::as_bytes)
    }

    /// CloudEvents HTTP protocol binding 1.0.2, section 3.1.3.2: in `ce-*` header values space,
    /// double quote, percent and every character outside U+0021-U+007E are percent-encoded,
    /// byte by byte of their UTF-8 form, upper-case hex preferred.
    #[test]
    fn ce_header_values_are_percent_encoded() {
        let f = Fixture::new(b"x", &[]);
        let mut view = f.view("id \"1\" 100%");
        // The spec's own example.
        view.tags = Some("Euro \u{20AC} \u{1F600}");
        view.keys = Some("k1 k2\tk3");
        let custom = Encoder::new(
            Format::CloudEvents,
            "com.example.order",
            Some("/a b".into()),
        );
        let r = custom.encode(CTX, std::slice::from_ref(&view)).unwrap();
        for (name, value) in [
            ("ce-subject", "Euro%20%E2%82%AC%20%F0%9F%98%80"),
            ("ce-id", "id%20%221%22%20100%25"),
            ("ce-rocketmqkeys", "k1%20k2%09k3"),
            ("ce-source", "/a%20b"),
            ("ce-type", "com.example.order"),
            ("ce-time", "2023-11-14T22:13:20.456Z"),
            // Not CloudEvents attributes: the value as it is.
            ("rocketmq-msg-id", "id \"1\" 100%"),
            ("rocketmq-keys", "k1 k2\tk3"),
        ] {
            assert_eq!(header(&r, name), Some(value), "{name}");
        }

        // Every other printable ASCII character goes as it is.
        let printable: String = (0x20_u8..=0x7e).map(char::from).collect();
        let expected: String = printable
            .chars()
            .map(|c| match c {
                ' ' => "%20".to_owned(),
                '"' => "%22".to_owned(),
                '%' => "%25".to_owned(),
                c => c.to_string(),
            })
            .collect();
        view.tags = Some(&printable);
        let r = custom.encode(CTX, std::slice::from_ref(&view)).unwrap();
        assert_eq!(header(&r, "ce-subject"), Some(expected.as_str()));

        // The budget counts the encoded length: 2,000 bytes of UTF-8 become 6,000.
        let tags = "\u{e9}".repeat(1_000);
        view.tags = Some(&tags);
        view.keys = None;
        let r = custom.encode(CTX, std::slice::from_ref(&view)).unwrap();
        assert_eq!(header(&r, "ce-subject"), None);
        assert_eq!(header_bytes_of(&r, "rocketmq-tags"), Some(tags.as_bytes()));
    }

    const EVENT: &str = r#" {"specversion":"1.0","id":"e1","source":"/app","type":"t","data":{"n":12345678901234567890123}} "#;

    #[test]
    fn cloudevents_are_not_wrapped_twice() {
        let f = Fixture::new(EVENT.as_bytes(), &[]);
        let r = encoder(Format::CloudEvents)
            .encode(CTX, &[f.view("ID1")])
            .unwrap();
        assert_eq!(&r.body[..], EVENT.as_bytes());
        assert_eq!(header(&r, "content-type"), Some(CE_STRUCTURED));
        assert_eq!(header(&r, "ce-id"), None);
        assert_eq!(header(&r, "rocketmq-msg-id"), Some("ID1"));
        // The receiver sees the event's id: recorded, so that its answer can name it.
        assert_eq!(r.event_ids, [(0, "e1".to_owned())]);

        let other = Fixture::new(b"plain", &[]);
        let r = encoder(Format::CloudEventsBatch)
            .encode(CTX, &[f.view("ID1"), other.view("ID2")])
            .unwrap();
        let text = std::str::from_utf8(&r.body).unwrap();
        // The event is embedded byte for byte (the big number is not rounded).
        assert!(text.starts_with(&format!("[{},", EVENT.trim())), "{text}");
        let v = json_body(&r);
        assert_eq!(v[0]["id"], "e1");
        assert_eq!(v[1]["id"], "ID2");
        assert_eq!(v[1]["data"], "plain");
        let r = encoder(Format::CloudEventsBatch)
            .encode(CTX, &[other.view("ID2"), f.view("ID1")])
            .unwrap();
        assert_eq!(r.event_ids, [(1, "e1".to_owned())]);
        // Events built here carry the msgId as their id: nothing to record.
        let r = encoder(Format::CloudEvents)
            .encode(CTX, &[other.view("ID2")])
            .unwrap();
        assert!(r.event_ids.is_empty());
    }

    #[test]
    fn structured_detection() {
        assert_eq!(
            structured_cloudevent_id(EVENT.as_bytes()).as_deref(),
            Some("e1")
        );
        assert_eq!(
            structured_cloudevent_id(
                br#"{"specversion":"1.0","id":"a\"b","source":"/s","type":"t"}"#
            )
            .as_deref(),
            Some("a\"b")
        );
        for body in [
            "",
            "[]",
            r#"{"specversion":"1.0","id":"e1","source":"/app"}"#,
            r#"{"specversion":"1.0","id":"","source":"/app","type":"t"}"#,
            r#"{"specversion":1,"id":"e1","source":"/app","type":"t"}"#,
            r#"{"specversion":"1.0","id":"e1","source":"/app","type":"t""#,
            r#"{"id":"e1","source":"/app","type":"t"}"#,
        ] {
            assert_eq!(structured_cloudevent_id(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn cloudevents_batch_data_forms() {
        let json_body = Fixture::new(br#"{"big":12345678901234567890123}"#, &[]);
        let text = Fixture::new(b"hi", &[]);
        let binary = Fixture::new(&[0xff, 0x00], &[]);
        let xml = Fixture::new(b"<a/>", &[(CONTENT_TYPE_PROPERTY, "application/xml")]);
        let bad_json = Fixture::new(b"{oops", &[(CONTENT_TYPE_PROPERTY, "application/json")]);
        let r = encoder(Format::CloudEventsBatch)
            .encode(
                CTX,
                &[
                    json_body.view("A"),
                    text.view("B"),
                    binary.view("C"),
                    xml.view("D"),
                    bad_json.view("E"),
                ],
            )
            .unwrap();
        assert_eq!(header(&r, "content-type"), Some(CE_BATCH));
        assert_eq!(header(&r, HEADER_MESSAGE_COUNT), Some("5"));
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(
            body.contains(r#""data":{"big":12345678901234567890123}}"#),
            "{body}"
        );
        let v = json_body_of(body);
        assert_eq!(v[0]["datacontenttype"], "application/json");
        assert_eq!(v[0]["specversion"], "1.0");
        assert_eq!(v[0]["id"], "A");
        assert_eq!(v[0]["source"], "rocketmq://broker-a/orders");
        assert_eq!(v[0]["type"], DEFAULT_CLOUDEVENTS_TYPE);
        assert_eq!(v[0]["time"], "2023-11-14T22:13:20.456Z");
        assert_eq!(v[0]["subject"], "TagA");
        // Integers where they fit a CloudEvents Integer (32 bits), strings where they may not.
        assert_eq!(v[0]["rocketmqqueueid"], 3);
        assert_eq!(v[0]["rocketmqreconsume"], 1);
        assert_eq!(v[0]["rocketmqqueueoffset"], "42");
        assert_eq!(v[0]["rocketmqborntime"], "1700000000123");
        // A namespaced topic (`%`) and `|` are encoded in the source, not in the extension.
        let f = Fixture::new(b"x", &[]);
        let mut view = f.view("A");
        view.topic = "ns%orders|v2";
        let r = encoder(Format::CloudEventsBatch)
            .encode(CTX, std::slice::from_ref(&view))
            .unwrap();
        let ns = json_body_of(std::str::from_utf8(&r.body).unwrap());
        assert_eq!(ns[0]["source"], "rocketmq://broker-a/ns%25orders%7Cv2");
        assert_eq!(ns[0]["rocketmqtopic"], "ns%orders|v2");
        assert_eq!(v[1]["data"], "hi");
        assert_eq!(v[1]["datacontenttype"], "text/plain; charset=utf-8");
        assert_eq!(v[2]["data_base64"], "/wA=");
        assert_eq!(v[2]["datacontenttype"], OCTET_STREAM);
        assert!(v[2].get("data").is_none());
        assert_eq!(v[3]["data"], "<a/>");
        assert_eq!(v[3]["datacontenttype"], "application/xml");
        assert_eq!(v[4]["data_base64"], BASE64.encode(b"{oops"));
        let empty = encoder(Format::CloudEventsBatch).encode(CTX, &[]).unwrap();
        assert_eq!(&empty.body[..], b"[]");
    }

    fn json_body_of(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn format_names() {
        for f in [
            Format::Json,
            Format::Raw,
            Format::CloudEvents,
            Format::CloudEventsBatch,
        ] {
            assert_eq!(f.as_str().parse::<Format>(), Ok(f));
        }
        assert_eq!(
            "CloudEvents_Batch".parse::<Format>(),
            Ok(Format::CloudEventsBatch)
        );
        assert!("xml".parse::<Format>().is_err());
        assert!(Format::Raw.one_message_per_request());
        assert!(Format::CloudEvents.one_message_per_request());
        assert!(!Format::Json.one_message_per_request());
        assert!(!Format::CloudEventsBatch.one_message_per_request());
        assert_eq!(Format::default(), Format::Json);
    }

    proptest::proptest! {
        #[test]
        fn json_body_round_trips(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let f = Fixture::new(&body, &[]);
            let r = encoder(Format::Json).encode(CTX, &[f.view("A")]).unwrap();
            let v = json_body(&r);
            let m = &v["messages"][0];
            let decoded = match m.get("body") {
                Some(Value::String(s)) => s.as_bytes().to_vec(),
                _ => BASE64.decode(m["bodyBase64"].as_str().unwrap()).unwrap(),
            };
            proptest::prop_assert_eq!(decoded, body);
        }

        #[test]
        fn cloudevents_batch_is_valid_json(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let f = Fixture::new(&body, &[]);
            let r = encoder(Format::CloudEventsBatch).encode(CTX, &[f.view("A"), f.view("B")]).unwrap();
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            proptest::prop_assert_eq!(v.as_array().map(Vec::len), Some(2));
        }

        #[test]
        fn json_envelope_matches_an_independent_rendering(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            text in "\\PC{0,40}",
            props in proptest::collection::btree_map("[A-Za-z_\"\\\\]{1,12}", "\\PC{0,20}", 0..6),
            topic in "[a-z%\"]{1,10}",
            use_text in proptest::bool::ANY,
        ) {
            let body = if use_text { text.into_bytes() } else { body };
            let pairs: Vec<(&str, &str)> = props.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let f = Fixture::new(&body, &pairs);
            let mut view = f.view("ID\"1");
            view.topic = &topic;
            view.tags = None;
            let ctx = Context { group: "g\\1", topic: &topic };
            let r = encoder(Format::Json).encode(ctx, &[view.clone(), view.clone()]).unwrap();
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let mut expected = json!({
                "msgId": view.msg_id,
                "offsetMsgId": view.offset_msg_id,
                "topic": topic,
                "queueId": view.queue_id,
                "brokerName": view.broker_name,
                "queueOffset": view.queue_offset,
                "tags": null,
                "keys": view.keys,
                "reconsumeTimes": view.reconsume_times,
                "bornTimestamp": view.born_timestamp,
                "storeTimestamp": view.store_timestamp,
                "bornHost": view.born_host.to_string(),
                "storeHost": view.store_host.to_string(),
                "properties": props,
            });
            match std::str::from_utf8(&body) {
                Ok(t) => expected["body"] = json!(t),
                Err(_) => expected["bodyBase64"] = json!(BASE64.encode(&body)),
            }
            proptest::prop_assert_eq!(&v["topic"], &json!(topic));
            proptest::prop_assert_eq!(&v["consumerGroup"], &json!("g\\1"));
            proptest::prop_assert_eq!(&v["messages"], &json!([expected.clone(), expected]));
        }
    }
}
