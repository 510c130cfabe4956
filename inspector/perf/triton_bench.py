"""Many cameras, one server: tiles/s of N clients on one Triton server against one local backend, on this machine.

    inspector bench --triton HOST:PORT --model-name NAME [--protocol grpc|http] [--clients 1,2,4] [--seconds 20]

Each client is its own process (as each camera's daemon is) holding a `TritonModel` and sending batches of
`batch` random tiles back to back for `seconds`, all starting together (a barrier after connecting and one warm-up
batch). Throughput = tiles whose answer came back inside the window / the window, summed over the clients; also the
time per batch (p50, p99) a client saw. The local row is the same loop on `Model` (onnxruntime here, `threads`) in
one process: what one daemon gets without a server. Run the local row on the server's machine with the server idle
(it is measured first), or the two compete for the same cores. `tools/triton-bench.sh` starts a PyTriton server
and runs this; figures in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import numpy as np

from inspector.config import TritonConfig
from inspector.errors import InspectorError
from inspector.model import Model

BARRIER_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Row:
    backend: str  # "local" or "triton grpc" / "triton http"
    clients: int
    tiles: int
    window_s: float
    tiles_per_s: float
    batch_p50_ms: float
    batch_p99_ms: float


def _loop(model: Model, batch: int, seconds: float, seed: int, barrier: Barrier | None) -> tuple[int, list[float]]:
    """Warm up, wait for the others, then infer `batch` tiles back to back for `seconds`: (tiles, batch times)."""
    size = model.manifest.input.size
    tiles = np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    model.infer(tiles)
    if barrier is not None:
        barrier.wait(BARRIER_TIMEOUT_S)
    done, times = 0, []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        model.infer(tiles)
        stop = time.perf_counter()
        if stop <= end:
            done += batch
            times.append(stop - start)
    return done, times


def _client(
    config: TritonConfig, manifest_of: Path, batch: int, seconds: float, seed: int, barrier: Barrier, out: Any
) -> None:
    from inspector.model_triton import TritonModel

    try:
        with TritonModel(config, manifest_of, batch) as model:
            out.put(("ok", *_loop(model, batch, seconds, seed, barrier)))
    except InspectorError as exc:  # a user's error (server, model, config): the parent says it in one line
        barrier.abort()
        out.put(("error", str(exc), []))
    except Exception as exc:
        barrier.abort()
        out.put(("error", f"a Triton client failed: {type(exc).__name__}: {exc}", []))


def _row(backend: str, clients: int, results: list[tuple[int, list[float]]], seconds: float) -> Row:
    tiles = sum(r[0] for r in results)
    times_ms = np.asarray([t * 1000 for r in results for t in r[1]], np.float64)
    p50, p99 = (float(np.percentile(times_ms, q)) for q in (50, 99)) if times_ms.size else (float("nan"),) * 2
    return Row(backend, clients, tiles, seconds, tiles / seconds, p50, p99)


def run_local(model_path: Path, batch: int, seconds: float, threads: int) -> Row:
    with Model(model_path, providers=["cpu"], threads=threads, batch_size=batch) as model:
        result = _loop(model, batch, seconds, 0, None)
    return _row(f"local (threads {threads or 'all'})", 1, [result], seconds)


def run_clients(config: TritonConfig, manifest_of: Path, clients: int, batch: int, seconds: float) -> Row:
    """`clients` processes against one server, together; a client that fails raises with its message."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(clients)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(config, manifest_of, batch, seconds, i, barrier, out), daemon=True)
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=BARRIER_TIMEOUT_S + seconds + 60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [r[1] for r in results if r[0] == "error"]
    if errors:
        raise InspectorError(errors[0])
    return _row(f"triton {config.protocol}", clients, [(r[1], r[2]) for r in results], seconds)


def run(
    config: TritonConfig,
    model_path: Path,
    clients: list[int],
    batch: int,
    seconds: float,
    threads: int,
    local: bool = True,
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    rows = [run_local(model_path, batch, seconds, threads)] if local else []
    rows += [run_clients(config, model_path, n, batch, seconds) for n in clients]
    return {
        "server": f"{config.protocol}://{config.url}/{config.model_name}",
        "batch": batch,
        "cpus": os.cpu_count(),
        "load_1min": [load_before, os.getloadavg()[0]],  # other work on the machine: before, after
        "rows": [asdict(r) for r in rows],
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"server {result['server']}, batch {result['batch']} random tiles per request; {result['cpus']} CPUs, "
        f"load average {result['load_1min'][0]:.1f} before, {result['load_1min'][1]:.1f} after",
        f"{'backend':<22} {'clients':>7} {'tiles/s':>9} {'per client':>10} {'batch p50 ms':>13} {'p99 ms':>8}",
    ]
    local = next((r for r in result["rows"] if r["backend"].startswith("local")), None)
    for r in result["rows"]:
        lines.append(
            f"{r['backend']:<22} {r['clients']:>7} {r['tiles_per_s']:>9.1f} {r['tiles_per_s'] / r['clients']:>10.1f} "
            f"{r['batch_p50_ms']:>13.1f} {r['batch_p99_ms']:>8.1f}"
        )
    if local is not None and local["tiles_per_s"] > 0:
        best = max((r for r in result["rows"] if r is not local), key=lambda r: r["tiles_per_s"], default=None)
        if best is not None:
            ratio = best["tiles_per_s"] / local["tiles_per_s"]
            lines.append(f"best server row / local: {ratio:.2f} ({best['clients']} clients)")
    return "\n".join(lines)
