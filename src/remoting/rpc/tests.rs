//! Round trips of every typed request and response mapping of every call.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::remoting::body::consume_directly::{ConsumeMessageDirectlyResult, ConsumeResult};
use crate::remoting::body::heartbeat::HeartbeatData;
use crate::remoting::body::lock::{LockBatchRequest, UnlockBatchRequest};
use crate::remoting::command::{ExtFields, SerializeType, FLAG_ONEWAY};
use crate::remoting::frame::FrameDecoder;
use crate::remoting::message::{
    encode_batch, encode_message, properties, sys_flag, Message, Properties, MAX_BODY_DECODED_LEN,
    MAX_BODY_MESSAGES,
};
use crate::remoting::{MessageExt, MessageQueue, RequestCode};

// === helpers ===

/// `command()` through a real frame in `serialize_type`, then back through `from_command`.
fn wire_round_trip<T>(request: &T, code: RequestCode, serialize_type: SerializeType) -> T
where
    T: Rpc + FromCommand + Debug,
{
    let command = request.command();
    assert_eq!(command.code, code.value());
    assert_eq!(command.opaque, 0, "the connection assigns the opaque");
    assert!(!command.is_response());
    let mut out = BytesMut::new();
    command.encode(serialize_type, &mut out).unwrap();
    let frame = FrameDecoder::default().decode(&mut out).unwrap().unwrap();
    let decoded = RemotingCommand::decode(frame).unwrap();
    assert_eq!(decoded, command);
    T::from_command(&decoded).unwrap()
}

fn check_round_trip<T>(request: &T, code: RequestCode) -> Result<(), TestCaseError>
where
    T: Rpc + FromCommand + Debug + PartialEq,
{
    for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
        prop_assert_eq!(&wire_round_trip(request, code, serialize_type), request);
    }
    Ok(())
}

/// A response to `request` with `code`, ext fields and body.
fn response(code: ResponseCode, ext: ExtFields, body: &[u8]) -> RemotingCommand {
    let request =
        RemotingCommand::request(RequestCode::PullMessage, ExtFields::new(), Bytes::new());
    RemotingCommand::response_to(&request, code, Some("remark".into()))
        .with_ext_fields(ext)
        .with_body(Bytes::copy_from_slice(body))
}

fn assert_status<T: Debug>(result: Result<T, RemotingError>, code: ResponseCode) {
    match result {
        Err(RemotingError::Status { code: got, remark }) => {
            assert_eq!(got, code);
            assert_eq!(remark.as_deref(), Some("remark"));
        }
        other => panic!("expected status {code}, got {other:?}"),
    }
}

// Non-empty: the binary header cannot tell an empty string from an absent field.
const NAME: &str = "[a-zA-Z0-9%_-]{1,16}";

fn sample_message(queue_id: i32, queue_offset: i64) -> MessageExt {
    let mut properties = Properties::new();
    properties.insert(properties::UNIQ_KEY.into(), "ID1".into());
    properties.insert(properties::TAGS.into(), "TagA".into());
    MessageExt {
        topic: "T1".to_owned(),
        queue_id,
        flag: 0,
        queue_offset,
        commit_log_offset: 4096,
        sys_flag: 0,
        born_timestamp: 1,
        born_host: "127.0.0.1:34996".parse().unwrap(),
        store_timestamp: 2,
        store_host: "127.0.0.1:10911".parse().unwrap(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body_crc: 0,
        body: Bytes::from_static(b"hello-0"),
        properties,
    }
}

fn pull_request(queue_id: i32) -> PullMessage {
    PullMessage {
        sys_flag: PullSysFlag::SUSPEND | PullSysFlag::SUBSCRIPTION,
        suspend_timeout_millis: 15_000,
        sub_version: 1,
        ..PullMessage::all_tags("G1", "T1", queue_id, 10, 32)
    }
}

fn pull_header(next: i64) -> ExtFields {
    ExtFields::new()
        .with("nextBeginOffset", next)
        .with("minOffset", 0)
        .with("maxOffset", 12)
        .with("suggestWhichBrokerId", 1)
}

// === request round trips ===

proptest! {
    #[test]
    fn route_and_membership_round_trip(
        topic in NAME, group in NAME, client in NAME,
        producer in proptest::option::of(NAME), consumer in proptest::option::of(NAME),
    ) {
        check_round_trip(&GetRouteInfo { topic }, RequestCode::GetRouteInfoByTopic)?;
        check_round_trip(&GetConsumerList { consumer_group: group }, RequestCode::GetConsumerListByGroup)?;
        check_round_trip(
            &UnregisterClient { client_id: client, producer_group: producer, consumer_group: consumer },
            RequestCode::UnregisterClient,
        )?;
    }

    #[test]
    fn pull_round_trip(
        (consumer_group, topic, expression_type) in (NAME, NAME, NAME),
        queue_id in any::<i32>(), queue_offset in any::<i64>(), max_msg_nums in any::<i32>(),
        sys_flag in any::<i32>(), commit_offset in any::<i64>(), suspend in any::<i64>(),
        subscription in proptest::option::of("\\PC{1,20}"), sub_version in any::<i64>(),
        max_msg_bytes in proptest::option::of(any::<i32>()), broker_name in proptest::option::of(NAME),
    ) {
        let request = PullMessage {
            consumer_group, topic, queue_id, queue_offset, max_msg_nums,
            sys_flag: PullSysFlag(sys_flag), commit_offset, suspend_timeout_millis: suspend,
            subscription, sub_version, expression_type, max_msg_bytes, broker_name,
        };
        check_round_trip(&request, RequestCode::PullMessage)?;
    }

    #[test]
    fn offset_calls_round_trip(
        consumer_group in NAME, topic in NAME, queue_id in any::<i32>(), offset in any::<i64>(),
        set_zero in proptest::option::of(any::<bool>()), upper in any::<bool>(),
    ) {
        check_round_trip(
            &QueryConsumerOffset {
                consumer_group: consumer_group.clone(), topic: topic.clone(), queue_id,
                set_zero_if_not_found: set_zero,
            },
            RequestCode::QueryConsumerOffset,
        )?;
        check_round_trip(
            &UpdateConsumerOffset {
                consumer_group, topic: topic.clone(), queue_id, commit_offset: offset,
            },
            RequestCode::UpdateConsumerOffset,
        )?;
        check_round_trip(&GetMaxOffset { topic: topic.clone(), queue_id }, RequestCode::GetMaxOffset)?;
        check_round_trip(&GetMinOffset { topic: topic.clone(), queue_id }, RequestCode::GetMinOffset)?;
        check_round_trip(
            &GetEarliestMsgStoreTime { topic: topic.clone(), queue_id },
            RequestCode::GetEarliestMsgStoreTime,
        )?;
        let boundary = if upper { Boundary::Upper } else { Boundary::Lower };
        check_round_trip(
            &SearchOffsetByTimestamp { topic, queue_id, timestamp: offset, boundary },
            RequestCode::SearchOffsetByTimestamp,
        )?;
    }

    #[test]
    fn send_back_and_topic_round_trip(
        offset in any::<i64>(), group in NAME, delay_level in any::<i32>(),
        origin_msg_id in NAME, origin_topic in NAME, max_reconsume_times in any::<i32>(),
        broker_name in proptest::option::of(NAME),
        queues in (any::<i32>(), any::<i32>(), any::<i32>()), order in any::<bool>(),
    ) {
        check_round_trip(
            &ConsumerSendMsgBack {
                offset, group: group.clone(), delay_level, origin_msg_id, origin_topic,
                max_reconsume_times, broker_name,
            },
            RequestCode::ConsumerSendMsgBack,
        )?;
        check_round_trip(
            &UpdateAndCreateTopic {
                topic: group, read_queue_nums: queues.0, write_queue_nums: queues.1,
                perm: queues.2, order,
            },
            RequestCode::UpdateAndCreateTopic,
        )?;
    }

    #[test]
    fn send_round_trip(
        (producer_group, topic) in (NAME, NAME),
        ints in (any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>()),
        born_timestamp in any::<i64>(),
        properties in proptest::option::of("\\PC{1,30}"),
        reconsume_times in proptest::option::of(any::<i32>()),
        max_reconsume_times in proptest::option::of(any::<i32>()),
        flags in (any::<bool>(), any::<bool>()),
        broker_name in proptest::option::of(NAME),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let header = SendMessageHeader {
            producer_group, topic, default_topic: DEFAULT_TOPIC.to_owned(),
            default_topic_queue_nums: ints.0, queue_id: ints.1, sys_flag: ints.2,
            born_timestamp, flag: ints.3, properties, reconsume_times,
            unit_mode: flags.0, max_reconsume_times, batch: flags.1, broker_name,
        };
        let send = SendMessage { header: header.clone(), body: Bytes::from(body.clone()) };
        check_round_trip(&send, RequestCode::SendMessageV2)?;
        let batch = SendBatchMessage { header, body: Bytes::from(body) };
        let decoded = wire_round_trip(&batch, RequestCode::SendBatchMessage, SerializeType::Json);
        prop_assert!(decoded.header.batch, "batches always announce themselves");
        prop_assert_eq!(SendBatchMessage { header: SendMessageHeader { batch: true, ..batch.header.clone() }, ..batch }, decoded);
    }
}

#[test]
fn body_only_requests_carry_their_json() {
    let data = HeartbeatData {
        client_id: "127.0.0.1@1#2".into(),
        ..HeartbeatData::default()
    };
    let heartbeat = HeartBeat { data: data.clone() }.command();
    assert_eq!(heartbeat.request_code(), RequestCode::HeartBeat);
    assert!(heartbeat.ext_fields.is_empty());
    assert_eq!(&heartbeat.body[..], &data.to_json()[..]);

    let lock = LockBatchRequest {
        consumer_group: "G1".into(),
        client_id: "c".into(),
        only_this_broker: false,
        mq_set: vec![MessageQueue::new("T1", "b", 0)],
    };
    let command = LockBatchMq { body: lock.clone() }.command();
    assert_eq!(command.request_code(), RequestCode::LockBatchMq);
    assert_eq!(&command.body[..], &lock.to_json()[..]);

    let unlock = UnlockBatchRequest {
        consumer_group: "G1".into(),
        client_id: "c".into(),
        only_this_broker: false,
        mq_set: vec![MessageQueue::new("T1", "b", 1)],
    };
    let command = UnlockBatchMq {
        body: unlock.clone(),
    }
    .command();
    assert_eq!(command.request_code(), RequestCode::UnlockBatchMq);
    assert_eq!(&command.body[..], &unlock.to_json()[..]);
}

#[test]
fn pull_request_uses_java_keys() {
    let mut request = pull_request(3);
    request.max_msg_bytes = Some(262_144);
    request.broker_name = Some("broker-a".into());
    let command = request.command();
    let keys: Vec<&str> = command.ext_fields.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "bname",
            "commitOffset",
            "consumerGroup",
            "expressionType",
            "maxMsgBytes",
            "maxMsgNums",
            "queueId",
            "queueOffset",
            "subVersion",
            "subscription",
            "suspendTimeoutMillis",
            "sysFlag",
            "topic"
        ]
    );
    assert_eq!(command.ext_fields.get("sysFlag"), Some("6"));
}

// === response mapping ===

#[test]
fn pull_found_post_processes_messages() {
    let mut body = BytesMut::new();
    // The record says queue 0; the request (and so the result) says queue 3.
    body.extend_from_slice(&encode_message(&sample_message(0, 10)).unwrap());
    body.extend_from_slice(&encode_message(&sample_message(0, 11)).unwrap());
    let header = pull_header(12).with("offsetDelta", 100);
    let result = pull_request(3)
        .parse(response(ResponseCode::Success, header, &body))
        .unwrap();
    assert_eq!(result.status, PullStatus::Found);
    assert_eq!(result.next_begin_offset, 12);
    assert_eq!(result.suggest_which_broker_id, 1);
    assert_eq!(result.offset_delta, Some(100));
    assert_eq!(result.messages.len(), 2);
    for (i, message) in result.messages.iter().enumerate() {
        assert_eq!(message.queue_id, 3);
        assert_eq!(message.queue_offset, 110 + i as i64);
        assert_eq!(message.property(properties::MIN_OFFSET), Some("0"));
        assert_eq!(message.property(properties::MAX_OFFSET), Some("12"));
        assert_eq!(&message.body[..], b"hello-0");
    }
}

#[test]
fn a_pull_inflating_past_the_budget_continues_at_the_first_record_left() {
    // Three zstd records of 40 MiB each (a few KiB stored): the first two reach the budget.
    let inflated = 40 * 1024 * 1024;
    assert!(2 * inflated >= MAX_BODY_DECODED_LEN && inflated < MAX_BODY_DECODED_LEN);
    let mut body = BytesMut::new();
    for offset in 10..13 {
        let mut m = sample_message(0, offset);
        m.body = Bytes::from(vec![b'x'; inflated]);
        m.sys_flag = sys_flag::COMPRESSED | 0x200;
        body.extend_from_slice(&encode_message(&m).unwrap());
    }
    let header = pull_header(13).with("offsetDelta", 100);
    let result = pull_request(3)
        .parse(response(ResponseCode::Success, header, &body))
        .unwrap();
    let offsets: Vec<i64> = result.messages.iter().map(|m| m.queue_offset).collect();
    assert_eq!(offsets, [110, 111]);
    // The third record's offset, moved by the same delta as the messages.
    assert_eq!(result.next_begin_offset, 112);
}

/// A stored inner-batch record of `topic` at `offset` holding `items` empty messages.
fn inner_batch(topic: &str, offset: i64, items: usize, compressed: bool) -> Bytes {
    let mut m = sample_message(0, offset);
    m.topic = topic.to_owned();
    m.body = encode_batch(&vec![Message::new("T1", ""); items]).unwrap();
    m.sys_flag = sys_flag::NEED_UNWRAP | sys_flag::INNER_BATCH;
    if compressed {
        m.sys_flag |= sys_flag::COMPRESSED | 0x200;
    }
    encode_message(&m).unwrap()
}

#[test]
fn a_pull_of_many_inner_batches_continues_at_the_first_record_left() {
    // Three zstd inner batches of 40,000 empty messages, a few KB stored each: before the
    // message cap, small bodies of such records built millions of messages.
    let mut body = BytesMut::new();
    for offset in [10, 40_010, 80_010] {
        body.extend_from_slice(&inner_batch("T1", offset, 40_000, true));
    }
    let header = pull_header(120_010).with("offsetDelta", 100);
    let result = pull_request(3)
        .parse(response(ResponseCode::Success, header, &body))
        .unwrap();
    assert!(result.messages.len() <= MAX_BODY_MESSAGES);
    assert_eq!(result.messages.len(), 40_000);
    assert_eq!(result.messages.last().unwrap().queue_offset, 40_109);
    // The second record's offset, moved by the same delta as the messages.
    assert_eq!(result.next_begin_offset, 40_110);
}

#[test]
fn a_record_that_would_build_too_much_comes_whole_in_pulls_and_broker_requests() {
    // 5,000 copies of a 32,767-byte topic: 110 KB stored, 164 MB once unwrapped. It comes as
    // the one record, marked undeliverable (the consumer dead-letters it, the consume-directly
    // handler refuses it), instead of failing the pull for good.
    let record = inner_batch(&"L".repeat(i16::MAX as usize), 10, 5_000, false);
    let result = pull_request(3)
        .parse(response(ResponseCode::Success, pull_header(5_010), &record))
        .unwrap();
    assert_eq!(result.messages.len(), 1);
    assert!(result.messages[0].undeliverable().is_some());
    assert_eq!(result.next_begin_offset, 5_010);
    let directly = broker_request(
        RequestCode::ConsumeMessageDirectly,
        ExtFields::new().with("consumerGroup", "G1"),
        &record,
    );
    match BrokerRequest::parse(&directly) {
        Ok(BrokerRequest::ConsumeDirectly { message, .. }) => {
            assert!(message.undeliverable().is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pull_statuses_and_errors() {
    for (code, status) in [
        (ResponseCode::PullNotFound, PullStatus::NoNewMsg),
        (ResponseCode::PullRetryImmediately, PullStatus::NoMatchedMsg),
        (ResponseCode::PullOffsetMoved, PullStatus::OffsetIllegal),
    ] {
        let result = pull_request(0)
            .parse(response(code, pull_header(7), b""))
            .unwrap();
        assert_eq!(result.status, status);
        assert_eq!(status.code(), code);
        assert_eq!(result.next_begin_offset, 7);
        assert!(result.messages.is_empty());
    }
    assert_status(
        pull_request(0).parse(response(
            ResponseCode::SubscriptionNotExist,
            ExtFields::new(),
            b"",
        )),
        ResponseCode::SubscriptionNotExist,
    );
    let missing = ExtFields::new().with("minOffset", 0).with("maxOffset", 1);
    assert!(matches!(
        pull_request(0).parse(response(ResponseCode::PullNotFound, missing, b"")),
        Err(RemotingError::MissingField {
            field: "nextBeginOffset"
        })
    ));
    assert!(matches!(
        pull_request(0).parse(response(ResponseCode::Success, pull_header(1), b"\0\0\0")),
        Err(RemotingError::MalformedMessage { .. })
    ));
}

#[test]
fn pull_sys_flag_bits() {
    let flag = PullSysFlag::COMMIT_OFFSET | PullSysFlag::SUSPEND | PullSysFlag::SUBSCRIPTION;
    assert_eq!(flag.bits(), 7);
    assert!(flag.contains(PullSysFlag::SUSPEND));
    let slave = flag.without(PullSysFlag::COMMIT_OFFSET);
    assert_eq!(slave.bits(), 6);
    assert!(!slave.contains(PullSysFlag::COMMIT_OFFSET));
    let mut flag = PullSysFlag::default();
    flag |= PullSysFlag::LITE_PULL;
    assert_eq!(flag, PullSysFlag(0x10));
}

#[test]
fn query_offset_maps_not_found_to_none() {
    let request = QueryConsumerOffset {
        consumer_group: "G1".into(),
        topic: "T1".into(),
        queue_id: 0,
        set_zero_if_not_found: Some(false),
    };
    assert_eq!(
        request.command().ext_fields.get("setZeroIfNotFound"),
        Some("false")
    );
    assert_eq!(
        request
            .parse(response(ResponseCode::QueryNotFound, ExtFields::new(), b""))
            .unwrap(),
        None
    );
    let found = ExtFields::new().with("offset", 42);
    assert_eq!(
        request
            .parse(response(ResponseCode::Success, found, b""))
            .unwrap(),
        Some(42)
    );
    assert_status(
        request.parse(response(ResponseCode::SystemError, ExtFields::new(), b"")),
        ResponseCode::SystemError,
    );
}

#[test]
fn offset_queries_read_their_field() {
    let offset = ExtFields::new().with("offset", 99);
    let max = GetMaxOffset {
        topic: "T1".into(),
        queue_id: 1,
    };
    assert_eq!(
        max.parse(response(ResponseCode::Success, offset.clone(), b""))
            .unwrap(),
        99
    );
    assert_status(
        max.parse(response(ResponseCode::TopicNotExist, ExtFields::new(), b"")),
        ResponseCode::TopicNotExist,
    );
    let earliest = GetEarliestMsgStoreTime {
        topic: "T1".into(),
        queue_id: 1,
    };
    assert!(matches!(
        earliest.parse(response(ResponseCode::Success, offset, b"")),
        Err(RemotingError::MissingField { field: "timestamp" })
    ));
    let time = ExtFields::new().with("timestamp", 1_700_000_000_000_i64);
    assert_eq!(
        earliest
            .parse(response(ResponseCode::Success, time, b""))
            .unwrap(),
        1_700_000_000_000
    );
    let search = SearchOffsetByTimestamp {
        topic: "T1".into(),
        queue_id: 0,
        timestamp: 5,
        boundary: Boundary::Upper,
    };
    assert_eq!(
        search.command().ext_fields.get("boundaryType"),
        Some("UPPER")
    );
}

#[test]
fn send_statuses_and_results() {
    let header = ExtFields::new()
        .with("msgId", "7F00000100002A9F0000000000000000")
        .with("queueId", 2)
        .with("queueOffset", 5)
        .with("MSG_REGION", "DefaultRegion");
    let message = Message::new("T1", "body")
        .with_uniq_key("ID1")
        .with_tags("A");
    let send = SendMessage::for_message("P", &message, 2, 1_000);
    assert_eq!(send.header.default_topic, "TBW102");
    assert_eq!(
        send.header.properties.as_deref(),
        Some("TAGS\u{1}A\u{2}UNIQ_KEY\u{1}ID1\u{2}")
    );
    for (code, status) in [
        (ResponseCode::Success, SendStatus::Ok),
        (ResponseCode::FlushDiskTimeout, SendStatus::FlushDiskTimeout),
        (
            ResponseCode::FlushSlaveTimeout,
            SendStatus::FlushSlaveTimeout,
        ),
        (
            ResponseCode::SlaveNotAvailable,
            SendStatus::SlaveNotAvailable,
        ),
    ] {
        let result = send.parse(response(code, header.clone(), b"")).unwrap();
        assert_eq!(result.status, status);
        assert_eq!(result.queue_id, 2);
        assert_eq!(result.queue_offset, 5);
        assert_eq!(result.transaction_id, None);
    }
    assert_status(
        send.parse(response(ResponseCode::MessageIllegal, header, b"")),
        ResponseCode::MessageIllegal,
    );
}

#[test]
fn a_retry_topic_send_carries_its_reconsume_counts_in_the_header() {
    let mut message = Message::new("%RETRY%G1", "a").with_uniq_key("ID0");
    for (key, value) in [
        (properties::RECONSUME_TIME, "3"),
        (properties::MAX_RECONSUME_TIMES, "16"),
    ] {
        message
            .properties
            .insert(properties::ByteString::from_static(key), value.into());
    }
    let header = SendMessageHeader::for_message("P", &message, 0, 1);
    assert_eq!(header.reconsume_times, Some(3));
    assert_eq!(header.max_reconsume_times, Some(16));
    let sent = properties::decode(&Bytes::from(header.properties.unwrap_or_default()));
    assert_eq!(sent.get(properties::UNIQ_KEY), Some("ID0"));
    assert!(!sent.contains_key(properties::RECONSUME_TIME));
    // Other topics keep them as properties.
    message.topic = "T1".to_owned();
    let header = SendMessageHeader::for_message("P", &message, 0, 1);
    assert_eq!(header.reconsume_times, None);
    assert!(header
        .properties
        .unwrap_or_default()
        .contains("RECONSUME_TIME"));
}

#[test]
fn send_batch_encodes_at_construction() {
    let messages = [
        Message::new("T1", "a").with_uniq_key("ID0"),
        Message::new("T1", "b").with_uniq_key("ID1"),
    ];
    let header = SendMessageHeader::for_message("P", &Message::new("T1", ""), 0, 1);
    let batch = SendBatchMessage::new(header.clone(), &messages).unwrap();
    let command = batch.command();
    assert_eq!(command.request_code(), RequestCode::SendBatchMessage);
    assert_eq!(command.ext_fields.get("m"), Some("true"));
    assert_eq!(command.body, encode_batch(&messages).unwrap());
    assert!(matches!(
        SendBatchMessage::new(header, &[]),
        Err(RemotingError::Encode { .. })
    ));
}

#[test]
fn route_and_membership_responses() {
    let route = GetRouteInfo { topic: "T1".into() };
    let body = br#"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:10911"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false,"zoneName":null}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}],"orderTopicConf":null,"topicQueueMappingInfo":null}"#;
    let data = route
        .parse(response(ResponseCode::Success, ExtFields::new(), body))
        .unwrap();
    assert_eq!(data.queue_datas.len(), 1);
    assert_eq!(data.master_addr("broker-a"), Some("127.0.0.1:10911"));
    assert_status(
        route.parse(response(ResponseCode::TopicNotExist, ExtFields::new(), b"")),
        ResponseCode::TopicNotExist,
    );

    let list = GetConsumerList {
        consumer_group: "G1".into(),
    };
    let ids = list
        .parse(response(
            ResponseCode::Success,
            ExtFields::new(),
            br#"{"consumerIdList":["b@1","a@2"]}"#,
        ))
        .unwrap();
    assert_eq!(ids, ["b@1", "a@2"]);
    assert_status(
        list.parse(response(ResponseCode::SystemError, ExtFields::new(), b"")),
        ResponseCode::SystemError,
    );

    let lock = LockBatchMq {
        body: LockBatchRequest::default(),
    };
    let locked = lock
        .parse(response(
            ResponseCode::Success,
            ExtFields::new(),
            br#"{"lockOKMQSet":[{"brokerName":"broker-a","queueId":0,"topic":"T1"}]}"#,
        ))
        .unwrap();
    assert_eq!(locked, [MessageQueue::new("T1", "broker-a", 0)]);

    let heartbeat = HeartBeat {
        data: HeartbeatData::default(),
    };
    heartbeat
        .parse(response(ResponseCode::Success, ExtFields::new(), b""))
        .unwrap();
    assert_status(
        heartbeat.parse(response(ResponseCode::SystemError, ExtFields::new(), b"")),
        ResponseCode::SystemError,
    );
}

// === broker-initiated requests ===

fn broker_request(code: RequestCode, ext: ExtFields, body: &[u8]) -> RemotingCommand {
    let mut command = RemotingCommand::request(code, ext, Bytes::copy_from_slice(body));
    command.opaque = 77;
    command
}

#[test]
fn parses_broker_requests() {
    let mut notify = broker_request(
        RequestCode::NotifyConsumerIdsChanged,
        ExtFields::new().with("consumerGroup", "G1"),
        b"",
    );
    notify.flag = FLAG_ONEWAY;
    assert_eq!(
        BrokerRequest::parse(&notify).unwrap(),
        BrokerRequest::NotifyConsumerIdsChanged {
            consumer_group: "G1".into()
        }
    );

    let reset = broker_request(
        RequestCode::ResetConsumerClientOffset,
        ExtFields::new()
            .with("topic", "T1")
            .with("group", "G1")
            .with("timestamp", -1)
            .with("isForce", false)
            .with("queueId", -1),
        br#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T1"}:123,{"brokerName":"b","queueId":1,"topic":"T1"}:77}}"#,
    );
    assert_eq!(
        BrokerRequest::parse(&reset).unwrap(),
        BrokerRequest::ResetOffset {
            topic: "T1".into(),
            group: "G1".into(),
            timestamp: -1,
            is_force: false,
            offsets: vec![
                (MessageQueue::new("T1", "b", 0), 123),
                (MessageQueue::new("T1", "b", 1), 77)
            ],
        }
    );

    let status = broker_request(
        RequestCode::GetConsumerStatusFromClient,
        ExtFields::new().with("topic", "T1").with("group", "G1"),
        b"",
    );
    assert_eq!(
        BrokerRequest::parse(&status).unwrap(),
        BrokerRequest::ConsumerStatus {
            topic: "T1".into(),
            group: "G1".into()
        }
    );

    let running = broker_request(
        RequestCode::GetConsumerRunningInfo,
        ExtFields::new()
            .with("consumerGroup", "G1")
            .with("clientId", "c1")
            .with("jstackEnable", true),
        b"",
    );
    assert_eq!(
        BrokerRequest::parse(&running).unwrap(),
        BrokerRequest::RunningInfo {
            consumer_group: "G1".into(),
            client_id: "c1".into(),
            jstack: true
        }
    );

    let message = sample_message(2, 9);
    let directly = broker_request(
        RequestCode::ConsumeMessageDirectly,
        ExtFields::new()
            .with("consumerGroup", "G1")
            .with("clientId", "c1")
            .with("msgId", "ID1")
            .with("bname", "broker-a")
            .with("topicSysFlag", 0),
        &encode_message(&message).unwrap(),
    );
    match BrokerRequest::parse(&directly).unwrap() {
        BrokerRequest::ConsumeDirectly {
            consumer_group,
            msg_id,
            broker_name,
            message: decoded,
            ..
        } => {
            assert_eq!(consumer_group, "G1");
            assert_eq!(msg_id, "ID1");
            assert_eq!(broker_name.as_deref(), Some("broker-a"));
            assert_eq!(decoded.queue_offset, 9);
            assert_eq!(decoded.msg_id(), "ID1");
        }
        other => panic!("unexpected {other:?}"),
    }
    let empty = broker_request(
        RequestCode::ConsumeMessageDirectly,
        ExtFields::new().with("consumerGroup", "G1"),
        b"",
    );
    assert!(matches!(
        BrokerRequest::parse(&empty),
        Err(RemotingError::MalformedMessage { .. })
    ));

    let other = broker_request(RequestCode::CheckTransactionState, ExtFields::new(), b"");
    assert_eq!(
        BrokerRequest::parse(&other).unwrap(),
        BrokerRequest::Other {
            code: RequestCode::CheckTransactionState
        }
    );
    let missing = broker_request(RequestCode::NotifyConsumerIdsChanged, ExtFields::new(), b"");
    assert!(matches!(
        BrokerRequest::parse(&missing),
        Err(RemotingError::MissingField {
            field: "consumerGroup"
        })
    ));
}

/// A consume-directly body is read up to the end of its first record (what follows is not
/// looked at), and the message owns its bytes rather than viewing the request's.
#[test]
fn consume_directly_reads_the_first_record_into_memory_of_its_own() {
    let message = sample_message(2, 9);
    let mut body = encode_message(&message).unwrap().to_vec();
    body.extend_from_slice(&[0xFF; 10]);
    let request = broker_request(
        RequestCode::ConsumeMessageDirectly,
        ExtFields::new().with("consumerGroup", "G1"),
        &body,
    );
    let BrokerRequest::ConsumeDirectly {
        message: decoded, ..
    } = BrokerRequest::parse(&request).unwrap()
    else {
        panic!("not a consume-directly request");
    };
    assert_eq!(decoded.queue_offset, 9);
    assert_eq!(decoded.body, message.body);
    assert!(!decoded.body.is_empty());
    let request_bytes = request.body.as_ptr_range();
    assert!(
        !request_bytes.contains(&decoded.body.as_ptr()),
        "the message body is a view into the request"
    );
}

#[test]
fn response_helpers_copy_the_opaque() {
    let request = broker_request(RequestCode::Unknown(999), ExtFields::new(), b"");
    let not_supported = not_supported_response(&request);
    assert_eq!(not_supported.opaque, 77);
    assert!(not_supported.is_response());
    assert_eq!(
        not_supported.response_code(),
        ResponseCode::RequestCodeNotSupported
    );
    assert_eq!(
        not_supported.remark.as_deref(),
        Some(" request type 999 not supported")
    );
    let missing = group_not_found_response(&request, "G9");
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.remark.as_deref(),
        Some("The Consumer Group <G9> not exist in this consumer")
    );
    let result = ConsumeMessageDirectlyResult {
        order: false,
        auto_commit: true,
        consume_result: ConsumeResult::Success,
        remark: None,
        spent_time_mills: 3,
    };
    let answer = consume_directly_response(&request, &result);
    assert_eq!(answer.code, 0);
    assert_eq!(answer.opaque, 77);
    assert_eq!(&answer.body[..], &result.to_json()[..]);
    let status = consumer_status_response(&request, &[(MessageQueue::new("T1", "b", 0), 5)]);
    assert_eq!(
        std::str::from_utf8(&status.body).unwrap(),
        r#"{"consumerTable":{},"messageQueueTable":{{"brokerName":"b","queueId":0,"topic":"T1"}:5}}"#
    );
}
