"""Every Prometheus metric of the daemon, declared once (names are an interface: docs/ARCHITECTURE.md "Metrics").

Use the process-wide instance::

    from inspector.metrics import METRICS
    METRICS.frames_inspected.inc()
    METRICS.bunches.labels(decision="reject", reason="spider").inc()

and serve it with ``serve(MetricsConfig)`` (an HTTP server thread on the configured address, default
127.0.0.1:9108). The server cannot starve inspection: one thread at low priority answers one request at a time,
at most ``metrics.max_requests_per_s`` (a token bucket; more are answered 429 and counted in
``inspector_metrics_requests_limited_total``), from an exposition rebuilt at most every
``metrics.refresh_interval_s`` (a scrape flood costs no metric collection); a slow client is cut off after 2 s. Tests build their own ``Metrics(CollectorRegistry())`` so nothing leaks between them.

Multiprocess design: only the main (inspection) process exports metrics. The capture process does not touch
prometheus_client; it counts captured / dropped frames and reconnects in a small array of int64 counters
that lives in the frame ring's shared-memory header (``FrameRing.counts()``), and the main
process copies the increase into the counters here with ``Metrics.sync_capture(...)``. Those shared
counters belong to the ring, not to the capture process, so a capture process that is killed and
restarted does not lose or double-count anything. (prometheus_client's multiprocess mode was rejected: it
needs an environment variable set before import in every process, a temp dir to clean, and does not
support every metric type.)

prometheus_client naming: a Counter declared as ``x_total`` is exposed as ``x_total`` (plus ``x_created``);
an Info declared as ``inspector_model`` is exposed as ``inspector_model_info{...} 1``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from inspector.config import MetricsConfig
from inspector.errors import InspectorError
from inspector.messages import NACK_REASONS

log = logging.getLogger(__name__)

# latency buckets: a frame interval is ~10-100 ms, a batch on CPU up to seconds
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_SLACK_BUCKETS = (-1.0, -0.1, 0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
# a reject's actual start minus its fire time: a frame interval is ~10-100 ms, the default tolerance 30 ms
_FIRE_ERROR_BUCKETS = (-0.1, -0.03, -0.01, -0.003, 0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)

# Why inspection is unhealthy (label of inspector_inspection_unhealthy_reason), from the start of the reason text
# Pipeline.health() gives; a text that matches none is "other" (tests/test_metrics.py keeps the two in step).
HEALTH_REASONS: dict[str, str] = {
    "no frame inspected yet": "starting",
    "no fresh frame": "no_frames",
    "the model failed": "model_error",
    "frames skipped": "skipping",
    "frame queue full": "queue_full",
    "inspection late": "late",
}
# why a reject counted in inspector_rejects_missed_total was missed (label of inspector_rejects_missed_by_cause_total)
MISS_CAUSES = ("unacked", "refused", "not_fired", "unencodable", "closed")


def health_reason(text: str) -> str:
    """The label of a ``Pipeline.health()`` reason text: one of HEALTH_REASONS' values, else "other"."""
    return next((code for start, code in HEALTH_REASONS.items() if text.startswith(start)), "other")


# docs/ARCHITECTURE.md "Metrics": these names are an interface (dashboards, alert rules, outside checks). Never rename.
INTERFACE_METRIC_NAMES: tuple[str, ...] = (
    "inspector_frames_captured_total",
    "inspector_frames_inspected_total",
    "inspector_frames_dropped_total",
    "inspector_tiles_inferred_total",
    "inspector_inference_batch_seconds",
    "inspector_decision_latency_seconds",
    "inspector_decision_slack_seconds",
    "inspector_bunches_total",
    "inspector_rejects_acked_total",
    "inspector_reject_retransmits_total",
    "inspector_rejects_missed_total",
    "inspector_controller_heartbeat_age_seconds",
    "inspector_camera_up",
    "inspector_belt_speed_mm_per_second",
    "inspector_model_info",
)


class MetricsError(InspectorError):
    """The metrics address cannot be served."""


@dataclass
class _CaptureSeen:
    captured: int = 0
    superseded: int = 0
    source: int = 0
    reconnects: int = 0


class Metrics:
    """All metrics on one registry. One instance per process (``METRICS``), or per test."""

    def __init__(self, registry: CollectorRegistry | None = None, process_collectors: bool = False) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        if process_collectors:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        r = self.registry
        # ---- frames
        self.frames_captured = Counter(
            "inspector_frames_captured_total",
            "Frames read from the source by the capture process",
            registry=r,
        )
        self.frames_inspected = Counter(
            "inspector_frames_inspected_total", "Frames the inspection loop processed", registry=r
        )
        self.frames_dropped = Counter(
            "inspector_frames_dropped_total",
            "Frames never inspected, by reason: superseded (the ring was full: the oldest waiting frame gave way to "
            "the newest), source (the source skipped ahead: behind the footage's pace, or after a capture restart)",
            ["reason"],
            registry=r,
        )
        for reason in ("superseded", "source"):
            self.frames_dropped.labels(reason=reason)
        self.frames_skipped = Counter(
            "inspector_frames_skipped_total",
            "Frames chosen for inspection and not inspected, by reason (late: no bunch in them could still be decided "
            "before its fire time)",
            ["reason"],
            registry=r,
        )
        self.inspection_healthy = Gauge(
            "inspector_inspection_healthy",
            "1 while inspection keeps its deadlines (Pipeline.health): not late, not skipping, queue not full, model "
            "answering, frames arriving",
            registry=r,
        )
        self.inspection_unhealthy_reason = Gauge(
            "inspector_inspection_unhealthy_reason",
            "1 for the reason inspection is unhealthy now, 0 for the others (all 0 while healthy): starting (no frame "
            "inspected yet), no_frames (no fresh frame: frames stopped or far behind), model_error, skipping (frames "
            "skipped: too late for their deadlines), queue_full, late (slack below the margin), other",
            ["reason"],
            registry=r,
        )
        for reason in (*HEALTH_REASONS.values(), "other"):
            self.inspection_unhealthy_reason.labels(reason=reason)
        self.capture_reconnects = Counter(
            "inspector_capture_reconnects_total", "Times the capture process reopened its source", registry=r
        )
        self.capture_restarts = Counter(
            "inspector_capture_restarts_total",
            "Times the supervisor restarted the capture process",
            ["cause"],
            registry=r,
        )
        self.camera_up = Gauge("inspector_camera_up", "1 while the source delivers frames", registry=r)
        self.queue_depth = Gauge("inspector_frame_queue_depth", "Frames waiting for inspection", registry=r)
        self.fps = Gauge("inspector_frames_per_second", "Inspected frames per second (recent)", registry=r)
        self.frames_needed = Gauge(
            "inspector_frames_needed_per_second",
            "Inspections per second the belt needs at its current speed (inspections_per_point over the view)",
            registry=r,
        )
        # ---- inference
        self.tiles_inferred = Counter("inspector_tiles_inferred_total", "Tiles run through the model", registry=r)
        self.triton_request_seconds = Histogram(
            "inspector_triton_request_seconds",
            "Wall time of one inference request to the Triton server (model.backend: triton), answered or not",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.triton_errors = Counter(
            "inspector_triton_errors_total",
            "Failed Triton requests by kind: timeout, unavailable (server gone), server (error answer), shape",
            ["kind"],
            registry=r,
        )
        for kind in ("timeout", "unavailable", "server", "shape"):
            self.triton_errors.labels(kind=kind)  # every kind exported from 0: increase() sees the first error
        self.inference_batch_seconds = Histogram(
            "inspector_inference_batch_seconds",
            "Wall time of one model batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_errors = Counter(
            "inspector_model_errors_total",
            "Frames on which the model failed, by kind (non_finite: NaN or infinite output for some tiles; exception: "
            "inference raised); their bunches are rejected model_error",
            ["kind"],
            registry=r,
        )
        self.model_info = Info("inspector_model", "Model in use: name, width, provider actually used", registry=r)
        self.belt_speed = Gauge(
            "inspector_belt_speed_mm_per_second", "Belt speed estimated from the footage", registry=r
        )
        # ---- decisions
        self.bunches = Counter(
            "inspector_bunches_total",
            "Bunches decided, by decision and reason",
            ["decision", "reason"],
            registry=r,
        )
        self.unconfirmed_alarms = Counter(
            "inspector_unconfirmed_alarms_total",
            "Bunches passed although one inspected frame scored them >= threshold: fewer than agree_frames agreed",
            registry=r,
        )
        self.decision_latency_seconds = Histogram(
            "inspector_decision_latency_seconds",
            "Capture of the deciding frame to reject sent",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decision_slack_seconds = Histogram(
            "inspector_decision_slack_seconds",
            "Fire time minus send time of a reject",
            buckets=_SLACK_BUCKETS,
            registry=r,
        )
        # ---- actuator link
        self.rejects_sent = Counter("inspector_rejects_sent_total", "Rejects handed to the link", registry=r)
        self.rejects_acked = Counter(
            "inspector_rejects_acked_total", "Rejects acknowledged by the controller", registry=r
        )
        self.reject_retransmits = Counter(
            "inspector_reject_retransmits_total", "Reject messages sent again for want of an ack", registry=r
        )
        self.rejects_missed = Counter(
            "inspector_rejects_missed_total", "Rejects not acknowledged before their fire time", registry=r
        )
        self.rejects_missed_by_cause = Counter(
            "inspector_rejects_missed_by_cause_total",
            "The rejects of inspector_rejects_missed_total by cause: unacked (no ack by its deadline: controller "
            "silent, unreachable or restarted), refused (nacked), not_fired (acked, never reported fired), "
            "unencodable, closed (still unacked when the link closed)",
            ["cause"],
            registry=r,
        )
        for cause in MISS_CAUSES:
            self.rejects_missed_by_cause.labels(cause=cause)
        self.rejects_pending = Gauge("inspector_rejects_pending", "Rejects sent and not yet acked", registry=r)
        self.controller_heartbeat_age = Gauge(
            "inspector_controller_heartbeat_age_seconds",
            "Seconds since the controller was last heard",
            registry=r,
        )
        self.controller_up = Gauge(
            "inspector_controller_up", "1 while the controller is heard within its timeout", registry=r
        )
        self.controller_messages_malformed = Counter(
            "inspector_controller_messages_malformed_total",
            "Messages from the controller ignored (garbage, wrong version, unknown type)",
            registry=r,
        )
        self.rejects_due = Gauge(
            "inspector_rejects_due", "Rejects acked by the controller and not yet reported fired", registry=r
        )
        self.rejects_fired = Counter(
            "inspector_rejects_fired_total", "Rejects the controller reported fired", registry=r
        )
        self.reject_fire_error_seconds = Histogram(
            "inspector_reject_fire_error_seconds",
            "Start of a reject the controller reported fired minus its fire time (on the controller's clock)",
            buckets=_FIRE_ERROR_BUCKETS,
            registry=r,
        )
        self.rejects_fired_off_time = Counter(
            "inspector_rejects_fired_off_time_total",
            "Rejects the controller reported fired more than link.fire_tolerance_s off their fire time: the ejector "
            "may have hit a neighbouring bunch and missed this one",
            registry=r,
        )
        self.rejects_refused = Counter(
            "inspector_rejects_refused_total",
            "Rejects the controller refused (nack), by reason (late: it could not fire in time)",
            ["reason"],
            registry=r,
        )
        self.rejects_resent = Counter(
            "inspector_rejects_resent_total", "Acked rejects sent again because the controller restarted", registry=r
        )
        self.controller_restarts = Counter(
            "inspector_controller_restarts_total", "New controller instance ids seen after the first", registry=r
        )
        self.controller_failsafe = Gauge(
            "inspector_controller_failsafe", "1 while the controller reports it is in fail-safe", registry=r
        )
        self.clock_offset = Gauge(
            "inspector_controller_clock_offset_seconds", "Controller clock minus the inspector's (estimate)", registry=r
        )
        self.clock_rtt = Gauge(
            "inspector_controller_round_trip_seconds",
            "Round trip of the heartbeat the offset is taken from",
            registry=r,
        )
        self.link_failures = Counter(
            "inspector_link_failures_total", "The link thread died (the daemon exits non-zero)", registry=r
        )
        self.link_errors = Counter(
            "inspector_link_errors_total",
            "Work items the link could not send (e.g. a non-finite time), by kind",
            ["kind"],
            registry=r,
        )
        self.pub_resets = Counter(
            "inspector_pub_resets_total",
            "Decision PUB socket closed and bound again after too many subscriptions (a flood)",
            registry=r,
        )
        self.subscriptions_dropped = Counter(
            "inspector_pub_subscriptions_dropped_total",
            "Subscriptions to the decision PUB socket ignored (other topics, repeats)",
            registry=r,
        )
        # ---- supervision
        self.restarts = Counter(
            "inspector_restarts_total", "Processes restarted by the supervisor", ["process"], registry=r
        )
        self.watchdog_pings = Counter(
            "inspector_watchdog_pings_total", "WATCHDOG=1 delivered to systemd's notify socket", registry=r
        )
        self.watchdog_ping_failures = Counter(
            "inspector_watchdog_ping_failures_total",
            "WATCHDOG=1 that could not be sent (notify socket gone or full); retried a quarter interval later",
            registry=r,
        )
        self.config_reloads = Counter(
            "inspector_config_reloads_total",
            "SIGHUP config reloads, by result (ok, failed: the old settings kept)",
            ["result"],
            registry=r,
        )
        self.recordings_saved = Counter("inspector_recordings_saved_total", "Clips saved by the recorder", registry=r)
        self.up = Gauge("inspector_up", "1 once the daemon is ready", registry=r)
        self.metrics_requests_limited = Counter(
            "inspector_metrics_requests_limited_total",
            "Requests to the metrics endpoint answered 429: over metrics.max_requests_per_s",
            registry=r,
        )
        # labelled counters exported from 0, so rate() and increase() see the first one (an alert on a series that
        # appears at 1 never fires)
        for counter, label, values in (
            (self.model_errors, "kind", ("non_finite", "exception")),
            (self.frames_skipped, "reason", ("late",)),
            (self.rejects_refused, "reason", NACK_REASONS),
            (self.link_errors, "kind", ("reject", "publish")),
            (self.config_reloads, "result", ("ok", "failed")),
            (self.restarts, "process", ("capture",)),
        ):
            for value in values:
                counter.labels(**{label: value})
        self._capture_seen = _CaptureSeen()

    # ------------------------------------------------------------------ helpers
    def sync_capture(self, captured: int, dropped: int, reconnects: int, superseded: int = 0) -> None:
        """Bring the capture counters up to the totals counted in shared memory (monotonic totals); `dropped` is
        the total, `superseded` the part of it the ring overwrote (the rest the source skipped)."""
        seen = self._capture_seen
        for total, attr, counter in (
            (captured, "captured", self.frames_captured),
            (superseded, "superseded", self.frames_dropped.labels(reason="superseded")),
            (dropped - superseded, "source", self.frames_dropped.labels(reason="source")),
            (reconnects, "reconnects", self.capture_reconnects),
        ):
            delta = total - getattr(seen, attr)
            if delta > 0:
                counter.inc(delta)
                setattr(seen, attr, total)

    def set_health(self, healthy: bool, reason: str) -> None:
        """Inspection health (``Pipeline.health()``): the gauge, and which reason holds it unhealthy."""
        self.inspection_healthy.set(1 if healthy else 0)
        code = None if healthy else health_reason(reason)
        for label in (*HEALTH_REASONS.values(), "other"):
            self.inspection_unhealthy_reason.labels(reason=label).set(1 if label == code else 0)

    def set_model(self, name: str, width: int | str, provider: str) -> None:
        self.model_info.info({"name": str(name), "width": str(width), "provider": str(provider)})

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a sample by its exposed name (for tests and STATUS=); 0.0 when absent. Without labels,
        a labelled metric gives the sum over its label values."""
        v = self.registry.get_sample_value(name, labels or {})
        if v is None and labels is None:
            return sum(
                float(sample.value)
                for metric in self.registry.collect()
                for sample in metric.samples
                if sample.name == name
            )
        return 0.0 if v is None else float(v)

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()


class _TokenBucket:
    """At most `rate_per_s` on average, bursts up to `rate_per_s` (at least 1)."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate = rate_per_s
        self.capacity = max(1.0, rate_per_s)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Exposition:
    """The metrics text, rebuilt at most every `interval_s` however often it is asked for."""

    def __init__(self, metrics: Exposed, interval_s: float) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.body = b""
        self.built_at: float | None = None

    def get(self) -> bytes:
        now = time.monotonic()
        if self.built_at is None or now - self.built_at >= self.interval_s:
            self.body = generate_latest(self.metrics.registry)
            self.built_at = now
        return self.body


class _MetricsHTTPServer(HTTPServer):
    """One request at a time (no thread per request), rate-limited, from the cached exposition."""

    def __init__(self, address: tuple[str, int], metrics: Exposed, config: MetricsConfig) -> None:
        self.limited = metrics.metrics_requests_limited if isinstance(metrics, Metrics) else None
        self.limited_count = 0
        self.bucket = _TokenBucket(config.max_requests_per_s)
        self.exposition = _Exposition(metrics, config.refresh_interval_s)
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsHTTPServer
    timeout = 2.0  # a client that sends its request slowly is cut off, the next one is served

    def do_GET(self) -> None:
        srv = self.server
        if not srv.bucket.take():
            srv.limited_count += 1
            if srv.limited is not None:
                srv.limited.inc()
            self._reply(429, b"too many requests: see metrics.max_requests_per_s\n", "text/plain", retry=True)
            return
        if self.path.split("?", 1)[0] not in ("/", "/metrics"):
            self._reply(404, b"not found: /metrics\n", "text/plain")
            return
        self._reply(200, srv.exposition.get(), CONTENT_TYPE_LATEST)

    def _reply(self, status: int, body: bytes, content_type: str, retry: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if retry:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # no line per request (a flood must not fill the journal)


def _serve_forever_low_priority(server: HTTPServer) -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux: this thread alone at nice 10
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    server.serve_forever(poll_interval=0.5)


@dataclass
class MetricsServer:
    """A running HTTP exposition server; ``close()`` stops it."""

    address: str
    port: int
    _server: Any = field(repr=False, default=None)
    _thread: Any = field(repr=False, default=None)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Exposed(Protocol):
    """Metrics on their own registry: the daemon's ``Metrics``, the gateway's ``GatewayMetrics``."""

    registry: CollectorRegistry


def serve(config: MetricsConfig, metrics: Exposed | None = None) -> MetricsServer | None:
    """Serve ``metrics`` (default ``METRICS``) on config.address:config.port; port 0 picks a free port."""
    if not config.enabled:
        return None
    m = metrics if metrics is not None else METRICS
    try:
        server = _MetricsHTTPServer((config.address, config.port), m, config)
    except OSError as exc:
        raise MetricsError(
            f"cannot serve metrics on {config.address}:{config.port} ({exc.strerror}); "
            "set metrics.port to a free port (or metrics.enabled: false)"
        ) from None
    thread = threading.Thread(target=_serve_forever_low_priority, args=(server,), name="metrics-http", daemon=True)
    thread.start()
    port = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", config.address, port)
    return MetricsServer(config.address, port, server, thread)


METRICS = Metrics(process_collectors=True)
