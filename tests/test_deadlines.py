"""Deadlines and progress of the pipeline: the decided-until watermark, health, and frames too late to inspect."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inspector.config import BeltConfig, Config, DecisionConfig, ModelConfig
from inspector.daemon import Daemon
from inspector.decision_log import DecisionLog
from inspector.metrics import Metrics
from inspector.model import Model
from inspector.pipeline import HEALTH_HOLD_S, Pipeline, StepResult
from inspector.types import Decision, FrameRef
from tests.drawn import DrawnBunch, bunch_under, calibration, draw, scene
from tests.sim import decision as made_decision
from tests.sim import link_to_raw_controller

FPS = 10.0
CENTRE_X = 160.0  # the image centre line of the drawn 320 px view


@pytest.fixture(scope="module")
def spot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.spot_model import write_spot_model

    return write_spot_model(tmp_path_factory.mktemp("spot"))


class Clock:
    """The daemon's clock, set by the test: now = the capture time of the frame being processed + `delay_s`."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def config(spot: Path, **decision: float) -> Config:
    return Config(
        model=ModelConfig(path=spot, batch_size=8),
        belt=BeltConfig(min_bunch_area_mm2=200),
        decision=DecisionConfig(**decision),  # type: ignore[arg-type]
    )


def crossing_s(b: DrawnBunch) -> float:
    """When the drawn bunch's leading end crosses the image centre line (footage time)."""
    cal = calibration()
    return (CENTRE_X - (b.start_x + b.radius)) / cal.px_per_s


def test_watermark_is_held_back_by_every_undecided_bunch_in_view(spot: Path) -> None:
    bunches = scene()
    decided_at: dict[int, int] = {}  # drawn clean bunch -> frame of its verdict
    marks: list[float | None] = []
    with Model(spot, batch_size=8) as model:
        pipe = Pipeline(config(spot), calibration(), model, FPS)
        assert pipe.decided_until_s is None  # nothing decided before the first frame
        for f in range(40):
            step = pipe.process(draw(f, bunches, FPS, calibration()), FrameRef(0, f, f / FPS))
            for d in step.final:
                drawn = bunch_under(d.bbox_xyxy, d.frame, bunches, FPS)
                decided_at[drawn.bunch_id] = f
            marks.append(pipe.decided_until_s)
    assert marks[0] == pytest.approx(0.0)  # an empty belt: decided up to the frame itself
    clean = [b for b in bunches if b.spider_dxy is None]
    tolerance_s = 8 * 0.5 / 150  # 8 px (the 1/4-resolution mask, tracking) at 0.5 mm/px and 150 mm/s
    for b in clean:
        entered = next(f for f in range(40) if b.start_x + b.radius + 30 * f > 0)
        assert b.bunch_id in decided_at
        for f in range(entered, decided_at[b.bunch_id]):
            mark = marks[f]
            assert mark is not None and mark <= crossing_s(b) + tolerance_s, (b.bunch_id, f, mark)
    # the first clean bunch holds it at its leading end from the frame that end crossed the centre line until its
    # verdict (before that, the frame's own capture time is the earlier)
    first = clean[0]
    assert all(marks[f] == pytest.approx(f / FPS) for f in range(1, 6) if f / FPS < crossing_s(first) - tolerance_s)
    held = [marks[f] for f in range(7, decided_at[first.bunch_id])]
    assert held and all(m == pytest.approx(crossing_s(first), abs=tolerance_s) for m in held)
    # then it moves on: the next undecided clean bunch holds it
    f = decided_at[first.bunch_id]
    after = marks[f]
    assert after is not None and after == pytest.approx(min(f / FPS, crossing_s(clean[1])), abs=tolerance_s)
    assert after > crossing_s(first) + 0.5


def test_a_bunch_cut_by_the_exit_edge_from_the_start_holds_the_watermark_until_decided(spot: Path) -> None:
    bunches = [DrawnBunch(1, 300.0, 120.0, 40.0, None)]  # its leading end is beyond the view from frame 0
    marks: list[float | None] = []
    with Model(spot, batch_size=8) as model:
        pipe = Pipeline(config(spot), calibration(), model, FPS)
        decided = -1
        for f in range(6):
            step = pipe.process(draw(f, bunches, FPS, calibration()), FrameRef(0, f, f / FPS))
            if step.final and decided < 0:
                decided = f
            marks.append(pipe.decided_until_s)
    assert decided > 0
    assert all(m is None for m in marks[:decided])
    assert marks[decided] == pytest.approx(decided / FPS)


def test_a_bunch_first_seen_cut_by_the_exit_edge_holds_the_watermark_where_it_was_until_decided(spot: Path) -> None:
    """After frames of bare belt, a bunch shows up already reaching past the exit edge (its leading end never seen):
    the watermark stays where it was when the bunch appeared until the bunch is decided."""
    bunches = [DrawnBunch(1, 300.0, 120.0, 40.0, None)]
    marks: list[float | None] = []
    with Model(spot, batch_size=8) as model:
        pipe = Pipeline(config(spot), calibration(), model, FPS)
        for f in range(3):  # bare belt: everything up to frame 2 is decided
            pipe.process(draw(f, [], FPS, calibration()), FrameRef(0, f, f / FPS))
        held = pipe.decided_until_s
        decided = -1
        for f in range(3, 9):
            step = pipe.process(draw(f - 3, bunches, FPS, calibration()), FrameRef(0, f, f / FPS))
            if step.final and decided < 0:
                decided = f
            marks.append(pipe.decided_until_s)
    assert held == pytest.approx(2 / FPS) and decided > 3
    assert marks[: decided - 3] == [held] * (decided - 3)
    assert marks[decided - 3] == pytest.approx(decided / FPS)


def run_late(spot: Path, delay_s: dict[int, float], frames: int = 40) -> tuple[list[int], list[int], list[Decision]]:
    """Drawn footage with the clock `delay_s[f]` past frame f's capture: (inspected frames, skipped, finals)."""
    clock = Clock()
    inspected: list[int] = []
    skipped: list[int] = []
    finals: list[Decision] = []
    bunches = scene()
    with Model(spot, batch_size=8) as model:
        pipe = Pipeline(
            config(spot, deadline_margin_s=0.1, latency_budget_s=0.05), calibration(), model, FPS, clock=clock
        )
        for f in range(frames):
            clock.now_s = f / FPS + delay_s.get(f, 0.0)
            step = pipe.process(draw(f, bunches, FPS, calibration()), FrameRef(0, f, f / FPS))
            if step.inspected:
                inspected.append(f)
            if step.skipped is not None:
                assert step.skipped == "late" and not step.inspected
                skipped.append(f)
            finals += step.final
        finals += pipe.finish().final
    return inspected, skipped, finals


def test_a_frame_too_late_for_its_bunches_is_skipped_and_the_next_frame_inspected_instead(spot: Path) -> None:
    on_time, none_skipped, finals = run_late(spot, {})
    assert none_skipped == []
    # a selected frame with a bunch in it comes 6 s late: past the fire time (5.3 s after capture at the centre line)
    late = next(f for f in on_time if f >= 8)
    inspected, skipped, late_finals = run_late(spot, {late: 6.0})
    assert skipped == [late]
    assert late + 1 in inspected  # retried on the next frame: coverage kept
    assert {d.bunch_id: (d.decision, d.reason) for d in late_finals} == {
        d.bunch_id: (d.decision, d.reason) for d in finals
    }


def test_frames_late_all_the_time_are_never_inspected_and_no_bunch_passes(spot: Path) -> None:
    inspected, skipped, finals = run_late(spot, {f: 6.0 for f in range(40)})
    assert skipped and not any(f in inspected for f in skipped)
    real = [d for d in finals if d.across_mm is not None]
    assert len(real) == 4 and all(d.decision == "reject" for d in real), [(d.bunch_id, d.reason) for d in real]
    assert all(d.reason == "uninspected" and "skipped" in d.detail for d in real if d.inspected_frames == 0)


def test_health_flips_with_lateness_gaps_a_full_queue_and_skips(spot: Path) -> None:
    clock = Clock()
    bunches = scene()
    cal = calibration().model_copy(update={"camera_to_ejector_mm": 200.0})  # fire 1.33 s after the centre line
    with Model(spot, batch_size=8) as model:
        pipe = Pipeline(config(spot, deadline_margin_s=0.1, latency_budget_s=0.5), cal, model, FPS, clock=clock)
        assert pipe.health() == (False, "no frame inspected yet")
        for f in range(12):
            clock.now_s = f / FPS + 0.01
            pipe.process(draw(f, bunches, FPS, cal), FrameRef(0, f, f / FPS))
            assert pipe.health() == (True, "ok"), f
        # frames stop: the limit is the latency budget plus 5 frame intervals
        clock.now_s = 11 / FPS + 0.5 + 5 / FPS + 0.01
        healthy, reason = pipe.health()
        assert not healthy and "no fresh frame" in reason
        # the queue fills up
        clock.now_s = 12 / FPS + 0.01
        pipe.process(draw(12, bunches, FPS, cal), FrameRef(0, 12, 12 / FPS))
        assert pipe.health()[0]
        pipe.note_queue(16, 16)
        assert pipe.health() == (False, "frame queue full (16 of 16): inspection cannot keep up")
        pipe.note_queue(3, 16)
        assert pipe.health()[0]
        # late: bunch 1, leaving the view (centre 330 px, 85 mm past the centre line), is due 0.77 s after capture
        f = 13
        clock.now_s = f / FPS + 0.8
        pipe.process(draw(f, bunches, FPS, cal), FrameRef(0, f, f / FPS))
        healthy, reason = pipe.health()
        assert not healthy and reason.startswith(("inspection late", "frames skipped")), reason
        # a skipped frame keeps it unhealthy for HEALTH_HOLD_S, then it recovers (fresh frames of an empty belt)
        for f in range(14, 40):
            clock.now_s = f / FPS + 6.0
            if pipe.process(draw(f, bunches, FPS, cal), FrameRef(0, f, f / FPS)).skipped == "late":
                break
        else:
            pytest.fail("no frame was skipped although every frame came 6 s late")
        t_skip = clock.now_s
        t = t_skip
        while t < t_skip + HEALTH_HOLD_S + 0.3:
            t += 1 / FPS
            f += 1
            clock.now_s = t + 0.01
            pipe.process(draw(f, [], FPS, cal), FrameRef(0, f, t))
            expected = (False, "frames skipped: inspection too late for their deadlines")
            assert pipe.health() == (expected if clock.now_s - t_skip < HEALTH_HOLD_S else (True, "ok")), t - t_skip


def test_one_slow_inspection_does_not_keep_every_later_frame_skipped(spot: Path) -> None:
    """After an inspection that took 10 s (a hiccup), frames on time are skipped at first; each skip lets the
    estimate fall back towards decision.latency_budget_s, so inspections resume while the bunches are in view."""
    clock = Clock()
    bunches = scene()
    cal = calibration()
    with Model(spot, batch_size=8) as model:
        pipe = Pipeline(config(spot, latency_budget_s=0.05), cal, model, FPS, clock=clock)
        pipe.inspect_s_estimate = 10.0  # longer than any bunch's time to the ejector (5.3 s)
        skipped, inspected = [], []
        for f in range(40):
            clock.now_s = f / FPS + 0.01
            step = pipe.process(draw(f, bunches, FPS, cal), FrameRef(0, f, f / FPS))
            (skipped if step.skipped else inspected if step.inspected else []).append(f)
    assert skipped and inspected and max(skipped) < min(f for f in inspected if f > skipped[0])
    assert len(skipped) <= 12 and pipe.inspect_s_estimate < 2.0  # measured inspections pull it down further


def test_the_daemon_counts_a_reject_decided_after_its_fire_time_and_a_skipped_frame(
    spot: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reject the loop hands over after its fire time (the machine was too slow) is counted late and logged at
    ERROR; the link never sends it (it would hit the wrong bunch) and counts it missed; a frame skipped as late is
    counted by its reason."""
    daemon = Daemon(config(spot))
    m = daemon.metrics = Metrics(CollectorRegistry())
    late = made_decision(7, -0.5)  # its fire time was half a second ago
    step = StepResult(FrameRef(0, 3, late.t_capture_s), False, [], rejects=[late], final=[late], skipped="late")
    log_path = tmp_path / "decisions.jsonl"
    with (
        link_to_raw_controller() as (link, ctl, link_metrics),
        DecisionLog(log_path, None, append=False, wall_clock=True) as decisions,
    ):
        daemon._handle(step, link, decisions)
        ctl.wait(lambda: link.missed == 1, what="the late reject counted missed")
        n = len(ctl.heartbeats)
        ctl.wait(lambda: len(ctl.heartbeats) > n + 1)
    assert ctl.other == []  # nothing but heartbeats reached the controller
    assert daemon.summary.late_rejects == 1 and daemon.summary.rejects == 1
    assert any(
        r.levelname == "ERROR"
        and "bunch 7: reject sent 0.5" in r.getMessage()
        and "after its fire time" in r.getMessage()
        for r in caplog.records
    )
    assert link_metrics.value("inspector_rejects_missed_total") == 1
    assert m.value("inspector_frames_skipped_total", {"reason": "late"}) == 1
    assert m.value("inspector_bunches_total", {"decision": "reject", "reason": "spider"}) == 1
    assert [json.loads(row)["bunch_id"] for row in log_path.read_text().splitlines()] == [7]


@pytest.mark.parametrize(
    "box_x, extra", [((100, 180), (0, 0)), ((250, 320), (1, 0)), ((0, 60), (0, 1))], ids=["inside", "far", "near"]
)
def test_an_unjudged_reject_covers_its_whole_bunch_and_an_end_cut_by_the_view_by_a_whole_view(
    spot: Path, box_x: tuple[int, int], extra: tuple[int, int]
) -> None:
    """The ejector stretch of an `uninspected`/`model_error` reject runs from the bunch's leading end to its trailing
    end; an end cut by the edge of the view was never seen, so that side grows by the whole view length."""
    cfg = config(spot)
    daemon = Daemon(cfg)
    cal = daemon.calibration
    with Model(spot, batch_size=8) as model:
        daemon.pipeline = Pipeline(cfg, cal, model, FPS)
        daemon.pipeline.frame_wh = (320, 240)
        d = replace(made_decision(1, 5.0, reason="uninspected"), bbox_xyxy=(box_x[0], 80, box_x[1], 160))
        stretch_s, lead_s = daemon._stretch(d)
    assert (cal.travel_axis, cal.travel_sign) == (0, 1)  # +x: the far edge (x = 319) is the exit
    half_px = (box_x[1] - box_x[0]) / 2.0
    ahead_px, behind_px = half_px + 320 * extra[0], half_px + 320 * extra[1]
    speed = cal.belt_speed_mm_s
    assert lead_s == pytest.approx(cal.mm(ahead_px) / speed)
    assert stretch_s == pytest.approx(cal.mm(ahead_px + behind_px) / speed)


@pytest.mark.parametrize("box_x, pulse", [((100, 180), True), ((250, 320), False), ((0, 60), False)])
def test_a_spider_reject_is_a_pulse_at_a_whole_bunch_and_covers_a_bunch_never_seen_whole(
    spot: Path, tmp_path: Path, box_x: tuple[int, int], pulse: bool
) -> None:
    """A pulse goes to the bunch's centre: only a box with both ends in view has it; a spider bunch never seen whole
    is ejected over its whole length (an end cut by the view grows by the view), as an unjudged one is."""
    cfg = config(spot)
    daemon = Daemon(cfg)
    daemon.metrics = Metrics(CollectorRegistry())
    with Model(spot, batch_size=8) as model:
        daemon.pipeline = Pipeline(cfg, daemon.calibration, model, FPS)
        daemon.pipeline.frame_wh = (320, 240)
        d = replace(made_decision(1, 5.0), bbox_xyxy=(box_x[0], 80, box_x[1], 160))
        step = StepResult(FrameRef(0, 3, d.t_capture_s), False, [], rejects=[d], final=[d])
        with (
            link_to_raw_controller() as (link, ctl, _),
            DecisionLog(tmp_path / "decisions.jsonl", None, append=False, wall_clock=True) as decisions,
        ):
            daemon._handle(step, link, decisions)
            sent = ctl.next_reject()
        expected_s = 0.0 if pulse else daemon._stretch(d)[0]
    assert sent.reason == "spider" and sent.stretch_s == pytest.approx(expected_s)
    assert pulse or sent.stretch_s > 320 * daemon.calibration.mm_per_px / daemon.calibration.belt_speed_mm_s
