#!/usr/bin/env python3
"""Evaluate an exported model on tile sets: accuracy, precision, recall, ROC AUC, recall at 1 % false rejects,
FAM pointing game — beside the seed paper's figures.

    python tools/evaluate.py --model inspector/models/demo.onnx --tiles holdout=tiles/real_holdout procedural=tiles/proc
    python tools/evaluate.py --tiles val=tiles/v3_val --errors runs/errors   # + pictures of the misclassified tiles
    python tools/evaluate.py --model runs/new.onnx --baseline inspector/models/demo.onnx \
        --tiles sel=tiles/v5_val,tiles/v5_val_s38 fresh=tiles/v5_val_s44 --pick-threshold sel --sweep --plots runs/p

``NAME=DIR1,DIR2`` evaluates several tile sets as one. ``--pick-threshold NAME`` reads every set at the threshold
that is most accurate on set NAME (the sweep's 0.05 steps; ties to the lower); ``--sweep`` prints that sweep for
every set and ``--plots DIR`` draws it (DIR/<set>_sweep.png). ``--baseline MODEL`` runs a second model on the same
tiles (at ``--baseline-threshold``) and prints the paired comparison: the tiles each gets right where the other is
wrong, and the accuracy difference with its paired standard error.

Runs the daemon's path only (onnxruntime through inspector.model, FAM through inspector.fam; no torch). The FAM
is the paper's Eq. 1 (``--fam-mode paper``, default) or the per-layer normalised variant. Pointing: the share of
spider tiles whose FAM peak lies inside the spider box grown by 4 px (at 224).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.errors import InspectorError

if TYPE_CHECKING:
    from inspector.synth.tiles import TileSet
    from inspector.training.compare import SweepPoint
    from inspector.training.evaluation import Evaluation

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "inspector" / "models" / "demo.onnx"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model with its manifest beside it")
    p.add_argument("--tiles", nargs="+", required=True, metavar="[NAME=]DIR", help="tile-set directories")
    p.add_argument("--fam-mode", choices=("paper", "normalized"), default="paper")
    p.add_argument("--threshold", type=float, help="spider probability threshold (default 0.5)")
    p.add_argument("--pick-threshold", metavar="NAME", help="use the most accurate sweep threshold on tile set NAME")
    p.add_argument("--sweep", action="store_true", help="print the threshold sweep of every tile set")
    p.add_argument("--plots", type=Path, metavar="DIR", help="draw the threshold sweeps into DIR/<set>_sweep.png")
    p.add_argument("--baseline", type=Path, metavar="MODEL", help="compare with this model on the same tiles")
    p.add_argument("--baseline-threshold", type=float, default=0.5, help="the baseline's threshold (default 0.5)")
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
    from inspector.training.compare import best_point, correct_at, paired_difference, sweep_plot, threshold_sweep
    from inspector.training.evaluation import at_threshold, evaluate_model, format_table

    _check_options(args)
    sets = _load_sets(args.tiles)
    names = [name for name, _ in sets]
    if args.pick_threshold and args.pick_threshold not in names:
        raise InspectorError(f"--pick-threshold {args.pick_threshold}: no such tile set (given: {', '.join(names)})")

    def score(model: Path, threshold: float) -> list[Evaluation]:
        return [
            evaluate_model(model, t, mode=args.fam_mode, threshold=threshold, threads=args.threads) for _, t in sets
        ]

    evals = score(args.model, 0.5)
    base = score(args.baseline, args.baseline_threshold) if args.baseline else []
    sweeps = [threshold_sweep(ev.spider_prob, tiles.labels) for ev, (_, tiles) in zip(evals, sets, strict=True)]
    threshold = 0.5 if args.threshold is None else args.threshold
    if args.pick_threshold:
        best = best_point(sweeps[names.index(args.pick_threshold)])
        threshold = threshold if best is None else best.threshold
        print(f"threshold {threshold:.2f}: the most accurate on {args.pick_threshold}")
    rows: list[tuple[str, Evaluation]] = []
    out: dict[str, dict[str, Any]] = {}
    for i, (name, tiles) in enumerate(sets):
        ev = at_threshold(evals[i], tiles, threshold)
        rows.append((name, ev))
        kinds = ", ".join(f"{k} {100 * v:.1f} %" for k, v in ev.per_kind_accuracy.items())
        print(f"{name}: {ev.figures.n} tiles, {ev.tiles_per_s:.0f} tiles/s; accuracy per kind: {kinds}")
        for px, acc in ev.per_scale_accuracy.items():
            n_px = int((tiles.tile_scale_px == px).sum())
            parts = ", ".join(f"{k} {100 * v:.1f} %" for k, v in acc.items() if k != "all")
            print(f"  tiles cut at {px} px ({n_px}): accuracy {100 * acc['all']:.1f} % ({parts})")
        out[name] = {**ev.figures.as_dict(), "per_kind_accuracy": ev.per_kind_accuracy, "tiles_per_s": ev.tiles_per_s}
        if ev.per_scale_accuracy:
            out[name]["per_scale_accuracy"] = {str(px): acc for px, acc in ev.per_scale_accuracy.items()}
        if args.sweep:
            _print_sweep(sweeps[i], threshold)
            out[name]["sweep"] = [vars(s) for s in sweeps[i]]
        if base:
            b = base[i]
            rows.append((f"{name} (baseline)", b))
            paired = paired_difference(
                correct_at(ev.spider_prob, tiles.labels, threshold),
                correct_at(b.spider_prob, tiles.labels, args.baseline_threshold),
            )
            print(f"  against the baseline: {paired.describe('model', 'baseline')}; "
                  f"ROC AUC {ev.figures.roc_auc:.4f} against {b.figures.roc_auc:.4f}")  # fmt: skip
            out[name]["baseline"] = {**b.figures.as_dict(), "per_kind_accuracy": b.per_kind_accuracy,
                                     "paired": vars(paired)}  # fmt: skip
        if args.plots:
            curves = [("model", sweeps[i], threshold)]
            if base:
                curves.append(("baseline", threshold_sweep(base[i].spider_prob, tiles.labels), args.baseline_threshold))
            plot = sweep_plot(curves, f"{name}: threshold sweep", args.plots / f"{name}_sweep.png")
            print(f"  sweep plot -> {plot}" if plot else "  sweep plot: needs matplotlib (pip install .[plots])")
        if args.errors:
            _write_errors(args, name, tiles, ev, threshold)
    print()
    against = f"; baseline {args.baseline} at {args.baseline_threshold}" if args.baseline else ""
    print(f"model {args.model} (FAM mode {args.fam_mode}, threshold {threshold}{against})")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """One-line errors for contradicting or out-of-range options; creates the output folders."""
    if args.threshold is not None and args.pick_threshold:
        raise InspectorError("give --threshold or --pick-threshold, not both")
    for flag, value in (("--threshold", args.threshold), ("--baseline-threshold", args.baseline_threshold)):
        if value is not None and not 0.0 < value < 1.0:
            raise InspectorError(f"{flag} must lie in (0, 1), got {value}")
    for flag, folder in (("--errors", args.errors), ("--plots", args.plots)):
        if folder:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InspectorError(f"{flag} {folder}: cannot create it ({exc.strerror})") from None


def _load_sets(items: list[str]) -> list[tuple[str, TileSet]]:
    """``[NAME=]DIR[,DIR...]`` -> (name, the tile sets concatenated); the name defaults to the folder's."""
    from inspector.synth.tiles import concat_tile_sets, load_tile_set

    sets = []
    for item in items:
        name, sep, paths = item.partition("=")
        if not sep:
            name, paths = Path(item).name, item
        sets.append((name, concat_tile_sets([load_tile_set(Path(p)) for p in paths.split(",")])))
    return sets


def _print_sweep(sweep: list[SweepPoint], threshold: float) -> None:
    print("  threshold  accuracy  recall  false alarms")
    for s in sweep:
        rates = f"{100 * s.accuracy:7.2f}  {100 * s.recall:6.1f}  {100 * s.false_alarm_rate:12.1f}"
        print(f"  {s.threshold:9.2f}  {rates}{'  <-' if s.threshold == threshold else ''}")


def _write_errors(args: argparse.Namespace, name: str, tiles: TileSet, ev: Evaluation, threshold: float) -> None:
    """--errors: mosaics of the worst missed spiders and false alarms, and the sources missed most."""
    import cv2

    from inspector.training.evaluation import error_mosaic, misclassified, missed_by_origin

    missed, alarms = misclassified(ev.spider_prob, tiles.labels, threshold)
    for what, idx in (("missed", missed), ("false_alarms", alarms)):
        picture = error_mosaic(args.model, tiles, idx[:64], ev.spider_prob, args.fam_mode, threads=args.threads)
        if picture is not None:
            path = args.errors / f"{name}_{what}.png"
            if not cv2.imwrite(str(path), picture):
                raise InspectorError(f"--errors: could not write {path}")
            print(f"  {what.replace('_', ' ')}: {len(idx)} -> {path}")
    by_origin = missed_by_origin(ev.spider_prob, tiles.labels, tiles.spider_origin, threshold)
    if by_origin:
        worst = ", ".join(f"{o} {m}/{n}" for o, m, n in by_origin[:8])
        print(f"  missed spiders by source (missed/spider tiles), most first: {worst}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InspectorError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
