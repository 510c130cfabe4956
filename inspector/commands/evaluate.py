"""`inspector evaluate`: evaluate an exported model on tile sets: accuracy, precision, recall, ROC AUC, recall at
1 % false rejects, FAM pointing game — beside the seed paper's figures.

    inspector evaluate --model inspector/models/demo.onnx --tiles holdout=tiles/real_holdout procedural=tiles/proc
    inspector evaluate --tiles val=tiles/v3_val --errors runs/errors   # + pictures of the misclassified tiles
    inspector evaluate --model runs/new.onnx --baseline inspector/models/demo.onnx \\
        --tiles sel=tiles/v5_val,tiles/v5_val_s38 fresh=tiles/v5_val_s44 --pick-threshold sel --sweep --plots runs/p

``NAME=DIR1,DIR2`` evaluates several tile sets as one. ``--pick-threshold NAME`` reads every set at the threshold
that is most accurate on set NAME (the sweep's 0.05 steps; ties to the lower); ``--sweep`` prints that sweep for
every set and ``--plots DIR`` draws it (DIR/<set>_sweep.png). ``--baseline MODEL`` runs a second model on the same
tiles (at ``--baseline-threshold``) and prints the paired comparison: the tiles each gets right where the other is
wrong, and the accuracy difference with its paired standard error.

``--probes`` runs the shortcut probes on every set (:mod:`inspector.training.probes`: a sharp patch in blurred
spider-free tiles, blurred spiders, pasted non-spiders from ``DIR/seam/`` where the set has one, blur and noise
levels, recall per species with ``--real`` or a set that records its species) and prints their table; the exit
status is 2 when a model fails the sharp-patch probe (its false-alarm rate more than 2 points above the normal one).

Runs the daemon's path only (onnxruntime through inspector.model, FAM through inspector.fam; no torch); the logic
lives in :mod:`inspector.training.assessment`. The FAM is the paper's Eq. 1 (``--fam-mode paper``, default) or the
per-layer normalised variant. Pointing: the share of spider tiles whose FAM peak lies inside the spider box grown
by 4 px (at 224).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.cliopts import add_command, add_model_argument, add_threads_argument

HELP = "evaluate a model on tile sets: accuracy, ROC AUC, recall at 1 %% false rejects, FAM pointing"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "evaluate", HELP, __doc__, run)
    add_model_argument(p)
    p.add_argument("--tiles", nargs="+", required=True, metavar="[NAME=]DIR", help="tile-set directories")
    p.add_argument("--fam-mode", choices=("paper", "normalized"), default="paper")
    p.add_argument("--threshold", type=float, help="spider probability threshold (default 0.5)")
    p.add_argument("--pick-threshold", metavar="NAME", help="use the most accurate sweep threshold on tile set NAME")
    p.add_argument("--sweep", action="store_true", help="print the threshold sweep of every tile set")
    p.add_argument("--plots", type=Path, metavar="DIR", help="draw the threshold sweeps into DIR/<set>_sweep.png")
    p.add_argument("--baseline", type=Path, metavar="MODEL", help="compare with this model on the same tiles")
    p.add_argument("--baseline-threshold", type=float, default=0.5, help="the baseline's threshold (default 0.5)")
    p.add_argument("--probes", action="store_true", help="run the shortcut probes on every set (exit 2 on a fail)")
    p.add_argument(
        "--real",
        type=Path,
        metavar="DIR",
        help="the real photos (../shared/realdata): spider species for the probes' per-species recall",
    )
    p.add_argument("--probe-seed", type=int, default=0, help="seed of the probes' random patches and noise")
    add_threads_argument(p)
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    p.add_argument(
        "--errors",
        type=Path,
        metavar="DIR",
        help="also write DIR/<set>_missed.png and DIR/<set>_false_alarms.png: the misclassified tiles (the worst "
        "64 of each) with their FAM as a heat overlay, spider box, kind, score and spider source; and the sources "
        "whose spiders are missed most",
    )


def run(args: argparse.Namespace) -> int:
    from inspector.training.assessment import run as run_evaluation

    return run_evaluation(args)
