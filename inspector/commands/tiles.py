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
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.cliopts import add_command, add_model_argument, add_threads_argument
from inspector.synth.jobs import DEFAULT_REAL
from inspector.synth.real import SPLITS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tiles", help="make tile sets (procedural or from photos), or mine the hard tiles of a pool")
    tsub = p.add_subparsers(dest="tiles_command", required=True, metavar="ACTION")
    _add_make(tsub)
    _add_mine(tsub)


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


def run_make(args: argparse.Namespace) -> int:
    from inspector.synth.jobs import make_tiles

    return make_tiles(args)


def run_mine(args: argparse.Namespace) -> int:
    from inspector.training.mining import mine_tiles

    mine_tiles(args.model, args.tiles, args.out, args.neg_share, args.pos_share, threads=args.threads)
    return 0
