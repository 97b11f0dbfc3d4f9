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

# The echo receiver and the daemon run in sessions of their own (setsid), out of reach of the
# terminal's Ctrl-C, so that only cleanup signals them, once: the daemon takes a second signal
# as "exit at once", without draining and committing its offsets.
pids=()
daemon=""
# Signals PID once and waits up to SECONDS for it to exit, then kills it.
stop() { # PID SECONDS
  kill "$1" 2>/dev/null || true
  local i
  for ((i = 0; i < $2 * 2; i++)); do
    kill -0 "$1" 2>/dev/null || break
    # `|| true`: a Ctrl-C kills the sleep, and `set -e` would end the cleanup there.
    sleep 0.5 || true
  done
  if kill -0 "$1" 2>/dev/null; then
    echo "demo: process $1 did not exit within $2 s; killing it" >&2
    kill -KILL "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
}
cleanup() {
  # Another Ctrl-C while the daemon drains is passed on to it: its second signal, exit at once.
  trap '[ -z "$daemon" ] || kill "$daemon" 2>/dev/null || true' INT TERM
  # The daemon first, while the echo receiver still answers its last deliveries. It exits
  # within shutdown.grace_period (30 s) + 18 s.
  if [ -n "$daemon" ]; then
    stop "$daemon" 50
    daemon=""
  fi
  for pid in ${pids[@]+"${pids[@]}"}; do stop "$pid" 10; done
  scripts/rocketmq-local.sh stop --dir "$work/rocketmq" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Before the first cargo command (the broker install): installs the pinned toolchain if missing.
scripts/toolchain.sh
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
# Probed as the admin port is below: if it cannot listen (port taken), echo exits at once and
# every delivery would fail. A wildcard address is probed on loopback. A port already taken is
# refused first: the probe would otherwise reach whatever holds it.
echo_host="${ECHO_ADDR%:*}" echo_port="${ECHO_ADDR##*:}"
echo_host="${echo_host#[}" && echo_host="${echo_host%]}"
case "$echo_host" in 0.0.0.0) echo_host=127.0.0.1 ;; ::) echo_host=::1 ;; esac
echo_listening() { (exec 3<>"/dev/tcp/$echo_host/$echo_port") 2>/dev/null; }
if echo_listening; then
  echo "demo: $ECHO_ADDR (echo receiver) is already in use; stop what listens there or set DEMO_ECHO_ADDR" >&2
  exit 1
fi
setsid "$bin" echo --listen "$ECHO_ADDR" >"$work/echo.jsonl" 2>"$work/echo.log" &
echo_pid=$!
pids+=("$echo_pid")
for _ in $(seq 1 60); do
  kill -0 "$echo_pid" 2>/dev/null || break
  echo_listening && break
  sleep 0.5
done
if ! kill -0 "$echo_pid" 2>/dev/null || ! echo_listening; then
  echo "demo: the echo receiver is not listening on $ECHO_ADDR (set DEMO_ECHO_ADDR to use another); its log:" >&2
  cat "$work/echo.log" >&2
  exit 1
fi

say "Starting the daemon (configured by environment only; admin on http://$ADMIN_ADDR)"
setsid env ROCKETMQ_NAMESRV_ADDR="$namesrv" \
  ROCKETMQ_CONSUMER_GROUP="$GROUP" \
  ROCKETMQ_TOPIC="$TOPIC" \
  ROCKETMQ_WEBHOOK_URL="http://$ECHO_ADDR/rocketmq" \
  ROCKETMQ_ADMIN_LISTEN="$ADMIN_ADDR" \
  ROCKETMQ_CONSUME_FROM_WHERE=FIRST_OFFSET \
  "$bin" run 2>"$work/daemon.log" &
daemon=$!

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
