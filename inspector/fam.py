"""Feature activation maps (seed paper, Eq. 1) and their fusion into frame and bunch heat maps. Pure numpy/OpenCV.

Per tile:  H = Σ_{l=1..5} upsample_{R_l}( Σ_k H^l_k )
The channel sums Σ_k H^l_k (`fam1..fam5`, shape (N, H_l, W_l)) are computed inside the ONNX graph; this module does
the bilinear upsampling to the tile's input size and the sum over layers. Any square input >= 32 px: pooling floors
odd sizes (240 -> 120, 60, 30, 15, 7), and each layer's cells are placed over the input pixels they saw.

Modes:
- ``paper``: Eq. 1 exactly.
- ``normalized``: each layer map is first divided by a per-layer scale measured on spider-free footage and stored in
  the model manifest (`fam_layer_scale`), so no layer dominates by its magnitude alone. Never per-image min-max: that
  would make a clean tile look as hot as a spider tile.

Fusion: a tile's map is weighted by the tile's spider probability (so a bright distractor in a confidently clean
tile does not outshine a spider), resampled to the tile's box in frame pixels (tiles of several scales mix freely)
and averaged where tiles overlap. Heat maps are kept at `1 / downscale` of frame resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from inspector.types import Box, FloatArray, HeatMap

FamMode = Literal["paper", "normalized"]
_CV_MAX_CHANNELS = 128  # OpenCV 5 refuses more channels per Mat in resize


def upsample_bilinear(maps: FloatArray, size: int, cell_px: float | None = None) -> FloatArray:
    """(N, h, w) -> (N, size, size), bilinear with half-pixel centres (align_corners=False), edges clamped.

    `cell_px`: output pixels per map cell. By default the map spans the output (``size / h``); a smaller cell (a
    map floor-pooled from an input that is not a multiple of its stride) puts cell i over ``[i, i + 1) * cell_px``
    and leaves the uncovered bottom and right edge at the map's edge values.
    """
    n, h, w = maps.shape
    if n == 0:
        return np.zeros((0, size, size), np.float32)
    spans = cell_px is None or (abs(cell_px * h - size) < 1e-6 and abs(cell_px * w - size) < 1e-6)
    if spans and (h, w) == (size, size):
        return maps.astype(np.float32, copy=True)
    out = np.empty((n, size, size), np.float32)
    hwc = np.ascontiguousarray(np.moveaxis(maps.astype(np.float32, copy=False), 0, -1))
    for start in range(0, n, _CV_MAX_CHANNELS):
        chunk = np.ascontiguousarray(hwc[:, :, start : start + _CV_MAX_CHANNELS])
        if spans:
            resized = cv2.resize(chunk, (size, size), interpolation=cv2.INTER_LINEAR)
        else:
            assert cell_px is not None
            k = 1.0 / cell_px  # map cells per output pixel; output pixel centre x + 0.5 sits at cell (x + 0.5) * k
            to_map = np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]], np.float64)
            resized = cv2.warpAffine(
                chunk,
                to_map,
                (size, size),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            )
        if resized.ndim == 2:
            resized = resized[:, :, None]
        out[start : start + chunk.shape[2]] = np.moveaxis(resized, -1, 0)
    return out


def input_size_of(fams: Sequence[FloatArray], size: int) -> int:
    """The tile input side the layer maps came from: `size` when they fit it, else twice fam1's side.

    Pooling floors (Keras, PyTorch): layer l of an S px input is ``S >> l`` cells (240: 120, 60, 30, 15, 7), so
    fam1 gives S up to its lowest bit; pass the manifest's size to `tile_fam` to be exact for odd sizes.
    """
    if all(f.shape[1:] == (size >> layer, size >> layer) for layer, f in enumerate(fams, start=1)):
        return size
    return 2 * int(fams[0].shape[1])


def tile_fam(
    fams: Sequence[FloatArray],
    size: int,
    mode: FamMode = "paper",
    layer_scale: Sequence[float] | None = None,
    input_size: int | None = None,
) -> FloatArray:
    """Eq. 1 for a batch: five (N, H_l, W_l) channel-sum maps -> (N, size, size) feature activation maps.

    `input_size` is the model's tile input side (the manifest's `input.size`; any size >= 32). Cell i of layer l
    covers input pixels ``[i, i + 1) * 2^l``; when the input is not a multiple of 32 the last few input pixels are
    in no cell (floor pooling) and each layer map is placed where its cells lie, not stretched over the whole tile.
    """
    if len(fams) != 5:
        raise ValueError(f"expected 5 layer maps (fam1..fam5), got {len(fams)}")
    n = fams[0].shape[0]
    if any(f.ndim != 3 or f.shape[0] != n for f in fams):
        raise ValueError(f"layer maps must all be (N, H, W) with one N, got {[f.shape for f in fams]}")
    s_in = input_size_of(fams, size) if input_size is None else input_size
    want = [(s_in >> layer, s_in >> layer) for layer in range(1, 6)]
    if [f.shape[1:] for f in fams] != want:
        raise ValueError(f"layer maps {[f.shape[1:] for f in fams]} do not come from a {s_in} px input: {want}")
    if mode == "normalized":
        if layer_scale is None or len(layer_scale) != 5 or min(layer_scale) <= 0:
            raise ValueError("normalized mode needs 5 positive per-layer scales (manifest fam_layer_scale)")
        weights = [1.0 / float(s) for s in layer_scale]
    elif mode == "paper":
        weights = [1.0] * 5
    else:
        raise ValueError(f"unknown FAM mode {mode!r}; use 'paper' or 'normalized'")
    total = np.zeros((n, size, size), np.float32)
    for layer, (layer_map, weight) in enumerate(zip(fams, weights, strict=True), start=1):
        up = upsample_bilinear(layer_map, size, cell_px=size * 2**layer / s_in)
        if weight != 1.0:
            up *= np.float32(weight)
        total += up
    return total


def layer_scales(fams: Sequence[FloatArray]) -> list[float]:
    """Per-layer mean activation over a batch of spider-free tiles: the `fam_layer_scale` of the manifest."""
    return [max(float(np.mean(f)), 1e-12) for f in fams]


def stitch(
    frame_wh: tuple[int, int],
    boxes_xyxy: npt.NDArray[np.int32],
    tile_maps: FloatArray,
    weights: FloatArray | None = None,
    downscale: int = 4,
) -> HeatMap:
    """Average tile maps (each resampled to its box) into one frame heat map at 1/downscale resolution.

    `weights` (N,) multiplies each tile's map (the pipeline passes spider probabilities). Pixels no tile covers are 0.
    """
    w, h = frame_wh
    gw, gh = -(-w // downscale), -(-h // downscale)
    acc = np.zeros((gh, gw), np.float32)
    cnt = np.zeros((gh, gw), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes_xyxy.tolist()):
        gx1, gy1 = x1 // downscale, y1 // downscale
        gx2, gy2 = max(gx1 + 1, -(-x2 // downscale)), max(gy1 + 1, -(-y2 // downscale))
        gx2, gy2 = min(gx2, gw), min(gy2, gh)
        patch = cv2.resize(tile_maps[i], (gx2 - gx1, gy2 - gy1), interpolation=cv2.INTER_AREA)
        if weights is not None:
            patch = patch * np.float32(weights[i])
        acc[gy1:gy2, gx1:gx2] += patch
        cnt[gy1:gy2, gx1:gx2] += 1.0
    np.divide(acc, cnt, out=acc, where=cnt > 0)
    return HeatMap(acc, Box(0, 0, gw * downscale, gh * downscale))


def smooth_peak_map(values: FloatArray, sigma_cells: float) -> FloatArray:
    """`values` Gaussian-smoothed at `sigma_cells` (unchanged when < 0.5): its argmax is the strongest evidence of
    spider size, not the highest single cell (a FAM spike at a tile's edge can outscore the spider itself)."""
    if sigma_cells < 0.5 or values.size == 0:
        return values
    return np.asarray(cv2.GaussianBlur(values, (0, 0), sigma_cells, borderType=cv2.BORDER_REPLICATE), np.float32)


class BunchHeat:
    """A bunch's heat map accumulated across frames in belt coordinates (frame pixels minus belt travel).

    Each frame's heat map is cut to the bunch's box, shifted by the belt travel so the same berry lands in the same
    cell every frame, and averaged per cell over the frames that saw it. The canvas grows as the bunch enters view.
    """

    def __init__(self, downscale: int) -> None:
        self.downscale = downscale
        self._origin: tuple[int, int] | None = None  # belt coords (grid cells) of canvas[0, 0]
        self._sum = np.zeros((0, 0), np.float32)
        self._cnt = np.zeros((0, 0), np.float32)

    def add(self, frame_map: HeatMap, box: Box, travel_xy: tuple[float, float]) -> None:
        """Add `frame_map` inside `box` (frame pixels) seen when the belt had travelled `travel_xy` pixels."""
        ds = self.downscale
        gx1, gy1 = box.x1 // ds, box.y1 // ds
        gx2, gy2 = -(-box.x2 // ds), -(-box.y2 // ds)
        gh, gw = frame_map.values.shape
        gx2, gy2 = min(gx2, gw), min(gy2, gh)
        if gx2 <= gx1 or gy2 <= gy1:
            return
        patch = frame_map.values[gy1:gy2, gx1:gx2]
        bx = gx1 - round(travel_xy[0] / ds)
        by = gy1 - round(travel_xy[1] / ds)
        self._ensure(bx, by, bx + patch.shape[1], by + patch.shape[0])
        assert self._origin is not None
        ox, oy = bx - self._origin[0], by - self._origin[1]
        self._sum[oy : oy + patch.shape[0], ox : ox + patch.shape[1]] += patch
        self._cnt[oy : oy + patch.shape[0], ox : ox + patch.shape[1]] += 1.0

    def _ensure(self, x1: int, y1: int, x2: int, y2: int) -> None:
        if self._origin is None:
            self._origin = (x1, y1)
            self._sum = np.zeros((y2 - y1, x2 - x1), np.float32)
            self._cnt = np.zeros_like(self._sum)
            return
        ox, oy = self._origin
        h, w = self._sum.shape
        nx1, ny1 = min(ox, x1), min(oy, y1)
        nx2, ny2 = max(ox + w, x2), max(oy + h, y2)
        if (nx1, ny1, nx2, ny2) == (ox, oy, ox + w, oy + h):
            return
        new_sum = np.zeros((ny2 - ny1, nx2 - nx1), np.float32)
        new_cnt = np.zeros_like(new_sum)
        new_sum[oy - ny1 : oy - ny1 + h, ox - nx1 : ox - nx1 + w] = self._sum
        new_cnt[oy - ny1 : oy - ny1 + h, ox - nx1 : ox - nx1 + w] = self._cnt
        self._origin, self._sum, self._cnt = (nx1, ny1), new_sum, new_cnt

    def mean_map(self) -> FloatArray:
        out = np.zeros_like(self._sum)
        np.divide(self._sum, self._cnt, out=out, where=self._cnt > 0)
        return out

    def peak_frame_xy(self, travel_xy: tuple[float, float], smooth_px: float = 0.0) -> tuple[float, float] | None:
        """The accumulated map's peak, in the pixels of a frame taken at belt travel `travel_xy`.

        `smooth_px` (a spider's half span): the map is Gaussian-smoothed first, so a spider's blob outweighs a
        one-cell spike where overlapping tiles meet (`smooth_peak_map`)."""
        if self._origin is None or self._sum.size == 0:
            return None
        values = smooth_peak_map(self.mean_map(), smooth_px / self.downscale)
        iy, ix = np.unravel_index(int(np.argmax(values)), values.shape)
        ds = self.downscale
        return (
            (self._origin[0] + ix + 0.5) * ds + travel_xy[0],
            (self._origin[1] + iy + 0.5) * ds + travel_xy[1],
        )
