//! `Webhook` against a real HTTP server on 127.0.0.1:0 (axum), answering from a script.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes as AxumBytes;
use axum::http::{HeaderMap as AxumHeaders, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;
use crate::remoting::message::{MessageExt, Properties};
use crate::remoting::MessageQueue;

/// Guards every await: a hang fails the test instead of blocking the suite.
const LIMIT: Duration = Duration::from_secs(20);

/// One scripted answer.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: String::new(),
        delay: Duration::ZERO,
    }
}

/// What the server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    headers: AxumHeaders,
    body: AxumBytes,
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

struct Server {
    addr: SocketAddr,
    script: Arc<Script>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(replies: Vec<Reply>) -> Self {
        let script = Arc::new(Script {
            replies: Mutex::new(replies.into()),
            seen: Mutex::default(),
        });
        let state = Arc::clone(&script);
        let app = Router::new().route(
            "/hook",
            any(
                move |method: axum::http::Method, headers: AxumHeaders, body: AxumBytes| {
                    let state = Arc::clone(&state);
                    async move {
                        state.seen.lock().unwrap().push(Seen {
                            method: method.to_string(),
                            headers,
                            body,
                        });
                        let next = state.replies.lock().unwrap().pop_front();
                        let r = next.unwrap_or_else(|| reply(200));
                        tokio::time::sleep(r.delay).await;
                        let mut resp: Response = r.body.into_response();
                        *resp.status_mut() = StatusCode::from_u16(r.status).unwrap();
                        for (k, v) in r.headers {
                            resp.headers_mut().insert(k, v.parse().unwrap());
                        }
                        resp
                    }
                },
            ),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, script, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn message(id: &str, body: &str) -> MessageExt {
    let mut properties = Properties::new();
    properties.insert("UNIQ_KEY".into(), id.into());
    properties.insert("TAGS".into(), "TagA".into());
    MessageExt {
        topic: "orders".to_owned(),
        queue_id: 1,
        flag: 0,
        queue_offset: 7,
        commit_log_offset: 1234,
        sys_flag: 0,
        born_timestamp: 1_700_000_000_000,
        born_host: "10.0.0.2:50000".parse().unwrap(),
        store_timestamp: 1_700_000_000_100,
        store_host: "10.0.0.1:10911".parse().unwrap(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body_crc: 0,
        body: Bytes::copy_from_slice(body.as_bytes()),
        properties,
    }
}

/// An empty `UNIQ_KEY` names nothing: the offset msgId stands in (a CloudEvent's `id` must not
/// be empty).
#[test]
fn an_empty_uniq_key_gives_way_to_the_offset_msg_id() {
    let msg = message("", "x");
    let view = encode::MessageView::new(&msg, "broker-a");
    assert_eq!(view.msg_id, msg.offset_msg_id());
    assert!(!view.msg_id.is_empty());
}

fn batch(ids: &[&str], mode: ConsumeMode) -> Batch {
    Batch {
        group: "g1".to_owned(),
        topic: "orders".to_owned(),
        queue: MessageQueue::new("orders", "broker-a", 1),
        mode,
        messages: ids
            .iter()
            .map(|id| message(id, &format!("body-{id}")))
            .collect(),
    }
}

async fn handle(webhook: &Webhook, batch: &Batch) -> Vec<Outcome> {
    tokio::time::timeout(LIMIT, webhook.handle(batch))
        .await
        .expect("delivery hung")
}

fn options(url: String) -> WebhookOptions {
    let mut o = WebhookOptions::new(url);
    o.timeout = Duration::from_secs(5);
    o
}

const RETRY: Outcome = Outcome::Retry { delay_level: None };

#[tokio::test]
async fn success_sends_the_json_envelope() {
    let server = Server::start(vec![reply(200)]).await;
    let webhook = Webhook::new(options(server.url())).unwrap();
    let outcomes = handle(&webhook, &batch(&["A", "B"], ConsumeMode::Concurrent)).await;
    assert_eq!(outcomes, vec![Outcome::Success; 2]);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert_eq!(seen[0].headers["rocketmq-message-count"], "2");
    assert_eq!(seen[0].headers["rocketmq-consumer-group"], "g1");
    let v: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(v["messages"][1]["msgId"], "B");
    assert_eq!(v["messages"][1]["body"], "body-B");
    assert_eq!(v["messages"][1]["brokerName"], "broker-a");
    let stats = webhook.stats();
    assert_eq!(stats.requests(stats::RequestClass::Success), 1);
    assert_eq!(stats.outcomes(stats::OutcomeKind::Success), 2);
    assert_eq!(stats.latency().count, 1);
    assert_eq!(stats.in_flight(), 0);
}

#[tokio::test]
async fn error_codes_map_to_retry_and_drop() {
    let server = Server::start(vec![reply(500), reply(404), reply(401)]).await;
    let webhook = Webhook::new(options(server.url())).unwrap();
    let b = batch(&["A"], ConsumeMode::Concurrent);
    assert_eq!(handle(&webhook, &b).await, vec![RETRY]);
    assert_eq!(handle(&webhook, &b).await, vec![Outcome::Drop]);
    assert_eq!(handle(&webhook, &b).await, vec![RETRY]);
    assert_eq!(
        webhook.stats().requests(stats::RequestClass::ServerError),
        1
    );
    assert_eq!(
        webhook.stats().requests(stats::RequestClass::ClientError),
        2
    );
}

#[tokio::test]
async fn retry_after_defers_without_spending_attempts() {
    let mut throttled = reply(429);
    throttled.headers.push(("retry-after", "120".to_owned()));
    let server = Server::start(vec![throttled]).await;
    let mut o = options(server.url());
    o.retry_after_cap = Duration::from_secs(30);
    let webhook = Webhook::new(o).unwrap();
    let b = batch(&["A", "B"], ConsumeMode::Concurrent);
    let later = Outcome::Later {
        after: Duration::from_secs(30),
    };
    assert_eq!(handle(&webhook, &b).await, vec![later; 2]);
    // The endpoint is paused: the next batch is not sent at all.
    let outcomes = handle(&webhook, &b).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Later { after } if *after > Duration::from_secs(25))),
        "{outcomes:?}"
    );
    assert_eq!(server.seen().len(), 1);
    assert_eq!(webhook.stats().requests(stats::RequestClass::NotSent), 1);
    // The circuit stays closed: only the pause says why nothing is sent.
    assert_eq!(webhook.circuit_state(), CircuitState::Closed);
    let left = webhook.paused_for();
    assert!(
        left > Duration::from_secs(25) && left <= Duration::from_secs(30),
        "{left:?}"
    );
}

#[tokio::test]
async fn timeout_retries() {
    let mut slow = reply(200);
    slow.delay = Duration::from_secs(3);
    let server = Server::start(vec![slow]).await;
    let mut o = options(server.url());
    o.timeout = Duration::from_millis(200);
    let webhook = Webhook::new(o).unwrap();
    let outcomes = handle(&webhook, &batch(&["A"], ConsumeMode::Concurrent)).await;
    assert_eq!(outcomes, vec![RETRY]);
    assert_eq!(webhook.stats().requests(stats::RequestClass::Timeout), 1);
}

/// A request the worker stops waiting for (its batch's `consume_timeout`) still shows in the
/// request counts and the latency histogram.
#[tokio::test]
async fn a_request_cut_short_by_its_caller_counts_as_a_timeout() {
    let mut slow = reply(200);
    slow.delay = Duration::from_secs(3);
    let server = Server::start(vec![slow]).await;
    let webhook = Webhook::new(options(server.url())).unwrap();
    let cut = tokio::time::timeout(
        Duration::from_millis(300),
        webhook.handle(&batch(&["A"], ConsumeMode::Concurrent)),
    )
    .await;
    assert!(cut.is_err(), "the endpoint answered before the cut");
    let counts = webhook.stats();
    assert_eq!(counts.requests(stats::RequestClass::Timeout), 1);
    assert_eq!(counts.latency().count, 1);
    assert_eq!(counts.in_flight(), 0);
}

#[tokio::test]
async fn unreachable_endpoint_opens_the_circuit() {
    // A port that was just free: connections are refused.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let mut o = options(format!("http://{addr}/hook"));
    o.breaker = BreakerConfig {
        failure_threshold: 3,
        open_duration: Duration::from_secs(30),
        max_open_duration: Duration::from_secs(60),
    };
    let webhook = Webhook::new(o).unwrap();
    let b = batch(&["A", "B"], ConsumeMode::Concurrent);
    // Refused connections never spend reconsume attempts: the messages wait (Later).
    for _ in 0..3 {
        let outcomes = handle(&webhook, &b).await;
        assert!(
            outcomes.iter().all(|o| matches!(o, Outcome::Later { .. })),
            "{outcomes:?}"
        );
    }
    assert_eq!(webhook.circuit_state(), CircuitState::Open);
    for _ in 0..5 {
        let outcomes = handle(&webhook, &b).await;
        assert!(
            outcomes.iter().all(|o| matches!(o, Outcome::Later { .. })),
            "{outcomes:?}"
        );
    }
    let stats = webhook.stats();
    assert_eq!(stats.requests(stats::RequestClass::TransportError), 3);
    assert_eq!(stats.requests(stats::RequestClass::NotSent), 5);
    // No attempt cost a reconsume: all 16 message outcomes were deferrals.
    assert_eq!(stats.outcomes(stats::OutcomeKind::Retry), 0);
    assert_eq!(stats.outcomes(stats::OutcomeKind::Later), 16);
}

/// A server that reads each request's first bytes, then closes without answering.
async fn cutting_server() -> (SocketAddr, JoinHandle<()>) {
    use tokio::io::AsyncReadExt as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0_u8; 4096];
            let _ = tcp.read(&mut buf).await;
        }
    });
    (addr, task)
}

/// A connection lost after the request was written is the message's failure, not an
/// unreachable endpoint: a message that crashes the application must spend its reconsume
/// attempts (and reach the DLQ), not be offered again every second forever.
#[tokio::test]
async fn a_request_cut_off_after_it_was_written_is_retried() {
    let (addr, server) = cutting_server().await;
    let webhook = Webhook::new(options(format!("http://{addr}/hook"))).unwrap();
    let outcomes = handle(&webhook, &batch(&["A", "B"], ConsumeMode::Concurrent)).await;
    assert_eq!(outcomes, vec![RETRY; 2]);
    assert_eq!(
        webhook
            .stats()
            .requests(stats::RequestClass::TransportError),
        1
    );
    server.abort();
}

/// An answer without a length ends where its connection closes, so an endpoint that dies in
/// the middle of its JSON looks to HTTP like one that finished: the JSON that breaks off is
/// what tells, and nothing in it is acknowledged, not even the SUCCESS the part read says.
#[tokio::test]
async fn an_endpoint_dying_mid_answer_is_retried() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            // The whole request first: closing with bytes unread sends a reset, and the test
            // would pass through the transport-error path instead.
            let mut request = Vec::new();
            let mut buf = [0_u8; 4096];
            while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let _ = tcp
                .write_all(
                    b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/json\r\n\r\n\
                      {\"statuses\":[{\"id\":\"A\",\"status\":\"SUCCESS\"},{\"id\":\"B\",\"status\":\"RE",
                )
                .await;
        }
    });
    let webhook = Webhook::new(options(format!("http://{addr}/hook"))).unwrap();
    let outcomes = handle(&webhook, &batch(&["A", "B"], ConsumeMode::Concurrent)).await;
    assert_eq!(outcomes, vec![RETRY; 2]);
    server.abort();
}

/// ... and not even as the probe of an open circuit: a crash on the probe is the message's
/// failure too, or the message would be offered once per open period forever.
#[tokio::test]
async fn a_probe_cut_off_after_it_was_written_is_retried() {
    let (addr, server) = cutting_server().await;
    let mut o = options(format!("http://{addr}/hook"));
    o.breaker = BreakerConfig {
        failure_threshold: 1,
        open_duration: Duration::from_millis(100),
        max_open_duration: Duration::from_secs(1),
    };
    let webhook = Webhook::new(o).unwrap();
    let b = batch(&["A"], ConsumeMode::Concurrent);
    assert_eq!(handle(&webhook, &b).await, vec![RETRY]);
    assert_eq!(webhook.circuit_state(), CircuitState::Open);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(webhook.circuit_state(), CircuitState::HalfOpen);
    assert_eq!(handle(&webhook, &b).await, vec![RETRY], "the probe");
    assert_eq!(webhook.circuit_state(), CircuitState::Open);
    assert_eq!(
        webhook
            .stats()
            .requests(stats::RequestClass::TransportError),
        2
    );
    server.abort();
}

/// A webhook whose circuit opens after 2 failures for 200 ms, opened by two 503s of `server`
/// (its first replies); returns it, its one-message batch, and the wait the open circuit asks
/// of the next delivery.
async fn opened_circuit(server: &Server) -> (Webhook, Batch, Duration) {
    let mut o = options(server.url());
    o.breaker = BreakerConfig {
        failure_threshold: 2,
        open_duration: Duration::from_millis(200),
        max_open_duration: Duration::from_secs(1),
    };
    let webhook = Webhook::new(o).unwrap();
    let b = batch(&["A"], ConsumeMode::Concurrent);
    assert_eq!(handle(&webhook, &b).await, vec![RETRY]);
    assert_eq!(handle(&webhook, &b).await, vec![RETRY]);
    assert_eq!(webhook.circuit_state(), CircuitState::Open);
    let Outcome::Later { after } = handle(&webhook, &b).await[0] else {
        panic!("expected Later while open");
    };
    (webhook, b, after)
}

#[tokio::test]
async fn probe_closes_the_circuit_when_the_endpoint_returns() {
    let mut failing = vec![reply(503); 2];
    failing.push(reply(200));
    let server = Server::start(failing).await;
    let (webhook, b, after) = opened_circuit(&server).await;
    tokio::time::sleep(after).await;
    assert_eq!(handle(&webhook, &b).await, vec![Outcome::Success]);
    assert_eq!(webhook.circuit_state(), CircuitState::Closed);
    assert_eq!(server.seen().len(), 3);
}

/// A probe of an open circuit that the endpoint fails (an HTTP error, not a refused connection)
/// spends no reconsume attempt: the messages wait (`Later`) and the circuit opens again, so a
/// dead application never drains a topic into the DLQ one probe at a time.
#[tokio::test]
async fn a_failed_probe_waits_instead_of_retrying() {
    let mut replies = vec![reply(503); 3];
    replies.push(reply(200));
    let server = Server::start(replies).await;
    let (webhook, b, after) = opened_circuit(&server).await;
    tokio::time::sleep(after).await;
    // The probe: sent, answered 503.
    let Outcome::Later { after } = handle(&webhook, &b).await[0] else {
        panic!("a failed probe must wait, not spend an attempt");
    };
    assert_eq!(server.seen().len(), 3, "the probe was sent");
    assert_eq!(webhook.circuit_state(), CircuitState::Open);
    // Another batch waits only until the circuit half-opens; the probe's own message comes
    // back later than that, so the other one probes next: a message that fails by itself
    // cannot keep the circuit open for everyone.
    let other = batch(&["B"], ConsumeMode::Concurrent);
    let Outcome::Later { after: reopens } = handle(&webhook, &other).await[0] else {
        panic!("expected Later while open");
    };
    assert!(
        after >= reopens + UNREACHABLE_RETRY_AFTER,
        "the failed probe's message comes back after {after:?}, the circuit half-opens in {reopens:?}"
    );
    tokio::time::sleep(after).await;
    assert_eq!(handle(&webhook, &b).await, vec![Outcome::Success]);
    assert_eq!(webhook.circuit_state(), CircuitState::Closed);
}

#[tokio::test]
async fn per_message_statuses() {
    let mut partial = reply(200);
    partial.body = r#"{"statuses":[{"entryId":"A","status":"SUCCESS"},{"id":"B","status":"DROP"},{"id":"C","status":"RETRY","delayLevel":5}]}"#.to_owned();
    let server = Server::start(vec![partial]).await;
    let webhook = Webhook::new(options(server.url())).unwrap();
    let outcomes = handle(
        &webhook,
        &batch(&["A", "B", "C", "D"], ConsumeMode::Concurrent),
    )
    .await;
    assert_eq!(
        outcomes,
        vec![
            Outcome::Success,
            Outcome::Drop,
            Outcome::Retry {
                delay_level: Some(5)
            },
            RETRY
        ]
    );
}

/// A receiver of `cloudevents_batch` sees a forwarded event's own id, not the msgId, and may
/// answer by it.
#[tokio::test]
async fn per_message_statuses_name_forwarded_events_by_their_id() {
    let mut answer = reply(200);
    answer.body =
        r#"{"statuses":[{"id":"evt-1","status":"SUCCESS"},{"id":"B","status":"SUCCESS"}]}"#
            .to_owned();
    let server = Server::start(vec![answer]).await;
    let mut o = options(server.url());
    o.format = Format::CloudEventsBatch;
    let webhook = Webhook::new(o).unwrap();
    let mut b = batch(&["A", "B"], ConsumeMode::Concurrent);
    b.messages[0].body = Bytes::from_static(
        br#"{"specversion":"1.0","id":"evt-1","source":"/app","type":"order.created"}"#,
    );
    assert_eq!(handle(&webhook, &b).await, vec![Outcome::Success; 2]);
    let seen: serde_json::Value = serde_json::from_slice(&server.seen()[0].body).unwrap();
    assert_eq!(seen[0]["id"], "evt-1");
    assert_eq!(seen[1]["id"], "B");
}

/// A 2xx JSON answer longer than the answer limit is read only in part, so nothing in it is
/// acknowledged, whether or not a byte order mark comes first; a long text answer is success.
#[tokio::test]
async fn a_json_answer_cut_at_the_limit_is_retried() {
    let long = |head: &str, tail: &str| {
        let mut r = reply(200);
        r.body = format!("{head}{}{tail}", "a".repeat(MAX_ANSWER_BYTES));
        r
    };
    let server = Server::start(vec![
        long("{\"status\":\"SUCCESS\",\"pad\":\"", "\"}"),
        long("\u{feff}{\"status\":\"SUCCESS\",\"pad\":\"", "\"}"),
        long("<html>", "</html>"),
    ])
    .await;
    let webhook = Webhook::new(options(server.url())).unwrap();
    let b = batch(&["A", "B"], ConsumeMode::Concurrent);
    assert_eq!(handle(&webhook, &b).await, vec![RETRY; 2]);
    assert_eq!(handle(&webhook, &b).await, vec![RETRY; 2]);
    assert_eq!(handle(&webhook, &b).await, vec![Outcome::Success; 2]);
    // The endpoint answered each time: nothing counts against the circuit.
    assert_eq!(webhook.circuit_state(), CircuitState::Closed);
}

#[tokio::test]
async fn raw_format_splits_the_batch() {
    let server = Server::start(Vec::new()).await;
    let mut o = options(server.url());
    o.format = Format::Raw;
    o.method = Method::PUT;
    let webhook = Webhook::new(o).unwrap();
    let outcomes = handle(&webhook, &batch(&["A", "B", "C"], ConsumeMode::Concurrent)).await;
    assert_eq!(outcomes, vec![Outcome::Success; 3]);
    let mut seen = server.seen();
    assert_eq!(seen.len(), 3);
    seen.sort_by(|a, b| a.body.cmp(&b.body));
    for (s, id) in seen.iter().zip(["A", "B", "C"]) {
        assert_eq!(s.method, "PUT");
        assert_eq!(s.body, format!("body-{id}").as_bytes());
        assert_eq!(s.headers["rocketmq-msg-id"], id);
        assert_eq!(s.headers["rocketmq-message-count"], "1");
        assert_eq!(s.headers["content-type"], "application/octet-stream");
    }
}

#[tokio::test]
async fn orderly_stops_at_the_first_failure() {
    let server = Server::start(vec![reply(200), reply(500), reply(200)]).await;
    let mut o = options(server.url());
    o.format = Format::CloudEvents;
    let webhook = Webhook::new(o).unwrap();
    let outcomes = handle(&webhook, &batch(&["A", "B", "C"], ConsumeMode::Orderly)).await;
    assert_eq!(
        outcomes,
        vec![
            Outcome::Success,
            RETRY,
            Outcome::Later {
                after: Duration::ZERO
            }
        ]
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["ce-id"], "A");
    assert_eq!(seen[1].headers["ce-id"], "B");
    assert_eq!(seen[0].headers["ce-specversion"], "1.0");
}

#[tokio::test]
async fn signing_and_bearer_token() {
    let server = Server::start(Vec::new()).await;
    let mut o = options(server.url());
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    o.signing_secret = Some(SigningSecret::parse(secret).unwrap());
    o.bearer_token = Some(BearerToken::new("tok-123").unwrap());
    o.headers = vec![("x-api-key".to_owned(), "k".to_owned())];
    let shown = format!("{o:?}");
    assert!(
        !shown.contains("MfKQ9r8G") && !shown.contains("tok-123"),
        "{shown}"
    );
    let webhook = Webhook::new(o).unwrap();
    assert_eq!(
        handle(&webhook, &batch(&["A"], ConsumeMode::Concurrent)).await,
        vec![Outcome::Success]
    );
    let seen = server.seen();
    let h = &seen[0].headers;
    assert_eq!(h["authorization"], "Bearer tok-123");
    assert_eq!(h["x-api-key"], "k");
    assert_eq!(h["webhook-id"], "A");
    let timestamp: u64 = h["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let expected = SigningSecret::parse(secret)
        .unwrap()
        .signature("A", timestamp, &seen[0].body);
    assert_eq!(h["webhook-signature"], expected.as_str());
    assert!(!format!("{webhook:?}").contains("tok-123"));
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let mut slow = reply(200);
    slow.delay = Duration::from_millis(300);
    let server = Server::start(vec![slow; 4]).await;
    let mut o = options(server.url());
    o.format = Format::Raw;
    o.concurrency = 2;
    let webhook = Webhook::new(o).unwrap();
    let b = batch(&["A", "B", "C", "D"], ConsumeMode::Concurrent);
    let watcher = {
        let stats = Arc::clone(webhook.stats());
        tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..100 {
                peak = peak.max(stats.in_flight());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    assert_eq!(handle(&webhook, &b).await, vec![Outcome::Success; 4]);
    let peak = tokio::time::timeout(LIMIT, watcher).await.unwrap().unwrap();
    assert_eq!(peak, 2);
}

#[tokio::test]
async fn a_shared_limit_bounds_webhooks_together() {
    let mut slow = reply(200);
    slow.delay = Duration::from_millis(200);
    let server = Server::start(vec![slow; 8]).await;
    let limit = Transport::new(3);
    let hooks: Vec<Webhook> = (0..2)
        .map(|_| {
            let mut o = options(server.url());
            o.format = Format::Raw;
            o.concurrency = 4;
            o.transport = Some(limit.clone());
            Webhook::new(o).unwrap()
        })
        .collect();
    let watcher = {
        let stats: Vec<_> = hooks.iter().map(|h| Arc::clone(h.stats())).collect();
        let limit = limit.clone();
        tokio::spawn(async move {
            let (mut peak, mut peak_waiting) = (0, 0);
            for _ in 0..80 {
                peak = peak.max(stats.iter().map(|s| s.in_flight()).sum::<i64>());
                peak_waiting = peak_waiting.max(limit.waiting());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (peak, peak_waiting)
        })
    };
    let a = batch(&["A", "B", "C", "D"], ConsumeMode::Concurrent);
    let b = batch(&["E", "F", "G", "H"], ConsumeMode::Concurrent);
    let (ra, rb) = tokio::join!(handle(&hooks[0], &a), handle(&hooks[1], &b));
    assert_eq!(ra, vec![Outcome::Success; 4]);
    assert_eq!(rb, vec![Outcome::Success; 4]);
    let (peak, peak_waiting) = tokio::time::timeout(LIMIT, watcher).await.unwrap().unwrap();
    // Alone, each webhook would have had 4 in flight: 8 together.
    assert_eq!(peak, 3);
    assert!(
        peak_waiting > 0,
        "no request ever waited for the shared limit"
    );
    assert_eq!((limit.in_flight(), limit.waiting()), (0, 0));
    assert_eq!(server.seen().len(), 8);
}

#[test]
fn invalid_options_are_refused() {
    assert!(matches!(
        Webhook::new(WebhookOptions::new("ftp://x/")),
        Err(WebhookError::InvalidUrl { .. })
    ));
    let err = Webhook::new(WebhookOptions::new("http://user:pw@[::1/x?token=s")).unwrap_err();
    assert!(!err.to_string().contains("pw"), "{err}");
    let mut o = WebhookOptions::new("http://localhost/x");
    o.concurrency = 0;
    assert!(matches!(
        Webhook::new(o),
        Err(WebhookError::InvalidOption {
            name: "concurrency",
            ..
        })
    ));
    let mut o = WebhookOptions::new("http://localhost/x");
    o.headers = vec![("bad header".to_owned(), "v".to_owned())];
    assert!(matches!(
        Webhook::new(o),
        Err(WebhookError::InvalidHeader { .. })
    ));
    let mut o = WebhookOptions::new("http://user:pw@localhost/x?token=s3cr3t");
    o.headers = vec![("x-api-key".to_owned(), "k3y-value".to_owned())];
    let shown = format!("{o:?} {:?}", Webhook::new(o.clone()).unwrap());
    for secret in ["pw", "s3cr3t", "k3y-value"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert_eq!(
        redact_url("https://user:pw@example.com:8443/a/b?token=s"),
        "https://user:***@example.com:8443/a/b?token=***"
    );
    // A token with an unescaped `/` parses as a host and a path: all of it is masked.
    assert_eq!(
        redact_url("https://AbC+dEf/gh==@example.com/hook"),
        "https://***@example.com/hook"
    );
}

/// Collects what a `tracing` subscriber writes, for tests that check what is logged.
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keys too large for a header are left out of a `raw` request, and said so at warn once per
/// webhook (an oversized value tends to recur), at debug afterwards.
#[tokio::test]
async fn oversized_key_headers_are_logged_at_warn_once() {
    let sink = LogSink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let mut o = options("http://127.0.0.1:9/hook".to_owned());
    o.format = Format::Raw;
    let webhook = Webhook::new(o).unwrap();
    let mut msg = message("A", "body-A");
    msg.properties
        .insert("KEYS".into(), "k".repeat(40_000).into());
    let view = MessageView::new(&msg, "broker-a");
    let ctx = Context {
        group: "g1",
        topic: "orders",
    };
    let prepared = tracing::subscriber::with_default(subscriber, || {
        webhook.encode(ctx, std::slice::from_ref(&view));
        webhook.encode(ctx, std::slice::from_ref(&view))
    });
    let request = prepared.request.unwrap();
    assert_eq!(request.headers.get("rocketmq-keys"), None);
    assert_eq!(&request.body[..], b"body-A");
    let logs = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Metadata headers left out"))
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("rocketmq-keys"),
        "{logs}"
    );
    assert!(
        lines[1].contains("DEBUG") && lines[1].contains("msg_id=A"),
        "{logs}"
    );
}
