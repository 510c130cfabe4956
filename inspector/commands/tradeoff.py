"""`inspector tradeoff`: bunch-level trade-off of decision rules or models over several replays, pooled.

    inspector tradeoff --set "agree 1=runs/k1_a/report.json,runs/k1_b/report.json" \\
        --set "agree 2=runs/k2_a/report.json,runs/k2_b/report.json" --threshold 0.5 --threshold 0.3 --plot cmp.png

Each ``--set NAME=REPORT[,REPORT...]`` pools the labelled bunches of those `inspector replay --labels` reports (one
decision rule per set). Printed per set: bunches, spider bunches, the pooled bunch ROC AUC and, at every
``--threshold``, recall and false-reject rate (a fail-safe reject counts at every threshold); ``--recall R`` adds the
threshold each set needs for recall R there (what `inspector tune` would write). ``--plot PNG`` draws the curves
with the thresholds marked (needs matplotlib). See :mod:`inspector.tradeoff`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.cliopts import add_command

HELP = "bunch recall against false rejects of several replay reports, pooled per named set"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "tradeoff", HELP, __doc__, run)
    p.add_argument("--set", action="append", required=True, help="NAME=REPORT[,REPORT...] pooled as one")
    p.add_argument("--threshold", type=float, action="append", default=[], help="mark this threshold (repeatable)")
    p.add_argument("--recall", type=float, help="also the threshold each set needs for this recall")
    p.add_argument("--plot", type=Path, help="PNG of the curves")


def run(args: argparse.Namespace) -> int:
    from inspector.tradeoff import run_tradeoff

    run_tradeoff(args.set, args.threshold, args.recall, args.plot)
    return 0
