#!/usr/bin/env bash
# Installs what the browser tests drive (Debian's chromium and
# chromium-driver) when missing, and fails loudly with the reason.
set -euo pipefail

log() { printf '%s\n' "$*" >&2; }
fail() { log "browser.sh: $*"; exit 1; }

if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  command -v apt-get >/dev/null || fail "chromium/chromedriver missing and apt-get is not available"
  log "installing chromium and chromium-driver (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium chromium-driver >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q chromium chromium-driver >&2; } \
    || fail "apt-get could not install chromium chromium-driver"
fi
chromium --version >&2 || fail "chromium does not start"
chromedriver --version >&2 || fail "chromedriver does not start"
log "browser.sh: chromium and chromedriver are installed"
