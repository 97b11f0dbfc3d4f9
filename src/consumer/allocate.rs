//! Queue allocation: which queues of a topic this consumer owns, given every member of the group.
//!
//! Pure functions of their inputs (rocketmq-remoting.md sections 7.4 and 7.5). Every member of a
//! group runs the same computation on the same route and member list, and the answers must
//! partition the queues: no queue owned twice (duplicate delivery to two processes at once) and
//! none owned by nobody (a stalled queue). Two rules make that hold:
//!
//! - [`AllocateStrategy::allocate`] sorts its inputs itself, in the Java client's order (String
//!   `compareTo`, i.e. UTF-16 code units, then queue id numerically), so callers cannot break
//!   agreement by passing a `HashSet`'s iteration order, and a Java consumer in the same group
//!   computes the same answer.
//! - Duplicates are removed from both lists. The Java client takes the queues from a set (no
//!   duplicates) but keeps a duplicated client id, which leaves some queues unowned; a duplicated
//!   id already means two processes share an identity (section 7.1), so we prefer full coverage.
//!
//! The algorithms themselves are the Java ones, step by step, including the consistent-hash ring
//! (MD5 of `clientId-i`, queue key = Java `MessageQueue.toString()`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use md5::{Digest, Md5};

use crate::remoting::MessageQueue;

/// Virtual nodes per consumer on the consistent-hash ring when not configured (Java default).
pub const DEFAULT_VIRTUAL_NODES: usize = 10;

/// How a consumer group splits a topic's queues among its members
/// (Java `AllocateMessageQueueStrategy`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllocateStrategy {
    /// `AVG`: contiguous blocks; the first `queues % consumers` members get one extra queue.
    #[default]
    Average,
    /// `AVG_BY_CIRCLE`: round robin, member `i` gets queues `i, i + c, i + 2c, ...`.
    AverageByCircle,
    /// `CONSISTENT_HASH`: an MD5 hash ring, so a membership change moves few queues.
    ConsistentHash {
        /// Ring nodes per member (Java default [`DEFAULT_VIRTUAL_NODES`]). Zero owns nothing.
        virtual_nodes: usize,
    },
    /// `CONFIG`: always exactly these queues, whatever the route and the members say. The
    /// group's retry topic is not configured: its queues are shared out as by [`Self::Average`].
    Config(Vec<MessageQueue>),
}

impl AllocateStrategy {
    /// The Java strategy name, as reported in consumer running info.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Average => "AVG",
            Self::AverageByCircle => "AVG_BY_CIRCLE",
            Self::ConsistentHash { .. } => "CONSISTENT_HASH",
            Self::Config(_) => "CONFIG",
        }
    }

    /// The queues of `mq_all` that `current_cid` owns among the members `cid_all`.
    ///
    /// Inputs may be in any order and contain duplicates; the result is in Java queue order.
    /// Empty when `current_cid` is empty, either list is empty, or `current_cid` is not a member
    /// (the broker has not seen our heartbeat yet: owning nothing is safe, guessing is not).
    /// [`Self::Config`] skips those checks and returns its list unchanged, as in Java, except for
    /// the retry topic (`%RETRY%<group>`): members configure their own topic's queues, and a
    /// retry queue each of them listed would be consumed by all (every retry delivered once per
    /// member), one none listed by nobody. Its queues go round as [`Self::Average`]'s do.
    pub fn allocate(
        &self,
        group: &str,
        current_cid: &str,
        mq_all: &[MessageQueue],
        cid_all: &[String],
    ) -> Vec<MessageQueue> {
        if let Self::Config(queues) = self {
            let retry_topic = format!("%RETRY%{group}");
            if mq_all.first().is_some_and(|mq| mq.topic == retry_topic) {
                return Self::Average.allocate(group, current_cid, mq_all, cid_all);
            }
            return queues.clone();
        }
        if current_cid.is_empty() || mq_all.is_empty() || cid_all.is_empty() {
            return Vec::new();
        }
        let mut mqs: Vec<&MessageQueue> = mq_all.iter().collect();
        mqs.sort_by(|a, b| java_queue_cmp(a, b));
        mqs.dedup();
        let mut cids: Vec<&str> = cid_all.iter().map(String::as_str).collect();
        cids.sort_by(|a, b| java_str_cmp(a, b));
        cids.dedup();
        let Some(index) = cids.iter().position(|cid| *cid == current_cid) else {
            tracing::info!(%group, %current_cid, members = cids.len(), "Consumer is not in the group's member list yet; allocating nothing.");
            return Vec::new();
        };
        let chosen: Vec<&MessageQueue> = match self {
            Self::Average => average(index, &mqs, cids.len()),
            Self::AverageByCircle => mqs
                .iter()
                .enumerate()
                .skip(index)
                .filter(|(i, _)| i % cids.len() == index)
                .map(|(_, mq)| *mq)
                .collect(),
            Self::ConsistentHash { virtual_nodes } => {
                consistent_hash(current_cid, &mqs, &cids, *virtual_nodes)
            }
            Self::Config(_) => Vec::new(), // handled above
        };
        chosen.into_iter().cloned().collect()
    }
}

/// `AllocateMessageQueueAveragely`, with Java's integer arithmetic kept as is.
fn average<'a>(index: usize, mqs: &[&'a MessageQueue], c: usize) -> Vec<&'a MessageQueue> {
    let n = mqs.len();
    let rem = n % c;
    let gets_extra = rem > 0 && index < rem;
    let size = if n <= c {
        1
    } else if gets_extra {
        n / c + 1
    } else {
        n / c
    };
    let start = if gets_extra {
        index * size
    } else {
        index * size + rem
    };
    // Java's `min(size, n - start)` may be <= 0 (more consumers than queues): nothing.
    let range = size.min(n.saturating_sub(start));
    mqs.iter().skip(start).take(range).copied().collect()
}

/// `AllocateMessageQueueConsistentHash` over Java's `ConsistentHashRouter` with the MD5 hash.
fn consistent_hash<'a>(
    current_cid: &str,
    mqs: &[&'a MessageQueue],
    cids: &[&str],
    virtual_nodes: usize,
) -> Vec<&'a MessageQueue> {
    // A TreeMap<Long, VirtualNode> in Java; a colliding later insert replaces the earlier node.
    let mut ring: BTreeMap<u32, &str> = BTreeMap::new();
    for cid in cids {
        for i in 0..virtual_nodes {
            ring.insert(md5_hash(&format!("{cid}-{i}")), cid);
        }
    }
    mqs.iter()
        .filter(|mq| {
            let key = md5_hash(&java_queue_string(mq));
            // First node at or after the key, wrapping to the smallest (`tailMap(key)` inclusive).
            let owner = ring
                .range(key..)
                .next()
                .or_else(|| ring.iter().next())
                .map(|(_, cid)| *cid);
            owner == Some(current_cid)
        })
        .copied()
        .collect()
}

/// Java `MD5Hash.hash`: the first four digest bytes as an unsigned big-endian number.
fn md5_hash(key: &str) -> u32 {
    let digest = Md5::digest(key.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Java `MessageQueue.toString()`, the queue's key on the hash ring.
fn java_queue_string(mq: &MessageQueue) -> String {
    format!(
        "MessageQueue [topic={}, brokerName={}, queueId={}]",
        mq.topic, mq.broker_name, mq.queue_id
    )
}

/// Java `String.compareTo`: UTF-16 code units, which differs from Rust's `str` order for
/// characters above U+FFFF versus U+E000..U+FFFF.
fn java_str_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.cmp(b);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Java `MessageQueue.compareTo`: topic, then broker name, then queue id.
fn java_queue_cmp(a: &MessageQueue, b: &MessageQueue) -> Ordering {
    java_str_cmp(&a.topic, &b.topic)
        .then_with(|| java_str_cmp(&a.broker_name, &b.broker_name))
        .then_with(|| a.queue_id.cmp(&b.queue_id))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn queues(n: i32) -> Vec<MessageQueue> {
        (0..n)
            .map(|i| MessageQueue::new("T", "broker-a", i))
            .collect()
    }

    fn cids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn ids(qs: &[MessageQueue]) -> Vec<i32> {
        qs.iter().map(|q| q.queue_id).collect()
    }

    #[test]
    fn average_eight_queues_three_consumers() {
        let mqs = queues(8);
        let all = cids(&["c2", "c0", "c1"]);
        let s = AllocateStrategy::Average;
        assert_eq!(ids(&s.allocate("g", "c0", &mqs, &all)), vec![0, 1, 2]);
        assert_eq!(ids(&s.allocate("g", "c1", &mqs, &all)), vec![3, 4, 5]);
        assert_eq!(ids(&s.allocate("g", "c2", &mqs, &all)), vec![6, 7]);
    }

    #[test]
    fn average_two_queues_three_consumers() {
        let mqs = queues(2);
        let all = cids(&["c0", "c1", "c2"]);
        let s = AllocateStrategy::Average;
        assert_eq!(ids(&s.allocate("g", "c0", &mqs, &all)), vec![0]);
        assert_eq!(ids(&s.allocate("g", "c1", &mqs, &all)), vec![1]);
        assert!(s.allocate("g", "c2", &mqs, &all).is_empty());
    }

    #[test]
    fn by_circle_eight_queues_three_consumers() {
        let mqs = queues(8);
        let all = cids(&["c1", "c2", "c0"]);
        let s = AllocateStrategy::AverageByCircle;
        assert_eq!(ids(&s.allocate("g", "c0", &mqs, &all)), vec![0, 3, 6]);
        assert_eq!(ids(&s.allocate("g", "c1", &mqs, &all)), vec![1, 4, 7]);
        assert_eq!(ids(&s.allocate("g", "c2", &mqs, &all)), vec![2, 5]);
    }

    #[test]
    fn by_circle_two_queues_three_consumers() {
        let mqs = queues(2);
        let all = cids(&["c0", "c1", "c2"]);
        let s = AllocateStrategy::AverageByCircle;
        assert_eq!(ids(&s.allocate("g", "c0", &mqs, &all)), vec![0]);
        assert_eq!(ids(&s.allocate("g", "c1", &mqs, &all)), vec![1]);
        assert!(s.allocate("g", "c2", &mqs, &all).is_empty());
    }

    #[test]
    fn queues_sort_numerically_by_id_then_by_broker_and_topic() {
        // Queue 10 must follow 9 (numeric), broker-a before broker-b, "A" before "B".
        let mqs = vec![
            MessageQueue::new("B", "broker-a", 0),
            MessageQueue::new("A", "broker-b", 0),
            MessageQueue::new("A", "broker-a", 10),
            MessageQueue::new("A", "broker-a", 9),
        ];
        let got = AllocateStrategy::Average.allocate("g", "c0", &mqs, &cids(&["c0"]));
        assert_eq!(
            got,
            vec![
                MessageQueue::new("A", "broker-a", 9),
                MessageQueue::new("A", "broker-a", 10),
                MessageQueue::new("A", "broker-b", 0),
                MessageQueue::new("B", "broker-a", 0),
            ]
        );
    }

    #[test]
    fn unknown_or_empty_inputs_allocate_nothing() {
        let mqs = queues(4);
        for s in [
            AllocateStrategy::Average,
            AllocateStrategy::AverageByCircle,
            AllocateStrategy::ConsistentHash { virtual_nodes: 10 },
        ] {
            assert!(s.allocate("g", "me", &mqs, &cids(&["a", "b"])).is_empty());
            assert!(s.allocate("g", "", &mqs, &cids(&["a", ""])).is_empty());
            assert!(s.allocate("g", "a", &[], &cids(&["a"])).is_empty());
            assert!(s.allocate("g", "a", &mqs, &[]).is_empty());
        }
    }

    #[test]
    fn config_returns_its_list_unchanged() {
        let fixed = vec![
            MessageQueue::new("T", "b", 3),
            MessageQueue::new("T", "a", 1),
        ];
        let s = AllocateStrategy::Config(fixed.clone());
        assert_eq!(s.allocate("g", "nobody", &queues(8), &cids(&["x"])), fixed);
        assert_eq!(s.allocate("g", "", &[], &[]), fixed);
    }

    #[test]
    fn config_shares_the_retry_topic_out_like_average() {
        let s = AllocateStrategy::Config(vec![MessageQueue::new("T", "a", 1)]);
        let retry: Vec<MessageQueue> = ["a", "b"]
            .iter()
            .map(|b| MessageQueue::new("%RETRY%g", *b, 0))
            .collect();
        let members = cids(&["x", "y"]);
        let x = s.allocate("g", "x", &retry, &members);
        let y = s.allocate("g", "y", &retry, &members);
        // Every retry queue has exactly one owner.
        assert_eq!(x, [retry[0].clone()]);
        assert_eq!(y, [retry[1].clone()]);
        assert_eq!(
            x,
            AllocateStrategy::Average.allocate("g", "x", &retry, &members)
        );
        // Another group's retry topic is no retry topic of this group: the configured queues.
        assert_eq!(
            s.allocate("h", "x", &retry, &members),
            [MessageQueue::new("T", "a", 1)]
        );
    }

    #[test]
    fn java_string_order_is_utf16() {
        // U+FF5E (one UTF-16 unit 0xFF5E) sorts after U+1F600 (surrogates 0xD83D...) in Java,
        // before it in Rust's byte/code-point order.
        assert_eq!(java_str_cmp("\u{FF5E}", "\u{1F600}"), Ordering::Greater);
        assert_eq!("\u{FF5E}".cmp("\u{1F600}"), Ordering::Less);
        assert_eq!(java_str_cmp("a", "b"), Ordering::Less);
    }

    #[test]
    fn md5_hash_takes_first_four_bytes_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(md5_hash(""), 0xd41d_8cd9);
        // MD5("abc") = 900150983cd24fb0d6963f7d28e17f72
        assert_eq!(md5_hash("abc"), 0x9001_5098);
    }

    #[test]
    fn java_queue_string_matches_to_string() {
        assert_eq!(
            java_queue_string(&MessageQueue::new("T1", "broker-a", 3)),
            "MessageQueue [topic=T1, brokerName=broker-a, queueId=3]"
        );
    }

    /// Expected owners computed by a separate Java program implementing `ConsistentHashRouter`
    /// with `MessageDigest` MD5 and `TreeMap.tailMap` (see the module doc for the algorithm).
    #[test]
    fn consistent_hash_matches_java_reference() {
        let mqs: Vec<MessageQueue> = (0..8)
            .map(|i| {
                MessageQueue::new(
                    "TopicTest",
                    if i < 4 { "broker-a" } else { "broker-b" },
                    i % 4,
                )
            })
            .collect();
        let all = cids(&["10.0.0.1@1#1", "10.0.0.2@2#2", "10.0.0.3@3#3"]);
        let s = AllocateStrategy::ConsistentHash { virtual_nodes: 10 };
        let got: Vec<Vec<String>> = all
            .iter()
            .map(|cid| {
                s.allocate("g", cid, &mqs, &all)
                    .iter()
                    .map(|q| format!("{}#{}", q.broker_name, q.queue_id))
                    .collect()
            })
            .collect();
        assert_eq!(got, java_reference_owners());
    }

    fn java_reference_owners() -> Vec<Vec<String>> {
        let owners = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect();
        vec![
            owners(&["broker-a#1", "broker-a#3", "broker-b#2"]),
            owners(&["broker-b#3"]),
            owners(&["broker-a#0", "broker-a#2", "broker-b#0", "broker-b#1"]),
        ]
    }

    /// A random group: queues over a few topics and brokers, distinct client ids, and a virtual
    /// node count, with both lists in random order.
    fn group() -> impl Strategy<Value = (Vec<MessageQueue>, Vec<String>, usize)> {
        let queue = ("[A-C%]{1,3}", "broker-[a-c]", 0..12i32)
            .prop_map(|(t, b, q)| MessageQueue::new(t, b, q));
        (
            prop::collection::btree_set(queue, 1..40),
            prop::collection::btree_set("[0-9.]{1,6}@[0-9]{1,4}#[a-z0-9]{0,3}", 1..9),
            1..20usize,
        )
            .prop_flat_map(|(qs, cs, vn)| {
                let qs: Vec<_> = qs.into_iter().collect();
                let cs: Vec<_> = cs.into_iter().collect();
                (Just(qs).prop_shuffle(), Just(cs).prop_shuffle(), Just(vn))
            })
    }

    fn strategies(vn: usize) -> [AllocateStrategy; 3] {
        [
            AllocateStrategy::Average,
            AllocateStrategy::AverageByCircle,
            AllocateStrategy::ConsistentHash { virtual_nodes: vn },
        ]
    }

    proptest! {
        #[test]
        fn members_partition_the_queues((mqs, all, vn) in group()) {
            for s in strategies(vn) {
                let mut owned = BTreeSet::new();
                let mut total = 0;
                for cid in &all {
                    let mine = s.allocate("g", cid, &mqs, &all);
                    total += mine.len();
                    owned.extend(mine);
                }
                let expected: BTreeSet<_> = mqs.iter().cloned().collect();
                prop_assert_eq!(total, mqs.len(), "{} allocated a queue twice", s.name());
                prop_assert_eq!(&owned, &expected, "{} left a queue unowned", s.name());
            }
        }

        #[test]
        fn answer_does_not_depend_on_input_order(
            (mqs, all, vn) in group(),
            seed in any::<u64>(),
        ) {
            let mut mqs2 = mqs.clone();
            let mut all2 = all.clone();
            // A deterministic reshuffle: rotate and reverse by the seed.
            let k = (seed as usize) % mqs2.len();
            mqs2.rotate_left(k);
            mqs2.reverse();
            let k = (seed as usize / 7) % all2.len();
            all2.rotate_left(k);
            if seed % 2 == 0 { all2.reverse(); }
            for s in strategies(vn) {
                for cid in &all {
                    prop_assert_eq!(
                        s.allocate("g", cid, &mqs, &all),
                        s.allocate("g", cid, &mqs2, &all2),
                        "{} depends on input order", s.name()
                    );
                }
            }
        }
    }
}
