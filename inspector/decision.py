"""Bunch decisions: score from tile probabilities across frames, threshold, spider position, fire time, fail-safe.

Score: ``max`` of every spider probability of every tile over the bunch in every inspected frame, or ``noisy_or``
(1 − Π(1 − p)). Fail-safe: a bunch is rejected with reason ``uninspected`` when it leaves the view (or the footage
ends) unless both of its ends were seen inside the view and every stretch of it along the belt lay in an inspected
frame — whatever its score. Frames dropped by capture or skipped because inspection fell behind show up here.

Fire time: the bunch centre is ``d`` px past the image's centre line (along the direction of travel) in the frame
taken at ``t``; it reaches the ejector ``camera_to_ejector_mm − d·mm_per_px`` later, at belt speed:
``fire_at_s = t + (camera_to_ejector_mm − d·mm_per_px) / belt_speed_mm_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from inspector.config import Calibration
from inspector.fam import BunchHeat
from inspector.types import Box, Decision

Aggregate = Literal["max", "noisy_or"]


def aggregate_score(probs: list[float], how: Aggregate) -> float:
    if not probs:
        return 0.0
    p = np.clip(np.asarray(probs, np.float64), 0.0, 1.0)
    if how == "max":
        return float(p.max())
    if how == "noisy_or":
        return float(1.0 - np.prod(1.0 - p))
    raise ValueError(f"unknown aggregate {how!r}; use max or noisy_or")


def along_offset_px(center_xy: tuple[float, float], frame_wh: tuple[int, int], calibration: Calibration) -> float:
    """Signed distance of a point past the image centre line, in px, positive towards the ejector."""
    axis = calibration.travel_axis
    return (center_xy[axis] - frame_wh[axis] / 2.0) * calibration.travel_sign


def across_mm(point_xy: tuple[float, float], frame_wh: tuple[int, int], calibration: Calibration) -> float:
    """Position across the belt, mm from the image centre (x for a belt moving along y, y otherwise)."""
    axis = 1 - calibration.travel_axis
    return (point_xy[axis] - frame_wh[axis] / 2.0) * calibration.mm_per_px


def fire_time_s(
    t_capture_s: float,
    center_xy: tuple[float, float],
    frame_wh: tuple[int, int],
    calibration: Calibration,
    belt_speed_mm_s: float | None = None,
) -> float:
    speed = belt_speed_mm_s if belt_speed_mm_s and belt_speed_mm_s > 0 else calibration.belt_speed_mm_s
    distance_mm = (
        calibration.camera_to_ejector_mm - along_offset_px(center_xy, frame_wh, calibration) * calibration.mm_per_px
    )
    return t_capture_s + distance_mm / speed


def merge_intervals(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1.0:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def covered(seen: list[tuple[float, float]], inspected: list[tuple[float, float]], tolerance_px: float) -> bool:
    """True when every seen stretch (belt coordinates along travel) lies in the union of inspected stretches."""
    union = merge_intervals(inspected)
    for lo, hi in merge_intervals(seen):
        remaining = lo
        for a, b in union:
            if a - tolerance_px <= remaining < b:
                remaining = max(remaining, b)
        if remaining < hi - tolerance_px:
            return False
    return True


@dataclass
class BunchRecord:
    """Everything known about one bunch while it rides through the view."""

    bunch_id: int
    heat: BunchHeat
    probs: list[float] = field(default_factory=list)
    inspected_frames: int = 0
    seen_along: list[tuple[float, float]] = field(default_factory=list)  # belt coords along travel
    best_offset_px: float = float("inf")  # |centre − image centre line| of the most central frame
    best_frame: int = -1
    best_box: Box | None = None
    best_travel_xy: tuple[float, float] = (0.0, 0.0)
    best_t_s: float = 0.0
    best_center_xy: tuple[float, float] = (0.0, 0.0)
    reject_sent: bool = False
    entry_side_seen: bool = False  # seen once with its trailing edge inside the view (not cut by the entry edge)
    exit_side_seen: bool = False  # seen once with its leading edge inside the view (not cut by the exit edge)

    def observe(
        self,
        frame: int,
        t_s: float,
        box: Box,
        travel_xy: tuple[float, float],
        frame_wh: tuple[int, int],
        calibration: Calibration,
    ) -> None:
        axis = calibration.travel_axis
        lo, hi = (box.x1, box.x2) if axis == 0 else (box.y1, box.y2)
        length = frame_wh[axis]
        at_low_edge, at_high_edge = lo <= 1, hi >= length - 1
        forward = calibration.travel_sign > 0
        self.entry_side_seen |= not (at_low_edge if forward else at_high_edge)
        self.exit_side_seen |= not (at_high_edge if forward else at_low_edge)
        self.seen_along.append((lo - travel_xy[axis], hi - travel_xy[axis]))
        if len(self.seen_along) > 64:
            self.seen_along = merge_intervals(self.seen_along)
        offset = abs(along_offset_px(box.center_xy, frame_wh, calibration))
        if offset < self.best_offset_px:
            self.best_offset_px, self.best_frame, self.best_box = offset, frame, box
            self.best_travel_xy, self.best_t_s, self.best_center_xy = travel_xy, t_s, box.center_xy

    def inspected(self, probs: list[float]) -> None:
        """An inspected frame showed this bunch; `probs` are the spider probabilities of its tiles there."""
        self.inspected_frames += 1
        self.probs.extend(probs)

    def score(self, how: Aggregate) -> float:
        return aggregate_score(self.probs, how)

    def fully_inspected(self, windows: list[tuple[float, float]], tolerance_px: float) -> bool:
        """Both ends of the bunch were seen, and every stretch of it lay in an inspected frame.

        `windows` are the stretches of belt (belt coordinates along travel) that inspected frames showed, each
        shrunk by half the largest spider at both ends: a spider centred in a window lay wholly in that frame.
        Coverage is judged on the belt, not per track, so a bunch that touched a leaf or a neighbour for a few
        frames (one component, a bigger box) is still judged by what was inspected."""
        return (
            self.inspected_frames > 0
            and self.entry_side_seen
            and self.exit_side_seen
            and covered(self.seen_along, windows, tolerance_px)
        )


def decide(
    record: BunchRecord,
    *,
    threshold: float,
    how: Aggregate,
    frame_wh: tuple[int, int],
    calibration: Calibration,
    belt_speed_mm_s: float | None,
    final: bool,
    windows: list[tuple[float, float]],
    tolerance_px: float = 2.0,
) -> Decision:
    """The verdict on a bunch. `final` = it has left the view (only then can it be uninspected); `windows`: see
    `BunchRecord.fully_inspected`."""
    score = record.score(how)
    box = record.best_box or Box(0, 0, 0, 0)
    spider_xy = record.heat.peak_frame_xy(record.best_travel_xy)
    if spider_xy is not None:  # clamp the heat-map peak into the bunch's box in that frame
        spider_xy = (min(max(spider_xy[0], box.x1), box.x2), min(max(spider_xy[1], box.y1), box.y2))
    if score >= threshold and record.inspected_frames > 0:
        decision, reason = "reject", "spider"
    elif final and not record.fully_inspected(windows, tolerance_px):
        decision, reason = "reject", "uninspected"
    else:
        decision, reason = "pass", "pass"
    point = spider_xy if spider_xy is not None else record.best_center_xy
    return Decision(
        bunch_id=record.bunch_id,
        decision=decision,
        reason=reason,
        score=score,
        frame=record.best_frame,
        bbox_xyxy=box.xyxy,
        spider_xy=spider_xy,
        fire_at_s=fire_time_s(record.best_t_s, record.best_center_xy, frame_wh, calibration, belt_speed_mm_s),
        inspected_frames=record.inspected_frames,
        t_capture_s=record.best_t_s,
        across_mm=across_mm(point, frame_wh, calibration),
    )
