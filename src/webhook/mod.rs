//! The `Handler` (`crate::consumer::Handler`) that delivers batches to an HTTP endpoint.
//!
//! [`Webhook`] turns each batch into one request (formats `json`, `cloudevents-batch`) or one
//! request per message (`raw`, `cloudevents`), sends them through a keep-alive pool with a
//! per-request timeout and at most `concurrency` requests in flight per subscription (and, when
//! given a [`Transport`] shared with other subscriptions, within its cap and through its
//! connections), and maps every answer to per-message outcomes (architecture.md section 5).
//! The pieces are pure and tested on their own: [`encode`] (requests), [`classify`] (answers),
//! [`breaker`] (circuit breaker and `Retry-After` pause), [`sign`] (Standard Webhooks, bearer
//! token); [`stats`] holds the counters the metrics layer exposes.
//!
//! Requests go through our own keep-alive pool of hyper HTTP/1.1 connections over rustls (ring)
//! (src/webhook/pool.rs): each request drives its connection itself, which saves two task
//! hand-offs per request over hyper-util's pooled client (and reqwest's per-request layers, URL
//! parsed again, retry layer, header copies, cost about 15% of the CPU when every message is its
//! own request). It follows no redirects (a 3xx is an answer) and ignores the `HTTP(S)_PROXY`
//! variables: the sidecar talks to its application directly.
//!
//! Invariants:
//! - an endpoint that is down or pausing never costs reconsume attempts: while the circuit is
//!   open or a `Retry-After` runs, messages answer [`Outcome::Later`] without a request, so the
//!   engine keeps them and pulling stops by flow control, and a dead app cannot drain a topic
//!   into the DLQ;
//! - orderly subscriptions send one-message requests strictly in order and stop at the first
//!   message that was not delivered;
//! - secrets (signing key, bearer token) and the endpoint URL (which may carry credentials) are
//!   never logged.

pub mod breaker;
pub mod classify;
pub mod encode;
mod json;
mod pool;
pub mod sign;
pub mod stats;
mod transport;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, HOST,
};
use http::{Method, Uri};
use http_body_util::Full;
use reqwest::Url;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::rustls::crypto::ring as ring_provider;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::client::TlsSetting;
use crate::consumer::{Batch, ConsumeMode, Handler, Outcome};
use crate::remoting::message::LogId;

pub use breaker::{BreakerConfig, CircuitState};
pub use classify::{StatusClasses, StatusPattern};
pub use encode::Format;
pub use sign::{BearerToken, SigningSecret};
pub use stats::WebhookStats;
pub use transport::Transport;

use breaker::{Admission, Breaker};
use classify::{Answer, Failure};
use encode::{Context, EncodedRequest, Encoder, MessageView};
use pool::{Endpoint, Pool};
use stats::RequestClass;

/// Answers larger than this are not read further: classification needs a few kilobytes at most
/// (a `statuses` array for one batch), and an endpoint streaming a huge page must not exhaust
/// memory.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// When messages that could not be delivered (endpoint unreachable) are offered again, and how
/// long after the circuit half-opens a failed probe's messages are; the circuit breaker decides
/// whether they are then sent or keep waiting.
const UNREACHABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Settings of one webhook (one subscription). The configuration layer maps its tree onto this.
///
/// Requests go straight to `url`: the `HTTP_PROXY`/`HTTPS_PROXY` environment variables are not
/// honoured (the sidecar delivers to its local application).
#[derive(Clone)]
pub struct WebhookOptions {
    /// Endpoint URL (`http` or `https`).
    pub url: String,
    /// Request method (default `POST`).
    pub method: Method,
    /// Delivery format.
    pub format: Format,
    /// Per-request timeout, connection through the end of the answer body.
    pub timeout: Duration,
    /// Maximum requests in flight for this subscription (also the idle pool size).
    pub concurrency: usize,
    /// Connections and a cap on requests in flight shared with other webhooks (the daemon's
    /// `delivery.max_in_flight`); a request then needs a place in both caps. Default: none
    /// (own connections, own cap only).
    pub transport: Option<Transport>,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<BearerToken>,
    /// Standard Webhooks signing key.
    pub signing_secret: Option<SigningSecret>,
    /// Status-code classes.
    pub status_classes: StatusClasses,
    /// The longest pause a `Retry-After` can impose.
    pub retry_after_cap: Duration,
    /// Circuit breaker settings.
    pub breaker: BreakerConfig,
    /// CloudEvents `type` attribute.
    pub cloudevents_type: String,
    /// CloudEvents `source` attribute (default `rocketmq://<brokerName>/<topic>`).
    pub cloudevents_source: Option<String>,
    /// TLS to `https` endpoints: custom CA, client certificate.
    pub tls: WebhookTls,
}

/// TLS settings for `https` endpoints. By default the public web roots verify the endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookTls {
    /// PEM bundle of CA certificates trusted in addition to the web roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate (chain) for mutual TLS, with `client_key`.
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<std::path::PathBuf>,
    /// Accept any server certificate (tests only).
    pub insecure_skip_verify: bool,
}

impl WebhookOptions {
    /// Defaults for `url`: POST, json, 10 s timeout, 20 concurrent requests, default status
    /// classes, `Retry-After` capped at 60 s, default breaker. The same defaults as a
    /// subscription's configuration, so that an embedder and an operator get one behaviour (a
    /// daemon test compares them).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: Method::POST,
            format: Format::Json,
            timeout: Duration::from_secs(10),
            concurrency: 20,
            transport: None,
            headers: Vec::new(),
            bearer_token: None,
            signing_secret: None,
            status_classes: StatusClasses::default(),
            retry_after_cap: Duration::from_secs(60),
            breaker: BreakerConfig::default(),
            cloudevents_type: encode::DEFAULT_CLOUDEVENTS_TYPE.to_owned(),
            cloudevents_source: None,
            tls: WebhookTls::default(),
        }
    }
}

impl fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookOptions")
            .field("url", &redact_url(&self.url))
            .field("method", &self.method)
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field(
                "transport",
                &self.transport.as_ref().map(Transport::capacity),
            )
            // Header values may hold API keys; show the names only.
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("bearer_token", &self.bearer_token)
            .field("signing_secret", &self.signing_secret)
            .field("status_classes", &self.status_classes)
            .field("retry_after_cap", &self.retry_after_cap)
            .field("breaker", &self.breaker)
            .field("cloudevents_type", &self.cloudevents_type)
            .field("cloudevents_source", &self.cloudevents_source)
            .field("tls", &self.tls)
            .finish()
    }
}

/// A URL for display: scheme, host, port, path and query names; the password of its user info
/// (the user name when it has none) and query values (which may carry credentials) masked. The
/// configuration's own masking, so errors from here hide what `check-config` hides: a token
/// with an unescaped `/` (`https://tok/en@host`, which parses as host `tok`) included.
pub fn redact_url(url: &str) -> String {
    crate::config::shown_url(url)
}

/// Why a [`Webhook`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL does not parse or is not `http`/`https`. The URL itself is shown redacted.
    #[error("invalid webhook url {url}: {reason}")]
    InvalidUrl {
        /// The URL with credentials removed.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A configured header name or value is not valid HTTP. The value is not shown.
    #[error("invalid webhook header {name:?}")]
    InvalidHeader {
        /// The header name as configured.
        name: String,
    },
    /// An option is out of range.
    #[error("invalid webhook option {name}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A TLS file cannot be read or does not hold what it should.
    #[error("webhook TLS {} {path}: {reason}", tls_option(*setting))]
    Tls {
        /// The [`WebhookTls`] field at fault (never `ServerName`, which the webhook has not).
        setting: TlsSetting,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] rustls::Error),
}

/// The name of the [`WebhookTls`] field for `setting`.
fn tls_option(setting: TlsSetting) -> &'static str {
    match setting {
        TlsSetting::CaFile => "ca_file",
        TlsSetting::ClientCert => "client_cert",
        TlsSetting::ClientKey => "client_key",
        TlsSetting::ServerName => "server_name",
    }
}

impl WebhookError {
    /// Never: these are configuration errors.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

/// Delivers batches to one HTTP endpoint; implements [`Handler`]. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Webhook {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    endpoint: Arc<Endpoint>,
    /// The URL as given (credentials removed), for the debug output.
    uri: Uri,
    /// What the request line carries: path and query (origin form). Parsed once; cloning it
    /// per request only bumps reference counts.
    origin: Uri,
    /// `Host`: the URL's host, and its port unless it is the scheme's default.
    host: HeaderValue,
    method: Method,
    encoder: Encoder,
    /// Configured headers plus authorization and `Accept`, added to every request.
    headers: HeaderMap,
    signing: Option<SigningSecret>,
    classes: StatusClasses,
    timeout: Duration,
    retry_after_cap: Duration,
    permits: Semaphore,
    transport: Option<Transport>,
    breaker: Mutex<Breaker>,
    stats: Arc<WebhookStats>,
    /// The log fields of the subscription this webhook serves (one per webhook in practice),
    /// kept so a request does not allocate them again.
    log: std::sync::OnceLock<LogFields>,
    /// Whether a tag or key header left out for its size was logged at warn: an oversized
    /// value tends to recur (a producer's habit), so later ones go to debug, not flood the log.
    warned_left_out: AtomicBool,
    /// Whether an answer we could not read was logged at warn (then debug, as above).
    warned_unread: AtomicBool,
    /// Whether an answer whose JSON broke off was logged at warn (then debug, as above).
    warned_broke_off: AtomicBool,
}

impl Webhook {
    /// Builds the client and validates `options`.
    ///
    /// # Errors
    /// [`WebhookError`] for a bad URL, header or option, or when the HTTP client cannot be
    /// built.
    pub fn new(options: WebhookOptions) -> Result<Self, WebhookError> {
        let mut url = Url::parse(&options.url).map_err(|e| WebhookError::InvalidUrl {
            url: redact_url(&options.url),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::InvalidUrl {
                url: redact_url(&options.url),
                reason: "scheme must be http or https".to_owned(),
            });
        }
        let basic = take_basic_auth(&mut url);
        // The WHATWG parse above validates and normalises (punycode, default path); hyper wants
        // an `http::Uri`, built once here from the normalised text.
        let uri = Uri::from_str(url.as_str()).map_err(|e| WebhookError::InvalidUrl {
            url: redact_url(&options.url),
            reason: e.to_string(),
        })?;
        if options.concurrency == 0 {
            return Err(WebhookError::InvalidOption {
                name: "concurrency",
                reason: "must be at least 1",
            });
        }
        if options.timeout.is_zero() {
            return Err(WebhookError::InvalidOption {
                name: "timeout",
                reason: "must be positive",
            });
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &options.headers {
            let invalid = || WebhookError::InvalidHeader { name: name.clone() };
            let header_name = HeaderName::from_str(name).map_err(|_| invalid())?;
            let header_value = HeaderValue::from_str(value).map_err(|_| invalid())?;
            headers.append(header_name, header_value);
        }
        if let Some(token) = &options.bearer_token {
            token.apply(&mut headers);
        }
        if let Some(basic) = basic {
            // A configured bearer token or Authorization header is the explicit choice.
            if !headers.contains_key(AUTHORIZATION) {
                headers.insert(AUTHORIZATION, basic);
            }
        }
        // reqwest sent `Accept: */*` by default; endpoints saw it, so it stays unless configured.
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        // Without it a server may pick any coding (RFC 9110, 12.5.3); answers are read for
        // their `status`, so ask for them plain (gzip and deflate are read anyway).
        if !headers.contains_key(ACCEPT_ENCODING) {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        }
        let pool = match &options.transport {
            Some(shared) => shared.pool(&options.tls)?,
            None => Pool::new(tls_config(&options.tls)?, options.concurrency),
        };
        let invalid_url = |reason: String| WebhookError::InvalidUrl {
            url: redact_url(&options.url),
            reason,
        };
        let endpoint = pool.endpoint(&uri).map_err(invalid_url)?;
        // hyper's connection API sends the request line as given: the origin form and `Host`
        // are ours to set (the URL has a host, or `endpoint` above refused it).
        let origin = Uri::from(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        let host = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(|| invalid_url("the URL has no host".to_owned()))?;
        let encoder = Encoder::new(
            options.format,
            options.cloudevents_type,
            options.cloudevents_source,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                endpoint,
                uri,
                origin,
                host,
                method: options.method,
                encoder,
                headers,
                signing: options.signing_secret,
                classes: options.status_classes,
                timeout: options.timeout,
                retry_after_cap: options.retry_after_cap,
                permits: Semaphore::new(options.concurrency),
                transport: options.transport,
                breaker: Mutex::new(Breaker::new(options.breaker, options.timeout)),
                stats: Arc::new(WebhookStats::default()),
                log: std::sync::OnceLock::new(),
                warned_left_out: AtomicBool::new(false),
                warned_unread: AtomicBool::new(false),
                warned_broke_off: AtomicBool::new(false),
            }),
        })
    }

    /// The delivery counters (shared; the metrics layer reads them at scrape time).
    pub fn stats(&self) -> &Arc<WebhookStats> {
        &self.inner.stats
    }

    /// The circuit state now.
    pub fn circuit_state(&self) -> CircuitState {
        self.inner.breaker().state(Instant::now())
    }

    /// How long the endpoint's `Retry-After` pause has left (zero when there is none). The
    /// circuit state does not show it: a paused endpoint's circuit stays closed.
    pub fn paused_for(&self) -> Duration {
        self.inner.breaker().paused_for(Instant::now())
    }

    /// The delivery format.
    pub fn format(&self) -> Format {
        self.inner.encoder.format()
    }

    /// Delivers one batch; the [`Handler`] entry point.
    pub async fn deliver(&self, batch: &Batch) -> Vec<Outcome> {
        let ctx = Context {
            group: &batch.group,
            topic: &batch.topic,
        };
        let views: Vec<MessageView<'_>> = batch
            .messages
            .iter()
            .map(|m| MessageView::new(m, &batch.queue.broker_name))
            .collect();
        if views.is_empty() {
            return Vec::new();
        }
        if !self.inner.encoder.format().one_message_per_request() {
            let request = self.encode(ctx, &views);
            return Arc::clone(&self.inner)
                .send(self.inner.log_fields(ctx), request)
                .await;
        }
        match batch.mode {
            ConsumeMode::Orderly => self.deliver_in_order(ctx, &views).await,
            ConsumeMode::Concurrent => self.deliver_in_parallel(ctx, &views).await,
        }
    }

    /// One request per message, strictly in order; after the first message that was not
    /// delivered (retry or later), the rest are not sent: sending them would break the order.
    async fn deliver_in_order(&self, ctx: Context<'_>, views: &[MessageView<'_>]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(views.len());
        for (i, view) in views.iter().enumerate() {
            let request = self.encode(ctx, std::slice::from_ref(view));
            let outcome = Arc::clone(&self.inner)
                .send(self.inner.log_fields(ctx), request)
                .await
                .pop()
                .unwrap_or(Outcome::Retry { delay_level: None });
            outcomes.push(outcome);
            if matches!(outcome, Outcome::Retry { .. } | Outcome::Later { .. }) {
                let after = match outcome {
                    Outcome::Later { after } => after,
                    _ => Duration::ZERO,
                };
                let rest = views.len() - i - 1;
                outcomes.extend(std::iter::repeat_n(Outcome::Later { after }, rest));
                self.inner
                    .stats
                    .record_outcomes(&outcomes[outcomes.len() - rest..]);
                break;
            }
        }
        outcomes
    }

    /// One request per message, concurrently (bounded by the semaphore). The tasks live in a
    /// `JoinSet` owned by this future: if the engine gives up on the batch, they are aborted.
    async fn deliver_in_parallel(
        &self,
        ctx: Context<'_>,
        views: &[MessageView<'_>],
    ) -> Vec<Outcome> {
        let mut tasks = JoinSet::new();
        for (i, view) in views.iter().enumerate() {
            let request = self.encode(ctx, std::slice::from_ref(view));
            let inner = Arc::clone(&self.inner);
            let log = self.inner.log_fields(ctx);
            tasks.spawn(async move { (i, inner.send(log, request).await) });
        }
        let mut outcomes = vec![Outcome::Retry { delay_level: None }; views.len()];
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, mut answer)) => {
                    if let (Some(slot), Some(outcome)) = (outcomes.get_mut(i), answer.pop()) {
                        *slot = outcome;
                    }
                }
                // A panicking delivery task is a bug; its message keeps the Retry default.
                Err(err) => tracing::error!(%err, "Webhook delivery task failed."),
            }
        }
        outcomes
    }

    fn encode(&self, ctx: Context<'_>, views: &[MessageView<'_>]) -> Prepared {
        let ids = views.iter().map(|v| v.msg_id.to_string()).collect();
        let request = self.inner.encoder.encode(ctx, views).map_err(|err| {
            tracing::error!(%err, group = ctx.group, topic = ctx.topic, "Cannot encode webhook request.");
        });
        if let (Ok(request), [view]) = (&request, views) {
            if !request.left_out.is_empty() {
                self.inner.log_left_out(ctx, view, &request.left_out);
            }
        }
        Prepared { ids, request }
    }
}

impl Handler for Webhook {
    fn handle(&self, batch: &Batch) -> impl Future<Output = Vec<Outcome>> + Send {
        self.deliver(batch)
    }
}

/// An encoded request and the msgIds it carries (in order). `request` is `Err` when encoding
/// failed (already logged).
#[derive(Debug)]
struct Prepared {
    ids: Vec<String>,
    request: Result<EncodedRequest, ()>,
}

/// Owned log fields, so spawned deliveries can log without borrowing the batch.
#[derive(Debug, Clone)]
struct LogFields {
    group: Arc<str>,
    topic: Arc<str>,
}

/// What became of one attempt to send a request.
#[derive(Debug)]
enum Sent {
    Answer {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        truncated: bool,
    },
    /// No answer; the error text is for the log (without the URL).
    Failed(Failure, String),
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry credentials and header values may be API keys: neither is shown.
        f.debug_struct("Webhook")
            .field("url", &redact_url(&self.uri.to_string()))
            .field("method", &self.method)
            .field("encoder", &self.encoder)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("signing", &self.signing)
            .field("timeout", &self.timeout)
            .field("permits", &self.permits.available_permits())
            .field("transport", &self.transport)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker's state is valid after any panic (plain fields), so poisoning is ignored.
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs msgId, tag or key headers the encoder left out (too large, or not a valid header
    /// value): at warn the first
    /// time for this webhook, at debug afterwards. The message is still delivered (its body
    /// carries the values in `json`; in `raw` and binary `cloudevents` the receiver goes
    /// without them). A msgId too long for a header is too long for a log line: it is cut.
    fn log_left_out(&self, ctx: Context<'_>, view: &MessageView<'_>, left_out: &[HeaderName]) {
        let (group, topic) = (ctx.group, ctx.topic);
        let msg_id = LogId(&view.msg_id);
        let headers = HeaderNames(left_out);
        if first_time(&self.warned_left_out) {
            tracing::warn!(
                %group,
                %topic,
                %msg_id,
                %headers,
                "Metadata headers left out of the request: too large, or not valid header values (a json body still carries the values). Logged at debug from now on."
            );
        } else {
            tracing::debug!(%group, %topic, %msg_id, %headers, "Metadata headers left out.");
        }
    }

    /// Log fields for `ctx`: the cached ones when they match (always, for a webhook that
    /// serves one subscription), fresh ones otherwise.
    fn log_fields(&self, ctx: Context<'_>) -> LogFields {
        let fresh = || LogFields {
            group: ctx.group.into(),
            topic: ctx.topic.into(),
        };
        let cached = self.log.get_or_init(fresh);
        if &*cached.group == ctx.group && &*cached.topic == ctx.topic {
            cached.clone()
        } else {
            fresh()
        }
    }

    /// Sends one prepared request and classifies the answer: one outcome per message.
    async fn send(self: Arc<Self>, log: LogFields, prepared: Prepared) -> Vec<Outcome> {
        let count = prepared.ids.len();
        let Ok(mut request) = prepared.request else {
            // Encoding cannot succeed later either; retrying would only delay the DLQ.
            let outcomes = vec![Outcome::Drop; count];
            self.stats.record_outcomes(&outcomes);
            return outcomes;
        };
        let event_ids = std::mem::take(&mut request.event_ids);
        // This subscription's place first, then the shared one: a request waiting for the
        // shared cap then holds only its own subscription's place, never another's.
        // The semaphores are never closed; should one ever be, the request waits like one
        // behind an open circuit.
        let closed = || {
            vec![
                Outcome::Later {
                    after: Duration::from_secs(1)
                };
                count
            ]
        };
        let Ok(_own) = self.permits.acquire().await else {
            return closed();
        };
        let _shared = match &self.transport {
            Some(shared) => match shared.acquire().await {
                Some(place) => Some(place),
                None => return closed(),
            },
            None => None,
        };
        // Admission after the permit: the circuit may have opened while this request queued.
        let admission = self.breaker().admit(Instant::now());
        if let Admission::Wait(after) = admission {
            self.stats.record_request(RequestClass::NotSent, None);
            let outcomes = vec![Outcome::Later { after }; count];
            self.stats.record_outcomes(&outcomes);
            tracing::debug!(group = %log.group, topic = %log.topic, ?after, "Webhook paused; delivery deferred.");
            return outcomes;
        }
        let in_flight = self.stats.in_flight_guard();
        let sent = self.transmit(&prepared.ids, request).await;
        let latency = in_flight.finish();
        let unreachable = matches!(sent, Sent::Failed(Failure::Unreachable, _));
        let transport_lost = matches!(sent, Sent::Failed(Failure::Transport, _));
        let mut answer = match sent {
            Sent::Answer {
                status,
                headers,
                body,
                truncated,
            } => {
                self.stats
                    .record_request(RequestClass::of_status(status), Some(latency));
                let ids: Vec<&str> = prepared.ids.iter().map(String::as_str).collect();
                let mut answer = classify::classify_response(
                    &self.classes,
                    status,
                    &headers,
                    &body,
                    classify::MessageIds {
                        msg_ids: &ids,
                        event_ids: &event_ids,
                    },
                    self.retry_after_cap,
                    SystemTime::now(),
                );
                if truncated && classify::json_text(&body).starts_with(b"{") {
                    // A cut-off JSON answer may have said RETRY for some messages; never
                    // acknowledge what we could not read.
                    answer.outcomes = answer
                        .outcomes
                        .iter()
                        .map(|o| match o {
                            Outcome::Success => Outcome::Retry { delay_level: None },
                            other => *other,
                        })
                        .collect();
                    // Not "not understood, so accepted": it was retried. Nor broke off: the
                    // read was cut, and the warning below says so.
                    answer.unread = None;
                    answer.broke_off = false;
                    tracing::warn!(group = %log.group, topic = %log.topic, status, messages = count, "Webhook answer was JSON past the 1 MiB read; its messages are retried.");
                }
                if answer.broke_off {
                    if first_time(&self.warned_broke_off) {
                        tracing::warn!(group = %log.group, topic = %log.topic, status, messages = count, "Webhook answer was JSON that could not be read whole (it breaks off: the endpoint stopped mid-answer or its Content-Length was short; or, compressed, it inflates past 1 MiB); its messages are retried. Logged at debug from now on.");
                    } else {
                        tracing::debug!(group = %log.group, topic = %log.topic, status, messages = count, "Webhook answer was JSON that could not be read whole; its messages are retried.");
                    }
                }
                if let Some(reason) = answer.unread {
                    if first_time(&self.warned_unread) {
                        tracing::warn!(group = %log.group, topic = %log.topic, status, reason, "Webhook answer not understood; its messages count as accepted, as Dapr counts them. Logged at debug from now on.");
                    } else {
                        tracing::debug!(group = %log.group, topic = %log.topic, status, reason, "Webhook answer not understood; its messages count as accepted.");
                    }
                }
                log_answer(&log, status, count, &answer);
                answer
            }
            Sent::Failed(failure, error) => {
                let class = match failure {
                    Failure::Timeout => RequestClass::Timeout,
                    Failure::Unreachable | Failure::Transport => RequestClass::TransportError,
                };
                self.stats.record_request(class, Some(latency));
                tracing::warn!(group = %log.group, topic = %log.topic, messages = count, kind = class.as_str(), %error, "Webhook request failed.");
                classify::classify_failure(failure, count)
            }
        };
        let reopens_in = {
            let now = Instant::now();
            let mut breaker = self.breaker();
            let before = breaker.state(now);
            breaker.record(now, admission, answer.healthy);
            if let Some(pause) = answer.pause {
                breaker.pause(now, pause);
            }
            let after = breaker.state(now);
            let reopens_in = breaker.open_for(now);
            drop(breaker);
            if before != after {
                tracing::warn!(group = %log.group, topic = %log.topic, from = before.as_str(), to = after.as_str(), "Webhook circuit changed state.");
            }
            reopens_in
        };
        // Not the messages' fault: the endpoint could not be reached at all (nothing was sent),
        // or it answered the half-open probe of an open circuit with a failure. Offer them again
        // without spending a reconsume attempt, so a dead application never drains the topic
        // into the DLQ. A connection lost after the request was written is not deferred, not
        // even on the probe: the request may have crashed the application, and deferring would
        // offer it again forever instead of letting it reach the DLQ.
        // A probe given up on and replaced no longer decides the circuit, but its failure is
        // still one against an endpoint the circuit found failing: deferred too, rather than
        // spend an attempt, so a dead application never drains the topic into the DLQ.
        let failed_probe = matches!(admission, Admission::Probe(_)) && !transport_lost;
        if !answer.healthy && (unreachable || failed_probe) {
            // A failed probe's messages come back after the circuit next half-opens, so another
            // waiting request probes first: one message that fails on its own (a 500 for
            // that message only) must not hold the circuit open for every other.
            let after = if failed_probe {
                reopens_in + UNREACHABLE_RETRY_AFTER
            } else {
                UNREACHABLE_RETRY_AFTER
            };
            for o in &mut answer.outcomes {
                if matches!(o, Outcome::Retry { .. }) {
                    *o = Outcome::Later { after };
                }
            }
        }
        self.stats.record_outcomes(&answer.outcomes);
        answer.outcomes
    }

    /// Performs the HTTP exchange under the request timeout.
    async fn transmit(&self, ids: &[String], request: EncodedRequest) -> Sent {
        let EncodedRequest {
            headers: encoded,
            body,
            ..
        } = request;
        let mut headers = encoded;
        // Encoded headers (content type, metadata) win over configured ones of the same name;
        // authorization stays as configured because encoding never sets it.
        for name in self.headers.keys() {
            if !headers.contains_key(name) {
                for value in self.headers.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        if let Some(secret) = &self.signing {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let id = sign::delivery_id(ids.iter().map(String::as_str));
            secret.sign(&mut headers, &id, timestamp, &body);
        }
        if !headers.contains_key(HOST) {
            headers.insert(HOST, self.host.clone());
        }
        // The request is assembled in place: a builder would copy every header once more.
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.origin.clone();
        *request.headers_mut() = headers;
        // One timer covers the whole exchange, connection to the last byte of the answer.
        let handed = AtomicBool::new(false);
        let exchange = self.pool.exchange(&self.endpoint, request, &handed);
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => Sent::Answer {
                status: answer.parts.status.as_u16(),
                headers: answer.parts.headers,
                body: answer.body,
                truncated: answer.truncated,
            },
            Ok(Err(error)) => failed(&error),
            // Still resolving or connecting (a blackholed address, a hung DNS lookup): nothing
            // reached the application, so no attempt may be spent on it.
            Err(_) if !handed.load(Ordering::Relaxed) => Sent::Failed(
                Failure::Unreachable,
                "timed out connecting; nothing was sent".to_owned(),
            ),
            Err(_) => Sent::Failed(Failure::Timeout, "request timed out".to_owned()),
        }
    }
}

/// Removes user info from `url` and turns it into `Authorization: Basic` (what curl and browsers
/// do with `http://user:password@host/`): credentials never go into the request line, and a
/// URL with them keeps working.
fn take_basic_auth(url: &mut Url) -> Option<HeaderValue> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = format!(
        "{}:{}",
        decode(url.username()),
        url.password().map(decode).unwrap_or_default()
    );
    // Infallible for http(s) URLs, which always have a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Appends `chunk` to `body` up to [`MAX_ANSWER_BYTES`]; `false` when the chunk did not fit
/// (its head was kept, the rest is dropped and the answer counts as truncated).
fn append_limited(body: &mut Vec<u8>, chunk: &[u8]) -> bool {
    let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
    match chunk.get(..room) {
        Some(head) if head.len() < chunk.len() => {
            body.extend_from_slice(head);
            false
        }
        _ => {
            body.extend_from_slice(chunk);
            true
        }
    }
}

/// A failed exchange: unreachable when the request was never sent (connecting, the TLS or
/// HTTP handshake failed or timed out, or the connection closed as the request was handed to
/// it) or never left the server's TLS layer (below); else a timeout when any error in the
/// chain is one (an I/O timeout); a transport failure for the rest. The text never holds the
/// URL: neither hyper's errors nor the pool's carry it.
fn failed(err: &(dyn std::error::Error + 'static)) -> Sent {
    let mut timed_out = false;
    let mut refused_handshake = false;
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            // `io::Error::source` skips the error it wraps; rustls's is only seen here.
            refused_handshake |= io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
                .is_some_and(handshake_refused);
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            timed_out |= hyper.is_timeout();
        }
        current = e.source();
    }
    let not_sent = matches!(
        err.downcast_ref::<pool::ExchangeError>(),
        Some(
            pool::ExchangeError::Connect(_)
                | pool::ExchangeError::Tls(_)
                | pool::ExchangeError::NotSent(_)
        )
    );
    // Nothing sent beats timed out: a connect that timed out never reached the application.
    let kind = if not_sent || refused_handshake {
        Failure::Unreachable
    } else if timed_out {
        Failure::Timeout
    } else {
        Failure::Transport
    };
    Sent::Failed(kind, error_chain(err))
}

/// Whether the server refused the TLS handshake: an alert about our certificate or the
/// handshake itself. With TLS 1.3 the client finishes its side of the handshake before the
/// server has checked the client's certificate, so the request is written and the refusal comes
/// as the answer is read; the server's TLS layer never passed the request on, so it counts as
/// not sent (a missing or expired client certificate waits instead of spending attempts).
fn handshake_refused(error: &tokio_rustls::rustls::Error) -> bool {
    use tokio_rustls::rustls::{AlertDescription as A, Error};
    matches!(
        error,
        Error::AlertReceived(
            A::HandshakeFailure
                | A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
        )
    )
}

/// An error and its sources, `: `-separated (the pool's own message is only the outermost,
/// e.g. `connect`).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Whether `flag` is set for the first time now. Read before it is swapped, so the common case
/// (long set) does not write the shared cache line for every message.
fn first_time(flag: &AtomicBool) -> bool {
    !flag.load(Ordering::Relaxed) && !flag.swap(true, Ordering::Relaxed)
}

/// Header names, `, `-separated, formatted only when a log event is enabled.
struct HeaderNames<'a>(&'a [HeaderName]);

impl fmt::Display for HeaderNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name.as_str())?;
        }
        Ok(())
    }
}

fn log_answer(log: &LogFields, status: u16, count: usize, answer: &Answer) {
    let failed = answer
        .outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Success))
        .count();
    if failed == 0 {
        tracing::trace!(group = %log.group, topic = %log.topic, status, messages = count, "Webhook delivered.");
    } else {
        tracing::info!(group = %log.group, topic = %log.topic, status, messages = count, failed, "Webhook did not accept every message.");
    }
}

#[cfg(test)]
mod tests;

/// The rustls configuration for `https` endpoints: the public web roots plus `ca_file` (or no
/// verification at all with `insecure_skip_verify`), the client identity when configured, and
/// ALPN `http/1.1` (the only protocol the client speaks).
fn tls_config(tls: &WebhookTls) -> Result<ClientConfig, WebhookError> {
    let provider = Arc::new(ring_provider::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(WebhookError::Client)?;
    // The CA file is read and checked even when verification is off, so a broken path is
    // reported at startup rather than when someone turns verification on.
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &tls.ca_file {
        let certs = crate::client::read_certs(path, "ca_file")
            .map_err(|e| pem_error(TlsSetting::CaFile, e))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| tls_error(TlsSetting::CaFile, path, e.to_string()))?;
        }
    }
    let builder = if tls.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(
            crate::client::TlsConfig::accept_any_server_cert(provider),
        )
    } else {
        builder.with_root_certificates(roots)
    };
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = crate::client::read_certs(cert, "client_cert")
                .map_err(|e| pem_error(TlsSetting::ClientCert, e))?;
            let key = crate::client::read_key(key, "client_key")
                .map_err(|e| pem_error(TlsSetting::ClientKey, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error(TlsSetting::ClientCert, cert, e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(path), None) => {
            return Err(tls_error(
                TlsSetting::ClientKey,
                path,
                "client_cert is set without client_key; they must be set together".to_owned(),
            ));
        }
        (None, Some(path)) => {
            return Err(tls_error(
                TlsSetting::ClientCert,
                path,
                "client_key is set without client_cert; they must be set together".to_owned(),
            ));
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn tls_error(setting: TlsSetting, path: &std::path::Path, reason: String) -> WebhookError {
    WebhookError::Tls {
        setting,
        path: path.display().to_string(),
        reason,
    }
}

/// An error of the broker client's PEM readers (crate::client) about `setting`'s file.
fn pem_error(setting: TlsSetting, error: crate::client::ClientError) -> WebhookError {
    match error {
        crate::client::ClientError::Tls { path, reason, .. } => WebhookError::Tls {
            setting,
            path: path.map(|p| p.display().to_string()).unwrap_or_default(),
            reason,
        },
        other => WebhookError::Tls {
            setting,
            path: String::new(),
            reason: other.to_string(),
        },
    }
}

/// The HTTP path (src/webhook/pool.rs): what goes on the wire, the pool, TLS, answer limits and
/// error mapping, against hand-written servers (so the bytes the endpoint sees are checked
/// as-is).
#[cfg(test)]
mod transport_tests;
