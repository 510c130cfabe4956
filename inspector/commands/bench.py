"""`inspector bench`: measured speed against the limits, side by side with baselines (inspector/perf/bench.py)."""

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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspector.perf.bench import Settings, format_table, run_bench

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
