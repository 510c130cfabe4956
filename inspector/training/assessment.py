"""`inspector evaluate` from options to report: score tile sets through the daemon's path (onnxruntime via
:mod:`inspector.model`, FAM via :mod:`inspector.fam`; no torch), pick or apply a threshold, compare with a
baseline model, draw sweeps and the misclassified tiles, write the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.cliopts import named_item
from inspector.errors import InspectorError
from inspector.synth.tiles import TileSet, concat_tile_sets, load_tile_set
from inspector.training.compare import (
    SweepPoint,
    best_point,
    correct_at,
    paired_difference,
    sweep_plot,
    threshold_sweep,
)
from inspector.training.evaluation import (
    Evaluation,
    at_threshold,
    error_mosaic,
    evaluate_model,
    format_table,
    misclassified,
    missed_by_origin,
    probe_model,
    scale_groups,
    seam_companion,
)
from inspector.training.probes import format_probes


def run(args: argparse.Namespace) -> int:
    """The whole of `inspector evaluate` (options as its parser defines them)."""
    check_options(args)
    sets = load_named_sets(args.tiles)
    names = [name for name, _ in sets]
    if args.pick_threshold and args.pick_threshold not in names:
        raise InspectorError(f"--pick-threshold {args.pick_threshold}: no such tile set (given: {', '.join(names)})")

    def score(model: Path, threshold: float) -> list[Evaluation]:
        return [
            evaluate_model(model, t, mode=args.fam_mode, threshold=threshold, threads=args.threads) for _, t in sets
        ]

    species = species_index(args.real) if args.probes and args.real else None
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
        out[name] = _report_set(name, tiles, ev)
        if args.sweep:
            _print_sweep(sweeps[i], threshold)
            out[name]["sweep"] = [vars(s) for s in sweeps[i]]
        if base:
            rows.append((f"{name} (baseline)", base[i]))
            out[name]["baseline"] = _against_baseline(ev, base[i], tiles, threshold, args.baseline_threshold)
        if args.plots:
            _plot_sweep(args, name, tiles, sweeps[i], threshold, base[i] if base else None)
        if args.errors:
            write_errors(args, name, tiles, ev, threshold)
    failed = [name for name, _ in sets if args.probes and not _probe_set(args, name, sets, evals, threshold, out, species)]
    print()
    against = f"; baseline {args.baseline} at {args.baseline_threshold}" if args.baseline else ""
    print(f"model {args.model} (FAM mode {args.fam_mode}, threshold {threshold}{against})")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if failed:
        print(f"FAILED the sharp-patch probe: {', '.join(failed)}")
        return 2
    return 0


def _probe_set(
    args: argparse.Namespace,
    name: str,
    sets: list[tuple[str, TileSet]],
    evals: list[Evaluation],
    threshold: float,
    out: dict[str, dict[str, Any]],
    species: dict[str, str] | None,
) -> bool:
    """--probes on one set: print the table, add it to the JSON; True when the model passes."""
    i = [n for n, _ in sets].index(name)
    seam = load_seam_set(args.tiles, name)
    report = probe_model(
        args.model, sets[i][1], evals[i], threshold, seam=seam, species_index=species, seed=args.probe_seed,
        threads=args.threads,
    )  # fmt: skip
    print()
    print(format_probes(name, report))
    if seam is None:
        print(f"  no seam probe: {name} has no seam/ companion set (inspector tiles cross-style makes one)")
    out[name]["probes"] = report.as_dict()
    return report.passed


def load_seam_set(items: list[str], name: str) -> TileSet | None:
    """The companion sets ``DIR/seam`` of the tile set `name` (``[NAME=]DIR[,DIR...]``), concatenated; None if none."""
    for set_name, paths in map(named_item, items):
        if set_name == name:
            found = [t for t in (seam_companion(Path(p)) for p in paths.split(",")) if t is not None]
            return concat_tile_sets(found) if found else None
    return None


def species_index(real: Path) -> dict[str, str]:
    """Spider photo file -> species, from ``REAL/spiders/photos/index.json`` (both splits)."""
    path = real / "spiders" / "photos" / "index.json"
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InspectorError(f"--real {real}: cannot read {path} ({getattr(exc, 'strerror', None) or exc})") from None
    return {str(e["file"]): str(e["species"]) for split in index.values() for e in split}


def check_options(args: argparse.Namespace) -> None:
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


def load_named_sets(items: list[str]) -> list[tuple[str, TileSet]]:
    """``[NAME=]DIR[,DIR...]`` -> (name, the tile sets concatenated); the name defaults to the folder's."""
    sets = []
    for name, paths in map(named_item, items):
        sets.append((name, concat_tile_sets([load_tile_set(Path(p)) for p in paths.split(",")])))
    return sets


def _report_set(name: str, tiles: TileSet, ev: Evaluation) -> dict[str, Any]:
    """Print the set's accuracy per kind and per tile scale; its figures for the JSON."""
    kinds = ", ".join(f"{k} {100 * v:.1f} %" for k, v in ev.per_kind_accuracy.items())
    print(f"{name}: {ev.figures.n} tiles, {ev.tiles_per_s:.0f} tiles/s; accuracy per kind: {kinds}")
    groups = scale_groups(tiles.tile_scale_px)
    grouped = "up to " if not np.array_equal(groups, tiles.tile_scale_px) else ""
    for px, acc in ev.per_scale_accuracy.items():
        n_px = int((groups == px).sum())
        parts = ", ".join(f"{k} {100 * v:.1f} %" for k, v in acc.items() if k != "all")
        print(f"  tiles cut at {grouped}{px} px ({n_px}): accuracy {100 * acc['all']:.1f} % ({parts})")
    figures: dict[str, Any] = {**ev.figures.as_dict(), "per_kind_accuracy": ev.per_kind_accuracy, "tiles_per_s": ev.tiles_per_s}
    if ev.per_scale_accuracy:
        figures["per_scale_accuracy"] = {str(px): acc for px, acc in ev.per_scale_accuracy.items()}
    return figures


def _against_baseline(
    ev: Evaluation, base: Evaluation, tiles: TileSet, threshold: float, base_threshold: float
) -> dict[str, Any]:
    """Print the paired comparison with the baseline on the same tiles; the baseline's figures for the JSON."""
    paired = paired_difference(
        correct_at(ev.spider_prob, tiles.labels, threshold),
        correct_at(base.spider_prob, tiles.labels, base_threshold),
    )
    print(f"  against the baseline: {paired.describe('model', 'baseline')}; "
          f"ROC AUC {ev.figures.roc_auc:.4f} against {base.figures.roc_auc:.4f}")  # fmt: skip
    return {**base.figures.as_dict(), "per_kind_accuracy": base.per_kind_accuracy, "paired": vars(paired)}


def _plot_sweep(
    args: argparse.Namespace,
    name: str,
    tiles: TileSet,
    sweep: list[SweepPoint],
    threshold: float,
    base: Evaluation | None,
) -> None:
    """--plots: DIR/<set>_sweep.png, the model's sweep and the baseline's."""
    curves = [("model", sweep, threshold)]
    if base is not None:
        curves.append(("baseline", threshold_sweep(base.spider_prob, tiles.labels), args.baseline_threshold))
    plot = sweep_plot(curves, f"{name}: threshold sweep", args.plots / f"{name}_sweep.png")
    print(f"  sweep plot -> {plot}" if plot else "  sweep plot: needs matplotlib (pip install .[plots])")


def _print_sweep(sweep: list[SweepPoint], threshold: float) -> None:
    print("  threshold  accuracy  recall  false alarms")
    for s in sweep:
        rates = f"{100 * s.accuracy:7.2f}  {100 * s.recall:6.1f}  {100 * s.false_alarm_rate:12.1f}"
        print(f"  {s.threshold:9.2f}  {rates}{'  <-' if s.threshold == threshold else ''}")


def write_errors(args: argparse.Namespace, name: str, tiles: TileSet, ev: Evaluation, threshold: float) -> None:
    """--errors: mosaics of the worst missed spiders and false alarms, and the sources missed most."""
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
