//! `RemotingCommand`: one request or response, and its two header encodings
//! (rocketmq-remoting.md sections 1.3-1.7 and 1.9).
//!
//! Invariants:
//! - Decoding accepts both header encodings on every frame, whatever we sent: 5.x and the Rust
//!   servers answer in their own serialize type, not the request's (section 1.2).
//! - JSON headers are parsed tolerantly (unknown keys, `null`s, any language name, numbers and
//!   booleans as ext values) and written Java-shaped: sorted keys, `serializeTypeCurrentRPC`
//!   always present, ext values always strings, because the Rust servers drop connections that
//!   send anything else (section 11.4 #1).
//! - JSON headers are read in one pass without a `serde_json::Value` tree (a tree costs ~16x its
//!   text, and the frame cap is 16 MiB): unknown keys are skipped without keeping anything, and a
//!   repeated key counts with its last value.
//! - Headers of either encoding over [`MAX_HEADER_LEN`] (1 MiB) are refused before they are
//!   read: the frame cap alone (16 MiB) would let one binary header of tiny ext fields cost
//!   some 200 MiB of strings and map nodes.
//! - Ext fields stay inside [`ExtFields`]; typed request/response structs in
//!   [`crate::remoting::rpc`] read them through accessors that name the missing or bad field.
//! - Nothing here panics on peer input: every length is checked against what is left.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::code::{RequestCode, ResponseCode};
use super::error::{Excerpt, RemotingError};
use super::frame::{check_header_fits, encode_frame, header_len_of, HEADER_WORD_LEN};

/// Flag bit 0: set on responses (section 1.6).
pub const FLAG_RESPONSE: i32 = 0x1;
/// Flag bit 1: set on oneway requests, which the receiver must not answer.
pub const FLAG_ONEWAY: i32 = 0x2;
/// `MQVersion` ordinal we announce: V5_3_3, what the current Java client sends (section 1.9).
/// At least 401 (V4_9_4) is needed for standard-JSON route data.
pub const CLIENT_VERSION: i32 = 479;
/// Minimum size of a ROCKETMQ binary header (section 1.4).
const MIN_BINARY_HEADER_LEN: usize = 21;

// === impl SerializeType ===

/// How a frame's header is encoded: the high byte of the `header_len_and_type` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SerializeType {
    /// fastjson-shaped JSON text (type 0); what every peer understands.
    #[default]
    Json,
    /// The compact ROCKETMQ binary header (type 1).
    RocketMq,
}

impl SerializeType {
    /// The type byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Json => 0,
            Self::RocketMq => 1,
        }
    }

    /// The type announced by a type byte.
    ///
    /// # Errors
    /// [`RemotingError::UnknownSerializeType`] for anything but 0 and 1.
    pub fn from_code(code: u8) -> Result<Self, RemotingError> {
        match code {
            0 => Ok(Self::Json),
            1 => Ok(Self::RocketMq),
            other => Err(RemotingError::UnknownSerializeType(other)),
        }
    }

    /// `JSON` or `ROCKETMQ`, the Java enum names (also used in error messages).
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::RocketMq => "ROCKETMQ",
        }
    }
}

impl fmt::Display for SerializeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl LanguageCode ===

/// The sender's implementation language (section 1.9). Open: a name or number this crate does
/// not know is kept, so decoding never fails on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LanguageCode {
    #[allow(missing_docs)]
    Java,
    #[allow(missing_docs)]
    Cpp,
    #[allow(missing_docs)]
    Dotnet,
    #[allow(missing_docs)]
    Python,
    #[allow(missing_docs)]
    Delphi,
    #[allow(missing_docs)]
    Erlang,
    #[allow(missing_docs)]
    Ruby,
    #[allow(missing_docs)]
    Other,
    #[allow(missing_docs)]
    Http,
    #[allow(missing_docs)]
    Go,
    #[allow(missing_docs)]
    Php,
    #[allow(missing_docs)]
    Oms,
    /// Known to Java brokers since 4.9.4; what this client sends.
    Rust,
    /// 5.x only.
    NodeJs,
    /// A name from a JSON header that has no known number; encodes as OTHER (7) in binary.
    UnknownName(String),
    /// A number from a binary header that has no known name; encodes as `"OTHER"` in JSON.
    UnknownCode(u8),
}

/// (variant, Java name, number) for every known language.
const LANGUAGES: [(LanguageCode, &str, u8); 14] = [
    (LanguageCode::Java, "JAVA", 0),
    (LanguageCode::Cpp, "CPP", 1),
    (LanguageCode::Dotnet, "DOTNET", 2),
    (LanguageCode::Python, "PYTHON", 3),
    (LanguageCode::Delphi, "DELPHI", 4),
    (LanguageCode::Erlang, "ERLANG", 5),
    (LanguageCode::Ruby, "RUBY", 6),
    (LanguageCode::Other, "OTHER", 7),
    (LanguageCode::Http, "HTTP", 8),
    (LanguageCode::Go, "GO", 9),
    (LanguageCode::Php, "PHP", 10),
    (LanguageCode::Oms, "OMS", 11),
    (LanguageCode::Rust, "RUST", 12),
    (LanguageCode::NodeJs, "NODE_JS", 13),
];

impl LanguageCode {
    /// The language with this Java enum name; unknown names are kept as
    /// [`LanguageCode::UnknownName`].
    pub fn from_name(name: &str) -> Self {
        LANGUAGES
            .iter()
            .find(|(_, n, _)| *n == name)
            .map_or_else(|| Self::UnknownName(name.to_owned()), |(l, _, _)| l.clone())
    }

    /// The language with this number; unknown numbers are kept as [`LanguageCode::UnknownCode`].
    pub fn from_code(code: u8) -> Self {
        LANGUAGES
            .iter()
            .find(|(_, _, c)| *c == code)
            .map_or(Self::UnknownCode(code), |(l, _, _)| l.clone())
    }

    /// The name written in JSON headers. An unknown number is written as `"OTHER"` because the
    /// Rust servers reject names they do not know.
    pub fn name(&self) -> &str {
        match self {
            Self::UnknownName(name) => name,
            Self::UnknownCode(_) => "OTHER",
            known => LANGUAGES
                .iter()
                .find(|(l, _, _)| l == known)
                .map_or("OTHER", |(_, n, _)| n),
        }
    }

    /// The number written in binary headers; an unknown name is written as OTHER (7).
    pub fn code(&self) -> u8 {
        match self {
            Self::UnknownCode(code) => *code,
            Self::UnknownName(_) => 7,
            known => LANGUAGES
                .iter()
                .find(|(l, _, _)| l == known)
                .map_or(7, |(_, _, c)| *c),
        }
    }
}

impl fmt::Display for LanguageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCode(code) => write!(f, "language#{code}"),
            other => f.write_str(other.name()),
        }
    }
}

// === impl ExtFields ===

/// The "custom header" of a command: string keys (exact Java field names) to string values.
///
/// Kept sorted (a `BTreeMap`) so JSON headers come out in fastjson's order and encodings are
/// deterministic. Typed accessors return [`RemotingError::MissingField`] or
/// [`RemotingError::InvalidField`] naming the field, so a bad peer answer is diagnosable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ExtFields(BTreeMap<String, String>);

impl ExtFields {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to the `Display` form of `value` (Java's `String.valueOf`).
    pub fn insert(&mut self, key: impl Into<String>, value: impl fmt::Display) {
        self.0.insert(key.into(), value.to_string());
    }

    /// Sets `key` only when `value` is `Some`: Java leaves null header fields out.
    pub fn insert_opt<V: fmt::Display>(&mut self, key: impl Into<String>, value: Option<V>) {
        if let Some(value) = value {
            self.insert(key, value);
        }
    }

    /// Builder form of [`ExtFields::insert`].
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl fmt::Display) -> Self {
        self.insert(key, value);
        self
    }

    /// Builder form of [`ExtFields::insert_opt`].
    #[must_use]
    pub fn with_opt<V: fmt::Display>(mut self, key: impl Into<String>, value: Option<V>) -> Self {
        self.insert_opt(key, value);
        self
    }

    /// The raw value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields in key (byte) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of a required string field.
    ///
    /// # Errors
    /// [`RemotingError::MissingField`] when absent.
    pub fn str(&self, field: &'static str) -> Result<&str, RemotingError> {
        self.get(field).ok_or(RemotingError::MissingField { field })
    }

    /// The value of an optional string field.
    pub fn optional_str(&self, field: &str) -> Option<&str> {
        self.get(field)
    }

    /// A required field parsed with `FromStr` (numbers).
    ///
    /// # Errors
    /// [`RemotingError::MissingField`] when absent, [`RemotingError::InvalidField`] when the value
    /// does not parse.
    pub fn required<T: FromStr>(&self, field: &'static str) -> Result<T, RemotingError> {
        parse_value(field, self.str(field)?)
    }

    /// An optional field parsed with `FromStr`; absent is `Ok(None)`.
    ///
    /// # Errors
    /// [`RemotingError::InvalidField`] when present but not parseable.
    pub fn optional<T: FromStr>(&self, field: &'static str) -> Result<Option<T>, RemotingError> {
        self.get(field).map(|v| parse_value(field, v)).transpose()
    }

    /// A required `i32` field.
    ///
    /// # Errors
    /// As [`ExtFields::required`].
    pub fn required_i32(&self, field: &'static str) -> Result<i32, RemotingError> {
        self.required(field)
    }

    /// A required `i64` field.
    ///
    /// # Errors
    /// As [`ExtFields::required`].
    pub fn required_i64(&self, field: &'static str) -> Result<i64, RemotingError> {
        self.required(field)
    }

    /// An optional `i32` field.
    ///
    /// # Errors
    /// As [`ExtFields::optional`].
    pub fn optional_i32(&self, field: &'static str) -> Result<Option<i32>, RemotingError> {
        self.optional(field)
    }

    /// An optional `i64` field.
    ///
    /// # Errors
    /// As [`ExtFields::optional`].
    pub fn optional_i64(&self, field: &'static str) -> Result<Option<i64>, RemotingError> {
        self.optional(field)
    }

    /// A required boolean field: `"true"` or `"false"`, ASCII case-insensitive.
    ///
    /// # Errors
    /// [`RemotingError::MissingField`] when absent, [`RemotingError::InvalidField`] otherwise.
    pub fn required_bool(&self, field: &'static str) -> Result<bool, RemotingError> {
        parse_bool(field, self.str(field)?)
    }

    /// An optional boolean field.
    ///
    /// # Errors
    /// [`RemotingError::InvalidField`] when present but neither `"true"` nor `"false"`.
    pub fn optional_bool(&self, field: &'static str) -> Result<Option<bool>, RemotingError> {
        self.get(field).map(|v| parse_bool(field, v)).transpose()
    }
}

fn parse_value<T: FromStr>(field: &'static str, value: &str) -> Result<T, RemotingError> {
    value.parse().map_err(|_| RemotingError::InvalidField {
        field,
        value: value.to_owned(),
    })
}

fn parse_bool(field: &'static str, value: &str) -> Result<bool, RemotingError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(RemotingError::InvalidField {
            field,
            value: value.to_owned(),
        })
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for ExtFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl IntoIterator for ExtFields {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

// === impl RemotingCommand ===

/// One request or response (section 1.5). The body is opaque here; its meaning depends on the
/// code and is interpreted by [`crate::remoting::rpc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotingCommand {
    /// Request code (requests) or response code (responses).
    pub code: i32,
    /// Sender's language.
    pub language: LanguageCode,
    /// Sender's `MQVersion` ordinal.
    pub version: i32,
    /// Correlation id; the connection assigns it to requests, responses copy it.
    pub opaque: i32,
    /// Bit field: [`FLAG_RESPONSE`], [`FLAG_ONEWAY`].
    pub flag: i32,
    /// Human-readable text, mostly error descriptions.
    pub remark: Option<String>,
    /// The flattened custom header.
    pub ext_fields: ExtFields,
    /// Payload; empty when absent.
    pub body: Bytes,
}

impl RemotingCommand {
    /// A request from this client: language RUST, version [`CLIENT_VERSION`], opaque 0 (the
    /// connection assigns it), flag 0.
    pub fn request(code: RequestCode, ext_fields: ExtFields, body: impl Into<Bytes>) -> Self {
        Self {
            code: code.value(),
            language: LanguageCode::Rust,
            version: CLIENT_VERSION,
            opaque: 0,
            flag: 0,
            remark: None,
            ext_fields,
            body: body.into(),
        }
    }

    /// A response to `request`: same opaque, response flag set, no ext fields, empty body.
    pub fn response_to(request: &Self, code: ResponseCode, remark: Option<String>) -> Self {
        Self {
            code: code.value(),
            language: LanguageCode::Rust,
            version: CLIENT_VERSION,
            opaque: request.opaque,
            flag: FLAG_RESPONSE,
            remark,
            ext_fields: ExtFields::new(),
            body: Bytes::new(),
        }
    }

    /// Replaces the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Replaces the ext fields.
    #[must_use]
    pub fn with_ext_fields(mut self, ext_fields: ExtFields) -> Self {
        self.ext_fields = ext_fields;
        self
    }

    /// Whether this is a response (flag bit 0).
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Whether this is a oneway request (flag bit 1), which must not be answered.
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// Sets or clears the oneway bit.
    pub fn set_oneway(&mut self, oneway: bool) {
        if oneway {
            self.flag |= FLAG_ONEWAY;
        } else {
            self.flag &= !FLAG_ONEWAY;
        }
    }

    /// The code read as a request code.
    pub fn request_code(&self) -> RequestCode {
        RequestCode::from(self.code)
    }

    /// The code read as a response code.
    pub fn response_code(&self) -> ResponseCode {
        ResponseCode::from(self.code)
    }

    /// Appends this command as one whole frame (length prefix included) to `out`.
    ///
    /// # Errors
    /// [`RemotingError::Encode`] when a value does not fit the chosen encoding (a code or version
    /// outside `i16` in binary, an ext key longer than `i16::MAX` bytes, a header over 16 MiB).
    /// Nothing is written then.
    pub fn encode(
        &self,
        serialize_type: SerializeType,
        out: &mut BytesMut,
    ) -> Result<(), RemotingError> {
        let header = match serialize_type {
            SerializeType::Json => self.json_header()?,
            SerializeType::RocketMq => self.binary_header()?,
        };
        encode_frame(serialize_type, &header, &self.body, out)
    }

    /// Parses one frame content as returned by [`crate::remoting::frame::FrameDecoder::decode`]
    /// (without the length prefix). The body shares `frame`'s memory.
    ///
    /// # Errors
    /// [`RemotingError::InvalidFrameLength`] if shorter than the header word,
    /// [`RemotingError::HeaderTooLong`], [`RemotingError::UnknownSerializeType`] and
    /// [`RemotingError::MalformedHeader`].
    pub fn decode(frame: Bytes) -> Result<Self, RemotingError> {
        Self::decode_with_type(frame).map(|(command, _)| command)
    }

    /// Like [`RemotingCommand::decode`], also telling which header encoding the peer used.
    ///
    /// # Errors
    /// As [`RemotingCommand::decode`].
    pub fn decode_with_type(mut frame: Bytes) -> Result<(Self, SerializeType), RemotingError> {
        if frame.len() < HEADER_WORD_LEN {
            return Err(RemotingError::InvalidFrameLength {
                value: i32::try_from(frame.len()).unwrap_or(i32::MAX),
            });
        }
        let frame_len = frame.len();
        let word = frame.get_u32();
        let header_len = header_len_of(word);
        check_header_fits(header_len, frame_len)?;
        // The shift leaves only the high byte, so the cast is lossless.
        let serialize_type = SerializeType::from_code((word >> 24) as u8)?;
        let header = frame.split_to(header_len);
        let body = frame;
        let command = match serialize_type {
            SerializeType::Json => parse_json_header(&header, body)?,
            SerializeType::RocketMq => parse_binary_header(&header, body)?,
        };
        Ok((command, serialize_type))
    }

    fn json_header(&self) -> Result<Vec<u8>, RemotingError> {
        let header = JsonHeaderOut {
            code: self.code,
            ext_fields: &self.ext_fields.0,
            flag: self.flag,
            language: self.language.name(),
            opaque: self.opaque,
            remark: self.remark.as_deref(),
            serialize_type_current_rpc: SerializeType::Json.name(),
            version: self.version,
        };
        serde_json::to_vec(&header).map_err(|err| RemotingError::Encode {
            reason: format!("JSON header: {err}"),
        })
    }

    fn binary_header(&self) -> Result<Vec<u8>, RemotingError> {
        let code = i16::try_from(self.code).map_err(|_| RemotingError::Encode {
            reason: format!("code {} does not fit the binary header's i16", self.code),
        })?;
        let version = i16::try_from(self.version).map_err(|_| RemotingError::Encode {
            reason: format!(
                "version {} does not fit the binary header's i16",
                self.version
            ),
        })?;
        let mut out = Vec::with_capacity(MIN_BINARY_HEADER_LEN + 64);
        out.put_i16(code);
        out.put_u8(self.language.code());
        out.put_i16(version);
        out.put_i32(self.opaque);
        out.put_i32(self.flag);
        put_long_str(&mut out, self.remark.as_deref().unwrap_or(""))?;
        let mut ext = Vec::new();
        for (key, value) in self.ext_fields.iter() {
            let key_len = i16::try_from(key.len()).map_err(|_| RemotingError::Encode {
                reason: format!("ext field key of {} bytes exceeds i16", key.len()),
            })?;
            ext.put_i16(key_len);
            ext.put_slice(key.as_bytes());
            put_long_str(&mut ext, value)?;
        }
        put_long_str(&mut out, &ext)?;
        Ok(out)
    }
}

/// Writes an i32 length and the bytes.
fn put_long_str(out: &mut Vec<u8>, bytes: impl AsRef<[u8]>) -> Result<(), RemotingError> {
    let bytes = bytes.as_ref();
    let len = i32::try_from(bytes.len()).map_err(|_| RemotingError::Encode {
        reason: format!("string of {} bytes exceeds i32", bytes.len()),
    })?;
    out.put_i32(len);
    out.put_slice(bytes);
    Ok(())
}

// === JSON header ===

/// The JSON header as Java writes it: keys in fastjson's sorted order, nulls left out.
#[derive(Serialize)]
struct JsonHeaderOut<'a> {
    code: i32,
    #[serde(rename = "extFields", skip_serializing_if = "map_is_empty")]
    ext_fields: &'a BTreeMap<String, String>,
    flag: i32,
    language: &'a str,
    opaque: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<&'a str>,
    #[serde(rename = "serializeTypeCurrentRPC")]
    serialize_type_current_rpc: &'static str,
    version: i32,
}

// serde's `skip_serializing_if` passes a reference to the field, hence `&&`.
fn map_is_empty(map: &&BTreeMap<String, String>) -> bool {
    map.is_empty()
}

fn malformed_json(reason: impl Into<String>) -> RemotingError {
    RemotingError::MalformedHeader {
        encoding: "JSON",
        reason: reason.into(),
    }
}

/// Parses a JSON header in one pass over the text, without a `serde_json::Value` tree: every
/// broker reply takes this path, and a tree costs ~16x its text, so a hostile peer's 16 MiB
/// header of unknown keys would have cost ~300 MiB.
///
/// A key that occurs twice counts with its last value, as in a JSON object read into a map (and
/// in fastjson); an earlier bad value of a repeated key does not matter. The values are checked
/// only after the whole text has parsed, so a syntax error anywhere is reported before a bad
/// field.
/// The largest header accepted, in either encoding. Real ones take a few hundred bytes (a
/// broker's remark with a stack trace a few KiB); the cap bounds what a hostile peer's header
/// costs to parse, which for nested JSON ext values re-printed with sorted keys grows with
/// nesting times size, and for binary ext fields of a few bytes each is some 13 times its size.
pub const MAX_HEADER_LEN: usize = 1 << 20;

fn parse_json_header(header: &[u8], body: Bytes) -> Result<RemotingCommand, RemotingError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(malformed_json(format!(
            "{} bytes, over the {MAX_HEADER_LEN} bytes a header may have",
            header.len()
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(header);
    let parsed = JsonHeaderIn::deserialize(&mut de)
        .and_then(|parsed| de.end().map(|()| parsed))
        // serde_json quotes the offending string whole ("invalid type: string ...").
        .map_err(|err| malformed_json(Excerpt(&err.to_string()).to_string()))?;
    let code = parsed.code.to_i32("code", None)?;
    let version = parsed.version.to_i32("version", Some(0))?;
    let opaque = parsed.opaque.to_i32("opaque", Some(0))?;
    let flag = parsed.flag.to_i32("flag", Some(0))?;
    let language = match parsed.language {
        JsonAtom::Null => LanguageCode::Java,
        JsonAtom::Str(name) => LanguageCode::from_name(&name),
        other => match other {
            JsonAtom::U64(n) => u8::try_from(n).ok(),
            _ => None,
        }
        .map(LanguageCode::from_code)
        .ok_or_else(|| malformed_json(format!("`language` is not a name: {other}")))?,
    };
    let ext_fields = match parsed.ext_fields {
        JsonAtom::Null => ExtFields::new(),
        JsonAtom::Object(fields) => fields,
        other => {
            return Err(malformed_json(format!(
                "`extFields` is not an object: {other}"
            )))
        }
    };
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark: parsed.remark,
        ext_fields,
        body,
    })
}

/// The keys of a JSON header this crate reads; any other key is skipped.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum JsonHeaderKey {
    Code,
    Language,
    Version,
    Opaque,
    Flag,
    Remark,
    ExtFields,
    #[serde(other)]
    Other,
}

/// A JSON header as read, before its values are checked: each known key's last value (an
/// absent key reads as `null`).
#[derive(Debug, Default)]
struct JsonHeaderIn<'de> {
    code: JsonAtom<'de>,
    language: JsonAtom<'de>,
    version: JsonAtom<'de>,
    opaque: JsonAtom<'de>,
    flag: JsonAtom<'de>,
    remark: Option<String>,
    ext_fields: JsonAtom<'de>,
}

impl<'de> Deserialize<'de> for JsonHeaderIn<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(JsonHeaderVisitor)
    }
}

struct JsonHeaderVisitor;

impl<'de> Visitor<'de> for JsonHeaderVisitor {
    type Value = JsonHeaderIn<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut header = JsonHeaderIn::default();
        let scalar = JsonAtomSeed { ext_fields: false };
        while let Some(key) = map.next_key()? {
            match key {
                JsonHeaderKey::Code => header.code = map.next_value_seed(scalar)?,
                JsonHeaderKey::Language => header.language = map.next_value_seed(scalar)?,
                JsonHeaderKey::Version => header.version = map.next_value_seed(scalar)?,
                JsonHeaderKey::Opaque => header.opaque = map.next_value_seed(scalar)?,
                JsonHeaderKey::Flag => header.flag = map.next_value_seed(scalar)?,
                JsonHeaderKey::Remark => header.remark = map.next_value::<ExtValue>()?.0,
                JsonHeaderKey::ExtFields => {
                    header.ext_fields = map.next_value_seed(JsonAtomSeed { ext_fields: true })?;
                }
                // `IgnoredAny` checks the syntax and keeps nothing. Unlike a tree it has no
                // nesting limit (serde_json skips iteratively, one byte per open bracket) and
                // does not check what only a typed read would (UTF-8 and surrogates inside
                // strings, numbers beyond f64): nothing of the value is used.
                JsonHeaderKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(header)
    }
}

/// One value of a known header key, kept as read until the whole header has parsed.
#[derive(Debug, Default)]
enum JsonAtom<'de> {
    #[default]
    Null,
    Bool(bool),
    U64(u64),
    /// A negative integer (serde_json reads non-negative ones as `u64`).
    I64(i64),
    F64(f64),
    /// Borrowed from the header unless it had escapes.
    Str(Cow<'de, str>),
    /// An array; its elements are skipped.
    Array,
    /// An object: the ext fields for `extFields`, skipped (empty) for the other keys.
    Object(ExtFields),
}

impl JsonAtom<'_> {
    /// An integer that must fit an `i32`; `null` (or absent) means `default`.
    fn to_i32(&self, key: &str, default: Option<i32>) -> Result<i32, RemotingError> {
        let value = match *self {
            Self::Null => return default.ok_or_else(|| malformed_json(format!("missing `{key}`"))),
            Self::U64(n) => i32::try_from(n).ok(),
            Self::I64(n) => i32::try_from(n).ok(),
            _ => None,
        };
        value.ok_or_else(|| malformed_json(format!("`{key}` is not an i32: {self}")))
    }
}

/// The value's JSON text, for error messages; arrays and objects (skipped, not kept) as `[...]`
/// and `{...}`.
impl fmt::Display for JsonAtom<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::U64(n) => write!(f, "{n}"),
            Self::I64(n) => write!(f, "{n}"),
            Self::F64(n) => write!(f, "{}", Value::from(*n)),
            Self::Str(s) => {
                let excerpt = Excerpt(s);
                write!(f, "{}", Value::from(excerpt.head()))?;
                excerpt.write_tail(f)
            }
            Self::Array => f.write_str("[...]"),
            Self::Object(_) => f.write_str("{...}"),
        }
    }
}

/// Reads a [`JsonAtom`]; `ext_fields` says whether an object is read as ext fields or skipped.
#[derive(Clone, Copy)]
struct JsonAtomSeed {
    ext_fields: bool,
}

impl<'de> DeserializeSeed<'de> for JsonAtomSeed {
    type Value = JsonAtom<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonAtomSeed {
    type Value = JsonAtom<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(JsonAtom::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(JsonAtom::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(JsonAtom::U64(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        // One form per number, as `Value` keeps it (serde_json itself passes only negative
        // integers here).
        Ok(u64::try_from(v).map_or(JsonAtom::I64(v), JsonAtom::U64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(JsonAtom::F64(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(JsonAtom::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(JsonAtom::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(JsonAtom::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = ExtFields::new();
        if !self.ext_fields {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(JsonAtom::Object(fields));
        }
        while let Some(key) = map.next_key::<String>()? {
            // A later `null` removes an earlier value of the same key: the last one counts.
            match map.next_value::<ExtValue>()?.0 {
                Some(value) => fields.0.insert(key, value),
                None => fields.0.remove(&key),
            };
        }
        Ok(JsonAtom::Object(fields))
    }
}

/// An ext value or the remark: a string as it is, `null` as absent, anything else as its JSON
/// text, which is what `String.valueOf` would have produced on a Java sender.
struct ExtValue(Option<String>);

impl<'de> Deserialize<'de> for ExtValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ExtValueVisitor).map(Self)
    }
}

struct ExtValueVisitor;

/// The text `write` puts out, as an ext value.
fn json_text<E: de::Error>(
    write: impl FnOnce(CompactJson<'_>) -> Result<(), E>,
) -> Result<Option<String>, E> {
    let mut out = Vec::new();
    write(CompactJson(&mut out))?;
    String::from_utf8(out).map(Some).map_err(E::custom)
}

impl<'de> Visitor<'de> for ExtValueVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        json_text(|out| out.visit_bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        json_text(|out| out.visit_u64(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        json_text(|out| out.visit_i64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        json_text(|out| out.visit_f64(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        json_text(|out| out.visit_seq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        json_text(|out| out.visit_map(map))
    }
}

/// Writes one JSON value the way `serde_json::Value` prints it (compact, numbers in serde_json's
/// form, object keys sorted and a repeated key's last value kept), without building the tree:
/// no peer sends nested ext values or remarks, but a hostile one can make one most of a 1 MiB
/// header, and its tree would take ~16x that. This takes the text written, 16 bytes per object
/// entry, and, for an object whose keys were not in order, a copy of its text and 24 more bytes
/// per entry while it is sorted.
struct CompactJson<'a>(&'a mut Vec<u8>);

impl CompactJson<'_> {
    fn write_json<T: Serialize + ?Sized, E: de::Error>(self, value: &T) -> Result<(), E> {
        serde_json::to_writer(self.0, value).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for CompactJson<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CompactJson<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.write_json(&v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.write_json(&v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.write_json(&v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.write_json(&v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.write_json(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'[');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if seq.next_element_seed(CompactJson(&mut *out))?.is_none() {
                out.truncate(mark);
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'{');
        let start = out.len();
        // Where each `"key":value` entry starts, and where its value does.
        let mut entries: Vec<(usize, usize)> = Vec::new();
        let mut in_order = true;
        loop {
            let mark = out.len();
            if !entries.is_empty() {
                out.push(b',');
            }
            let key = out.len();
            if map.next_key_seed(CompactJson(&mut *out))?.is_none() {
                out.truncate(mark);
                break;
            }
            out.push(b':');
            let value = out.len();
            if let Some(&(last, last_value)) = entries.last() {
                in_order &= key_order(&out[last..last_value - 1], &out[key..value - 1]).is_lt();
            }
            entries.push((key, value));
            map.next_value_seed(CompactJson(&mut *out))?;
        }
        if !in_order {
            // Sorted (stable, so repeats of a key stay in the order read), each key's last
            // entry copied back. serde_json escapes a key one way only, so a repeated key is
            // repeated text.
            let text = out.split_off(start);
            let ends = entries.iter().skip(1).map(|&(key, _)| key - 1);
            let mut spans: Vec<(usize, usize, usize)> = entries
                .iter()
                .zip(ends.chain([start + text.len()]))
                .map(|(&(key, value), end)| (key - start, value - start - 1, end - start))
                .collect();
            spans.sort_by(|a, b| key_order(&text[a.0..a.1], &text[b.0..b.1]));
            for (i, &(key, key_end, end)) in spans.iter().enumerate() {
                let repeated = spans
                    .get(i + 1)
                    .is_some_and(|&(next, next_end, _)| text[key..key_end] == text[next..next_end]);
                if !repeated {
                    if out.len() > start {
                        out.push(b',');
                    }
                    out.extend_from_slice(&text[key..end]);
                }
            }
        }
        out.push(b'}');
        Ok(())
    }
}

/// The order of two keys as serde_json wrote them (quoted, escaped), by their unescaped bytes,
/// which is how a `Value` object (a `BTreeMap<String, _>`) sorts them.
fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    unescaped(a).cmp(unescaped(b))
}

/// The bytes of a quoted string as serde_json escapes it: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
/// `\t`, and `\u00XX` for other control characters; nothing else.
fn unescaped(quoted: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let inner = quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default();
    let mut bytes = inner.iter().copied();
    std::iter::from_fn(move || {
        let byte = bytes.next()?;
        if byte != b'\\' {
            return Some(byte);
        }
        Some(match bytes.next()? {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let digits = [bytes.next()?, bytes.next()?, bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&digits).ok()?;
                u8::from_str_radix(hex, 16).ok()?
            }
            other => other,
        })
    })
}

// === ROCKETMQ binary header ===

fn malformed_binary(reason: impl Into<String>) -> RemotingError {
    RemotingError::MalformedHeader {
        encoding: "ROCKETMQ",
        reason: reason.into(),
    }
}

/// A bounds-checked reader over a binary header.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], RemotingError> {
        if n > self.bytes.len() {
            return Err(malformed_binary(format!(
                "{what} needs {n} bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], RemotingError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn i16(&mut self, what: &str) -> Result<i16, RemotingError> {
        self.array(what).map(i16::from_be_bytes)
    }

    fn i32(&mut self, what: &str) -> Result<i32, RemotingError> {
        self.array(what).map(i32::from_be_bytes)
    }

    fn u8(&mut self, what: &str) -> Result<u8, RemotingError> {
        self.array::<1>(what).map(|[b]| b)
    }

    /// A string of `len` bytes; a zero length is Java's null.
    fn string(&mut self, len: i64, what: &str) -> Result<Option<String>, RemotingError> {
        let len = usize::try_from(len)
            .map_err(|_| malformed_binary(format!("negative {what} length {len}")))?;
        if len == 0 {
            return Ok(None);
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| malformed_binary(format!("{what} is not UTF-8")))
    }
}

fn parse_binary_header(header: &[u8], body: Bytes) -> Result<RemotingCommand, RemotingError> {
    if header.len() < MIN_BINARY_HEADER_LEN {
        return Err(malformed_binary(format!(
            "header of {} bytes is shorter than {MIN_BINARY_HEADER_LEN}",
            header.len()
        )));
    }
    if header.len() > MAX_HEADER_LEN {
        return Err(malformed_binary(format!(
            "{} bytes, over the {MAX_HEADER_LEN} bytes a header may have",
            header.len()
        )));
    }
    let mut reader = Reader { bytes: header };
    let code = i32::from(reader.i16("code")?);
    let language = LanguageCode::from_code(reader.u8("language")?);
    let version = i32::from(reader.i16("version")?);
    let opaque = reader.i32("opaque")?;
    let flag = reader.i32("flag")?;
    let remark_len = reader.i32("remark length")?;
    let remark = reader.string(remark_len.into(), "remark")?;
    let ext_len = reader.i32("ext fields length")?;
    let ext_len = usize::try_from(ext_len)
        .map_err(|_| malformed_binary(format!("negative ext fields length {ext_len}")))?;
    let mut ext = Reader {
        bytes: reader.take(ext_len, "ext fields")?,
    };
    let mut ext_fields = ExtFields::new();
    while !ext.bytes.is_empty() {
        let key_len = ext.i16("ext key length")?;
        let key = ext.string(key_len.into(), "ext key")?;
        let value_len = ext.i32("ext value length")?;
        let value = ext.string(value_len.into(), "ext value")?;
        // Java maps empty strings to null and treats null entries as absent.
        if let (Some(key), Some(value)) = (key, value) {
            ext_fields.0.insert(key, value);
        }
    }
    // Bytes after the ext block are ignored, as the Java decoder does.
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::frame::FrameDecoder;
    use proptest::prelude::*;

    const A1_HEADER: &str = r#"{"code":105,"extFields":{"topic":"T1"},"flag":0,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":479}"#;

    fn route_request() -> RemotingCommand {
        let mut cmd = RemotingCommand::request(
            RequestCode::GetRouteInfoByTopic,
            ExtFields::new().with("topic", "T1"),
            Bytes::new(),
        );
        cmd.language = LanguageCode::Java;
        cmd.opaque = 7;
        cmd
    }

    fn decode_whole(mut bytes: BytesMut) -> RemotingCommand {
        let frame = FrameDecoder::default().decode(&mut bytes).unwrap().unwrap();
        assert!(bytes.is_empty());
        RemotingCommand::decode(frame).unwrap()
    }

    #[test]
    fn golden_a1_json_header() {
        let mut out = BytesMut::new();
        route_request()
            .encode(SerializeType::Json, &mut out)
            .unwrap();
        assert_eq!(out.len(), 4 + 128);
        assert_eq!(&out[..8], &[0, 0, 0, 0x80, 0, 0, 0, 0x7c]);
        assert_eq!(std::str::from_utf8(&out[8..]).unwrap(), A1_HEADER);
        assert_eq!(A1_HEADER.len(), 124);
        assert_eq!(decode_whole(out), route_request());
    }

    const A2: [u8; 42] = [
        0x00, 0x00, 0x00, 0x26, 0x01, 0x00, 0x00, 0x22, 0x00, 0x69, 0x00, 0x01, 0xdf, 0x00, 0x00,
        0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0d, 0x00,
        0x05, b't', b'o', b'p', b'i', b'c', 0x00, 0x00, 0x00, 0x02, b'T', b'1',
    ];

    #[test]
    fn golden_a2_binary_header() {
        let mut out = BytesMut::new();
        route_request()
            .encode(SerializeType::RocketMq, &mut out)
            .unwrap();
        assert_eq!(&out[..], &A2[..]);
        let (decoded, ty) =
            RemotingCommand::decode_with_type(Bytes::copy_from_slice(&A2[4..])).unwrap();
        assert_eq!(ty, SerializeType::RocketMq);
        assert_eq!(decoded, route_request());
        assert_eq!(decoded.request_code(), RequestCode::GetRouteInfoByTopic);
        assert_eq!(decoded.ext_fields.str("topic").unwrap(), "T1");
    }

    fn json_frame(header: &str, body: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u32(header.len() as u32);
        out.put_slice(header.as_bytes());
        out.put_slice(body);
        out.freeze()
    }

    #[test]
    fn json_tolerates_rust_server_shapes() {
        let header = r#"{"code":0,"extFields":null,"flag":1,"language":"RUST","opaque":9,"remark":null,"serializeTypeCurrentRPC":"JSON","version":0,"someNewKey":[1,2]}"#;
        let cmd = RemotingCommand::decode(json_frame(header, b"xyz")).unwrap();
        assert_eq!(cmd.code, 0);
        assert_eq!(cmd.language, LanguageCode::Rust);
        assert!(cmd.ext_fields.is_empty());
        assert_eq!(cmd.remark, None);
        assert!(cmd.is_response());
        assert!(!cmd.is_oneway());
        assert_eq!(cmd.opaque, 9);
        assert_eq!(&cmd.body[..], b"xyz");
        assert_eq!(cmd.response_code(), ResponseCode::Success);
    }

    #[test]
    fn json_stringifies_non_string_ext_values() {
        let header = r#"{"code":11,"language":"KOTLIN","extFields":{"queueId":3,"big":-9007199254740993,"flag":true,"gone":null,"obj":{"a":1}}}"#;
        let cmd = RemotingCommand::decode(json_frame(header, b"")).unwrap();
        assert_eq!(cmd.language, LanguageCode::UnknownName("KOTLIN".into()));
        assert_eq!(cmd.ext_fields.required_i32("queueId").unwrap(), 3);
        assert_eq!(
            cmd.ext_fields.required_i64("big").unwrap(),
            -9_007_199_254_740_993
        );
        assert!(cmd.ext_fields.required_bool("flag").unwrap());
        assert!(!cmd.ext_fields.contains_key("gone"));
        assert_eq!(cmd.ext_fields.get("obj"), Some(r#"{"a":1}"#));
        assert_eq!(cmd.version, 0);
        assert_eq!(cmd.flag, 0);
    }

    #[test]
    fn json_rejects_garbage() {
        for header in [
            "[1]",
            "{\"flag\":1}",
            "{\"code\":1e99}",
            "{\"code\":1,\"extFields\":3}",
            "{",
        ] {
            assert!(
                matches!(
                    RemotingCommand::decode(json_frame(header, b"")),
                    Err(RemotingError::MalformedHeader {
                        encoding: "JSON",
                        ..
                    })
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn rejects_frame_level_problems() {
        assert!(matches!(
            RemotingCommand::decode(Bytes::from_static(&[0, 0, 0])),
            Err(RemotingError::InvalidFrameLength { value: 3 })
        ));
        assert!(matches!(
            RemotingCommand::decode(Bytes::from_static(&[0, 0, 0, 5, b'{', b'}'])),
            Err(RemotingError::HeaderTooLong {
                header_len: 5,
                frame_len: 2
            })
        ));
        assert!(matches!(
            RemotingCommand::decode(Bytes::from_static(&[2, 0, 0, 0])),
            Err(RemotingError::UnknownSerializeType(2))
        ));
    }

    #[test]
    fn binary_rejects_strings_longer_than_header() {
        let mut frame = BytesMut::from(&A2[4..]);
        // Remark length (offset 4 + 13) claims 1000 bytes.
        frame[4 + 13..4 + 17].copy_from_slice(&1000i32.to_be_bytes());
        assert!(matches!(
            RemotingCommand::decode(frame.freeze()),
            Err(RemotingError::MalformedHeader {
                encoding: "ROCKETMQ",
                ..
            })
        ));
        let mut frame = BytesMut::from(&A2[4..]);
        // Ext value length claims 3 bytes, only 2 left in the ext block.
        frame[4 + 28..4 + 32].copy_from_slice(&3i32.to_be_bytes());
        assert!(RemotingCommand::decode(frame.freeze()).is_err());
        let mut frame = BytesMut::from(&A2[4..]);
        // Negative ext key length.
        frame[4 + 21..4 + 23].copy_from_slice(&(-1i16).to_be_bytes());
        assert!(RemotingCommand::decode(frame.freeze()).is_err());
    }

    #[test]
    fn binary_refuses_codes_beyond_i16() {
        let mut cmd = route_request();
        cmd.code = 200_050;
        let mut out = BytesMut::new();
        assert!(matches!(
            cmd.encode(SerializeType::RocketMq, &mut out),
            Err(RemotingError::Encode { .. })
        ));
        assert!(out.is_empty());
        cmd.encode(SerializeType::Json, &mut out).unwrap();
        assert_eq!(decode_whole(out).code, 200_050);
    }

    #[test]
    fn flags_and_responses() {
        let mut request = route_request();
        request.opaque = 42;
        request.set_oneway(true);
        assert!(request.is_oneway());
        assert_eq!(request.flag, FLAG_ONEWAY);
        request.set_oneway(false);
        assert_eq!(request.flag, 0);
        let response =
            RemotingCommand::response_to(&request, ResponseCode::SystemError, Some("no".into()));
        assert_eq!(response.opaque, 42);
        assert!(response.is_response());
        assert_eq!(response.code, 1);
        assert_eq!(response.remark.as_deref(), Some("no"));
    }

    #[test]
    fn ext_field_accessors_name_the_field() {
        let ext = ExtFields::new()
            .with("queueOffset", "12x")
            .with("ok", "TRUE")
            .with("n", -5);
        assert!(matches!(
            ext.required_i64("queueOffset"),
            Err(RemotingError::InvalidField { field: "queueOffset", ref value }) if value == "12x"
        ));
        assert!(matches!(
            ext.required_i64("missing"),
            Err(RemotingError::MissingField { field: "missing" })
        ));
        assert_eq!(ext.optional_i32("missing").unwrap(), None);
        assert_eq!(ext.optional_i32("n").unwrap(), Some(-5));
        assert_eq!(ext.optional_bool("ok").unwrap(), Some(true));
        assert!(ext.optional_bool("n").is_err());
    }

    #[test]
    fn language_codes_map_both_ways() {
        for (language, name, code) in LANGUAGES {
            assert_eq!(LanguageCode::from_name(name), language);
            assert_eq!(LanguageCode::from_code(code), language);
            assert_eq!(language.name(), name);
            assert_eq!(language.code(), code);
        }
        assert_eq!(LanguageCode::from_code(200), LanguageCode::UnknownCode(200));
        assert_eq!(LanguageCode::UnknownCode(200).name(), "OTHER");
        assert_eq!(LanguageCode::UnknownName("X".into()).code(), 7);
    }

    fn arb_language(binary: bool) -> impl Strategy<Value = LanguageCode> {
        let known = (0u8..14).prop_map(LanguageCode::from_code);
        if binary {
            prop_oneof![known, (14u8..).prop_map(LanguageCode::UnknownCode)].boxed()
        } else {
            prop_oneof![
                known,
                "[A-Z_]{1,8}".prop_map(|name| LanguageCode::from_name(&name))
            ]
            .boxed()
        }
    }

    fn arb_command(binary: bool) -> impl Strategy<Value = RemotingCommand> {
        // Binary headers cannot carry empty strings (they decode as null), nor codes beyond i16.
        let text = if binary { "\\PC{1,12}" } else { "\\PC{0,12}" };
        let code = if binary {
            any::<i16>().prop_map(i32::from).boxed()
        } else {
            any::<i32>().boxed()
        };
        (
            code.clone(),
            arb_language(binary),
            code,
            any::<i32>(),
            any::<i32>(),
            proptest::option::of(text),
            proptest::collection::btree_map("[a-zA-Z]{1,10}", text, 0..6),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(
                |(code, language, version, opaque, flag, remark, ext, body)| RemotingCommand {
                    code,
                    language,
                    version,
                    opaque,
                    flag,
                    remark,
                    ext_fields: ExtFields(ext),
                    body: Bytes::from(body),
                },
            )
    }

    proptest! {
        #[test]
        fn json_round_trip(cmd in arb_command(false)) {
            let mut out = BytesMut::new();
            cmd.encode(SerializeType::Json, &mut out).unwrap();
            prop_assert_eq!(decode_whole(out), cmd);
        }

        #[test]
        fn binary_round_trip(cmd in arb_command(true)) {
            let mut out = BytesMut::new();
            cmd.encode(SerializeType::RocketMq, &mut out).unwrap();
            prop_assert_eq!(decode_whole(out), cmd);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut decoder = FrameDecoder::new(1 << 16);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decoder.decode(&mut buf) {
                let _ = RemotingCommand::decode(frame);
            }
            // Frame contents alone, too: exercises the header parsers on every input.
            let _ = RemotingCommand::decode(Bytes::from(bytes));
        }

        #[test]
        fn arbitrary_headers_never_panic(
            ty in prop_oneof![Just(0u8), Just(1u8), any::<u8>()],
            header in proptest::collection::vec(any::<u8>(), 0..200),
            body in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            // A correct header word, so the header parsers see every random header.
            let mut frame = BytesMut::new();
            frame.put_u32((u32::from(ty) << 24) | header.len() as u32);
            frame.put_slice(&header);
            frame.put_slice(&body);
            if let Ok(cmd) = RemotingCommand::decode(frame.freeze()) {
                prop_assert_eq!(&cmd.body[..], &body[..]);
            }
        }

        #[test]
        fn mutated_golden_frames_never_panic(
            index in 0usize..42, value in any::<u8>(), json in any::<bool>(),
        ) {
            let mut bytes = if json {
                let mut out = BytesMut::new();
                route_request().encode(SerializeType::Json, &mut out).unwrap();
                out.to_vec()
            } else {
                A2.to_vec()
            };
            let index = index % bytes.len();
            bytes[index] = value;
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(frame)) = FrameDecoder::default().decode(&mut buf) {
                let _ = RemotingCommand::decode(frame);
            }
        }
    }

    // === the streaming JSON parser against the tree-based one it replaced ===

    /// The tree-based JSON header parser this module used before `parse_json_header`: the
    /// reference the streaming parser must agree with.
    fn reference_parse_json_header(header: &[u8]) -> Result<RemotingCommand, RemotingError> {
        let json_i32 = |object: &serde_json::Map<String, Value>,
                        key: &str,
                        default: Option<i32>| match object.get(key) {
            None | Some(Value::Null) => {
                default.ok_or_else(|| malformed_json(format!("missing `{key}`")))
            }
            Some(value) => value
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| malformed_json(format!("`{key}` is not an i32: {value}"))),
        };
        let value: Value =
            serde_json::from_slice(header).map_err(|err| malformed_json(err.to_string()))?;
        let Value::Object(object) = value else {
            return Err(malformed_json("header is not a JSON object"));
        };
        let code = json_i32(&object, "code", None)?;
        let version = json_i32(&object, "version", Some(0))?;
        let opaque = json_i32(&object, "opaque", Some(0))?;
        let flag = json_i32(&object, "flag", Some(0))?;
        let language = match object.get("language") {
            None | Some(Value::Null) => LanguageCode::Java,
            Some(Value::String(name)) => LanguageCode::from_name(name),
            Some(other) => other
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .map(LanguageCode::from_code)
                .ok_or_else(|| malformed_json(format!("`language` is not a name: {other}")))?,
        };
        let remark = match object.get("remark") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => Some(other.to_string()),
        };
        let ext_fields = match object.get("extFields") {
            None | Some(Value::Null) => ExtFields::new(),
            Some(Value::Object(fields)) => fields
                .iter()
                .filter_map(|(key, value)| {
                    let value = match value {
                        Value::Null => return None,
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    Some((key.clone(), value))
                })
                .collect(),
            Some(other) => {
                return Err(malformed_json(format!(
                    "`extFields` is not an object: {other}"
                )))
            }
        };
        Ok(RemotingCommand {
            code,
            language,
            version,
            opaque,
            flag,
            remark,
            ext_fields,
            body: Bytes::new(),
        })
    }

    /// What the tree rejects and the streaming parser accepts: checks a tree makes on values that
    /// the streaming parser skips with `IgnoredAny` (unknown keys, and the content of an array or
    /// object that is an error anyway or is replaced by a later value of its key).
    const SKIPPED_VALUE_CHECKS: [&str; 5] = [
        "recursion limit exceeded",
        "invalid unicode code point",
        "lone leading surrogate in hex escape",
        "unexpected end of hex escape",
        "number out of range",
    ];

    fn json_reason(result: Result<RemotingCommand, RemotingError>) -> String {
        match result {
            Err(RemotingError::MalformedHeader {
                encoding: "JSON",
                reason,
            }) => reason,
            other => panic!("expected a malformed JSON header, got {other:?}"),
        }
    }

    /// How the two parsers compared on one header.
    #[derive(Debug, Default)]
    struct Agreement {
        both_ok: usize,
        both_err: usize,
        /// Rejected by the tree for a check in [`SKIPPED_VALUE_CHECKS`], accepted now.
        skipped_checks: usize,
    }

    impl Agreement {
        /// Parses `header` with both parsers and panics unless they agree: the same command, or
        /// both errors (a bad field named the same way), or a tree error from a skipped check.
        fn check(&mut self, header: &[u8]) {
            let shown = String::from_utf8_lossy(header);
            let old = reference_parse_json_header(header);
            let new = parse_json_header(header, Bytes::new());
            match (old, new) {
                (Ok(old), Ok(new)) => {
                    assert_eq!(new, old, "{shown}");
                    self.both_ok += 1;
                }
                (old @ Err(_), new @ Err(_)) => {
                    let (old, new) = (json_reason(old), json_reason(new));
                    // A field error reads the same up to the value, which the streaming parser
                    // prints as `[...]`/`{...}` for arrays and objects it did not keep.
                    if old.starts_with('`') || old.starts_with("missing `") {
                        let head = old.split(": ").next().unwrap_or_default();
                        assert!(new.starts_with(head), "{shown}: {old} / {new}");
                    }
                    self.both_err += 1;
                }
                (old @ Err(_), Ok(_)) => {
                    let old = json_reason(old);
                    assert!(
                        SKIPPED_VALUE_CHECKS.iter().any(|check| old.contains(check)),
                        "only the tree rejects {shown}: {old}"
                    );
                    self.skipped_checks += 1;
                }
                (Ok(_), new @ Err(_)) => {
                    panic!("only the stream rejects {shown}: {}", json_reason(new))
                }
            }
        }
    }

    /// Headers that exercise every rule of the JSON header parser.
    const TRICKY_JSON_HEADERS: &[&str] = &[
        A1_HEADER,
        r#"{"code":0,"extFields":null,"flag":1,"language":"RUST","opaque":9,"remark":null,"serializeTypeCurrentRPC":"JSON","version":474}"#,
        r#"{"code":0,"extFields":{"maxOffset":"1000000","minOffset":"0","nextBeginOffset":"32","suggestWhichBrokerId":"0"},"flag":1,"language":"RUST","opaque":42,"remark":"FOUND","serializeTypeCurrentRPC":"JSON","version":474}"#,
        // Missing fields and nulls: `code` is required, the rest default.
        r#"{"code":7}"#,
        r#"{}"#,
        r#"{"code":null}"#,
        r#"{"code":1,"language":null,"version":null,"opaque":null,"flag":null,"remark":null,"extFields":null}"#,
        r#"{"flag":1}"#,
        // Numbers as strings are not numbers.
        r#"{"code":"1"}"#,
        r#"{"code":1,"opaque":"2"}"#,
        r#"{"code":1,"version":true}"#,
        r#"{"code":1,"flag":[1]}"#,
        r#"{"code":{"a":1}}"#,
        // Beyond i32, floats, -0 (a float to serde_json).
        r#"{"code":2147483647,"opaque":-2147483648}"#,
        r#"{"code":2147483648}"#,
        r#"{"code":1,"opaque":-2147483649}"#,
        r#"{"code":1,"flag":18446744073709551615}"#,
        r#"{"code":1,"flag":18446744073709551616}"#,
        r#"{"code":1.0}"#,
        r#"{"code":1e2}"#,
        r#"{"code":-0}"#,
        r#"{"code":1e999}"#,
        // Languages: names, numbers, unknown ones, wrong types.
        r#"{"code":1,"language":"GO"}"#,
        r#"{"code":1,"language":"KOTLIN"}"#,
        r#"{"code":1,"language":""}"#,
        r#"{"code":1,"language":"RU\u0053T"}"#,
        r#"{"code":1,"language":9}"#,
        r#"{"code":1,"language":200}"#,
        r#"{"code":1,"language":255}"#,
        r#"{"code":1,"language":256}"#,
        r#"{"code":1,"language":-1}"#,
        r#"{"code":1,"language":9.0}"#,
        r#"{"code":1,"language":true}"#,
        r#"{"code":1,"language":["JAVA"]}"#,
        // Remarks of every type.
        r#"{"code":1,"remark":""}"#,
        r#"{"code":1,"remark":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n\t"}"#,
        r#"{"code":1,"remark":12}"#,
        r#"{"code":1,"remark":-1.50}"#,
        r#"{"code":1,"remark":false}"#,
        r#"{"code":1,"remark":[1,"a",null,{"b":2,"a":1}]}"#,
        r#"{"code":1,"remark":{"z":{},"a":[]}}"#,
        // Ext values of every JSON type.
        r#"{"code":1,"extFields":{}}"#,
        r#"{"code":1,"extFields":{"s":"v","e":"","n":3,"neg":-9007199254740993,"big":18446744073709551616,"f":1.5,"exp":1E2,"z":-0,"zf":-0.0,"t":true,"fa":false,"nul":null,"arr":[1,[2],{}],"obj":{"b":1,"a":{"c":null}}}}"#,
        r#"{"code":1,"extFields":{"k\u00e9y":"v\u00e9","\ud83d\ude00":"\u0000","":"empty key"}}"#,
        r#"{"code":1,"extFields":{"x":1e999}}"#,
        r#"{"code":1,"extFields":"a=b"}"#,
        r#"{"code":1,"extFields":[]}"#,
        r#"{"code":1,"extFields":3}"#,
        r#"{"code":1,"extFields":{"a":"\ud800"}}"#,
        // Unknown keys with nested structures, and keys that only look like known ones.
        r#"{"code":1,"x":{"code":2,"extFields":{"a":"b"}},"y":[[[{"z":[]}]]],"w":null}"#,
        r#"{"Code":5,"code":1,"ext_fields":{"a":"b"},"languages":"GO"}"#,
        r#"{"code":1,"co\u0064e":2}"#,
        // Repeated keys: the last value counts, even a null.
        r#"{"code":1,"code":2}"#,
        r#"{"code":"x","code":3}"#,
        r#"{"code":3,"code":"x"}"#,
        r#"{"code":3,"code":null}"#,
        r#"{"code":1,"language":"GO","language":null}"#,
        r#"{"code":1,"remark":"a","remark":null}"#,
        r#"{"code":1,"remark":null,"remark":"b"}"#,
        r#"{"code":1,"extFields":{"a":"1"},"extFields":{"b":"2"}}"#,
        r#"{"code":1,"extFields":{"a":"1"},"extFields":null}"#,
        r#"{"code":1,"extFields":3,"extFields":{"a":"1"}}"#,
        r#"{"code":1,"extFields":{"a":"1","a":"2"}}"#,
        r#"{"code":1,"extFields":{"a":"1","a":null}}"#,
        r#"{"code":1,"extFields":{"a":null,"a":"1"}}"#,
        r#"{"code":1,"extFields":{"a":{"x":1,"x":2}}}"#,
        // Not an object, trailing data, broken text.
        "",
        " ",
        "null",
        "1",
        r#""{\"code\":1}""#,
        "[1]",
        "[1,",
        r#"{"code":1} "#,
        "\n{\"code\":1}\t",
        r#"{"code":1}x"#,
        r#"{"code":1}{}"#,
        r#"{"code":1},"#,
        r#"{"code":1,}"#,
        r#"{"code":1"#,
        r#"{"code" 1}"#,
        r#"{code:1}"#,
        r#"{"code":01}"#,
        r#"{"code":1,"remark":"a
b"}"#,
        r#"{"code":1,"remark":"\x"}"#,
        "{\"code\":1,\"remark\":\"\\u12\"}",
    ];

    #[test]
    fn json_parser_agrees_with_the_tree_on_tricky_headers() {
        let mut agreement = Agreement::default();
        for header in TRICKY_JSON_HEADERS {
            agreement.check(header.as_bytes());
        }
        // Invalid UTF-8 in a known key's string.
        agreement.check(b"{\"code\":1,\"remark\":\"\xff\"}");
        agreement.check(b"{\"code\":1,\"extFields\":{\"\xc3\":\"v\"}}");
        assert_eq!(agreement.skipped_checks, 0, "{agreement:?}");
        assert!(agreement.both_ok > 35, "{agreement:?}");
    }

    #[test]
    fn json_parser_differs_from_the_tree_only_on_skipped_values() {
        // Each of these is rejected by the tree for a check on a value nothing reads; the
        // streaming parser skips the value (syntax checked only) and accepts the header.
        let deep = format!(
            r#"{{"code":1,"x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let cases: [&[u8]; 7] = [
            deep.as_bytes(),
            b"{\"code\":1,\"x\":\"\xff\"}",
            br#"{"code":1,"x":"\ud800"}"#,
            br#"{"code":1,"x":{"\udc00":1}}"#,
            br#"{"code":1,"x":[1e999]}"#,
            // A repeated key's earlier value is skipped when it is an array.
            br#"{"code":[1e999],"code":2}"#,
            b"{\"code\":1,\"extFields\":[\"\xff\"],\"extFields\":null}",
        ];
        for header in cases {
            let mut agreement = Agreement::default();
            agreement.check(header);
            assert_eq!(
                agreement.skipped_checks,
                1,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        // serde_json's tree treats a first key `$serde_json::private::RawValue` as its internal
        // raw-value marker (its `raw_value` feature, switched on by another dependency) and
        // parses the string value as the whole object; the streaming parser sees a plain key.
        let marker = r#"{"$serde_json::private::RawValue":"{\"code\":5}"}"#;
        assert_eq!(
            reference_parse_json_header(marker.as_bytes()).unwrap().code,
            5
        );
        assert!(parse_json_header(marker.as_bytes(), Bytes::new()).is_err());
        let marker = r#"{"code":1,"extFields":{"$serde_json::private::RawValue":"{\"a\":\"b\"}"}}"#;
        let old = reference_parse_json_header(marker.as_bytes()).unwrap();
        assert_eq!(old.ext_fields.get("a"), Some("b"));
        let new = parse_json_header(marker.as_bytes(), Bytes::new()).unwrap();
        assert_eq!(
            new.ext_fields.get("$serde_json::private::RawValue"),
            Some(r#"{"a":"b"}"#)
        );
        let marker = r#"{"code":1,"extFields":{"a":{"$serde_json::private::RawValue":"[1]"}}}"#;
        let old = reference_parse_json_header(marker.as_bytes()).unwrap();
        assert_eq!(old.ext_fields.get("a"), Some("[1]"));
        let new = parse_json_header(marker.as_bytes(), Bytes::new()).unwrap();
        assert_eq!(
            new.ext_fields.get("a"),
            Some(r#"{"$serde_json::private::RawValue":"[1]"}"#)
        );
    }

    /// splitmix64: a small deterministic generator, so a failing random header reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    /// Known keys, look-alikes, and keys whose escaped text sorts unlike the key itself (`"`
    /// before `#`, control characters first).
    const RANDOM_KEYS: [&str; 18] = [
        "code",
        "language",
        "version",
        "opaque",
        "flag",
        "remark",
        "extFields",
        "serializeTypeCurrentRPC",
        "x",
        "Code",
        "co\\u0064e",
        "",
        "\\\"",
        "#",
        "\\u001f",
        "\\n",
        "a\\\\",
        "\u{e9}",
    ];

    const RANDOM_SCALARS: [&str; 30] = [
        "null",
        "true",
        "false",
        "0",
        "-0",
        "7",
        "-1",
        "255",
        "256",
        "2147483647",
        "2147483648",
        "-2147483649",
        "18446744073709551615",
        "18446744073709551616",
        "1.5",
        "1e2",
        "-0.0",
        "1E-7",
        "1e999",
        "\"\"",
        "\"JAVA\"",
        "\"RUST\"",
        "\"KOTLIN\"",
        "\"12\"",
        "\"caf\\u00e9\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "\"a\\\"b\\\\c\\n\"",
        "\"\u{e9}\u{1f600}\"",
        "\"FOUND\"",
    ];

    /// A random JSON value of at most `depth` levels of nesting, as text.
    fn random_json(rng: &mut Rng, depth: usize, out: &mut String) {
        match rng.below(if depth == 0 { 1 } else { 4 }) {
            0 | 1 => out.push_str(rng.pick(&RANDOM_SCALARS)),
            2 => {
                out.push('[');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_json(rng, depth - 1, out);
                }
                out.push(']');
            }
            _ => random_object(rng, depth - 1, out),
        }
    }

    /// A random JSON object whose keys are drawn from [`RANDOM_KEYS`], so known keys, repeats and
    /// look-alikes all occur; known keys mostly get values of their type, so that many headers
    /// parse. Most start with a valid `code`.
    fn random_object(rng: &mut Rng, depth: usize, out: &mut String) {
        out.push('{');
        let code_first = rng.below(4) > 0;
        if code_first {
            out.push_str(r#""code":0"#);
        }
        for i in 0..rng.below(8) {
            if i > 0 || code_first {
                out.push(',');
            }
            let key = rng.pick(&RANDOM_KEYS);
            out.push('"');
            out.push_str(key);
            out.push_str("\":");
            let typed = rng.below(4) > 0;
            match key {
                "code" | "version" | "opaque" | "flag" if typed => {
                    out.push_str(&(rng.next() as i32 >> rng.below(32)).to_string());
                }
                "language" if typed => out.push_str(rng.pick(&["\"GO\"", "\"X\"", "9", "200"])),
                "extFields" if typed => random_object(rng, depth.min(2), out),
                _ => random_json(rng, depth, out),
            }
        }
        out.push('}');
    }

    /// `header` with one to three random byte edits: a byte replaced, inserted or removed, a
    /// slice copied elsewhere (repeating keys) or the end cut off.
    fn mutate(rng: &mut Rng, header: &[u8]) -> Vec<u8> {
        const BYTES: &[u8] = b"{}[]\",:0123456789-+.eEtrufalsn \\u/\x00\x1f\x7f\xc3\xa9\xff";
        let mut out = header.to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(out.len() + 1);
            match rng.below(5) {
                0 if at < out.len() => out[at] = rng.pick(BYTES),
                1 => out.insert(at, rng.pick(BYTES)),
                2 if at < out.len() => {
                    out.remove(at);
                }
                3 => {
                    let from = rng.below(out.len() + 1);
                    let to = (from + rng.below(24)).min(out.len());
                    let slice = out[from..to].to_vec();
                    out.splice(at..at, slice);
                }
                _ => out.truncate(at),
            }
        }
        out
    }

    #[test]
    fn json_parser_agrees_with_the_tree_on_random_headers() {
        let mut rng = Rng(0x5eed);
        let mut agreement = Agreement::default();
        let mut generated = Vec::new();
        for _ in 0..3000 {
            let mut header = String::new();
            random_object(&mut rng, 3, &mut header);
            agreement.check(header.as_bytes());
            generated.push(header);
        }
        for _ in 0..3000 {
            let base = if rng.below(2) == 0 {
                rng.pick(TRICKY_JSON_HEADERS)
            } else {
                generated[rng.below(generated.len())].as_str()
            };
            agreement.check(&mutate(&mut rng, base.as_bytes()));
        }
        // Not vacuous: both outcomes are common among the random headers.
        assert!(agreement.both_ok > 1000, "{agreement:?}");
        assert!(agreement.both_err > 1000, "{agreement:?}");
        eprintln!("{agreement:?}");
    }

    #[test]
    fn json_parser_skips_large_unknown_values() {
        // ~800 KB of unknown arrays: a tree of it would take ~14 MB; skipped, it takes nothing.
        let mut header = String::from(r#"{"code":0,"x":["#);
        header.push_str(&"0,".repeat(300_000));
        header.push_str(r#"0],"y":"#);
        header.push_str(&"[".repeat(100_000));
        header.push_str(&"]".repeat(100_000));
        header.push_str(r#","opaque":5}"#);
        let cmd = parse_json_header(header.as_bytes(), Bytes::new()).unwrap();
        assert_eq!((cmd.code, cmd.opaque), (0, 5));
        assert!(cmd.ext_fields.is_empty());
        // Broken at the very end: still an error, after one pass.
        header.pop();
        assert!(parse_json_header(header.as_bytes(), Bytes::new()).is_err());
    }

    #[test]
    fn json_parser_prints_large_nested_ext_values_without_a_tree() {
        // The same array as an ext value and as the remark: kept as its text, as `Value` would
        // print it.
        let zeros = format!("[{}0]", "0,".repeat(200_000));
        let header = format!(r#"{{"code":0,"remark":{zeros},"extFields":{{"x":{zeros}}}}}"#);
        let cmd = parse_json_header(header.as_bytes(), Bytes::new()).unwrap();
        assert_eq!(cmd.ext_fields.get("x"), Some(zeros.as_str()));
        assert_eq!(cmd.remark.as_deref(), Some(zeros.as_str()));
        // Objects with keys out of order (`"` sorts before `#`, its escaped text after) and
        // repeated, at every level as deep as serde_json allows (127 levels, of which the
        // header and `extFields` take two).
        let mut value = String::from("0");
        for level in 0..125 {
            value = format!(r##"{{"b":{value},"a":{level},"a":"last","#":2,"\"":1}}"##);
        }
        let header = format!(r#"{{"code":0,"extFields":{{"x":{value}}}}}"#);
        let mut agreement = Agreement::default();
        agreement.check(header.as_bytes());
        assert_eq!(agreement.both_ok, 1);
        let cmd = parse_json_header(header.as_bytes(), Bytes::new()).unwrap();
        let x = cmd.ext_fields.get("x").unwrap();
        assert!(
            x.starts_with(r##"{"\"":1,"#":2,"a":"last","b":{"\"":1,"##),
            "{x}"
        );
        // One level deeper is refused by both.
        let header = format!(r#"{{"code":0,"extFields":{{"x":[{value}]}}}}"#);
        agreement.check(header.as_bytes());
        assert_eq!(agreement.both_err, 1);
    }

    #[test]
    fn a_header_over_the_limit_is_refused_unread() {
        let header = format!(r#"{{"code":0,"x":"{}"}}"#, "y".repeat(MAX_HEADER_LEN));
        let err = parse_json_header(header.as_bytes(), Bytes::new()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("{} bytes", header.len()))
                && text.contains(&MAX_HEADER_LEN.to_string()),
            "{text}"
        );
        // Just under the limit it is read.
        let header = format!(r#"{{"code":0,"x":"{}"}}"#, "y".repeat(MAX_HEADER_LEN - 32));
        assert!(parse_json_header(header.as_bytes(), Bytes::new()).is_ok());
    }

    /// A binary header of many tiny ext fields is refused over the limit too, unread.
    #[test]
    fn a_binary_header_over_the_limit_is_refused_unread() {
        let command = |n: usize| {
            let mut ext = ExtFields::new();
            for i in 0..n {
                ext.insert(format!("{i:x}"), 1);
            }
            RemotingCommand::request(RequestCode::GetRouteInfoByTopic, ext, Bytes::new())
        };
        let frame = |cmd: &RemotingCommand| {
            let mut out = BytesMut::new();
            cmd.encode(SerializeType::RocketMq, &mut out).unwrap();
            out.freeze().slice(4..)
        };
        // Each field is 2 + 5 + 4 + 1 bytes (keys of 5 hex digits from 0x10000 on).
        let big = command(0x10000 + (1 << 20) / 12);
        let err = RemotingCommand::decode(frame(&big))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&MAX_HEADER_LEN.to_string()), "{err}");
        let small = command(1000);
        assert_eq!(RemotingCommand::decode(frame(&small)).unwrap(), small);
    }

    #[test]
    fn a_header_that_is_one_big_string_is_cut_in_the_error() {
        let header = format!(r#""{}""#, "x".repeat(512 << 10));
        let err = parse_json_header(header.as_bytes(), Bytes::new()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bytes in all"), "{}", &text[..200]);
        assert!(text.len() < 500, "{} bytes", text.len());
    }

    #[test]
    fn a_huge_bad_field_value_is_cut_in_the_error() {
        let junk = "x".repeat(512 << 10);
        let header = format!(r#"{{"code":"{junk}"}}"#);
        let err = parse_json_header(header.as_bytes(), Bytes::new()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`code`"), "{}", &text[..200]);
        assert!(text.contains("bytes in all)"), "{}", &text[..200]);
        assert!(text.len() < 500, "{} bytes", text.len());
    }
}
