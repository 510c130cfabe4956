"""Frame ring in shared memory: the capture process writes frames into slots, the inspection loop reads them.

One POSIX shared-memory segment ``/dev/shm/inspector-<instance>-ring`` holds

- a header of int64 counters (write/read indices, captured / dropped / reconnect totals, last seq, liveness
  stamps, end-of-footage and fatal-error flags, the pacing anchor) — the capture process counts here, the
  main process exports them (``Metrics.sync_capture``), and they survive a capture-process restart;
- a slot table (seq, capture time, frame size per slot) and ``slots`` frame buffers.

The ring is also the queue: single producer, single consumer, entries in write order, entry ``i`` in slot
``i % slots``. The producer never waits: when all slots are full (the consumer is behind) the new frame is
dropped and counted. The consumer holds the slot of the frame it was last given until its next ``try_get``
(or ``release``), so ``frame(ref)`` is a zero-copy view valid until then — copy what you keep. Only indices
live in shared memory, no locks, so a SIGKILLed capture process cannot leave the ring locked or corrupt.

Lifecycle: the main process ``FrameRing.create(instance, slots, frame_wh)`` (removes a stale segment left by
a crashed run of the same instance; refuses when that instance is still running or /dev/shm is too small),
the capture process ``FrameRing.attach(name)``; ``close()`` detaches, and the creator unlinks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from inspector.errors import InspectorError
from inspector.types import FrameRef, U8Array

log = logging.getLogger(__name__)

MAGIC = 0x49_4E_53_50_52_49_4E_47  # "INSPRING"
SHM_DIR = Path("/dev/shm")

# header fields (int64 each)
(
    H_MAGIC,
    H_SLOTS,
    H_SLOT_BYTES,
    H_OWNER_PID,
    H_WRITE,
    H_READ,
    H_CAPTURED,
    H_DROPPED,
    H_RECONNECTS,
    H_LAST_SEQ,
    H_ALIVE_NS,
    H_LAST_FRAME_NS,
    H_EOF,
    H_ERROR,
    H_ANCHOR_NS,
    H_CAMERA_UP,
    H_PRODUCER_PID,
    H_FPS_MILLI,
    H_NEXT_SEQ,
) = range(19)
HEADER_FIELDS = 32
_HEADER_BYTES = HEADER_FIELDS * 8
_ERROR_BYTES = 512
_PAGE = 4096


class RingError(InspectorError):
    """The frame ring cannot be created (shared memory too small, instance already running)."""


class FrameTooLarge(InspectorError):
    """A frame larger than the ring's slots."""


def segment_name(instance: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in instance) or "default"
    return f"inspector-{safe}-ring"


def _layout(slots: int, slot_bytes: int) -> tuple[int, int, int, int, int]:
    """Offsets: (table_seq, table_t, table_hw, data, total)."""
    off_seq = _HEADER_BYTES + _ERROR_BYTES
    off_t = off_seq + 8 * slots
    off_hw = off_t + 8 * slots
    off_data = -(-(off_hw + 8 * slots) // _PAGE) * _PAGE
    return off_seq, off_t, off_hw, off_data, off_data + slots * slot_bytes


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shm_free_bytes(directory: Path = SHM_DIR) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class FrameRing:
    """See module docstring. Use ``create``/``attach``; both are context managers."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool) -> None:
        self._shm = shm
        self.owner = owner
        buf = shm.buf
        assert buf is not None
        self.header = np.ndarray((HEADER_FIELDS,), np.int64, buffer=buf, offset=0)
        if int(self.header[H_MAGIC]) != MAGIC:
            raise RingError(f"shared memory {shm.name} is not a frame ring")
        self.slots = int(self.header[H_SLOTS])
        self.slot_bytes = int(self.header[H_SLOT_BYTES])
        off_seq, off_t, off_hw, off_data, _ = _layout(self.slots, self.slot_bytes)
        self._error = np.ndarray((_ERROR_BYTES,), np.uint8, buffer=buf, offset=_HEADER_BYTES)
        self._seqs = np.ndarray((self.slots,), np.int64, buffer=buf, offset=off_seq)
        self._times = np.ndarray((self.slots,), np.float64, buffer=buf, offset=off_t)
        self._hw = np.ndarray((self.slots, 2), np.int32, buffer=buf, offset=off_hw)
        self._data = np.ndarray((self.slots, self.slot_bytes), np.uint8, buffer=buf, offset=off_data)
        self._holding = False
        self.name = shm.name

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, instance: str, slots: int, frame_wh: tuple[int, int], shm_dir: Path = SHM_DIR) -> FrameRing:
        """Create the ring of one daemon instance for frames up to frame_wh (BGR uint8)."""
        if slots < 2:
            raise RingError("ring.slots must be at least 2")
        w, h = frame_wh
        slot_bytes = -(-(w * h * 3) // 64) * 64
        total = _layout(slots, slot_bytes)[4]
        name = segment_name(instance)
        cls._remove_stale(name, instance)
        free = shm_free_bytes(shm_dir)
        if free is not None and free < total + (16 << 20):
            raise RingError(
                f"{shm_dir} has {free / 2**20:.0f} MiB free, the frame ring needs {total / 2**20:.0f} MiB "
                f"({slots} slots of {w}x{h}); enlarge it (docker --shm-size, or mount -o remount,size=1G "
                f"{shm_dir}) or lower ring.slots"
            )
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=total)
        except OSError as exc:
            raise RingError(f"cannot create shared memory {name} ({exc.strerror}); check {shm_dir}") from None
        assert shm.buf is not None
        header = np.ndarray((HEADER_FIELDS,), np.int64, buffer=shm.buf, offset=0)
        header[:] = 0
        header[H_SLOTS] = slots
        header[H_SLOT_BYTES] = slot_bytes
        header[H_OWNER_PID] = os.getpid()
        header[H_LAST_SEQ] = -1
        header[H_MAGIC] = MAGIC
        del header
        return cls(shm, owner=True)

    @staticmethod
    def _remove_stale(name: str, instance: str) -> None:
        try:
            old = shared_memory.SharedMemory(name=name, create=False)
        except FileNotFoundError:
            return
        pid = 0
        with contextlib.suppress(Exception):
            if old.size >= _HEADER_BYTES and old.buf is not None:
                hdr = np.ndarray((HEADER_FIELDS,), np.int64, buffer=old.buf, offset=0)
                if int(hdr[H_MAGIC]) == MAGIC:
                    pid = int(hdr[H_OWNER_PID])
                del hdr
        if pid and pid != os.getpid() and _pid_alive(pid):
            old.close()
            raise RingError(
                f"inspector instance {instance!r} is already running (pid {pid}, /dev/shm/{name}); "
                "stop it or give this daemon another instance name"
            )
        log.warning("removing stale frame ring /dev/shm/%s left by a crashed run (pid %d)", name, pid)
        old.close()
        with contextlib.suppress(FileNotFoundError):
            old.unlink()

    @classmethod
    def attach(cls, name: str) -> FrameRing:
        try:
            shm = shared_memory.SharedMemory(name=name, create=False)
        except FileNotFoundError:
            raise RingError(f"frame ring /dev/shm/{name} does not exist (the daemon stopped?)") from None
        return cls(shm, owner=False)

    def close(self) -> None:
        """Detach; the creator also removes the segment."""
        if self._shm is None:
            return
        for attr in ("header", "_error", "_seqs", "_times", "_hw", "_data"):
            setattr(self, attr, None)
        shm, self._shm = self._shm, None  # type: ignore[assignment]
        shm.close()
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()

    def __enter__(self) -> FrameRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ counters
    def get(self, field: int) -> int:
        return int(self.header[field])

    def set(self, field: int, value: int) -> None:
        self.header[field] = value

    def add(self, field: int, n: int = 1) -> None:
        self.header[field] += n

    def counts(self) -> tuple[int, int, int]:
        """(captured, dropped, reconnects) totals."""
        h = self.header
        return int(h[H_CAPTURED]), int(h[H_DROPPED]), int(h[H_RECONNECTS])

    def set_error(self, message: str) -> None:
        data = message.encode()[: _ERROR_BYTES - 1]
        self._error[:] = 0
        self._error[: len(data)] = np.frombuffer(data, np.uint8)
        self.header[H_ERROR] = 1

    @property
    def error(self) -> str | None:
        if not int(self.header[H_ERROR]):
            return None
        return bytes(self._error).split(b"\0", 1)[0].decode(errors="replace")

    def touch(self) -> None:
        """Producer liveness stamp (read by the supervisor's stall check)."""
        self.header[H_ALIVE_NS] = time.monotonic_ns()

    # ------------------------------------------------------------------ producer
    def try_write(self, image_bgr: U8Array, seq: int, t_capture_s: float) -> bool:
        """Copy a frame into the next slot; False (and counted as dropped) when the consumer is behind."""
        h = self.header
        now_ns = time.monotonic_ns()
        h[H_CAPTURED] += 1
        h[H_LAST_SEQ] = seq
        h[H_NEXT_SEQ] = seq + 1
        h[H_LAST_FRAME_NS] = now_ns
        h[H_ALIVE_NS] = now_ns
        nbytes = image_bgr.nbytes
        if nbytes > self.slot_bytes:
            hh, ww = image_bgr.shape[:2]
            raise FrameTooLarge(
                f"frame {seq} is {ww}x{hh}, larger than the ring's slots ({self.slot_bytes} bytes); "
                "the source changed resolution: restart the daemon"
            )
        w, r = int(h[H_WRITE]), int(h[H_READ])
        if w - r >= self.slots:
            h[H_DROPPED] += 1
            return False
        slot = w % self.slots
        self._data[slot, :nbytes] = image_bgr.reshape(-1)
        self._seqs[slot] = seq
        self._times[slot] = t_capture_s
        self._hw[slot] = image_bgr.shape[:2]
        h[H_WRITE] = w + 1  # publish last
        return True

    # ------------------------------------------------------------------ consumer
    def try_get(self) -> FrameRef | None:
        """Release the frame held, and hold the next one if any."""
        self.release()
        h = self.header
        r = int(h[H_READ])
        if r >= int(h[H_WRITE]):
            return None
        slot = r % self.slots
        self._holding = True
        return FrameRef(slot=slot, seq=int(self._seqs[slot]), t_capture_s=float(self._times[slot]))

    def release(self) -> None:
        if self._holding:
            self.header[H_READ] += 1
            self._holding = False

    def frame(self, ref: FrameRef) -> U8Array:
        """Zero-copy (H, W, 3) view of the held frame; valid until the next try_get/release."""
        hh, ww = (int(v) for v in self._hw[ref.slot])
        return self._data[ref.slot, : hh * ww * 3].reshape(hh, ww, 3)

    @property
    def depth(self) -> int:
        """Frames written and not yet taken by the consumer."""
        h = self.header
        return int(h[H_WRITE]) - int(h[H_READ]) - (1 if self._holding else 0)

    @property
    def eof(self) -> bool:
        return bool(int(self.header[H_EOF]))
