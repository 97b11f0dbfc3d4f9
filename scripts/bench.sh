#!/usr/bin/env bash
# The benchmark harness (issue 6): one command.
#
#   scripts/bench.sh [--quick] [scenario...]
#
# scenario: 1..9 or latency, throughput, batched, backlog, orderly, faults, large, idle, scale
# (default: all). --quick runs every scenario briefly, once, as a smoke check of the harness.
#
# Starts a private name server and broker (scripts/rocketmq-local.sh, ports 19876 / 20911, in
# target/bench/rocketmq: removed before the run, its store removed after), builds the daemon
# (release) and the driver (bench/harness, its own Cargo workspace and target dir, never part of
# the main build), uses the peer (bench/peer, a rocketmq-client-rust push consumer) when it
# builds, and writes
# target/bench/report.json, target/bench/report.md and target/bench/latency.png.
# Preloading always uses batched sends: single sends on this broker cap at about 1.5k msg/s.
# Environment: BENCH_NAMESRV_PORT, BENCH_BROKER_PORT, BENCH_SKIP_PEER_BUILD=1 (use a peer binary
# only if already built), BENCH_REPS (repetitions, default 3, quick 1), BENCH_BROKER_LOG (broker
# RUST_LOG, default warn), BENCH_KEEP_STORE=1 (keep the broker's store after the run),
# BENCH_DAEMON=PATH (measure that daemon binary, e.g. an older build, instead of building one),
# BENCH_SCALE_CASES (only these cases of scenario 9, e.g. 64x1,8x16: queues x subscriptions),
# BENCH_DAEMON_YAML (extra top-level configuration for our daemon, e.g. "cache: {max_count: 40000}").
# One run at a time (target/bench/bench.lock); each run starts with an empty target/bench/logs.
# Needs python3 (the broker's readiness check, the plot).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="$repo/target/bench"
ns_port="${BENCH_NAMESRV_PORT:-19876}"
br_port="${BENCH_BROKER_PORT:-20911}"
mq_dir="$out/rocketmq"

quick=()
scenarios=()
for a in "$@"; do
  case "$a" in
    --quick) quick=(--quick) ;;
    -h|--help) sed -n 2,23p "$0"; exit 0 ;;
    -*) echo "bench: unknown option $a" >&2; exit 2 ;;
    *) scenarios+=("$a") ;;
  esac
done

# scripts/rocketmq-local.sh asks the name server for the broker's route with python3: without it
# the start would wait for a readiness that can never be seen. Said before anything is built.
command -v python3 >/dev/null 2>&1 || {
  echo "bench: python3 is needed (scripts/rocketmq-local.sh checks the broker's readiness with it; the plot uses it too)" >&2
  exit 2
}

mkdir -p "$out"
# A second run at once would stop this run's broker, remove its store and mix its logs and
# report: the lock is taken before any of that. The harness inherits the descriptor, so one left
# running by a killed run keeps the lock while it writes to $out; the broker does not (it is
# started with the descriptor closed): a broker left over is what the next run stops below.
# Nor do the builds get it (`9>&-`): a compiler cache server they start (sccache) would hold
# the lock for its idle timeout.
lock="$out/bench.lock"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$lock"
  flock -n 9 || {
    echo "bench: another scripts/bench.sh run (or a process left from one) holds $lock; wait for it or stop it" >&2
    exit 1
  }
else
  echo "bench: flock not found; running without the lock $lock" >&2
fi
# Logs of this run only: the harness names them by sequence number, which restarts every run.
rm -rf "$out/logs"

# On INT, TERM or HUP, stop the harness (which kills its consumers) and exit; the EXIT trap
# then stops the broker. Without this the harness (and the sink in it), the daemon and the peer
# would run on against a broker that is gone.
harness_pid=""
harness_group=""
on_signal() {
  trap - INT TERM HUP
  if [ -n "$harness_pid" ]; then
    echo "bench: interrupted; stopping the harness" >&2
    kill -TERM "$harness_pid" 2>/dev/null || true
    # It drops its consumers on TERM; 10 s for that, then whatever is left of its group.
    for _ in $(seq 50); do
      kill -0 "$harness_pid" 2>/dev/null || break
      sleep 0.2
    done
    if [ -n "$harness_group" ]; then
      kill -KILL -- "-$harness_group" 2>/dev/null || true
    else
      kill -KILL "$harness_pid" 2>/dev/null || true
    fi
  fi
  exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

daemon="${BENCH_DAEMON:-$repo/target/release/rocketmq-webhook}"
if [ -n "${BENCH_DAEMON:-}" ]; then
  [ -x "$daemon" ] || { echo "bench: BENCH_DAEMON '$daemon' is not an executable" >&2; exit 2; }
  echo "== measuring $daemon (BENCH_DAEMON; not rebuilt)" >&2
else
  echo "== building the daemon (release)" >&2
  (cd "$repo" && cargo build --release --bin rocketmq-webhook) 9>&-
fi
echo "== building the driver (bench/harness, release)" >&2
(cd "$repo/bench/harness" && cargo build --release) 9>&-

peer_args=()
peer_bin="$repo/bench/peer/target/release/bench-peer"
peer_log="$out/peer-build.log"
if [ "${BENCH_SKIP_PEER_BUILD:-0}" != 1 ]; then
  echo "== building the peer (bench/peer: rocketmq-client-rust; the first build takes long)" >&2
  if ! (cd "$repo/bench/peer" && nice -n 10 cargo build --release) >"$peer_log" 2>&1 9>&-; then
    echo "bench: the peer did not build (see $peer_log); peer columns will say so" >&2
    peer_args=(--peer-missing "the peer (bench/peer) did not build: $(grep -m1 '^error' "$peer_log" || tail -n 1 "$peer_log")")
    peer_bin=""
  fi
fi
if [ -n "$peer_bin" ] && [ -x "$peer_bin" ]; then
  peer_args=(--peer "$peer_bin")
elif [ ${#peer_args[@]} -eq 0 ]; then
  peer_args=(--peer-missing "peer binary not built (BENCH_SKIP_PEER_BUILD=1)")
fi

"$here/rocketmq-local.sh" stop --dir "$mq_dir" >/dev/null 2>&1 || true
rm -rf "$mq_dir"
# The store (about 11 GB after a full run) goes with the servers; the logs stay for the report.
# BENCH_KEEP_STORE=1 keeps it for a post-mortem.
trap '"$here/rocketmq-local.sh" stop --dir "$mq_dir" >&2 || true; [ -n "${BENCH_KEEP_STORE:-}" ] || rm -rf "$mq_dir/store"' EXIT
# The broker logs every request at INFO (tens of MB per run): warnings only, so its logging does
# not eat the cores the consumers are measured on. Both consumers face the same broker.
namesrv="$(RUST_LOG="${BENCH_BROKER_LOG:-warn}" "$here/rocketmq-local.sh" start --dir "$mq_dir" --namesrv-port "$ns_port" --broker-port "$br_port" 9>&- | tail -n 1)"

reps=()
[ -n "${BENCH_REPS:-}" ] && reps=(--reps "$BENCH_REPS")
cases=()
[ -n "${BENCH_SCALE_CASES:-}" ] && cases=(--scale-cases "$BENCH_SCALE_CASES")
# BENCH_DAEMON_YAML: extra top-level configuration for our daemon (the harness clears ROCKETMQ_*
# variables, so this is how a run measures a setting), e.g. "cache: {max_count: 40000}".
[ -n "${BENCH_DAEMON_YAML:-}" ] && cases+=(--daemon-yaml "$BENCH_DAEMON_YAML")
# The broker's CPU during drains shows how the 2 cores are shared (report: "cores").
[ -f "$mq_dir/broker.pid" ] && cases+=(--broker-pid "$(cat "$mq_dir/broker.pid")")
echo "== running scenarios ${scenarios[*]:-all}${quick:+ (quick)}" >&2
# In the background, so that a signal reaches the trap at once (bash runs a trap only after the
# foreground command ends), and in a process group of its own (setsid), so that the trap can
# kill whatever of the harness's children would be left. setsid does not fork here (the
# background child is no group leader), so $! is the harness and its group (no --wait:
# busybox's setsid lacks it).
harness=("$repo/bench/harness/target/release/bench-harness" --namesrv "$namesrv"
  --daemon "$daemon" --out "$out" --repo "$repo"
  "${peer_args[@]}" "${quick[@]}" "${reps[@]}" "${cases[@]}" "${scenarios[@]}")
if command -v setsid >/dev/null 2>&1; then
  setsid "${harness[@]}" &
  harness_pid=$!
  harness_group=$harness_pid
else
  "${harness[@]}" &
  harness_pid=$!
fi
# A failing harness fails the run (set -e), as in the foreground.
wait "$harness_pid"
harness_pid=""
harness_group=""

# The plot: matplotlib in a private venv (git-ignored .tools/).
venv="$repo/.tools/bench-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  { python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib >&2; } 9>&- || true
fi
if "$venv/bin/python" "$repo/bench/plot.py" "$out/report.json" "$out/latency.png"; then
  echo "plot: $out/latency.png" >&2
else
  echo "bench: the latency plot could not be drawn (matplotlib missing?)" >&2
fi
echo "report: $out/report.md, $out/report.json" >&2
