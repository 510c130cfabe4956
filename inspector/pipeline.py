"""The inspection pipeline, frame by frame — the same object in `inspector run` and `inspector replay`.

    frame ─► belt segmentation + tracking ─► frame selection ─► tile plan over the produce mask
          ─► model (spider probabilities + fam1..5, one pass) ─► tile FAMs ─► frame heat map ─► bunch heat maps
          ─► bunch scores ─► rejects as soon as a bunch crosses the threshold (and was seen whole: the pulse goes
             to its centre); a verdict when it leaves the view

`Pipeline.process(frame_bgr, ref)` returns a `StepResult`; the caller (daemon or replay) sends `rejects` to the
ejector at once and logs/publishes `final`. `finish()` decides every bunch still in view at the end of footage.

Deadlines (only with a `clock` on the capture time base: the daemon's; replay has none and stays deterministic): a
frame chosen for inspection is skipped, not inspected, when no undecided bunch in it could still be decided before
its fire time − `decision.deadline_margin_s` (now + the measured inspection time, `inspect_s_estimate`); the frame
selector retries on the next frame, and a bunch that never got its inspection is rejected `uninspected`.

Progress, for heartbeats and the watchdog: `decided_until_s` (capture time up to which every bunch that entered the
view is decided) and `health()` (healthy, reason).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from inspector.belt import (
    REKEY_FRACTION,
    SEG_DOWNSCALE,
    BeltOdometer,
    BeltSegmenter,
    BunchTracker,
    FrameSelector,
    find_bunches,
)
from inspector.config import Calibration, Config, ModelConfig
from inspector.decision import (
    BunchRecord,
    DecisionRule,
    along_offset_px,
    fire_time_s,
    merge_intervals,
    uncovered,
    unseen_stretch,
)
from inspector.errors import BackendError, ConfigError
from inspector.evidence import EvidenceItem, GapSnapshot, Snapshot, take_seen_snapshot, take_snapshot
from inspector.fam import BunchHeat, stitch, tile_fam
from inspector.model import N_LAYERS, Model
from inspector.tiling import baseline_scales, plan_tiles, tile_scales
from inspector.types import Box, Bunch, Decision, FloatArray, FrameRef, HeatMap, TilePlan, U8Array

log = logging.getLogger(__name__)

HEAT_DOWNSCALE = 4  # frame heat maps at 1/4 of frame resolution
COVERAGE_TOLERANCE_PX = 2 * SEG_DOWNSCALE  # bunch boxes come from a 1/4-resolution mask: +-4 px each side
EVIDENCE_DOWNSCALE = 4  # frames on either side of a gap are kept this much smaller for its evidence picture
FAM_SIZE = 56  # Eq. 1 evaluated on a 56x56 grid per tile: enough for 1/4-resolution frame maps
MODEL_ERROR_LOG_S = 10.0  # model errors are logged at most once per this long
SKIP_LOG_S = 5.0  # frames skipped as late are logged at most once per this long
HEALTH_HOLD_S = 2.0  # a skipped frame or a model error keeps `health()` unhealthy this long
GAP_FRAMES = 5  # frame intervals beyond the latency budget without a fresh frame: frames stopped (or far behind)


def open_model(config: ModelConfig) -> Model:
    """The model as configured: onnxruntime here (providers, threads, batch size) or a Triton server (`model.triton`,
    the manifest from `model.path`); use as a context manager."""
    if config.backend == "triton":
        from inspector.model_triton import TritonModel

        assert config.triton is not None  # ModelConfig requires the section with this backend
        return TritonModel(config.triton, config.path, config.batch_size)
    return Model(config.path, tuple(config.providers), config.threads, config.batch_size)


class ThrottledLog:
    """A log line at most once per `interval_s` (a fault on every frame must not flood the journal); the lines held
    back are counted in the next one."""

    def __init__(self, level: int, interval_s: float, what: str) -> None:
        self.level, self.interval_s, self.what = level, interval_s, what
        self.at_s: float | None = None
        self.held = 0

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if self.at_s is not None and now - self.at_s < self.interval_s:
            self.held += 1
            return
        held, self.at_s, self.held = self.held, now, 0
        log.log(self.level, "%s%s", message, f" ({held} more {self.what} not logged)" if held else "")


MIN_TILE_PX = 2**N_LAYERS  # the model contract's smallest input: five 2x2 poolings
MIN_BELT_SPEED_MM_S = 1.0  # slower is no conveyor: a calibration slip (frames would wait minutes for inspection)


def plan_problems(config: Config, calibration: Calibration, frame_wh: tuple[int, int] | None = None) -> list[str]:
    """Why this config cannot work, one line each (empty when it can): a degenerate belt speed, tiles below the
    model's minimum input, tiles larger than the frame, an ejector closer than the camera's field of view plus the
    decision latency (`decision.latency_budget_s`) at belt speed. Without `frame_wh` the field of view counts as 0."""
    cal = calibration
    problems: list[str] = []
    if cal.belt_speed_mm_s < MIN_BELT_SPEED_MM_S:
        problems.append(
            f"belt_speed_mm_s {cal.belt_speed_mm_s:g} mm/s is no conveyor speed (below {MIN_BELT_SPEED_MM_S:g} mm/s): "
            "measure it with `inspector calibrate belt`"
        )
    scales = tile_scales(cal, config.tiling.min_fraction, config.tiling.max_fraction)
    smallest = min(s.tile_px for s in scales)
    if config.belt.mode == "belt" and smallest < MIN_TILE_PX:
        problems.append(
            f"tiles of {smallest} px are below the model's minimum input of {MIN_TILE_PX} px: the smallest spider "
            f"({cal.spider_span_mm[0]:g} mm) is {cal.px(cal.spider_span_mm[0]):.1f} px at mm_per_px "
            f"{cal.mm_per_px:g}; move the camera closer or use a higher resolution"
        )
    view_mm = 0.0
    if frame_wh is not None:
        view_mm = cal.mm(frame_wh[cal.travel_axis])
        if config.belt.mode == "belt" and smallest > min(frame_wh):
            problems.append(
                f"tiles of {smallest} px do not fit the {frame_wh[0]}x{frame_wh[1]} frame: mm_per_px "
                f"{cal.mm_per_px:g} makes the smallest spider {cal.px(cal.spider_span_mm[0]):.0f} px; check the "
                "calibration"
            )
    budget_s = config.decision.latency_budget_s
    need_mm = view_mm + budget_s * cal.belt_speed_mm_s
    if cal.camera_to_ejector_mm < need_mm:
        view = f"the field of view ({view_mm:.0f} mm along the belt) plus " if frame_wh is not None else ""
        problems.append(
            f"camera_to_ejector_mm {cal.camera_to_ejector_mm:g} mm is closer than {view}the decision latency "
            f"(decision.latency_budget_s {budget_s:g} s at {cal.belt_speed_mm_s:g} mm/s = "
            f"{budget_s * cal.belt_speed_mm_s:.0f} mm), {need_mm:.0f} mm: bunches would reach the ejector before "
            "they are decided; move the ejector downstream or slow the belt"
        )
    return problems


def check_plan(config: Config, calibration: Calibration, frame_wh: tuple[int, int] | None = None) -> None:
    """ConfigError (one line per problem) when `plan_problems` finds any."""
    problems = plan_problems(config, calibration, frame_wh)
    if problems:
        raise ConfigError("\n".join(f"config cannot work: {p}" for p in problems))


@dataclass
class StepResult:
    ref: FrameRef
    inspected: bool
    bunches: list[Bunch]
    plan: TilePlan | None = None
    tile_probs: FloatArray | None = None
    heat: HeatMap | None = None
    rejects: list[Decision] = field(default_factory=list)  # send to the ejector now
    final: list[Decision] = field(default_factory=list)  # bunches that left the view, decided
    unconfirmed: list[int] = field(default_factory=list)  # passed: one frame alone scored >= threshold, too few agreed
    infer_s: float = 0.0
    model_errors: list[str] = field(default_factory=list)  # model failures on this frame, by kind (one each)
    skipped: str | None = None  # chosen for inspection but not inspected, and why ("late": past every deadline)
    belt_speed_mm_s: float = 0.0
    evidence: dict[int, EvidenceItem] = field(default_factory=dict)  # for decided bunches, when keep_evidence


def crop_tiles(frame_bgr: U8Array, plan: TilePlan, size: int) -> U8Array:
    """(N, size, size, 3) uint8 tiles, each box resized to the model input (area when shrinking, linear else)."""
    out = np.empty((len(plan), size, size, 3), np.uint8)
    for i, tile in enumerate(plan.tiles):
        x1, y1, x2, y2 = tile.box.xyxy
        crop = frame_bgr[y1:y2, x1:x2]
        interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(crop, (size, size), interpolation=interp)
    return out


def tiles_over_bunch(boxes_xyxy: np.ndarray, bunch: Bunch) -> np.ndarray:
    """Indices of tiles that hold at least one pixel of the bunch's mask."""
    if boxes_xyxy.shape[0] == 0:
        return np.zeros(0, np.int64)
    b = bunch.box
    x1 = np.maximum(boxes_xyxy[:, 0], b.x1)
    y1 = np.maximum(boxes_xyxy[:, 1], b.y1)
    x2 = np.minimum(boxes_xyxy[:, 2], b.x2)
    y2 = np.minimum(boxes_xyxy[:, 3], b.y2)
    candidates = np.nonzero((x2 > x1) & (y2 > y1))[0]
    keep = [i for i in candidates if bunch.mask[y1[i] - b.y1 : y2[i] - b.y1, x1[i] - b.x1 : x2[i] - b.x1].any()]
    return np.asarray(keep, np.int64)


class Pipeline:
    """Belt → tiles → model → FAM → decisions, for one camera."""

    def __init__(
        self,
        config: Config,
        calibration: Calibration,
        model: Model,
        fps: float,
        keep_evidence: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock  # "now" on the capture time base (the daemon: time.monotonic); None: no deadlines
        self.margin_s = config.decision.deadline_margin_s
        self.inspect_s_estimate = config.decision.latency_budget_s  # then the measured inspection time (EWMA)
        self.slack_s: float | None = None  # fire time − expected decision time of the most urgent undecided bunch
        self._last_t_s: float | None = None  # capture time of the last frame processed
        self._last_skip_s: float | None = None  # clock time of the last skipped frame
        self._last_model_error_s: float | None = None
        self._queue: tuple[int, int] = (0, 1)  # frames waiting, capacity (`note_queue`)
        self._hold_unknown: dict[int, float | None] = {}  # bunch first seen cut by the exit edge -> watermark then
        self.keep_evidence = keep_evidence
        self._snapshots: dict[int, tuple[float, Snapshot]] = {}  # bunch id -> (centre offset, most central snapshot)
        self._strongest: dict[int, Snapshot] = {}  # bunch id -> snapshot of its highest-scoring inspected frame
        self._seen_only: dict[int, tuple[float, Snapshot]] = {}  # never inspected yet: its most central seen frame
        self.inspections_ok = 0  # frames inspected with every tile's output finite (what feeds the systemd watchdog)
        self._model_error_log = ThrottledLog(logging.ERROR, MODEL_ERROR_LOG_S, "model errors")
        self._skip_log = ThrottledLog(logging.WARNING, SKIP_LOG_S, "skipped frames")
        self._prev_small: U8Array | None = (
            None  # the previous frame at 1/EVIDENCE_DOWNSCALE (the unseen-stretch picture)
        )
        self._prev_seq: int | None = None
        self.calibration = calibration
        self.model = model
        self.fps = fps
        self.rule = DecisionRule(
            config.decision.threshold,
            config.decision.aggregate,
            config.decision.agree_frames,
            tolerance_px=COVERAGE_TOLERANCE_PX,
        )
        scales = tile_scales(calibration, config.tiling.min_fraction, config.tiling.max_fraction)
        self.baseline = config.belt.mode == "whole_frame"
        self.scales = baseline_scales(scales, config.tiling.baseline_overlap) if self.baseline else scales
        self.segmenter = BeltSegmenter(config.belt)
        self.min_area_px = calibration.area_px(config.belt.min_bunch_area_mm2)
        self.frame_wh: tuple[int, int] | None = None
        self.tracker: BunchTracker | None = None
        self.selector: FrameSelector | None = None
        self.records: dict[int, BunchRecord] = {}
        self.windows: list[tuple[float, float]] = []  # inspected stretches of belt (see BunchRecord.fully_inspected)
        self.travel_xy = (0.0, 0.0)
        self._prev_t: float | None = None
        self._direction = np.zeros(2)
        self._direction[calibration.travel_axis] = calibration.travel_sign
        self.odometer: BeltOdometer | None = None

    # ------------------------------------------------------------------------------------------------ helpers
    def _start(self, frame_wh: tuple[int, int]) -> None:
        self.frame_wh = frame_wh
        self.tracker = BunchTracker(frame_wh, self.calibration)
        self.odometer = BeltOdometer(
            self._direction,
            self.calibration.px_per_s,
            REKEY_FRACTION * frame_wh[self.calibration.travel_axis],
            self.config.belt.refine_with_phase_correlation,
        )
        self.selector = FrameSelector(frame_wh, self.calibration, self.config.belt, self.fps)
        biggest = max(s.tile_px for s in self.scales)
        if biggest > min(frame_wh):
            log.warning("tile size %d px exceeds the frame %s: tiles will be stretched", biggest, frame_wh)

    @property
    def belt_speed_mm_s(self) -> float:
        """The measured belt speed (the calibrated one until the odometer has measured)."""
        if self.odometer is None:
            return self.calibration.belt_speed_mm_s
        return self.calibration.mm(self.odometer.speed_px_per_s)

    def _belt_shift(self, frame_bgr: U8Array, t_s: float, has_content: bool) -> tuple[float, float]:
        assert self.odometer is not None
        shift = self.odometer.step(frame_bgr, t_s, has_content)
        self._prev_t = t_s
        return shift

    def _record(self, bunch_id: int) -> BunchRecord:
        record = self.records.get(bunch_id)
        if record is None:
            record = self.records[bunch_id] = BunchRecord(bunch_id, BunchHeat(HEAT_DOWNSCALE))
        return record

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    def _decide(self, record: BunchRecord, final: bool) -> Decision:
        assert self.frame_wh is not None
        return self.rule.verdict(
            record,
            final=final,
            frame_wh=self.frame_wh,
            calibration=self.calibration,
            belt_speed_mm_s=self.belt_speed_mm_s,
            windows=self.windows,
        )

    # ------------------------------------------------------------------------------------------------ per frame
    def process(self, frame_bgr: U8Array, ref: FrameRef) -> StepResult:
        h, w = frame_bgr.shape[:2]
        if self.frame_wh is None:
            self._start((w, h))
        elif self.frame_wh != (w, h):
            raise ValueError(f"frame size changed from {self.frame_wh} to {(w, h)}")
        assert self.tracker is not None and self.selector is not None and self.frame_wh is not None
        started_s = self.clock() if self.clock is not None else None
        prior_watermark = self.decided_until_s
        mask = self.segmenter.mask(frame_bgr)
        found = find_bunches(mask, self.min_area_px)
        shift = self._belt_shift(frame_bgr, ref.t_capture_s, bool(found))
        self.travel_xy = (self.travel_xy[0] + shift[0], self.travel_xy[1] + shift[1])
        bunches, departed = self.tracker.update(found, shift)
        missed = 0 if self._prev_seq is None else max(0, ref.seq - self._prev_seq - 1)
        for bunch in bunches:
            seen = self._record(bunch.bunch_id)
            seen.observe(ref.seq, ref.t_capture_s, bunch.box, self.travel_xy, self.frame_wh, self.calibration, missed)
            seen.beyond_roi |= self._beyond_roi(bunch.box)
            if not seen.exit_side_seen and bunch.bunch_id not in self._hold_unknown:
                self._hold_unknown[bunch.bunch_id] = prior_watermark
        self._last_t_s = ref.t_capture_s
        result = StepResult(ref, False, bunches, belt_speed_mm_s=self.belt_speed_mm_s)
        along_shift_px = float(np.dot(shift, self._direction))
        unseen = unseen_stretch(
            self.tracker.new_id,
            along_shift_px,
            ref.t_capture_s,
            ref.seq,
            self.frame_wh,
            self.calibration,
            self.belt_speed_mm_s,
            self._prev_seq,
        )
        small = frame_bgr[::EVIDENCE_DOWNSCALE, ::EVIDENCE_DOWNSCALE].copy() if self.keep_evidence else None
        if unseen is not None:
            log.error("belt moved %.0f px before frame %d: an unseen stretch is rejected", along_shift_px, ref.seq)
            result.rejects.append(unseen)
            result.final.append(unseen)
            if small is not None:
                axis = self.calibration.travel_axis
                result.evidence[unseen.bunch_id] = GapSnapshot(
                    small,
                    self._prev_small,
                    ref.seq,
                    self._prev_seq,
                    along_shift_px,
                    self.frame_wh[axis],
                    self.calibration.mm_per_px,
                    axis,
                    self.calibration.travel_sign,
                )
        self._prev_small, self._prev_seq = small, ref.seq
        along = float(np.dot(self.travel_xy, self._direction))
        late = self._deadlines(bunches, ref, started_s)
        if self.selector.select(along):  # by belt travel alone: an empty stretch costs no tiles but counts
            if late:
                self.selector.retry()  # the next frame is chosen instead: coverage is not lost, only delayed
                result.skipped = "late"
                self._last_skip_s = started_s
                for bunch in bunches:
                    self.records[bunch.bunch_id].frames_skipped += 1
                self._skip_log(
                    f"frame {ref.seq} skipped: no bunch in it can still be decided before its fire time "
                    f"(inspection takes {self.inspect_s_estimate:.2f} s, frame {max(0.0, (started_s or 0.0) - ref.t_capture_s):.2f} s old)"
                )
                # no inspection, no new measurement: let the estimate fall back towards the declared budget, so a
                # single slow inspection cannot keep every later frame skipped
                budget_s = self.config.decision.latency_budget_s
                self.inspect_s_estimate = 0.8 * self.inspect_s_estimate + 0.2 * min(self.inspect_s_estimate, budget_s)
                if self.keep_evidence:
                    self._keep_seen(frame_bgr, bunches, ref.seq)
            else:
                self._inspect(frame_bgr, mask, bunches, result)
                if started_s is not None and self.clock is not None:
                    spent = max(0.0, self.clock() - started_s)
                    self.inspect_s_estimate = 0.8 * self.inspect_s_estimate + 0.2 * spent
        elif self.keep_evidence:
            self._keep_seen(frame_bgr, bunches, ref.seq)
        for bunch in bunches:  # a spider reject held back until the bunch was seen whole goes now
            record = self.records.get(bunch.bunch_id)
            if record is not None and self.rule.rejects_now(record):
                record.reject_sent = True
                result.rejects.append(self._decide(record, final=False))
        for bunch_id in departed:
            record = self.records.pop(bunch_id, None)
            if record is not None:
                self._finalize(record, result)
        return result

    def _deadlines(self, bunches: list[Bunch], ref: FrameRef, now_s: float | None) -> bool:
        """Update `slack_s`; True when the frame is too late for every undecided bunch in it (skip it)."""
        if now_s is None:
            return False
        assert self.frame_wh is not None
        done_s = max(now_s, ref.t_capture_s) + self.inspect_s_estimate
        fire = [
            fire_time_s(ref.t_capture_s, b.box.center_xy, self.frame_wh, self.calibration, self.belt_speed_mm_s)
            for b in bunches
            if not self.records[b.bunch_id].reject_sent
        ]
        if not fire:
            self.slack_s = None
            return False
        self.slack_s = min(fire) - done_s
        return all(f - self.margin_s < done_s for f in fire)

    # ------------------------------------------------------------------------------------------------ progress
    @property
    def decided_until_s(self) -> float | None:
        """Capture time (FrameRef's time base) up to which every bunch that entered the view is decided.

        Read as: every stretch of belt that crossed the image centre line at or before this time belongs to a
        decided bunch (or none); it reaches the ejector `camera_to_ejector_mm / belt speed` later. It is the capture
        time of the last frame processed, held back to the time the leading end of any bunch in view that is not
        decided yet (no reject sent, no verdict) crossed (or will cross) the centre line; a bunch whose leading end
        was never seen (cut by the exit edge since its first sighting) holds it where it was when that bunch
        appeared. None before the first frame, or while such a bunch holds it from the start."""
        if self._last_t_s is None or self.frame_wh is None:
            return None
        axis, sign = self.calibration.travel_axis, self.calibration.travel_sign
        length = self.frame_wh[axis]
        speed = self.belt_speed_mm_s if self.belt_speed_mm_s > 0 else self.calibration.belt_speed_mm_s
        until = self._last_t_s
        for bunch_id, record in self.records.items():
            if record.reject_sent or not record.seen_along:
                continue
            if bunch_id in self._hold_unknown:
                held = self._hold_unknown[bunch_id]
                if held is None:
                    return None
                until = min(until, held)
                continue
            merged = merge_intervals(record.seen_along)
            lead_belt = merged[-1][1] if sign > 0 else merged[0][0]
            past_centre_px = (lead_belt + self.travel_xy[axis] - length / 2.0) * sign
            until = min(until, self._last_t_s - self.calibration.mm(past_centre_px) / speed)
        return until

    def note_queue(self, waiting: int, capacity: int) -> None:
        """The caller's frame queue (the ring): frames waiting and its capacity, for `health()`."""
        self._queue = (waiting, max(1, capacity))

    def health(self) -> tuple[bool, str]:
        """(healthy, reason): unhealthy while inspection is late (slack below the margin), frames were skipped or
        the model failed in the last HEALTH_HOLD_S, the frame queue is full, or no fresh frame came for the latency
        budget plus GAP_FRAMES frame intervals (frames stopped, or inspection far behind capture)."""
        if self._last_t_s is None:
            return False, "no frame inspected yet"
        now_s = self.clock() if self.clock is not None else self._last_t_s
        gap_limit_s = self.config.decision.latency_budget_s + GAP_FRAMES / self.fps
        age_s = now_s - self._last_t_s
        if age_s > gap_limit_s:
            return False, f"no fresh frame for {age_s:.2f} s (limit {gap_limit_s:.2f} s): frames stopped or behind"
        if self._last_model_error_s is not None and now_s - self._last_model_error_s < HEALTH_HOLD_S:
            return False, "the model failed on a frame (model_error rejects)"
        if self._last_skip_s is not None and now_s - self._last_skip_s < HEALTH_HOLD_S:
            return False, "frames skipped: inspection too late for their deadlines"
        waiting, capacity = self._queue
        if waiting >= capacity:
            return False, f"frame queue full ({waiting} of {capacity}): inspection cannot keep up"
        if self.slack_s is not None and self.slack_s < self.margin_s:
            return False, f"inspection late: slack {self.slack_s:.3f} s below the margin {self.margin_s:.3f} s"
        return True, "ok"

    def _inspect(self, frame_bgr: U8Array, mask: np.ndarray, bunches: list[Bunch], result: StepResult) -> None:
        assert self.frame_wh is not None
        plan = plan_tiles(self.frame_wh, self.scales, None if self.baseline else mask, self._roi())
        manifest = self.model.manifest
        tiles = crop_tiles(frame_bgr, plan, manifest.input.size)
        start = time.perf_counter()
        try:
            inference = self.model.infer(tiles)
        except Exception as exc:  # a model that raises fails its frame's bunches, never the daemon
            result.infer_s = time.perf_counter() - start
            kind = exc.kind if isinstance(exc, BackendError) else type(exc).__name__
            self._model_failed(
                bunches, None, result, "exception", f"inference failed on frame {result.ref.seq} ({kind}): {exc}"
            )
            return
        result.infer_s = time.perf_counter() - start
        finite = inference.finite_tiles()
        if finite.all():
            self.inspections_ok += 1
        else:
            inference = inference.zeroed(finite)
        probs = inference.spider_prob
        maps = tile_fam(
            inference.fams, FAM_SIZE, self.config.model.fam_mode, manifest.fam_layer_scale, manifest.input.size
        )
        boxes = plan.boxes_xyxy()
        heat = stitch(self.frame_wh, boxes, maps, probs, HEAT_DOWNSCALE)
        result.inspected, result.plan, result.tile_probs, result.heat = True, plan, probs, heat
        self._add_window()
        for bunch in bunches:
            record = self._record(bunch.bunch_id)
            idx = tiles_over_bunch(boxes, bunch)
            record.inspected(probs[idx].tolist(), result.ref.seq)
            record.heat.add(heat, bunch.box, self.travel_xy)
            if self.keep_evidence:
                self._keep_snapshot(frame_bgr, heat, plan, probs, bunch, float(probs[idx].max(initial=0.0)), result)
            bad = int((~finite[idx]).sum())
            if bad:
                what = (
                    f"non-finite output (NaN or infinity) for {bad} of its {len(idx)} tiles on frame {result.ref.seq}"
                )
                self._model_failed([bunch], finite, result, "non_finite", what)
            elif self.rule.rejects_now(record):
                record.reject_sent = True
                result.rejects.append(self._decide(record, final=False))

    def _model_failed(
        self, bunches: list[Bunch], finite: np.ndarray | None, result: StepResult, kind: str, what: str
    ) -> None:
        """The model failed on these bunches' tiles (it raised: the whole frame; or NaN/infinite output): each not
        yet rejected is rejected `model_error` at once and stays rejected when it leaves. Counted per frame in
        `StepResult.model_errors`; logged at most once per MODEL_ERROR_LOG_S."""
        if kind not in result.model_errors:
            result.model_errors.append(kind)
            self._last_model_error_s = self.clock() if self.clock is not None else result.ref.t_capture_s
            bad_tiles = "" if finite is None else f" ({int((~finite).sum())} of {len(finite)} tiles)"
            self._model_error_log(f"frame {result.ref.seq}: model error{bad_tiles}, its bunches are rejected: {what}")
        for bunch in bunches:
            record = self._record(bunch.bunch_id)
            record.model_error = record.model_error or what
            if self.rule.rejects_now(record):
                record.reject_sent = True
                result.rejects.append(self._decide(record, final=False))

    def _keep_seen(self, frame_bgr: U8Array, bunches: list[Bunch], frame: int) -> None:
        """A bunch no inspected frame has shown yet: keep its most central seen frame (its picture if it never is)."""
        assert self.frame_wh is not None
        for bunch in bunches:
            if bunch.bunch_id in self._snapshots:
                continue
            offset = abs(along_offset_px(bunch.box.center_xy, self.frame_wh, self.calibration))
            kept = self._seen_only.get(bunch.bunch_id)
            if kept is None or offset < kept[0]:
                spider_px = self.calibration.px(self.calibration.spider_span_mm[1])
                snap = take_seen_snapshot(frame_bgr, bunch.box, frame, self.travel_xy, spider_px)
                self._seen_only[bunch.bunch_id] = (offset, snap)

    def _keep_snapshot(
        self,
        frame_bgr: U8Array,
        heat: HeatMap,
        plan: TilePlan,
        probs: FloatArray,
        bunch: Bunch,
        frame_score: float,
        result: StepResult,
    ) -> None:
        """Keep the bunch's most central inspected frame (the picture of a pass or an uninspected reject) and its
        highest-scoring one (the picture of a spider reject: where the model saw the spider)."""
        assert self.frame_wh is not None
        offset = abs(along_offset_px(bunch.box.center_xy, self.frame_wh, self.calibration))
        central = self._snapshots.get(bunch.bunch_id)
        strongest = self._strongest.get(bunch.bunch_id)
        take_central = central is None or offset < central[0]
        take_strongest = strongest is None or frame_score > strongest.frame_score
        if not (take_central or take_strongest):
            return
        spider_px = self.calibration.px(self.calibration.spider_span_mm[1])
        snap = take_snapshot(
            frame_bgr, heat, plan, probs, bunch.box, result.ref.seq, self.travel_xy, spider_px, frame_score
        )
        if take_central:
            self._snapshots[bunch.bunch_id] = (offset, snap)
            self._seen_only.pop(bunch.bunch_id, None)
        if take_strongest:
            self._strongest[bunch.bunch_id] = snap

    def _tiled(self, axis: int) -> tuple[float, float]:
        """The extent of the tiled region (the frame, or the calibration's `roi_xyxy` within it) along `axis`."""
        assert self.frame_wh is not None
        lo, hi = 0.0, float(self.frame_wh[axis])
        roi = self.calibration.roi_xyxy
        if roi is not None:
            lo, hi = max(lo, float(roi[axis])), min(hi, float(roi[axis + 2]))
        return lo, max(lo, hi)

    def _beyond_roi(self, box: Box) -> bool:
        """The box reaches across the belt past the tiled region: that part of the bunch is never tiled."""
        if self.calibration.roi_xyxy is None:
            return False
        across = 1 - self.calibration.travel_axis
        lo, hi = self._tiled(across)
        return box.xyxy[across] < lo or box.xyxy[across + 2] > hi

    def _add_window(self) -> None:
        """Record the stretch of belt this inspected frame tiled (the frame, or the calibration's `roi_xyxy`, along
        travel), less half the largest spider at each end."""
        assert self.frame_wh is not None
        axis = self.calibration.travel_axis
        half_spider_px = self.calibration.px(self.calibration.spider_span_mm[1]) / 2.0
        travel = self.travel_xy[axis]
        lo, hi = self._tiled(axis)
        window = (lo + half_spider_px - travel, hi - half_spider_px - travel)
        self.windows.append(window)
        if len(self.windows) > 32:  # consecutive windows overlap: their union is a few intervals; drop the far past
            horizon = 20 * self.frame_wh[axis]
            self.windows = [w for w in merge_intervals(self.windows) if abs(w[0] - window[0]) < horizon]

    def _roi(self) -> Box | None:
        roi = self.calibration.roi_xyxy
        return None if roi is None else Box(*roi)

    def _finalize(self, record: BunchRecord, result: StepResult) -> None:
        self._hold_unknown.pop(record.bunch_id, None)
        decision = self._decide(record, final=True)
        kept = self._snapshots.pop(record.bunch_id, None)
        strongest = self._strongest.pop(record.bunch_id, None)
        seen = self._seen_only.pop(record.bunch_id, None)
        snap = strongest if decision.reason == "spider" and strongest is not None else None
        if snap is None:
            snap = kept[1] if kept is not None else (seen[1] if seen is not None else None)
        if snap is not None and decision.reason == "uninspected":
            gaps = uncovered(record.seen_along, self.windows, self.rule.tolerance_px)
            snap = replace(snap, unseen_along=tuple(gaps), travel_axis=self.calibration.travel_axis)
        if snap is not None:
            result.evidence[record.bunch_id] = snap
        if decision.decision == "reject" and not record.reject_sent:
            record.reject_sent = True
            result.rejects.append(decision)
        elif self.rule.overruled(record, decision):
            result.unconfirmed.append(record.bunch_id)
            log.info(
                "bunch %d: passed: its frames together score %.3f, but fewer than %d reached the threshold each",
                record.bunch_id,
                record.score(self.rule.aggregate),
                self.rule.agree_frames,
            )
        result.final.append(decision)

    def finish(self, ref: FrameRef | None = None) -> StepResult:
        """End of footage: every bunch still in view is decided (uninspected stretches are rejected)."""
        result = StepResult(ref or FrameRef(-1, -1, self._prev_t or 0.0), False, [])
        if self.tracker is not None:
            self.tracker.drain()
        for bunch_id in sorted(self.records):
            self._finalize(self.records[bunch_id], result)
        self.records.clear()
        return result

    def frames_needed_per_s(self) -> float:
        """Inspections per second the belt needs at its current speed estimate."""
        if self.selector is None or self.selector.every_frame or self.selector.step_px <= 0:
            return self.fps
        return self.calibration.px(self.belt_speed_mm_s) / self.selector.step_px

    def set_threshold(self, threshold: float) -> None:
        """Reload (SIGHUP): takes effect from the next frame, no frame dropped."""
        self.rule = self.rule.with_threshold(threshold)
