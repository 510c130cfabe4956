"""`inspector bench`: measured speed against the limits, side by side with baselines (inspector/perf/bench.py).

With --triton: tiles/s of 1, 2, 4 ... clients on one Triton server against one local backend
(inspector/perf/triton_bench.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from inspector.config import DEMO_MODEL
from inspector.errors import InspectorError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure inference, FAM cost, throughput, latency and memory against baselines; print a table",
    )
    p.add_argument("--json", type=Path, help="write every figure as JSON")
    p.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "inspector-bench",
        help="cache for footage and exported models",
    )
    p.add_argument("--model", type=Path, default=DEMO_MODEL, help="model to bench (default: the demo model)")
    p.add_argument("--quick", action="store_true", help="CI smoke: tiny inputs, seconds")
    p.add_argument("--no-vgg16", action="store_true", help="skip full-width VGG16 (export needs torch)")
    p.add_argument("--no-int8", action="store_true", help="skip int8 quantisation")
    p.add_argument("--seed", type=int, default=0)
    t = p.add_argument_group("many cameras, one server (instead of the sections above)")
    t.add_argument(
        "--triton", metavar="HOST:PORT", help="measure clients of this Triton server against the local backend"
    )
    t.add_argument("--model-name", default="demo_vgg16", help="the model's name on the server (default demo_vgg16)")
    t.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    t.add_argument("--clients", default="1,2,4", help="client counts to run, comma-separated (default 1,2,4)")
    t.add_argument("--seconds", type=float, default=20.0, help="measured window per row (default 20)")
    t.add_argument("--batch", type=int, default=16, help="tiles per request (default 16)")
    t.add_argument("--threads", type=int, default=0, help="local backend's onnxruntime threads (0: all)")
    t.add_argument("--no-local", action="store_true", help="skip the local row (another machine's server)")
    p.set_defaults(func=run)


def run_triton(args: argparse.Namespace) -> int:
    from inspector.model_triton import config_from_options
    from inspector.perf import triton_bench

    what = "inspector bench --triton"
    config = config_from_options(
        what, url=args.triton, model_name=args.model_name, protocol=args.protocol, timeout_s=30.0, start_wait_s=0.0
    )
    try:
        clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        clients = []
    if not clients or min(clients) < 1 or args.seconds <= 0 or args.batch < 1:
        raise InspectorError(f"{what}: --clients like 1,2,4, --seconds > 0, --batch >= 1")
    result = triton_bench.run(config, args.model, clients, args.batch, args.seconds, args.threads, not args.no_local)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(triton_bench.format_table(result))
    return 0


def run(args: argparse.Namespace) -> int:
    from inspector.perf.bench import Settings, format_table, run_bench

    if args.triton:
        return run_triton(args)

    try:
        import onnx  # noqa: F401  (FLOP counting and the logits-only copy read the graph)
    except ImportError:
        raise InspectorError(
            "inspector bench needs the onnx package: pip install 'grape-spider-inspector[dev]'"
        ) from None
    if not args.model.is_file():
        raise InspectorError(f"{args.model}: model not found; give an .onnx with its manifest")
    result = run_bench(Settings(args.quick, args.work, args.model, not args.no_vgg16, not args.no_int8, args.seed))
    if args.json:  # first: the figures survive a formatting problem
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    return 0
