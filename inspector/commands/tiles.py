"""`inspector tiles make` and `inspector tiles mine`: make 224x224 tile sets for training and evaluation.

make: positives, negatives and hard negatives, procedural or cut from the realdata photos:

    inspector tiles make --out DIR --n 3600 [--mode procedural|real] [--real ../shared/realdata]
                         [--split train|holdout|fit|val] [--seed S] [--calibration FILE] [--preview DIR]

Writes DIR/tiles.npz (images, labels, boxes_xyxy, kinds) and DIR/meta.json; see inspector/synth/tiles.py.
Real mode reads photos from --real (never copies them); use --split holdout only for final evaluation. For
training sets, --patches-per-seed gives every seed its own pool of non-spider patches (default: one per split).
Giving --real or --split selects real mode; with --mode procedural they are an error (procedural tiles use no
photos).

mine: the hard tiles of a candidate pool, the negatives a model scores highest and the spiders it scores lowest:

    inspector tiles mine --model inspector/models/demo.onnx --tiles tiles/fit_a tiles/fit_b --out tiles/hard \\
        [--neg-share 0.25] [--pos-share 0.25] [--threads 2]

Scores every tile of --tiles once (onnxruntime, the daemon's path) and writes the kept ones as a tile set of
their own (DIR/tiles.npz + meta.json: the model, the candidate sets, the shares and where each cut fell), to be
trained on beside the pool (``inspector train --tiles POOL... DIR``: class-balanced sampling gives the mined tiles
extra weight). See inspector/training/mining.py.

cross-style: an evaluation set from the *holdout* photos composed another way than `make` (spiders pasted on the
uncut vineyard photos at their measured native scale, as sharp as the grapes, then one camera for both), with a
companion DIR/seam/ set of pasted non-spiders for `inspector evaluate --probes`; never train or select on it:

    inspector tiles cross-style --out DIR --mm-per-px 0.5 [--spiders 320] [--span 4 12] [--seed 0]
                                [--real ../shared/realdata]

See inspector/training/crossstyle.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.cliopts import add_command, add_model_argument, add_threads_argument
from inspector.errors import InspectorError
from inspector.synth.jobs import DEFAULT_REAL
from inspector.synth.real import SPLITS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tiles", help="make tile sets (procedural or from photos), or mine the hard tiles of a pool")
    tsub = p.add_subparsers(dest="tiles_command", required=True, metavar="ACTION")
    _add_make(tsub)
    _add_mine(tsub)
    _add_cross_style(tsub)


def _add_make(tsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    make = add_command(
        tsub,
        "make",
        "make a 224x224 tile set (positives, negatives, hard negatives)",
        "Make a 224x224 tile set (positives, negatives, hard negatives) for training or evaluation.",
        run_make,
    )
    make.add_argument("--out", type=Path, required=True, help="output folder (tiles.npz, meta.json)")
    make.add_argument("--n", type=int, default=3600, help="number of tiles")
    make.add_argument(
        "--mode", choices=("procedural", "real"), help="default: real if --real or --split is given, else procedural"
    )
    make.add_argument("--real", type=Path, help=f"realdata folder (real mode; default {DEFAULT_REAL})")
    make.add_argument(
        "--split",
        choices=SPLITS,
        help="photos: train (default; = fit + val), holdout (final evaluation only), fit / val (photo-disjoint "
        "parts of train)",
    )
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--calibration", type=Path, help="calibration file (default: the built-in one)")
    make.add_argument("--pos", type=float, default=0.5, help="share of positive tiles")
    make.add_argument("--hard", type=float, default=0.2, help="share of hard negatives (rest: negatives)")
    make.add_argument(
        "--background-patches",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="real mode, for training sets: this share of the non-spider patches is cut from the spider photos "
        "away from the spider (default 0: grape and produce photos only, as every benchmark set)",
    )
    make.add_argument(
        "--patches-per-seed",
        action="store_true",
        help="real mode, for training sets: draw the pool of non-spider patches from the seed too, so sets made "
        "with different seeds show different non-spider objects (default: the split's one pool of 160, as every "
        "benchmark set)",
    )
    make.add_argument(
        "--min-visible-px",
        type=int,
        default=0,
        metavar="PX",
        help="for training sets: draw a spider tile again while its spider visibly changes fewer than PX camera "
        "pixels (by 24 grey levels or more, against the same window rendered without it); default 0: every spider "
        "counts, seen or not, as evaluation sets need. The redrawn spiders are more often the sharp ones: a model "
        "trained on such sets has failed the sharp-patch probe (check it with inspector evaluate --probes)",
    )
    make.add_argument("--preview", type=Path, help="also write preview mosaics (PNG) into this folder")


def _add_mine(tsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mine = add_command(
        tsub,
        "mine",
        "keep the tiles of a candidate pool that a model gets most wrong, as a tile set of their own",
        "Mine the hard tiles of a candidate pool: the negatives a model scores highest and the spiders it scores "
        "lowest.",
        run_mine,
    )
    add_model_argument(mine)
    mine.add_argument("--tiles", type=Path, nargs="+", required=True, help="candidate tile-set directories")
    mine.add_argument("--out", type=Path, required=True, help="output folder for the mined tile set")
    mine.add_argument("--neg-share", type=float, default=0.25, help="share of negatives kept, highest scored first")
    mine.add_argument("--pos-share", type=float, default=0.25, help="share of positives kept, lowest scored first")
    add_threads_argument(mine)


def _add_cross_style(tsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cs = add_command(
        tsub,
        "cross-style",
        "an evaluation tile set from holdout photos composed another way (+ a seam probe set)",
        "Spiders pasted on uncut holdout vineyard photos at their native scale, one camera for both; evaluation only.",
        run_cross_style,
    )
    cs.add_argument("--out", type=Path, required=True, help="output folder (DIR/tiles.npz, DIR/seam/)")
    cs.add_argument("--mm-per-px", type=float, required=True, help="camera scale of the tiles")
    cs.add_argument("--spiders", type=int, default=320, help="spider tiles (as many clean ones; half as many seam)")
    cs.add_argument("--span", type=float, nargs=2, default=(4.0, 12.0), metavar=("MIN", "MAX"), help="mm")
    cs.add_argument("--seed", type=int, default=0)
    cs.add_argument("--real", type=Path, default=DEFAULT_REAL, help=f"realdata folder (default {DEFAULT_REAL})")


def run_make(args: argparse.Namespace) -> int:
    from inspector.synth.jobs import make_tiles

    return make_tiles(args)


def run_mine(args: argparse.Namespace) -> int:
    from inspector.training.mining import mine_tiles

    mine_tiles(args.model, args.tiles, args.out, args.neg_share, args.pos_share, threads=args.threads)
    return 0


def run_cross_style(args: argparse.Namespace) -> int:
    from inspector.training.crossstyle import make_cross_style, write_cross_style

    if args.spiders < 1:
        raise InspectorError(f"--spiders must be at least 1, got {args.spiders}")
    sets = make_cross_style(args.real, args.mm_per_px, args.spiders, args.seed, (args.span[0], args.span[1]))
    write_cross_style(sets, args.out)
    kinds = sets.tiles.kinds.tolist()
    counts = ", ".join(f"{k} {kinds.count(k)}" for k in sorted(set(kinds)))
    print(f"{args.out}: {len(sets.tiles)} tiles ({counts}) at {args.mm_per_px} mm/px; seam probe {len(sets.seam)}")
    if sets.skipped_photos:
        print(f"  {len(sets.skipped_photos)} holdout photos left out (coarser than {args.mm_per_px} mm/px)")
    return 0
