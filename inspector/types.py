"""Small frozen value types shared by the pipeline stages. Shapes and ranges are checked on creation.

Conventions: pixels are (x, y); boxes are ``xyxy`` with exclusive right/bottom edges in integer pixel
coordinates (a box [0, 0, 224, 224] is 224 px wide); times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
U8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Box:
    """Axis-aligned box, xyxy, integer pixels, x2/y2 exclusive."""

    x1: int
    y1: int
    x2: int
    y2: int

    def __post_init__(self) -> None:
        if self.x2 < self.x1 or self.y2 < self.y1:
            raise ValueError(f"box must have x2 >= x1 and y2 >= y1, got {self.xyxy}")

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def wh(self) -> tuple[int, int]:
        return (self.x2 - self.x1, self.y2 - self.y1)

    @property
    def area(self) -> int:
        return (self.x2 - self.x1) * (self.y2 - self.y1)

    @property
    def center_xy(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    def intersect(self, other: Box) -> Box | None:
        x1, y1 = max(self.x1, other.x1), max(self.y1, other.y1)
        x2, y2 = min(self.x2, other.x2), min(self.y2, other.y2)
        if x2 <= x1 or y2 <= y1:
            return None
        return Box(x1, y1, x2, y2)

    def iou(self, other: Box) -> float:
        inter = self.intersect(other)
        if inter is None:
            return 0.0
        union = self.area + other.area - inter.area
        return inter.area / union if union > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Tile:
    """One square tile in frame pixels, resized to the model's input size for inference."""

    box: Box
    scale_index: int  # which tile scale of the plan (0 = smallest tiles)

    def __post_init__(self) -> None:
        w, h = self.box.wh
        if w <= 0 or h <= 0:
            raise ValueError(f"tile must have a positive size, got {self.box.xyxy}")


@dataclass(frozen=True, slots=True)
class TileScale:
    """One tile size of a plan: the spans (mm) it covers at 1–5 % of its area, and its grid."""

    tile_px: int
    stride_px: int
    span_mm: tuple[float, float]  # spiders of these spans cover [min_fraction, max_fraction] of a tile

    def __post_init__(self) -> None:
        if not 0 < self.stride_px <= self.tile_px:
            raise ValueError(f"stride must be in (0, tile], got stride {self.stride_px}, tile {self.tile_px}")

    @property
    def overlap_px(self) -> int:
        return self.tile_px - self.stride_px


@dataclass(frozen=True, slots=True)
class TilePlan:
    """The tiles to infer on one frame."""

    frame_wh: tuple[int, int]
    scales: tuple[TileScale, ...]
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)

    def boxes_xyxy(self) -> npt.NDArray[np.int32]:
        """(N, 4) int32 array of tile boxes."""
        if not self.tiles:
            return np.zeros((0, 4), np.int32)
        return np.array([t.box.xyxy for t in self.tiles], np.int32)


@dataclass(frozen=True, slots=True)
class FrameRef:
    """A frame as it travels through the queue: where it is in the ring, and when it was taken."""

    slot: int
    seq: int  # frame number from the start of the source (gaps mean dropped frames)
    t_capture_s: float  # monotonic in the daemon; footage time (seq / fps) in replay


@dataclass(frozen=True, slots=True)
class HeatMap:
    """A heat map placed in frame pixels: `values` (H, W) covers `box` (possibly at reduced resolution)."""

    values: FloatArray
    box: Box

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ValueError(f"heat map must be 2-D (H, W), got shape {self.values.shape}")

    def peak_xy(self) -> tuple[float, float]:
        """Peak position in frame pixels (centre of the peak cell)."""
        h, w = self.values.shape
        iy, ix = np.unravel_index(int(np.argmax(self.values)), self.values.shape)
        bw, bh = self.box.wh
        return (self.box.x1 + (ix + 0.5) * bw / w, self.box.y1 + (iy + 0.5) * bh / h)


@dataclass(frozen=True, slots=True)
class Bunch:
    """A bunch seen in one frame: tracker id, box and mask (mask is cropped to the box)."""

    bunch_id: int
    box: Box
    mask: BoolArray = field(repr=False)

    def __post_init__(self) -> None:
        w, h = self.box.wh
        if self.mask.shape != (h, w):
            raise ValueError(f"bunch mask shape {self.mask.shape} does not match its box (h, w) = {(h, w)}")


# why a bunch was rejected (or "pass"): a spider scored, not inspected whole in time, the model failed on its tiles
REASONS: tuple[str, ...] = ("spider", "uninspected", "model_error", "pass")


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one bunch; one line of decisions.jsonl."""

    bunch_id: int
    decision: str  # "reject" | "pass"
    reason: str  # "spider" | "uninspected" | "model_error" | "pass"
    score: float
    frame: int
    bbox_xyxy: tuple[int, int, int, int]
    spider_xy: tuple[float, float] | None
    fire_at_s: float
    inspected_frames: int
    t_capture_s: float = 0.0
    across_mm: float | None = None  # spider (or bunch centre) position across the belt, mm from image centre
    detail: str = ""  # the reason in words, for people (an uninspected reject: which part was not seen, and why)
    judged_frames: tuple[int, ...] = ()  # the inspected frames the score was taken over
    threshold: float | None = None  # the decision threshold in force

    def __post_init__(self) -> None:
        if self.decision not in ("reject", "pass"):
            raise ValueError(f"decision must be reject or pass, got {self.decision!r}")
        if self.reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}, got {self.reason!r}")
        if (self.decision == "pass") != (self.reason == "pass"):
            raise ValueError(f"decision {self.decision!r} does not agree with reason {self.reason!r}")

    def to_json_dict(self) -> dict[str, object]:
        """The decisions.jsonl row; strict JSON: a number that is not finite is written as null, never NaN."""
        return {
            "bunch_id": self.bunch_id,
            "decision": self.decision,
            "reason": self.reason,
            "score": _finite(self.score, 6),
            "frame": self.frame,
            "bbox_xyxy": list(self.bbox_xyxy),
            "spider_xy": None if self.spider_xy is None else [_finite(v, 2) for v in self.spider_xy],
            "fire_at_s": _finite(self.fire_at_s, 4),
            "t_capture_s": _finite(self.t_capture_s, 4),
            "inspected_frames": self.inspected_frames,
            "across_mm": None if self.across_mm is None else _finite(self.across_mm, 2),
            "detail": self.detail,
            "judged_frames": list(self.judged_frames),
            "threshold": None if self.threshold is None else _finite(self.threshold, 6),
        }


def _finite(value: float, digits: int) -> float | None:
    v = float(value)
    return round(v, digits) if np.isfinite(v) else None
