"""Belt and bunches: produce segmentation, belt motion, bunch tracking with stable ids, frame selection.

Coordinates: frame pixels (x, y). "Belt coordinates" are frame pixels minus the belt's cumulative travel
`travel_xy` since the first frame, so a berry keeps its belt coordinates while it rides through the view.

- Segmentation: the belt is a uniform surface; its colour (CIE Lab) is given in config or learned from the first
  frame (median colour: the belt is most of the picture) and then follows slow lighting drift (running mean of the
  pixels classified as belt). Produce = pixels farther than `color_threshold` from it, cleaned by morphology, at
  1/`SEG_DOWNSCALE` resolution for speed. Connected components larger than `min_bunch_area_mm2` are bunches.
- Motion (`BeltOdometer`): nominal belt speed from calibration, refined by phase correlation at
  1/`ODOMETRY_DOWNSCALE` against a key frame, on frames with a bunch in view (accepted only when the correlation
  is confident and within 50 % of the expected shift, else the expected shift is used); one speed sample per key span.
- Tracking: a bunch's box is predicted forward by the belt shift and matched to detections by their overlap over
  the smaller of the two (not IoU: a bunch cut by the frame's edge grows or shrinks between frames, the more so
  when frames were dropped), best overlaps first; ids are stable.
  A track whose predicted box has left the frame on the exit side has *departed*; a track unseen for
  `MAX_MISSES` frames inside the view is departed as well (lost).
- Frame selection: a frame is inspected when the belt has advanced `step` pixels since the last inspected frame,
  with step = (view length along the belt − largest spider − one frame's advance) / inspections_per_point, so every stretch of
  belt is inspected at least `inspections_per_point` times while in view. A selected frame that was not inspected
  (skipped: too late for its deadlines) is undone with `retry()`, so the next frame is selected in its place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from inspector.config import BeltConfig, Calibration
from inspector.types import BoolArray, Box, Bunch, U8Array

SEG_DOWNSCALE = 4
ODOMETRY_DOWNSCALE = 2  # belt travel is phase-correlated at half resolution: ~0.3 % speed error, 1/4 gave ~2 %
MAX_MISSES = 3
_MIN_OVERLAP = 0.3  # intersection over the smaller box, predicted track vs detection


def _lab(frame_bgr: U8Array) -> np.ndarray:
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2LAB).astype(np.float32)


def _small(frame_bgr: U8Array, downscale: int = SEG_DOWNSCALE) -> U8Array:
    h, w = frame_bgr.shape[:2]
    size_wh = (max(1, w // downscale), max(1, h // downscale))
    return np.asarray(cv2.resize(frame_bgr, size_wh, interpolation=cv2.INTER_AREA), np.uint8)


class BeltSegmenter:
    """Produce mask from colour distance to the (learned or configured) belt colour."""

    def __init__(self, config: BeltConfig) -> None:
        self.config = config
        self.belt_lab: np.ndarray | None = None
        if config.belt_bgr is not None:
            px = np.array([[config.belt_bgr]], np.uint8)
            self.belt_lab = _lab(px)[0, 0]
        self._frames_seen = 0

    def mask(self, frame_bgr: U8Array) -> BoolArray:
        """(H, W) bool produce mask in full frame pixels."""
        h, w = frame_bgr.shape[:2]
        lab = _lab(_small(frame_bgr))
        if self.belt_lab is None:
            self.belt_lab = np.median(lab.reshape(-1, 3), axis=0)
        dist = np.linalg.norm(lab - self.belt_lab, axis=2)
        small_mask = (dist > self.config.color_threshold).astype(np.uint8)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        pad = 3  # zero border: a closing must not glue a bunch near the edge to the edge
        small_mask = cv2.copyMakeBorder(small_mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        small_mask = cv2.morphologyEx(small_mask, cv2.MORPH_OPEN, kernel)
        small_mask = cv2.morphologyEx(small_mask, cv2.MORPH_CLOSE, kernel, iterations=2)[pad:-pad, pad:-pad]
        self._frames_seen += 1
        if self.config.belt_bgr is None:
            belt_pixels = lab[small_mask == 0]
            if belt_pixels.size and self._frames_seen <= self.config.learn_frames:
                self.belt_lab = np.median(belt_pixels, axis=0)
            elif belt_pixels.size:
                self.belt_lab = 0.98 * self.belt_lab + 0.02 * belt_pixels.mean(axis=0)
        return cv2.resize(small_mask, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def find_bunches(mask: BoolArray, min_area_px: float) -> list[tuple[Box, BoolArray]]:
    """Connected components of the produce mask, largest first: (box, mask cropped to the box)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    found = []
    for label in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area_px:
            continue
        crop = labels[y : y + h, x : x + w] == label
        found.append((Box(x, y, x + w, y + h), crop))
    found.sort(key=lambda item: -int(item[1].sum()))
    return found


@functools.lru_cache(maxsize=4)
def _hanning(w: int, h: int) -> np.ndarray:
    """The phase-correlation window for one frame size (made once, not per frame)."""
    return np.asarray(cv2.createHanningWindow((w, h), cv2.CV_32F))


def estimate_shift(prev_gray: np.ndarray, gray: np.ndarray, expected_xy: tuple[float, float]) -> tuple[float, float]:
    """Belt shift in frame pixels between two grey frames at 1/ODOMETRY_DOWNSCALE; the expected shift when unsure."""
    if prev_gray.shape != gray.shape:
        return expected_xy
    window = _hanning(gray.shape[1], gray.shape[0])
    # centred on the belt's level (the median: the belt fills most of a frame): an uncentred uniform belt times the
    # window is the same picture in both frames and pulls the peak towards no shift (a 60 fps belt read 17 % slow)
    prev_c = np.asarray(prev_gray - np.median(prev_gray), np.float32)
    cur_c = np.asarray(gray - np.median(gray), np.float32)
    (dx, dy), response = cv2.phaseCorrelate(prev_c, cur_c, window)
    dx, dy = dx * ODOMETRY_DOWNSCALE, dy * ODOMETRY_DOWNSCALE
    ex, ey = expected_xy
    nominal = float(np.hypot(ex, ey))
    if response < 0.1 or np.hypot(dx - ex, dy - ey) > max(0.5 * nominal, 2.0 * SEG_DOWNSCALE):
        return expected_xy
    return (float(dx), float(dy))


REKEY_FRACTION = 0.25  # a new key frame once the belt has moved this share of the view along travel


class BeltOdometer:
    """Belt travel from frame to frame, each frame phase-correlated against a key frame rather than its predecessor,
    and the belt speed those measurements give.

    Between consecutive frames at 60 fps the belt moves 2–3 px of the 1/ODOMETRY_DOWNSCALE grid; whatever error a
    sub-pixel estimate has is large against that; fire times extrapolate the speed over the distance to the
    ejector. Against a key frame tens of grid px back the same error is small, and the steps telescope: their sum
    between key frames is one measurement, so travel does not drift. A new key frame is taken once the belt has
    moved ``rekey_px`` (REKEY_FRACTION of the view), while most of the view still overlaps — or once the belt at
    the calibrated speed would have, so that a reading stuck near "stopped" cannot persist.

    Only frames with something on the belt are measured: on a bare belt the correlation locks on what does not
    move (the window, lighting) and reads "stopped". Across a bare stretch (and without refinement) travel is the
    current speed estimate times the time, and the speed estimate keeps its value."""

    def __init__(self, direction_xy: np.ndarray, px_per_s: float, rekey_px: float, refine: bool = True) -> None:
        self.direction_xy = np.asarray(direction_xy, np.float64)
        self.speed_px_per_s = px_per_s  # starts at the calibrated speed; measured steps move it (EMA)
        self.rekey_px = max(2.0 * SEG_DOWNSCALE, rekey_px)
        self.rekey_after_s = self.rekey_px / px_per_s if px_per_s > 0 else 1.0
        self._key_t_s = 0.0
        self.refine = refine
        self._key_gray: np.ndarray | None = None
        self._from_key_px = 0.0  # along-travel shift of the previous frame from the key frame
        self._prev_t_s: float | None = None

    def step(self, gray: np.ndarray, t_s: float, has_content: bool = True) -> tuple[float, float]:
        """Shift in frame pixels (x, y) of the belt since the previous frame given to ``step``; ``has_content``:
        something (a bunch) is on the belt in this frame."""
        dt_s = 0.0 if self._prev_t_s is None else max(0.0, t_s - self._prev_t_s)
        self._prev_t_s = t_s
        step_px = self.speed_px_per_s * dt_s
        if not (self.refine and has_content):
            self._key_gray = None  # a bare or unmeasured frame is no key: the next frame with content becomes one
            return self._along(step_px)
        if self._key_gray is None or dt_s <= 0:
            self._key_gray, self._from_key_px, self._key_t_s = gray, 0.0, t_s
            return self._along(step_px)
        expected_xy = self.direction_xy * (self._from_key_px + step_px)
        measured = estimate_shift(self._key_gray, gray, (float(expected_xy[0]), float(expected_xy[1])))
        from_key_px = float(np.dot(measured, self.direction_xy))  # the belt moves along its axis only
        step_px = from_key_px - self._from_key_px
        span_s = t_s - self._key_t_s
        if abs(from_key_px) >= self.rekey_px or span_s >= self.rekey_after_s:
            # one speed sample per key span: a long baseline, where a per-frame step / dt would amplify a single
            # wrong correlation into a speed far off (fire times then miss by seconds)
            self.speed_px_per_s = 0.7 * self.speed_px_per_s + 0.3 * max(0.0, from_key_px) / span_s
            self._key_gray, self._from_key_px, self._key_t_s = gray, 0.0, t_s
        else:
            self._from_key_px = from_key_px
        return self._along(step_px)

    def _along(self, along_px: float) -> tuple[float, float]:
        return (along_px * float(self.direction_xy[0]), along_px * float(self.direction_xy[1]))


@dataclass
class Track:
    bunch_id: int
    box: Box
    mask: BoolArray = field(repr=False)
    misses: int = 0


class BunchTracker:
    """Stable bunch ids across frames from detections and the belt shift."""

    def __init__(self, frame_wh: tuple[int, int], calibration: Calibration) -> None:
        self.frame_wh = frame_wh
        self.axis = calibration.travel_axis
        self.sign = calibration.travel_sign
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def _shifted(self, box: Box, shift_xy: tuple[float, float]) -> Box:
        dx, dy = round(shift_xy[0]), round(shift_xy[1])
        return Box(box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy)

    def _gone(self, box: Box) -> bool:
        w, h = self.frame_wh
        lo, hi = (box.x1, box.x2) if self.axis == 0 else (box.y1, box.y2)
        length = w if self.axis == 0 else h
        return lo >= length if self.sign > 0 else hi <= 0

    def update(
        self, detections: list[tuple[Box, BoolArray]], shift_xy: tuple[float, float]
    ) -> tuple[list[Bunch], list[int]]:
        """Match detections to tracks. Returns (bunches in this frame with ids, ids of departed tracks)."""
        predicted = {tid: self._shifted(t.box, shift_xy) for tid, t in self.tracks.items()}
        frame = Box(0, 0, *self.frame_wh)
        pairs = []
        for tid, box in predicted.items():
            visible = box.intersect(frame)
            if visible is None:
                continue
            for i, (det, _) in enumerate(detections):
                inter = visible.intersect(det)
                if inter is None:
                    continue
                overlap = inter.area / min(visible.area, det.area)
                pairs.append((overlap, visible.iou(det), tid, i))
        pairs.sort(reverse=True)
        used_tracks: set[int] = set()
        used_dets: set[int] = set()
        assignment: dict[int, int] = {}
        for overlap, _, tid, i in pairs:
            if overlap < _MIN_OVERLAP:
                break
            if tid in used_tracks or i in used_dets:
                continue
            used_tracks.add(tid)
            used_dets.add(i)
            assignment[i] = tid
        bunches: list[Bunch] = []
        for i, (box, mask) in enumerate(detections):
            matched = assignment.get(i)
            if matched is None:
                tid = self.new_id()
                self.tracks[tid] = Track(tid, box, mask)
            else:
                tid = matched
                track = self.tracks[tid]
                track.box, track.mask, track.misses = box, mask, 0
            bunches.append(Bunch(tid, box, mask))
        departed: list[int] = []
        for tid, box in predicted.items():
            if tid in used_tracks:
                continue
            track = self.tracks[tid]
            track.box = box
            track.misses += 1
            if self._gone(box) or track.misses > MAX_MISSES:
                departed.append(tid)
        for tid in departed:
            del self.tracks[tid]
        return bunches, departed

    def new_id(self) -> int:
        tid = self._next_id
        self._next_id += 1
        return tid

    def drain(self) -> list[int]:
        """End of footage: every remaining track departs."""
        ids = list(self.tracks)
        self.tracks.clear()
        return ids


class FrameSelector:
    """Belt-synchronised frame selection: inspect when the belt has advanced `step_px` since the last inspection."""

    def __init__(self, frame_wh: tuple[int, int], calibration: Calibration, config: BeltConfig, fps: float) -> None:
        view_px = frame_wh[calibration.travel_axis]
        per_frame_px = calibration.px_per_s / fps
        spider_px = calibration.spider_span_mm[1] / calibration.mm_per_px  # a spider must be wholly in view
        self.every_frame = config.mode == "whole_frame"
        self.step_px = max(0.0, (view_px - spider_px - per_frame_px) / config.inspections_per_point)
        self._last_travel: float | None = None
        self._before: float | None = None  # `_last_travel` before the last selection (for `retry`)

    def select(self, travel_along_px: float) -> bool:
        if self.every_frame or self._last_travel is None or travel_along_px - self._last_travel >= self.step_px:
            self._before, self._last_travel = self._last_travel, travel_along_px
            return True
        return False

    def retry(self) -> None:
        """The frame just selected was not inspected (skipped): select the next frame instead, as if it never was."""
        self._last_travel = self._before


def gray_small(frame_bgr: U8Array) -> np.ndarray:
    """Grey frame at 1/ODOMETRY_DOWNSCALE, float32, for phase correlation."""
    return cv2.cvtColor(_small(frame_bgr, ODOMETRY_DOWNSCALE), cv2.COLOR_BGR2GRAY).astype(np.float32)
