"""Shared helpers for the tests of the ejector link: the reference controller as a real process, its event log,
raw protocol peers, waiting with generous bounds, and the checks of WHEN a reject fired.

Every wait is for an event with a bound far above the time it needs (the suite runs on busy shared machines).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
import zmq
from prometheus_client import CollectorRegistry

from inspector import messages
from inspector.config import LinkConfig
from inspector.link import RejectLink
from inspector.metrics import Metrics
from inspector.perf.ejector import EjectorReport, ejector_report
from inspector.types import Decision
from tests.drawn import calibration, scene, write_footage
from tests.spot_model import write_spot_model

SIM = (sys.executable, "-m", "inspector", "actuator-sim")  # the reference controller, as users run it
ROOT = Path(__file__).resolve().parents[1]
FPS = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def events(log: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The simulator's JSON-lines log (a line still being written is skipped)."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if kind is None or e["event"] == kind:
            out.append(e)
    return out


def wait_for(pred: Callable[[], object], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached in {timeout_s} s")


def start_sim(log: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """The reference controller on loopback, started and bound (its `start` event logged)."""
    n = len(events(log, "start"))
    proc = subprocess.Popen([*SIM, "--bind", f"tcp://127.0.0.1:{port}", "--log", str(log), *extra])
    wait_for(lambda: len(events(log, "start")) > n or proc.poll() is not None, 60, "simulator start")
    assert proc.poll() is None, f"the simulator exited with {proc.returncode}"
    return proc


def stop_sim(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def link_cfg(port: int, **kw: object) -> LinkConfig:
    base: dict[str, object] = dict(
        controller=f"tcp://127.0.0.1:{port}",
        publish=None,
        heartbeat_interval_s=0.1,
        controller_timeout_s=0.5,
        retransmit_interval_s=0.05,
    )
    base.update(kw)
    return LinkConfig(**base)


def decision(
    bunch_id: int, fire_in_s: float, kind: str = "reject", reason: str | None = None, score: float = 0.9
) -> Decision:
    now = time.monotonic()
    return Decision(
        bunch_id=bunch_id,
        decision=kind,
        reason=reason or ("spider" if kind == "reject" else "pass"),
        score=score,
        frame=bunch_id,
        bbox_xyxy=(0, 0, 10, 10),
        spider_xy=(5.0, 5.0),
        fire_at_s=now + fire_in_s,
        inspected_frames=2,
        t_capture_s=now - 0.05,
        across_mm=12.0,
    )


def fresh_metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


# ------------------------------------------------------------------------------------------ a raw inspector peer
class RawInspector:
    """A DEALER speaking the inspector side by hand (heartbeats with a chosen watermark, rejects on the
    controller clock, which on loopback is this machine's monotonic clock)."""

    def __init__(self, port: int, session: str = "t1", curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 10_000)
        if curve is not None:
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.session = session

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

    def send(self, frame: bytes) -> bool:
        """Hand a frame over without blocking (a DEALER without a peer would block); False when it could not."""
        try:
            self.sock.send(frame, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def heartbeat(self, decided_until_s: float | None, healthy: bool = True, reason: str = "ok") -> bool:
        hb = messages.Heartbeat(self.session, time.monotonic(), decided_until_s, healthy, reason, time.time())
        return self.send(messages.encode(hb))

    def reject(self, seq: int, fire_in_s: float, tolerance_s: float = 0.03, stretch_s: float = 0.0) -> bool:
        return self.send(reject_frame(self.session, seq, time.monotonic() + fire_in_s, tolerance_s, stretch_s))

    def recv(self, kind: type, timeout_s: float = 10.0) -> messages.Message | None:
        """The next message of ``kind`` within timeout_s (others skipped), or None."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                return None
            msg = messages.decode(self.sock.recv())
            if isinstance(msg, kind):
                return msg
        return None


def reject_frame(session: str, seq: int, fire_at_s: float, tolerance_s: float = 0.03, stretch_s: float = 0.0) -> bytes:
    now = time.time()
    return messages.encode(
        messages.Reject(
            session=session,
            seq=seq,
            bunch_id=100 + seq,
            score=0.9,
            reason="spider",
            fire_at_s=fire_at_s,
            stretch_s=stretch_s,
            deadline_s=fire_at_s + tolerance_s,
            across_mm=1.5,
            fire_at_unix_s=now,
            t_capture_unix_s=now - 0.1,
            sent_unix_s=now,
            model="demo",
        )
    )


# ------------------------------------------------------------------------------------------ a raw controller
class RawController:
    """A ROUTER speaking the controller side by hand: answers heartbeats (its clock = monotonic + ``offset_s``,
    as a PLC's would differ) and hands every other frame to the test."""

    def __init__(self, port: int, offset_s: float = 0.0, instance: str = "raw1") -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"tcp://127.0.0.1:{port}")
        self.offset_s = offset_s
        self.instance = instance
        self.identity = b""
        self.heartbeats: list[messages.Heartbeat] = []
        self.other: list[tuple[bytes, bytes]] = []

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

    def clock(self) -> float:
        return time.monotonic() + self.offset_s

    def next(self, timeout_s: float = 20.0) -> tuple[bytes, bytes] | None:
        """The next frame that is not a heartbeat (heartbeats answered on the way), as (identity, frame)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                return None
            parts = self.sock.recv_multipart()
            identity, frame = parts[0], parts[-1]
            self.identity = identity
            try:
                msg = messages.decode_from_inspector(frame)
            except messages.MalformedMessage:
                return identity, frame
            if isinstance(msg, messages.Heartbeat):
                self.heartbeats.append(msg)
                rx = self.clock()
                self.send(messages.ControllerHeartbeat(self.instance, self.clock(), msg.t_send_s, rx, False, 0.0))
                continue
            return identity, frame
        return None

    def next_reject(self, timeout_s: float = 20.0) -> messages.Reject:
        got = self.next(timeout_s)
        assert got is not None, "no reject arrived"
        msg = messages.decode_from_inspector(got[1])
        assert isinstance(msg, messages.Reject)
        return msg

    def send(self, msg: messages.Message | bytes) -> None:
        self.sock.send_multipart([self.identity, msg if isinstance(msg, bytes) else messages.encode(msg)])

    def wait(self, pred: Callable[[], object], timeout_s: float = 20.0, what: str = "condition") -> None:
        """Answer heartbeats (other frames kept in ``self.other``) until ``pred()`` holds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return
            got = self.next(0.02)
            if got is not None:
                self.other.append(got)
        raise AssertionError(f"{what} not reached in {timeout_s} s")


# ------------------------------------------------------------------------------------------ message checks
def assert_in_range(msg: messages.Message) -> None:
    """Every field of an accepted message is of its type, finite and in its documented range."""
    import dataclasses

    for f in dataclasses.fields(msg):
        v = getattr(msg, f.name)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            assert 0 <= v <= messages.MAX_INT, (f.name, v)
        elif isinstance(v, float):
            assert math.isfinite(v) and abs(v) <= 10 * messages.MAX_TIME_S, (f.name, v)
        else:
            assert isinstance(v, str) and len(v) <= messages.MAX_TEXT, (f.name, v)
    if isinstance(msg, messages.Reject | messages.Ack | messages.Nack | messages.Fired):
        assert msg.seq >= 1
    if isinstance(msg, messages.Reject):
        assert msg.deadline_s >= msg.fire_at_s and 0 <= msg.stretch_s <= messages.MAX_STRETCH_S
        assert msg.score is None or 0 <= msg.score <= 1


def sample_messages() -> list[messages.Message]:
    """One valid message of every kind (both directions)."""
    return [
        messages.Reject(
            "ab12cd34",
            7,
            412,
            0.93,
            "spider",
            1002.25,
            0.0,
            1002.28,
            -35.5,
            1.7e9 + 2.25,
            1.7e9 - 0.5,
            1.7e9,
            "demo",
            attempt=2,
        ),
        messages.Reject("ab12cd34", 8, 413, None, "uninspected", 1003.0, 0.4, 1003.03, None, 0.0, 0.0, 0.0, "m"),
        messages.Heartbeat("ab12cd34", 55.5, 1001.0, True, "ok", 1.7e9),
        messages.Heartbeat("ab12cd34", 55.5, None, False, "no frame inspected yet", 1.7e9),
        messages.ControllerHeartbeat("9d2e11f0", 1000.5, 55.5, 1000.49, False, 1.7e9),
        messages.ControllerHeartbeat("9d2e11f0", 1000.5, None, None, True, 1.7e9),
        messages.Ack("ab12cd34", 7),
        messages.Nack("ab12cd34", 7, "late"),
        messages.Fired("ab12cd34", 7, 1002.251),
    ]


# ------------------------------------------------------------------------------------------ the daemon on a line
class Line:
    """A daemon config on drawn footage, with its own ports; helpers to start the daemon and the simulator."""

    def __init__(
        self,
        root: Path,
        fps: float = FPS,
        n_frames: int = 40,
        n_bunches: int = 4,
        link: dict[str, Any] | None = None,
        model: Path | None = None,
    ) -> None:
        self.root = root
        self.fps = fps
        self.video, self.cal, self.labels = write_footage(
            root / "footage", n_frames=n_frames, fps=fps, n_bunches=n_bunches
        )
        self.bunches = scene(n_bunches)
        self.model = model or write_spot_model(root)
        self.controller = f"tcp://127.0.0.1:{free_port()}"
        self.metrics_port = free_port()
        self.review_port = free_port()
        self.decisions = root / "decisions.jsonl"
        self.sim_log = root / "sim.jsonl"
        self.config = root / "config.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "calibration": str(self.cal),
                    "model": {"path": str(self.model), "batch_size": 8},
                    "source": {"kind": "file", "uri": str(self.video), "pace": "realtime", "fps": fps},
                    "belt": {"min_bunch_area_mm2": 200},
                    "link": {
                        "controller": self.controller,
                        "publish": f"tcp://127.0.0.1:{free_port()}",
                        **(link or {}),
                    },
                    "metrics": {"port": self.metrics_port},
                    "review": {"port": self.review_port},
                    "output": {"decisions_jsonl": str(self.decisions), "evidence_dir": str(root / "evidence")},
                    "supervisor": {"stall_timeout_s": 3.0, "backoff_initial_s": 0.2},
                }
            )
        )

    def daemon(self, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inspector.cli",
                "run",
                "--config",
                str(self.config),
                "--instance",
                f"t{os.getpid()}{id(self)}",
                *extra,
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )

    def simulator(self, *extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inspector",
                "actuator-sim",
                "--bind",
                self.controller,
                "--log",
                str(self.sim_log),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def decided(self) -> list[dict[str, Any]]:
        if not self.decisions.exists():
            return []
        return [json.loads(line) for line in self.decisions.read_text().splitlines() if line]

    def sim_events(self, event: str) -> list[dict[str, Any]]:
        return events(self.sim_log, event)

    def review_rejects(self) -> list[int]:
        """Bunch ids on the review page's data, newest first ([] while it is not served)."""
        url = f"http://127.0.0.1:{self.review_port}/review/rejects.json"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return [int(r["bunch_id"]) for r in json.loads(response.read())["rejects"]]
        except OSError:
            return []

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return str(response.read().decode())


def wait_exit(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, err


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def waited(predicate: Callable[[], object], timeout_s: float) -> bool:
    """Whether ``predicate()`` came true within ``timeout_s`` (polled every 0.1 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


class StderrLines:
    """The daemon's stderr, read line by line as it comes (so a test can wait for a log line)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self._stream = proc.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for text in iter(self._stream.readline, ""):
            self.lines.append(text)

    def has(self, *words: str) -> bool:
        return any(all(w in text for w in words) for text in list(self.lines))

    def text(self, timeout_s: float = 10.0) -> str:
        self._thread.join(timeout_s)
        return "".join(self.lines)


# ------------------------------------------------------------------------------------------ truth at the ejector
def check_ejector_against_truth(line: Line) -> EjectorReport:
    """``inspector.perf.ejector`` on a line's run: every fire within one frame interval of its bunch's true arrival,
    no stretch shorter than its bunch, no spider bunch passed (fired at, or the controller in fail-safe)."""
    labels = [json.loads(text) for text in line.labels.read_text().splitlines() if text]
    report = ejector_report(line.decided(), events(line.sim_log), labels, calibration(), (320, 240), line.fps)
    assert not report.fires_off, f"fired off their bunch's arrival (bunch, s): {report.fires_off}"
    assert not report.short_stretches, f"stretches shorter than their bunch: {report.short_stretches}"
    assert not report.spiders_passed, f"spider bunches passed (label, pass, arrival s): {report.spiders_passed}"
    return report


MISSED_RE = re.compile(r"REJECT MISSED: seq (\d+) bunch (\d+)")


def check_every_miss_counted(rows: list[dict[str, Any]], log: Path, daemon_stderr: str) -> set[int]:
    """Every reject the daemon decided was fired by the controller or counted missed by the daemon (its log line).
    Returns the bunch ids counted missed."""
    rejects = {int(r["bunch_id"]) for r in rows if r["decision"] == "reject"}
    fired = {int(e["bunch_id"]) for e in events(log, "fired")}
    missed = {int(m.group(2)) for m in MISSED_RE.finditer(daemon_stderr)}
    uncounted = sorted(rejects - fired - missed)
    assert not uncounted, f"rejects neither fired nor counted missed: bunches {uncounted}"
    return missed


@contextlib.contextmanager
def link_to_raw_controller(offset_s: float = 0.0, **cfg: object) -> Iterator[tuple[RejectLink, RawController, Metrics]]:
    """A RejectLink (fresh metrics) connected to a RawController on a free port; both closed afterwards."""
    port, m = free_port(), fresh_metrics()
    ctl = RawController(port, offset_s=offset_s)
    try:
        with RejectLink(link_cfg(port, **cfg), metrics=m) as link:
            yield link, ctl, m
    finally:
        ctl.close()
