#!/usr/bin/env python3
"""Bunch-level trade-off of decision rules or models over several replays, pooled: recall against false rejects.

    python tools/bunch_tradeoff.py --set "agree 1=runs/k1_a/report.json,runs/k1_b/report.json" \
        --set "agree 2=runs/k2_a/report.json,runs/k2_b/report.json" --threshold 0.5 --threshold 0.3 --plot cmp.png

Each ``--set NAME=REPORT[,REPORT...]`` pools the labelled bunches of those `inspector replay --labels` reports (one
decision rule per set). Printed per set: bunches, spider bunches, the pooled bunch ROC AUC and, at every
``--threshold``, recall and false-reject rate (a fail-safe reject counts at every threshold); ``--recall R`` adds the
threshold each set needs for recall R there (what `inspector tune` would write). ``--plot PNG`` draws the curves
with the thresholds marked (needs matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from inspector.errors import InspectorError
from inspector.report import BunchScore, SweepRow, pool_bunches, read_report, recommend, roc_auc, sweep


@dataclass(frozen=True)
class PooledSet:
    name: str
    bunches: list[BunchScore]
    rows: list[SweepRow]

    @property
    def auc(self) -> float | None:
        import numpy as np

        return roc_auc(np.array([b.score for b in self.bunches]), np.array([b.spider for b in self.bunches], bool))


def at(rows: list[SweepRow], threshold: float) -> SweepRow:
    """The sweep row of the lowest swept threshold at or above `threshold`: what a run at `threshold` decides."""
    above = [r for r in rows if r.threshold >= threshold]
    return min(above, key=lambda r: r.threshold)


def parse_set(text: str) -> tuple[str, list[Path]]:
    name, _, paths = text.partition("=")
    reports = [Path(p) for p in paths.split(",") if p]
    if not name or not reports:
        raise InspectorError(f"--set {text!r}: expected NAME=REPORT[,REPORT...]")
    return name, reports


def pooled_set(name: str, paths: list[Path]) -> PooledSet:
    bunches, _ = pool_bunches({p: read_report(p) for p in paths})
    return PooledSet(name, bunches, sweep(bunches, 1.0))  # `at` reads any threshold off the swept scores


def table(sets: list[PooledSet], thresholds: list[float], recall: float | None) -> str:
    lines = []
    for s in sets:
        spiders = sum(b.spider for b in s.bunches)
        auc = "n/a" if s.auc is None else f"{s.auc:.3f}"
        lines.append(f"{s.name}: {len(s.bunches)} bunches, {spiders} with a spider, bunch ROC AUC {auc}")
        marks: list[tuple[str, SweepRow | None]] = [(f"at {t:.3f}", at(s.rows, t)) for t in thresholds]
        if recall is not None:
            best = recommend(s.rows, recall)
            label = f"for recall >= {100 * recall:.1f} %"
            marks.append((f"{label}: {best.threshold:.3f}" if best else f"{label}: no threshold reaches it", best))
        for label, row in marks:
            rates = (
                ""
                if row is None
                else f"recall {100 * row.recall:5.1f} %, false rejects {100 * row.false_reject_rate:5.1f} %"
            )
            lines.append(f"  {label:<30} {rates}".rstrip())
    return "\n".join(lines)


def plot(sets: list[PooledSet], thresholds: list[float], out: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.5))
    markers = "osD^v"
    for s in sets:
        auc = "n/a" if s.auc is None else f"{s.auc:.3f}"
        (line,) = ax.plot(
            [100 * r.false_reject_rate for r in s.rows],
            [100 * r.recall for r in s.rows],
            drawstyle="steps-post",
            label=f"{s.name} (AUC {auc})",
        )
        for j, t in enumerate(thresholds):
            row = at(s.rows, t)
            ax.plot(100 * row.false_reject_rate, 100 * row.recall, markers[j % len(markers)], c=line.get_color())
    for j, t in enumerate(thresholds):
        ax.plot([], [], markers[j % len(markers)], c="k", label=f"threshold {t:g}")
    ax.set(xlabel="clean bunches rejected (%)", ylabel="spider bunches rejected (%)", xlim=(0, 100), ylim=(0, 101))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--set", action="append", required=True, help="NAME=REPORT[,REPORT...] pooled as one")
    p.add_argument("--threshold", type=float, action="append", default=[], help="mark this threshold (repeatable)")
    p.add_argument("--recall", type=float, help="also the threshold each set needs for this recall")
    p.add_argument("--plot", type=Path, help="PNG of the curves")
    args = p.parse_args(argv)
    try:
        if any(not 0 <= t <= 1 for t in args.threshold) or (args.recall is not None and not 0 < args.recall <= 1):
            raise InspectorError("thresholds must lie in [0, 1] and --recall in (0, 1]")
        sets = [pooled_set(*parse_set(text)) for text in args.set]
    except InspectorError as exc:
        print(f"bunch_tradeoff: error: {exc}", file=sys.stderr)
        return 1
    print(table(sets, args.threshold, args.recall))
    if args.plot is not None:
        print(f"plot: {args.plot}" if plot(sets, args.threshold, args.plot) else "plot: needs matplotlib (.[plots])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
