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
    out_dir: Path, n_frames: int = 40, fps: float = 10.0, wh: tuple[int, int] = (320, 240)
) -> tuple[Path, Path, Path]:
    """An MJPG video of the drawn scene, its calibration file and labels.jsonl in the footage generator's format."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    cal = calibration()
    bunches = scene()
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
