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


def test_write_read_in_order() -> None:
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


def test_a_full_ring_drops_the_oldest_waiting_frame_never_the_newest() -> None:
    with FrameRing.create(instance(), 3, (32, 24)) as ring:
        ring.try_write(img(1), 0, 0.0)
        taken = ring.try_get()
        assert taken is not None
        assert all(ring.try_write(img(10 + i), i + 1, 0.1 * (i + 1)) for i in range(5))  # the producer never waits
        assert int(ring.frame(taken)[0, 0, 0]) == 1  # the frame taken is intact (a private copy)
        assert ring.depth == 3
        assert ring.counts() == (6, 2, 0) and ring.superseded == 2  # frames 1 and 2 gave way to 4 and 5
        got = []
        while (ref := ring.try_get()) is not None:
            got.append((ref.seq, int(ring.frame(ref)[0, 0, 0])))
        assert got == [(3, 12), (4, 13), (5, 14)]  # the newest three, oldest first, each with its own pixels


def test_frames_taken_under_a_fast_producer_are_whole_fresh_and_accounted(tmp_path: Path) -> None:
    """A producer process writes 3000 frames as fast as it can into 4 slots while this process takes them: every
    frame taken is whole (its pixels all carry its own seq), sequence numbers only grow, and every frame written
    was either taken or counted superseded."""
    name = instance()
    n = 3000
    with FrameRing.create(name, 4, (640, 480)) as ring:
        code = (
            "import numpy as np\n"
            "from inspector.ring import FrameRing\n"
            f"r = FrameRing.attach({ring.name!r})\n"
            "from multiprocessing import resource_tracker\n"
            f"resource_tracker.unregister('/' + {ring.name!r}, 'shared_memory')  # the creator unlinks it\n"
            f"for i in range({n}):\n"
            "    r.try_write(np.full((480, 640, 3), i % 251, np.uint8), i, i / 1000)\n"
            "r.close()\n"
        )
        child = subprocess.Popen([sys.executable, "-c", code])
        seqs: list[int] = []
        while True:
            done = child.poll() is not None  # before the look: a frame written before the exit is still seen
            ref = ring.try_get()
            if ref is None:
                if done:
                    break
                continue
            frame = ring.frame(ref)
            assert int(frame.min()) == int(frame.max()) == ref.seq % 251, ref.seq
            seqs.append(ref.seq)
        assert child.wait(timeout=60) == 0
        assert seqs == sorted(set(seqs)) and seqs[-1] == n - 1  # the newest frame always arrives
        captured, dropped, _ = ring.counts()
        assert captured == n and dropped == ring.superseded
        assert len(seqs) + ring.superseded >= n  # nothing lost uncounted (a frame raced may count as both)


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
