#!/usr/bin/env bash
# Checks that DIR's file system leaves the RocketMQ broker room to run.
#
# The broker refuses to start, and later to accept writes, once its store's file system is 90 %
# used, measured as (total - available) / total: blocks reserved for root count as used, so
# `df`'s Use% can read 72 % while the broker sees 89.6 % (CI failed that way). From 85 % it
# deletes its oldest commit-log files early, retention or not, so a test's messages can vanish
# before they are consumed. This prints the broker's figure, warns from 85 %, and exits 1 with
# an explanation from 90 %.
#
#   scripts/disk-headroom.sh DIR
set -euo pipefail

dir="${1:?usage: $0 DIR}"
stats="$(stat -f -c '%b %a %S' "$dir" 2>/dev/null)" || stats=""
read -r total available block_size <<<"$stats" || true
case "$total$available$block_size" in
  "" | *[!0-9]*)
    echo "disk-headroom: cannot read the file system of '$dir'; not checked" >&2
    exit 0
    ;;
esac
if [ "$total" -eq 0 ]; then
  exit 0
fi
# Tenths of a percent, in integer arithmetic.
used=$(( (total - available) * 1000 / total ))
figure="$((used / 10)).$((used % 10)) %"
free_gib=$(( available * block_size / 1024 / 1024 / 1024 ))
if [ "$used" -ge 900 ]; then
  cat >&2 <<MSG
disk-headroom: the file system of '$dir' is $figure used counting reserved blocks ($free_gib GiB
available). The RocketMQ broker refuses to start at 90 %, so every broker-backed step would fail.
Free space there (old target/ directories, target/bench/rocketmq) or point the store elsewhere
(ROCKETMQ_TEST_SCRATCH_DIR for the tests, --dir for scripts/rocketmq-local.sh).
MSG
  exit 1
fi
if [ "$used" -ge 850 ]; then
  echo "disk-headroom: warning: '$dir' is $figure used counting reserved blocks ($free_gib GiB available); from 85 % the broker deletes old commit-log files early, at 90 % it stops" >&2
else
  echo "disk-headroom: '$dir' is $figure used counting reserved blocks ($free_gib GiB available); the broker needs under 90 %" >&2
fi
