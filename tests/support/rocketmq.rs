//! [`RocketMq`]: one private name server + broker as child processes.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rocketmq_webhook::client::producer::{Producer, ProducerConfig, QueueSelector, SendResult};
use rocketmq_webhook::client::{Client, ClientConfig, InboundHandler, NotSupported};
use rocketmq_webhook::remoting::body::route::TopicRouteData;
use rocketmq_webhook::remoting::message::Message;
use rocketmq_webhook::remoting::rpc::GetMaxOffset;
use tokio::time::{sleep, Instant};

use super::raw;

/// Version installed by scripts/install-rocketmq.sh.
const ROCKETMQ_VERSION: &str = "1.0.0";
const NAMESRV_BIN: &str = "rocketmq-namesrv-rust";
const BROKER_BIN: &str = "rocketmq-broker-rust";
/// How often a start is retried when a process exits early (a port taken by a parallel test
/// between picking and binding it).
const START_ATTEMPTS: u32 = 4;
/// Measured start time is about 3 s; this leaves room for a loaded 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(45);
/// GET_ROUTEINFO_BY_TOPIC and GET_MAX_OFFSET request codes (rocketmq-remoting.md section 2.1).
const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
const GET_MAX_OFFSET: i32 = 30;
/// The template topic every broker registers with the name server.
const TBW102: &str = "TBW102";
const CLUSTER_NAME: &str = "TestCluster";
const BROKER_NAME: &str = "broker-test";

/// The loopback ports of one instance. The broker also binds `broker - 2` (VIP channel).
#[derive(Debug, Clone, Copy)]
struct Ports {
    namesrv: u16,
    broker: u16,
    ha: u16,
}

/// Where the two server binaries are.
#[derive(Debug, Clone)]
struct Binaries {
    namesrv: PathBuf,
    broker: PathBuf,
}

/// Why a launch attempt failed.
#[derive(Debug)]
enum LaunchError {
    /// A process exited during startup: worth retrying on other ports.
    Exited(String),
    /// Nothing exited but the servers never became ready: retrying will not help.
    NotReady(String),
}

/// A running private name server + broker; both processes stop when this is dropped.
#[derive(Debug)]
pub(crate) struct RocketMq {
    binaries: Binaries,
    ports: Ports,
    namesrv: Option<Child>,
    broker: Option<Child>,
    /// `key=value` lines appended to the broker's properties file (see [`Self::start_with`]).
    extra_broker_properties: Vec<(String, String)>,
    // Declared last so it is removed after the processes are gone (Drop kills them first).
    dir: tempfile::TempDir,
}

impl RocketMq {
    /// Starts a name server and a broker on free loopback ports and waits until the broker's
    /// route is visible on the name server.
    ///
    /// # Panics
    /// When the binaries are missing (the message names scripts/install-rocketmq.sh) or the
    /// servers do not come up; the message carries the last lines of both logs.
    pub(crate) async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Like [`Self::start`], with `extra_broker_properties` appended to the broker's properties
    /// file (e.g. `authenticationEnabled=true`). When there are any and they do not set
    /// `authConfigPath`, it is pointed into the scratch directory: its default is under the
    /// user's home, and an auth-enabled broker writes its user and ACL files there.
    ///
    /// # Panics
    /// As [`Self::start`]; also when a key or value contains a line break (it would inject
    /// another property).
    pub(crate) async fn start_with(extra_broker_properties: &[(&str, &str)]) -> Self {
        let extra_broker_properties: Vec<(String, String)> = extra_broker_properties
            .iter()
            .map(|(key, value)| {
                assert!(
                    !format!("{key}{value}").contains(['\n', '\r']),
                    "broker property {key:?} contains a line break"
                );
                ((*key).to_owned(), (*value).to_owned())
            })
            .collect();
        let binaries = find_binaries();
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let root = scratch_root();
            let dir = tempfile::Builder::new()
                .prefix("rocketmq-test-")
                .tempdir_in(&root)
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot create a temporary directory in {}: {e}",
                        root.display()
                    )
                });
            let mut mq = Self {
                binaries: binaries.clone(),
                ports: pick_ports(),
                namesrv: None,
                broker: None,
                extra_broker_properties: extra_broker_properties.clone(),
                dir,
            };
            match mq.launch().await {
                Ok(()) => return mq,
                Err(LaunchError::Exited(msg)) => {
                    eprintln!(
                        "RocketMQ start attempt {attempt} failed, retrying on new ports: {msg}"
                    );
                    last_failure = msg;
                }
                Err(LaunchError::NotReady(msg)) => panic!("{msg}"),
            }
            // `mq` drops here: whatever still runs is killed before the next attempt.
        }
        panic!(
            "RocketMQ did not start after {START_ATTEMPTS} attempts; last failure: {last_failure}{}",
            disk_note(&scratch_root())
        );
    }

    /// The name-server address, `127.0.0.1:<port>`.
    pub(crate) fn namesrv_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.namesrv)
    }

    /// The broker's address as it advertises it, `127.0.0.1:<port>`.
    pub(crate) fn broker_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.broker)
    }

    /// The broker name (`brokerName`).
    pub(crate) fn broker_name(&self) -> &'static str {
        BROKER_NAME
    }

    /// The cluster name (`brokerClusterName`).
    pub(crate) fn cluster_name(&self) -> &'static str {
        CLUSTER_NAME
    }

    /// How many messages `%DLQ%<group>` holds (its queue 0, the only one the broker creates);
    /// 0 while the topic does not exist (the broker answers 0 for an unknown topic).
    ///
    /// # Panics
    /// When the broker does not answer: a count that could not be read must not pass for 0.
    pub(crate) async fn dlq_count(&self, group: &str) -> u64 {
        use rocketmq_webhook::remoting::rpc::GetMaxOffset;
        let rpc = GetMaxOffset {
            topic: format!("%DLQ%{group}"),
            queue_id: 0,
        };
        let n = self
            .client()
            .pool()
            .call(&self.broker_addr(), &rpc, std::time::Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("max offset of {}: {e}", rpc.topic));
        u64::try_from(n).unwrap_or_else(|_| panic!("max offset of {}: {n}", rpc.topic))
    }

    /// Sends `body` to queue 0 of `topic` with the compressed flag over a plain body: a record
    /// the broker stores and no consumer can inflate (a producer bug). Returns its offset msgId.
    pub(crate) async fn send_undecodable(&self, topic: &str, body: &str) -> String {
        use rocketmq_webhook::remoting::message::{sys_flag, Message};
        use rocketmq_webhook::remoting::rpc::SendMessage;
        let message = Message::new(topic, body.to_owned());
        let mut send = SendMessage::for_message("P_undecodable", &message, 0, 0);
        send.header.sys_flag |= sys_flag::COMPRESSED;
        self.client()
            .pool()
            .call(
                &self.broker_addr(),
                &send,
                std::time::Duration::from_secs(5),
            )
            .await
            .unwrap_or_else(|e| panic!("raw send of an undecodable body: {e}"))
            .msg_id
    }

    /// The bodies stored in `%DLQ%<group>` queue 0 right now (empty while that topic does not
    /// exist yet).
    pub(crate) async fn dlq_bodies(&self, group: &str) -> Vec<String> {
        use rocketmq_webhook::remoting::rpc::{PullMessage, PullStatus};
        let dlq = format!("%DLQ%{group}");
        let client = self.client();
        if client.namesrv().route(&dlq).await.is_err() {
            return Vec::new();
        }
        let pull = PullMessage::all_tags(&super::unique("G_dlq_reader"), &dlq, 0, 0, 32);
        match client
            .pool()
            .call(
                &self.broker_addr(),
                &pull,
                std::time::Duration::from_secs(5),
            )
            .await
        {
            Ok(r) if r.status == PullStatus::Found => r
                .messages
                .iter()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A new client of this name server with a unique instance name; broker requests are
    /// declined.
    pub(crate) fn client(&self) -> Client {
        self.client_with(Arc::new(NotSupported))
    }

    /// A new client of this name server with a unique instance name (so its client id differs
    /// from every other client's) whose broker requests go to `inbound`.
    pub(crate) fn client_with(&self, inbound: Arc<dyn InboundHandler>) -> Client {
        Client::new(
            ClientConfig {
                namesrv_addr: self.namesrv_addr(),
                instance_name: Some(super::unique("test-client")),
                client_ip: Some("127.0.0.1".to_owned()),
                ..ClientConfig::default()
            },
            inbound,
        )
        .unwrap_or_else(|e| panic!("cannot build a client for {}: {e}", self.namesrv_addr()))
    }

    /// A producer on a new client.
    pub(crate) fn producer(&self) -> Producer {
        Producer::new(self.client(), ProducerConfig::default())
    }

    /// Creates `topic` with `queues` read/write queues on the broker (UPDATE_AND_CREATE_TOPIC)
    /// and waits until the name server shows its route.
    ///
    /// # Panics
    /// When the broker refuses or the route does not appear.
    pub(crate) async fn create_topic(&self, topic: &str, queues: u16) -> TopicRouteData {
        self.producer()
            .create_topic(topic, queues, false)
            .await
            .unwrap_or_else(|e| panic!("cannot create topic {topic}: {e}\n{}", self.log_tails(20)))
    }

    /// Sends `count` messages with bodies `<prefix>-<i>` (and `tag`, if given) round-robin to
    /// `topic`, one by one; returns the results in send order.
    ///
    /// # Panics
    /// When a send fails.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        count: usize,
        prefix: &str,
        tag: Option<&str>,
    ) -> Vec<SendResult> {
        let producer = self.producer();
        let mut results = Vec::with_capacity(count);
        for i in 0..count {
            let mut message = Message::new(topic, format!("{prefix}-{i}"));
            if let Some(tag) = tag {
                message = message.with_tags(tag);
            }
            let result = producer
                .send(message, &QueueSelector::RoundRobin)
                .await
                .unwrap_or_else(|e| {
                    panic!("send {i} to {topic} failed: {e}\n{}", self.log_tails(20))
                });
            results.push(result);
        }
        let sent = results.iter().map(|r| (r.queue.queue_id, r.queue_offset));
        self.wait_pullable(producer.client(), topic, sent).await;
        results
    }

    /// Waits until the messages stored at `sent` (queue id, queue offset) can be pulled. The
    /// broker answers a send once the commit log holds the message and adds it to its consume
    /// queue afterwards, so a pull right after the send could stop one message short (seen in
    /// `restarted_broker_keeps_its_messages` and `topic_route_send_batch_and_pull_round_trip`).
    /// [`Self::produce`] calls it; a test that sends by itself calls it before pulling.
    ///
    /// # Panics
    /// When a queue's max offset has not passed its last message within 10 s.
    pub(crate) async fn wait_pullable(
        &self,
        client: &Client,
        topic: &str,
        sent: impl IntoIterator<Item = (i32, i64)>,
    ) {
        wait_served(client, &self.broker_addr(), topic, sent, || {
            self.log_tails(20)
        })
        .await;
    }

    /// The instance's scratch directory (configs, logs, store).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of both server logs, for assertion messages.
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["namesrv", "broker"] {
            let path = self.dir.path().join(format!("{name}.log"));
            let _ = writeln!(out, "--- last {lines} lines of {}:", path.display());
            out.push_str(&tail(&path, lines));
        }
        out
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 10 s) and starts it again on the same ports
    /// and store; returns once it answers requests and its route is on the name server.
    ///
    /// # Panics
    /// When the broker does not come back.
    pub(crate) async fn restart_broker(&mut self) {
        self.stop_broker().await;
        self.start_broker().await;
    }

    /// Stops the broker gracefully (SIGTERM, then SIGKILL after 10 s). The name server keeps its
    /// stale registration until it expires, as with a crashed broker.
    pub(crate) async fn stop_broker(&mut self) {
        if let Some(mut child) = self.broker.take() {
            terminate(&mut child, Duration::from_secs(10)).await;
        }
    }

    /// Starts the broker again after [`Self::stop_broker`], on the same ports and store.
    ///
    /// # Panics
    /// When a broker is already running or it does not come up.
    pub(crate) async fn start_broker(&mut self) {
        assert!(self.broker.is_none(), "the broker is already running");
        let child = self.spawn_broker().unwrap_or_else(|e| panic!("{e}"));
        self.broker = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(msg) = self.exited() {
                panic!("the restarted broker exited: {msg}\n{}", self.log_tails(30));
            }
            let answered = raw::request(
                &self.broker_addr(),
                GET_MAX_OFFSET,
                &[("topic", TBW102), ("queueId", "0")],
                Duration::from_secs(2),
            )
            .await
            .is_ok();
            if answered && self.route_ready().await {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the restarted broker did not answer within {READY_TIMEOUT:?}\n{}",
                    self.log_tails(30)
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the name server and starts it again on the same port. It knows no topics until the
    /// broker re-registers (every 30 s).
    ///
    /// # Panics
    /// When it does not come back.
    pub(crate) async fn restart_namesrv(&mut self) {
        if let Some(mut child) = self.namesrv.take() {
            terminate(&mut child, Duration::from_secs(10)).await;
        }
        let child = self.spawn_namesrv().unwrap_or_else(|e| panic!("{e}"));
        self.namesrv = Some(child);
        if let Err(e) = self.wait_namesrv_listening().await {
            let msg = match e {
                LaunchError::Exited(m) | LaunchError::NotReady(m) => m,
            };
            panic!("{msg}");
        }
    }

    // === startup ===

    async fn launch(&mut self) -> Result<(), LaunchError> {
        self.write_configs()
            .map_err(|e| LaunchError::NotReady(e.to_string()))?;
        self.namesrv = Some(self.spawn_namesrv().map_err(LaunchError::NotReady)?);
        // The broker registers at start and then only every 30 s: the name server must listen
        // before the broker starts, or the first registration is lost.
        self.wait_namesrv_listening().await?;
        self.broker = Some(self.spawn_broker().map_err(LaunchError::NotReady)?);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(msg) = self.exited() {
                return Err(LaunchError::Exited(format!(
                    "{msg}\n{}",
                    self.log_tails(20)
                )));
            }
            if self.route_ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NotReady(format!(
                    "the broker's route did not appear on the name server {} within {READY_TIMEOUT:?}\n{}",
                    self.namesrv_addr(),
                    self.log_tails(30)
                )));
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_namesrv_listening(&mut self) -> Result<(), LaunchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(msg) = self.exited() {
                return Err(LaunchError::Exited(format!(
                    "{msg}\n{}",
                    self.log_tails(20)
                )));
            }
            if tokio::net::TcpStream::connect(self.namesrv_addr())
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NotReady(format!(
                    "the name server did not listen on {} within {READY_TIMEOUT:?}\n{}",
                    self.namesrv_addr(),
                    self.log_tails(30)
                )));
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// True when the name server returns a TBW102 route naming this broker's address (every
    /// test broker has the same name: the address tells it from another instance's).
    async fn route_ready(&self) -> bool {
        match raw::request(
            &self.namesrv_addr(),
            GET_ROUTEINFO_BY_TOPIC,
            &[("topic", TBW102)],
            Duration::from_secs(2),
        )
        .await
        {
            Ok(resp) => {
                resp.code == 0
                    && String::from_utf8_lossy(&resp.body)
                        .contains(&format!("\"{}\"", self.broker_addr()))
            }
            Err(_) => false,
        }
    }

    /// Describes a child that has exited, if any, with the broker's own reason when it logged
    /// one (its log ends with a long shutdown sequence that buries it).
    fn exited(&mut self) -> Option<String> {
        for (name, child) in [
            ("name server", &mut self.namesrv),
            ("broker", &mut self.broker),
        ] {
            if let Some(child) = child {
                if let Ok(Some(status)) = child.try_wait() {
                    let cause = startup_failure_cause(&self.dir.path().join("broker.log"))
                        .map(|line| format!("\nthe broker logged: {line}"))
                        .unwrap_or_default();
                    return Some(format!(
                        "the {name} exited during startup with {status}{cause}{}",
                        disk_headroom(self.dir.path())
                    ));
                }
            }
        }
        None
    }

    fn write_configs(&self) -> std::io::Result<()> {
        let dir = self.dir.path();
        std::fs::create_dir_all(dir.join("home"))?;
        std::fs::create_dir_all(dir.join("store"))?;
        std::fs::create_dir_all(dir.join("namesrv"))?;
        // The name server reads only TOML; unknown keys abort its startup.
        let namesrv = format!(
            "listenPort = {}\nbindAddress = \"127.0.0.1\"\nrocketmqHome = \"{home}\"\n\
             kvConfigPath = \"{ns}/kvConfig.json\"\nconfigStorePath = \"{ns}/namesrv.properties\"\n",
            self.ports.namesrv,
            home = dir.join("home").display(),
            ns = dir.join("namesrv").display(),
        );
        std::fs::write(dir.join("namesrv.toml"), namesrv)?;
        // Java properties (converted by the broker). brokerIP1 keeps it from advertising the
        // external address; haListenPort must be free too or a second broker cannot start. The
        // properties form cannot set the bind address (the broker listens on 0.0.0.0), and
        // 64 MiB commit-log files keep the temporary store small.
        let mut broker = format!(
            "brokerClusterName={CLUSTER_NAME}\nbrokerName={BROKER_NAME}\nbrokerId=0\n\
             brokerIP1=127.0.0.1\nlistenPort={}\nhaListenPort={}\nhaListenAddress=127.0.0.1\n\
             mappedFileSizeCommitLog=67108864\nnamesrvAddr={}\n\
             storePathRootDir={}\nautoCreateTopicEnable=true\nautoCreateSubscriptionGroup=true\n",
            self.ports.broker,
            self.ports.ha,
            self.namesrv_addr(),
            dir.join("store").display(),
        );
        if !self.extra_broker_properties.is_empty()
            && !self
                .extra_broker_properties
                .iter()
                .any(|(key, _)| key == "authConfigPath")
        {
            let _ = writeln!(broker, "authConfigPath={}", dir.join("auth").display());
        }
        for (key, value) in &self.extra_broker_properties {
            let _ = writeln!(broker, "{key}={value}");
        }
        std::fs::write(dir.join("broker.properties"), broker)
    }

    fn spawn_namesrv(&self) -> Result<Child, String> {
        let config = self.dir.path().join("namesrv.toml");
        self.spawn(
            &self.binaries.namesrv,
            "namesrv",
            &["-c".as_ref(), config.as_os_str()],
        )
    }

    fn spawn_broker(&self) -> Result<Child, String> {
        let config = self.dir.path().join("broker.properties");
        let namesrv = self.namesrv_addr();
        // `-n` explicitly: the broker prefers an inherited NAMESRV_ADDR over its config file.
        self.spawn(
            &self.binaries.broker,
            "broker",
            &[
                "-c".as_ref(),
                config.as_os_str(),
                "-n".as_ref(),
                namesrv.as_ref(),
            ],
        )
    }

    fn spawn(
        &self,
        program: &Path,
        log_name: &str,
        args: &[&std::ffi::OsStr],
    ) -> Result<Child, String> {
        let dir = self.dir.path();
        let log_path = dir.join(format!("{log_name}.log"));
        // Append: a restarted broker keeps its earlier log for post-mortems.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        // Drop covers panics; `setpriv --pdeathsig` also covers a test binary that is killed
        // outright (a CI timeout), which would otherwise leave orphaned servers. It fires when
        // the spawning thread exits, which for a test is after Drop has run anyway.
        let mut command = match find_in_path("setpriv") {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .current_dir(dir)
            .env("ROCKETMQ_HOME", dir.join("home"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("NAMESRV_ADDR")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))
    }
}

/// Waits until the broker at `broker_addr` serves the messages stored at `sent` (queue id,
/// queue offset) of `topic`: its max offset has passed each queue's last one (see
/// [`RocketMq::wait_pullable`]). `context` adds to the panic message.
///
/// # Panics
/// When a queue's max offset has not passed its last message within 10 s.
pub(crate) async fn wait_served(
    client: &Client,
    broker_addr: &str,
    topic: &str,
    sent: impl IntoIterator<Item = (i32, i64)>,
    context: impl Fn() -> String,
) {
    let mut last = std::collections::BTreeMap::new();
    for (queue_id, offset) in sent {
        let at = last.entry(queue_id).or_insert(offset);
        *at = (*at).max(offset);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (queue_id, offset) in last {
        let request = GetMaxOffset {
            topic: topic.to_owned(),
            queue_id,
        };
        loop {
            let max = client
                .pool()
                .call(broker_addr, &request, Duration::from_secs(5))
                .await;
            match max {
                Ok(max) if max > offset => break,
                _ if Instant::now() >= deadline => panic!(
                    "{topic}#{queue_id}: offset {offset} not pullable after 10 s ({max:?})\n{}",
                    context()
                ),
                _ => sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for RocketMq {
    fn drop(&mut self) {
        // SIGKILL and reap: the store is thrown away, so there is nothing to flush, and this
        // runs during panics too.
        for child in [self.broker.take(), self.namesrv.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
async fn terminate(child: &mut Child, grace: Duration) {
    // std only offers SIGKILL; `kill` from procps sends SIGTERM without unsafe code.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Picks free loopback ports: the name-server port, a broker port whose `port - 2` is free too,
/// and an HA port. All are held until every one is chosen, so they differ; they are released
/// before the servers bind them, and a lost race is handled by retrying the start.
fn pick_ports() -> Ports {
    let bind = |port: u16| TcpListener::bind(("127.0.0.1", port));
    let any = || bind(0).unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
    let port_of = |l: &TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
    let namesrv = any();
    let (broker, vip) = loop {
        let broker = any();
        let port = port_of(&broker);
        if port > 1026 {
            if let Ok(vip) = bind(port - 2) {
                break (broker, vip);
            }
        }
    };
    let ha = any();
    let ports = Ports {
        namesrv: port_of(&namesrv),
        broker: port_of(&broker),
        ha: port_of(&ha),
    };
    drop((namesrv, broker, vip, ha));
    ports
}

/// Finds the server binaries: `$ROCKETMQ_BIN_DIR`, else the install root of
/// scripts/install-rocketmq.sh, else `PATH`.
///
/// # Panics
/// When they are not found: integration tests fail rather than skip.
fn find_binaries() -> Binaries {
    let in_dir = |dir: &Path| {
        let b = Binaries {
            namesrv: dir.join(NAMESRV_BIN),
            broker: dir.join(BROKER_BIN),
        };
        (b.namesrv.is_file() && b.broker.is_file()).then_some(b)
    };
    if let Some(dir) = std::env::var_os("ROCKETMQ_BIN_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return in_dir(&dir).unwrap_or_else(|| {
            panic!(
                "ROCKETMQ_BIN_DIR={} does not contain {NAMESRV_BIN} and {BROKER_BIN}; \
                 install them with scripts/install-rocketmq.sh",
                dir.display()
            )
        });
    }
    let root = std::env::var_os("ROCKETMQ_TOOLS_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| {
                PathBuf::from(home)
                    .join(".cache/rocketmq-webhook")
                    .join(format!("rocketmq-rust-{ROCKETMQ_VERSION}"))
            })
        });
    if let Some(found) = root.as_deref().and_then(|root| in_dir(&root.join("bin"))) {
        return found;
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(found) = std::env::split_paths(&path).find_map(|dir| in_dir(&dir)) {
            return found;
        }
    }
    panic!(
        "the RocketMQ test servers ({NAMESRV_BIN}, {BROKER_BIN} {ROCKETMQ_VERSION}) were not found in \
         $ROCKETMQ_BIN_DIR, {} or PATH. Install them with scripts/install-rocketmq.sh \
         (about 18 minutes the first time); integration tests are never skipped.",
        root.map(|r| r.join("bin").display().to_string()).unwrap_or_else(|| "the install root".into())
    );
}

/// The first executable named `name` on `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// What `scripts/disk-headroom.sh` says of `dir`'s file system, as a line to add to a start-up
/// failure: the broker's "service lifecycle operation failed" (exit status 70) is all it says
/// when its store's file system is 90 % used counting reserved blocks, which CI ran into with
/// every broker-backed test failing that way.
fn disk_headroom(dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/disk-headroom.sh");
    match std::process::Command::new("bash")
        .arg(script)
        .arg(dir)
        .output()
    {
        Ok(out) => format!("\n{}", String::from_utf8_lossy(&out.stderr).trim_end()),
        Err(_) => String::new(),
    }
}

/// Where each instance's scratch directory (configs, logs, store) is created:
/// `$ROCKETMQ_TEST_SCRATCH_DIR`, else the system temporary directory. (Not tmpfs: the broker's
/// pulls return nothing from a store on /dev/shm here.)
fn scratch_root() -> PathBuf {
    std::env::var_os("ROCKETMQ_TEST_SCRATCH_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(std::env::temp_dir, PathBuf::from)
}

/// The line in which the broker names why its startup failed ("Rolling back broker startup
/// ... cause=..."), if it logged one, without the colour codes it writes despite `NO_COLOR`.
fn startup_failure_cause(log: &Path) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(&text);
    let line = text
        .lines()
        .find(|line| line.contains("Rolling back broker startup"))?;
    let mut plain = String::with_capacity(line.len());
    let mut in_escape = false;
    for c in line.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (false, c) => plain.push(c),
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    Some(plain)
}

/// What scripts/disk-headroom.sh says of `dir`'s file system (its one definition of the
/// broker's limits: at 90 % used counting reserved blocks the broker refuses to start, which
/// `df`'s Use% hides; CI failed every broker-backed test that way), or nothing when it cannot
/// run.
fn disk_note(dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/disk-headroom.sh");
    match Command::new(&script).arg(dir).output() {
        Ok(out) => format!("\n{}", String::from_utf8_lossy(&out.stderr).trim_end()),
        Err(_) => String::new(),
    }
}

/// The last `lines` lines of a file (or a note that it cannot be read).
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let mut out = all[all.len().saturating_sub(lines)..].join("\n");
            out.push('\n');
            out
        }
        Err(e) => format!("(cannot read: {e})\n"),
    }
}
