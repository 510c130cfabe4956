from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import pytest

from inspector.config import BeltConfig, Config, DecisionConfig, ModelConfig
from inspector.decision import fire_time_s
from inspector.model import Model
from inspector.pipeline import Pipeline
from inspector.types import Decision, FrameRef
from tests.drawn import DrawnBunch, bunch_under, calibration, center_x, draw, scene, span_in_view
from tests.spot_model import write_spot_model

FPS = 10.0


@pytest.fixture(scope="module")
def spot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spot_model(tmp_path_factory.mktemp("spot"))


def run(
    spot: Path,
    frames: list[int],
    mode: str = "belt",
    decision: DecisionConfig | None = None,
    fleck_at: dict[int, int] | None = None,
    inspected: list[int] | None = None,
    unconfirmed: list[int] | None = None,
) -> tuple[list[Decision], list[Decision]]:
    """Drawn footage through the pipeline: (final decisions, rejects as sent). `fleck_at` {frame: bunch_id} draws a
    spider-dark dot on that bunch in that frame only; `inspected` collects the frames that were inspected,
    `unconfirmed` the bunches passed although one frame alone scored them at or above the threshold."""
    cal = calibration()
    config = Config(
        model=ModelConfig(path=spot, batch_size=8),
        belt=BeltConfig(mode=mode, min_bunch_area_mm2=200),  # type: ignore[arg-type]
        decision=decision or DecisionConfig(),
    )
    bunches = scene()
    finals: list[Decision] = []
    rejects: list[Decision] = []
    with Model(spot, batch_size=8) as model:
        pipe = Pipeline(config, cal, model, FPS)
        for f in frames:
            img = draw(f, bunches, FPS, cal)
            if fleck_at and f in fleck_at:
                b = next(b for b in bunches if b.bunch_id == fleck_at[f])
                cv2.circle(img, (round(center_x(b, f, FPS, cal)) - 10, round(b.y) + 8), 5, (15, 15, 20), -1)
            step = pipe.process(img, FrameRef(0, f, f / FPS))
            if inspected is not None and step.inspected:
                inspected.append(f)
            finals += step.final
            rejects += step.rejects
            if unconfirmed is not None:
                unconfirmed += step.unconfirmed
        end = pipe.finish()
        finals += end.final
        rejects += end.rejects
        if unconfirmed is not None:
            unconfirmed += end.unconfirmed
    return finals, rejects


def test_spider_bunches_rejected_clean_ones_passed(spot: Path) -> None:
    cal = calibration()
    finals, rejects = run(spot, list(range(40)))
    by_id = {d.bunch_id: d for d in finals}
    assert sorted(by_id) == [1, 2, 3, 4]
    truth = {b.bunch_id: b for b in scene()}
    for bid, d in by_id.items():
        expected = "spider" if truth[bid].spider_dxy is not None else "pass"
        assert d.reason == expected, d
        assert d.inspected_frames >= 2  # inspections_per_point defaults to 2
    # every reject was sent once, as soon as the bunch crossed the threshold
    assert sorted(r.bunch_id for r in rejects) == [2, 4]
    for d in finals:
        b = truth[d.bunch_id]
        cx = center_x(b, d.frame, FPS, cal)
        assert abs((d.bbox_xyxy[0] + d.bbox_xyxy[2]) / 2 - cx) <= 3
        assert abs(cx - 160) <= 16  # the most central frame
        assert d.fire_at_s == pytest.approx(
            fire_time_s(d.frame / FPS, (cx, b.y), (320, 240), cal), abs=1 / FPS
        )  # one frame interval
        if b.spider_dxy is not None:
            assert d.spider_xy is not None
            assert abs(d.spider_xy[0] - (cx + b.spider_dxy[0])) <= 8
            assert abs(d.spider_xy[1] - (b.y + b.spider_dxy[1])) <= 8


def test_with_two_frames_to_agree_spiders_are_still_rejected_and_once(spot: Path) -> None:
    finals, rejects = run(spot, list(range(40)), decision=DecisionConfig(agree_frames=2))
    assert {d.bunch_id: d.reason for d in finals} == {1: "pass", 2: "spider", 3: "pass", 4: "spider"}
    assert sorted(r.bunch_id for r in rejects) == [2, 4]
    assert all(r.inspected_frames >= 2 for r in rejects)  # sent when the second frame confirmed it, not before


def test_a_fleck_in_one_frame_rejects_with_one_frame_and_passes_when_two_must_agree(spot: Path) -> None:
    """Bunch 1 is clean; a dark dot appears on it in one inspected frame only (a glint, a shadow, a tile artefact)."""
    inspected: list[int] = []
    run(spot, list(range(40)), inspected=inspected)  # frame selection is by belt travel alone: the same every run
    cal, b1 = calibration(), scene()[0]
    whole = [f for f in inspected if b1.radius + 12 <= center_x(b1, f, FPS, cal) <= 320 - b1.radius - 12]
    assert len(whole) >= 2
    fleck = {whole[0]: 1}
    overruled: list[int] = []
    finals, rejects = run(spot, list(range(40)), fleck_at=fleck, unconfirmed=overruled)
    assert {d.bunch_id: d.reason for d in finals}[1] == "spider"
    assert sorted(r.bunch_id for r in rejects) == [1, 2, 4] and overruled == []
    finals, rejects = run(
        spot, list(range(40)), decision=DecisionConfig(agree_frames=2), fleck_at=fleck, unconfirmed=overruled
    )
    assert {d.bunch_id: d.reason for d in finals} == {1: "pass", 2: "spider", 3: "pass", 4: "spider"}
    assert sorted(r.bunch_id for r in rejects) == [2, 4]
    assert overruled == [1]  # counted (inspector_unconfirmed_alarms_total) so a line sees what the rule overruled


def test_fire_time_is_when_the_bunch_reaches_the_ejector() -> None:
    cal = calibration()
    # centre 20 px (10 mm) past the centre line: 790 mm to go at 150 mm/s
    assert fire_time_s(2.0, (180.0, 100.0), (320, 240), cal) == pytest.approx(2.0 + 790 / 150)
    assert fire_time_s(2.0, (180.0, 100.0), (320, 240), calibration("-x")) == pytest.approx(2.0 + 810 / 150)


def test_dropped_frames_give_uninspected_rejects_never_a_pass(spot: Path) -> None:
    """Frames 12..27 never arrive (capture dropped them / inspection fell behind): drawn bunch 3 rides through the
    view unseen and is covered by the one unseen-stretch reject; every bunch a frame showed is decided on its own."""
    bunches = scene()
    frames = [f for f in range(40) if not 12 <= f < 28]
    t = trace(spot, frames, bunches)
    assert not any(in_view(bunches[2], f) for f in frames)  # the premise: no frame shows bunch 3
    decided, stretches = by_drawn_bunch(t, bunches)
    assert {bid: (d.decision, d.reason) for bid, d in decided.items()} == {
        1: ("pass", "pass"),
        2: ("reject", "spider"),
        4: ("reject", "spider"),
    }
    assert all(d.inspected_frames > 0 for d in decided.values())
    assert len(stretches) == 1 and (stretches[0].decision, stretches[0].reason) == ("reject", "uninspected")
    rejects = sent(t)
    assert rejects == {decided[2].bunch_id: 10, stretches[0].bunch_id: 28, decided[4].bunch_id: 28}


def test_bunches_in_view_at_end_of_footage_are_rejected_uninspected(spot: Path) -> None:
    """The footage ends at frame 8: bunch 2 has entered the view (frames 7, 8) but no inspected frame showed it;
    bunch 1, still in view too, was inspected whole at frame 5. `finish()` decides both and sends bunch 2's reject."""
    bunches = scene()
    frames = list(range(9))
    t = trace(spot, frames, bunches)
    assert in_view(bunches[1], 8) and not any(in_view(bunches[1], f) for f in t.inspected)  # the premise
    assert whole_in_view(bunches[0], 5) and 5 in t.inspected and in_view(bunches[0], 8)
    decided, stretches = by_drawn_bunch(t, bunches)
    assert stretches == []
    got = {bid: (d.decision, d.reason, d.inspected_frames) for bid, d in decided.items()}
    assert got == {1: ("pass", "pass", 1), 2: ("reject", "uninspected", 0)}
    assert sent(t) == {decided[2].bunch_id: -1}  # sent by finish(), once


def test_whole_frame_baseline_inspects_every_frame(spot: Path) -> None:
    finals, _ = run(spot, list(range(40)), mode="whole_frame")
    by_id = {d.bunch_id: d for d in finals}
    assert by_id[2].reason == "spider" and by_id[1].reason == "pass"
    assert by_id[1].inspected_frames > 5


def test_a_stretch_of_belt_no_frame_showed_is_rejected_whole_width(spot: Path) -> None:
    """Frames 12..27 lost: bunch 3 rides through the view unseen; the stretch it was on is rejected all the same."""
    frames = [f for f in range(40) if not 12 <= f < 28]
    finals, rejects = run(spot, frames)
    stretches = [d for d in finals if d.inspected_frames == 0 and d.across_mm is None]
    assert len(stretches) == 1
    d = stretches[0]
    assert (d.decision, d.reason) == ("reject", "uninspected") and d in rejects
    # frame 11 to frame 28: the belt moved 17 x 30 px; the unseen stretch runs from the exit edge (320 px) to there
    assert d.bbox_xyxy[0] == 320 and d.bbox_xyxy[2] == pytest.approx(17 * 30, abs=8)


@pytest.mark.parametrize("every, start", [(2, 0), (3, 1), (4, 3), (5, 2), (5, 4), (6, 1), (7, 0), (7, 5)])
def test_ids_survive_dropped_frames(spot: Path, every: int, start: int) -> None:
    """Every 2nd ... 7th frame only (60 ... 210 px of belt between frames in a 320 px view): one id per bunch, also
    when a bunch was a sliver at the entry edge in one frame and whole in the next (IoU matching lost those)."""
    finals, _ = run(spot, list(range(start, 40, every)))
    real = [d for d in finals if d.across_mm is not None]  # not an unseen-stretch reject
    assert len(real) == 4, [(d.bunch_id, d.reason, d.bbox_xyxy) for d in finals]


# ------------------------------------------------------------------------------------------------ fail-safe paths
# Each test below runs drawn footage whose bunches are placed so that one fail-safe path must be taken, checks from the
# drawn geometry that the footage really sets that path up, and then compares every decision with the drawn bunches
# one by one: decision, reason, inspected frames, and the frame at which its reject was handed to the ejector.

VIEW_W, VIEW_H = 320, 240


@dataclass
class Trace:
    """What the pipeline did with one piece of drawn footage."""

    finals: list[Decision] = field(default_factory=list)
    rejects: list[tuple[int, Decision]] = field(default_factory=list)  # (frame it was sent at, reject); -1: finish()
    inspected: list[int] = field(default_factory=list)


def trace(spot: Path, frames: list[int], bunches: list[DrawnBunch], decision: DecisionConfig | None = None) -> Trace:
    cal = calibration()
    config = Config(
        model=ModelConfig(path=spot, batch_size=8),
        belt=BeltConfig(min_bunch_area_mm2=200),
        decision=decision or DecisionConfig(),
    )
    out = Trace()
    with Model(spot, batch_size=8) as model:
        pipe = Pipeline(config, cal, model, FPS)
        for f in frames:
            step = pipe.process(draw(f, bunches, FPS, cal), FrameRef(0, f, f / FPS))
            if step.inspected:
                out.inspected.append(f)
            out.finals += step.final
            out.rejects += [(f, d) for d in step.rejects]
        end = pipe.finish()
        out.finals += end.final
        out.rejects += [(-1, d) for d in end.rejects]
    return out


def in_view(b: DrawnBunch, frame: int) -> bool:
    lo, hi = span_in_view(b, frame, FPS)
    return hi - lo > 2


def whole_in_view(b: DrawnBunch, frame: int) -> bool:
    cx = center_x(b, frame, FPS, calibration())
    return cx - b.radius > 0 and cx + b.radius < VIEW_W


def spider_in_view(b: DrawnBunch, frame: int) -> bool:
    assert b.spider_dxy is not None
    sx = center_x(b, frame, FPS, calibration()) + b.spider_dxy[0]
    return 5 < sx < VIEW_W - 5  # the dot (radius 5) wholly inside


def by_drawn_bunch(t: Trace, bunches: list[DrawnBunch]) -> tuple[dict[int, Decision], list[Decision]]:
    """Final decisions keyed by the drawn bunch they are about (each exactly once), and the unseen-stretch rejects."""
    stretches = [d for d in t.finals if d.across_mm is None]
    decided: dict[int, Decision] = {}
    for d in t.finals:
        if d.across_mm is None:
            continue
        b = bunch_under(d.bbox_xyxy, d.frame, bunches, FPS)
        assert b.bunch_id not in decided, f"drawn bunch {b.bunch_id} decided twice: {decided[b.bunch_id]} and {d}"
        decided[b.bunch_id] = d
    return decided, stretches


def sent(t: Trace) -> dict[int, int]:
    """{decision bunch_id: frame its reject was sent at}; a reject sent twice fails here."""
    ids = [d.bunch_id for _, d in t.rejects]
    assert len(ids) == len(set(ids)), f"a bunch rejected more than once: {ids}"
    return {d.bunch_id: f for f, d in t.rejects}


def test_every_decision_matches_its_drawn_bunch_and_spiders_are_rejected_while_in_view(spot: Path) -> None:
    bunches = scene()
    t = trace(spot, list(range(40)), bunches)
    decided, stretches = by_drawn_bunch(t, bunches)
    assert stretches == []
    expected = {b.bunch_id: ("reject", "spider") if b.spider_dxy else ("pass", "pass") for b in bunches}
    assert {bid: (d.decision, d.reason) for bid, d in decided.items()} == expected
    rejects = sent(t)
    assert set(rejects) == {decided[2].bunch_id, decided[4].bunch_id}
    for bid in (2, 4):  # the early reject: at the first inspected frame that showed the spider, or once the bunch was
        # seen whole after it (a pulse goes to the bunch's centre; a 1/4-resolution box touches the edge a frame longer)
        b = bunches[bid - 1]
        first = next(f for f in t.inspected if spider_in_view(b, f))
        whole = next(f for f in range(first, 40) if in_view(b, f))
        assert whole <= rejects[decided[bid].bunch_id] <= whole + 1, (bid, rejects, t.inspected)


def test_a_bunch_that_leaves_the_view_only_partly_seen_is_rejected_uninspected_and_sent_once(spot: Path) -> None:
    """Bunch 1 is already half out of the exit edge when the footage starts: the one inspected frame that shows it
    (frame 0) shows it cut by the edge; it leaves the view a few frames later, and the ejector must get it."""
    bunches = [
        DrawnBunch(1, 300.0, 120.0, 40.0, None),
        DrawnBunch(2, -60.0, 130.0, 40.0, (8.0, -6.0)),
        DrawnBunch(3, -230.0, 120.0, 40.0, None),
    ]
    frames = list(range(30))
    t = trace(spot, frames, bunches)
    part = bunches[0]
    shown = [f for f in t.inspected if in_view(part, f)]
    assert shown and not any(whole_in_view(part, f) for f in frames if in_view(part, f))  # the premise
    decided, stretches = by_drawn_bunch(t, bunches)
    assert stretches == []
    got = {bid: (d.decision, d.reason) for bid, d in decided.items()}
    assert got == {1: ("reject", "uninspected"), 2: ("reject", "spider"), 3: ("pass", "pass")}
    assert decided[1].inspected_frames == len(shown)
    rejects = sent(t)
    assert set(rejects) == {decided[1].bunch_id, decided[2].bunch_id}
    left = next(f for f in frames if not in_view(part, f))
    assert 0 < rejects[decided[1].bunch_id] <= left + 2  # sent when it left the view, not at the end of the footage
    assert next(d for _, d in t.rejects if d.bunch_id == decided[1].bunch_id) == decided[1]


def test_a_spider_seen_in_fewer_frames_than_must_agree_is_rejected_when_its_bunch_leaves(spot: Path) -> None:
    """`decision.agree_frames: 2`, and bunch 1 (a spider on it) is inspected in one frame only before it leaves the
    view: it cannot get a second vote, so it is judged on the one it had when it leaves, and that reject is sent."""
    bunches = [
        DrawnBunch(1, 300.0, 120.0, 40.0, (-12.0, -6.0)),
        DrawnBunch(2, -60.0, 130.0, 40.0, None),
    ]
    frames = list(range(30))
    t = trace(spot, frames, bunches, decision=DecisionConfig(agree_frames=2))
    part = bunches[0]
    assert len([f for f in t.inspected if in_view(part, f) and spider_in_view(part, f)]) == 1  # the premise
    decided, stretches = by_drawn_bunch(t, bunches)
    assert stretches == []
    assert {bid: (d.decision, d.reason) for bid, d in decided.items()} == {1: ("reject", "spider"), 2: ("pass", "pass")}
    assert decided[1].inspected_frames == 1
    rejects = sent(t)
    assert set(rejects) == {decided[1].bunch_id}
    left = next(f for f in frames if not in_view(part, f))
    assert 0 < rejects[decided[1].bunch_id] <= left + 2  # sent when it left the view


STALL_SCENE = [
    DrawnBunch(1, -60.0, 120.0, 40.0, None),  # whole in frames 5 and 10, before the stall: pass
    DrawnBunch(2, -290.0, 60.0, 40.0, None),  # inspected once, at frame 10, cut by the entry edge; then the stall
    DrawnBunch(3, -345.0, 180.0, 40.0, None),  # in view from frame 11: never in an inspected frame before the stall
    DrawnBunch(4, -570.0, 120.0, 40.0, (8.0, -6.0)),  # after the stall: spider
    DrawnBunch(5, -740.0, 130.0, 40.0, None),  # after the stall: pass
]
STALL_FRAMES = list(range(15)) + list(range(25, 50))  # frames 15..24 never arrive: the belt moves 330 px unseen


def test_a_stall_rejects_the_bunch_it_cut_the_one_never_inspected_and_the_unseen_stretch(spot: Path) -> None:
    bunches = STALL_SCENE
    t = trace(spot, STALL_FRAMES, bunches)
    before = [f for f in t.inspected if f < 15]
    cut, never = bunches[1], bunches[2]
    # the premise, from the drawn geometry: bunch 2 only ever inspected while cut by the entry edge, bunch 3 never
    assert [f for f in before if in_view(cut, f)] == [10] and span_in_view(cut, 10, FPS)[0] == 0.0
    assert not any(in_view(never, f) for f in before) and any(in_view(never, f) for f in range(15))
    assert not any(in_view(b, 25) for b in (cut, never))  # both gone by the time frames come again
    decided, stretches = by_drawn_bunch(t, bunches)
    got = {bid: (d.decision, d.reason, d.inspected_frames) for bid, d in decided.items()}
    assert got == {
        1: ("pass", "pass", 2),
        2: ("reject", "uninspected", 1),
        3: ("reject", "uninspected", 0),
        4: ("reject", "spider", got[4][2]),
        5: ("pass", "pass", got[5][2]),
    }
    assert got[4][2] >= 2 and got[5][2] >= 2
    assert len(stretches) == 1 and (stretches[0].decision, stretches[0].reason) == ("reject", "uninspected")
    rejects = sent(t)
    expected_ids = {decided[2].bunch_id, decided[3].bunch_id, decided[4].bunch_id, stretches[0].bunch_id}
    assert set(rejects) == expected_ids
    # the bunches the stall cut and the unseen stretch are sent with the first frame after it, the spider at once
    assert {rejects[decided[2].bunch_id], rejects[decided[3].bunch_id], rejects[stretches[0].bunch_id]} == {25}
    assert rejects[decided[4].bunch_id] == next(f for f in t.inspected if f >= 25 and in_view(bunches[3], f))


def roi_verdicts(spot: Path, roi_xyxy: tuple[int, int, int, int]) -> dict[int, Decision]:
    """The drawn footage through a pipeline whose calibration tiles only `roi_xyxy`: drawn bunch id -> verdict."""
    cal = calibration().model_copy(update={"roi_xyxy": roi_xyxy})
    config = Config(model=ModelConfig(path=spot, batch_size=8), belt=BeltConfig(min_bunch_area_mm2=200))
    bunches = scene()
    finals: list[Decision] = []
    with Model(spot, batch_size=8) as model:
        pipe = Pipeline(config, cal, model, FPS)
        for f in range(40):
            finals += pipe.process(draw(f, bunches, FPS, cal), FrameRef(0, f, f / FPS)).final
        finals += pipe.finish().final
    return {bunch_under(d.bbox_xyxy, d.frame, bunches, FPS).bunch_id: d for d in finals}


def test_produce_outside_the_calibrated_roi_is_never_passed_as_inspected(spot: Path) -> None:
    """Tiles cover only the calibration's `roi_xyxy`. A bunch reaching beyond it across the belt (here its lower
    part, where the spiders sit) is never wholly inspected: rejected `uninspected`, saying so; along the belt only
    the stretch inside the ROI counts as inspected, so no spider bunch passes either way."""
    across = roi_verdicts(spot, (0, 0, 320, 100))  # bunches at y 80-170: their lower parts are never tiled
    assert {bid: (d.decision, d.reason) for bid, d in across.items()} == {
        bid: ("reject", "uninspected") for bid in (1, 2, 3, 4)
    }
    assert all("outside the calibration's roi_xyxy" in d.detail for d in across.values())
    # only the last 120 px of the view along travel are tiled: frames are selected by the ROI's length, not the
    # view's, so every stretch of belt still passes through a tile and each bunch gets its true verdict (counting
    # the whole view as inspected passed bunch 4, whose spider was never in a tile; spacing frames by the whole
    # view rejected the clean bunches 1 and 3 `uninspected`)
    along = roi_verdicts(spot, (200, 0, 320, 240))
    assert {bid: (d.decision, d.reason) for bid, d in along.items()} == {
        1: ("pass", "pass"),
        2: ("reject", "spider"),
        3: ("pass", "pass"),
        4: ("reject", "spider"),
    }
    assert all(d.inspected_frames >= 2 for d in along.values())
