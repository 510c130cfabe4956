"""Frame ring: write/read through shared memory, drop-and-count when full, stale segments, /dev/shm checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from inspector.ring import H_OWNER_PID, FrameRing, FrameTooLarge, RingError, segment_name


def instance() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def img(v: int, wh: tuple[int, int] = (32, 24)) -> np.ndarray:
    return np.full((wh[1], wh[0], 3), v, np.uint8)


def test_write_read_in_order_and_zero_copy_view() -> None:
    with FrameRing.create(instance(), 4, (32, 24)) as ring:
        assert ring.try_write(img(7), 0, 1.5)
        assert ring.try_write(img(8, (16, 8)), 1, 1.6)  # smaller frames fit
        assert ring.depth == 2
        ref = ring.try_get()
        assert ref is not None and (ref.seq, ref.t_capture_s) == (0, 1.5)
        assert ring.frame(ref).shape == (24, 32, 3) and int(ring.frame(ref)[0, 0, 0]) == 7
        ref = ring.try_get()
        assert ref is not None and ref.seq == 1 and ring.frame(ref).shape == (8, 16, 3)
        assert ring.try_get() is None and ring.depth == 0


def test_full_ring_drops_and_counts_never_overwrites_held_frame() -> None:
    with FrameRing.create(instance(), 3, (32, 24)) as ring:
        ring.try_write(img(1), 0, 0.0)
        held = ring.try_get()
        assert held is not None
        results = [ring.try_write(img(10 + i), i + 1, 0.0) for i in range(5)]
        assert results == [True, True, False, False, False]  # 3 slots: 1 held + 2 queued
        assert int(ring.frame(held)[0, 0, 0]) == 1  # the held frame is intact
        assert ring.counts() == (6, 3, 0)
        seqs = []
        while (ref := ring.try_get()) is not None:
            seqs.append(ref.seq)
        assert seqs == [1, 2]


def test_frame_too_large_is_refused() -> None:
    with FrameRing.create(instance(), 2, (8, 8)) as ring, pytest.raises(FrameTooLarge, match="restart"):
        ring.try_write(img(1, (16, 16)), 0, 0.0)


def test_attach_sees_the_same_memory_and_error_message() -> None:
    with FrameRing.create(instance(), 2, (8, 8)) as ring:
        other = FrameRing.attach(ring.name)
        other.try_write(img(3, (8, 8)), 5, 2.0)
        other.set_error("camera X: gone")
        other.close()
        ref = ring.try_get()
        assert ref is not None and ref.seq == 5
        assert ring.error == "camera X: gone"


def test_stale_segment_from_a_killed_run_is_removed() -> None:
    """systemd kills the whole cgroup (resource tracker included): the segment stays behind."""
    name = instance()
    code = (
        "import sys, time\n"
        "from inspector.ring import FrameRing\n"
        f"r = FrameRing.create({name!r}, 2, (8, 8))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(10)
    assert (Path("/dev/shm") / segment_name(name)).exists()
    with FrameRing.create(name, 2, (8, 8)) as ring:
        assert ring.get(H_OWNER_PID) == os.getpid()
    assert not (Path("/dev/shm") / segment_name(name)).exists()


def test_stale_segment_of_a_dead_pid_is_removed() -> None:
    name = instance()
    ring = FrameRing.create(name, 2, (8, 8))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ring.set(H_OWNER_PID, int(dead.stdout))
    ring.owner = False  # simulate the crash: the segment stays
    ring.close()
    assert (Path("/dev/shm") / segment_name(name)).exists()
    with FrameRing.create(name, 2, (8, 8)) as again:
        assert again.depth == 0


def test_running_instance_is_refused() -> None:
    name = instance()
    with FrameRing.create(name, 2, (8, 8)) as ring:
        ring.set(H_OWNER_PID, os.getppid())  # an alive process other than us
        with pytest.raises(RingError, match="already running"):
            FrameRing.create(name, 2, (8, 8))


def test_too_small_shm_is_a_clear_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(RingError, match=r"MiB free.*ring.slots") as info:
        FrameRing.create(instance(), 1000, (20000, 20000), shm_dir=Path("/dev/shm"))
    assert "\n" not in str(info.value)
