#!/usr/bin/env bash
# A time-boxed fuzz pass over the parsers of untrusted input (tests/fuzz.rs):
#   scripts/fuzz.sh [seconds per parser, default 60]
# Not part of CI. The test profile, so it starts without a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_SECONDS="${1:-60}"
exec cargo test --test fuzz -- --ignored --test-threads 1 --nocapture
