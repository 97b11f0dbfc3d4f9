//! report.json and report.md: medians and spreads per case and system, the ratios
//! ours / ceiling and ours / peer, and the targets beside the measured figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::CaseResult;

/// How a run was set up: printed at the head of report.md and kept in report.json, so a
/// figure can be traced to the binary and configuration that produced it.
#[derive(Debug, Clone)]
pub struct Setup {
    /// A `--quick` smoke run.
    pub quick: bool,
    /// Repetitions per case.
    pub reps: usize,
    /// The broker's name server.
    pub namesrv: String,
    /// The daemon binary measured (`--daemon`; scripts/bench.sh passes `BENCH_DAEMON` or its
    /// own release build). `None` for a report written before it was recorded.
    pub daemon: Option<String>,
    /// Extra top-level YAML for our daemon (`--daemon-yaml`, from `BENCH_DAEMON_YAML`).
    pub daemon_yaml: Option<String>,
    /// Where and from what the figures came.
    pub provenance: Provenance,
}

/// Which source, binaries and host produced a report, taken once when the run starts and kept
/// by `--render-only`: figures from different days and machines differ by tens of percent, so
/// a report that cannot say where it came from cannot be compared with another.
///
/// Kept at the top level of report.json. `None` means not recorded (a report written before
/// the field was); a value that could not be found out is recorded as `unknown`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Provenance {
    /// `git describe --always --dirty` of the repository: the harness and, unless
    /// `BENCH_DAEMON` names another build, the daemon's source.
    pub commit: Option<String>,
    /// When the run started, UTC.
    pub date: Option<String>,
    /// /proc/sys/kernel/hostname.
    pub host: Option<String>,
    /// /proc/sys/kernel/osrelease.
    pub kernel: Option<String>,
    /// CPUs and CPU model.
    pub machine: Option<String>,
    /// The daemon's `--version`.
    pub daemon_version: Option<String>,
    /// SHA-256 of the daemon binary: the version string does not change between builds.
    pub daemon_sha256: Option<String>,
    /// The peer binary; `None` when the peer was not available.
    pub peer: Option<String>,
    /// SHA-256 of the peer binary.
    pub peer_sha256: Option<String>,
    /// Which of ours and the peer ran first in each repetition.
    pub order: Option<String>,
}

/// What an unrecorded field prints as.
const NOT_RECORDED: &str = "not recorded";

/// `v`, or `not recorded`.
fn recorded(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or(NOT_RECORDED)
}

impl Provenance {
    /// This host and these binaries, now. Every look-up tolerates its tool or file missing.
    pub fn collect(repo: &Path, daemon: &Path, peer: Option<&Path>) -> Self {
        let known = |v: Option<String>| Some(v.unwrap_or_else(|| "unknown".to_owned()));
        let proc_text = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let mut git = std::process::Command::new("git");
        git.arg("-C")
            .arg(repo)
            .args(["describe", "--always", "--dirty"]);
        let mut version = std::process::Command::new(daemon);
        version.arg("--version");
        Self {
            commit: known(stdout_of(git)),
            date: Some(utc(crate::now_us() / 1_000_000)),
            host: known(proc_text("/proc/sys/kernel/hostname")),
            kernel: known(proc_text("/proc/sys/kernel/osrelease")),
            machine: Some(machine()),
            daemon_version: known(stdout_of(version)),
            daemon_sha256: known(sha256(daemon)),
            peer: peer.map(|p| p.display().to_string()),
            peer_sha256: peer.and_then(|p| known(sha256(p))),
            order: Some(crate::ORDER.to_owned()),
        }
    }
}

/// The trimmed stdout of `cmd` when it runs and succeeds with some output.
fn stdout_of(mut cmd: std::process::Command) -> Option<String> {
    let out = cmd.stdin(std::process::Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// SHA-256 of a file, by `sha256sum` (coreutils): the harness has no hash crate, and one is not
/// worth adding for a digest taken once per run.
fn sha256(path: &Path) -> Option<String> {
    let mut cmd = std::process::Command::new("sha256sum");
    cmd.arg("--").arg(path);
    let line = stdout_of(cmd)?;
    let digest = line.split_whitespace().next()?;
    (digest.len() == 64).then(|| digest.to_owned())
}

/// Unix time `secs` as `YYYY-MM-DD HH:MM:SS UTC` (times before the epoch read as the epoch).
pub fn utc(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0).unsigned_abs());
    let text = humantime::format_rfc3339_seconds(t).to_string();
    // `1970-01-01T00:00:00Z`.
    format!("{} UTC", text.trim_end_matches('Z').replacen('T', " ", 1))
}

impl Setup {
    /// The daemon's limits in words, for targets that assume the defaults.
    fn limits(&self) -> &'static str {
        match (&self.daemon, &self.daemon_yaml) {
            (None, _) => "limits not recorded",
            (Some(_), None) => "default limits",
            (Some(_), Some(_)) => "limits as set by the extra daemon YAML",
        }
    }
}

/// Where ours stands against the peer in one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Every run of ours is better than every run of the peer.
    Ahead,
    /// The ranges of the runs overlap (or touch).
    Tie,
    /// Every run of ours is worse than every run of the peer.
    Behind,
}

impl Standing {
    /// Compares `(median, min, max)` of ours and the peer's. A difference of medians inside the
    /// spread of the runs is not a lead: only ranges apart count.
    pub fn of(ours: (f64, f64, f64), peer: (f64, f64, f64), higher_is_better: bool) -> Self {
        let (ours_lo, ours_hi, peer_lo, peer_hi) = if higher_is_better {
            (ours.1, ours.2, peer.1, peer.2)
        } else {
            // Lower is better: negate, so that "above" means better.
            (-ours.2, -ours.1, -peer.2, -peer.1)
        };
        if ours_lo > peer_hi {
            Self::Ahead
        } else if ours_hi < peer_lo {
            Self::Behind
        } else {
            Self::Tie
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::Ahead => "ahead",
            Self::Tie => "tie: the runs' ranges overlap",
            Self::Behind => "behind",
        }
    }
}

/// Ours against the peer in `c`'s case (`c` is ours): more msg/s for drains, lower store p99
/// for open-loop cases. `None` when either was not measured, and for scenario 6: the peer
/// sends every failed message back to the broker, the daemon holds them through the outage,
/// so their first-delivery latencies differ in kind (see its section).
fn versus_peer(all: &[CaseResult], c: &CaseResult) -> Option<Standing> {
    if c.scenario.starts_with("6 ") {
        return None;
    }
    let peer = find(all, &c.scenario, &c.case, "peer")?;
    let (metric, higher) = if c.scenario.starts_with("1 ") {
        ("store_p99_ms", false)
    } else {
        ("msgs_per_s", true)
    };
    Some(Standing::of(stat(c, metric)?, stat(peer, metric)?, higher))
}

/// Median, minimum and maximum of `metric` over the runs that measured it. A latency
/// percentile only when every run has it: a run without one had too few samples for it, and the
/// median of the others would pass for the case's figure.
pub fn stat(c: &CaseResult, metric: &str) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = c
        .runs
        .iter()
        .filter_map(|r| r.get(metric).copied())
        .collect();
    if v.is_empty() || (is_percentile(metric) && v.len() < c.runs.len()) {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Some((mid, v[0], v[v.len() - 1]))
}

/// The latency percentiles runs record (`<name>_<label>_ms`): rank, label, and the samples
/// needed for one, enough that at least ten lie above it (below that the nearest rank is the
/// largest sample or close to it, one outlier's figure, not a percentile).
pub const PERCENTILES: [(f64, &str, usize); 3] = [
    (0.5, "p50", 1),
    (0.99, "p99", 1_000),
    (0.999, "p999", 10_000),
];

/// The samples a run needs before [`PERCENTILES`] reports the percentile `label`.
fn samples_needed(label: &str) -> usize {
    PERCENTILES
        .iter()
        .find(|(_, l, _)| *l == label)
        .map_or(0, |(_, _, needed)| *needed)
}

/// `store_p99_ms`, `born_p999_ms`, ...: the figures `percentiles` leaves out below their sample
/// minimum.
fn is_percentile(metric: &str) -> bool {
    metric.strip_suffix("_ms").is_some_and(|m| {
        PERCENTILES
            .iter()
            .any(|(_, label, _)| m.strip_suffix(label).is_some_and(|n| n.ends_with('_')))
    })
}

fn find<'a>(
    all: &'a [CaseResult],
    scenario: &str,
    case: &str,
    system: &str,
) -> Option<&'a CaseResult> {
    all.iter()
        .find(|c| c.scenario == scenario && c.case == case && c.system == system)
}

fn med(all: &[CaseResult], scenario: &str, case: &str, system: &str, metric: &str) -> Option<f64> {
    find(all, scenario, case, system)
        .and_then(|c| stat(c, metric))
        .map(|s| s.0)
}

/// The JSON report: every run and the medians.
pub fn json(all: &[CaseResult], setup: &Setup) -> String {
    let cases: Vec<serde_json::Value> = all
        .iter()
        .map(|c| {
            let mut metrics: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            let names: std::collections::BTreeSet<&String> =
                c.runs.iter().flat_map(|r| r.keys()).collect();
            for m in names {
                if let Some((mid, lo, hi)) = stat(c, m) {
                    metrics.insert(
                        m.clone(),
                        serde_json::json!({"median": mid, "min": lo, "max": hi}),
                    );
                }
            }
            serde_json::json!({
                "scenario": c.scenario, "case": c.case, "system": c.system,
                "note": c.note, "runs": c.runs, "summary": metrics,
            })
        })
        .collect();
    let targets: Vec<serde_json::Value> = targets(all, setup)
        .into_iter()
        .map(|(name, measured, met)| serde_json::json!({"target": name, "measured": measured, "met": met}))
        .collect();
    let mut report = serde_json::json!({
        "quick": setup.quick, "repetitions": setup.reps, "namesrv": setup.namesrv,
        "daemon": setup.daemon, "daemon_yaml": setup.daemon_yaml,
        "cases": cases, "targets": targets,
    });
    // At the top level, where `machine` has always been.
    if let (Some(top), Ok(serde_json::Value::Object(fields))) = (
        report.as_object_mut(),
        serde_json::to_value(&setup.provenance),
    ) {
        top.extend(fields);
    }
    serde_json::to_string_pretty(&report).unwrap_or_default()
}

/// CPUs and CPU model of this host.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} cpus, {model}")
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn spread(c: &CaseResult, metric: &str) -> String {
    match stat(c, metric) {
        None => "-".into(),
        Some((m, lo, hi)) if c.runs.len() > 1 => {
            format!("{} [{}–{}]", fmt(Some(m)), fmt(Some(lo)), fmt(Some(hi)))
        }
        Some((m, _, _)) => fmt(Some(m)),
    }
}

fn pcts(c: &CaseResult, prefix: &str) -> String {
    let p = |s: &str| stat(c, &format!("{prefix}_{s}_ms")).map(|x| x.0);
    if p("p50").is_none() {
        return "-".into();
    }
    format!("{} / {} / {}", fmt(p("p50")), fmt(p("p99")), fmt(p("p999")))
}

/// The targets: (description with target, measured text, met?).
pub fn targets(all: &[CaseResult], setup: &Setup) -> Vec<(String, String, Option<bool>)> {
    let mut t = Vec::new();
    let mut check = |name: &str, v: Option<f64>, ok: &dyn Fn(f64) -> bool| {
        t.push((name.to_owned(), fmt(v), v.map(ok)));
    };
    check(
        "one message per request >= 35k msg/s (scenario 2)",
        med(all, "2 max throughput", "batch 1", "ours", "msgs_per_s"),
        &|v| v >= 35_000.0,
    );
    check(
        "batch 32 >= 60k msg/s",
        med(
            all,
            "3 batched throughput",
            "batch 32",
            "ours",
            "msgs_per_s",
        ),
        &|v| v >= 60_000.0,
    );
    check(
        "batch 100 >= 70k msg/s",
        med(
            all,
            "3 batched throughput",
            "batch 100",
            "ours",
            "msgs_per_s",
        ),
        &|v| v >= 70_000.0,
    );
    let backlog = all
        .iter()
        .find(|c| c.scenario == "4 backlog drain" && c.system == "ours")
        .map(|c| c.case.clone());
    let ratio = backlog.as_deref().and_then(|case| {
        Some(
            med(all, "4 backlog drain", case, "ours", "msgs_per_s")?
                / med(all, "4 backlog drain", case, "pull-ceiling", "msgs_per_s")?,
        )
    });
    check(
        "backlog drain >= 0.85 x pull ceiling (ratio)",
        ratio,
        &|v| v >= 0.85,
    );
    check(
        "store-to-webhook p99 <= 2 ms at 1k msg/s",
        med(all, "1 latency floor", "1000 msg/s", "ours", "store_p99_ms"),
        &|v| v <= 2.0,
    );
    check(
        "store-to-webhook p999 <= 5 ms at 1k msg/s",
        med(
            all,
            "1 latency floor",
            "1000 msg/s",
            "ours",
            "store_p999_ms",
        ),
        &|v| v <= 5.0,
    );
    check(
        "CPU <= 15 s per million, unbatched (scenario 2)",
        med(all, "2 max throughput", "batch 1", "ours", "cpu_s_per_m"),
        &|v| v <= 15.0,
    );
    let batched = ["batch 32", "batch 100"]
        .iter()
        .filter_map(|c| med(all, "3 batched throughput", c, "ours", "cpu_s_per_m"))
        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
    check(
        "CPU <= 4 s per million, batched (worst of 32/100)",
        batched,
        &|v| v <= 4.0,
    );
    let idle = all
        .iter()
        .filter(|c| c.scenario == "8 idle footprint" && c.system == "ours")
        .find_map(|c| stat(c, "idle_rss_mib"))
        .map(|s| s.0);
    check("RSS <= 20 MiB idle", idle, &|v| v <= 20.0);
    let peak = all
        .iter()
        .filter(|c| {
            c.system == "ours" && !c.scenario.starts_with("7 ") && !c.scenario.starts_with("9 ")
        })
        .flat_map(|c| c.runs.iter().filter_map(|r| r.get("peak_rss_mib").copied()))
        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
    check(
        &format!(
            "RSS <= 64 MiB peak, {}, 1 KiB (max over scenarios 1-6, 8)",
            setup.limits()
        ),
        peak,
        &|v| v <= 64.0,
    );
    let orderly: Vec<&CaseResult> = all
        .iter()
        .filter(|c| c.scenario == "5 orderly" && c.system == "ours")
        .collect();
    let per_queue = orderly
        .iter()
        .filter(|c| c.case.contains("sink 0 ms"))
        .filter_map(|c| {
            let q: f64 = c.case.split(' ').next()?.parse().ok()?;
            Some(stat(c, "msgs_per_s")?.0 / q)
        })
        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.min(v))));
    check(
        "orderly, null sink >= 10k msg/s per queue (worst case)",
        per_queue,
        &|v| v >= 10_000.0,
    );
    let violations = if orderly.is_empty() {
        None
    } else {
        Some(
            orderly
                .iter()
                .flat_map(|c| {
                    c.runs
                        .iter()
                        .filter_map(|r| r.get("order_violations").copied())
                })
                .sum::<f64>(),
        )
    };
    check("orderly: zero ordering violations", violations, &|v| {
        v == 0.0
    });
    let standings: Vec<Standing> = all
        .iter()
        .filter(|c| c.system == "ours")
        .filter_map(|c| versus_peer(all, c))
        .collect();
    let count = |s: Standing| standings.iter().filter(|&&x| x == s).count();
    let (ahead, tie, behind) = (
        count(Standing::Ahead),
        count(Standing::Tie),
        count(Standing::Behind),
    );
    t.push((
        "every case ahead of the peer, the runs' ranges apart (cases measured for both; scenario 6 not compared)".into(),
        if standings.is_empty() {
            "-".into()
        } else {
            format!(
                "{ahead} ahead, {tie} tie, {behind} behind of {}",
                standings.len()
            )
        },
        if standings.is_empty() {
            None
        } else {
            Some(ahead == standings.len())
        },
    ));
    t
}

/// The readable report.
pub fn markdown(all: &[CaseResult], setup: &Setup) -> String {
    let (quick, reps) = (setup.quick, setup.reps);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# rocketmq-webhook benchmark{}\n",
        if quick {
            " (QUICK smoke run: short runs, figures are indicative only)"
        } else {
            ""
        }
    );
    let p = &setup.provenance;
    let _ = writeln!(
        s,
        "Commit: `{}`. Host: {} (kernel {}). Date: {}.",
        recorded(&p.commit),
        recorded(&p.host),
        recorded(&p.kernel),
        recorded(&p.date)
    );
    let _ = writeln!(s, "Machine: {}. Repetitions per case: {reps}; order of ours and the peer: {}. Figures are medians, `[min–max]` over repetitions when more than one.", recorded(&p.machine), recorded(&p.order));
    match &setup.daemon {
        Some(daemon) => {
            let yaml = setup
                .daemon_yaml
                .as_deref()
                .map_or_else(|| "none".to_owned(), |y| format!("`{}`", y.trim()));
            let _ = writeln!(s, "Daemon: `{daemon}` ({}, sha256 `{}`). Extra daemon YAML (`BENCH_DAEMON_YAML`; the peer is not affected): {yaml}.", recorded(&p.daemon_version), recorded(&p.daemon_sha256));
        }
        None => {
            let _ = writeln!(s, "Daemon and extra daemon YAML: not recorded.");
        }
    }
    if let Some(peer) = &p.peer {
        let _ = writeln!(s, "Peer: `{peer}` (sha256 `{}`).", recorded(&p.peer_sha256));
    }
    let _ = writeln!(s, "Latency: ms from the broker's store time (or the producer's born time) to the sink receiving the request; both stamps have millisecond resolution, so figures carry up to 1 ms of truncation. Drain scenarios show no latency (it would be the backlog's age). In open-loop cases the pull-ceiling row is the pull floor: the same load read by long polls of our client, nothing delivered, timed at the pull's answer; what the broker adds, which no consumer can beat.");
    let _ = writeln!(s, "CPU: consumer process user+system seconds per million messages (from /proc), from just before the first delivery to the last. RSS: VmHWM of the consumer process.\n");
    let _ = writeln!(
        s,
        "## Targets\n\n| target | measured | met |\n|---|---|---|"
    );
    for (name, measured, met) in targets(all, setup) {
        let m = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {name} | {measured} | {m} |");
    }
    let mut scenarios: Vec<&str> = all.iter().map(|c| c.scenario.as_str()).collect();
    scenarios.dedup();
    for sc in scenarios {
        let _ = writeln!(s, "\n## {sc}\n");
        let _ = writeln!(s, "| case | system | messages | msgs/s | MB/s | store→hook p50/p99/p999 ms | born→hook p50/p99/p999 ms | CPU s/M msgs | peak RSS MiB | other |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        let mut cases: Vec<&str> = all
            .iter()
            .filter(|c| c.scenario == sc)
            .map(|c| c.case.as_str())
            .collect();
        cases.dedup();
        for case in &cases {
            for sys in ["ours", "peer", "pull-ceiling", "sink-ceiling"] {
                let Some(c) = find(all, sc, case, sys) else {
                    continue;
                };
                if c.runs.is_empty() {
                    let _ = writeln!(
                        s,
                        "| {case} | {sys} | {} | | | | | | | |",
                        c.note.as_deref().unwrap_or("not measured")
                    );
                    continue;
                }
                let mut other = Vec::new();
                for (k, label) in [
                    ("requests", "requests"),
                    ("requests_per_s", "req/s"),
                    ("duplicates", "duplicates"),
                    ("order_violations", "order violations"),
                    ("overlapping_requests", "of which overlapping requests"),
                    ("sent", "sent"),
                    ("undelivered", "not delivered by the end"),
                    ("retried_messages", "retried"),
                    ("failed_requests", "failed requests"),
                    (
                        "first_delivery_after_outage_s",
                        "first delivery after outage s",
                    ),
                    ("recovery_s", "recovery s"),
                    ("outage_max_rss_mib", "max RSS around outage MiB"),
                    ("idle_rss_mib", "idle RSS MiB"),
                    (
                        "subscription_start_spread_s",
                        "first deliveries of the subscriptions spread over s",
                    ),
                    ("idle_cpu_s_per_min", "idle CPU s/min"),
                    ("consumer_cores", "cores: consumer"),
                    ("broker_cores", "broker"),
                    ("harness_cores", "sink and harness"),
                    ("msgs_per_pull", "msgs/pull"),
                    ("msgs_per_request", "msgs/request"),
                    ("incomplete", "INCOMPLETE runs"),
                ] {
                    if let Some((m, _, _)) = stat(c, k) {
                        if (k == "order_violations" || k == "overlapping_requests")
                            && !sc.starts_with("5 ")
                        {
                            continue;
                        }
                        if (k == "duplicates" || k == "failed_requests") && m == 0.0 {
                            continue;
                        }
                        other.push(format!("{label} {}", fmt(Some(m))));
                    }
                }
                if let Some(n) = &c.note {
                    other.push(n.clone());
                }
                let _ = writeln!(
                    s,
                    "| {case} | {sys} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    fmt(stat(c, "messages").map(|x| x.0)),
                    spread(c, "msgs_per_s"),
                    fmt(stat(c, "mb_per_s").map(|x| x.0)),
                    pcts(c, "store"),
                    pcts(c, "born"),
                    fmt(stat(c, "cpu_s_per_m").map(|x| x.0)),
                    fmt(stat(c, "peak_rss_mib").map(|x| x.0)),
                    other.join("; ")
                );
            }
        }
        let _ = writeln!(
            s,
            "\nRatios (msgs/s medians; for open-loop cases, store p99 peer / ours):\n"
        );
        for case in &cases {
            let ours = med(all, sc, case, "ours", "msgs_per_s");
            let standing = find(all, sc, case, "ours")
                .and_then(|c| versus_peer(all, c))
                .map_or(String::new(), |st| format!(" ({})", st.word()));
            let mut parts = Vec::new();
            if sc.starts_with("6 ") {
                parts.push("not compared by latency: first deliveries only are counted, and the peer answers every failure (outage included) by sending the message back to the broker (retried column), while the daemon holds messages through the outage (circuit breaker) and delivers them afterwards; compare 'not delivered by the end', 'retried' and 'recovery s'".into());
            } else if sc.starts_with("1 ") {
                match (
                    med(all, sc, case, "ours", "store_p99_ms"),
                    med(all, sc, case, "peer", "store_p99_ms"),
                ) {
                    (Some(o), Some(p)) => parts.push(format!(
                        "peer p99 / ours p99 = {}{standing}",
                        fmt(Some(p / o))
                    )),
                    _ => parts.push(format!(
                        "ours / peer: not measured, or a run had fewer than {} samples, the \
                         least a p99 needs",
                        samples_needed("p99")
                    )),
                }
                for label in ["p99", "p999"] {
                    let key = format!("store_{label}_ms");
                    match (
                        med(all, sc, case, "ours", &key),
                        med(all, sc, case, "pull-ceiling", &key),
                    ) {
                        (Some(o), Some(f)) => parts.push(format!(
                            "ours {label} - pull floor {label} = {} ms",
                            fmt(Some(o - f))
                        )),
                        _ => parts.push(format!(
                            "pull floor {label}: not measured, or a run had fewer than {} \
                             samples, the least a {label} needs",
                            samples_needed(label)
                        )),
                    }
                }
            } else {
                for (sys, label) in [
                    ("pull-ceiling", "ours / pull ceiling"),
                    ("sink-ceiling", "ours / sink ceiling"),
                    ("peer", "ours / peer"),
                ] {
                    let standing = if sys == "peer" { standing.as_str() } else { "" };
                    match (ours, med(all, sc, case, sys, "msgs_per_s")) {
                        (Some(o), Some(x)) => {
                            parts.push(format!("{label} = {}{standing}", fmt(Some(o / x))))
                        }
                        _ => parts.push(format!("{label}: not measured")),
                    }
                }
            }
            let _ = writeln!(s, "- {case}: {}", parts.join(", "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Run;

    fn case(scenario: &str, system: &str, metric: &str, values: &[f64]) -> CaseResult {
        CaseResult {
            scenario: scenario.into(),
            case: "c".into(),
            system: system.into(),
            runs: values
                .iter()
                .map(|v| Run::from([(metric.to_owned(), *v)]))
                .collect(),
            note: None,
        }
    }

    fn setup(daemon: Option<&str>, yaml: Option<&str>) -> Setup {
        Setup {
            quick: false,
            reps: 3,
            namesrv: "127.0.0.1:9876".into(),
            daemon: daemon.map(Into::into),
            daemon_yaml: yaml.map(Into::into),
            provenance: Provenance::default(),
        }
    }

    #[test]
    fn ahead_only_when_the_ranges_are_apart() {
        use Standing::*;
        // (median, min, max)
        assert_eq!(
            Standing::of((10.0, 9.0, 11.0), (8.0, 7.0, 8.5), true),
            Ahead
        );
        assert_eq!(Standing::of((10.0, 8.0, 11.0), (8.5, 7.0, 9.0), true), Tie);
        assert_eq!(Standing::of((10.0, 9.0, 11.0), (8.0, 7.0, 9.0), true), Tie);
        assert_eq!(Standing::of((5.0, 4.0, 6.0), (8.0, 7.0, 9.0), true), Behind);
        // Lower is better (latency).
        assert_eq!(Standing::of((1.0, 0.9, 1.1), (2.0, 1.5, 2.5), false), Ahead);
        assert_eq!(Standing::of((1.0, 0.9, 1.6), (2.0, 1.5, 2.5), false), Tie);
        assert_eq!(
            Standing::of((3.0, 2.6, 3.1), (2.0, 1.5, 2.5), false),
            Behind
        );
        // One run each: the values themselves.
        assert_eq!(Standing::of((2.0, 2.0, 2.0), (2.0, 2.0, 2.0), true), Tie);
    }

    /// A percentile some runs lack (too few samples) gives no median of the others; any other
    /// figure is the median of the runs that have it.
    #[test]
    fn a_percentile_missing_from_a_run_is_not_reported() {
        let mut c = case("1 latency floor", "ours", "store_p999_ms", &[1.0, 2.0]);
        c.runs.push(Run::from([("store_p99_ms".to_owned(), 3.0)]));
        assert_eq!(stat(&c, "store_p999_ms"), None);
        assert_eq!(stat(&c, "store_p99_ms"), None);
        let mut c = case("2 max throughput", "ours", "msgs_per_s", &[1.0, 3.0]);
        c.runs.push(Run::new());
        assert_eq!(stat(&c, "msgs_per_s"), Some((2.0, 1.0, 3.0)));
    }

    #[test]
    fn the_summary_counts_ties_and_is_not_met_with_one() {
        let all = vec![
            case(
                "2 max throughput",
                "ours",
                "msgs_per_s",
                &[100.0, 120.0, 130.0],
            ),
            case(
                "2 max throughput",
                "peer",
                "msgs_per_s",
                &[90.0, 110.0, 115.0],
            ),
            case("1 latency floor", "ours", "store_p99_ms", &[1.0, 1.1, 1.2]),
            case("1 latency floor", "peer", "store_p99_ms", &[2.0, 2.5, 3.0]),
            case("6 slow and failing sink", "ours", "msgs_per_s", &[1.0]),
            case("6 slow and failing sink", "peer", "msgs_per_s", &[0.5]),
        ];
        let t = targets(&all, &setup(Some("d"), None));
        let (_, measured, met) = t.last().expect("the peer line");
        assert_eq!(measured, "1 ahead, 1 tie, 0 behind of 2");
        assert_eq!(*met, Some(false));
        let md = markdown(&all, &setup(Some("d"), None));
        assert!(
            md.contains("ours / peer = 1.09 (tie: the runs' ranges overlap)"),
            "{md}"
        );
        assert!(md.contains("peer p99 / ours p99 = 2.27 (ahead)"), "{md}");
    }

    #[test]
    fn the_header_records_the_daemon_and_its_extra_yaml() {
        let md = markdown(
            &[],
            &setup(Some("/x/rocketmq-webhook"), Some("cache: {max_count: 1}\n")),
        );
        assert!(md.contains("Daemon: `/x/rocketmq-webhook`"), "{md}");
        assert!(
            md.contains(
                "YAML (`BENCH_DAEMON_YAML`; the peer is not affected): `cache: {max_count: 1}`."
            ),
            "{md}"
        );
        assert!(
            md.contains("limits as set by the extra daemon YAML"),
            "{md}"
        );
        let md = markdown(&[], &setup(Some("/x/rocketmq-webhook"), None));
        assert!(
            md.contains("YAML (`BENCH_DAEMON_YAML`; the peer is not affected): none."),
            "{md}"
        );
        assert!(md.contains("RSS <= 64 MiB peak, default limits"), "{md}");
        assert!(markdown(&[], &setup(None, None)).contains("not recorded"));

        let v: serde_json::Value =
            serde_json::from_str(&json(&[], &setup(Some("/x/d"), Some("a: 1")))).expect("json");
        assert_eq!(v["daemon"], "/x/d");
        assert_eq!(v["daemon_yaml"], "a: 1");
        let v: serde_json::Value =
            serde_json::from_str(&json(&[], &setup(Some("/x/d"), None))).expect("json");
        assert!(v["daemon_yaml"].is_null());
    }

    #[test]
    fn utc_counts_leap_years() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_709_251_199), "2024-02-29 23:59:59 UTC");
        assert_eq!(utc(1_735_689_600), "2025-01-01 00:00:00 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn provenance_is_collected_without_failing_on_missing_tools() {
        let nowhere = Path::new("/nonexistent/bench-harness-test");
        let p = Provenance::collect(nowhere, nowhere, Some(nowhere));
        // Not a repository, not a binary, not a file: recorded as unknown, not left out.
        assert_eq!(p.commit.as_deref(), Some("unknown"));
        assert_eq!(p.daemon_version.as_deref(), Some("unknown"));
        assert_eq!(p.daemon_sha256.as_deref(), Some("unknown"));
        assert_eq!(p.peer_sha256.as_deref(), Some("unknown"));
        assert!(p.date.is_some() && p.machine.is_some() && p.order.is_some());
        let without_peer = Provenance::collect(nowhere, nowhere, None);
        assert_eq!((without_peer.peer, without_peer.peer_sha256), (None, None));
    }

    #[test]
    fn the_header_and_the_json_carry_the_provenance() {
        let mut s = setup(Some("/x/d"), None);
        s.provenance = Provenance {
            commit: Some("abc1234-dirty".into()),
            date: Some(utc(0)),
            host: Some("bench-host".into()),
            kernel: Some("6.1.0".into()),
            machine: Some("2 cpus, Some CPU".into()),
            daemon_version: Some("rocketmq-webhook 0.1.0".into()),
            daemon_sha256: Some("ab".repeat(32)),
            peer: Some("/x/peer".into()),
            peer_sha256: Some("unknown".into()),
            order: Some("alternating".into()),
        };
        let md = markdown(&[], &s);
        assert!(
            md.contains("Commit: `abc1234-dirty`. Host: bench-host (kernel 6.1.0). Date: 1970-01-01 00:00:00 UTC."),
            "{md}"
        );
        assert!(md.contains("Machine: 2 cpus, Some CPU."), "{md}");
        assert!(
            md.contains("order of ours and the peer: alternating."),
            "{md}"
        );
        assert!(md.contains("(rocketmq-webhook 0.1.0, sha256 `abab"), "{md}");
        assert!(md.contains("Peer: `/x/peer` (sha256 `unknown`)."), "{md}");
        let v: serde_json::Value = serde_json::from_str(&json(&[], &s)).expect("json");
        // At the top level, where older reports keep `machine`.
        assert_eq!(v["machine"], "2 cpus, Some CPU");
        assert_eq!(v["host"], "bench-host");
        let back: Provenance = serde_json::from_value(v).expect("provenance");
        assert_eq!(back, s.provenance);

        // A report from before: only `machine`, the rest not recorded (and no peer line).
        let old: Provenance =
            serde_json::from_value(serde_json::json!({"machine": "4 cpus, Old CPU", "cases": []}))
                .expect("provenance");
        let mut s = setup(Some("/x/d"), None);
        s.provenance = old;
        let md = markdown(&[], &s);
        assert!(
            md.contains("Commit: `not recorded`. Host: not recorded"),
            "{md}"
        );
        assert!(md.contains("Machine: 4 cpus, Old CPU."), "{md}");
        assert!(!md.contains("Peer:"), "{md}");
    }
}
