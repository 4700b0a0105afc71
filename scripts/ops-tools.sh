#!/usr/bin/env bash
# Installs what the operability tests (tests/ops) run, when missing, and
# fails loudly with the reason:
#   promtool and prometheus  Debian's prometheus package (promtool checks and
#                            unit-tests the rules; a real Prometheus scrapes
#                            the platform through the registry's discovery)
#   docker-compose           Debian's docker-compose (`config` validates the
#                            compose file; no Docker engine needed)
#   kubernetes-validate      PyPI (validates k8s/ against the Kubernetes schemas)
#   openapi-spec-validator   PyPI (validates every service's /openapi.json)
set -euo pipefail

log() { printf '%s\n' "$*" >&2; }
fail() { log "ops-tools.sh: $*"; exit 1; }
KUBERNETES_VALIDATE_VERSION=1.37.0
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0

apt_install() {
  command -v apt-get >/dev/null || fail "$* missing and apt-get is not available"
  log "installing $* (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  # The prometheus package would start its own daemon; nothing here wants it.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends "$@" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "$@" >&2; } \
    || { rm -f /usr/sbin/policy-rc.d; fail "apt-get could not install $*"; }
  rm -f /usr/sbin/policy-rc.d
}

missing=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
if ! command -v kubernetes-validate >/dev/null; then
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI)"
  pip install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2 || fail "pip could not install kubernetes-validate"
fi

if ! command -v openapi-spec-validator >/dev/null; then
  log "installing openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION (PyPI)"
  pip install -q "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION" >&2 || fail "pip could not install openapi-spec-validator"
fi

promtool --version >&2 || fail "promtool does not run"
prometheus --version >&2 || fail "prometheus does not run"
docker-compose version >&2 || fail "docker-compose does not run"
kubernetes-validate --version >&2 || fail "kubernetes-validate does not run"
openapi-spec-validator --help >/dev/null || fail "openapi-spec-validator does not run"
log "ops-tools.sh: promtool, prometheus, docker-compose, kubernetes-validate and openapi-spec-validator are installed"
