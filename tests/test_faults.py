"""Fault injection end to end, on loopback, in bounded time: the daemon (real processes) against the reference
controller, on drawn footage whose bunches are known. Each test breaks one thing — a 4 s stall of the daemon, a
controller restart after it acked, a model that answers NaN, a rogue peer, a subscription flood, a frame rate the
machine cannot inspect — and asserts the rules that matter at the ejector:

- no spider bunch passes for a software reason: each one is fired at, or arrives while the controller is in
  fail-safe (ejecting everything);
- no reject fires outside one frame interval of its bunch's true arrival (a stretch from the bunch's leading end);
- every reject the daemon decided was fired or counted missed by the daemon.

Shared helpers live in ``tests/sim.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
import zmq
from onnx import helper, numpy_helper

from inspector import messages
from inspector.daemon import EXIT_LINK_FAILED
from inspector.link import PUB_MAX_SUBSCRIPTIONS
from inspector.perf.ejector import EjectorReport, failsafe_intervals
from tests.sim import (
    SIM,
    Line,
    RawInspector,
    StderrLines,
    check_ejector_against_truth,
    check_every_miss_counted,
    events,
    rss_bytes,
    stop,
    waited,
)
from tests.spot_model import busy_spot_model, spot_model, write_busy_spot_model

pytestmark = pytest.mark.slow
FAST_LINK = {"heartbeat_interval_s": 0.2, "controller_timeout_s": 1.0}
SIM_TIMEOUT_S = 0.8  # the controller's: four of the daemon's heartbeat intervals


def run_line(line: Line, daemon: subprocess.Popen[str], sim: subprocess.Popen[bytes]) -> tuple[int, str]:
    """Wait for the daemon to finish its footage, let the last rejects come due, stop the controller."""
    err = StderrLines(daemon)
    try:
        status = daemon.wait(120)
        rows = line.decided()
        due = max([time.monotonic(), *(float(r["fire_at_s"]) + 1.0 for r in rows if r["decision"] == "reject")])
        waited(lambda: time.monotonic() > due, 15)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        stop(sim)
    return status, err.text()


def check_line(line: Line, stderr: str) -> EjectorReport:
    assert "Traceback" not in stderr, stderr
    check_every_miss_counted(line.decided(), line.sim_log, stderr)
    return check_ejector_against_truth(line)


def test_a_4_s_stall_of_the_daemon_puts_the_controller_in_fail_safe_and_nothing_fires_late(tmp_path: Path) -> None:
    line = Line(tmp_path, n_frames=110, n_bunches=8, link=FAST_LINK)
    sim = line.simulator("--timeout-s", str(SIM_TIMEOUT_S))
    daemon = line.daemon()
    assert waited(lambda: len(line.decided()) >= 2, 60), "no decision before the stall"
    stalled_at = time.monotonic()
    os.kill(daemon.pid, signal.SIGSTOP)
    time.sleep(4.0)
    os.kill(daemon.pid, signal.SIGCONT)
    status, err = run_line(line, daemon, sim)
    assert status == 0, err
    report = check_line(line, err)
    # fail-safe came within the controller's timeout (plus a heartbeat) of the stall, and lasted through it
    safe = failsafe_intervals(events(line.sim_log))
    during = [(lo, hi) for lo, hi in safe if lo <= stalled_at + 4.0 and hi >= stalled_at]
    assert during and during[0][0] <= stalled_at + SIM_TIMEOUT_S + 0.2 + 0.1, (stalled_at, during)
    assert during[0][1] >= stalled_at + 4.0
    assert report.spiders_fired or report.spiders_failsafe


def test_controller_restart_after_acking_resends_and_fires_on_time(tmp_path: Path) -> None:
    line = Line(tmp_path, n_frames=100, n_bunches=6, link=FAST_LINK)
    sim = line.simulator("--timeout-s", str(SIM_TIMEOUT_S))
    daemon = line.daemon()
    assert waited(lambda: line.sim_events("ack"), 60), "nothing acked"
    sim.send_signal(signal.SIGKILL)  # it dies with acked rejects not fired yet
    sim.wait(10)
    acked = {e["seq"] for e in line.sim_events("ack")}
    fired_before = {e["seq"] for e in line.sim_events("fired")}
    time.sleep(1.0)
    sim = line.simulator("--timeout-s", str(SIM_TIMEOUT_S))
    status, err = run_line(line, daemon, sim)
    assert status == 0, err
    check_line(line, err)
    assert "controller restarted" in err
    lost = acked - fired_before
    assert lost, "the controller fired everything before it died: nothing to resend"
    fired_after = {e["seq"] for e in line.sim_events("fired")}
    assert lost <= fired_after, f"acked rejects lost in the restart: {sorted(lost - fired_after)}"


def write_nan_model(root: Path) -> Path:
    """The spot model with every output multiplied by NaN: a model that has gone wrong."""
    model = spot_model()
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan"))
    for out in g.output:
        for node in g.node:
            node.output[:] = [f"{o}_ok" if o == out.name else o for o in node.output]
            node.input[:] = [f"{i}_ok" if i == out.name else i for i in node.input]
        g.node.append(helper.make_node("Mul", [f"{out.name}_ok", "nan"], [out.name]))
    onnx.checker.check_model(model)
    path = root / "nan.onnx"
    onnx.save(model, str(path))
    (root / "nan.yaml").write_text((root / "spot.yaml").read_text().replace("spot-detector", "nan-model"))
    return path


def test_a_model_answering_nan_never_crashes_and_never_passes_a_bunch(tmp_path: Path) -> None:
    line = Line(tmp_path, n_frames=60, n_bunches=4, link=FAST_LINK)
    nan_model = write_nan_model(tmp_path)
    line.config.write_text(line.config.read_text().replace(str(line.model), str(nan_model)))
    sim = line.simulator("--timeout-s", str(SIM_TIMEOUT_S))
    status, err = run_line(line, line.daemon(), sim)
    assert status == 0, err
    check_line(line, err)
    rows = line.decided()
    assert rows and all(r["decision"] == "reject" for r in rows), [(r["bunch_id"], r["reason"]) for r in rows]
    reasons = " ".join(str(e.get("why")) for e in line.sim_events("failsafe"))
    assert "model" in reasons, reasons  # unhealthy heartbeats put the controller in fail-safe


def test_a_rogue_peer_can_neither_fire_nor_hold_off_the_fail_safe(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    subprocess.run([*SIM, "--make-keys", str(keys)], check=True, capture_output=True)
    server_public = (keys / "controller.key").read_text().split('public-key = "')[1].split('"')[0]
    daemon_public, daemon_secret = zmq.curve_keypair()
    (tmp_path / "daemon.key_secret").write_text(daemon_secret.decode())
    (tmp_path / "allow").write_text(f"{daemon_public.decode()} line1\n")
    link = {
        **FAST_LINK,
        "curve_server_public_key": server_public,
        "curve_client_secret_key_file": str(tmp_path / "daemon.key_secret"),
    }
    line = Line(tmp_path, n_frames=60, n_bunches=4, link=link)
    sim = line.simulator(
        "--timeout-s",
        str(SIM_TIMEOUT_S),
        "--curve-secret-key-file",
        str(keys / "controller.key_secret"),
        "--allow",
        str(tmp_path / "allow"),
    )
    rogue_pub, rogue_sec = zmq.curve_keypair()
    port = int(line.controller.rsplit(":", 1)[1])
    rogue = RawInspector(port, "rogue", (server_public.encode(), rogue_pub, rogue_sec))
    daemon = line.daemon()
    err = StderrLines(daemon)
    try:
        for seq in range(1, 40):  # the whole run: heartbeats claiming everything is decided, rejects of its own
            rogue.heartbeat(time.monotonic() + 60.0)
            rogue.reject(seq, 0.5)
            time.sleep(0.1)
        status = daemon.wait(120)
        rogue_until = time.monotonic() + 3.0
        while time.monotonic() < rogue_until:  # the daemon is gone; the rogue keeps going
            rogue.heartbeat(time.monotonic() + 60.0)
            time.sleep(0.1)
    finally:
        rogue.close()
        if daemon.poll() is None:
            daemon.kill()
        stop(sim)
    assert status == 0, err.text()
    check_line(line, err.text())
    assert line.sim_events("denied"), "the rogue key was never refused"
    assert {e["session"] for e in line.sim_events("reject")} <= {e["session"] for e in line.sim_events("peer")}
    assert [e["key"] for e in line.sim_events("peer")] == ["line1"]
    assert line.sim_events("failsafe")[-1]["state"] == "on"  # the daemon left: fail-safe, whatever the rogue says


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in a /metrics text (0 when absent)."""
    for row in text.splitlines():
        if row.startswith(name + " "):
            return float(row.split()[1])
    return 0.0


def busy_line_with_pub(tmp_path: Path) -> tuple[Line, str, subprocess.Popen[bytes], subprocess.Popen[str], StderrLines]:
    """A line with a bunch every 0.6 s all along, its controller and its daemon started: (line, the daemon's PUB
    address, simulator, daemon, the daemon's stderr)."""
    line = Line(tmp_path, n_frames=400, n_bunches=70, link=FAST_LINK)
    pub = str(yaml.safe_load(line.config.read_text())["link"]["publish"])
    sim = line.simulator("--timeout-s", str(SIM_TIMEOUT_S))
    daemon = line.daemon()
    return line, pub, sim, daemon, StderrLines(daemon)


def decision_subscriber(ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, messages.PUB_TOPIC_DECISION)
    return sub


def test_a_subscription_flood_does_not_grow_the_daemon(tmp_path: Path) -> None:
    """60,000 random subscriptions on the decision PUB port, in ten waves from fresh sockets: the daemon's memory
    stays within 5 %, and a subscriber that connects afterwards still gets the decisions."""
    line, pub, sim, daemon, err = busy_line_with_pub(tmp_path)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    listener = decision_subscriber(ctx)
    got: list[bytes] = []
    try:
        assert waited(lambda: len(line.decided()) >= 1, 60)
        time.sleep(10.0)  # steady state: the recorder's buffer of the last seconds of frames is full
        before = rss_bytes(daemon.pid)
        rng = np.random.default_rng(0)
        for _ in range(10):
            flood = ctx.socket(zmq.SUB)
            flood.setsockopt(zmq.LINGER, 0)
            flood.setsockopt(zmq.SNDHWM, 0)  # queue every subscription: all of them are sent
            flood.connect(pub)
            for _ in range(6_000):
                flood.setsockopt(zmq.SUBSCRIBE, rng.bytes(32))
            time.sleep(0.5)
            flood.close(0)
        time.sleep(2.0)
        after = rss_bytes(daemon.pid)
        text = line.metrics()
        listener.connect(pub)
        assert waited(lambda: listener.poll(0) and bool(got.append(listener.recv_multipart()[1]) or True), 30)
        daemon.send_signal(signal.SIGTERM)
        status = daemon.wait(60)
    finally:
        listener.close(0)
        ctx.term()
        if daemon.poll() is None:
            daemon.kill()
        stop(sim)
    assert status == 0, err.text()
    growth = (after - before) / before
    print(
        f"daemon RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB ({100 * growth:+.2f} %) under 60,000 subscriptions"
    )
    assert growth < 0.05, f"RSS {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB under 60k subscriptions"
    assert metric(text, "inspector_pub_resets_total") >= 10, text
    assert got and b'"type":"decision"' in got[0]


BUSY_TILE_S = 0.06  # the overload test's model: time per tile (3.6 frame intervals at 60 fps)


def busy_model(root: Path) -> Path:
    """The spot model with work added (`busy_spot_model`) so that on this machine, on one thread as the daemon runs it,
    a tile takes about BUSY_TILE_S: an inspection of a few tiles lasts many 60 fps frame intervals, on a fast machine
    or a slow one. Timed here to size the model, never asserted on."""
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = session_options.inter_op_num_threads = 1
    probe_layers = 4
    session = ort.InferenceSession(
        busy_spot_model(probe_layers).SerializeToString(), session_options, providers=["CPUExecutionProvider"]
    )
    tiles = np.random.default_rng(0).random((8, 3, 64, 64), np.float32)
    session.run(None, {"input": tiles})  # warm-up
    runs_s = []
    for _ in range(3):
        started = time.perf_counter()
        session.run(None, {"input": tiles})
        runs_s.append(time.perf_counter() - started)
    per_layer_tile_s = sorted(runs_s)[1] / (probe_layers * len(tiles))
    layers = min(64, max(1, round(BUSY_TILE_S / per_layer_tile_s)))
    return write_busy_spot_model(root, layers)


def test_frames_faster_than_the_machine_inspects(tmp_path: Path) -> None:
    """Footage at 60 fps, more than this machine inspects: a model made slow on purpose (`busy_model`: one thread,
    each inspected frame lasts many frame intervals) and a frame ring of 2 slots, so frames are dropped or skipped on
    any machine, bunches may be rejected uninspected; and still no spider passes and nothing fires off its bunch."""
    line = Line(tmp_path, fps=60.0, n_frames=330, n_bunches=4, link=FAST_LINK, model=busy_model(tmp_path))
    config = yaml.safe_load(line.config.read_text())
    config["model"]["threads"] = 1
    config["ring"] = {"slots": 2}
    line.config.write_text(yaml.safe_dump(config))
    sim = line.simulator("--timeout-s", str(SIM_TIMEOUT_S))
    status, err = run_line(line, line.daemon(), sim)
    assert status == 0, err
    report = check_line(line, err)
    assert sorted(label for label, _ in report.spiders_fired + report.spiders_failsafe) == [2, 4]
    processed = re.search(r"stopping: (\d+) frames", err)
    assert processed is not None, err
    print(f"{processed.group(1)} of 330 frames processed; fires checked {report.fires_checked}: {report}")
    assert int(processed.group(1)) < 330, "the machine kept up: no overload"


def test_the_link_thread_dying_ends_the_daemon_with_status_3_and_the_controller_fails_safe(tmp_path: Path) -> None:
    """The daemon runs out of file descriptors (its soft RLIMIT_NOFILE lowered from outside, as a descriptor leak
    elsewhere in the process would) while a subscriber floods the decision PUB: the link thread must close and bind
    that socket again, cannot, and dies. The daemon notices, logs it as a fault and exits with status 3 (systemd
    restarts it); its heartbeats stop, so the controller goes fail-safe within its timeout and stays there."""
    line, pub, sim, daemon, err = busy_line_with_pub(tmp_path)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = decision_subscriber(ctx)
    sub.connect(pub)
    limits = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    try:
        assert sub.poll(120_000), "no decision published: the daemon never ran"  # connected, the link works
        resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (3, limits[1]))  # no new descriptor from now on
        for i in range(PUB_MAX_SUBSCRIPTIONS + 1):  # the flood that makes the link reset its PUB socket
            sub.setsockopt(zmq.SUBSCRIBE, b"flood%d" % i)
        assert waited(lambda: err.has("reject link thread died") or daemon.poll() is not None, 60)
        died_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, limits)  # the shortage was passing
        status = daemon.wait(60)
        assert waited(lambda: line.sim_events("failsafe")[-1]["state"] == "on", 10)
    finally:
        sub.close(0)
        ctx.term()
        if daemon.poll() is None:
            daemon.kill()
        stop(sim)
    text = err.text()
    assert status == EXIT_LINK_FAILED == 3, text
    assert "FAULT: the reject link thread died; the controller will fail safe" in text
    assert "Too many open files" in text  # the cause, in the traceback of the fault
    assert f"the reject link is dead: stopping (exit status {EXIT_LINK_FAILED})" in text
    last_on = [e for e in line.sim_events("failsafe") if e["state"] == "on"][-1]
    assert "silent" in last_on["why"], last_on
    assert last_on["at_s"] <= died_at + SIM_TIMEOUT_S + 1.0, (last_on, died_at)
