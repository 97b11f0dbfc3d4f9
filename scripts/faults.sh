#!/usr/bin/env bash
# The fault suite (issue 7): real name server, broker, daemon and HTTP receiver on loopback,
# driven through SIGKILLs, broker restarts, a late name server, receiver outages, group churn
# and a hostile broker. Every scenario prints
#   scenario=<name> produced=N delivered=N duplicated=N lost=N dlq=N max_rss_kib=N
# and fails on any loss. The figures are collected into target/faults/report.md.
#
#   scripts/faults.sh            full sizes (FAULTS_FULL=1: 20 kills per mode, 60 s outage, ...),
#                                release build; about 15 minutes on 2 cores
#   scripts/faults.sh --quick    the small sizes `cargo test` runs (a couple of minutes)
#   scripts/faults.sh --debug    use the debug build instead of --release (no release compile)
#
# The short version runs inside scripts/test.sh as part of `cargo test` (tests/faults.rs and
# tests/fake_broker.rs). Fuzz-style tests: FUZZ_CASES=200000 cargo test --release --test fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
profile=(--release)
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --debug) profile=() ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "faults: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

if [ -z "${ROCKETMQ_BIN_DIR:-}" ]; then
  ROCKETMQ_BIN_DIR="$(scripts/install-rocketmq.sh | tail -n 1)"
  export ROCKETMQ_BIN_DIR
fi

out_dir=target/faults
mkdir -p "$out_dir"
log="$out_dir/output.log"
report="$out_dir/report.md"

if [ "$quick" = 1 ]; then
  mode="quick (default sizes)"
  unset FAULTS_FULL
else
  mode="full (FAULTS_FULL=1)"
  export FAULTS_FULL=1
fi

started=$(date +%s)
status=0
cargo test "${profile[@]}" --locked --test faults --test fake_broker -- --test-threads=1 --nocapture \
  2>&1 | tee "$log" || status=$?
elapsed=$(( $(date +%s) - started ))

{
  echo "# Fault suite report"
  echo
  echo "- mode: $mode"
  echo "- build: ${profile[*]:-debug}"
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- wall time: ${elapsed} s"
  echo "- result: $([ "$status" = 0 ] && echo passed || echo "FAILED (exit $status), see $log")"
  echo
  echo "| scenario | produced | delivered | duplicated | lost | dlq | max_rss_kib |"
  echo "|---|---|---|---|---|---|---|"
  # libtest may print "test <name> ... " in front of a line, hence -o rather than ^.
  grep -oE 'scenario=[^ ]+ produced=[0-9]+ delivered=[0-9]+ duplicated=[0-9]+ lost=[0-9]+ dlq=[0-9]+ max_rss_kib=[0-9]+' "$log" | grep -v '^detail' | sed -E \
    's/^scenario=([^ ]+) produced=([0-9]+) delivered=([0-9]+) duplicated=([0-9]+) lost=([0-9]+) dlq=([0-9]+) max_rss_kib=([0-9]+).*/| \1 | \2 | \3 | \4 | \5 | \6 | \7 |/'
  echo
  echo "Details:"
  echo
  grep -oE 'detail scenario=.*' "$log" | sed -E 's/^detail /- /'
  echo
  echo "Failures:"
  echo
  grep -E "^---- |panicked at" "$log" | sed -E 's/^/    /' || echo "    none"
} >"$report"

echo
echo "report: $report"
cat "$report"
exit "$status"
