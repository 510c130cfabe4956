#!/usr/bin/env bash
# The Triton Inference Server of the Triton tests and benchmarks: nvidia-pytriton (bundles Triton 2.51) with
# onnxruntime, in its own virtual environment made from Debian's /usr/bin/python3 (3.11). PyTriton's Python
# backend stub fails under other interpreters (pyenv builds: RLock._recursion_count; 3.12: no libpython3.12.so).
# Idempotent; prints the venv's path. Used by .ci/run; tests/test_triton.py finds the venv at the same place
# (or $INSPECTOR_TRITON_VENV).
set -euo pipefail
VENV=${INSPECTOR_TRITON_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/grape-spider-inspector/triton-venv}
PY=/usr/bin/python3
if [ ! -x "$PY" ]; then
  echo "triton-venv: $PY is missing (Debian package python3)" >&2
  exit 1
fi
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "triton-venv: $PY cannot make virtual environments (Debian package python3-venv)" >&2
  exit 1
fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pytriton, onnxruntime, numpy' >/dev/null 2>&1; then
  echo "$VENV"
  exit 0
fi
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
if ! "$VENV/bin/pip" install -q nvidia-pytriton onnxruntime numpy >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "triton-venv: could not install nvidia-pytriton onnxruntime numpy into $VENV" >&2
  exit 1
fi
echo "$VENV"
