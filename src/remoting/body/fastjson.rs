//! A lenient JSON reader and a small writer for the fastjson dialect Java brokers speak.
//!
//! fastjson (the Java brokers' JSON library) writes maps with non-string keys as-is: unquoted
//! integer keys (`{0:"127.0.0.1:10911"}`) and whole objects as keys
//! (`{{"brokerName":"b","queueId":0,"topic":"T"}:123}`). Neither is JSON, so serde_json cannot
//! read them. This reader accepts a superset of JSON: any value (or a bare identifier) as an
//! object key, single-quoted strings, and trailing commas.
//!
//! Invariants: the reader never panics, nests at most [`MAX_DEPTH`] levels (so hostile input
//! cannot overflow the stack), builds at most [`MAX_VALUES`] values (so a hostile body's tree
//! peaks near 100 MB, not 800 MB) and allocates in proportion to its input.

use serde::de::DeserializeOwned;
use serde_json::{Map, Number};

use crate::remoting::RemotingError;

/// Deepest nesting accepted; real bodies nest fewer than ten levels.
pub(crate) const MAX_DEPTH: usize = 64;

/// The most values (keys included) one body may hold; [`parse`] stops at the next one.
///
/// A bound on values rather than on bytes, because values are what cost: every one takes a
/// 32-byte [`Value`] plus, for numbers and strings, an allocation of its own, and again a
/// `serde_json::Value` in [`from_slice`]. A 16 MiB frame of `[0,0,...]` (8 million values)
/// peaked at 800 MB; at this bound the peak is about 100 MB, and text inside strings costs only
/// its length. A byte cap low enough to help would refuse real bodies, whose size comes from
/// long names rather than many values.
///
/// The largest real bodies are offset tables: a RESET_CONSUMER_CLIENT_OFFSET or
/// GET_CONSUMER_STATUS table of a topic of `MAX_TOPIC_QUEUES` (65,536) queues is 9 values per
/// queue in its list form, 8 in fastjson's object-key form: 590,000 in all. A route takes some
/// 20 values per broker (so a topic on a thousand brokers, 20,000), a consumer list one per
/// client.
pub(crate) const MAX_VALUES: usize = 1 << 20;

/// Why a text did not parse.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ParseError {
    /// Not (fast)JSON, or a number out of range: what and where.
    Syntax(String),
    /// More than [`MAX_VALUES`] values.
    TooManyValues,
}

impl ParseError {
    /// The protocol error for a `what` body that failed with `self`.
    pub(crate) fn into_body_error(self, what: &'static str) -> RemotingError {
        match self {
            Self::Syntax(reason) => RemotingError::MalformedBody { what, reason },
            Self::TooManyValues => RemotingError::BodyTooLarge {
                what,
                limit: MAX_VALUES,
            },
        }
    }
}

/// A parsed fastjson value. Objects keep their keys as values, in input order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// A number with its source text (so `i64` values keep full precision).
    Number(String),
    String(String),
    Array(Vec<Self>),
    Object(Vec<(Self, Self)>),
}

impl Value {
    /// The entry under the string (or bare identifier) key `key`, if this is an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Object(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| matches!(k, Self::String(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as an `i64`: integers, and strings holding one (fastjson sometimes quotes longs).
    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Number(n) | Self::String(n) => n.trim().parse().ok(),
            _ => None,
        }
    }

    /// Whether an object in this value (itself included) has a key that is neither a string
    /// nor a number.
    fn has_composite_key(&self) -> bool {
        match self {
            Self::Array(items) => items.iter().any(Self::has_composite_key),
            Self::Object(entries) => entries.iter().any(|(k, v)| {
                !matches!(k, Self::String(_) | Self::Number(_)) || v.has_composite_key()
            }),
            _ => false,
        }
    }

    /// Converts to a standard JSON value; non-string keys become their compact JSON text, so an
    /// integer key `0` becomes `"0"` and an object key becomes `"{\"brokerName\":...}"`.
    pub(crate) fn into_json(self) -> Result<serde_json::Value, ParseError> {
        Ok(match self {
            Self::Null => serde_json::Value::Null,
            Self::Bool(b) => serde_json::Value::Bool(b),
            Self::Number(n) => serde_json::Value::Number(number(&n).map_err(ParseError::Syntax)?),
            Self::String(s) => serde_json::Value::String(s),
            Self::Array(items) => serde_json::Value::Array(
                items
                    .into_iter()
                    .map(Self::into_json)
                    .collect::<Result<_, _>>()?,
            ),
            Self::Object(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    let key = match k {
                        Self::String(s) | Self::Number(s) => s,
                        // Each level of keys inside keys escapes the text of the one below it
                        // again, doubling it: 40 levels in 170 bytes asked for terabytes.
                        // fastjson writes object keys (message queues) one level deep.
                        other if other.has_composite_key() => {
                            return Err(ParseError::Syntax(
                                "an object key holds an object whose own key is not a string"
                                    .to_owned(),
                            ))
                        }
                        other => other.into_json()?.to_string(),
                    };
                    map.insert(key, v.into_json()?);
                }
                serde_json::Value::Object(map)
            }
        })
    }
}

fn number(text: &str) -> Result<Number, String> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Ok(u.into());
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| format!("invalid number {text:?}"))
}

/// Parses a whole fastjson document of at most [`MAX_VALUES`] values.
pub(crate) fn parse(input: &[u8]) -> Result<Value, ParseError> {
    let mut p = Parser {
        input,
        pos: 0,
        values: 0,
    };
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != input.len() {
        return p.err("trailing characters");
    }
    Ok(value)
}

/// Parses a fastjson document and deserialises it into `T` (after [`Value::into_json`]).
pub(crate) fn from_slice<T: DeserializeOwned>(
    input: &[u8],
    what: &'static str,
) -> Result<T, RemotingError> {
    let json = parse(input)
        .and_then(Value::into_json)
        .map_err(|e| e.into_body_error(what))?;
    serde_json::from_value(json).map_err(|e| RemotingError::MalformedBody {
        what,
        reason: e.to_string(),
    })
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    /// Values begun so far, keys included.
    values: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, ParseError> {
        Err(ParseError::Syntax(format!("{what} at byte {}", self.pos)))
    }

    /// Counts a value about to be built, refusing the one past [`MAX_VALUES`].
    fn count(&mut self) -> Result<(), ParseError> {
        if self.values >= MAX_VALUES {
            return Err(ParseError::TooManyValues);
        }
        self.values += 1;
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        self.count()?;
        self.skip_ws();
        match self.peek() {
            None => self.err("unexpected end"),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(q @ (b'"' | b'\'')) => self.string(q).map(Value::String),
            Some(b'-' | b'0'..=b'9') => Ok(Value::Number(self.number_text())),
            Some(c) if is_ident_start(c) => match self.ident() {
                "null" => Ok(Value::Null),
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => self.err("unexpected identifier"),
            },
            Some(_) => self.err("unexpected character"),
        }
    }

    /// An object key: any value, or a bare identifier taken as a string.
    fn key(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.skip_ws();
        match self.peek() {
            Some(c) if is_ident_start(c) => {
                self.count()?;
                Ok(Value::String(self.ident().to_owned()))
            }
            _ => self.value(depth),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.pos += 1;
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Object(entries));
            }
            let key = self.key(depth + 1)?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return self.err("expected ':'");
            }
            self.pos += 1;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {}
                _ => return self.err("expected ',' or ']'"),
            }
        }
    }

    fn number_text(&mut self) -> String {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.input[start..self.pos]).into_owned()
    }

    fn ident(&mut self) -> &str {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| is_ident_start(c) || c.is_ascii_digit())
        {
            self.pos += 1;
        }
        // Identifier bytes are ASCII, so this cannot fail.
        std::str::from_utf8(&self.input[start..self.pos]).unwrap_or_default()
    }

    fn string(&mut self, quote: u8) -> Result<String, ParseError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return self.err("unterminated string");
            };
            self.pos += 1;
            match c {
                c if c == quote => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return self.err("unterminated escape");
                    };
                    self.pos += 1;
                    match e {
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let ch = self.unicode_escape()?;
                            let mut buf = [0; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        // `\"`, `\\`, `\/`, `\'` and anything else stand for themselves.
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn hex4(&mut self) -> Result<u16, ParseError> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u16::from_str_radix(d, 16).ok());
        match digits {
            Some(v) => {
                self.pos += 4;
                Ok(v)
            }
            None => self.err("invalid \\u escape"),
        }
    }

    /// A `\uXXXX` escape (the `\u` already consumed), joining surrogate pairs; a lone surrogate
    /// becomes U+FFFD rather than an error, as Java strings may hold one.
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first)
            && self.input.get(self.pos..self.pos + 2) == Some(b"\\u")
        {
            let save = self.pos;
            self.pos += 2;
            let second = self.hex4()?;
            if (0xDC00..0xE000).contains(&second) {
                let code =
                    0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00);
                return Ok(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            self.pos = save;
        }
        Ok(char::from_u32(u32::from(first)).unwrap_or('\u{FFFD}'))
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'$'
}

// === writing ===

/// Writes a map whose keys are JSON values (fastjson's object-key form), compact:
/// `{<key json>:<value json>,...}`. Keys and values are already-serialised JSON texts.
pub(crate) fn write_object_key_map<'a>(
    out: &mut String,
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
}

/// Serialises a value whose `Serialize` impl cannot fail (plain structs, vectors, string-keyed
/// maps, finite floats). serde_json fails only for non-string map keys, which these types do not
/// have, and for non-finite floats, which become `null` anyway.
pub(crate) fn to_string<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Object keys inside object keys: each level's text was escaped again by the level above,
    /// doubling it, and this 167-byte body asked for terabytes (the process died).
    #[test]
    fn keys_inside_keys_are_refused_not_doubled_level_by_level() {
        let mut text = r#"{"a":1}"#.to_owned();
        for _ in 0..40 {
            text = format!("{{{text}:1}}");
        }
        assert!(text.len() < 200);
        let parsed = parse(text.as_bytes()).expect("parses");
        assert!(matches!(parsed.into_json(), Err(ParseError::Syntax(_))));
        // One level, as fastjson writes message queues, still converts.
        let v = parse(br#"{{"a":{"b":[1]}}:2}"#)
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(v[r#"{"a":{"b":[1]}}"#], 2);
    }

    #[test]
    fn reads_fastjson_extensions() {
        let v = parse(br#"{0:"a", 1 : 'b', {"x":1}:2, name:null, "t":[1,2,],}"#).unwrap();
        let json = v.into_json().unwrap();
        assert_eq!(json["0"], "a");
        assert_eq!(json["1"], "b");
        assert_eq!(json[r#"{"x":1}"#], 2);
        assert!(json["name"].is_null());
        assert_eq!(json["t"], serde_json::json!([1, 2]));
    }

    #[test]
    fn decodes_escapes() {
        let v = parse(br#""a\"b\\c\/\n\u00e9\ud83d\ude00\ud800x""#).unwrap();
        assert_eq!(
            v,
            Value::String("a\"b\\c/\n\u{e9}\u{1F600}\u{FFFD}x".into())
        );
    }

    #[test]
    fn keeps_i64_precision() {
        let v = parse(b"[9223372036854775807,-9223372036854775808,1.5e3]").unwrap();
        let Value::Array(items) = &v else {
            panic!("not an array")
        };
        assert_eq!(items[0].as_i64(), Some(i64::MAX));
        assert_eq!(items[1].as_i64(), Some(i64::MIN));
        assert_eq!(v.into_json().unwrap()[2], 1500.0);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b""[..],
            b"{",
            b"[1 2]",
            b"{\"a\" 1}",
            b"tru",
            b"\"abc",
            b"{}x",
            b"-",
            b"\"\\u12\"",
        ] {
            assert!(
                parse(bad).and_then(Value::into_json).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(10_000);
        assert!(parse(deep.as_bytes()).is_err());
    }

    /// Values are counted, bare keys included, and the one past the bound is refused; a body
    /// refused so names its kind.
    #[test]
    fn refuses_more_values_than_the_bound() {
        let zeros = |n: usize| format!("[{}]", vec!["0"; n].join(","));
        // The array and its elements: exactly the bound.
        assert!(parse(zeros(MAX_VALUES - 1).as_bytes()).is_ok());
        assert_eq!(
            parse(zeros(MAX_VALUES).as_bytes()),
            Err(ParseError::TooManyValues)
        );
        let pairs = |n: usize| format!("{{{}}}", vec!["k:0"; n].join(","));
        assert!(parse(pairs((MAX_VALUES - 1) / 2).as_bytes()).is_ok());
        assert_eq!(
            parse(pairs(MAX_VALUES / 2).as_bytes()),
            Err(ParseError::TooManyValues)
        );
        let err = from_slice::<serde_json::Value>(zeros(MAX_VALUES).as_bytes(), "consumer list")
            .expect_err("too many values");
        assert!(
            matches!(
                err,
                RemotingError::BodyTooLarge {
                    what: "consumer list",
                    limit: MAX_VALUES
                }
            ),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn standard_json_reads_the_same(v in json_value()) {
            let text = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(parse(text.as_bytes()).unwrap().into_json().unwrap(), v);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes).and_then(Value::into_json);
        }

        #[test]
        fn never_panics_on_jsonish(s in r#"[{}\[\]:,"'\\0-9a-z \-.eu]{0,80}"#) {
            let _ = parse(s.as_bytes()).and_then(Value::into_json);
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
