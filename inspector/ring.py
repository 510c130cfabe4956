"""Frame ring in shared memory: the capture process writes frames into slots, the inspection loop reads them.

One POSIX shared-memory segment ``/dev/shm/inspector-<instance>-ring`` holds

- a header of int64 counters (write/read indices, captured / dropped / reconnect totals, last seq, liveness
  stamps, end-of-footage and fatal-error flags, the pacing anchor) — the capture process counts here, the
  main process exports them (``Metrics.sync_capture``), and they survive a capture-process restart;
- a slot table (seq, capture time, frame size per slot) and ``slots`` frame buffers.

The ring is also the queue: single producer, single consumer, entries in write order, entry ``i`` in slot
``i % slots``. Freshest first: the producer never waits and never drops the newest frame — when all slots hold
frames the consumer has not taken yet (it is behind), the new frame overwrites the OLDEST waiting one, which is
counted as dropped with reason ``superseded`` (``H_SUPERSEDED``, also in the ``H_DROPPED`` total). So after a
stall or under overload the consumer is given the newest frames, never a queue of stale ones.

The consumer copies a frame out of its slot when it takes it (``try_get``; one memcpy, about a millisecond for
1280x720) and checks afterwards that the producer did not start overwriting that slot meanwhile (a seqlock: the
producer marks the slot's entry index invalid before writing the pixels and publishes it after; x86-64 and the
interpreter keep stores and loads in program order). A frame overwritten while it was copied is skipped as
superseded. ``frame(ref)`` is a view of that private copy, valid until the next ``try_get`` — copy what you keep.
Only indices live in shared memory, no locks, so a SIGKILLed capture process cannot leave the ring locked or
corrupt.

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
    H_SUPERSEDED,
) = range(20)
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


def _layout(slots: int, slot_bytes: int) -> tuple[int, int, int, int, int, int]:
    """Offsets: (table_seq, table_t, table_hw, table_entry, data, total)."""
    off_seq = _HEADER_BYTES + _ERROR_BYTES
    off_t = off_seq + 8 * slots
    off_hw = off_t + 8 * slots
    off_entry = off_hw + 8 * slots
    off_data = -(-(off_entry + 8 * slots) // _PAGE) * _PAGE
    return off_seq, off_t, off_hw, off_entry, off_data, off_data + slots * slot_bytes


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
        off_seq, off_t, off_hw, off_entry, off_data, _ = _layout(self.slots, self.slot_bytes)
        self._error = np.ndarray((_ERROR_BYTES,), np.uint8, buffer=buf, offset=_HEADER_BYTES)
        self._seqs = np.ndarray((self.slots,), np.int64, buffer=buf, offset=off_seq)
        self._times = np.ndarray((self.slots,), np.float64, buffer=buf, offset=off_t)
        self._hw = np.ndarray((self.slots, 2), np.int32, buffer=buf, offset=off_hw)
        self._entry = np.ndarray((self.slots,), np.int64, buffer=buf, offset=off_entry)  # entry index in the slot
        self._data = np.ndarray((self.slots, self.slot_bytes), np.uint8, buffer=buf, offset=off_data)
        self._copy: np.ndarray | None = None  # consumer: the frame taken last, copied out of its slot
        self._copy_hw = (0, 0)
        self.name = shm.name

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, instance: str, slots: int, frame_wh: tuple[int, int], shm_dir: Path = SHM_DIR) -> FrameRing:
        """Create the ring of one daemon instance for frames up to frame_wh (BGR uint8)."""
        if slots < 2:
            raise RingError("ring.slots must be at least 2")
        w, h = frame_wh
        slot_bytes = -(-(w * h * 3) // 64) * 64
        total = _layout(slots, slot_bytes)[5]
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
        off_entry = _layout(slots, slot_bytes)[3]
        np.ndarray((slots,), np.int64, buffer=shm.buf, offset=off_entry)[:] = -1
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
        for attr in ("header", "_error", "_seqs", "_times", "_hw", "_entry", "_data", "_copy"):
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
        """(captured, dropped, reconnects) totals; dropped includes the superseded (`superseded`)."""
        h = self.header
        return int(h[H_CAPTURED]), int(h[H_DROPPED]), int(h[H_RECONNECTS])

    @property
    def superseded(self) -> int:
        """Frames overwritten by a newer one before the consumer took them (freshest first)."""
        return int(self.header[H_SUPERSEDED])

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
        """Copy a frame into the next slot. When every slot holds a frame not taken yet, the oldest of them is
        overwritten (counted as dropped, reason superseded): the newest frame is always kept. Returns True."""
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
        if w - r >= self.slots:  # the consumer is behind: entry w - slots, the oldest waiting, gives way
            h[H_DROPPED] += 1
            h[H_SUPERSEDED] += 1
        slot = w % self.slots
        self._entry[slot] = -1  # the seqlock: a consumer copying this slot now sees it changed
        self._data[slot, :nbytes] = image_bgr.reshape(-1)
        self._seqs[slot] = seq
        self._times[slot] = t_capture_s
        self._hw[slot] = image_bgr.shape[:2]
        self._entry[slot] = w
        h[H_WRITE] = w + 1  # publish last
        return True

    # ------------------------------------------------------------------ consumer
    def try_get(self) -> FrameRef | None:
        """The oldest frame still in the ring (copied out: see `frame`), or None when none is waiting."""
        h = self.header
        while True:
            w = int(h[H_WRITE])
            r = max(int(h[H_READ]), w - self.slots)  # entries below w - slots were overwritten (superseded)
            if r >= w:
                h[H_READ] = max(int(h[H_READ]), w)
                return None
            slot = r % self.slots
            if int(self._entry[slot]) != r:  # being overwritten by a newer frame: skip it
                h[H_READ] = r + 1
                continue
            hh, ww = (int(v) for v in self._hw[slot])
            seq, t_s = int(self._seqs[slot]), float(self._times[slot])
            if self._copy is None:
                self._copy = np.empty(self.slot_bytes, np.uint8)
            n = hh * ww * 3
            self._copy[:n] = self._data[slot, :n]
            torn = int(self._entry[slot]) != r  # overwritten while we copied (the producer counted it superseded)
            h[H_READ] = r + 1  # after the check: a frame skipped as torn is always one the producer counted
            if torn:
                continue
            self._copy_hw = (hh, ww)
            return FrameRef(slot=slot, seq=seq, t_capture_s=t_s)

    def frame(self, ref: FrameRef) -> U8Array:
        """(H, W, 3) view of the frame taken last (a private copy); valid until the next try_get."""
        hh, ww = self._copy_hw
        assert self._copy is not None, "frame() before try_get()"
        return self._copy[: hh * ww * 3].reshape(hh, ww, 3)

    @property
    def depth(self) -> int:
        """Frames written and not yet taken by the consumer (at most `slots`)."""
        h = self.header
        return max(0, min(self.slots, int(h[H_WRITE]) - int(h[H_READ])))

    @property
    def eof(self) -> bool:
        return bool(int(self.header[H_EOF]))
