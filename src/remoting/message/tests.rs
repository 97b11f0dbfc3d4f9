//! Record codec tests: the golden record of Appendix A.3, round trips and fuzzing.

use super::*;
use proptest::prelude::*;

/// Appendix A.3, fixed fields as printed in the document, properties spelled out.
fn golden_record() -> Vec<u8> {
    let fixed = concat!(
        "000000e5",
        "daa320a7",
        "154677bc",
        "00000000",
        "00000000",
        "0000000000000000",
        "0000000000000000",
        "00000000",
        "000001a20c608ca5",
        "7f000001000088b4",
        "000001a20c608ca8",
        "7f00000100005597",
        "00000000",
        "0000000000000000",
        "00000007",
        "68656c6c6f2d30",
        "02",
        "5431",
        "0081",
    );
    let props = "UNIQ_KEY\u{1}1CA780108D008FDEC8E81E59FB7C0F13\u{2}WAIT\u{1}true\u{2}TAGS\u{1}TagA\u{2}\
                 KEYS\u{1}k0\u{2}CLUSTER\u{1}TestCluster\u{2}MSG_REGION\u{1}DefaultRegion\u{2}TRACE_ON\u{1}true\u{2}";
    let mut bytes = hex::decode(fixed).unwrap();
    assert_eq!(props.len(), 0x81);
    bytes.extend_from_slice(props.as_bytes());
    bytes
}

#[test]
fn bodies_are_views_into_the_response() {
    let response = Bytes::from(golden_record());
    let msgs = decode_messages(&response).unwrap();
    let body = msgs[0].body.as_ptr_range();
    let whole = response.as_ptr_range();
    assert_eq!(msgs[0].body, b"hello-0"[..]);
    assert!(whole.start <= body.start && body.end <= whole.end);
}

#[test]
fn the_vector_is_sized_to_the_records() {
    for n in [1, 5, 23, 32] {
        let response = Bytes::from(golden_record().repeat(n));
        let msgs = decode_messages(&response).unwrap();
        assert_eq!((msgs.len(), msgs.capacity()), (n, n));
    }
    // A size field that cannot be a record stops the count; decoding then reports it.
    let mut bad = golden_record().repeat(2);
    bad.extend_from_slice(&[0, 0, 0, 1]);
    assert_eq!(count_records(&bad), 2);
    assert!(decode_messages(&Bytes::from(bad)).is_err());
    assert_eq!(count_records(&[0xff; 3]), 0);
}

#[test]
fn properties_are_views_unless_the_body_was_compressed() {
    let within = |part: &[u8], whole: &Bytes| whole.as_ptr_range().contains(&part.as_ptr());
    let response = Bytes::from(golden_record());
    let msgs = decode_messages(&response).unwrap();
    let tags = &msgs[0].properties["TAGS"];
    assert_eq!(tags, "TagA");
    assert!(within(tags.as_bytes(), &response));

    // A compressed record's body is a new buffer; its properties must not pin the response.
    let mut m = sample("T");
    m.body = Bytes::from(vec![b'x'; 10_000]);
    m.sys_flag = sys_flag::COMPRESSED;
    m.properties.insert("TAGS".into(), "TagA".into());
    let response = encode_message(&m).unwrap();
    let msgs = decode_messages(&response).unwrap();
    let tags = &msgs[0].properties["TAGS"];
    assert_eq!(tags, "TagA");
    assert!(!within(tags.as_bytes(), &response));
}

#[test]
fn golden_record_decodes() {
    let bytes = golden_record();
    assert_eq!(bytes.len(), 229);
    assert_eq!(body_crc(b"hello-0"), 0x154677bc);
    let msgs = decode_messages(&Bytes::copy_from_slice(&bytes)).unwrap();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.topic, "T1");
    assert_eq!(m.queue_id, 0);
    assert_eq!(m.flag, 0);
    assert_eq!(m.queue_offset, 0);
    assert_eq!(m.commit_log_offset, 0);
    assert_eq!(m.sys_flag, 0);
    assert_eq!(m.born_timestamp, 0x01a2_0c60_8ca5);
    assert_eq!(m.born_host, "127.0.0.1:34996".parse().unwrap());
    assert_eq!(m.store_timestamp, 0x01a2_0c60_8ca8);
    assert_eq!(m.store_host, "127.0.0.1:21911".parse().unwrap());
    assert_eq!(m.reconsume_times, 0);
    assert_eq!(m.prepared_transaction_offset, 0);
    assert_eq!(m.body_crc, 0x154677bc);
    assert_eq!(&m.body[..], b"hello-0");
    assert_eq!(m.properties.len(), 7);
    assert_eq!(m.tags(), Some("TagA"));
    assert_eq!(m.keys(), vec!["k0"]);
    assert_eq!(m.property("CLUSTER"), Some("TestCluster"));
    assert_eq!(m.property("MSG_REGION"), Some("DefaultRegion"));
    assert_eq!(m.property("TRACE_ON"), Some("true"));
    assert_eq!(m.property("WAIT"), Some("true"));
    assert_eq!(m.offset_msg_id(), "7F000001000055970000000000000000");
    assert_eq!(m.msg_id(), "1CA780108D008FDEC8E81E59FB7C0F13");
    assert_eq!(decode_message(&bytes).unwrap(), *m);

    // Re-encoding reproduces every byte up to the properties (whose order is free).
    let again = encode_message(m).unwrap();
    assert_eq!(again.len(), bytes.len());
    assert_eq!(again[..100], bytes[..100]);
    assert_eq!(
        decode_messages(&Bytes::copy_from_slice(&again)).unwrap(),
        msgs
    );
}

#[test]
fn truncated_and_corrupt_records_are_errors() {
    let bytes = golden_record();
    for cut in [1, 3, 4, 47, 48, 100, 228] {
        assert!(
            decode_messages(&Bytes::copy_from_slice(&bytes[..cut])).is_err(),
            "cut at {cut}"
        );
    }
    let mut bad_magic = bytes.clone();
    bad_magic[4] = 0xCB;
    assert!(matches!(
        decode_messages(&Bytes::copy_from_slice(&bad_magic)),
        Err(RemotingError::MalformedMessage { at: 0, .. })
    ));
    // A body length larger than the record.
    let mut long_body = bytes.clone();
    long_body[84..88].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(decode_messages(&Bytes::copy_from_slice(&long_body)).is_err());
    // A negative topic length (V1 reads a signed byte).
    let mut neg_topic = bytes.clone();
    neg_topic[95] = 0x80;
    assert!(decode_messages(&Bytes::copy_from_slice(&neg_topic)).is_err());
    // The second record's error names its offset.
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes[..50]);
    assert!(matches!(
        decode_messages(&Bytes::copy_from_slice(&two)),
        Err(RemotingError::MalformedMessage { at: 229, .. })
    ));
    assert!(decode_messages(&Bytes::new()).unwrap().is_empty());
    assert!(decode_message(&[]).is_err());
}

/// A pull body with a broken record after whole ones delivers the whole ones and starts the
/// next pull at the broken one, whose own decode then fails naming its queue offset; failing
/// the whole pull stalled the queue before the good records too.
#[test]
fn records_before_a_broken_one_come_back() {
    let good = golden_record();
    let mut broken = good.clone();
    broken[4] = 0xCB; // unknown magic code
    broken[20..28].copy_from_slice(&1_i64.to_be_bytes());
    let mut body = good.clone();
    body.extend_from_slice(&broken);
    let d = decode_messages_within(&Bytes::from(body.clone()), usize::MAX).unwrap();
    assert_eq!(d.messages.len(), 1);
    assert_eq!(d.messages[0].queue_offset, 0);
    assert_eq!(d.rest_from, Some(1));
    // The strict decoder still refuses the body.
    assert!(decode_messages(&Bytes::from(body)).is_err());

    match decode_messages_within(&Bytes::from(broken), usize::MAX) {
        Err(RemotingError::MalformedMessage { at: 0, reason }) => {
            assert!(reason.contains("unknown magic code"), "{reason}");
            assert!(reason.contains("queue offset 1"), "{reason}");
        }
        other => panic!("expected MalformedMessage, got {other:?}"),
    }
    // A broken record whose offset does not lie past the records before it is no place to
    // start the next pull from: the whole body fails.
    let mut behind = good.clone();
    let mut stale = good.clone();
    stale[4] = 0xCB;
    behind.extend_from_slice(&stale);
    assert!(matches!(
        decode_messages_within(&Bytes::from(behind), usize::MAX),
        Err(RemotingError::MalformedMessage { at: 229, .. })
    ));
    // A record claiming more bytes than its fields is broken itself (the next record's start
    // would fall inside it): with nothing before it, its pull fails.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 8]);
    padded[..4].copy_from_slice(&(229_i32 + 8).to_be_bytes());
    match decode_messages_within(&Bytes::from(padded), usize::MAX) {
        Err(RemotingError::MalformedMessage { at: 0, reason }) => {
            assert!(reason.contains("totalSize 237"), "{reason}");
        }
        other => panic!("expected MalformedMessage, got {other:?}"),
    }
    // A broken length leaves no queue offset to start from: the whole body fails.
    let mut cut = good.clone();
    cut.extend_from_slice(&good[..50]);
    assert!(matches!(
        decode_messages_within(&Bytes::from(cut), usize::MAX),
        Err(RemotingError::MalformedMessage { at: 229, .. })
    ));
}

#[test]
fn total_size_errors_name_what_and_the_bound() {
    fn reason<T: std::fmt::Debug>(result: Result<T, RemotingError>) -> String {
        match result {
            Err(RemotingError::MalformedMessage { at: 0, reason }) => reason,
            other => panic!("expected MalformedMessage at 0, got {other:?}"),
        }
    }
    fn with_total(bytes: &[u8], total: usize) -> Bytes {
        let mut bytes = bytes.to_vec();
        bytes[..4].copy_from_slice(&u32::try_from(total).unwrap().to_be_bytes());
        Bytes::from(bytes)
    }
    let record = golden_record();
    assert_eq!(
        reason(decode_messages(&with_total(&record, 47))),
        "record totalSize 47 is less than its 48 bytes of fixed fields"
    );
    assert_eq!(
        reason(decode_message(&with_total(&record, 230))),
        "record totalSize 230 exceeds the 229 bytes left"
    );
    let batch = encode_batch(&[Message::new("T", "hi")]).unwrap();
    assert_eq!(
        reason(decode_batch(&with_total(&batch, 21))),
        "batch element totalSize 21 is less than its 22 bytes of fixed fields"
    );
    let too_long = batch.len() + 1;
    assert_eq!(
        reason(decode_batch(&with_total(&batch, too_long))),
        format!(
            "batch element totalSize {too_long} exceeds the {} bytes left",
            batch.len()
        )
    );
}

fn sample(topic: &str) -> MessageExt {
    MessageExt {
        topic: topic.to_owned(),
        queue_id: 3,
        flag: 7,
        queue_offset: 100,
        commit_log_offset: 4096,
        sys_flag: 0,
        born_timestamp: 1,
        born_host: "10.0.0.1:5000".parse().unwrap(),
        store_timestamp: 2,
        store_host: "[::1]:10911".parse().unwrap(),
        reconsume_times: 2,
        prepared_transaction_offset: 0,
        body_crc: 0,
        body: Bytes::from_static(b"payload"),
        properties: Properties::new(),
    }
}

#[test]
fn compressed_bodies_are_inflated_and_flag_cleared() {
    for (algorithm, type_bits) in [
        (None, 0x000),
        (Some(Compression::Zlib), 0x300),
        (Some(Compression::Lz4), 0x100),
        (Some(Compression::Zstd), 0x200),
    ] {
        let mut m = sample("T");
        m.body = Bytes::from(vec![b'x'; 10_000]);
        m.sys_flag = sys_flag::COMPRESSED | type_bits;
        let bytes = encode_message(&m).unwrap();
        // The stored body really is compressed.
        assert!(bytes.len() < 5_000, "{algorithm:?}");
        let got = decode_message(&bytes).unwrap();
        assert_eq!(got.body, m.body);
        assert_eq!(got.sys_flag, type_bits | sys_flag::STORE_HOST_V6);
        // Type 0 is zlib (pre-4.9.4 producers).
        if let Some(a) = algorithm {
            assert_eq!(Compression::from_sys_flag(m.sys_flag).unwrap(), a);
        }
    }
    let mut m = sample("T");
    m.sys_flag = sys_flag::COMPRESSED | 0x300;
    let mut bytes = encode_message(&m).unwrap().to_vec();
    // Corrupt the zlib header of the stored body.
    let body_at = 48 + 8 + 8 + 20 + 4 + 8 + 4;
    bytes[body_at] ^= 0xFF;
    let stored_len = u32::from_be_bytes(bytes[body_at - 4..body_at].try_into().unwrap()) as usize;
    let stored = bytes[body_at..body_at + stored_len].to_vec();
    // Not an error: the message comes back as stored, marked, between its neighbours.
    let plain = encode_message(&sample("T")).unwrap().to_vec();
    let body = Bytes::from([plain.clone(), bytes, plain].concat());
    let got = decode_messages(&body).unwrap();
    assert_eq!(got.len(), 3);
    assert!(!got[0].body_undecoded() && !got[2].body_undecoded());
    assert!(got[1].body_undecoded());
    assert_eq!(&got[1].body[..], &stored[..]);
    assert_eq!(got[1].sys_flag & sys_flag::COMPRESSED, sys_flag::COMPRESSED);
    // The reason is there for the DLQ's warning; an inflated body has none.
    let reason = got[1].inflate_error().expect("a reason").to_string();
    assert!(reason.contains("zlib"), "{reason}");
    assert!(got[0].inflate_error().is_none());
}

/// A compression type this client does not know (4-7) is kept as stored too, and an inner
/// batch whose body does not inflate goes on whole instead of being unwrapped.
#[test]
fn bodies_that_do_not_inflate_come_back_as_stored() {
    let mut m = sample("T");
    m.sys_flag = sys_flag::COMPRESSED | 0x300;
    m.body = Bytes::from_static(b"plain, not zlib");
    let mut bytes = encode_message(&m).unwrap().to_vec();
    // sysFlag of the stored record: compression type 4, and an inner batch to unwrap.
    let sys_flag_at = 4 + 4 + 4 + 4 + 4 + 8 + 8;
    let flag = sys_flag::COMPRESSED
        | (4 << 8)
        | sys_flag::NEED_UNWRAP
        | sys_flag::INNER_BATCH
        | sys_flag::STORE_HOST_V6;
    bytes[sys_flag_at..sys_flag_at + 4].copy_from_slice(&flag.to_be_bytes());
    let got = decode_messages(&Bytes::from(bytes)).unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].body_undecoded());
    let reason = got[0].inflate_error().expect("a reason").to_string();
    assert!(reason.contains("compression type 4"), "{reason}");
}

/// A stored record at `offset` whose zlib body inflates to `len` bytes of `x`.
fn inflating_record(offset: i64, len: usize) -> Bytes {
    let mut m = sample("T");
    m.queue_offset = offset;
    m.body = Bytes::from(vec![b'x'; len]);
    m.sys_flag = sys_flag::COMPRESSED | 0x300;
    encode_message(&m).unwrap()
}

#[test]
fn decoding_stops_once_the_records_built_past_the_budget() {
    let mut body = BytesMut::new();
    for offset in 5..8 {
        body.extend_from_slice(&inflating_record(offset, 10_000));
    }
    body.extend_from_slice(&encode_message(&sample("T")).unwrap());
    let body = body.freeze();
    let decode = |budget| {
        let d = decode_messages_within(&body, budget).unwrap();
        let offsets: Vec<i64> = d.messages.iter().map(|m| m.queue_offset).collect();
        (offsets, d.rest_from)
    };
    let last = sample("T").queue_offset;
    // What each message costs besides its inflated body: the struct and its topic.
    let message = size_of::<MessageExt>() + 1;
    // 10,000 then 20,000 bytes inflated: the third record waits for the next pull.
    assert_eq!(decode(15_000), (vec![5, 6], Some(7)));
    // Records that are not compressed count what their message costs.
    assert_eq!(decode(30_000 + 3 * message), (vec![5, 6, 7], Some(last)));
    assert_eq!(
        decode(30_000 + 3 * message + 1),
        (vec![5, 6, 7, last], None)
    );
    // The first record always decodes, so a pull makes progress whatever the budget.
    assert_eq!(decode(0), (vec![5], Some(6)));
    assert_eq!(decode(usize::MAX), (vec![5, 6, 7, last], None));
    assert_eq!(decode_messages(&body).unwrap().len(), 4);
}

/// A stored inner-batch record of `topic` at `offset` holding `items`.
fn inner_batch_record(topic: &str, offset: i64, items: &[Message], compressed: bool) -> Bytes {
    let mut m = sample(topic);
    m.queue_offset = offset;
    m.body = encode_batch(items).unwrap();
    m.sys_flag = sys_flag::NEED_UNWRAP | sys_flag::INNER_BATCH;
    if compressed {
        m.sys_flag |= sys_flag::COMPRESSED | 0x200;
    }
    encode_message(&m).unwrap()
}

#[test]
fn the_budget_counts_the_messages_built_not_only_inflated_bytes() {
    // Uncompressed inner batches inflate nothing, yet every item becomes a message.
    let items = vec![Message::new("T", ""); 100];
    let mut body = BytesMut::new();
    for offset in [0, 100, 200] {
        body.extend_from_slice(&inner_batch_record("T", offset, &items, false));
    }
    let d = decode_messages_within(&body.freeze(), 150 * size_of::<MessageExt>()).unwrap();
    // The second batch crosses the mark; the third waits, whole, for the next pull.
    assert_eq!(d.messages.len(), 200);
    assert_eq!(d.messages.last().unwrap().queue_offset, 199);
    assert_eq!(d.rest_from, Some(200));
}

#[test]
fn a_body_yields_at_most_max_body_messages() {
    // Zstd inner batches of empty messages: 880 KB inflated and a few KB stored each.
    let items = vec![Message::new("T", ""); 40_000];
    let mut body = BytesMut::new();
    for offset in [0, 40_000] {
        body.extend_from_slice(&inner_batch_record("T", offset, &items, true));
    }
    let body = body.freeze();
    let d = decode_messages_within(&body, MAX_BODY_DECODED_LEN).unwrap();
    assert_eq!(d.messages.len(), 40_000);
    assert_eq!(d.rest_from, Some(40_000));
    // The whole-body decoder is for bodies we trust.
    assert_eq!(decode_messages(&body).unwrap().len(), 80_000);

    // Filled to the message: a batch one short, then two plain records.
    let items = vec![Message::new("T", ""); MAX_BODY_MESSAGES - 1];
    let mut body = BytesMut::new();
    body.extend_from_slice(&inner_batch_record("T", 0, &items, true));
    for offset in [MAX_BODY_MESSAGES - 1, MAX_BODY_MESSAGES] {
        let mut m = sample("T");
        m.queue_offset = offset as i64;
        body.extend_from_slice(&encode_message(&m).unwrap());
    }
    let d = decode_messages_within(&body.freeze(), usize::MAX).unwrap();
    assert_eq!(d.messages.len(), MAX_BODY_MESSAGES);
    assert_eq!(d.rest_from, Some(MAX_BODY_MESSAGES as i64));
}

/// Asserts `messages` is the inner batch `record` (at offset 0) left whole, marked
/// undeliverable: the consumer dead-letters it instead of failing its pull for good.
fn assert_left_whole(messages: &[MessageExt], record: &Bytes) {
    assert_eq!(messages.len(), 1, "unwrapped");
    let m = &messages[0];
    assert!(m.undeliverable().is_some());
    assert!(!m.body_undecoded());
    assert_eq!(m.queue_offset, 0);
    assert_eq!(m.sys_flag & BATCH, BATCH);
    let stored = decode_record(record, 0).unwrap().0;
    assert_eq!(m.body, stored.body);
}

#[test]
fn an_inner_batch_copying_a_long_topic_into_every_message_is_left_whole() {
    // 110 KB stored, no compression: 5,000 copies of a 32,767-byte topic would be 164 MB.
    let items = vec![Message::new("T", ""); 5_000];
    let long = "L".repeat(i16::MAX as usize);
    let record = inner_batch_record(&long, 0, &items, false);
    for budget in [MAX_BODY_DECODED_LEN, 0] {
        let d = decode_messages_within(&record, budget).unwrap();
        assert_left_whole(&d.messages, &record);
        assert_eq!(d.rest_from, None);
    }
    assert_left_whole(&decode_messages(&record).unwrap(), &record);
    assert_left_whole(&[decode_message(&record).unwrap()], &record);
    // With a topic Java accepts, the same batch is 5,000 messages.
    let record = inner_batch_record(&"L".repeat(127), 0, &items, false);
    assert_eq!(decode_messages(&record).unwrap().len(), 5_000);
}

#[test]
fn an_inner_batch_of_property_laden_messages_is_left_whole() {
    // 4,000 distinct keys fill 32 KB of properties and take 256 KB each once sorted out: 600
    // such messages (19 MB stored) would build 154 MB.
    let mut item = Message::new("T", "");
    for i in 0..4_000 {
        item = item.with_property(format!("k{i:04}"), "v");
    }
    let record = inner_batch_record("T", 0, &vec![item.clone(); 600], false);
    // Nothing of it is kept but the record.
    assert_left_whole(
        &decode_messages_within(&record, MAX_BODY_DECODED_LEN)
            .unwrap()
            .messages,
        &record,
    );
    // A few of them decode.
    let record = inner_batch_record("T", 0, &vec![item; 3], false);
    let msgs = decode_messages(&record).unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[2].property("k3999"), Some("v"));
}

#[test]
fn batches_hold_at_most_the_limit() {
    let batch = |n: usize| encode_batch(&vec![Message::new("T", ""); n]).unwrap();
    assert_eq!(
        decode_batch(&batch(MAX_BATCH_MESSAGES)).unwrap().len(),
        MAX_BATCH_MESSAGES
    );
    let err = decode_batch(&batch(MAX_BATCH_MESSAGES + 1)).unwrap_err();
    assert!(
        err.to_string().contains(&MAX_BATCH_MESSAGES.to_string()),
        "{err}"
    );
}

#[test]
fn v2_records_have_two_byte_topic_length() {
    let long = "L".repeat(200);
    let m = sample(&long);
    let bytes = encode_message(&m).unwrap();
    assert_eq!(bytes[4..8], MAGIC_V2.to_be_bytes());
    assert_eq!(decode_message(&bytes).unwrap().topic, long);
    let short = encode_message_as(&sample("T"), MessageVersion::V2).unwrap();
    assert_eq!(decode_message(&short).unwrap().topic, "T");
    assert!(encode_message_as(&m, MessageVersion::V1).is_err());
}

#[test]
fn inner_batches_are_unwrapped() {
    let inner = encode_batch(&[
        Message::new("T", "a").with_tags("x").with_uniq_key("ID0"),
        Message::new("T", "bb").with_uniq_key("ID1"),
        Message::new("T", "ccc"),
    ])
    .unwrap();
    let mut outer = sample("T");
    outer.body = inner;
    outer.sys_flag = sys_flag::NEED_UNWRAP | sys_flag::INNER_BATCH;
    outer.properties.insert("UNIQ_KEY".into(), "OUTER".into());
    let bytes = encode_message(&outer).unwrap();
    let msgs = decode_messages(&Bytes::copy_from_slice(&bytes)).unwrap();
    assert_eq!(msgs.len(), 3);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.queue_offset, 100 + i as i64);
        assert_eq!(m.topic, "T");
        assert_eq!(m.commit_log_offset, 4096);
        assert_eq!(
            m.sys_flag & (sys_flag::NEED_UNWRAP | sys_flag::INNER_BATCH),
            0
        );
        assert_eq!(m.body.len(), i + 1);
    }
    assert_eq!(msgs[0].tags(), Some("x"));
    assert_eq!(msgs[0].msg_id(), "ID0");
    assert_eq!(msgs[1].msg_id(), "ID1");
    assert_eq!(msgs[2].msg_id(), msgs[2].offset_msg_id());
    assert_eq!(decode_message(&bytes).unwrap(), msgs[0]);
}

/// An inner batch past [`MAX_BATCH_MESSAGES`], or with a malformed element, is left whole and
/// marked, and the records after it decode: the body is not rejected, so the queue moves on
/// (the consumer dead-letters the record; the broker holds it intact).
#[test]
fn an_inner_batch_that_cannot_be_unwrapped_is_left_whole_and_the_rest_decodes() {
    let plain = |offset: i64| {
        let mut m = sample("T");
        m.queue_offset = offset;
        encode_message(&m).unwrap()
    };
    let big = inner_batch_record(
        "T",
        0,
        &vec![Message::new("T", ""); MAX_BATCH_MESSAGES + 1],
        false,
    );
    let mut body = BytesMut::new();
    body.extend_from_slice(&big);
    body.extend_from_slice(&plain(MAX_BATCH_MESSAGES as i64 + 1));
    let d = decode_messages_within(&body.freeze(), MAX_BODY_DECODED_LEN).unwrap();
    assert_left_whole(&d.messages[..1], &big);
    assert_eq!(d.messages.len(), 2);
    assert_eq!(d.messages[1].queue_offset, MAX_BATCH_MESSAGES as i64 + 1);
    assert!(d.messages[1].undeliverable().is_none());

    // The second element's property length runs past its end.
    let items = [Message::new("T", "a"), Message::new("T", "b")];
    let mut record = inner_batch_record("T", 0, &items, false).to_vec();
    let stored = decode_record(&Bytes::copy_from_slice(&record), 0)
        .unwrap()
        .0;
    let batch_at = record
        .windows(stored.body.len())
        .position(|w| w == &stored.body[..])
        .unwrap();
    let second = batch_at
        + usize::try_from(i32::from_be_bytes(stored.body[..4].try_into().unwrap())).unwrap();
    let props_len_at = second + 4 + 4 + 4 + 4 + 4 + 1;
    record[props_len_at..props_len_at + 2].copy_from_slice(&i16::MAX.to_be_bytes());
    let record = Bytes::from(record);
    let mut body = BytesMut::new();
    body.extend_from_slice(&record);
    body.extend_from_slice(&plain(2));
    let msgs = decode_messages(&body.freeze()).unwrap();
    assert_left_whole(&msgs[..1], &record);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].queue_offset, 2);
}

#[test]
fn batch_layout_and_rules() {
    let body = encode_batch(&[Message::new("T", "hi").with_tags("A")]).unwrap();
    let props = "TAGS\u{1}A\u{2}";
    let mut want = Vec::new();
    want.extend_from_slice(&((20 + 2 + 2 + props.len()) as i32).to_be_bytes());
    want.extend_from_slice(&[0; 8]);
    want.extend_from_slice(&0i32.to_be_bytes());
    want.extend_from_slice(&2i32.to_be_bytes());
    want.extend_from_slice(b"hi");
    want.extend_from_slice(&(props.len() as i16).to_be_bytes());
    want.extend_from_slice(props.as_bytes());
    assert_eq!(&body[..], &want[..]);

    assert!(encode_batch(&[]).is_err());
    assert!(encode_batch(&[Message::new("A", ""), Message::new("B", "")]).is_err());
    assert!(encode_batch(&[Message::new("%RETRY%g", "")]).is_err());
    assert!(encode_batch(&[Message::new("A", "").with_delay_level(3)]).is_err());
    // WAIT as Java reads it: absent is true.
    assert!(encode_batch(&[Message::new("A", "").with_wait(true), Message::new("A", "")]).is_ok());
    assert!(encode_batch(&[
        Message::new("A", "").with_wait(false),
        Message::new("A", "")
    ])
    .is_err());
    assert!(encode_batch(&[Message::new("A", "").with_property("k", "a\u{2}b")]).is_err());
    let huge = "v".repeat(MAX_PROPERTIES_LEN);
    assert!(encode_batch(&[Message::new("A", "").with_property("k", huge)]).is_err());
}

#[test]
fn retry_topic_restore() {
    let mut m = sample("%RETRY%G1");
    assert_eq!(m.retry_topic_restored("G1"), "%RETRY%G1");
    m.properties
        .insert(properties::RETRY_TOPIC.into(), "T1".into());
    assert_eq!(m.retry_topic_restored("G1"), "T1");
    // Another group's retry topic is left alone.
    assert_eq!(m.retry_topic_restored("G2"), "%RETRY%G1");
    assert!(m.restore_retry_topic("G1"));
    assert_eq!(m.topic, "T1");
    assert!(!m.restore_retry_topic("G1"));
}

#[test]
fn message_builders() {
    let m = Message::new("T", "b")
        .with_tags("TagA")
        .with_keys(["k1", "k2"])
        .with_uniq_key("U")
        .with_wait(false);
    assert_eq!(&m.properties["TAGS"], "TagA");
    assert_eq!(&m.properties["KEYS"], "k1 k2");
    assert_eq!(m.uniq_key(), Some("U"));
    assert_eq!(&m.properties["WAIT"], "false");
}

// === property tests ===

fn socket() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        )
        .into()),
    ]
}

fn props() -> impl Strategy<Value = Properties> {
    prop::collection::btree_map("[^\u{1}\u{2}]{1,10}", "[^\u{1}\u{2}]{1,20}", 0..6).prop_map(
        |pairs| {
            pairs
                .into_iter()
                .map(|(k, v): (String, String)| (k.into(), v.into()))
                .collect()
        },
    )
}

prop_compose! {
    fn message_ext()(
        topic in "[%A-Za-z0-9_-]{1,40}|[a-z]{128,200}",
        queue_id in any::<i32>(),
        flag in any::<i32>(),
        queue_offset in any::<i64>(),
        commit_log_offset in any::<i64>(),
        // Any bits except compression/batch/host bits, which the encoder derives.
        base_flag in any::<i32>().prop_map(|f| f & !0x7FF),
        compression in 0i32..5,
        born_timestamp in any::<i64>(),
        born_host in socket(),
        store_timestamp in any::<i64>(),
        store_host in socket(),
        reconsume_times in any::<i32>(),
        prepared_transaction_offset in any::<i64>(),
        body in prop::collection::vec(any::<u8>(), 0..600),
        properties in props(),
    ) -> MessageExt {
        // 0: plain; 1..=4: compressed with type 0 (zlib), 1 (lz4), 2 (zstd), 3 (zlib).
        let sys_flag = match compression {
            0 => base_flag,
            n => base_flag | sys_flag::COMPRESSED | ((n - 1) << 8),
        };
        MessageExt {
            topic, queue_id, flag, queue_offset, commit_log_offset, sys_flag, born_timestamp,
            born_host, store_timestamp, store_host, reconsume_times, prepared_transaction_offset,
            body_crc: 0, body: body.into(), properties,
        }
    }
}

/// What decoding `m`'s encoding must give back.
fn expected(m: &MessageExt, stored: &[u8]) -> MessageExt {
    let mut want = m.clone();
    want.sys_flag &= !sys_flag::COMPRESSED;
    if m.born_host.is_ipv6() {
        want.sys_flag |= sys_flag::BORN_HOST_V6;
    }
    if m.store_host.is_ipv6() {
        want.sys_flag |= sys_flag::STORE_HOST_V6;
    }
    want.body_crc = i32::from_be_bytes([stored[8], stored[9], stored[10], stored[11]]);
    want
}

proptest! {
    #[test]
    fn record_round_trip(msgs in prop::collection::vec(message_ext(), 1..4)) {
        let mut body = Vec::new();
        let mut want = Vec::new();
        for m in &msgs {
            let bytes = encode_message(m).unwrap();
            want.push(expected(m, &bytes));
            body.extend_from_slice(&bytes);
        }
        prop_assert_eq!(decode_messages(&Bytes::copy_from_slice(&body)).unwrap(), want);
    }

    #[test]
    fn batch_round_trip(items in prop::collection::vec(
        (any::<i32>(), prop::collection::vec(any::<u8>(), 0..100), props()), 1..6)
    ) {
        let msgs: Vec<Message> = items.iter().map(|(flag, body, p)| {
            let mut p = p.clone();
            p.remove(properties::DELAY);
            p.remove(properties::WAIT);
            Message { topic: "T".into(), flag: *flag, body: body.clone().into(), properties: p }
        }).collect();
        let decoded = decode_batch(&encode_batch(&msgs).unwrap()).unwrap();
        prop_assert_eq!(decoded.len(), msgs.len());
        for (d, m) in decoded.iter().zip(&msgs) {
            prop_assert_eq!(d.flag, m.flag);
            prop_assert_eq!(&d.body, &m.body);
            prop_assert_eq!(&d.properties, &m.properties);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_messages(&Bytes::copy_from_slice(&bytes));
        let _ = decode_message(&bytes);
        let _ = decode_batch(&Bytes::from(bytes));
    }

    /// Mutations of a valid record reach deeper branches than random bytes.
    #[test]
    fn decode_mutated_never_panics(
        edits in prop::collection::vec((0usize..229, any::<u8>()), 1..6),
        cut in 0usize..=229,
    ) {
        let mut bytes = golden_record();
        for (i, b) in edits {
            bytes[i] = b;
        }
        bytes.truncate(cut);
        let _ = decode_messages(&Bytes::copy_from_slice(&bytes));
    }
}
