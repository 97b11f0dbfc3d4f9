//! The name-server client: route look-ups with failover (rocketmq-remoting.md section 3).
//!
//! Invariants:
//! - the address list is parsed and validated once, at construction; a bad entry is reported
//!   by name and never reaches a socket;
//! - look-ups start at the name server that last gave a route and move on in list order, so a
//!   dead name server costs one failed attempt (or a fast pool backoff error), not one per call;
//!   the first look-up starts at a random one, as Java's does, so a fleet of sidecars spreads
//!   over the name servers instead of all asking the first;
//! - `TOPIC_NOT_EXIST` is the look-up's answer ([`ClientError::NoRoute`]) only when no other
//!   name server has the route: a name server cut off from the brokers (or just restarted,
//!   before they register again) says it for every topic, and must not hold every client that
//!   asks it first. Java sticks to its one name server, but starts each client at a random one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tracing::debug;

use crate::remoting::body::route::TopicRouteData;
use crate::remoting::rpc::GetRouteInfo;
use crate::remoting::ResponseCode;

use super::{ClientError, Pool};

/// Default time a name server has to answer a route look-up (Java `mqClientApiTimeout`).
pub const DEFAULT_NAMESRV_TIMEOUT: Duration = Duration::from_secs(3);

/// The configured name servers. Cheap to clone; clones share the "last good" position.
#[derive(Debug, Clone)]
pub struct NameServer {
    addrs: Arc<[String]>,
    last_good: Arc<AtomicUsize>,
    pool: Pool,
    timeout: Duration,
}

impl NameServer {
    /// Name servers from `addrs` (`host:port;host:port`, blanks and empty entries ignored),
    /// reached through `pool`.
    ///
    /// # Errors
    /// [`ClientError::InvalidAddress`] naming the first bad entry, or the whole string when it
    /// holds no address.
    pub fn new(addrs: &str, pool: Pool) -> Result<Self, ClientError> {
        let list = parse_addrs(addrs)?;
        let start = rand::rng().random_range(0..list.len());
        Ok(Self {
            addrs: list.into(),
            last_good: Arc::new(AtomicUsize::new(start)),
            pool,
            timeout: DEFAULT_NAMESRV_TIMEOUT,
        })
    }

    /// The same name servers with another per-attempt timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The name server addresses, in configured order.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The route of `topic`, from the first name server that has it.
    ///
    /// # Errors
    /// [`ClientError::NoRoute`] when a name server says the topic does not exist and none has
    /// it; [`ClientError::NoNameServer`] (with the last failure) when none answered.
    pub async fn route(&self, topic: &str) -> Result<TopicRouteData, ClientError> {
        let n = self.addrs.len();
        let start = self.last_good.load(Ordering::Relaxed) % n;
        let rpc = GetRouteInfo {
            topic: topic.to_owned(),
        };
        let mut last = None;
        let mut not_exist = false;
        for i in 0..n {
            let index = (start + i) % n;
            let addr = &self.addrs[index];
            match self.pool.call(addr, &rpc, self.timeout).await {
                Ok(route) => {
                    self.last_good.store(index, Ordering::Relaxed);
                    return Ok(route);
                }
                Err(ClientError::Broker {
                    code: ResponseCode::TopicNotExist,
                    ..
                }) => {
                    debug!(namesrv = %addr, %topic, "Name server has no route; asking the next.");
                    not_exist = true;
                }
                Err(e) => {
                    debug!(namesrv = %addr, %topic, error = %e, "Route look-up failed; trying the next name server.");
                    last = Some(e);
                }
            }
        }
        if not_exist {
            return Err(ClientError::NoRoute {
                topic: topic.to_owned(),
            });
        }
        let order = (0..n)
            .map(|i| self.addrs[(start + i) % n].clone())
            .collect();
        Err(ClientError::NoNameServer {
            addrs: order,
            last: Box::new(last.unwrap_or(ClientError::NoRoute {
                topic: topic.to_owned(),
            })),
        })
    }
}

/// Parses `host:port;host:port`.
pub(crate) fn parse_addrs(addrs: &str) -> Result<Vec<String>, ClientError> {
    let list: Vec<String> = addrs
        .split(';')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| validate_addr(a).map(|()| a.to_owned()))
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err(ClientError::InvalidAddress {
            addr: addrs.to_owned(),
            reason: "no name server address given",
        });
    }
    Ok(list)
}

/// Checks one `host:port` (IPv6 literals in brackets).
pub(crate) fn validate_addr(addr: &str) -> Result<(), ClientError> {
    let invalid = |reason| ClientError::InvalidAddress {
        addr: addr.to_owned(),
        reason,
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid("missing `:port`"))?;
    if host.is_empty() || host == "[]" {
        return Err(invalid("missing host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(invalid("IPv6 addresses must be written in brackets"));
    }
    if host.chars().any(char::is_whitespace) {
        return Err(invalid("host contains whitespace"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid("port must be a number from 1 to 65535")),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        assert_eq!(
            parse_addrs(" 10.0.0.1:9876; ns2.example:9876 ;[::1]:9876;").expect("valid"),
            ["10.0.0.1:9876", "ns2.example:9876", "[::1]:9876"]
        );
    }

    #[test]
    fn names_the_bad_entry() {
        for (input, bad) in [
            ("10.0.0.1:9876;nsport", "nsport"),
            ("a:1;b:0", "b:0"),
            ("a:1;b:99999", "b:99999"),
            (":9876", ":9876"),
            ("::1:9876", "::1:9876"),
            ("a b:1", "a b:1"),
            (" ; ", " ; "),
        ] {
            match parse_addrs(input) {
                Err(ClientError::InvalidAddress { addr, .. }) => assert_eq!(addr, bad, "{input}"),
                other => panic!("{input}: unexpected {other:?}"),
            }
        }
    }
}
