"""Tile geometry: pure functions. Which square tiles of a frame go to the model, and at which scales.

Area model. A spider of leg span ``s`` is taken as a disc of diameter ``s`` (radius ``s / 2``), so in a square tile
of side ``T`` it covers the fraction ``f = π s² / (4 T²)`` of the tile. The model was trained on tiles with
``f ∈ [1 %, 5 %]`` (seed paper: smaller spiders vanish after the pooling layers, larger ones lose context), so a tile
side ``T`` serves the spans ``s ∈ [T·√(4·f_min/π), T·√(4·f_max/π)]`` — a span ratio of √(f_max/f_min) ≈ 2.24.
When the calibration's ``spider_span_mm`` range is wider than that, several tile scales are used, each covering a
contiguous piece of the range (smallest tiles first).

Coverage. Within a scale, tiles sit on a grid whose stride leaves an overlap of at least the largest span that
scale serves (plus one pixel), so every spider disc that lies inside the frame (or ROI) lies wholly inside some
tile. The last tile of each row/column is snapped to the edge (no tile leaves the frame). With a produce mask,
only tiles that contain at least one produce pixel are kept: a spider inside the mask is then always tiled.

Internally the fraction band is narrowed by ``_MARGIN`` on each side so that pixel rounding never pushes a spider
out of [f_min, f_max].
"""

from __future__ import annotations

import math

import numpy as np

from inspector.config import Calibration
from inspector.types import BoolArray, Box, Tile, TilePlan, TileScale

_MARGIN = 0.02  # relative: plan for [f_min·1.02, f_max·0.98]
MIN_SPAN_PX = 6.0  # below this a spider is a few pixels: warn that the camera resolution is too low


def spider_area_fraction(span_px: float, tile_px: float) -> float:
    """Share of a square tile of side `tile_px` covered by a disc of diameter `span_px`."""
    return math.pi * span_px**2 / (4.0 * tile_px**2)


def tile_scales(
    calibration: Calibration, min_fraction: float = 0.01, max_fraction: float = 0.05
) -> tuple[TileScale, ...]:
    """Tile sizes (camera pixels) so every span in `calibration.spider_span_mm` covers [min, max] of some scale."""
    if not 0 < min_fraction < max_fraction < 1:
        raise ValueError(f"need 0 < min_fraction < max_fraction < 1, got {min_fraction}, {max_fraction}")
    f_lo, f_hi = min_fraction * (1 + _MARGIN), max_fraction * (1 - _MARGIN)
    span_lo_mm, span_hi_mm = calibration.spider_span_mm
    mm_per_px = calibration.mm_per_px
    scales: list[TileScale] = []
    lo_px = span_lo_mm / mm_per_px
    hi_target_px = span_hi_mm / mm_per_px
    while True:
        tile_px = max(2, math.floor(lo_px * math.sqrt(math.pi / (4 * f_lo))))
        covers_px = tile_px * math.sqrt(4 * f_hi / math.pi)
        top_px = min(covers_px, hi_target_px)
        overlap_px = math.ceil(top_px) + 1
        stride_px = max(1, tile_px - overlap_px)
        scales.append(TileScale(tile_px, stride_px, (lo_px * mm_per_px, top_px * mm_per_px)))
        if covers_px >= hi_target_px:
            return tuple(scales)
        lo_px = covers_px


def resolution_warnings(calibration: Calibration) -> list[str]:
    """Human-readable warnings when the camera cannot resolve the smallest spider."""
    span_px = calibration.spider_span_mm[0] / calibration.mm_per_px
    if span_px < MIN_SPAN_PX:
        return [
            f"smallest spider ({calibration.spider_span_mm[0]} mm) is only {span_px:.1f} px at "
            f"{calibration.mm_per_px} mm/px; detection needs >= {MIN_SPAN_PX:.0f} px: move the camera closer "
            "or use a longer lens"
        ]
    return []


def grid_starts(length_px: int, tile_px: int, stride_px: int) -> list[int]:
    """Start offsets along one axis: every `stride_px`, the last one snapped so the tile ends at the edge."""
    if tile_px >= length_px:
        return [0]
    starts = list(range(0, length_px - tile_px + 1, stride_px))
    if starts[-1] != length_px - tile_px:
        starts.append(length_px - tile_px)
    return starts


def plan_tiles(
    frame_wh: tuple[int, int],
    scales: tuple[TileScale, ...],
    mask: BoolArray | None = None,
    roi: Box | None = None,
) -> TilePlan:
    """Tiles of every scale over the frame (or ROI); with a mask, only those holding a produce pixel.

    `mask` is (H, W) bool in frame pixels. A tile larger than the frame/ROI is clipped to it (the model then sees a
    stretched tile: `resolution_warnings`/config checks should prevent that on a real line).
    """
    w, h = frame_wh
    area = roi if roi is not None else Box(0, 0, w, h)
    area = area.intersect(Box(0, 0, w, h)) or Box(0, 0, 0, 0)
    if mask is not None and mask.shape != (h, w):
        raise ValueError(f"mask shape {mask.shape} does not match frame (h, w) = {(h, w)}")
    integral = None
    if mask is not None:
        integral = np.zeros((h + 1, w + 1), np.int64)
        integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    tiles: list[Tile] = []
    aw, ah = area.wh
    if aw == 0 or ah == 0:
        return TilePlan(frame_wh, scales, ())
    for index, scale in enumerate(scales):
        xs = grid_starts(aw, scale.tile_px, scale.stride_px)
        ys = grid_starts(ah, scale.tile_px, scale.stride_px)
        x1 = np.array(xs) + area.x1
        y1 = np.array(ys) + area.y1
        x2 = np.minimum(x1 + scale.tile_px, area.x2)
        y2 = np.minimum(y1 + scale.tile_px, area.y2)
        gx1, gy1 = np.meshgrid(x1, y1)
        gx2, gy2 = np.meshgrid(x2, y2)
        if integral is not None:
            counts = integral[gy2, gx2] - integral[gy1, gx2] - integral[gy2, gx1] + integral[gy1, gx1]
            keep = counts > 0
        else:
            keep = np.ones(gx1.shape, bool)
        for yi, xi in zip(*np.nonzero(keep), strict=True):
            box = Box(int(gx1[yi, xi]), int(gy1[yi, xi]), int(gx2[yi, xi]), int(gy2[yi, xi]))
            tiles.append(Tile(box, index))
    return TilePlan(frame_wh, scales, tuple(tiles))


def baseline_scales(scales: tuple[TileScale, ...], overlap_fraction: float = 0.25) -> tuple[TileScale, ...]:
    """The seed paper's way for comparison: the same tile sizes, a fixed fractional overlap (default 25 %)."""
    return tuple(TileScale(s.tile_px, max(1, round(s.tile_px * (1 - overlap_fraction))), s.span_mm) for s in scales)


def describe_plan(scales: tuple[TileScale, ...], calibration: Calibration) -> list[str]:
    """One line per scale: tile size in px and mm, stride, overlap, spans served and their area fractions."""
    lines = []
    for i, s in enumerate(scales):
        lo_px, hi_px = (v / calibration.mm_per_px for v in s.span_mm)
        lines.append(
            f"scale {i}: tile {s.tile_px} px ({s.tile_px * calibration.mm_per_px:.1f} mm), stride {s.stride_px} px, "
            f"overlap {s.overlap_px} px; spans {s.span_mm[0]:.2f}-{s.span_mm[1]:.2f} mm cover "
            f"{100 * spider_area_fraction(lo_px, s.tile_px):.2f}-{100 * spider_area_fraction(hi_px, s.tile_px):.2f} %"
        )
    return lines
