#!/usr/bin/env bash
# Prints a secrets file with fresh random values, for compose:
#   scripts/secrets.sh > compose/secrets.env
# Lizards refuses to start with the placeholders the repository ships
# (docs/security.md), so a stack never runs on published secrets.
set -euo pipefail
random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
cat <<END
JWT_SECRET=$(random)
REGISTRY_TOKEN=$(random)
INGEST_TOKEN=$(random)
ADMIN_EMAIL=admin@lizards.local
ADMIN_PASSWORD=$(random)
GF_SECURITY_ADMIN_PASSWORD=$(random)
END
