//! The message properties string (rocketmq-remoting.md section 6.4) and the well-known keys
//! (section 6.5).
//!
//! Wire form: `key 0x01 value 0x02` per entry, UTF-8, with a trailing `0x02` (as Java writes it).
//! Decoding is Java's lenient `string2messageProperties`: segments without a separator or with an
//! empty key or value are skipped, never rejected, because brokers relay whatever producers wrote.

use std::fmt;

use bytes::Bytes;
pub use bytestring::ByteString;

/// Message properties: unique keys, each with one value.
///
/// A pulled message keeps its properties in the wire form, a view into the pull response like
/// its body, and finds a key by scanning it (a handful of short entries). A map with a node per
/// message (the earlier `BTreeMap`) cost about 720 heap bytes per cached message on top of a
/// 1 KiB body, and building it was a large share of decoding. Entries added later (the
/// consumer's `MIN_OFFSET`/`MAX_OFFSET`, a producer's keys) live in a small sorted list beside
/// it.
///
/// A key may appear twice in the wire form: a batch member sent by Java or by us carries `WAIT`
/// of its own, and the broker appends the batch's properties (`WAIT` again) to every member. The
/// later entry wins, as in Java's map; the earlier one stays in the text, marked shadowed, so
/// such a message keeps the cheap form instead of a sorted list of every entry.
///
/// Iteration yields the live wire entries in wire order, then the added ones sorted by key, so an
/// encoding is deterministic; equality ignores order. Look up with `&str` (`props.get(TAGS)`);
/// build keys with [`ByteString::from_static`] and values with `.into()`.
#[derive(Clone, Default)]
pub struct Properties {
    /// Wire-form entries (`key 0x01 value 0x02`), junk segments included (every walk skips
    /// them as Java does). Invariant, checked by [`decode`] and kept by `insert`/`remove`: no key
    /// appears twice among the live entries, or also in `added`.
    wire: ByteString,
    /// Bit `i` set: the `i`-th wire entry (counting entries, not junk) is shadowed by a later
    /// one with the same key, and every walk skips it.
    shadowed: Shadowed,
    /// The [`key_bit`]s of the wire keys: a clear bit proves a key absent without a walk.
    /// Invariant: zero when `wire` is empty.
    wire_keys: KeyBits,
    /// Entries set after decoding, or every entry of a message built here; sorted by key,
    /// unique.
    added: Vec<(ByteString, ByteString)>,
}

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let [value] = self.get_all([key]);
        value
    }

    /// The values of several distinct keys in one pass over the wire form (a message's envelope
    /// needs three; each [`Self::get`] is a pass of its own).
    pub fn get_all<const N: usize>(&self, keys: [&str; N]) -> [Option<&str>; N] {
        let mut found = [None; N];
        let mut missing = N;
        for (i, key) in keys.iter().enumerate() {
            if let Some(at) = self.added_position(key) {
                found[i] = Some(&*self.added[at].1);
                missing -= 1;
            } else if !self.wire_may_hold(key) {
                missing -= 1;
            }
        }
        for (k, v) in self.live() {
            if missing == 0 {
                break;
            }
            if let Some(i) = keys.iter().position(|key| *key == k) {
                if found[i].is_none() {
                    found[i] = Some(v);
                    missing -= 1;
                }
            }
        }
        found
    }

    /// The length of the encoded form, for sizing buffers, without a pass over the entries:
    /// exact for what Java writes; wire junk counts, an unterminated last entry one byte short.
    pub fn text_len(&self) -> usize {
        self.wire.len()
            + self
                .added
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaces.
    pub fn insert(&mut self, key: ByteString, value: ByteString) -> Option<ByteString> {
        if self.wire_has(&key) {
            self.unpack();
        }
        match self.added.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut self.added[i].1, value)),
            Err(i) => {
                self.added.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<ByteString> {
        if self.wire_has(key) {
            self.unpack();
        }
        let i = self.added.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(self.added.remove(i).1)
    }

    /// Room for `additional` more added entries, exactly: the consumer adds two to every pulled
    /// message, and growth by doubling would allocate room for four.
    pub fn reserve_exact(&mut self, additional: usize) {
        self.added.reserve_exact(additional);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.live().count() + self.added.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.live().next().is_none()
    }

    /// Every entry: the wire ones in wire order, then the added ones by key.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            wire: self.live(),
            added: self.added.iter(),
        }
    }

    /// Where `key` is in `added`. A pulled message has two added entries (the consumer's
    /// offsets), and its envelope and tag filter look up four keys: a binary search compared by
    /// `memcmp` calls, 2 % of the daemon's CPU in a profile of the batched drain; a scan
    /// by equality compares lengths first and rarely calls it.
    fn added_position(&self, key: &str) -> Option<usize> {
        const SCAN_MAX: usize = 8;
        if self.added.len() <= SCAN_MAX {
            self.added.iter().position(|(k, _)| **k == *key)
        } else {
            self.added.binary_search_by(|(k, _)| (**k).cmp(key)).ok()
        }
    }

    /// The wire entries that count: junk and shadowed ones skipped.
    fn live(&self) -> WireEntries<'_> {
        WireEntries::skipping(&self.wire, self.shadowed)
    }

    /// Whether the wire form may hold `key`; false proves it does not.
    fn wire_may_hold(&self, key: &str) -> bool {
        self.wire_keys & key_bit(key) != 0
    }

    fn wire_has(&self, key: &str) -> bool {
        self.wire_may_hold(key) && self.live().any(|(k, _)| k == key)
    }

    /// Moves the wire entries into `added` (as views, no copy), before one of them changes.
    fn unpack(&mut self) {
        let wire = std::mem::take(&mut self.wire);
        self.wire_keys = 0;
        let live = WireEntries::skipping(&wire, std::mem::take(&mut self.shadowed));
        // The invariant keeps live wire keys unique and out of `added`: a sort is enough.
        self.added
            .extend(live.map(|(k, v)| (wire.slice_ref(k), wire.slice_ref(v))));
        self.added.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }

    fn sorted(&self) -> Vec<(&str, &str)> {
        let mut all: Vec<_> = self.iter().collect();
        all.sort_unstable();
        all
    }
}

/// The entries of a wire form, by Java's lenient rule: an entry without a name/value separator,
/// or with an empty key or value, is skipped (a later duplicate key is [`decode`]'s business).
fn wire_entries(wire: &str) -> WireEntries<'_> {
    WireEntries::skipping(wire, 0)
}

/// The shadowed-entry mask: one bit per wire entry, for as many entries as [`decode`] keeps in
/// wire form.
/// 32 bits take no more room than 16: either rounds [`Properties`] up from 56 to 64 bytes.
type Shadowed = u32;

/// A set of keys, one bit each (see [`key_bit`]). With [`Shadowed`] it fills the 64 bytes
/// [`Properties`] took anyway.
type KeyBits = u32;

/// The bit of `key` in a [`KeyBits`]: a hash of its length and its first, second and last
/// bytes. The consumer inserts `MIN_OFFSET` and `MAX_OFFSET` into every pulled message, and
/// each insert walked the wire form to learn that the key is not there: 3 % of the daemon's CPU
/// in a `perf` profile of the 1M-message backlog drain, the walks for other absent keys (the
/// tag filter's, the envelope's) about as much again. The keys a pulled message usually has
/// (`UNIQ_KEY`, `WAIT`, `TAGS`, `KEYS`, `MSG_REGION`, `TRACE_ON`, `CLUSTER`) and the two the
/// consumer adds get distinct bits (a test checks it), so a message holding only the usual
/// keys proves the others absent without a walk. The empty key gets no bit: a wire entry with
/// an empty key is junk.
fn key_bit(key: &str) -> KeyBits {
    let bytes = key.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return 0;
    };
    let second = bytes.get(1).copied().unwrap_or(first);
    let mix = (bytes.len() & 0xff) as u32
        | u32::from(first) << 8
        | u32::from(second) << 16
        | u32::from(last) << 24;
    // Multiplicative hashing: the product's top five bits pick the bit.
    1 << (mix.wrapping_mul(0x846C_A68B) >> 27)
}

/// See [`wire_entries`]. The separators are ASCII, so every index found is a char boundary.
/// (`str::split` plus `split_once` per entry cost about 600 instructions more per message in
/// bench/harness's decode-cost, mostly setting up a char searcher per short string; in
/// encode-cost a step cost about 220 instructions with a byte loop per separator, about 160
/// with [`first_of`]'s word steps.)
#[derive(Debug, Clone)]
struct WireEntries<'a> {
    rest: &'a str,
    /// Index of the next entry (junk does not count).
    index: u32,
    /// Entries to skip, by index (see [`Properties::shadowed`]).
    skip: Shadowed,
}

impl<'a> WireEntries<'a> {
    /// The entries of `wire` except those whose bits are set in `skip`.
    fn skipping(wire: &'a str, skip: Shadowed) -> Self {
        Self {
            rest: wire,
            index: 0,
            skip,
        }
    }
}

const ENTRY_END: u8 = PROPERTY_SEPARATOR as u8;
const KEY_END: u8 = NAME_VALUE_SEPARATOR as u8;

impl<'a> Iterator for WireEntries<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            let bytes = self.rest.as_bytes();
            // An entry's first separator splits its key from its value, unless it ends the
            // entry: then the entry has no value and is junk.
            let first = first_of(bytes, KEY_END, ENTRY_END);
            let Some(key_end) = first.filter(|&i| bytes[i] == KEY_END) else {
                self.rest = first.and_then(|i| self.rest.get(i + 1..)).unwrap_or("");
                continue;
            };
            // The value runs to the entry's end; it may hold further KEY_END bytes.
            let value_at = key_end + 1;
            let end = first_of(&bytes[value_at..], ENTRY_END, ENTRY_END)
                .map_or(bytes.len(), |i| value_at + i);
            let (key, value) = (&self.rest[..key_end], &self.rest[value_at..end]);
            self.rest = self.rest.get(end + 1..).unwrap_or("");
            if !key.is_empty() && !value.is_empty() {
                let index = self.index;
                self.index += 1;
                let shadowed = index < Shadowed::BITS && (self.skip >> index) & 1 == 1;
                if !shadowed {
                    return Some((key, value));
                }
            }
        }
        None
    }
}

/// The index of the first byte of `bytes` that is `x` or `y`, eight bytes a step: a byte equal
/// to the pattern's becomes zero under XOR, and the classic zero-byte test flags it. The test
/// can also flag bytes after a true zero byte (a borrow carries upwards), never before one, so
/// the lowest flag is exact.
fn first_of(bytes: &[u8], x: u8, y: u8) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |v: u64| v.wrapping_sub(LOW) & !v & HIGH;
    let (px, py) = (LOW * u64::from(x), LOW * u64::from(y));
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0_u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let flags = zero_bytes(word ^ px) | zero_bytes(word ^ py);
        if flags != 0 {
            return Some(at + flags.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == x || b == y)
        .map(|i| at + i)
}

/// Iterator over [`Properties`]: `(key, value)`, wire entries first.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    wire: WireEntries<'a>,
    added: std::slice::Iter<'a, (ByteString, ByteString)>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.wire
            .next()
            .or_else(|| self.added.next().map(|(k, v)| (&**k, &**v)))
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Self) -> bool {
        self.sorted() == other.sorted()
    }
}

impl Eq for Properties {}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl std::ops::Index<&str> for Properties {
    type Output = str;

    /// # Panics
    /// When `key` has no value, like a map's index.
    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(value) => value,
            None => panic!("no property {key:?}"),
        }
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<(ByteString, ByteString)> for Properties {
    fn from_iter<I: IntoIterator<Item = (ByteString, ByteString)>>(iter: I) -> Self {
        let mut props = Self::new();
        for (k, v) in iter {
            props.insert(k, v);
        }
        props
    }
}

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
/// Keys must not contain either separator character, values not the entry separator (`\u{2}`);
/// [`contains_separator`] checks that (the record and batch encoders reject such properties
/// instead of corrupting them). A value may hold `\u{1}`: decoding splits an entry at its first
/// one, so the rest is the value, as Java 5.x reads it.
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
/// Valid UTF-8 with up to 32 entries (the normal case, a batch member's repeated
/// `WAIT` included) is kept as it is, a view into `raw`, with earlier duplicates marked
/// shadowed; otherwise the entries are sorted out once, still as views where the input was UTF-8.
pub fn decode(raw: &Bytes) -> Properties {
    decode_sized(raw).0
}

/// [`decode`], with the heap bytes the result holds of its own (not views into `raw`): the
/// lossy copy of text that is not UTF-8, and the sorted entries of more than [`WIRE_MAX`]. Zero
/// for the usual handful of UTF-8 entries. Callers decoding peer input charge it to their
/// budget: 32 KiB of properties can hold 8,191 entries, 64 bytes each once sorted out.
pub(crate) fn decode_sized(raw: &Bytes) -> (Properties, usize) {
    let (text, mut heap) = match ByteString::try_from(raw.clone()) {
        Ok(text) => (text, 0),
        Err(_) => {
            let text = String::from_utf8_lossy(raw).into_owned();
            let len = text.len();
            (ByteString::from(text), len)
        }
    };
    if let Some((shadowed, wire_keys)) = shadowed_entries(&text) {
        let props = Properties {
            wire: text,
            shadowed,
            wire_keys,
            added: Vec::new(),
        };
        return (props, heap);
    }
    let mut added: Vec<(ByteString, ByteString)> = wire_entries(&text)
        .map(|(k, v)| (text.slice_ref(k), text.slice_ref(v)))
        .collect();
    // Later duplicates win: reversed, a stable sort puts the last one of a key first, and
    // `dedup_by` keeps the first of each run.
    added.reverse();
    added.sort_by(|a, b| a.0.cmp(&b.0));
    added.dedup_by(|later, kept| later.0 == kept.0);
    // The room of every duplicate and of the growth by doubling would otherwise stay with the
    // message: 8,191 copies of one key kept 512 KiB for a single entry. A rare path (more than
    // WIRE_MAX entries), so one reallocation costs nothing that matters.
    added.shrink_to_fit();
    heap += added.capacity() * size_of::<(ByteString, ByteString)>();
    let props = Properties {
        wire: ByteString::new(),
        shadowed: 0,
        wire_keys: 0,
        added,
    };
    (props, heap)
}

/// The most entries [`decode`] keeps in wire form: one bit each in [`Shadowed`].
const WIRE_MAX: usize = Shadowed::BITS as usize;

/// The entries of `wire` that a later entry with the same key shadows, found pairwise for the
/// usual handful of entries, and the bits of its keys; `None` for more than [`WIRE_MAX`], which
/// take the sorting path whatever they hold, so a hostile 32 KiB properties string costs a
/// sort, not millions of comparisons.
fn shadowed_entries(wire: &str) -> Option<(Shadowed, KeyBits)> {
    let mut keys: [&str; WIRE_MAX] = [""; WIRE_MAX];
    let mut shadowed: Shadowed = 0;
    let mut bits: KeyBits = 0;
    for (n, (key, _)) in wire_entries(wire).enumerate() {
        bits |= key_bit(key);
        if n == WIRE_MAX {
            return None;
        }
        for (i, earlier) in keys[..n].iter().enumerate() {
            if *earlier == key {
                shadowed |= 1 << i;
            }
        }
        keys[n] = key;
    }
    Some((shadowed, bits))
}

/// Whether a key contains a separator character, or a value the entry separator, so that the
/// properties cannot be encoded faithfully (see [`encode`]). Values with `\u{1}` arrive from
/// brokers (a producer wrote them) and go back out as they came, in a retry's republish.
pub fn contains_separator(props: &Properties) -> bool {
    props.iter().any(|(k, v)| {
        k.contains([NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR]) || v.contains(PROPERTY_SEPARATOR)
    })
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
        assert_eq!(&p["A"], "1");
        // Only the first separator splits; the rest belongs to the value.
        assert_eq!(&p["B"], "x\u{1}y");
        assert!(decode(&Bytes::new()).is_empty());
    }

    /// Asserts that every key and value of `p` points into `raw` (was not copied out of it).
    fn assert_views(p: &Properties, raw: &Bytes) {
        let range = raw.as_ptr_range();
        for (key, value) in p {
            for part in [key, value] {
                assert!(
                    range.contains(&part.as_ptr()),
                    "{part:?} was copied out of the input"
                );
            }
        }
    }

    #[test]
    fn decoded_keys_and_values_share_the_input_buffer() {
        let raw = bytes("TAGS\u{1}TagA\u{2}UNIQ_KEY\u{1}0A0B\u{2}");
        let p = decode(&raw);
        assert_eq!(p.len(), 2);
        assert_views(&p, &raw);
    }

    #[test]
    fn a_later_duplicate_wins_and_the_rest_stay_views() {
        let raw = bytes("A\u{1}1\u{2}B\u{1}2\u{2}A\u{1}3\u{2}");
        let p = decode(&raw);
        assert_eq!(p.len(), 2);
        assert_eq!(&p["A"], "3");
        assert_views(&p, &raw);
    }

    #[test]
    fn a_batch_members_repeated_key_keeps_the_wire_form() {
        // What the broker stores for a member of a batch: the member's own WAIT, then the
        // batch's properties appended (WAIT again, and the broker's own).
        let raw = bytes(
            "KEYS\u{1}bk0\u{2}TAGS\u{1}B0\u{2}WAIT\u{1}false\u{2}MSG_REGION\u{1}DefaultRegion\u{2}\
             CLUSTER\u{1}TestCluster\u{2}WAIT\u{1}true\u{2}TRACE_ON\u{1}true\u{2}",
        );
        let p = decode(&raw);
        assert!(p.added.is_empty(), "sorted out instead of kept: {p:?}");
        assert_eq!(p.len(), 6);
        assert_eq!(p.get(WAIT), Some("true"));
        assert_eq!(p.get_all([TAGS, WAIT]), [Some("B0"), Some("true")]);
        let keys: Vec<&str> = p.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["KEYS", "TAGS", "MSG_REGION", "CLUSTER", "WAIT", "TRACE_ON"]
        );
        assert_eq!(
            encode(&p),
            "KEYS\u{1}bk0\u{2}TAGS\u{1}B0\u{2}MSG_REGION\u{1}DefaultRegion\u{2}\
             CLUSTER\u{1}TestCluster\u{2}WAIT\u{1}true\u{2}TRACE_ON\u{1}true\u{2}"
        );
        assert_views(&p, &raw);
    }

    #[test]
    fn the_usual_keys_and_the_consumers_get_distinct_bits() {
        // The broker's own (MSG_REGION, TRACE_ON) have no constants here.
        let usual = [
            UNIQ_KEY,
            WAIT,
            TAGS,
            KEYS,
            "MSG_REGION",
            "TRACE_ON",
            CLUSTER,
        ];
        let mut bits: KeyBits = 0;
        for key in usual.into_iter().chain([MIN_OFFSET, MAX_OFFSET]) {
            let bit = key_bit(key);
            assert_eq!(bit.count_ones(), 1, "{key}");
            assert_eq!(bits & bit, 0, "{key} shares a bit");
            bits |= bit;
        }
        assert_eq!(key_bit(""), 0);
        // So a pulled message proves the consumer's keys and its missing KEYS absent unwalked.
        let p = decode(&bytes(
            "UNIQ_KEY\u{1}id\u{2}WAIT\u{1}true\u{2}TAGS\u{1}t\u{2}",
        ));
        assert!(p.wire_may_hold(TAGS) && p.wire_may_hold(UNIQ_KEY));
        for absent in [MIN_OFFSET, MAX_OFFSET, KEYS] {
            assert!(!p.wire_may_hold(absent), "{absent}");
        }
        assert_eq!(p.get_all([KEYS, TAGS]), [None, Some("t")]);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_key_bits_take_no_room_of_their_own() {
        // The view (32 bytes), the added list (24) and the two masks: a cached message pays
        // nothing for the bits.
        assert_eq!(std::mem::size_of::<Properties>(), 64);
    }

    #[test]
    fn every_earlier_copy_of_a_key_is_shadowed() {
        let raw = bytes("A\u{1}1\u{2}junk\u{2}A\u{1}2\u{2}B\u{1}x\u{2}A\u{1}3\u{2}");
        let mut p = decode(&raw);
        assert!(p.added.is_empty());
        assert_eq!(p.iter().collect::<Vec<_>>(), [("B", "x"), ("A", "3")]);
        // Changing a key moves the live entries only.
        assert_eq!(p.insert("B".into(), "y".into()).as_deref(), Some("x"));
        assert_eq!(p.iter().collect::<Vec<_>>(), [("A", "3"), ("B", "y")]);
    }

    #[test]
    fn more_entries_than_the_mask_holds_are_sorted_out() {
        let mut raw = String::new();
        for i in 0..=WIRE_MAX {
            raw.push_str(&format!("K{}\u{1}{i}\u{2}", i % 4));
        }
        let p = decode(&bytes(&raw));
        assert!(p.wire.is_empty());
        assert_eq!(p.len(), 4);
        for k in 0..4 {
            let last = (0..=WIRE_MAX)
                .rev()
                .find(|i| i % 4 == k)
                .map(|i| i.to_string());
            assert_eq!(p.get(&format!("K{k}")), last.as_deref(), "K{k}");
        }
    }

    #[test]
    fn duplicate_entries_keep_no_room_once_sorted_out() {
        // The most copies of one key 32 KiB of properties hold: each used to keep its 64-byte
        // slot (and the doubling's slack) in the message after deduplication.
        let raw = bytes(&"a\u{1}b\u{2}".repeat(8191));
        let p = decode(&raw);
        assert_eq!(p.iter().collect::<Vec<_>>(), [("a", "b")]);
        assert_eq!(p.added.capacity(), 1);
        let entry = size_of::<(ByteString, ByteString)>();
        assert_eq!(decode_sized(&raw).1, entry);
        // Distinct keys are what they cost, and the cost is reported.
        let distinct: String = (0..100).map(|i| format!("k{i}\u{1}v\u{2}")).collect();
        let (p, heap) = decode_sized(&bytes(&distinct));
        assert_eq!(p.len(), 100);
        assert_eq!(heap, 100 * entry);
        // The usual handful stays a view: nothing of its own.
        assert_eq!(decode_sized(&bytes("TAGS\u{1}t\u{2}")).1, 0);
        // A lossy copy is the properties' own.
        assert_eq!(decode_sized(&Bytes::from_static(b"K\x01\xff\x02")).1, 6);
    }

    #[test]
    fn added_entries_override_wire_entries() {
        let mut p = decode(&bytes("TAGS\u{1}TagA\u{2}KEYS\u{1}k\u{2}"));
        assert_eq!(
            p.insert(ByteString::from_static(MIN_OFFSET), "0".into()),
            None
        );
        assert_eq!(
            p.insert(ByteString::from_static(TAGS), "TagB".into())
                .as_deref(),
            Some("TagA")
        );
        assert_eq!(p.remove(KEYS).as_deref(), Some("k"));
        assert_eq!(p.get(TAGS), Some("TagB"));
        assert_eq!(p.get(KEYS), None);
        assert_eq!(encode(&p), "MIN_OFFSET\u{1}0\u{2}TAGS\u{1}TagB\u{2}");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let p = decode(&Bytes::from_static(b"K\x01a\xffb\x02\xfe\x01v\x02"));
        assert_eq!(&p["K"], "a\u{FFFD}b");
        assert_eq!(&p["\u{FFFD}"], "v");
    }

    fn text() -> impl Strategy<Value = String> {
        "[^\u{1}\u{2}]{1,12}"
    }

    /// A value: anything but the entry separator.
    fn value() -> impl Strategy<Value = String> {
        "[^\u{2}]{1,12}"
    }

    proptest! {
        #[test]
        fn round_trip(pairs in prop::collection::btree_map(text(), value(), 0..8)) {
            let props: Properties =
                pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
            prop_assert!(!contains_separator(&props));
            prop_assert_eq!(decode(&bytes(&encode(&props))), props);
        }

        /// Decoded, then changed, properties behave like a map with Java's decoding rules:
        /// against a `BTreeMap` model, for wire forms with duplicate keys, junk entries and more
        /// entries than the pairwise duplicate check takes.
        #[test]
        fn behaves_like_a_map(
            wire in prop::collection::vec(("[abc]{0,2}", "[xy]{0,2}", any::<bool>()), 0..40),
            edits in prop::collection::vec(("[abcd]{1,2}", prop::option::of("[xyz]{1,2}")), 0..6),
        ) {
            let mut raw = String::new();
            let mut model = std::collections::BTreeMap::new();
            for (k, v, separated) in &wire {
                raw.push_str(k);
                if *separated {
                    raw.push(NAME_VALUE_SEPARATOR);
                    raw.push_str(v);
                    if !k.is_empty() && !v.is_empty() {
                        model.insert(k.clone(), v.clone());
                    }
                }
                raw.push(PROPERTY_SEPARATOR);
            }
            let mut props = decode(&bytes(&raw));
            for (k, v) in &edits {
                match v {
                    Some(v) => {
                        let old = props.insert(k.clone().into(), v.clone().into());
                        let want = model.insert(k.clone(), v.clone());
                        prop_assert_eq!(old.as_deref(), want.as_deref());
                    }
                    None => {
                        let (old, want) = (props.remove(k), model.remove(k));
                        prop_assert_eq!(old.as_deref(), want.as_deref());
                    }
                }
            }
            prop_assert_eq!(props.len(), model.len());
            prop_assert_eq!(props.is_empty(), model.is_empty());
            for (k, v) in &model {
                prop_assert_eq!(props.get(k), Some(v.as_str()));
            }
            prop_assert_eq!(props.get("zz"), None);
            let [a, zz, b] = props.get_all(["a", "zz", "b"]);
            prop_assert_eq!((a, zz, b), (model.get("a").map(String::as_str), None, model.get("b").map(String::as_str)));
            prop_assert!(props.text_len() + 1 >= encode(&props).len());
            let mut seen: Vec<(&str, &str)> = props.iter().collect();
            seen.sort_unstable();
            let want: Vec<(&str, &str)> =
                model.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(seen, want);
            let rebuilt: Properties =
                model.iter().map(|(k, v)| (k.clone().into(), v.clone().into())).collect();
            prop_assert_eq!(&props, &rebuilt);
            prop_assert_eq!(decode(&bytes(&encode(&props))), rebuilt);
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

        /// Bytes around the patterns (a borrow, a high bit) and at every position of a word.
        #[test]
        fn first_of_finds_what_a_byte_loop_finds(
            bytes in prop::collection::vec(
                prop::sample::select(vec![0_u8, 1, 2, 3, 0x7f, 0x80, 0x81, 0x82, 0xff, b'a']),
                0..40,
            ),
            x in 0_u8..4,
            y in 0_u8..4,
        ) {
            let want = bytes.iter().position(|&b| b == x || b == y);
            prop_assert_eq!(first_of(&bytes, x, y), want);
        }
    }
}
