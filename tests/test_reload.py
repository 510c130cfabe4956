"""SIGHUP reload through the supervisor into the daemon: a good config changes the threshold between two frames, a bad
one changes nothing and is logged at ERROR and counted."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from inspector.config import SupervisorConfig, calibration_for, load_config
from inspector.daemon import Daemon
from inspector.metrics import Metrics
from inspector.model import Model
from inspector.pipeline import Pipeline
from inspector.supervisor import SdNotify, Supervisor
from tests.spot_model import write_spot_model


def config_text(model: Path, threshold: object) -> str:
    return yaml.safe_dump({"model": {"path": str(model), "batch_size": 8}, "decision": {"threshold": threshold}})


def test_reload_applies_a_good_threshold_and_keeps_the_old_one_on_a_bad_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_path = write_spot_model(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(config_text(model_path, 0.5))
    config = load_config(path)
    daemon = Daemon(config, path)
    m = daemon.metrics = Metrics(CollectorRegistry())
    steps: list[tuple[str, str | None, float]] = [  # (what, config text or None = file removed, threshold after)
        ("good", config_text(model_path, 0.3), 0.3),
        ("out of range", config_text(model_path, 1.5), 0.3),
        ("not a number", config_text(model_path, "high"), 0.3),
        ("broken yaml", "decision: [threshold: 0.9\n", 0.3),
        ("unknown key", config_text(model_path, 0.9) + "decisoin: {threshold: 0.9}\n", 0.3),
        ("file removed", None, 0.3),
        ("good again", config_text(model_path, 0.7), 0.7),
    ]
    with Model(model_path, batch_size=8) as model:
        daemon.pipeline = Pipeline(config, calibration_for(config), model, 10.0)
        sup = Supervisor(SupervisorConfig(), metrics=m, notify=SdNotify(env={}), on_reload=daemon.reload)
        with sup.signals(), caplog.at_level(logging.INFO, logger="inspector"):
            for n, (what, text, threshold) in enumerate(steps, start=1):
                if text is None:
                    path.unlink()
                else:
                    path.write_text(text)
                caplog.clear()
                os.kill(os.getpid(), signal.SIGHUP)
                deadline = time.monotonic() + 10.0
                while time.monotonic() < deadline:  # the handler only sets a flag; progress() runs the reload
                    sup.progress(frames=n, inferences=n)
                    reloads = m.value("inspector_config_reloads_total", {"result": "ok"}) + m.value(
                        "inspector_config_reloads_total", {"result": "failed"}
                    )
                    if reloads == n:
                        break
                    time.sleep(0.01)
                assert reloads == n, what
                assert daemon.pipeline.threshold == pytest.approx(threshold), what
                errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
                if what.startswith("good"):
                    assert errors == [], what
                    assert f"threshold now {threshold:.4f}" in caplog.text
                else:
                    assert len(errors) == 1 and str(path) in errors[0].getMessage(), (what, caplog.text)
                    assert "threshold stays 0.3000" in errors[0].getMessage()
    assert m.value("inspector_config_reloads_total", {"result": "ok"}) == 2
    assert m.value("inspector_config_reloads_total", {"result": "failed"}) == 5
