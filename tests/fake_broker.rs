//! Fault scenario 5: a hostile broker next to a real one.
//!
//! An in-process fake name server answers the daemon's route requests with the real route of
//! the topic plus a second broker, `broker-fake`, whose four queues live on an in-process fake
//! broker. The fake answers every request it gets wrongly, cycling through: a truncated frame
//! then close, an absurd length prefix, a length just under the daemon's frame limit followed
//! by silence, a JSON header that is not JSON, a response with a huge ext-field map, a response
//! with the wrong opaque, half a frame then silence, and random bytes.
//!
//! The daemon (the real binary) must keep consuming the real broker's queues (every produced
//! message accepted by the receiver), keep reconnecting to the fake broker (each misbehaviour is
//! met on a new connection), never panic, and keep its memory bounded. The summary line has the
//! same format as tests/faults.rs.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rand::Rng as _;
use rocketmq_webhook::client::producer::QueueSelector;
use rocketmq_webhook::remoting::body::route::{
    BrokerData, QueueData, TopicRouteData, PERM_READ, PERM_WRITE,
};
use rocketmq_webhook::remoting::command::FLAG_RESPONSE;
use rocketmq_webhook::remoting::message::Message;
use rocketmq_webhook::remoting::{
    ExtFields, FrameDecoder, RemotingCommand, ResponseCode, SerializeType,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

use support::daemon::{Daemon, Launch};
use support::http::{Receiver, Reply, Request};
use support::namesrv::listen;
use support::{unique, RocketMq};

const FAKE_BROKER_NAME: &str = "broker-fake";
/// The daemon's frame limit (remoting::frame::DEFAULT_MAX_FRAME_LEN).
const CLIENT_MAX_FRAME: i32 = 16 * 1024 * 1024;
/// The daemon's peak RSS must stay below this (KiB): a few 16 MiB frame buffers at most.
const RSS_LIMIT_KIB: u64 = 256 * 1024;

/// One way of answering wrongly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Misbehaviour {
    TruncatedFrame,
    OversizedLength,
    LengthAtLimitThenSilence,
    GarbageJson,
    HugeExtFields,
    WrongOpaque,
    StopMidFrame,
    RandomBytes,
}

const ALL: [Misbehaviour; 8] = [
    Misbehaviour::TruncatedFrame,
    Misbehaviour::OversizedLength,
    Misbehaviour::LengthAtLimitThenSilence,
    Misbehaviour::GarbageJson,
    Misbehaviour::HugeExtFields,
    Misbehaviour::WrongOpaque,
    Misbehaviour::StopMidFrame,
    Misbehaviour::RandomBytes,
];

fn full() -> bool {
    std::env::var("FAULTS_FULL").is_ok_and(|v| v == "1")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === the fake broker ===

/// What the fake broker did.
#[derive(Debug, Default)]
struct FakeStats {
    connections: AtomicUsize,
    requests: AtomicU64,
    used: Mutex<HashSet<&'static str>>,
}

/// Serves hostile answers on `listener` until the task is dropped.
async fn fake_broker(listener: TcpListener, stats: Arc<FakeStats>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let n = stats.connections.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::clone(&stats);
        connections.spawn(misbehave(socket, ALL[n % ALL.len()], stats));
    }
}

/// Reads one request from `socket`, answers it the `how` way, and ends the connection (or
/// leaves it silent for a while).
async fn misbehave(mut socket: TcpStream, how: Misbehaviour, stats: Arc<FakeStats>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    lock(&stats.used).insert(name_of(how));
    let mut out = BytesMut::new();
    // How long a silent connection stays open: longer than the daemon's 2 s request timeout.
    let silence = if full() {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(4)
    };
    match how {
        Misbehaviour::TruncatedFrame => {
            let full_frame = response(&request, ExtFields::new());
            out.extend_from_slice(&full_frame[..full_frame.len() / 2]);
            let _ = socket.write_all(&out).await;
            // Close: the frame never completes.
        }
        Misbehaviour::OversizedLength => {
            out.put_i32(i32::MAX);
            out.put_slice(b"\x01\x00\x00\x10not a frame at all");
            let _ = socket.write_all(&out).await;
            sleep(Duration::from_secs(2)).await;
        }
        Misbehaviour::LengthAtLimitThenSilence => {
            out.put_i32(CLIENT_MAX_FRAME);
            out.put_u32(0x0000_0010);
            out.put_slice(&[b'{'; 1024]);
            let _ = socket.write_all(&out).await;
            sleep(silence).await;
        }
        Misbehaviour::GarbageJson => {
            let header = b"{\"code\":0,\"opaque\":not-json,,,\"flag\":1";
            out.put_i32(4 + header.len() as i32);
            out.put_u32(header.len() as u32);
            out.put_slice(header);
            let _ = socket.write_all(&out).await;
            sleep(Duration::from_secs(2)).await;
        }
        Misbehaviour::HugeExtFields => {
            let mut ext = ExtFields::new();
            for i in 0..100_000 {
                ext.insert(format!("key{i}"), "v".repeat(16));
            }
            let frame = response(&request, ext);
            let _ = socket.write_all(&frame).await;
            sleep(Duration::from_secs(2)).await;
        }
        Misbehaviour::WrongOpaque => {
            let mut cmd = RemotingCommand::response_to(&request, ResponseCode::Success, None);
            cmd.opaque = request.opaque.wrapping_add(7777);
            cmd.flag = FLAG_RESPONSE;
            let _ = cmd.encode(SerializeType::Json, &mut out);
            let _ = socket.write_all(&out).await;
            sleep(silence).await;
        }
        Misbehaviour::StopMidFrame => {
            let frame = response(&request, ExtFields::new().with("offset", 0));
            let _ = socket.write_all(&frame[..frame.len() - 3]).await;
            sleep(silence).await;
        }
        Misbehaviour::RandomBytes => {
            let junk: Vec<u8> = (0..4096).map(|_| rand::rng().random()).collect();
            let _ = socket.write_all(&junk).await;
            sleep(Duration::from_secs(2)).await;
        }
    }
}

fn name_of(how: Misbehaviour) -> &'static str {
    match how {
        Misbehaviour::TruncatedFrame => "truncated_frame",
        Misbehaviour::OversizedLength => "oversized_length",
        Misbehaviour::LengthAtLimitThenSilence => "length_at_limit_then_silence",
        Misbehaviour::GarbageJson => "garbage_json",
        Misbehaviour::HugeExtFields => "huge_ext_fields",
        Misbehaviour::WrongOpaque => "wrong_opaque",
        Misbehaviour::StopMidFrame => "stop_mid_frame",
        Misbehaviour::RandomBytes => "random_bytes",
    }
}

/// A SUCCESS response frame to `request` with `ext`.
fn response(request: &RemotingCommand, ext: ExtFields) -> Vec<u8> {
    let cmd =
        RemotingCommand::response_to(request, ResponseCode::Success, None).with_ext_fields(ext);
    let mut out = BytesMut::new();
    cmd.encode(SerializeType::Json, &mut out)
        .unwrap_or_else(|e| panic!("encode a fake response: {e}"));
    out.to_vec()
}

/// Reads one whole request frame (None when the peer closes or sends garbage).
async fn read_request(socket: &mut TcpStream) -> Option<RemotingCommand> {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Ok(Some(frame)) = decoder.decode(&mut buf) {
            return RemotingCommand::decode(frame).ok();
        }
        if socket.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    }
}

// === the fake name server ===

/// The real route, plus the fake broker for `topic`.
fn with_fake_broker(topic: &str, fake_addr: &str, asked: &str, route: &mut TopicRouteData) {
    if asked != topic {
        return;
    }
    let cluster = route
        .broker_datas
        .first()
        .map(|b| b.cluster.clone())
        .unwrap_or_default();
    route.broker_datas.push(BrokerData {
        cluster,
        broker_name: FAKE_BROKER_NAME.to_owned(),
        broker_addrs: [(0, fake_addr.to_owned())].into_iter().collect(),
        zone_name: None,
        enable_acting_master: false,
    });
    route.queue_datas.push(QueueData {
        broker_name: FAKE_BROKER_NAME.to_owned(),
        read_queue_nums: 4,
        write_queue_nums: 4,
        perm: PERM_READ | PERM_WRITE,
        topic_sys_flag: 0,
    });
}

// === the scenario ===

fn peak_rss_kib(daemon: &Daemon) -> u64 {
    let needle = format!("ROCKETMQ_ADMIN_LISTEN={}", daemon.admin());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path().join("exe")).is_ok_and(|exe| {
                exe.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("rocketmq-webhook"))
            }) && std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
        })
        .find_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_broker_does_not_stop_the_real_one() {
    let name = "fake_broker";
    let run_for = if full() {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(15)
    };
    let mq = RocketMq::start().await;
    let topic = unique("T_fake");
    let group = unique("G_fake");
    mq.create_topic(&topic, 4).await;

    let stats = Arc::new(FakeStats::default());
    let (broker_listener, fake_broker_addr) = listen().await;
    let _broker = tokio::spawn(fake_broker(broker_listener, Arc::clone(&stats)));
    let (namesrv_listener, fake_namesrv_addr) = listen().await;
    let _namesrv = {
        let (topic, fake_addr) = (topic.clone(), fake_broker_addr.clone());
        tokio::spawn(support::namesrv::serve(
            namesrv_listener,
            mq.client(),
            move |asked: &str, route: &mut TopicRouteData| {
                with_fake_broker(&topic, &fake_addr, asked, route);
            },
        ))
    };

    let receiver = Receiver::start().await;
    let accepted: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let accepted = Arc::clone(&accepted);
        receiver.respond(move |r: &Request| {
            if let Ok(envelope) = serde_json::from_slice::<Value>(&r.body) {
                let mut out = lock(&accepted);
                for m in envelope["messages"].as_array().into_iter().flatten() {
                    out.push(m["msgId"].as_str().unwrap_or_default().to_owned());
                }
            }
            Reply::ok()
        });
    }
    let yaml = format!(
        "namesrv_addr: \"{fake_namesrv_addr}\"\n\
         client:\n  rebalance_interval: 2s\n  heartbeat_interval: 3s\n  poll_name_server_interval: 5s\n  rpc_timeout: 2s\n\
         subscriptions:\n  - group: \"{group}\"\n    topic: \"{topic}\"\n    consume_from: FIRST_OFFSET\n    persist_interval: 1s\n\
         \x20   webhook:\n      url: \"{}\"\n",
        receiver.url("/hook")
    );
    let daemon = Daemon::start(&Launch::yaml(yaml)).await;

    // Produce to the real broker only (the producer uses the real name server) while the fake
    // one misbehaves, until every misbehaviour was met on a connection of its own.
    let producer = mq.producer();
    let mut produced = Vec::new();
    let started = Instant::now();
    let mut rss = 0;
    let deadline = started + run_for + Duration::from_secs(60);
    let mut seq = 0;
    loop {
        let batch: Vec<Message> = (0..16)
            .map(|i| Message::new(topic.as_str(), format!("real-{}", seq + i)))
            .collect();
        seq += 16;
        match producer.send_batch(batch, &QueueSelector::RoundRobin).await {
            Ok(r) => produced.extend(r.msg_ids),
            Err(e) => panic!("{name}: the real broker refused a batch: {e}"),
        }
        rss = rss.max(peak_rss_kib(&daemon));
        let every_mode = lock(&stats.used).len() == ALL.len();
        if started.elapsed() >= run_for && every_mode {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: after {:?} the fake broker saw {} connections and only {:?}\n{}",
            started.elapsed(),
            stats.connections.load(Ordering::Relaxed),
            lock(&stats.used),
            daemon.output_tail(40)
        );
        sleep(Duration::from_millis(100)).await;
    }

    // Everything produced to the real broker arrives.
    let wait_until = Instant::now() + Duration::from_secs(60);
    loop {
        let got: HashSet<String> = lock(&accepted).iter().cloned().collect();
        let missing = produced.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < wait_until,
            "{name}: {missing} of {} messages of the real broker never arrived (LOSS)\n{}",
            produced.len(),
            daemon.output_tail(60)
        );
        sleep(Duration::from_millis(250)).await;
    }
    rss = rss.max(peak_rss_kib(&daemon));
    let dlq = mq.dlq_count(&group).await;
    let all = lock(&accepted).clone();
    let produced_set: HashSet<&String> = produced.iter().collect();
    let delivered = all
        .iter()
        .filter(|id| produced_set.contains(id))
        .collect::<HashSet<_>>()
        .len();
    let real_deliveries = all.iter().filter(|id| produced_set.contains(id)).count();
    let connections = stats.connections.load(Ordering::Relaxed);
    println!(
        "scenario={name} produced={} delivered={delivered} duplicated={} lost={} dlq={dlq} max_rss_kib={rss}",
        produced.len(),
        real_deliveries - delivered,
        produced.len() - delivered
    );
    println!(
        "detail scenario={name} fake_connections={connections} fake_requests={} misbehaviours={}",
        stats.requests.load(Ordering::Relaxed),
        ALL.len()
    );
    let output = daemon.output();
    assert!(
        !output.contains("panicked"),
        "{name}: the daemon panicked:\n{output}"
    );
    // It said what went wrong, naming the broker.
    assert!(
        output.contains(&fake_broker_addr) || output.contains(FAKE_BROKER_NAME),
        "{name}: the daemon never logged a problem with the fake broker:\n{}",
        daemon.output_tail(40)
    );
    // The daemon is still serving: its admin server answers and its status is sane.
    let status = daemon.status().await;
    assert_eq!(
        status["subscriptions"][0]["topic"],
        Value::from(topic.clone()),
        "{status}"
    );
    assert!(
        connections >= ALL.len(),
        "{name}: the daemon reconnected only {connections} times"
    );
    assert_eq!(dlq, 0, "{name}: nothing may reach the DLQ");
    assert!(rss > 0, "{name}: the daemon's peak RSS could not be read");
    assert!(
        rss < RSS_LIMIT_KIB,
        "{name}: peak RSS {rss} KiB is above {RSS_LIMIT_KIB} KiB"
    );
}
