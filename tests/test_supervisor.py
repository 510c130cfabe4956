"""Supervisor: sd_notify on a real unix datagram socket, watchdog only on progress, capture restarts, signals."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspector.capture import CaptureProcess
from inspector.config import SourceConfig, SupervisorConfig
from inspector.errors import ConfigError
from inspector.metrics import Metrics
from inspector.ring import FrameRing
from inspector.supervisor import STARTUP_GRACE_S, GaveUp, SdNotify, Supervisor


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5.0)
    return out


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def write_video(path: Path, n: int, fps: float) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (32, 24))
    for i in range(n):
        out.write(np.full((24, 32, 3), i % 250, np.uint8))
    out.release()
    return path


def test_sd_notify_lines(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    n = SdNotify(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.enabled and n.ping_interval_s() == 2.0
    assert n.ready("warm") and n.watchdog() and n.status("3.0 fps") and n.stopping()
    assert received(sock) == ["READY=1\nSTATUS=warm", "WATCHDOG=1", "STATUS=3.0 fps", "STOPPING=1"]
    assert not SdNotify(env={}).ready()  # not under systemd: silently nothing
    assert SdNotify(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_usec == 0


def test_ready_then_watchdog_only_while_frames_and_inferences_move(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    clock = FakeClock()
    m = Metrics(CollectorRegistry())
    sup = Supervisor(SupervisorConfig(), metrics=m, notify=SdNotify(env={"NOTIFY_SOCKET": path}), clock=clock)
    sup.progress(frames=0, inferences=0, ready=True)  # no frame yet: not ready
    sup.progress(frames=1, inferences=1, ready=False)  # model not warm yet
    assert not any(x.startswith("READY=1") for x in received(sock))
    sup.progress(frames=2, inferences=1, queue_depth=3, provider="CPUExecutionProvider")
    msgs = received(sock)
    assert msgs[0].startswith("READY=1\nSTATUS=") and "queue 3" in msgs[0] and "CPUExecutionProvider" in msgs[0]
    pings = []
    frames = inferences = 2
    for step in range(12):
        clock.t += 1.5
        frames += 1
        if step < 4 or step >= 8:
            inferences += 1  # steps 4..7: inference stalled while frames still arrive
        sup.progress(frames=frames, inferences=inferences)
        pings.append(sum(x == "WATCHDOG=1" for x in received(sock)))
    assert pings == [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]
    clock.t += 1.5
    sup.progress(frames=frames, inferences=inferences + 5)  # frames stalled: no ping either
    assert "WATCHDOG=1" not in received(sock)
    assert m.value("inspector_watchdog_pings_total") == 8
    sup.stopping()
    assert received(sock)[-1] == "STOPPING=1"


def test_a_watchdog_ping_systemd_did_not_get_is_counted_as_failed_and_retried(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    clock = FakeClock()
    m = Metrics(CollectorRegistry())
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}  # WatchdogSec=2: a ping every 1 s
    sup = Supervisor(SupervisorConfig(), metrics=m, notify=SdNotify(env=env), clock=clock)
    sup.progress(frames=1, inferences=1)
    assert received(sock)[0].startswith("READY=1")
    sock.close()
    os.unlink(path)  # systemd's socket gone: every ping fails
    for n in range(1, 5):
        clock.t += 1.0
        sup.progress(frames=1 + n, inferences=1 + n)
    assert m.value("inspector_watchdog_pings_total") == 0
    assert m.value("inspector_watchdog_ping_failures_total") == 4
    clock.t += 0.3  # a failed ping is tried again a quarter interval later (0.25 s), not a whole one
    sup.progress(frames=9, inferences=9)
    assert m.value("inspector_watchdog_ping_failures_total") == 5
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)  # back: the next due ping is delivered and counted as such
    clock.t += 0.3
    sup.progress(frames=10, inferences=10)
    assert received(sock) == ["WATCHDOG=1"] and m.value("inspector_watchdog_pings_total") == 1
    sock.close()


def test_without_systemd_no_ping_is_sent_or_counted() -> None:
    clock = FakeClock()
    m = Metrics(CollectorRegistry())
    sup = Supervisor(SupervisorConfig(), metrics=m, notify=SdNotify(env={}), clock=clock)
    for n in range(1, 6):
        clock.t += 1.5
        sup.progress(frames=n, inferences=n)
    assert m.value("inspector_watchdog_pings_total") == 0 and m.value("inspector_watchdog_ping_failures_total") == 0


def test_sighup_reload_and_sigusr1_snapshot_run_between_frames() -> None:
    calls: list[str] = []
    sup = Supervisor(
        SupervisorConfig(),
        metrics=Metrics(CollectorRegistry()),
        notify=SdNotify(env={}),
        on_reload=lambda: calls.append("reload"),
        on_snapshot=lambda: calls.append("snap"),
    )
    with sup.signals():
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert calls == []  # only flags in the handler
        sup.progress(frames=1, inferences=1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    assert calls == ["reload", "snap"]
    assert sup.should_stop and sup.stop_signal == signal.SIGTERM


def test_a_reload_that_raises_a_user_error_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    problem = "config.yaml:3: decision.threshold: got 7; allowed: a number <= 1"

    def bad_reload() -> None:
        calls.append("reload")
        raise ConfigError(problem)

    sup = Supervisor(
        SupervisorConfig(), metrics=Metrics(CollectorRegistry()), notify=SdNotify(env={}), on_reload=bad_reload
    )
    with sup.signals(), caplog.at_level(logging.INFO, logger="inspector.supervisor"):
        for n in (1, 2):
            os.kill(os.getpid(), signal.SIGHUP)
            deadline = time.monotonic() + 10.0
            while len(calls) < n and time.monotonic() < deadline:  # the handler sets a flag; progress() runs it
                sup.progress(frames=n, inferences=n)
    assert calls == ["reload", "reload"] and not sup.should_stop
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"reload (SIGHUP) failed, keeping the current settings: {problem}"] * 2


def _ring() -> FrameRing:
    return FrameRing.create(f"test-{uuid.uuid4().hex[:8]}", 8, (32, 24))


class Pump:
    """The daemon's loop without the inspection: check the capture, take frames; counts frames per capture start.

    Waits are for events (frames from a given start, a restart) bounded by the deadline the code itself allows a
    capture process to start (`STARTUP_GRACE_S`), never by a guess at how fast a busy machine is. With a fake
    `clock`, each loop moves it on by `tick_s` (back-off and restart window run on that clock)."""

    def __init__(self, sup: Supervisor, cap: CaptureProcess, clock: FakeClock | None = None, tick_s: float = 0.0):
        self.sup, self.cap, self.clock, self.tick_s = sup, cap, clock, tick_s
        self.frames: dict[int, int] = {}  # capture start (1, 2, ...) -> frames taken while it was the current one

    def until(self, done: Callable[[], bool], what: str, timeout_s: float = STARTUP_GRACE_S + 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}; frames {self.frames}"
            if self.clock is not None:
                self.clock.t += self.tick_s
            self.sup.check_capture()
            if self.cap.get(0.05) is not None:
                self.frames[self.cap.starts] = self.frames.get(self.cap.starts, 0) + 1

    def frames_from(self, start: int, n: int = 3) -> None:
        self.until(lambda: self.frames.get(start, 0) >= n, f"{n} frames from capture start {start}")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        assert self.cap.pid is not None
        os.kill(self.cap.pid, sig)


def test_crashed_capture_is_restarted_then_gives_up(tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.avi", 10, 20.0)
    cfg = SourceConfig(kind="file", uri=str(video), pace="realtime", loop=True)
    m = Metrics(CollectorRegistry())
    scfg = SupervisorConfig(max_restarts=1, backoff_initial_s=0.1, stall_timeout_s=2.0)
    with _ring() as ring, CaptureProcess(cfg, ring) as cap:
        sup = Supervisor(scfg, cap, metrics=m, notify=SdNotify(env={}))
        pump = Pump(sup, cap)
        pump.frames_from(1)
        pump.kill()
        pump.frames_from(2)  # restarted after the back-off, frames flow again
        assert cap.starts == 2
        assert m.value("inspector_capture_restarts_total", {"cause": "crashed"}) == 1
        pump.kill()
        with pytest.raises(GaveUp, match=r"supervisor\.max_restarts"):
            pump.until(lambda: False, "the supervisor to give up")
        assert cap.starts == 2 and 3 not in pump.frames
    assert m.value("inspector_capture_restarts_total", {"cause": "crashed"}) == 1


def test_restarts_older_than_the_window_no_longer_count_toward_the_limit(tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.avi", 10, 20.0)
    cfg = SourceConfig(kind="file", uri=str(video), pace="realtime", loop=True)
    m = Metrics(CollectorRegistry())
    scfg = SupervisorConfig(max_restarts=1, restart_window_s=60.0, backoff_initial_s=0.1, stall_timeout_s=2.0)
    clock = FakeClock()
    with _ring() as ring, CaptureProcess(cfg, ring) as cap:
        sup = Supervisor(scfg, cap, metrics=m, notify=SdNotify(env={}), clock=clock)
        pump = Pump(sup, cap, clock, tick_s=0.05)
        pump.frames_from(1)
        pump.kill()
        pump.frames_from(2)  # restart 1 of at most 1 in the window
        clock.t += 61.0  # restart 1 is now older than the 60 s window
        pump.kill()
        pump.frames_from(3)  # so this is again restart 1 of 1, not 2 of 1
        assert m.value("inspector_capture_restarts_total", {"cause": "crashed"}) == 2
        clock.t += 30.0  # within the window of restart 2
        pump.kill()
        with pytest.raises(GaveUp, match=r"failed 2 times within 60 s"):
            pump.until(lambda: False, "the supervisor to give up")
    assert cap.starts == 3 and m.value("inspector_capture_restarts_total", {"cause": "crashed"}) == 2


def test_stalled_capture_is_restarted(tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.avi", 10, 20.0)
    cfg = SourceConfig(kind="file", uri=str(video), pace="realtime", loop=True)
    m = Metrics(CollectorRegistry())
    scfg = SupervisorConfig(max_restarts=3, backoff_initial_s=0.1, stall_timeout_s=2.0)
    with _ring() as ring, CaptureProcess(cfg, ring) as cap:
        sup = Supervisor(scfg, cap, metrics=m, notify=SdNotify(env={}))
        pump = Pump(sup, cap)
        pump.frames_from(1)
        stopped_pid = cap.pid
        pump.kill(signal.SIGSTOP)  # alive but frozen
        pump.frames_from(2)  # the frozen one was killed and a new one started
        assert cap.pid != stopped_pid and cap.starts == 2
    assert m.value("inspector_capture_restarts_total", {"cause": "stalled"}) == 1
    assert m.value("inspector_capture_restarts_total", {"cause": "crashed"}) == 0


def test_sigterm_stops_a_running_loop_cleanly_within_5_s(
    tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    video = write_video(tmp_path / "a.avi", 10, 25.0)
    script = textwrap.dedent(f"""
        import sys, uuid
        from inspector.capture import CaptureProcess
        from inspector.config import SourceConfig, SupervisorConfig
        from inspector.ring import FrameRing
        from inspector.supervisor import Supervisor
        cfg = SourceConfig(kind="file", uri={str(video)!r}, pace="realtime", loop=True)
        if __name__ == "__main__":
            with FrameRing.create("test-" + uuid.uuid4().hex[:8], 8, (32, 24)) as ring, \\
                    CaptureProcess(cfg, ring) as cap:
                sup = Supervisor(SupervisorConfig(), cap)
                n = 0
                with sup.signals():
                    while not sup.should_stop:
                        sup.check_capture()
                        if cap.get(0.2) is not None:
                            n += 1
                        sup.progress(frames=n, inferences=n)
                    sup.stopping()
            print("clean", n, flush=True)
    """)
    (tmp_path / "daemon.py").write_text(script)
    env = {**os.environ, "NOTIFY_SOCKET": path}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "daemon.py")], env=env, stdout=subprocess.PIPE, text=True)
    sock.settimeout(STARTUP_GRACE_S + 10.0)  # an interpreter and a capture process start first: seconds when busy
    assert sock.recv(4096).decode().startswith("READY=1")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0 and out.startswith("clean")
    assert "STOPPING=1" in received(sock)


def test_sd_notify_to_an_abstract_socket_and_a_missing_one(tmp_path: Path) -> None:
    name = f"inspector-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)  # systemd may name an abstract socket: "@name"
        sock.settimeout(5.0)
        notify = SdNotify(env={"NOTIFY_SOCKET": f"@{name}"})
        assert notify.ready("up") and sock.recv(4096).decode() == "READY=1\nSTATUS=up"
        notify.close()
    gone = SdNotify(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert gone.enabled and not gone.watchdog()  # a socket that went away: reported, never raised
    gone.close()
    assert not gone.enabled


def test_a_second_ctrl_c_gives_up_on_the_clean_stop() -> None:
    sup = Supervisor(SupervisorConfig(), metrics=Metrics(CollectorRegistry()), notify=SdNotify(env={}))
    sup._on_signal(signal.SIGINT, None)
    assert sup.should_stop and sup.stop_signal == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        sup._on_signal(signal.SIGINT, None)


def test_a_capture_that_ended_its_footage_is_not_restarted(tmp_path: Path) -> None:
    """End of footage is no crash: the ended capture process is left alone (the daemon stops on `eof`), never started
    again from the top of the file."""
    video = write_video(tmp_path / "a.avi", 5, 20.0)
    cfg = SourceConfig(kind="file", uri=str(video), pace="realtime", loop=False)
    m = Metrics(CollectorRegistry())
    with _ring() as ring, CaptureProcess(cfg, ring) as cap:
        sup = Supervisor(SupervisorConfig(backoff_initial_s=0.1), cap, metrics=m, notify=SdNotify(env={}))
        pump = Pump(sup, cap)
        pump.until(lambda: not cap.alive and cap.eof, "the end of the footage")
        for _ in range(5):
            sup.check_capture()
            time.sleep(0.15)  # past the back-off a restart would have waited
        assert not cap.alive and cap.starts == 1
    assert m.value("inspector_capture_restarts_total", {"cause": "crashed"}) == 0
