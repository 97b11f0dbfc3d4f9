#!/usr/bin/env bash
# Creates the Python virtual environment the daemon's end-to-end tests use as independent
# verifiers (tests/python/): `standardwebhooks` checks webhook signatures and `cloudevents`
# parses CloudEvents requests, so the tests do not only check our output with our own code.
#
# The environment lives in .tools/venv (git-ignored; override with ROCKETMQ_PYTHON_VENV). It is
# created once; later runs find both packages importable and skip the install.
# Prints the environment's python path on the last line of stdout (scripts/test.sh exports it as
# ROCKETMQ_TEST_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ROCKETMQ_PYTHON_VENV:-$PWD/.tools/venv}"
PY="$VENV/bin/python"
# Pinned: the cloudevents SDK says its API "might (and will) break with every update", and
# tests/python/parse_cloudevents.py uses the 2.x API (cloudevents.core.bindings.http).
STANDARDWEBHOOKS_VERSION=1.1.0
CLOUDEVENTS_VERSION=2.2.0
PACKAGES=("standardwebhooks==$STANDARDWEBHOOKS_VERSION" "cloudevents==$CLOUDEVENTS_VERSION")

# Installed from scripts/python-constraints.txt (every dependency pinned); a change to it
# reinstalls, as a change of the two versions does.
CONSTRAINTS="scripts/python-constraints.txt"
STAMP="$(sha256sum <"$CONSTRAINTS" | cut -c1-16)"

have() {
  [ -x "$PY" ] && [ "$(cat "$VENV/.constraints" 2>/dev/null)" = "$STAMP" ] &&
    "$PY" - "$STANDARDWEBHOOKS_VERSION" "$CLOUDEVENTS_VERSION" >/dev/null 2>&1 <<'PYTHON'
import sys
from importlib.metadata import version
import standardwebhooks.webhooks, cloudevents.core.bindings.http
assert version("standardwebhooks") == sys.argv[1] and version("cloudevents") == sys.argv[2]
PYTHON
}

if have; then
  echo "python tools already installed in $VENV" >&2
  echo "$PY"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
# A lock so two concurrent callers (parallel test binaries) do not install twice.
exec 9>"$(dirname "$VENV")/.python-tools.lock"
if ! flock -n 9; then
  echo "another install of the python tools is running; waiting for it..." >&2
  flock 9
fi
if have; then
  echo "$PY"
  exit 0
fi

echo "creating $VENV with ${PACKAGES[*]}" >&2
python3 -m venv "$VENV" >&2
"$PY" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS" "${PACKAGES[@]}" >&2
echo "$STAMP" >"$VENV/.constraints"
if ! have; then
  echo "the python tools were installed but do not import; see the pip output above" >&2
  exit 1
fi
echo "$PY"
