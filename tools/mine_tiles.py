#!/usr/bin/env python3
"""Mine the hard tiles of a candidate pool: the negatives a model scores highest and the spiders it scores lowest.

    tools/mine_tiles.py --model inspector/models/demo.onnx --tiles tiles/fit_a tiles/fit_b --out tiles/hard \
        [--neg-share 0.25] [--pos-share 0.25] [--threads 2]

Scores every tile of --tiles once (onnxruntime, the daemon's path) and writes the kept ones as a tile set of their
own (DIR/tiles.npz + meta.json: the model, the candidate sets, the shares and where each cut fell), to be trained
on beside the pool (``tools/train.py --tiles POOL... DIR``: class-balanced sampling gives the mined tiles extra
weight). See inspector/training/mining.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.errors import InspectorError

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "inspector" / "models" / "demo.onnx"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model with its manifest beside it")
    p.add_argument("--tiles", type=Path, nargs="+", required=True, help="candidate tile-set directories")
    p.add_argument("--out", type=Path, required=True, help="output folder for the mined tile set")
    p.add_argument("--neg-share", type=float, default=0.25, help="share of negatives kept, highest scored first")
    p.add_argument("--pos-share", type=float, default=0.25, help="share of positives kept, lowest scored first")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def _by_scale(scale_px: np.ndarray, kept: np.ndarray, pool: np.ndarray) -> str:
    """'140 px 812 of 7100, 306 px 2188 of 4900' (tiles kept of the pool, per recorded tile scale)."""
    parts = []
    for px in np.unique(scale_px[pool]):
        name = f"{px} px" if px > 0 else "scale not recorded"
        parts.append(f"{name} {int(np.sum(scale_px[kept] == px))} of {int(np.sum(scale_px[pool] == px))}")
    return ", ".join(parts)


def _shared_geometry(parts: object) -> dict[str, object]:
    """The candidates' calibration and tile scales, where every candidate set was cut with the same ones."""
    if not isinstance(parts, list) or not parts:
        return {}
    shared: dict[str, object] = {}
    for key in ("calibration", "scales", "tile_px"):
        values = [part.get(key) if isinstance(part, dict) else None for part in parts]
        if values[0] is not None and all(v == values[0] for v in values):
            shared[key] = values[0]
    return shared


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        for flag, share in (("--neg-share", args.neg_share), ("--pos-share", args.pos_share)):
            if not 0.0 <= share <= 1.0:
                raise InspectorError(f"{flag} must be a share in [0, 1], got {share:g}")
        if not args.model.is_file():
            raise InspectorError(f"--model {args.model}: no such model file")
        from inspector.synth.tiles import concat_tile_sets, load_tile_set, save_tile_set
        from inspector.training.distill import teacher_spider_prob
        from inspector.training.mining import hardest

        pool = concat_tile_sets([load_tile_set(d) for d in args.tiles])
        if len(pool) == 0:
            raise InspectorError("the candidate tile sets hold no tiles")
        prob = teacher_spider_prob([args.model], pool, threads=args.threads)
        sel = hardest(prob, pool.labels, args.neg_share, args.pos_share)
        if len(sel.indices) == 0:
            raise InspectorError("nothing kept: raise --neg-share or --pos-share")
        kinds, counts = np.unique(pool.kinds[sel.indices], return_counts=True)
        meta: dict[str, object] = {
            "source": "mined",
            "model": str(args.model),
            "candidates": [str(d) for d in args.tiles],
            "n_candidates": len(pool),
            "neg_share": args.neg_share,
            "pos_share": args.pos_share,
            "neg_min_prob": sel.neg_min_prob,
            "pos_max_prob": sel.pos_max_prob,
            "n": len(sel.indices),
            "counts": {str(k): int(c) for k, c in zip(kinds, counts, strict=True)},
            "parts": pool.meta["parts"],
        }
        meta.update(_shared_geometry(pool.meta["parts"]))
        kept = pool.take(sel.indices, meta)
        try:
            save_tile_set(kept, args.out)
        except OSError as exc:
            raise InspectorError(f"--out {args.out}: cannot write the mined set ({exc.strerror or exc})") from None
    except (InspectorError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    neg_pool, pos_pool = np.flatnonzero(pool.labels == 0), np.flatnonzero(pool.labels == 1)
    neg_kept = sel.indices[pool.labels[sel.indices] == 0]
    pos_kept = sel.indices[pool.labels[sel.indices] == 1]
    print(f"{args.out}: {len(kept)} of {len(pool)} tiles {meta['counts']}")
    if sel.n_neg:
        print(
            f"  negatives: {sel.n_neg} of {len(neg_pool)} kept (spider prob >= {sel.neg_min_prob:.3f}; "
            f"{int(np.sum(prob[neg_pool] >= 0.5))} of the pool at or above 0.5); "
            f"{_by_scale(pool.tile_scale_px, neg_kept, neg_pool)}"
        )
    if sel.n_pos:
        print(
            f"  positives: {sel.n_pos} of {len(pos_pool)} kept (spider prob <= {sel.pos_max_prob:.3f}; "
            f"{int(np.sum(prob[pos_pool] < 0.5))} of the pool below 0.5); "
            f"{_by_scale(pool.tile_scale_px, pos_kept, pos_pool)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
