//! Offset tables keyed by [`MessageQueue`]: the RESET_CONSUMER_CLIENT_OFFSET body (section 5.2),
//! the GET_CONSUMER_STATUS_FROM_CLIENT answer (5.3) and the broadcasting `offsets.json` file
//! (7.9).
//!
//! Java writes these maps with fastjson's *object keys*
//! (`{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:123}}`), which is not JSON. The
//! reader also accepts the list forms other clients and admin tools produce
//! (`[[{mq},123],...]` and `[{"brokerName":..,"queueId":..,"topic":..,"offset":..}]`), in any
//! whitespace and key order.

use super::fastjson::{self, Value};
use crate::remoting::{MessageQueue, RemotingError};

const WHAT: &str = "offset table";

fn malformed(reason: impl Into<String>) -> RemotingError {
    RemotingError::MalformedBody {
        what: WHAT,
        reason: reason.into(),
    }
}

/// Parses an offset table in any of its forms: a wrapper object with `offsetTable` (or
/// `messageQueueTable`, the GET_CONSUMER_STATUS answer) holding an object-key map or a list, or a
/// bare map or list. Entries keep their input order.
///
/// # Errors
/// [`RemotingError::MalformedBody`] if the text does not parse or an entry is not a queue with an
/// integer offset; [`RemotingError::BodyTooLarge`] if it holds more values than any real table
/// (an offset table of 65,536 queues, the most a topic has, takes about half of them).
pub fn parse_offset_table(body: &[u8]) -> Result<Vec<(MessageQueue, i64)>, RemotingError> {
    let root = fastjson::parse(body).map_err(|e| e.into_body_error(WHAT))?;
    let table = root
        .get("offsetTable")
        .or_else(|| root.get("messageQueueTable"))
        .unwrap_or(&root);
    match table {
        Value::Null => Ok(Vec::new()),
        Value::Object(entries) => entries
            .iter()
            .map(|(k, v)| Ok((queue(k)?, offset(v)?)))
            .collect(),
        Value::Array(items) => items.iter().map(list_entry).collect(),
        _ => Err(malformed("offset table is neither a map nor a list")),
    }
}

/// `[{mq}, offset]` or `{"brokerName":..,"queueId":..,"topic":..,"offset":..}`.
fn list_entry(item: &Value) -> Result<(MessageQueue, i64), RemotingError> {
    match item {
        Value::Array(pair) => match pair.as_slice() {
            [mq, off] => Ok((queue(mq)?, offset(off)?)),
            _ => Err(malformed("list entry is not a [queue, offset] pair")),
        },
        Value::Object(_) => {
            let off = item
                .get("offset")
                .ok_or_else(|| malformed("list entry has no offset"))?;
            Ok((queue(item)?, offset(off)?))
        }
        _ => Err(malformed("list entry is neither a pair nor an object")),
    }
}

fn queue(v: &Value) -> Result<MessageQueue, RemotingError> {
    let text = |key: &str| match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(malformed(format!("queue key has no string {key}"))),
    };
    let queue_id = v
        .get("queueId")
        .and_then(Value::as_i64)
        .and_then(|q| i32::try_from(q).ok())
        .ok_or_else(|| malformed("queue key has no integer queueId"))?;
    Ok(MessageQueue::new(
        text("topic")?,
        text("brokerName")?,
        queue_id,
    ))
}

fn offset(v: &Value) -> Result<i64, RemotingError> {
    v.as_i64()
        .ok_or_else(|| malformed(format!("offset {v:?} is not an integer")))
}

/// Writes `{"offsetTable":{<queue>:<offset>,...}}` with object keys, as Java's
/// `OffsetSerializeWrapper` / `ResetOffsetBody` do. `pretty` indents with tabs the way fastjson's
/// pretty printer does (for `offsets.json`); readers, ours included, ignore the whitespace.
pub fn write_offset_table(table: &[(MessageQueue, i64)], pretty: bool) -> String {
    if !pretty {
        let mut out = String::from("{\"offsetTable\":");
        write_compact(&mut out, table);
        out.push('}');
        return out;
    }
    let mut out = String::from("{\n\t\"offsetTable\":{");
    for (i, (mq, off)) in table.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\n\t\t\t\"brokerName\":");
        out.push_str(&fastjson::to_string(&mq.broker_name));
        out.push_str(",\n\t\t\t\"queueId\":");
        out.push_str(&mq.queue_id.to_string());
        out.push_str(",\n\t\t\t\"topic\":");
        out.push_str(&fastjson::to_string(&mq.topic));
        out.push_str("\n\t\t}:");
        out.push_str(&off.to_string());
    }
    out.push_str("\n\t}\n}");
    out
}

/// The GET_CONSUMER_STATUS_FROM_CLIENT answer body:
/// `{"consumerTable":{},"messageQueueTable":{<queue>:<offset>,...}}`.
pub fn write_consumer_status(table: &[(MessageQueue, i64)]) -> String {
    let mut out = String::from("{\"consumerTable\":{},\"messageQueueTable\":");
    write_compact(&mut out, table);
    out.push('}');
    out
}

/// The compact object-key map of `table`.
fn write_compact(out: &mut String, table: &[(MessageQueue, i64)]) {
    let rows: Vec<(String, String)> = table
        .iter()
        .map(|(mq, off)| (queue_key(mq), off.to_string()))
        .collect();
    fastjson::write_object_key_map(out, rows.iter().map(|(k, v)| (k.as_str(), v.as_str())));
}

/// A queue as fastjson writes it as a map key (keys sorted, as fastjson does).
pub(crate) fn queue_key(mq: &MessageQueue) -> String {
    format!(
        "{{\"brokerName\":{},\"queueId\":{},\"topic\":{}}}",
        fastjson::to_string(&mq.broker_name),
        mq.queue_id,
        fastjson::to_string(&mq.topic)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mq(q: i32) -> MessageQueue {
        MessageQueue::new("T", "b", q)
    }

    #[test]
    fn parses_every_form() {
        let want = vec![(mq(0), 123), (mq(1), 77)];
        let forms = [
            r#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:123,{"brokerName":"b","queueId":1,"topic":"T"}:77}}"#,
            r#"{"offsetTable":{{"topic":"T","queueId":0,"brokerName":"b"}:123,{"queueId":1,"brokerName":"b","topic":"T"}:77}}"#,
            r#"{"offsetTable":[[{"brokerName":"b","queueId":0,"topic":"T"},123],[{"brokerName":"b","queueId":1,"topic":"T"},77]]}"#,
            r#"{"offsetTable":[{"brokerName":"b","queueId":0,"topic":"T","offset":123},{"offset":"77","brokerName":"b","queueId":1,"topic":"T"}]}"#,
            "{\n\t\"offsetTable\":{{\n\t\t\t\"brokerName\":\"b\",\n\t\t\t\"queueId\":0,\n\t\t\t\"topic\":\"T\"\n\t\t}:123,{\n\t\t\t\"brokerName\":\"b\",\"queueId\":1,\"topic\":\"T\"\n\t\t}:77\n\t}\n}",
            r#"{"consumerTable":{},"messageQueueTable":{{"brokerName":"b","queueId":0,"topic":"T"}:123,{"brokerName":"b","queueId":1,"topic":"T"}:77}}"#,
            r#"[[{"brokerName":"b","queueId":0,"topic":"T"},123],[{"brokerName":"b","queueId":1,"topic":"T"},77]]"#,
        ];
        for form in forms {
            assert_eq!(parse_offset_table(form.as_bytes()).unwrap(), want, "{form}");
        }
        assert!(parse_offset_table(b"{\"offsetTable\":{}}")
            .unwrap()
            .is_empty());
        assert!(parse_offset_table(b"{\"offsetTable\":null}")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            r#"{"offsetTable":{{"brokerName":"b","queueId":0}:1}}"#,
            r#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:"x"}}"#,
            r#"{"offsetTable":{{"brokerName":"b","queueId":99999999999,"topic":"T"}:1}}"#,
            r#"{"offsetTable":[[{"brokerName":"b","queueId":0,"topic":"T"}]]}"#,
            r#"{"offsetTable":7}"#,
            r#"{"offsetTable":{"#,
        ] {
            assert!(parse_offset_table(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    /// The table of a topic of 65,536 queues (the most a route may have) parses in every form;
    /// a table far larger than any topic's is refused before it is built.
    #[test]
    fn the_largest_topic_parses_and_a_larger_table_is_refused() {
        use crate::remoting::body::route::MAX_TOPIC_QUEUES;
        let queues = usize::try_from(MAX_TOPIC_QUEUES).expect("fits");
        let table: Vec<_> = (0..MAX_TOPIC_QUEUES)
            .map(|q| (MessageQueue::new("%RETRY%group", "broker-a", q), 1 << 40))
            .collect();
        let listed = |n: usize| {
            let entries: Vec<String> = (0..n)
                .map(|q| format!(r#"{{"brokerName":"broker-a","queueId":{q},"topic":"%RETRY%group","offset":1099511627776}}"#))
                .collect();
            format!(r#"{{"offsetTable":[{}]}}"#, entries.join(","))
        };
        for body in [
            write_offset_table(&table, false),
            write_offset_table(&table, true),
            listed(queues),
        ] {
            assert_eq!(parse_offset_table(body.as_bytes()).unwrap().len(), queues);
        }
        // Nine values per entry: this one is past the bound.
        let huge = listed(fastjson::MAX_VALUES / 9 + 1);
        match parse_offset_table(huge.as_bytes()) {
            Err(e @ RemotingError::BodyTooLarge { what: WHAT, .. }) => {
                assert!(e.to_string().contains("offset table"), "{e}");
            }
            other => panic!("expected BodyTooLarge, got {:?}", other.map(|t| t.len())),
        }
    }

    #[test]
    fn writes_java_shapes() {
        let t = vec![(mq(0), 42)];
        assert_eq!(
            write_offset_table(&t, false),
            r#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:42}}"#
        );
        assert_eq!(
            write_offset_table(&t, true),
            "{\n\t\"offsetTable\":{{\n\t\t\t\"brokerName\":\"b\",\n\t\t\t\"queueId\":0,\n\t\t\t\"topic\":\"T\"\n\t\t}:42\n\t}\n}"
        );
        assert_eq!(
            write_consumer_status(&t),
            r#"{"consumerTable":{},"messageQueueTable":{{"brokerName":"b","queueId":0,"topic":"T"}:42}}"#
        );
        assert_eq!(write_offset_table(&[], false), r#"{"offsetTable":{}}"#);
        assert!(parse_offset_table(write_offset_table(&[], true).as_bytes())
            .unwrap()
            .is_empty());
    }

    fn table() -> impl Strategy<Value = Vec<(MessageQueue, i64)>> {
        prop::collection::vec(
            (".{0,8}", ".{0,8}", any::<i32>(), any::<i64>())
                .prop_map(|(t, b, q, o)| (MessageQueue::new(t, b, q), o)),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn round_trip(t in table(), pretty in any::<bool>()) {
            prop_assert_eq!(parse_offset_table(write_offset_table(&t, pretty).as_bytes()).unwrap(), t.clone());
            prop_assert_eq!(parse_offset_table(write_consumer_status(&t).as_bytes()).unwrap(), t);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_offset_table(&bytes);
        }

        #[test]
        fn parse_mutated_never_panics(
            edits in prop::collection::vec((0usize..60, any::<u8>()), 1..4),
        ) {
            let mut bytes = br#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:123}}"#.to_vec();
            for (i, b) in edits {
                bytes[i] = b;
            }
            let _ = parse_offset_table(&bytes);
        }
    }
}
