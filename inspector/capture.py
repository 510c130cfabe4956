"""Capture process: source → frame ring, never blocked by the inspection loop.

    ring = FrameRing.create(instance, config.ring.slots, frame_wh)      # frame_wh from sources.probe()
    with ring, CaptureProcess(config.source, ring) as capture:
        while True:
            ref = capture.get(timeout_s=0.2)       # FrameRef(slot, seq, t_capture_s) or None
            if ref is None:
                if capture.eof: break              # end of footage (file/folder without loop)
                continue                           # nothing yet (supervisor checks liveness meanwhile)
            frame_bgr = ring.frame(ref)            # the consumer's copy, valid until the next get()

The child (``multiprocessing`` *spawn*: no inherited locks or threads) reads the source and writes frames into
ring slots; only (slot, seq, t_capture_s) exist on the consumer side, and a one-byte pipe write wakes it.
When every slot is full the oldest waiting frame gives way to the new one, counted as dropped (superseded): the
camera is never blocked and inspection always gets the freshest frames. A camera that fails
is reopened with exponential back-off (``source.reconnect_initial_s`` … ``reconnect_max_s``), each attempt
counted; a file or folder that fails (vanished, corrupt) is a fatal ``SourceError`` raised by ``get()`` with
a one-line message. Counters live in the ring header (see ``inspector.ring``), so they survive a restart of
this process by the supervisor; a paced file resumes at the frame due now and counts the gap as dropped.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from inspector.config import SourceConfig
from inspector.errors import SourceError
from inspector.ring import (
    H_ALIVE_NS,
    H_ANCHOR_NS,
    H_CAMERA_UP,
    H_DROPPED,
    H_EOF,
    H_FPS_MILLI,
    H_NEXT_SEQ,
    H_PRODUCER_PID,
    H_RECONNECTS,
    FrameRing,
    FrameTooLarge,
)
from inspector.sources import open_source
from inspector.types import FrameRef

log = logging.getLogger(__name__)

EXIT_EOF = 0
EXIT_FATAL = 2


# ------------------------------------------------------------------------------------------ child process
class _Stop:
    flag = False


def _sleep_alive(ring: FrameRing, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not _Stop.flag and (left := end - time.monotonic()) > 0:
        ring.touch()
        time.sleep(min(left, 0.1))


def _wake(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        os.write(fd, b"\0")


def capture_main(cfg: SourceConfig, ring_name: str, wake: Connection, footage_time: bool, log_level: int) -> int:
    """Entry point of the capture process. Returns its exit status (0 at end of footage)."""
    logging.basicConfig(
        level=log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s capture[%(process)d] %(name)s: %(message)s",
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop

    def _on_term(signum: int, frame: object) -> None:
        _Stop.flag = True

    signal.signal(signal.SIGTERM, _on_term)
    wake_fd = wake.fileno()
    os.set_blocking(wake_fd, False)
    ring = FrameRing.attach(ring_name)
    try:
        return _capture_loop(cfg, ring, wake_fd, footage_time)
    finally:
        ring.close()


def _capture_loop(cfg: SourceConfig, ring: FrameRing, wake_fd: int, footage_time: bool) -> int:
    ring.set(H_PRODUCER_PID, os.getpid())
    ring.touch()
    fatal_kinds = cfg.kind in ("file", "folder")
    backoff_s = cfg.reconnect_initial_s
    clock = None if footage_time else time.monotonic
    while not _Stop.flag:
        next_seq = ring.get(H_NEXT_SEQ)
        try:
            with open_source(cfg, clock=clock, seq_start=next_seq) as src:
                anchor_ns = ring.get(H_ANCHOR_NS)
                if anchor_ns:
                    src.set_anchor(anchor_ns / 1e9)
                if src.fps:
                    ring.set(H_FPS_MILLI, int(src.fps * 1000))
                while not _Stop.flag:
                    expected = ring.get(H_NEXT_SEQ)
                    frame = src.read()
                    if frame is None:
                        log.info("%s: end of footage after frame %d", src.name, expected - 1)
                        ring.set(H_EOF, 1)
                        _wake(wake_fd)
                        return EXIT_EOF
                    if not anchor_ns and src.anchor_s is not None:
                        anchor_ns = int(src.anchor_s * 1e9)
                        ring.set(H_ANCHOR_NS, anchor_ns)
                    if frame.seq > expected:  # skipped ahead (behind the footage's pace, or after a restart)
                        ring.add(H_DROPPED, frame.seq - expected)
                    ring.set(H_CAMERA_UP, 1)
                    backoff_s = cfg.reconnect_initial_s
                    if ring.try_write(frame.image_bgr, frame.seq, frame.t_capture_s):
                        _wake(wake_fd)
        except FrameTooLarge as exc:
            ring.set_error(str(exc))
            _wake(wake_fd)
            return EXIT_FATAL
        except SourceError as exc:
            ring.set(H_CAMERA_UP, 0)
            if fatal_kinds:
                ring.set_error(str(exc))
                _wake(wake_fd)
                return EXIT_FATAL
            ring.add(H_RECONNECTS)
            log.warning("%s; reconnecting in %.1f s", exc, backoff_s)
            _sleep_alive(ring, backoff_s)
            backoff_s = min(backoff_s * 2, cfg.reconnect_max_s)
    return EXIT_EOF


# ------------------------------------------------------------------------------------------ main process
class CaptureProcess:
    """Owns the capture child process; the consumer side of the ring's wake-up pipe. A context manager."""

    def __init__(
        self,
        cfg: SourceConfig,
        ring: FrameRing,
        footage_time: bool = False,
        start_method: str = "spawn",
    ) -> None:
        self.cfg = cfg
        self.ring = ring
        self.footage_time = footage_time
        self._ctx: Any = mp.get_context(start_method)
        self._proc: Any = None
        self._wake_r: Connection | None = None
        self._wake_w: Connection | None = None
        self.starts = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._wake_r is None:
            self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
            os.set_blocking(self._wake_r.fileno(), False)
        self.ring.set(H_ALIVE_NS, time.monotonic_ns())  # the child gets a fresh stall allowance
        self.ring.set(H_PRODUCER_PID, 0)
        self._proc = self._ctx.Process(
            target=capture_main,
            args=(self.cfg, self.ring.name, self._wake_w, self.footage_time, logging.getLogger().level),
            name="inspector-capture",
            daemon=True,
        )
        self._proc.start()
        self.starts += 1
        log.info("capture process pid %d started (%s)", self._proc.pid, self.cfg.uri)

    def stop(self, timeout_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after timeout_s."""
        p = self._proc
        if p is None:
            return
        if p.is_alive():
            p.terminate()
            p.join(timeout_s)
            if p.is_alive():
                p.kill()
                p.join(2.0)
        self._proc = None

    def restart(self) -> None:
        """Kill the child (whatever state it is in) and start a fresh one on the same ring."""
        p = self._proc
        if p is not None and p.is_alive():
            p.kill()
            p.join(5.0)
        self._proc = None
        self.start()

    def close(self) -> None:
        self.stop()
        for conn in (self._wake_r, self._wake_w):
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.close()
        self._wake_r = self._wake_w = None

    def __enter__(self) -> CaptureProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ health
    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def exitcode(self) -> int | None:
        return None if self._proc is None else self._proc.exitcode

    @property
    def child_started(self) -> bool:
        """The child has attached to the ring (interpreter start and imports are over)."""
        return self._proc is not None and self.ring.get(H_PRODUCER_PID) == self._proc.pid

    def seconds_since_alive(self) -> float:
        """Seconds since the child last showed progress (frame read or back-off tick)."""
        return max(0.0, (time.monotonic_ns() - self.ring.get(H_ALIVE_NS)) / 1e9)

    # ------------------------------------------------------------------ frames
    @property
    def eof(self) -> bool:
        """End of footage reached and every frame taken."""
        return self.ring.eof and self.ring.depth == 0

    def get(self, timeout_s: float = 0.2) -> FrameRef | None:
        """The next frame, or None after timeout_s (or at end of footage); SourceError if the source failed."""
        deadline = time.monotonic() + timeout_s
        while True:
            ref = self.ring.try_get()
            if ref is not None:
                return ref
            error = self.ring.error
            if error is not None:
                raise SourceError(error)
            if self.ring.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            assert self._wake_r is not None
            if self._wake_r.poll(min(left, 0.05)):
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r.fileno(), 4096)
