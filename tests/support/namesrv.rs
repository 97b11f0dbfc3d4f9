//! A fake name server for tests that put something between the daemon and the real broker: it
//! answers GET_ROUTEINFO_BY_TOPIC with the real name server's route, changed by the test (a
//! hostile broker added, every broker address pointed at a proxy), and every other request with
//! REQUEST_CODE_NOT_SUPPORTED.

use bytes::BytesMut;
use rocketmq_webhook::client::Client;
use rocketmq_webhook::remoting::body::route::TopicRouteData;
use rocketmq_webhook::remoting::{
    FrameDecoder, RemotingCommand, RequestCode, ResponseCode, SerializeType,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A listener on a free loopback port, and its address.
pub(crate) async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local addr: {e}"))
        .to_string();
    (listener, addr)
}

/// Starts a fake name server whose routes point every broker address at `proxy_addr` (a proxy
/// in front of the real broker, see [`super::proxy`]); returns its address.
pub(crate) async fn through_proxy(real: Client, proxy_addr: String) -> String {
    let (listener, addr) = listen().await;
    tokio::spawn(serve(
        listener,
        real,
        move |_: &str, route: &mut TopicRouteData| {
            for broker in &mut route.broker_datas {
                for broker_addr in broker.broker_addrs.values_mut() {
                    proxy_addr.clone_into(broker_addr);
                }
            }
        },
    ));
    addr
}

/// Serves routes on `listener` until it fails: `real`'s route for the topic asked, passed
/// through `rewrite(topic, &mut route)` first.
pub(crate) async fn serve<F>(listener: TcpListener, real: Client, rewrite: F)
where
    F: Fn(&str, &mut TopicRouteData) + Clone + Send + 'static,
{
    let mut connections = JoinSet::new();
    while let Ok((socket, _)) = listener.accept().await {
        connections.spawn(serve_connection(socket, real.clone(), rewrite.clone()));
    }
}

/// Answers the requests of one connection, one after another.
async fn serve_connection<F>(mut socket: TcpStream, real: Client, rewrite: F)
where
    F: Fn(&str, &mut TopicRouteData),
{
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let frame = loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(_) => return,
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let Ok(request) = RemotingCommand::decode(frame) else {
            return;
        };
        let answer = if request.code == i32::from(RequestCode::GetRouteInfoByTopic) {
            let topic = request.ext_fields.get("topic").unwrap_or_default();
            match real.namesrv().route(topic).await {
                Ok(mut route) => {
                    rewrite(topic, &mut route);
                    RemotingCommand::response_to(&request, ResponseCode::Success, None)
                        .with_body(route.to_json())
                }
                Err(e) => RemotingCommand::response_to(
                    &request,
                    ResponseCode::TopicNotExist,
                    Some(e.to_string()),
                ),
            }
        } else {
            RemotingCommand::response_to(&request, ResponseCode::RequestCodeNotSupported, None)
        };
        let mut out = BytesMut::new();
        if answer.encode(SerializeType::Json, &mut out).is_err()
            || socket.write_all(&out).await.is_err()
        {
            return;
        }
    }
}
