"""Hard-example mining (bootstrapping, Sung & Poggio 1994): the tiles of a large candidate pool that a model gets
most wrong, kept as a training set of their own.

Tiles drawn uniformly from the generator are mostly easy: a fine-tune spends most of its steps on tiles the model
already scores right. Scoring a large pool once (through the daemon's onnxruntime path, as the distillation
teachers are) and keeping the negatives it scores highest and the positives it scores lowest puts the steps where
the decision boundary is — the flecks and dark gaps that make clean bunches rejected, the pale or half-hidden
spiders it misses. Pure functions first; :func:`mine_tiles` runs them over tile sets (`inspector tiles mine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inspector.cliopts import check_share
from inspector.errors import InspectorError
from inspector.synth.tiles import TileSet, concat_tile_sets, load_tile_set, save_tile_set
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


def by_scale(scale_px: npt.NDArray[np.integer], kept: npt.NDArray[np.int64], pool: npt.NDArray[np.int64]) -> str:
    """'140 px 812 of 7100, 306 px 2188 of 4900' (tiles kept of the pool, per recorded tile scale)."""
    parts = []
    for px in np.unique(scale_px[pool]):
        name = f"{px} px" if px > 0 else "scale not recorded"
        parts.append(f"{name} {int(np.sum(scale_px[kept] == px))} of {int(np.sum(scale_px[pool] == px))}")
    return ", ".join(parts)


def shared_geometry(parts: object) -> dict[str, object]:
    """The candidates' calibration and tile scales, where every candidate set was cut with the same ones."""
    if not isinstance(parts, list) or not parts:
        return {}
    shared: dict[str, object] = {}
    for key in ("calibration", "scales", "tile_px"):
        values = [part.get(key) if isinstance(part, dict) else None for part in parts]
        if values[0] is not None and all(v == values[0] for v in values):
            shared[key] = values[0]
    return shared


def mined_meta(
    model: Path, candidates: Sequence[Path], pool: TileSet, sel: MinedSelection, shares: tuple[float, float]
) -> dict[str, object]:
    """meta.json of a mined set: the model, the candidate sets, where each cut fell, the shared geometry."""
    kinds, counts = np.unique(pool.kinds[sel.indices], return_counts=True)
    meta: dict[str, object] = {
        "source": "mined",
        "model": str(model),
        "candidates": [str(d) for d in candidates],
        "n_candidates": len(pool),
        "neg_share": shares[0],
        "pos_share": shares[1],
        "neg_min_prob": sel.neg_min_prob,
        "pos_max_prob": sel.pos_max_prob,
        "n": len(sel.indices),
        "counts": {str(k): int(c) for k, c in zip(kinds, counts, strict=True)},
        "parts": pool.meta["parts"],
    }
    meta.update(shared_geometry(pool.meta["parts"]))
    return meta


def mine_tiles(
    model: Path, candidates: Sequence[Path], out: Path, neg_share: float, pos_share: float, threads: int = 2
) -> None:
    """Score every candidate tile once through onnxruntime (the daemon's path), keep the hardest and write them
    as a tile set of their own in `out`; print what was kept, per class and tile scale."""
    from inspector.training.distill import teacher_spider_prob  # onnxruntime loads here

    check_share("--neg-share", neg_share)
    check_share("--pos-share", pos_share)
    if not model.is_file():
        raise InspectorError(f"--model {model}: no such model file")
    try:
        pool = concat_tile_sets([load_tile_set(d) for d in candidates])
    except ValueError as exc:
        raise InspectorError(f"--tiles: {exc}") from None
    if len(pool) == 0:
        raise InspectorError("the candidate tile sets hold no tiles")
    n_neg, n_pos = int(np.sum(pool.labels == 0)), int(np.sum(pool.labels == 1))
    if round(neg_share * n_neg) + round(pos_share * n_pos) == 0:  # as `hardest` rounds; before the scoring
        raise InspectorError("nothing kept: raise --neg-share or --pos-share")
    prob = teacher_spider_prob([model], pool, threads=threads)
    sel = hardest(prob, pool.labels, neg_share, pos_share)
    meta = mined_meta(model, candidates, pool, sel, (neg_share, pos_share))
    kept = pool.take(sel.indices, meta)
    try:
        save_tile_set(kept, out)
    except OSError as exc:
        raise InspectorError(f"--out {out}: cannot write the mined set ({exc.strerror or exc})") from None
    print(f"{out}: {len(kept)} of {len(pool)} tiles {meta['counts']}")
    for label, side in ((0, "negatives"), (1, "positives")):
        line = _kept_line(prob, pool, sel, label)
        if line:
            print(f"  {side}: {line}")


def _kept_line(prob: FloatArray, pool: TileSet, sel: MinedSelection, label: int) -> str:
    """'812 of 7100 kept (spider prob >= 0.731; 40 of the pool at or above 0.5); 140 px ...' ('' when none kept)."""
    in_pool = np.flatnonzero(pool.labels == label)
    kept = sel.indices[pool.labels[sel.indices] == label]
    if len(kept) == 0:
        return ""
    if label == 0:
        cut = f"spider prob >= {sel.neg_min_prob:.3f}; {int(np.sum(prob[in_pool] >= 0.5))} of the pool at or above 0.5"
    else:
        cut = f"spider prob <= {sel.pos_max_prob:.3f}; {int(np.sum(prob[in_pool] < 0.5))} of the pool below 0.5"
    return f"{len(kept)} of {len(in_pool)} kept ({cut}); {by_scale(pool.tile_scale_px, kept, in_pool)}"
