#!/usr/bin/env bash
# Runs the whole suite N times (default 5) and reports every test that
# failed at least once, with its count, and each run's wall time:
#   eval "$(scripts/services.sh)" && scripts/flaky.sh 5
# Logs stay in $FLAKY_DIR (default target/flaky).
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
dir="${FLAKY_DIR:-target/flaky}"
mkdir -p "$dir"
cargo test --workspace --no-run >/dev/null 2>&1 || { echo "flaky.sh: the suite does not build" >&2; exit 2; }
for run in $(seq 1 "$runs"); do
  started=$(date +%s)
  scripts/test.sh --no-fail-fast >"$dir/run-$run.log" 2>&1
  status=$?
  echo "run $run: exit $status, $(( $(date +%s) - started )) s"
done
echo "tests that failed at least once (count):"
failures=$(grep -h -E '^test .* \.\.\. FAILED$' "$dir"/run-*.log | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | sort | uniq -c | sort -rn)
if [ -z "$failures" ]; then
  echo "  none in $runs runs"
else
  echo "$failures"
  exit 1
fi
