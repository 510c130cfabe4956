"""Drawn conveyor frames with known truth for pipeline tests: grey belt, green disc bunches, black-dot spiders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.config import Calibration

BELT_BGR = (150, 150, 150)
GRAPE_BGR = (60, 170, 70)


@dataclass(frozen=True)
class DrawnBunch:
    bunch_id: int
    start_x: float  # centre x at frame 0 (negative: not yet in view)
    y: float
    radius: float
    spider_dxy: tuple[float, float] | None  # spider centre relative to bunch centre


def calibration(direction: str = "+x") -> Calibration:
    return Calibration(
        mm_per_px=0.5,
        belt_direction=direction,  # type: ignore[arg-type,unused-ignore]
        belt_speed_mm_s=150.0,  # 300 px/s
        camera_to_ejector_mm=800.0,
        spider_span_mm=(4.0, 8.0),
    )


def scene(n: int = 4, spider_every: int = 2, gap: float = 170.0) -> list[DrawnBunch]:
    return [
        DrawnBunch(i + 1, -60.0 - i * gap, 120.0 + (i % 2) * 10, 40.0, (8.0, -6.0) if i % spider_every == 1 else None)
        for i in range(n)
    ]


def center_x(b: DrawnBunch, frame: int, fps: float, cal: Calibration) -> float:
    return b.start_x + cal.px_per_s * frame / fps


def draw(
    frame: int, bunches: list[DrawnBunch], fps: float, cal: Calibration, wh: tuple[int, int] = (320, 240)
) -> np.ndarray:
    img = np.full((wh[1], wh[0], 3), BELT_BGR, np.uint8)
    rng = np.random.default_rng(frame)
    img = np.clip(img.astype(np.int16) + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
    for b in bunches:
        cx = center_x(b, frame, fps, cal)
        cv2.circle(img, (round(cx), round(b.y)), round(b.radius), GRAPE_BGR, -1, lineType=cv2.LINE_AA)
        if b.spider_dxy is not None:
            sx, sy = cx + b.spider_dxy[0], b.y + b.spider_dxy[1]
            cv2.circle(img, (round(sx), round(sy)), 5, (15, 15, 20), -1, lineType=cv2.LINE_AA)
    return img


def write_footage(
    out_dir: Path,
    n_frames: int = 40,
    fps: float = 10.0,
    wh: tuple[int, int] = (320, 240),
    n_bunches: int = 4,
    bunches: list[DrawnBunch] | None = None,
) -> tuple[Path, Path, Path]:
    """An MJPG video of the drawn scene (`bunches`, default `scene(n_bunches)`), its calibration file and
    labels.jsonl in the footage generator's format."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    cal = calibration()
    bunches = scene(n_bunches) if bunches is None else bunches
    video = out_dir / "footage.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), fps, wh)
    tracks: dict[int, list[list[int]]] = {b.bunch_id: [] for b in bunches}
    for f in range(n_frames):
        writer.write(draw(f, bunches, fps, cal, wh))
        for b in bunches:
            cx = center_x(b, f, fps, cal)
            x1, x2 = max(0, round(cx - b.radius)), min(wh[0], round(cx + b.radius))
            if x2 > x1:
                tracks[b.bunch_id].append([f, x1, round(b.y - b.radius), x2, round(b.y + b.radius)])
    writer.release()
    labels = out_dir / "labels.jsonl"
    with labels.open("w") as fh:
        for b in bunches:
            fh.write(
                json.dumps(
                    {
                        "bunch_id": b.bunch_id,
                        "spider": b.spider_dxy is not None,
                        "spider_span_mm": 5.0,
                        "track": tracks[b.bunch_id],
                        "spider_track": [],
                    }
                )
                + "\n"
            )
    cal_path = out_dir / "calibration.yaml"
    cal_path.write_text(cal.to_yaml())
    return video, cal_path, labels


# ------------------------------------------------------------------------------------------------ truth for decisions
def span_in_view(b: DrawnBunch, frame: int, fps: float, wh: tuple[int, int] = (320, 240)) -> tuple[float, float]:
    """The drawn bunch's extent along x inside the view at `frame` (empty when hi <= lo)."""
    cx = center_x(b, frame, fps, calibration())
    return max(0.0, cx - b.radius), min(float(wh[0]), cx + b.radius)


def bunch_under(
    bbox_xyxy: tuple[int, int, int, int] | list[int], frame: int, bunches: list[DrawnBunch], fps: float
) -> DrawnBunch:
    """The one drawn bunch a decision's box (in the decision's frame) lies on; fails when none or two do."""
    x1, y1, x2, y2 = bbox_xyxy

    def overlap(b: DrawnBunch) -> float:
        lo, hi = span_in_view(b, frame, fps)
        dx = min(x2, hi) - max(x1, lo)
        dy = min(y2, b.y + b.radius) - max(y1, b.y - b.radius)
        return max(0.0, dx) * max(0.0, dy)

    scored = sorted(((overlap(b), b.bunch_id) for b in bunches), reverse=True)
    assert scored[0][0] > 0.5 * (x2 - x1) * (y2 - y1), f"box {bbox_xyxy} at frame {frame} lies on no drawn bunch"
    assert len(scored) == 1 or scored[1][0] < 0.2 * scored[0][0], f"box {bbox_xyxy} at frame {frame}: two bunches"
    return next(b for b in bunches if b.bunch_id == scored[0][1])


def check_rows_against_truth(
    rows: list[dict],
    bunches: list[DrawnBunch],
    fps: float,
    wh: tuple[int, int] = (320, 240),
    through_frame: int | None = None,
) -> dict[int, dict]:
    """Decision-log rows of drawn footage checked bunch by bunch against the drawn truth; {drawn id: its row}.

    The safety rule as seen from outside: every row is about one drawn bunch, or is an unseen stretch of belt
    (`across_mm` null; reject, uninspected); no drawn bunch is decided twice; a spider bunch is never passed
    (a pass needs the bunch wholly inspected, and an inspected spider scores above the threshold); a pass is a
    bunch inspected at least once and seen whole (its most central frame does not cut it); and every drawn bunch
    that had entered the view by `through_frame` (default: the last frame a row names) is decided or lies inside an
    unseen stretch — none rides on undecided."""
    decided: dict[int, dict] = {}
    stretches: list[tuple[int, float, float]] = []  # (frame, x from, x to) in that frame's coordinates
    for r in rows:
        if r["across_mm"] is None:
            assert (r["decision"], r["reason"], r["inspected_frames"]) == ("reject", "uninspected", 0), r
            stretches.append((r["frame"], float(r["bbox_xyxy"][0]), float(r["bbox_xyxy"][2])))
            continue
        b = bunch_under(r["bbox_xyxy"], r["frame"], bunches, fps)
        assert b.bunch_id not in decided, f"drawn bunch {b.bunch_id} decided twice: {decided[b.bunch_id]}, {r}"
        decided[b.bunch_id] = r
        assert r["decision"] in ("pass", "reject") and (r["decision"] == "pass") == (r["reason"] == "pass"), r
        if b.spider_dxy is not None:
            assert r["decision"] == "reject", f"spider bunch {b.bunch_id} passed: {r}"
        if r["decision"] == "pass":
            x1, _, x2, _ = r["bbox_xyxy"]
            assert r["inspected_frames"] >= 1 and x1 > 1 and x2 < wh[0] - 1, f"pass of a bunch not seen whole: {r}"
    last = max((r["frame"] for r in rows), default=-1) if through_frame is None else through_frame
    cal = calibration()
    for b in bunches:
        if b.bunch_id in decided or center_x(b, last, fps, cal) + b.radius <= 0:
            continue  # decided, or not in view yet by then
        inside = any(
            lo - 8 <= center_x(b, f, fps, cal) - b.radius and center_x(b, f, fps, cal) + b.radius <= hi + 8
            for f, lo, hi in stretches
        )
        assert inside, f"drawn bunch {b.bunch_id} was in view by frame {last} but never decided: {rows}"
    return decided
