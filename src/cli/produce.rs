//! `rocketmq-webhook produce`: send test messages (demo, tests, benchmark preloading).
//!
//! Small runs (at most [`LIST_LIMIT`] messages) print one line per message id; larger runs
//! print a progress line to stderr every second and a rate summary at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use rocketmq_webhook::client::producer::{Producer, ProducerConfig, ProducerError, QueueSelector};
use rocketmq_webhook::remoting::message::Message;
use tokio::time::Instant;

use super::{describe, print_out, tool_client, validate_topic, CliError, NamesrvArg};

/// Up to this many messages, every id is printed.
pub(crate) const LIST_LIMIT: u64 = 20;

/// The slowest `--rate`: one message every 1000 s.
const MIN_RATE: f64 = 0.001;
/// The broker's default `maxMessageSize` (4 MiB): larger bodies or batches are refused.
const MAX_MESSAGE_SIZE: u64 = 4 * 1024 * 1024;

/// How the queue of each send is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SelectorArg {
    /// Cycle through the topic's writable queues.
    RoundRobin,
    /// A random writable queue per send.
    Random,
    /// Hash the sharding key (or --key): one key always lands on one queue.
    Hash,
}

/// Arguments of `produce`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    pub(crate) namesrv: NamesrvArg,
    /// Topic to send to.
    #[arg(long)]
    pub(crate) topic: String,
    /// Tag of every message.
    #[arg(long)]
    pub(crate) tag: Option<String>,
    /// Key (KEYS property) of every message.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Number of messages.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: u64,
    /// Body size of generated bodies, e.g. 512, 4KiB (default: a short text per message).
    #[arg(long, value_name = "BYTES", conflicts_with = "body")]
    pub(crate) size: Option<bytesize::ByteSize>,
    /// Exact body of every message.
    #[arg(long, value_name = "TEXT")]
    pub(crate) body: Option<String>,
    /// Messages per SEND_BATCH_MESSAGE request (1 = single sends).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) batch: u32,
    /// Maximum messages per second (default: as fast as the broker answers).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub(crate) rate: Option<f64>,
    /// Queue selection.
    #[arg(long, value_enum, default_value_t = SelectorArg::RoundRobin)]
    pub(crate) selector: SelectorArg,
    /// With `--selector hash`: spread messages over K sharding keys `key-0..key-{K-1}`
    /// (message i gets key i mod K), each kept in order on one queue.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) sharding_key_count: Option<u32>,
    /// Producer group reported to the broker.
    #[arg(long, default_value = "rocketmq-webhook-producer")]
    pub(crate) group: String,
}

/// The validated plan of a produce run: what every message looks like.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) topic: String,
    pub(crate) tag: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) count: u64,
    pub(crate) body: BodySpec,
    pub(crate) batch: usize,
    pub(crate) rate: Option<f64>,
    pub(crate) selector: SelectorArg,
    pub(crate) sharding_key_count: Option<u32>,
}

/// How bodies are made.
#[derive(Debug, Clone)]
pub(crate) enum BodySpec {
    /// The same text for every message.
    Fixed(Bytes),
    /// `message <i>` padded with `.` to exactly this many bytes (or just `message <i>` if None).
    Generated(Option<usize>),
}

impl Plan {
    /// Validates the arguments.
    ///
    /// # Errors
    /// [`CliError::Usage`] naming the offending argument.
    pub(crate) fn from_args(args: &ProduceArgs) -> Result<Self, CliError> {
        validate_topic(&args.topic)?;
        if let Some(rate) = args.rate {
            // The floor keeps every send's due time (sent / rate) within a Duration.
            if !(rate.is_finite() && rate >= MIN_RATE) {
                return Err(CliError::usage(format!(
                    "invalid --rate '{rate}': expected a number of messages per second, at least \
                     {MIN_RATE}"
                )));
            }
        }
        let body = match (&args.body, args.size) {
            (Some(text), _) if text.is_empty() => {
                return Err(CliError::usage(
                    "invalid --body '': a message needs a body (the broker refuses an empty one)",
                ));
            }
            (Some(text), _) => BodySpec::Fixed(Bytes::from(text.clone())),
            (None, Some(size)) => {
                if size.as_u64() == 0 || size.as_u64() > MAX_MESSAGE_SIZE {
                    return Err(CliError::usage(format!(
                        "invalid --size '{size}': expected 1 byte to 4 MiB (the broker's maxMessageSize)"
                    )));
                }
                BodySpec::Generated(usize::try_from(size.as_u64()).ok())
            }
            (None, None) => BodySpec::Generated(None),
        };
        let body_len = match &body {
            BodySpec::Fixed(b) => b.len() as u64,
            BodySpec::Generated(n) => n.map_or(32, |n| n as u64),
        };
        // The broker limits the encoded batch: each message's framing (22 bytes) and the
        // properties the producer writes (UNIQ_KEY 42 bytes, WAIT 10, TAGS and KEYS each 6 and
        // their value) count. The producer checks the exact size; this catches it as a usage
        // error, before anything connects.
        // Without --key, --sharding-key-count writes the sharding key as KEYS.
        let sharding_key = args
            .sharding_key_count
            .filter(|_| args.key.is_none())
            .map(|k| format!("key-{}", k.saturating_sub(1)));
        let per_message = body_len
            + 74
            + [args.tag.as_ref(), args.key.as_ref(), sharding_key.as_ref()]
                .iter()
                .flatten()
                .map(|v| v.len() as u64 + 6)
                .sum::<u64>();
        let encoded = per_message.saturating_mul(u64::from(args.batch));
        if args.batch > 1 && encoded > MAX_MESSAGE_SIZE {
            return Err(CliError::usage(format!(
                "invalid --batch {}: {} messages of {body_len} bytes encode to about {encoded} \
                 bytes, over the broker's 4 MiB request limit",
                args.batch, args.batch
            )));
        }
        if args.sharding_key_count.is_some() && args.selector != SelectorArg::Hash {
            return Err(CliError::usage(
                "--sharding-key-count needs --selector hash",
            ));
        }
        if args.selector == SelectorArg::Hash
            && args.sharding_key_count.is_none()
            && args.key.is_none()
        {
            return Err(CliError::usage(
                "--selector hash needs --sharding-key-count K or --key KEY to hash",
            ));
        }
        for (name, value) in [("--tag", &args.tag), ("--key", &args.key)] {
            if let Some(v) = value {
                if v.is_empty() || v.contains(['\u{1}', '\u{2}']) {
                    return Err(CliError::usage(format!("invalid {name} '{v}'")));
                }
            }
        }
        Ok(Self {
            topic: args.topic.clone(),
            tag: args.tag.clone(),
            key: args.key.clone(),
            count: args.count,
            body,
            batch: args.batch as usize,
            rate: args.rate,
            selector: args.selector,
            sharding_key_count: args.sharding_key_count,
        })
    }

    /// The body of message `i`.
    pub(crate) fn body(&self, i: u64) -> Bytes {
        match &self.body {
            BodySpec::Fixed(b) => b.clone(),
            BodySpec::Generated(None) => Bytes::from(format!("message {i}")),
            BodySpec::Generated(Some(size)) => {
                let mut text = format!("message {i} ").into_bytes();
                text.resize(*size, b'.');
                Bytes::from(text)
            }
        }
    }

    /// The sharding key of message `i` (what the hash selector hashes), if any.
    pub(crate) fn sharding_key(&self, i: u64) -> Option<String> {
        match self.sharding_key_count {
            Some(k) => Some(format!("key-{}", i % u64::from(k))),
            None if self.selector == SelectorArg::Hash => self.key.clone(),
            None => None,
        }
    }

    /// The queue selector of message `i`.
    pub(crate) fn selector(&self, i: u64) -> QueueSelector {
        match self.selector {
            SelectorArg::RoundRobin => QueueSelector::RoundRobin,
            SelectorArg::Random => QueueSelector::Random,
            SelectorArg::Hash => QueueSelector::Hash(self.sharding_key(i).unwrap_or_default()),
        }
    }

    /// Message `i` (without ids: the producer adds them).
    pub(crate) fn message(&self, i: u64) -> Message {
        let mut message = Message::new(self.topic.clone(), self.body(i));
        if let Some(tag) = &self.tag {
            message = message.with_tags(tag.clone());
        }
        if let Some(keys) = self.keys(i) {
            message = message.with_keys([keys]);
        }
        message
    }

    /// The KEYS property of message `i`: `--key`, else its sharding key.
    pub(crate) fn keys(&self, i: u64) -> Option<String> {
        self.key.clone().or_else(|| self.sharding_key(i))
    }
}

/// Groups message indexes into sends: runs of up to `batch` consecutive messages, and with
/// sharding keys, runs of one key only (a batch lands on one queue, so mixing keys would break
/// per-key order). The order of indexes within one key is preserved.
pub(crate) fn group_sends(plan: &Plan, indexes: std::ops::Range<u64>) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    let mut open: BTreeMap<Option<String>, Vec<u64>> = BTreeMap::new();
    for i in indexes {
        let key = if plan.sharding_key_count.is_some() {
            plan.sharding_key(i)
        } else {
            None
        };
        let group = open.entry(key.clone()).or_default();
        group.push(i);
        if group.len() >= plan.batch {
            if let Some(full) = open.remove(&key) {
                out.push(full);
            }
        }
    }
    out.extend(open.into_values().filter(|g| !g.is_empty()));
    out
}

/// Runs `produce`.
pub(crate) async fn run(args: ProduceArgs) -> Result<(), CliError> {
    super::init_tool_logging();
    let addrs = args.namesrv.addrs()?;
    let plan = Plan::from_args(&args)?;
    let client = tool_client(&addrs)?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            group: args.group.clone(),
            ..ProducerConfig::default()
        },
    );
    let list = plan.count <= LIST_LIMIT;
    let start = Instant::now();
    let mut last_report = start;
    let (mut sent, mut bytes) = (0u64, 0u64);
    // Plans are made a chunk at a time so a run of millions does not hold them all.
    const CHUNK: u64 = 10_000;
    let mut low = 0;
    while low < plan.count {
        let high = (low + CHUNK).min(plan.count);
        for group in group_sends(&plan, low..high) {
            if let Some(rate) = plan.rate {
                // Beyond what a Duration holds (billions of years at the slowest rate): never.
                match Duration::try_from_secs_f64(sent as f64 / rate)
                    .ok()
                    .and_then(|due| start.checked_add(due))
                {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            }
            let first = group[0];
            let selector = plan.selector(first);
            let messages: Vec<Message> = group.iter().map(|i| plan.message(*i)).collect();
            let size: u64 = messages.iter().map(|m| m.body.len() as u64).sum();
            let fail = |e: ProducerError| match e {
                ProducerError::Client(e) => describe(&e, &addrs),
                other => CliError::runtime(format!(
                    "sending message {first} to topic '{}' failed: {other}",
                    plan.topic
                )),
            };
            if plan.batch == 1 {
                let message = messages
                    .into_iter()
                    .next()
                    .ok_or_else(|| CliError::runtime("empty send"))?;
                let result = producer.send(message, &selector).await.map_err(fail)?;
                if list {
                    print_out(&format!(
                        "{} {} offset={}\n",
                        result.msg_id, result.queue, result.queue_offset
                    ))?;
                }
            } else {
                let result = producer
                    .send_batch(messages, &selector)
                    .await
                    .map_err(fail)?;
                if list {
                    let mut lines = String::new();
                    for (k, id) in result.msg_ids.iter().enumerate() {
                        let _ = writeln!(
                            lines,
                            "{id} {} offset={}",
                            result.queue,
                            result.queue_offset + k as i64
                        );
                    }
                    print_out(&lines)?;
                }
            }
            sent += group.len() as u64;
            bytes += size;
            if !list && last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                // Progress only: a closed stderr must not stop the sends (eprintln! panics).
                let _ = writeln!(
                    std::io::stderr(),
                    "sent {sent}/{} messages ({:.0} msg/s)",
                    plan.count,
                    sent as f64 / start.elapsed().as_secs_f64()
                );
            }
        }
        low = high;
    }
    if !list {
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        print_out(&format!(
            "sent {sent} messages ({bytes} body bytes) to topic {} in {secs:.3} s: {:.0} msg/s, {:.2} MiB/s\n",
            plan.topic,
            sent as f64 / secs,
            bytes as f64 / secs / (1024.0 * 1024.0)
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ProduceArgs,
    }

    fn plan(extra: &[&str]) -> Result<Plan, CliError> {
        let mut argv = vec!["produce", "--namesrv", "127.0.0.1:9876", "--topic", "T"];
        argv.extend_from_slice(extra);
        let w = Wrapper::try_parse_from(argv).map_err(|e| CliError::usage(e.to_string()))?;
        Plan::from_args(&w.args)
    }

    #[test]
    fn generated_bodies_have_the_requested_size() {
        let p = plan(&["--size", "1KiB"]).unwrap();
        let body = p.body(7);
        assert_eq!(body.len(), 1024);
        assert!(body.starts_with(b"message 7 "));
        assert_eq!(plan(&[]).unwrap().body(3), Bytes::from_static(b"message 3"));
        assert_eq!(
            plan(&["--body", "hi"]).unwrap().body(3),
            Bytes::from_static(b"hi")
        );
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for extra in [
            &["--rate", "0"][..],
            &["--rate", "1e-300"],
            &["--rate", "NaN"],
            &["--size", "5MiB"],
            &["--sharding-key-count", "3"],
            &["--selector", "hash"],
            &["--size", "1MiB", "--batch", "8"],
            &["--count", "0"],
            &["--body", "x", "--size", "10"],
            &["--body", ""],
            // 1029 messages of 4,085 bytes encoded (the sharding key is their KEYS): over 4 MiB.
            &[
                "--selector",
                "hash",
                "--sharding-key-count",
                "1",
                "--size",
                "4000",
                "--batch",
                "1029",
            ],
        ] {
            let err = plan(extra).unwrap_err();
            assert!(matches!(err, CliError::Usage(_)), "{extra:?}: {err:?}");
        }
        // 4,074 bytes each without the key: under.
        assert!(plan(&["--size", "4000", "--batch", "1029"]).is_ok());
    }

    #[test]
    fn sharded_batches_never_mix_keys_and_keep_order() {
        let p = plan(&[
            "--selector",
            "hash",
            "--sharding-key-count",
            "3",
            "--batch",
            "2",
            "--count",
            "10",
        ])
        .unwrap();
        let sends = group_sends(&p, 0..10);
        let mut seen: Vec<u64> = Vec::new();
        for send in &sends {
            assert!(send.len() <= 2);
            let key = p.sharding_key(send[0]);
            assert!(send.iter().all(|i| p.sharding_key(*i) == key));
            assert!(send.windows(2).all(|w| w[0] < w[1]));
            seen.extend(send.iter().copied());
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(p.keys(4).as_deref(), Some("key-1"));
    }

    #[test]
    fn unsharded_batches_are_consecutive_runs() {
        let p = plan(&["--batch", "4"]).unwrap();
        assert_eq!(
            group_sends(&p, 0..10),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
    }
}
