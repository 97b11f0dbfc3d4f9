//! Fuzz-style property tests of everything that reads bytes or text from outside the process:
//! the frame decoder, the command decoder, the message decoders, every JSON body parser, the
//! response parsers of the typed calls, [`BrokerRequest::parse`] and the configuration loader.
//!
//! The property is the same everywhere: hostile input never panics, never allocates without
//! bound, and every failure is a typed error ([`RemotingError`] / [`ConfigError`]) that says it
//! is not worth retrying. Inputs are random bytes AND mutations of valid encodings (flipped,
//! truncated, inserted bytes, overwritten length fields), so the decoders are driven past their
//! first checks.
//!
//! Case counts: 20 000 per codec target by default (2 000 for the configuration loader, which
//! writes a file per case); `FUZZ_CASES=N` sets the codec count (the loader gets N / 10). The
//! long run is documented in docs/reliability.md. Failures are persisted in
//! `proptest-regressions/tests/fuzz.txt` and replayed first on every run (commit that file).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rocketmq_webhook::config::{Config, ConfigError, Sources, EXIT_CONFIG};
use rocketmq_webhook::remoting::body::consume_directly::ConsumeMessageDirectlyResult;
use rocketmq_webhook::remoting::body::consumer_list::ConsumerList;
use rocketmq_webhook::remoting::body::heartbeat::HeartbeatData;
use rocketmq_webhook::remoting::body::lock::{
    LockBatchRequest, LockBatchResponse, UnlockBatchRequest,
};
use rocketmq_webhook::remoting::body::offset_table::parse_offset_table;
use rocketmq_webhook::remoting::body::route::TopicRouteData;
use rocketmq_webhook::remoting::body::running_info::ConsumerRunningInfo;
use rocketmq_webhook::remoting::message::{
    decode_batch, decode_message, decode_messages, encode_batch, encode_message, properties,
    sys_flag, Message,
};
use rocketmq_webhook::remoting::rpc::{
    GetConsumerList, GetMaxOffset, GetRouteInfo, HeartBeat, LockBatchMq, PullMessage,
    QueryConsumerOffset, Rpc, SendMessage,
};
use rocketmq_webhook::remoting::{
    BrokerRequest, ExtFields, FrameDecoder, LanguageCode, MessageExt, MessageQueue,
    RemotingCommand, RemotingError, SerializeType,
};

/// Where failing cases are kept (absolute, so it does not depend on the working directory).
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proptest-regressions/tests/fuzz.txt"
);
/// Default cases per codec target.
const DEFAULT_CASES: u32 = 20_000;
/// A small frame limit for the decoder under test, so "oversized" is cheap to reach.
const TEST_MAX_FRAME: usize = 64 * 1024;

/// `FUZZ_CASES`, or the default.
fn cases() -> u32 {
    static CASES: OnceLock<u32> = OnceLock::new();
    *CASES.get_or_init(|| {
        std::env::var("FUZZ_CASES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_CASES)
    })
}

/// A proptest configuration with `n` cases, failure persistence on and no shrink timeout games.
fn config(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// Malformed input is never worth retrying; a status error (a parsed answer code) may be.
fn assert_typed(err: &RemotingError) -> Result<(), TestCaseError> {
    prop_assert!(!err.to_string().is_empty());
    if !matches!(err, RemotingError::Status { .. }) {
        prop_assert!(
            !err.is_retriable(),
            "malformed input marked retriable: {err}"
        );
    }
    Ok(())
}

// === generators ===

/// One mutation of an encoded value.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte (position taken modulo the length).
    Flip(usize, u8),
    /// Cut the input at this position (modulo the length + 1).
    Truncate(usize),
    /// Insert bytes at this position.
    Insert(usize, Vec<u8>),
    /// Overwrite a big-endian i32 at this position with an "interesting" value.
    Int(usize, i32),
    /// Overwrite a big-endian i16 at this position.
    Short(usize, i16),
}

fn interesting_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(0),
        Just(-1),
        Just(1),
        Just(3),
        Just(4),
        Just(i32::MAX),
        Just(i32::MIN),
        Just(0x00FF_FFFF),
        Just(0x0100_0000),
        Just(0x7FFF_FFF0),
        Just(1 << 20),
        Just(TEST_MAX_FRAME as i32 + 1),
        any::<i32>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 1u8..=255).prop_map(|(p, x)| Mutation::Flip(p, x)),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        3 => (any::<usize>(), interesting_i32()).prop_map(|(p, v)| Mutation::Int(p, v)),
        2 => (any::<usize>(), prop_oneof![Just(-1i16), Just(0), Just(i16::MAX), any::<i16>()])
            .prop_map(|(p, v)| Mutation::Short(p, v)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 0..4)
}

fn apply(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = data.len();
        match m {
            Mutation::Flip(p, x) if len > 0 => data[p % len] ^= x,
            Mutation::Truncate(p) => data.truncate(p % (len + 1)),
            Mutation::Insert(p, bytes) => {
                let at = p % (len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Mutation::Int(p, v) if len >= 4 => {
                let at = p % (len - 3);
                data[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            Mutation::Short(p, v) if len >= 2 => {
                let at = p % (len - 1);
                data[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
    data
}

/// Short text, sometimes with the separators the codecs use (`\u{1}`, `\u{2}`, `;`, quotes).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_%@#.:-]{0,12}",
        "[\u{1}\u{2};,\"'{}\\[\\]:a-z0-9 ]{0,16}",
        any::<String>().prop_map(|s| s.chars().take(16).collect()),
    ]
}

fn ext_fields() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![
            Just("topic".to_owned()),
            Just("consumerGroup".to_owned()),
            Just("group".to_owned()),
            Just("queueId".to_owned()),
            Just("offset".to_owned()),
            Just("timestamp".to_owned()),
            Just("isForce".to_owned()),
            Just("clientId".to_owned()),
            Just("msgId".to_owned()),
            Just("nextBeginOffset".to_owned()),
            Just("minOffset".to_owned()),
            Just("maxOffset".to_owned()),
            Just("suggestWhichBrokerId".to_owned()),
            Just("queueOffset".to_owned()),
            Just("jstackEnable".to_owned()),
            text(),
        ],
        prop_oneof![
            Just("0".to_owned()),
            Just("-1".to_owned()),
            Just("true".to_owned()),
            Just("9223372036854775807".to_owned()),
            Just("99999999999999999999".to_owned()),
            text(),
        ],
        0..8,
    )
}

/// Request and response codes the client knows, plus anything.
fn code() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(17),
        Just(19),
        Just(20),
        Just(24),
        Just(25),
        Just(26),
        Just(40),
        Just(220),
        Just(221),
        Just(307),
        Just(309),
        -2000i32..2000,
        any::<i32>(),
    ]
}

fn command() -> impl Strategy<Value = RemotingCommand> {
    (
        code(),
        prop_oneof![Just(0), Just(1), Just(2), Just(3), any::<i32>()],
        any::<i32>(),
        prop::option::of(text()),
        ext_fields(),
        prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
            1 => message_record().prop_map(|(bytes, _)| bytes),
        ],
    )
        .prop_map(|(code, flag, opaque, remark, ext, body)| {
            let mut fields = ExtFields::new();
            for (k, v) in ext {
                fields.insert(k, v);
            }
            RemotingCommand {
                code,
                language: LanguageCode::Java,
                version: 479,
                opaque,
                flag,
                remark,
                ext_fields: fields,
                body,
            }
        })
}

fn serialize_type() -> impl Strategy<Value = SerializeType> {
    prop_oneof![Just(SerializeType::Json), Just(SerializeType::RocketMq)]
}

/// A frame stream: valid frames (mutated or not), random bytes, or both.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let frames = prop::collection::vec((command(), serialize_type()), 0..3).prop_map(|cmds| {
        let mut out = BytesMut::new();
        for (cmd, st) in cmds {
            // A command that does not fit the binary header is simply skipped.
            let _ = cmd.encode(st, &mut out);
        }
        out.to_vec()
    });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        3 => (frames, mutations()).prop_map(|(f, m)| apply(f, &m)),
    ]
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn props() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![
            Just(properties::UNIQ_KEY.to_owned()),
            Just("TAGS".to_owned()),
            Just("KEYS".to_owned()),
            Just("RETRY_TOPIC".to_owned()),
            "[A-Za-z_]{1,10}",
        ],
        "[a-zA-Z0-9 _.-]{0,20}",
        0..6,
    )
}

/// A valid stored record (encoded) with the message it encodes.
fn message_record() -> impl Strategy<Value = (Bytes, MessageExt)> {
    (
        "[a-zA-Z0-9_%-]{1,20}",
        any::<i32>(),
        any::<i64>(),
        any::<i64>(),
        prop_oneof![
            Just(0),
            Just(sys_flag::COMPRESSED),
            Just(sys_flag::COMPRESSED | 0x100),
            Just(sys_flag::COMPRESSED | 0x200),
            Just(sys_flag::INNER_BATCH),
        ],
        socket_addr(),
        socket_addr(),
        any::<i32>(),
        prop::collection::vec(any::<u8>(), 0..64),
        props(),
    )
        .prop_filter_map(
            "encodable",
            |(topic, queue_id, queue_offset, commit, flag, born, store, reconsume, body, p)| {
                let msg = MessageExt {
                    topic,
                    queue_id,
                    flag: 0,
                    queue_offset,
                    commit_log_offset: commit,
                    sys_flag: flag,
                    born_timestamp: 1_700_000_000_000,
                    born_host: born,
                    store_timestamp: 1_700_000_000_001,
                    store_host: store,
                    reconsume_times: reconsume,
                    prepared_transaction_offset: 0,
                    body_crc: 0,
                    body: Bytes::from(body),
                    properties: p.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
                };
                encode_message(&msg).ok().map(|bytes| (bytes, msg))
            },
        )
}

/// A pull body: several records, random bytes, or a mutated record stream.
fn pull_body() -> impl Strategy<Value = Vec<u8>> {
    let records = prop::collection::vec(message_record(), 0..4).prop_map(|rs| {
        rs.into_iter()
            .flat_map(|(bytes, _)| bytes.to_vec())
            .collect::<Vec<u8>>()
    });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        4 => (records, mutations()).prop_map(|(r, m)| apply(r, &m)),
    ]
}

fn batch_body() -> impl Strategy<Value = Vec<u8>> {
    let valid = prop::collection::vec((prop::collection::vec(any::<u8>(), 1..32), props()), 1..4)
        .prop_filter_map("encodable batch", |items| {
            let msgs: Vec<Message> = items
                .into_iter()
                .map(|(body, p)| {
                    let mut m = Message::new("T", body);
                    for (k, v) in p {
                        m = m.with_property(k, v);
                    }
                    m
                })
                .collect();
            encode_batch(&msgs).ok().map(|b| b.to_vec())
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..128),
        3 => (valid, mutations()).prop_map(|(v, m)| apply(v, &m)),
    ]
}

/// Valid bodies of every JSON parser, in the fastjson dialect brokers send.
const JSON_SAMPLES: &[&str] = &[
    r#"{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911",1:"127.0.0.1:10921"},"brokerName":"b","cluster":"C"}],"queueDatas":[{"brokerName":"b","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#,
    r#"{"clientID":"127.0.0.1@1","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"G","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*","subVersion":1,"tagsSet":[],"topic":"T"}],"unitMode":false}],"producerDataSet":[]}"#,
    r#"{"consumerGroup":"G","clientId":"c","mqSet":[{"brokerName":"b","queueId":0,"topic":"T"}],"onlyThisBroker":false}"#,
    r#"{"lockOKMQSet":[{"brokerName":"b","queueId":1,"topic":"T"}]}"#,
    r#"{"consumerIdList":["a","b"]}"#,
    r#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:123,{"brokerName":"b","queueId":1,"topic":"T"}:7}}"#,
    r#"[{"brokerName":"b","queueId":0,"topic":"T","offset":5}]"#,
    r#"{"properties":{"a":"b"},"subscriptionSet":[],"mqTable":{},"statusTable":{},"jstack":null}"#,
    r#"{"order":false,"autoCommit":true,"consumeResult":"CR_SUCCESS","remark":"ok","spentTimeMills":3}"#,
];

/// Text for the JSON parsers: samples mutated at byte level, JSON-ish character soup, deep
/// nesting (open, and as keys inside keys) and random bytes.
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (prop::sample::select(JSON_SAMPLES), mutations())
            .prop_map(|(s, m)| apply(s.as_bytes().to_vec(), &m)),
        2 => r#"[{}\[\]:,"'\\0-9a-zA-Z \-.eu]{0,120}"#.prop_map(String::into_bytes),
        1 => (1usize..5000, prop::sample::select(vec!["[", "{", "{{", "[{\"a\":"]))
            .prop_map(|(n, open)| open.repeat(n).into_bytes()),
        // Closed object keys inside object keys: each level's text was escaped again by the
        // level above, doubling it (30 levels asked for gigabytes).
        1 => (1usize..64).prop_map(|n| {
            let mut text = r#"{"a":1}"#.to_owned();
            for _ in 0..n {
                text = format!("{{{text}:1}}");
            }
            text.into_bytes()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..128),
    ]
}

/// Runs every body parser on `body`; all must return `Ok` or a typed error.
fn parse_every_body(body: &[u8]) -> Result<(), TestCaseError> {
    macro_rules! check {
        ($e:expr) => {
            if let Err(e) = $e {
                assert_typed(&e)?;
            }
        };
    }
    check!(TopicRouteData::parse(body));
    check!(HeartbeatData::parse(body));
    check!(LockBatchRequest::parse(body));
    check!(UnlockBatchRequest::parse(body));
    check!(LockBatchResponse::parse(body));
    check!(ConsumerList::parse(body));
    check!(parse_offset_table(body));
    check!(ConsumerRunningInfo::parse(body));
    check!(ConsumeMessageDirectlyResult::parse(body));
    let _ = properties::decode(&Bytes::copy_from_slice(body));
    Ok(())
}

/// Feeds `command` to every typed response parser and to [`BrokerRequest::parse`].
fn parse_every_response(command: &RemotingCommand) -> Result<(), TestCaseError> {
    macro_rules! check {
        ($rpc:expr) => {
            if let Err(e) = $rpc.parse(command.clone()) {
                assert_typed(&e)?;
            }
        };
    }
    let mq = MessageQueue::new("T", "b", 0);
    check!(GetRouteInfo { topic: "T".into() });
    check!(GetMaxOffset {
        topic: "T".into(),
        queue_id: 0
    });
    check!(QueryConsumerOffset {
        consumer_group: "G".into(),
        topic: "T".into(),
        queue_id: 0,
        set_zero_if_not_found: Some(false),
    });
    check!(GetConsumerList {
        consumer_group: "G".into()
    });
    check!(HeartBeat {
        data: HeartbeatData::default()
    });
    check!(LockBatchMq {
        body: LockBatchRequest {
            consumer_group: "G".into(),
            client_id: "c".into(),
            only_this_broker: false,
            mq_set: vec![mq],
        },
    });
    check!(SendMessage::for_message("P", &Message::new("T", "x"), 0, 0));
    check!(PullMessage::all_tags("G", "T", 0, 0, 32));
    if let Err(e) = BrokerRequest::parse(command) {
        assert_typed(&e)?;
    }
    Ok(())
}

/// Splits `data` at the given points (taken modulo the length), feeding a decoder as a socket
/// would; returns the frames and the error that ended the stream, if any.
fn decode_stream(data: &[u8], cuts: &[usize]) -> (Vec<Bytes>, Option<RemotingError>, usize) {
    let mut decoder = FrameDecoder::new(TEST_MAX_FRAME);
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.push(data.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut max_capacity = 0;
    for p in points {
        buf.extend_from_slice(&data[fed..p]);
        fed = p;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e), max_capacity.max(buf.capacity())),
            }
            max_capacity = max_capacity.max(buf.capacity());
        }
        max_capacity = max_capacity.max(buf.capacity());
    }
    (frames, None, max_capacity)
}

// === codec targets ===

proptest! {
    #![proptest_config(config(cases()))]

    /// Frames and commands: any byte stream, cut anywhere, gives frames, a typed error or a
    /// request for more bytes; every frame's command decodes or fails typed; the decoder never
    /// reserves more than one maximum frame; and every parser downstream copes with whatever
    /// command came out.
    #[test]
    fn frame_and_command_decoders_never_panic(
        data in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let (frames, error, capacity) = decode_stream(&data, &cuts);
        if let Some(e) = &error {
            assert_typed(e)?;
        }
        // The decoder reserves at most one whole frame (prefix included) beyond what it holds.
        prop_assert!(
            capacity <= 2 * (TEST_MAX_FRAME + 8) + data.len(),
            "buffer grew to {capacity} for {} input bytes", data.len()
        );
        for frame in frames {
            prop_assert!(frame.len() <= TEST_MAX_FRAME);
            match RemotingCommand::decode(frame) {
                Ok(cmd) => {
                    parse_every_response(&cmd)?;
                    let mut out = BytesMut::new();
                    if let Err(e) = cmd.encode(SerializeType::Json, &mut out) {
                        assert_typed(&e)?;
                    }
                }
                Err(e) => assert_typed(&e)?,
            }
        }
    }

    /// Whole-frame contents straight into the command decoder (no length prefix), including
    /// header words that announce absurd lengths and unknown serialize types.
    #[test]
    fn command_decoder_never_panics(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            (command(), serialize_type(), mutations()).prop_map(|(c, st, m)| {
                let mut out = BytesMut::new();
                let _ = c.encode(st, &mut out);
                let framed = out.to_vec();
                apply(framed.get(4..).map(<[u8]>::to_vec).unwrap_or_default(), &m)
            }),
        ],
    ) {
        match RemotingCommand::decode_with_type(Bytes::from(data)) {
            Ok((cmd, _)) => parse_every_response(&cmd)?,
            Err(e) => assert_typed(&e)?,
        }
    }

    /// Unmutated frames survive any chunking exactly (the streaming decoder loses nothing).
    #[test]
    fn valid_frames_round_trip_through_any_chunking(
        cmds in prop::collection::vec((command(), serialize_type()), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut out = BytesMut::new();
        let mut sent = Vec::new();
        for (cmd, st) in cmds {
            if cmd.encode(st, &mut out).is_ok() {
                sent.push((cmd, st));
            }
        }
        let data = out.to_vec();
        prop_assume!(data.len() <= TEST_MAX_FRAME);
        let (frames, error, _) = decode_stream(&data, &cuts);
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(frames.len(), sent.len());
        for (frame, (cmd, st)) in frames.into_iter().zip(&sent) {
            let back = RemotingCommand::decode(frame)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.code, cmd.code);
            prop_assert_eq!(back.opaque, cmd.opaque);
            prop_assert_eq!(back.flag, cmd.flag);
            prop_assert_eq!(&back.body, &cmd.body);
            // The binary header reads an empty key or value as Java's null, i.e. absent.
            let expected: Vec<(&str, &str)> = cmd
                .ext_fields
                .iter()
                .filter(|(k, v)| *st == SerializeType::Json || (!k.is_empty() && !v.is_empty()))
                .collect();
            prop_assert_eq!(back.ext_fields.iter().collect::<Vec<_>>(), expected);
        }
    }

    /// Pull bodies: records of every version, compressed or inner batches, mutated; decoding
    /// either yields messages whose bodies fit the input's decompression limit or a typed error.
    #[test]
    fn message_decoders_never_panic(body in pull_body()) {
        match decode_messages(&Bytes::copy_from_slice(&body)) {
            Ok(msgs) => {
                for m in &msgs {
                    let _ = m.msg_id();
                    let _ = m.offset_msg_id();
                    let _ = m.keys();
                    let _ = m.tags();
                }
            }
            Err(e) => assert_typed(&e)?,
        }
        if let Err(e) = decode_message(&body) {
            assert_typed(&e)?;
        }
    }

    /// A valid record decodes to the message it encodes (so the mutated runs start from real
    /// records, not from something the decoder rejects on its first check).
    #[test]
    fn valid_records_decode(record in message_record()) {
        let (bytes, msg) = record;
        if msg.sys_flag & sys_flag::INNER_BATCH != 0 {
            // Not a plain record: its body is a batch, covered by the mutation targets.
            return Ok(());
        }
        let got = decode_messages(&Bytes::copy_from_slice(&bytes)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(&got[0].body, &msg.body);
        prop_assert_eq!(&got[0].topic, &msg.topic);
        prop_assert_eq!(got[0].queue_offset, msg.queue_offset);
    }

    /// Batch bodies (SEND_BATCH_MESSAGE, 5.x inner batches).
    #[test]
    fn batch_decoder_never_panics(body in batch_body()) {
        if let Err(e) = decode_batch(&Bytes::from(body)) {
            assert_typed(&e)?;
        }
    }

    /// Every JSON body parser (route, heartbeat, lock request/response, consumer list, offset
    /// tables, running info, consume-directly result) and the property-string decoder.
    #[test]
    fn body_parsers_never_panic(body in json_body()) {
        parse_every_body(&body)?;
    }

    /// Broker-initiated requests with random fields and bodies (offset tables, messages).
    #[test]
    fn broker_requests_never_panic(
        code in prop_oneof![Just(40), Just(220), Just(221), Just(307), Just(309), any::<i32>()],
        ext in ext_fields(),
        body in prop_oneof![json_body(), pull_body()],
        flag in prop_oneof![Just(0), Just(2)],
    ) {
        let mut fields = ExtFields::new();
        for (k, v) in ext {
            fields.insert(k, v);
        }
        let cmd = RemotingCommand {
            code,
            language: LanguageCode::Java,
            version: 479,
            opaque: 1,
            flag,
            remark: None,
            ext_fields: fields,
            body: Bytes::from(body),
        };
        if let Err(e) = BrokerRequest::parse(&cmd) {
            assert_typed(&e)?;
        }
    }
}

// === configuration loader ===

/// The valid reference configuration, used as the seed of mutated YAML.
const REFERENCE: &str = include_str!("../config/reference.yaml");

/// YAML text: the reference file with lines dropped, duplicated or changed; key/value soups
/// from the real key set; and arbitrary text.
fn yaml_text() -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = REFERENCE.lines().collect();
    let n = lines.len();
    let edited = (
        prop::collection::vec((0..n, 0u8..4, text()), 0..6),
        Just(lines),
    )
        .prop_map(|(edits, lines)| {
            let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            for (at, op, t) in edits {
                let at = at % out.len().max(1);
                if out.is_empty() {
                    break;
                }
                match op {
                    0 => {
                        out.remove(at);
                    }
                    1 => {
                        let dup = out[at].clone();
                        out.insert(at, dup);
                    }
                    2 => {
                        // Keep the key, replace the value.
                        let line = out[at].clone();
                        if let Some((k, _)) = line.split_once(':') {
                            out[at] = format!("{k}: {t}");
                        }
                    }
                    _ => out[at].push_str(&t),
                }
            }
            out.join("\n")
        });
    let keys = prop::sample::select(vec![
        "namesrv_addr",
        "instance_name",
        "profile",
        "client",
        "admin",
        "log",
        "shutdown",
        "subscriptions",
        "subscription_defaults",
        "group",
        "topic",
        "webhook",
        "url",
        "timeout",
        "persist_interval",
        "max_cache_size_per_queue",
        "consume_mode",
        "retry_codes",
        "headers",
        "- group",
    ]);
    let values = prop_oneof![
        Just("".to_owned()),
        Just("~".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e309".to_owned()),
        Just("http://127.0.0.1:1/x".to_owned()),
        Just("10s".to_owned()),
        Just("5MiB".to_owned()),
        Just("*a".to_owned()),
        Just("&a [*a, *a]".to_owned()),
        Just("!!binary aGVsbG8=".to_owned()),
        text(),
    ];
    let soup = prop::collection::vec((0usize..3, keys, values), 0..12).prop_map(|entries| {
        entries
            .into_iter()
            .map(|(indent, k, v)| format!("{}{k}: {v}", "  ".repeat(indent)))
            .collect::<Vec<_>>()
            .join("\n")
    });
    prop_oneof![
        3 => edited,
        3 => soup,
        1 => any::<String>(),
        1 => (1usize..2000).prop_map(|n| format!("{}x{}", "[".repeat(n), "]".repeat(n))),
    ]
}

/// Environment pairs: the documented variables, `__` paths and unrelated names, with values of
/// every kind.
fn env_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let names: Vec<&'static str> = rocketmq_webhook::config::env::VARIABLES
        .iter()
        .map(|v| v.name)
        .collect();
    let name = prop_oneof![
        4 => prop::sample::select(names).prop_map(str::to_owned),
        2 => "ROCKETMQ_[A-Z_]{1,12}(__[A-Z0-9_]{1,10}){0,3}",
        1 => Just("ROCKETMQ_HOME".to_owned()),
        1 => Just("ROCKETMQ_SUBSCRIPTIONS__999999999999__GROUP".to_owned()),
        1 => text(),
    ];
    let value = prop_oneof![
        Just("0001".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("http://127.0.0.1:9/hook".to_owned()),
        Just("5000".to_owned()),
        Just("CONSUME_FROM_FIRST_OFFSET".to_owned()),
        text(),
    ];
    prop::collection::vec((name, value), 0..8)
}

proptest! {
    #![proptest_config(config((cases() / 10).max(1)))]

    /// The loader never panics on any file text or environment; every failure is a
    /// configuration error with exit code 2 that is not retriable, and carries a message.
    #[test]
    fn config_loader_never_panics(yaml in prop::option::of(yaml_text()), env in env_pairs()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut sources = Sources::default();
        if let Some(text) = &yaml {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            sources = sources.with_file(path);
        }
        for (k, v) in env {
            sources = sources.with_env(k, v);
        }
        match Config::load(&sources) {
            Ok(cfg) => {
                // A loaded configuration is usable: it renders and has subscriptions.
                prop_assert!(!cfg.subscriptions.is_empty());
                let _ = cfg.redacted_yaml();
            }
            Err(e) => check_config_error(&e)?,
        }
    }
}

fn check_config_error(e: &ConfigError) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.exit_code(), EXIT_CONFIG);
    prop_assert!(!e.is_retriable());
    prop_assert!(!e.to_string().is_empty());
    prop_assert!(!e.errors().is_empty());
    Ok(())
}
