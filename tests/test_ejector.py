"""``inspector.perf.ejector``: the check of when rejects fired against labelled footage — it passes on the truth and
fails on a fire one frame too late, a stretch too short, a spider nobody fired at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inspector.decision import fire_time_s
from inspector.perf.ejector import ejector_report
from tests.drawn import calibration, center_x, scene, write_footage

FPS = 10.0


def labelled(tmp_path: Path) -> list[dict[str, Any]]:
    _, _, labels = write_footage(tmp_path, n_frames=40, fps=FPS, n_bunches=4)
    return [json.loads(line) for line in labels.read_text().splitlines()]


def rows_and_truth(t0: float) -> tuple[list[dict[str, Any]], dict[int, float]]:
    """A decision row per drawn bunch in its most central frame, and each bunch's true centre arrival."""
    cal, rows, truth = calibration(), [], {}
    for b in scene(4):
        frame = round((160 - b.start_x) / (cal.px_per_s / FPS))
        cx = center_x(b, frame, FPS, cal)
        box = [round(cx - b.radius), round(b.y - b.radius), round(cx + b.radius), round(b.y + b.radius)]
        t = t0 + frame / FPS
        truth[b.bunch_id] = fire_time_s(t, (cx, b.y), (320, 240), cal)
        spider = b.spider_dxy is not None
        rows.append(
            {
                "bunch_id": b.bunch_id,
                "frame": frame,
                "t_capture_s": t,
                "bbox_xyxy": box,
                "fire_at_s": truth[b.bunch_id],
                "decision": "reject" if spider else "pass",
                "reason": "spider" if spider else "pass",
            }
        )
    return rows, truth


def fired(bunch_id: int, at_s: float, stretch_s: float = 0.0) -> dict[str, Any]:
    return {"event": "fired", "bunch_id": bunch_id, "at_s": at_s, "stretch_s": stretch_s, "t_s": at_s}


def test_fires_at_the_truth_pass_and_a_late_or_missing_fire_fails(tmp_path: Path) -> None:
    labels = labelled(tmp_path)
    rows, truth = rows_and_truth(1000.0)
    log = [{"event": "start", "t_s": 999.0}, {"event": "failsafe", "state": "off", "at_s": 999.5, "t_s": 999.5}]
    end = [{"event": "stop", "t_s": 1020.0}]
    half = calibration().mm(40) / calibration().belt_speed_mm_s
    good = [*log, fired(2, truth[2]), fired(4, truth[4] - half, 2 * half), *end]
    r = ejector_report(rows, good, labels, calibration(), (320, 240), FPS)
    assert r.ok and r.fires_checked == 2 and r.spiders_fired == [(2, 0), (4, 0)], r
    late = [*log, fired(2, truth[2] + 1.5 / FPS), fired(4, truth[4] - half, 2 * half), *end]
    assert ejector_report(rows, late, labels, calibration(), (320, 240), FPS).fires_off[0][0] == 2
    short = [*log, fired(2, truth[2]), fired(4, truth[4] - half, half), *end]
    assert ejector_report(rows, short, labels, calibration(), (320, 240), FPS).short_stretches == [4]
    missing = [*log, fired(2, truth[2]), *end]
    assert [p[0] for p in ejector_report(rows, missing, labels, calibration(), (320, 240), FPS).spiders_passed] == [4]
    safe = [*log, fired(2, truth[2]), {"event": "failsafe", "state": "on", "at_s": truth[4] - 1, "t_s": 0}, *end]
    assert ejector_report(rows, safe, labels, calibration(), (320, 240), FPS).spiders_failsafe == [(4, 0)]
