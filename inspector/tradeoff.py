"""Bunch-level trade-off of decision rules or models over several replays, pooled: recall against false rejects
(`inspector tradeoff`).

Each set pools the labelled bunches of some `inspector replay --labels` reports (one decision rule per set).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inspector.cliopts import optional_pyplot
from inspector.errors import InspectorError
from inspector.report import BunchScore, SweepRow, pool_bunches, read_report, recommend, roc_auc, sweep


@dataclass(frozen=True)
class PooledSet:
    name: str
    bunches: list[BunchScore]
    rows: list[SweepRow]

    @property
    def auc(self) -> float | None:
        return roc_auc(np.array([b.score for b in self.bunches]), np.array([b.spider for b in self.bunches], bool))


def at(rows: list[SweepRow], threshold: float) -> SweepRow:
    """The sweep row of the lowest swept threshold at or above `threshold`: what a run at `threshold` decides."""
    above = [r for r in rows if r.threshold >= threshold]
    return min(above, key=lambda r: r.threshold)


def parse_set(text: str) -> tuple[str, list[Path]]:
    """``NAME=REPORT[,REPORT...]`` -> (NAME, the report paths)."""
    name, _, paths = text.partition("=")
    reports = [Path(p) for p in paths.split(",") if p]
    if not name or not reports:
        raise InspectorError(f"--set {text!r}: expected NAME=REPORT[,REPORT...]")
    return name, reports


def pooled_set(name: str, paths: list[Path]) -> PooledSet:
    """The labelled bunches of those replay reports, pooled, with their threshold sweep."""
    bunches, _ = pool_bunches({p: read_report(p) for p in paths})
    return PooledSet(name, bunches, sweep(bunches, 1.0))  # `at` reads any threshold off the swept scores


def table(sets: list[PooledSet], thresholds: list[float], recall: float | None) -> str:
    """Per set: bunches, spider bunches, bunch ROC AUC; recall and false rejects at each threshold (and at the
    threshold that reaches `recall`)."""
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
    """Recall against false rejects per set, thresholds marked, as a PNG at `out`; False without matplotlib."""
    plt = optional_pyplot()
    if plt is None:
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


def run_tradeoff(set_texts: list[str], thresholds: list[float], recall: float | None, plot_png: Path | None) -> None:
    """`inspector tradeoff`: print the table of the ``NAME=REPORT[,REPORT...]`` sets; draw it when asked."""
    if any(not 0 <= t <= 1 for t in thresholds) or (recall is not None and not 0 < recall <= 1):
        raise InspectorError("thresholds must lie in [0, 1] and --recall in (0, 1]")
    sets = [pooled_set(*parse_set(text)) for text in set_texts]
    print(table(sets, thresholds, recall))
    if plot_png is not None:
        print(f"plot: {plot_png}" if plot(sets, thresholds, plot_png) else "plot: needs matplotlib (.[plots])")
