"""Metrics: names of docs/ARCHITECTURE.md exposed exactly, served over real HTTP on loopback, capture sync."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from inspector.config import MetricsConfig
from inspector.metrics import HEALTH_REASONS, INTERFACE_METRIC_NAMES, Metrics, MetricsError, health_reason, serve

INTERFACE_NAMES = INTERFACE_METRIC_NAMES


def _fresh() -> Metrics:
    return Metrics(CollectorRegistry())


def test_design_names_exposed_exactly() -> None:
    m = _fresh()
    m.bunches.labels(decision="reject", reason="spider").inc()
    m.set_model("demo-vgg16-w4", 4, "CPUExecutionProvider")
    m.inference_batch_seconds.observe(0.1)
    m.decision_latency_seconds.observe(0.2)
    m.decision_slack_seconds.observe(0.5)
    text = m.exposition()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for name in INTERFACE_NAMES:
        if name.endswith("_seconds") and name.replace("_seconds", "") in (
            "inspector_inference_batch",
            "inspector_decision_latency",
            "inspector_decision_slack",
        ):
            assert f"{name}_bucket" in names and f"{name}_count" in names, name
        else:
            assert name in names, name
    assert not any("_total_total" in n for n in names)
    assert 'inspector_model_info{name="demo-vgg16-w4",provider="CPUExecutionProvider",width="4"} 1.0' in text
    assert m.value("inspector_bunches_total", {"decision": "reject", "reason": "spider"}) == 1.0


def test_sync_capture_adds_only_increase() -> None:
    m = _fresh()
    m.sync_capture(captured=10, dropped=2, reconnects=0)
    m.sync_capture(captured=10, dropped=2, reconnects=0)
    m.sync_capture(captured=15, dropped=3, reconnects=1)
    m.sync_capture(captured=20, dropped=7, reconnects=1, superseded=4)
    assert m.value("inspector_frames_captured_total") == 20
    assert m.value("inspector_frames_dropped_total") == 7  # without labels: every reason together
    assert m.value("inspector_frames_dropped_total", {"reason": "superseded"}) == 4
    assert m.value("inspector_frames_dropped_total", {"reason": "source"}) == 3
    assert m.value("inspector_capture_reconnects_total") == 1


def test_served_over_http_on_loopback() -> None:
    m = _fresh()
    m.frames_inspected.inc(3)
    server = serve(MetricsConfig(port=0), m)
    assert server is not None
    with server:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    assert "inspector_frames_inspected_total 3.0" in body


def test_port_in_use_is_a_clear_error() -> None:
    m = _fresh()
    first = serve(MetricsConfig(port=0), m)
    assert first is not None
    with first, pytest.raises(MetricsError, match=r"metrics\.port"):
        serve(MetricsConfig(port=first.port), _fresh())


def test_disabled_serves_nothing() -> None:
    assert serve(MetricsConfig(enabled=False), _fresh()) is None


def _get(port: int) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def test_a_request_flood_is_answered_429_and_counted() -> None:
    m = _fresh()
    server = serve(MetricsConfig(port=0, max_requests_per_s=2.0, refresh_interval_s=0.0), m)
    assert server is not None
    with server:
        codes = [_get(server.port)[0] for _ in range(40)]  # far faster than 2 a second
        limited = codes.count(429)
        assert codes[:2] == [200, 200] and limited >= 30 and set(codes) == {200, 429}
        status, body = _get(server.port)
        while status == 429:  # the limit refills: a scrape a second later is served
            time.sleep(0.2)
            status, body = _get(server.port)
    assert status == 200
    assert b"inspector_metrics_requests_limited_total" in body
    assert m.value("inspector_metrics_requests_limited_total") >= limited


def test_the_exposition_is_rebuilt_at_most_once_per_refresh_interval() -> None:
    m = _fresh()
    server = serve(MetricsConfig(port=0, max_requests_per_s=100.0, refresh_interval_s=30.0), m)
    assert server is not None
    with server:
        m.frames_inspected.inc(3)
        first = _get(server.port)
        m.frames_inspected.inc(4)
        again = _get(server.port)
    assert first == again and b"inspector_frames_inspected_total 3.0" in first[1]  # the cached text, not rebuilt
    server = serve(MetricsConfig(port=0, max_requests_per_s=100.0, refresh_interval_s=0.0), m)
    assert server is not None
    with server:
        assert b"inspector_frames_inspected_total 7.0" in _get(server.port)[1]


def _health_reason_texts() -> list[str]:
    """The start of every unhealthy reason text `Pipeline.health` returns (read from its source: a reason added
    there without a label here fails the test below)."""
    import ast
    import inspect
    import textwrap

    from inspector.pipeline import Pipeline

    tree = ast.parse(textwrap.dedent(inspect.getsource(Pipeline.health)))
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            healthy, reason = node.value.elts
            if isinstance(healthy, ast.Constant) and healthy.value is False:
                first = reason.values[0] if isinstance(reason, ast.JoinedStr) else reason
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), ast.dump(reason)
                texts.append(first.value)
    return texts


def test_every_unhealthy_reason_of_the_pipeline_has_its_own_label() -> None:
    texts = _health_reason_texts()
    assert len(texts) >= 6, texts
    labels = [health_reason(t) for t in texts]
    assert "other" not in labels and len(set(labels)) == len(labels), dict(zip(texts, labels, strict=True))
    assert health_reason("something new") == "other"


def test_health_sets_the_gauge_and_exactly_one_reason() -> None:
    m = _fresh()
    reasons = (*HEALTH_REASONS.values(), "other")

    def held() -> list[str]:
        return [r for r in reasons if m.value("inspector_inspection_unhealthy_reason", {"reason": r}) == 1]

    assert held() == [] and m.value("inspector_inspection_unhealthy_reason") == 0  # every reason exported from 0
    m.set_health(False, "frame queue full (16 of 16): inspection cannot keep up")
    assert m.value("inspector_inspection_healthy") == 0 and held() == ["queue_full"]
    m.set_health(False, "inspection late: slack 0.010 s below the margin 0.050 s")
    assert held() == ["late"]
    m.set_health(True, "ok")
    assert m.value("inspector_inspection_healthy") == 1 and held() == []
