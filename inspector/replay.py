"""Replay recorded footage through the daemon's own pipeline: decision log, evidence, report, threshold sweep.

    inspector replay FOOTAGE --calibration CAL [--config CFG] [--model MODEL.onnx] --out DIR [--labels LABELS]
                     [--pace max|realtime]

Pacing. ``max`` processes every frame as fast as the machine allows: deterministic, the same footage always gives
the same `decisions.jsonl`. ``realtime`` plays the footage at its frame rate like a camera (the file source's own
pacing): while a frame is being inspected the next ones keep "arriving", and the source skips to the frame that is
due when the pipeline asks again — the skipped ones are counted as dropped, as the capture ring does in the daemon,
so a machine that is too slow shows the same drops and `uninspected` rejects here as on the line.

Time: frame f is at f / fps seconds of footage time; `fire_at_s` is in footage seconds.

Outputs in DIR: `decisions.jsonl` (one line per bunch, written as each is decided — kept if the run fails half-way),
`evidence/bunch_<id>.jpg` (six digits) for every reject, `review.html` (the reject review page with its data embedded:
open it in a browser), optional `annotated.avi`, and with labels `report.json`, `report.md` and PNG plots.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from inspector.config import Calibration, Config, DecisionConfig
from inspector.decision_log import DecisionLog
from inspector.errors import InspectorError, SourceError
from inspector.evidence import overlay_frame
from inspector.pipeline import Pipeline, StepResult, open_model
from inspector.progress import Progress
from inspector.report import evaluate, load_labels, to_markdown, write_plots
from inspector.review import write_static_page
from inspector.sources import ImageFolderSource, VideoFileSource
from inspector.types import Box, Decision, FrameRef

log = logging.getLogger(__name__)

Pace = Literal["max", "realtime"]


@dataclass
class ReplaySummary:
    frames_read: int = 0
    frames_inspected: int = 0
    frames_dropped: int = 0
    tiles_inferred: int = 0
    infer_s: float = 0.0
    wall_s: float = 0.0
    decisions: list[Decision] = field(default_factory=list)
    model_errors: int = 0  # frames on which the model failed (their bunches rejected model_error)
    unconfirmed: int = 0  # bunches passed because too few frames agreed (decision.agree_frames >= 2)
    error: str | None = None  # footage that broke off: what was decided up to there is kept
    review_html: Path | None = None  # the reject review page written beside the decisions

    def line(self) -> str:
        rejects = sum(d.decision == "reject" for d in self.decisions)
        uninspected = sum(d.reason == "uninspected" for d in self.decisions)
        tiles_s = self.tiles_inferred / self.infer_s if self.infer_s > 0 else 0.0
        return (
            f"{self.frames_read} frames ({self.frames_inspected} inspected, {self.frames_dropped} dropped), "
            f"{len(self.decisions)} bunches: {rejects} rejected ({uninspected} uninspected"
            + (f"; {self.unconfirmed} passed unconfirmed" if self.unconfirmed else "")
            + (f"; MODEL ERRORS on {self.model_errors} frames" if self.model_errors else "")
            + "), "
            f"{self.tiles_inferred} tiles at {tiles_s:.0f} tiles/s, {self.wall_s:.1f} s"
        )


class _Outputs:
    """decisions.jsonl and evidence images (`DecisionLog`, as the daemon writes them), the annotated video."""

    def __init__(self, out_dir: Path, evidence: bool, video: bool, fps: float) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.log = DecisionLog(
            out_dir / "decisions.jsonl", out_dir / "evidence" if evidence else None, append=False, wall_clock=False
        )
        self.video = video
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.states: dict[int, str] = {}
        self.vmax = 1e-6

    def step(self, frame: np.ndarray | None, step: StepResult) -> None:
        self.log.write(step.final, step.evidence)
        for d in step.rejects:
            self.states[d.bunch_id] = f"reject {d.score:.2f}"
        if self.video and frame is not None:
            self._video_frame(frame, step)

    def _video_frame(self, frame: np.ndarray, step: StepResult) -> None:
        if self.writer is None:
            h, w = frame.shape[:2]
            path = self.out_dir / "annotated.avi"
            self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), self.fps, (w, h))
        if step.heat is not None:
            self.vmax = max(self.vmax * 0.9, float(step.heat.values.max()))
        boxes: list[tuple[int, Box, str]] = [
            (b.bunch_id, b.box, self.states.get(b.bunch_id, "inspecting" if step.inspected else ""))
            for b in step.bunches
        ]
        self.writer.write(overlay_frame(frame, step.heat, step.plan, boxes, self.vmax))

    def close(self) -> None:
        self.log.close()
        if self.writer is not None:
            self.writer.release()


def replay(
    footage: Path,
    calibration: Calibration,
    config: Config,
    out_dir: Path,
    *,
    pace: Pace = "max",
    evidence: bool = True,
    video: bool = False,
    fps: float | None = None,
) -> ReplaySummary:
    """Run the pipeline over a video file or image folder; write the outputs; never lose what was decided."""
    summary = ReplaySummary()
    source: VideoFileSource | ImageFolderSource
    if footage.is_dir():
        source = ImageFolderSource(footage, pace, fps=fps, clock=None)
    elif footage.exists():
        source = VideoFileSource(footage, pace, fps=fps, clock=None)
    else:
        raise SourceError(f"{footage}: footage not found; give a video file or a folder of images")
    started = time.monotonic()
    with source, open_model(config.model) as model:
        footage_fps = source.fps or 10.0
        pipeline = Pipeline(config, calibration, model, footage_fps, keep_evidence=evidence)
        outputs = _Outputs(out_dir, evidence, video, footage_fps)
        progress = Progress(source.frame_count or None, desc="replay", unit="frame")
        last_seq: int | None = None
        try:
            while (frame := source.read()) is not None:
                expected = 0 if last_seq is None else last_seq + 1
                summary.frames_dropped += frame.seq - expected  # realtime pace: frames that went by while busy
                summary.frames_read += 1
                step = pipeline.process(frame.image_bgr, FrameRef(0, frame.seq, frame.t_capture_s))
                summary.frames_inspected += int(step.inspected)
                summary.tiles_inferred += 0 if step.plan is None else len(step.plan)
                summary.infer_s += step.infer_s
                summary.decisions += step.final
                summary.unconfirmed += len(step.unconfirmed)
                summary.model_errors += bool(step.model_errors)
                outputs.step(frame.image_bgr, step)
                progress.update(1, rejects=sum(d.decision == "reject" for d in summary.decisions))
                last_seq = frame.seq
        except SourceError as exc:
            summary.error = str(exc)
            log.error("%s; decisions up to here are kept", exc)
        finally:
            progress.close()
            end = pipeline.finish()
            summary.decisions += end.final
            summary.unconfirmed += len(end.unconfirmed)
            outputs.step(None, end)
            outputs.close()
            summary.review_html = write_static_page(out_dir, out_dir / "decisions.jsonl", source=footage.name)
    summary.wall_s = time.monotonic() - started
    if summary.frames_read == 0:
        raise SourceError(f"{footage}: no frame could be read; check the file is a readable video or image folder")
    return summary


def write_report(
    out_dir: Path, labels_path: Path, rule: DecisionConfig, target_recall: float, footage: str
) -> dict[str, Any]:
    """Evaluate decisions.jsonl in `out_dir` against labels; write report.json, report.md and the plots."""
    decisions = [json.loads(line) for line in (out_dir / "decisions.jsonl").read_text().splitlines() if line.strip()]
    labels = load_labels(labels_path)
    report, matched = evaluate(decisions, labels, rule.threshold, target_recall, (rule.aggregate, rule.agree_frames))
    (out_dir / "report.json").write_text(report.to_json())
    (out_dir / "report.md").write_text(to_markdown(report, footage))
    plots = write_plots(report, matched, out_dir)
    if not plots:
        log.warning("matplotlib is not installed: no PNG plots (pip install 'grape-spider-inspector[plots]')")
    if labels and decisions and report.unmatched_decisions == len(decisions):
        raise InspectorError(
            f"{labels_path}: no decision matches any labelled bunch (are these the labels of {footage}?); "
            f"decisions kept in {out_dir / 'decisions.jsonl'}"
        )
    result: dict[str, Any] = json.loads(report.to_json())
    return result
