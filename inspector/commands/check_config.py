"""`inspector check-config FILE [--frame WxH]`: validate a daemon config (or a calibration file with --calibration),
and refuse one that cannot work (`pipeline.plan_problems`: ejector too close, degenerate scale or speed, tiles
below the model's minimum; the field of view only with --frame)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.config import calibration_for, load_calibration, load_config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-config", help="validate a config file; exit 0 when valid, 1 when not")
    p.add_argument("file", type=Path, help="daemon config YAML")
    p.add_argument("--calibration", action="store_true", help="FILE is a calibration file")
    p.add_argument(
        "--frame", type=_frame_wh, metavar="WxH", help="the camera's frame size: check the tile plan and field of view"
    )
    p.set_defaults(func=run)


def _frame_wh(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the frame size as WxH, e.g. 1280x720") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive")
    return w, h


def run(args: argparse.Namespace) -> int:
    if args.calibration:
        load_calibration(args.file)
    else:
        config = load_config(args.file)
        calibration = calibration_for(config)
        from inspector.model import load_manifest
        from inspector.pipeline import plan_problems

        load_manifest(config.model.path)
        problems = plan_problems(config, calibration, args.frame)
        for problem in problems:
            print(f"{args.file}: config cannot work: {problem}", file=sys.stderr)
        if problems:
            return 1
        if args.frame is None:
            print(f"{args.file}: note: field of view and tile fit not checked: give --frame WxH", file=sys.stderr)
    print(f"{args.file}: OK")
    return 0
