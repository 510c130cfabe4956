"""Cross-style evaluation tiles: holdout photos composed another way than :mod:`inspector.synth`.

A second, deliberately simple compositor, so a model is also judged on images its own generator did not make
(``inspector tiles cross-style``). No training, threshold or selection may use its sets.

How a set is made (all from the ``holdout`` split):

1. A vineyard photo from ``grapes/wgisd_full`` (uncut, no belt) at its *native* scale, measured per photo from its
   berries: the median Hough-circle diameter on the bunch boxes, taken as :data:`BERRY_MM` mm.
2. Its own sharpness measured (:func:`blur_sigma_px`: the Laplacian-to-gradient energy ratio before and after a
   known blur gives the Gaussian σ an image already carries).
3. Spiders from ``spiders/photos`` cut with GrabCut inside their box, shrunk (area resampling) to a span drawn
   from the set's range at the photo's native mm/px, blurred up to the photo's own measured σ (never sharper or
   softer than the grapes around them), and pasted with their alpha at a random place on a bunch.
4. The whole photo, spiders and grapes together, through one camera: resampled to the set's mm/px, Gaussian
   defocus σ, sensor noise, JPEG; σ, noise and quality drawn per photo render, recorded per tile.
5. Square tiles cut around each spider (it covers 1–5 % of the tile by the disc model, wholly inside at a random
   offset) and as many spider-free tiles of the same sizes from the same render's bunches; resized to 224.
6. A companion ``seam/`` set made the same way with non-spider cut-outs (irregular blobs of grapes, leaves or
   canes from *another* holdout photo, at the same spans) in the spiders' place: the seam probe of
   ``inspector evaluate --probes``.

Where a photo is coarser than the set's mm/px it is not enlarged by more than :data:`MAX_ENLARGE`; such photos are
left out and named in the set's ``meta.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from inspector.errors import InspectorError
from inspector.progress import progress
from inspector.synth.tiles import TileSet, save_tile_set
from inspector.types import U8Array

F32Array = npt.NDArray[np.float32]

BERRY_MM = 12.0  # wine-grape berry diameter (WGISD cultivars: about 10-15 mm)
MAX_ENLARGE = 1.15  # the most a photo may be enlarged to reach the set's mm/px
TILE_OUT_PX = 224
COVER_FRACTION = (0.01, 0.05)  # spider disc area / tile area
DEFOCUS_SIGMA_PX = (0.0, 1.2)  # camera-scale Gaussian defocus, per render
NOISE_SD = (0.5, 5.0)  # grey levels, per render
JPEG_QUALITY = (75, 95)
SPIDERS_PER_RENDER = 6


@dataclass(frozen=True)
class Cutout:
    """A cut-out at some scale: colour and coverage of the same size; `origin` names its photo."""

    bgr: U8Array
    alpha: F32Array
    origin: str

    @property
    def span_px(self) -> int:
        return max(self.bgr.shape[:2])


@dataclass(frozen=True)
class Photo:
    file: str
    image: U8Array  # native scale
    bunches_xywh: list[tuple[float, float, float, float]]
    mm_per_px: float  # measured from the berries
    sigma_px: float  # the Gaussian σ the photo already carries (native pixels)


@dataclass
class _Tiles:
    images: list[U8Array] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    scales: list[int] = field(default_factory=list)
    defocus: list[float] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)

    def add(self, tile: U8Array, label: int, box: tuple[float, ...], kind: str, origin: str, scale: int,
            camera: tuple[float, float]) -> None:  # fmt: skip
        self.images.append(tile)
        self.labels.append(label)
        self.boxes.append((box[0], box[1], box[2], box[3]))
        self.kinds.append(kind)
        self.origins.append(origin)
        self.scales.append(scale)
        self.defocus.append(camera[0])
        self.noise.append(camera[1])

    def tile_set(self, meta: dict[str, object]) -> TileSet:
        meta = {**meta, "tile_defocus_sigma_px": [round(v, 3) for v in self.defocus],
                "tile_noise_sd": [round(v, 3) for v in self.noise]}  # fmt: skip
        return TileSet(
            np.stack(self.images).astype(np.uint8),
            np.asarray(self.labels, np.int8),
            np.asarray(self.boxes, np.float32),
            np.asarray(self.kinds),
            meta,
            spider_origin=np.asarray(self.origins),
            tile_scale_px=np.asarray(self.scales, np.int32),
        )


# --------------------------------------------------------------------------- measurements
def berry_diameter_px(image: U8Array, bunches_xywh: list[tuple[float, float, float, float]]) -> float | None:
    """Median diameter of the strongest Hough circles (6 per bunch box, 10-60 px radius); None with under 8."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    radii: list[float] = []
    for x, y, w, h in bunches_xywh:
        x0, y0 = max(0, int(x)), max(0, int(y))
        crop = grey[y0 : int(y + h), x0 : int(x + w)]
        if min(crop.shape[:2]) < 40:
            continue
        found = cv2.HoughCircles(
            cv2.GaussianBlur(crop, (0, 0), 2), cv2.HOUGH_GRADIENT, dp=1, minDist=20, param1=80, param2=25,
            minRadius=10, maxRadius=60,
        )  # fmt: skip
        if found is not None:
            radii += [float(r) for r in found[0, :6, 2]]  # strongest first
    return 2.0 * float(np.median(radii)) if len(radii) >= 8 else None


def _energy_ratio(grey: F32Array, mask: npt.NDArray[np.bool_] | None) -> float:
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=1)
    inner = np.zeros(grey.shape, bool)
    inner[3:-3, 3:-3] = True
    sel = inner if mask is None else inner & mask
    grad = float(np.sum((gx * gx + gy * gy)[sel]))
    return float(np.sum((lap * lap)[sel])) / grad if grad > 0 else float("nan")


def blur_sigma_px(image: U8Array, mask: npt.NDArray[np.bool_] | None = None, probe_px: float = 1.5) -> float:
    """The Gaussian σ (px) `image` already carries, from how its Laplacian-to-gradient energy ratio falls under a
    known blur `probe_px` (the ratio goes as 1 / σ² for blurred edges); NaN on a flat image."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    r0 = _energy_ratio(grey, mask)
    r1 = _energy_ratio(np.asarray(cv2.GaussianBlur(grey, (0, 0), probe_px), np.float32), mask)
    if not (r0 > 0 and r1 > 0):
        return float("nan")
    return probe_px / math.sqrt(r0 / r1 - 1.0) if r0 / r1 > 1.0 + 1e-6 else float("inf")


# --------------------------------------------------------------------------- cut-outs
def cut_spider(photo: U8Array, box_xyxy: tuple[int, int, int, int], origin: str) -> Cutout | None:
    """The spider inside `box_xyxy` by GrabCut (rectangle start), its largest piece, cropped; None where the cut
    holds under 5 % or over 85 % of the box."""
    h, w = photo.shape[:2]
    x1, y1 = max(1, box_xyxy[0]), max(1, box_xyxy[1])
    x2, y2 = min(w - 1, box_xyxy[2]), min(h - 1, box_xyxy[3])
    if x2 - x1 < 8 or y2 - y1 < 8:
        return None
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(photo, mask, (x1, y1, x2 - x1, y2 - y1), bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return None
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n < 2:
        return None
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    fg = (comp == keep).astype(np.uint8)
    share = fg.sum() / float((x2 - x1) * (y2 - y1))
    if not 0.05 <= share <= 0.85:
        return None
    ys, xs = np.nonzero(fg)
    sl = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
    alpha = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 0.7)[sl]  # a pixel-wide soft edge at photo scale
    return Cutout(np.ascontiguousarray(photo[sl]), np.ascontiguousarray(alpha, np.float32), origin)


def blob_cutout(rng: np.random.Generator, photo: Photo, span_px: int) -> Cutout:
    """A non-spider cut-out of `span_px`: an irregular blob (ellipse with a wobbling rim) of `photo`'s content (a
    bunch, leaf or cane region), at the photo's own scale."""
    h, w = photo.image.shape[:2]
    size = max(4, span_px)
    if photo.bunches_xywh and rng.random() < 0.6:
        bx, by, bw, bh = photo.bunches_xywh[int(rng.integers(len(photo.bunches_xywh)))]
        cx, cy = bx + rng.uniform(0, bw), by + rng.uniform(0, bh)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    x0 = int(np.clip(cx - size / 2, 0, w - size))
    y0 = int(np.clip(cy - size / 2, 0, h - size))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    ang = np.arctan2(yy - size / 2, xx - size / 2)
    aspect = rng.uniform(0.35, 1.0)
    phase = rng.uniform(0, 2 * np.pi, 3)
    rim = 1.0 + sum(rng.uniform(0.0, 0.18) * np.cos((k + 2) * ang + phase[k]) for k in range(3))
    rot = rng.uniform(0, np.pi)
    u = (xx - size / 2) * np.cos(rot) + (yy - size / 2) * np.sin(rot)
    v = -(xx - size / 2) * np.sin(rot) + (yy - size / 2) * np.cos(rot)
    r = np.sqrt(u * u + (v / aspect) ** 2) / (size / 2 * 0.95)
    alpha = np.clip((rim - r) * size / 2, 0.0, 1.0).astype(np.float32)
    alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), 0.7), np.float32)
    return Cutout(np.ascontiguousarray(photo.image[y0 : y0 + size, x0 : x0 + size]), alpha, f"blob:{photo.file}")


def shrink(cut: Cutout, span_px: float) -> Cutout:
    """The cut-out resampled (area averaging) so its longer side is `span_px`."""
    s = span_px / cut.span_px
    wh = (max(2, round(cut.bgr.shape[1] * s)), max(2, round(cut.bgr.shape[0] * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    bgr = np.asarray(cv2.resize(cut.bgr, wh, interpolation=interp), np.uint8)
    alpha = np.asarray(cv2.resize(cut.alpha, wh, interpolation=interp), np.float32)
    return Cutout(bgr, alpha, cut.origin)


def paste(image: U8Array, cut: Cutout, x: int, y: int, sigma_px: float) -> tuple[int, int, int, int]:
    """Blend `cut` into `image` at (x, y) after blurring colour and coverage to `sigma_px` *in place* (so it is as
    sharp as what it lies on); the one paste for spiders and non-spiders. Returns its box xyxy (alpha > 0.25)."""
    pad = math.ceil(3 * sigma_px) + 1
    ch, cw = cut.alpha.shape
    x0, y0 = x - pad, y - pad
    x1, y1 = x + cw + pad, y + ch + pad
    if x0 < 0 or y0 < 0 or x1 > image.shape[1] or y1 > image.shape[0]:
        raise ValueError("cut-out outside the image")
    region = image[y0:y1, x0:x1].astype(np.float32)
    alpha = np.zeros(region.shape[:2], np.float32)
    alpha[pad : pad + ch, pad : pad + cw] = cut.alpha
    colour = region.copy()
    colour[pad : pad + ch, pad : pad + cw] = cut.bgr
    if sigma_px > 0.05:
        premult = np.asarray(cv2.GaussianBlur(colour * alpha[..., None], (0, 0), sigma_px), np.float32)
        alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), sigma_px), np.float32)
        colour = np.asarray(premult / np.maximum(alpha[..., None], 1e-4), np.float32)
    out = colour * alpha[..., None] + region * (1 - alpha[..., None])
    image[y0:y1, x0:x1] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(alpha > 0.25)
    return (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)


def added_blur_px(image: U8Array, cut: Cutout, xy: tuple[int, int], target_px: float) -> float:
    """The blur that makes `cut`, pasted at `xy`, as soft as `target_px`: trial pastes over the same place with
    blurs 0, 0.1, ... 2 px; the first whose softness (:func:`blur_sigma_px` over the cut-out and a 2 px rim)
    reaches the target, or the nearer of it and the one before."""
    m = 8
    x, y = xy
    ch, cw = cut.alpha.shape
    x0, y0 = max(0, x - m), max(0, y - m)
    region = image[y0 : y + ch + m, x0 : x + cw + m]
    footprint = np.zeros(region.shape[:2], np.uint8)
    footprint[y - y0 : y - y0 + ch, x - x0 : x - x0 + cw] = cut.alpha > 0.05
    where = cv2.dilate(footprint, np.ones((5, 5), np.uint8)) > 0
    previous = (0.0, float("inf"))
    for add in np.arange(0.0, 2.01, 0.1):
        trial = region.copy()
        paste(trial, cut, x - x0, y - y0, float(add))
        err = blur_sigma_px(trial, where) - target_px
        if err >= 0:
            return float(add) if err <= previous[1] else previous[0]
        previous = (float(add), -err)
    return 2.0


def camera(
    image: U8Array, scale: float, defocus_px: float, noise_sd: float, quality: int, rng: np.random.Generator
) -> U8Array:
    """The one optical chain for the whole picture: resample by `scale`, Gaussian defocus, noise, JPEG."""
    wh = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    img = cv2.resize(image, wh, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if defocus_px > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), defocus_px)
    noisy = np.asarray(img, np.float32) + np.asarray(rng.normal(0.0, noise_sd, img.shape), np.float32)
    img = np.asarray(np.clip(np.rint(noisy), 0, 255), np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8) if ok else np.asarray(img, np.uint8)


# --------------------------------------------------------------------------- sources
def _read(path: Path) -> U8Array:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InspectorError(f"{path}: cannot read the image")
    return np.asarray(img, np.uint8)


def _index(path: Path) -> dict[str, list[dict[str, Any]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InspectorError(f"{path}: cannot read the index ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(data, dict) or "holdout" not in data:
        raise InspectorError(f"{path}: no holdout split in the index")
    return data


def load_photos(real: Path) -> list[Photo]:
    """The holdout vineyard photos at native resolution, with their measured scale (photos where too few berries
    are found get the median of the others) and sharpness."""
    root = real / "grapes" / "wgisd_full"
    loaded = []
    for entry in progress(_index(root / "index.json")["holdout"], desc="measure photos", unit="photo"):
        file = str(entry["file"])
        image = _read(root / file)
        raw = entry.get("bunches_xywh", [])
        bunches = [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in raw] if isinstance(raw, list) else []
        mask = np.zeros(image.shape[:2], bool)
        for x, y, w, h in bunches:
            mask[max(0, int(y)) : int(y + h), max(0, int(x)) : int(x + w)] = True
        sigma = blur_sigma_px(image, mask if mask.any() else None)
        loaded.append((file, image, bunches, berry_diameter_px(image, bunches), sigma))
    found = [d for *_, d, _ in loaded if d]
    if not found:
        raise InspectorError(f"{root}: no berries measured on any holdout photo; cannot tell their scale")
    pooled = float(np.median(found))
    return [Photo(f, im, b, BERRY_MM / (d or pooled), s) for f, im, b, d, s in loaded]


class SpiderPhotos:
    """The holdout spider photos, cut out on first use (GrabCut is the slow part) and remembered."""

    def __init__(self, real: Path) -> None:
        self.root = real / "spiders" / "photos"
        self.entries = [
            (str(e["file"]), str(e.get("species", "")), e["box_xyxy"])
            for e in _index(self.root / "index.json")["holdout"]
            if isinstance(e.get("box_xyxy"), list) and len(e["box_xyxy"]) == 4
        ]
        if not self.entries:
            raise InspectorError(f"{self.root}: no holdout spider photo with a box")
        self.species = {file: sp for file, sp, _ in self.entries}
        self._cut: dict[int, Cutout | None] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def cut(self, i: int) -> Cutout | None:
        if i not in self._cut:
            file, _, box = self.entries[i]
            xyxy = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
            self._cut[i] = cut_spider(_read(self.root / file), xyxy, file)
        return self._cut[i]


# --------------------------------------------------------------------------- composition
def _spot_on_bunch(rng: np.random.Generator, photo: Photo, size_px: int, pad: int) -> tuple[int, int] | None:
    h, w = photo.image.shape[:2]
    for _ in range(20):
        bx, by, bw, bh = photo.bunches_xywh[int(rng.integers(len(photo.bunches_xywh)))]
        x = int(bx + rng.uniform(0.15, 0.85) * bw - size_px / 2)
        y = int(by + rng.uniform(0.15, 0.85) * bh - size_px / 2)
        if pad <= x <= w - size_px - pad and pad <= y <= h - size_px - pad:
            return x, y
    return None


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _tile_side_px(rng: np.random.Generator, span_px: float) -> int:
    """A tile side in which a disc of `span_px` covers a fraction drawn from :data:`COVER_FRACTION`."""
    f = rng.uniform(*COVER_FRACTION)
    return max(math.ceil(span_px) + 2, round(span_px * math.sqrt(math.pi / (4 * f))))


def _cut_tile(
    rng: np.random.Generator, image: U8Array, box: tuple[int, int, int, int], side: int
) -> tuple[U8Array, tuple[float, float, float, float]] | None:
    """A `side` square holding `box` wholly at a random offset, resized to 224, and the box in tile pixels."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    lo_x, hi_x = max(0, x2 - side), min(x1, w - side)
    lo_y, hi_y = max(0, y2 - side), min(y1, h - side)
    if hi_x < lo_x or hi_y < lo_y:
        return None
    tx, ty = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
    crop = image[ty : ty + side, tx : tx + side]
    interp = cv2.INTER_LINEAR if side <= TILE_OUT_PX else cv2.INTER_AREA
    tile = np.asarray(cv2.resize(crop, (TILE_OUT_PX, TILE_OUT_PX), interpolation=interp), np.uint8)
    s = TILE_OUT_PX / side
    return tile, ((x1 - tx) * s, (y1 - ty) * s, (x2 - tx) * s, (y2 - ty) * s)


def _render(
    rng: np.random.Generator,
    photo: Photo,
    objects: list[Cutout],
    spans_mm: list[float],
    mm_per_px: float,
    out: _Tiles,
    kind: str,
    with_negatives: bool,
) -> None:
    """Paste `objects` on `photo`, run the camera, cut a tile around each and (optionally) as many clean tiles."""
    image = photo.image.copy()
    native = photo.mm_per_px
    placed: list[tuple[Cutout, tuple[int, int, int, int], float]] = []
    sigma = photo.sigma_px if math.isfinite(photo.sigma_px) else 0.0
    for cut, span_mm in zip(objects, spans_mm, strict=True):
        small = shrink(cut, span_mm / native)
        pad = 9  # room for the trial pastes and the widest blur
        spot = _spot_on_bunch(rng, photo, small.span_px, pad)
        if spot is None:
            continue
        box = paste(image, small, spot[0], spot[1], added_blur_px(image, small, spot, sigma))
        if not any(_overlaps(box, b) for _, b, _ in placed):
            placed.append((cut, box, span_mm))
    scale = native / mm_per_px
    cam = (float(rng.uniform(*DEFOCUS_SIGMA_PX)), float(rng.uniform(*NOISE_SD)))
    shot = camera(image, scale, cam[0], cam[1], int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)), rng)
    label = 1 if kind == "pos" else 0
    boxes = [tuple(round(v * scale) for v in b) for _, b, _ in placed]
    for (cut, _, span_mm), b in zip(placed, boxes, strict=True):
        box = (b[0], b[1], max(b[2], b[0] + 1), max(b[3], b[1] + 1))
        side = _tile_side_px(rng, span_mm / mm_per_px)
        got = _cut_tile(rng, shot, box, side)
        if got is None:
            continue
        tile, tbox = got
        out.add(tile, label, tbox if label else (-1, -1, -1, -1), kind, cut.origin if label else "", side, cam)
        if with_negatives:
            _clean_tile(rng, photo, shot, scale, side, boxes, out, cam)


def _clean_tile(
    rng: np.random.Generator,
    photo: Photo,
    shot: U8Array,
    scale: float,
    side: int,
    boxes: list[tuple[int, ...]],
    out: _Tiles,
    cam: tuple[float, float],
) -> None:
    """One spider-free tile of `side` centred on a bunch of the same render (no pasted object in it)."""
    h, w = shot.shape[:2]
    for _ in range(30):
        bx, by, bw, bh = photo.bunches_xywh[int(rng.integers(len(photo.bunches_xywh)))]
        cx, cy = (bx + rng.uniform(0.2, 0.8) * bw) * scale, (by + rng.uniform(0.2, 0.8) * bh) * scale
        x, y = int(cx - side / 2), int(cy - side / 2)
        tile_box = (x, y, x + side, y + side)
        if x < 0 or y < 0 or x + side > w or y + side > h or any(_overlaps(tile_box, b) for b in boxes):
            continue
        crop = shot[y : y + side, x : x + side]
        interp = cv2.INTER_LINEAR if side <= TILE_OUT_PX else cv2.INTER_AREA
        tile = np.asarray(cv2.resize(crop, (TILE_OUT_PX, TILE_OUT_PX), interpolation=interp), np.uint8)
        out.add(tile, 0, (-1, -1, -1, -1), "neg", "", side, cam)
        return


@dataclass(frozen=True)
class CrossStyleSets:
    tiles: TileSet
    seam: TileSet
    skipped_photos: list[str]


def make_cross_style(
    real: Path, mm_per_px: float, n_spider_tiles: int, seed: int, span_mm: tuple[float, float] = (4.0, 12.0)
) -> CrossStyleSets:
    """About `n_spider_tiles` spider tiles and as many clean ones, plus a seam set half that size; deterministic."""
    if not 0 < span_mm[0] <= span_mm[1]:
        raise InspectorError(f"--span must be two positive millimetre values, low first; got {span_mm}")
    if mm_per_px <= 0:
        raise InspectorError(f"--mm-per-px must be positive, got {mm_per_px}")
    photos_all = load_photos(real)
    usable = [p for p in photos_all if p.bunches_xywh and math.isfinite(p.mm_per_px)]
    photos = [p for p in usable if p.mm_per_px <= mm_per_px * MAX_ENLARGE]
    skipped = sorted({p.file for p in photos_all} - {p.file for p in photos})
    if len(photos) < 2:
        raise InspectorError(
            f"{real}: only {len(photos)} holdout photo(s) reach {mm_per_px} mm/px without enlarging them more than "
            f"{MAX_ENLARGE}x; the coarsest honest scale here is {min(p.mm_per_px for p in usable):.3f} mm/px"
        )
    spiders = SpiderPhotos(real)
    rng = np.random.default_rng([seed, 2701])
    main, seam = _Tiles(), _Tiles()
    order = rng.permutation(len(spiders))
    k = 0
    max_renders = 4 * math.ceil(n_spider_tiles / SPIDERS_PER_RENDER) + 8
    for _ in progress(range(max_renders), desc="cross-style renders", unit="render"):
        if sum(main.labels) >= n_spider_tiles:
            break
        photo = photos[int(rng.integers(len(photos)))]
        cuts: list[Cutout] = []
        while len(cuts) < SPIDERS_PER_RENDER and k < 4 * len(order):
            cut = spiders.cut(int(order[k % len(order)]))
            k += 1
            if cut is not None:
                cuts.append(cut)
        if not cuts:
            raise InspectorError(f"{spiders.root}: no holdout spider could be cut out")
        spans = [float(rng.uniform(*span_mm)) for _ in cuts]
        _render(rng, photo, cuts, spans, mm_per_px, main, "pos", with_negatives=True)
        if len(seam.labels) < n_spider_tiles // 2:
            other = photos[int(rng.integers(len(photos)))]
            blobs = [blob_cutout(rng, other, round(s / other.mm_per_px)) for s in spans]
            _render(rng, photo, blobs, spans, mm_per_px, seam, "seam", with_negatives=False)
    used = {o for o in main.origins if o}
    meta: dict[str, object] = {
        "mode": "cross-style",
        "source": "inspector tiles cross-style (inspector/training/crossstyle.py)",
        "split": "holdout",
        "seed": seed,
        "counts": {k: main.kinds.count(k) for k in ("pos", "neg")},
        "calibration": {"mm_per_px": mm_per_px, "spider_span_mm": list(span_mm)},
        "photo_mm_per_px": {p.file: round(p.mm_per_px, 4) for p in photos},
        "photo_sigma_px": {p.file: round(p.sigma_px, 3) for p in photos},
        "skipped_photos": skipped,
        "camera": {
            "defocus_sigma_px": list(DEFOCUS_SIGMA_PX),
            "noise_sd": list(NOISE_SD),
            "jpeg_quality": list(JPEG_QUALITY),
            "cover_fraction": list(COVER_FRACTION),
        },
        "spider_species": {o: spiders.species[o] for o in sorted(used)},
    }
    seam_meta = {**meta, "kind": "seam probe: non-spider cut-outs pasted as the spiders are",
                 "counts": {"seam": len(seam.labels)}}  # fmt: skip
    seam_meta.pop("spider_species")
    return CrossStyleSets(main.tile_set(meta), seam.tile_set(seam_meta), skipped)


def write_cross_style(sets: CrossStyleSets, out: Path) -> None:
    """OUT/tiles.npz + meta.json, and the seam probe's OUT/seam/."""
    save_tile_set(sets.tiles, out)
    save_tile_set(sets.seam, out / "seam")
