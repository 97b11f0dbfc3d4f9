"""Draws target/bench/latency.png from report.json: store-to-webhook and born-to-webhook
latency percentiles (p50 / p99 / p999) of every open-loop case, ours beside the peer.

usage: python plot.py REPORT_JSON OUT_PNG
Only measured figures are drawn; a case or system without them is left out.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    report = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    rows = []
    for c in report["cases"]:
        s = c.get("summary", {})
        # Scenario 1 only: scenario 6's latencies are dominated by the injected outage.
        if "store_p50_ms" not in s or c["system"] not in ("ours", "peer") or not c["scenario"].startswith("1 "):
            continue
        rows.append(c)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=False)
    title = "rocketmq-webhook latency floor (scenario 1, open loop, 1 message per request)" + (" (QUICK run)" if report.get("quick") else "")
    fig.suptitle(title)
    if not rows:
        for ax in axes:
            ax.text(0.5, 0.5, "no latency measured in this run", ha="center")
        fig.savefig(out, dpi=100)
        return 0
    for ax, prefix, label in (
        (axes[0], "store", "broker store time -> webhook receipt"),
        (axes[1], "born", "producer born time -> webhook receipt"),
    ):
        names = []
        width = 0.27
        # Labelled where first drawn: a case with too few samples for a p999 has no bar.
        labelled = set()
        for i, c in enumerate(rows):
            s = c["summary"]
            names.append(f"{c['case']}\n{c['system']}")
            for k, (p, color) in enumerate((("p50", "#4c72b0"), ("p99", "#dd8452"), ("p999", "#c44e52"))):
                m = s.get(f"{prefix}_{p}_ms")
                if m is None:
                    continue
                v = max(m["median"], 0.01)
                ax.bar(i + (k - 1) * width, v, width, color=color, label=None if p in labelled else p)
                labelled.add(p)
                ax.text(i + (k - 1) * width, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, fontsize=7)
        ax.set_ylabel("ms (log scale)")
        ax.set_yscale("log")
        ax.set_title(label, fontsize=10)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
