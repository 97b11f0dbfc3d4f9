//! The `Handler` (`crate::consumer::Handler`) that delivers batches to an HTTP endpoint.
//!
//! [`Webhook`] turns each batch into one request (formats `json`, `cloudevents-batch`) or one
//! request per message (`raw`, `cloudevents`), sends them through a keep-alive pool with a
//! per-request timeout and at most `concurrency` requests in flight per subscription, and maps
//! every answer to per-message outcomes (architecture.md section 5). The pieces are pure and
//! tested on their own: [`encode`] (requests), [`classify`] (answers), [`breaker`] (circuit
//! breaker and `Retry-After` pause), [`sign`] (Standard Webhooks, bearer token); [`stats`] holds
//! the counters the metrics layer exposes.
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
pub mod sign;
pub mod stats;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::consumer::{Batch, ConsumeMode, Handler, Outcome};

pub use breaker::{BreakerConfig, CircuitState};
pub use classify::{StatusClasses, StatusPattern};
pub use encode::Format;
pub use sign::{BearerToken, SigningSecret};
pub use stats::WebhookStats;

use breaker::{Admission, Breaker};
use classify::{Answer, Failure};
use encode::{Context, EncodedRequest, Encoder, MessageView};
use stats::RequestClass;

/// Answers larger than this are not read further: classification needs a few kilobytes at most
/// (a `statuses` array for one batch), and an endpoint streaming a huge page must not exhaust
/// memory.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// When messages that could not be delivered (endpoint unreachable, probe failed) are offered
/// again; the circuit breaker decides whether they are then sent or keep waiting.
const UNREACHABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Settings of one webhook (one subscription). The configuration layer maps its tree onto this.
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
    /// Defaults for `url`: POST, json, 30 s timeout, 16 concurrent requests, default status
    /// classes, `Retry-After` capped at 60 s, default breaker.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: Method::POST,
            format: Format::Json,
            timeout: Duration::from_secs(30),
            concurrency: 16,
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

/// A URL for display: scheme, host, port and path; user info and query (which may carry
/// credentials) are replaced.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                // Infallible for URLs with a host; ignore the error for the rest.
                let _ = u.set_username("redacted");
                let _ = u.set_password(None);
            }
            if u.query().is_some() {
                u.set_query(Some("redacted"));
            }
            u.to_string()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
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
    #[error("webhook TLS {what} {path}: {reason}")]
    Tls {
        /// `ca_file`, `client_cert` or `client_key`.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
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
    client: reqwest::Client,
    url: Url,
    method: Method,
    encoder: Encoder,
    /// Configured headers plus authorization, added to every request.
    headers: HeaderMap,
    signing: Option<SigningSecret>,
    classes: StatusClasses,
    timeout: Duration,
    retry_after_cap: Duration,
    permits: Semaphore,
    breaker: Mutex<Breaker>,
    stats: Arc<WebhookStats>,
    /// The log fields of the subscription this webhook serves (one per webhook in practice),
    /// kept so a request does not allocate them again.
    log: std::sync::OnceLock<LogFields>,
}

impl Webhook {
    /// Builds the client and validates `options`.
    ///
    /// # Errors
    /// [`WebhookError`] for a bad URL, header or option, or when the HTTP client cannot be
    /// built.
    pub fn new(options: WebhookOptions) -> Result<Self, WebhookError> {
        let url = Url::parse(&options.url).map_err(|e| WebhookError::InvalidUrl {
            url: redact_url(&options.url),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::InvalidUrl {
                url: redact_url(&options.url),
                reason: "scheme must be http or https".to_owned(),
            });
        }
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
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(options.concurrency)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .connect_timeout(options.timeout)
            // A redirect is an answer (3xx -> retry by default), never followed: following it
            // would resend signed bodies to wherever the endpoint points.
            .redirect(reqwest::redirect::Policy::none());
        let client = apply_tls(client, &options.tls)?
            .build()
            .map_err(WebhookError::Client)?;
        let encoder = Encoder::new(
            options.format,
            options.cloudevents_type,
            options.cloudevents_source,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                url,
                method: options.method,
                encoder,
                headers,
                signing: options.signing_secret,
                classes: options.status_classes,
                timeout: options.timeout,
                retry_after_cap: options.retry_after_cap,
                permits: Semaphore::new(options.concurrency),
                breaker: Mutex::new(Breaker::new(options.breaker, options.timeout)),
                stats: Arc::new(WebhookStats::default()),
                log: std::sync::OnceLock::new(),
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
        let ids = views.iter().map(|v| v.msg_id.clone()).collect();
        let request = self.inner.encoder.encode(ctx, views).map_err(|err| {
            tracing::error!(%err, group = ctx.group, topic = ctx.topic, "Cannot encode webhook request.");
        });
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
            .field("url", &redact_url(self.url.as_str()))
            .field("method", &self.method)
            .field("encoder", &self.encoder)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("signing", &self.signing)
            .field("timeout", &self.timeout)
            .field("permits", &self.permits.available_permits())
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker's state is valid after any panic (plain fields), so poisoning is ignored.
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
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
        let Ok(request) = prepared.request else {
            // Encoding cannot succeed later either; retrying would only delay the DLQ.
            let outcomes = vec![Outcome::Drop; count];
            self.stats.record_outcomes(&outcomes);
            return outcomes;
        };
        let Ok(_permit) = self.permits.acquire().await else {
            // The semaphore is never closed; treat it like an open circuit if it ever is.
            return vec![
                Outcome::Later {
                    after: Duration::from_secs(1)
                };
                count
            ];
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
        let started = Instant::now();
        let sent = {
            let _in_flight = self.stats.in_flight_guard();
            self.transmit(&prepared.ids, request).await
        };
        let latency = started.elapsed();
        let unreachable = matches!(sent, Sent::Failed(Failure::Transport, _));
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
                    &ids,
                    self.retry_after_cap,
                    SystemTime::now(),
                );
                if truncated && body.trim_ascii_start().starts_with(b"{") {
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
                }
                log_answer(&log, status, count, &answer);
                answer
            }
            Sent::Failed(failure, error) => {
                let class = match failure {
                    Failure::Timeout => RequestClass::Timeout,
                    Failure::Transport => RequestClass::TransportError,
                };
                self.stats.record_request(class, Some(latency));
                tracing::warn!(group = %log.group, topic = %log.topic, messages = count, kind = class.as_str(), %error, "Webhook request failed.");
                classify::classify_failure(failure, count)
            }
        };
        // Not the messages' fault: the endpoint could not be reached at all, or it failed the
        // half-open probe of an open circuit. Offer them again without spending a reconsume
        // attempt, so a dead application never drains the topic into the DLQ.
        if !answer.healthy && (unreachable || admission == Admission::Probe) {
            for o in &mut answer.outcomes {
                if matches!(o, Outcome::Retry { .. }) {
                    *o = Outcome::Later {
                        after: UNREACHABLE_RETRY_AFTER,
                    };
                }
            }
        }
        {
            let now = Instant::now();
            let mut breaker = self.breaker();
            let before = breaker.state(now);
            breaker.record(now, admission, answer.healthy);
            if let Some(pause) = answer.pause {
                breaker.pause(now, pause);
            }
            let after = breaker.state(now);
            drop(breaker);
            if before != after {
                tracing::warn!(group = %log.group, topic = %log.topic, from = before.as_str(), to = after.as_str(), "Webhook circuit changed state.");
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
        // The request is assembled in place: the builder would copy every header once more.
        let mut request = reqwest::Request::new(self.method.clone(), self.url.clone());
        *request.headers_mut() = headers;
        *request.body_mut() = Some(body.into());
        let exchange = async {
            let mut response = self.client.execute(request).await?;
            let status = response.status().as_u16();
            let headers = std::mem::take(response.headers_mut());
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = response.chunk().await? {
                let room = MAX_ANSWER_BYTES - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Sent::Answer {
                status,
                headers,
                body: Bytes::from(body),
                truncated,
            })
        };
        // One timer covers the whole exchange, connection to the last byte of the answer
        // (a second, per-request timer inside the client would double the timer work).
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(sent)) => sent,
            Ok(Err(err)) => {
                let kind = if err.is_timeout() {
                    Failure::Timeout
                } else {
                    Failure::Transport
                };
                Sent::Failed(kind, error_chain(&err.without_url()))
            }
            Err(_) => Sent::Failed(Failure::Timeout, "request timed out".to_owned()),
        }
    }
}

/// An error and its sources, `: `-separated (reqwest's own message is only the outermost).
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

/// Adds the custom CA, the client identity and the verification switch to the HTTP client.
fn apply_tls(
    mut builder: reqwest::ClientBuilder,
    tls: &WebhookTls,
) -> Result<reqwest::ClientBuilder, WebhookError> {
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| WebhookError::Tls {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    if let Some(path) = &tls.ca_file {
        let pem = read("ca_file", path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| WebhookError::Tls {
            what: "ca_file",
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if certs.is_empty() {
            return Err(WebhookError::Tls {
                what: "ca_file",
                path: path.display().to_string(),
                reason: "no PEM certificate in the file".to_owned(),
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = read("client_cert", cert)?;
            pem.push(b'\n');
            pem.extend(read("client_key", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| WebhookError::Tls {
                what: "client_cert",
                path: cert.display().to_string(),
                reason: e.to_string(),
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        (Some(path), None) | (None, Some(path)) => {
            return Err(WebhookError::Tls {
                what: "client_cert",
                path: path.display().to_string(),
                reason: "client_cert and client_key must be set together".to_owned(),
            });
        }
    }
    Ok(builder.danger_accept_invalid_certs(tls.insecure_skip_verify))
}
