from __future__ import annotations

import pytest

from inspector.decision import (
    BunchRecord,
    DecisionRule,
    across_mm,
    aggregate_score,
    covered,
    decide,
    fire_time_s,
    frame_score_rank,
    merge_intervals,
    uncovered,
    unseen_stretch,
    whole_along,
)
from inspector.fam import BunchHeat
from inspector.types import Box, Decision
from tests.drawn import calibration


@pytest.mark.parametrize(
    "probs, how, expected",
    [([], "max", 0.0), ([0.2, 0.7, 0.1], "max", 0.7), ([], "noisy_or", 0.0), ([0.5, 0.5], "noisy_or", 0.75)],
)
def test_aggregate(probs: list[float], how: str, expected: float) -> None:
    assert aggregate_score(probs, how) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "seen, inspected, ok",
    [
        ([(0, 100)], [(0, 60), (50, 100)], True),
        ([(0, 100)], [(0, 40), (60, 100)], False),  # a 20 px stretch never inspected
        ([(0, 100)], [(0, 99)], True),  # within tolerance
        ([(0, 50), (40, 100)], [(0, 100)], True),
        ([(0, 100)], [], False),
    ],
)
def test_coverage(seen: list[tuple[float, float]], inspected: list[tuple[float, float]], ok: bool) -> None:
    assert covered(seen, inspected, tolerance_px=2) is ok
    assert (not uncovered(seen, inspected, tolerance_px=2)) is ok  # the gaps the evidence names agree


def test_merge_intervals() -> None:
    assert merge_intervals([(6, 9), (0, 3), (3.5, 4)]) == [(0, 4), (6, 9)]  # gaps of <= 1 px close


def record_seen(
    boxes: list[Box], inspected: list[bool], probs: list[float]
) -> tuple[BunchRecord, list[tuple[float, float]]]:
    """A bunch riding at 30 px per frame; inspected frames show belt [−travel, 320 − travel], less 8 px each end."""
    cal = calibration()
    rec = BunchRecord(1, BunchHeat(4))
    windows = []
    for f, (box, insp) in enumerate(zip(boxes, inspected, strict=True)):
        travel = (30.0 * f, 0.0)
        rec.observe(f, f / 10, box, travel, (320, 240), cal)
        if insp:
            rec.inspected(probs)
            windows.append((8 - travel[0], 312 - travel[0]))
    return rec, windows


def verdict(
    rec: BunchRecord, windows: list[tuple[float, float]], final: bool = True, agree_frames: int = 1
) -> Decision:
    return decide(
        rec,
        threshold=0.5,
        how="max",
        frame_wh=(320, 240),
        calibration=calibration(),
        belt_speed_mm_s=None,
        final=final,
        windows=windows,
        agree_frames=agree_frames,
    )


def shifted(x1: int, f: int) -> Box:
    x = x1 + 30 * f
    return Box(max(0, x), 100, min(320, x + 80), 180)


def test_bunch_seen_whole_and_inspected_passes() -> None:
    boxes = [shifted(-60, f) for f in range(13)]
    rec, windows = record_seen(boxes, [f in (4, 8) for f in range(13)], [0.1])
    d = verdict(rec, windows, final=True)
    assert (d.decision, d.reason, d.inspected_frames) == ("pass", "pass", 2)


def test_bunch_only_inspected_while_cut_by_the_edge_is_uninspected() -> None:
    boxes = [shifted(-60, f) for f in range(13)]
    rec, windows = record_seen(boxes, [f == 1 for f in range(13)], [0.1])  # only when half out of view
    d = verdict(rec, windows, final=True)
    assert (d.decision, d.reason) == ("reject", "uninspected")
    # not final (still in view): no fail-safe verdict yet
    d = verdict(rec, windows, final=False)
    assert d.decision == "pass"


def test_spider_score_rejects_and_position_across_the_belt() -> None:
    boxes = [shifted(-60, f) for f in range(13)]
    rec, windows = record_seen(boxes, [f in (4, 8) for f in range(13)], [0.9])
    d = verdict(rec, windows, final=True)
    assert (d.decision, d.reason, d.score) == ("reject", "spider", pytest.approx(0.9))
    assert across_mm((10.0, 140.0), (320, 240), calibration()) == pytest.approx(10.0)
    assert across_mm((10.0, 140.0), (320, 240), calibration("+y")) == pytest.approx((10 - 160) * 0.5)


def test_coverage_is_judged_on_the_belt_so_a_merge_with_a_leaf_does_not_make_a_bunch_uninspected() -> None:
    boxes = [shifted(-60, f) for f in range(13)]
    boxes[6] = Box(boxes[6].x1 - 40, 100, boxes[6].x2, 180)  # a leaf touched it in one uninspected frame
    rec, windows = record_seen(boxes, [f in (4, 8) for f in range(13)], [0.1])
    assert verdict(rec, windows).reason == "pass"
    # but a bunch whose stretch of belt no inspected frame showed is uninspected
    rec, windows = record_seen(boxes, [f in (4, 8) for f in range(13)], [0.1])
    assert verdict(rec, [(w[0] + 200, w[1] + 200) for w in windows]).reason == "uninspected"


@pytest.mark.parametrize(
    "frames, how, agree, expected",
    [
        ([], "max", 2, 0.0),  # never inspected
        ([[0.9]], "max", 2, 0.9),  # one frame only: judged on it
        ([[0.9, 0.1], [0.2]], "max", 1, 0.9),  # today's score: every tile of every frame
        ([[0.9, 0.1], [0.2]], "max", 2, 0.2),  # the fleck of one frame is not confirmed
        ([[0.9, 0.1], [0.6], [0.7, 0.3]], "max", 2, 0.7),
        ([[0.9], [0.6], [0.7]], "max", 3, 0.6),
        ([[0.9], [0.6], [0.7]], "max", 5, 0.6),  # fewer frames than asked: the lowest of all it had
        ([[0.5, 0.5], [0.5]], "noisy_or", 1, 0.875),  # over all tiles of all frames, as before
        ([[0.5, 0.5], [0.5]], "noisy_or", 2, 0.5),  # per frame (0.75, 0.5), then the second
        ([[], [0.8]], "max", 2, 0.0),  # a frame with no tile over the bunch scores 0
    ],
)
def test_bunch_score_with_frames_that_must_agree(
    frames: list[list[float]], how: str, agree: int, expected: float
) -> None:
    rec = BunchRecord(1, BunchHeat(4))
    for probs in frames:
        rec.inspected(probs)
    assert rec.inspected_frames == len(frames)
    assert rec.score(how, agree) == pytest.approx(expected)  # type: ignore[arg-type]
    assert rec.agreed(agree) is (len(frames) >= agree)


@pytest.mark.parametrize("n, agree, rank", [(0, 2, 1), (1, 2, 1), (2, 2, 2), (5, 2, 2), (3, 1, 1), (2, 3, 2)])
def test_frame_score_rank(n: int, agree: int, rank: int) -> None:
    assert frame_score_rank(n, agree) == rank


def test_two_frames_must_agree_before_an_early_reject_and_one_frame_bunch_is_judged_on_it() -> None:
    boxes = [shifted(-60, f) for f in range(13)]
    rec, windows = record_seen(boxes, [f == 4 for f in range(13)], [0.9])  # one inspected frame, high
    assert verdict(rec, windows, final=False, agree_frames=1).decision == "reject"
    assert verdict(rec, windows, final=False, agree_frames=2).decision == "pass"  # wait for a second frame
    d = verdict(rec, windows[:1], final=True, agree_frames=2)  # it left the view after one: judged on that one
    assert (d.decision, d.reason, d.score) == ("reject", "spider", pytest.approx(0.9))
    rec.inspected([0.2])  # a second frame does not see it: not confirmed
    assert verdict(rec, windows, final=True, agree_frames=2).decision == "pass"
    assert verdict(rec, windows, final=True, agree_frames=1).decision == "reject"


def test_rule_early_reject_once_k_frames_agree_and_never_twice() -> None:
    rule = DecisionRule(0.5, "max", agree_frames=2)
    rec, _ = record_seen([shifted(-60, f) for f in range(6)], [f == 4 for f in range(6)], [0.9])
    assert not rule.rejects_now(rec)  # one frame of two
    rec.inspected([0.8])
    assert rule.rejects_now(rec)
    rec.reject_sent = True
    assert not rule.rejects_now(rec)  # a bunch is rejected once
    assert DecisionRule(0.5, "max", agree_frames=1).rejects_now(
        record_seen([shifted(-60, f) for f in range(6)], [f == 4 for f in range(6)], [0.9])[0]
    )


def test_rule_counts_a_pass_it_overruled_but_not_a_clean_pass() -> None:
    boxes = [shifted(-60, f) for f in range(13)]
    rec, windows = record_seen(boxes, [f in (4, 8) for f in range(13)], [0.1])
    rec.frame_probs[0] = [0.9]  # one of two frames sees it
    rule = DecisionRule(0.5, "max", agree_frames=2)
    kw = {"frame_wh": (320, 240), "calibration": calibration(), "belt_speed_mm_s": None, "windows": windows}
    d = rule.verdict(rec, final=True, **kw)  # type: ignore[arg-type]
    assert (d.decision, rule.overruled(rec, d)) == ("pass", True)
    rec.frame_probs[0] = [0.1]
    d = rule.verdict(rec, final=True, **kw)  # type: ignore[arg-type]
    assert (d.decision, rule.overruled(rec, d)) == ("pass", False)


def test_rule_refuses_a_threshold_outside_0_1() -> None:
    with pytest.raises(ValueError, match="threshold"):
        DecisionRule(0.5).with_threshold(1.5)


def test_unseen_stretch_is_rejected_whole_width_and_fires_with_the_calibrated_speed_before_any_measurement() -> None:
    cal = calibration()  # 0.5 mm/px, 150 mm/s, ejector 800 mm past the centre line, +x
    ids = iter(range(7, 100))
    assert unseen_stretch(lambda: next(ids), 320.0, 1.0, 5, (320, 240), cal, 150.0) is None  # no gap: no id used
    d = unseen_stretch(lambda: next(ids), 400.0, 2.0, 9, (320, 240), cal, 0.0)  # measured speed 0: calibrated one
    assert d is not None
    assert (d.bunch_id, d.decision, d.reason, d.across_mm, d.frame) == (7, "reject", "uninspected", None, 9)
    assert d.bbox_xyxy == (320, 0, 400, 240)
    # its centre is 200 px = 100 mm past the centre line: (800 - 100) mm at 150 mm/s
    assert d.fire_at_s == pytest.approx(2.0 + 700.0 / 150.0)
    # the same time as for any point 200 px past the centre line
    assert d.fire_at_s == pytest.approx(fire_time_s(2.0, (360.0, 120.0), (320, 240), cal, 0.0))


def test_a_bunch_seen_whole_but_never_inspected_is_uninspected_whatever_the_windows_say() -> None:
    boxes = [shifted(-60, f) for f in range(13)]
    rec, _ = record_seen(boxes, [False] * 13, [])
    everywhere = [(-10_000.0, 10_000.0)]  # belt coverage alone does not make a bunch inspected
    d = verdict(rec, everywhere, final=True)
    assert (d.decision, d.reason, d.inspected_frames, d.score) == ("reject", "uninspected", 0, 0.0)
    assert verdict(rec, everywhere, final=False).decision == "pass"  # still in view: no verdict yet
    assert not DecisionRule(0.5).rejects_now(rec)


def test_a_bunch_only_ever_seen_cut_by_the_exit_edge_is_uninspected_even_if_every_frame_was_inspected() -> None:
    """Its leading edge was never inside the view: whatever lay beyond the edge was never seen."""
    boxes = [Box(260 + 30 * f, 100, 320, 180) for f in range(2)]  # half out of the exit edge, then leaving
    rec, _ = record_seen(boxes, [True, True], [0.1])
    assert rec.entry_side_seen and not rec.exit_side_seen
    d = verdict(rec, [(-10_000.0, 10_000.0)], final=True)
    assert (d.decision, d.reason, d.inspected_frames) == ("reject", "uninspected", 2)
    # the same frames with the bunch whole in view: a pass
    rec, _ = record_seen([Box(200, 100, 280, 180), Box(230, 100, 310, 180)], [True, True], [0.1])
    assert verdict(rec, [(-10_000.0, 10_000.0)], final=True).reason == "pass"


def test_a_spider_score_rejects_as_spider_even_when_the_bunch_was_also_not_wholly_inspected() -> None:
    boxes = [shifted(-60, f) for f in range(13)]
    rec, windows = record_seen(boxes, [f == 1 for f in range(13)], [0.9])  # inspected once, cut by the edge
    d = verdict(rec, windows, final=True)
    assert (d.decision, d.reason) == ("reject", "spider")
    assert DecisionRule(0.5).rejects_now(rec)  # and already while in view


def test_a_bunch_is_fired_at_the_interquartile_mean_of_the_frames_that_showed_it_whole() -> None:
    # 80 px long, centre at -20 + 30 f px in frame f (t = f / 10 s): it crosses the centre line (160 px) at 0.6 s
    cal = calibration()  # 0.5 mm/px, 150 mm/s, ejector 800 mm past the centre line
    truth_s = 0.6 + 800.0 / 150.0
    jitter_px = {3: 1, 4: -1, 5: 2, 6: 0, 7: -2, 8: 12, 9: -1}  # 1/4-resolution boxes; frame 8 glued to a leaf
    rec = BunchRecord(1, BunchHeat(4))
    for f in range(2):  # cut by the entry edge: their box centres lie 15-30 px downstream of the bunch's
        rec.observe(f, f / 10, shifted(-60, f), (30.0 * f, 0.0), (320, 240), cal)
        assert not rec.seen_whole
    # no whole frame yet: the most central cut one, 15 px downstream of the bunch's centre: 50 ms early
    assert rec.fire_at_s((320, 240), cal, None) == pytest.approx(truth_s - 7.5 / 150.0)
    for f, dx in jitter_px.items():
        x = -60 + 30 * f + dx
        rec.observe(f, f / 10, Box(x, 100, x + 80, 180), (30.0 * f, 0.0), (320, 240), cal)
    assert rec.seen_whole and len(rec.whole_at) == 7
    # the middle five: -1, -1, 0, 1, 2 px: 0.2 px = 0.1 mm downstream, 0.7 ms early
    assert rec.fire_at_s((320, 240), cal, None) == pytest.approx(truth_s - 0.1 / 150.0, abs=1e-6)
    d = verdict(rec, [(-10_000.0, 10_000.0)], final=True)
    assert d.fire_at_s == pytest.approx(truth_s - 0.1 / 150.0, abs=1e-6)
    assert BunchRecord(2, BunchHeat(4)).whole_at == []


def test_an_early_spider_reject_waits_until_the_bunch_was_seen_whole_a_model_error_does_not() -> None:
    cal = calibration()
    rule = DecisionRule(0.5, "max")
    rec, _ = record_seen([shifted(-60, f) for f in range(2)], [True, True], [0.9])  # only ever cut by the edge
    assert not rule.rejects_now(rec)  # its centre is not known: a pulse would miss it
    rec.observe(3, 0.3, shifted(-60, 3), (90.0, 0.0), (320, 240), cal)
    assert rule.rejects_now(rec)
    failed, _ = record_seen([shifted(-60, f) for f in range(2)], [False, False], [])
    failed.model_error = "non-finite output"
    assert rule.rejects_now(failed)
    d = verdict(rec, [], final=True)  # leaving the view is the latest a held-back reject goes (the pipeline)
    assert (d.decision, d.reason) == ("reject", "spider")


def test_an_unknown_aggregate_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown aggregate 'mean'; use max or noisy_or"):
        aggregate_score([0.9], "mean")  # type: ignore[arg-type]


def test_an_uninspected_reject_says_which_end_was_never_in_view() -> None:
    """A bunch first seen cut by the entry edge that left before its trailing end came in: rejected uninspected,
    and the detail says its trailing end was never inside the view."""
    cal = calibration()
    record = BunchRecord(3, BunchHeat(4))
    for seq, x1 in enumerate((0, 30, 60)):  # +x travel: its trailing end stays cut by the entry edge (x = 0)
        record.observe(seq, seq / 10, Box(0, 80, x1 + 60, 160), (30.0 * seq, 0.0), (320, 240), cal)
        record.inspected([0.1], seq)
    d = DecisionRule(0.5).verdict(
        record, final=True, frame_wh=(320, 240), calibration=cal, belt_speed_mm_s=None, windows=[(-1e6, 1e6)]
    )
    assert (d.decision, d.reason) == ("reject", "uninspected")
    assert "its trailing end was never inside the view" in d.detail


@pytest.mark.parametrize(
    "box, direction, whole",
    [
        ((0, 100, 80, 180), "+x", False),  # at the entry edge
        ((1, 100, 81, 180), "+x", False),  # within a pixel of it
        ((2, 100, 82, 180), "+x", True),
        ((238, 100, 318, 180), "+x", True),
        ((239, 100, 319, 180), "+x", False),  # within a pixel of the exit edge
        ((100, 100, 100, 100), "+x", True),  # empty, inside
        ((0, 10, 80, 90), "+y", True),  # along y only the y extent counts
        ((100, 0, 180, 80), "-y", False),
        ((100, 160, 180, 239), "+y", False),
    ],
)
def test_whole_along(box: tuple[int, int, int, int], direction: str, whole: bool) -> None:
    assert whole_along(box, (320, 240), calibration(direction)) is whole


def test_a_bunch_is_placed_by_its_most_central_whole_frame_not_a_more_central_cut_one() -> None:
    cal = calibration()
    rec = BunchRecord(1, BunchHeat(4))
    rec.observe(0, 0.0, Box(0, 100, 150, 180), (0.0, 0.0), (320, 240), cal)  # cut, centre 85 px before the centre line
    assert (rec.best_frame, rec.best_whole) == (0, False)  # the only sighting so far
    rec.observe(1, 0.1, Box(0, 100, 310, 180), (30.0, 0.0), (320, 240), cal)  # cut, centre 5 px from it
    rec.observe(2, 0.2, Box(20, 100, 318, 180), (60.0, 0.0), (320, 240), cal)  # whole, 9 px past it
    rec.observe(3, 0.3, Box(50, 100, 320, 180), (90.0, 0.0), (320, 240), cal)  # cut again, 25 px past it
    assert (rec.best_frame, rec.best_box, rec.best_whole) == (2, Box(20, 100, 318, 180), True)
    assert verdict(rec, [(-10_000.0, 10_000.0)], final=True).bbox_xyxy == (20, 100, 318, 180)
