#!/usr/bin/env bash
# Many cameras, one server, measured on this machine: builds the Triton venv (tools/triton-venv.sh), serves the
# demo model through PyTriton (deploy/triton/pytriton_serve.py, onnxruntime), then runs
#   inspector bench --triton ... --clients 1,2,4   (grpc, then http with one client)
# and stops the server. Extra arguments go to both bench runs (e.g. --seconds 30 --threads 1). JSON: $OUT/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_PY=$(bash tools/triton-venv.sh)/bin/python
INSPECTOR=${INSPECTOR:-.venv/bin/inspector}
OUT=${OUT:-$(mktemp -d)}
# three different free ports, all held open while choosing
read -r HTTP GRPC METRICS < <("$VENV_PY" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
LOG="$OUT/server.log"
setsid "$VENV_PY" deploy/triton/pytriton_serve.py --model demo_vgg16=inspector/models/demo.onnx \
  --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill -TERM -- -$SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  grep -q '^READY ' "$LOG" && break
  kill -0 $SERVER 2>/dev/null || { tail -20 "$LOG" >&2; echo "triton-bench: the server did not start" >&2; exit 1; }
  sleep 0.5
done
grep -q '^READY ' "$LOG" || { echo "triton-bench: the server was not ready in 300 s" >&2; exit 1; }
"$INSPECTOR" bench --triton "127.0.0.1:$GRPC" --protocol grpc --clients 1,2,4 --json "$OUT/grpc.json" "$@"
"$INSPECTOR" bench --triton "127.0.0.1:$HTTP" --protocol http --clients 1 --no-local --json "$OUT/http.json" "$@"
echo "triton-bench: figures in $OUT"
