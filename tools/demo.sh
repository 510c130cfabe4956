#!/usr/bin/env bash
# Quick start, command 1: set up a virtual environment and run the daemon on the embedded defaults —
# the demo model, generated conveyor footage and the local actuator simulator. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q -e '.[cpu]'
exec "$VENV/bin/inspector" demo "$@"
