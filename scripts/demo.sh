#!/usr/bin/env bash
# The quick start: a local RocketMQ name server + broker, an echo webhook receiver, the daemon
# configured by environment variables only, and demo messages, so you can watch them arrive.
#
#   scripts/demo.sh            run until Ctrl-C
#   scripts/demo.sh --once     exit (and clean up) as soon as the demo messages have arrived
#
# The first run installs the broker (about 12 minutes on 2 cores, progress printed every 30 s)
# and builds the daemon; later runs start in seconds. Ports: name server 29876, broker 30911,
# echo receiver 18080, admin 19090 (override with DEMO_* variables below).
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
[ "${1:-}" = "--once" ] && once=true

NS_PORT="${DEMO_NAMESRV_PORT:-29876}"
BROKER_PORT="${DEMO_BROKER_PORT:-30911}"
ECHO_ADDR="${DEMO_ECHO_ADDR:-127.0.0.1:18080}"
ADMIN_ADDR="${DEMO_ADMIN_ADDR:-127.0.0.1:19090}"
TOPIC="${DEMO_TOPIC:-DemoTopic}"
GROUP="${DEMO_GROUP:-demo-group}"
COUNT="${DEMO_COUNT:-5}"
work=".tools/demo"
mkdir -p "$work"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/rocketmq-local.sh stop --dir "$work/rocketmq" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "RocketMQ name server and broker (first run: installs them, about 12 minutes)"
scripts/install-rocketmq.sh >/dev/null
say "Building rocketmq-webhook"
cargo build --quiet
bin=target/debug/rocketmq-webhook

scripts/rocketmq-local.sh stop --dir "$work/rocketmq" >/dev/null 2>&1 || true
namesrv=$(scripts/rocketmq-local.sh start --dir "$work/rocketmq" --namesrv-port "$NS_PORT" --broker-port "$BROKER_PORT" | tail -n 1)

say "Creating topic $TOPIC"
"$bin" topic create --namesrv "$namesrv" --topic "$TOPIC" --queues 4

say "Starting the echo receiver on http://$ECHO_ADDR (prints every request it gets)"
"$bin" echo --listen "$ECHO_ADDR" >"$work/echo.jsonl" 2>"$work/echo.log" &
pids+=($!)

say "Starting the daemon (configured by environment only; admin on http://$ADMIN_ADDR)"
env ROCKETMQ_NAMESRV_ADDR="$namesrv" \
  ROCKETMQ_CONSUMER_GROUP="$GROUP" \
  ROCKETMQ_TOPIC="$TOPIC" \
  ROCKETMQ_WEBHOOK_URL="http://$ECHO_ADDR/rocketmq" \
  ROCKETMQ_ADMIN_LISTEN="$ADMIN_ADDR" \
  ROCKETMQ_CONSUME_FROM_WHERE=FIRST_OFFSET \
  "$bin" run 2>"$work/daemon.log" &
pids+=($!)

for _ in $(seq 1 60); do
  "$bin" healthcheck --ready --admin "$ADMIN_ADDR" 2>/dev/null && break
  sleep 0.5
done
"$bin" healthcheck --ready --admin "$ADMIN_ADDR" || { tail -n 20 "$work/daemon.log" >&2; exit 1; }

say "Producing $COUNT demo messages"
"$bin" produce --namesrv "$namesrv" --topic "$TOPIC" --count "$COUNT" --tag demo --body "hello from RocketMQ"

say "Messages arriving at the echo receiver:"
deadline=$((SECONDS + 30))
shown=0
while :; do
  lines=$(wc -l <"$work/echo.jsonl")
  if [ "$lines" -gt "$shown" ]; then
    tail -n "+$((shown + 1))" "$work/echo.jsonl" | head -n "$((lines - shown))" | cut -c1-400
    shown=$lines
  fi
  if [ "$shown" -ge "$COUNT" ]; then
    break
  fi
  if [ "$SECONDS" -gt "$deadline" ]; then
    echo "demo: only $shown of $COUNT messages arrived within 30 s; daemon log:" >&2
    tail -n 30 "$work/daemon.log" >&2
    exit 1
  fi
  sleep 0.2
done
say "All $COUNT messages delivered. Status: curl http://$ADMIN_ADDR/status ; metrics: curl http://$ADMIN_ADDR/metrics"
if $once; then
  exit 0
fi
say "Press Ctrl-C to stop. Produce more with: $bin produce --namesrv $namesrv --topic $TOPIC --count 10"
tail -n 0 -f "$work/echo.jsonl" | cut -c1-400
