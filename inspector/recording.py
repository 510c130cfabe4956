"""Recording: the last ``recording.seconds`` of raw frames, saved around each reject and on demand (SIGUSR1).

    rec = Recorder(config.recording, fps=source_fps)         # disabled (all no-ops) when recording.dir is unset
    with rec:
        rec.add(frame_bgr, ref.seq, ref.t_capture_s)          # every inspected frame (JPEG-encoded in memory)
        rec.trigger(seq, reason="reject", bunch_id=7)         # save once post_s more seconds have been added
        rec.snapshot()                                        # save what is buffered now (SIGUSR1)

Each clip is ``DIR/clip-<UTC time>-seq<N>-<reason>.avi`` (Motion-JPEG, at the source frame rate — any video
player and ``inspector replay`` read it as a video file) plus a ``.json`` sidecar beside it::

    {"format": "inspector-clip/1", "video": "clip-….avi", "fps": 25.0, "frame_wh": [1280, 720],
     "first_seq": 1412, "seqs": [1412, 1413, …], "t_capture_s": [...], "reason": "reject",
     "trigger_seq": 1530, "bunch_ids": [7], "created_unix_s": 1718000000.0}

``seqs`` are the daemon's frame numbers: a gap means frames dropped before inspection; in replay frame ``i`` of
the clip is at ``i / fps``. Frames are JPEG-compressed in memory (quality 95) to bound memory; encoding happens on
a worker thread and writing on another, so the inspection loop only copies the frame and never waits for the disk. Rejects close in
time share one clip. At most ``max_clips`` clips are kept (oldest removed).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inspector.config import RecordingConfig
from inspector.errors import InspectorError
from inspector.metrics import METRICS, Metrics
from inspector.types import U8Array

log = logging.getLogger(__name__)

CLIP_FORMAT = "inspector-clip/1"
JPEG_QUALITY = 95


class RecordingError(InspectorError):
    """The recording folder cannot be written."""


@dataclass
class _Buffered:
    seq: int
    t_capture_s: float
    wh: tuple[int, int]
    jpeg: bytes


@dataclass
class _PendingClip:
    trigger_seq: int
    until_seq: int
    reason: str
    bunch_ids: list[int] = field(default_factory=list)


class Recorder:
    """See the module docstring. The inspection thread only copies the frame and queues it (about 1 ms for a
    1280x720 frame); a worker thread JPEG-encodes, keeps the ring of the last seconds and decides when a clip is
    due, and the writer thread writes clips. Commands keep their order through one queue, so `trigger` and
    `snapshot` see exactly the frames added before them."""

    def __init__(
        self,
        cfg: RecordingConfig,
        fps: float,
        post_s: float | None = None,
        max_clips: int = 200,
        metrics: Metrics | None = None,
    ) -> None:
        self.dir = cfg.dir
        self.fps = fps if fps > 0 else 25.0
        self.max_frames = max(1, round(cfg.seconds * self.fps))
        self.post_frames = round((post_s if post_s is not None else min(2.0, cfg.seconds / 2)) * self.fps)
        self.max_clips = max_clips
        self.metrics = metrics if metrics is not None else METRICS
        self._buf: deque[_Buffered] = deque(maxlen=self.max_frames)  # owned by the encoder thread
        self._pending: _PendingClip | None = None  # owned by the encoder thread
        self._commands: queue.Queue[tuple[str, tuple[object, ...]] | None] = queue.Queue(
            maxsize=max(8, round(2 * self.fps))
        )
        self._jobs: queue.Queue[tuple[list[_Buffered], _PendingClip] | None] = queue.Queue(maxsize=8)
        self._encoder: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self.saved: list[Path] = []
        self.frames_skipped = 0  # frames not recorded because the encoder was behind
        if self.dir is not None:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RecordingError(
                    f"{self.dir}: cannot create the recording folder ({exc.strerror}); fix recording.dir"
                ) from None
            self._encoder = threading.Thread(target=self._encode_loop, name="recorder-encode", daemon=True)
            self._thread = threading.Thread(target=self._writer, name="recorder", daemon=True)
            self._encoder.start()
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    # ------------------------------------------------------------------ main-loop side (never blocks)
    def add(self, frame_bgr: U8Array, seq: int, t_capture_s: float) -> None:
        if not self.enabled:
            return
        try:
            self._commands.put_nowait(("frame", (frame_bgr.copy(), seq, t_capture_s)))
        except queue.Full:
            self.frames_skipped += 1
            if self.frames_skipped % 100 == 1:
                log.warning("recorder: encoder behind, %d frame(s) not recorded so far", self.frames_skipped)

    def trigger(self, seq: int, reason: str = "reject", bunch_id: int | None = None) -> None:
        """Save a clip around frame ``seq`` once ``post_s`` more seconds of frames have arrived."""
        if self.enabled:
            self._commands.put(("trigger", (seq, reason, bunch_id)))

    def snapshot(self, reason: str = "snapshot") -> None:
        """Save what is buffered now."""
        if self.enabled:
            self._commands.put(("snapshot", (reason,)))

    def close(self) -> None:
        """Save a pending clip with what there is, then finish encoding and writing."""
        if self._encoder is None or self._thread is None:
            return
        self._commands.put(None)
        self._encoder.join(30.0)
        self._jobs.put(None)
        self._thread.join(30.0)
        self._encoder = self._thread = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ encoder thread
    def _encode_loop(self) -> None:
        while (command := self._commands.get()) is not None:
            kind, args = command
            try:
                if kind == "frame":
                    self._encode(*args)  # type: ignore[arg-type]
                elif kind == "trigger":
                    self._trigger(*args)  # type: ignore[arg-type]
                elif kind == "snapshot" and self._buf:
                    seq = self._buf[-1].seq
                    self._submit(_PendingClip(seq, seq, str(args[0])))
            except Exception:
                log.exception("recorder: %s failed", kind)
        if self._pending is not None:
            self._submit(self._pending)

    def _encode(self, frame_bgr: U8Array, seq: int, t_capture_s: float) -> None:
        ok, jpeg = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return
        h, w = frame_bgr.shape[:2]
        self._buf.append(_Buffered(seq, t_capture_s, (w, h), jpeg.tobytes()))
        p = self._pending
        if p is not None and seq >= p.until_seq:
            self._submit(p)

    def _trigger(self, seq: int, reason: str, bunch_id: int | None) -> None:
        p = self._pending
        if p is None:
            p = self._pending = _PendingClip(seq, seq + self.post_frames, reason)
        else:  # a reject close to the last one: extend that clip (bounded by the buffer length)
            p.until_seq = min(max(p.until_seq, seq + self.post_frames), p.trigger_seq + self.max_frames // 2)
        if bunch_id is not None:
            p.bunch_ids.append(bunch_id)

    def _submit(self, clip: _PendingClip) -> None:
        if clip is self._pending:
            self._pending = None
        frames = list(self._buf)
        try:
            self._jobs.put_nowait((frames, clip))
        except queue.Full:
            log.error("recorder: disk too slow, clip around frame %d not saved", clip.trigger_seq)

    # ------------------------------------------------------------------ writer thread
    def _writer(self) -> None:
        while (job := self._jobs.get()) is not None:
            frames, clip = job
            try:
                path = self._write(frames, clip)
            except Exception:
                log.exception("recorder: writing the clip around frame %d failed", clip.trigger_seq)
                continue
            if path is not None:
                self.saved.append(path)
                self.metrics.recordings_saved.inc()
                log.info("recorded %s (%d frames)", path, len(frames))
                self._prune()

    def _write(self, frames: list[_Buffered], clip: _PendingClip) -> Path | None:
        assert self.dir is not None
        if not frames:
            return None
        wh = frames[-1].wh
        frames = [f for f in frames if f.wh == wh]  # a resolution change mid-buffer: keep the latest size
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        stem = f"clip-{stamp}-seq{clip.trigger_seq:09d}-{clip.reason}"
        video = self.dir / f"{stem}.avi"
        tmp = self.dir / f".{stem}.part.avi"  # OpenCV picks the container by extension
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), self.fps, wh)
        if not writer.isOpened():
            raise RecordingError(f"{tmp}: cannot open a Motion-JPEG writer")
        try:
            writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
            for f in frames:
                img = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
                if img is not None:
                    writer.write(img)
        finally:
            writer.release()
        tmp.replace(video)
        meta = {
            "format": CLIP_FORMAT,
            "video": video.name,
            "fps": self.fps,
            "frame_wh": list(wh),
            "first_seq": frames[0].seq,
            "seqs": [f.seq for f in frames],
            "t_capture_s": [round(f.t_capture_s, 6) for f in frames],
            "reason": clip.reason,
            "trigger_seq": clip.trigger_seq,
            "bunch_ids": clip.bunch_ids,
            "created_unix_s": round(time.time(), 3),
        }
        video.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
        return video

    def _prune(self) -> None:
        assert self.dir is not None
        clips = sorted(self.dir.glob("clip-*.avi"), key=lambda p: p.stat().st_mtime)
        for old in clips[: max(0, len(clips) - self.max_clips)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)


def read_sidecar(video: Path) -> dict[str, object] | None:
    """The sidecar of a recorded clip (None for footage that is not a clip)."""
    side = video.with_suffix(".json")
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CLIP_FORMAT else None
