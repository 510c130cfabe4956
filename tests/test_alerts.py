"""Every miss counted is alerted: the real link (against a hand-driven controller on loopback), or the daemon with a
model that answers NaN, meets a fault; its metrics are scraped before and after, and promtool evaluates
deploy/prometheus/inspector-alerts.yml over the two scrapes. Each link fault must fire exactly its alerts — the rules
match the names and labels the code really exports."""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from inspector import messages
from inspector.link import RejectLink
from inspector.metrics import Metrics
from tests.sim import (
    Line,
    RawController,
    decision,
    free_port,
    fresh_metrics,
    link_cfg,
    link_to_raw_controller,
    stop,
    waited,
)
from tests.test_deploy import RULES, need_tool
from tests.test_faults import write_nan_model

TARGET = {"job": "inspector", "instance": "t:9108", "line": "t", "gpu": "false"}
BEFORE_SAMPLES, AFTER_SAMPLES = 12, 25  # 5 s apart: 1 min before the fault, 2 min after


def _samples(exposition: str, target: dict[str, str] = TARGET) -> dict[str, float]:
    """Series (promtool notation, with the scrape target's labels) -> value, from a /metrics text."""
    out = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name.endswith("_created") or math.isnan(s.value):
                continue
            labels = {**target, **s.labels}
            out[s.name + "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()) + "}"] = s.value
    return out


def firing(before: str, after: str, tmp_path: Path, rules: Path = RULES, job: str = "inspector") -> set[str]:
    """The alerts of ``rules`` that fire 1 min after the metrics of a target of scrape job ``job`` went from scrape
    ``before`` to scrape ``after``."""
    need_tool("promtool", "prometheus")
    target = {**TARGET, "job": job}
    old, new = _samples(before, target), _samples(after, target)
    series = [
        {
            "series": name,
            "values": " ".join(
                [repr(old[name]) if name in old else "_"] * BEFORE_SAMPLES
                + [repr(new[name]) if name in new else "_"] * AFTER_SAMPLES
            ),
        }
        for name in sorted(old.keys() | new.keys())
    ]
    alerts = [r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if "alert" in r]
    quiet = [{"eval_time": "2m", "alertname": a, "exp_alerts": []} for a in alerts]
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "5s",
        "tests": [{"interval": "5s", "input_series": series, "alert_rule_test": quiet}],
    }
    path = tmp_path / "scrapes-test.yml"
    path.write_text(yaml.safe_dump(test, width=1000))
    proc = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False)
    fired = set(re.findall(r"alertname: (\w+), time: ", proc.stdout + proc.stderr))
    assert (proc.returncode == 0) == (not fired), proc.stdout + proc.stderr  # a broken input is no answer
    return fired


def running(m: Metrics) -> Metrics:
    """A daemon that is up, sees its camera, hears its controller and inspects in time (what `Supervisor`,
    `Daemon` and the link set)."""
    m.up.set(1)
    m.camera_up.set(1)
    m.controller_up.set(1)
    m.set_health(True, "ok")
    return m


def test_a_healthy_daemon_fires_nothing_and_an_unhealthy_one_says_why(tmp_path: Path) -> None:
    m = running(fresh_metrics())
    before = m.exposition()
    assert firing(before, m.exposition(), tmp_path) == set()
    m.set_health(False, "frame queue full (16 of 16): inspection cannot keep up")
    assert firing(before, m.exposition(), tmp_path) == {"InspectorInspectionUnhealthy"}
    m.up.set(0)
    assert "InspectorDown" in firing(before, m.exposition(), tmp_path)


def _link_fault(tmp_path: Path, fault: str) -> set[str]:
    with link_to_raw_controller() as (link, ctl, m):
        running(m)
        link.submit(decision(1, 3.0))
        r = ctl.next_reject()
        before = m.exposition()
        if fault == "refused":
            ctl.send(messages.Nack(r.session, r.seq, "late"))
            ctl.wait(lambda: link.missed == 1)
        elif fault == "never fired":
            ctl.send(messages.Ack(r.session, r.seq))
            ctl.wait(lambda: link.missed == 1, 30)
        elif fault == "fired late":
            ctl.send(messages.Ack(r.session, r.seq))
            ctl.send(messages.Fired(r.session, r.seq, r.fire_at_s + 0.2))
            ctl.wait(lambda: link.fired == 1)
        elif fault == "garbage":
            ctl.send(b'{"v": 1, "type": "ack"}')
            ctl.send(messages.Ack(r.session, r.seq))
            ctl.wait(lambda: link.malformed == 1 and link.acked == 1)
        elif fault == "no fire time":
            link.submit(replace(decision(2, 5.0), fire_at_s=math.nan))
            ctl.send(messages.Ack(r.session, r.seq))
            ctl.wait(lambda: link.missed == 1)
        ctl.wait(lambda: m.value("inspector_controller_up") == 1)
        return firing(before, m.exposition(), tmp_path)


@pytest.mark.parametrize(
    "fault, alerts",
    [
        ("refused", {"InspectorRejectMissed", "InspectorRejectsRefused"}),
        ("never fired", {"InspectorRejectMissed", "InspectorRejectNotFired"}),
        ("fired late", {"InspectorRejectFiredOffTime"}),
        ("garbage", {"InspectorControllerMessagesMalformed"}),
        ("no fire time", {"InspectorRejectMissed", "InspectorLinkErrors"}),
    ],
)
def test_each_link_fault_fires_its_alerts(fault: str, alerts: set[str], tmp_path: Path) -> None:
    assert _link_fault(tmp_path, fault) == alerts


def test_a_controller_restart_is_alerted_and_its_acked_rejects_resent(tmp_path: Path) -> None:
    port, m = free_port(), running(fresh_metrics())
    ctl = RawController(port)
    try:
        with RejectLink(link_cfg(port), metrics=m) as link:
            link.submit(decision(1, 3.0))
            r = ctl.next_reject()
            ctl.send(messages.Ack(r.session, r.seq))
            ctl.wait(lambda: link.due_count == 1)
            before = m.exposition()
            ctl.close()
            ctl = RawController(port, instance="raw2")  # a new run: the acked reject died with the old one
            again = ctl.next_reject()
            ctl.send(messages.Ack(again.session, again.seq))
            ctl.send(messages.Fired(again.session, again.seq, again.fire_at_s))
            ctl.wait(lambda: link.fired == 1 and m.value("inspector_controller_up") == 1)
            after = m.exposition()
    finally:
        ctl.close()
    assert again.seq == r.seq and link.resent == 1 and link.missed == 0
    assert firing(before, after, tmp_path) == {"InspectorControllerRestarted"}


@pytest.mark.slow
def test_a_daemon_whose_model_answers_nan_fires_the_model_alert(tmp_path: Path) -> None:
    """The daemon end of the chain: its own counters (model errors, model_error rejects) as it serves them."""
    line = Line(tmp_path, n_frames=60, n_bunches=4)
    line.config.write_text(line.config.read_text().replace(str(line.model), str(write_nan_model(tmp_path))))
    daemon = line.daemon()
    scraped: list[str] = []

    def errors_counted() -> bool:
        try:
            scraped.append(line.metrics())
        except OSError:
            return False
        served = _samples(scraped[-1])
        return any("inspector_model_errors_total" in s and v > 0 for s, v in served.items()) and any(
            'reason="model_error"' in s and v > 0 for s, v in served.items() if "inspector_bunches_total" in s
        )

    try:
        assert waited(errors_counted, 60), scraped[-1:] or "no metrics served"
    finally:
        stop(daemon)  # type: ignore[arg-type]
    fired = firing(running(fresh_metrics()).exposition(), scraped[-1], tmp_path)
    assert "InspectorModelErrors" in fired and "InspectorDown" not in fired, fired
