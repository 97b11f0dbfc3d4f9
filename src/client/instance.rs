//! The client instance: identity, connection pool, name servers and route snapshots; what a
//! consumer daemon needs and nothing more (no consumer logic, no periodic tasks).
//!
//! Invariants: a [`Client`] is complete when constructed (style.md rule 6); its client id never
//! changes, because a broker binds a connection to the first client id it heartbeats with
//! (rocketmq-remoting.md section 11.4 #3).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::remoting::body::route::TopicRouteData;

use super::connection::{ConnectOptions, InboundHandler};
use super::namesrv::{parse_addrs, NameServer};
use super::route::RouteTable;
use super::{ClientError, Pool};

/// What a [`Client`] is built from.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// Name servers, `host:port;host:port`.
    pub namesrv_addr: String,
    /// How connections are opened (timeouts, TLS, ACL).
    pub connect: ConnectOptions,
    /// Instance name, the part after `@` in the client id. Default: `<pid>#<nanoseconds>`,
    /// unique per process start like the Java clustering consumer's.
    pub instance_name: Option<String>,
    /// IP announced in the client id. Default: the local IPv4 address used to reach the name
    /// servers, else the first non-loopback one found, else `127.0.0.1`.
    pub client_ip: Option<String>,
    /// How long a name server has for one route look-up. Default:
    /// [`DEFAULT_NAMESRV_TIMEOUT`](super::namesrv::DEFAULT_NAMESRV_TIMEOUT).
    pub namesrv_timeout: Option<Duration>,
}

/// Identity plus shared connections and routes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    id: Arc<str>,
    pool: Pool,
    namesrv: NameServer,
    routes: RouteTable,
}

impl Client {
    /// Builds the client; broker-initiated requests on any connection go to `inbound`.
    /// Nothing is connected yet.
    ///
    /// # Errors
    /// [`ClientError::InvalidAddress`] for a bad name-server list, [`ClientError::Tls`] for an
    /// unusable TLS configuration (checked now rather than at the first connect).
    pub fn new(
        config: ClientConfig,
        inbound: Arc<dyn InboundHandler>,
    ) -> Result<Self, ClientError> {
        if let Some(tls) = &config.connect.tls {
            tls.connector()?;
        }
        let addrs = parse_addrs(&config.namesrv_addr)?;
        let ip = config
            .client_ip
            .unwrap_or_else(|| local_ipv4(&addrs).to_string());
        let instance = config.instance_name.unwrap_or_else(default_instance_name);
        let pool = Pool::new(config.connect, inbound);
        let mut namesrv = NameServer::new(&config.namesrv_addr, pool.clone())?;
        if let Some(timeout) = config.namesrv_timeout {
            namesrv = namesrv.with_timeout(timeout);
        }
        Ok(Self {
            id: format!("{ip}@{instance}").into(),
            pool,
            namesrv,
            routes: RouteTable::new(),
        })
    }

    /// `ip@instance`: how brokers tell this client from the other members of a group.
    pub fn client_id(&self) -> &str {
        &self.id
    }

    /// The shared connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The name servers.
    pub fn namesrv(&self) -> &NameServer {
        &self.namesrv
    }

    /// The route snapshots.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Fetches the route of `topic` and publishes it (subscribers are woken only on change),
    /// unless a look-up that started later has already published its answer. On failure the
    /// known route, if any, is kept: a name-server hiccup must not make queues disappear.
    ///
    /// # Errors
    /// As [`NameServer::route`].
    pub async fn refresh_route(&self, topic: &str) -> Result<Arc<TopicRouteData>, ClientError> {
        let lookup = self.routes.lookup();
        let route = self.namesrv.route(topic).await?;
        self.routes.apply(topic, route, lookup);
        self.routes
            .snapshot()
            .topic(topic)
            .cloned()
            .ok_or_else(|| ClientError::NoRoute {
                topic: topic.to_owned(),
            })
    }
}

/// `<pid>#<nanoseconds since the epoch>`, distinct for every process start.
fn default_instance_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}#{nanos}", std::process::id())
}

/// The local IPv4 address this machine uses to reach the name servers (a connected UDP socket
/// reveals the chosen source address without sending anything). Falls back to the address used
/// for a public destination, then to `127.0.0.1`.
fn local_ipv4(namesrv_addrs: &[String]) -> Ipv4Addr {
    let candidates = namesrv_addrs
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .filter(SocketAddr::is_ipv4)
        .chain(std::iter::once(SocketAddr::from(([192, 0, 2, 1], 9))));
    for target in candidates {
        if let Some(ip) =
            source_ip_for(target).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        {
            return ip;
        }
    }
    Ipv4Addr::LOCALHOST
}

fn source_ip_for(target: SocketAddr) -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect(target).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::NotSupported;

    #[tokio::test]
    async fn client_id_is_ip_at_instance() {
        let client = Client::new(
            ClientConfig {
                namesrv_addr: "127.0.0.1:9876".to_owned(),
                instance_name: Some("worker-1".to_owned()),
                client_ip: Some("10.1.2.3".to_owned()),
                ..ClientConfig::default()
            },
            Arc::new(NotSupported),
        )
        .expect("valid config");
        assert_eq!(client.client_id(), "10.1.2.3@worker-1");
        assert_eq!(client.namesrv().addrs(), ["127.0.0.1:9876"]);
    }

    #[tokio::test]
    async fn default_identity_is_unique_and_well_formed() {
        let config = ClientConfig {
            namesrv_addr: "127.0.0.1:9876".to_owned(),
            ..ClientConfig::default()
        };
        let a = Client::new(config.clone(), Arc::new(NotSupported)).expect("a");
        let b = Client::new(config, Arc::new(NotSupported)).expect("b");
        assert_ne!(a.client_id(), b.client_id());
        let (ip, instance) = a.client_id().split_once('@').expect("ip@instance");
        assert!(ip.parse::<Ipv4Addr>().is_ok(), "{ip}");
        let (pid, nanos) = instance.split_once('#').expect("pid#nanos");
        assert_eq!(pid, std::process::id().to_string());
        assert!(nanos.parse::<u128>().is_ok(), "{nanos}");
    }

    #[tokio::test]
    async fn bad_namesrv_is_rejected() {
        let err = Client::new(
            ClientConfig {
                namesrv_addr: "127.0.0.1".to_owned(),
                ..ClientConfig::default()
            },
            Arc::new(NotSupported),
        )
        .expect_err("no port");
        assert!(matches!(err, ClientError::InvalidAddress { ref addr, .. } if addr == "127.0.0.1"));
    }
}
