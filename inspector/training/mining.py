"""Hard-example mining (bootstrapping, Sung & Poggio 1994): the tiles of a large candidate pool that a model gets
most wrong, kept as a training set of their own.

Tiles drawn uniformly from the generator are mostly easy: a fine-tune spends most of its steps on tiles the model
already scores right. Scoring a large pool once (through the daemon's onnxruntime path, as the distillation
teachers are) and keeping the negatives it scores highest and the positives it scores lowest puts the steps where
the decision boundary is — the flecks and dark gaps that make clean bunches rejected, the pale or half-hidden
spiders it misses. Pure functions here; ``tools/mine_tiles.py`` runs them over tile sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inspector.types import FloatArray


@dataclass(frozen=True)
class MinedSelection:
    """The kept tiles, as indices into the candidate pool (ascending), with the probabilities where each cut fell."""

    indices: npt.NDArray[np.int64]
    n_neg: int  # negatives kept (label 0: plain and hard negatives alike)
    n_pos: int  # positives kept
    neg_min_prob: float  # lowest spider probability among the kept negatives (nan: none kept)
    pos_max_prob: float  # highest spider probability among the kept positives (nan: none kept)


def hardest(
    spider_prob: FloatArray, labels: npt.NDArray[np.integer], neg_share: float, pos_share: float
) -> MinedSelection:
    """Keep the ``neg_share`` of negatives with the highest spider probability and the ``pos_share`` of positives
    with the lowest (rounded to whole tiles; equal probabilities keep the earlier tile). Shares lie in [0, 1]."""
    if spider_prob.shape != labels.shape or spider_prob.ndim != 1:
        raise ValueError(f"spider_prob {spider_prob.shape} and labels {labels.shape} must be the same 1-D shape")
    for name, share in (("neg_share", neg_share), ("pos_share", pos_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {share}")
    prob = spider_prob.astype(np.float64)
    neg, pos = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    # stable sorts: among equal probabilities the earlier tile comes first
    neg_kept = neg[np.argsort(-prob[neg], kind="stable")][: round(neg_share * len(neg))]
    pos_kept = pos[np.argsort(prob[pos], kind="stable")][: round(pos_share * len(pos))]
    return MinedSelection(
        indices=np.sort(np.concatenate([neg_kept, pos_kept])).astype(np.int64),
        n_neg=len(neg_kept),
        n_pos=len(pos_kept),
        neg_min_prob=float(prob[neg_kept].min()) if len(neg_kept) else float("nan"),
        pos_max_prob=float(prob[pos_kept].max()) if len(pos_kept) else float("nan"),
    )
