//! The broker moves the pull offset back while messages are held (PULL_OFFSET_MOVED).
//!
//! A real broker answers PULL_OFFSET_MOVED when a queue no longer holds the offset asked for,
//! e.g. after it was truncated or recreated, or after a failover to a replica that is behind.
//! It cannot be made to do that in the middle of a test, so an in-process proxy (tests/support)
//! stands between the daemon (the real binary) and the real broker: it relays every frame both ways, records
//! every offset the daemon commits, and answers the one pull that asks past offset `MOVE_AT`
//! itself, moving the queue back to `MOVED_TO` while the endpoint still holds the messages pulled
//! before.
//!
//! At-least-once across the move: messages at or above the moved offset belong to the moved
//! queue, so no committed offset may pass one of them before the endpoint accepted it after
//! the move. Before the fix, the held messages' commit (the process queue's highest offset + 1)
//! overwrote the moved offset as soon as they finished. Everything pulled before the move is
//! still delivered, and the committed offset ends at the end of the queue.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rocketmq_webhook::remoting::{ExtFields, RemotingCommand, RequestCode, ResponseCode};
use tokio::time::{sleep, Instant};

use support::daemon::{Daemon, Launch};
use support::http::{Receiver, Reply, Request};
use support::namesrv::listen;
use support::proxy::{encode, Verdict};
use support::{unique, RocketMq};

/// Messages in the queue.
const MESSAGES: i64 = 64;
/// The first pull asking for this offset or later is answered PULL_OFFSET_MOVED.
const MOVE_AT: i64 = 32;
/// ... moving the queue back to this offset.
const MOVED_TO: i64 = 8;
/// The endpoint holds every request this long, so the messages pulled before the move are
/// still in flight when the moving answer arrives.
const HOLD: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the proxy and the endpoint saw.
#[derive(Default)]
struct Seen {
    /// When the proxy answered the pull with PULL_OFFSET_MOVED.
    moved_at: Option<Instant>,
    /// Committed offsets of the queue (pull `commitOffset` and UPDATE_CONSUMER_OFFSET), with
    /// when the proxy saw them.
    commits: Vec<(Instant, i64)>,
    /// Queue offset -> when each 200 for it was sent (the request's arrival plus the hold).
    accepted: HashMap<i64, Vec<Instant>>,
}

impl Seen {
    /// When the message of the moved queue at `offset` was accepted. Below `MOVE_AT` the first
    /// delivery is the one pulled before the move and the second the moved queue's (the proxy
    /// relays the same broker, so the bodies are alike); above it there is only the latter.
    /// The endpoint accepts everything, so nothing is delivered more often than that.
    fn accepted_in_moved_queue(&self, offset: i64) -> Option<Instant> {
        let nth = usize::from(offset < MOVE_AT);
        self.accepted.get(&offset)?.get(nth).copied()
    }
}

fn ext_i64(command: &RemotingCommand, key: &str) -> Option<i64> {
    command.ext_fields.get(key)?.parse().ok()
}

/// Looks at one request of the daemon: records commits of `topic`, and answers the pull to be
/// moved in the broker's place.
fn intercept(command: &RemotingCommand, topic: &str, seen: &Mutex<Seen>) -> Verdict {
    if command.ext_fields.get("topic") != Some(topic) {
        return Verdict::Relay;
    }
    let mut seen = lock(seen);
    if command.code == i32::from(RequestCode::PullMessage) {
        // Bit 0 of the pull's sysFlag: the commitOffset field carries a commit.
        let commits = ext_i64(command, "sysFlag").is_some_and(|f| f & 1 != 0);
        if let (true, Some(offset)) = (commits, ext_i64(command, "commitOffset")) {
            seen.commits.push((Instant::now(), offset));
        }
        let asked = ext_i64(command, "queueOffset").unwrap_or(0);
        if asked >= MOVE_AT && seen.moved_at.is_none() {
            seen.moved_at = Some(Instant::now());
            let ext = ExtFields::new()
                .with("nextBeginOffset", MOVED_TO)
                .with("minOffset", 0)
                .with("maxOffset", MESSAGES)
                .with("suggestWhichBrokerId", 0);
            let answer = RemotingCommand::response_to(command, ResponseCode::PullOffsetMoved, None)
                .with_ext_fields(ext);
            return Verdict::Answer(encode(&answer));
        }
    } else if command.code == i32::from(RequestCode::UpdateConsumerOffset) {
        if let Some(offset) = ext_i64(command, "commitOffset") {
            seen.commits.push((Instant::now(), offset));
        }
    }
    Verdict::Relay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_offset_is_not_committed_past_before_the_moved_queue_is_consumed() {
    moved_offset("CONCURRENT", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_queue_whose_offset_moved_consumes_the_moved_queue() {
    // One request carries the whole pull, so the held batch is in flight at the move.
    moved_offset("ORDERLY", 32).await;
}

async fn moved_offset(mode: &str, batch: usize) {
    let mq = RocketMq::start().await;
    let topic = unique("T_moved");
    let group = unique("G_moved");
    mq.create_topic(&topic, 1).await;
    mq.produce(&topic, MESSAGES as usize, "moved", None).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let (proxy_listener, proxy_addr) = listen().await;
    {
        let (topic, seen) = (topic.clone(), Arc::clone(&seen));
        tokio::spawn(support::proxy::serve(
            proxy_listener,
            mq.broker_addr(),
            move |command: &RemotingCommand| intercept(command, &topic, &seen),
        ));
    }
    let namesrv_addr = support::namesrv::through_proxy(mq.client(), proxy_addr).await;

    let receiver = Receiver::start().await;
    {
        let seen = Arc::clone(&seen);
        receiver.respond(move |r: &Request| {
            // The 200 leaves after the hold: that is when the messages count as accepted.
            let accepted = Instant::now() + HOLD;
            let mut seen = lock(&seen);
            for m in r.json()["messages"].as_array().into_iter().flatten() {
                let offset = m["queueOffset"].as_i64().unwrap_or(-1);
                seen.accepted.entry(offset).or_default().push(accepted);
            }
            Reply::ok().with_delay(HOLD)
        });
    }
    let yaml = format!(
        "namesrv_addr: \"{namesrv_addr}\"\n\
         client:\n  rebalance_interval: 2s\n  heartbeat_interval: 3s\n  poll_name_server_interval: 5s\n\
         subscriptions:\n  - group: \"{group}\"\n    topic: \"{topic}\"\n    consume_from: FIRST_OFFSET\n    persist_interval: 500ms\n\
         \x20   consume_mode: {mode}\n    consume_batch_size: {batch}\n\
         \x20   webhook:\n      url: \"{}\"\n",
        receiver.url("/hook")
    );
    let daemon = Daemon::start(&Launch::yaml(yaml)).await;

    // The queue is consumed to its end after the move, and that is committed.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (moved, done) = {
            let seen = lock(&seen);
            let done = (0..MOVE_AT).all(|o| seen.accepted.contains_key(&o))
                && (MOVED_TO..MESSAGES).all(|o| seen.accepted_in_moved_queue(o).is_some())
                && seen
                    .commits
                    .iter()
                    .any(|&(_, c)| c == MESSAGES && seen.moved_at.is_some());
            (seen.moved_at.is_some(), done)
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{mode}: moved={moved}: the queue was not consumed and committed to its end in time\n{}",
            daemon.output_tail(40)
        );
        sleep(Duration::from_millis(200)).await;
    }

    let seen = lock(&seen);
    let moved_at = seen.moved_at.unwrap_or_else(|| panic!("never moved"));
    // No commit after the move passed a message of the moved queue the endpoint had not yet
    // accepted.
    for &(at, commit) in seen.commits.iter().filter(|(at, _)| *at > moved_at) {
        if let Some(missing) =
            (MOVED_TO..commit).find(|&o| seen.accepted_in_moved_queue(o).is_none_or(|acc| acc > at))
        {
            panic!(
                "{mode}: offset {commit} committed {:?} after the move, before offset {missing} was \
                 accepted (LOSS on a restart)\ncommits after the move: {:?}\n{}",
                at - moved_at,
                seen.commits
                    .iter()
                    .filter(|(t, _)| *t > moved_at)
                    .map(|(t, c)| (t.duration_since(moved_at).as_millis(), *c))
                    .collect::<Vec<_>>(),
                daemon.output_tail(30)
            );
        }
    }
    let output = daemon.output();
    assert!(
        output.contains("moved the pull offset"),
        "the daemon did not log the move:\n{}",
        daemon.output_tail(30)
    );
    assert!(
        !output.contains("panicked"),
        "the daemon panicked:\n{output}"
    );
}
