//! Message records (rocketmq-remoting.md section 6): the stored-record format of PULL and
//! CONSUME_MESSAGE_DIRECTLY bodies, the SEND_BATCH body (section 4.10), properties, compression
//! and message ids.
//!
//! Invariants:
//! * decoding never panics and never allocates more than the input length plus a bound: every
//!   length field is checked against the bytes that remain before it is used; a record
//!   inflates to at most [`compression::MAX_DECOMPRESSED_LEN`] and builds at most
//!   [`MAX_RECORD_DECODED_LEN`] bytes (inflated body and messages), a batch holds at most
//!   [`MAX_BATCH_MESSAGES`], and [`decode_messages_within`] stops a body at a record boundary
//!   after [`MAX_BODY_MESSAGES`] or its byte budget ([`MAX_BODY_DECODED_LEN`] for a pull);
//! * a decoded [`MessageExt`] holds the *decompressed* body with the compressed bit cleared from
//!   `sys_flag` (as the Java client does), and 5.x inner batches are already unwrapped; a
//!   record that cannot be (a body that does not inflate, an inner batch that is malformed or
//!   too large to unwrap) comes back whole and marked ([`MessageExt::undeliverable`]), so
//!   that the consumer hands it to the DLQ instead of failing the pull, which would stop its
//!   queue for good.

pub mod compression;
pub mod id;
pub mod properties;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use bytes::{BufMut, Bytes, BytesMut};

pub use compression::Compression;
pub use id::{offset_msg_id, parse_offset_msg_id, LogId, UniqKeyGenerator};
pub use properties::{ByteString, Properties};

use crate::remoting::RemotingError;

/// MessageSysFlag bits (section 6.3).
pub mod sys_flag {
    /// The stored body is compressed.
    pub const COMPRESSED: i32 = 0x1;
    /// Legacy, unused.
    pub const MULTI_TAGS: i32 = 0x2;
    /// Transaction state bits (not-type / prepared / commit / rollback).
    pub const TRANSACTION_MASK: i32 = 0xC;
    /// Transaction state: half message.
    pub const TRANSACTION_PREPARED: i32 = 0x4;
    /// The born host is IPv6 (20 bytes on the wire).
    pub const BORN_HOST_V6: i32 = 0x10;
    /// The store host is IPv6 (20 bytes on the wire).
    pub const STORE_HOST_V6: i32 = 0x20;
    /// 5.x inner batch the client must unwrap.
    pub const NEED_UNWRAP: i32 = 0x40;
    /// 5.x inner batch.
    pub const INNER_BATCH: i32 = 0x80;
    /// Compression type bits 8-10.
    pub const COMPRESSION_TYPE_MASK: i32 = 0x700;
}

/// Magic of a V1 record (1-byte topic length).
pub const MAGIC_V1: i32 = 0xDAA3_20A7_u32 as i32;
/// Magic of a V2 record (2-byte topic length, 5.1+ brokers).
pub const MAGIC_V2: i32 = 0xDAA3_20AB_u32 as i32;
/// Longest properties string a record can carry (signed 16-bit length).
pub const MAX_PROPERTIES_LEN: usize = i16::MAX as usize;

/// Record layout version, chosen by the magic code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageVersion {
    /// 1-byte topic length; topics up to 127 bytes.
    V1,
    /// 2-byte topic length.
    V2,
}

/// A message as stored by a broker and delivered by a pull.
///
/// `msg_id()` is what users call the message id (the producer's `UNIQ_KEY`); the offset msgId
/// names the stored record and is what send-back needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageExt {
    /// Topic the record is stored under (`%RETRY%<group>` for retries, see
    /// [`Self::retry_topic_restored`]).
    pub topic: String,
    /// Queue within the broker.
    pub queue_id: i32,
    /// User flag set by the producer.
    pub flag: i32,
    /// Logical offset in the consume queue: the offset consumers commit.
    pub queue_offset: i64,
    /// Physical commit-log offset, used for send-back and the offset msgId.
    pub commit_log_offset: i64,
    /// MessageSysFlag ([`sys_flag`]), with [`sys_flag::COMPRESSED`] cleared after decoding.
    pub sys_flag: i32,
    /// Producer clock, ms since the epoch.
    pub born_timestamp: i64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// Broker clock at store time, ms since the epoch.
    pub store_timestamp: i64,
    /// Broker that stored the record.
    pub store_host: SocketAddr,
    /// Number of previous consumption attempts.
    pub reconsume_times: i32,
    /// Transaction prepare offset; 0 normally.
    pub prepared_transaction_offset: i64,
    /// CRC32 of the stored (possibly compressed) body, masked to 31 bits. Not checked on decode
    /// (Java does not either) and recomputed on encode.
    pub body_crc: i32,
    /// The body, decompressed.
    pub body: Bytes,
    /// Properties (section 6.5 keys in [`properties`]).
    pub properties: Properties,
}

/// How much output [`MessageExt::inflate_error`] inflates, at most, looking for the error.
pub const INFLATE_ERROR_SCAN_LEN: usize = 1 << 20;

impl MessageExt {
    /// Whether the stored body could not be inflated (a compression flag on a body that is not
    /// compressed, an unknown algorithm): `body` then holds it as stored, and `sys_flag` still
    /// says compressed. Such a message cannot be delivered; the consumer dead-letters it.
    pub fn body_undecoded(&self) -> bool {
        self.sys_flag & sys_flag::COMPRESSED != 0
    }

    /// Why the stored body does not inflate, found by trying again: the decoder keeps no error
    /// per message (every message would carry room for one), and this is asked only on the way
    /// to the DLQ. The new try stops at [`INFLATE_ERROR_SCAN_LEN`] bytes of output, since it
    /// runs beside the deliveries: a body that fails only further in gives `None`, as does one
    /// that was inflated.
    pub fn inflate_error(&self) -> Option<RemotingError> {
        if !self.body_undecoded() {
            return None;
        }
        let result = Compression::from_sys_flag(self.sys_flag).and_then(|algorithm| {
            compression::decompress_within(algorithm, &self.body, INFLATE_ERROR_SCAN_LEN)
        });
        result.err().filter(|e| !compression::hit_output_limit(e))
    }

    /// Why this record cannot be delivered, if it cannot: its body does not inflate
    /// ([`Self::body_undecoded`]), or it is a 5.x inner batch the decoder left whole because it
    /// is malformed or would build more than [`MAX_BATCH_MESSAGES`] messages or
    /// [`MAX_RECORD_DECODED_LEN`] bytes. Either way the broker holds the record intact, so a
    /// send-back of it (by commit-log offset) loses nothing.
    pub fn undeliverable(&self) -> Option<&'static str> {
        if self.body_undecoded() {
            Some("its body does not inflate (a compression flag on a body that is not compressed, or an unknown algorithm)")
        } else if self.sys_flag & BATCH == BATCH {
            Some("it is an inner batch that cannot be unwrapped (malformed, or past the decoder's limits)")
        } else {
            None
        }
    }

    /// The user-visible id: `UNIQ_KEY` if present (borrowed: the usual case costs no copy),
    /// else the offset msgId.
    pub fn msg_id(&self) -> std::borrow::Cow<'_, str> {
        match self.property(properties::UNIQ_KEY) {
            Some(id) => id.into(),
            None => self.offset_msg_id().into(),
        }
    }

    /// The offset msgId of this record (store host + commit-log offset).
    pub fn offset_msg_id(&self) -> String {
        offset_msg_id(self.store_host, self.commit_log_offset)
    }

    /// The `TAGS` property.
    pub fn tags(&self) -> Option<&str> {
        self.property(properties::TAGS)
    }

    /// The `KEYS` property split on spaces (empty if absent).
    pub fn keys(&self) -> Vec<&str> {
        self.property(properties::KEYS)
            .map(|k| k.split(' ').filter(|k| !k.is_empty()).collect())
            .unwrap_or_default()
    }

    /// One property by name.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name)
    }

    /// The topic the application sees (section 7.11): for a message in `%RETRY%<group>` with a
    /// `RETRY_TOPIC` property, that property; otherwise the stored topic.
    pub fn retry_topic_restored(&self, group: &str) -> &str {
        match self.property(properties::RETRY_TOPIC) {
            Some(real) if is_retry_topic_of(&self.topic, group) => real,
            _ => &self.topic,
        }
    }

    /// Replaces a `%RETRY%<group>` topic with the `RETRY_TOPIC` property in place; returns
    /// whether the topic changed.
    pub fn restore_retry_topic(&mut self, group: &str) -> bool {
        let restored = self.retry_topic_restored(group);
        if restored == self.topic {
            return false;
        }
        self.topic = restored.to_owned();
        true
    }
}

/// Whether `topic` is `%RETRY%<group>`.
fn is_retry_topic_of(topic: &str, group: &str) -> bool {
    topic
        .strip_prefix("%RETRY%")
        .is_some_and(|rest| rest == group)
}

/// A message to send (test producer, retry fallback).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Destination topic.
    pub topic: String,
    /// User flag.
    pub flag: i32,
    /// Body, uncompressed.
    pub body: Bytes,
    /// Properties; see the `with_*` helpers.
    pub properties: Properties,
}

impl Message {
    /// A message for `topic` carrying `body`, no properties.
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            flag: 0,
            body: body.into(),
            properties: Properties::new(),
        }
    }

    /// Sets a property. Empty values are dropped by receivers (section 6.4).
    #[must_use]
    pub fn with_property(
        mut self,
        key: impl Into<ByteString>,
        value: impl Into<ByteString>,
    ) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Sets the tag (`TAGS`).
    #[must_use]
    pub fn with_tags(self, tags: impl Into<ByteString>) -> Self {
        self.with_property(ByteString::from_static(properties::TAGS), tags)
    }

    /// Sets the business keys (`KEYS`, joined with spaces).
    #[must_use]
    pub fn with_keys<I, S>(self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let joined = keys
            .into_iter()
            .map(|k| k.as_ref().to_owned())
            .collect::<Vec<_>>()
            .join(" ");
        self.with_property(ByteString::from_static(properties::KEYS), joined)
    }

    /// Sets the unique key (`UNIQ_KEY`), e.g. from [`UniqKeyGenerator`].
    #[must_use]
    pub fn with_uniq_key(self, id: impl Into<ByteString>) -> Self {
        self.with_property(ByteString::from_static(properties::UNIQ_KEY), id)
    }

    /// Sets `WAIT` (whether the broker answers only after storing).
    #[must_use]
    pub fn with_wait(self, wait: bool) -> Self {
        self.with_property(
            ByteString::from_static(properties::WAIT),
            ByteString::from_static(if wait { "true" } else { "false" }),
        )
    }

    /// Sets the delay level (`DELAY`, 1..=18 on default brokers).
    #[must_use]
    pub fn with_delay_level(self, level: i32) -> Self {
        self.with_property(
            ByteString::from_static(properties::DELAY),
            level.to_string(),
        )
    }

    /// The `UNIQ_KEY` property.
    pub fn uniq_key(&self) -> Option<&str> {
        self.properties.get(properties::UNIQ_KEY)
    }
}

// === decoding ===

/// Bytes of the fixed fields before the born host (totalSize .. bornTimestamp).
const HEAD_LEN: usize = 48;

/// Bytes decoding the records of one body may build before it stops early (see
/// [`decode_messages_within`]): the inflated bodies of compressed records, and what each message
/// costs beyond the views into the body (the [`MessageExt`] itself, its own copy of the topic,
/// properties it had to sort out). The record that crosses the mark is kept, so a body builds at
/// most this plus one record, itself bounded by [`MAX_RECORD_DECODED_LEN`]. Counting inflated
/// bytes alone let a 16.6 KB body of 47 compressed inner batches, topic `T`, build 3 million
/// messages (1.1 GB); a pull of 32 compressed records of 2 KiB each could inflate to 2 GiB.
pub const MAX_BODY_DECODED_LEN: usize = 64 * 1024 * 1024;

/// The most messages one batch body may hold (an inner batch record, or a SEND_BATCH body).
/// Every item of an inner batch becomes a [`MessageExt`] of some 250 bytes, so a 64 MiB inflated
/// batch of 22-byte items would become 750 MB of them; this bounds a record at about 16 MB. Real
/// batches are far smaller (the broker caps a stored message at 4 MiB by default).
pub const MAX_BATCH_MESSAGES: usize = 65_536;

/// The most messages [`decode_messages_within`] yields for one body: it stops before the record
/// that would take it past this (the first record always fits: it holds at most
/// [`MAX_BATCH_MESSAGES`]). A pull asks for 32 by default; without a cap per body, every record
/// of a small body could be an inner batch of [`MAX_BATCH_MESSAGES`] messages.
pub const MAX_BODY_MESSAGES: usize = MAX_BATCH_MESSAGES;

/// The most bytes decoding one record may build: its inflated body and what its messages cost
/// (see [`MAX_BODY_DECODED_LEN`]). A record past it is malformed: unlike a body it cannot be
/// cut short, since an inner batch is stored and served whole. Any record a broker stores fits:
/// one inflating to [`compression::MAX_DECOMPRESSED_LEN`] may still hold [`MAX_BATCH_MESSAGES`]
/// messages costing 1 KiB each (a [`MessageExt`] takes some 250 bytes, a topic Java accepts at
/// most 127, and the usual handful of properties nothing of its own). A 32,767-byte topic
/// copied into each of 65,536 messages of a 1.5 MB uncompressed record would build 2 GB.
pub const MAX_RECORD_DECODED_LEN: usize =
    compression::MAX_DECOMPRESSED_LEN + MAX_BATCH_MESSAGES * 1024;

/// A body decoded up to a budget: see [`decode_messages_within`].
#[derive(Debug)]
pub struct Decoded {
    /// The messages of the records decoded, in order, inner batches unwrapped.
    pub messages: Vec<MessageExt>,
    /// The stored queue offset of the first record left undecoded because the records before
    /// it reached the budget or [`MAX_BODY_MESSAGES`]; `None` when the whole body was decoded.
    pub rest_from: Option<i64>,
}

/// Decodes a PULL body: a concatenation of stored records. Inner batches are unwrapped and
/// compressed bodies inflated. Every record is decoded, however many messages that makes: for
/// bodies from a peer, [`decode_messages_within`] bounds what one call builds.
///
/// # Errors
/// [`RemotingError::MalformedMessage`] for a truncated or inconsistent record (the whole body
/// is rejected: a broker does not send half-valid bodies). A body that does not inflate, or an
/// inner batch that cannot be unwrapped, is no error: its record comes back whole
/// ([`MessageExt::undeliverable`]).
pub fn decode_messages(body: &Bytes) -> Result<Vec<MessageExt>, RemotingError> {
    decode_bounded(body, usize::MAX, usize::MAX, false).map(|d| d.messages)
}

/// [`decode_messages`], stopping before a record once the records decoded so far built
/// `budget` bytes or more (see [`MAX_BODY_DECODED_LEN`] for what counts), or before the record
/// that would take the messages past [`MAX_BODY_MESSAGES`]. The first record is always decoded,
/// so a pull makes progress whatever the budget; the caller pulls the rest from
/// [`Decoded::rest_from`].
///
/// A record that does not decode after others that did ends the call like the budget: the
/// records before it come back, and [`Decoded::rest_from`] is the broken one's queue offset, so
/// the next pull starts there and fails on it alone.
///
/// # Errors
/// As [`decode_messages`], for a broken first record (naming its queue offset when its head
/// reads), or one whose queue offset cannot be read.
pub fn decode_messages_within(body: &Bytes, budget: usize) -> Result<Decoded, RemotingError> {
    decode_bounded(body, budget, MAX_BODY_MESSAGES, true)
}

/// [`decode_messages_within`] with the message cap as a parameter; `keep_prefix` says whether
/// the records before a broken one come back (else it fails the whole body).
fn decode_bounded(
    body: &Bytes,
    budget: usize,
    max_messages: usize,
    keep_prefix: bool,
) -> Result<Decoded, RemotingError> {
    // Sized up front: the vector goes on to hold the messages while they wait for delivery
    // (consumer::Ready), so growing it by doubling would move them up to five times and leave
    // up to half of it unused.
    // At most the cap: a body of minimal records reserved room for every one of them, kept
    // unused while the messages wait and counted by no budget.
    let mut out = Vec::with_capacity(count_records(body).min(max_messages));
    let mut at = 0;
    let mut spent = 0_usize;
    while at < body.len() {
        // Also what lets `unwrap_into` push a plain record without a check.
        if !out.is_empty() && (spent >= budget || out.len() >= max_messages) {
            return rest_from(body, at, out);
        }
        let (msg, len, heap) = match decode_record(body, at) {
            Ok(decoded) => decoded,
            Err(e) if keep_prefix => return broken_record(body, at, out, e),
            Err(e) => return Err(e),
        };
        match unwrap_into(msg, heap, &mut out, max_messages) {
            Some(cost) => spent = spent.saturating_add(cost),
            // Its messages would not fit: the next pull starts with it.
            None => return rest_from(body, at, out),
        }
        at += len;
    }
    Ok(Decoded {
        messages: out,
        rest_from: None,
    })
}

/// A record at `at` that does not decode. The records before it are whole: they are returned,
/// and the next pull starts at the broken one, whose own pull then fails. So a queue moves up to
/// the broken record and stops there, and the error names its queue offset, which an operator
/// can reset past. (Java keeps the records before it too, but skips the rest of the pull.)
/// Without a readable queue offset (its length field is broken too) nothing can say where the
/// next pull should start, and the whole pull fails.
fn broken_record(
    body: &[u8],
    at: usize,
    out: Vec<MessageExt>,
    error: RemotingError,
) -> Result<Decoded, RemotingError> {
    let Ok(queue_offset) = record_queue_offset(body, at) else {
        return Err(error);
    };
    // The next pull starts at the broken record, so its offset must lie past what comes back:
    // one that does not (a head that is not a record's) would skip messages or pull the same
    // ones forever. Then the whole pull fails, as with no readable offset.
    if let Some(last) = out.last() {
        if queue_offset <= last.queue_offset {
            return Err(error);
        }
        return Ok(Decoded {
            messages: out,
            rest_from: Some(queue_offset),
        });
    }
    Err(match error {
        RemotingError::MalformedMessage { at, reason } => RemotingError::MalformedMessage {
            at,
            reason: format!("{reason} (the record of queue offset {queue_offset})"),
        },
        other => other,
    })
}

/// The messages decoded so far, the rest of the body from the record at `at`.
fn rest_from(body: &[u8], at: usize, messages: Vec<MessageExt>) -> Result<Decoded, RemotingError> {
    Ok(Decoded {
        messages,
        rest_from: Some(record_queue_offset(body, at)?),
    })
}

/// The stored queue offset of the record starting at `at` (its fixed head, not decoded further).
fn record_queue_offset(body: &[u8], at: usize) -> Result<i64, RemotingError> {
    let total = total_size(body, at, HEAD_LEN, "record")?;
    let mut c = Cursor {
        buf: &body[at..at + total],
        // totalSize, magicCode, bodyCRC, queueId, flag.
        pos: 20,
        at,
    };
    c.i64("queueOffset")
}

/// Records in `body` by their `totalSize` fields, stopping at the first that cannot be a record
/// (decoding reports it). Each counted record is at least `HEAD_LEN` bytes, so the count never
/// exceeds what the body can hold.
fn count_records(body: &[u8]) -> usize {
    let (mut at, mut n) = (0usize, 0usize);
    while at < body.len() {
        let Ok(total) = total_size(body, at, HEAD_LEN, "record") else {
            break;
        };
        at += total;
        n += 1;
    }
    n
}

/// Decodes a body that carries one stored record (CONSUME_MESSAGE_DIRECTLY). Returns the first
/// message if the record is an inner batch; bytes after the first record are ignored.
///
/// # Errors
/// As [`decode_messages`], plus [`RemotingError::MalformedMessage`] for an empty body.
pub fn decode_message(body: &[u8]) -> Result<MessageExt, RemotingError> {
    if body.is_empty() {
        return Err(malformed(0, "empty body".into()));
    }
    // A rare request: copying the body once is simpler than asking callers for `Bytes`.
    let (msg, _, heap) = decode_record(&Bytes::copy_from_slice(body), 0)?;
    let mut out = Vec::new();
    unwrap_into(msg, heap, &mut out, usize::MAX);
    out.into_iter()
        .next()
        .ok_or_else(|| malformed(0, "inner batch without messages".into()))
}

fn malformed(at: usize, reason: String) -> RemotingError {
    RemotingError::MalformedMessage { at, reason }
}

/// A bounds-checked big-endian cursor over one record; errors name the record's start.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], RemotingError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(malformed(
                self.at,
                format!(
                    "{what} needs {n} bytes at record byte {}, {left} left",
                    self.pos
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], RemotingError> {
        let s = self.take(N, what)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn i16(&mut self, what: &str) -> Result<i16, RemotingError> {
        self.array(what).map(i16::from_be_bytes)
    }

    fn i32(&mut self, what: &str) -> Result<i32, RemotingError> {
        self.array(what).map(i32::from_be_bytes)
    }

    fn i64(&mut self, what: &str) -> Result<i64, RemotingError> {
        self.array(what).map(i64::from_be_bytes)
    }

    /// A length field: negative values are errors, not huge allocations.
    fn len(&mut self, width: usize, what: &str) -> Result<usize, RemotingError> {
        let value = match width {
            1 => i64::from(i8::from_be_bytes(self.array(what)?)),
            2 => i64::from(self.i16(what)?),
            _ => i64::from(self.i32(what)?),
        };
        usize::try_from(value).map_err(|_| malformed(self.at, format!("negative {what} {value}")))
    }

    fn host(&mut self, v6: bool, what: &str) -> Result<SocketAddr, RemotingError> {
        let ip = if v6 {
            Ipv6Addr::from(self.array::<16>(what)?).into()
        } else {
            Ipv4Addr::from(self.array::<4>(what)?).into()
        };
        let port = self.i32(what)?;
        let port = u16::try_from(port)
            .map_err(|_| malformed(self.at, format!("{what} port {port} out of range")))?;
        Ok(match ip {
            std::net::IpAddr::V4(v4) => SocketAddr::new(v4.into(), port),
            std::net::IpAddr::V6(v6) => SocketAddrV6::new(v6, port, 0, 0).into(),
        })
    }
}

/// The `totalSize` of the `what` (a stored record or a batch element) starting at `at`, checked
/// to cover at least its `min` bytes of fixed fields and at most the bytes left, so the caller
/// can slice `body[at..at + total]` and read those fields.
fn total_size(body: &[u8], at: usize, min: usize, what: &str) -> Result<usize, RemotingError> {
    let rest = &body[at..];
    let mut head = Cursor {
        buf: rest,
        pos: 0,
        at,
    };
    let total = head.len(4, "totalSize")?;
    if total < min {
        return Err(malformed(
            at,
            format!("{what} totalSize {total} is less than its {min} bytes of fixed fields"),
        ));
    }
    if total > rest.len() {
        return Err(malformed(
            at,
            format!(
                "{what} totalSize {total} exceeds the {} bytes left",
                rest.len()
            ),
        ));
    }
    Ok(total)
}

/// Decodes the record starting at `at`; returns it (body decompressed, not yet unwrapped), its
/// total length and the heap bytes it holds of its own apart from the struct and topic: the
/// inflated body and the copy of its properties if it was compressed, and what its properties
/// had to sort out (see [`properties::decode_sized`]). 0 for a plain record with the usual
/// properties: its body and properties are views into `body`.
fn decode_record(body: &Bytes, at: usize) -> Result<(MessageExt, usize, usize), RemotingError> {
    let total = total_size(body, at, HEAD_LEN, "record")?;
    let rest = &body[at..];
    let mut c = Cursor {
        buf: &rest[..total],
        pos: 4,
        at,
    };
    let version = match c.i32("magicCode")? {
        MAGIC_V1 => MessageVersion::V1,
        MAGIC_V2 => MessageVersion::V2,
        other => {
            return Err(malformed(
                at,
                format!("unknown magic code {:#010X}", other as u32),
            ));
        }
    };
    let body_crc = c.i32("bodyCRC")?;
    let queue_id = c.i32("queueId")?;
    let flag = c.i32("flag")?;
    let queue_offset = c.i64("queueOffset")?;
    let commit_log_offset = c.i64("physicalOffset")?;
    let mut sys_flag = c.i32("sysFlag")?;
    let born_timestamp = c.i64("bornTimestamp")?;
    let born_host = c.host(sys_flag & sys_flag::BORN_HOST_V6 != 0, "bornHost")?;
    let store_timestamp = c.i64("storeTimestamp")?;
    let store_host = c.host(sys_flag & sys_flag::STORE_HOST_V6 != 0, "storeHost")?;
    let reconsume_times = c.i32("reconsumeTimes")?;
    let prepared_transaction_offset = c.i64("preparedTransactionOffset")?;
    let body_len = c.len(4, "bodyLength")?;
    let stored_body = c.take(body_len, "body")?;
    let topic_width = match version {
        MessageVersion::V1 => 1,
        MessageVersion::V2 => 2,
    };
    let topic_len = c.len(topic_width, "topicLength")?;
    let topic = String::from_utf8_lossy(c.take(topic_len, "topic")?).into_owned();
    let props_len = c.len(2, "propertiesLength")?;
    let stored_props = c.take(props_len, "properties")?;
    // Brokers write totalSize as the exact sum of the fields (Java reads the next record where
    // the fields end). A record that claims more than its fields would put the next one's start
    // inside it, where a head read as a record's says nothing true (its "queue offset" included).
    if c.pos != total {
        return Err(malformed(
            at,
            format!(
                "totalSize {total} but the fields end at byte {} of the record",
                c.pos
            ),
        ));
    }
    let compressed = sys_flag & sys_flag::COMPRESSED != 0;
    // Views into the pull response, like uncompressed bodies (see below). A compressed record's
    // body is a new buffer, so its properties are copied too: otherwise they alone would keep
    // the whole response alive while the message waits in a process queue.
    let (props, mut heap) = properties::decode_sized(&if compressed {
        Bytes::copy_from_slice(stored_props)
    } else {
        body.slice_ref(stored_props)
    });

    let body = if compressed {
        match Compression::from_sys_flag(sys_flag)
            .and_then(|algorithm| compression::decompress(algorithm, stored_body))
        {
            Ok(inflated) => {
                sys_flag &= !sys_flag::COMPRESSED;
                heap += stored_props.len() + inflated.len();
                Bytes::from(inflated)
            }
            // Brokers store what producers send without checking it: a producer that set the
            // flag on a plain body, or an algorithm this client lacks. The record stays as
            // stored with its flag (see `MessageExt::body_undecoded`), and the consumer hands
            // it to the DLQ; failing the whole pull instead stopped its queue for good.
            Err(_) => {
                heap += stored_props.len() + stored_body.len();
                Bytes::copy_from_slice(stored_body)
            }
        }
    } else {
        // A view into the pull body, not a copy (one allocation and memcpy less per message).
        // The body stays alive until the last message in it is consumed (properties point into
        // it too). It is an exact-size copy made by the pull decoder (rpc/pull.rs), so what it
        // keeps alive is the pull's own records, not the connection's read buffer.
        body.slice_ref(stored_body)
    };
    let msg = MessageExt {
        topic,
        queue_id,
        flag,
        queue_offset,
        commit_log_offset,
        sys_flag,
        born_timestamp,
        born_host,
        store_timestamp,
        store_host,
        reconsume_times,
        prepared_transaction_offset,
        body_crc,
        body,
        properties: props,
    };
    Ok((msg, total, heap))
}

/// What a decoded message costs beyond the views into its body: the struct (in the vector that
/// holds it), its own copy of the topic and `props_heap` (see [`properties::decode_sized`]).
fn message_cost(topic: &str, props_heap: usize) -> usize {
    size_of::<MessageExt>() + topic.len() + props_heap
}

/// Pushes `msg`, or the messages of its inner batch (section 6.1), onto `out`, unless `out`
/// already holds messages and would then hold more than `max_len`: then it pushes nothing and
/// returns `None`. Otherwise returns what the pushed messages cost, `heap` (what the record
/// holds of its own, see [`decode_record`]) included. The caller has checked that one more
/// message fits (a plain record is pushed without a check).
///
/// An inner batch that is malformed, or would build more than [`MAX_RECORD_DECODED_LEN`]
/// bytes or [`MAX_BATCH_MESSAGES`] messages, is pushed whole with its batch flags, as
/// [`MessageExt::undeliverable`]: the broker stores and serves it whole, so failing the pull
/// would ask for it again and again.
fn unwrap_into(
    msg: MessageExt,
    heap: usize,
    out: &mut Vec<MessageExt>,
    max_len: usize,
) -> Option<usize> {
    let whole = |msg: MessageExt, out: &mut Vec<MessageExt>| {
        let cost = heap.saturating_add(message_cost(&msg.topic, 0));
        out.push(msg);
        Some(cost)
    };
    // An inner batch whose body did not inflate cannot be unwrapped either.
    if msg.sys_flag & BATCH != BATCH || msg.body_undecoded() {
        return whole(msg, out);
    }
    let before = out.len();
    match unwrap_batch(&msg, heap, out, max_len) {
        Ok(fitted) => fitted,
        Err(()) => {
            out.truncate(before);
            whole(msg, out)
        }
    }
}

/// Both flags of a 5.x inner batch (section 6.1).
const BATCH: i32 = sys_flag::NEED_UNWRAP | sys_flag::INNER_BATCH;

/// The messages of inner batch `msg` for [`unwrap_into`]; `Err` when it cannot be unwrapped,
/// with some of its messages perhaps pushed already.
fn unwrap_batch(
    msg: &MessageExt,
    heap: usize,
    out: &mut Vec<MessageExt>,
    max_len: usize,
) -> Result<Option<usize>, ()> {
    // Counted first (a walk over the length fields), so that a batch that would not fit is
    // left whole for the next pull, and one that would cost too much is turned away before
    // any message of it is built.
    let n = count_batch_items(&msg.body).map_err(drop)?;
    if !out.is_empty() && n > max_len.saturating_sub(out.len()) {
        return Ok(None);
    }
    // Every message gets a copy of the topic: a `String`, used as one throughout the crate.
    // Sharing one would take another type for `MessageExt::topic`; charging the copies bounds
    // them just as well (a long topic means fewer messages per record).
    let mut cost = n
        .saturating_mul(message_cost(&msg.topic, 0))
        .saturating_add(heap);
    if cost > MAX_RECORD_DECODED_LEN {
        return Err(());
    }
    out.reserve(n);
    for (i, item) in BatchItems::new(&msg.body).enumerate() {
        let (item, props_heap) = item.map_err(drop)?;
        cost = cost.saturating_add(props_heap);
        if cost > MAX_RECORD_DECODED_LEN {
            return Err(());
        }
        out.push(MessageExt {
            // The expanded messages are plain messages now.
            sys_flag: msg.sys_flag & !BATCH,
            queue_offset: msg.queue_offset.wrapping_add(i as i64),
            flag: item.flag,
            body_crc: item.body_crc,
            body: item.body,
            properties: item.properties,
            topic: msg.topic.clone(),
            // The remaining fields are Copy: this copies them, no clone of body or properties.
            ..*msg
        });
    }
    Ok(Some(cost))
}

/// One element of a batch body (section 4.10 layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    /// User flag.
    pub flag: i32,
    /// Body CRC as written (0 from producers).
    pub body_crc: i32,
    /// Body.
    pub body: Bytes,
    /// Properties.
    pub properties: Properties,
}

/// Decodes a batch body (SEND_BATCH_MESSAGE body, or a 5.x inner batch).
///
/// # Errors
/// [`RemotingError::MalformedMessage`] for truncated or inconsistent elements, or more than
/// [`MAX_BATCH_MESSAGES`] of them.
///
/// Bodies and properties are views into `body` (5.x brokers store batches as inner batches, so
/// this runs for every message of such a pull).
pub fn decode_batch(body: &Bytes) -> Result<Vec<BatchItem>, RemotingError> {
    let mut out = Vec::with_capacity(count_batch_items(body)?);
    for item in BatchItems::new(body) {
        out.push(item?.0);
    }
    Ok(out)
}

/// Bytes of a batch element's fixed fields: 4 totalSize + 4 magic + 4 crc + 4 flag + 4 bodyLen +
/// 2 propsLen.
const BATCH_ITEM_MIN: usize = 22;

/// Elements in a batch body by their `totalSize` fields, stopping at the first that cannot be
/// one (decoding reports it).
///
/// # Errors
/// More than [`MAX_BATCH_MESSAGES`] elements, naming the first past the limit.
fn count_batch_items(body: &[u8]) -> Result<usize, RemotingError> {
    let (mut at, mut n) = (0, 0);
    while at < body.len() {
        let Ok(total) = total_size(body, at, BATCH_ITEM_MIN, "batch element") else {
            break;
        };
        if n == MAX_BATCH_MESSAGES {
            return Err(malformed(
                at,
                format!("more than {MAX_BATCH_MESSAGES} messages in one batch"),
            ));
        }
        n += 1;
        at += total;
    }
    Ok(n)
}

/// The elements of a batch body in order, each with the heap its properties hold of their own
/// (see [`properties::decode_sized`]); nothing more after an error.
struct BatchItems<'a> {
    body: &'a Bytes,
    at: usize,
}

impl<'a> BatchItems<'a> {
    fn new(body: &'a Bytes) -> Self {
        Self { body, at: 0 }
    }

    fn decode(&self) -> Result<(BatchItem, usize, usize), RemotingError> {
        let (body, at) = (self.body, self.at);
        let total = total_size(body, at, BATCH_ITEM_MIN, "batch element")?;
        let mut c = Cursor {
            buf: &body[at..at + total],
            pos: 4,
            at,
        };
        let _magic = c.i32("magicCode")?;
        let body_crc = c.i32("bodyCRC")?;
        let flag = c.i32("flag")?;
        let body_len = c.len(4, "bodyLength")?;
        let item_body = body.slice_ref(c.take(body_len, "body")?);
        let props_len = c.len(2, "propertiesLength")?;
        let (properties, heap) =
            properties::decode_sized(&body.slice_ref(c.take(props_len, "properties")?));
        let item = BatchItem {
            flag,
            body_crc,
            body: item_body,
            properties,
        };
        Ok((item, total, heap))
    }
}

impl Iterator for BatchItems<'_> {
    type Item = Result<(BatchItem, usize), RemotingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.body.len() {
            return None;
        }
        Some(match self.decode() {
            Ok((item, len, heap)) => {
                self.at += len;
                Ok((item, heap))
            }
            Err(e) => {
                self.at = self.body.len();
                Err(e)
            }
        })
    }
}

// === encoding ===

/// CRC32 (IEEE) of a stored body masked to 31 bits, as the broker writes it in `bodyCRC`.
pub fn body_crc(stored_body: &[u8]) -> i32 {
    (crc32fast::hash(stored_body) & 0x7FFF_FFFF) as i32
}

fn encode_error(reason: String) -> RemotingError {
    RemotingError::Encode { reason }
}

fn checked_properties(props: &Properties) -> Result<String, RemotingError> {
    if properties::contains_separator(props) {
        return Err(encode_error(
            "a property key or value contains a separator character (0x01/0x02)".into(),
        ));
    }
    let s = properties::encode(props);
    if s.len() > MAX_PROPERTIES_LEN {
        return Err(encode_error(format!(
            "properties take {} bytes, more than {MAX_PROPERTIES_LEN}",
            s.len()
        )));
    }
    Ok(s)
}

fn i32_len(len: usize, what: &str) -> Result<i32, RemotingError> {
    i32::try_from(len).map_err(|_| encode_error(format!("{what} of {len} bytes is too long")))
}

/// Encodes `msg` as a broker stores it (the inverse of [`decode_messages`] for one record),
/// choosing V1 for topics up to 127 bytes and V2 otherwise. Used by test brokers and round trips.
///
/// If `sys_flag` has [`sys_flag::COMPRESSED`], the body is compressed with the algorithm of the
/// type bits. The host-family bits follow the addresses; `body_crc` is recomputed.
///
/// # Errors
/// [`RemotingError::Encode`] for over-long fields or unencodable properties.
pub fn encode_message(msg: &MessageExt) -> Result<Bytes, RemotingError> {
    let version = if msg.topic.len() <= i8::MAX as usize {
        MessageVersion::V1
    } else {
        MessageVersion::V2
    };
    encode_message_as(msg, version)
}

/// [`encode_message`] with an explicit record version.
///
/// # Errors
/// As [`encode_message`], plus a topic longer than the version allows.
pub fn encode_message_as(
    msg: &MessageExt,
    version: MessageVersion,
) -> Result<Bytes, RemotingError> {
    let mut sys_flag = msg.sys_flag & !(sys_flag::BORN_HOST_V6 | sys_flag::STORE_HOST_V6);
    if msg.born_host.is_ipv6() {
        sys_flag |= sys_flag::BORN_HOST_V6;
    }
    if msg.store_host.is_ipv6() {
        sys_flag |= sys_flag::STORE_HOST_V6;
    }
    let stored: Bytes = if sys_flag & sys_flag::COMPRESSED != 0 {
        let algorithm =
            Compression::from_sys_flag(sys_flag).map_err(|e| encode_error(e.to_string()))?;
        compression::compress(algorithm, &msg.body)?.into()
    } else {
        msg.body.clone()
    };
    let props = checked_properties(&msg.properties)?;
    let (magic, topic_width, topic_max) = match version {
        MessageVersion::V1 => (MAGIC_V1, 1, i8::MAX as usize),
        MessageVersion::V2 => (MAGIC_V2, 2, i16::MAX as usize),
    };
    if msg.topic.len() > topic_max {
        return Err(encode_error(format!(
            "topic of {} bytes does not fit a {version:?} record",
            msg.topic.len()
        )));
    }
    let host_len = |a: &SocketAddr| if a.is_ipv6() { 20 } else { 8 };
    let total = HEAD_LEN
        + host_len(&msg.born_host)
        + 8
        + host_len(&msg.store_host)
        + 4
        + 8
        + 4
        + stored.len()
        + topic_width
        + msg.topic.len()
        + 2
        + props.len();
    let total_i32 = i32_len(total, "record")?;
    let mut buf = BytesMut::with_capacity(total);
    buf.put_i32(total_i32);
    buf.put_i32(magic);
    buf.put_i32(body_crc(&stored));
    buf.put_i32(msg.queue_id);
    buf.put_i32(msg.flag);
    buf.put_i64(msg.queue_offset);
    buf.put_i64(msg.commit_log_offset);
    buf.put_i32(sys_flag);
    buf.put_i64(msg.born_timestamp);
    put_host(&mut buf, msg.born_host);
    buf.put_i64(msg.store_timestamp);
    put_host(&mut buf, msg.store_host);
    buf.put_i32(msg.reconsume_times);
    buf.put_i64(msg.prepared_transaction_offset);
    buf.put_i32(i32_len(stored.len(), "body")?);
    buf.put_slice(&stored);
    // Both casts are in range: checked against topic_max above.
    match version {
        MessageVersion::V1 => buf.put_i8(msg.topic.len() as i8),
        MessageVersion::V2 => buf.put_i16(msg.topic.len() as i16),
    }
    buf.put_slice(msg.topic.as_bytes());
    // In range: checked_properties bounds it by MAX_PROPERTIES_LEN.
    buf.put_i16(props.len() as i16);
    buf.put_slice(props.as_bytes());
    Ok(buf.freeze())
}

fn put_host(buf: &mut BytesMut, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => buf.put_slice(&a.ip().octets()),
        SocketAddr::V6(a) => buf.put_slice(&a.ip().octets()),
    }
    buf.put_i32(i32::from(addr.port()));
}

/// Encodes a SEND_BATCH_MESSAGE body (section 4.10). Every message must carry its own
/// `UNIQ_KEY` if the caller wants distinct ids (this function does not invent them).
///
/// # Errors
/// [`RemotingError::Encode`] for an empty batch, mixed topics, a delayed message, a `%RETRY%`
/// topic, mixed `WAIT` values or unencodable properties (the rules Java's `MessageBatch` enforces).
pub fn encode_batch(msgs: &[Message]) -> Result<Bytes, RemotingError> {
    let Some(first) = msgs.first() else {
        return Err(encode_error("empty batch".into()));
    };
    // Java's `isWaitStoreMsgOK`: absent means true, present means `Boolean.parseBoolean`, so a
    // message without `WAIT` and one with "true" are alike.
    let waits = |m: &Message| {
        m.properties
            .get(properties::WAIT)
            .is_none_or(|v| v.eq_ignore_ascii_case("true"))
    };
    let wait = waits(first);
    let mut buf = BytesMut::new();
    for m in msgs {
        if m.topic != first.topic {
            return Err(encode_error(format!(
                "batch mixes topics {:?} and {:?}",
                first.topic, m.topic
            )));
        }
        if m.topic.starts_with("%RETRY%") {
            return Err(encode_error("a batch cannot target a retry topic".into()));
        }
        if m.properties.contains_key(properties::DELAY) {
            return Err(encode_error(
                "a batch cannot contain delayed messages".into(),
            ));
        }
        if waits(m) != wait {
            return Err(encode_error("batch mixes WAIT settings".into()));
        }
        let props = checked_properties(&m.properties)?;
        let total = 20 + m.body.len() + 2 + props.len();
        buf.reserve(total);
        buf.put_i32(i32_len(total, "batch element")?);
        buf.put_i32(0);
        buf.put_i32(0);
        buf.put_i32(m.flag);
        buf.put_i32(i32_len(m.body.len(), "body")?);
        buf.put_slice(&m.body);
        buf.put_i16(props.len() as i16);
        buf.put_slice(props.as_bytes());
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests;
