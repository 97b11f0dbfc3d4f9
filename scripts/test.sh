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
# rust-toolchain.toml names 1.95.0. Where no toolchain can be downloaded but the machine's
# stable one is that version, register it under the pinned name instead of failing at the
# first cargo call.
# A link made so follows stable: after stable moves on, the pinned name would run another
# version, so the version itself is checked, not only that the name runs.
pinned="$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)"
version_of() { rustup run "$1" rustc --version 2>/dev/null | cut -d' ' -f2 || true; }
if command -v rustup >/dev/null 2>&1 && [ "$(version_of "$pinned")" != "$pinned" ]; then
  if [ "$(version_of stable)" = "$pinned" ]; then
    # `rustup toolchain link` refuses names that look like versions; rustup finds a toolchain
    # by its directory, so a symbolic link under the pinned name does it.
    host="$(rustup run stable rustc -vV | sed -n 's/^host: //p')"
    toolchains="${RUSTUP_HOME:-$HOME/.rustup}/toolchains"
    echo "using the installed stable toolchain ($pinned) as $pinned-$host"
    ln -sfn "$toolchains/stable-$host" "$toolchains/$pinned-$host"
  else
    link="${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$pinned-$(rustup run stable rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)"
    echo "toolchain $pinned (rust-toolchain.toml) is not installed (or its name runs" \
      "$(version_of "$pinned")): rustup toolchain install $pinned" >&2
    if [ -L "$link" ]; then
      echo "first remove $link: it is a link to another toolchain, which an install would update" >&2
    fi
    exit 1
  fi
fi
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

