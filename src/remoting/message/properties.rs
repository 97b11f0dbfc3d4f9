//! The message properties string (rocketmq-remoting.md section 6.4) and the well-known keys
//! (section 6.5).
//!
//! Wire form: `key 0x01 value 0x02` per entry, UTF-8, with a trailing `0x02` (as Java writes it).
//! Decoding is Java's lenient `string2messageProperties`: segments without a separator or with an
//! empty key or value are skipped, never rejected, because brokers relay whatever producers wrote.

use std::collections::BTreeMap;

use bytes::Bytes;
pub use bytestring::ByteString;

/// Message properties: an ordered map so encodings are deterministic (Java uses a `HashMap`, so
/// order carries no meaning on the wire).
///
/// Keys and values are [`ByteString`]s: decoded ones are views into the pull response (like
/// message bodies), so a pulled message's properties cost one map node instead of two string
/// allocations per entry; in the batched benchmark's profile those allocations were 13 % of the
/// daemon's CPU. Look up with `&str` (`props.get(TAGS)`); build keys with
/// [`ByteString::from_static`] and values with `.into()`.
pub type Properties = BTreeMap<ByteString, ByteString>;

/// Separates a key from its value (`NAME_VALUE_SEPARATOR`, char 1).
pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
/// Terminates an entry (`PROPERTY_SEPARATOR`, char 2).
pub const PROPERTY_SEPARATOR: char = '\u{2}';

/// The message tag, used for tag filtering.
pub const TAGS: &str = "TAGS";
/// Business keys, space separated.
pub const KEYS: &str = "KEYS";
/// The producer-generated unique id: the msgId users see.
pub const UNIQ_KEY: &str = "UNIQ_KEY";
/// `"true"`/`"false"`: whether the producer waits for the store.
pub const WAIT: &str = "WAIT";
/// Requested delay level.
pub const DELAY: &str = "DELAY";
/// Original topic of a message in a `%RETRY%` topic.
pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
/// Original topic of a delayed or half message.
pub const REAL_TOPIC: &str = "REAL_TOPIC";
/// Original queue of a delayed or half message.
pub const REAL_QID: &str = "REAL_QID";
/// msgId of the first delivery of a retried message.
pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
/// Reconsume count carried by a client-side fallback send.
pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
/// Retry limit carried by a client-side fallback send.
pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
/// Queue minimum offset at pull time (added by the consumer).
pub const MIN_OFFSET: &str = "MIN_OFFSET";
/// Queue maximum offset at pull time (added by the consumer).
pub const MAX_OFFSET: &str = "MAX_OFFSET";
/// `"true"` for transactional half messages.
pub const TRAN_MSG: &str = "TRAN_MSG";
/// When consumption started (ms), for the consume timeout.
pub const CONSUME_START_TIME: &str = "CONSUME_START_TIME";
/// Cluster that stored the message.
pub const CLUSTER: &str = "CLUSTER";
/// Sharding key of ordered messages.
pub const SHARDING_KEY: &str = "__SHARDINGKEY";

/// Encodes `props` in the wire form, trailing separator included.
///
/// Keys and values must not contain the two separator characters; [`contains_separator`] checks
/// that (the record and batch encoders reject such properties instead of corrupting them).
pub fn encode(props: &Properties) -> String {
    let len = props.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = String::with_capacity(len);
    for (key, value) in props {
        out.push_str(key);
        out.push(NAME_VALUE_SEPARATOR);
        out.push_str(value);
        out.push(PROPERTY_SEPARATOR);
    }
    out
}

/// Decodes the wire form leniently: entries without a name/value separator, or with an empty key
/// or empty value, are skipped (Java keeps only pairs where both are non-empty). A later
/// duplicate key wins, as with Java's `HashMap.put`. Bytes that are not UTF-8 become U+FFFD.
///
/// Valid UTF-8 (the normal case) is checked once for the whole string, and every key and value
/// is a view into `raw`; only invalid input is copied, lossily.
pub fn decode(raw: &Bytes) -> Properties {
    match ByteString::try_from(raw.clone()) {
        Ok(text) => split(&text),
        Err(_) => split(&ByteString::from(String::from_utf8_lossy(raw).into_owned())),
    }
}

/// One pass over the bytes: the separators are ASCII, so every index found is a char boundary.
/// (`str::split` plus `split_once` per entry cost about 600 instructions more per message in
/// bench/harness's decode-cost, mostly setting up a char searcher for each short string.)
fn split(text: &ByteString) -> Properties {
    const ENTRY_END: u8 = PROPERTY_SEPARATOR as u8;
    const KEY_END: u8 = NAME_VALUE_SEPARATOR as u8;
    let mut props = Properties::new();
    let mut entry_start = 0;
    let mut key_end = None;
    let mut add = |start: usize, key_end: Option<usize>, end: usize| {
        if let Some(key_end) = key_end {
            let (key, value) = (&text[start..key_end], &text[key_end + 1..end]);
            if !key.is_empty() && !value.is_empty() {
                props.insert(text.slice_ref(key), text.slice_ref(value));
            }
        }
    };
    for (i, &b) in text.as_bytes().iter().enumerate() {
        if b == ENTRY_END {
            add(entry_start, key_end, i);
            entry_start = i + 1;
            key_end = None;
        } else if b == KEY_END && key_end.is_none() {
            key_end = Some(i);
        }
    }
    add(entry_start, key_end, text.len());
    props
}

/// Whether any key or value contains a separator character and so cannot be encoded faithfully.
pub fn contains_separator(props: &Properties) -> bool {
    let bad = |s: &ByteString| s.contains([NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR]);
    props.iter().any(|(k, v)| bad(k) || bad(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn encodes_with_trailing_separator() {
        let mut p = Properties::new();
        p.insert(ByteString::from_static(TAGS), "TagA".into());
        p.insert(ByteString::from_static(KEYS), "k0".into());
        assert_eq!(encode(&p), "KEYS\u{1}k0\u{2}TAGS\u{1}TagA\u{2}");
        assert_eq!(encode(&Properties::new()), "");
    }

    #[test]
    fn decodes_leniently() {
        let p = decode(&bytes(
            "A\u{1}1\u{2}\u{2}junk\u{2}\u{1}novalue\u{2}nokey\u{1}\u{2}B\u{1}x\u{1}y",
        ));
        assert_eq!(p.len(), 2);
        assert_eq!(p["A"], "1");
        // Only the first separator splits; the rest belongs to the value.
        assert_eq!(p["B"], "x\u{1}y");
        assert!(decode(&Bytes::new()).is_empty());
    }

    #[test]
    fn decoded_keys_and_values_share_the_input_buffer() {
        let raw = bytes("TAGS\u{1}TagA\u{2}UNIQ_KEY\u{1}0A0B\u{2}");
        let range = raw.as_ptr_range();
        let p = decode(&raw);
        assert_eq!(p.len(), 2);
        for (key, value) in &p {
            for part in [key, value] {
                assert!(
                    range.contains(&part.as_ptr()),
                    "{part:?} was copied out of the input"
                );
            }
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let p = decode(&Bytes::from_static(b"K\x01a\xffb\x02\xfe\x01v\x02"));
        assert_eq!(p["K"], "a\u{FFFD}b");
        assert_eq!(p["\u{FFFD}"], "v");
    }

    fn text() -> impl Strategy<Value = String> {
        "[^\u{1}\u{2}]{1,12}"
    }

    proptest! {
        #[test]
        fn round_trip(pairs in prop::collection::btree_map(text(), text(), 0..8)) {
            let props: Properties =
                pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
            prop_assert!(!contains_separator(&props));
            prop_assert_eq!(decode(&bytes(&encode(&props))), props);
        }

        #[test]
        fn decode_never_panics(raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&Bytes::from(raw));
        }

        /// Decoding equals splitting the lossily decoded text on the separator characters (the
        /// definition, written here with `char` splits on owned strings), for any bytes,
        /// including invalid UTF-8 next to a separator.
        #[test]
        fn decodes_like_the_definition(raw in prop::collection::vec(
            prop::sample::select(vec![1_u8, 2, b'a', b'=', 0xc3, 0xa9, 0xff, 0x80]), 0..40)) {
            let text = String::from_utf8_lossy(&raw).into_owned();
            let mut want = std::collections::BTreeMap::new();
            for entry in text.split(PROPERTY_SEPARATOR) {
                if let Some((k, v)) = entry.split_once(NAME_VALUE_SEPARATOR) {
                    if !k.is_empty() && !v.is_empty() {
                        want.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
            let got: std::collections::BTreeMap<String, String> = decode(&Bytes::from(raw))
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
