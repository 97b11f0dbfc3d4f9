//! [`Daemon`]: the real `rocketmq-webhook run` binary as a child process, for end-to-end tests.
//!
//! A [`Launch`] describes one start: an optional YAML file (written to a temporary directory and
//! passed with `--config`) and an explicit environment. The child starts from an EMPTY
//! environment plus `PATH`, `HOME` and what the test sets, so nothing of the developer's shell
//! (`ROCKETMQ_*`, `NAMESRV_ADDR`, `RUST_LOG`) leaks in. Its stdout and stderr go to a file that
//! failure messages quote.
//!
//! Invariants:
//! - the admin server always listens on a free loopback port chosen here
//!   (`ROCKETMQ_ADMIN_LISTEN`, which beats the file), so tests run side by side;
//! - every wait has a deadline, and the child is killed and reaped in `Drop`, also when the test
//!   panics; `setpriv --pdeathsig` also covers a test binary that is killed outright.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::{sleep, Instant};

/// The binary under test, built by cargo for this integration test.
const BIN: &str = env!("CARGO_BIN_EXE_rocketmq-webhook");
/// How long a daemon may take to become ready (routes fetched, every subscription running).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a start is retried when the admin port was taken between picking and binding it.
const START_ATTEMPTS: u32 = 3;

/// How to start one daemon.
#[derive(Debug, Clone, Default)]
pub(crate) struct Launch {
    yaml: Option<String>,
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Launch {
    /// Configuration from `ROCKETMQ_*` variables only (no file).
    pub(crate) fn env_only() -> Self {
        Self::default()
    }

    /// Configuration from a YAML file with this text (plus any variables set with
    /// [`Self::env`]).
    pub(crate) fn yaml(text: impl Into<String>) -> Self {
        Self {
            yaml: Some(text.into()),
            ..Self::default()
        }
    }

    /// `--config path` for a file the test does not write (a missing or unreadable one).
    pub(crate) fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            file: Some(path.into()),
            ..Self::default()
        }
    }

    /// Sets one environment variable of the child.
    pub(crate) fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }
}

/// A running (or exited) daemon; killed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Daemon {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
    config: Option<PathBuf>,
    http: reqwest::Client,
    // Declared last: removed after the child is gone.
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon and waits until `/readyz` answers 200.
    ///
    /// # Panics
    /// When the process exits or does not become ready within 60 s; the message carries its
    /// output.
    pub(crate) async fn start(launch: &Launch) -> Self {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut daemon = Self::spawn(launch);
            match daemon.wait_ready().await {
                Ok(()) => return daemon,
                Err(output) if output.contains("cannot bind the admin server") => {
                    // The admin port was taken between picking and binding; try another.
                    last = output;
                }
                Err(output) => panic!("{output}"),
            }
        }
        panic!("the daemon could not bind an admin port in {START_ATTEMPTS} attempts:\n{last}");
    }

    /// Starts the daemon without waiting for anything (for configurations that must fail).
    ///
    /// # Panics
    /// When the binary cannot be started or the temporary directory cannot be written.
    pub(crate) fn spawn(launch: &Launch) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rocketmq-webhook-daemon-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let admin = free_port();
        let log = dir.path().join("daemon.log");
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let mut command = match find_in_path("setpriv") {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--", BIN]);
                c
            }
            None => Command::new(BIN),
        };
        command.arg("run");
        let config = match (&launch.yaml, &launch.file) {
            (Some(text), _) => {
                let path = dir.path().join("config.yaml");
                std::fs::write(&path, text)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
                Some(path)
            }
            (None, Some(path)) => Some(path.clone()),
            (None, None) => None,
        };
        if let Some(path) = &config {
            command.arg("--config").arg(path);
        }
        command.env_clear();
        for name in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .env("NO_COLOR", "1")
            .env("ROCKETMQ_ADMIN_LISTEN", admin.to_string())
            // Offsets of BROADCASTING subscriptions default under $HOME; keep them here.
            .env("ROCKETMQ_OFFSET_STORE_PATH", dir.path().join("offsets"));
        for (name, value) in &launch.env {
            command.env(name, value);
        }
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Self {
            child,
            admin,
            log,
            config,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}")),
            dir,
        }
    }

    /// The admin server's address.
    pub(crate) fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The configuration file, when the launch had one.
    pub(crate) fn config_path(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// Everything the daemon printed so far (stdout and stderr).
    pub(crate) fn output(&self) -> String {
        std::fs::read(&self.log).map_or_else(
            |e| format!("(cannot read {}: {e})", self.log.display()),
            |b| String::from_utf8_lossy(&b).into_owned(),
        )
    }

    /// Polls the output every 100 ms until it contains `text`.
    ///
    /// # Panics
    /// When it does not within `limit`, with `why` and the output's tail.
    pub(crate) async fn wait_output(&self, text: &str, limit: Duration, why: &str) {
        let deadline = Instant::now() + limit;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{why}: no {text:?} in {limit:?}\n{}",
                self.output_tail(20)
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` lines of the output, for assertion messages.
    pub(crate) fn output_tail(&self, lines: usize) -> String {
        let text = self.output();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "--- last {lines} lines of the daemon's output ({}):\n{}",
            self.log.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// How many of the process's threads are async-runtime workers (Linux: their names in
    /// `/proc/<pid>/task/*/comm`; tokio names them `tokio-rt-worker`).
    ///
    /// # Panics
    /// When `/proc` cannot be read.
    pub(crate) fn runtime_workers(&self) -> usize {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(&tasks)
            .unwrap_or_else(|e| panic!("cannot read {tasks}: {e}"))
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "tokio-rt-worker")
            .count()
    }

    /// Sends SIGTERM (through `kill`, so no unsafe code is needed).
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Sends SIGKILL.
    pub(crate) fn sigkill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for the process to exit.
    ///
    /// # Panics
    /// When it is still running after `limit` (the output is in the message).
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) => {}
                Err(e) => panic!("cannot wait for the daemon: {e}"),
            }
            if Instant::now() >= deadline {
                panic!(
                    "the daemon did not exit within {limit:?}\n{}",
                    self.output_tail(40)
                );
            }
            sleep(Duration::from_millis(25)).await;
        }
    }

    /// `GET /metrics` (Prometheus text).
    ///
    /// # Panics
    /// When the admin server does not answer 200.
    pub(crate) async fn metrics(&self) -> String {
        self.get("/metrics").await
    }

    /// `GET /status` as JSON.
    ///
    /// # Panics
    /// When the admin server does not answer 200 with JSON.
    pub(crate) async fn status(&self) -> serde_json::Value {
        let text = self.get("/status").await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {text}"))
    }

    async fn get(&self, path: &str) -> String {
        let url = format!("http://{}{path}", self.admin);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}\n{}", self.output_tail(30)));
        let status = response.status();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: cannot read the body: {e}"));
        assert!(status.is_success(), "GET {url} answered {status}: {text}");
        text
    }

    /// The status `/readyz` answers now, `None` when it cannot be asked.
    pub(crate) async fn readyz(&self) -> Option<u16> {
        self.http
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Polls `/readyz` every 200 ms for `during`, panicking (with `why` and the output) if it
    /// ever answers 200; returns how many times it answered 503. No answer at all is fine (the
    /// admin server may not serve yet).
    pub(crate) async fn never_ready(&self, during: Duration, why: &str) -> usize {
        let until = Instant::now() + during;
        let mut not_ready = 0;
        while Instant::now() < until {
            match self.readyz().await {
                Some(200) => panic!("/readyz said ready {why}\n{}", self.output_tail(30)),
                Some(503) => not_ready += 1,
                _ => {}
            }
            sleep(Duration::from_millis(200)).await;
        }
        not_ready
    }

    /// Polls `/readyz` every 100 ms until it answers 200 (at most a minute); `Err` carries the
    /// output when the process exited or the deadline passed.
    pub(crate) async fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("http://{}/readyz", self.admin);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the daemon exited with {status} before it was ready\n{}",
                    self.output_tail(40)
                ));
            }
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the daemon was not ready ({url}) within {READY_TIMEOUT:?}\n{}",
                    self.output_tail(40)
                ));
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// The temporary directory of this daemon (config, log, offsets).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one Prometheus sample: the sum over every line of `name` whose labels include
/// all of `labels` (0 when none matches).
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric_name != name {
                return None;
            }
            let pairs: Vec<&str> = label_text.split(',').collect();
            let all = labels
                .iter()
                .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A loopback address with a port that was free a moment ago.
///
/// # Panics
/// When no loopback port can be bound.
pub(crate) fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
}

/// The first executable named `name` on `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
