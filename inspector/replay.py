"""Replay recorded footage through the daemon's own pipeline: decision log, evidence, report, threshold sweep.

    inspector replay FOOTAGE --calibration CAL [--config CFG] [--model MODEL.onnx] --out DIR [--labels LABELS]
                     [--pace max|realtime]

Pacing. ``max`` processes every frame as fast as the machine allows: deterministic, the same footage always gives
the same `decisions.jsonl`. ``realtime`` plays the footage at its frame rate like a camera: while a frame is being
inspected the next ones keep "arriving", and only the newest is taken when the pipeline is free again — the others
are dropped and counted, exactly as the capture ring does in the daemon, so a machine that is too slow shows the
same drops and `uninspected` rejects here as on the line.

Time: frame f is at f / fps seconds of footage time; `fire_at_s` is in footage seconds.

Outputs in DIR: `decisions.jsonl` (one line per bunch, written as each is decided — kept if the run fails half-way),
`evidence/bunch_<id>.jpg` for every reject, optional `annotated.avi`, and with labels `report.json`, `report.md` and
PNG plots.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import cv2
import numpy as np

from inspector.config import Calibration, Config
from inspector.errors import InspectorError, SourceError
from inspector.evidence import overlay_frame, render
from inspector.pipeline import Pipeline, StepResult, open_model
from inspector.report import evaluate, load_labels, to_markdown, write_plots
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
    error: str | None = None  # footage that broke off: what was decided up to there is kept

    def line(self) -> str:
        rejects = sum(d.decision == "reject" for d in self.decisions)
        uninspected = sum(d.reason == "uninspected" for d in self.decisions)
        tiles_s = self.tiles_inferred / self.infer_s if self.infer_s > 0 else 0.0
        return (
            f"{self.frames_read} frames ({self.frames_inspected} inspected, {self.frames_dropped} dropped), "
            f"{len(self.decisions)} bunches: {rejects} rejected ({uninspected} uninspected), "
            f"{self.tiles_inferred} tiles at {tiles_s:.0f} tiles/s, {self.wall_s:.1f} s"
        )


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FOLDER_FPS = 10.0  # an image folder has no frame rate of its own: give --fps


def open_footage(path: Path, fps: float | None = None) -> tuple[Iterator[tuple[np.ndarray, int]], float, int | None]:
    """(frames as (bgr, seq), fps, frame count or None) for a video file or an image folder.

    A missing or unreadable file is a SourceError at once; a video that breaks off before its declared frame count
    raises SourceError when the break is reached (after every good frame has been yielded)."""
    if not path.exists():
        raise SourceError(f"{path}: footage not found; give a video file or a folder of images")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")

        def folder() -> Iterator[tuple[np.ndarray, int]]:
            for seq, file in enumerate(files):
                image = cv2.imread(str(file), cv2.IMREAD_COLOR)
                if image is None:
                    raise SourceError(f"{file}: unreadable image (frame {seq}); replace or remove it")
                yield image, seq

        return folder(), fps or FOLDER_FPS, len(files)
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read() if capture.isOpened() else (False, None)
    if not ok or first is None:
        capture.release()
        raise SourceError(f"{path}: not a readable video (empty, truncated or unknown codec); re-record or convert it")
    video_fps = fps or capture.get(cv2.CAP_PROP_FPS) or 0.0
    if not 0 < video_fps < 1000:
        video_fps = FOLDER_FPS
        log.warning("%s: no usable frame rate in the file; assuming %.0f fps (give --fps)", path, video_fps)
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def video() -> Iterator[tuple[np.ndarray, int]]:
        frame: np.ndarray | None = first
        seq = 0
        try:
            while frame is not None:
                yield frame, seq
                seq += 1
                ok, frame = capture.read()
                if not ok:
                    frame = None
        finally:
            capture.release()
        if declared > 0 and seq < declared - 1:
            raise SourceError(f"{path}: video breaks off at frame {seq} of {declared} (truncated or corrupt)")

    return video(), float(video_fps), declared or None


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int | None, stream: TextIO = sys.stderr) -> None:
        self.total, self.stream = total, stream
        self.enabled = stream.isatty()
        self._last = 0.0

    def update(self, n: int, rejects: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        if self.total:
            done = min(1.0, n / self.total)
            bar = "#" * int(30 * done)
            self.stream.write(f"\r[{bar:<30}] {n}/{self.total} frames, {rejects} rejects ")
        else:
            self.stream.write(f"\r{n} frames, {rejects} rejects ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def _paced(
    frames: Iterator[tuple[np.ndarray, int]], fps: float, pace: Pace, summary: ReplaySummary
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield frames; in realtime pace, skip (and count) the ones that 'arrived' while the consumer was busy."""
    start = time.monotonic()
    for frame, seq in frames:
        summary.frames_read += 1
        if pace == "realtime":
            due = start + seq / fps
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            elif now - due >= 1.0 / fps:  # a newer frame has already arrived: this one is gone
                summary.frames_dropped += 1
                continue
        yield frame, seq


class _Outputs:
    """decisions.jsonl (line-buffered), evidence images, annotated video."""

    def __init__(self, out_dir: Path, evidence: bool, video: bool, fps: float) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.jsonl = (out_dir / "decisions.jsonl").open("w", encoding="utf-8", buffering=1)
        self.evidence_dir = out_dir / "evidence" if evidence else None
        if self.evidence_dir is not None:
            self.evidence_dir.mkdir(exist_ok=True)
        self.video = video
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.states: dict[int, str] = {}
        self.vmax = 1e-6

    def step(self, frame: np.ndarray | None, step: StepResult) -> None:
        for d in step.final:
            self.jsonl.write(json.dumps(d.to_json_dict()) + "\n")
            snap = step.evidence.get(d.bunch_id)
            if self.evidence_dir is not None and snap is not None and d.decision == "reject":
                cv2.imwrite(str(self.evidence_dir / f"bunch_{d.bunch_id:05d}.jpg"), render(snap, d))
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
        self.jsonl.close()
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
    frames, footage_fps, total = open_footage(footage, fps)
    started = time.monotonic()
    with open_model(config.model) as model:
        pipeline = Pipeline(config, calibration, model, footage_fps, keep_evidence=evidence)
        outputs = _Outputs(out_dir, evidence, video, footage_fps)
        progress = _Progress(total)
        last: tuple[np.ndarray, int] | None = None
        try:
            for frame, seq in _paced(frames, footage_fps, pace, summary):
                step = pipeline.process(frame, FrameRef(0, seq, seq / footage_fps))
                summary.frames_inspected += int(step.inspected)
                summary.tiles_inferred += 0 if step.plan is None else len(step.plan)
                summary.infer_s += step.infer_s
                summary.decisions += step.final
                outputs.step(frame, step)
                progress.update(summary.frames_read, sum(d.decision == "reject" for d in summary.decisions))
                last = (frame, seq)
        except SourceError as exc:
            summary.error = str(exc)
            log.error("%s; decisions up to here are kept", exc)
        finally:
            progress.close()
            end = pipeline.finish(None if last is None else FrameRef(0, last[1], last[1] / footage_fps))
            summary.decisions += end.final
            outputs.step(None, end)
            outputs.close()
    summary.wall_s = time.monotonic() - started
    if summary.frames_read == 0:
        raise SourceError(f"{footage}: no frame could be read; check the file is a readable video or image folder")
    return summary


def write_report(
    out_dir: Path, labels_path: Path, threshold: float, target_recall: float, footage: str
) -> dict[str, Any]:
    """Evaluate decisions.jsonl in `out_dir` against labels; write report.json, report.md and the plots."""
    decisions = [json.loads(line) for line in (out_dir / "decisions.jsonl").read_text().splitlines() if line.strip()]
    labels = load_labels(labels_path)
    report, matched = evaluate(decisions, labels, threshold, target_recall)
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
