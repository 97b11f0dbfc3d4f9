//! The benchmark peer: the same workload as the daemon, through a push consumer built on the
//! `rocketmq-client-rust` crate. Each batch the client hands over is forwarded to the sink as one
//! JSON envelope (the daemon's `json` format, fields the sink reads) with reqwest; 2xx is
//! success, anything else is "reconsume later" (concurrent) or "suspend" (orderly).
//!
//! usage: bench-peer --namesrv ADDR --sink URL [--batch N] [--orderly] --sub TOPIC:GROUP...

use std::sync::Arc;

use rocketmq_client_rust::{
    ClientError, ClientResult, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, ConsumeOrderlyContext, ConsumeOrderlyStatus, DefaultMQPushConsumer,
    MQPushConsumer, MessageListenerConcurrently, MessageListenerOrderly,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

/// Batches in flight per consumer, as the daemon's default `consume_thread_max`.
const CONCURRENCY: usize = 20;

/// The daemon's default cap on requests in flight over all subscriptions
/// (`delivery.max_in_flight`).
const MAX_IN_FLIGHT: usize = 128;

/// The envelope the sink reads, serialised straight from borrowed fields, as a client
/// application would write it: no intermediate JSON tree, no copy of the body.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    topic: &'a str,
    #[serde(rename = "consumerGroup")]
    consumer_group: &'a str,
    messages: Vec<Entry<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    msg_id: &'a str,
    topic: &'a str,
    queue_id: i32,
    broker_name: &'a str,
    queue_offset: i64,
    tags: Option<&'a str>,
    reconsume_times: i32,
    born_timestamp: i64,
    store_timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

struct Forwarder {
    http: reqwest::Client,
    url: String,
    group: String,
    handle: tokio::runtime::Handle,
}

impl Forwarder {
    /// Posts one envelope; true on 2xx. Runs on the client's blocking consume thread.
    fn forward(&self, msgs: &[&MessageExt]) -> bool {
        // Owned per message only where the client's accessors hand out owned values.
        let bodies: Vec<_> = msgs.iter().map(|m| m.body().unwrap_or_default()).collect();
        let tags: Vec<_> = msgs.iter().map(|m| m.get_tags()).collect();
        let messages: Vec<Entry<'_>> = msgs
            .iter()
            .zip(&bodies)
            .zip(&tags)
            .map(|((m, body), tags)| {
                let msg_id = m
                    .properties()
                    .iter()
                    .find(|(k, _)| k.as_str() == "UNIQ_KEY")
                    .map_or_else(|| m.msg_id().as_str(), |(_, v)| v.as_str());
                let text = std::str::from_utf8(body).ok();
                Entry {
                    msg_id,
                    topic: m.topic().as_str(),
                    queue_id: m.queue_id(),
                    broker_name: m.broker_name(),
                    queue_offset: m.queue_offset(),
                    tags: tags.as_ref().map(|t| t.as_str()),
                    reconsume_times: m.reconsume_times(),
                    born_timestamp: m.born_timestamp(),
                    store_timestamp: m.store_timestamp(),
                    body: text,
                    body_base64: text.is_none().then(|| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.encode(body)
                    }),
                }
            })
            .collect();
        let envelope = Envelope {
            topic: msgs.first().map_or("", |m| m.topic().as_str()),
            consumer_group: &self.group,
            messages,
        };
        let Ok(json) = serde_json::to_vec(&envelope) else {
            return false;
        };
        let request = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json)
            .send();
        // The listener is synchronous and runs on a blocking thread: wait for the answer there.
        self.handle
            .block_on(request)
            .is_ok_and(|r| r.status().is_success())
    }
}

impl MessageListenerConcurrently for Forwarder {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        Ok(if self.forward(msgs) {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        } else {
            ConsumeConcurrentlyStatus::ReconsumeLater
        })
    }
}

impl MessageListenerOrderly for Forwarder {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        context: &mut ConsumeOrderlyContext,
    ) -> ClientResult<ConsumeOrderlyStatus> {
        context.set_auto_commit(true);
        Ok(if self.forward(msgs) {
            ConsumeOrderlyStatus::Success
        } else {
            ConsumeOrderlyStatus::SuspendCurrentQueueAMoment
        })
    }
}

struct Args {
    namesrv: String,
    sink: String,
    batch: u32,
    orderly: bool,
    subs: Vec<(String, String)>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        namesrv: String::new(),
        sink: String::new(),
        batch: 1,
        orderly: false,
        subs: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--namesrv" => a.namesrv = val()?,
            "--sink" => a.sink = val()?,
            "--batch" => a.batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--orderly" => a.orderly = true,
            "--sub" => {
                let v = val()?;
                let (t, g) = v.split_once(':').ok_or("--sub TOPIC:GROUP")?;
                a.subs.push((t.to_owned(), g.to_owned()));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.namesrv.is_empty() || a.sink.is_empty() || a.subs.is_empty() {
        return Err("usage: bench-peer --namesrv ADDR --sink URL [--batch N] [--orderly] --sub TOPIC:GROUP...".into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ClientResult<()> {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-peer: {e}");
            std::process::exit(2);
        }
    };
    // The client runs listeners on its metadata-io blocking lane, whose default concurrency is
    // 2 x cores (4 here), one budget for the whole process: raise it to what the daemon allows
    // by default, 20 requests per subscription (Java's consumeThreadMax) and at most 128 in
    // all (`delivery.max_in_flight`), so both consumers get the same concurrency however many
    // subscriptions there are.
    let lane = (CONCURRENCY * args.subs.len()).min(MAX_IN_FLIGHT);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut config = RuntimeConfig::for_parallelism("bench-peer", cores)
        .with_max_blocking_threads(64.max(lane + 16))
        .map_err(|e| ClientError::internal("runtime config", e))?;
    config.blocking_lane_policies.metadata_io.max_concurrency = lane;
    config.blocking_lane_policies.metadata_io.max_queue_depth = 1024;
    let owner = RuntimeOwner::plan(config)
        .map_err(|e| ClientError::internal("plan runtime", e))?
        .build()
        .map_err(|e| ClientError::internal("build runtime", e))?;
    // At warn, as the daemon logs in the bench: the library's filter comes from its own
    // configuration (default `info`), not from RUST_LOG.
    let mut telemetry_config = rocketmq_observability::TelemetryBootstrapConfig::default();
    telemetry_config.logging.filter = "warn".to_owned();
    let telemetry = rocketmq_observability::install_global(&telemetry_config)
    .map_err(|e| ClientError::internal("telemetry", e))?;
    let runtime: Arc<ClientRuntime> = ClientRuntime::try_new(
        owner.root_context().component("client"),
        ClientRuntimeConfig::default(),
        telemetry.handle(),
    )?;
    let http = reqwest::Client::new();
    let mut consumers = Vec::new();
    for (topic, group) in &args.subs {
        let mut consumer = DefaultMQPushConsumer::builder(Arc::clone(&runtime))
            .consumer_group(group.clone())
            .name_server_addr(args.namesrv.clone())
            .consume_message_batch_max_size(args.batch)
            .consume_thread_min(CONCURRENCY as u32)
            .consume_thread_max(CONCURRENCY as u32)
            .pull_batch_size(args.batch.max(32))
            .build();
        consumer.subscribe(topic.as_str(), "*").await?;
        consumer.set_consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset);
        let forwarder = Forwarder {
            http: http.clone(),
            url: args.sink.clone(),
            group: group.clone(),
            handle: tokio::runtime::Handle::current(),
        };
        if args.orderly {
            consumer.register_message_listener_orderly(forwarder);
        } else {
            consumer.register_message_listener_concurrently(forwarder);
        }
        consumer.start().await?;
        consumers.push(consumer);
    }
    eprintln!("bench-peer: {} consumer(s) started", consumers.len());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ClientError::internal("signal", e))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for c in &mut consumers {
        c.shutdown().await;
    }
    Ok(())
}
