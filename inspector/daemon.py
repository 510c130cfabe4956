"""`inspector run`: the daemon. Capture process → frame ring → inspection loop → actuator link, supervised.

One main loop, one thread for the inspection (the link has its own socket thread, the capture its own process):

    while not stopping:
        supervisor.check_capture()          restart a crashed/stalled capture process (back-off, limit)
        ref = capture.get()                 (slot, seq, t_capture) from the ring; the frame is a zero-copy view
        step = pipeline.process(frame, ref) belt → tiles → model → FAM → decisions
        link.send_reject(...)               at once for bunches that crossed the threshold (or left uninspected)
        link.publish(...), decisions.jsonl  for every bunch decided
        link.set_progress(...)              watermark (decided up to when, at the ejector) and health, for heartbeats
        supervisor.progress(...)            READY=1 / WATCHDOG=1 only while frames and inspections advance

Times are monotonic seconds (the capture process stamps frames with the same system-wide clock); `fire_at_s` in the
decision log is on that clock too, next to a wall-clock `t_unix_s` for people.

A reject whose reason is not `spider` (the bunch was not judged: `uninspected`, a model error) covers the whole
bunch: the ejector stays on for the time its length takes to pass. When the link thread dies the loop stops and
`run()` returns EXIT_LINK_FAILED (the controller has gone fail-safe on the missing heartbeats; systemd restarts us).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from inspector.capture import CaptureProcess
from inspector.config import Calibration, Config, SourceConfig, calibration_for, load_config
from inspector.decision import fire_time_at_offset_s, whole_along
from inspector.decision_log import DecisionLog, run_prefix
from inspector.errors import InspectorError
from inspector.link import RejectLink
from inspector.metrics import METRICS, Metrics, serve
from inspector.pipeline import Pipeline, StepResult, check_plan, open_model
from inspector.recording import Recorder
from inspector.review import serve_review
from inspector.ring import H_CAMERA_UP, FrameRing
from inspector.sources import probe
from inspector.supervisor import Supervisor
from inspector.types import Decision

log = logging.getLogger(__name__)

EXIT_LINK_FAILED = 3  # the reject link thread died: exit so the service manager restarts the daemon


@dataclass
class RunSummary:
    frames: int = 0
    inspected: int = 0
    rejects: int = 0
    decided: int = 0
    uninspected: int = 0
    last_fire_at_s: float = 0.0  # monotonic: when the last reject sent is due at the ejector
    late_rejects: int = 0  # rejects handed to the link after their fire time (the machine was too slow)
    # capture of the judged frame -> reject handed to the link, the latest ones (as the latency metric measures it)
    reject_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def line(self) -> str:
        return (
            f"{self.frames} frames ({self.inspected} inspected), {self.decided} bunches decided: "
            f"{self.rejects} rejected ({self.uninspected} uninspected)"
        )


class Daemon:
    """The inspection loop and what it owns; `run()` returns the process exit status."""

    def __init__(self, config: Config, config_path: Path | None = None, instance: str = "default") -> None:
        self.config = config
        self.config_path = config_path
        self.instance = instance
        self.calibration: Calibration = calibration_for(config)
        self.metrics: Metrics = METRICS
        self.summary = RunSummary()
        self.pipeline: Pipeline | None = None
        self.review_url: str | None = None  # the reject review page, once served

    # ------------------------------------------------------------------------------------ signals
    def reload(self) -> bool:
        """SIGHUP: re-read the config file; apply the decision threshold without dropping a frame.

        A config that cannot be read or is not valid changes nothing: the error is logged (ERROR), counted
        (`inspector_config_reloads_total{result="failed"}`) and the running threshold is kept. Returns whether the
        new settings were applied."""
        if self.config_path is None or self.pipeline is None:
            return False
        old = self.pipeline.threshold
        try:
            fresh = load_config(self.config_path)
            self.pipeline.set_threshold(fresh.decision.threshold)
        except (InspectorError, ValueError, OSError) as exc:
            self.metrics.config_reloads.labels(result="failed").inc()
            log.error("reload of %s failed, threshold stays %.4f: %s", self.config_path, old, exc)
            return False
        self.metrics.config_reloads.labels(result="ok").inc()
        log.info("threshold now %.4f", fresh.decision.threshold)
        return True

    # ------------------------------------------------------------------------------------ per step
    def _handle(self, step: StepResult, link: RejectLink | None, decisions: DecisionLog) -> None:
        m = self.metrics
        now = time.monotonic()
        for d in step.rejects:
            if link is not None:
                frame_wh = self.pipeline.frame_wh if self.pipeline is not None else None
                if d.reason == "spider" and (frame_wh is None or whole_along(d.bbox_xyxy, frame_wh, self.calibration)):
                    link.send_reject(d)  # a pulse at the bunch's centre
                else:  # the whole bunch, also a spider bunch never seen whole (its centre is not known)
                    link.send_reject(d, *self._stretch(d))
            self.summary.last_fire_at_s = max(self.summary.last_fire_at_s, d.fire_at_s)
            self.summary.reject_latency_s.append(max(0.0, now - d.t_capture_s))
            if d.fire_at_s < now:
                self.summary.late_rejects += 1
                log.error("bunch %d: reject sent %.2f s after its fire time", d.bunch_id, now - d.fire_at_s)
        m.unconfirmed_alarms.inc(len(step.unconfirmed))
        for d in step.final:
            self._count(d)
            if link is not None:
                link.publish(d)
        decisions.write(step.final, step.evidence)
        for kind in step.model_errors:
            m.model_errors.labels(kind=kind).inc()
        if step.skipped is not None:
            m.frames_skipped.labels(reason=step.skipped).inc()
        if step.inspected:
            m.frames_inspected.inc()
            self.summary.inspected += 1
            tiles = 0 if step.plan is None else len(step.plan)
            m.tiles_inferred.inc(tiles)
            m.inference_batch_seconds.observe(step.infer_s)
        m.belt_speed.set(step.belt_speed_mm_s)
        if self.pipeline is not None:
            m.frames_needed.set(self.pipeline.frames_needed_per_s())

    def _belt_speed_mm_s(self) -> float:
        speed = self.pipeline.belt_speed_mm_s if self.pipeline is not None else 0.0
        return speed if speed > 0 else self.calibration.belt_speed_mm_s

    def _stretch(self, d: Decision) -> tuple[float, float]:
        """(length, lead) in seconds of the ejector stretch for the bunch of ``d``: from its leading end to its
        trailing end, ``lead`` before its fire time. An end cut by the edge of the view was never seen: that side
        is extended by the whole view length, the most that can hide beyond it."""
        cal, axis, sign = self.calibration, self.calibration.travel_axis, self.calibration.travel_sign
        lo, hi = float(d.bbox_xyxy[axis]), float(d.bbox_xyxy[axis + 2])
        frame_wh = self.pipeline.frame_wh if self.pipeline is not None else None
        view = float(frame_wh[axis]) if frame_wh is not None else math.inf
        lead_px, trail_px = (hi, lo) if sign > 0 else (lo, hi)
        centre_px = (lo + hi) / 2.0
        ahead_px, behind_px = abs(lead_px - centre_px), abs(centre_px - trail_px)
        at_far, at_near = lo < view - 1 <= hi, lo <= 0 < hi  # the box runs over the far / near edge of the view
        if (sign > 0 and at_far) or (sign < 0 and at_near):  # its leading end left the view unseen
            ahead_px += view
        if (sign > 0 and at_near) or (sign < 0 and at_far):  # its trailing end had not come into view
            behind_px += view
        speed = self._belt_speed_mm_s()
        return cal.mm(ahead_px + behind_px) / speed, cal.mm(ahead_px) / speed

    def _progress(self, link: RejectLink | None) -> None:
        """Tell the link the watermark (when the last decided stretch of belt reaches the ejector) and the health."""
        if self.pipeline is None:
            return
        healthy, reason = self.pipeline.health()
        self.metrics.set_health(healthy, reason)  # every loop turn: also while no frame comes
        if link is None:
            return
        until = self.pipeline.decided_until_s
        at_ejector = (
            None if until is None else fire_time_at_offset_s(until, 0.0, self.calibration, self._belt_speed_mm_s())
        )
        link.set_progress(at_ejector, healthy, reason)

    def _count(self, d: Decision) -> None:
        self.metrics.bunches.labels(decision=d.decision, reason=d.reason).inc()
        self.summary.decided += 1
        self.summary.rejects += d.decision == "reject"
        self.summary.uninspected += d.reason == "uninspected"
        level = logging.WARNING if d.decision == "reject" else logging.INFO
        log.log(level, "bunch %d: %s (%s) score %.3f", d.bunch_id, d.decision, d.reason, d.score)

    # ------------------------------------------------------------------------------------ main loop
    def run(self) -> int:
        cfg = self.config
        source: SourceConfig = cfg.source
        frame_wh, probed_fps = probe(source)
        check_plan(cfg, self.calibration, frame_wh)  # a config that cannot work is refused before anything starts
        fps = source.fps or probed_fps or 10.0
        with ExitStack() as stack:
            server = serve(cfg.metrics, self.metrics)
            if server is not None:
                stack.enter_context(server)
            review = serve_review(cfg.review, cfg.output.decisions_jsonl, cfg.output.evidence_dir)
            if review is not None:
                stack.enter_context(review)
                self.review_url = review.url
            model = stack.enter_context(open_model(cfg.model))
            model.warmup()
            info = model.describe()
            self.metrics.set_model(info["name"], info.get("width") or "", model.provider)
            self.pipeline = Pipeline(
                cfg,
                self.calibration,
                model,
                fps,
                keep_evidence=cfg.output.evidence_dir is not None,
                clock=time.monotonic,
            )
            ring = stack.enter_context(FrameRing.create(self.instance, cfg.ring.slots, frame_wh))
            capture = stack.enter_context(CaptureProcess(source, ring))
            link = (
                stack.enter_context(RejectLink(cfg.link, self.metrics, model=info["name"], close_timeout_s=2.5))
                if cfg.link.enabled
                else None
            )
            decisions = stack.enter_context(
                DecisionLog(
                    cfg.output.decisions_jsonl,
                    cfg.output.evidence_dir,
                    append=True,
                    wall_clock=True,
                    prefix=run_prefix(time.time()),
                )
            )
            recorder = stack.enter_context(Recorder(cfg.recording, fps))
            sup = Supervisor(
                cfg.supervisor, capture, self.metrics, on_reload=self.reload, on_snapshot=recorder.snapshot
            )
            stack.enter_context(sup.signals())
            log.info(
                "inspecting %s (%dx%d at %.1f fps) with %s on %s; tiles %s",
                source.uri or source.kind,
                frame_wh[0],
                frame_wh[1],
                fps,
                info["name"],
                model.provider,
                [s.tile_px for s in self.pipeline.scales],
            )
            processed = 0
            status = 0
            try:
                while not sup.should_stop:
                    if link is not None and not link.alive:
                        log.critical("the reject link is dead: stopping (exit status %d)", EXIT_LINK_FAILED)
                        status = EXIT_LINK_FAILED
                        break
                    self._progress(link)
                    sup.check_capture()
                    ref = capture.get(timeout_s=0.2)
                    self.metrics.sync_capture(*ring.counts(), superseded=ring.superseded)
                    self.metrics.camera_up.set(ring.get(H_CAMERA_UP))
                    if ref is None:
                        if capture.eof:
                            log.info("end of footage")
                            break
                        sup.progress(
                            frames=ring.counts()[0],
                            inferences=self.pipeline.inspections_ok,  # the watchdog: real inspection progress only
                            queue_depth=ring.depth,
                            provider=model.provider,
                            ready=processed > 0,
                        )
                        continue
                    frame = ring.frame(ref)
                    self.pipeline.note_queue(ring.depth, ring.slots)
                    recorder.add(frame, ref.seq, ref.t_capture_s)
                    step = self.pipeline.process(frame, ref)
                    for d in step.rejects:
                        recorder.trigger(ref.seq, bunch_id=d.bunch_id)
                    processed += 1
                    self.summary.frames += 1
                    self._handle(step, link, decisions)
                    sup.progress(
                        frames=ring.counts()[0],
                        inferences=self.pipeline.inspections_ok,  # the watchdog: real inspection progress only
                        queue_depth=ring.depth,
                        provider=model.provider,
                        ready=True,
                    )
            finally:  # whatever ended the loop: bunches still in view are decided (fail-safe) and sent
                sup.stopping()
                end = self.pipeline.finish()
                self._handle(end, link, decisions)
                log.info("stopping: %s", self.summary.line())
        return status
