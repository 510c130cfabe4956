"""What happened at the ejector, against the footage's labels: when each reject fired, and whether a spider passed.

Inputs: the daemon's decision rows (``decisions.jsonl``: ``fire_at_s``, ``t_capture_s`` on the monotonic clock), the
controller's event log (``inspector actuator-sim --log``: ``fired`` with ``at_s`` and ``stretch_s``, ``failsafe``
on/off with ``at_s``; on one machine the controller clock is the same monotonic clock), and the footage's
``labels.jsonl`` (per bunch a pixel box per frame, clipped to the view). For looped footage ``clip_frames`` is the
clip's length: frame ``seq`` shows clip frame ``seq % clip_frames``.

Truth at the ejector: a labelled bunch's centre reaches the ejector at ``fire_time_s`` of its box centre in any frame
that shows it whole (the median over those frames), its leading and trailing ends half its length earlier and later,
at the calibrated belt speed. A fire is **on time** when a pulse (``stretch_s`` 0) comes within one frame interval of
the bunch's centre, and a stretch is on by its leading end (an earlier start, e.g. for an end never seen, is safe)
and lasts past its trailing end, each within one frame interval.
A decision that lies on no labelled bunch (an unseen stretch of belt after a gap) is timed by its own box. A spider
bunch that reached the ejector while the controller was logging is **caught** when a fire covers it or the controller
was in fail-safe while it passed (the controller starts in fail-safe and returns to it when the inspector stops);
otherwise it passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inspector.config import Calibration
from inspector.decision import fire_time_s

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Arrival:
    """A labelled bunch at the ejector in one pass of the clip, seconds after that pass's frame 0."""

    label_id: int
    spider: bool
    centre_s: float
    half_s: float


@dataclass
class EjectorReport:
    fires_checked: int = 0
    fires_off: list[tuple[int, float]] = field(default_factory=list)  # (bunch id, start − true arrival, s)
    short_stretches: list[int] = field(default_factory=list)  # bunch ids whose stretch ended before their bunch did
    spiders_fired: list[tuple[int, int]] = field(default_factory=list)  # (label id, pass) caught by a fire
    spiders_failsafe: list[tuple[int, int]] = field(default_factory=list)  # caught by the fail-safe
    spiders_passed: list[tuple[int, int, float]] = field(default_factory=list)  # (label id, pass, arrival s)

    @property
    def ok(self) -> bool:
        return not self.fires_off and not self.short_stretches and not self.spiders_passed


def _along(box: Box, cal: Calibration) -> tuple[float, float]:
    axis = cal.travel_axis
    return box[axis], box[axis + 2]


def _whole(box: Box, frame_wh: tuple[int, int], cal: Calibration) -> bool:
    lo, hi = _along(box, cal)
    return lo > 0 and hi < frame_wh[cal.travel_axis]


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def arrivals(labels: list[dict[str, Any]], cal: Calibration, frame_wh: tuple[int, int], fps: float) -> list[Arrival]:
    """When each labelled bunch reaches the ejector, relative to its pass's frame 0 (bunches never seen whole are
    left out: their length is unknown)."""
    out = []
    for lab in labels:
        times, halves = [], []
        for f, *box in lab["track"]:
            b: Box = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
            if _whole(b, frame_wh, cal):
                times.append(fire_time_s(f / fps, _centre(b), frame_wh, cal))
                lo, hi = _along(b, cal)
                halves.append(cal.mm((hi - lo) / 2.0) / cal.belt_speed_mm_s)
        if times:
            times.sort()
            halves.sort()
            out.append(
                Arrival(int(lab["bunch_id"]), bool(lab["spider"]), times[len(times) // 2], halves[len(halves) // 2])
            )
    return out


def _overlap(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def label_under(row: dict[str, Any], labels: list[dict[str, Any]], clip_frames: int | None) -> int | None:
    """The label id whose box in the row's frame covers most of the row's box (over half of it), or None."""
    frame = int(row["frame"]) % clip_frames if clip_frames else int(row["frame"])
    x1, y1, x2, y2 = (float(v) for v in row["bbox_xyxy"])
    area = max(1.0, (x2 - x1) * (y2 - y1))
    best, best_id = 0.0, None
    for lab in labels:
        for f, *box in lab["track"]:
            if f == frame:
                o = _overlap((x1, y1, x2, y2), (float(box[0]), float(box[1]), float(box[2]), float(box[3])))
                if o > best:
                    best, best_id = o, int(lab["bunch_id"])
    return best_id if best > 0.5 * area else None


def _box_arrival(row: dict[str, Any], cal: Calibration, frame_wh: tuple[int, int]) -> tuple[float, float]:
    """(leading, trailing end) at the ejector of a decision's own box (a stretch of belt)."""
    x1, y1, x2, y2 = (float(v) for v in row["bbox_xyxy"])
    t = float(row["t_capture_s"])
    ends = [
        fire_time_s(t, xy, frame_wh, cal)
        for xy in (((x1 + x2) / 2, y1), ((x1 + x2) / 2, y2), (x1, (y1 + y2) / 2), (x2, (y1 + y2) / 2))
    ]
    return min(ends), max(ends)


def footage_t0_s(rows: list[dict[str, Any]], fps: float) -> float:
    """Capture time of frame 0 (realtime pacing): the median over the rows of ``t_capture_s − frame / fps``."""
    starts = sorted(float(r["t_capture_s"]) - int(r["frame"]) / fps for r in rows)
    if not starts:
        raise ValueError("no decided row to date the footage by")
    return starts[len(starts) // 2]


def failsafe_intervals(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """When the controller was in fail-safe (its clock); an interval still open ends at its last event."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for e in events:
        if e.get("event") != "failsafe":
            continue
        at = float(e.get("at_s", e.get("t_s", 0.0)))
        if e["state"] == "on" and start is None:
            start = at
        elif e["state"] == "off" and start is not None:
            out.append((start, at))
            start = None
    if start is not None and events:
        out.append((start, max(float(e.get("t_s", start)) for e in events)))
    return out


def ejector_report(
    rows: list[dict[str, Any]],
    events: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    cal: Calibration,
    frame_wh: tuple[int, int],
    fps: float,
    clip_frames: int | None = None,
) -> EjectorReport:
    """Check every ``fired`` event against the labelled truth and account for every spider bunch (module doc)."""
    tol = 1.0 / fps
    report = EjectorReport()
    if not rows:
        return report
    t0 = footage_t0_s(rows, fps)
    clip_s = clip_frames / fps if clip_frames else 0.0
    by_label = {a.label_id: a for a in arrivals(labels, cal, frame_wh, fps)}
    by_row = {int(r["bunch_id"]): r for r in rows}
    covered: list[tuple[float, float]] = []
    for e in events:
        if e.get("event") != "fired":
            continue
        row = by_row.get(int(e["bunch_id"]))
        if row is None:
            continue
        report.fires_checked += 1
        label = label_under(row, labels, clip_frames)
        if label is not None and label in by_label:
            a = by_label[label]
            k = int(row["frame"]) // clip_frames if clip_frames else 0
            centre = t0 + k * clip_s + a.centre_s
            lead, trail = centre - a.half_s, centre + a.half_s
        else:
            lead, trail = _box_arrival(row, cal, frame_wh)
        at, stretch = float(e["at_s"]), float(e.get("stretch_s", 0.0))
        if (
            stretch > 0
        ):  # a stretch covers its bunch: on by its leading end (earlier is safe), off after its trailing end
            if at > lead + tol:
                report.fires_off.append((int(e["bunch_id"]), round(at - lead, 4)))
            if at + stretch < trail - tol:
                report.short_stretches.append(int(e["bunch_id"]))
        elif abs(at - (lead + trail) / 2.0) > tol:  # a pulse at its centre
            report.fires_off.append((int(e["bunch_id"]), round(at - (lead + trail) / 2.0, 4)))
        covered.append((at, at + stretch))
    safe = failsafe_intervals(events)
    times = [float(e["t_s"]) for e in events if "t_s" in e]
    window = (min(times), max(times)) if times else (0.0, 0.0)
    last = max(int(r["frame"]) for r in rows)
    passes = range(last // clip_frames + 2) if clip_frames else range(1)
    for k in passes:
        for a in by_label.values():
            if not a.spider:
                continue
            centre = t0 + k * clip_s + a.centre_s
            lead, trail = centre - a.half_s, centre + a.half_s
            if not (window[0] <= lead and trail <= window[1]):
                continue  # it passed while no controller was logging: nothing to judge
            if any(
                (lead - tol <= lo and hi <= trail + tol) or (lo <= lead + tol and trail - tol <= hi)
                for lo, hi in covered
            ):
                report.spiders_fired.append((a.label_id, k))
            elif any(lo <= lead + tol and trail - tol <= hi for lo, hi in safe):
                report.spiders_failsafe.append((a.label_id, k))
            else:
                report.spiders_passed.append((a.label_id, k, round(lead, 3)))
    return report
