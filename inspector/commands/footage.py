"""`inspector footage`: generate labelled conveyor footage: OUT/footage.avi (MJPG), OUT/calibration.yaml,
OUT/labels.jsonl.

    inspector footage --out DIR [--width 1280 --height 720 --fps 15 --seconds 60]
        [--belt-speed 150 --mm-per-px 0.25 --direction +x --span 4 12 | --calibration FILE]
        [--bunches N] [--spider-fraction 0.5] [--seed 0] [--real ../shared/realdata [--split train|holdout|fit|val]]

labels.jsonl: one line per bunch, {"bunch_id", "spider", "spider_span_mm", "track": [[frame, x1, y1, x2, y2],
...], "spider_track": [...]} (frame f is at f / fps seconds). Same seed, same output. The job lives in
:mod:`inspector.synth.jobs`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.cliopts import add_command
from inspector.config import DEFAULT_CALIBRATION
from inspector.synth.real import SPLITS

HELP = "generate labelled conveyor footage (video, calibration, bunch labels)"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = DEFAULT_CALIBRATION
    p = add_command(sub, "footage", HELP, __doc__, run)
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


def run(args: argparse.Namespace) -> int:
    from inspector.synth.jobs import make_footage

    return make_footage(args)
