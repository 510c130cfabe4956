"""A model that returns NaN: an error for those tiles, their bunches rejected `model_error`; nothing passes, nothing
crashes, every row strict JSON."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from inspector.cli import main
from inspector.config import BeltConfig, Config, ModelConfig
from inspector.model import Model
from inspector.pipeline import Pipeline, StepResult
from inspector.types import Decision, FrameRef
from tests.drawn import bunch_under, calibration, check_rows_against_truth, draw, scene, write_footage
from tests.spot_model import write_spot_model

FPS = 10.0


def strict(text: str) -> object:
    def refuse(token: str) -> object:
        raise AssertionError(f"{token} in JSON")

    return json.loads(text, parse_constant=refuse)


@dataclass
class Collected:
    """What a run of the pipeline decided: final verdicts, rejects as sent, model errors by kind."""

    finals: list[Decision] = field(default_factory=list)
    sent: list[Decision] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, step: StepResult) -> StepResult:
        self.finals += step.final
        self.sent += step.rejects
        self.errors += step.model_errors
        return step


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return write_spot_model(root), write_spot_model(root, nan_on_spot=True)


def test_the_broken_model_is_nan_exactly_where_a_spot_is(models: tuple[Path, Path]) -> None:
    tiles = np.full((2, 64, 64, 3), 150, np.uint8)
    tiles[1, 30:36, 30:36] = 10  # a dark spot in tile 1
    with Model(models[1], batch_size=8) as model:
        out = model.infer(tiles)
    assert out.finite_tiles().tolist() == [True, False]
    clean = out.zeroed(out.finite_tiles())
    assert clean.finite_tiles().all() and clean.spider_prob[1] == 0.0


def test_nan_output_rejects_the_bunch_model_error_at_once_and_passes_the_clean_ones(
    models: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cal = calibration()
    config = Config(model=ModelConfig(path=models[1], batch_size=8), belt=BeltConfig(min_bunch_area_mm2=200))
    bunches = scene()
    run = Collected()
    with caplog.at_level(logging.ERROR, logger="inspector.pipeline"), Model(models[1], batch_size=8) as model:
        pipe = Pipeline(config, cal, model, FPS, keep_evidence=True)
        for f in range(40):
            step = run.add(pipe.process(draw(f, bunches, FPS, cal), FrameRef(0, f, f / FPS)))
            for d in step.rejects:  # sent while the bunch is in view: the reject is already model_error
                assert (d.decision, d.reason, d.score) == ("reject", "model_error", 1.0)
                assert d.bunch_id in {b.bunch_id for b in step.bunches}
        assert pipe.health() == (False, "the model failed on a frame (model_error rejects)")  # within 2 s of one
        end = pipe.finish()
        run.finals += end.final
        failed = pipe.inspections_ok
    got = {bunch_under(d.bbox_xyxy, d.frame, bunches, FPS).bunch_id: d for d in run.finals}
    assert {bid: (d.decision, d.reason) for bid, d in got.items()} == {
        1: ("pass", "pass"),
        2: ("reject", "model_error"),
        3: ("pass", "pass"),
        4: ("reject", "model_error"),
    }
    for bid in (2, 4):
        d = got[bid]
        assert d.score == 1.0 and "non-finite output" in d.detail and d.detail.startswith("model error")
        assert d.bunch_id in end.evidence or any(d.bunch_id == s.bunch_id for s in run.sent)
        strict(json.dumps(d.to_json_dict(), allow_nan=False))
    assert sorted(d.bunch_id for d in run.sent) == sorted(got[b].bunch_id for b in (2, 4))  # each sent once
    assert run.errors and set(run.errors) == {"non_finite"}
    with Model(models[0], batch_size=8) as model:  # the same footage, a sound model: every inspection is progress
        sound = Pipeline(config.model_copy(update={"model": ModelConfig(path=models[0])}), cal, model, FPS)
        for f in range(40):
            sound.process(draw(f, bunches, FPS, cal), FrameRef(0, f, f / FPS))
    assert failed == sound.inspections_ok - len(run.errors)  # a frame the model failed on never feeds the watchdog
    # logged at a limited rate: one line for the first failed frame, the rest held back
    lines = [r for r in caplog.records if "model error" in r.getMessage()]
    assert len(lines) == 1 < len(run.errors)


def test_a_nan_score_is_never_compared_with_the_threshold() -> None:
    from inspector.decision import BunchRecord, DecisionRule
    from inspector.fam import BunchHeat
    from inspector.types import Box

    record = BunchRecord(7, BunchHeat(4))
    record.observe(3, 0.3, Box(100, 80, 180, 160), (0.0, 0.0), (320, 240), calibration())
    record.inspected([float("nan"), 0.1], 3)
    rule = DecisionRule(0.5)
    d = rule.verdict(
        record, final=True, frame_wh=(320, 240), calibration=calibration(), belt_speed_mm_s=None, windows=[]
    )
    assert (d.decision, d.reason, d.score) == ("reject", "model_error", 1.0)
    strict(json.dumps(d.to_json_dict(), allow_nan=False))


def test_replay_with_a_nan_model_rejects_model_error_end_to_end(
    models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, cal, _ = write_footage(tmp_path / "footage")
    out = tmp_path / "run"
    rc = main(["replay", str(video), "--calibration", str(cal), "--model", str(models[1]), "--out", str(out)])
    assert rc == 0
    text = (out / "decisions.jsonl").read_text()
    rows = [strict(line) for line in text.splitlines()]
    by_drawn = check_rows_against_truth(rows, scene(), FPS)  # type: ignore[arg-type]
    assert {bid: r["reason"] for bid, r in by_drawn.items()} == {
        1: "pass",
        2: "model_error",
        3: "pass",
        4: "model_error",
    }
    for bid in (2, 4):
        row = by_drawn[bid]
        assert row["decision"] == "reject" and row["score"] == 1.0 and row["detail"].startswith("model error")
        assert (out / "evidence" / row["evidence"]).is_file()
    assert "MODEL ERRORS" in capsys.readouterr().out


@pytest.mark.slow
def test_the_daemon_with_a_nan_model_rejects_and_fires_model_error_bunches_and_keeps_running(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    from tests.sim import Line, stop, wait_exit, waited

    line = Line(tmp_path, n_frames=60, model=models[1])
    sim = line.simulator()
    try:
        daemon = line.daemon()
        seen: list[str] = []

        def scrape() -> bool:
            try:
                text = line.metrics()
            except OSError:
                return False
            seen[:] = [r for r in text.splitlines() if r.startswith("inspector_model_errors_total{")]
            return any(not r.endswith(" 0.0") for r in seen)

        assert waited(scrape, 30), seen
        status, err = wait_exit(daemon)
        assert status == 0 and "Traceback" not in err, err
        assert waited(lambda: len(line.sim_events("fired")) >= 2, 15), line.sim_log.read_text()
    finally:
        stop(sim)
    rows = line.decided()
    by_drawn = check_rows_against_truth(rows, scene(), FPS)
    assert {bid: r["reason"] for bid, r in by_drawn.items()} == {
        1: "pass",
        2: "model_error",
        3: "pass",
        4: "model_error",
    }
    fired = {e["bunch_id"] for e in line.sim_events("fired")}
    assert {by_drawn[2]["bunch_id"], by_drawn[4]["bunch_id"]} <= fired  # the ejector got them


def test_a_model_that_raises_rejects_every_bunch_of_its_frame_model_error_and_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """onnxruntime raising on a frame (here: any batch with a spider in it) leaves that frame uninspected; every bunch
    in it not yet rejected is rejected `model_error` at once, and stays rejected when it leaves; bunches never in a
    failed frame are judged as usual; a failed frame never counts as watchdog progress."""
    model_path = write_spot_model(tmp_path, raise_on_spot=True)
    cal = calibration()
    config = Config(model=ModelConfig(path=model_path, batch_size=8), belt=BeltConfig(min_bunch_area_mm2=200))
    bunches = scene(3, gap=450.0)  # never two in view at once: the spider bunch 2 alone in its frames
    run = Collected()
    in_failed: set[int] = set()  # tracker ids of bunches in a frame the model failed on
    inspected = 0
    with caplog.at_level(logging.ERROR, logger="inspector.pipeline"), Model(model_path, batch_size=8) as model:
        pipe = Pipeline(config, cal, model, FPS, keep_evidence=True)
        for f in range(50):
            step = run.add(pipe.process(draw(f, bunches, FPS, cal), FrameRef(0, f, f / FPS)))
            inspected += step.inspected
            if step.model_errors:
                assert step.model_errors == ["exception"] and not step.inspected and step.heat is None
                in_failed |= {b.bunch_id for b in step.bunches}
                assert pipe.health() == (False, "the model failed on a frame (model_error rejects)")
                for d in step.rejects:
                    assert (d.decision, d.reason, d.score) == ("reject", "model_error", 1.0)
                    assert (
                        d.detail.startswith("model error")
                        and f"inference failed on frame {f} (InvalidArgument)" in d.detail
                    )
        run.finals += pipe.finish().final
        ok = pipe.inspections_ok
    assert run.errors, "the model never raised: no spider tile was inspected"
    assert ok == inspected  # only frames the model answered count as progress
    got = {bunch_under(d.bbox_xyxy, d.frame, bunches, FPS).bunch_id: d for d in run.finals}
    assert {bid: (d.decision, d.reason) for bid, d in got.items()} == {
        1: ("pass", "pass"),
        2: ("reject", "model_error"),
        3: ("pass", "pass"),
    }
    for bid, d in got.items():
        if d.bunch_id in in_failed:
            assert (d.decision, d.reason) == ("reject", "model_error"), (bid, d)
        else:  # never in a failed frame: judged by the model as usual (the clean ones pass)
            assert (d.decision, d.reason) == ("pass", "pass"), (bid, d)
    assert any(d.bunch_id not in in_failed for d in got.values())  # and some bunch was judged as usual
    assert sorted(d.bunch_id for d in run.sent) == sorted(in_failed)  # each failed bunch sent once, at once
    lines = [r for r in caplog.records if "inference failed" in r.getMessage()]
    assert len(lines) == 1 < len(run.errors)  # logged at a limited rate


def test_frames_that_change_size_are_refused(tmp_path: Path) -> None:
    with Model(write_spot_model(tmp_path), batch_size=8) as model:
        cal = calibration()
        pipe = Pipeline(Config(model=ModelConfig(path=model.path)), cal, model, FPS)
        pipe.process(draw(0, scene(), FPS, cal), FrameRef(0, 0, 0.0))
        with pytest.raises(ValueError, match=r"frame size changed from \(320, 240\) to \(160, 240\)"):
            pipe.process(np.zeros((240, 160, 3), np.uint8), FrameRef(0, 1, 0.1))
