#!/usr/bin/env bash
# The project's test command (README "Tests"; .ci/run calls it).
#
# 1. installs the real RocketMQ name server and broker when missing (about 18 minutes the
#    first time on 2 cores, skipped afterwards),
# 2. checks formatting and lints,
# 3. runs every test: unit, property, component and integration tests against the real broker.
#
# Integration tests find the broker through ROCKETMQ_BIN_DIR, which this script exports.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "RocketMQ name server and broker (installed once, then reused)"
ROCKETMQ_BIN_DIR="$(scripts/install-rocketmq.sh | tail -n 1)"
export ROCKETMQ_BIN_DIR
echo "using $ROCKETMQ_BIN_DIR"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test (unit, property, component and integration tests)"
# Test binaries run one after another (cargo's default); inside one binary tests run on two
# threads so broker-backed tests do not starve each other on a 2-core machine.
cargo test --locked -- --test-threads=2
