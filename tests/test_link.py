"""RejectLink against the reference controller (a real process) and raw sockets, all on loopback."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from prometheus_client import CollectorRegistry

from inspector import messages
from inspector.config import LinkConfig
from inspector.link import LinkError, RejectLink
from inspector.metrics import Metrics
from inspector.types import Decision

SIM = (sys.executable, "-m", "inspector", "actuator-sim")  # the reference controller, as users run it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def events(log: Path, kind: str | None = None) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    ev = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in ev if kind is None or e["event"] == kind]


def wait_for(pred: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def start_sim(log: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    n = len(events(log, "start"))
    proc = subprocess.Popen(
        [
            *SIM,
            "--bind",
            f"tcp://127.0.0.1:{port}",
            "--log",
            str(log),
            "--heartbeat-interval-s",
            "0.1",
            *extra,
        ]
    )
    wait_for(lambda: len(events(log, "start")) > n)
    return proc


def stop_sim(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


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


def decision(bunch_id: int, fire_in_s: float, kind: str = "reject") -> Decision:
    now = time.monotonic()
    return Decision(
        bunch_id=bunch_id,
        decision=kind,
        reason="spider" if kind == "reject" else "pass",
        score=0.9,
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


def test_controller_present_acks_fires_and_metrics(tmp_path: Path) -> None:
    port, log, m = free_port(), tmp_path / "sim.jsonl", fresh_metrics()
    proc = start_sim(log, port)
    try:
        with RejectLink(link_cfg(port), metrics=m, model="demo") as link:
            seqs = [link.submit(decision(i, 0.4)) for i in range(1, 4)]
            assert link.submit(decision(9, 0.4, "pass")) == 0
            wait_for(lambda: link.acked == 3)
            wait_for(lambda: link.controller_up)
        wait_for(lambda: len(events(log, "fired")) == 3)
    finally:
        stop_sim(proc)
    assert seqs == [1, 2, 3]
    fired = events(log, "fired")
    assert sorted(e["bunch_id"] for e in fired) == [1, 2, 3]
    assert all(e["model"] == "demo" and e["across_mm"] == 12.0 for e in fired)
    assert m.value("inspector_rejects_acked_total") == 3
    assert m.value("inspector_rejects_missed_total") == 0
    assert m.value("inspector_decision_latency_seconds_count") == 3
    assert m.value("inspector_decision_slack_seconds_count") == 3


def test_controller_absent_at_start_then_appears(tmp_path: Path) -> None:
    port, log, m = free_port(), tmp_path / "sim.jsonl", fresh_metrics()
    with RejectLink(link_cfg(port), metrics=m) as link:
        link.submit(decision(1, 3.0))
        time.sleep(0.8)
        assert link.acked == 0 and not link.controller_up
        assert m.value("inspector_controller_heartbeat_age_seconds") > 0.5  # fault: never heard
        proc = start_sim(log, port)
        try:
            wait_for(lambda: link.acked == 1)
            wait_for(lambda: link.controller_up)
            wait_for(lambda: len(events(log, "fired")) == 1)
        finally:
            stop_sim(proc)
    assert link.missed == 0
    # nothing was queued while the controller was down: exactly one copy reached it
    assert len(events(log, "reject")) == 1 and not events(log, "duplicate")


def test_controller_never_appears_counts_missed_loudly(caplog: pytest.LogCaptureFixture) -> None:
    m = fresh_metrics()
    caplog.set_level(logging.ERROR, logger="inspector.link")
    with RejectLink(link_cfg(free_port()), metrics=m) as link:
        link.submit(decision(5, 0.8))
        wait_for(lambda: link.missed == 1)
    assert m.value("inspector_rejects_missed_total") == 1
    assert any("REJECT MISSED" in r.getMessage() and "bunch 5" in r.getMessage() for r in caplog.records)
    assert any("FAULT: controller" in r.getMessage() for r in caplog.records)


def test_dropped_acks_are_retransmitted(tmp_path: Path) -> None:
    port, log, m = free_port(), tmp_path / "sim.jsonl", fresh_metrics()
    proc = start_sim(log, port, "--drop-acks", "2")
    try:
        with RejectLink(link_cfg(port), metrics=m) as link:
            link.submit(decision(1, 2.0))
            wait_for(lambda: link.acked == 1)
        wait_for(lambda: len(events(log, "fired")) == 1)
    finally:
        stop_sim(proc)
    assert link.retransmits >= 2 and m.value("inspector_reject_retransmits_total") == link.retransmits
    assert len(events(log, "duplicate")) >= 2
    assert len(events(log, "fired")) == 1


def test_controller_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    port, log, m = free_port(), tmp_path / "sim.jsonl", fresh_metrics()
    proc = start_sim(log, port)
    fire_in_s = 2.0
    with RejectLink(link_cfg(port), metrics=m) as link:
        sent = 0
        for i in range(60):  # ~3 s of rejects every 50 ms
            link.submit(decision(i + 1, fire_in_s))
            sent += 1
            if i == 15:
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
                t_kill = time.monotonic()
            if i == 35:
                proc = start_sim(log, port)
                t_back = time.monotonic()
            time.sleep(0.05)
        wait_for(lambda: link.acked + link.missed == sent, 15)
        wait_for(lambda: link.controller_up)

    def second_run() -> list[dict[str, object]]:
        ev = events(log)
        return ev[max(i for i, e in enumerate(ev) if e["event"] == "start") :]

    def received_and_fired() -> tuple[set[Any], set[Any]]:
        second = second_run()
        return (
            {e["seq"] for e in second if e["event"] == "reject"},
            {e["seq"] for e in second if e["event"] == "fired"},
        )

    try:  # the second controller fires everything it received
        wait_for(lambda: received_and_fired()[0] == received_and_fired()[1], 10)
    finally:
        stop_sim(proc)
    assert t_back - t_kill < fire_in_s  # so every reject of the outage could still be fired …
    assert link.missed == 0  # … and none was lost
    assert m.value("inspector_rejects_acked_total") == sent
    assert max(received_and_fired()[0]) == sent


def test_malformed_controller_messages_are_ignored_and_counted() -> None:
    port, m = free_port(), fresh_metrics()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"tcp://127.0.0.1:{port}")
    try:
        with RejectLink(link_cfg(port), metrics=m) as link:
            link.submit(decision(1, 5.0))
            identity, frame = router.recv_multipart()
            msg = messages.decode(frame)
            assert isinstance(msg, messages.Heartbeat | messages.Reject)
            while not isinstance(msg, messages.Reject):
                identity, frame = router.recv_multipart()
                msg = messages.decode(frame)
            junk = [
                b"\xff",
                b"{}",
                b'{"v": 2, "type": "ack", "session": "x", "seq": 1}',
                b"[]",
                b'{"v": 1, "type": "reject"}',
                b'{"v": 1, "type": "ack", "session": "s", "seq": -4}',
            ]
            for j in junk:
                router.send_multipart([identity, j])
            router.send_multipart([identity, b"two", b"frames"])
            router.send_multipart([identity, messages.encode(messages.Ack(link.session, msg.seq))])
            wait_for(lambda: link.acked == 1)
            assert link.malformed == len(junk) + 1
    finally:
        router.close(0)
        ctx.term()
    assert m.value("inspector_controller_messages_malformed_total") == len(junk) + 1


def test_every_decision_is_published() -> None:
    pub_port = free_port()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, messages.PUB_TOPIC_DECISION)
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    cfg = link_cfg(free_port(), publish=f"tcp://127.0.0.1:{pub_port}")
    got: list[dict[str, object]] = []
    try:
        with RejectLink(cfg, metrics=fresh_metrics(), model="demo") as link:
            sub.connect(f"tcp://127.0.0.1:{pub_port}")
            time.sleep(0.3)  # PUB/SUB slow joiner
            link.submit(decision(1, 0.2, "pass"))
            link.submit(decision(2, 0.2, "reject"))
            for _ in range(2):
                _topic, body = sub.recv_multipart()
                got.append(json.loads(body))
    finally:
        sub.close(0)
        ctx.term()
    assert [(g["bunch_id"], g["decision"], g["seq"]) for g in got] == [(1, "pass", 0), (2, "reject", 1)]
    assert all(g["v"] == 1 and g["type"] == "decision" and g["model"] == "demo" for g in got)


def test_publish_address_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LinkError, match=r"link\.publish"):
            RejectLink(link_cfg(free_port(), publish=f"tcp://127.0.0.1:{port}"), metrics=fresh_metrics()).start()


def test_close_still_sends_pending_rejects(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "sim.jsonl"
    link = RejectLink(link_cfg(port), metrics=fresh_metrics())
    link.start()
    link.submit(decision(1, 3.0))
    box: dict[str, subprocess.Popen[bytes]] = {}
    starter = threading.Timer(0.5, lambda: box.setdefault("p", start_sim(log, port)))
    starter.start()
    link.close()  # blocks until the late-starting controller acked it
    starter.join()
    try:
        assert link.acked == 1 and link.missed == 0
    finally:
        stop_sim(box["p"])


def test_close_is_bounded_by_fire_time() -> None:
    link = RejectLink(link_cfg(free_port()), metrics=fresh_metrics(), close_timeout_s=30)
    link.start()
    link.submit(decision(1, 0.5))
    t0 = time.monotonic()
    link.close()
    assert link.missed == 1 and time.monotonic() - t0 < 10


def test_curve_round_trip_and_wrong_key(tmp_path: Path) -> None:
    subprocess.run([*SIM, "--make-keys", str(tmp_path / "keys")], check=True, capture_output=True)
    public = (tmp_path / "keys" / "controller.key").read_text().split('public-key = "')[1].split('"')[0]
    port, log = free_port(), tmp_path / "sim.jsonl"
    proc = start_sim(log, port, "--curve-secret-key-file", str(tmp_path / "keys" / "controller.key_secret"))
    try:
        with RejectLink(link_cfg(port, curve_server_public_key=public), metrics=fresh_metrics()) as link:
            link.submit(decision(1, 2.0))
            wait_for(lambda: link.acked == 1)
        wrong_public = zmq.curve_keypair()[0].decode()
        with RejectLink(link_cfg(port, curve_server_public_key=wrong_public), metrics=fresh_metrics()) as bad:
            bad.submit(decision(2, 0.5))
            wait_for(lambda: bad.missed == 1)
        plain = RejectLink(link_cfg(port), metrics=fresh_metrics())
        with plain:
            plain.submit(decision(3, 0.5))
            wait_for(lambda: plain.missed == 1)
    finally:
        stop_sim(proc)
    assert [e["bunch_id"] for e in events(log, "reject")] == [1]


def test_bad_curve_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LinkError, match="40 Z85"):
        RejectLink(link_cfg(free_port(), curve_server_public_key="short"))
    bad = tmp_path / "secret"
    bad.write_text("nope")
    with pytest.raises(LinkError, match="secret"):
        RejectLink(
            link_cfg(
                free_port(), curve_server_public_key=zmq.curve_keypair()[0].decode(), curve_client_secret_key_file=bad
            )
        )
