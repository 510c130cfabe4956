"""Belt and bunches: produce segmentation, belt motion, bunch tracking with stable ids, frame selection.

Coordinates: frame pixels (x, y). "Belt coordinates" are frame pixels minus the belt's cumulative travel
`travel_xy` since the first frame, so a berry keeps its belt coordinates while it rides through the view.

- Segmentation: the belt is a uniform surface; its colour (CIE Lab) is given in config or learned from the first
  frame (median colour: the belt is most of the picture) and then follows slow lighting drift (running mean of the
  pixels classified as belt). Produce = pixels farther than `color_threshold` from it, cleaned by morphology, at
  1/`SEG_DOWNSCALE` resolution for speed. Connected components larger than `min_bunch_area_mm2` are bunches.
- Motion (`BeltOdometer`): nominal belt speed from calibration, refined by phase correlation at
  1/`ODOMETRY_DOWNSCALE` against a key frame, on frames with a bunch in view (accepted only when the correlation
  is confident and within 50 % of the expected shift, else the expected shift is used); one speed sample per key span,
  its measurement refined at full resolution over the overlap of the two frames; the speed is the interquartile mean
  of the last spans' samples.
- Tracking: a bunch's box is predicted forward by the belt shift and matched to detections by their overlap over
  the smaller of the two (not IoU: a bunch cut by the frame's edge grows or shrinks between frames, the more so
  when frames were dropped), best overlaps first; ids are stable.
  A track whose predicted box has left the frame on the exit side has *departed*; a track unseen for
  `MAX_MISSES` frames inside the view is departed as well (lost).
- Frame selection: a frame is inspected when the belt has advanced `step` pixels since the last inspected frame,
  with step = (tiled length along the belt − largest spider − one frame's advance) / inspections_per_point (the tiled
  length: the view's, or that of the calibration's `roi_xyxy`), so every stretch of
  belt is inspected at least `inspections_per_point` times while in view. A selected frame that was not inspected
  (skipped: too late for its deadlines) is undone with `retry()`, so the next frame is selected in its place.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
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


def centred(gray: np.ndarray) -> np.ndarray:
    """A grey frame minus the belt's level (the median of every 4th pixel each way: the belt fills most of a frame),
    float32: an uncentred uniform belt times the correlation window is the same picture in both frames and pulls the
    peak towards no shift (a 60 fps belt read 17 % slow)."""
    return np.asarray(gray - np.median(gray[::4, ::4]), np.float32)


def estimate_shift(prev_gray: np.ndarray, gray: np.ndarray, expected_xy: tuple[float, float]) -> tuple[float, float]:
    """Belt shift in frame pixels between two grey frames at 1/ODOMETRY_DOWNSCALE (each `centred` here, with the
    frame's Hanning window); the expected shift when unsure (a weak peak, or one far from the expected shift).

    Good to about a pixel: the window weighs produce differently in the two frames as it rides across the view
    (0.3 % short), and the grid is coarse. `refine_shift` takes it to a tenth of a pixel."""
    if prev_gray.shape != gray.shape:
        return expected_xy
    (gx, gy), response = cv2.phaseCorrelate(centred(prev_gray), centred(gray), _hanning(gray.shape[1], gray.shape[0]))
    dx, dy = gx * ODOMETRY_DOWNSCALE, gy * ODOMETRY_DOWNSCALE
    ex, ey = expected_xy
    nominal = float(np.hypot(ex, ey))
    if response < 0.1 or np.hypot(dx - ex, dy - ey) > max(0.5 * nominal, 2.0 * SEG_DOWNSCALE):
        return expected_xy
    return (float(dx), float(dy))


REFINE_MAX_PX = 3.0  # a residual this large after rounding an estimate good to about a pixel is no refinement
_REFINE_MIN_OVERLAP_PX = 32
_REFINE_ROUNDS = 3  # the crop follows the estimate until it is off by under half a pixel
REFINE_BAND_MIN_PX = 128  # the refinement's band across the belt: at least this, a third of the view otherwise


def refine_shift(
    prev_gray: np.ndarray, gray: np.ndarray, shift_xy: tuple[float, float], along_axis: int = 0
) -> tuple[float, float] | None:
    """A shift estimate (`estimate_shift`) refined at full resolution: ``gray`` is moved back by the estimate rounded
    to whole pixels, and the two crops that then show the same stretch of belt (the overlap) are phase-correlated
    for what is left. Inside the overlap both crops hold the same picture, so neither the window nor produce that
    entered or left the view between the frames pulls the peak, and what is left is under a pixel or two, where the
    window's pull (a share of the shift) is nothing. None when the overlap is too small or the peak unsure.
    ``along_axis``: the belt's travel (0: x); the crops are a band along it, across the belt a third of the view
    (at least REFINE_BAND_MIN_PX) where the most produce is: a third of the cost of the whole overlap.

    On the drawn test footage (320x240) an 80-95 px shift: 0.3 % short and 0.15-0.2 px spread at half resolution,
    unbiased and 0.07-0.09 px refined. On the demo footage (1280x720, 300 px shifts): spread 0.015 px, 7 ms a
    refinement on this busy 2-core box (the whole overlap: 0.010 px, 22-34 ms)."""
    if prev_gray.shape != gray.shape:
        return None
    estimate = shift_xy
    for _ in range(_REFINE_ROUNDS):
        whole = (round(estimate[0]), round(estimate[1]))
        left = _left_over(prev_gray, gray, whole, along_axis)
        if left is None:
            return None
        estimate = (whole[0] + left[0], whole[1] + left[1])
        if max(abs(left[0]), abs(left[1])) <= 0.5:  # the rounding was the nearest: nothing left to round off
            break
    return estimate


def even_dft_size(n: int) -> int:
    """The largest even size <= n (>= 2) that the DFT takes as it is. cv2.phaseCorrelate reads a shift half a pixel
    off on an odd size, and pads a size the DFT does not like (to one that may be odd): a crop of an 80 px shift of
    a 320 px frame (240) is read exactly, of a 95 px shift (225) half a pixel long."""
    n = max(2, n - n % 2)
    while n > 2 and cv2.getOptimalDFTSize(n) != n:
        n -= 2
    return n


def _left_over(
    prev_gray: np.ndarray, gray: np.ndarray, whole_xy: tuple[int, int], along_axis: int
) -> tuple[float, float] | None:
    """The shift left over after moving ``gray`` back by whole pixels (`refine_shift`)."""
    h, w = gray.shape
    sx, sy = whole_xy
    x0, x1, y0, y1 = max(0, -sx), min(w, w - sx), max(0, -sy), min(h, h - sy)
    if x1 - x0 < _REFINE_MIN_OVERLAP_PX or y1 - y0 < _REFINE_MIN_OVERLAP_PX:
        return None
    x1, y1 = x0 + even_dft_size(x1 - x0), y0 + even_dft_size(y1 - y0)
    if along_axis == 0:
        y0, y1 = _produce_band(prev_gray[y0:y1:4, x0:x1:4], y0, y1, 0, h)
    else:
        x0, x1 = _produce_band(prev_gray[y0:y1:4, x0:x1:4], x0, x1, 1, w)
    prev_crop = centred(prev_gray[y0:y1, x0:x1])
    crop = centred(gray[y0 + sy : y1 + sy, x0 + sx : x1 + sx])
    window = cv2.createHanningWindow((x1 - x0, y1 - y0), cv2.CV_32F)  # crop sizes vary: not worth caching
    (rx, ry), response = cv2.phaseCorrelate(prev_crop, crop, window)
    if response < 0.1 or np.hypot(rx, ry) > REFINE_MAX_PX:
        return None
    return (float(rx), float(ry))


def _produce_band(sample: np.ndarray, lo: int, hi: int, across_axis: int, view_px: int) -> tuple[int, int]:
    """The band [lo', hi') of [lo, hi) across the belt (rows: ``across_axis`` 0) a third of the view wide (at least
    REFINE_BAND_MIN_PX, an even DFT size) where the most produce is: the largest sum of |pixel − belt level| over
    ``sample``, the crop at every 4th pixel each way."""
    width = min(hi - lo, even_dft_size(max(REFINE_BAND_MIN_PX, view_px // 3)))
    if width >= hi - lo:
        return lo, hi
    energy = np.abs(sample - np.median(sample)).sum(axis=1 - across_axis)
    start = lo + 4 * int(np.argmax(np.convolve(energy, np.ones(max(1, width // 4)), "valid")))
    start = min(start, hi - width)
    return start, start + width


REKEY_FRACTION = 0.25  # a new key frame once the belt has moved this share of the view along travel
SPEED_SAMPLES = 16  # key spans the speed is taken over (their interquartile mean)


def interquartile_mean(samples: Sequence[float]) -> float | None:
    """Mean of the middle half of the samples, at least the highest and the lowest left out from three samples on
    (of three: the median; of one or two: their mean): robust to a wrong sample, nearly as precise as the mean. None
    when there are none."""
    if not samples:
        return None
    ordered = np.sort(np.asarray(samples, np.float64))
    cut = max(1, ordered.size // 4) if ordered.size >= 3 else 0
    return float(ordered[cut : ordered.size - cut].mean())


class BeltOdometer:
    """Belt travel from frame to frame, each frame phase-correlated against a key frame rather than its predecessor,
    and the belt speed those measurements give.

    Between consecutive frames at 60 fps the belt moves 2–3 px of the 1/ODOMETRY_DOWNSCALE grid; whatever error a
    sub-pixel estimate has is large against that, and fire times extrapolate the speed over the distance to the
    ejector (at 800 mm, one 60 fps frame interval is 0.3 % of the way). Against a key frame tens of px back the same
    error is small, and the steps telescope: their sum between key frames is one measurement, so travel does not
    drift. A new key frame is taken once the belt has moved ``rekey_px`` (REKEY_FRACTION of the view), while most of
    the view still overlaps — or once the belt at the calibrated speed would have, so that a reading stuck near
    "stopped" cannot persist. The measurement that ends a key span is refined at full resolution (`refine_shift`,
    one full-resolution correlation per span) and gives one speed sample — except the first span after a bare belt,
    whose key frame shows the produce just entering, a sliver at the edge; the speed is the interquartile mean of the
    last SPEED_SAMPLES samples (the calibrated speed before the first): one wrong correlation moves it nowhere.

    Only frames with something on the belt are measured: on a bare belt the correlation locks on what does not
    move (the window, lighting) and reads "stopped". Across a bare stretch (and without refinement) travel is the
    current speed estimate times the time, and the speed estimate keeps its value."""

    def __init__(self, direction_xy: np.ndarray, px_per_s: float, rekey_px: float, refine: bool = True) -> None:
        self.direction_xy = np.asarray(direction_xy, np.float64)
        self.along_axis = int(abs(self.direction_xy[1]) > abs(self.direction_xy[0]))  # 0: the belt moves along x
        self.speed_px_per_s = px_per_s  # the calibrated speed until a key span is measured, then theirs
        self._span_speeds: deque[float] = deque(maxlen=SPEED_SAMPLES)  # px/s, one per key span
        self.rekey_px = max(2.0 * SEG_DOWNSCALE, rekey_px)
        self.rekey_after_s = self.rekey_px / px_per_s if px_per_s > 0 else 1.0
        self._key_t_s = 0.0
        self.refine = refine
        self._key_small: np.ndarray | None = None  # the key frame, grey at 1/ODOMETRY_DOWNSCALE
        self._key_gray: np.ndarray | None = None  # the key frame, grey at full resolution
        self._key_measured = False  # the key frame ended a span (its span gives a speed sample; not the first one)
        self._from_key_px = 0.0  # along-travel shift of the previous frame from the key frame
        self._prev_t_s: float | None = None

    def step(self, frame_bgr: U8Array, t_s: float, has_content: bool = True) -> tuple[float, float]:
        """Shift in frame pixels (x, y) of the belt since the previous frame given to ``step``; ``has_content``:
        something (a bunch) is on the belt in this frame."""
        dt_s = 0.0 if self._prev_t_s is None else max(0.0, t_s - self._prev_t_s)
        self._prev_t_s = t_s
        step_px = self.speed_px_per_s * dt_s
        if not (self.refine and has_content):
            self._key_small = self._key_gray = None  # no key on a bare frame: the next one with content is one
            return self._along(step_px)
        small = gray_small(frame_bgr)
        if self._key_small is None or self._key_gray is None or dt_s <= 0:
            self._key_small, self._key_gray, self._from_key_px, self._key_t_s = small, gray(frame_bgr), 0.0, t_s
            self._key_measured = False  # produce just came into view: a sliver at the entry edge, read 0.3 % off
            return self._along(step_px)
        expected_xy = self.direction_xy * (self._from_key_px + step_px)
        measured = estimate_shift(self._key_small, small, (float(expected_xy[0]), float(expected_xy[1])))
        from_key_px = float(np.dot(measured, self.direction_xy))  # the belt moves along its axis only
        span_s = t_s - self._key_t_s
        if abs(from_key_px) < self.rekey_px and span_s < self.rekey_after_s:
            step_px, self._from_key_px = from_key_px - self._from_key_px, from_key_px
            return self._along(step_px)
        # the span ends here: this frame becomes the key, and the span gives one speed sample over a long baseline,
        # where a per-frame step / dt would amplify a single wrong correlation into a speed far off
        full = gray(frame_bgr)
        refined = refine_shift(self._key_gray, full, measured, self.along_axis)
        if refined is not None and self._key_measured:
            from_key_px = float(np.dot(refined, self.direction_xy))
            self._span_speeds.append(max(0.0, from_key_px) / span_s)
            self.speed_px_per_s = interquartile_mean(self._span_speeds) or 0.0  # never None: a sample was just added
        step_px = from_key_px - self._from_key_px
        self._key_small, self._key_gray, self._from_key_px, self._key_t_s = small, full, 0.0, t_s
        self._key_measured = True
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
        axis = calibration.travel_axis
        view_px = frame_wh[axis]  # the tiled stretch along travel: the frame, or the calibration's roi_xyxy in it
        if calibration.roi_xyxy is not None:
            roi = calibration.roi_xyxy
            view_px = max(0, min(view_px, roi[axis + 2]) - max(0, roi[axis]))
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


def gray(frame_bgr: U8Array) -> np.ndarray:
    """Grey frame at full resolution, float32, for phase correlation."""
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
