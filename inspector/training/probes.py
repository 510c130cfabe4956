"""Shortcut probes: does a model find spiders, or something the compositor left behind?

Each probe changes one property of a tile set that a spider detector should not care about (sharpness, paste
seams, blur/noise level) and reads the model's false-alarm rate or recall again. Pure numpy/OpenCV: the model is
a ``score(images) -> spider probability`` callable the caller supplies (``inspector evaluate --probes`` passes the
daemon's onnxruntime path).

- **sharp patch** — every spider-free tile Gaussian-blurred (σ 1.5 and 3 px at 224) except one random patch the
  size of a spider box of the set, kept as it was: a model that learned "sharp thing on soft grapes" calls it a
  spider. The probe FAILS when its false-alarm rate exceeds the set's normal false-alarm rate (same threshold) by
  more than :data:`SHARP_PATCH_MARGIN`.
- **blurred spider** (its mirror) — every spider tile blurred whole: the spider is as soft as its grapes. Recall.
- **seam** — spider-free tiles that carry a non-spider cut-out pasted exactly the way spiders are pasted (a
  companion set made by ``inspector tiles cross-style``, read from ``<set>/seam/``). False-alarm rate.
- **blur / noise levels** — the whole set blurred (σ px) or given sensor noise (grey levels, sd): accuracy, recall,
  false-alarm rate and ROC AUC per level.
- **species** — recall per spider species (from the set's ``meta.json`` ``spider_species``, else the photos'
  ``index.json``).
- **pointing** — the FAM pointing game of the unchanged set (from the evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from inspector.synth.tiles import TileSet
from inspector.training.metrics import roc_auc

Scorer = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.floating]]  # (N, H, W, 3) BGR -> (N,) spider prob

SHARP_PATCH_SIGMAS_PX = (1.5, 3.0)
SHARP_PATCH_MARGIN = 0.02  # allowed excess of the sharp-patch false-alarm rate over the normal one
BLUR_LEVELS_PX = (0.0, 1.0, 2.0, 3.0)
NOISE_LEVELS = (0.0, 4.0, 8.0, 16.0)
DEFAULT_PATCH_FRACTION = 0.03  # patch area share of the tile when the set has no spider box to copy


@dataclass(frozen=True)
class ProbeRow:
    probe: str  # e.g. "sharp patch σ 1.5"
    measure: str  # "false alarms" | "recall" | "accuracy"
    n: int
    rate: float  # the measure, 0..1
    roc_auc: float = float("nan")  # where the probe keeps both classes
    recall: float = float("nan")
    false_alarms: float = float("nan")


@dataclass(frozen=True)
class ProbeReport:
    threshold: float
    normal_false_alarms: float
    normal_recall: float
    pointing: float
    rows: list[ProbeRow] = field(default_factory=list)
    species: dict[str, tuple[int, float]] = field(default_factory=dict)  # species -> (spider tiles, recall)

    @property
    def sharp_patch_false_alarms(self) -> float:
        rates = [r.rate for r in self.rows if r.probe.startswith("sharp patch")]
        return max(rates) if rates else float("nan")

    @property
    def passed(self) -> bool:
        """False when a sharp grape patch is called a spider more often than the normal rate + the margin."""
        excess = self.sharp_patch_false_alarms - self.normal_false_alarms
        return not excess > SHARP_PATCH_MARGIN

    def as_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "normal_false_alarms": self.normal_false_alarms,
            "normal_recall": self.normal_recall,
            "pointing": self.pointing,
            "sharp_patch_false_alarms": self.sharp_patch_false_alarms,
            "sharp_patch_margin": SHARP_PATCH_MARGIN,
            "passed": self.passed,
            "rows": [asdict(r) for r in self.rows],
            "species": {k: {"n": n, "recall": r} for k, (n, r) in self.species.items()},
        }


def blur(images: npt.NDArray[np.uint8], sigma_px: float) -> npt.NDArray[np.uint8]:
    """Every image Gaussian-blurred with `sigma_px` (kernel ±3σ, reflected border); σ 0 returns a copy."""
    if sigma_px <= 0:
        return images.copy()
    return np.stack([np.asarray(cv2.GaussianBlur(im, (0, 0), sigma_px), np.uint8) for im in images])


def add_noise(images: npt.NDArray[np.uint8], sd: float, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Gaussian sensor noise of `sd` grey levels, independent per pixel and channel, clipped to 0..255."""
    if sd <= 0:
        return images.copy()
    noisy = images.astype(np.float32) + rng.normal(0.0, sd, images.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def patch_sizes_wh(tiles: TileSet) -> npt.NDArray[np.int64]:
    """(K, 2) patch sizes to draw from: the set's spider boxes (w, h), at least 4 px; a 3 % square if none."""
    side = tiles.images.shape[1]
    boxes = tiles.boxes_xyxy[tiles.labels == 1]
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])] if len(boxes) else boxes
    if len(boxes) == 0:
        s = max(4, round(side * math.sqrt(DEFAULT_PATCH_FRACTION)))
        return np.array([[s, s]], np.int64)
    wh = np.rint(boxes[:, 2:4] - boxes[:, 0:2]).astype(np.int64)
    return np.clip(wh, 4, side)


def sharp_patch(
    images: npt.NDArray[np.uint8], sizes_wh: npt.NDArray[np.int64], sigma_px: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Each image blurred with `sigma_px` except one patch (a size drawn from `sizes_wh`, at a random place) kept
    as it was. Returns the images and the patches' boxes (N, 4) xyxy."""
    out = blur(images, sigma_px)
    n, h, w = images.shape[:3]
    boxes = np.zeros((n, 4), np.int64)
    for i in range(n):
        pw, ph = (int(v) for v in sizes_wh[int(rng.integers(len(sizes_wh)))])
        pw, ph = min(pw, w), min(ph, h)
        x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        out[i, y : y + ph, x : x + pw] = images[i, y : y + ph, x : x + pw]
        boxes[i] = (x, y, x + pw, y + ph)
    return out, boxes


def _rate(p: npt.NDArray[np.floating], threshold: float) -> float:
    return float(np.mean(p >= threshold)) if len(p) else float("nan")


def _level_row(probe: str, p: npt.NDArray[np.floating], labels: npt.NDArray[np.integer], threshold: float) -> ProbeRow:
    pos = labels == 1
    return ProbeRow(
        probe,
        "accuracy",
        len(p),
        float(np.mean((p >= threshold) == pos)) if len(p) else float("nan"),
        roc_auc=roc_auc(p, labels),
        recall=_rate(p[pos], threshold),
        false_alarms=_rate(p[~pos], threshold),
    )


def species_of(tiles: TileSet, index: Mapping[str, str] | None = None) -> npt.NDArray[np.str_]:
    """(N,) the species of each spider tile's spider ("" where unknown): the set's ``meta["spider_species"]``
    (photo file name -> species) or `index`, looked up by the full origin and by its file name."""
    table = dict(index or {})
    recorded = tiles.meta.get("spider_species")
    if isinstance(recorded, dict):
        table.update({str(k): str(v) for k, v in recorded.items()})
    names = {k.rsplit("/", 1)[-1]: v for k, v in table.items()}
    return np.asarray([table.get(o, names.get(o.rsplit("/", 1)[-1], "")) if o else "" for o in tiles.spider_origin])


def run_probes(
    score: Scorer,
    tiles: TileSet,
    base_prob: npt.NDArray[np.floating],
    *,
    threshold: float = 0.5,
    pointing: float = float("nan"),
    seam: TileSet | None = None,
    species_index: Mapping[str, str] | None = None,
    seed: int = 0,
) -> ProbeReport:
    """Every probe on `tiles` (already scored: `base_prob`); `seam` is the companion set of pasted non-spiders."""
    rng = np.random.default_rng([seed, 27])
    labels = np.asarray(tiles.labels)
    pos, neg = labels == 1, labels != 1
    rows: list[ProbeRow] = []
    sizes = patch_sizes_wh(tiles)
    for sigma in SHARP_PATCH_SIGMAS_PX:
        if neg.any():
            imgs, _ = sharp_patch(tiles.images[neg], sizes, sigma, rng)
            rows.append(
                ProbeRow(f"sharp patch σ {sigma:g}", "false alarms", int(neg.sum()), _rate(score(imgs), threshold))
            )
    for sigma in SHARP_PATCH_SIGMAS_PX:
        if pos.any():
            p = score(blur(tiles.images[pos], sigma))
            rows.append(ProbeRow(f"blurred spider σ {sigma:g}", "recall", int(pos.sum()), _rate(p, threshold)))
    if seam is not None and len(seam):
        rows.append(
            ProbeRow("seam (pasted non-spider)", "false alarms", len(seam), _rate(score(seam.images), threshold))
        )
    for sigma in BLUR_LEVELS_PX[1:]:
        rows.append(_level_row(f"blur σ {sigma:g}", score(blur(tiles.images, sigma)), labels, threshold))
    for sd in NOISE_LEVELS[1:]:
        rows.append(_level_row(f"noise sd {sd:g}", score(add_noise(tiles.images, sd, rng)), labels, threshold))
    species = species_of(tiles, species_index)
    per_species = {
        s: (int(np.sum(pos & (species == s))), _rate(base_prob[pos & (species == s)], threshold))
        for s in sorted(set(species[pos].tolist()) - {""})
    }
    return ProbeReport(
        threshold=threshold,
        normal_false_alarms=_rate(base_prob[neg], threshold),
        normal_recall=_rate(base_prob[pos], threshold),
        pointing=pointing,
        rows=[_level_row("unchanged", base_prob, labels, threshold), *rows],
        species=per_species,
    )


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{100 * v:.1f} %"


def format_probes(name: str, report: ProbeReport) -> str:
    """Markdown: the probe table of one tile set, the per-species recall and the verdict line."""
    lines = [
        f"probes on {name} (threshold {report.threshold:g}; FAM pointing {_pct(report.pointing)})",
        "",
        "| probe | tiles | measure | value | recall | false alarms | ROC AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        auc = "—" if math.isnan(r.roc_auc) else f"{r.roc_auc:.3f}"
        lines.append(
            f"| {r.probe} | {r.n} | {r.measure} | {_pct(r.rate)} | {_pct(r.recall)} | {_pct(r.false_alarms)} | {auc} |"
        )
    if report.species:
        lines += [
            "",
            "recall per species: " + ", ".join(f"{k} {_pct(r)} ({n})" for k, (n, r) in report.species.items()),
        ]
    verdict = "passed" if report.passed else "FAILED"
    lines += [
        "",
        f"sharp-patch probe {verdict}: a sharp patch in a blurred spider-free tile is called a spider in "
        f"{_pct(report.sharp_patch_false_alarms)} of tiles against {_pct(report.normal_false_alarms)} normally "
        f"(allowed: + {100 * SHARP_PATCH_MARGIN:g} points)",
    ]
    return "\n".join(lines) + "\n"
