"""Scene assembly shared by footage and tiles: asset sources, decorating a bunch with a spider or a
non-spider patch, and composing belt + bunches + camera effects.

An `AssetSource` hands out sprites at frame scale; `ProceduralSource` draws them, `inspector.synth.real.RealSource`
cuts them out of photos. Everything downstream is source-agnostic, so procedural and real footage (and the tile
sets cut from them) go through the same compositing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inspector.synth import procedural as proc
from inspector.synth.raster import (
    Sprite,
    alpha_bbox_xyxy,
    blur_sprite,
    crop_sprite,
    pad_sprite,
    paste,
    paste_alpha,
    resize_sprite,
    rotate_sprite,
    soft_disc,
)
from inspector.types import FloatArray, U8Array

BoxXYXY = tuple[int, int, int, int]

# belt colours (BGR): dark blue, slate grey, light grey-white; all far from green/red/black grapes in Lab
BELT_COLOURS_BGR: tuple[tuple[int, int, int], ...] = ((120, 72, 38), (92, 84, 78), (198, 200, 196))
# Softness (Gaussian sigma, scene px) of what is drawn anti-aliased at scene scale or shrunk to it from a larger
# cut-out: area resampling leaves about this much.
DRAWN_SOFTNESS_PX = 0.4
# Drawn bunches shade their berries smoothly: by the edge-width measure (`camera.edge_width_px`) a drawn spider on
# them reads as sharp as the bunch once blurred to this (spider/bunch edge width 0.93-0.99 at 0.9-1.1 px, 0.79 with
# no blur), the ratio real spiders on real bunches show.
DRAWN_BUNCH_SOFTNESS_PX = 1.0


@dataclass(frozen=True)
class BunchCut:
    """A bunch sprite plus the softness (Gaussian sigma, scene px) its texture already carries (a photo's own blur,
    shrunk with it); what is pasted on it gets the same (`match_to_scene`)."""

    sprite: Sprite
    softness_px: float


@dataclass(frozen=True)
class SpiderCut:
    """A spider sprite plus where it came from: the photo's file name (real) or ``procedural:<kind>``."""

    sprite: Sprite
    origin: str


class AssetSource(Protocol):
    name: str
    # the coarsest photo scale among the source's bunches (mm/px): scenes are composed no finer (0: drawn, any scale)
    native_mm_per_px: float

    def bunch(self, rng: np.random.Generator, length_px: float, berry_radius_px: float, mm_per_px: float) -> BunchCut:
        """A bunch at scene scale `mm_per_px` (pixels given at that scale), at most `length_px` long."""
        ...

    def spider(self, rng: np.random.Generator, span_px: float) -> SpiderCut: ...

    def patch(self, rng: np.random.Generator, size_px: float) -> Sprite:
        """A non-spider cut-out (leaf, stem, berry bit) pasted the same way as spiders, so seams carry no signal."""
        ...


class ProceduralSource:
    """Everything drawn: bunches, five spider kinds (redback most often), distractors as non-spider patches."""

    name = "procedural"
    native_mm_per_px = 0.0
    spider_kind_p = (0.5, 0.15, 0.1, 0.15, 0.1)

    def bunch(self, rng: np.random.Generator, length_px: float, berry_radius_px: float, mm_per_px: float) -> BunchCut:
        return BunchCut(proc.render_bunch(rng, length_px, berry_radius_px), DRAWN_BUNCH_SOFTNESS_PX)

    def spider(self, rng: np.random.Generator, span_px: float) -> SpiderCut:
        kind = proc.SPIDER_KINDS[int(rng.choice(len(proc.SPIDER_KINDS), p=self.spider_kind_p))]
        return SpiderCut(proc.render_spider(rng, span_px, kind), f"procedural:{kind}")

    def patch(self, rng: np.random.Generator, size_px: float) -> Sprite:
        kind = proc.DISTRACTOR_KINDS[int(rng.integers(len(proc.DISTRACTOR_KINDS)))]
        return proc.render_distractor(rng, size_px, kind)


def distractor(rng: np.random.Generator, size_px: float, source: AssetSource) -> Sprite:
    """A hard negative object: a procedural spider-like distractor or a cut-out non-spider patch, 50/50."""
    if rng.random() < 0.5:
        kind = proc.DISTRACTOR_KINDS[int(rng.integers(len(proc.DISTRACTOR_KINDS)))]
        return proc.render_distractor(rng, size_px, kind)
    return source.patch(rng, size_px)


# --------------------------------------------------------------------------------------------- decorating
def shrink_to_span(sprite: Sprite, span_px: float) -> Sprite:
    """The cut-out shrunk so the larger side of its coverage box is at most `span_px`; never enlarged."""
    sprite = crop_sprite(sprite, 0.1)
    scale = span_px / max(*sprite.wh, 1)
    return crop_sprite(resize_sprite(sprite, scale)) if scale < 1.0 else sprite


def match_to_scene(rng: np.random.Generator, obj: Sprite, softness_px: float) -> Sprite:
    """Make a cut-out sit in the scene: a small random colour cast, and the bunch's own softness.

    Applied identically to spiders and non-spider patches, so neither colour nor sharpness separates them. The
    bunch carries its photo's blur (`BunchCut.softness_px`); a cut-out shrunk to scene scale carries about
    `DRAWN_SOFTNESS_PX`, so it is blurred by the difference (in quadrature) and comes out as sharp as the grapes it
    sits on -- never sharper. The camera's own defocus comes later, over the whole scene (`inspector.synth.camera`).
    """
    gain = rng.uniform(0.85, 1.12) * (1 + rng.normal(0, 0.04, 3))
    bgr = np.clip(obj.bgr.astype(np.float32) * gain[None, None, :].astype(np.float32), 0, 255).astype(np.uint8)
    out = Sprite(bgr, obj.alpha)
    target = softness_px * rng.uniform(0.9, 1.1)
    sigma = math.sqrt(max(0.0, target * target - DRAWN_SOFTNESS_PX**2))
    return blur_sprite(pad_sprite(out, 2 + math.ceil(2 * sigma)), sigma)


def _random_anchor(rng: np.random.Generator, alpha: FloatArray, min_alpha: float = 0.9) -> tuple[int, int]:
    ys, xs = np.nonzero(alpha >= min_alpha)
    if len(xs) == 0:
        ys, xs = np.nonzero(alpha > 0)
    if len(xs) == 0:
        return alpha.shape[1] // 2, alpha.shape[0] // 2
    i = int(rng.integers(len(xs)))
    return int(xs[i]), int(ys[i])


def place_object(
    rng: np.random.Generator,
    base: Sprite,
    obj: Sprite,
    anchor_xy: tuple[int, int] | None = None,
    occlude: bool = True,
) -> tuple[Sprite, BoxXYXY | None]:
    """Paste `obj` centred on an opaque point of `base` (or at `anchor_xy`), partly hidden behind berry-sized
    discs where the base shows through again; returns the new sprite (same size as `base`) and the box of the
    object's visible part (None if nothing stayed visible).
    """
    cx, cy = anchor_xy if anchor_xy is not None else _random_anchor(rng, base.alpha)
    ow, oh = obj.wh
    x, y = cx - ow // 2, cy - oh // 2
    bgr = base.bgr.copy()
    obj_cov = np.zeros(base.alpha.shape, np.float32)
    paste_alpha(obj_cov, obj.alpha, x, y)
    paste(bgr, obj, x, y)
    if occlude and rng.random() < 0.7:
        # berries in front: restore the base inside 1-3 soft discs near the object's rim
        span = max(ow, oh)
        hide = np.zeros(base.alpha.shape, np.float32)
        for _ in range(int(rng.integers(1, 4))):
            r = span * rng.uniform(0.18, 0.4)
            ang = rng.uniform(0, 2 * math.pi)
            dist = span * rng.uniform(0.3, 0.55)
            disc = soft_disc(r, edge_px=1.5)
            dx = int(cx + math.cos(ang) * dist) - disc.shape[1] // 2
            dy = int(cy + math.sin(ang) * dist) - disc.shape[0] // 2
            paste_alpha(hide, disc, dx, dy)
        hide *= base.alpha  # only where there is produce to be in front
        visible = obj_cov * (1 - hide)
        if visible.sum() >= 0.6 * obj_cov.sum():
            h3 = hide[:, :, None]
            bgr = np.clip(bgr * (1 - h3) + base.bgr * h3 + 0.5, 0, 255).astype(np.uint8)
            obj_cov = visible
    alpha = np.maximum(base.alpha, obj_cov)
    return Sprite(bgr, alpha), alpha_bbox_xyxy(obj_cov, 0.25)


@dataclass(frozen=True)
class DecoratedBunch:
    """A bunch sprite ready to ride the belt, with its spider's visible box (sprite pixels) when it has one."""

    sprite: Sprite
    spider_box: BoxXYXY | None
    spider_span_mm: float | None
    distractor_boxes: tuple[BoxXYXY, ...]
    pad_px: int = 0  # margin added around the bunch sprite it was made from
    spider_origin: str = ""  # SpiderCut.origin of the spider pasted ("" without one)
    without_spider: Sprite | None = None  # the same sprite just before the spider went on (None without one)


def decorate_bunch(
    rng: np.random.Generator,
    source: AssetSource,
    cut: BunchCut,
    spider_span_px: float | None,
    mm_per_px: float,
    n_patches: int,
    patch_size_px: tuple[float, float],
    spider_anchor_xy: tuple[int, int] | None = None,
) -> DecoratedBunch:
    """Bunch + (maybe) a spider + `n_patches` non-spider patches/distractors, all pasted the same way.

    The sprite is padded so a spider hanging over the bunch edge stays on it; the spider goes last (on top),
    centred on `spider_anchor_xy` (bunch-sprite pixels) when given, else on a random opaque point.
    """
    pad = int(max(patch_size_px[1], spider_span_px or 0.0)) + 2
    sprite = pad_sprite(cut.sprite, pad)
    boxes: list[BoxXYXY] = []
    for _ in range(n_patches):
        obj = distractor(rng, rng.uniform(*patch_size_px), source)
        obj = match_to_scene(rng, obj, cut.softness_px)
        sprite, box = place_object(rng, sprite, obj)
        if box is not None:
            boxes.append(box)
    spider_box = None
    span_mm = None
    origin = ""
    before = sprite
    if spider_span_px is not None:
        for _ in range(5):  # retry in the rare case the spider ended up (nearly) invisible
            drawn = source.spider(rng, spider_span_px)
            obj = match_to_scene(rng, drawn.sprite, cut.softness_px)
            anchor = None if spider_anchor_xy is None else (spider_anchor_xy[0] + pad, spider_anchor_xy[1] + pad)
            candidate, spider_box = place_object(rng, sprite, obj, anchor)
            if spider_box is not None:
                sprite, origin = candidate, drawn.origin
                break
        span_mm = spider_span_px * mm_per_px
    without = before if spider_box is not None else None
    return DecoratedBunch(sprite, spider_box, span_mm, tuple(boxes), pad, origin, without)


def random_pose(rng: np.random.Generator, sprite: Sprite) -> Sprite:
    """A bunch lies on the belt at any angle, either face up."""
    if rng.random() < 0.5:
        sprite = Sprite(sprite.bgr[:, ::-1].copy(), sprite.alpha[:, ::-1].copy())
    return rotate_sprite(sprite, rng.uniform(0, 360))


def crop_window(sprite: Sprite, cx: int, cy: int, size_px: int) -> Sprite:
    """The `size_px` square of `sprite` centred on (cx, cy), transparent where it leaves the sprite."""
    x0, y0 = cx - size_px // 2, cy - size_px // 2
    bgr = np.zeros((size_px, size_px, 3), np.uint8)
    alpha = np.zeros((size_px, size_px), np.float32)
    w, h = sprite.wh
    x1, y1, x2, y2 = max(x0, 0), max(y0, 0), min(x0 + size_px, w), min(y0 + size_px, h)
    if x2 > x1 and y2 > y1:
        bgr[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0] = sprite.bgr[y1:y2, x1:x2]
        alpha[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0] = sprite.alpha[y1:y2, x1:x2]
    return Sprite(bgr, alpha)


def flip_rot90(sprite: Sprite, k: int, flip: bool) -> Sprite:
    """Cheap pose change: optional horizontal flip, then `k` quarter turns."""
    bgr, alpha = sprite.bgr, sprite.alpha
    if flip:
        bgr, alpha = bgr[:, ::-1], alpha[:, ::-1]
    return Sprite(np.ascontiguousarray(np.rot90(bgr, k)), np.ascontiguousarray(np.rot90(alpha, k)))


def shadow_of(sprite: Sprite, strength: float, blur_px: float) -> FloatArray:
    """Soft drop-shadow coverage (darkening factor 0..strength) of a sprite."""
    import cv2

    a = sprite.alpha
    if blur_px > 0:
        a = np.asarray(cv2.GaussianBlur(a, (0, 0), blur_px), np.float32)
    return (np.clip(a, 0, 1) * strength).astype(np.float32)


def apply_shadow(dst: U8Array, shadow: FloatArray, x: int, y: int) -> None:
    """Darken `dst` in place by a shadow coverage map with top-left at (x, y)."""
    h, w = dst.shape[:2]
    sh, sw = shadow.shape
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
    if x2 <= x1 or y2 <= y1:
        return
    s = shadow[y1 - y : y2 - y, x1 - x : x2 - x, None]
    dst[y1:y2, x1:x2] = (dst[y1:y2, x1:x2].astype(np.float32) * (1 - s)).astype(np.uint8)
