//! The synthetic pull response the I/O-free bench binaries decode: 32 records of 1 KiB with the
//! five properties a producer and the broker usually set (UNIQ_KEY, WAIT, TAGS, KEYS, CLUSTER),
//! like the throughput scenarios' messages. Included by `decode-cost` and `cache-footprint`.

use bytes::{Bytes, BytesMut};
use rocketmq_webhook::remoting::message::{encode_message, MessageExt, Properties};

/// Records per response.
pub const RECORDS: i64 = 32;

/// What the records' bodies hold.
#[allow(dead_code)] // `Json` is used by encode-cost only; the other binaries include this file too.
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
#[allow(dead_code)] // encode-cost calls `response_with`; the other binaries call this.
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
            Ok(bytes) => buf.extend_from_slice(&bytes),
            Err(e) => panic!("the synthetic record does not encode: {e}"),
        }
    }
    Bytes::copy_from_slice(&buf)
}
