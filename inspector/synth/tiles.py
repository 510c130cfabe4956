"""224x224 tile sets for training and evaluation, cut at the planned tile scale from rendered scenes.

No video round trip, but the same rendering and compositing as the footage: a decorated bunch sprite (same
`decorate_bunch`/`place_object`, same `match_to_scene`) on a belt texture with a shadow, composed at the scene scale
(`inspector.synth.camera.scene_scale`: no finer than the photos), then the camera model over the whole window
(`inspector.synth.camera.apply_camera` with settings drawn per tile: resample to the calibration's mm/px, defocus,
motion blur along travel, shot + read noise, gain, JPEG); the tile is then cut at the frame-pixel size
`inspector.tiling.tile_scales` plans for the spider's span, and resized to 224.

Kinds: ``pos`` (a spider wholly inside, covering 1-5 % of the tile by the disc model), ``neg`` (bunch, no
spider), ``hard_neg`` (a spider-like distractor or a pasted non-spider patch wholly inside, where a spider would
be). Every tile (any kind) may also carry extra non-spider patches, so paste seams carry no signal.

Saved format (`save_tile_set`): ``tiles.npz`` with ``images`` (N,224,224,3) uint8 BGR, ``labels`` (N,) int8
(1 = spider), ``boxes_xyxy`` (N,4) float32 (spider box in tile pixels, -1 where none), ``kinds`` (N,) str,
``spider_origin`` (N,) str (the spider's source photo or ``procedural:<kind>``, "" on tiles without one; absent
in older sets, read as all ""), ``tile_scale_px`` (N,) int32 (the frame-pixel size the tile was cut
at, one of meta's scales; absent in older sets, read as 0 = not recorded); and ``meta.json`` (mode,
source, split, seed, counts, calibration, scales).
"""

from __future__ import annotations

import copy
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from inspector.config import Calibration
from inspector.errors import InspectorError
from inspector.progress import progress
from inspector.synth.camera import apply_camera, random_settings, scene_scale
from inspector.synth.raster import Sprite, belt_texture, paste
from inspector.synth.scene import (
    BELT_COLOURS_BGR,
    AssetSource,
    BoxXYXY,
    BunchCut,
    apply_shadow,
    crop_window,
    decorate_bunch,
    distractor,
    flip_rot90,
    match_to_scene,
    place_object,
    random_pose,
    shadow_of,
)
from inspector.tiling import spider_area_fraction, tile_scales
from inspector.types import TileScale, U8Array

TILE_SIZE = 224
KINDS = ("pos", "neg", "hard_neg")
DEFAULT_SHARES = (0.5, 0.3, 0.2)


@dataclass
class TileSet:
    images: npt.NDArray[np.uint8]  # (N, 224, 224, 3) BGR
    labels: npt.NDArray[np.int8]  # (N,)
    boxes_xyxy: npt.NDArray[np.float32]  # (N, 4), -1 where no spider
    kinds: npt.NDArray[np.str_]  # (N,)
    meta: dict[str, object] = field(default_factory=dict)
    # (N,) where each spider tile's spider came from (photo file name, or procedural:<kind>); "" on the other tiles
    # and where it was not recorded (older sets). Left out: all "".
    spider_origin: npt.NDArray[np.str_] = field(default_factory=lambda: np.zeros(0, dtype=str))
    # (N,) the frame-pixel size each tile was cut at (the plan's scale, before resizing to 224); 0 = not recorded
    tile_scale_px: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))

    def __post_init__(self) -> None:
        if len(self.spider_origin) == 0 and len(self.labels) > 0:
            self.spider_origin = np.full(len(self.labels), "", dtype=str)
        elif self.spider_origin.shape != self.labels.shape:
            raise ValueError(f"spider_origin {self.spider_origin.shape} does not match {len(self.labels)} tiles")
        if len(self.tile_scale_px) == 0 and len(self.labels) > 0:
            self.tile_scale_px = np.zeros(len(self.labels), np.int32)
        elif self.tile_scale_px.shape != self.labels.shape:
            raise ValueError(f"tile_scale_px {self.tile_scale_px.shape} does not match {len(self.labels)} tiles")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: npt.NDArray[np.integer], meta: dict[str, object] | None = None) -> TileSet:
        """The tiles at `indices` (in that order), every per-tile field with them; `meta` replaces the set's."""
        return TileSet(
            images=self.images[indices],
            labels=self.labels[indices],
            boxes_xyxy=self.boxes_xyxy[indices],
            kinds=self.kinds[indices],
            meta=dict(self.meta) if meta is None else meta,
            spider_origin=self.spider_origin[indices],
            tile_scale_px=self.tile_scale_px[indices],
        )


def scale_for_span(scales: tuple[TileScale, ...], span_mm: float) -> TileScale:
    """The tile scale whose span range holds `span_mm` (the nearest one at the ends)."""
    for s in scales:
        if s.span_mm[0] <= span_mm <= s.span_mm[1]:
            return s
    return scales[0] if span_mm < scales[0].span_mm[0] else scales[-1]


def kind_sequence(rng: np.random.Generator, n: int, shares: tuple[float, float, float]) -> list[str]:
    """Exactly round(n * share) tiles of each kind (rest negatives), shuffled."""
    n_pos = round(n * shares[0])
    n_hard = round(n * shares[2])
    kinds = ["pos"] * n_pos + ["hard_neg"] * n_hard + ["neg"] * max(0, n - n_pos - n_hard)
    return [kinds[i] for i in rng.permutation(len(kinds))]


@dataclass(frozen=True)
class _Scene:
    img: U8Array  # window around the target, camera scale, camera applied
    target_xyxy: tuple[float, float, float, float]  # in window pixels (camera scale)


def _compose_window(
    rng: np.random.Generator,
    sprite: Sprite,
    target: BoxXYXY,
    win_px: int,
    belts: list[U8Array],
    calibration: Calibration,
    scene_mm_per_px: float,
) -> _Scene:
    """Belt + shadow + sprite in a `win_px` (scene pixels) square centred on `target`, then the camera model."""
    cx, cy = (target[0] + target[2]) // 2, (target[1] + target[3]) // 2
    ox, oy = cx - win_px // 2, cy - win_px // 2  # window origin in sprite pixels
    belt = belts[int(rng.integers(len(belts)))]
    bh, bw = belt.shape[:2]
    bx, by = int(rng.integers(0, bw - win_px + 1)), int(rng.integers(0, bh - win_px + 1))
    img = belt[by : by + win_px, bx : bx + win_px].copy()
    f = calibration.mm_per_px / scene_mm_per_px  # scene pixels per camera pixel
    shadow = shadow_of(sprite, rng.uniform(0.2, 0.35), rng.uniform(3, 8) * f)
    apply_shadow(img, shadow, -ox + int(rng.integers(2, 9) * f), -oy + int(rng.integers(2, 9) * f))
    paste(img, sprite, -ox, -oy)
    settings = random_settings(rng, calibration.mm_per_px, calibration.belt_speed_mm_s, calibration.travel_axis)
    out = apply_camera(img, scene_mm_per_px, settings, rng)
    s = out.shape[1] / win_px
    t = target
    return _Scene(out, ((t[0] - ox) * s, (t[1] - oy) * s, (t[2] - ox) * s, (t[3] - oy) * s))


VISIBLE_DN = 24.0  # a camera pixel the spider changes by at least this many grey levels (any channel) shows it


def visible_px(with_spider: U8Array, without_spider: U8Array, min_dn: float = VISIBLE_DN) -> int:
    """How many camera pixels a spider visibly changes: the same window rendered with and without it (same camera,
    same noise), pixels whose largest channel difference reaches `min_dn`. A spider as dark or as green as the
    berries around it, hidden behind them or shrunk below a pixel changes few or none."""
    if with_spider.shape != without_spider.shape:
        raise ValueError(f"renders differ in shape: {with_spider.shape} vs {without_spider.shape}")
    diff = np.abs(with_spider.astype(np.int16) - without_spider.astype(np.int16))
    per_px = diff.max(axis=2) if diff.ndim == 3 else diff
    return int(np.count_nonzero(per_px >= min_dn))


def _cut_tile(
    rng: np.random.Generator, scene: _Scene, tile_px: int, out_px: int
) -> tuple[U8Array, tuple[float, float, float, float]]:
    """A `tile_px` square of the window holding the target box wholly, at a random offset, resized to `out_px`."""
    x1, y1 = math.floor(scene.target_xyxy[0]), math.floor(scene.target_xyxy[1])
    x2, y2 = math.ceil(scene.target_xyxy[2]), math.ceil(scene.target_xyxy[3])
    h, w = scene.img.shape[:2]
    lo_x, hi_x = max(0, x2 - tile_px), min(x1, w - tile_px)
    lo_y, hi_y = max(0, y2 - tile_px), min(y1, h - tile_px)
    tx = int(rng.integers(lo_x, hi_x + 1)) if hi_x >= lo_x else max(0, min(x1, w - tile_px))
    ty = int(rng.integers(lo_y, hi_y + 1)) if hi_y >= lo_y else max(0, min(y1, h - tile_px))
    crop = scene.img[ty : ty + tile_px, tx : tx + tile_px]
    interp = cv2.INTER_LINEAR if tile_px <= out_px else cv2.INTER_AREA
    tile = np.asarray(cv2.resize(crop, (out_px, out_px), interpolation=interp), np.uint8)
    s = out_px / tile_px
    b = scene.target_xyxy
    box = ((b[0] - tx) * s, (b[1] - ty) * s, (b[2] - tx) * s, (b[3] - ty) * s)
    return tile, box


VISIBLE_TRIES = 8  # draws of a spider tile before one whose spider fails the visibility rule is kept anyway


@dataclass(frozen=True)
class _TileContext:
    """What every tile of a set is drawn from."""

    source: AssetSource
    calibration: Calibration
    scales: tuple[TileScale, ...]
    scene_mm: float  # scene scale, mm per scene pixel
    patch_span_px: tuple[float, float]  # spider span range in scene pixels (sizes the non-spider patches)
    win_px: int  # window rendered around a tile's target, scene pixels
    belts: list[U8Array]
    out_px: int


@dataclass(frozen=True)
class _Drawn:
    kind: str
    image: U8Array
    box: tuple[float, float, float, float]
    tile_px: int
    origin: str
    visible_px: int | None  # camera pixels the spider visibly changes (None: not measured or no spider)


def _draw_tile(rng: np.random.Generator, kind: str, pool: list[BunchCut], c: _TileContext, measure: bool) -> _Drawn:
    """One tile of `kind` around a random point of a random bunch of `pool`; with `measure`, a spider tile's
    window is rendered a second time without the spider (same camera, same noise) to count `visible_px`."""
    whole = pool[int(rng.integers(len(pool)))]
    posed = flip_rot90(whole.sprite, int(rng.integers(4)), bool(rng.random() < 0.5))
    # work on the window around a point of the bunch where a spider could sit (cheap, and all a tile sees)
    ys, xs = np.nonzero(posed.alpha >= 0.9)
    k = int(rng.integers(len(xs))) if len(xs) else 0
    ax, ay = (int(xs[k]), int(ys[k])) if len(xs) else (posed.wh[0] // 2, posed.wh[1] // 2)
    local = crop_window(posed, ax, ay, c.win_px)
    anchor = (c.win_px // 2, c.win_px // 2)
    cut = BunchCut(local, whole.softness_px)
    span_mm = rng.uniform(*c.calibration.spider_span_mm)
    span_px = span_mm / c.scene_mm
    scale = scale_for_span(c.scales, span_mm)
    dec = decorate_bunch(
        rng,
        c.source,
        cut,
        span_px if kind == "pos" else None,
        c.scene_mm,
        int(rng.poisson(0.8)),
        (0.8 * c.patch_span_px[0], 1.3 * c.patch_span_px[1]),
        spider_anchor_xy=anchor,
    )
    sprite, target = dec.sprite, dec.spider_box
    anchor = (anchor[0] + dec.pad_px, anchor[1] + dec.pad_px)
    if kind == "hard_neg":
        obj = match_to_scene(rng, distractor(rng, span_px * rng.uniform(0.8, 1.25), c.source), cut.softness_px)
        sprite, target = place_object(rng, sprite, obj, anchor)
    if target is None or kind == "neg":
        # a spider-sized box around the anchor point
        r = int(span_px / 2)
        target = (anchor[0] - r, anchor[1] - r, anchor[0] + r + 1, anchor[1] + r + 1)
        if kind == "pos":
            kind = "neg"  # the spider vanished behind berries (rare): record the truth
    seen: int | None = None
    twin_rng = copy.deepcopy(rng) if measure and kind == "pos" and dec.without_spider is not None else None
    scene = _compose_window(rng, sprite, target, c.win_px, c.belts, c.calibration, c.scene_mm)
    if twin_rng is not None and dec.without_spider is not None:
        twin = _compose_window(twin_rng, dec.without_spider, target, c.win_px, c.belts, c.calibration, c.scene_mm)
        seen = visible_px(scene.img, twin.img)
    tile, box = _cut_tile(rng, scene, scale.tile_px, c.out_px)
    return _Drawn(kind, tile, box, scale.tile_px, dec.spider_origin if kind == "pos" else "", seen)


def make_tile_set(
    n: int,
    source: AssetSource,
    calibration: Calibration,
    seed: int,
    *,
    shares: tuple[float, float, float] = DEFAULT_SHARES,
    min_fraction: float = 0.01,
    max_fraction: float = 0.05,
    bunch_pool: int = 64,
    out_px: int = TILE_SIZE,
    min_visible_px: int = 0,
) -> TileSet:
    """`n` tiles of the three kinds from `source`; same arguments → identical arrays.

    `min_visible_px` > 0 (training sets): a spider tile whose spider visibly changes fewer camera pixels than that
    (:func:`visible_px`) is drawn again, up to `VISIBLE_TRIES` times — a label the pixels do not show teaches
    nothing. 0 (evaluation sets, the default): every spider counts, seen or not, as on a line."""
    scales = tile_scales(calibration, min_fraction, max_fraction)
    scene_mm = scene_scale(calibration.mm_per_px, source.native_mm_per_px)
    f = calibration.mm_per_px / scene_mm  # scene pixels per camera pixel (>= 1)
    span_lo_px, span_hi_px = (s / scene_mm for s in calibration.spider_span_mm)
    max_tile = max(s.tile_px for s in scales)
    win_px = math.ceil((int(max_tile * 1.6) + 4) * f)  # scene pixels
    belt_rng = np.random.default_rng([seed, 9])
    belts = [
        belt_texture(belt_rng, (max(512, win_px), max(512, win_px)), BELT_COLOURS_BGR[i % len(BELT_COLOURS_BGR)])
        for i in range(6)
    ]
    pool: list[BunchCut] = []
    for j in range(min(bunch_pool, max(1, n))):
        brng = np.random.default_rng([seed, 5, j])
        length_px = brng.uniform(110.0, 220.0) / scene_mm
        cut = source.bunch(brng, length_px, brng.uniform(7.0, 11.0) / scene_mm, scene_mm)
        pool.append(BunchCut(random_pose(brng, cut.sprite), cut.softness_px))

    ctx = _TileContext(source, calibration, scales, scene_mm, (span_lo_px, span_hi_px), win_px, belts, out_px)
    kinds = kind_sequence(np.random.default_rng([seed, 6]), n, shares)
    images = np.zeros((n, out_px, out_px, 3), np.uint8)
    labels = np.zeros(n, np.int8)
    boxes = np.full((n, 4), -1.0, np.float32)
    origins = [""] * n
    scale_px = np.zeros(n, np.int32)
    visible = np.full(n, -1, np.int64)
    redrawn = 0
    for i, planned in enumerate(progress(kinds, desc="tiles", unit="tile")):
        for attempt in range(VISIBLE_TRIES if min_visible_px > 0 else 1):
            # attempt 0 draws exactly what a set without the visibility rule draws
            rng = np.random.default_rng([seed, 7, i] if attempt == 0 else [seed, 7, i, attempt])
            drawn = _draw_tile(rng, planned, pool, ctx, measure=min_visible_px > 0)
            if drawn.visible_px is None or drawn.visible_px >= min_visible_px:
                break
            redrawn += 1
        kinds[i] = drawn.kind
        images[i], scale_px[i] = drawn.image, drawn.tile_px
        if drawn.kind == "pos":
            labels[i] = 1
            boxes[i] = drawn.box
            origins[i] = drawn.origin
            visible[i] = -1 if drawn.visible_px is None else drawn.visible_px
    counts = {k: int(sum(1 for x in kinds if x == k)) for k in KINDS}
    meta: dict[str, object] = {
        "source": source.name,
        "seed": seed,
        "n": n,
        "counts": counts,
        "tile_px": out_px,
        "scene_mm_per_px": scene_mm,
        "camera_model": "inspector.synth.camera (settings drawn per tile)",
        "calibration": calibration.model_dump(mode="json", exclude_none=True),
        "scales": [
            {
                "tile_px": s.tile_px,
                "span_mm": list(s.span_mm),
                "fraction": [
                    spider_area_fraction(s.span_mm[0] / calibration.mm_per_px, s.tile_px),
                    spider_area_fraction(s.span_mm[1] / calibration.mm_per_px, s.tile_px),
                ],
            }
            for s in scales
        ],
        "fraction_model": "disc of diameter span: pi*span^2/4 / tile^2",
    }
    if min_visible_px > 0:
        meta["visibility"] = {
            "min_visible_px": min_visible_px,
            "visible_dn": VISIBLE_DN,
            "rule": "spider tiles drawn again while the spider changes fewer camera pixels than min_visible_px by "
            "visible_dn grey levels or more (same window rendered without it)",
            "redrawn": redrawn,
            "kept_below": int(np.count_nonzero((visible >= 0) & (visible < min_visible_px))),
            "spider_visible_px": [int(v) for v in visible],
        }
    return TileSet(images, labels, boxes, np.array(kinds, dtype=str), meta, np.array(origins, dtype=str), scale_px)


def save_tile_set(tiles: TileSet, out_dir: Path, extra_meta: dict[str, object] | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_dir / "tiles.npz",
        images=tiles.images,
        labels=tiles.labels,
        boxes_xyxy=tiles.boxes_xyxy,
        kinds=tiles.kinds,
        spider_origin=tiles.spider_origin,
        tile_scale_px=tiles.tile_scale_px,
    )
    meta = {**tiles.meta, **(extra_meta or {})}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_tile_set(path: Path) -> TileSet:
    """Read a tile-set directory (or its ``tiles.npz``), checking shapes; errors are one line naming the file."""
    npz = path / "tiles.npz" if path.is_dir() else path
    if not npz.is_file():
        raise InspectorError(f"{npz}: no tile set here; make one with `inspector tiles make`")
    try:
        with np.load(npz, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"].astype(np.int8)
            boxes, kinds = z["boxes_xyxy"].astype(np.float32), z["kinds"].astype(str)
            origin = z["spider_origin"].astype(str) if "spider_origin" in z.files else np.full(len(labels), "")
            scale_px = (
                z["tile_scale_px"].astype(np.int32) if "tile_scale_px" in z.files else np.zeros(len(labels), np.int32)
            )
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise InspectorError(f"{npz}: not a tile set ({exc}); expected images, labels, boxes_xyxy, kinds") from None
    n = len(images)
    if images.ndim != 4 or images.shape[1:] != (TILE_SIZE, TILE_SIZE, 3) or images.dtype != np.uint8:
        raise InspectorError(f"{npz}: images must be (N, 224, 224, 3) uint8, got {images.shape} {images.dtype}")
    if labels.shape != (n,) or boxes.shape != (n, 4) or kinds.shape != (n,):
        raise InspectorError(f"{npz}: labels/boxes_xyxy/kinds do not match {n} images")
    if origin.shape != (n,) or scale_px.shape != (n,):
        raise InspectorError(f"{npz}: spider_origin/tile_scale_px do not match {n} images")
    meta_path = npz.parent / "meta.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise InspectorError(f"{meta_path}: unreadable ({exc})") from None
    return TileSet(images, labels, boxes, kinds, meta, origin, scale_px)


def concat_tile_sets(sets: list[TileSet]) -> TileSet:
    """One tile set holding all of `sets` (in order); meta lists the parts."""
    return TileSet(
        images=np.concatenate([t.images for t in sets]),
        labels=np.concatenate([t.labels for t in sets]),
        boxes_xyxy=np.concatenate([t.boxes_xyxy for t in sets]),
        kinds=np.concatenate([t.kinds for t in sets]),
        meta={"parts": [t.meta for t in sets]},
        spider_origin=np.concatenate([t.spider_origin for t in sets]),
        tile_scale_px=np.concatenate([t.tile_scale_px for t in sets]),
    )


def mosaic(
    tiles: TileSet,
    indices: list[int],
    cols: int = 8,
    draw_boxes: bool = False,
    cell_px: int = 160,
    captions: list[str] | None = None,
) -> U8Array:
    """A preview grid of tiles (optionally with spider boxes and kind letters, or one caption per index)."""
    rows = math.ceil(len(indices) / cols)
    out = np.zeros((rows * cell_px, cols * cell_px, 3), np.uint8)
    s = cell_px / tiles.images.shape[1]
    for k, i in enumerate(indices):
        img = cv2.resize(tiles.images[i], (cell_px, cell_px), interpolation=cv2.INTER_AREA)
        if draw_boxes and tiles.labels[i]:
            x1, y1, x2, y2 = (float(v) * s for v in tiles.boxes_xyxy[i])
            cv2.rectangle(img, (int(x1) - 2, int(y1) - 2), (int(x2) + 2, int(y2) + 2), (0, 255, 255), 1)
        text = captions[k] if captions is not None else str(tiles.kinds[i]) if draw_boxes else None
        if text is not None:
            cv2.putText(img, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        r, c = divmod(k, cols)
        out[r * cell_px : (r + 1) * cell_px, c * cell_px : (c + 1) * cell_px] = img
    return out


__all__ = [
    "KINDS",
    "TILE_SIZE",
    "TileSet",
    "concat_tile_sets",
    "load_tile_set",
    "make_tile_set",
    "mosaic",
    "save_tile_set",
]
