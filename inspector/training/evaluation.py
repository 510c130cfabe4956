"""Evaluate an exported model on a tile set through the daemon's own path: onnxruntime + numpy, no torch.

The model runs through :class:`inspector.model.Model` (manifest preprocessing, batching) and the FAM is the
paper's Eq. 1 from :func:`inspector.fam.tile_fam` (bilinear upsampling of fam1..fam5 to 224, summed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from inspector.evidence import heat_overlay
from inspector.fam import FamMode, tile_fam
from inspector.model import Model
from inspector.progress import progress
from inspector.synth.tiles import TileSet, load_tile_set, mosaic
from inspector.training.metrics import TileFigures, tile_figures
from inspector.training.probes import ProbeReport, Scorer, run_probes
from inspector.types import U8Array

# The seed paper's test accuracies (Menikdiwela et al.), for the side-by-side table.
PAPER_FIGURES = (("VGG16 (paper)", 0.84), ("Faster R-CNN (paper)", 0.72), ("CAM (paper)", 0.9532))


@dataclass(frozen=True)
class Evaluation:
    figures: TileFigures
    per_kind_accuracy: dict[str, float]
    tiles_per_s: float
    spider_prob: np.ndarray  # (N,) float32, per tile, in the tile set's order
    # per tile scale (frame px the tiles were cut at): {"all": accuracy, kind: accuracy}; empty where not recorded
    per_scale_accuracy: dict[int, dict[str, float]] = field(default_factory=dict)


def evaluate_model(
    model_path: Path,
    tiles: TileSet,
    mode: FamMode = "paper",
    threshold: float = 0.5,
    batch: int = 32,
    threads: int = 2,
) -> Evaluation:
    """Run ``model_path`` over every tile; FAM peaks for the spider tiles; all figures."""
    import time

    with Model(model_path, providers=("cpu",), threads=threads, batch_size=batch) as model:
        scale = model.manifest.fam_layer_scale
        size = model.manifest.input.size
        probs: list[np.ndarray] = []
        maps_pos: list[np.ndarray] = []
        t0 = time.monotonic()
        for i in progress(range(0, len(tiles.labels), batch), desc="evaluate", unit="batch"):
            inf = model.infer(tiles.images[i : i + batch])
            probs.append(inf.spider_prob)
            pos = tiles.labels[i : i + batch] == 1
            if pos.any():
                maps_pos.append(tile_fam([f[pos] for f in inf.fams], size, mode, scale))
        elapsed = time.monotonic() - t0
    p = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    pos_all = tiles.labels == 1
    maps = np.concatenate(maps_pos) if maps_pos else None
    boxes = tiles.boxes_xyxy[pos_all] * (size / tiles.images.shape[1])
    figures = tile_figures(p, tiles.labels, maps, boxes, threshold=threshold)
    tiles_per_s = len(p) / elapsed if elapsed > 0 else float("nan")
    return Evaluation(figures, _per_kind(p, tiles, threshold), tiles_per_s, p, _per_scale(p, tiles, threshold))


@contextmanager
def scorer(model_path: Path, batch: int = 32, threads: int = 2) -> Iterator[Scorer]:
    """The model as a ``score(images) -> spider probability`` callable (the probes' interface), open while in use."""
    with Model(model_path, providers=("cpu",), threads=threads, batch_size=batch) as model:

        def score(images: np.ndarray) -> np.ndarray:
            return model.infer(images).spider_prob

        yield score


def probe_model(
    model_path: Path,
    tiles: TileSet,
    ev: Evaluation,
    threshold: float,
    *,
    seam: TileSet | None = None,
    species_index: dict[str, str] | None = None,
    seed: int = 0,
    threads: int = 2,
) -> ProbeReport:
    """The shortcut probes (:mod:`inspector.training.probes`) of `model_path` on `tiles`, already evaluated as `ev`."""
    with scorer(model_path, threads=threads) as score:
        return run_probes(
            score,
            tiles,
            ev.spider_prob,
            threshold=threshold,
            pointing=ev.figures.pointing,
            seam=seam,
            species_index=species_index,
            seed=seed,
        )


def seam_companion(folder: Path) -> TileSet | None:
    """The seam-probe set made beside a cross-style set (``folder/seam``), or None."""
    return load_tile_set(folder / "seam") if (folder / "seam" / "tiles.npz").is_file() else None


def at_threshold(ev: Evaluation, tiles: TileSet, threshold: float) -> Evaluation:
    """The same evaluation read at another threshold, without running the model again (pointing and AUC do not
    depend on the threshold)."""
    figures = replace(tile_figures(ev.spider_prob, tiles.labels, threshold=threshold), pointing=ev.figures.pointing)
    return replace(
        ev,
        figures=figures,
        per_kind_accuracy=_per_kind(ev.spider_prob, tiles, threshold),
        per_scale_accuracy=_per_scale(ev.spider_prob, tiles, threshold),
    )


def _accuracy(p: np.ndarray, tiles: TileSet, threshold: float, where: np.ndarray) -> float:
    return float(np.mean((p[where] >= threshold) == (tiles.labels[where] == 1)))


def _per_kind(p: np.ndarray, tiles: TileSet, threshold: float, where: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy per tile kind, over the tiles `where` selects (all by default)."""
    sel = np.ones(len(p), bool) if where is None else where
    return {k: _accuracy(p, tiles, threshold, sel & (tiles.kinds == k)) for k in sorted(set(tiles.kinds[sel].tolist()))}


MAX_SCALES = 6  # more recorded tile scales than this (sizes drawn per tile) are grouped into quartiles


def scale_groups(scale_px: np.ndarray) -> np.ndarray:
    """(N,) the scale each tile is reported under: its own, or — where a set records more than
    :data:`MAX_SCALES` sizes — the largest size of its quartile of the sizes (0 stays 0: not recorded)."""
    known = scale_px[scale_px > 0]
    if len(set(known.tolist())) <= MAX_SCALES:
        return scale_px
    edges = np.unique(np.quantile(known, [0.25, 0.5, 0.75, 1.0], method="higher").astype(scale_px.dtype))
    groups = edges[np.minimum(np.searchsorted(edges, scale_px), len(edges) - 1)]
    return np.where(scale_px > 0, groups, 0)


def _per_scale(p: np.ndarray, tiles: TileSet, threshold: float) -> dict[int, dict[str, float]]:
    """Accuracy ("all" and per kind) per tile scale (or group of scales, :func:`scale_groups`); empty when the set
    did not record its scales."""
    out: dict[int, dict[str, float]] = {}
    groups = scale_groups(tiles.tile_scale_px)
    for px in sorted(set(groups.tolist()) - {0}):
        at = groups == px
        out[int(px)] = {"all": _accuracy(p, tiles, threshold, at), **_per_kind(p, tiles, threshold, at)}
    return out


def misclassified(prob: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[list[int], list[int]]:
    """Tile indices of missed spiders (lowest score first) and of false alarms (highest score first)."""
    missed = np.nonzero((labels == 1) & (prob < threshold))[0]
    alarms = np.nonzero((labels != 1) & (prob >= threshold))[0]
    order_m = np.argsort(prob[missed], kind="stable")
    order_a = np.argsort(-prob[alarms], kind="stable")
    return [int(i) for i in missed[order_m]], [int(i) for i in alarms[order_a]]


def missed_by_origin(
    prob: np.ndarray, labels: np.ndarray, origins: np.ndarray, threshold: float
) -> list[tuple[str, int, int]]:
    """(origin, missed, spider tiles) for each recorded spider origin with a miss, most misses first (then the higher
    share, then the name). A photo whose spider is missed in most of its poses points at its cut-out, not the model."""
    rows: list[tuple[str, int, int]] = []
    spider = labels == 1
    for origin in sorted(set(origins[spider].tolist()) - {""}):
        here = spider & (origins == origin)
        missed = int(np.sum(prob[here] < threshold))
        if missed:
            rows.append((origin, missed, int(here.sum())))
    return sorted(rows, key=lambda r: (-r[1], -r[1] / r[2], r[0]))


def error_mosaic(
    model_path: Path,
    tiles: TileSet,
    indices: list[int],
    prob: np.ndarray,
    mode: FamMode = "paper",
    cols: int = 8,
    cell_px: int = 160,
    threads: int = 2,
) -> U8Array | None:
    """The tiles at `indices` with their FAM as a heat overlay, spider box, kind and score; None when empty.

    Where the map sits tells a missed spider the model looked at but doubted from one it never looked at.
    """
    if not indices:
        return None
    with Model(model_path, providers=("cpu",), threads=threads) as model:
        scale = model.manifest.fam_layer_scale
        size = model.manifest.input.size
        maps = tile_fam(list(model.infer(tiles.images[indices]).fams), size, mode, scale)
    tile_wh = (tiles.images.shape[2], tiles.images.shape[1])
    overlays = [
        heat_overlay(tiles.images[i], cv2.resize(heat, tile_wh, interpolation=cv2.INTER_LINEAR))
        for i, heat in zip(indices, maps, strict=True)
    ]
    shown = TileSet(np.stack(overlays), tiles.labels[indices], tiles.boxes_xyxy[indices], tiles.kinds[indices])
    captions = [f"{tiles.kinds[i]} {prob[i]:.2f} {_short(tiles.spider_origin[i])}".rstrip() for i in indices]
    return mosaic(shown, list(range(len(indices))), cols, draw_boxes=True, cell_px=cell_px, captions=captions)


def _short(origin: str, chars: int = 8) -> str:
    """A caption-sized origin: a photo's name without its extension, cut to `chars`; kinds as they are."""
    return origin.removeprefix("procedural:") if origin.startswith("procedural:") else Path(origin).stem[:chars]


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{100 * v:.1f} %"


def format_table(rows: list[tuple[str, Evaluation]]) -> str:
    """Markdown table: one row per evaluated tile set, then the seed paper's accuracies."""
    head = (
        "| tile set | tiles (spider) | accuracy | precision | recall | ROC AUC | recall @ 1 % false rejects "
        "| FAM pointing |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for name, ev in rows:
        f = ev.figures
        auc = "—" if math.isnan(f.roc_auc) else f"{f.roc_auc:.3f}"
        lines.append(
            f"| {name} | {f.n} ({f.n_pos}) | {_pct(f.accuracy)} | {_pct(f.precision)} | {_pct(f.recall)} "
            f"| {auc} | {_pct(f.recall_at_far)} | {_pct(f.pointing)} |"
        )
    for name, acc in PAPER_FIGURES:
        lines.append(f"| {name} | — | {_pct(acc)} | — | — | — | — | — |")
    return head + "\n".join(lines) + "\n"
