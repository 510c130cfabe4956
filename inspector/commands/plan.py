"""`inspector plan`: the tile plan a calibration gives — tile sizes, scales, tiles per frame with and without a mask."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from inspector.config import DEFAULT_CALIBRATION, Calibration, load_calibration
from inspector.errors import InspectorError
from inspector.tiling import describe_plan, plan_tiles, resolution_warnings, tile_scales


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="print the tile plan of a calibration (tile sizes, scales, tiles per frame)")
    p.add_argument("--calibration", type=Path, help="calibration YAML (embedded default when absent)")
    p.add_argument("--frame", default="1280x720", help="frame size WxH (default 1280x720)")
    p.add_argument(
        "--mask-fraction", type=float, default=0.4, help="share of the frame covered by produce (default 0.4)"
    )
    p.set_defaults(func=run)


def mask_band(frame_wh: tuple[int, int], fraction: float, calibration: Calibration) -> np.ndarray:
    """A produce mask covering `fraction` of the frame as one band along the belt (bunches in a row)."""
    w, h = frame_wh
    mask = np.zeros((h, w), bool)
    if calibration.travel_axis == 0:
        band = round(h * fraction)
        mask[(h - band) // 2 : (h - band) // 2 + band, :] = True
    else:
        band = round(w * fraction)
        mask[:, (w - band) // 2 : (w - band) // 2 + band] = True
    return mask


def plan_summary(calibration: Calibration, frame_wh: tuple[int, int], mask_fraction: float) -> list[str]:
    scales = tile_scales(calibration)
    full = plan_tiles(frame_wh, scales)
    masked = plan_tiles(frame_wh, scales, mask_band(frame_wh, mask_fraction, calibration))
    lines = [
        f"calibration: {calibration.mm_per_px} mm/px, spiders {calibration.spider_span_mm[0]}-"
        f"{calibration.spider_span_mm[1]} mm, frame {frame_wh[0]}x{frame_wh[1]}",
        *describe_plan(scales, calibration),
        f"tiles per frame: {len(full)} without a mask, {len(masked)} with a {100 * mask_fraction:.0f} % produce mask",
    ]
    return lines + [f"warning: {w}" for w in resolution_warnings(calibration)]


def run(args: argparse.Namespace) -> int:
    calibration = load_calibration(args.calibration) if args.calibration else DEFAULT_CALIBRATION
    try:
        w, h = (int(v) for v in args.frame.lower().split("x"))
    except ValueError:
        raise InspectorError(f"--frame {args.frame!r}: write the size as WIDTHxHEIGHT, e.g. 1280x720") from None
    if not 0 < args.mask_fraction <= 1:
        raise InspectorError(f"--mask-fraction {args.mask_fraction}: must be in (0, 1]")
    print("\n".join(plan_summary(calibration, (w, h), args.mask_fraction)))
    return 0
