#!/usr/bin/env bash
# Installs the RocketMQ name server and broker the tests, demo and benchmark run against:
# the Rust implementation from crates.io (see docs/compatibility.md). No Java distribution can be
# downloaded here, so this is the only real broker available.
#
# The build takes about 12 minutes on 2 cores the first time; afterwards it is skipped. The
# binaries go to a stable root outside the repository (override with ROCKETMQ_TOOLS_DIR).
# Prints the bin directory on the last line of stdout.
set -euo pipefail

VERSION="${ROCKETMQ_RUST_VERSION:-1.0.0}"
ROOT="${ROCKETMQ_TOOLS_DIR:-$HOME/.cache/rocketmq-webhook/rocketmq-rust-$VERSION}"
BIN="$ROOT/bin"

have() {
  [ -x "$BIN/rocketmq-namesrv-rust" ] && [ -x "$BIN/rocketmq-broker-rust" ] &&
    [ -f "$ROOT/.installed-$VERSION" ]
}

if have; then
  echo "rocketmq $VERSION already installed in $BIN" >&2
  echo "$BIN"
  exit 0
fi

mkdir -p "$ROOT"
# A lock so two concurrent callers (tests, demo) do not build twice.
exec 9>"$ROOT/.install.lock"
if ! flock -n 9; then
  echo "another install of rocketmq $VERSION is running; waiting for it..." >&2
  flock 9
fi
if have; then
  echo "$BIN"
  exit 0
fi

echo "installing rocketmq-namesrv and rocketmq-broker $VERSION into $ROOT" >&2
echo "first time only: this compiles the broker from crates.io and takes about 12 minutes on 2 cores" >&2
start=$(date +%s)
log="$ROOT/install.log"
# Progress: cargo prints one "Compiling" line per crate; show a count every 30 s so a user
# knows it is alive without flooding the terminal.
# One target directory for both crates: with cargo's default (a temporary one per crate) the
# broker recompiled nearly every crate the name server had just built, and an interrupted build
# started over. It is removed once both are installed. The timeout turns a stalled download
# into an error well inside a CI job's limit.
build="$ROOT/build"
timeout "${ROCKETMQ_INSTALL_TIMEOUT:-50m}" \
  cargo install --locked --root "$ROOT" --target-dir "$build" \
  "rocketmq-namesrv@$VERSION" "rocketmq-broker@$VERSION" >"$log" 2>&1 &
pid=$!
# `timeout` runs the build in a process group of its own, so a terminal's Ctrl-C reaches only
# this script: without these traps the build would go on in the background, holding the lock
# (fd 9 is inherited) and never writing the installed marker. Killing timeout makes it pass the
# signal on to cargo. The traps are removed as soon as the build has been waited for, so they
# never signal a process that has ended (or a pid reused since).
stop_build() {
  trap - INT TERM EXIT
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap 'echo "interrupted: stopping the rocketmq build" >&2; stop_build; exit 130' INT
trap 'echo "terminated: stopping the rocketmq build" >&2; stop_build; exit 143' TERM
trap stop_build EXIT
while kill -0 "$pid" 2>/dev/null; do
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    n=$(grep -c 'Compiling' "$log" || true)
    echo "  ... $(( $(date +%s) - start ))s, $n crates compiled" >&2
  fi
done
status=0
wait "$pid" || status=$?
trap - INT TERM EXIT
if [ "$status" -ne 0 ]; then
  if [ "$status" -eq 124 ]; then
    echo "cargo install did not finish within ${ROCKETMQ_INSTALL_TIMEOUT:-50m} (ROCKETMQ_INSTALL_TIMEOUT)" >&2
  fi
  echo "cargo install failed; last lines of $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
touch "$ROOT/.installed-$VERSION"
rm -rf "$build"
echo "rocketmq $VERSION installed in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
