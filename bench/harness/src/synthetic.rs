//! The synthetic pull response the I/O-free bench binaries decode: 32 records of 1 KiB with the
//! properties the broker under test stores for a member of a batch, like the scenarios' preloaded
//! messages: the producer's UNIQ_KEY, WAIT, TAGS and KEYS, then the batch's own properties that
//! the broker appends to each member (WAIT a second time, CLUSTER, MSG_REGION, TRACE_ON); in key
//! order, with the repeated WAIT last. Included by `decode-cost`, `encode-cost` and
//! `cache-footprint`; the harness uses [`as_pulled`] for the sink ceiling's records.

// Each binary that includes this file uses a part of it.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use rocketmq_webhook::remoting::message::{
    encode_message, properties, ByteString, MessageExt, Properties,
};

/// Records per response.
pub const RECORDS: i64 = 32;

/// What the records' bodies hold.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// 1 KiB of plain text with nothing to escape in JSON, like the scenarios' messages.
    Plain,
    /// About 1 KiB of JSON text: a quote to escape every few bytes, as in a JSON envelope
    /// carrying JSON payloads.
    Json,
}

impl Body {
    fn bytes(self) -> Bytes {
        match self {
            Self::Plain => Bytes::from(vec![b'x'; 1024]),
            Self::Json => {
                Bytes::from(br#"{"id":12345,"name":"widget","tags":["a","b"]},"#.repeat(22))
            }
        }
    }
}

/// One response with queue offsets `first..first + RECORDS` and plain bodies, in an allocation
/// of its own and exactly its size.
pub fn response(first: i64) -> Bytes {
    response_with(first, Body::Plain)
}

/// [`response`] with bodies of `body`.
pub fn response_with(first: i64, body: Body) -> Bytes {
    let mut buf = BytesMut::new();
    for i in first..first + RECORDS {
        let mut props = Properties::new();
        for (key, value) in [
            ("UNIQ_KEY", format!("7F00000100002A9F0000000000{i:06X}")),
            ("WAIT", "true".to_owned()),
            ("TAGS", "TagA".to_owned()),
            ("KEYS", format!("key-{i}")),
            ("CLUSTER", "DefaultCluster".to_owned()),
            ("MSG_REGION", "DefaultRegion".to_owned()),
            ("TRACE_ON", "true".to_owned()),
            (SECOND_WAIT, "true".to_owned()),
        ] {
            props.insert(key.into(), value.into());
        }
        let record = MessageExt {
            topic: "BenchTopic".into(),
            queue_id: 0,
            flag: 0,
            queue_offset: i,
            commit_log_offset: i * 1300,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            born_host: ([127, 0, 0, 1], 5000).into(),
            store_timestamp: 1_700_000_000_001,
            store_host: ([127, 0, 0, 1], 10911).into(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body_crc: 0,
            body: body.bytes(),
            properties: props,
        };
        match encode_message(&record) {
            Ok(bytes) => buf.extend_from_slice(&second_wait(&bytes)),
            Err(e) => panic!("the synthetic record does not encode: {e}"),
        }
    }
    Bytes::copy_from_slice(&buf)
}

/// Stands in for the second `WAIT` while encoding (properties hold a key once); the same length,
/// so [`second_wait`] can rename it in the encoded record without touching any size field. It
/// sorts last, so the repeated key comes after the first, as the broker appends it.
const SECOND_WAIT: &str = "~AIT";

/// `record` with the stand-in key renamed to `WAIT`.
fn second_wait(record: &[u8]) -> Vec<u8> {
    let needle = format!("{SECOND_WAIT}\u{1}");
    let at = record
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("the stand-in key is in the record");
    let mut out = record.to_vec();
    out[at..at + 4].copy_from_slice(b"WAIT");
    out
}

/// Adds what the consumer adds to every pulled message: `MIN_OFFSET` and `MAX_OFFSET` (those
/// of a queue holding exactly `messages`).
pub fn as_pulled(messages: &mut [MessageExt]) {
    let max = messages.len().to_string();
    for m in messages {
        m.properties.reserve_exact(2);
        m.properties
            .insert(ByteString::from_static(properties::MIN_OFFSET), "0".into());
        m.properties.insert(
            ByteString::from_static(properties::MAX_OFFSET),
            max.as_str().into(),
        );
    }
}
