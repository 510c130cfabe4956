"""Frame sources: camera (V4L2/USB index, RTSP/HTTP URL, GStreamer pipeline string), video file, image folder.

One protocol::

    with open_source(config.source) as src:        # or VideoFileSource(path, pace="max", clock=None)
        while (frame := src.read()) is not None:   # None: end of footage
            frame.image_bgr, frame.seq, frame.t_capture_s

``seq`` counts frames from the start of the source (a video's frame index; loops keep counting), so a gap
means a dropped frame. ``t_capture_s`` is on ``clock`` (default ``time.monotonic``, the daemon's clock);
``clock=None`` gives footage time ``seq / fps`` (replay). A source that fails raises ``SourceError`` with a
one-line message naming the footage; cameras are reopened by the capture process (``inspector.capture``). A video
that stops decoding before the frame count its container declares (truncated, or corrupt in the middle) is such an
error, also with ``loop`` (it is never played round again): replay exits non-zero, the daemon's capture reports a
camera fault.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from inspector.config import SourceConfig
from inspector.errors import SourceError
from inspector.types import U8Array

log = logging.getLogger(__name__)
# OpenCV's own logging prints decoder complaints (e.g. "Could not find decoder") straight to stderr; every failure
# a user can cause is reported by this module as one clear line instead.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FOLDER_FPS = 10.0
DEFAULT_VIDEO_FPS = 25.0

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Frame:
    image_bgr: U8Array  # (H, W, 3) uint8
    seq: int
    t_capture_s: float


class Source(Protocol):
    name: str

    @property
    def fps(self) -> float | None: ...

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: object) -> None: ...


def _as_bgr(image: np.ndarray) -> U8Array:
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


class _Base:
    name = "source"

    def __init__(self, pace: str = "max", clock: Clock | None = time.monotonic, seq_start: int = 0) -> None:
        if pace not in ("max", "realtime"):
            raise ValueError(f"pace must be max or realtime, got {pace!r}")
        self.pace = pace
        self.clock = clock
        self.seq = seq_start  # next seq to hand out
        self._anchor_s: float | None = None  # monotonic time of seq 0 when paced

    @property
    def fps(self) -> float | None:
        return None

    def __enter__(self) -> _Base:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def set_anchor(self, anchor_s: float) -> None:
        """Pace against this monotonic time of frame 0 (a restarted capture process keeps the schedule)."""
        self._anchor_s = anchor_s

    @property
    def anchor_s(self) -> float | None:
        return self._anchor_s

    def _stamp(self, seq: int) -> float:
        """Wait for the frame's slot when paced; return its capture time.

        Paced on the monotonic clock, a frame's capture time is its slot (as a camera stamps the exposure), not the
        moment it was read: a reader that fell behind would otherwise date frames late, and every fire time
        computed from them would be late by as much."""
        fps = self.fps or DEFAULT_VIDEO_FPS
        if self.pace == "realtime":
            if self._anchor_s is None:
                self._anchor_s = time.monotonic() - seq / fps
            slot_s = self._anchor_s + seq / fps
            delay = slot_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if self.clock is time.monotonic:
                return slot_s
        if self.clock is None:
            return seq / fps
        return self.clock()

    def due_seq(self) -> int | None:
        """When paced and behind schedule (e.g. after a capture restart): the frame that is due now."""
        if self.pace != "realtime" or self._anchor_s is None:
            return None
        return int((time.monotonic() - self._anchor_s) * (self.fps or DEFAULT_VIDEO_FPS))


class _FileBase(_Base):
    """A video file or an image folder: its path, pacing and looping."""

    def __init__(
        self,
        path: Path | str,
        pace: str = "max",
        loop: bool = False,
        fps: float | None = None,
        clock: Clock | None = time.monotonic,
        seq_start: int = 0,
    ) -> None:
        super().__init__(pace, clock, seq_start)
        self.path = Path(path)
        self.name = str(self.path)
        self.loop = loop
        self._init_file(fps)

    def _init_file(self, fps: float | None) -> None:
        raise NotImplementedError


class VideoFileSource(_FileBase):
    """A video file, optionally paced at its frame rate and looped."""

    def _init_file(self, fps: float | None) -> None:
        self._fps_override = fps
        self._fps: float | None = fps
        self._cap: cv2.VideoCapture | None = None
        self._frame_count = 0
        self._seq_base = 0  # seq of frame 0 of the current pass through the file

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_count(self) -> int:
        return self._frame_count

    def _open_capture(self) -> cv2.VideoCapture:
        if not self.path.is_file():
            raise SourceError(f"{self.path}: video file not found; check source.uri")
        if self.path.stat().st_size == 0:
            raise SourceError(f"{self.path}: video file is empty (0 bytes); give a complete video file")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.path}: cannot decode this video (corrupt or unsupported codec); "
                "re-encode it, e.g. ffmpeg -i IN -c:v mjpeg OUT.avi"
            )
        return cap

    def open(self) -> None:
        cap = self._open_capture()
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if self._fps_override is None:
            self._fps = fps if 0 < fps <= 1000 else DEFAULT_VIDEO_FPS
        self._frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._cap = cap
        if self.seq > 0:  # resume (capture restart): seek to the frame due
            self._seek(self.seq)

    def _seek(self, seq: int) -> None:
        assert self._cap is not None
        n = self._frame_count
        if self.loop and n > 0:
            self._seq_base = seq - seq % n
            pos = seq % n
        else:
            self._seq_base = 0
            pos = seq
        # always seek, also to frame 0 of a new pass: the reader may stand anywhere in the file
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, pos)
        actual = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES))
        if actual > pos:  # could not seek back: start the file again
            self._cap.release()
            self._cap = self._open_capture()
            actual = 0
        for _ in range(max(0, pos - actual)):  # codecs that cannot seek: decode forward
            if not self._cap.grab():
                break

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.path}: read() before open()")
        due = self.due_seq()
        if due is not None and due > self.seq + 1:  # behind schedule: skip ahead, the gap shows as drops
            self.seq = due
            self._seek(due)
        ok, image = self._cap.read()
        if not ok or image is None:
            expected = self._frame_count
            index = self.seq - self._seq_base
            if expected and index < expected - 1:  # also with loop: a broken file is never played round again
                raise SourceError(
                    f"{self.path}: no frame can be decoded after frame {index} of the {expected} the file declares: "
                    "truncated or corrupt; copy or re-encode it again"
                )
            if not self.loop or index == 0:
                return None
            self._cap.release()
            self._cap = self._open_capture()
            self._seq_base = self.seq
            ok, image = self._cap.read()
            if not ok or image is None:
                return None
        seq = self.seq
        self.seq += 1
        return Frame(_as_bgr(image), seq, self._stamp(seq))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource(_FileBase):
    """Image files of a folder in sorted name order, one frame each (unreadable files are skipped, logged)."""

    def _init_file(self, fps: float | None) -> None:
        self._fps = fps or DEFAULT_FOLDER_FPS
        self._files: list[Path] = []

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_count(self) -> int:
        return len(self._files)

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"{self.path}: image folder not found; check source.uri")
        self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._files:
            raise SourceError(f"{self.path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")

    def read(self) -> Frame | None:
        n = len(self._files)
        if n == 0:
            raise SourceError(f"{self.path}: read() before open()")
        due = self.due_seq()
        if due is not None and due > self.seq + 1:
            self.seq = due
        for _ in range(n):
            if self.seq >= n and not self.loop:
                return None
            seq = self.seq
            self.seq += 1
            file = self._files[seq % n]
            image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
            if image is None:
                log.warning("%s: unreadable image skipped (frame %d)", file, seq)
                continue
            return Frame(_as_bgr(image), seq, self._stamp(seq))
        raise SourceError(f"{self.path}: none of the {n} image files can be read")

    def close(self) -> None:
        self._files = []


_GST_HINT = re.compile(r"!|\bappsink\b")


def camera_target(uri: str) -> tuple[int | str, int, str]:
    """(what VideoCapture opens, the backend, a description) for a camera uri."""
    s = uri.strip()
    if s.isdigit():
        return int(s), cv2.CAP_ANY, f"camera index {s}"
    if s.startswith("/dev/video"):
        return s, cv2.CAP_V4L2, f"V4L2 device {s}"
    if _GST_HINT.search(s):
        return s, cv2.CAP_GSTREAMER, "GStreamer pipeline"
    if re.match(r"^(rtsp|rtsps|http|https|rtmp|udp|tcp)://", s):
        return s, cv2.CAP_FFMPEG, f"stream {s.split('@')[-1]}"
    return s, cv2.CAP_ANY, f"camera {s}"


class CameraSource(_Base):
    """A live camera or stream. Frames are stamped on arrival; the camera sets the pace."""

    def __init__(
        self, uri: str, fps: float | None = None, clock: Clock | None = time.monotonic, seq_start: int = 0
    ) -> None:
        super().__init__("max", clock, seq_start)
        self.uri = uri
        self.target, self.backend, self.name = camera_target(uri)
        self._fps_override = fps
        self._fps: float | None = fps
        self._cap: cv2.VideoCapture | None = None

    @property
    def fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        if self.backend == cv2.CAP_GSTREAMER and not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()):
            raise SourceError(
                f"{self.name}: this OpenCV build has no GStreamer support; install an OpenCV "
                "built with GStreamer (e.g. the distribution's python3-opencv) or use a V4L2/RTSP uri"
            )
        cap = cv2.VideoCapture(self.target, self.backend)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: cannot open the camera; check source.uri, cabling and permissions")
        if self._fps_override is not None:
            cap.set(cv2.CAP_PROP_FPS, self._fps_override)
        else:
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self._fps = fps if 0 < fps <= 1000 else None
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.name}: read() before open()")
        ok, image = self._cap.read()
        if not ok or image is None:
            raise SourceError(f"{self.name}: the camera stopped delivering frames")
        seq = self.seq
        self.seq += 1
        t = self.clock() if self.clock is not None else seq / (self._fps or DEFAULT_VIDEO_FPS)
        return Frame(_as_bgr(image), seq, t)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def open_source(
    cfg: SourceConfig, clock: Clock | None = time.monotonic, seq_start: int = 0, pace: str | None = None
) -> _Base:
    """The (unopened) source a config describes; use it as a context manager."""
    p = pace or cfg.pace
    if cfg.kind == "file":
        assert cfg.uri is not None
        return VideoFileSource(cfg.uri, p, cfg.loop, cfg.fps, clock, seq_start)
    if cfg.kind == "folder":
        assert cfg.uri is not None
        return ImageFolderSource(cfg.uri, p, cfg.loop, cfg.fps, clock, seq_start)
    if cfg.kind == "camera":
        assert cfg.uri is not None
        return CameraSource(cfg.uri, cfg.fps, clock, seq_start)
    raise SourceError(
        f"source kind {cfg.kind!r} has no frames of its own: render the synthetic footage to a "
        "file first (inspector run does this) and use kind: file"
    )


def probe(cfg: SourceConfig) -> tuple[tuple[int, int], float | None]:
    """Open the source briefly: (frame_wh, fps) of its first frame, or SourceError with a clear message."""
    with open_source(cfg, pace="max") as src:
        frame = src.read()
        if frame is None:
            raise SourceError(f"{src.name}: no frames (empty or unreadable footage)")
        h, w = frame.image_bgr.shape[:2]
        return (w, h), src.fps
