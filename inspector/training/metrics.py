"""Tile-level figures, pure numpy (no torch): shared by `inspector evaluate` and the training loop's validation.

- accuracy / precision / recall at a probability threshold (0.5 by default);
- ROC AUC (Mann–Whitney rank statistic, ties counted half);
- recall at a false-reject rate: the share of spider tiles scoring above the threshold that rejects at most
  ``far`` of the spider-free tiles (1 % by default);
- the FAM pointing game: the share of spider tiles whose FAM peak (argmax) lies inside the spider box grown by
  ``tol_px`` on every side (4 px at 224).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from inspector.report import roc_auc as report_roc_auc

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True)
class TileFigures:
    n: int
    n_pos: int
    accuracy: float
    precision: float
    recall: float
    roc_auc: float
    recall_at_far: float
    far: float
    pointing: float
    threshold: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def roc_auc(scores: FloatArray, labels: npt.NDArray[np.integer]) -> float:
    """Area under the ROC curve (inspector.report.roc_auc, the one implementation); NaN when one class is missing."""
    auc = report_roc_auc(np.asarray(scores, np.float64), np.asarray(labels) == 1)
    return float("nan") if auc is None else auc


def recall_at_false_reject(scores: FloatArray, labels: npt.NDArray[np.integer], far: float = 0.01) -> float:
    """Recall with the lowest threshold that flags at most ``far`` of the negatives (score > threshold)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels) == 1
    neg = np.sort(s[~y])
    pos = s[y]
    if len(pos) == 0:
        return float("nan")
    if len(neg) == 0:
        return 1.0
    allowed = int(np.floor(far * len(neg)))  # negatives allowed above the threshold
    threshold = neg[len(neg) - 1 - allowed]
    return float(np.mean(pos > threshold))


def peak_xy(fam_maps: FloatArray) -> npt.NDArray[np.int64]:
    """(N, H, W) maps -> (N, 2) integer (x, y) of each map's maximum (first one on ties)."""
    n, _, w = fam_maps.shape
    flat = np.asarray(fam_maps).reshape(n, -1).argmax(axis=1)
    return np.stack([flat % w, flat // w], axis=1).astype(np.int64)


def pointing_hits(fam_maps: FloatArray, boxes_xyxy: FloatArray, tol_px: float = 4.0) -> npt.NDArray[np.bool_]:
    """Per map: does the peak pixel's centre lie inside its box grown by ``tol_px``?"""
    xy = peak_xy(fam_maps).astype(np.float64) + 0.5
    b = np.asarray(boxes_xyxy, np.float64)
    return (
        (xy[:, 0] >= b[:, 0] - tol_px)
        & (xy[:, 0] <= b[:, 2] + tol_px)
        & (xy[:, 1] >= b[:, 1] - tol_px)
        & (xy[:, 1] <= b[:, 3] + tol_px)
    )


def tile_figures(
    spider_prob: FloatArray,
    labels: npt.NDArray[np.integer],
    fam_maps_pos: FloatArray | None = None,
    boxes_pos: FloatArray | None = None,
    threshold: float = 0.5,
    far: float = 0.01,
    tol_px: float = 4.0,
) -> TileFigures:
    """All figures for one tile set. ``fam_maps_pos``/``boxes_pos``: the spider tiles' FAMs and boxes."""
    p = np.asarray(spider_prob, np.float64)
    y = np.asarray(labels).astype(np.int64)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    n = len(y)
    pointing = float("nan")
    if fam_maps_pos is not None and boxes_pos is not None and len(boxes_pos):
        pointing = float(np.mean(pointing_hits(fam_maps_pos, boxes_pos, tol_px)))
    return TileFigures(
        n=n,
        n_pos=int(np.sum(y == 1)),
        accuracy=float(np.mean(pred == (y == 1))) if n else float("nan"),
        precision=tp / (tp + fp) if tp + fp else float("nan"),
        recall=tp / (tp + fn) if tp + fn else float("nan"),
        roc_auc=roc_auc(p, y),
        recall_at_far=recall_at_false_reject(p, y, far),
        far=far,
        pointing=pointing,
        threshold=threshold,
    )
