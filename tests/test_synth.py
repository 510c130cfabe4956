"""Footage generator: determinism, labels agree with the pixels, video round trip, belt directions, real mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from inspector.cli import main as inspector_main
from inspector.config import Calibration
from inspector.synth import generate_footage
from inspector.synth.footage import SynthError, compose_frame, plan_footage
from inspector.synth.procedural import SPIDER_KINDS, render_bunch, render_distractor, render_spider
from inspector.synth.raster import Sprite, alpha_bbox_xyxy
from inspector.synth.scene import ProceduralSource, place_object

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def cal(direction: str = "+x") -> Calibration:
    # coarse pixels and a fast belt keep the clips tiny: a bunch is ~70-150 px, crosses 320 px in ~2 s
    return Calibration(
        mm_per_px=1.5,
        belt_direction=direction,
        belt_speed_mm_s=300.0,
        camera_to_ejector_mm=500.0,
        spider_span_mm=(6.0, 15.0),
    )


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def small(out: Path, seed: int = 1, direction: str = "+x", **kw: object) -> Path:
    args: dict[str, object] = dict(
        width=320, height=240, fps=10.0, seconds=3.0, calibration=cal(direction), spider_fraction=0.6, seed=seed
    )
    args.update(kw)
    return generate_footage(out, **args)  # type: ignore[arg-type]


def load_labels(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]


def test_same_seed_same_output_and_video_round_trip(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    va, vb = small(a), small(b)
    small(c, seed=2)
    assert (a / "labels.jsonl").read_bytes() == (b / "labels.jsonl").read_bytes()
    assert (a / "labels.jsonl").read_bytes() != (c / "labels.jsonl").read_bytes()
    fa, fb = read_video(va), read_video(vb)
    assert len(fa) == 30 and all(f.shape == (240, 320, 3) for f in fa)
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))
    assert Calibration.model_validate(__import__("yaml").safe_load((a / "calibration.yaml").read_text())) == cal()


def test_labels_are_consistent(tmp_path: Path) -> None:
    out = tmp_path / "f"
    small(out, n_bunches=3, spider_fraction=2 / 3, seconds=4.0)
    labels = load_labels(out)
    assert [line["bunch_id"] for line in labels] == [0, 1, 2]
    assert sum(bool(line["spider"]) for line in labels) == 2
    for line in labels:
        assert set(line) == {"bunch_id", "spider", "spider_span_mm", "track", "spider_track"}
        track = {f: box for f, *box in line["track"]}
        for _, x1, y1, x2, y2 in line["track"]:
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        frames = [f for f, *_ in line["track"]]
        assert frames == sorted(frames) and len(frames) > 5
        if line["spider"]:
            assert 6.0 <= line["spider_span_mm"] <= 15.0
            assert line["spider_track"]
            for f, x1, y1, x2, y2 in line["spider_track"]:
                bx1, by1, bx2, by2 = track[f]
                assert bx1 <= x1 < x2 <= bx2 and by1 <= y1 < y2 <= by2
        else:
            assert line["spider_span_mm"] is None and line["spider_track"] == []


def test_boxes_move_with_the_belt(tmp_path: Path) -> None:
    out = tmp_path / "f"
    small(out, n_bunches=1, spider_fraction=0.0, seconds=3.0)
    (line,) = load_labels(out)
    # fully visible frames: right edge advances by belt speed / fps = 300 / 1.5 / 10 = 20 px per frame
    whole = [b for b in line["track"] if b[1] > 0 and b[3] < 320]
    steps = np.diff([b[1] for b in whole])
    assert len(steps) >= 2 and np.all(np.abs(steps - 20) <= 1)


def test_boxes_cover_what_is_drawn() -> None:
    fo = plan_footage(
        width=320,
        height=240,
        fps=10.0,
        seconds=3.0,
        calibration=cal(),
        n_bunches=2,
        spider_fraction=1.0,
        seed=4,
        source=ProceduralSource(),
    )
    labels = fo.labels()
    v = fo.calibration.px_per_s
    for f in (9, 15, 22):
        empty = compose_frame(fo.belt, [], f / fo.fps, v, 320).astype(np.int16)
        frame = compose_frame(fo.belt, fo.placements, f / fo.fps, v, 320).astype(np.int16)
        diff = np.abs(frame - empty).sum(2) > 30
        inside = np.zeros_like(diff)
        for line in labels:
            for g, x1, y1, x2, y2 in line["track"]:
                if g == f:
                    inside[max(0, y1 - 12) : y2 + 12, max(0, x1 - 12) : x2 + 12] = True  # + shadow margin
        assert diff.any() == inside.any()
        assert not (diff & ~inside).any()


def test_spider_box_marks_the_spider() -> None:
    rng = np.random.default_rng(0)
    bunch = render_bunch(rng, 200, 12, "green")
    spider = render_spider(rng, 24, "redback")
    out, box = place_object(rng, bunch, spider, occlude=False)
    assert box is not None
    x1, y1, x2, y2 = box
    assert max(x2 - x1, y2 - y1) <= 25
    changed = np.abs(out.bgr.astype(int) - bunch.bgr.astype(int)).sum(2) > 20
    ys, xs = np.nonzero(changed)
    inside = (xs >= x1 - 1) & (xs < x2 + 1) & (ys >= y1 - 1) & (ys < y2 + 1)
    assert inside.mean() > 0.95


def _largest_limb_gap_rad(alpha: np.ndarray) -> float:
    """Largest angle around the body (the thickest point) with nothing reaching out beyond 1.8 body radii."""
    m = (alpha > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    ys, xs = np.nonzero(m)
    far = np.hypot(xs - cx, ys - cy) > 1.8 * float(dist.max())
    if not far.any():
        return 2 * np.pi
    a = np.sort(np.arctan2(ys[far] - cy, xs[far] - cx))
    return float(np.diff(np.concatenate([a, [a[0] + 2 * np.pi]])).max())


@pytest.mark.parametrize("size_px", [40, 80])
def test_debris_distractors_never_ring_their_body_with_legs(size_px: int) -> None:
    # a dark clump ringed by thin lines is a spider drawing: as a "no spider" example it was label noise
    for seed in range(40):
        debris = render_distractor(np.random.default_rng(seed), size_px, "debris")
        redback = render_spider(np.random.default_rng(seed), size_px, "redback")
        assert _largest_limb_gap_rad(debris.alpha) > np.pi  # all bristles to one side
        assert _largest_limb_gap_rad(redback.alpha) < np.pi  # the measure does see legs all round


@pytest.mark.parametrize("kind", SPIDER_KINDS)
def test_spider_span(kind: str) -> None:
    s = render_spider(np.random.default_rng(3), 30.0, kind)  # type: ignore[arg-type]
    box = alpha_bbox_xyxy(s.alpha, 0.1)
    assert box is not None and max(box[2] - box[0], box[3] - box[1]) in (29, 30, 31)
    assert isinstance(s, Sprite) and s.bgr.dtype == np.uint8


@pytest.mark.parametrize("direction", ["-x", "+y", "-y"])
def test_directions(tmp_path: Path, direction: str) -> None:
    out = tmp_path / direction
    w, h = (320, 240) if direction[1] == "x" else (240, 320)
    small(out, direction=direction, width=w, height=h)
    frames = read_video(out / "footage.avi")
    assert frames[0].shape == (h, w, 3)
    labels = load_labels(out)
    assert labels
    for line in labels:
        boxes = np.array([b[1:] for b in line["track"]])
        assert boxes.min() >= 0 and boxes[:, 2].max() <= w and boxes[:, 3].max() <= h
        # the box centre moves the right way along the travel axis
        axis = 0 if direction[1] == "x" else 1
        centres = (boxes[:, axis] + boxes[:, axis + 2]) / 2
        sign = 1 if direction[0] == "+" else -1
        assert sign * (centres[-1] - centres[0]) > 0


def test_bad_settings_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(SynthError, match="spider fraction"):
        small(tmp_path / "x", spider_fraction=1.5)
    with pytest.raises(SynthError, match="do not pass the camera"):
        small(tmp_path / "y", n_bunches=50, seconds=1.0)


def test_cli_writes_footage_and_refuses_a_split_without_photos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--width", "320", "--height", "240", "--fps", "5", "--seconds", "2", "--mm-per-px", "1.5"]
    assert inspector_main(["footage", "--out", str(tmp_path / "ok"), *base]) == 0
    assert {p.name for p in (tmp_path / "ok").iterdir()} >= {"footage.avi", "calibration.yaml", "labels.jsonl"}
    # --split without --real used to make procedural footage silently
    assert inspector_main(["footage", "--out", str(tmp_path / "no"), *base, "--split", "holdout"]) == 1
    assert "give --real DIR too" in capsys.readouterr().err and not (tmp_path / "no").exists()


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_real_mode(tmp_path: Path) -> None:
    out = tmp_path / "r"
    small(out, n_bunches=2, spider_fraction=0.5, real_dir=REALDATA, seconds=2.5)
    labels = load_labels(out)
    assert len(labels) == 2 and sum(bool(x["spider"]) for x in labels) == 1
    assert len(read_video(out / "footage.avi")) == 25


@pytest.mark.parametrize("seconds", [0.1, 0.3, 0.5])
def test_short_clips_show_a_bunch(tmp_path: Path, seconds: float) -> None:
    # a clip shorter than the empty lead-in used to leave no bunch to place (IndexError)
    out = tmp_path / "s"
    small(out, seconds=seconds)
    labels = load_labels(out)
    assert labels and all(line["track"] for line in labels)
    assert len(read_video(out / "footage.avi")) == max(1, round(seconds * 10))


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_real_footage_finer_than_the_photos_renders_at_their_scale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fine = Calibration(
        mm_per_px=0.2, belt_direction="+x", belt_speed_mm_s=300.0, camera_to_ejector_mm=500.0, spider_span_mm=(6, 15)
    )
    out = tmp_path / "f"
    with caplog.at_level("WARNING"):
        small(out, calibration=fine, real_dir=REALDATA, seconds=0.3, width=160, height=120)
    notes = [r.getMessage() for r in caplog.records if "finer than the photos allow" in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0] and "rendering at 0.25 mm/px" in notes[0]
    assert "mm_per_px: 0.25" in (out / "calibration.yaml").read_text()
