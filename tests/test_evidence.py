"""Evidence pictures an operator can act on: the cross on the planted spider in the crop shown, the reason in words
for an uninspected bunch, a picture for every reject (an unseen stretch of belt, a reject no frame was kept for), and
a decision logged even when its picture cannot be written."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.config import BeltConfig, Config, ModelConfig
from inspector.decision import BunchRecord, decide
from inspector.decision_log import DecisionLog
from inspector.evidence import GapSnapshot, Snapshot, hatch_unseen, marker_xy, render, render_any
from inspector.fam import BunchHeat
from inspector.model import Model
from inspector.pipeline import Pipeline
from inspector.types import Box, Decision, FrameRef
from tests.drawn import calibration, center_x, draw, scene
from tests.spot_model import write_spot_model

FPS = 10.0


@pytest.fixture(scope="module")
def spot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spot_model(tmp_path_factory.mktemp("spot"))


def run(spot: Path, frames: list[int]) -> list[tuple[Decision, object]]:
    """Drawn footage through the pipeline with evidence kept: (decision, its evidence item) for every bunch."""
    cal = calibration()
    config = Config(model=ModelConfig(path=spot, batch_size=8), belt=BeltConfig(min_bunch_area_mm2=200))
    out: list[tuple[Decision, object]] = []
    with Model(spot, batch_size=8) as model:
        pipe = Pipeline(config, cal, model, FPS, keep_evidence=True)
        for f in frames:
            step = pipe.process(draw(f, scene(), FPS, cal), FrameRef(0, f, f / FPS))
            out += [(d, step.evidence.get(d.bunch_id)) for d in step.final]
        end = pipe.finish()
        out += [(d, end.evidence.get(d.bunch_id)) for d in end.final]
    return out


def test_cross_lands_on_the_planted_spider_in_the_crop_shown(spot: Path, tmp_path: Path) -> None:
    cal = calibration()
    truth = {b.bunch_id: b for b in scene()}
    spiders = [(d, ev) for d, ev in run(spot, list(range(40))) if d.reason == "spider"]
    assert sorted(d.bunch_id for d, _ in spiders) == [2, 4]
    for d, ev in spiders:
        assert isinstance(ev, Snapshot)
        assert ev.frame in d.judged_frames and ev.frame_score == pytest.approx(d.score)  # the frame that scored
        b = truth[d.bunch_id]
        assert b.spider_dxy is not None
        spider = (center_x(b, ev.frame, FPS, cal) + b.spider_dxy[0], b.y + b.spider_dxy[1])
        mark = marker_xy(ev)
        assert mark is not None
        x, y = mark[0] + ev.crop_box.x1, mark[1] + ev.crop_box.y1
        assert abs(x - spider[0]) <= 3 and abs(y - spider[1]) <= 3, (d.bunch_id, (x, y), spider)
        picture = render(ev, d)
        assert picture.shape[0] > ev.crop_bgr.shape[0] * 2 + 100  # header and legend around the enlarged pair
        cv2.imwrite(str(tmp_path / f"bunch_{d.bunch_id}.png"), picture)


def blob_and_spike(spike: float) -> Snapshot:
    """A 100x80 crop whose heat holds a spider-sized blob (peak 1.0 at (60, 30)) and a one-pixel spike elsewhere."""
    yy, xx = np.mgrid[0:80, 0:100].astype(np.float32)
    heat = np.exp(-((xx - 60) ** 2 + (yy - 30) ** 2) / (2 * 6.0**2)).astype(np.float32)
    heat[60, 15] = spike
    crop = np.full((80, 100, 3), 120, np.uint8)
    return Snapshot(crop, Box(200, 100, 300, 180), heat, np.zeros((0, 4), np.int32), np.zeros(0), 5, spider_px=16.0)


def test_cross_prefers_the_spider_blob_to_a_one_cell_spike_where_tiles_meet() -> None:
    snap = blob_and_spike(spike=1.8)
    assert np.unravel_index(int(np.argmax(snap.heat)), snap.heat.shape) == (60, 15)  # the raw peak is the spike
    mark = marker_xy(snap)
    assert mark is not None and abs(mark[0] - 60) <= 1 and abs(mark[1] - 30) <= 1
    inside = Snapshot(**{**snap.__dict__, "bunch_box": Box(200, 140, 240, 180)})  # the blob lies outside the bunch
    mark = marker_xy(inside)
    assert mark is not None and mark[0] < 40 and mark[1] >= 40  # the cross stays on the bunch


def test_uninspected_detail_names_the_unseen_stretch_and_the_dropped_frames() -> None:
    """A bunch 100 px long riding 30 px a frame; frames 3–5 dropped; one inspected frame saw only its leading half."""
    cal = calibration()
    rec = BunchRecord(1, BunchHeat(4))
    for f in (0, 1, 2, 6, 7):  # belt coordinates of the bunch: [0, 100]
        rec.observe(f, f / FPS, Box(30 * f, 80, 30 * f + 100, 160), (30.0 * f, 0.0), (320, 240), cal)
    rec.inspected([0.1], 6)
    windows = [(50.0, 500.0)]  # the inspected frame showed only its leading 50 px (25 mm)
    d = decide(rec, threshold=0.5, how="max", frame_wh=(320, 240), calibration=cal, belt_speed_mm_s=None,
               final=True, windows=windows)
    assert d.reason == "uninspected" and d.judged_frames == (6,)
    assert "the stretch 25–50 mm behind its leading end was never in an inspected frame" in d.detail
    assert "3 frame(s) were dropped while it was (or may have been) in view" in d.detail
    rec_late = BunchRecord(2, BunchHeat(4))
    rec_late.observe(0, 0.0, Box(100, 80, 200, 160), (0.0, 0.0), (320, 240), cal)
    d = decide(rec_late, threshold=0.5, how="max", frame_wh=(320, 240), calibration=cal, belt_speed_mm_s=None,
               final=True, windows=[])
    assert d.detail == "no inspected frame showed it: it left the view before an inspection was due (inspection late)"
    rec_gap = BunchRecord(3, BunchHeat(4))  # first seen right after 4 frames that never arrived
    rec_gap.observe(9, 0.9, Box(100, 80, 200, 160), (0.0, 0.0), (320, 240), cal, frames_missed_before=4)
    d = decide(rec_gap, threshold=0.5, how="max", frame_wh=(320, 240), calibration=cal, belt_speed_mm_s=None,
               final=True, windows=[])
    assert "no inspected frame showed it: 4 frame(s) were dropped while it was (or may have been) in view" in d.detail


def test_unseen_stretch_gets_a_schematic_picture_and_says_which_frames_were_missing(
    spot: Path, tmp_path: Path
) -> None:
    frames = [*range(6), *range(20, 45)]  # frames 6-19 never arrive: the belt moves 450 px, the view is 320 px
    decided = run(spot, frames)
    gaps = [(d, ev) for d, ev in decided if d.reason == "uninspected" and d.inspected_frames == 0]
    assert len(gaps) == 1
    d, ev = gaps[0]
    assert isinstance(ev, GapSnapshot) and (ev.frame_before, ev.frame) == (5, 20) and ev.before_small is not None
    assert "frames 6–19 never arrived" in d.detail and "65 mm of belt, the whole width" in d.detail
    with DecisionLog(tmp_path / "d.jsonl", tmp_path / "ev", append=False, wall_clock=False) as log:
        log.write([d], {d.bunch_id: ev})
    row = json.loads((tmp_path / "d.jsonl").read_text())
    picture = cv2.imread(str(tmp_path / "ev" / row["evidence"]))
    assert picture is not None and picture.shape[1] == 960
    # the hatched stretch is drawn in red between the two frames
    assert (picture[:, :, 2] > 200).sum() > 2000


def test_every_reject_gets_a_picture_and_a_failed_picture_never_loses_the_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = Decision(3, "reject", "spider", 0.9, 4, (0, 0, 10, 10), None, 5.0, 1, 0.4, None, "model said so", (4,), 0.5)
    assert render_any(None, d).shape[1] == 960  # no frame kept: a card with the verdict and the reason
    (tmp_path / "ev" / "bunch_000003.jpg").mkdir(parents=True)  # the picture's path is taken: it cannot be written
    with caplog.at_level(logging.ERROR), DecisionLog(
        tmp_path / "d.jsonl", tmp_path / "ev", append=False, wall_clock=False
    ) as log:
        log.write([d], {})
    row = json.loads((tmp_path / "d.jsonl").read_text())
    assert row["bunch_id"] == 3 and "evidence" not in row and row["detail"] == "model said so"
    assert "evidence picture not written" in caplog.text


def test_uninspected_picture_hatches_the_part_no_inspected_frame_showed() -> None:
    """Bunch box x 220..280 in a crop from x 200; belt travel 50 px: belt stretch [200, 230) is frame x 250..280."""
    crop = np.full((80, 100, 3), 120, np.uint8)
    snap = Snapshot(
        crop, Box(200, 100, 300, 180), np.zeros((80, 100), np.float32), np.zeros((0, 4), np.int32), np.zeros(0), 9,
        (50.0, 0.0), None, Box(220, 110, 280, 170), 16.0, 0.0, True, ((200.0, 230.0),), 0,
    )
    image = crop.copy()
    assert hatch_unseen(image, snap, scale=1)
    orange = (image[:, :, 2] > 200) & (image[:, :, 0] < 80)
    xs, ys = np.nonzero(orange.any(axis=0))[0], np.nonzero(orange.any(axis=1))[0]
    # frame x 250..280 (crop 50..79) across the bunch's y (crop 10..69), within a pixel of anti-aliasing
    assert abs(xs.min() - 50) <= 1 and abs(xs.max() - 79) <= 1 and abs(ys.min() - 10) <= 1 and abs(ys.max() - 69) <= 1
    d = Decision(5, "reject", "uninspected", 0.1, 9, (220, 110, 280, 170), None, 5.0, 1, 0.9, None, "half", (9,), 0.5)
    assert render(snap, d).shape[1] >= 720  # drawn, with the hatching's line in the legend
    assert not hatch_unseen(crop.copy(), Snapshot(**{**snap.__dict__, "unseen_along": ((0.0, 100.0),)}), scale=1)


@pytest.mark.parametrize(
    ("moved_px", "axis", "sign"), [(325.0, 0, 1), (330.0, 1, -1), (1e6, 0, -1), (641.0, 1, 1)]
)
def test_unseen_stretch_schematic_of_any_length_and_direction(moved_px: float, axis: int, sign: int) -> None:
    """A stretch of a few mm, one of kilometres (a stalled camera), belts along x or y, either way: always a picture."""
    small = np.full((60, 80, 3), 150, np.uint8)
    gap = GapSnapshot(small, small, 40, 12, moved_px, 320 if axis == 0 else 240, 0.5, axis, sign)
    d = Decision(9, "reject", "uninspected", 0.0, 40, (0, 0, 10, 10), None, 5.0, 0, 4.0, None, "gap")
    picture = render_any(gap, d)
    assert picture.shape[1] == 960 and (picture[:, :, 2] > 200).sum() > 100
