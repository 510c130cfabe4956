"""The reference controller: the shared core in-process, and the simulator as a real process on loopback driven by a
raw DEALER (``tests/sim.py``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from inspector import messages
from inspector.actuator_sim import SimOutput, read_allow_list
from inspector.controller import MAX_AHEAD_S, MAX_PEERS, MAX_SESSIONS, SEQ_WINDOW, ControllerCore
from inspector.errors import InspectorError
from tests.sim import SIM, RawInspector, events, free_port, reject_frame, start_sim, stop_sim, wait_for


# ------------------------------------------------------------------------------------------------ the core
def core_with_log(**kw: object) -> tuple[ControllerCore, list[tuple[str, dict[str, object]]]]:
    log: list[tuple[str, dict[str, object]]] = []
    core = ControllerCore(SimOutput(), on_event=lambda ev, **info: log.append((ev, info)), **kw)  # type: ignore[arg-type]
    return core, log


def heartbeat(session: str, until_s: float | None, healthy: bool = True, reason: str = "ok") -> bytes:
    return messages.encode(messages.Heartbeat(session, 1.0, until_s, healthy, reason, 0.0))


def test_core_schedules_at_absolute_time_refuses_late_and_dedups() -> None:
    core, log = core_with_log()
    now = time.monotonic()
    sends = core.receive(b"r", reject_frame("s", 1, now + 0.2), None, now)
    assert [m for _, m in sends] == [messages.Ack("s", 1)]
    sends = core.receive(b"r", reject_frame("s", 1, now + 0.2), None, now + 0.01)  # a retransmission
    assert [m for _, m in sends] == [messages.Ack("s", 1)]
    sends = core.receive(b"r", reject_frame("s", 2, now - 0.5, tolerance_s=0.03), None, now)  # stale on arrival
    assert [m for _, m in sends] == [messages.Nack("s", 2, "late")]
    sends = core.receive(b"r", reject_frame("s", 2, now - 0.5), None, now)  # again: still refused, not fired
    assert [m for _, m in sends] == [messages.Nack("s", 2, "late")]
    assert core.tick(now + 0.1) == []  # not due yet
    while not (out := core.tick(time.monotonic())):
        time.sleep(0.005)
    ((route, fired),) = out
    assert route == b"r" and isinstance(fired, messages.Fired) and fired.seq == 1
    assert now + 0.2 <= fired.at_s <= now + 0.2 + 0.5
    assert [e for e, _ in log].count("fired") == 1 and [e for e, _ in log].count("duplicate") == 2


def test_core_refuses_when_its_own_tick_comes_after_the_deadline() -> None:
    """A controller that stalled past a reject's deadline must not fire it late at the wrong bunch."""
    core, log = core_with_log()
    now = time.monotonic()
    core.receive(b"r", reject_frame("s", 1, now + 0.05, tolerance_s=0.01), None, now)
    time.sleep(0.2)  # the controller was busy
    ((_, msg),) = core.tick(time.monotonic())
    assert msg == messages.Nack("s", 1, "late")
    assert "fired" not in [e for e, _ in log]


def test_core_failsafe_follows_watermark_health_and_silence() -> None:
    core, _ = core_with_log(timeout_s=2.0, margin_s=0.05)
    t = 100.0
    assert core.failsafe  # starts on
    core.receive(b"r", heartbeat("s", t + 1.0), None, t)
    assert not core.failsafe
    core.tick(t + 0.94)
    assert not core.failsafe
    core.tick(t + 0.96)  # now + margin is past the watermark: the belt now reaching the ejector is undecided
    assert core.failsafe and "undecided" in core.failsafe_reason
    core.receive(b"r", heartbeat("s", t + 5.0), None, t + 0.97)
    assert not core.failsafe
    core.receive(b"r", heartbeat("s", t + 5.0, healthy=False, reason="inspection late"), None, t + 1.0)
    assert core.failsafe and "inspection late" in core.failsafe_reason
    core.receive(b"r", heartbeat("s", t + 5.0), None, t + 1.1)
    assert not core.failsafe
    core.tick(t + 3.2)  # silent longer than the timeout
    assert core.failsafe and "silent" in core.failsafe_reason
    core.receive(b"r", heartbeat("s", None), None, t + 3.3)  # no watermark: nothing decided
    assert core.failsafe


def test_core_one_live_inspector_cannot_hide_a_dead_one() -> None:
    core, _ = core_with_log(timeout_s=0.5, expect_peers=2)
    t = 50.0
    core.receive(b"a", heartbeat("a", t + 10), None, t)
    assert core.failsafe and "1 of 2" in core.failsafe_reason
    core.receive(b"b", heartbeat("b", t + 10), None, t)
    assert not core.failsafe
    core.receive(b"a", heartbeat("a", t + 10), None, t + 0.6)
    core.tick(t + 0.6)  # b silent
    assert core.failsafe
    keyed, _ = core_with_log(timeout_s=0.5, expected_keys=["line1", "line2"])
    keyed.receive(b"a", heartbeat("a", t + 10), "line1", t)
    assert keyed.failsafe and "line2: never heard" in keyed.failsafe_reason
    assert keyed.peer_faults(t) == {"line1": None, "line2": "line2: never heard"}  # which one holds it
    keyed.receive(b"b", heartbeat("b", t + 10), "line2", t)
    assert not keyed.failsafe and keyed.peer_faults(t) == {"line1": None, "line2": None}
    assert list(keyed.peer_faults(t + 0.6)) == ["line1", "line2"] and all(keyed.peer_faults(t + 0.6).values())
    assert core.peer_faults(t) == {}  # without an allow-list peers have no names to report
    keyed.receive(b"c", heartbeat("c", t + 10), "rogue", t)  # not on the allow-list: ignored
    assert "rogue" not in keyed.peers


def test_core_heartbeat_reply_echoes_for_the_clock_estimate() -> None:
    core, _ = core_with_log()
    hb = messages.Heartbeat("s", 12.5, None, False, "starting", 0.0)
    ((_route, reply),) = core.receive(b"r", messages.encode(hb), None, 77.0)
    assert isinstance(reply, messages.ControllerHeartbeat)
    assert (reply.echo_t_send_s, reply.echo_rx_s, reply.instance, reply.failsafe) == (12.5, 77.0, core.instance, True)


def test_allow_list_file(tmp_path: Path) -> None:
    public, _ = zmq.curve_keypair()
    f = tmp_path / "allow"
    f.write_text(f"# inspectors\n{public.decode()} line1\n")
    assert list(read_allow_list(f).values()) == ["line1"]
    f.write_text("not-a-key line1\n")
    with pytest.raises(InspectorError, match=r"allow:1: not a 40-character Z85"):
        read_allow_list(f)


# ------------------------------------------------------------------------------------------------ the process
def test_acks_fires_on_time_dedups_refuses_late_and_reports_missed(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "sim.jsonl"
    proc = start_sim(log, port)
    peer = RawInspector(port)
    try:
        peer.reject(1, 0.6)
        assert peer.recv(messages.Ack) == messages.Ack("t1", 1)
        peer.reject(1, 0.55)  # retransmission of the same reject
        assert peer.recv(messages.Ack) == messages.Ack("t1", 1)
        peer.reject(2, -0.05)  # already past the ejector
        assert peer.recv(messages.Nack) == messages.Nack("t1", 2, "late")
        peer.reject(4, 0.3)  # seq 3 never sent
        assert peer.recv(messages.Ack) == messages.Ack("t1", 4)
        fired = [peer.recv(messages.Fired), peer.recv(messages.Fired)]
    finally:
        peer.close()
        stop_sim(proc)
    assert [f.seq for f in fired if isinstance(f, messages.Fired)] == [4, 1]  # in fire-time order, each once
    ev = events(log)
    for e in (e for e in ev if e["event"] == "fired"):
        assert e["error_s"] >= 0  # never early (never late: the deadline is checked before it fires)
    assert [e["seq"] for e in ev if e["event"] == "duplicate"] == [1]
    assert [e["seq"] for e in ev if e["event"] == "refused"] == [2]
    assert [e["seq"] for e in ev if e["event"] == "missed"] == [3]
    assert ev[-1]["event"] == "summary" and ev[-1]["counts"]["fired"] == 2


def test_heartbeat_answer_and_failsafe_transitions(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "sim.jsonl"
    proc = start_sim(log, port, "--timeout-s", "0.5")
    peer = RawInspector(port)
    try:
        peer.heartbeat(time.monotonic() + 30.0)
        reply = peer.recv(messages.ControllerHeartbeat)
        assert isinstance(reply, messages.ControllerHeartbeat) and reply.echo_t_send_s is not None
        wait_for(lambda: [e["state"] for e in events(log, "failsafe")] == ["on", "off", "on"], what="fail-safe on")
    finally:
        peer.close()
        stop_sim(proc)
    off, on = events(log, "failsafe")[1:]
    assert "silent" in on["why"] and off["stretch_s"] > 0


def test_malformed_frames_are_logged_and_ignored(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "sim.jsonl"
    proc = start_sim(log, port)
    peer = RawInspector(port)
    try:
        for junk in (b"\x00\xff", b'{"v": 9, "type": "reject"}', b"{}", b'{"v": 1, "type": "heartbeat"}'):
            peer.sock.send(junk)
        peer.sock.send_multipart([b"a", b"b"])
        peer.reject(1, 0.05)
        assert peer.recv(messages.Ack) == messages.Ack("t1", 1)
    finally:
        peer.close()
        stop_sim(proc)
    assert len(events(log, "malformed")) == 5
    assert proc.returncode == 0


def test_drop_acks_and_die_and_come_back_as_a_new_instance(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "sim.jsonl"
    proc = start_sim(log, port, "--drop-acks", "1", "--die-after-s", "1.5", "--down-s", "0.5")
    peer = RawInspector(port)
    try:
        peer.heartbeat(None)
        first = peer.recv(messages.ControllerHeartbeat)
        peer.reject(1, 5.0)
        assert peer.recv(messages.Ack, 0.3) is None  # first ack dropped
        peer.reject(1, 5.0)
        assert peer.recv(messages.Ack) == messages.Ack("t1", 1)
        wait_for(lambda: events(log, "back"), what="controller back")
        peer.heartbeat(None)
        second = peer.recv(messages.ControllerHeartbeat)
        peer.reject(2, 5.0)
        assert peer.recv(messages.Ack, 0.3) is None  # first ack of seq 2 dropped by the new incarnation too
        peer.reject(2, 5.0)
        assert peer.recv(messages.Ack) == messages.Ack("t1", 2)
    finally:
        peer.close()
        stop_sim(proc)
    assert isinstance(first, messages.ControllerHeartbeat) and isinstance(second, messages.ControllerHeartbeat)
    assert first.instance != second.instance  # a restart is visible to the inspector
    kinds = [e["event"] for e in events(log)]
    assert kinds.count("ack_dropped") == 2 and "die" in kinds


def test_allow_list_admits_listed_keys_only(tmp_path: Path) -> None:
    subprocess.run([*SIM, "--make-keys", str(tmp_path / "keys")], check=True, capture_output=True)
    server_public = (tmp_path / "keys" / "controller.key").read_text().split('public-key = "')[1].split('"')[0]
    good_pub, good_sec = zmq.curve_keypair()
    rogue_pub, rogue_sec = zmq.curve_keypair()
    (tmp_path / "allow").write_text(f"{good_pub.decode()} line1\n")
    port, log = free_port(), tmp_path / "sim.jsonl"
    proc = start_sim(
        log,
        port,
        "--curve-secret-key-file",
        str(tmp_path / "keys" / "controller.key_secret"),
        "--allow",
        str(tmp_path / "allow"),
        "--timeout-s",
        "0.5",
    )
    good = RawInspector(port, "good", (server_public.encode(), good_pub, good_sec))
    rogue = RawInspector(port, "rogue", (server_public.encode(), rogue_pub, rogue_sec))
    try:
        rogue.heartbeat(time.monotonic() + 60)  # a rogue cannot hold off the fail-safe …
        rogue.reject(1, 0.2)  # … nor fire
        assert rogue.recv(messages.Ack, 1.0) is None
        wait_for(lambda: events(log, "denied"), what="rogue denied")
        assert events(log, "failsafe")[-1]["state"] == "on"
        good.heartbeat(time.monotonic() + 60)
        assert isinstance(good.recv(messages.ControllerHeartbeat), messages.ControllerHeartbeat)
        wait_for(lambda: events(log, "failsafe")[-1]["state"] == "off", what="fail-safe off for the listed peer")
    finally:
        good.close()
        rogue.close()
        stop_sim(proc)
    assert not events(log, "reject") and not events(log, "fired")
    assert [e["key"] for e in events(log, "peer")] == ["line1"]


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


class _DownOutput(SimOutput):
    """The simulated ejector with its output path broken (a PLC that went away)."""

    def fire(self, across_mm: float | None, at_s: float, stretch_s: float) -> float:
        raise ConnectionError("PLC down")


def test_core_nacks_what_its_output_could_not_fire() -> None:
    core = ControllerCore(_DownOutput())
    now = time.monotonic()
    core.receive(b"r", reject_frame("s", 1, now), None, now)
    ((_, msg),) = core.tick(time.monotonic())
    assert msg == messages.Nack("s", 1, "output")
    assert core.receive(b"r", reject_frame("s", 1, now), None, now)[0][1] == messages.Nack("s", 1, "output")


def test_core_refuses_a_fire_time_beyond_its_horizon_as_invalid_every_time() -> None:
    core, log = core_with_log()
    now = time.monotonic()
    far = reject_frame("s", 1, now + MAX_AHEAD_S + 10.0)  # a corrupt or hostile fire time: never scheduled
    assert [m for _, m in core.receive(b"r", far, None, now)] == [messages.Nack("s", 1, "invalid")]
    assert [m for _, m in core.receive(b"r", far, None, now + 0.1)] == [messages.Nack("s", 1, "invalid")]  # again
    assert core.pending() == [] and [i["why"] for e, i in log if e == "refused"] == ["invalid"]


def test_core_a_new_session_under_the_same_key_starts_undecided() -> None:
    """An inspector that restarted (same allow-list key, new session) has decided nothing yet: the old run's
    watermark must not hold the fail-safe off."""
    core, _ = core_with_log(timeout_s=2.0, expected_keys=["line1"])
    t = 10.0
    core.receive(b"a", heartbeat("old", t + 60.0), "line1", t)
    assert not core.failsafe
    core.receive(b"a", reject_frame("new", 1, t + 1.0), "line1", t + 0.1)  # the new run's first frame is a reject
    core.tick(t + 0.1)
    assert core.failsafe and core.failsafe_reason == "line1: unhealthy (new session, no heartbeat yet)"
    assert core.peers["line1"].decided_until_s is None


def test_core_bounds_peers_and_sessions_and_forgets_the_silent() -> None:
    core, log = core_with_log(timeout_s=1.0)
    t = 0.0
    for i in range(MAX_PEERS):
        core.receive(b"r%d" % i, heartbeat(f"s{i}", t + 60.0), None, t)
    assert core.receive(b"x", heartbeat("one-too-many", t + 60.0), None, t) == []  # all live: refused, counted
    assert "one-too-many" not in core.peers and ("malformed", {"error": "too many peers"}) in log
    later = t + 10 * 1.0 + 0.5  # every earlier peer silent for ten timeouts: forgotten, the newcomer admitted
    assert core.receive(b"x", heartbeat("one-too-many", later + 60.0), None, later)
    assert list(core.peers) == ["one-too-many"]
    for i in range(MAX_SESSIONS + 1):  # one reject from each of many inspector runs, one after the other
        at = later + 11.0 * (i + 1)
        assert core.receive(b"r", reject_frame(f"s{i}", 1, at + 30.0), None, at)
    assert len(core.sessions) == MAX_SESSIONS and "s0" not in core.sessions  # the oldest session forgotten first


def test_core_dedup_state_of_a_long_session_stays_bounded_and_still_dedups() -> None:
    """A session's de-duplication state is pruned to the last SEQ_WINDOW seqs; what fell out of the window is taken
    as already seen (acked, never scheduled again), what is inside still gets its own answer."""
    core, log = core_with_log()
    now = time.monotonic()
    for seq in range(1, SEQ_WINDOW + 2):  # every one stale on arrival: refused, remembered as refused
        core.receive(b"r", reject_frame("s", seq, now - 10.0), None, now)
    st = core.sessions["s"]
    assert len(st.seen) <= SEQ_WINDOW and set(st.refused) <= st.seen and 1 not in st.seen
    newest = [m for _, m in core.receive(b"r", reject_frame("s", SEQ_WINDOW + 1, now - 10.0), None, now)]
    assert newest == [messages.Nack("s", SEQ_WINDOW + 1, "late")]  # inside the window: its refusal is kept
    oldest = [m for _, m in core.receive(b"r", reject_frame("s", 1, now + 5.0), None, now)]  # out of the window
    assert oldest == [messages.Ack("s", 1)] and core.pending() == []  # taken as seen: never scheduled
    assert [e for e, _ in log][-2:] == ["duplicate", "duplicate"]
