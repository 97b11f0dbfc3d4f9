//! Route snapshots: what the name servers said about each topic, published through `watch`.
//!
//! Invariants (style.md rule 6):
//! - a [`Routes`] value is immutable; every update builds a new one and publishes it as an
//!   `Arc`, so readers never lock and always see a consistent topic table and broker table;
//! - the broker table (`broker name -> {broker id -> address}`) follows the newest answer that
//!   named each broker (every topic of a broker carries the same addresses, so the latest is
//!   the truth, and a topic whose refresh keeps failing cannot hold an old address in place),
//!   and a broker no longer in any route disappears from it;
//! - the last addresses of a broker that disappeared are kept aside (a bounded set, dropped when
//!   a route names the broker again), so the queues it loses can still commit their final
//!   offsets and release their locks there: a broker missing from the name servers' answers
//!   (a name server restarted before the broker re-registered) is often still serving;
//! - subscribers are woken only when a route actually changed, and [`Routes::revision`] tells
//!   them which topics did, whoever applied the change (the send-back producer refreshes the
//!   retry topic's route through the engine's own table);
//! - answers apply in the order their look-ups started ([`RouteTable::lookup`]): look-ups of
//!   one topic overlap (the engine's and the producer's), and one that started earlier may
//!   answer later with what the name servers said before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::remoting::body::route::TopicRouteData;
use crate::remoting::MessageQueue;

/// Broker id of a master.
pub(crate) const MASTER_ID: i64 = 0;

/// A broker address to pull from ([`Routes::pull_addr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullAddr<'a> {
    /// `host:port`.
    pub addr: &'a str,
    /// A slave's address: a pull sent there carries no commit, since only the master keeps the
    /// group's offsets (a slave's copy is overwritten by its next sync from the master).
    pub slave: bool,
}

/// One immutable view of every known route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes {
    topics: HashMap<String, Arc<TopicRouteData>>,
    brokers: BTreeMap<String, BTreeMap<i64, String>>,
    /// The last addresses of brokers no route names any more (at most [`MAX_DEPARTED`]).
    departed: BTreeMap<String, BTreeMap<i64, String>>,
    /// Per topic, the look-up whose answer last changed its route (see [`Routes::revision`]).
    revisions: HashMap<String, u64>,
}

/// Departed brokers remembered; a bound against a name server that invents broker names.
const MAX_DEPARTED: usize = 256;

impl Routes {
    /// The route of `topic`, if known.
    pub fn topic(&self, topic: &str) -> Option<&Arc<TopicRouteData>> {
        self.topics.get(topic)
    }

    /// A number that changes whenever the route of `topic` is set to a different one (or its
    /// brokers' addresses move back to what it says), whoever set it; `None` while the route is
    /// unknown. Comparing it with the one last acted on tells a subscriber whether `topic`
    /// changed since, however many snapshots came in between.
    pub fn revision(&self, topic: &str) -> Option<u64> {
        self.revisions.get(topic).copied()
    }

    /// Topics with a known route.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// Address of the master (broker id 0) of `broker_name`.
    pub fn master_addr(&self, broker_name: &str) -> Option<&str> {
        self.brokers
            .get(broker_name)?
            .get(&MASTER_ID)
            .map(String::as_str)
    }

    /// Address of the master of `broker_name`, or, if no route names the broker any more, the
    /// last one a route gave: where a queue that just lost its broker commits its final offset
    /// and releases its lock.
    pub fn last_master_addr(&self, broker_name: &str) -> Option<&str> {
        self.master_addr(broker_name).or_else(|| {
            self.departed
                .get(broker_name)?
                .get(&MASTER_ID)
                .map(String::as_str)
        })
    }

    /// Where to pull a queue of `broker_name` from, as Java's `findBrokerAddressInSubscribe`
    /// picks it (rocketmq-remoting.md §3): the broker id the queue's last pull answer suggested;
    /// if that is a slave not in the route, the next id; otherwise any address of the broker,
    /// the master first. So a queue whose master is gone goes on being consumed from a slave,
    /// and one the master sends to a slave (a lagging consumer, `slaveReadEnable`) goes there.
    pub fn pull_addr(&self, broker_name: &str, suggested: i64) -> Option<PullAddr<'_>> {
        let addrs = self.brokers.get(broker_name)?;
        let at = |id: i64| {
            addrs.get(&id).map(|addr| PullAddr {
                addr,
                slave: id != MASTER_ID,
            })
        };
        at(suggested)
            .or_else(|| {
                // The suggested slave is gone: Java tries the next id. The id is whatever the
                // broker sent, so the step is checked.
                (suggested != MASTER_ID)
                    .then(|| suggested.checked_add(1).and_then(at))
                    .flatten()
            })
            .or_else(|| at(MASTER_ID))
            .or_else(|| {
                let (&id, addr) = addrs.iter().next()?;
                Some(PullAddr {
                    addr,
                    slave: id != MASTER_ID,
                })
            })
    }

    /// Addresses of `broker_name` by broker id.
    pub fn broker(&self, broker_name: &str) -> Option<&BTreeMap<i64, String>> {
        self.brokers.get(broker_name)
    }

    /// The queues of `topic` a consumer may be assigned: for every queue data with read
    /// permission, queue ids `0..readQueueNums`. Sorted; empty when the route is unknown.
    pub fn subscribe_queues(&self, topic: &str) -> Vec<MessageQueue> {
        self.topics
            .get(topic)
            .map(|route| subscribe_queues(topic, route))
            .unwrap_or_default()
    }

    /// Every known broker address (masters and slaves), sorted and without duplicates.
    pub fn broker_addrs(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self
            .brokers
            .values()
            .flat_map(|ids| ids.values().map(String::as_str))
            .collect();
        set.into_iter().collect()
    }

    /// Master addresses, one per broker name that has a master, sorted.
    pub fn master_addrs(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self
            .brokers
            .values()
            .filter_map(|ids| ids.get(&MASTER_ID).map(String::as_str))
            .collect();
        set.into_iter().collect()
    }

    /// Whether the broker table holds the addresses `route` gives for each broker it names.
    fn names_as(&self, route: &TopicRouteData) -> bool {
        route.broker_datas.iter().all(|data| {
            self.brokers.get(&data.broker_name).is_some_and(|ids| {
                ids.len() == data.broker_addrs.len()
                    && data
                        .broker_addrs
                        .iter()
                        .all(|(id, addr)| ids.get(id) == Some(addr))
            })
        })
    }

    /// Takes the brokers of `route`, just answered, as the newest word on their addresses.
    fn apply_brokers(&mut self, route: &TopicRouteData) {
        for data in &route.broker_datas {
            self.departed.remove(&data.broker_name);
            self.brokers.insert(
                data.broker_name.clone(),
                data.broker_addrs
                    .iter()
                    .map(|(id, addr)| (*id, addr.clone()))
                    .collect(),
            );
        }
        self.drop_unnamed_brokers();
    }

    /// Forgets brokers that no route names any more.
    fn drop_unnamed_brokers(&mut self) {
        let named: BTreeSet<&str> = self
            .topics
            .values()
            .flat_map(|r| r.broker_datas.iter().map(|d| d.broker_name.as_str()))
            .collect();
        let (kept, gone) = std::mem::take(&mut self.brokers)
            .into_iter()
            .partition(|(name, _)| named.contains(name.as_str()));
        self.brokers = kept;
        for (name, addrs) in gone {
            // Which go matters little: the bound only bites with hundreds of departed names.
            // The first by name go, so a test can tell which.
            while self.departed.len() >= MAX_DEPARTED {
                self.departed.pop_first();
            }
            self.departed.insert(name, addrs);
        }
    }
}

/// The consumer queue set of one route (rocketmq-remoting.md section 3, "Subscribe"):
/// [`TopicRouteData::subscribe_queues`], which expands each broker once and at most
/// `MAX_TOPIC_QUEUES` queues in all.
pub fn subscribe_queues(topic: &str, route: &TopicRouteData) -> Vec<MessageQueue> {
    route.subscribe_queues(topic)
}

/// The publisher of [`Routes`] snapshots. Cheap to clone; clones publish to the same
/// subscribers.
#[derive(Debug, Clone)]
pub struct RouteTable {
    inner: Arc<Table>,
}

#[derive(Debug)]
struct Table {
    tx: watch::Sender<Arc<Routes>>,
    /// The last [`Lookup`] handed out.
    lookups: AtomicU64,
    /// Per topic, the latest look-up whose answer was applied, changed or not. Not in
    /// [`Routes`]: an unchanged answer must move it without publishing a snapshot.
    applied: Mutex<HashMap<String, u64>>,
}

/// When a route look-up started, relative to the others of its table: taken before asking the
/// name servers ([`RouteTable::lookup`]) and handed to [`RouteTable::apply`] with the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lookup(u64);

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Table {
                tx: watch::Sender::new(Arc::new(Routes::default())),
                lookups: AtomicU64::new(0),
                applied: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Routes> {
        Arc::clone(&self.inner.tx.borrow())
    }

    /// A receiver that sees every future snapshot (and the current one).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Routes>> {
        self.inner.tx.subscribe()
    }

    /// Starts a look-up: call before asking the name servers, and pass the result to
    /// [`Self::apply`] with their answer.
    pub fn lookup(&self) -> Lookup {
        Lookup(self.inner.lookups.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Sets the route of `topic` as an answer that is newer than every look-up started before
    /// now (one that just confirmed a topic's creation); see [`Self::apply`].
    pub fn update(&self, topic: &str, route: TopicRouteData) -> bool {
        self.apply(topic, route, self.lookup())
    }

    /// Sets the route of `topic` to the answer of `lookup`, unless the answer of a look-up that
    /// started later was applied already (then this one may say what the name servers said
    /// before, and is dropped). Publishes a new snapshot and returns `true` only if the route
    /// differs from the known one.
    pub fn apply(&self, topic: &str, route: TopicRouteData, lookup: Lookup) -> bool {
        // Held until published, so that the check and the publish of one answer are not
        // interleaved with another's.
        let mut applied = self
            .inner
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let newest = applied.entry(topic.to_owned()).or_default();
        if lookup.0 <= *newest {
            tracing::debug!(%topic, "Route answer older than one applied already; dropped.");
            return false;
        }
        *newest = lookup.0;
        self.inner.tx.send_if_modified(|current| {
            // An unchanged route still counts as the newest word on its brokers: another
            // topic's answer may have moved one of them since, and this one moves it back.
            if current
                .topics
                .get(topic)
                .is_some_and(|known| **known == route)
                && current.names_as(&route)
            {
                return false;
            }
            let mut next = Routes::clone(current);
            let route = Arc::new(route);
            next.topics.insert(topic.to_owned(), Arc::clone(&route));
            next.revisions.insert(topic.to_owned(), lookup.0);
            next.apply_brokers(&route);
            *current = Arc::new(next);
            true
        })
    }

    /// Forgets the route of `topic`; returns whether it was known.
    pub fn remove(&self, topic: &str) -> bool {
        self.inner.tx.send_if_modified(|current| {
            if !current.topics.contains_key(topic) {
                return false;
            }
            let mut next = Routes::clone(current);
            next.topics.remove(topic);
            next.revisions.remove(topic);
            next.drop_unnamed_brokers();
            *current = Arc::new(next);
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::body::route::{BrokerData, QueueData, MAX_QUEUE_NUMS, MAX_TOPIC_QUEUES};

    fn route(brokers: &[(&str, &[(i64, &str)])], queues: &[(&str, i32, i32)]) -> TopicRouteData {
        TopicRouteData {
            queue_datas: queues
                .iter()
                .map(|(name, read, perm)| QueueData {
                    broker_name: (*name).to_owned(),
                    read_queue_nums: *read,
                    write_queue_nums: *read,
                    perm: *perm,
                    ..QueueData::default()
                })
                .collect(),
            broker_datas: brokers
                .iter()
                .map(|(name, addrs)| BrokerData {
                    cluster: "c".to_owned(),
                    broker_name: (*name).to_owned(),
                    broker_addrs: addrs.iter().map(|(id, a)| (*id, (*a).to_owned())).collect(),
                    ..BrokerData::default()
                })
                .collect(),
            ..TopicRouteData::default()
        }
    }

    /// A broker that moved is found at its new address as soon as one topic's route says so,
    /// whatever the routes of other topics (not refreshed yet, or failing) still hold.
    #[test]
    fn the_newest_answer_decides_a_brokers_addresses() {
        let table = RouteTable::new();
        let old = route(&[("a", &[(0, "old:1"), (1, "old:2")])], &[("a", 1, 6)]);
        for i in 0..10 {
            table.update(&format!("stale{i}"), old.clone());
        }
        table.update("T", route(&[("a", &[(0, "new:1")])], &[("a", 1, 6)]));
        let routes = table.snapshot();
        assert_eq!(routes.master_addr("a"), Some("new:1"));
        assert_eq!(routes.broker_addrs(), ["new:1"]);
        // Forgetting a topic keeps the newest addresses of the brokers still named.
        table.remove("stale0");
        assert_eq!(table.snapshot().master_addr("a"), Some("new:1"));
        // The broker moves back: a stale topic answering what it said before is news again.
        assert!(table.update("stale1", old.clone()));
        assert_eq!(table.snapshot().master_addr("a"), Some("old:1"));
        // And the same answer once more is not.
        assert!(!table.update("stale1", old));
    }

    /// Overlapping look-ups of one topic: the answer of the one that started last stands,
    /// whichever order they finish in, even when it changed nothing.
    #[test]
    fn an_older_answer_does_not_overwrite_a_newer_one() {
        let table = RouteTable::new();
        let old = route(&[("a", &[(0, "h:1")])], &[("a", 4, 6)]);
        let new = route(&[("a", &[(0, "h:1")])], &[("a", 8, 6)]);
        let (first, second) = (table.lookup(), table.lookup());
        assert!(table.apply("T", new.clone(), second));
        assert!(
            !table.apply("T", old.clone(), first),
            "a stale answer applied"
        );
        assert_eq!(table.snapshot().subscribe_queues("T").len(), 8);
        // An unchanged answer still counts as the newest word.
        let (third, fourth) = (table.lookup(), table.lookup());
        assert!(!table.apply("T", new, fourth));
        assert!(
            !table.apply("T", old.clone(), third),
            "a stale answer applied"
        );
        assert_eq!(table.snapshot().subscribe_queues("T").len(), 8);
        // Topics are ordered apart: an old look-up of another topic still applies.
        let other = table.lookup();
        assert!(table.update("T", old.clone()));
        assert!(table.apply("U", old, other));
        assert_eq!(table.snapshot().subscribe_queues("T").len(), 4);
    }

    /// A topic's revision moves with every change to its route, whichever clone of the table
    /// applied it, and with nothing else.
    #[test]
    fn a_topics_revision_moves_with_its_route_only() {
        let table = RouteTable::new();
        let producer = table.clone();
        let r4 = route(&[("a", &[(0, "h:1")])], &[("a", 4, 6)]);
        let r8 = route(&[("a", &[(0, "h:1")])], &[("a", 8, 6)]);
        assert_eq!(table.snapshot().revision("T"), None);
        table.update("T", r4.clone());
        let first = table.snapshot().revision("T");
        assert!(first.is_some());
        producer.update("T", r4.clone());
        producer.update("U", r8.clone());
        assert_eq!(table.snapshot().revision("T"), first, "unchanged");
        producer.update("T", r8);
        let second = table.snapshot().revision("T");
        assert!(second.is_some() && second != first, "changed by a clone");
        table.remove("T");
        assert_eq!(table.snapshot().revision("T"), None);
        table.update("T", r4);
        assert!(![None, first, second].contains(&table.snapshot().revision("T")));
    }

    /// Java's order for a suggested slave that is gone: the next id before any other address.
    #[test]
    fn a_pull_tries_the_next_slave_before_the_master() {
        let table = RouteTable::new();
        let rx = table.subscribe();
        assert!(table.update(
            "T",
            route(&[("a", &[(0, "m"), (2, "s2"), (5, "s5")])], &[("a", 1, 6)]),
        ));
        let routes = rx.borrow().clone();
        let pull = |suggested| routes.pull_addr("a", suggested).map(|p| (p.addr, p.slave));
        assert_eq!(pull(1), Some(("s2", true)));
        assert_eq!(pull(3), Some(("m", false)));
        assert_eq!(pull(4), Some(("s5", true)));
    }

    #[test]
    fn addresses_and_queues() {
        let table = RouteTable::new();
        let mut rx = table.subscribe();
        assert!(table.update(
            "T",
            route(
                &[
                    ("a", &[(0, "h:1"), (1, "h:2")]),
                    ("b", &[(2, "h:4"), (1, "h:3")])
                ],
                &[("a", 2, 6), ("b", 1, 6), ("c", 3, 2)],
            ),
        ));
        assert!(rx.has_changed().expect("sender alive"));
        let routes = rx.borrow_and_update().clone();
        assert_eq!(routes.master_addr("a"), Some("h:1"));
        assert_eq!(routes.master_addr("b"), None);
        let pull = |name, suggested| routes.pull_addr(name, suggested).map(|p| (p.addr, p.slave));
        // The master unless a pull answer suggested otherwise; a slave that exists when it did.
        assert_eq!(pull("a", 0), Some(("h:1", false)));
        assert_eq!(pull("a", 1), Some(("h:2", true)));
        // A suggested slave that is gone: the next id (none here), then the master.
        assert_eq!(pull("a", 7), Some(("h:1", false)));
        // No master: the suggested slave, the next one, or the lowest id.
        assert_eq!(pull("b", 0), Some(("h:3", true)));
        assert_eq!(pull("b", 2), Some(("h:4", true)));
        assert_eq!(pull("b", 3), Some(("h:3", true)));
        assert_eq!(pull("b", 1), Some(("h:3", true)));
        // Whatever a broker suggests, nothing overflows and an address is found.
        assert_eq!(pull("b", i64::MAX), Some(("h:3", true)));
        assert_eq!(pull("a", -1), Some(("h:1", false)));
        assert_eq!(pull("zzz", 0), None);
        assert_eq!(routes.broker_addrs(), ["h:1", "h:2", "h:3", "h:4"]);
        assert_eq!(routes.master_addrs(), ["h:1"]);
        // "c" is write-only: not consumable.
        assert_eq!(
            routes.subscribe_queues("T"),
            [
                MessageQueue::new("T", "a", 0),
                MessageQueue::new("T", "a", 1),
                MessageQueue::new("T", "b", 0),
            ]
        );
        assert!(routes.subscribe_queues("other").is_empty());
    }

    #[test]
    fn queue_expansion_is_bounded() {
        let r = route(&[("a", &[(0, "h:1")])], &[("a", MAX_QUEUE_NUMS + 1, 6)]);
        assert_eq!(
            subscribe_queues("T", &r).len(),
            usize::try_from(MAX_QUEUE_NUMS).expect("fits")
        );
        // Hand-built (`parse` rejects it): two full brokers still make one topic's worth.
        let r = route(
            &[("a", &[(0, "h:1")]), ("b", &[(0, "h:2")])],
            &[("b", MAX_QUEUE_NUMS, 6), ("a", MAX_QUEUE_NUMS, 6)],
        );
        let queues = subscribe_queues("T", &r);
        assert_eq!(
            queues.len(),
            usize::try_from(MAX_TOPIC_QUEUES).expect("fits")
        );
        assert!(queues.iter().all(|q| q.broker_name == "a"));
    }

    #[test]
    fn a_broker_named_twice_expands_once() {
        let mut datas = vec![("b", 256, 6); 256];
        datas.extend([("a", 2, 6), ("b", 300, 2), ("b", 3, 6)]);
        let r = route(&[("a", &[(0, "h:1")]), ("b", &[(0, "h:2")])], &datas);
        let queues = subscribe_queues("T", &r);
        // The largest readable count of each broker, sorted, no duplicates.
        let expected: Vec<MessageQueue> = (0..2)
            .map(|i| MessageQueue::new("T", "a", i))
            .chain((0..256).map(|i| MessageQueue::new("T", "b", i)))
            .collect();
        assert_eq!(queues, expected);
        assert_eq!(queues.capacity(), queues.len());
    }

    #[test]
    fn unchanged_routes_do_not_wake_subscribers() {
        let table = RouteTable::new();
        let r = route(&[("a", &[(0, "h:1")])], &[("a", 4, 6)]);
        assert!(table.update("T", r.clone()));
        let mut rx = table.subscribe();
        rx.borrow_and_update();
        assert!(!table.update("T", r));
        assert!(!rx.has_changed().expect("sender alive"));
        assert!(table.remove("T"));
        assert!(rx.has_changed().expect("sender alive"));
        assert!(table.snapshot().broker_addrs().is_empty());
        assert!(!table.remove("T"));
    }

    /// A broker the answers stop naming keeps its last master address for the final commits of
    /// the queues it loses, until a route names it again.
    #[test]
    fn a_departed_brokers_last_master_is_remembered() {
        let table = RouteTable::new();
        table.update(
            "T",
            route(&[("a", &[(0, "h:1"), (1, "h:2")])], &[("a", 1, 6)]),
        );
        assert!(table.update("T", route(&[], &[])));
        let routes = table.snapshot();
        assert_eq!(routes.master_addr("a"), None);
        assert!(routes.broker_addrs().is_empty());
        assert!(routes.subscribe_queues("T").is_empty());
        assert_eq!(routes.last_master_addr("a"), Some("h:1"));
        // Named again, at a new address: that one is the truth.
        table.update("T", route(&[("a", &[(0, "h:3")])], &[("a", 1, 6)]));
        assert_eq!(table.snapshot().last_master_addr("a"), Some("h:3"));
        // Forgetting the topic also sets the broker aside.
        table.remove("T");
        assert_eq!(table.snapshot().last_master_addr("a"), Some("h:3"));
        // Bounded: the first names (by name) go first.
        for i in 0..=MAX_DEPARTED {
            let name = format!("b{i:04}");
            table.update("U", route(&[(name.as_str(), &[(0, "h:9")])], &[]));
        }
        table.remove("U");
        let routes = table.snapshot();
        assert_eq!(routes.departed.len(), MAX_DEPARTED);
        assert_eq!(
            routes.last_master_addr(&format!("b{MAX_DEPARTED:04}")),
            Some("h:9")
        );
    }

    #[test]
    fn brokers_are_merged_across_topics() {
        let table = RouteTable::new();
        table.update("T1", route(&[("a", &[(0, "h:1")])], &[("a", 1, 6)]));
        table.update("T2", route(&[("b", &[(0, "h:2")])], &[("b", 1, 6)]));
        let snap = table.snapshot();
        assert_eq!(snap.broker_addrs(), ["h:1", "h:2"]);
        table.remove("T1");
        assert_eq!(table.snapshot().broker_addrs(), ["h:2"]);
        // The old snapshot is untouched.
        assert_eq!(snap.broker_addrs(), ["h:1", "h:2"]);
    }
}
