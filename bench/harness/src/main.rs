//! The benchmark driver behind `scripts/bench.sh`: runs the scenarios of issue 6 against a
//! local broker, with the daemon (release build), the pull ceiling, the sink ceiling and the
//! peer (a rocketmq-client-rust push consumer), and writes report.json and report.md.
//!
//! Every figure in the report comes from a measurement of this run; a figure that could not be
//! measured is absent from the JSON and printed as "not measured: <reason>" in the markdown.

mod delay;
mod load;
mod proc;
mod report;
mod sink;
mod synthetic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::time::Instant;

use crate::sink::Sink;

/// Unix time in microseconds.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[derive(Debug, Parser)]
struct Args {
    /// Name server of the broker under test.
    #[arg(long)]
    namesrv: String,
    /// The daemon binary (release build).
    #[arg(long)]
    daemon: PathBuf,
    /// The peer binary; when missing, `--peer-missing` says why.
    #[arg(long)]
    peer: Option<PathBuf>,
    /// Why the peer is not available.
    #[arg(long, default_value = "peer binary not built")]
    peer_missing: String,
    /// Output directory (report.json, report.md, logs).
    #[arg(long)]
    out: PathBuf,
    /// The repository whose commit the report records (default: the one the harness was built
    /// in).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))]
    repo: PathBuf,
    /// Short runs of every scenario, one repetition.
    #[arg(long)]
    quick: bool,
    /// Repetitions per case (default 3, quick 1).
    #[arg(long)]
    reps: Option<usize>,
    /// Only re-render report.md from an existing report.json in --out (no measurement).
    #[arg(long)]
    render_only: bool,
    /// Extra top-level YAML for our daemon's configuration (e.g. `cache: {max_count: 40000}`),
    /// for runs that measure a setting; the peer is not affected.
    #[arg(long)]
    daemon_yaml: Option<String>,
    /// Process id of the broker under test, to report the cores it uses in drain scenarios.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Only these cases of scenario 9, as QUEUESxSUBSCRIPTIONS (e.g. `64x1,8x16`); default all.
    #[arg(long, value_delimiter = ',')]
    scale_cases: Vec<String>,
    /// Scenario numbers or names (default: all).
    scenarios: Vec<String>,
}

/// One measured run: metric name to value. Only measured metrics are present.
pub type Run = BTreeMap<String, f64>;

/// The runs of one case for one system.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaseResult {
    pub scenario: String,
    pub case: String,
    /// `ours`, `peer`, `pull-ceiling` or `sink-ceiling`.
    pub system: String,
    pub runs: Vec<Run>,
    /// Why runs are missing or incomplete.
    pub note: Option<String>,
}

/// Which consumer runs a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    Peer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Peer => "peer",
        }
    }
}

/// Which of ours and the peer runs first in repetition `rep` (from 0): ours in even ones, the
/// peer in odd ones, so that over two repetitions the order is ours, peer, peer, ours (ABBA). A
/// host that drifts during a case (page cache, thermal state, a neighbour's load) would otherwise
/// always land on the one that runs second; alternated, the drift falls on both and shows as
/// spread instead of as a difference. With an odd count ours runs first once more, and a single
/// repetition (`--quick`) runs ours first. Results are kept per system, so the order does not
/// change what is attributed to whom; what each consumer gets before it is measured (its own
/// warm-up in open-loop cases, none in drains) does not depend on the order either.
fn order(rep: usize) -> [Kind; 2] {
    if rep.is_multiple_of(2) {
        [Kind::Ours, Kind::Peer]
    } else {
        [Kind::Peer, Kind::Ours]
    }
}

/// [`order`] in words, for the report.
pub const ORDER: &str =
    "alternating, ours first in repetitions 1, 3, ..., the peer first in 2, 4, ...";

/// One subscription of a consumer process.
#[derive(Debug, Clone)]
struct Sub {
    topic: String,
    group: String,
}

/// How a consumer process consumes.
#[derive(Debug, Clone, Copy)]
struct Mode {
    batch: usize,
    orderly: bool,
}

struct Ctx {
    args: Args,
    sink: Sink,
    client: rocketmq_webhook::client::Client,
    producer: rocketmq_webhook::client::producer::Producer,
    results: Vec<CaseResult>,
    run_id: String,
    seq: u64,
    reps: usize,
    sink_ceilings: BTreeMap<(usize, usize), Run>,
    /// Taken once at the start, before anything is measured.
    provenance: report::Provenance,
}

/// A running consumer process.
struct Proc {
    child: tokio::process::Child,
    pid: u32,
    /// Our daemon's admin address (metrics); the peer has none.
    admin: Option<std::net::SocketAddr>,
    /// Where its stdout and stderr go.
    log: PathBuf,
}

impl Proc {
    async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.pid.to_string())
            .status();
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
    fn cpu(&self) -> Option<f64> {
        proc::cpu_secs(self.pid)
    }

    /// Why the case cannot go on, if the process has already ended: a consumer that exits
    /// early (a configuration error, a crash) would otherwise leave the harness waiting for
    /// messages until the case's timeout, up to 15 minutes.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        Some(format!(
            "the consumer exited early ({status}); its output: {}",
            self.log.display()
        ))
    }

    /// Pull round trips and webhook requests so far, from our daemon's `/metrics`: how many
    /// messages each pull and each request carried explains a drain's cost.
    async fn round_trips(&self) -> Option<(f64, f64)> {
        let url = format!("http://{}/metrics", self.admin?);
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        let sum = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        Some((
            sum("rocketmq_webhook_pull_duration_seconds_count"),
            sum("rocketmq_webhook_webhook_requests_total"),
        ))
    }
}

impl Ctx {
    fn name(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("bench-{}-{what}-{}", self.run_id, self.seq)
    }

    fn peer_available(&self) -> Result<PathBuf, String> {
        match &self.args.peer {
            Some(p) if p.exists() => Ok(p.clone()),
            _ => Err(self.args.peer_missing.clone()),
        }
    }

    async fn spawn(&mut self, kind: Kind, subs: &[Sub], mode: Mode) -> Result<Proc, String> {
        let logs = self.args.out.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        let label = format!("{}-{}", kind.name(), self.seq);
        let log_path = logs.join(format!("{label}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut admin_addr = None;
        let mut cmd = match kind {
            Kind::Ours => {
                let admin = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|e| e.to_string())?;
                admin_addr = Some(admin);
                let mut yaml = format!(
                    "namesrv_addr: \"{}\"\nadmin:\n  listen: \"{admin}\"\nlog:\n  level: warn\nshutdown:\n  grace_period: 5s\nsubscriptions:\n",
                    self.args.namesrv
                );
                if let Some(extra) = &self.args.daemon_yaml {
                    // Top-level keys go before `subscriptions:`, which ends the text above.
                    let at = yaml.len() - "subscriptions:\n".len();
                    yaml.insert_str(at, &format!("{}\n", extra.trim_end()));
                }
                for s in subs {
                    yaml.push_str(&format!(
                        "  - group: \"{}\"\n    topic: \"{}\"\n    consume_from: FIRST_OFFSET\n    consume_mode: {}\n    consume_batch_size: {}\n    pull_batch_size: {}\n    webhook:\n      url: \"{}\"\n      timeout: 30s\n",
                        s.group,
                        s.topic,
                        if mode.orderly { "ORDERLY" } else { "CONCURRENT" },
                        mode.batch,
                        mode.batch.max(32),
                        self.sink.url()
                    ));
                }
                let file = self.args.out.join("logs").join(format!("{label}.yaml"));
                std::fs::write(&file, yaml).map_err(|e| e.to_string())?;
                let mut c = tokio::process::Command::new(&self.args.daemon);
                c.arg("run").arg("--config").arg(file);
                c
            }
            Kind::Peer => {
                let bin = self.peer_available()?;
                let mut c = tokio::process::Command::new(bin);
                c.arg("--namesrv")
                    .arg(&self.args.namesrv)
                    .arg("--sink")
                    .arg(self.sink.url())
                    .arg("--batch")
                    .arg(mode.batch.to_string());
                if mode.orderly {
                    c.arg("--orderly");
                }
                for s in subs {
                    c.arg("--sub").arg(format!("{}:{}", s.topic, s.group));
                }
                c
            }
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("ROCKETMQ_") || k == "NAMESRV_ADDR" {
                cmd.env_remove(k);
            }
        }
        // Both consumers log warnings only: log volume must not be what is measured.
        cmd.env("RUST_LOG", "warn");
        cmd.stdout(log).stderr(err).kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", kind.name()))?;
        let pid = child.id().ok_or("no pid")?;
        Ok(Proc {
            child,
            pid,
            admin: admin_addr,
            log: log_path,
        })
    }

    fn push(&mut self, scenario: &str, case: &str, system: &str, run: Result<Run, String>) {
        let entry = self
            .results
            .iter_mut()
            .find(|r| r.scenario == scenario && r.case == case && r.system == system);
        let entry = match entry {
            Some(e) => e,
            None => {
                self.results.push(CaseResult {
                    scenario: scenario.to_owned(),
                    case: case.to_owned(),
                    system: system.to_owned(),
                    runs: Vec::new(),
                    note: None,
                });
                self.results.last_mut().expect("just pushed")
            }
        };
        match run {
            Ok(r) => entry.runs.push(r),
            Err(e) => {
                eprintln!("  {scenario} / {case} / {system}: not measured: {e}");
                entry.note = Some(format!("not measured: {e}"));
            }
        }
    }

    fn save(&self) {
        let setup = report::Setup {
            quick: self.args.quick,
            reps: self.reps,
            namesrv: self.args.namesrv.clone(),
            daemon: Some(self.args.daemon.display().to_string()),
            daemon_yaml: self.args.daemon_yaml.clone(),
            provenance: self.provenance.clone(),
        };
        let path = self.args.out.join("report.json");
        if let Err(e) = std::fs::write(&path, report::json(&self.results, &setup)) {
            eprintln!("cannot write {}: {e}", path.display());
        }
        let md = report::markdown(&self.results, &setup);
        let _ = std::fs::write(self.args.out.join("report.md"), md);
    }

    /// The sink's request ceiling for this envelope shape, measured once per run, without
    /// injected latency. A case whose sink holds each request is not given one: measured at
    /// that latency the figure would be the ceiling's own 20 senders divided by the latency
    /// (2,000 requests/s at 10 ms), a property of the senders, not of the sink, and the 0 ms
    /// figure says nothing about such a case.
    async fn sink_ceiling(
        &mut self,
        scenario: &str,
        case: &str,
        batch: usize,
        size: usize,
        latency_us: u64,
    ) {
        if latency_us > 0 {
            let why = format!(
                "the sink holds each request {} ms, so requests in flight, not the sink, set the ceiling",
                latency_us as f64 / 1000.0
            );
            self.push(scenario, case, "sink-ceiling", Err(why));
            return;
        }
        let run = if let Some(r) = self.sink_ceilings.get(&(batch, size)) {
            r.clone()
        } else {
            self.sink.reset();
            let secs = if self.args.quick { 3 } else { 10 };
            let result =
                load::sink_ceiling(self.sink.addr, batch, size, Duration::from_secs(secs), 20)
                    .await;
            self.sink.reset();
            let (msgs, reqs, el) = match result {
                Ok(figures) => figures,
                Err(e) => {
                    self.push(scenario, case, "sink-ceiling", Err(e));
                    return;
                }
            };
            let mut r = Run::new();
            r.insert("messages".into(), msgs as f64);
            r.insert("msgs_per_s".into(), msgs as f64 / el);
            r.insert("requests_per_s".into(), reqs as f64 / el);
            r.insert("mb_per_s".into(), msgs as f64 * size as f64 / el / 1e6);
            self.sink_ceilings.insert((batch, size), r.clone());
            r
        };
        self.push(scenario, case, "sink-ceiling", Ok(run));
    }
}

/// Latency percentiles of non-warm-up receipts (first deliveries only), in milliseconds.
fn latencies(run: &mut Run, rec: &sink::Recorder) {
    let mut store: Vec<f64> = Vec::new();
    let mut born: Vec<f64> = Vec::new();
    for r in rec
        .receipts
        .iter()
        .filter(|r| !r.warmup && r.reconsume == 0)
    {
        store.push((r.recv_us - r.store_ms * 1000) as f64 / 1000.0);
        born.push((r.recv_us - r.born_ms * 1000) as f64 / 1000.0);
    }
    percentiles(run, "store", store);
    percentiles(run, "born", born);
}

/// Tag of the open-loop messages; warm-up messages carry another and are not timed.
const LOAD_TAG: &str = "load";

/// The open-loop load of scenarios 1 and 6: single 1 KiB sends tagged [`LOAD_TAG`] at `rate` for
/// `secs`. Returns the messages stored.
async fn open_loop(
    producer: &rocketmq_webhook::client::producer::Producer,
    topic: &str,
    rate: f64,
    secs: u64,
) -> Vec<load::Sent> {
    load::open_loop(
        producer,
        topic,
        rate,
        Duration::from_secs(secs),
        1024,
        LOAD_TAG,
    )
    .await
}

/// `<name>_p50_ms`, `_p99_ms` and `_p999_ms` of `v` (milliseconds), each only from the samples
/// [`report::PERCENTILES`] asks for it (p99 from 1,000, p999 from 10,000). Nothing when empty.
fn percentiles(run: &mut Run, name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    for (p, label, min_samples) in report::PERCENTILES {
        if v.len() < min_samples {
            continue;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        run.insert(format!("{name}_{label}_ms"), v[i]);
    }
}

/// Common figures from the sink's recorder. Ordering figures only for `orderly` runs: a
/// concurrent consumer overlaps requests and reorders offsets by design.
fn sink_figures(run: &mut Run, rec: &sink::Recorder, size: usize, orderly: bool) {
    let real: Vec<&sink::Receipt> = rec.receipts.iter().filter(|r| !r.warmup).collect();
    let n = real.len() as f64;
    run.insert("messages".into(), n);
    run.insert("requests".into(), rec.requests as f64);
    run.insert("duplicates".into(), rec.duplicates as f64);
    if orderly {
        run.insert(
            "order_violations".into(),
            (rec.order_violations + rec.overlaps) as f64,
        );
        run.insert("overlapping_requests".into(), rec.overlaps as f64);
    }
    run.insert("failed_requests".into(), rec.failed_requests as f64);
    let firsts: Vec<i64> = rec.topics.iter().filter_map(|t| t.first_us).collect();
    if firsts.len() > 1 {
        let lo = firsts.iter().min().copied().unwrap_or(0);
        let hi = firsts.iter().max().copied().unwrap_or(0);
        run.insert("subscription_start_spread_s".into(), (hi - lo) as f64 / 1e6);
    }
    if let (Some(first), Some(last)) = (
        real.iter().map(|r| r.recv_us).min(),
        real.iter().map(|r| r.recv_us).max(),
    ) {
        let secs = ((last - first) as f64 / 1e6).max(1e-3);
        run.insert("secs".into(), secs);
        run.insert("msgs_per_s".into(), n / secs);
        run.insert("mb_per_s".into(), n * size as f64 / secs / 1e6);
    }
}

/// Waits until the sink holds `expected` unique messages (or `timeout`), sampling the
/// process's CPU. Returns CPU seconds from just before the first receipt to completion.
/// CPU seconds used so far by the consumer, the broker and this harness (the sink and the load
/// generator), at one instant: two marks give the cores each used in between, which shows
/// how the machine's cores were shared during a drain.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    at: Instant,
    consumer: Option<f64>,
    broker: Option<f64>,
    harness: Option<f64>,
}

impl CpuMark {
    fn now(consumer: Option<u32>, broker: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            consumer: consumer.and_then(proc::cpu_secs),
            broker: broker.and_then(proc::cpu_secs),
            harness: proc::cpu_secs(std::process::id()),
        }
    }

    /// Consumer CPU seconds since `earlier`, and `<who>_cores` figures into `run`.
    fn since(&self, earlier: &Self, run: &mut Run) -> Option<f64> {
        let secs = self.at.duration_since(earlier.at).as_secs_f64().max(1e-6);
        let delta = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
        let consumer = delta(self.consumer, earlier.consumer);
        for (key, cpu) in [
            ("consumer_cores", consumer),
            ("broker_cores", delta(self.broker, earlier.broker)),
            ("harness_cores", delta(self.harness, earlier.harness)),
        ] {
            if let Some(cpu) = cpu {
                run.insert(key.into(), cpu / secs);
            }
        }
        consumer
    }
}

/// What a wait for a drain waits for.
#[derive(Debug, Clone, Copy)]
enum Awaited<'a> {
    /// This many distinct messages: for preloads, where every stored message was sent once
    /// and a failed send fails the case, so a count of the fresh topic's msgIds is exact.
    Count(u64),
    /// Every one of these messages, by msgId: for open loops, where a send may fail after the
    /// broker stored the message, which then arrives beside the sent ones.
    Sent(&'a [load::Sent]),
}

/// How often the msgIds of [`Awaited::Sent`] are looked up once the count is reached: the
/// look-up holds the sink's lock.
const ID_CHECK: Duration = Duration::from_millis(500);

/// Waits until the sink has every awaited message or `timeout` passes; the marks are taken at
/// the first delivery and at the end. An error if the consumer exits first (see
/// [`Proc::exited`]).
async fn wait_drained(
    sink: &Sink,
    p: &mut Proc,
    broker: Option<u32>,
    awaited: Awaited<'_>,
    timeout: Duration,
) -> Result<(bool, CpuMark, CpuMark), String> {
    let deadline = Instant::now() + timeout;
    let pid = p.pid;
    let mark = || CpuMark::now(Some(pid), broker);
    let mut first = mark();
    let (expected, mut pending) = match awaited {
        Awaited::Count(n) => (n, Vec::new()),
        Awaited::Sent(sent) => (sent.len() as u64, sent.iter().map(|s| s.id).collect()),
    };
    let mut checked: Option<Instant> = None;
    loop {
        let n = sink.unique.load(Ordering::Relaxed);
        if n == 0 {
            first = mark();
        }
        if let Some(why) = p.exited() {
            return Err(why);
        }
        // Every awaited msgId received implies the count; the ids are looked up only then.
        let mut done = n >= expected;
        if done && !pending.is_empty() {
            if checked.is_none_or(|at| at.elapsed() >= ID_CHECK) {
                let rec = sink.recorder.lock().map_err(|e| e.to_string())?;
                pending.retain(|id| !rec.received(*id));
                checked = Some(Instant::now());
            }
            done = pending.is_empty();
        }
        if done || Instant::now() >= deadline {
            return Ok((done, first, mark()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many of `sent` the sink has not received.
fn missing(rec: &sink::Recorder, sent: &[load::Sent]) -> usize {
    sent.iter().filter(|s| !rec.received(s.id)).count()
}

/// Seconds from `until_us` to the last receipt (first deliveries and redeliveries alike) of
/// the messages sent by then; `None` when one of them never arrived or none was sent.
fn recovery_secs(rec: &sink::Recorder, sent: &[load::Sent], until_us: i64) -> Option<f64> {
    let before: std::collections::HashSet<u64> = sent
        .iter()
        .filter(|s| s.at_us <= until_us)
        .map(|s| s.id)
        .collect();
    if before.is_empty() || before.iter().any(|id| !rec.received(*id)) {
        return None;
    }
    let last = rec
        .receipts
        .iter()
        .filter(|r| before.contains(&r.id))
        .map(|r| r.recv_us)
        .max()?;
    Some(((last - until_us) as f64 / 1e6).max(0.0))
}

impl Ctx {
    /// Preloads fresh topics, then for ceiling, ours and peer: drain them through the sink.
    #[allow(clippy::too_many_arguments)]
    async fn drain_case(
        &mut self,
        scenario: &str,
        case: &str,
        topics: usize,
        queues: u16,
        total: u64,
        size: usize,
        mode: Mode,
        sink_latency_us: u64,
    ) {
        let timeout = Duration::from_secs(if self.args.quick { 60 } else { 900 });
        for rep in 0..self.reps {
            eprintln!(
                "[{scenario}] {case}: rep {}/{}: preloading {total} messages",
                rep + 1,
                self.reps
            );
            let mut names = Vec::new();
            let per_topic = total / topics as u64;
            let mut failed = None;
            for _ in 0..topics {
                let t = self.name("t");
                if let Err(e) = load::topic(&self.client, &t, queues, mode.orderly).await {
                    failed = Some(e);
                    break;
                }
                if let Err(e) =
                    load::preload(&self.producer, &t, per_topic, size, 4, u64::from(queues)).await
                {
                    failed = Some(e);
                    break;
                }
                names.push(t);
            }
            if let Some(e) = failed {
                for sys in ["ours", "peer", "pull-ceiling"] {
                    self.push(scenario, case, sys, Err(format!("preload failed: {e}")));
                }
                continue;
            }
            let expected = per_topic * topics as u64;
            // Pull ceiling over the same data: every topic at once, as the consumers drain
            // their subscriptions, timed over one window.
            let broker = self.args.broker_pid;
            let ceiling = load::pull_ceiling_alone(
                &self.args.namesrv,
                &names,
                mode.batch.max(32) as i32,
                expected,
                move || CpuMark::now(None, broker),
            )
            .await
            .map(|c| {
                let (msgs, secs) = (c.messages as f64, c.secs.max(1e-6));
                let mut run = Run::new();
                run.insert("messages".into(), msgs);
                run.insert("secs".into(), secs);
                run.insert("msgs_per_s".into(), msgs / secs);
                // The pull loop runs in this harness: its cores are the ceiling's consumer.
                c.after.since(&c.before, &mut run);
                run.insert("mb_per_s".into(), msgs * size as f64 / secs / 1e6);
                run
            });
            self.push(scenario, case, "pull-ceiling", ceiling);
            for kind in order(rep) {
                let subs: Vec<Sub> = names
                    .iter()
                    .map(|t| Sub {
                        topic: t.clone(),
                        group: format!("{t}-{}", kind.name()),
                    })
                    .collect();
                let run = self
                    .drain_one(kind, &subs, mode, expected, size, sink_latency_us, timeout)
                    .await;
                self.push(scenario, case, kind.name(), run);
            }
            self.save();
        }
        self.sink_ceiling(scenario, case, mode.batch, size, sink_latency_us)
            .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn drain_one(
        &mut self,
        kind: Kind,
        subs: &[Sub],
        mode: Mode,
        expected: u64,
        size: usize,
        sink_latency_us: u64,
        timeout: Duration,
    ) -> Result<Run, String> {
        self.sink.reset();
        self.sink
            .faults
            .latency_us
            .store(sink_latency_us, Ordering::SeqCst);
        let mut p = self.spawn(kind, subs, mode).await?;
        let (done, first, last) = wait_drained(
            &self.sink,
            &mut p,
            self.args.broker_pid,
            Awaited::Count(expected),
            timeout,
        )
        .await?;
        let at_deadline = self.sink.unique.load(Ordering::Relaxed);
        let peak = proc::peak_rss_mib(p.pid);
        let trips = p.round_trips().await;
        // Idle cost after the drain (long polling of every queue).
        let idle = Duration::from_secs(if self.args.quick { 1 } else { 10 });
        let cpu0 = p.cpu();
        tokio::time::sleep(idle).await;
        let idle_cpu = p
            .cpu()
            .zip(cpu0)
            .map(|(a, b)| (a - b) / idle.as_secs_f64() * 60.0);
        p.stop().await;
        let rec = self.sink.take();
        self.sink.reset();
        let mut run = Run::new();
        sink_figures(&mut run, &rec, size, mode.orderly);
        let cpu = last.since(&first, &mut run);
        let n = rec.count() as f64;
        if !done {
            return Err(format!(
                "{at_deadline} of {expected} messages arrived within {} s ({n} by {} s later)",
                timeout.as_secs(),
                idle.as_secs()
            ));
        }
        if let Some(c) = cpu {
            run.insert("cpu_s_per_m".into(), c / n * 1e6);
        }
        if let Some(p) = peak {
            run.insert("peak_rss_mib".into(), p);
        }
        if let Some(c) = idle_cpu {
            run.insert("idle_cpu_s_per_min".into(), c);
        }
        if let Some((pulls, requests)) = trips.filter(|(p, r)| *p > 0.0 && *r > 0.0) {
            run.insert("msgs_per_pull".into(), n / pulls);
            run.insert("msgs_per_request".into(), n / requests);
        }
        Ok(run)
    }

    /// Starts a consumer on a fresh empty topic and waits until it delivers a warm-up message.
    async fn start_live(
        &mut self,
        kind: Kind,
        queues: u16,
        mode: Mode,
    ) -> Result<(Proc, String), String> {
        let topic = self.name("live");
        load::topic(&self.client, &topic, queues, mode.orderly).await?;
        self.sink.reset();
        let subs = [Sub {
            topic: topic.clone(),
            group: format!("{topic}-{}", kind.name()),
        }];
        let mut p = self.spawn(kind, &subs, mode).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 0;
        loop {
            let warm = self
                .sink
                .recorder
                .lock()
                .map(|r| r.receipts.len())
                .unwrap_or(0);
            if warm >= usize::from(queues).min(8) {
                break;
            }
            if let Some(why) = p.exited() {
                return Err(why);
            }
            if Instant::now() > deadline {
                p.stop().await;
                return Err("no warm-up message delivered within 60 s".into());
            }
            let m =
                rocketmq_webhook::remoting::message::Message::new(topic.clone(), load::body(i, 64))
                    .with_tags("warmup");
            let _ = self
                .producer
                .send(
                    m,
                    &rocketmq_webhook::client::producer::QueueSelector::RoundRobin,
                )
                .await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let every queue's long poll settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok((p, topic))
    }

    /// Open-loop single sends at `rate` for `secs` while a consumer runs.
    async fn latency_case(&mut self, scenario: &str, case: &str, rate: f64, secs: u64) {
        for rep in 0..self.reps {
            eprintln!("[{scenario}] {case}: rep {}/{}", rep + 1, self.reps);
            for kind in order(rep) {
                let run = self.latency_one(kind, rate, secs).await;
                self.push(scenario, case, kind.name(), run);
            }
            // For an open loop the pull ceiling is a floor: the latency of long polls that
            // deliver nothing.
            let run = self.floor_one(rate, secs).await;
            self.push(scenario, case, "pull-ceiling", run);
            self.save();
        }
        self.sink_ceiling(scenario, case, 1, 1024, 0).await;
    }

    /// The pull floor of an open-loop case: the same load, read by one long-polling pull loop
    /// per queue that delivers nothing (`load::pull_floor`).
    async fn floor_one(&mut self, rate: f64, secs: u64) -> Result<Run, String> {
        let topic = self.name("floor");
        load::topic(&self.client, &topic, 8, false).await?;
        let floor = Arc::new(std::sync::Mutex::new(load::Floor::default()));
        // A client of its own: its answers do not share a connection with the producer's sends,
        // as a consumer's would not.
        let client = load::client(&self.args.namesrv)?;
        let mut tasks = load::pull_floor(&client, &topic, LOAD_TAG, Arc::clone(&floor)).await?;
        // Every long poll reaches the broker before the first send.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sent = open_loop(&self.producer, &topic, rate, secs).await;
        let received = || floor.lock().map_or(0, |f| f.store_ms.len());
        let deadline = Instant::now() + Duration::from_secs(30);
        while received() < sent.len() && Instant::now() < deadline {
            if let Some(Ok(Err(e))) = tasks.try_join_next() {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tasks.abort_all();
        let f = std::mem::take(&mut *floor.lock().map_err(|e| e.to_string())?);
        let mut run = Run::new();
        run.insert("messages".into(), f.store_ms.len() as f64);
        run.insert("sent".into(), sent.len() as f64);
        percentiles(&mut run, "store", f.store_ms);
        percentiles(&mut run, "born", f.born_ms);
        Ok(run)
    }

    async fn latency_one(&mut self, kind: Kind, rate: f64, secs: u64) -> Result<Run, String> {
        if kind == Kind::Peer {
            self.peer_available()?;
        }
        let (mut p, topic) = self
            .start_live(
                kind,
                8,
                Mode {
                    batch: 1,
                    orderly: false,
                },
            )
            .await?;
        let cpu0 = p.cpu();
        let sent = open_loop(&self.producer, &topic, rate, secs).await;
        let (done, ..) = wait_drained(
            &self.sink,
            &mut p,
            None,
            Awaited::Sent(&sent),
            Duration::from_secs(30),
        )
        .await?;
        let cpu = p.cpu().zip(cpu0).map(|(a, b)| a - b);
        let peak = proc::peak_rss_mib(p.pid);
        p.stop().await;
        let rec = self.sink.take();
        let mut run = Run::new();
        sink_figures(&mut run, &rec, 1024, false);
        latencies(&mut run, &rec);
        run.insert("sent".into(), sent.len() as f64);
        run.insert("undelivered".into(), missing(&rec, &sent) as f64);
        if let Some(c) = cpu {
            run.insert("cpu_s_per_m".into(), c / (rec.count().max(1) as f64) * 1e6);
        }
        if let Some(p) = peak {
            run.insert("peak_rss_mib".into(), p);
        }
        if !done {
            run.insert("incomplete".into(), 1.0);
        }
        Ok(run)
    }

    /// Scenario 6: open loop against a slow sink with random 500s and one outage.
    async fn faults_one(
        &mut self,
        kind: Kind,
        rate: f64,
        secs: u64,
        outage_at: u64,
        outage_for: u64,
    ) -> Result<Run, String> {
        if kind == Kind::Peer {
            self.peer_available()?;
        }
        let (mut p, topic) = self
            .start_live(
                kind,
                8,
                Mode {
                    batch: 1,
                    orderly: false,
                },
            )
            .await?;
        self.sink.faults.latency_us.store(10_000, Ordering::SeqCst);
        self.sink.faults.fail_ppm.store(10_000, Ordering::SeqCst);
        let start_ms = (now_us() / 1000) as u64;
        let outage_from = start_ms + outage_at * 1000;
        let outage_until = outage_from + outage_for * 1000;
        self.sink
            .faults
            .outage_from_ms
            .store(outage_from, Ordering::SeqCst);
        self.sink
            .faults
            .outage_until_ms
            .store(outage_until, Ordering::SeqCst);
        let cpu0 = p.cpu();
        let producer = self.producer.clone();
        let t2 = topic.clone();
        let sampler_pid = p.pid;
        let sampler = tokio::spawn(async move {
            let mut max_rss = 0.0_f64;
            loop {
                if let Some(r) = proc::rss_mib(sampler_pid) {
                    max_rss = max_rss.max(r);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if (now_us() / 1000) as u64 > outage_until + 5_000 {
                    return max_rss;
                }
            }
        });
        let sent = open_loop(&producer, &t2, rate, secs).await;
        // Retries come back through the retry topic after 10 s, 30 s, ...: wait for them.
        let wait = Duration::from_secs(if self.args.quick { 75 } else { 240 });
        let (done, ..) = wait_drained(&self.sink, &mut p, None, Awaited::Sent(&sent), wait).await?;
        let cpu = p.cpu().zip(cpu0).map(|(a, b)| a - b);
        let peak = proc::peak_rss_mib(p.pid);
        let outage_rss = sampler.await.unwrap_or(0.0);
        p.stop().await;
        let rec = self.sink.take();
        self.sink.reset();
        let mut run = Run::new();
        sink_figures(&mut run, &rec, 1024, false);
        latencies(&mut run, &rec);
        run.insert("sent".into(), sent.len() as f64);
        run.insert("undelivered".into(), missing(&rec, &sent) as f64);
        run.insert(
            "retried_messages".into(),
            rec.receipts.iter().filter(|r| r.reconsume > 0).count() as f64,
        );
        let until_us = outage_until as i64 * 1000;
        let first_after = rec
            .receipts
            .iter()
            .filter(|r| !r.warmup && r.recv_us >= until_us)
            .map(|r| r.recv_us)
            .min();
        if let Some(f) = first_after {
            run.insert(
                "first_delivery_after_outage_s".into(),
                (f - until_us) as f64 / 1e6,
            );
        }
        if let Some(secs) = recovery_secs(&rec, &sent, until_us) {
            run.insert("recovery_s".into(), secs);
        }
        if let Some(c) = cpu {
            run.insert("cpu_s_per_m".into(), c / (rec.count().max(1) as f64) * 1e6);
        }
        if let Some(p) = peak {
            run.insert("peak_rss_mib".into(), p);
        }
        run.insert("outage_max_rss_mib".into(), outage_rss);
        if !done {
            run.insert("incomplete".into(), 1.0);
        }
        Ok(run)
    }

    /// Scenario 8: idle footprint, then a load burst.
    async fn idle_one(
        &mut self,
        kind: Kind,
        idle: Duration,
        load_count: u64,
    ) -> Result<Run, String> {
        if kind == Kind::Peer {
            self.peer_available()?;
        }
        let (mut p, topic) = self
            .start_live(
                kind,
                8,
                Mode {
                    batch: 1,
                    orderly: false,
                },
            )
            .await?;
        let cpu0 = p.cpu();
        let start = Instant::now();
        let mut rss = Vec::new();
        while start.elapsed() < idle {
            if let Some(r) = proc::rss_mib(p.pid) {
                rss.push(r);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let idle_cpu = p
            .cpu()
            .zip(cpu0)
            .map(|(a, b)| (a - b) / idle.as_secs_f64() * 60.0);
        let idle_rss = rss.last().copied();
        let idle_peak = proc::peak_rss_mib(p.pid);
        let cpu1 = p.cpu();
        let mut run = Run::new();
        let pre = load::preload(&self.producer, &topic, load_count, 1024, 4, 8).await?;
        let (done, ..) = wait_drained(
            &self.sink,
            &mut p,
            None,
            Awaited::Count(load_count),
            Duration::from_secs(300),
        )
        .await?;
        let cpu = p.cpu().zip(cpu1).map(|(a, b)| a - b);
        let peak = proc::peak_rss_mib(p.pid);
        p.stop().await;
        let rec = self.sink.take();
        self.sink.reset();
        sink_figures(&mut run, &rec, 1024, false);
        run.insert("producer_secs".into(), pre);
        if let Some(v) = idle_cpu {
            run.insert("idle_cpu_s_per_min".into(), v);
        }
        if let Some(v) = idle_rss {
            run.insert("idle_rss_mib".into(), v);
        }
        if let Some(v) = idle_peak {
            run.insert("idle_peak_rss_mib".into(), v);
        }
        if let Some(c) = cpu {
            run.insert("cpu_s_per_m".into(), c / (rec.count().max(1) as f64) * 1e6);
        }
        if let Some(p) = peak {
            run.insert("peak_rss_mib".into(), p);
        }
        if !done {
            run.insert("incomplete".into(), 1.0);
        }
        Ok(run)
    }
}

fn wanted(list: &[String], n: u32, name: &str) -> bool {
    list.is_empty() || list.iter().any(|s| s == &n.to_string() || s == name)
}

/// The setup a report.json recorded.
fn stored_setup(v: &serde_json::Value) -> report::Setup {
    let text_of = |key: &str| v[key].as_str().map(str::to_owned);
    report::Setup {
        quick: v["quick"].as_bool().unwrap_or(false),
        reps: v["repetitions"].as_u64().unwrap_or(1) as usize,
        namesrv: text_of("namesrv").unwrap_or_default(),
        daemon: text_of("daemon"),
        daemon_yaml: text_of("daemon_yaml"),
        // Fields absent from an older report stay unrecorded.
        provenance: serde_json::from_value(v.clone()).unwrap_or_default(),
    }
}

/// Re-renders report.md (and the targets in report.json) from report.json's runs.
fn render_only(args: &Args) -> Result<(), String> {
    let path = args.out.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let results: Vec<CaseResult> =
        serde_json::from_value(v["cases"].clone()).map_err(|e| e.to_string())?;
    // The run's own setup, commit, binaries and host, not this invocation's: a report written
    // before the daemon was recorded keeps saying so, and one re-rendered elsewhere keeps the
    // machine it was measured on.
    let setup = stored_setup(&v);
    std::fs::write(&path, report::json(&results, &setup)).map_err(|e| e.to_string())?;
    std::fs::write(
        args.out.join("report.md"),
        report::markdown(&results, &setup),
    )
    .map_err(|e| e.to_string())
}

async fn run(args: Args) -> Result<(), String> {
    if args.render_only {
        return render_only(&args);
    }
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let provenance = report::Provenance::collect(
        &args.repo,
        &args.daemon,
        args.peer.as_deref().filter(|p| p.exists()),
    );
    eprintln!(
        "commit {}, daemon {}, host {}",
        provenance.commit.as_deref().unwrap_or_default(),
        provenance.daemon_version.as_deref().unwrap_or_default(),
        provenance.host.as_deref().unwrap_or_default()
    );
    let sink = sink::start("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
        .await
        .map_err(|e| format!("sink: {e}"))?;
    let client = load::client(&args.namesrv)?;
    let producer = load::producer(client.clone());
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 });
    let q = args.quick;
    let list = args.scenarios.clone();
    let mut ctx = Ctx {
        args,
        sink,
        client,
        producer,
        results: Vec::new(),
        run_id: format!("{}", now_us() / 1_000_000 % 1_000_000),
        seq: 0,
        reps,
        sink_ceilings: BTreeMap::new(),
        provenance,
    };
    let started = Instant::now();
    let one = Mode {
        batch: 1,
        orderly: false,
    };
    if wanted(&list, 1, "latency") {
        let secs = if q { 5 } else { 30 };
        ctx.latency_case("1 latency floor", "100 msg/s", 100.0, secs)
            .await;
        ctx.latency_case("1 latency floor", "1000 msg/s", 1000.0, secs)
            .await;
    }
    if wanted(&list, 2, "throughput") {
        let n = if q { 20_000 } else { 300_000 };
        ctx.drain_case("2 max throughput", "batch 1", 1, 8, n, 1024, one, 0)
            .await;
    }
    if wanted(&list, 3, "batched") {
        let n = if q { 40_000 } else { 600_000 };
        for b in [32, 100] {
            ctx.drain_case(
                "3 batched throughput",
                &format!("batch {b}"),
                1,
                8,
                n,
                1024,
                Mode {
                    batch: b,
                    orderly: false,
                },
                0,
            )
            .await;
        }
    }
    if wanted(&list, 4, "backlog") {
        let n = if q { 100_000 } else { 1_000_000 };
        ctx.drain_case(
            "4 backlog drain",
            &format!("{n} msgs, batch 32"),
            1,
            8,
            n,
            1024,
            Mode {
                batch: 32,
                orderly: false,
            },
            0,
        )
        .await;
    }
    if wanted(&list, 5, "orderly") {
        for queues in [1_u16, 8] {
            for lat_ms in [0_u64, 1, 10] {
                for batch in [1_usize, 32] {
                    // Enough messages for a few seconds at the rate the sink latency allows.
                    let per_req_s = if lat_ms == 0 {
                        0.0002
                    } else {
                        lat_ms as f64 / 1000.0 + 0.0005
                    };
                    let est = f64::from(queues) * batch as f64 / per_req_s;
                    let secs = if q { 1.5 } else { 10.0 };
                    let n = ((est * secs) as u64).clamp(500, if q { 20_000 } else { 200_000 });
                    let n = n / u64::from(queues) * u64::from(queues);
                    let case = format!("{queues} q, sink {lat_ms} ms, batch {batch}");
                    ctx.drain_case(
                        "5 orderly",
                        &case,
                        1,
                        queues,
                        n,
                        1024,
                        Mode {
                            batch,
                            orderly: true,
                        },
                        lat_ms * 1000,
                    )
                    .await;
                }
            }
        }
    }
    if wanted(&list, 6, "faults") {
        let (rate, secs, at, outage) = if q {
            (500.0, 20, 5, 8)
        } else {
            (1000.0, 90, 20, 30)
        };
        let case = format!("{rate} msg/s {secs} s, 10 ms, 1% 500, {outage} s outage");
        for rep in 0..ctx.reps {
            eprintln!("[6 slow and failing sink] rep {}/{}", rep + 1, ctx.reps);
            for kind in order(rep) {
                let r = ctx.faults_one(kind, rate, secs, at, outage).await;
                ctx.push("6 slow and failing sink", &case, kind.name(), r);
            }
            ctx.save();
        }
    }
    if wanted(&list, 7, "large") {
        for (kib, n) in [
            (64_usize, if q { 1_000 } else { 10_000 }),
            (256, if q { 300 } else { 3_000 }),
        ] {
            ctx.drain_case(
                "7 large messages",
                &format!("{kib} KiB"),
                1,
                8,
                n,
                kib * 1024,
                one,
                0,
            )
            .await;
        }
    }
    if wanted(&list, 8, "idle") {
        let (idle, n) = if q { (15, 20_000) } else { (600, 200_000) };
        let case = format!("{idle} s idle, then {n} msgs");
        for rep in 0..ctx.reps {
            eprintln!("[8 idle footprint] rep {}/{}", rep + 1, ctx.reps);
            for kind in order(rep) {
                let r = ctx.idle_one(kind, Duration::from_secs(idle), n).await;
                ctx.push("8 idle footprint", &case, kind.name(), r);
            }
            ctx.save();
        }
    }
    if wanted(&list, 9, "scale") {
        let n = if q { 8_000 } else { 96_000 };
        for queues in [1_u16, 8, 64] {
            for subs in [1_usize, 4, 16] {
                let only = &ctx.args.scale_cases;
                if !only.is_empty() && !only.contains(&format!("{queues}x{subs}")) {
                    continue;
                }
                let case = format!("{queues} q x {subs} subs");
                ctx.drain_case(
                    "9 scale",
                    &case,
                    subs,
                    queues,
                    n / subs as u64 * subs as u64,
                    1024,
                    one,
                    0,
                )
                .await;
            }
        }
    }
    ctx.save();
    eprintln!(
        "benchmark finished in {:.0} s; report in {}",
        started.elapsed().as_secs_f64(),
        ctx.args.out.display()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(until_signal(run(args))) {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(signal) => {
            eprintln!(
                "bench: stopped by signal {signal}; the consumers were stopped, report.json holds \
                 the repetitions finished before"
            );
            std::process::ExitCode::from(128 + signal)
        }
    }
}

/// `work`'s output, or `Err(signal number)` on SIGINT, SIGTERM or SIGHUP. The consumers are
/// spawned with `kill_on_drop`: a signal drops `work`, and with it every running consumer, which
/// is killed rather than left running against the broker after the harness is gone (the default
/// action of these signals would end the harness without dropping anything). report.json is
/// saved after every repetition, so the finished ones are kept.
async fn until_signal<T>(work: impl std::future::Future<Output = T>) -> Result<T, u8> {
    use tokio::signal::unix::{signal, SignalKind};
    // Without its handler a signal keeps its default action: the harness still ends, only
    // without dropping the consumers.
    let handle = |kind: SignalKind, number: u8| {
        signal(kind)
            .map_err(|e| eprintln!("bench: cannot handle signal {number}: {e}"))
            .ok()
    };
    let mut int = handle(SignalKind::interrupt(), 2);
    let mut term = handle(SignalKind::terminate(), 15);
    let mut hup = handle(SignalKind::hangup(), 1);
    tokio::select! {
        out = work => Ok(out),
        () = received(&mut int) => Err(2),
        () = received(&mut term) => Err(15),
        () = received(&mut hup) => Err(1),
    }
}

/// Resolves when `signal` arrives; never when it has no handler.
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[allow(dead_code)]
fn _path(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut run = Run::new();
        percentiles(
            &mut run,
            "store",
            (1..=10_000).rev().map(f64::from).collect(),
        );
        assert_eq!(run["store_p50_ms"], 5_000.0);
        assert_eq!(run["store_p99_ms"], 9_900.0);
        assert_eq!(run["store_p999_ms"], 9_990.0);
        let mut thousand = Run::new();
        percentiles(&mut thousand, "store", (1..=1000).map(f64::from).collect());
        assert_eq!(thousand["store_p99_ms"], 990.0);
        assert!(
            !thousand.contains_key("store_p999_ms"),
            "a p999 of 1,000 samples is their maximum"
        );
        let mut one = Run::new();
        percentiles(&mut one, "born", vec![3.0]);
        assert_eq!(one["born_p50_ms"], 3.0);
        assert_eq!(one.len(), 1);
        let mut none = Run::new();
        percentiles(&mut none, "born", Vec::new());
        assert!(none.is_empty());
    }

    fn envelope(id: &str, reconsume: i32) -> String {
        serde_json::json!({"messages": [{
            "msgId": id, "topic": "t", "queueId": 0, "queueOffset": 0,
            "reconsumeTimes": reconsume, "bornTimestamp": 1, "storeTimestamp": 1,
        }]})
        .to_string()
    }

    async fn post(sink: &Sink, body: String) {
        let status = reqwest::Client::new()
            .post(sink.url())
            .body(body)
            .send()
            .await
            .expect("the sink answers")
            .status();
        assert!(status.is_success());
    }

    #[tokio::test]
    async fn recovery_waits_for_retried_messages_and_loss_is_by_msg_id() {
        let sink = sink::start("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("sink");
        let until_us = now_us();
        let sent = |id: &str, at_us: i64| load::Sent {
            id: sink::id_key(id),
            at_us,
        };
        let before = sent("before", until_us - 1_000);
        let after = sent("after", until_us + 1_000);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The message sent before the outage ended comes back through the retry topic.
        post(&sink, envelope("before", 1)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        post(&sink, envelope("after", 0)).await;
        // Stored by a send that failed: received, but not one of the sent.
        post(&sink, envelope("unsent", 0)).await;
        let rec = sink.take();
        let recovery = recovery_secs(&rec, &[before, after], until_us).expect("measured");
        assert!((0.019..0.045).contains(&recovery), "{recovery}");
        assert_eq!(missing(&rec, &[before, after]), 0);

        let lost = sent("lost", until_us - 2_000);
        assert_eq!(recovery_secs(&rec, &[before, after, lost], until_us), None);
        // Three received, three sent: a count would call this complete.
        assert_eq!(missing(&rec, &[before, after, lost]), 1);
    }

    #[test]
    fn ours_and_the_peer_alternate_abba() {
        let firsts: Vec<Kind> = (0..4).map(|rep| order(rep)[0]).collect();
        assert_eq!(firsts, [Kind::Ours, Kind::Peer, Kind::Ours, Kind::Peer]);
        for rep in 0..4 {
            let [a, b] = order(rep);
            assert_ne!(a, b, "both run in every repetition");
        }
    }

    #[test]
    fn render_only_keeps_the_recorded_machine_and_provenance() {
        let recorded = report::Provenance {
            commit: Some("0123abc".into()),
            date: Some(report::utc(0)),
            host: Some("the-bench-host".into()),
            kernel: Some("5.0".into()),
            machine: Some("64 cpus, Not This One".into()),
            daemon_version: Some("rocketmq-webhook 0.0.1".into()),
            daemon_sha256: Some("unknown".into()),
            peer: None,
            peer_sha256: None,
            order: Some(ORDER.into()),
        };
        let setup = report::Setup {
            quick: true,
            reps: 2,
            namesrv: "127.0.0.1:1".into(),
            daemon: Some("/x/d".into()),
            daemon_yaml: None,
            provenance: recorded.clone(),
        };
        let v: serde_json::Value = serde_json::from_str(&report::json(&[], &setup)).expect("json");
        let again = stored_setup(&v);
        assert_eq!(again.provenance, recorded);
        assert_eq!((again.quick, again.reps), (true, 2));
        // Rendering again writes the same fields back.
        let v2: serde_json::Value = serde_json::from_str(&report::json(&[], &again)).expect("json");
        assert_eq!(v2["machine"], "64 cpus, Not This One");
        assert_eq!(v2["host"], "the-bench-host");
    }

    #[tokio::test]
    async fn a_signal_drops_the_work_and_its_children() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("30")
            .kill_on_drop(true)
            .spawn()
            .expect("sleep");
        let pid = child.id().expect("pid");
        let work = async move {
            let _ = child.wait().await;
        };
        let raise = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // To this whole test process: `until_signal` has installed its handlers by now, so
            // the signal's default action (ending the process) does not apply.
            let _ = std::process::Command::new("kill")
                .args(["-HUP", &std::process::id().to_string()])
                .status();
            std::future::pending::<()>().await
        };
        let ended = tokio::select! {
            r = until_signal(work) => r,
            () = raise => unreachable!(),
        };
        assert_eq!(ended, Err(1));
        // kill_on_drop sent SIGKILL: the child is gone (or a zombie until reaped).
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone(), "the child {pid} still runs");
    }
}
