//! The webhook transport against hand-written HTTP and TLS servers: what goes on the wire,
//! connection reuse, redirects not followed, answer size limit, failure classification and TLS
//! settings.

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::*;

/// Guards every await: a hang fails the test instead of blocking the suite.
const LIMIT: Duration = Duration::from_secs(20);

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/client/testdata")
        .join(name)
}

/// One request as received: the connection it came on, its head (lowercased) and body.
#[derive(Debug)]
struct Received {
    connection: usize,
    head: String,
    body: Vec<u8>,
    alpn: Option<Vec<u8>>,
}

/// Reads one request (head and `content-length` body); `None` at a clean end of stream.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut byte = [0u8; 1024];
        let n = stream.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("content-length"));
    let mut body = buf.split_off(end);
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

/// Serves requests on one connection, answering each with `answer`.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    connection: usize,
    alpn: Option<Vec<u8>>,
    answer: Arc<Vec<u8>>,
    seen: mpsc::UnboundedSender<Received>,
) {
    while let Some((head, body)) = read_request(&mut stream).await {
        let _ = seen.send(Received {
            connection,
            head,
            body,
            alpn: alpn.clone(),
        });
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// A test server: its port, what it saw, and its task.
type TestServer = (
    u16,
    mpsc::UnboundedReceiver<Received>,
    tokio::task::JoinHandle<()>,
);

/// A listener on a free port of 127.0.0.1, and the port.
async fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

/// A server on 127.0.0.1 answering every request with `answer`, over TLS with the test
/// certificate (`localhost`, `127.0.0.1`) when `tls` is set. Returns the port and what it
/// saw.
async fn server(answer: &[u8], tls: bool) -> TestServer {
    let (listener, port) = listen().await;
    let acceptor = tls.then(|| {
        let certs = crate::client::read_certs(&testdata("leaf.pem"), "ca_file").expect("leaf");
        let key = crate::client::read_key(&testdata("leaf.key"), "client_key").expect("key");
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(ring_provider::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    });
    let answer = Arc::new(answer.to_vec());
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        for connection in 0.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (answer, tx) = (Arc::clone(&answer), tx.clone());
            match &acceptor {
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    connections.spawn(async move {
                        // A client that rejects the certificate ends the handshake.
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                            serve(stream, connection, alpn, answer, tx).await;
                        }
                    });
                }
                None => {
                    connections.spawn(serve(tcp, connection, None, answer, tx));
                }
            }
        }
    });
    (port, rx, task)
}

fn request(body: &'static [u8]) -> EncodedRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    EncodedRequest {
        headers,
        body: Bytes::from_static(body),
        left_out: Vec::new(),
        event_ids: Vec::new(),
    }
}

async fn transmit(webhook: &Webhook, body: &'static [u8]) -> Sent {
    let ids = vec!["m1".to_owned()];
    tokio::time::timeout(LIMIT, webhook.inner.transmit(&ids, request(body)))
        .await
        .expect("exchange hung")
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(LIMIT, seen.recv())
        .await
        .expect("server saw nothing")
        .expect("server gone")
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[tokio::test]
async fn request_on_the_wire_has_host_origin_form_and_no_credentials() {
    let (port, mut seen, task) = server(OK, false).await;
    let mut options =
        WebhookOptions::new(format!("http://user:pw@127.0.0.1:{port}/hook?token=s3cr3t"));
    options.headers = vec![("x-api-key".to_owned(), "k".to_owned())];
    let webhook = Webhook::new(options).expect("webhook");
    match transmit(&webhook, b"{\"a\":1}").await {
        Sent::Answer {
            status,
            body,
            truncated,
            ..
        } => {
            assert_eq!(status, 200);
            assert_eq!(&body[..], b"ok");
            assert!(!truncated);
        }
        other => panic!("unexpected {other:?}"),
    }
    let got = next(&mut seen).await;
    let mut lines = got.head.lines();
    assert_eq!(lines.next(), Some("post /hook?token=s3cr3t http/1.1"));
    let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    for expected in [
        format!("host: 127.0.0.1:{port}"),
        "accept: */*".to_owned(),
        "accept-encoding: identity".to_owned(),
        "content-type: application/json".to_owned(),
        "content-length: 7".to_owned(),
        "x-api-key: k".to_owned(),
    ] {
        assert!(
            headers.contains(&expected.as_str()),
            "{expected}: {headers:?}"
        );
    }
    // User info becomes Basic authentication ("user:pw") and stays out of the request line.
    assert!(
        headers.contains(&"authorization: basic dxnlcjpwdw=="),
        "{headers:?}"
    );
    assert!(!got.head.contains("user:pw"));
    assert_eq!(got.body, b"{\"a\":1}");
    task.abort();
}

#[tokio::test]
async fn configured_accept_headers_win_and_method_is_kept() {
    let (port, mut seen, task) = server(OK, false).await;
    let mut options = WebhookOptions::new(format!("http://127.0.0.1:{port}/"));
    options.method = Method::PUT;
    options.headers = vec![
        ("Accept".to_owned(), "application/json".to_owned()),
        ("Accept-Encoding".to_owned(), "gzip".to_owned()),
    ];
    let webhook = Webhook::new(options).expect("webhook");
    assert!(matches!(
        transmit(&webhook, b"x").await,
        Sent::Answer { status: 200, .. }
    ));
    let got = next(&mut seen).await;
    assert!(got.head.starts_with("put / http/1.1\r\n"), "{}", got.head);
    assert_eq!(got.head.matches("accept:").count(), 1, "{}", got.head);
    assert!(got.head.contains("accept: application/json\r\n"));
    assert_eq!(
        got.head.matches("accept-encoding:").count(),
        1,
        "{}",
        got.head
    );
    assert!(got.head.contains("accept-encoding: gzip\r\n"));
    task.abort();
}

#[tokio::test]
async fn connections_are_kept_alive_and_reused() {
    let (port, mut seen, task) = server(OK, false).await;
    let webhook =
        Webhook::new(WebhookOptions::new(format!("http://127.0.0.1:{port}/hook"))).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            transmit(&webhook, b"x").await,
            Sent::Answer { status: 200, .. }
        ));
    }
    let connections: Vec<usize> = [
        next(&mut seen).await,
        next(&mut seen).await,
        next(&mut seen).await,
    ]
    .iter()
    .map(|r| r.connection)
    .collect();
    assert_eq!(connections, vec![0, 0, 0]);
    task.abort();
}

/// Webhooks with a shared [`Transport`] take turns on one kept-alive connection; without one,
/// each opens its own.
#[tokio::test]
async fn webhooks_sharing_a_transport_share_connections() {
    for (shared, expected) in [(true, vec![0, 0, 0, 0]), (false, vec![0, 1, 0, 1])] {
        let (port, mut seen, task) = server(OK, false).await;
        let transport = Transport::new(4);
        let hooks: Vec<Webhook> = ["/a", "/b"]
            .iter()
            .map(|path| {
                let mut o = WebhookOptions::new(format!("http://127.0.0.1:{port}{path}"));
                o.transport = shared.then(|| transport.clone());
                Webhook::new(o).unwrap()
            })
            .collect();
        let mut connections = Vec::new();
        for _ in 0..2 {
            for hook in &hooks {
                assert!(matches!(
                    transmit(hook, b"x").await,
                    Sent::Answer { status: 200, .. }
                ));
                connections.push(next(&mut seen).await.connection);
            }
        }
        assert_eq!(connections, expected, "shared transport: {shared}");
        task.abort();
    }
}

#[tokio::test]
async fn redirects_are_answers_not_followed() {
    let (port, mut seen, task) = server(
        b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/x\r\ncontent-length: 0\r\n\r\n",
        false,
    )
    .await;
    let webhook =
        Webhook::new(WebhookOptions::new(format!("http://127.0.0.1:{port}/hook"))).unwrap();
    match transmit(&webhook, b"x").await {
        Sent::Answer {
            status, headers, ..
        } => {
            assert_eq!(status, 307);
            assert_eq!(headers["location"], "http://127.0.0.1:1/x");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(next(&mut seen).await.head.starts_with("post /hook "));
    task.abort();
}

#[tokio::test]
async fn answers_are_cut_at_the_limit() {
    let extra = 10;
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
        MAX_ANSWER_BYTES + extra
    )
    .into_bytes();
    answer.resize(answer.len() + MAX_ANSWER_BYTES + extra, b'a');
    let (port, _seen, task) = server(&answer, false).await;
    let webhook =
        Webhook::new(WebhookOptions::new(format!("http://127.0.0.1:{port}/hook"))).unwrap();
    match transmit(&webhook, b"x").await {
        Sent::Answer {
            body, truncated, ..
        } => {
            assert!(truncated);
            assert_eq!(body.len(), MAX_ANSWER_BYTES);
        }
        other => panic!("unexpected {other:?}"),
    }
    task.abort();
}

#[test]
fn append_limited_keeps_exactly_the_limit() {
    let mut body = Vec::new();
    assert!(append_limited(&mut body, &vec![1; MAX_ANSWER_BYTES - 1]));
    assert!(append_limited(&mut body, &[2]));
    assert_eq!(body.len(), MAX_ANSWER_BYTES);
    assert!(append_limited(&mut body, &[]));
    assert!(!append_limited(&mut body, &[3]));
    assert_eq!(body.len(), MAX_ANSWER_BYTES);
    assert_eq!(body.last(), Some(&2));

    let mut body = vec![0; 10];
    assert!(!append_limited(&mut body, &vec![4; MAX_ANSWER_BYTES]));
    assert_eq!(body.len(), MAX_ANSWER_BYTES);
    assert_eq!(body[10], 4);
}

#[tokio::test]
async fn refused_connection_is_unreachable_and_named_without_the_url() {
    let (listener, port) = listen().await;
    drop(listener);
    let webhook = Webhook::new(WebhookOptions::new(format!(
        "http://user:pw@127.0.0.1:{port}/secret-path?token=s3cr3t"
    )))
    .unwrap();
    match transmit(&webhook, b"x").await {
        Sent::Failed(Failure::Unreachable, text) => {
            // The source chain is there (the OS reason), the URL is not.
            assert!(text.contains("refused"), "{text}");
            for secret in ["pw", "s3cr3t", "secret-path", &port.to_string()] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A server that accepts connections and holds them, never reading or answering.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let (listener, port) = listen().await;
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    (port, task)
}

#[tokio::test]
async fn silent_endpoint_times_out() {
    let (port, task) = silent_server().await;
    let mut options = WebhookOptions::new(format!("http://127.0.0.1:{port}/hook"));
    options.timeout = Duration::from_millis(200);
    let webhook = Webhook::new(options).unwrap();
    assert!(matches!(
        transmit(&webhook, b"x").await,
        Sent::Failed(Failure::Timeout, _)
    ));
    task.abort();
}

/// A TLS handshake that never completes (a blackholed or wedged endpoint) runs out the request
/// timeout before anything was sent: unreachable, so no reconsume attempt is spent on it.
#[tokio::test]
async fn a_timeout_before_the_request_is_handed_over_is_unreachable() {
    let (port, task) = silent_server().await;
    let mut options = https_options(port, WebhookTls::default());
    options.timeout = Duration::from_millis(200);
    let webhook = Webhook::new(options).unwrap();
    match transmit(&webhook, b"x").await {
        Sent::Failed(Failure::Unreachable, text) => {
            assert!(text.contains("nothing was sent"), "{text}");
        }
        other => panic!("unexpected {other:?}"),
    }
    task.abort();
}

/// An error with one source, like the pool's `connect` wrapper.
#[derive(Debug, thiserror::Error)]
#[error("outer")]
struct Outer(#[source] std::io::Error);

#[test]
fn timeouts_anywhere_in_the_chain_of_a_sent_request_are_timeouts() {
    let connect_timeout = Outer(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "connect timed out",
    ));
    match failed(&connect_timeout) {
        Sent::Failed(Failure::Timeout, text) => assert_eq!(text, "outer: connect timed out"),
        other => panic!("unexpected {other:?}"),
    }
    // Connecting timed out: nothing was sent, which decides.
    let connect = pool::ExchangeError::Connect(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "connect timed out",
    ));
    assert!(matches!(
        failed(&connect),
        Sent::Failed(Failure::Unreachable, _)
    ));
    let refused = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert!(matches!(
        failed(&refused),
        Sent::Failed(Failure::Transport, _)
    ));
}

fn https_options(port: u16, tls: WebhookTls) -> WebhookOptions {
    let mut options = WebhookOptions::new(format!("https://127.0.0.1:{port}/hook"));
    options.timeout = Duration::from_secs(5);
    options.tls = tls;
    options
}

#[tokio::test]
async fn https_with_custom_ca_offers_http11_alpn() {
    let (port, mut seen, task) = server(OK, true).await;
    let tls = WebhookTls {
        ca_file: Some(testdata("ca.pem")),
        ..WebhookTls::default()
    };
    let webhook = Webhook::new(https_options(port, tls)).unwrap();
    assert!(matches!(
        transmit(&webhook, b"x").await,
        Sent::Answer { status: 200, .. }
    ));
    let got = next(&mut seen).await;
    // The server also offers h2: only http/1.1 may be chosen.
    assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(got.head.contains(&format!("host: 127.0.0.1:{port}\r\n")));
    task.abort();
}

#[tokio::test]
async fn unknown_issuer_fails_unless_verification_is_off() {
    let (port, mut seen, task) = server(OK, true).await;
    // Web roots only: the test CA is unknown.
    let webhook = Webhook::new(https_options(port, WebhookTls::default())).unwrap();
    // Nothing was sent: a TLS failure is an unreachable endpoint (messages wait, no attempt spent).
    match transmit(&webhook, b"x").await {
        Sent::Failed(Failure::Unreachable, text) => {
            assert!(text.to_lowercase().contains("certificate"), "{text}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let insecure = WebhookTls {
        insecure_skip_verify: true,
        ..WebhookTls::default()
    };
    let webhook = Webhook::new(https_options(port, insecure)).unwrap();
    assert!(matches!(
        transmit(&webhook, b"x").await,
        Sent::Answer { status: 200, .. }
    ));
    assert_eq!(next(&mut seen).await.connection, 1);
    task.abort();
}

fn tls_failure(tls: WebhookTls) -> (TlsSetting, String, String) {
    match Webhook::new(https_options(1, tls)) {
        Err(WebhookError::Tls {
            setting,
            path,
            reason,
        }) => (setting, path, reason),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_tls_files_are_configuration_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, b"not a pem").expect("write");
    let shown = garbage.display().to_string();

    let (what, path, reason) = tls_failure(WebhookTls {
        ca_file: Some(garbage.clone()),
        ..WebhookTls::default()
    });
    assert_eq!((what, path.as_str()), (TlsSetting::CaFile, shown.as_str()));
    assert!(reason.contains("no PEM certificate"), "{reason}");

    // A key file without a key (here: a certificate) is the key's fault.
    let (what, path, reason) = tls_failure(WebhookTls {
        client_cert: Some(testdata("leaf.pem")),
        client_key: Some(testdata("leaf.pem")),
        ..WebhookTls::default()
    });
    assert_eq!(what, TlsSetting::ClientKey);
    assert_eq!(path, testdata("leaf.pem").display().to_string());
    assert!(reason.contains("no PEM private key"), "{reason}");

    let (what, _, reason) = tls_failure(WebhookTls {
        client_cert: Some(testdata("leaf.pem")),
        client_key: Some(PathBuf::from("/nonexistent/leaf.key")),
        ..WebhookTls::default()
    });
    assert_eq!(what, TlsSetting::ClientKey);
    assert!(!reason.is_empty());

    let (what, path, _) = tls_failure(WebhookTls {
        client_cert: Some(garbage.clone()),
        client_key: Some(testdata("leaf.key")),
        ..WebhookTls::default()
    });
    assert_eq!(
        (what, path.as_str()),
        (TlsSetting::ClientCert, shown.as_str())
    );

    let (what, _, reason) = tls_failure(WebhookTls {
        client_key: Some(testdata("leaf.key")),
        ..WebhookTls::default()
    });
    assert_eq!(what, TlsSetting::ClientCert);
    assert!(reason.contains("together"), "{reason}");

    // Verification off still reads the CA file: a broken path shows at startup.
    let (what, _, _) = tls_failure(WebhookTls {
        ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
        insecure_skip_verify: true,
        ..WebhookTls::default()
    });
    assert_eq!(what, TlsSetting::CaFile);
}

#[test]
fn full_tls_config_builds_with_http11_alpn() {
    let config = tls_config(&WebhookTls {
        ca_file: Some(testdata("ca.pem")),
        client_cert: Some(testdata("leaf.pem")),
        client_key: Some(testdata("leaf.key")),
        insecure_skip_verify: false,
    })
    .expect("config");
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(config.client_auth_cert_resolver.has_certs());
}

#[test]
fn url_user_info_becomes_basic_auth_and_leaves_the_url() {
    use base64::Engine as _;
    let mut url = Url::parse("https://us%40er:p%3Aw@example.com/hook").unwrap();
    let value = take_basic_auth(&mut url).expect("credentials");
    let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(decoded, b"us@er:p:w");
    assert!(value.is_sensitive());
    assert_eq!(url.as_str(), "https://example.com/hook");
    let mut plain = Url::parse("http://example.com/").unwrap();
    assert!(take_basic_auth(&mut plain).is_none());
}

#[tokio::test]
async fn a_configured_bearer_token_wins_over_url_user_info() {
    let (port, mut seen, task) = server(OK, false).await;
    let mut options = WebhookOptions::new(format!("http://user:pw@127.0.0.1:{port}/hook"));
    options.bearer_token = Some(BearerToken::new("t0ken").expect("token"));
    let webhook = Webhook::new(options).expect("webhook");
    assert!(matches!(
        transmit(&webhook, b"{}").await,
        Sent::Answer { status: 200, .. }
    ));
    let got = next(&mut seen).await;
    assert!(
        got.head.contains("authorization: bearer t0ken"),
        "{}",
        got.head
    );
    assert!(!got.head.contains("basic"));
    task.abort();
}

/// A server that answers each connection's first request with `OK` and then: closes the
/// connection (`close_after_answer`), or reads the second request and closes without an
/// answer. Reports every request it read.
async fn one_answer_per_connection(close_after_answer: bool) -> TestServer {
    let (listener, port) = listen().await;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        for connection in 0.. {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            connections.spawn(async move {
                let report = |(head, body)| {
                    let _ = tx.send(Received {
                        connection,
                        head,
                        body,
                        alpn: None,
                    });
                };
                let Some(first) = read_request(&mut tcp).await else {
                    return;
                };
                report(first);
                if tcp.write_all(OK).await.is_err() || close_after_answer {
                    return;
                }
                if let Some(second) = read_request(&mut tcp).await {
                    report(second);
                }
            });
        }
    });
    (port, rx, task)
}

/// The endpoint closing a kept-alive connection while it is idle (its keep-alive timeout)
/// costs nothing: the next request notices and goes out on a new connection.
#[tokio::test]
async fn an_idle_connection_the_endpoint_closed_is_replaced() {
    let (port, mut seen, task) = one_answer_per_connection(true).await;
    let webhook =
        Webhook::new(WebhookOptions::new(format!("http://127.0.0.1:{port}/hook"))).unwrap();
    let mut connections = Vec::new();
    for _ in 0..3 {
        let sent = transmit(&webhook, b"x").await;
        assert!(matches!(sent, Sent::Answer { status: 200, .. }), "{sent:?}");
        connections.push(next(&mut seen).await.connection);
        // The close reaches the client's socket before the next request is sent.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(connections, vec![0, 1, 2]);
    task.abort();
}

/// A request that was written and never answered fails; it is not sent again (the endpoint
/// may have acted on it), the message's outcome decides what happens next.
#[tokio::test]
async fn a_written_request_left_unanswered_fails_and_is_not_resent() {
    let (port, mut seen, task) = one_answer_per_connection(false).await;
    let webhook =
        Webhook::new(WebhookOptions::new(format!("http://127.0.0.1:{port}/hook"))).unwrap();
    assert!(matches!(
        transmit(&webhook, b"x").await,
        Sent::Answer { status: 200, .. }
    ));
    // On the kept-alive connection: read, then closed without an answer.
    let sent = transmit(&webhook, b"y").await;
    assert!(
        matches!(sent, Sent::Failed(Failure::Transport, _)),
        "{sent:?}"
    );
    let requests: Vec<(usize, Vec<u8>)> = [next(&mut seen).await, next(&mut seen).await]
        .into_iter()
        .map(|r| (r.connection, r.body))
        .collect();
    assert_eq!(requests, vec![(0, b"x".to_vec()), (0, b"y".to_vec())]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(seen.try_recv().is_err(), "the request was sent again");
    task.abort();
}

/// A request through `pool` to `port` (origin form and `Host`, as `transmit` sends it).
async fn pool_exchange(pool: &Pool, endpoint: &pool::Endpoint, port: u16) -> u16 {
    let mut request = http::Request::new(Full::new(Bytes::from_static(b"x")));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_static("/hook");
    request.headers_mut().insert(
        http::header::HOST,
        HeaderValue::from_str(&format!("127.0.0.1:{port}")).unwrap(),
    );
    tokio::time::timeout(
        LIMIT,
        pool.exchange(endpoint, request, &AtomicBool::new(false)),
    )
    .await
    .expect("exchange hung")
    .expect("exchange")
    .parts
    .status
    .as_u16()
}

#[tokio::test]
async fn idle_connections_expire() {
    let (port, mut seen, task) = server(OK, false).await;
    let pool = Pool::new(tls_config(&WebhookTls::default()).unwrap(), 4)
        .with_timers(Duration::from_millis(100), Duration::from_secs(60));
    let uri: Uri = format!("http://127.0.0.1:{port}/hook").parse().unwrap();
    let endpoint = pool.endpoint(&uri).unwrap();
    let mut connections = Vec::new();
    for pause in [0, 0, 300] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        assert_eq!(pool_exchange(&pool, &endpoint, port).await, 200);
        connections.push(next(&mut seen).await.connection);
    }
    assert_eq!(connections, vec![0, 0, 1]);
    task.abort();
}

#[tokio::test]
async fn at_most_max_idle_connections_stay_per_endpoint() {
    let (port, _seen, task) = server(OK, false).await;
    let pool = Pool::new(tls_config(&WebhookTls::default()).unwrap(), 2);
    let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let endpoint = pool.endpoint(&uri).unwrap();
    // Three at once: none is idle when they start, so each opens a connection.
    let statuses =
        futures_util::future::join_all((0..3).map(|_| pool_exchange(&pool, &endpoint, port))).await;
    assert_eq!(statuses, vec![200; 3]);
    assert_eq!(Pool::idle(&endpoint), 2);
    // Same scheme, host and port: the same endpoint, whatever the path.
    let other: Uri = format!("http://127.0.0.1:{port}/other?x=1")
        .parse()
        .unwrap();
    assert!(Arc::ptr_eq(&endpoint, &pool.endpoint(&other).unwrap()));
    let https: Uri = format!("https://127.0.0.1:{port}/").parse().unwrap();
    assert!(!Arc::ptr_eq(&endpoint, &pool.endpoint(&https).unwrap()));
    task.abort();
}

/// Waits until `endpoint` has `expected` idle connections; `false` if that takes over 5 s.
async fn idle_becomes(endpoint: &pool::Endpoint, expected: usize) -> bool {
    for _ in 0..250 {
        if Pool::idle(endpoint) == expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The reaper closes what the endpoint closed and what idled too long, and keeps the rest.
#[tokio::test]
async fn the_reaper_closes_dead_and_expired_idle_connections_only() {
    let tls = || tls_config(&WebhookTls::default()).unwrap();
    let reap = Duration::from_millis(50);

    // Closed by the endpoint after its answer: gone from the pool without another request.
    let (port, _seen, task) = one_answer_per_connection(true).await;
    let pool = Pool::new(tls(), 4).with_timers(Duration::from_secs(60), reap);
    let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let endpoint = pool.endpoint(&uri).unwrap();
    assert_eq!(pool_exchange(&pool, &endpoint, port).await, 200);
    assert!(
        idle_becomes(&endpoint, 0).await,
        "the closed connection stayed"
    );
    task.abort();

    // Open, but idle longer than the idle timeout: closed too.
    let (port, _seen, task) = server(OK, false).await;
    let pool = Pool::new(tls(), 4).with_timers(Duration::from_millis(200), reap);
    let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let endpoint = pool.endpoint(&uri).unwrap();
    assert_eq!(pool_exchange(&pool, &endpoint, port).await, 200);
    assert_eq!(Pool::idle(&endpoint), 1);
    assert!(
        idle_becomes(&endpoint, 0).await,
        "the expired connection stayed"
    );
    task.abort();

    // Open and fresh: kept through many passes, and used again.
    let (port, mut seen, task) = server(OK, false).await;
    let pool = Pool::new(tls(), 4).with_timers(Duration::from_secs(60), reap);
    let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let endpoint = pool.endpoint(&uri).unwrap();
    assert_eq!(pool_exchange(&pool, &endpoint, port).await, 200);
    tokio::time::sleep(reap * 6).await;
    assert_eq!(Pool::idle(&endpoint), 1);
    assert_eq!(pool_exchange(&pool, &endpoint, port).await, 200);
    let connections = [
        next(&mut seen).await.connection,
        next(&mut seen).await.connection,
    ];
    assert_eq!(connections, [0, 0]);
    task.abort();
}
