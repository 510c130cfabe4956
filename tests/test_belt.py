from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.belt import (
    REKEY_FRACTION,
    BeltOdometer,
    BeltSegmenter,
    BunchTracker,
    FrameSelector,
    estimate_shift,
    even_dft_size,
    find_bunches,
    gray,
    gray_small,
    interquartile_mean,
    refine_shift,
)
from inspector.config import BeltConfig
from inspector.types import Box
from tests.drawn import BELT_BGR, calibration, draw, scene


def test_segmentation_finds_each_bunch_and_not_the_belt() -> None:
    cal = calibration()
    frame = draw(16, scene(), 10.0, cal)  # bunches 1..3 partly or wholly in view
    mask = BeltSegmenter(BeltConfig()).mask(frame)
    found = find_bunches(mask, 200 / 0.25)
    boxes = sorted(b.xyxy for b, _ in found)
    assert len(boxes) == 2
    for box, crop in found:
        assert crop.shape == (box.y2 - box.y1, box.x2 - box.x1) and crop.any()


def test_empty_belt_gives_no_bunches_and_a_given_belt_colour_is_used() -> None:
    frame = np.full((120, 160, 3), BELT_BGR, np.uint8)
    assert find_bunches(BeltSegmenter(BeltConfig()).mask(frame), 10) == []
    seg = BeltSegmenter(BeltConfig(belt_bgr=(20, 20, 20)))
    assert seg.mask(frame).mean() > 0.99  # a grey belt is far from the configured black belt colour


def test_segmentation_does_not_glue_bunches_to_the_frame_edge() -> None:
    frame = np.full((120, 160, 3), BELT_BGR, np.uint8)
    cv2.circle(frame, (140, 60), 14, (60, 170, 70), -1)  # right edge of the disc at x = 154
    (box, _), *_ = find_bunches(BeltSegmenter(BeltConfig()).mask(frame), 10)
    assert box.x2 <= 158


@pytest.mark.parametrize("dx, dy", [(12, 0), (-16, 0), (0, 8), (0, -12)])
def test_phase_correlation_measures_the_belt_shift(dx: int, dy: int) -> None:
    rng = np.random.default_rng(0)
    texture = np.asarray(cv2.GaussianBlur(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8), (5, 5), 0), np.uint8)
    a = texture[100:340, 100:340]
    b = texture[100 - dy : 340 - dy, 100 - dx : 340 - dx]
    got = estimate_shift(gray_small(a), gray_small(b), (float(dx) * 1.2, float(dy) * 1.2))
    assert got == pytest.approx((dx, dy), abs=2.5)


def _drawn_pair(shift_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Two frames of the drawn scene ``shift_px`` of belt travel apart (one disc cut by the entry edge at first)."""
    cal = calibration()  # 300 px/s: at 300 fps a frame is 1 px of travel
    return draw(150, scene(4), 300.0, cal), draw(150 + shift_px, scene(4), 300.0, cal)


@pytest.mark.parametrize("shift_px", [40, 80, 95, 100, 117])
def test_refined_shift_reads_the_belt_to_a_tenth_of_a_pixel(shift_px: int) -> None:
    # 95 and 100 px leave odd or DFT-padded overlaps, which phaseCorrelate read half a pixel long; the coarse
    # estimate reads a produce-only scene short (the window): the refinement removes both
    a, b = _drawn_pair(shift_px)
    coarse = estimate_shift(gray_small(a), gray_small(b), (float(shift_px), 0.0))
    assert coarse[0] == pytest.approx(shift_px, abs=2.0)
    refined = refine_shift(gray(a), gray(b), coarse)
    assert refined is not None
    assert refined == pytest.approx((shift_px, 0.0), abs=0.1)


@pytest.mark.parametrize("shift_px", [80, 95])
def test_refined_shift_reads_a_belt_moving_along_y(shift_px: int) -> None:
    a, b = (np.ascontiguousarray(gray(f).T) for f in _drawn_pair(shift_px))  # the scene turned: travel along +y
    coarse = estimate_shift(a[::2, ::2], b[::2, ::2], (0.0, float(shift_px)))
    refined = refine_shift(a, b, coarse, along_axis=1)
    assert refined is not None
    assert refined == pytest.approx((0.0, shift_px), abs=0.1)


def test_refined_shift_is_none_without_overlap_or_with_frames_of_different_sizes() -> None:
    a, b = _drawn_pair(80)
    assert refine_shift(gray(a), gray(b), (310.0, 0.0)) is None  # 10 px of overlap: nothing to correlate
    assert refine_shift(gray(a), gray(b)[:, :200], (80.0, 0.0)) is None
    blank = np.full((240, 320), 150.0, np.float32)
    assert refine_shift(blank, blank, (80.0, 0.0)) is None  # no peak on a bare belt


@pytest.mark.parametrize(
    "n, size", [(0, 2), (1, 2), (2, 2), (3, 2), (225, 216), (235, 216), (240, 240), (241, 240), (957, 900)]
)
def test_even_dft_size_is_even_at_most_n_and_what_the_dft_takes_as_it_is(n: int, size: int) -> None:
    got = even_dft_size(n)
    assert got == size and got % 2 == 0 and (got <= n or n < 2)
    assert cv2.getOptimalDFTSize(got) == got


@pytest.mark.parametrize(
    "samples, mean",
    [
        ([], None),
        ([5.0], 5.0),
        ([1.0, 3.0], 2.0),
        ([1.0, 2.0, 3.0], 2.0),
        ([1.0, 2.0, 30.0], 2.0),  # of three: the median
        ([300.0, 299.0, 301.0, 200.0], 299.5),  # one wrong sample of four: dropped with the highest
        ([10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -100.0], 3.5),
    ],
)
def test_interquartile_mean(samples: list[float], mean: float | None) -> None:
    assert interquartile_mean(samples) == (None if mean is None else pytest.approx(mean))


def test_phase_correlation_falls_back_to_nominal_on_a_blank_belt() -> None:
    blank = np.full((240, 240, 3), 128, np.uint8)
    assert estimate_shift(gray_small(blank), gray_small(blank), (30.0, 0.0)) == (30.0, 0.0)


def test_tracker_keeps_ids_and_reports_departures() -> None:
    tracker = BunchTracker((320, 240), calibration())
    mask = np.ones((20, 20), bool)
    b1, _ = tracker.update([(Box(10, 10, 30, 30), mask)], (0.0, 0.0))
    assert [b.bunch_id for b in b1] == [1]
    b2, gone = tracker.update([(Box(40, 10, 60, 30), mask), (Box(0, 100, 20, 120), mask)], (30.0, 0.0))
    assert sorted(b.bunch_id for b in b2) == [1, 2] and gone == []
    # bunch 1 predicted beyond the exit edge: it departs; bunch 2 keeps its id
    _, gone = tracker.update([(Box(300, 100, 320, 120), mask)], (300.0, 0.0))
    assert gone == [1]
    assert tracker.drain() == [3] or tracker.tracks == {}


def test_frame_selection_inspects_each_stretch_the_configured_number_of_times() -> None:
    cal = calibration()  # 300 px/s
    selector = FrameSelector((320, 240), cal, BeltConfig(inspections_per_point=2), fps=10.0)
    picked = [f for f in range(200) if selector.select(30.0 * f)]
    gaps = np.diff(picked) * 30.0
    assert (gaps >= selector.step_px).all()
    # a belt point p is at x = p + 30 f in frame f; a spider there is wholly in view while 0 <= x <= 320 - 16
    checked = 0
    for p in range(-5000, -320, 7):
        enter_f, leave_f = -p / 30.0, (304 - p) / 30.0
        if enter_f < picked[0] or leave_f > picked[-1]:
            continue
        checked += 1
        assert sum(0 <= p + 30.0 * f <= 304 for f in picked) >= 2, p
    assert checked > 100
    every = FrameSelector((320, 240), cal, BeltConfig(mode="whole_frame"), fps=10.0)
    assert all(every.select(30.0 * f) for f in range(10))


def _odometer_travel_px(odometer: BeltOdometer, fps: float, n_frames: int, wh: tuple[int, int] = (320, 240)) -> float:
    """Travel the odometer reads over the drawn scene, frames with a bunch on the belt found as the pipeline does."""
    cal = calibration()
    segmenter = BeltSegmenter(BeltConfig())
    travel_px = 0.0
    for f in range(n_frames):
        frame = draw(f, scene(4), fps, cal, wh)
        has_content = bool(find_bunches(segmenter.mask(frame), 100.0))
        travel_px += odometer.step(frame, f / fps, has_content)[0]
    return travel_px


@pytest.mark.parametrize("fps", [10.0, 30.0, 60.0])
def test_odometer_reads_belt_speed_within_0_1_percent_at_any_frame_rate(fps: float) -> None:
    # consecutive-frame phase correlation read this belt 8 % (30 fps) to 17 % (60 fps) slow, and a bare belt as
    # stopped; key frames at half resolution 0.3-0.5 % slow. Fire times extrapolate the speed over the distance to
    # the ejector: at 800 mm a 60 fps frame interval is 0.3 % of the way
    cal = calibration()
    odometer = BeltOdometer(np.array([1.0, 0.0]), cal.px_per_s, REKEY_FRACTION * 320)
    n = int(3 * fps)
    assert _odometer_travel_px(odometer, fps, n) == pytest.approx(cal.px_per_s * (n - 1) / fps, rel=0.01)
    assert odometer.speed_px_per_s == pytest.approx(cal.px_per_s, rel=0.001)


def test_odometer_measures_a_belt_slower_than_calibrated_and_trusts_the_calibration_when_not_refining() -> None:
    cal = calibration()
    slow = BeltOdometer(np.array([1.0, 0.0]), 1.3 * cal.px_per_s, 80.0)  # the calibration says 30 % faster
    _odometer_travel_px(slow, 60.0, 180)
    assert slow.speed_px_per_s == pytest.approx(cal.px_per_s, rel=0.001)
    blind = BeltOdometer(np.array([1.0, 0.0]), 100.0, 80.0, refine=False)
    assert _odometer_travel_px(blind, 60.0, 120) == pytest.approx(100.0 * 119 / 60.0)
    assert blind.speed_px_per_s == 100.0
