//! A frame-level proxy between the daemon and the real broker, for what the broker cannot be
//! made to do on cue: every request frame the daemon sends is shown to the test's `intercept`,
//! which relays it, answers it in the broker's place, swallows it (the request then times out
//! at the daemon), or relays it and sends the daemon a request of the broker's; every frame the
//! broker sends goes back unchanged, or changed by the test's `rewrite` ([`serve_rewriting`]).
//! Whole frames only reach either side.

use bytes::{BufMut, Bytes, BytesMut};
use rocketmq_webhook::remoting::{FrameDecoder, RemotingCommand, SerializeType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// What the proxy does with one request of the daemon.
pub(crate) enum Verdict {
    /// Pass it to the broker.
    Relay,
    /// Answer the daemon with this whole frame (see [`encode`]) instead.
    Answer(Vec<u8>),
    /// Neither: the daemon waits for an answer that never comes.
    Swallow,
    /// Pass it to the broker, and send the daemon this whole frame (a request of the broker's,
    /// see [`encode`]) as well.
    RelayAndPush(Vec<u8>),
}

/// A whole frame (length prefix included) holding `command`.
pub(crate) fn encode(command: &RemotingCommand) -> Vec<u8> {
    let mut out = BytesMut::new();
    command
        .encode(SerializeType::Json, &mut out)
        .unwrap_or_else(|e| panic!("encode a proxy answer: {e}"));
    out.to_vec()
}

/// One whole frame (length prefix and content) around `content`.
fn prefixed(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    out.put_u32(u32::try_from(content.len()).unwrap_or_else(|e| panic!("frame length: {e}")));
    out.extend_from_slice(content);
    out
}

/// Reads frames off `reader` until it closes; each frame's content is handed to `each`, which
/// returns false to stop.
async fn frames(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut each: impl FnMut(Bytes) -> bool,
) -> Option<()> {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(frame) = decoder.decode(&mut buf).ok()? {
            if !each(frame) {
                return None;
            }
        }
        if reader.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// Relays one daemon connection to the broker at `broker_addr`, frame by frame.
async fn relay<F, R>(daemon: TcpStream, broker_addr: String, intercept: F, rewrite: R)
where
    F: Fn(&RemotingCommand) -> Verdict,
    R: Fn(&mut RemotingCommand) -> bool + Send + 'static,
{
    let Ok(broker) = TcpStream::connect(&broker_addr).await else {
        return;
    };
    let (from_daemon, mut to_daemon) = daemon.into_split();
    let (from_broker, mut to_broker) = broker.into_split();
    let (daemon_tx, mut daemon_rx) = mpsc::channel::<Vec<u8>>(256);
    let (broker_tx, mut broker_rx) = mpsc::channel::<Vec<u8>>(256);
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        while let Some(frame) = daemon_rx.recv().await {
            if to_daemon.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    tasks.spawn(async move {
        while let Some(frame) = broker_rx.recv().await {
            if to_broker.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let down_tx = daemon_tx.clone();
    tasks.spawn(async move {
        frames(from_broker, move |frame| {
            let rewritten = RemotingCommand::decode(frame.clone())
                .ok()
                .and_then(|mut command| rewrite(&mut command).then(|| encode(&command)));
            let out = rewritten.unwrap_or_else(|| prefixed(&frame));
            down_tx.try_send(out).is_ok()
        })
        .await;
    });
    frames(from_daemon, |frame| {
        let verdict = RemotingCommand::decode(frame.clone())
            .map_or(Verdict::Relay, |command| intercept(&command));
        match verdict {
            Verdict::Relay => broker_tx.try_send(prefixed(&frame)).is_ok(),
            Verdict::Answer(answer) => daemon_tx.try_send(answer).is_ok(),
            Verdict::Swallow => true,
            Verdict::RelayAndPush(push) => {
                broker_tx.try_send(prefixed(&frame)).is_ok() && daemon_tx.try_send(push).is_ok()
            }
        }
    })
    .await;
    // Dropping the set aborts the writers and the broker's reader.
}

/// Serves daemon connections on `listener` until it fails, each relayed to `broker_addr`.
pub(crate) async fn serve<F>(listener: TcpListener, broker_addr: String, intercept: F)
where
    F: Fn(&RemotingCommand) -> Verdict + Clone + Send + Sync + 'static,
{
    serve_rewriting(
        listener,
        broker_addr,
        intercept,
        |_: &mut RemotingCommand| false,
    )
    .await;
}

/// [`serve`], and every frame the broker sends is shown to `rewrite`, which may change it
/// (returning true) before it goes on to the daemon.
pub(crate) async fn serve_rewriting<F, R>(
    listener: TcpListener,
    broker_addr: String,
    intercept: F,
    rewrite: R,
) where
    F: Fn(&RemotingCommand) -> Verdict + Clone + Send + Sync + 'static,
    R: Fn(&mut RemotingCommand) -> bool + Clone + Send + Sync + 'static,
{
    let mut connections = JoinSet::new();
    while let Ok((socket, _)) = listener.accept().await {
        connections.spawn(relay(
            socket,
            broker_addr.clone(),
            intercept.clone(),
            rewrite.clone(),
        ));
    }
}
