#!/usr/bin/env python3
"""Evaluate an exported model on tile sets: accuracy, precision, recall, ROC AUC, recall at 1 % false rejects,
FAM pointing game — beside the seed paper's figures.

    python tools/evaluate.py --model inspector/models/demo.onnx --tiles holdout=tiles/real_holdout procedural=tiles/proc
    python tools/evaluate.py --tiles val=tiles/v3_val --errors runs/errors   # + pictures of the misclassified tiles

Runs the daemon's path only (onnxruntime through inspector.model, FAM through inspector.fam; no torch). The FAM
is the paper's Eq. 1 (``--fam-mode paper``, default) or the per-layer normalised variant. Pointing: the share of
spider tiles whose FAM peak lies inside the spider box grown by 4 px (at 224).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inspector.errors import InspectorError

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "inspector" / "models" / "demo.onnx"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model with its manifest beside it")
    p.add_argument("--tiles", nargs="+", required=True, metavar="[NAME=]DIR", help="tile-set directories")
    p.add_argument("--fam-mode", choices=("paper", "normalized"), default="paper")
    p.add_argument("--threshold", type=float, default=0.5, help="spider probability threshold (default 0.5)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    p.add_argument(
        "--errors",
        type=Path,
        metavar="DIR",
        help="also write DIR/<set>_missed.png and DIR/<set>_false_alarms.png: the misclassified tiles (the worst "
        "64 of each) with their FAM as a heat overlay, spider box, kind, score and spider source; and the sources "
        "whose spiders are missed most",
    )
    return p


def run(args: argparse.Namespace) -> int:
    import cv2

    from inspector.synth.tiles import load_tile_set
    from inspector.training.evaluation import (
        error_mosaic,
        evaluate_model,
        format_table,
        misclassified,
        missed_by_origin,
    )

    if not 0.0 < args.threshold < 1.0:
        raise InspectorError(f"--threshold must lie in (0, 1), got {args.threshold}")
    if args.errors:
        try:
            args.errors.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InspectorError(f"--errors {args.errors}: cannot create it ({exc.strerror})") from None
    rows = []
    for item in args.tiles:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        tiles = load_tile_set(Path(path))
        ev = evaluate_model(args.model, tiles, mode=args.fam_mode, threshold=args.threshold, threads=args.threads)
        rows.append((name, ev))
        kinds = ", ".join(f"{k} {100 * v:.1f} %" for k, v in ev.per_kind_accuracy.items())
        print(f"{name}: {ev.figures.n} tiles, {ev.tiles_per_s:.0f} tiles/s; accuracy per kind: {kinds}")
        if args.errors:
            missed, alarms = misclassified(ev.spider_prob, tiles.labels, args.threshold)
            for what, idx in (("missed", missed), ("false_alarms", alarms)):
                picture = error_mosaic(args.model, tiles, idx[:64], ev.spider_prob, args.fam_mode, threads=args.threads)
                if picture is not None:
                    path = args.errors / f"{name}_{what}.png"
                    if not cv2.imwrite(str(path), picture):
                        raise InspectorError(f"--errors: could not write {path}")
                    print(f"  {what.replace('_', ' ')}: {len(idx)} -> {path}")
            by_origin = missed_by_origin(ev.spider_prob, tiles.labels, tiles.spider_origin, args.threshold)
            if by_origin:
                worst = ", ".join(f"{o} {m}/{n}" for o, m, n in by_origin[:8])
                print(f"  missed spiders by source (missed/spider tiles), most first: {worst}")
    print()
    print(f"model {args.model} (FAM mode {args.fam_mode}, threshold {args.threshold})")
    print(format_table(rows))
    if args.json:
        out = {
            name: {**ev.figures.as_dict(), "per_kind_accuracy": ev.per_kind_accuracy, "tiles_per_s": ev.tiles_per_s}
            for name, ev in rows
        }
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InspectorError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
