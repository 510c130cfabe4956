"""The reference controller as a real process on loopback, driven by a raw DEALER socket from the test."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from inspector import messages

SIM = (sys.executable, "-m", "inspector", "actuator-sim")  # the reference controller, as users run it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def events(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def wait_for(pred: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def start_sim(log: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*SIM, "--bind", f"tcp://127.0.0.1:{port}", "--log", str(log), *extra])
    wait_for(lambda: any(e["event"] == "start" for e in events(log)))
    return proc


def stop_sim(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def reject(seq: int, fire_in_s: float, session: str = "t1") -> bytes:
    now = time.time()
    return messages.encode(
        messages.Reject(
            session=session,
            seq=seq,
            bunch_id=100 + seq,
            score=0.9,
            reason="spider",
            fire_in_s=fire_in_s,
            fire_at_unix_s=now + fire_in_s,
            t_capture_unix_s=now - 0.1,
            sent_unix_s=now,
            across_mm=1.5,
            model="demo",
        )
    )


@pytest.fixture
def dealer() -> Iterator[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    yield sock
    sock.close(0)
    ctx.term()


def recv_type(sock: zmq.Socket[bytes], kind: type) -> messages.Message:
    while True:
        msg = messages.decode(sock.recv())
        if isinstance(msg, kind):
            return msg


def test_acks_fires_dedups_and_reports_late_and_missed(tmp_path: Path, dealer: zmq.Socket[bytes]) -> None:
    port, log = free_port(), tmp_path / "sim.jsonl"
    proc = start_sim(log, port)
    try:
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(reject(1, 0.3))
        assert recv_type(dealer, messages.Ack) == messages.Ack("t1", 1)
        dealer.send(reject(1, 0.25))  # retransmission of the same reject
        assert recv_type(dealer, messages.Ack) == messages.Ack("t1", 1)
        dealer.send(reject(2, -0.05))  # already past the ejector
        assert recv_type(dealer, messages.Ack) == messages.Ack("t1", 2)
        dealer.send(reject(4, 0.1))  # seq 3 never sent
        assert recv_type(dealer, messages.Ack) == messages.Ack("t1", 4)
        wait_for(lambda: sum(e["event"] == "fired" for e in events(log)) == 2)
    finally:
        stop_sim(proc)
    ev = events(log)
    fired = [e["seq"] for e in ev if e["event"] == "fired"]
    assert sorted(fired) == [1, 4] and fired == [4, 1]  # fired in fire-time order, each once
    assert [e["seq"] for e in ev if e["event"] == "duplicate"] == [1]
    assert [e["seq"] for e in ev if e["event"] == "late"] == [2]
    assert [e["seq"] for e in ev if e["event"] == "missed"] == [3]
    assert ev[-1]["event"] == "summary"
    assert ev[-1]["counts"]["fired"] == 2


def test_heartbeats_and_failsafe(tmp_path: Path, dealer: zmq.Socket[bytes]) -> None:
    port, log = free_port(), tmp_path / "sim.jsonl"
    proc = start_sim(log, port, "--heartbeat-interval-s", "0.1", "--timeout-s", "0.5")
    try:
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(messages.encode(messages.Heartbeat(time.time(), "t1")))
        assert isinstance(recv_type(dealer, messages.Heartbeat), messages.Heartbeat)  # the controller's own
        wait_for(lambda: [e.get("state") for e in events(log) if e["event"] == "failsafe"] == ["on", "off", "on"])
    finally:
        stop_sim(proc)


def test_malformed_frames_are_logged_and_ignored(tmp_path: Path, dealer: zmq.Socket[bytes]) -> None:
    port, log = free_port(), tmp_path / "sim.jsonl"
    proc = start_sim(log, port)
    try:
        dealer.connect(f"tcp://127.0.0.1:{port}")
        for junk in (b"\x00\xff", b'{"v": 9, "type": "reject"}', b"{}"):
            dealer.send(junk)
        dealer.send_multipart([b"a", b"b"])
        dealer.send(reject(1, 0.05))
        assert recv_type(dealer, messages.Ack) == messages.Ack("t1", 1)
    finally:
        stop_sim(proc)
    assert sum(e["event"] == "malformed" for e in events(log)) == 4
    assert proc.returncode == 0


def ack_within(sock: zmq.Socket[bytes], timeout_s: float) -> messages.Message | None:
    """The next ack within timeout_s (heartbeats skipped), or None."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(int(left * 1000) + 1):
            return None
        msg = messages.decode(sock.recv())
        if isinstance(msg, messages.Ack):
            return msg
    return None


def test_drop_acks_and_die_and_come_back(tmp_path: Path, dealer: zmq.Socket[bytes]) -> None:
    port, log = free_port(), tmp_path / "sim.jsonl"
    proc = start_sim(log, port, "--drop-acks", "1", "--die-after-s", "1.0", "--down-s", "0.5")
    try:
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(reject(1, 5.0))
        assert ack_within(dealer, 0.3) is None  # first ack dropped
        dealer.send(reject(1, 5.0))
        assert recv_type(dealer, messages.Ack) == messages.Ack("t1", 1)
        wait_for(lambda: any(e["event"] == "back" for e in events(log)))
        dealer.send(reject(2, 5.0))
        assert ack_within(dealer, 0.3) is None  # first ack of seq 2 dropped by the new incarnation too
        dealer.send(reject(2, 5.0))
        assert recv_type(dealer, messages.Ack) == messages.Ack("t1", 2)
    finally:
        stop_sim(proc)
    kinds = [e["event"] for e in events(log)]
    assert kinds.count("ack_dropped") == 2 and "die" in kinds


def test_make_keys(tmp_path: Path) -> None:
    out = subprocess.run([*SIM, "--make-keys", str(tmp_path)], capture_output=True, text=True, check=True)
    public = out.stdout.strip()
    assert len(public) == 40
    assert (tmp_path / "controller.key_secret").is_file()


def test_command_starts_without_the_other_commands_imports(tmp_path: Path) -> None:
    """A restarted controller must be back within a reject's fire time: the command loads only its own module."""
    from inspector.cli import _SUBCOMMANDS, modules_for

    assert modules_for(["-v", "actuator-sim", "--bind", "tcp://127.0.0.1:1"]) == ("inspector.commands.actuator_sim",)
    assert modules_for(["demo", "--seconds", "5"]) == _SUBCOMMANDS  # not named after its module: all of them
    assert modules_for(["--help"]) == _SUBCOMMANDS
    code = (
        "import sys; from inspector.cli import main; "
        f"main(['actuator-sim', '--make-keys', {str(tmp_path)!r}]); "
        "print(sorted(m for m in ('numpy', 'cv2', 'pydantic', 'inspector.config') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"
