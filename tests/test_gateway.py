"""The ejector gateway against REAL PLC servers on loopback (tests/plc_servers.py: pymodbus and asyncua servers in
their own processes that record every write with its monotonic time). Nothing of either protocol library is
mocked: the gateway talks Modbus TCP / OPC UA over a socket to a server, as it does to a PLC."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq
from prometheus_client import generate_latest

from inspector import messages
from inspector.cli import main as cli_main
from inspector.errors import ConfigError, InspectorError
from inspector.gateway import EVENTS, Gateway, GatewayConfig, GatewayMetrics, load_gateway_config, open_driver
from inspector.link import RejectLink
from inspector.perf.soak import free_port
from inspector.plc import PlcOutput, PulseRefused
from tests.plc_servers import PlcServer
from tests.sim import SIM, RawInspector, decision, fresh_metrics, link_cfg, reject_frame, wait_for, waited
from tests.test_alerts import firing
from tests.test_deploy import (
    DEPLOY,
    GATEWAY_RULES,
    _exposed_sample_names,
    _install,
    _unit_settings,
    _verify,
    need_tool,
    undocumented_keys,
)

pytest.importorskip("pymodbus")
pytest.importorskip("asyncua")

FRAME_S = 1 / 30  # one frame interval at 30 fps: the bound on when an ejector output may be driven
PULSE_S = 0.05
LEFT, RIGHT, FAIL_SAFE, WATCHDOG = 2, 5, 9, 3  # Modbus coils (and the watchdog's holding register)


def modbus_config(port: int, **over: Any) -> GatewayConfig:
    raw: dict[str, Any] = {
        "plc": {"protocol": "modbus", "host": "127.0.0.1", "port": port, "timeout_s": 0.3},
        "ejectors": [
            {"name": "left", "output": LEFT, "across_mm": [-300, 0]},
            {"name": "right", "output": RIGHT, "across_mm": [0, 300]},
        ],
        "pulse_s": PULSE_S,
        "fail_safe": {"output": FAIL_SAFE},
        "watchdog": {"output": WATCHDOG, "interval_s": 0.1},
        "reconnect": {"initial_s": 0.05, "max_s": 0.2},
    }
    raw.update(over)
    return GatewayConfig.model_validate(raw)


OPCUA_LEFT, OPCUA_RIGHT, OPCUA_FAIL_SAFE, OPCUA_WATCHDOG = (
    "ns=2;s=Ejector.1",
    "ns=2;s=Ejector.2",
    "ns=2;s=FailSafe",
    "ns=2;s=Watchdog",
)


def opcua_config(port: int, **over: Any) -> GatewayConfig:
    raw: dict[str, Any] = {
        "plc": {"protocol": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/", "timeout_s": 1},
        "ejectors": [
            {"name": "left", "output": OPCUA_LEFT, "across_mm": [-300, 0]},
            {"name": "right", "output": OPCUA_RIGHT, "across_mm": [0, 300]},
        ],
        "pulse_s": PULSE_S,
        "fail_safe": {"output": OPCUA_FAIL_SAFE},
        "watchdog": {"output": OPCUA_WATCHDOG, "interval_s": 0.1},
    }
    raw.update(over)
    return GatewayConfig.model_validate(raw)


@pytest.fixture()
def modbus() -> Iterator[PlcServer]:
    with PlcServer("modbus", free_port()) as server:
        yield server


class Output:
    """A PlcOutput on a config; ``fire_at`` fires as the controller core does: at the due time, and notes what came
    of it (the write time, or the refusal's outcome)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.metrics = GatewayMetrics()
        self.out = PlcOutput(config, open_driver(config.plc), self.metrics)
        self.outcomes: list[float | str] = []

    def fire_at(self, across_mm: float | None, at_s: float) -> None:
        time.sleep(max(0.0, at_s - time.monotonic()))
        try:
            self.outcomes.append(self.out.fire(across_mm, at_s))
        except PulseRefused as exc:
            self.outcomes.append(exc.outcome)

    def __enter__(self) -> PlcOutput:
        self.out.start()
        assert self.out.wait_for(lambda o: o.connected, 10.0), "the gateway never connected to the PLC"
        self.out.fail_safe(False, "inspectors")
        assert self.out.wait_for(lambda o: not o.in_fail_safe, 5.0)
        return self.out

    def __exit__(self, *exc: object) -> None:
        self.out.stop()


def writes_on(writes: list[dict[str, Any]], kind: str, address: Any, value: int | bool) -> list[float]:
    return [w["t_s"] for w in writes if w["kind"] == kind and w["address"] == address and w["value"] == value]


def pulse_ended(writes: list[dict[str, Any]], address: Any) -> bool:
    """A coil written 1 and then 0 at `address`."""
    on = writes_on(writes, "coil", address, 1)
    return bool(on) and any(t >= on[0] for t in writes_on(writes, "coil", address, 0))


def fire_until_written(o: Output, across_mm: float | None, tries: int = 5) -> tuple[float, float]:
    """Fire a pulse due 0.2 s ahead; one this test's own thread woke too late for is refused unwritten (`late`, the
    gateway's promise) and planned again. Returns (due, written by the gateway)."""
    for _ in range(tries):
        at_s = time.monotonic() + 0.2
        o.fire_at(across_mm, at_s)
        outcome = o.outcomes[-1]
        if isinstance(outcome, float):
            return at_s, outcome
        assert outcome == "late", o.outcomes
        time.sleep(0.2)  # past any release of an earlier pulse
    pytest.fail(f"{tries} pulses in a row refused as late: {o.outcomes}")


# ------------------------------------------------------------------------------------------------ Modbus TCP
@pytest.mark.slow
def test_modbus_each_pulse_drives_its_coil_within_a_frame_and_nothing_else_is_written(modbus: PlcServer) -> None:
    """Each pulse is written within a frame of its due time or refused unwritten (`late`): the gateway's promise.
    A pulse this test's own thread woke too late for is refused and planned again, so a busy machine cannot make
    the test pass without a pulse, nor fail it for a pulse the gateway rightly refused."""
    config = modbus_config(modbus.port)
    o = Output(config)
    fired: list[tuple[float, float, tuple[int, ...]]] = []  # (due, written by the gateway, coils)
    with o as out:
        for across, coils in [(-120.0, (LEFT,)), (150.0, (RIGHT,)), (None, (LEFT, RIGHT))]:
            fired.append((*fire_until_written(o, across), coils))
        refused = [x for x in o.outcomes if x == "late"]
        last_on = fired[-1][1]
        writes = modbus.wait_for(  # both coils switched off after the last pulse
            lambda w: all(any(t > last_on for t in writes_on(w, "coil", c, 0)) for c in (LEFT, RIGHT)), 10.0
        )
        assert out.in_fail_safe is False
    for i, (at_s, written_s, coils) in enumerate(fired):
        assert 0.0 <= written_s - at_s <= FRAME_S, f"pulse {i} written {written_s - at_s:+.4f} s off its time"
        for coil in (LEFT, RIGHT):
            # the server stamps a write when it receives it: after the gateway sent it, within transport time
            on = [t for t in writes_on(writes, "coil", coil, 1) if written_s <= t < written_s + 0.15]
            if coil in coils:
                assert len(on) == 1, (i, coil, on)
                off = [t for t in writes_on(writes, "coil", coil, 0) if on[0] < t < on[0] + PULSE_S + 0.5]
                assert off, f"pulse {i}: coil {coil} was not switched off after its pulse"
            else:
                assert not on, f"pulse {i} drove coil {coil}, which does not cover its place across the belt"
    # a refused pulse wrote nothing: every switch-on belongs to a fired pulse
    ons = sorted(t for c in (LEFT, RIGHT) for t in writes_on(writes, "coil", c, 1))
    assert len(ons) == 4, (ons, fired, o.outcomes)
    # only the configured addresses were ever written: ejector and fail-safe coils, the watchdog register
    assert {w["address"] for w in writes if w["kind"] == "coil"} <= {LEFT, RIGHT, FAIL_SAFE}
    assert {w["address"] for w in writes if w["kind"] == "register"} == {WATCHDOG}
    counts = [w["value"] for w in writes if w["kind"] == "register"]
    assert counts == list(range(counts[0], counts[0] + len(counts))), "the watchdog counter must count up"
    assert o.metrics.value("inspector_gateway_pulses_total", {"ejector": "left"}) == 2
    assert o.metrics.value("inspector_gateway_fire_error_seconds_count") == 3
    assert o.metrics.value("inspector_gateway_pulses_refused_total", {"reason": "late"}) == len(refused)


@pytest.mark.slow
def test_modbus_a_late_pulse_is_refused_and_never_written(modbus: PlcServer) -> None:
    o = Output(modbus_config(modbus.port))
    with o:
        o.fire_at(-100.0, time.monotonic() - 0.05)  # due 50 ms ago: past the 33 ms tolerance
        o.fire_at(100.0, time.monotonic() + 0.1)
        # the pulse's end: a 0 written after its 1 (a 0 alone may be the coil cleared at connect)
        writes = modbus.wait_for(lambda w: pulse_ended(w, RIGHT), 10.0)
    assert o.outcomes[0] == "late" and isinstance(o.outcomes[1], float)
    assert not writes_on(writes, "coil", LEFT, 1), "a late pulse reached the ejector"
    assert len(writes_on(writes, "coil", RIGHT, 1)) == 1
    assert o.metrics.value("inspector_gateway_pulses_refused_total", {"reason": "late"}) == 1


@pytest.mark.slow
def test_modbus_a_dead_plc_means_fail_safe_then_reconnect_with_backoff(modbus: PlcServer) -> None:
    config = modbus_config(modbus.port)
    o = Output(config)
    with o as out:
        modbus.kill()
        killed_at = time.monotonic()
        # the next watchdog write finds the PLC gone: fail-safe within a watchdog interval (+ the write timeout)
        assert out.wait_for(lambda o: "plc_down" in o.fail_safe_reasons, 5.0)
        noticed_s = time.monotonic() - killed_at
        assert noticed_s <= config.watchdog.interval_s + 2 * config.plc.timeout_s + 0.2, noticed_s
        assert o.metrics.value("inspector_gateway_plc_up") == 0
        # a pulse due while the PLC is away is refused and reported, not kept for later
        o.fire_at(-50.0, time.monotonic() + 0.1)
        time.sleep(0.9)
        failures = o.metrics.value("inspector_gateway_plc_connects_total", {"result": "failed"})
        # back-off 0.05, 0.1, 0.2, 0.2 ... s: bounded, so a second of outage is several tries, not hundreds
        assert 3 <= failures <= 1.0 / config.reconnect.initial_s + 2, failures
        with PlcServer("modbus", modbus.port) as again:
            assert out.wait_for(lambda o: o.connected and not o.in_fail_safe, 10.0), out.fail_safe_reasons
            writes = again.wait_for(lambda w: bool(writes_on(w, "coil", FAIL_SAFE, 0)), 5.0)
            assert o.metrics.value("inspector_gateway_fail_safe_entries_total", {"reason": "plc_down"}) == 1
    assert o.outcomes == ["plc_down"]
    assert o.metrics.value("inspector_gateway_pulses_refused_total", {"reason": "plc_down"}) == 1
    # after the reconnect the PLC hears the fail-safe state first, then the ejectors off, then fail-safe released
    first = writes[0]
    assert (first["kind"], first["address"], first["value"]) == ("coil", FAIL_SAFE, 1), writes[:4]
    assert writes_on(writes, "coil", FAIL_SAFE, 0), "fail-safe was never released after the reconnect"


@pytest.mark.slow
def test_modbus_stopping_the_gateway_leaves_the_line_in_fail_safe(modbus: PlcServer) -> None:
    o = Output(modbus_config(modbus.port))
    with o:
        pass

    def fail_safe_values(writes: list[dict[str, Any]]) -> list[int]:
        return [int(w["value"]) for w in writes if w["kind"] == "coil" and w["address"] == FAIL_SAFE]

    # on at connect, released once the inspectors are heard, on again at the stop: the last word the PLC hears
    # (waited for: the server stamps writes as it gets to them, later on a busy machine)
    def on_again(values: list[int]) -> bool:
        return 0 in values and values[-1] == 1

    writes = modbus.wait_for(lambda w: on_again(fail_safe_values(w)), 10.0)
    assert on_again(fail_safe_values(writes)), fail_safe_values(writes)


@pytest.mark.slow
def test_modbus_outputs_the_plc_does_not_have_keep_fail_safe(modbus: PlcServer) -> None:
    config = modbus_config(modbus.port, fail_safe={"output": 999})  # the server has coils 0..31 only
    o = Output(config)
    o.out.start()  # not `with o`: the gateway never gets the PLC to take its outputs
    try:
        time.sleep(1.0)
        assert o.out.in_fail_safe and not o.out.connected
        assert o.metrics.value("inspector_gateway_plc_write_errors_total", {"kind": "refused"}) >= 1
        assert o.metrics.value("inspector_gateway_plc_connects_total", {"result": "refused"}) >= 1
        assert o.metrics.value("inspector_gateway_plc_connects_total", {"result": "ok"}) == 0
        o.fire_at(-10.0, time.monotonic())
    finally:
        o.out.stop()
    assert o.outcomes == ["plc_down"]
    assert not [w for w in modbus.snapshot() if w["kind"] == "coil" and w["value"] == 1 and w["address"] != 999]


# ------------------------------------------------------------------------------------------------ OPC UA
@pytest.mark.slow
def test_opcua_pulses_and_fail_safe_reach_their_nodes_on_time() -> None:
    with PlcServer("opcua", free_port()) as server:
        left, right, fs, wd = OPCUA_LEFT, OPCUA_RIGHT, OPCUA_FAIL_SAFE, OPCUA_WATCHDOG
        config = opcua_config(server.port)
        o = Output(config)
        with o as out:
            fired = [(*fire_until_written(o, -20.0), left, right), (*fire_until_written(o, 20.0), right, left)]
            writes = server.wait_for(lambda w: time.monotonic() > fired[-1][1] + 0.2, 10.0)
            out.fail_safe(True, "inspectors")
            writes = server.wait_for(lambda w: bool(writes_on(w, "node", fs, True)) and len(w) > len(writes), 5.0)
    for at_s, written_s, node, other in fired:
        # written within a frame of its due time; the server stamps it as it gets to it, after that
        assert 0.0 <= written_s - at_s <= FRAME_S, (node, written_s - at_s)
        on = [t for t in writes_on(writes, "node", node, True) if written_s <= t < written_s + 0.15]
        assert len(on) == 1, (node, [t - written_s for t in writes_on(writes, "node", node, True)])
        assert not [t for t in writes_on(writes, "node", other, True) if written_s <= t < written_s + 0.15]
    assert {w["address"] for w in writes} <= {left, right, fs, wd}
    assert all(w["ok"] for w in writes)
    assert writes_on(writes, "node", fs, True)


# ------------------------------------------------------------------------------------------------ the whole gateway
HEARTBEAT_S = 0.1  # the inspectors' heartbeat interval in these tests
TIMEOUT_S = 4 * HEARTBEAT_S  # the gateway's controller.timeout_s


@contextlib.contextmanager
def running_gateway(plc_port: int, opcua: bool = False, **controller_over: Any) -> Iterator[tuple[Gateway, int]]:
    """The gateway (controller core + PLC output) serving on a free port in a thread; stopped afterwards."""
    port = free_port()
    controller = {"bind": f"tcp://127.0.0.1:{port}", "timeout_s": TIMEOUT_S, **controller_over}
    config = (opcua_config if opcua else modbus_config)(plc_port, controller=controller, metrics={"port": 0})
    gateway = Gateway(config)
    thread = threading.Thread(target=gateway.run, daemon=True)
    thread.start()
    try:
        assert gateway.ready.wait(20), "the gateway did not start"
        assert gateway.plc.wait_for(lambda o: o.connected, 10), "the gateway never reached the PLC"
        yield gateway, port
    finally:
        gateway.stop()
        thread.join(20)
        assert not thread.is_alive()


@pytest.mark.slow
def test_end_to_end_the_inspectors_link_drives_the_right_coil_on_time(modbus: PlcServer) -> None:
    """The inspector's own link (clock offset, absolute fire times) -> gateway -> Modbus server."""
    with running_gateway(modbus.port) as (gateway, port), RejectLink(link_cfg(port), metrics=fresh_metrics()) as link:
        link.set_progress(time.monotonic() + 3600, True, "ok")  # everything reaching the ejector is decided
        assert gateway.plc.wait_for(lambda o: not o.in_fail_safe, 10), gateway.plc.fail_safe_reasons
        wait_for(lambda: link.controller_up, 10, "the link hearing the gateway")
        plan = [(1, 0.5, -40.0, LEFT), (2, 0.7, 60.0, RIGHT), (3, 0.9, -200.0, LEFT)]
        sent = []
        for bunch, fire_in_s, across, _ in plan:
            d = replace(decision(bunch, fire_in_s), across_mm=across)
            link.submit(d)
            sent.append(d.fire_at_s)
        fired = waited(lambda: link.metrics.value("inspector_rejects_fired_total") == 3, 10)
        assert fired, [
            line
            for line in link.metrics.exposition().splitlines()
            if "reject" in line and not line.startswith("#") and "_created" not in line
        ] + [f"gateway {e}: {gateway.metrics.value('inspector_gateway_events_total', {'event': e})}" for e in EVENTS]
        writes = modbus.snapshot()
    # the gateway's own word (its fired reports): each coil written within a frame of its fire time
    assert len(link.fire_errors_s) == 3 and all(abs(e) <= FRAME_S for e in link.fire_errors_s), link.fire_errors_s
    for (bunch, _, _, coil), at_s in zip(plan, sent, strict=True):
        # the PLC stamps a write as it gets to it: never early, later only by transport (and a busy machine)
        on = [t for t in writes_on(writes, "coil", coil, 1) if at_s - FRAME_S <= t < at_s + 0.15]
        assert len(on) == 1, (bunch, coil, [t - at_s for t in writes_on(writes, "coil", coil, 1)])
    assert {w["address"] for w in writes if w["kind"] == "coil"} <= {LEFT, RIGHT, FAIL_SAFE}
    assert gateway.metrics.value("inspector_gateway_events_total", {"event": "fired"}) == 3


@pytest.mark.slow
def test_a_silent_inspector_puts_the_line_in_fail_safe_within_one_heartbeat(modbus: PlcServer) -> None:
    with running_gateway(modbus.port) as (gateway, port):
        peer = RawInspector(port)
        try:
            last_hb = 0.0
            for _ in range(10):
                peer.heartbeat(time.monotonic() + 3600)
                last_hb = time.monotonic()
                time.sleep(HEARTBEAT_S)
            assert not gateway.plc.in_fail_safe, gateway.plc.fail_safe_reasons
            # the inspector dies: no more heartbeats
            writes = modbus.wait_for(lambda w: [t for t in writes_on(w, "coil", FAIL_SAFE, 1) if t > last_hb], 10)
            on = [t for t in writes_on(writes, "coil", FAIL_SAFE, 1) if t > last_hb]
            assert on, "the fail-safe output was never set"
            late_s = on[0] - (last_hb + TIMEOUT_S)
            assert late_s <= HEARTBEAT_S, f"fail-safe {late_s:.3f} s after the inspector's timeout ran out"
            # it comes back, healthy: fail-safe released; then it says it is unhealthy: fail-safe again at once
            peer.heartbeat(time.monotonic() + 3600)
            modbus.wait_for(lambda w: bool([t for t in writes_on(w, "coil", FAIL_SAFE, 0) if t > on[0]]), 10)
            said_s = time.monotonic()
            peer.heartbeat(time.monotonic() + 3600, healthy=False, reason="ring full")
            writes = modbus.wait_for(lambda w: [t for t in writes_on(w, "coil", FAIL_SAFE, 1) if t > said_s], 10)
            again = [t for t in writes_on(writes, "coil", FAIL_SAFE, 1) if t > said_s]
            assert again and again[0] - said_s <= HEARTBEAT_S, again
        finally:
            peer.close()


@pytest.mark.slow
def test_the_inspector_holding_fail_safe_and_a_stranger_are_named_and_alerted(
    modbus: PlcServer, tmp_path: Path
) -> None:
    """Two expected inspectors, one heard: the gateway says which one holds the line in fail-safe, and that it
    denied a key not on its allow-list; promtool fires the gateway's alerts over the metrics it serves."""
    subprocess.run([*SIM, "--make-keys", str(tmp_path / "keys")], check=True, capture_output=True)
    server_public = (tmp_path / "keys" / "controller.key").read_text().split('public-key = "')[1].split('"')[0]
    keys = {name: zmq.curve_keypair() for name in ("line1", "line2", "rogue")}
    (tmp_path / "allow").write_text("".join(f"{keys[n][0].decode()} {n}\n" for n in ("line1", "line2")))
    curve = {"curve_secret_key_file": tmp_path / "keys" / "controller.key_secret", "allow": tmp_path / "allow"}
    with running_gateway(modbus.port, **curve) as (gateway, port):
        before = generate_latest(gateway.metrics.registry).decode()
        peers = {n: RawInspector(port, n, (server_public.encode(), *keys[n])) for n in ("line1", "rogue")}
        try:
            for peer in peers.values():
                peer.heartbeat(time.monotonic() + 3600)
            assert isinstance(peers["line1"].recv(messages.ControllerHeartbeat), messages.ControllerHeartbeat)
            held = {"peer": "line2"}
            wait_for(lambda: gateway.metrics.value("inspector_gateway_events_total", {"event": "denied"}) >= 1)
            wait_for(lambda: gateway.metrics.value("inspector_gateway_peer_fail_safe", {"peer": "line1"}) == 0)
            assert gateway.metrics.value("inspector_gateway_peer_fail_safe", held) == 1
            assert gateway.plc.in_fail_safe  # line2 never heard
            after = generate_latest(gateway.metrics.registry).decode()
        finally:
            for peer in peers.values():
                peer.close()
    fired = firing(before, after, tmp_path, GATEWAY_RULES, "inspector-gateway")
    assert fired == {"InspectorGatewayFailSafe", "InspectorGatewayPeerDenied"}, fired


@pytest.mark.slow
def test_a_reject_that_cannot_fire_is_nacked_and_never_written(modbus: PlcServer) -> None:
    with running_gateway(modbus.port) as (gateway, port):
        peer = RawInspector(port)
        try:
            peer.heartbeat(time.monotonic() + 3600)
            assert gateway.plc.wait_for(lambda o: not o.in_fail_safe, 10)
            peer.reject(1, fire_in_s=-0.2)  # its deadline has passed: refused on arrival
            nack = peer.recv(messages.Nack)
            assert isinstance(nack, messages.Nack) and (nack.seq, nack.reason) == (1, "late")
            modbus.kill()  # the PLC goes: a reject due now cannot reach the valve
            assert gateway.plc.wait_for(lambda o: not o.connected, 10)
            peer.heartbeat(time.monotonic() + 3600)
            peer.reject(2, fire_in_s=0.05)
            nack = peer.recv(messages.Nack)
            assert isinstance(nack, messages.Nack) and (nack.seq, nack.reason) == (2, "output"), nack
        finally:
            peer.close()
    assert not [w for w in modbus.snapshot() if w["kind"] == "coil" and w["address"] in (LEFT, RIGHT) and w["value"]]
    assert gateway.metrics.value("inspector_gateway_events_total", {"event": "refused"}) == 2


@pytest.mark.slow
def test_end_to_end_over_opc_ua_a_reject_drives_its_node_on_time_and_is_reported_fired() -> None:
    with PlcServer("opcua", free_port()) as server, running_gateway(server.port, opcua=True) as (gateway, port):
        peer = RawInspector(port)
        try:
            peer.heartbeat(time.monotonic() + 3600)
            assert gateway.plc.wait_for(lambda o: not o.in_fail_safe, 10), gateway.plc.fail_safe_reasons
            at_s = time.monotonic() + 0.3
            peer.sock.send(reject_frame(peer.session, 1, at_s))  # across_mm 1.5: the right valve
            fired = peer.recv(messages.Fired)
            assert isinstance(fired, messages.Fired) and fired.seq == 1, fired
            writes = server.wait_for(lambda w: bool(writes_on(w, "node", OPCUA_RIGHT, True)), 5)
        finally:
            peer.close()
    assert abs(fired.at_s - at_s) <= FRAME_S  # the gateway's word: written within a frame of the fire time
    on = writes_on(writes, "node", OPCUA_RIGHT, True)  # stamped by the server: never early, later by transport
    assert len(on) == 1 and at_s - FRAME_S <= on[0] < at_s + 0.15, [t - at_s for t in on]
    assert not writes_on(writes, "node", OPCUA_LEFT, True)


@pytest.mark.slow
def test_the_command_serves_until_sigterm_and_leaves_fail_safe_on(modbus: PlcServer, tmp_path: Path) -> None:
    """As systemd runs it: READY, WATCHDOG pings and STOPPING on $NOTIFY_SOCKET; SIGTERM ends it with status 0 and
    the fail-safe coil set."""
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        EXAMPLE.read_text()
        .replace("bind: tcp://127.0.0.1:5560", f"bind: tcp://127.0.0.1:{port}")
        .replace("host: 192.168.10.20", "host: 127.0.0.1")
        .replace("port: 502", f"port: {modbus.port}")
        .replace("port: 9110", "port: 0")
    )
    notify_dir = Path(tempfile.mkdtemp(prefix="gw", dir="/tmp"))  # a unix socket path must stay short
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_dir / "notify"))
    notify.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_dir / "notify"), "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen([sys.executable, "-m", "inspector", "gateway", "--config", str(config)], env=env)
    said: list[str] = []
    try:
        modbus.wait_for(lambda w: len(writes_on(w, "coil", 8, 1)) > 0, 30)  # the example's fail-safe coil
        peer = RawInspector(port)
        try:
            peer.heartbeat(time.monotonic() + 3600)
            modbus.wait_for(lambda w: len(writes_on(w, "coil", 8, 0)) > 0, 10)
            time.sleep(1.2)  # a few watchdog pings (every WatchdogSec / 2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            peer.close()
        with contextlib.suppress(TimeoutError):
            while True:
                said.extend(notify.recv(4096).decode().splitlines())
    finally:
        notify.close()
        shutil.rmtree(notify_dir, ignore_errors=True)
        if proc.poll() is None:
            proc.kill()
    coil8 = [w["value"] for w in modbus.snapshot() if w["kind"] == "coil" and w["address"] == 8]
    assert coil8[-1] == 1, coil8
    assert "READY=1" in said and "STOPPING=1" in said, said
    assert said.count("WATCHDOG=1") >= 2, said


# ------------------------------------------------------------------------------------------------ systemd unit
UNIT = DEPLOY / "inspector-gateway.service"


def test_unit_is_hardened_and_runs_the_checked_config() -> None:
    required = """
        Type=notify | User=inspector | Restart=on-failure | NoNewPrivileges=yes | CapabilityBoundingSet=
        ProtectSystem=strict | PrivateDevices=yes | SystemCallFilter=@system-service | IPAddressDeny=any
        IPAddressAllow=localhost | ExecStart=/opt/inspector/venv/bin/inspector gateway --config /etc/inspector/gateway.yaml
        ExecStartPre=/opt/inspector/venv/bin/inspector gateway --check /etc/inspector/gateway.yaml
    """
    settings = _unit_settings(UNIT)
    for item in (i.strip() for line in required.strip().splitlines() for i in line.split(" | ")):
        key, value = item.split("=", 1)
        assert settings.get(key) == [value], (key, settings.get(key))
    assert {"WatchdogSec", "MemoryMax", "TasksMax", "TimeoutStopSec"} <= set(settings)


def test_unit_verifies_with_systemd_analyze(tmp_path: Path) -> None:
    need_tool("systemd-analyze", "systemd")
    assert _verify(UNIT.read_text(), tmp_path, UNIT.name) == ""
    assert "Unknown key" in _verify(UNIT.read_text().replace("PrivateDevices=", "PrivateDevice="), tmp_path, UNIT.name)


def test_install_sh_lays_out_the_gateway_and_keeps_its_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    units = root / "etc/systemd/system"
    assert _install("--prefix", str(root), "--no-venv", "--gateway", "--allow-ip", "10.1.2.0/24").returncode == 0
    config = root / "etc/inspector/gateway.yaml"
    assert config.read_text() == EXAMPLE.read_text()
    assert (units / UNIT.name).read_text() == UNIT.read_text()
    assert "IPAddressAllow=10.1.2.0/24" in (units / f"{UNIT.name}.d/network.conf").read_text()
    # an upgrade without the flag keeps the gateway installed, its edited config, and updates its drop-in
    config.write_text("# edited for the line's PLC\n")
    proc = _install("--prefix", str(root), "--no-venv")
    assert proc.returncode == 0, proc.stderr
    assert config.read_text() == "# edited for the line's PLC\n" and "keeping existing" in proc.stdout
    assert (units / UNIT.name).is_file() and not (units / f"{UNIT.name}.d/network.conf").exists()
    dry = _install("--prefix", str(root), "--dry-run")
    assert any(line.endswith("[cpu,gateway]") for line in dry.stdout.splitlines()), dry.stdout
    assert _install("--prefix", str(root), "--uninstall").returncode == 0
    assert not (units / UNIT.name).exists() and config.is_file()


# ------------------------------------------------------------------------------------------------ alerts
ALERTS = DEPLOY / "prometheus" / "gateway-alerts.yml"


def test_alert_rules_check_test_and_name_only_metrics_the_gateway_exposes(tmp_path: Path) -> None:
    need_tool("promtool", "prometheus")
    for argv in (["check", "rules", ALERTS.name], ["test", "rules", "gateway-alerts-test.yml"]):
        proc = subprocess.run(["promtool", *argv], capture_output=True, text=True, cwd=ALERTS.parent, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(ALERTS.read_text().replace("inspector_gateway_plc_up == 0", "inspector_gateway_plc_up == (("))
    assert subprocess.run(["promtool", "check", "rules", str(broken)], capture_output=True, check=False).returncode
    rules = yaml.safe_load(ALERTS.read_text())
    used = {m for g in rules["groups"] for r in g["rules"] for m in re.findall(r"\binspector_[a-z0-9_]+", r["expr"])}
    assert used and used <= _exposed_sample_names(GatewayMetrics().registry), used


# ------------------------------------------------------------------------------------------------ config
EXAMPLE = DEPLOY / "gateway.example.yaml"


def test_the_example_config_checks_clean_and_documents_every_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_main(["gateway", "--check", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.strip() == f"{EXAMPLE}: OK"
    assert undocumented_keys(EXAMPLE, GatewayConfig) == []


def test_check_prints_one_line_per_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text(
        EXAMPLE.read_text()
        .replace("protocol: modbus", "protocol: profinet")
        .replace("pulse_s: 0.05", "pulse_s: 0")
        .replace("interval_s: 0.2", "interval_sec: 0.2")
    )
    assert cli_main(["gateway", "--check", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3, err
    assert err[0].startswith(f"inspector: error: {bad}:") and "plc.protocol: must be 'modbus' or 'opcua'" in err[0]
    assert "pulse_s: must be greater than 0" in err[1]
    assert "watchdog.interval_sec: unknown key; did you mean interval_s?" in err[2]


def test_config_rejects_addresses_of_the_wrong_kind(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "plc:\n  protocol: modbus\n  host: 10.0.0.5\n"
        "ejectors:\n  - {name: a, output: 'ns=2;s=X'}\n  - {name: a, output: 3}\n"
        "fail_safe:\n  output: 3\n"
        "reconnect:\n  initial_s: 9\n  max_s: 1\n"
        "pulse_s: -1\n"
    )
    with pytest.raises(ConfigError) as err:
        load_gateway_config(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 3, lines  # ejectors, reconnect, pulse_s: fail_safe is checked against valid ejectors only
    assert lines[0].startswith(f"{path}:4: ejectors: ejector names must differ")
    assert any("pulse_s: must be greater than 0" in line for line in lines)
    assert any("reconnect: reconnect.initial_s must not exceed" in line for line in lines)


def test_config_needs_a_fail_safe_action(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "plc: {protocol: opcua, endpoint: 'opc.tcp://plc:4840'}\nejectors: [{name: a, output: 'ns=2;s=A'}]\n"
    )
    with pytest.raises(ConfigError, match=r"fail_safe: give fail_safe\.output"):
        load_gateway_config(path)


def test_a_missing_protocol_library_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.setitem(sys.modules, "pymodbus", None)  # as if the gateway extra were not installed
    driver = open_driver(modbus_config(1).plc)
    with pytest.raises(InspectorError, match=r"pip install 'grape-spider-inspector\[gateway\]'") as err:
        asyncio.run(driver.connect())
    assert "\n" not in str(err.value)
