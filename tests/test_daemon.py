"""The daemon end to end: real processes (inspector run, its capture process, the actuator simulator), real sockets
on loopback, drawn footage with known truth and the hand-weighted spot-detector model."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from inspector.decision import fire_time_s
from inspector.metrics import INTERFACE_METRIC_NAMES
from tests.drawn import bunch_under, calibration, center_x, check_rows_against_truth, scene
from tests.sim import FPS, ROOT, Line, StderrLines, check_ejector_against_truth, stop, wait_exit, waited
from tests.test_deploy import METRIC_RE, _dashboard_exprs, _rule_exprs

pytestmark = pytest.mark.slow


def test_spider_bunches_are_fired_at_their_arrival_at_the_ejector(tmp_path: Path) -> None:
    line = Line(tmp_path, n_frames=80)  # the belt runs on 4 s after the last bunch: the review page is seen live
    sim = line.simulator()
    try:
        daemon = line.daemon()
        names_seen: set[str] = set()

        def scrape() -> bool:
            try:
                text = line.metrics()
            except OSError:
                return False
            for row in text.splitlines():
                if row.startswith("# TYPE "):  # families without samples yet (labelled, never touched)
                    name, kind = row.split()[2:4]
                    names_seen.update(
                        [name] + ([f"{name}_bucket", f"{name}_count", f"{name}_sum"] if kind == "histogram" else [])
                    )
                elif row and not row.startswith("#"):
                    names_seen.add(row.split("{")[0].split(" ")[0])
            return "inspector_bunches_total{" in text

        assert waited(scrape, 30), "metrics never showed a decided bunch"
        # the daemon's review page lists the spider bunches, newest first, while it runs
        assert waited(lambda: line.review_rejects() == [4, 2], 30), line.review_rejects()
        status, err = wait_exit(daemon)
        assert status == 0, err
        assert "Traceback" not in err
        # the last rejects are due ~5 s after their frame: wait for the simulator to fire them
        assert waited(lambda: len(line.sim_events("fired")) >= 2, 15), line.sim_log.read_text()
    finally:
        stop(sim)
    missing = [n for n in INTERFACE_METRIC_NAMES if n not in names_seen and f"{n}_bucket" not in names_seen]
    assert not missing, f"metrics missing from /metrics: {missing}"
    # every metric the Grafana dashboard and the alert rules use is served by a running daemon
    used = {m for e in _dashboard_exprs() + _rule_exprs() for m in METRIC_RE.findall(e)}
    assert used and not sorted(used - names_seen), sorted(used - names_seen)
    truth = {b.bunch_id: b for b in scene()}
    by_drawn = check_rows_against_truth(line.decided(), scene(), FPS)
    assert {bid: r["reason"] for bid, r in by_drawn.items()} == {1: "pass", 2: "spider", 3: "pass", 4: "spider"}
    rows = {r["bunch_id"]: r for r in line.decided()}
    assert sorted(rows) == [1, 2, 3, 4]
    assert {bid for bid, r in rows.items() if r["decision"] == "reject"} == {2, 4}
    cal = calibration()
    for bid, r in rows.items():
        b = truth[bid]
        cx = center_x(b, r["frame"], FPS, cal)
        true_fire = fire_time_s(r["t_capture_s"], (cx, b.y), (320, 240), cal)
        assert abs(r["fire_at_s"] - true_fire) <= 1 / FPS, (bid, r)
    fired = line.sim_events("fired")
    assert sorted(e["bunch_id"] for e in fired) == [2, 4]
    report = check_ejector_against_truth(line)
    assert report.spiders_fired == [(2, 0), (4, 0)] and report.fires_checked == 2  # each within one frame
    assert not line.sim_events("missed") and not line.sim_events("refused")
    # the watermark and health in the daemon's heartbeats took the controller out of fail-safe while it inspected
    assert "off" in [e["state"] for e in line.sim_events("failsafe")]
    assert sorted(p.name for p in (tmp_path / "evidence").iterdir()) == sorted(rows[b]["evidence"] for b in (2, 4))


def test_controller_absent_at_start_gets_every_reject_when_it_comes(tmp_path: Path) -> None:
    line = Line(tmp_path)
    daemon = line.daemon()
    time.sleep(3.0)  # the daemon runs (and may already have sent rejects) with nobody listening
    sim = line.simulator()
    try:
        status, err = wait_exit(daemon)
        assert status == 0, err
        assert waited(lambda: len(line.sim_events("fired")) >= 2, 15), err
    finally:
        stop(sim)
    assert sorted(e["bunch_id"] for e in line.sim_events("fired")) == [2, 4]


def _unit_stop_timeout_s() -> float:
    """TimeoutStopSec of the shipped unit: how long systemd waits before it kills the daemon."""
    for text in (ROOT / "deploy" / "inspector.service").read_text().splitlines():
        if text.startswith("TimeoutStopSec="):
            return float(text.split("=", 1)[1])
    raise AssertionError("deploy/inspector.service sets no TimeoutStopSec")


def test_sigterm_stops_cleanly_within_the_units_stop_timeout(tmp_path: Path) -> None:
    # the promise is the unit's TimeoutStopSec (after it systemd kills the daemon); a clean stop usually takes ~1 s
    stop_timeout_s = _unit_stop_timeout_s()
    line = Line(tmp_path, n_frames=200)
    daemon = line.daemon()
    assert waited(lambda: line.decided() != [], 30)
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    status, err = wait_exit(daemon, stop_timeout_s + 5)
    assert time.monotonic() - started < stop_timeout_s
    assert status == 0, err
    assert "stopping:" in err


def test_killed_capture_process_is_restarted_and_no_bunch_passes_uninspected(tmp_path: Path) -> None:
    line = Line(tmp_path, n_frames=80)
    daemon = line.daemon()
    try:
        assert waited(lambda: line.decided() != [], 30)
        children = subprocess.run(["pgrep", "-P", str(daemon.pid)], capture_output=True, text=True).stdout.split()
        assert children, "no capture process found"
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        status, err = wait_exit(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert status == 0, err
    assert "capture restart" in err
    # all four bunches ride by in the 80 frames: each decided (or inside an unseen stretch), no spider passed
    rows = line.decided()
    check_rows_against_truth(rows, scene(), FPS, through_frame=31)  # bunch 4 has left the view by frame 31


def test_missing_footage_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    line = Line(tmp_path)
    line.video.unlink()
    status, err = wait_exit(line.daemon())
    assert status == 1
    lines = [x for x in err.strip().splitlines() if "error" in x]
    assert lines and str(line.video) in lines[-1] and "Traceback" not in err


def test_frame_rate_far_above_what_the_cpu_inspects_never_passes_an_uninspected_bunch(tmp_path: Path) -> None:
    line = Line(tmp_path, fps=250.0, n_frames=1000)
    status, err = wait_exit(line.daemon(), 90)
    assert status == 0, err
    rows = line.decided()
    # 1000 frames at 1.2 px each: bunch 4 has left the view by frame 775, so every drawn bunch must be accounted for
    check_rows_against_truth(rows, scene(), 250.0, through_frame=775)


def test_sighup_threshold_changes_decisions_on_the_same_footage_and_a_bad_config_keeps_it(tmp_path: Path) -> None:
    """Clean bunches score 0.12 with the spot model (its bias alone), spider bunches about 1. At threshold 0.5 clean
    bunches pass; after a SIGHUP to 0.1 every clean bunch decided is rejected `spider`: the same footage, another
    decision. A broken config then sent with SIGHUP changes nothing: clean bunches are still rejected, the failure is
    logged at ERROR and counted, and the daemon keeps running."""
    bunches = scene(70)
    line = Line(tmp_path, n_frames=400, n_bunches=len(bunches))
    config = yaml.safe_load(line.config.read_text())

    def clean_rows(since: int = 0) -> list[dict]:
        rows = line.decided()[since:]
        return [
            r
            for r in rows
            if r["across_mm"] is not None and bunch_under(r["bbox_xyxy"], r["frame"], bunches, FPS).spider_dxy is None
        ]

    def judged(since: int, reason: str) -> bool:
        return any(r["reason"] == reason for r in clean_rows(since))

    daemon = line.daemon()
    err = StderrLines(daemon)
    try:
        assert waited(lambda: judged(0, "pass"), 60), err.text(0)
        config["decision"] = {"threshold": 0.1}
        line.config.write_text(yaml.safe_dump(config))
        daemon.send_signal(signal.SIGHUP)
        assert waited(lambda: err.has("threshold now 0.1000"), 30), err.text(0)
        after_reload = len(line.decided())  # every row from here on was decided under the new threshold
        assert waited(lambda: judged(after_reload, "spider"), 30), err.text(0)
        config["decision"] = {"threshold": 7}
        line.config.write_text(yaml.safe_dump(config))
        daemon.send_signal(signal.SIGHUP)
        assert waited(lambda: err.has("ERROR", "reload of", "threshold stays 0.1000"), 30), err.text(0)
        after_bad = len(line.decided())
        assert waited(lambda: judged(after_bad, "spider"), 30), err.text(0)
        assert daemon.poll() is None  # still running
        metrics = line.metrics()
        assert 'inspector_config_reloads_total{result="ok"} 1.0' in metrics
        assert 'inspector_config_reloads_total{result="failed"} 1.0' in metrics
        daemon.send_signal(signal.SIGTERM)
        status = daemon.wait(30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert status == 0, err.text()
    assert "Traceback" not in err.text()
    rows = line.decided()
    check_rows_against_truth(rows, bunches, FPS)
    clean = [r for r in clean_rows() if r["reason"] != "uninspected"]
    reasons = [r["reason"] for r in clean]
    first_reject = reasons.index("spider")
    assert reasons[0] == "pass" and set(reasons[first_reject:]) == {"spider"}, reasons  # one switch, never back
    assert all(r["reason"] == "spider" for r in clean_rows(after_reload) if r["reason"] != "uninspected")
    assert all(0.1 <= r["score"] < 0.5 for r in clean), clean  # the bunches did not change; the threshold did
