//! report.json and report.md: medians and spreads per case and system, the ratios
//! ours / ceiling and ours / peer, and the targets beside the measured figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::CaseResult;

/// Median, minimum and maximum of `metric` over the runs that measured it.
pub fn stat(c: &CaseResult, metric: &str) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = c
        .runs
        .iter()
        .filter_map(|r| r.get(metric).copied())
        .collect();
    if v.is_empty() {
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
pub fn json(all: &[CaseResult], quick: &bool, reps: usize, namesrv: &str) -> String {
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
    let targets: Vec<serde_json::Value> = targets(all)
        .into_iter()
        .map(|(name, measured, met)| serde_json::json!({"target": name, "measured": measured, "met": met}))
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "quick": quick, "repetitions": reps, "namesrv": namesrv,
        "machine": machine(),
        "cases": cases, "targets": targets,
    }))
    .unwrap_or_default()
}

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
pub fn targets(all: &[CaseResult]) -> Vec<(String, String, Option<bool>)> {
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
        "RSS <= 64 MiB peak, default limits, 1 KiB (max over scenarios 1-6, 8)",
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
    // Ahead of the peer: more msg/s for drains, lower store p99 for open-loop cases.
    let mut ahead = (0, 0);
    for c in all.iter().filter(|c| c.system == "ours") {
        let Some(peer) = find(all, &c.scenario, &c.case, "peer") else {
            continue;
        };
        // Scenario 6 is not compared: the peer sends every failed message back to the broker,
        // the daemon holds them through the outage, so their first-delivery latencies differ
        // in kind (see its section).
        if c.scenario.starts_with("6 ") {
            continue;
        }
        let (ours, theirs, higher) = if c.scenario.starts_with("1 ") {
            (stat(c, "store_p99_ms"), stat(peer, "store_p99_ms"), false)
        } else {
            (stat(c, "msgs_per_s"), stat(peer, "msgs_per_s"), true)
        };
        if let (Some(o), Some(p)) = (ours, theirs) {
            ahead.1 += 1;
            if (higher && o.0 > p.0) || (!higher && o.0 < p.0) {
                ahead.0 += 1;
            }
        }
    }
    t.push((
        "every case ahead of the peer (cases ahead / cases measured for both; scenario 6 not compared)".into(),
        if ahead.1 == 0 {
            "-".into()
        } else {
            format!("{} / {}", ahead.0, ahead.1)
        },
        if ahead.1 == 0 {
            None
        } else {
            Some(ahead.0 == ahead.1)
        },
    ));
    t
}

/// The readable report.
pub fn markdown(all: &[CaseResult], quick: bool, reps: usize) -> String {
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
    let _ = writeln!(s, "Machine: {}. Repetitions per case: {reps}. Figures are medians, `[min–max]` over repetitions when more than one.", machine());
    let _ = writeln!(s, "Latency: ms from the broker's store time (or the producer's born time) to the sink receiving the request; both stamps have millisecond resolution, so figures carry up to 1 ms of truncation. Drain scenarios show no latency (it would be the backlog's age). In open-loop cases the pull-ceiling row is the pull floor: the same load read by long polls of our client, nothing delivered, timed at the pull's answer; what the broker adds, which no consumer can beat.");
    let _ = writeln!(s, "CPU: consumer process user+system seconds per million messages (from /proc), from just before the first delivery to the last. RSS: VmHWM of the consumer process.\n");
    let _ = writeln!(
        s,
        "## Targets\n\n| target | measured | met |\n|---|---|---|"
    );
    for (name, measured, met) in targets(all) {
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
                        if k == "order_violations" && !sc.starts_with("5 ") {
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
            let mut parts = Vec::new();
            if sc.starts_with("6 ") {
                parts.push("not compared by latency: first deliveries only are counted, and the peer answers every failure (outage included) by sending the message back to the broker (retried column), while the daemon holds messages through the outage (circuit breaker) and delivers them afterwards; compare 'not delivered by the end', 'retried' and 'recovery s'".into());
            } else if sc.starts_with("1 ") {
                match (
                    med(all, sc, case, "ours", "store_p99_ms"),
                    med(all, sc, case, "peer", "store_p99_ms"),
                ) {
                    (Some(o), Some(p)) => {
                        parts.push(format!("peer p99 / ours p99 = {}", fmt(Some(p / o))))
                    }
                    _ => parts.push("ours / peer: not measured".into()),
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
                        _ => parts.push(format!("pull floor {label}: not measured")),
                    }
                }
            } else {
                for (sys, label) in [
                    ("pull-ceiling", "ours / pull ceiling"),
                    ("sink-ceiling", "ours / sink ceiling"),
                    ("peer", "ours / peer"),
                ] {
                    match (ours, med(all, sc, case, sys, "msgs_per_s")) {
                        (Some(o), Some(x)) => parts.push(format!("{label} = {}", fmt(Some(o / x)))),
                        _ => parts.push(format!("{label}: not measured")),
                    }
                }
            }
            let _ = writeln!(s, "- {case}: {}", parts.join(", "));
        }
    }
    s
}
