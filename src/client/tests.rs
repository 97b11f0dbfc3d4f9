//! Component tests of the client layer against fake peers on `127.0.0.1:0`.
//!
//! The fakes speak raw bytes with hand-built JSON headers (not this crate's codec), so they also
//! check that our frames are what a Java-shaped peer expects. Every await that depends on a peer
//! runs under [`within`], so a hang fails the test instead of blocking it.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::*;
use crate::remoting::command::{ExtFields, RemotingCommand};
use crate::remoting::{RemotingError, RequestCode, ResponseCode};

const STEP: Duration = Duration::from_secs(5);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .expect("test step did not finish in time")
}

/// A frame as the fake peer sees it.
#[derive(Debug)]
struct Frame {
    header: Value,
}

impl Frame {
    fn int(&self, key: &str) -> i64 {
        self.header
            .get(key)
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("header has no integer `{key}`: {}", self.header))
    }
    fn opaque(&self) -> i32 {
        i32::try_from(self.int("opaque")).expect("opaque fits i32")
    }
    fn ext(&self, key: &str) -> Option<&str> {
        self.header.get("extFields")?.get(key)?.as_str()
    }
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Frame> {
    Ok(read_sized_frame(s).await?.1)
}

/// A frame and its length on the wire.
async fn read_sized_frame<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<(usize, Frame)> {
    let total = s.read_u32().await? as usize;
    let mut content = vec![0u8; total];
    s.read_exact(&mut content).await?;
    let word = u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
    assert_eq!(word >> 24, 0, "requests are sent with JSON headers");
    let header_len = (word & 0x00FF_FFFF) as usize;
    let header = serde_json::from_slice(&content[4..4 + header_len]).expect("JSON header");
    Ok((4 + total, Frame { header }))
}

fn encode(header: &Value, body: &[u8]) -> Vec<u8> {
    let header = header.to_string().into_bytes();
    let header_len = u32::try_from(header.len()).expect("small header");
    let body_len = u32::try_from(body.len()).expect("small body");
    let mut out = Vec::new();
    out.extend_from_slice(&(4 + header_len + body_len).to_be_bytes());
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    out
}

/// A response frame as a Java/Rust server writes it.
fn response(opaque: i32, code: i32, remark: &str, body: &[u8]) -> Vec<u8> {
    encode(
        &json!({
            "code": code, "flag": 1, "language": "JAVA", "opaque": opaque,
            "remark": remark, "serializeTypeCurrentRPC": "JSON", "version": 479,
            "extFields": null,
        }),
        body,
    )
}

/// A broker-initiated request frame.
fn broker_request(code: i32, opaque: i32, oneway: bool) -> Vec<u8> {
    encode(
        &json!({
            "code": code, "flag": if oneway { 2 } else { 0 }, "language": "JAVA",
            "opaque": opaque, "serializeTypeCurrentRPC": "JSON", "version": 479,
            "extFields": {"consumerGroup": "g"},
        }),
        b"",
    )
}

/// A request whose ext field `tag` the fake peers echo back as the remark.
fn tagged(tag: &str) -> RemotingCommand {
    RemotingCommand::request(
        RequestCode::GetConsumerListByGroup,
        ExtFields::new().with("tag", tag),
        Bytes::new(),
    )
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr").to_string();
    (l, addr)
}

/// A port nobody listens on (bound, then released).
async fn dead_addr() -> String {
    let (l, addr) = listener().await;
    drop(l);
    addr
}

/// Answers every request on every accepted connection with `answer(request)`, until dropped.
fn serve<F>(tasks: &mut JoinSet<()>, l: TcpListener, answer: F)
where
    F: Fn(&Frame) -> Vec<u8> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((mut s, _)) = l.accept().await {
            let answer = Arc::clone(&answer);
            conns.spawn(async move {
                while let Ok(frame) = read_frame(&mut s).await {
                    if s.write_all(&answer(&frame)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Echoes the `tag` ext field as the remark of a SUCCESS answer.
fn echo_tag(frame: &Frame) -> Vec<u8> {
    response(frame.opaque(), 0, frame.ext("tag").unwrap_or(""), b"")
}

async fn connect(addr: &str) -> Connection {
    within(Connection::connect(
        addr,
        &ConnectOptions::default(),
        Arc::new(NotSupported),
    ))
    .await
    .expect("connect")
}

fn assert_closed_by_protocol(
    result: Result<RemotingCommand, ClientError>,
    check: impl Fn(&RemotingError) -> bool,
) {
    match result {
        Err(ClientError::ConnectionClosed {
            reason: CloseReason::Protocol(e),
            ..
        }) if check(&e) => {}
        other => panic!("expected a protocol close, got {other:?}"),
    }
}

// === Connection ===

#[tokio::test]
async fn concurrent_calls_are_matched_by_opaque() {
    let (l, addr) = listener().await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let a = read_frame(&mut s).await.expect("first request");
        let b = read_frame(&mut s).await.expect("second request");
        assert_ne!(a.opaque(), b.opaque());
        assert_eq!(a.int("code"), 38);
        assert_eq!(a.int("flag"), 0);
        assert_eq!(a.header["language"], "RUST");
        assert_eq!(a.header["serializeTypeCurrentRPC"], "JSON");
        // Answer in reverse order.
        for f in [&b, &a] {
            let body = format!("body-{}", f.ext("tag").unwrap_or(""));
            let answer = response(f.opaque(), 0, f.ext("tag").unwrap_or(""), body.as_bytes());
            s.write_all(&answer).await.expect("write");
        }
        s
    });
    let conn = connect(&addr).await;
    let (one, two) = within(async {
        tokio::join!(
            conn.call_raw(tagged("one"), STEP),
            conn.call_raw(tagged("two"), STEP)
        )
    })
    .await;
    let (one, two) = (one.expect("one"), two.expect("two"));
    assert_eq!(one.remark.as_deref(), Some("one"));
    assert_eq!(&one.body[..], b"body-one");
    assert_eq!(two.remark.as_deref(), Some("two"));
    assert_eq!(&two.body[..], b"body-two");
    assert!(one.is_response());
    assert_eq!(conn.pending_len(), 0);
    let _socket = within(peer).await.expect("peer");
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn timeout_removes_the_waiter_and_a_late_response_is_ignored() {
    let (l, addr) = listener().await;
    let (late_tx, mut late_rx) = mpsc::channel::<()>(1);
    let peer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let slow = read_frame(&mut s).await.expect("slow request");
        // Answer only after the client gave up.
        late_rx.recv().await;
        s.write_all(&response(slow.opaque(), 0, "late", b""))
            .await
            .expect("write");
        let next = read_frame(&mut s).await.expect("next request");
        s.write_all(&echo_tag(&next)).await.expect("write");
        s
    });
    let conn = connect(&addr).await;
    let after = Duration::from_millis(200);
    match within(conn.call_raw(tagged("slow"), after)).await {
        Err(ClientError::Timeout {
            code: RequestCode::GetConsumerListByGroup,
            after: a,
            ref addr,
        }) if a == after && *addr == conn.addr() => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(conn.pending_len(), 0, "the timed-out waiter is removed");
    late_tx.send(()).await.expect("peer alive");
    let next = within(conn.call_raw(tagged("next"), STEP))
        .await
        .expect("next");
    assert_eq!(
        next.remark.as_deref(),
        Some("next"),
        "the late answer went nowhere"
    );
    assert!(!conn.is_closed());
    let _socket = within(peer).await.expect("peer");
}

/// A peer that waits for two requests, then writes `garbage`.
async fn garbage_peer(garbage: Vec<u8>) -> (String, tokio::task::JoinHandle<TcpStream>) {
    let (l, addr) = listener().await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        read_frame(&mut s).await.expect("first");
        read_frame(&mut s).await.expect("second");
        s.write_all(&garbage).await.expect("write");
        s
    });
    (addr, peer)
}

async fn check_malformed(garbage: Vec<u8>, check: fn(&RemotingError) -> bool) {
    let mut tasks = JoinSet::new();
    let (healthy, healthy_addr) = listener().await;
    serve(&mut tasks, healthy, echo_tag);
    let (addr, peer) = garbage_peer(garbage).await;

    let bad = connect(&addr).await;
    let good = connect(&healthy_addr).await;
    let (a, b) = within(async {
        tokio::join!(
            bad.call_raw(tagged("a"), STEP),
            bad.call_raw(tagged("b"), STEP)
        )
    })
    .await;
    assert_closed_by_protocol(a, check);
    assert_closed_by_protocol(b, check);
    assert!(bad.is_closed());
    assert_eq!(bad.pending_len(), 0);
    // Later calls fail at once with the same reason.
    assert_closed_by_protocol(within(bad.call_raw(tagged("c"), STEP)).await, check);
    // Another connection is unaffected.
    let ok = within(good.call_raw(tagged("fine"), STEP))
        .await
        .expect("healthy peer");
    assert_eq!(ok.remark.as_deref(), Some("fine"));
    let _socket = within(peer).await.expect("peer");
}

#[tokio::test]
async fn garbage_header_closes_the_connection() {
    let mut garbage = Vec::new();
    garbage.extend_from_slice(&12u32.to_be_bytes());
    garbage.extend_from_slice(&8u32.to_be_bytes());
    garbage.extend_from_slice(b"{not jso");
    check_malformed(garbage, |e| {
        matches!(e, RemotingError::MalformedHeader { .. })
    })
    .await;
}

#[tokio::test]
async fn unknown_serialize_type_closes_the_connection() {
    let mut garbage = Vec::new();
    garbage.extend_from_slice(&8u32.to_be_bytes());
    garbage.extend_from_slice(&((7u32 << 24) | 4).to_be_bytes());
    garbage.extend_from_slice(b"abcd");
    check_malformed(garbage, |e| {
        matches!(e, RemotingError::UnknownSerializeType(7))
    })
    .await;
}

#[tokio::test]
async fn negative_length_closes_the_connection() {
    check_malformed((-16i32).to_be_bytes().to_vec(), |e| {
        matches!(e, RemotingError::InvalidFrameLength { value: -16 })
    })
    .await;
}

#[tokio::test]
async fn oversized_length_closes_the_connection() {
    let len = 16 * 1024 * 1024 + 1;
    let mut garbage = u32::try_from(len).expect("fits").to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0, 0, 0, 4]);
    check_malformed(garbage, |e| {
        matches!(e, RemotingError::FrameTooLarge { actual, .. } if *actual == 16 * 1024 * 1024 + 1)
    })
    .await;
}

#[tokio::test]
async fn eof_mid_frame_fails_the_waiters() {
    let (l, addr) = listener().await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        read_frame(&mut s).await.expect("first");
        read_frame(&mut s).await.expect("second");
        // Half a frame, then the peer goes away.
        let mut partial = Vec::new();
        partial.extend_from_slice(&100u32.to_be_bytes());
        partial.extend_from_slice(&50u32.to_be_bytes());
        partial.extend_from_slice(b"{\"code\"");
        s.write_all(&partial).await.expect("write");
    });
    let conn = connect(&addr).await;
    let (a, b) = within(async {
        tokio::join!(
            conn.call_raw(tagged("a"), STEP),
            conn.call_raw(tagged("b"), STEP)
        )
    })
    .await;
    within(peer).await.expect("peer");
    for r in [a, b] {
        match r {
            Err(ClientError::ConnectionClosed {
                reason: CloseReason::EofMidFrame { buffered: 15 },
                ..
            }) => {}
            other => panic!("expected EOF mid-frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn peer_close_between_frames_fails_the_waiter() {
    let (l, addr) = listener().await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        read_frame(&mut s).await.expect("request");
        // Close without answering.
    });
    let conn = connect(&addr).await;
    match within(conn.call_raw(tagged("a"), STEP)).await {
        Err(
            e @ ClientError::ConnectionClosed {
                reason: CloseReason::PeerClosed,
                ..
            },
        ) => {
            assert!(e.is_retriable());
            assert_eq!(e.origin(), Origin::Network);
        }
        other => panic!("expected a peer close, got {other:?}"),
    }
    within(peer).await.expect("peer");
}

/// Records broker requests; answers code 307 with `pong:<code>`, never finishes code 309.
#[derive(Debug)]
struct Recorder {
    seen: mpsc::Sender<(String, i32, i32)>,
}

impl InboundHandler for Recorder {
    fn handle(&self, from: &str, request: RemotingCommand) -> BoxFuture<Option<RemotingCommand>> {
        let seen = self.seen.clone();
        let from = from.to_owned();
        Box::pin(async move {
            let _ = seen.send((from, request.code, request.opaque)).await;
            if request.code == 309 {
                std::future::pending::<()>().await;
            }
            let remark = format!("pong:{}", request.code);
            Some(RemotingCommand::response_to(
                &request,
                ResponseCode::Success,
                Some(remark),
            ))
        })
    }
}

#[tokio::test]
async fn broker_requests_are_answered_with_their_opaque() {
    let (l, addr) = listener().await;
    let (seen_tx, mut seen) = mpsc::channel(16);
    let options = ConnectOptions {
        inbound_concurrency: 2,
        ..ConnectOptions::default()
    };
    let conn = within(Connection::connect(
        &addr,
        &options,
        Arc::new(Recorder { seen: seen_tx }),
    ))
    .await
    .expect("connect");
    let (mut s, _) = within(l.accept()).await.expect("accept");

    // A oneway request is handled but not answered; the next answer is for opaque 78.
    s.write_all(&broker_request(40, 77, true))
        .await
        .expect("write");
    s.write_all(&broker_request(307, 78, false))
        .await
        .expect("write");
    let answer = within(read_frame(&mut s)).await.expect("answer");
    assert_eq!(answer.opaque(), 78);
    assert_eq!(answer.int("flag") & 1, 1, "response bit set");
    assert_eq!(answer.int("flag") & 2, 0, "oneway bit clear");
    assert_eq!(answer.int("code"), 0);
    assert_eq!(answer.header["remark"], "pong:307");
    let mut got = vec![
        within(seen.recv()).await.expect("seen"),
        within(seen.recv()).await.expect("seen"),
    ];
    got.sort_by_key(|(_, code, _)| *code);
    assert_eq!(got, [(addr.clone(), 40, 77), (addr.clone(), 307, 78)]);

    // Two handlers that never finish fill the limit; reading goes on and a third request is
    // answered SYSTEM_BUSY.
    s.write_all(&broker_request(309, 80, false))
        .await
        .expect("write");
    s.write_all(&broker_request(309, 81, false))
        .await
        .expect("write");
    within(seen.recv()).await.expect("seen");
    within(seen.recv()).await.expect("seen");
    s.write_all(&broker_request(307, 82, false))
        .await
        .expect("write");
    let busy = within(read_frame(&mut s)).await.expect("busy answer");
    assert_eq!(busy.opaque(), 82);
    assert_eq!(busy.int("code"), 2);
    // A oneway request cannot be told to try again: it still finds a slot and is handled.
    s.write_all(&broker_request(40, 83, true))
        .await
        .expect("write");
    assert_eq!(
        within(seen.recv()).await.expect("seen"),
        (addr.clone(), 40, 83)
    );

    // Our own calls still work while handlers hang.
    let call = conn.call_raw(tagged("mine"), STEP);
    let serve_one = async {
        let req = read_frame(&mut s).await.expect("request");
        s.write_all(&echo_tag(&req)).await.expect("write");
    };
    let (mine, ()) = within(async { tokio::join!(call, serve_one) }).await;
    assert_eq!(mine.expect("call").remark.as_deref(), Some("mine"));
    // The oneway request (77) was never answered: the next frame on the wire would show it.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), read_frame(&mut s))
            .await
            .is_err(),
        "nothing else is written"
    );
}

/// A peer that floods requests without reading our writes gets at most a write queue's worth of
/// SYSTEM_BUSY answers (the rest are dropped), not one per request, and the connection survives.
/// The clock is paused, so "nothing more to read" is detected only once every task is idle.
#[tokio::test(start_paused = true)]
async fn busy_answers_stay_bounded_when_the_peer_does_not_read() {
    use super::connection::WRITE_HIGH_WATER;

    const PIPE: usize = 4096;
    let (ours, mut peer) = tokio::io::duplex(PIPE);
    let (seen_tx, _seen) = mpsc::channel(1);
    let options = ConnectOptions {
        inbound_concurrency: 1,
        ..ConnectOptions::default()
    };
    let conn = Connection::from_stream(
        "peer",
        Box::new(ours),
        &options,
        Arc::new(Recorder { seen: seen_tx }),
    );
    // Opaque 0 takes the only handler slot for good; every later request is rejected.
    let request_len = broker_request(309, 0, false).len();
    let n = 2 * WRITE_HIGH_WATER / request_len;
    let flood: Vec<u8> = (0..n)
        .flat_map(|i| broker_request(309, i32::try_from(i).expect("fits"), false))
        .collect();
    within(peer.write_all(&flood)).await.expect("flood");
    // The paused clock moves only when every task is idle: the connection has read the flood.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Now read everything the connection queued.
    let (mut answers, mut bytes, mut answer_len) = (0usize, 0usize, 0usize);
    while let Ok(read) =
        tokio::time::timeout(Duration::from_secs(1), read_sized_frame(&mut peer)).await
    {
        let (len, frame) = read.expect("answer");
        assert_eq!((frame.int("code"), frame.int("flag")), (2, 1));
        answers += 1;
        bytes += len;
        answer_len = answer_len.max(len);
    }
    // Without the bound every request but the first would be answered.
    assert!(
        (n - 1) * answer_len > WRITE_HIGH_WATER + PIPE + answer_len,
        "the flood is too small to test the bound"
    );
    assert!(answers > 0);
    assert!(
        bytes <= WRITE_HIGH_WATER + PIPE + answer_len,
        "{answers} answers ({bytes} bytes) for {n} requests"
    );

    // The connection still works once the peer reads again.
    assert!(!conn.is_closed());
    let call = conn.call_raw(tagged("mine"), STEP);
    let serve_one = async {
        let req = read_frame(&mut peer).await.expect("request");
        peer.write_all(&echo_tag(&req)).await.expect("write");
    };
    let (mine, ()) = within(async { tokio::join!(call, serve_one) }).await;
    assert_eq!(mine.expect("call").remark.as_deref(), Some("mine"));
}

/// A transport whose flush never completes, as a TLS stream's does not while the peer is slow to
/// read: the records stay buffered. Reads and writes pass through.
struct FlushNeverEnds(tokio::io::DuplexStream);

impl AsyncRead for FlushNeverEnds {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for FlushNeverEnds {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Pending
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A flush that waits (TLS records a slow peer has not taken yet) must not stop the reading:
/// the answer that arrived meanwhile completes its call. Before, the flush was awaited in the
/// write's arm, and the call timed out with its answer unread.
#[tokio::test]
async fn a_flush_that_waits_does_not_stop_the_reading() {
    let (ours, mut peer) = tokio::io::duplex(64 * 1024);
    let conn = Connection::from_stream(
        "peer",
        Box::new(FlushNeverEnds(ours)),
        &ConnectOptions::default(),
        Arc::new(NotSupported),
    );
    let call = conn.call_raw(tagged("answered"), STEP);
    let serve_one = async {
        let req = read_frame(&mut peer).await.expect("request");
        peer.write_all(&echo_tag(&req)).await.expect("write");
    };
    let (answer, ()) = within(async { tokio::join!(call, serve_one) }).await;
    assert_eq!(answer.expect("call").remark.as_deref(), Some("answered"));
}

#[tokio::test]
async fn unsupported_broker_requests_get_code_3() {
    let (l, addr) = listener().await;
    let conn = connect(&addr).await;
    let (mut s, _) = within(l.accept()).await.expect("accept");
    s.write_all(&broker_request(221, 5, false))
        .await
        .expect("write");
    let answer = within(read_frame(&mut s)).await.expect("answer");
    assert_eq!(
        (answer.opaque(), answer.int("code"), answer.int("flag")),
        (5, 3, 1)
    );
    assert!(!conn.is_closed());
}

/// A oneway request waits for room in the connection's queue, and not for ever: a peer that
/// never reads fills the socket, then the write queue, then the request queue.
#[tokio::test]
async fn a_oneway_request_to_a_peer_that_does_not_read_times_out() {
    use crate::remoting::rpc::GetRouteInfo;

    let (l, addr) = listener().await;
    let conn = connect(&addr).await;
    let (_s, _) = within(l.accept()).await.expect("accept");
    let rpc = GetRouteInfo {
        topic: "T".repeat(64 << 10),
    };
    let deadline = Duration::from_millis(200);
    let mut handed_over = 0;
    let error = loop {
        match within(conn.oneway(&rpc, deadline)).await {
            Ok(()) => handed_over += 1,
            Err(e) => break e,
        }
        // Kernel buffers, the 4 MiB write queue and 256 queued requests hold less than this.
        assert!(handed_over < 5000, "every oneway request was taken");
    };
    assert!(
        matches!(&error, ClientError::Timeout { after, .. } if *after == deadline),
        "{error:?}"
    );
    assert!(handed_over > 0);
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn oneway_requests_carry_the_flag_and_wait_for_nothing() {
    use crate::remoting::rpc::GetRouteInfo;

    let (l, addr) = listener().await;
    let conn = connect(&addr).await;
    let (mut s, _) = within(l.accept()).await.expect("accept");
    let rpc = GetRouteInfo {
        topic: "T".to_owned(),
    };
    within(conn.oneway(&rpc, STEP)).await.expect("oneway");
    let f = within(read_frame(&mut s)).await.expect("oneway frame");
    assert_eq!((f.int("code"), f.int("flag")), (105, 2));
    assert_eq!(f.ext("topic"), Some("T"));
    assert_eq!(conn.pending_len(), 0);

    // A typed call maps an error status to `Broker` with the peer's address.
    let call = conn.call(&rpc, STEP);
    let answer = async {
        let f = read_frame(&mut s).await.expect("request");
        assert_eq!(f.int("flag"), 0);
        s.write_all(&response(f.opaque(), 2, "[OVERLOAD] busy", b""))
            .await
            .expect("write");
    };
    let (result, ()) = within(async { tokio::join!(call, answer) }).await;
    match result {
        Err(
            e @ ClientError::Broker {
                code: ResponseCode::SystemBusy,
                ..
            },
        ) => {
            assert!(e.is_retriable());
            assert_eq!(e.addr(), Some(addr.as_str()));
        }
        other => panic!("expected SYSTEM_BUSY, got {other:?}"),
    }
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_socket() {
    let (l, addr) = listener().await;
    let conn = connect(&addr).await;
    let clone = conn.clone();
    let (mut s, _) = within(l.accept()).await.expect("accept");
    drop(conn);
    // One handle left: the socket stays open.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), s.read_u8())
            .await
            .is_err()
    );
    drop(clone);
    let eof = within(s.read_u8()).await;
    assert!(eof.is_err(), "socket closed after the last handle dropped");
}

#[tokio::test]
async fn close_fails_waiters_locally() {
    let (l, addr) = listener().await;
    let conn = connect(&addr).await;
    let (_s, _) = within(l.accept()).await.expect("accept");
    let call = conn.call_raw(tagged("x"), STEP);
    let closer = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.close();
    };
    let (r, ()) = within(async { tokio::join!(call, closer) }).await;
    assert!(matches!(
        r,
        Err(ClientError::ConnectionClosed {
            reason: CloseReason::Local,
            ..
        })
    ));
    assert!(conn.is_closed());
}

/// Panics in `handle` itself, which runs on the connection's task.
#[derive(Debug)]
struct PanicsOnRequest;

impl InboundHandler for PanicsOnRequest {
    fn handle(&self, _from: &str, _request: RemotingCommand) -> BoxFuture<Option<RemotingCommand>> {
        panic!("inbound handler bug");
    }
}

/// A connection task that dies (here by a panic) fails its waiters at once and counts as closed,
/// so the pool replaces the connection instead of handing out a dead one.
#[tokio::test]
async fn a_task_that_panics_closes_its_connection() {
    let (l, addr) = listener().await;
    let mut tasks = JoinSet::new();
    // A request tagged `boom` is answered with a broker request, which the handler panics on.
    serve(&mut tasks, l, |frame| match frame.ext("tag") {
        Some("boom") => broker_request(309, 1, false),
        _ => echo_tag(frame),
    });
    let pool = Pool::new(ConnectOptions::default(), Arc::new(PanicsOnRequest));
    let first = within(pool.connection(&addr)).await.expect("connect");
    // Waits far longer than `within` allows: only the close can end it in time.
    match within(first.call_raw(tagged("boom"), 10 * STEP)).await {
        Err(ClientError::ConnectionClosed {
            reason: CloseReason::Aborted,
            ..
        }) => {}
        other => panic!("expected an aborted connection, got {other:?}"),
    }
    assert!(first.is_closed());
    let second = within(pool.connection(&addr)).await.expect("reconnect");
    assert!(
        !second.same_as(&first),
        "the dead connection was handed out"
    );
    let answer = within(second.call_raw(tagged("after"), STEP)).await;
    assert_eq!(answer.expect("call").remark.as_deref(), Some("after"));
}

// === Pool ===

#[tokio::test]
async fn pool_shares_one_connection_per_address() {
    let (l, addr) = listener().await;
    let pool = Pool::new(ConnectOptions::default(), Arc::new(NotSupported));
    let conns = within(async {
        let mut set = JoinSet::new();
        for _ in 0..8 {
            let pool = pool.clone();
            let addr = addr.clone();
            set.spawn(async move { pool.connection(&addr).await });
        }
        let mut conns = Vec::new();
        while let Some(c) = set.join_next().await {
            conns.push(c.expect("task").expect("connect"));
        }
        conns
    })
    .await;
    assert!(conns.iter().all(|c| c.same_as(&conns[0])));
    let _socket = within(l.accept()).await.expect("one connection");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), l.accept())
            .await
            .is_err(),
        "only one connect attempt"
    );
    assert_eq!(pool.addrs(), [addr.as_str()]);
    pool.close_all();
    assert!(conns[0].is_closed());
    assert!(pool.addrs().is_empty());
}

#[tokio::test]
async fn pool_backs_off_and_reconnects_after_the_peer_restarts() {
    let (l, addr) = listener().await;
    let pool = Pool::new(ConnectOptions::default(), Arc::new(NotSupported));

    let mut tasks = JoinSet::new();
    serve(&mut tasks, l, echo_tag);
    let first = within(pool.connection(&addr)).await.expect("connect");
    let r = within(first.call_raw(tagged("1"), STEP))
        .await
        .expect("call");
    assert_eq!(r.remark.as_deref(), Some("1"));

    // The peer dies: listener and connections go away.
    tasks.shutdown().await;
    until_closed(&first).await;

    match within(pool.connection(&addr)).await {
        Err(ClientError::Connect { addr: a, .. }) => assert_eq!(a, addr),
        other => panic!("expected a refused connect, got {other:?}"),
    }
    match within(pool.connection(&addr)).await {
        Err(e @ ClientError::Backoff { .. }) => {
            assert!(e.is_retriable());
            if let ClientError::Backoff { retry_in, .. } = e {
                assert!(retry_in <= Duration::from_millis(100));
            }
        }
        other => panic!("expected a backoff, got {other:?}"),
    }

    // The peer comes back on the same address.
    let l = TcpListener::bind(&addr).await.expect("rebind");
    serve(&mut tasks, l, echo_tag);
    let second = within(async {
        loop {
            match pool.connection(&addr).await {
                Ok(c) => return c,
                Err(ClientError::Backoff { retry_in, .. }) => tokio::time::sleep(retry_in).await,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    })
    .await;
    assert!(!second.same_as(&first));
    let r = within(second.call_raw(tagged("2"), STEP))
        .await
        .expect("call");
    assert_eq!(r.remark.as_deref(), Some("2"));
}

/// A peer that accepts and closes before answering anything (a TLS broker refusing plain text,
/// a load balancer without backends) counts as a failed connect: the next request backs off
/// instead of connecting again at once. Before, the connect itself reset the backoff, and every
/// request opened a connection.
#[tokio::test]
async fn a_peer_that_closes_before_answering_is_backed_off() {
    let (l, addr) = listener().await;
    let pool = Pool::new(ConnectOptions::default(), Arc::new(NotSupported));
    let accepts = tokio::spawn(async move {
        let mut n = 0;
        while let Ok(Ok((socket, _))) =
            tokio::time::timeout(Duration::from_millis(500), l.accept()).await
        {
            drop(socket);
            n += 1;
        }
        n
    });
    let first = within(pool.connection(&addr)).await.expect("connect");
    until_closed(&first).await;
    match within(pool.connection(&addr)).await {
        Err(ClientError::Backoff { retry_in, .. }) => {
            assert!(retry_in <= Duration::from_millis(100));
        }
        other => panic!("expected a backoff, got {other:?}"),
    }
    assert_eq!(accepts.await.expect("listener task"), 1, "connected again");
}

/// A peer that answers in another protocol and closes (an HTTP server on the wrong port) is
/// backed off like one that closes at once: bytes came, but no frame of ours decoded.
#[tokio::test]
async fn a_peer_that_answers_in_another_protocol_is_backed_off() {
    let (l, addr) = listener().await;
    let pool = Pool::new(ConnectOptions::default(), Arc::new(NotSupported));
    let peer = tokio::spawn(async move {
        while let Ok((mut socket, _)) = l.accept().await {
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let first = within(pool.connection(&addr)).await.expect("connect");
    let reason = until_closed(&first).await;
    assert!(matches!(reason, CloseReason::Protocol(_)));
    match within(pool.connection(&addr)).await {
        Err(ClientError::Backoff { .. }) => {}
        other => panic!("expected a backoff, got {other:?}"),
    }
    peer.abort();
}

/// Only the peer's closes count against it: a connection this side closed (here idle, with
/// nothing ever sent or read on it) is replaced at once, not backed off.
#[tokio::test]
async fn a_connection_closed_by_this_side_is_not_backed_off() {
    let (l, addr) = listener().await;
    let options = ConnectOptions {
        idle_timeout: Duration::from_millis(100),
        ..ConnectOptions::default()
    };
    let pool = Pool::new(options, Arc::new(NotSupported));
    let peer = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = l.accept().await {
            held.push(socket);
        }
    });
    let first = within(pool.connection(&addr)).await.expect("connect");
    let reason = until_closed(&first).await;
    assert!(matches!(reason, CloseReason::Idle { .. }));
    let second = within(pool.connection(&addr))
        .await
        .expect("connected again at once");
    assert!(!second.same_as(&first));
    peer.abort();
}

/// A peer that accepts, reads and never answers (a NAT that forgot the flow looks like this):
/// the pool closes the connection a request timed out on, and the next request gets a new one.
#[tokio::test]
async fn a_request_that_times_out_closes_its_pooled_connection() {
    let (l, addr) = listener().await;
    let peer = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let _ = read_frame(&mut s).await;
            held.push(s);
        }
    });
    let pool = Pool::new(ConnectOptions::default(), Arc::new(NotSupported));
    let first = within(pool.connection(&addr)).await.expect("connect");
    let rpc = crate::remoting::rpc::GetRouteInfo {
        topic: "T".to_owned(),
    };
    match within(pool.call(&addr, &rpc, Duration::from_millis(200))).await {
        Err(ClientError::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(first.is_closed(), "the silent connection was kept");
    let second = within(pool.connection(&addr)).await.expect("reconnect");
    assert!(!second.same_as(&first));
    peer.abort();
}

/// A peer that answers other requests while one times out is slow, not gone: the connection
/// (and the long polls it may carry) stays.
#[tokio::test]
async fn a_timeout_while_the_peer_answers_others_keeps_the_connection() {
    let (l, addr) = listener().await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        while let Ok(f) = read_frame(&mut s).await {
            if f.ext("topic") != Some("slow") {
                let answer = response(f.opaque(), 17, "no such topic", b"");
                if s.write_all(&answer).await.is_err() {
                    return;
                }
            }
        }
    });
    let pool = Pool::new(ConnectOptions::default(), Arc::new(NotSupported));
    let first = within(pool.connection(&addr)).await.expect("connect");
    let route = |topic: &str| crate::remoting::rpc::GetRouteInfo {
        topic: topic.to_owned(),
    };
    let slow = route("slow");
    let slow_call = pool.call(&addr, &slow, Duration::from_millis(300));
    let others = async {
        for _ in 0..10 {
            let _ = pool.call(&addr, &route("fast"), STEP).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (result, ()) = within(async { tokio::join!(slow_call, others) }).await;
    assert!(
        matches!(result, Err(ClientError::Timeout { .. })),
        "{result:?}"
    );
    assert!(!first.is_closed(), "a slow answer closed a live connection");
    peer.abort();
}

#[tokio::test]
async fn invalidate_spares_a_newer_connection() {
    let (l, addr) = listener().await;
    let mut tasks = JoinSet::new();
    serve(&mut tasks, l, echo_tag);
    let pool = Pool::new(ConnectOptions::default(), Arc::new(NotSupported));
    let old = within(pool.connection(&addr)).await.expect("connect");
    pool.invalidate(&old);
    assert!(old.is_closed());
    let new = within(pool.connection(&addr)).await.expect("reconnect");
    assert!(!new.same_as(&old));
    // A stale handle must not tear down the new connection.
    pool.invalidate(&old);
    assert!(!new.is_closed());
    let same = within(pool.connection(&addr)).await.expect("cached");
    assert!(same.same_as(&new));
}

fn quick_idle() -> ConnectOptions {
    ConnectOptions {
        idle_timeout: Duration::from_millis(200),
        ..ConnectOptions::default()
    }
}

async fn until_closed(conn: &Connection) -> CloseReason {
    within(async {
        loop {
            if let Some(reason) = conn.close_reason() {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Java's client closes a connection idle for 120 s, so connections to brokers that left the
/// cluster (their host perhaps gone, the socket open for good) do not stay forever.
#[tokio::test]
async fn a_quiet_connection_closes_and_the_next_request_reconnects() {
    let (l, addr) = listener().await;
    let mut tasks = JoinSet::new();
    serve(&mut tasks, l, |f| {
        response(f.opaque(), 17, "no such topic", b"")
    });
    let pool = Pool::new(quick_idle(), Arc::new(NotSupported));
    let rpc = crate::remoting::rpc::GetRouteInfo {
        topic: "T".to_owned(),
    };
    let answered = |r: Result<_, ClientError>| {
        assert!(
            matches!(r, Err(ClientError::Broker { .. })),
            "expected the peer's answer, got {r:?}"
        );
    };
    answered(within(pool.call(&addr, &rpc, STEP)).await);
    let first = within(pool.connection(&addr)).await.expect("cached");
    let reason = until_closed(&first).await;
    assert!(matches!(reason, CloseReason::Idle { .. }), "{reason:?}");
    answered(within(pool.call(&addr, &rpc, STEP)).await);
    let second = within(pool.connection(&addr)).await.expect("cached");
    assert!(!second.same_as(&first));
}

/// A long poll may be held by the broker for 30 s without a byte on the connection: a request
/// awaiting its answer is not idleness.
#[tokio::test]
async fn a_request_awaiting_its_answer_keeps_a_quiet_connection() {
    let (l, addr) = listener().await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let f = read_frame(&mut s).await.expect("request");
        // Three idle periods without a byte.
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.write_all(&echo_tag(&f)).await.expect("answer");
        s
    });
    let conn = within(Connection::connect(
        &addr,
        &quick_idle(),
        Arc::new(NotSupported),
    ))
    .await
    .expect("connect");
    let r = within(conn.call_raw(tagged("slow"), STEP))
        .await
        .expect("the quiet connection closed under a request");
    assert_eq!(r.remark.as_deref(), Some("slow"));
    let _peer = within(peer).await;
    let reason = until_closed(&conn).await;
    assert!(matches!(reason, CloseReason::Idle { .. }), "{reason:?}");
}

/// The connection closes a full period after its last read, not a period after the check that
/// found the read.
#[tokio::test(start_paused = true)]
async fn a_quiet_connection_closes_a_period_after_its_last_read() {
    let (ours, mut peer) = tokio::io::duplex(64 * 1024);
    let period = Duration::from_secs(120);
    let options = ConnectOptions {
        idle_timeout: period,
        ..ConnectOptions::default()
    };
    let conn = Connection::from_stream("peer", Box::new(ours), &options, Arc::new(NotSupported));
    let answering = tokio::spawn(async move {
        while let Ok(f) = read_frame(&mut peer).await {
            if peer.write_all(&echo_tag(&f)).await.is_err() {
                break;
            }
        }
    });
    // A read 90 s in: the first check, at 120 s, finds it 30 s old.
    tokio::time::sleep(Duration::from_secs(90)).await;
    conn.call_raw(tagged("late"), STEP).await.expect("answer");
    let read_at = tokio::time::Instant::now();
    while !conn.is_closed() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quiet = read_at.elapsed();
    assert!(
        quiet >= period && quiet <= period + Duration::from_secs(1),
        "closed after {quiet:?} of quiet"
    );
    answering.abort();
}

/// What the pool's one retry relies on: a request that meets an idle close was never sent.
#[tokio::test]
async fn a_request_after_an_idle_close_fails_unsent() {
    let (l, addr) = listener().await;
    let conn = connect(&addr).await;
    let (mut s, _) = within(l.accept()).await.expect("accept");
    assert!(conn.idle_out());
    match within(conn.call_raw(tagged("late"), STEP)).await {
        Err(ClientError::ConnectionClosed {
            reason: CloseReason::Idle { .. },
            ..
        }) => {}
        other => panic!("expected an idle close, got {other:?}"),
    }
    let mut rest = Vec::new();
    within(s.read_to_end(&mut rest)).await.expect("read");
    assert!(rest.is_empty(), "{} bytes reached the peer", rest.len());
}

/// An idle close never fails a request already out.
#[tokio::test]
async fn an_idle_close_waits_for_requests_out() {
    let (l, addr) = listener().await;
    let conn = connect(&addr).await;
    let (mut s, _) = within(l.accept()).await.expect("accept");
    let call = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call_raw(tagged("out"), STEP).await }
    });
    let f = within(read_frame(&mut s)).await.expect("request");
    assert!(!conn.idle_out(), "closed under a request out");
    s.write_all(&echo_tag(&f)).await.expect("answer");
    let r = within(call).await.expect("task").expect("answer");
    assert_eq!(r.remark.as_deref(), Some("out"));
    assert!(conn.idle_out());
}

/// Addresses of brokers that left are forgotten; one still backing off is kept, so its backoff
/// holds.
#[tokio::test]
async fn the_pool_forgets_addresses_nobody_uses() {
    let (l, gone) = listener().await;
    let mut tasks = JoinSet::new();
    serve(&mut tasks, l, echo_tag);
    // A backoff long enough that the dead address is still backing off at the sweep below.
    let backoff = backoff::Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
    let pool = Pool::with_backoff(quick_idle(), Arc::new(NotSupported), backoff);
    let conn = within(pool.connection(&gone)).await.expect("connect");
    until_closed(&conn).await;
    drop(conn);
    let dead = dead_addr().await;
    assert!(matches!(
        within(pool.connection(&dead)).await,
        Err(ClientError::Connect { .. })
    ));
    assert_eq!(
        pool.known_addrs(),
        std::slice::from_ref(&dead),
        "the idle address stayed"
    );
    let (l, next) = listener().await;
    serve(&mut tasks, l, echo_tag);
    let _next = within(pool.connection(&next)).await.expect("connect");
    let mut expected = vec![dead, next];
    expected.sort();
    assert_eq!(
        pool.known_addrs(),
        expected,
        "the backing-off address was forgotten"
    );
}

/// A dead address keeps its backoff schedule for the longest delay after its retry time, so a
/// broker that comes back into use soon after resumes its schedule; after that it is forgotten.
#[tokio::test]
async fn the_pool_keeps_a_recent_backoff_through_a_sweep() {
    let mut tasks = JoinSet::new();
    let dead = dead_addr().await;
    // Adds a new address, which sweeps the pool.
    let mut add_address = async |pool: &Pool| {
        let (l, next) = listener().await;
        serve(&mut tasks, l, echo_tag);
        within(pool.connection(&next)).await.expect("connect");
    };
    // A pool with the backoff `initial` doubling to `max`, which failed to connect to `dead`.
    let failed_once = async |initial: u64, max: u64| {
        let backoff =
            backoff::Backoff::new(Duration::from_millis(initial), Duration::from_millis(max));
        let pool = Pool::with_backoff(ConnectOptions::default(), Arc::new(NotSupported), backoff);
        let r = within(pool.connection(&dead)).await;
        assert!(matches!(r, Err(ClientError::Connect { .. })), "{r:?}");
        pool
    };

    // 200 ms doubling to 5 s: the sweep comes after the first delay, well within the longest.
    let pool = failed_once(200, 5_000).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    add_address(&pool).await;
    assert!(pool.known_addrs().contains(&dead), "forgotten within 5 s");
    let r = within(pool.connection(&dead)).await;
    assert!(matches!(r, Err(ClientError::Connect { .. })), "{r:?}");
    // The second delay (400 ms), not the first again.
    match within(pool.connection(&dead)).await {
        Err(ClientError::Backoff { retry_in, .. }) => {
            assert!(retry_in > Duration::from_millis(250), "{retry_in:?}");
        }
        other => panic!("expected a backoff, got {other:?}"),
    }

    // 10 ms, at most 20 ms: 50 ms after the failure the address is forgotten.
    let pool = failed_once(10, 20).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    add_address(&pool).await;
    assert!(!pool.known_addrs().contains(&dead), "kept past its backoff");
}

// === Name server ===

const ROUTE_JSON: &str = r#"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:10911"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false,"zoneName":null}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}],"topicQueueMappingInfo":null,"orderTopicConf":null}"#;

fn namesrv_answer(frame: &Frame) -> Vec<u8> {
    assert_eq!(frame.int("code"), 105);
    match frame.ext("topic") {
        Some("T") => response(frame.opaque(), 0, "", ROUTE_JSON.as_bytes()),
        _ => response(frame.opaque(), 17, "Topic route was not found", b""),
    }
}

#[tokio::test]
async fn name_server_fails_over_to_the_next_address() {
    let mut tasks = JoinSet::new();
    let (l, live) = listener().await;
    serve(&mut tasks, l, namesrv_answer);
    let dead = dead_addr().await;
    let pool = Pool::new(ConnectOptions::default(), Arc::new(NotSupported));
    let ns = NameServer::new(&format!("{dead};{live}"), pool.clone()).expect("addrs");

    let route = within(ns.route("T"))
        .await
        .expect("route from the second name server");
    assert_eq!(route.broker_datas.len(), 1);
    assert_eq!(
        route.broker_datas[0]
            .broker_addrs
            .get(&0)
            .map(String::as_str),
        Some("127.0.0.1:10911")
    );
    assert_eq!(route.queue_datas[0].read_queue_nums, 4);
    // The next look-up starts at the good one, so the dead address is not even tried.
    within(ns.route("T")).await.expect("route");
    assert_eq!(pool.addrs(), [live.as_str()]);
    // A topic no name server has is NoRoute, once every one was asked.
    assert!(matches!(
        within(ns.route("missing")).await,
        Err(ClientError::NoRoute { ref topic }) if topic == "missing"
    ));

    // A name server that says no topic exists (cut off from the brokers, or restarted before
    // they register again) does not hide the route another one has, though it is asked first.
    let (l, empty) = listener().await;
    serve(&mut tasks, l, |frame| {
        response(frame.opaque(), 17, "Topic route was not found", b"")
    });
    let ns = NameServer::new(&format!("{empty};{live}"), pool.clone()).expect("addrs");
    for _ in 0..2 {
        let route = within(ns.route("T")).await.expect("route from the second");
        assert_eq!(route.queue_datas[0].read_queue_nums, 4);
    }

    // Through the client instance the route is published.
    let client = Client::new(
        ClientConfig {
            namesrv_addr: format!("{dead};{live}"),
            ..ClientConfig::default()
        },
        Arc::new(NotSupported),
    )
    .expect("client");
    let mut rx = client.routes().subscribe();
    within(client.refresh_route("T")).await.expect("refresh");
    assert!(rx.has_changed().expect("table alive"));
    let routes = rx.borrow_and_update().clone();
    assert_eq!(routes.master_addr("broker-a"), Some("127.0.0.1:10911"));
    assert_eq!(routes.subscribe_queues("T").len(), 4);
}

/// An answer too large to parse fails its own call only, naming the peer and the body; the
/// connection goes on serving.
#[tokio::test]
async fn an_answer_with_too_many_values_fails_only_its_call() {
    use crate::remoting::rpc::GetRouteInfo;
    let (l, addr) = listener().await;
    let mut tasks = JoinSet::new();
    serve(&mut tasks, l, |frame| match frame.ext("topic") {
        // Two million values in 4 MB: each would cost some 100 bytes once built.
        Some("HUGE") => {
            let body = format!(r#"{{"x":[{}]}}"#, vec!["0"; 2 << 20].join(","));
            response(frame.opaque(), 0, "", body.as_bytes())
        }
        _ => namesrv_answer(frame),
    });
    let pool = Pool::new(ConnectOptions::default(), Arc::new(NotSupported));
    let huge = GetRouteInfo {
        topic: "HUGE".to_owned(),
    };
    match within(pool.call(&addr, &huge, STEP)).await {
        Err(ClientError::Protocol {
            addr: ref peer,
            source:
                RemotingError::BodyTooLarge {
                    what: "topic route",
                    ..
                },
        }) if *peer == addr => {}
        other => panic!("expected BodyTooLarge from {addr}, got {other:?}"),
    }
    let conn = within(pool.connection(&addr)).await.expect("connection");
    let route = GetRouteInfo {
        topic: "T".to_owned(),
    };
    let answer = within(pool.call(&addr, &route, STEP)).await;
    assert_eq!(answer.expect("route").queue_datas.len(), 1);
    assert!(
        within(pool.connection(&addr))
            .await
            .expect("connection")
            .same_as(&conn),
        "the connection survived the bad answer"
    );
}

#[tokio::test]
async fn no_name_server_answering_is_reported_with_the_last_error() {
    let (a, b) = (dead_addr().await, dead_addr().await);
    let pool = Pool::new(ConnectOptions::default(), Arc::new(NotSupported));
    let ns = NameServer::new(&format!("{a};{b}"), pool).expect("addrs");
    match within(ns.route("T")).await {
        Err(e @ ClientError::NoNameServer { .. }) => {
            assert!(e.is_retriable());
            if let ClientError::NoNameServer { addrs, last } = e {
                // In the order asked, which starts at a random one; the last error is the
                // last one asked.
                assert!(addrs == [a.clone(), b.clone()] || addrs == [b.clone(), a.clone()]);
                let asked_last = addrs[1].clone();
                assert!(
                    matches!(*last, ClientError::Connect { ref addr, .. } if *addr == asked_last)
                );
            }
        }
        other => panic!("expected NoNameServer, got {other:?}"),
    }
}

// === ACL ===

#[tokio::test]
async fn requests_are_signed_when_acl_is_configured() {
    use crate::remoting::acl::AclCredentials;

    let (l, addr) = listener().await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let f = read_frame(&mut s).await.expect("request");
        s.write_all(&echo_tag(&f)).await.expect("write");
        (s, f)
    });
    let options = ConnectOptions {
        acl: Some(AclCredentials::new("ak", "sk")),
        ..ConnectOptions::default()
    };
    let conn = within(Connection::connect(&addr, &options, Arc::new(NotSupported)))
        .await
        .expect("connect");
    within(conn.call_raw(tagged("signed"), STEP))
        .await
        .expect("call");
    let (_s, f) = within(peer).await.expect("peer");
    assert_eq!(f.ext("AccessKey"), Some("ak"));
    // Values sorted by key (AccessKey, tag), no body: HMAC-SHA1("sk", "aksigned").
    let mut expected = RemotingCommand::request(
        RequestCode::GetConsumerListByGroup,
        ExtFields::new().with("tag", "signed"),
        Bytes::new(),
    );
    AclCredentials::new("ak", "sk").sign(&mut expected);
    assert!(f.ext("Signature").is_some_and(|s| s.len() == 28));
    assert_eq!(f.ext("Signature"), expected.ext_fields.get("Signature"));
}

// === TLS ===
//
// testdata/: a test CA (`ca.pem`) and a leaf for `localhost` / 127.0.0.1 (`leaf.pem`,
// PKCS#8 `leaf.key`), ECDSA P-256, valid until 2126; made with `openssl req -x509` (CA) and
// `openssl x509 -req` (leaf). The CA key was discarded.

const CA_PEM: &str = include_str!("testdata/ca.pem");
const LEAF_PEM: &str = include_str!("testdata/leaf.pem");
const LEAF_KEY: &str = include_str!("testdata/leaf.key");

/// A TLS fake peer that answers every request with `echo_tag`; with `client_auth` it demands a
/// client certificate signed by the test CA.
async fn tls_peer(tasks: &mut JoinSet<()>, client_auth: bool) -> String {
    use tokio_rustls::rustls::{self, crypto::ring, server::WebPkiClientVerifier};

    let certs = rustls_pemfile::certs(&mut LEAF_PEM.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("leaf cert");
    let key = rustls_pemfile::private_key(&mut LEAF_KEY.as_bytes())
        .expect("leaf key")
        .expect("a key");
    let provider = Arc::new(ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut CA_PEM.as_bytes()) {
            roots.add(ca.expect("CA cert")).expect("add CA");
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key).expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (l, addr) = listener().await;
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                while let Ok(total) = s.read_u32().await {
                    let mut content = vec![0u8; total as usize];
                    if s.read_exact(&mut content).await.is_err() {
                        return;
                    }
                    let header_len =
                        (u32::from_be_bytes([content[0], content[1], content[2], content[3]])
                            & 0x00FF_FFFF) as usize;
                    let header: Value =
                        serde_json::from_slice(&content[4..4 + header_len]).expect("JSON header");
                    let answer = echo_tag(&Frame { header });
                    if s.write_all(&answer).await.is_err() || s.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn tls_call(addr: &str, tls: TlsConfig) -> Result<RemotingCommand, ClientError> {
    let options = ConnectOptions {
        tls: Some(tls),
        ..ConnectOptions::default()
    };
    let conn = within(Connection::connect(addr, &options, Arc::new(NotSupported))).await?;
    within(conn.call_raw(tagged("over tls"), STEP)).await
}

#[tokio::test]
async fn tls_without_verification_like_the_java_client() {
    let mut tasks = JoinSet::new();
    let addr = tls_peer(&mut tasks, false).await;
    let answer = tls_call(&addr, TlsConfig::default())
        .await
        .expect("TLS call");
    assert_eq!(answer.remark.as_deref(), Some("over tls"));
}

/// Writes the test CA to `<dir>/ca.pem`; returns its path and a set-up that verifies the
/// peer against it.
fn verifying_with_test_ca(dir: &std::path::Path) -> (std::path::PathBuf, TlsConfig) {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, CA_PEM).expect("write CA");
    let config = TlsConfig {
        ca_file: Some(ca.clone()),
        insecure_skip_verify: false,
        ..TlsConfig::default()
    };
    (ca, config)
}

#[tokio::test]
async fn tls_verifies_against_the_configured_ca() {
    let mut tasks = JoinSet::new();
    let addr = tls_peer(&mut tasks, false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, verified) = verifying_with_test_ca(dir.path());
    let answer = tls_call(&addr, verified.clone())
        .await
        .expect("verified TLS call");
    assert_eq!(answer.remark.as_deref(), Some("over tls"));

    // The certificate is not valid for another name.
    let wrong_name = TlsConfig {
        server_name: Some("broker.example".to_owned()),
        ..verified
    };
    assert!(matches!(
        tls_call(&addr, wrong_name).await,
        Err(ClientError::Connect { .. })
    ));
    // Nor is the test CA among the public roots.
    let public_roots = TlsConfig {
        insecure_skip_verify: false,
        ..TlsConfig::default()
    };
    assert!(matches!(
        tls_call(&addr, public_roots).await,
        Err(ClientError::Connect { .. })
    ));
}

/// The files are read again for each connection: a renewed CA file takes effect at the next
/// reconnect, without a restart. (The certificate and key are read by the same connector
/// build; this test rotates the CA only.)
#[tokio::test]
async fn tls_files_rotated_on_disk_apply_to_the_next_connection() {
    let mut tasks = JoinSet::new();
    let addr = tls_peer(&mut tasks, false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, verified) = verifying_with_test_ca(dir.path());
    tls_call(&addr, verified.clone())
        .await
        .expect("verified with the first CA file");
    // Replaced by a certificate that is no CA of the peer's: the next connection fails...
    std::fs::write(&ca, LEAF_PEM).expect("rewrite CA");
    assert!(matches!(
        tls_call(&addr, verified.clone()).await,
        Err(ClientError::Connect { .. })
    ));
    // ...and the one after the right file is back succeeds.
    std::fs::write(&ca, CA_PEM).expect("restore CA");
    tls_call(&addr, verified)
        .await
        .expect("verified again with the restored CA file");
}

#[tokio::test]
async fn tls_presents_the_client_certificate() {
    let mut tasks = JoinSet::new();
    let addr = tls_peer(&mut tasks, true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("leaf.pem"), dir.path().join("leaf.key"));
    std::fs::write(&cert, LEAF_PEM).expect("write cert");
    std::fs::write(&key, LEAF_KEY).expect("write key");

    let with_cert = TlsConfig {
        client_cert: Some(cert),
        client_key: Some(key),
        ..TlsConfig::default()
    };
    let answer = tls_call(&addr, with_cert).await.expect("mutual TLS call");
    assert_eq!(answer.remark.as_deref(), Some("over tls"));

    // Without a certificate the server refuses the session (during or right after the
    // handshake, depending on the TLS version).
    let refused = tls_call(&addr, TlsConfig::default()).await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Connect { .. } | ClientError::ConnectionClosed { .. })
        ),
        "{refused:?}"
    );
}
