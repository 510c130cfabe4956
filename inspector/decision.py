"""Bunch decisions: score from tile probabilities across frames, threshold, spider position, fire time, fail-safe.

Score: ``max`` of every spider probability of every tile over the bunch in every inspected frame, or ``noisy_or``
(1 − Π(1 − p)). With ``agree_frames`` k ≥ 2 the aggregate is taken per inspected frame and the bunch score is the
k-th highest frame score: k frames must each see the spider, so one frame's fleck, glint or tile-edge artefact no
longer rejects a bunch alone. A bunch is rejected early only once k frames agree; one that leaves the view after
fewer than k inspected frames is judged by the frames it had (``frame_score_rank``: towards reject).

Model errors: a bunch whose tiles the model failed on (an exception, NaN or infinite output) is rejected at once
with reason ``model_error`` and score 1.0 (a spider verdict from its good tiles stays ``spider``); a score that is not
finite is never compared with the threshold.

Fail-safe: a bunch is rejected with reason ``uninspected`` when it leaves the view (or the footage ends) unless both
of its ends were seen inside the view and every stretch of it along the belt lay in an inspected frame — whatever
its score. Frames dropped by capture or skipped because inspection fell behind show up here. Every verdict carries
its reason in words (`Decision.detail`, `uninspected_detail`: which stretch of the bunch no inspected frame showed,
and why — frames dropped while it was in view, inspection late, or it left the view before it was inspected whole),
the inspected frames it was judged on and the threshold in force.

Fire time: the bunch centre is ``d`` px past the image's centre line (along the direction of travel) in the frame
taken at ``t``; it reaches the ejector ``camera_to_ejector_mm − d·mm_per_px`` later, at belt speed:
``fire_at_s = t + (camera_to_ejector_mm − d·mm_per_px) / belt_speed_mm_s`` (the calibrated speed while no speed has
been measured). Every fire time in the package comes from `fire_time_at_offset_s`. A bunch's fire time is the
interquartile mean of this over the frames that showed it whole (`BunchRecord.fire_at_s`), so an early spider reject
(a pulse at the centre) waits until the bunch was seen whole: while the entry edge cuts it, its box's centre lies
downstream of the bunch's (a 60 fps reject fired 20 ms early); a bunch never seen whole (longer than the view) is
placed by its most central frame.

This module owns the whole rule: `DecisionRule` says when a bunch is rejected early (`rejects_now`), what its verdict
is when it leaves the view (`verdict`), which passes the rule overruled (`overruled`), and `unseen_stretch` rejects a
stretch of belt that no frame showed. The pipeline only feeds it observations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from inspector.belt import interquartile_mean
from inspector.config import Calibration
from inspector.fam import BunchHeat
from inspector.types import Box, Decision

Aggregate = Literal["max", "noisy_or"]
WHOLE_SIGHTINGS = 64  # a bunch's fire time is taken over at most this many frames that showed it whole (the last)


def aggregate_score(probs: list[float], how: Aggregate) -> float:
    if not probs:
        return 0.0
    p = np.clip(np.asarray(probs, np.float64), 0.0, 1.0)
    if how == "max":
        return float(p.max())
    if how == "noisy_or":
        return float(1.0 - np.prod(1.0 - p))
    raise ValueError(f"unknown aggregate {how!r}; use max or noisy_or")


def frame_score_rank(n_frames: int, agree_frames: int) -> int:
    """Which frame score, counted from the highest (1-based), is the bunch score: k, or all a bunch had if fewer."""
    return max(1, min(agree_frames, n_frames))


def along_offset_px(center_xy: tuple[float, float], frame_wh: tuple[int, int], calibration: Calibration) -> float:
    """Signed distance of a point past the image centre line, in px, positive towards the ejector."""
    axis = calibration.travel_axis
    return (center_xy[axis] - frame_wh[axis] / 2.0) * calibration.travel_sign


def whole_along(box_xyxy: tuple[int, int, int, int], frame_wh: tuple[int, int], calibration: Calibration) -> bool:
    """Both ends of the box lie inside the view along the belt (neither within a pixel of the entry or exit edge):
    the bunch was seen whole, its centre is the box's."""
    axis = calibration.travel_axis
    lo, hi = box_xyxy[axis], box_xyxy[axis + 2]
    return lo > 1 and hi < frame_wh[axis] - 1


def across_mm(point_xy: tuple[float, float], frame_wh: tuple[int, int], calibration: Calibration) -> float:
    """Position across the belt, mm from the image centre (x for a belt moving along y, y otherwise)."""
    axis = 1 - calibration.travel_axis
    return calibration.mm(point_xy[axis] - frame_wh[axis] / 2.0)


def fire_time_at_offset_s(
    t_capture_s: float, along_offset_px: float, calibration: Calibration, belt_speed_mm_s: float | None = None
) -> float:
    """When a point `along_offset_px` past the image centre line at `t_capture_s` reaches the ejector."""
    speed = belt_speed_mm_s if belt_speed_mm_s and belt_speed_mm_s > 0 else calibration.belt_speed_mm_s
    return t_capture_s + (calibration.camera_to_ejector_mm - calibration.mm(along_offset_px)) / speed


def fire_time_s(
    t_capture_s: float,
    center_xy: tuple[float, float],
    frame_wh: tuple[int, int],
    calibration: Calibration,
    belt_speed_mm_s: float | None = None,
) -> float:
    """When the point `center_xy` of the frame taken at `t_capture_s` reaches the ejector."""
    offset_px = along_offset_px(center_xy, frame_wh, calibration)
    return fire_time_at_offset_s(t_capture_s, offset_px, calibration, belt_speed_mm_s)


def merge_intervals(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1.0:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def uncovered(
    seen: list[tuple[float, float]], inspected: list[tuple[float, float]], tolerance_px: float
) -> list[tuple[float, float]]:
    """The parts of the seen stretches that lie in no inspected stretch (empty exactly when `covered`)."""
    union = merge_intervals(inspected)
    gaps: list[tuple[float, float]] = []
    for lo, hi in merge_intervals(seen):
        remaining = lo
        for a, b in union:
            if b <= remaining:
                continue
            if remaining >= hi - tolerance_px:
                break
            if a - tolerance_px > remaining:
                gaps.append((remaining, min(a, hi)))
            remaining = max(remaining, b)
        if remaining < hi - tolerance_px:
            gaps.append((remaining, hi))
    return gaps


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
    frame_probs: list[list[float]] = field(default_factory=list)  # per inspected frame: its tiles' probabilities
    seen_along: list[tuple[float, float]] = field(default_factory=list)  # belt coords along travel
    best_offset_px: float = float("inf")  # |centre − image centre line| of the most central frame
    best_frame: int = -1
    best_box: Box | None = None
    best_travel_xy: tuple[float, float] = (0.0, 0.0)
    best_t_s: float = 0.0
    best_center_xy: tuple[float, float] = (0.0, 0.0)
    best_whole: bool = False  # the best frame showed the bunch whole (`whole_along`)
    reject_sent: bool = False
    judged_frames: list[int] = field(default_factory=list)  # the inspected frames, in order
    last_frame: int = -1  # the last frame that showed the bunch
    frames_dropped: int = 0  # frames missing (dropped, skipped) between two frames that showed the bunch
    frames_skipped: int = 0  # frames that showed it, chosen for inspection and skipped: too late for its deadline
    model_error: str = ""  # the model failed on its tiles (an exception, NaN or infinite output): what happened
    entry_side_seen: bool = False  # seen once with its trailing edge inside the view (not cut by the entry edge)
    exit_side_seen: bool = False  # seen once with its leading edge inside the view (not cut by the exit edge)
    whole_at: list[tuple[float, float]] = field(default_factory=list)  # seen whole: (t_s, centre's along_offset_px)
    beyond_roi: bool = False  # reached across the belt past the tiled region (calibration `roi_xyxy`): never tiled

    def observe(
        self,
        frame: int,
        t_s: float,
        box: Box,
        travel_xy: tuple[float, float],
        frame_wh: tuple[int, int],
        calibration: Calibration,
        frames_missed_before: int = 0,
    ) -> None:
        if self.last_frame >= 0 and frame > self.last_frame + 1:
            self.frames_dropped += frame - self.last_frame - 1
        elif self.last_frame < 0:  # first sighting: it may have ridden in during frames that never arrived
            self.frames_dropped += frames_missed_before
        self.last_frame = max(self.last_frame, frame)
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
        whole = whole_along(box.xyxy, frame_wh, calibration)
        if whole:
            self.whole_at.append((t_s, along_offset_px(box.center_xy, frame_wh, calibration)))
            del self.whole_at[:-WHOLE_SIGHTINGS]
        offset = abs(along_offset_px(box.center_xy, frame_wh, calibration))
        # the most central frame that showed it whole (its box is the bunch's, and so is the fire time's centre), the
        # most central cut one while none did
        if (whole, -offset) > (self.best_whole, -self.best_offset_px):
            self.best_offset_px, self.best_frame, self.best_box, self.best_whole = offset, frame, box, whole
            self.best_travel_xy, self.best_t_s, self.best_center_xy = travel_xy, t_s, box.center_xy

    @property
    def inspected_frames(self) -> int:
        return len(self.frame_probs)

    @property
    def seen_whole(self) -> bool:
        """Seen at least once with both ends inside the view: its centre is known."""
        return bool(self.whole_at)

    def fire_at_s(self, frame_wh: tuple[int, int], calibration: Calibration, belt_speed_mm_s: float | None) -> float:
        """When the bunch's centre reaches the ejector: the interquartile mean of the fire times of the frames that
        showed it whole (each box from a 1/4-resolution mask is a pixel or two off, each frame differently); a bunch
        never seen whole (longer than the view) by its most central frame."""
        if not self.whole_at:
            return fire_time_s(self.best_t_s, self.best_center_xy, frame_wh, calibration, belt_speed_mm_s)
        fire_s = interquartile_mean(
            [fire_time_at_offset_s(t_s, offset_px, calibration, belt_speed_mm_s) for t_s, offset_px in self.whole_at]
        )
        assert fire_s is not None  # whole_at is not empty
        return fire_s

    def inspected(self, probs: list[float], frame: int = -1) -> None:
        """An inspected frame showed this bunch; `probs` are the spider probabilities of its tiles there."""
        self.frame_probs.append(list(probs))
        self.judged_frames.append(frame)

    def score(self, how: Aggregate, agree_frames: int = 1) -> float:
        """The bunch score: `how` over every tile of every frame (k = 1), else the k-th highest frame score."""
        if agree_frames <= 1:
            return aggregate_score([p for frame in self.frame_probs for p in frame], how)
        if not self.frame_probs:
            return 0.0
        per_frame = sorted((aggregate_score(frame, how) for frame in self.frame_probs), reverse=True)
        return per_frame[frame_score_rank(len(per_frame), agree_frames) - 1]

    def agreed(self, agree_frames: int) -> bool:
        """Enough frames inspected for an early reject: the score can no longer rest on fewer than k frames."""
        return self.inspected_frames >= max(1, agree_frames)

    def fully_inspected(self, windows: list[tuple[float, float]], tolerance_px: float) -> bool:
        """Both ends of the bunch were seen, and every stretch of it lay in an inspected frame.

        `windows` are the stretches of belt (belt coordinates along travel) that inspected frames showed, each
        shrunk by half the largest spider at both ends: a spider centred in a window lay wholly in that frame.
        Coverage is judged on the belt, not per track, so a bunch that touched a leaf or a neighbour for a few
        frames (one component, a bigger box) is still judged by what was inspected."""
        return (
            self.inspected_frames > 0
            and not self.beyond_roi
            and self.entry_side_seen
            and self.exit_side_seen
            and covered(self.seen_along, windows, tolerance_px)
        )


def uninspected_detail(
    record: BunchRecord, windows: list[tuple[float, float]], tolerance_px: float, calibration: Calibration
) -> str:
    """In words: which part of the bunch no inspected frame showed, and why (for the evidence and the log)."""
    if record.beyond_roi:
        return (
            "part of it lay outside the calibration's roi_xyxy across the belt, where no tile is planned: it can "
            "never be inspected whole"
        )
    if record.inspected_frames == 0:
        what = "no inspected frame showed it"
    elif not record.entry_side_seen:
        what = "its trailing end was never inside the view"
    elif not record.exit_side_seen:
        what = "its leading end was never inside the view"
    else:
        gaps = uncovered(record.seen_along, windows, tolerance_px)
        merged = merge_intervals(record.seen_along)
        if gaps and merged:
            lead = merged[-1][1] if calibration.travel_sign > 0 else merged[0][0]
            back = sorted(
                (abs(lead - (b if calibration.travel_sign > 0 else a)), abs(lead - (a if calibration.travel_sign > 0 else b)))
                for a, b in gaps
            )
            stretches = ", ".join(f"{calibration.mm(x):.0f}–{calibration.mm(y):.0f} mm" for x, y in back)
            what = f"the stretch {stretches} behind its leading end was never in an inspected frame"
        else:
            what = "part of it was never in an inspected frame"
    if record.frames_skipped:
        why = (
            f"{record.frames_skipped} frame(s) showing it were skipped, too late to be decided before its fire time "
            "(inspection late)"
        )
    elif record.frames_dropped:
        why = (
            f"{record.frames_dropped} frame(s) were dropped while it was (or may have been) in view "
            "(capture or inspection could not keep up)"
        )
    elif record.inspected_frames == 0:
        why = "it left the view before an inspection was due (inspection late)"
    else:
        why = "it left the view before it was inspected whole"
    return f"{what}: {why}"


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
    agree_frames: int = 1,
) -> Decision:
    """The verdict on a bunch. `final` = it has left the view (only then can it be uninspected, and only then is a
    bunch with fewer than `agree_frames` inspected frames judged on those); `windows`: see
    `BunchRecord.fully_inspected`."""
    score = record.score(how, agree_frames)
    box = record.best_box or Box(0, 0, 0, 0)
    spider_xy = record.heat.peak_frame_xy(record.best_travel_xy, calibration.px(calibration.spider_span_mm[1]) / 2.0)
    if spider_xy is not None:  # clamp the heat-map peak into the bunch's box in that frame
        spider_xy = (min(max(spider_xy[0], box.x1), box.x2), min(max(spider_xy[1], box.y1), box.y2))
    n = record.inspected_frames
    error = record.model_error or ("" if np.isfinite(score) else "the bunch score is not a finite number")
    if np.isfinite(score) and score >= threshold and n > 0 and (final or record.agreed(agree_frames)):
        decision, reason = "reject", "spider"
        detail = f"spider score {score:.2f} at or above the threshold {threshold:.2f} ({n} inspected frame(s))"
    elif error:
        decision, reason, score = "reject", "model_error", 1.0
        detail = f"model error: {error}"
    elif final and not record.fully_inspected(windows, tolerance_px):
        decision, reason = "reject", "uninspected"
        detail = uninspected_detail(record, windows, tolerance_px, calibration)
    else:
        decision, reason = "pass", "pass"
        detail = f"spider score {score:.2f} below the threshold {threshold:.2f} ({n} inspected frame(s))"
    point = spider_xy if spider_xy is not None else record.best_center_xy
    return Decision(
        bunch_id=record.bunch_id,
        decision=decision,
        reason=reason,
        score=score,
        frame=record.best_frame,
        bbox_xyxy=box.xyxy,
        spider_xy=spider_xy,
        fire_at_s=record.fire_at_s(frame_wh, calibration, belt_speed_mm_s),
        inspected_frames=record.inspected_frames,
        t_capture_s=record.best_t_s,
        across_mm=across_mm(point, frame_wh, calibration),
        detail=detail,
        judged_frames=tuple(record.judged_frames),
        threshold=threshold,
    )


@dataclass(frozen=True)
class DecisionRule:
    """The decision rule as configured (`decision.*`): one object answers every question the pipeline asks."""

    threshold: float
    aggregate: Aggregate = "max"
    agree_frames: int = 1
    tolerance_px: float = 2.0  # coverage slack of `BunchRecord.fully_inspected`

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def with_threshold(self, threshold: float) -> DecisionRule:
        """The same rule with another threshold (a reload); raises ValueError outside [0, 1]."""
        return replace(self, threshold=threshold)

    def rejects_now(self, record: BunchRecord) -> bool:
        """Early reject while the bunch is still in view: not sent yet, and the model failed on its tiles, or k frames
        agree with a score at the threshold and the bunch was seen whole (a spider reject is a pulse at its centre:
        while the entry edge cuts the bunch its centre is not known; a bunch never seen whole goes when it leaves)."""
        return not record.reject_sent and (
            bool(record.model_error)
            or (
                record.seen_whole
                and record.agreed(self.agree_frames)
                and record.score(self.aggregate, self.agree_frames) >= self.threshold
            )
        )

    def verdict(
        self,
        record: BunchRecord,
        *,
        final: bool,
        frame_wh: tuple[int, int],
        calibration: Calibration,
        belt_speed_mm_s: float | None,
        windows: list[tuple[float, float]],
    ) -> Decision:
        """`decide` under this rule."""
        return decide(
            record,
            threshold=self.threshold,
            how=self.aggregate,
            frame_wh=frame_wh,
            calibration=calibration,
            belt_speed_mm_s=belt_speed_mm_s,
            final=final,
            windows=windows,
            tolerance_px=self.tolerance_px,
            agree_frames=self.agree_frames,
        )

    def overruled(self, record: BunchRecord, decision: Decision) -> bool:
        """A pass that all the bunch's tiles together would have rejected: fewer than k frames reached the threshold
        each (only possible with `agree_frames` >= 2). Counted and logged, never a reject."""
        return (
            decision.decision == "pass"
            and record.inspected_frames > 0
            and record.score(self.aggregate) >= self.threshold
        )


def unseen_stretch(
    new_id: Callable[[], int],
    along_shift_px: float,
    t_capture_s: float,
    frame: int,
    frame_wh: tuple[int, int],
    calibration: Calibration,
    belt_speed_mm_s: float | None,
    previous_frame: int | None = None,
) -> Decision | None:
    """Fail-safe for a gap (dropped frames, a stalled camera): when the belt moved `along_shift_px` — more than the
    view's length — since the last frame, a stretch of belt went by that no frame showed. It is rejected as
    `uninspected`, the whole belt width (no `across_mm`), with the fire time of its centre, under an id from
    `new_id`. None when there was no gap. `previous_frame`: the last frame before the gap (for the detail)."""
    axis, length = calibration.travel_axis, frame_wh[calibration.travel_axis]
    if along_shift_px <= length:
        return None
    lo, hi = (length, round(along_shift_px)) if calibration.travel_sign > 0 else (length - round(along_shift_px), 0)
    cross = frame_wh[1 - axis]
    missed = "" if previous_frame is None else f"; frames {previous_frame + 1}–{frame - 1} never arrived"
    detail = (
        f"the belt moved {calibration.mm(along_shift_px):.0f} mm between two frames, more than the "
        f"{calibration.mm(length):.0f} mm the camera sees: {calibration.mm(along_shift_px - length):.0f} mm of belt, "
        f"the whole width, went by unseen before frame {frame}{missed} (frames dropped or the camera stalled)"
    )
    box = Box(lo, 0, hi, cross) if axis == 0 else Box(0, lo, cross, hi)
    return Decision(
        bunch_id=new_id(),
        decision="reject",
        reason="uninspected",
        score=0.0,
        frame=frame,
        bbox_xyxy=box.xyxy,
        spider_xy=None,
        fire_at_s=fire_time_at_offset_s(t_capture_s, along_shift_px / 2.0, calibration, belt_speed_mm_s),
        inspected_frames=0,
        t_capture_s=t_capture_s,
        across_mm=None,
        detail=detail,
    )
