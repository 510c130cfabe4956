"""Configs that validate but cannot work are refused, one line per reason: by check-config and at daemon start."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.cli import main

CAL = """mm_per_px: {mm_per_px}
belt_direction: "+x"
belt_speed_mm_s: {speed}
camera_to_ejector_mm: {ejector}
spider_span_mm: [4.0, 12.0]
"""


def config(tmp_path: Path, mm_per_px: float = 0.3125, speed: float = 300.0, ejector: float = 800.0) -> Path:
    (tmp_path / "cal.yaml").write_text(CAL.format(mm_per_px=mm_per_px, speed=speed, ejector=ejector))
    path = tmp_path / "config.yaml"
    path.write_text("calibration: cal.yaml\ndecision:\n  latency_budget_s: 0.5\n")
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    rc = main(["check-config", str(path), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err.splitlines()


def test_a_config_that_can_work_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 1280 px at 0.3125 mm/px: 400 mm of belt in view, + 0.5 s at 300 mm/s = 550 mm <= 800 mm
    assert check(config(tmp_path), capsys, "--frame", "1280x720") == (0, [])


@pytest.mark.parametrize(
    "cal, frame, words",
    [
        ({"ejector": 0.0}, None, "camera_to_ejector_mm 0 mm is closer than the decision latency"),
        ({"ejector": 500.0}, "1280x720", "closer than the field of view (400 mm along the belt)"),
        ({"speed": 0.001}, None, "belt_speed_mm_s 0.001 mm/s is no conveyor speed"),
        ({"mm_per_px": 2.0}, None, "below the model's minimum input of 32 px"),
        ({"mm_per_px": 0.0001}, "1280x720", "do not fit the 1280x720 frame"),
    ],
)
def test_configs_that_cannot_work_are_refused_in_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cal: dict[str, float], frame: str | None, words: str
) -> None:
    path = config(tmp_path, **cal)
    rc, lines = check(path, capsys, *(["--frame", frame] if frame else []))
    assert rc == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: config cannot work: ") and words in lines[0], lines[0]


def test_the_ejector_inside_the_field_of_view_passes_only_without_the_frame_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, ejector=500.0)
    assert check(path, capsys)[0] == 0  # 500 mm > 150 mm of latency: the field of view is unknown
    assert check(path, capsys, "--frame", "1280x720")[0] == 1


def test_the_daemon_refuses_to_start_on_a_config_that_cannot_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((720, 1280, 3), 120, np.uint8))
    path = config(tmp_path, ejector=500.0)
    with path.open("a") as fh:
        fh.write(
            f"source:\n  kind: folder\n  uri: {frames}\n  fps: 10\nlink:\n  enabled: false\nmetrics:\n  enabled: false\n"
        )
        fh.write("review:\n  enabled: false\n")
    assert main(["run", "--config", str(path), "--instance", "plan-check"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config cannot work: camera_to_ejector_mm 500 mm" in err[0], err
