#!/usr/bin/env bash
# The test suite on a busy machine: starts BUSY (default 4) CPU-bound processes, runs pytest RUNS (default 3) times
# in a row with the given arguments, and always stops the load again. Timing-sensitive tests must pass 3 of 3 here.
#   bash tools/busy_test.sh tests/test_supervisor.py tests/test_daemon.py
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
BUSY=${BUSY:-4}
RUNS=${RUNS:-3}
load=()
stop_load() {
  for pid in "${load[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${load[@]}"; do wait "$pid" 2>/dev/null || true; done
  load=()
}
trap stop_load EXIT
trap 'stop_load; exit 130' INT TERM
for _ in $(seq "$BUSY"); do
  "$VENV/bin/python" -c "while True: pass" &
  load+=($!)
done
for run in $(seq "$RUNS"); do
  echo "busy_test: run $run of $RUNS with $BUSY busy processes: pytest $*"
  if ! "$VENV/bin/python" -m pytest "$@"; then
    echo "busy_test: run $run of $RUNS failed with $BUSY busy processes" >&2
    exit 1
  fi
done
echo "busy_test: $RUNS of $RUNS runs passed with $BUSY busy processes"
