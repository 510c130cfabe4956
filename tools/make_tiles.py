#!/usr/bin/env python3
"""Make a 224x224 tile set (positives, negatives, hard negatives) for training or evaluation.

    tools/make_tiles.py --out DIR --n 3600 [--mode procedural|real] [--real ../shared/realdata]
                        [--split train|holdout|fit|val] [--seed S] [--calibration FILE] [--preview DIR]

Writes DIR/tiles.npz (images, labels, boxes_xyxy, kinds) and DIR/meta.json; see inspector/synth/tiles.py.
Real mode reads photos from --real (never copies them); use --split holdout only for final evaluation. For
training sets, --patches-per-seed gives every seed its own pool of non-spider patches (default: one per split). Giving
--real or --split selects real mode; with --mode procedural they are an error (procedural tiles use no photos).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.config import DEFAULT_CALIBRATION, load_calibration
from inspector.errors import InspectorError
from inspector.synth.footage import make_source
from inspector.synth.real import SPLITS
from inspector.synth.tiles import make_tile_set, mosaic, save_tile_set

DEFAULT_REAL = Path("../shared/realdata")


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (tiles.npz, meta.json)")
    p.add_argument("--n", type=int, default=3600, help="number of tiles")
    p.add_argument(
        "--mode", choices=("procedural", "real"), help="default: real if --real or --split is given, else procedural"
    )
    p.add_argument("--real", type=Path, help=f"realdata folder (real mode; default {DEFAULT_REAL})")
    p.add_argument(
        "--split",
        choices=SPLITS,
        help="photos: train (default; = fit + val), holdout (final evaluation only), fit / val (photo-disjoint "
        "parts of train)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration", type=Path, help="calibration file (default: the built-in one)")
    p.add_argument("--pos", type=float, default=0.5, help="share of positive tiles")
    p.add_argument("--hard", type=float, default=0.2, help="share of hard negatives (rest: negatives)")
    p.add_argument(
        "--background-patches",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="real mode, for training sets: this share of the non-spider patches is cut from the spider photos "
        "away from the spider (default 0: grape and produce photos only, as every benchmark set)",
    )
    p.add_argument(
        "--patches-per-seed",
        action="store_true",
        help="real mode, for training sets: draw the pool of non-spider patches from the seed too, so sets made "
        "with different seeds show different non-spider objects (default: the split's one pool of 160, as every "
        "benchmark set)",
    )
    p.add_argument("--preview", type=Path, help="also write preview mosaics (PNG) into this folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        resolve_mode(args)
        if args.n < 1:
            raise InspectorError(f"--n {args.n}: give at least one tile")
        if not (0 <= args.pos <= 1 and 0 <= args.hard <= 1 and args.pos + args.hard <= 1):
            raise InspectorError("--pos and --hard must be shares in [0, 1] adding up to at most 1")
        if not 0 <= args.background_patches <= 1:
            raise InspectorError(f"--background-patches must be a share in [0, 1], got {args.background_patches:g}")
        cal = load_calibration(args.calibration) if args.calibration else DEFAULT_CALIBRATION
        real_dir = args.real  # None in procedural mode (resolve_mode)
        source = make_source(
            real_dir,
            args.split or "train",
            args.seed,
            background_patches=args.background_patches,
            patches_per_seed=args.patches_per_seed,
        )
        t0 = time.perf_counter()
        tiles = make_tile_set(args.n, source, cal, args.seed, shares=(args.pos, 1 - args.pos - args.hard, args.hard))
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
            args.preview.mkdir(parents=True, exist_ok=True)
            tag = f"{args.mode}_{args.split}_s{args.seed}"
            idx = list(range(min(len(tiles), 64)))
            cv2.imwrite(str(args.preview / f"{tag}_boxes.png"), mosaic(tiles, idx, draw_boxes=True))
            cv2.imwrite(str(args.preview / f"{tag}_plain.png"), mosaic(tiles, idx, draw_boxes=False))
    except InspectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(tiles)} tiles {tiles.meta['counts']} in {dt:.1f} s ({len(tiles) / dt:.1f} tiles/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
