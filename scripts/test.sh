#!/usr/bin/env bash
# The project's test command (README "Tests"; .ci/run calls it).
#
# 1. installs the real RocketMQ name server and broker when missing (about 12 minutes the
#    first time on 2 cores, skipped afterwards),
# 2. checks formatting and lints,
# 3. runs every test: unit, property, component and integration tests against the real broker,
#    the daemon end to end (webhook signatures and CloudEvents checked with the Python reference
#    libraries, installed into .tools/venv once), the short fault suite and fuzz-style tests,
# 4. checks the deployment files (Dockerfile, compose, Kubernetes, dashboard, example configs).
#
# Integration tests find the broker through ROCKETMQ_BIN_DIR, which this script exports.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Rust toolchain (pinned in rust-toolchain.toml)"
# Installs the pinned toolchain when missing, or registers stable under its name (see there);
# shared with scripts/demo.sh.
scripts/toolchain.sh
cargo --version

step "RocketMQ name server and broker (installed once, then reused)"
ROCKETMQ_BIN_DIR="$(scripts/install-rocketmq.sh | tail -n 1)"
export ROCKETMQ_BIN_DIR
echo "using $ROCKETMQ_BIN_DIR"

step "Python verifiers for the webhook tests (standardwebhooks, cloudevents; installed once)"
ROCKETMQ_TEST_PYTHON="$(scripts/python-tools.sh | tail -n 1)"
export ROCKETMQ_TEST_PYTHON
echo "using $ROCKETMQ_TEST_PYTHON"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet

step "Deployment files: hadolint, compose, Kubernetes schemas, dashboard JSON, check-config on config/"
scripts/check-deploy.sh

step "cargo test --no-run (builds the test binaries)"
cargo test --locked --no-run

step "Disk headroom for the brokers' stores (checked after the build has used its share)"
scripts/disk-headroom.sh "${ROCKETMQ_TEST_SCRATCH_DIR:-${TMPDIR:-/tmp}}"

step "cargo test (unit, property, component and integration tests)"
# Test binaries run one after another (cargo's default); inside one binary tests run on two
# threads so broker-backed tests do not starve each other on a 2-core machine.
# A time limit makes a hang a readable failure inside CI's limit (the suite takes about 10 min).
# Only when asked for (.ci/run sets ROCKETMQ_TEST_TIMEOUT, and CI set in the environment asks
# for 45m): `timeout` runs the tests in a process group of their own, out of reach of a
# terminal's Ctrl-C.
test_timeout="${ROCKETMQ_TEST_TIMEOUT:-}"
if [ -z "$test_timeout" ] && [ -n "${CI:-}" ]; then test_timeout=45m; fi
limit=()
if [ -n "$test_timeout" ]; then limit=(timeout "$test_timeout"); fi
status=0
# `${limit[@]+...}`: an empty array is "unbound" under `set -u` before bash 4.4.
${limit[@]+"${limit[@]}"} cargo test --locked --no-fail-fast -- --test-threads=2 || status=$?
if [ "$status" -eq 124 ] && [ -n "$test_timeout" ]; then
  echo "cargo test did not finish within $test_timeout (ROCKETMQ_TEST_TIMEOUT); a test hangs" >&2
fi
[ "$status" -eq 0 ] || exit "$status"

