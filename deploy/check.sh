#!/usr/bin/env bash
# Offline validation of deploy/: renders the kustomizations, validates every object, checks Pod
# Security "restricted", base64 fields, generated files, the Grafana dashboard's metrics and the
# Dockerfile. Needs no cluster and no container engine; installs its pinned tools once into
# target/deploy-check (deploy/scripts/tools.sh; override with DEPLOY_TOOLS=dir). Prints one line
# per check and exits non-zero if any check fails.
#
#   deploy/check.sh            all checks
#   KUBE_VERSIONS=1.33.0 deploy/check.sh
#
# Kubernetes versions validated against: $KUBE_VERSIONS (default 1.31.0 and 1.37.0, the oldest
# we support and the newest kubernetes-validate knows). Regenerate generated files with
# deploy/generate.sh.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
KUBE_VERSIONS="${KUBE_VERSIONS:-1.31.0,1.37.0}"

# shellcheck source=deploy/scripts/tools.sh
. deploy/scripts/tools.sh
work=$(mktemp -d -t ca-server-deploy-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
# check NAME COMMAND...: runs COMMAND, prints one line, and on failure its output indented.
check() {
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then
    printf 'ok    %s\n' "$name"
    passed=$((passed + 1))
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$work/out" | head -n 60
    failed=$((failed + 1))
  fi
}
finish() {
  printf 'deploy-check: %d passed, %d failed\n' "$passed" "$failed"
  [ "$failed" -eq 0 ]
  exit $?
}

check "tools: pinned kubectl, kubernetes-validate, hadolint, @kubernetes-models (target/deploy-check)" tools_setup
if [ "$failed" -ne 0 ]; then finish; fi

# --- render ------------------------------------------------------------------------------------
render() { # render NAME DIR: kubectl kustomize DIR > $work/NAME.yaml
  "$kubectl" kustomize "$2" >"$work/$1.yaml"
}
# Kustomizations that read ca-server's bundle.pem get a throwaway test certificate.
with_test_bundle() { # with_test_bundle NAME DIR
  rm -rf "$work/src-$1" && cp -r "$2" "$work/src-$1" &&
    cp deploy/testdata/test-bundle.pem "$work/src-$1/bundle.pem" && render "$1" "$work/src-$1"
}
check "kustomize: overlays/single renders" render single deploy/kustomize/overlays/single
check "kustomize: overlays/ha renders" render ha deploy/kustomize/overlays/ha
check "kustomize: cert-manager issuers render (test bundle.pem)" with_test_bundle cert-manager deploy/cert-manager
check "kustomize: examples/linkerd renders (test bundle.pem)" with_test_bundle linkerd deploy/examples/linkerd

renders=()
for n in single ha cert-manager linkerd; do
  [ -s "$work/$n.yaml" ] && renders+=("$work/$n.yaml")
done
# Plain example files (not kustomizations, not Helm values) are objects to validate as well.
mapfile -t plain < <(find deploy/cert-manager deploy/examples deploy/kubernetes -name '*.yaml' \
  ! -name kustomization.yaml ! -name '*values*.yaml' | sort)
objects=("${renders[@]}" "${plain[@]}")

# --- generated files ---------------------------------------------------------------------------
check "generated: PrometheusRule is up to date (deploy/scripts/gen-prometheusrule.py --check)" \
  "$py" deploy/scripts/gen-prometheusrule.py --check
check "generated: PrometheusRule spec.groups equal deploy/prometheus/ca-server-rules.yaml" \
  "$py" deploy/scripts/validate.py rules deploy/prometheus/ca-server-rules.yaml \
  deploy/kustomize/components/monitoring/prometheusrule.yaml
rendered_file_current() {
  [ -s "$work/single.yaml" ] || { echo "overlays/single did not render"; return 1; }
  grep -v '^#' deploy/kubernetes/ca-server.yaml | diff -u - "$work/single.yaml" ||
    { echo "deploy/kubernetes/ca-server.yaml is stale: run deploy/generate.sh"; return 1; }
}
check "generated: deploy/kubernetes/ca-server.yaml is the rendered single overlay" rendered_file_current

# --- Grafana dashboard -------------------------------------------------------------------------
# Metric names come from ca-server/src/metrics.rs itself (deploy/scripts/check_dashboard.py).
dashboard_check="grafana: dashboard JSON, unique panel ids, \${datasource} everywhere, every metric exported by metrics.rs"
if command -v promtool >/dev/null; then
  dashboard_check+=", PromQL parses (promtool check rules)"
else
  dashboard_check+=" (no promtool: PromQL syntax not checked)"
fi
check "$dashboard_check" "$py" deploy/scripts/check_dashboard.py deploy/grafana/ca-server-dashboard.json

# --- objects -----------------------------------------------------------------------------------
check "config: kustomize/base/config.toml parses and uses only known keys" \
  "$py" deploy/scripts/validate.py config deploy/kustomize/base/config.toml
check "overlays/single: StatefulSet of 1, PVC data dir, headless Service, probes, ports" \
  "$py" deploy/scripts/validate.py shape single "$work/single.yaml"
check "overlays/ha: Deployment of 3, database and CA Secrets, PDB 2, spread" \
  "$py" deploy/scripts/validate.py shape ha "$work/ha.yaml"
check "kubernetes-validate --strict (k8s ${KUBE_VERSIONS}): every built-in object" \
  "$py" deploy/scripts/validate.py builtin "$KUBE_VERSIONS" "${objects[@]}"
crds() {
  "$py" deploy/scripts/validate.py crds "$work/crds.json" "${objects[@]}" &&
    cp deploy/scripts/validate-crds.mjs "$nodedir/" && node "$nodedir/validate-crds.mjs" "$1" "$work/crds.json"
}
check "cert-manager and Prometheus Operator objects: @kubernetes-models validate()" crds schema
check "cert-manager and Prometheus Operator objects: no fields their CRDs lack (tsc)" crds fields
check "base64: every caBundle, Secret data and ConfigMap binaryData decodes (caBundle to PEM)" \
  "$py" deploy/scripts/validate.py base64 "${objects[@]}"
check "PEM: trust-anchor ConfigMaps (*.crt, *.pem keys) hold certificates" \
  "$py" deploy/scripts/validate.py pem "${objects[@]}"
check "Pod Security restricted: every pod template (deploy/scripts/pod_security.py)" \
  "$py" deploy/scripts/validate.py pod-security "${objects[@]}"
check "pods: read-only root filesystem, cpu/memory requests and limits, tagged image" \
  "$py" deploy/scripts/validate.py pod-policy "${objects[@]}"
helm_values() {
  for f in deploy/examples/*/*values*.yaml; do
    "$py" -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); assert isinstance(d, dict) and "app" in d, "no app: section"' "$f" ||
      { echo "$f"; return 1; }
  done
}
check "examples: Helm values files parse (istio-csr, csi-driver-spiffe)" helm_values

# --- image -------------------------------------------------------------------------------------
check "hadolint: deploy/Dockerfile" "$hadolint" --failure-threshold info deploy/Dockerfile
dockerignore() {
  for p in '!Cargo.toml' '!Cargo.lock' '!ca-server/' '!ca-store/' '!conformance/' '!migrations/'; do
    grep -qxF -- "$p" .dockerignore || { echo ".dockerignore lacks $p"; return 1; }
  done
  for d in ca-server ca-store conformance migrations; do
    grep -q "^COPY $d $d\$" deploy/Dockerfile || { echo "Dockerfile does not copy $d"; return 1; }
  done
}
check "image: .dockerignore admits exactly what the Dockerfile copies" dockerignore

finish
