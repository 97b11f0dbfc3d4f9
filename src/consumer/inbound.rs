//! Requests brokers send to this client (rocketmq-remoting.md section 5), answered by the
//! engine: group changes trigger a rebalance, offset resets go to the rebalancer, running info
//! and status come from the engine's state, consume-directly runs the handler once.
//!
//! The connection task hands each request to a [`Forwarder`], which passes it over a bounded
//! channel to the engine's inbound task and waits for the answer (a oneway request has none to
//! wait for); the connection is never blocked by engine work. The inbound task answers the
//! quick requests itself, in order, and runs consume-directly (an endpoint call, seconds) in
//! tasks of its own, a few at a time, so a slow endpoint never holds up a rebalance notice or
//! an offset reset behind it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::remoting::body::consume_directly::{ConsumeMessageDirectlyResult, ConsumeResult};
use crate::remoting::body::offset_table::write_offset_table;
use crate::remoting::body::running_info::{ConsumeStatus, ConsumerRunningInfo, ProcessQueueInfo};
use crate::remoting::command::RemotingCommand;
use crate::remoting::rpc::{group_not_found_response, not_supported_response, BrokerRequest};
use crate::remoting::{RequestCode, ResponseCode};

use super::engine::{lock, now_millis, Shared};
use super::handler::{Batch, ConsumeMode, Handler, Outcome};

/// One request from a broker and the way back to its connection.
#[derive(Debug)]
pub(crate) struct BrokerEvent {
    pub(crate) from: String,
    pub(crate) request: RemotingCommand,
    pub(crate) reply: oneshot::Sender<Option<RemotingCommand>>,
}

/// Passes broker requests from connection tasks to the engine.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    tx: mpsc::Sender<BrokerEvent>,
}

pub(crate) fn forwarder(tx: mpsc::Sender<BrokerEvent>) -> Arc<Forwarder> {
    Arc::new(Forwarder { tx })
}

impl Forwarder {
    /// Forwards `request` and waits for the engine's answer; a oneway request has none to wait for.
    pub(crate) async fn forward(
        &self,
        from: String,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let (reply, answer) = oneshot::channel();
        // A full channel means the engine is far behind (its inbound task answers quick requests
        // only). The request is dropped: a request with an answer times out at the broker; a
        // oneway one (membership notice, offset reset) is lost, hence the warning.
        let code = request.code;
        let oneway = request.is_oneway();
        let sent = self.tx.try_send(BrokerEvent {
            from: from.clone(),
            request,
            reply,
        });
        match sent {
            // Nothing to wait for: the engine answers oneway requests with nothing, and waiting
            // would hold one of the connection's inbound slots while the engine is busy.
            Ok(()) if oneway => return None,
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(broker = %from, code, "Broker request dropped: too many waiting.");
                return None;
            }
            // The engine is shutting down (its inbound task ends first, while the queues
            // drain): not a backlog worth a warning.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                debug!(broker = %from, code, "Broker request dropped: the consumer is stopping.");
                return None;
            }
        }
        tokio::time::timeout(ANSWER_WAIT, answer).await.ok()?.ok()?
    }
}

/// How long the connection waits for the engine's answer to a broker request. Java brokers
/// wait 10 s for a client (`Broker2Client.callClient`): later answers go nowhere, and a
/// consume-directly past that held one of its few places for a minute, so an admin who tried
/// again got SYSTEM_BUSY.
const ANSWER_WAIT: Duration = Duration::from_secs(15);

/// Consume-directly requests run at once at most; more are answered SYSTEM_BUSY (an admin's
/// tool, not traffic: a handful is plenty, and each holds a webhook request).
const MAX_DIRECT: usize = 4;

/// The engine side: answers broker requests until `cancel`. Consume-directly runs in `direct`,
/// owned here: cancelling ends them with the task, and a panic in one ends only that one (its
/// broker gets no answer and times out).
pub(crate) async fn run<H: Handler>(
    shared: Arc<Shared<H>>,
    mut events: mpsc::Receiver<BrokerEvent>,
    cancel: CancellationToken,
) {
    let mut direct = JoinSet::new();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            Some(done) = direct.join_next(), if !direct.is_empty() => {
                if let Err(e) = done {
                    warn!(error = %e, "Consume-directly ended abnormally.");
                }
                continue;
            }
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        if event.request.code == i32::from(RequestCode::ConsumeMessageDirectly) {
            if direct.len() >= MAX_DIRECT {
                let busy = RemotingCommand::response_to(
                    &event.request,
                    ResponseCode::SystemBusy,
                    Some(format!(
                        "{MAX_DIRECT} direct consumptions already in progress"
                    )),
                );
                let _ = event.reply.send(Some(busy));
                continue;
            }
            let shared = Arc::clone(&shared);
            direct.spawn(async move {
                let answer = answer(&shared, &event.from, &event.request).await;
                let _ = event.reply.send(answer);
            });
            continue;
        }
        let answer = answer(&shared, &event.from, &event.request).await;
        let _ = event.reply.send(answer);
    }
}

async fn answer<H: Handler>(
    shared: &Arc<Shared<H>>,
    from: &str,
    request: &RemotingCommand,
) -> Option<RemotingCommand> {
    let parsed = match BrokerRequest::parse(request) {
        Ok(p) => p,
        Err(e) => {
            warn!(broker = %from, error = %e, "Malformed request from broker.");
            return Some(RemotingCommand::response_to(
                request,
                ResponseCode::SystemError,
                Some(e.to_string()),
            ));
        }
    };
    let group = shared.config.group.as_str();
    match parsed {
        BrokerRequest::NotifyConsumerIdsChanged { consumer_group } => {
            if consumer_group == group {
                info!(%group, broker = %from, "Group membership changed; rebalancing.");
                shared.rebalance_now.notify_one();
            }
            None
        }
        BrokerRequest::ResetOffset {
            topic,
            group: g,
            offsets,
            ..
        } => {
            if g == group && (topic == shared.config.topic || topic == shared.config.retry_topic())
            {
                // A negative offset is no position: stored, it would read as "none" and the
                // queue would restart from `consume_from` (LAST_OFFSET: its end).
                let (valid, invalid): (Vec<_>, Vec<_>) =
                    offsets.into_iter().partition(|(_, offset)| *offset >= 0);
                for (mq, offset) in &invalid {
                    warn!(%group, broker = %from, queue = %mq, offset, "Offset reset to a negative offset ignored.");
                }
                shared.resets.add(valid);
            }
            None
        }
        BrokerRequest::ConsumerStatus { topic, group: g } => {
            if g != group {
                return Some(group_not_found_response(request, &g));
            }
            let table: Vec<_> = shared
                .offsets
                .snapshot()
                .into_iter()
                .filter(|(mq, _)| mq.topic == topic)
                .collect();
            let body = format!(
                "{{\"messageQueueTable\":{},\"consumerTable\":{{}}}}",
                inner_table(&write_offset_table(&table, false))
            );
            Some(
                RemotingCommand::response_to(request, ResponseCode::Success, None)
                    .with_body(body.into_bytes()),
            )
        }
        BrokerRequest::RunningInfo { consumer_group, .. } => {
            if consumer_group != group {
                return Some(group_not_found_response(request, &consumer_group));
            }
            let info = running_info(shared);
            Some(
                RemotingCommand::response_to(request, ResponseCode::Success, None)
                    .with_body(info.to_json()),
            )
        }
        BrokerRequest::ConsumeDirectly {
            consumer_group,
            mut message,
            broker_name,
            ..
        } => {
            if consumer_group != group {
                return Some(group_not_found_response(request, &consumer_group));
            }
            if let Some(why) = message.undeliverable() {
                // The endpoint would get the stored bytes as if they were the payload.
                return Some(RemotingCommand::response_to(
                    request,
                    ResponseCode::SystemError,
                    Some(format!(
                        "the message cannot be delivered: {why} (sysFlag {:#x})",
                        message.sys_flag
                    )),
                ));
            }
            shared.restore_topic(&mut message);
            let batch = Batch {
                group: shared.config.group.clone(),
                topic: shared.config.topic.clone(),
                queue: crate::remoting::MessageQueue::new(
                    message.topic.clone(),
                    broker_name.unwrap_or_default(),
                    message.queue_id,
                ),
                mode: shared.config.mode,
                messages: vec![message],
            };
            let started = Instant::now();
            // No longer than anyone waits for the answer: a delivery past that would hold one
            // of the few places for consume-directly (up to `consume_timeout`, 15 min) for an
            // answer that goes nowhere.
            // A second short of it, so that an answer at the limit still finds its waiter.
            let within = shared
                .config
                .consume_timeout
                .min(ANSWER_WAIT.saturating_sub(Duration::from_secs(1)));
            let outcome = tokio::time::timeout(within, shared.handler.handle(&batch))
                .await
                .ok()
                .and_then(|o| o.first().copied());
            let consume_result = match outcome {
                Some(Outcome::Success) => ConsumeResult::Success,
                Some(Outcome::Retry { .. } | Outcome::Later { .. }) => ConsumeResult::Later,
                Some(Outcome::Drop) => ConsumeResult::Rollback,
                None => ConsumeResult::ThrowException,
            };
            debug!(%group, ?consume_result, "Consumed a message directly for the broker.");
            let result = ConsumeMessageDirectlyResult {
                order: shared.config.mode == ConsumeMode::Orderly,
                auto_commit: true,
                consume_result,
                remark: None,
                spent_time_mills: started.elapsed().as_millis() as i64,
            };
            Some(
                RemotingCommand::response_to(request, ResponseCode::Success, None)
                    .with_body(result.to_json()),
            )
        }
        // Java's remark names the code's number; `code` would print its name for a known one.
        BrokerRequest::Other { .. } => {
            (!request.is_oneway()).then(|| not_supported_response(request))
        }
    }
}

/// `write_offset_table` writes `{"offsetTable":{...}}`; the status body wants the inner map.
fn inner_table(wrapped: &str) -> String {
    let trimmed = wrapped.trim();
    match (trimmed.find(':'), trimmed.rfind('}')) {
        (Some(colon), Some(end)) if end > colon => trimmed[colon + 1..end].trim().to_owned(),
        _ => "{}".to_owned(),
    }
}

fn running_info<H: Handler>(shared: &Arc<Shared<H>>) -> ConsumerRunningInfo {
    let cfg = &shared.config;
    let snapshot = shared.stats.snapshot();
    let mut info = ConsumerRunningInfo::default();
    info.properties
        .insert("consumerGroup".into(), cfg.group.clone());
    info.properties
        .insert("PROP_CONSUME_TYPE".into(), "CONSUME_PASSIVELY".into());
    info.properties.insert(
        "PROP_CONSUMEORDERLY".into(),
        (cfg.mode == ConsumeMode::Orderly).to_string(),
    );
    info.properties.insert(
        "PROP_THREADPOOL_CORE_SIZE".into(),
        cfg.consume_concurrency.to_string(),
    );
    info.properties.insert(
        "PROP_CLIENT_VERSION".into(),
        format!("rocketmq-webhook {}", env!("CARGO_PKG_VERSION")),
    );
    info.properties.insert(
        "PROP_CONSUMER_START_TIMESTAMP".into(),
        (now_millis() - snapshot.uptime_secs as i64 * 1000).to_string(),
    );
    info.properties.insert(
        "consumeBatchSize".into(),
        cfg.consume_batch_size.to_string(),
    );
    info.properties
        .insert("pullBatchSize".into(), cfg.pull_batch_size.to_string());
    info.properties.insert(
        "maxReconsumeTimes".into(),
        cfg.max_reconsume_times.to_string(),
    );
    info.subscription_set = cfg
        .topics()
        .iter()
        .map(|t| shared.subscription_data(t))
        .collect();
    // What the stats hold, near Java's figures: the subscription's (Java's are per topic, so
    // the main topic's entry carries them), the mean batch time since start (Java: the last
    // minute), and the last 10 s of finished messages split by the success rate since start.
    // No pull figures are kept; the failed count of the last hour is not either.
    info.status_table.insert(
        cfg.topic.clone(),
        ConsumeStatus {
            consume_rt: snapshot.latency_avg_ms,
            consume_ok_tps: snapshot.consume_tps * snapshot.success_rate,
            consume_failed_tps: snapshot.consume_tps * (1.0 - snapshot.success_rate),
            ..ConsumeStatus::default()
        },
    );
    // The stats are copied out first, so their lock is not taken under the locks' one.
    let queues = shared.stats.queues();
    let now = now_millis();
    let locks = lock(&shared.locks);
    for (mq, q) in queues {
        let last_lock_timestamp = locks.get(&mq).map_or(0, |held| {
            let age = i64::try_from(held.granted_at.elapsed().as_millis()).unwrap_or(i64::MAX);
            now.saturating_sub(age)
        });
        info.mq_table.insert(
            mq,
            ProcessQueueInfo {
                commit_offset: q.committed_offset.unwrap_or(-1),
                cached_msg_min_offset: q.cached_range.map_or(0, |r| r.0),
                cached_msg_max_offset: q.cached_range.map_or(0, |r| r.1),
                cached_msg_count: q.cached_messages as i32,
                cached_msg_size_in_mib: (q.cached_bytes / (1024 * 1024)) as i32,
                locked: q.locked,
                // Zero read as "nothing for 56 years": every queue holding messages was
                // reported blocked.
                last_pull_timestamp: q.last_pull_ms,
                last_consume_timestamp: q.last_consume_ms,
                last_lock_timestamp,
                ..ProcessQueueInfo::default()
            },
        );
    }
    info
}

impl crate::client::InboundHandler for Forwarder {
    fn handle(
        &self,
        from: &str,
        request: RemotingCommand,
    ) -> crate::client::BoxFuture<Option<RemotingCommand>> {
        let this = self.clone();
        let from = from.to_owned();
        Box::pin(async move { this.forward(from, request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::engine::testing;
    use crate::consumer::Config;
    use crate::remoting::ExtFields;

    /// A oneway request is handed over without waiting for the engine, which answers it with
    /// nothing: waiting would hold one of the connection's inbound slots while the engine is
    /// busy, and a oneway request crowded out of those is lost.
    #[tokio::test]
    async fn a_oneway_request_is_handed_over_without_waiting() {
        let (tx, mut events) = mpsc::channel(4);
        let forwarder = forwarder(tx);
        let mut request = RemotingCommand::request(
            RequestCode::NotifyConsumerIdsChanged,
            ExtFields::new().with("consumerGroup", "G_inbound"),
            bytes::Bytes::new(),
        );
        request.set_oneway(true);
        // Nobody answers: the engine is busy.
        let forwarded = tokio::time::timeout(
            Duration::from_secs(1),
            forwarder.forward("broker".to_owned(), request),
        )
        .await;
        assert!(
            matches!(forwarded, Ok(None)),
            "returned at once, with no answer"
        );
        let event = events.try_recv().expect("the request reached the engine");
        assert!(event.request.is_oneway());
    }

    /// An offset reset never waits (the requests behind it would), and a negative offset in it
    /// is left out: stored, it would read as "no offset" and the queue would restart from
    /// `consume_from`.
    #[tokio::test]
    async fn an_offset_reset_is_recorded_without_its_negative_offsets() {
        let shared = testing::shared(Config::new("G_inbound", "T_inbound")).await;
        let request = RemotingCommand::request(
            RequestCode::ResetConsumerClientOffset,
            ExtFields::new()
                .with("topic", "T_inbound")
                .with("group", "G_inbound")
                .with("timestamp", -1)
                .with("isForce", true),
            bytes::Bytes::from_static(
                br#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T_inbound"}:5,{"brokerName":"b","queueId":1,"topic":"T_inbound"}:-1}}"#,
            ),
        );
        // Many more than any queue of whole requests held: none of them waits.
        for _ in 0..100 {
            assert!(answer(&shared, "broker", &request).await.is_none());
        }
        let taken = tokio::time::timeout(Duration::from_secs(1), shared.resets.take())
            .await
            .expect("a reset recorded");
        assert_eq!(taken, vec![(testing::queue("T_inbound"), 5)]);
    }

    /// Running info carries each queue's last pull, consume and lock times: at zero, admin
    /// tools (`mqadmin consumerStatus`) reported every queue holding messages as blocked.
    #[tokio::test]
    async fn running_info_says_when_each_queue_last_pulled_and_consumed() {
        let shared = testing::shared(Config::new("G_inbound", "T_inbound")).await;
        let mq = testing::queue("T_inbound");
        shared.stats.set_queue(
            &mq,
            crate::consumer::stats::QueueState {
                cached_messages: 3,
                last_pull_ms: 1_700_000_000_001,
                last_consume_ms: 1_700_000_000_002,
                ..Default::default()
            },
        );
        let before = now_millis();
        lock(&shared.locks).insert(
            mq.clone(),
            crate::consumer::engine::HeldLock {
                granted_at: Instant::now(),
                term: 1,
            },
        );
        let info = running_info(&shared);
        let queue = &info.mq_table[&mq];
        assert_eq!(queue.last_pull_timestamp, 1_700_000_000_001);
        assert_eq!(queue.last_consume_timestamp, 1_700_000_000_002);
        assert!(
            (before - 1_000..=now_millis()).contains(&queue.last_lock_timestamp),
            "{}",
            queue.last_lock_timestamp
        );
        assert!(info.status_table.contains_key("T_inbound"));
    }

    /// A request code nobody handles gets Java's remark, which names the number.
    #[tokio::test]
    async fn an_unsupported_request_is_answered_with_its_number() {
        let shared = testing::shared(Config::new("G_inbound", "T_inbound")).await;
        let request = RemotingCommand::request(
            RequestCode::PushReplyMessageToClient,
            ExtFields::new(),
            bytes::Bytes::new(),
        );
        let answer = answer(&shared, "broker", &request).await.expect("answered");
        assert_eq!(
            answer.response_code(),
            ResponseCode::RequestCodeNotSupported
        );
        assert_eq!(
            answer.remark.as_deref(),
            Some(" request type 326 not supported")
        );
    }

    /// A broker asking about a group this consumer does not run gets Java's answer, remark
    /// included (admin tools show it as it is).
    #[tokio::test]
    async fn a_request_for_another_group_is_answered_as_java_does() {
        let shared = testing::shared(Config::new("G_inbound", "T_inbound")).await;
        let request = RemotingCommand::request(
            RequestCode::GetConsumerRunningInfo,
            ExtFields::new()
                .with("consumerGroup", "G_other")
                .with("clientId", "c")
                .with("jstackEnable", "false"),
            bytes::Bytes::new(),
        );
        let answer = answer(&shared, "broker", &request).await.expect("answered");
        assert_eq!(answer.response_code(), ResponseCode::SystemError);
        assert_eq!(
            answer.remark.as_deref(),
            Some("The Consumer Group <G_other> not exist in this consumer")
        );
    }
}
