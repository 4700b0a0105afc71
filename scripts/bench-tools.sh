#!/usr/bin/env bash
# Installs what the benchmarks compare against (docs/benchmarks.md):
# nginx from Debian's packages, for `lizards bench gateway`.
set -euo pipefail
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    echo "installing nginx (Debian package)" >&2
    apt-get install -y --no-install-recommends nginx >&2
fi
echo "nginx: $(/usr/sbin/nginx -v 2>&1)" >&2
