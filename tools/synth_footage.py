#!/usr/bin/env python3
"""Generate labelled conveyor footage: OUT/footage.avi (MJPG), OUT/calibration.yaml, OUT/labels.jsonl.

    tools/synth_footage.py --out DIR [--width 1280 --height 720 --fps 15 --seconds 60]
        [--belt-speed 150 --mm-per-px 0.25 --direction +x --span 4 12 | --calibration FILE]
        [--bunches N] [--spider-fraction 0.5] [--seed 0] [--real ../shared/realdata [--split train|holdout|fit|val]]

labels.jsonl: one line per bunch, {"bunch_id", "spider", "spider_span_mm", "track": [[frame, x1, y1, x2, y2],
...], "spider_track": [...]} (frame f is at f / fps seconds). Same seed, same output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import ValidationError

from inspector.config import DEFAULT_CALIBRATION, Calibration, load_calibration
from inspector.errors import InspectorError
from inspector.synth.footage import generate_footage
from inspector.synth.real import SPLITS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = DEFAULT_CALIBRATION
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--seconds", type=float, help="length (default 60, or what --bunches needs)")
    p.add_argument("--calibration", type=Path, help="calibration file; overrides the four options below")
    p.add_argument("--belt-speed", type=float, default=d.belt_speed_mm_s, help="mm/s")
    p.add_argument("--mm-per-px", type=float, default=d.mm_per_px)
    p.add_argument("--direction", choices=("+x", "-x", "+y", "-y"), default=d.belt_direction)
    p.add_argument(
        "--span",
        type=float,
        nargs=2,
        default=list(d.spider_span_mm),
        metavar=("MIN", "MAX"),
        help="spider leg span range, mm",
    )
    p.add_argument("--bunches", type=int, help="number of bunches (default: keep the belt busy)")
    p.add_argument("--spider-fraction", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", type=Path, help="realdata folder: cut bunches and spiders out of real photos")
    p.add_argument(
        "--split",
        choices=SPLITS,
        help="photos (with --real): train (default; = fit + val), holdout (final evaluation only), fit / val "
        "(photo-disjoint parts of train)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.split is not None and args.real is None:
            raise InspectorError("--split chooses real photos: give --real DIR too (procedural footage uses none)")
        if args.calibration:
            cal = load_calibration(args.calibration)
        else:
            try:
                cal = Calibration(
                    mm_per_px=args.mm_per_px,
                    belt_direction=args.direction,
                    belt_speed_mm_s=args.belt_speed,
                    camera_to_ejector_mm=DEFAULT_CALIBRATION.camera_to_ejector_mm,
                    spider_span_mm=tuple(args.span),
                )
            except ValidationError as exc:
                msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise InspectorError(f"bad calibration option: {msg}") from None
        seconds = args.seconds
        if seconds is None:
            if args.bunches is None:
                seconds = 60.0
            else:
                # room for every bunch: lead-in, bunches and gaps (upper bounds), and one frame width
                pitch_mm = 220.0 + 160.0
                seconds = 0.6 + (args.bunches * pitch_mm + args.width * cal.mm_per_px) / cal.belt_speed_mm_s
        t0 = time.perf_counter()
        video = generate_footage(
            args.out,
            width=args.width,
            height=args.height,
            fps=args.fps,
            seconds=seconds,
            calibration=cal,
            n_bunches=args.bunches,
            spider_fraction=args.spider_fraction,
            seed=args.seed,
            real_dir=args.real,
            split=args.split or "train",
        )
        dt = time.perf_counter() - t0
    except InspectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_frames = round(seconds * args.fps)
    n_lines = sum(1 for _ in (args.out / "labels.jsonl").open())
    print(f"{video}: {n_frames} frames, {n_lines} bunches, {dt:.1f} s ({n_frames / dt:.0f} frames/s incl. setup)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
