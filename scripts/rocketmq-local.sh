#!/usr/bin/env bash
# Starts and stops a local RocketMQ name server + broker (the Rust implementation from crates.io,
# see docs/compatibility.md) for the demo and for people trying the daemon by hand.
#
#   scripts/rocketmq-local.sh start [--dir DIR] [--namesrv-port P] [--broker-port P]
#   scripts/rocketmq-local.sh stop  [--dir DIR]
#   scripts/rocketmq-local.sh status [--dir DIR]
#
# `start` installs the binaries when missing (scripts/install-rocketmq.sh), writes the configs into
# DIR, starts both processes in the background (logs in DIR), waits until the broker's route is
# visible on the name server and prints the name-server address as the last stdout line.
# `stop` kills exactly the PIDs `start` recorded. The integration tests do not use this script:
# tests/support/ starts private servers on free ports.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

dir="$repo/.tools/local-rocketmq"
namesrv_port=9876
broker_port=10911

usage() {
  cat >&2 <<EOF
usage: $0 start [--dir DIR] [--namesrv-port P] [--broker-port P]
       $0 stop [--dir DIR]
       $0 status [--dir DIR]
EOF
  exit 2
}

die() {
  echo "rocketmq-local: $*" >&2
  exit 1
}

[ $# -ge 1 ] || usage
cmd="$1"
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) [ $# -ge 2 ] || usage; dir="$2"; shift 2 ;;
    --namesrv-port) [ $# -ge 2 ] || usage; namesrv_port="$2"; shift 2 ;;
    --broker-port) [ $# -ge 2 ] || usage; broker_port="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "rocketmq-local: unknown argument '$1'" >&2; usage ;;
  esac
done
for p in "$namesrv_port" "$broker_port"; do
  case "$p" in
    ''|*[!0-9]*) echo "rocketmq-local: port '$p' is not a number" >&2; exit 2 ;;
  esac
  # The broker also binds listenPort-2 (VIP channel) and listenPort+1 (HA, chosen here).
  if [ "$p" -lt 3 ] || [ "$p" -gt 65534 ]; then
    echo "rocketmq-local: port '$p' is out of range" >&2
    exit 2
  fi
done

pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null
}

read_pid() {
  if [ -f "$dir/$1.pid" ]; then cat "$dir/$1.pid"; fi
}

# Asks the name server for the route of TBW102 (the template topic every broker registers) with
# one GET_ROUTEINFO_BY_TOPIC request; succeeds when the answer is code 0 and names our broker
# address (args: host, port, broker address).
# Python is on every supported machine and keeps the binary framing readable.
route_ready() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, socket, struct, sys
host, port, broker = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
header = json.dumps({"code": 105, "extFields": {"topic": "TBW102"}, "flag": 0,
                     "language": "JAVA", "opaque": 1, "serializeTypeCurrentRPC": "JSON",
                     "version": 479}).encode()
try:
    s = socket.create_connection((host, port), timeout=2)
    s.settimeout(3)
    s.sendall(struct.pack(">ii", 4 + len(header), len(header)) + header)
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf
    total, = struct.unpack(">i", read(4))
    frame = read(total)
    hlen = struct.unpack(">i", frame[:4])[0] & 0xFFFFFF
    head = json.loads(frame[4:4 + hlen])
    body = frame[4 + hlen:]
    ok = head.get("code") == 0 and broker in body
    sys.exit(0 if ok else 1)
except Exception:
    sys.exit(1)
PY
}

install_bin() {
  if [ -n "${ROCKETMQ_BIN_DIR:-}" ]; then
    echo "$ROCKETMQ_BIN_DIR"
    return
  fi
  "$here/install-rocketmq.sh" | tail -n 1
}

start() {
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local ns_pid br_pid
  ns_pid="$(read_pid namesrv)"
  br_pid="$(read_pid broker)"
  if pid_alive "$ns_pid" || pid_alive "$br_pid"; then
    die "already running from $dir (namesrv pid ${ns_pid:-none}, broker pid ${br_pid:-none}); run '$0 stop --dir $dir' first"
  fi

  # A port already taken would make a server exit, and the readiness check could then talk to
  # someone else's name server: refuse up front.
  for p in "$namesrv_port" "$broker_port" "$((broker_port - 2))" "$((broker_port + 1))"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      die "port $p is already in use (the broker needs --broker-port P, P-2 and P+1); pick other ports or stop what runs there"
    fi
  done

  local bin
  bin="$(install_bin)"
  [ -x "$bin/rocketmq-namesrv-rust" ] && [ -x "$bin/rocketmq-broker-rust" ] ||
    die "rocketmq-namesrv-rust / rocketmq-broker-rust not found in '$bin'; run scripts/install-rocketmq.sh"

  local home="$dir/home" store="$dir/store"
  mkdir -p "$home" "$store"
  "$here/disk-headroom.sh" "$store" || exit 1
  # The name server refuses to start without ROCKETMQ_HOME; it only reads TOML configs.
  cat >"$dir/namesrv.toml" <<EOF
listenPort = $namesrv_port
bindAddress = "127.0.0.1"
rocketmqHome = "$home"
kvConfigPath = "$dir/namesrv/kvConfig.json"
configStorePath = "$dir/namesrv/namesrv.properties"
EOF
  # Java-style properties (converted by the broker). brokerIP1 keeps it from advertising the
  # external address; haListenPort must be set or a second broker on the host cannot start.
  # (The properties form cannot set the bind address: the broker listens on 0.0.0.0.)
  # 64 MiB commit-log files instead of 1 GiB keep a demo store small.
  cat >"$dir/broker.properties" <<EOF
brokerClusterName=DefaultCluster
brokerName=broker-local
brokerId=0
brokerIP1=127.0.0.1
listenPort=$broker_port
haListenPort=$((broker_port + 1))
haListenAddress=127.0.0.1
mappedFileSizeCommitLog=67108864
namesrvAddr=127.0.0.1:$namesrv_port
storePathRootDir=$store
autoCreateTopicEnable=true
autoCreateSubscriptionGroup=true
EOF

  echo "starting name server on 127.0.0.1:$namesrv_port (log $dir/namesrv.log)" >&2
  (cd "$dir" && ROCKETMQ_HOME="$home" NO_COLOR=1 exec nohup "$bin/rocketmq-namesrv-rust" -c "$dir/namesrv.toml" \
    >"$dir/namesrv.log" 2>&1 </dev/null) &
  echo $! >"$dir/namesrv.pid"
  # The broker registers at start and then only every 30 s: let the name server listen first.
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$namesrv_port") 2>/dev/null; then break; fi
    if ! pid_alive "$(read_pid namesrv)"; then
      echo "rocketmq-local: the name server exited during startup; last lines of $dir/namesrv.log:" >&2
      tail -n 20 "$dir/namesrv.log" >&2 || true
      rm -f "$dir/namesrv.pid"
      exit 1
    fi
    sleep 0.1
  done
  # -n explicitly (and no inherited NAMESRV_ADDR): the broker prefers the environment over its
  # config file.
  echo "starting broker on 127.0.0.1:$broker_port (log $dir/broker.log)" >&2
  (cd "$dir" && ROCKETMQ_HOME="$home" NO_COLOR=1 exec nohup env -u NAMESRV_ADDR "$bin/rocketmq-broker-rust" -c "$dir/broker.properties" \
    -n "127.0.0.1:$namesrv_port" \
    >"$dir/broker.log" 2>&1 </dev/null) &
  echo $! >"$dir/broker.pid"

  local deadline=$(( $(date +%s) + 60 ))
  while :; do
    if route_ready 127.0.0.1 "$namesrv_port" "127.0.0.1:$broker_port"; then
      break
    fi
    for name in namesrv broker; do
      if ! pid_alive "$(read_pid "$name")"; then
        echo "rocketmq-local: the $name exited during startup; last lines of $dir/$name.log:" >&2
        tail -n 20 "$dir/$name.log" >&2 || true
        stop_all
        exit 1
      fi
    done
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "rocketmq-local: the broker did not register with the name server within 60 s" >&2
      for name in namesrv broker; do
        echo "--- last lines of $dir/$name.log:" >&2
        tail -n 20 "$dir/$name.log" >&2 || true
      done
      stop_all
      exit 1
    fi
    sleep 0.5
  done
  echo "RocketMQ is up: name server 127.0.0.1:$namesrv_port, broker 127.0.0.1:$broker_port; stop with: $0 stop --dir $dir" >&2
  echo "127.0.0.1:$namesrv_port"
}

stop_one() {
  local name="$1" pid
  pid="$(read_pid "$name")"
  if pid_alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      pid_alive "$pid" || break
      sleep 0.2
    done
    if pid_alive "$pid"; then
      echo "rocketmq-local: $name (pid $pid) ignored SIGTERM; killing it" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
    echo "stopped $name (pid $pid)" >&2
  fi
  rm -f "$dir/$name.pid"
}

stop_all() {
  # Broker first so it does not log a storm of failed re-registrations.
  stop_one broker
  stop_one namesrv
}

status() {
  local running=0
  for name in namesrv broker; do
    local pid
    pid="$(read_pid "$name")"
    if pid_alive "$pid"; then
      echo "$name running (pid $pid)"
      running=1
    else
      echo "$name not running"
    fi
  done
  [ "$running" = 1 ]
}

case "$cmd" in
  start) start ;;
  stop) [ -d "$dir" ] && stop_all; true ;;
  status) status ;;
  *) usage ;;
esac
