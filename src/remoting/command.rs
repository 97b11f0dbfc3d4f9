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
//! - Ext fields stay inside [`ExtFields`]; typed request/response structs in
//!   [`crate::remoting::rpc`] read them through accessors that name the missing or bad field.
//! - Nothing here panics on peer input: every length is checked against what is left.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::Value;

use super::code::{RequestCode, ResponseCode};
use super::error::RemotingError;
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

/// An integer header key that must fit an `i32`; absent or `null` means `default`.
fn json_i32(
    object: &serde_json::Map<String, Value>,
    key: &str,
    default: Option<i32>,
) -> Result<i32, RemotingError> {
    match object.get(key) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| malformed_json(format!("missing `{key}`")))
        }
        Some(value) => value
            .as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(|| malformed_json(format!("`{key}` is not an i32: {value}"))),
    }
}

fn parse_json_header(header: &[u8], body: Bytes) -> Result<RemotingCommand, RemotingError> {
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
                    // Numbers, booleans and nested JSON are kept as their JSON text, which is
                    // what `String.valueOf` would have produced on a Java sender.
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
        body,
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
}
