//! Decodes one synthetic pull response over and over: a fixed, I/O-free workload whose
//! instruction count `valgrind --tool=callgrind` measures the same way on every run, where the
//! broker-backed scenarios vary by ±30 % on a shared machine.
//!
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     bench/harness/target/release/decode-cost 2000
//!
//! The response holds 32 records of 1 KiB with the five properties a producer and the broker
//! usually set (UNIQ_KEY, WAIT, TAGS, KEYS, CLUSTER), like the throughput scenarios' messages.
//! Instructions per message = (total at N iterations - total at 0 iterations) / (N x 32):
//! the run with 0 iterations measures the setup alone.

use bytes::{Bytes, BytesMut};
use rocketmq_webhook::remoting::message::{
    decode_messages, encode_message, MessageExt, Properties,
};

const RECORDS: i64 = 32;

fn response() -> Bytes {
    let mut buf = BytesMut::new();
    for i in 0..RECORDS {
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
            body: Bytes::from(vec![b'x'; 1024]),
            properties: props,
        };
        match encode_message(&record) {
            Ok(bytes) => buf.extend_from_slice(&bytes),
            Err(e) => panic!("the synthetic record does not encode: {e}"),
        }
    }
    buf.freeze()
}

fn main() -> std::process::ExitCode {
    let iterations: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 2000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("usage: decode-cost [ITERATIONS]: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let body = response();
    let mut properties = 0usize;
    for _ in 0..iterations {
        match decode_messages(&body) {
            Ok(messages) => {
                properties += messages.iter().map(|m| m.properties.len()).sum::<usize>()
            }
            Err(e) => {
                eprintln!("decode failed: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    println!(
        "decoded {} messages ({properties} properties)",
        iterations * RECORDS as usize
    );
    std::process::ExitCode::SUCCESS
}
