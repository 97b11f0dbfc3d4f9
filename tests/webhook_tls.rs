//! The webhook over HTTPS with a custom CA and a client certificate (mutual TLS), against a
//! real TLS server (Python's `ssl` module, so the server side is an independent implementation).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rocketmq_webhook::consumer::{Batch, ConsumeMode, Handler, Outcome};
use rocketmq_webhook::remoting::{MessageExt, MessageQueue};
use rocketmq_webhook::webhook::{BreakerConfig, Webhook, WebhookOptions, WebhookTls};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/client/testdata")
        .join(name)
}

/// An HTTPS server that requires a client certificate signed by the test CA.
struct TlsServer {
    child: Child,
    port: u16,
}

impl TlsServer {
    fn start() -> Self {
        let script = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('content-length', 0)))
        peer = self.connection.getpeercert()
        self.send_response(200 if peer else 401)
        self.send_header('content-length', '0')
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
ctx.load_verify_locations(sys.argv[3])
ctx.verify_mode = ssl.CERT_REQUIRED
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(testdata("leaf.pem"))
            .arg(testdata("leaf.key"))
            .arg(testdata("ca.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("port line");
        let port = line.trim().parse().expect("the server prints its port");
        Self { child, port }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn batch() -> Batch {
    let msg = MessageExt {
        topic: "T".into(),
        queue_id: 0,
        flag: 0,
        queue_offset: 0,
        commit_log_offset: 0,
        sys_flag: 0,
        born_timestamp: 0,
        born_host: "127.0.0.1:1".parse().unwrap(),
        store_timestamp: 0,
        store_host: "127.0.0.1:2".parse().unwrap(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body_crc: 0,
        body: bytes::Bytes::from_static(b"hello"),
        properties: Default::default(),
    };
    Batch {
        group: "G".into(),
        topic: "T".into(),
        queue: MessageQueue::new("T", "b", 0),
        mode: ConsumeMode::Concurrent,
        messages: vec![msg],
    }
}

fn options(port: u16, tls: WebhookTls) -> WebhookOptions {
    let mut o = WebhookOptions::new(format!("https://localhost:{port}/hook"));
    o.timeout = Duration::from_secs(5);
    o.tls = tls;
    // Keep failures visible as failures rather than an open circuit.
    o.breaker = BreakerConfig {
        failure_threshold: 0,
        ..BreakerConfig::default()
    };
    o
}

#[tokio::test]
async fn https_endpoint_with_custom_ca_and_client_certificate() {
    let server = TlsServer::start();
    let full = WebhookTls {
        ca_file: Some(testdata("ca.pem")),
        client_cert: Some(testdata("leaf.pem")),
        client_key: Some(testdata("leaf.key")),
        insecure_skip_verify: false,
    };
    let hook = Webhook::new(options(server.port, full.clone())).unwrap();
    assert_eq!(hook.handle(&batch()).await, vec![Outcome::Success]);

    // Without the client certificate the server refuses the handshake: not delivered, and no
    // attempt spent (the request never passed the server's TLS layer). With TLS 1.3 the refusal
    // comes after the request was written, as its answer is read.
    let no_identity = WebhookTls {
        client_cert: None,
        client_key: None,
        ..full.clone()
    };
    let hook = Webhook::new(options(server.port, no_identity)).unwrap();
    let out = hook.handle(&batch()).await;
    assert!(
        matches!(out.as_slice(), [Outcome::Later { .. }]),
        "a refused client certificate must wait, not spend an attempt: {out:?}"
    );

    // Without the custom CA the server certificate is not trusted: not delivered.
    let no_ca = WebhookTls {
        ca_file: None,
        ..full
    };
    let hook = Webhook::new(options(server.port, no_ca)).unwrap();
    let out = hook.handle(&batch()).await;
    assert!(!out.contains(&Outcome::Success), "{out:?}");
}

#[test]
fn unreadable_tls_files_are_configuration_errors() {
    let tls = WebhookTls {
        ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
        ..WebhookTls::default()
    };
    let err = Webhook::new(options(1, tls)).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let tls = WebhookTls {
        client_cert: Some(testdata("leaf.pem")),
        ..WebhookTls::default()
    };
    let err = Webhook::new(options(1, tls)).unwrap_err().to_string();
    assert!(err.contains("together"), "{err}");
}
