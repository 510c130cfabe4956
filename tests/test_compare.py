"""Threshold sweep and paired comparison: hand-computed values, the empty and one-class cases, the plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from inspector.training.compare import (
    SWEEP_THRESHOLDS,
    SweepPoint,
    best_point,
    paired_difference,
    sweep_plot,
    threshold_sweep,
)


def test_sweep_thresholds_are_the_twentieths() -> None:
    assert SWEEP_THRESHOLDS[0] == 0.05 and SWEEP_THRESHOLDS[-1] == 0.95 and len(SWEEP_THRESHOLDS) == 19
    assert 0.5 in SWEEP_THRESHOLDS and 0.35 in SWEEP_THRESHOLDS


def test_sweep_by_hand() -> None:
    prob = np.array([0.9, 0.45, 0.3, 0.6, 0.2, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    points = {p.threshold: p for p in threshold_sweep(prob, labels, (0.25, 0.4, 0.5, 0.7))}
    # 0.25: flags 0.9 0.45 0.3 0.6 -> spiders 3/3, clean 1/3 flagged -> 5/6 right
    assert points[0.25] == SweepPoint(0.25, pytest.approx(5 / 6), 1.0, pytest.approx(1 / 3))
    # 0.4: flags 0.9 0.45 0.6 -> recall 2/3, false alarms 1/3 -> 4/6
    assert points[0.4] == SweepPoint(0.4, pytest.approx(4 / 6), pytest.approx(2 / 3), pytest.approx(1 / 3))
    # 0.5: flags 0.9 0.6 -> 1/3, 1/3 -> 3/6
    assert points[0.5].accuracy == pytest.approx(3 / 6)
    # 0.7: flags 0.9 -> 1/3, 0 -> 4/6
    assert points[0.7] == SweepPoint(0.7, pytest.approx(4 / 6), pytest.approx(1 / 3), 0.0)
    best = best_point(list(points.values()))
    assert best is not None and best.threshold == 0.25


def test_threshold_is_inclusive() -> None:
    (p,) = threshold_sweep(np.array([0.5, 0.5]), np.array([1, 0]), (0.5,))
    assert p.recall == 1.0 and p.false_alarm_rate == 1.0  # at the threshold counts as spider, as in the daemon


def test_best_point_ties_go_to_the_lower_threshold() -> None:
    sweep = [SweepPoint(0.6, 0.9, 0.8, 0.0), SweepPoint(0.3, 0.9, 0.9, 0.1), SweepPoint(0.5, 0.8, 0.8, 0.1)]
    best = best_point(sweep)
    assert best is not None and best.threshold == 0.3


@pytest.mark.parametrize(
    ("prob", "labels"),
    [([], []), ([0.9, 0.1], [1, 1]), ([0.9, 0.1], [0, 0])],
    ids=["empty", "spiders-only", "clean-only"],
)
def test_sweep_edge_cases(prob: list[float], labels: list[int]) -> None:
    sweep = threshold_sweep(np.asarray(prob), np.asarray(labels, np.int8))
    if not prob:
        assert sweep == [] and best_point(sweep) is None
        return
    assert len(sweep) == len(SWEEP_THRESHOLDS)
    spiders = labels[0] == 1
    assert all(math.isnan(p.false_alarm_rate if spiders else p.recall) for p in sweep)
    assert all(0.0 <= p.accuracy <= 1.0 for p in sweep)


def test_paired_difference_by_hand() -> None:
    a = np.array([1, 1, 1, 1, 0, 1, 0, 1], bool)
    b = np.array([1, 0, 0, 1, 1, 1, 0, 0], bool)
    d = paired_difference(a, b)
    # A alone right: tiles 1, 2, 7 (3); B alone right: tile 4 (1); difference (3 - 1) / 8
    assert (d.n, d.only_a, d.only_b) == (8, 3, 1)
    assert d.difference == pytest.approx(0.25)
    # per-tile d: 0 1 1 0 -1 0 0 1 -> population variance 4/8 - 0.25^2; SE sqrt(var / 8)
    assert d.se == pytest.approx(math.sqrt((0.5 - 0.0625) / 8))
    assert d.se == pytest.approx(np.std(a.astype(int) - b.astype(int)) / math.sqrt(8))
    assert "3 tiles, the reverse on 1: +25.00 ± " in d.describe("A", "B")


def test_paired_difference_identical_and_empty() -> None:
    same = paired_difference(np.ones(5, bool), np.ones(5, bool))
    assert (same.only_a, same.only_b, same.difference, same.se) == (0, 0, 0.0, 0.0)
    empty = paired_difference(np.zeros(0, bool), np.zeros(0, bool))
    assert empty.n == 0 and math.isnan(empty.difference)
    with pytest.raises(ValueError, match="the same tiles"):
        paired_difference(np.ones(3, bool), np.ones(4, bool))


def test_sweep_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import cv2

    sweep = threshold_sweep(np.array([0.9, 0.2, 0.7, 0.4]), np.array([1, 1, 0, 0]))
    path = sweep_plot([("m", sweep, 0.5), ("b", sweep, 0.3)], "t", tmp_path / "s.png")
    assert path == tmp_path / "s.png"
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape[0] > 200 and picture.std() > 5
    assert sweep_plot([("m", [], 0.5)], "t", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
