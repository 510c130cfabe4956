"""The jobs behind `inspector tiles make` and `inspector footage`: check the options, build the asset source and
calibration, generate, write, and report one line.

Tile sets: DIR/tiles.npz (images, labels, boxes_xyxy, kinds) + DIR/meta.json (:mod:`inspector.synth.tiles`).
Footage: OUT/footage.avi (MJPG), OUT/calibration.yaml, OUT/labels.jsonl (:mod:`inspector.synth.footage`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
from pydantic import ValidationError

from inspector.cliopts import calibration_or_default, check_share
from inspector.config import DEFAULT_CALIBRATION, Calibration, load_calibration
from inspector.errors import InspectorError
from inspector.synth.footage import generate_footage, honest_calibration, make_source
from inspector.synth.tiles import TileSet, make_tile_set, mosaic, save_tile_set

DEFAULT_REAL = Path("../shared/realdata")
PREVIEW_TILES = 64  # tiles in each preview mosaic


def resolve_mode(args: argparse.Namespace) -> None:
    """Fill in ``args.mode``, ``args.real`` and ``args.split``; photo options with procedural mode are an error.

    (`--real DIR` without `--mode real` used to fall back to procedural tiles silently.)
    """
    photo_opts = [o for o, v in (("--real", args.real), ("--split", args.split)) if v is not None]
    if args.background_patches:
        photo_opts.append("--background-patches")
    if args.patches_per_seed:
        photo_opts.append("--patches-per-seed")
    if args.mode is None:
        args.mode = "real" if photo_opts else "procedural"
    if args.mode == "procedural" and photo_opts:
        raise InspectorError(f"{' and '.join(photo_opts)} only apply to --mode real: procedural tiles use no photos")
    if args.mode == "real":
        args.real = args.real or DEFAULT_REAL
        args.split = args.split or "train"


def make_tiles(args: argparse.Namespace) -> int:
    """`inspector tiles make`: a tile set of ``--n`` tiles in ``--out``, with preview mosaics when asked."""
    resolve_mode(args)
    if args.n < 1:
        raise InspectorError(f"--n {args.n}: give at least one tile")
    if not (0 <= args.pos <= 1 and 0 <= args.hard <= 1 and args.pos + args.hard <= 1):
        raise InspectorError("--pos and --hard must be shares in [0, 1] adding up to at most 1")
    check_share("--background-patches", args.background_patches)
    if args.min_visible_px < 0:
        raise InspectorError(f"--min-visible-px {args.min_visible_px}: give 0 (off) or a pixel count")
    cal = calibration_or_default(args.calibration)
    real_dir = args.real  # None in procedural mode (resolve_mode)
    source = make_source(
        real_dir,
        args.split or "train",
        args.seed,
        background_patches=args.background_patches,
        patches_per_seed=args.patches_per_seed,
    )
    cal, note = honest_calibration(cal, source)
    if note is not None:
        print(note, file=sys.stderr)
    t0 = time.perf_counter()
    tiles = make_tile_set(
        args.n,
        source,
        cal,
        args.seed,
        shares=(args.pos, 1 - args.pos - args.hard, args.hard),
        min_visible_px=args.min_visible_px,
    )
    dt = time.perf_counter() - t0
    extra = {
        "mode": args.mode,
        "split": args.split if real_dir else None,
        "real_dir": str(real_dir) if real_dir else None,
        "background_patches": args.background_patches if real_dir else None,
        "patches_per_seed": args.patches_per_seed if real_dir else None,
        "seconds": round(dt, 1),
    }
    save_tile_set(tiles, args.out, extra)
    if args.preview:
        write_previews(tiles, args.preview, f"{args.mode}_{args.split}_s{args.seed}")
    print(f"{args.out}: {len(tiles)} tiles {tiles.meta['counts']} in {dt:.1f} s ({len(tiles) / dt:.1f} tiles/s)")
    return 0


def write_previews(tiles: TileSet, folder: Path, tag: str) -> None:
    """folder/<tag>_boxes.png and <tag>_plain.png: the first tiles, with and without their spider boxes."""
    folder.mkdir(parents=True, exist_ok=True)
    idx = list(range(min(len(tiles), PREVIEW_TILES)))
    cv2.imwrite(str(folder / f"{tag}_boxes.png"), mosaic(tiles, idx, draw_boxes=True))
    cv2.imwrite(str(folder / f"{tag}_plain.png"), mosaic(tiles, idx, draw_boxes=False))


def footage_calibration(args: argparse.Namespace) -> Calibration:
    """--calibration FILE, or one made of --mm-per-px, --direction, --belt-speed and --span."""
    if args.calibration:
        return load_calibration(args.calibration)
    try:
        return Calibration(
            mm_per_px=args.mm_per_px,
            belt_direction=args.direction,
            belt_speed_mm_s=args.belt_speed,
            camera_to_ejector_mm=DEFAULT_CALIBRATION.camera_to_ejector_mm,
            spider_span_mm=tuple(args.span),
        )
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InspectorError(f"bad calibration option: {msg}") from None


def footage_seconds(seconds: float | None, n_bunches: int | None, width_px: int, cal: Calibration) -> float:
    """The footage length: as given, 60 s, or room for every bunch (lead-in, bunches and gaps as upper bounds,
    and one frame width)."""
    if seconds is not None:
        return seconds
    if n_bunches is None:
        return 60.0
    pitch_mm = 220.0 + 160.0
    return 0.6 + (n_bunches * pitch_mm + width_px * cal.mm_per_px) / cal.belt_speed_mm_s


def make_footage(args: argparse.Namespace) -> int:
    """`inspector footage`: labelled conveyor footage in ``--out``."""
    if args.split is not None and args.real is None:
        raise InspectorError("--split chooses real photos: give --real DIR too (procedural footage uses none)")
    cal = footage_calibration(args)
    seconds = footage_seconds(args.seconds, args.bunches, args.width, cal)
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
    n_frames = round(seconds * args.fps)
    with (args.out / "labels.jsonl").open() as labels:
        n_lines = sum(1 for _ in labels)
    print(f"{video}: {n_frames} frames, {n_lines} bunches, {dt:.1f} s ({n_frames / dt:.0f} frames/s incl. setup)")
    return 0
