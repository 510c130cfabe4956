"""Choosing a tile threshold and comparing two models on the same tiles, pure numpy (plots need matplotlib).

- threshold sweep: accuracy, recall and false-alarm rate at thresholds 0.05, 0.10, ..., 0.95; the operating point
  is the most accurate one, ties going to the lower threshold (a missed spider costs more than a false reject);
- paired comparison: on the same tiles, how many one model gets right where the other is wrong and the reverse,
  and the accuracy difference with its paired standard error. Two models that share most of their errors differ
  by much less than two independent accuracies' standard errors suggest, and only the discordant tiles tell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inspector.cliopts import optional_pyplot

FloatArray = npt.NDArray[np.floating]

SWEEP_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


@dataclass(frozen=True)
class SweepPoint:
    threshold: float
    accuracy: float
    recall: float  # share of spider tiles at or above the threshold
    false_alarm_rate: float  # share of spider-free tiles at or above the threshold


def threshold_sweep(
    spider_prob: FloatArray, labels: npt.NDArray[np.integer], thresholds: tuple[float, ...] = SWEEP_THRESHOLDS
) -> list[SweepPoint]:
    """One point per threshold; an empty tile set gives no points, a missing class NaN rates."""
    p = np.asarray(spider_prob, np.float64)
    spider = np.asarray(labels) == 1
    if len(p) == 0:
        return []
    out = []
    for t in thresholds:
        flagged = p >= t
        out.append(
            SweepPoint(
                threshold=t,
                accuracy=float(np.mean(flagged == spider)),
                recall=float(np.mean(flagged[spider])) if spider.any() else math.nan,
                false_alarm_rate=float(np.mean(flagged[~spider])) if (~spider).any() else math.nan,
            )
        )
    return out


def best_point(sweep: list[SweepPoint]) -> SweepPoint | None:
    """The most accurate point; on a tie the lowest threshold. None for an empty sweep."""
    if not sweep:
        return None
    return max(sorted(sweep, key=lambda s: s.threshold), key=lambda s: s.accuracy)  # max keeps the first of ties


@dataclass(frozen=True)
class PairedDifference:
    n: int
    only_a: int  # tiles A gets right and B wrong
    only_b: int  # tiles B gets right and A wrong
    difference: float  # accuracy of A minus accuracy of B
    se: float  # paired standard error of the difference

    def describe(self, a: str, b: str) -> str:
        return (
            f"{a} right where {b} is wrong on {self.only_a} tiles, the reverse on {self.only_b}: "
            f"{100 * self.difference:+.2f} ± {100 * self.se:.2f} points (paired SE, {self.n} tiles)"
        )


def correct_at(spider_prob: FloatArray, labels: npt.NDArray[np.integer], threshold: float) -> npt.NDArray[np.bool_]:
    """Per tile: is the call at ``threshold`` (spider when prob >= threshold) right?"""
    return (np.asarray(spider_prob) >= threshold) == (np.asarray(labels) == 1)


def paired_difference(correct_a: npt.NDArray[np.bool_], correct_b: npt.NDArray[np.bool_]) -> PairedDifference:
    """Per-tile correctness of two models on the same tiles -> discordant counts, difference, paired SE."""
    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {a.shape} against {b.shape}; the same tiles in the same order")
    n = len(a)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    if n == 0:
        return PairedDifference(0, 0, 0, math.nan, math.nan)
    # per-tile difference d in {-1, 0, 1}: mean (only_a - only_b) / n, variance E[d^2] - mean^2
    diff = (only_a - only_b) / n
    se = math.sqrt(max((only_a + only_b) / n - diff**2, 0.0) / n)
    return PairedDifference(n, only_a, only_b, diff, se)


def sweep_plot(sweeps: list[tuple[str, list[SweepPoint], float]], title: str, path: Path) -> Path | None:
    """Accuracy, recall and false-alarm rate against threshold for each (name, sweep, chosen threshold) as a PNG.

    Needs matplotlib (``pip install .[plots]``); returns None without it or with nothing to draw."""
    if not any(points for _, points, _ in sweeps):
        return None
    plt = optional_pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles: list[dict[str, Any]] = [{"ls": "-"}, {"ls": "--"}, {"ls": ":"}]
    for (name, points, chosen), style in zip(sweeps, styles * len(sweeps), strict=False):
        t = [s.threshold for s in points]
        ax.plot(t, [s.accuracy for s in points], c="k", label=f"{name}: accuracy", **style)
        ax.plot(t, [s.recall for s in points], c="tab:red", label=f"{name}: recall (spider tiles)", **style)
        ax.plot(t, [s.false_alarm_rate for s in points], c="tab:green", label=f"{name}: false alarms", **style)
        ax.axvline(chosen, c="grey", lw=0.8, **style)
    ax.set(xlabel="spider-probability threshold", ylabel="share of tiles", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="center left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
