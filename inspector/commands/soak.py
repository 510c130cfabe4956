"""`inspector soak`: the real daemon at twice the nominal frame rate against the actuator simulator
(inspector/perf/soak.py); exit status 1 when a check fails."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from inspector.config import DEMO_MODEL


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "soak",
        help="run the daemon at 2x nominal fps against the actuator simulator; check memory and reject accounting",
    )
    p.add_argument("--seconds", type=float, default=180.0, help="how long the daemon runs (default 180)")
    p.add_argument("--warmup-s", type=float, default=30.0, help="memory baseline starts after this (default 30)")
    p.add_argument("--fps", type=float, default=15.0, help="nominal frame rate (default 15)")
    p.add_argument("--factor", type=float, default=2.0, help="run at this multiple of the nominal rate (default 2)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--clip-s", type=float, default=30.0, help="length of the looped footage (default 30)")
    p.add_argument("--model", type=Path, default=DEMO_MODEL)
    p.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="decision threshold (default 0: every inspected bunch is rejected, the most reject traffic for the "
        "link; the computation is the same at any threshold); -1: the config default",
    )
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "inspector-soak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspector.perf.soak import SoakSettings, format_summary, run_soak

    settings = SoakSettings(
        model=args.model,
        work=args.work,
        seconds=args.seconds,
        warmup_s=args.warmup_s,
        fps=args.fps,
        factor=args.factor,
        width=args.width,
        height=args.height,
        clip_s=args.clip_s,
        threshold=None if args.threshold < 0 else args.threshold,
        seed=args.seed,
    )
    settings.check()
    result = run_soak(settings)
    print(format_summary(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0 if all(result.passed.values()) else 1
