"""RejectLink against the reference controller (a real process) and raw controllers, all on loopback."""

from __future__ import annotations

import json
import logging
import math
import signal
import socket
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zmq

from inspector import messages
from inspector.link import LinkError, OffsetFilter, RejectLink, read_secret_key_file
from tests.sim import (
    SIM,
    RawController,
    decision,
    events,
    free_port,
    fresh_metrics,
    link_cfg,
    link_to_raw_controller,
    start_sim,
    stop_sim,
    wait_for,
)


def test_controller_present_acks_fires_on_time_and_metrics(tmp_path: Path) -> None:
    port, log, m = free_port(), tmp_path / "sim.jsonl", fresh_metrics()
    proc = start_sim(log, port)
    try:
        with RejectLink(link_cfg(port), metrics=m, model="demo") as link:
            seqs = [link.submit(decision(i, 0.6)) for i in range(1, 4)]
            assert link.submit(decision(9, 0.6, "pass")) == 0
            wait_for(lambda: link.fired == 3, what="three fired reports")
            assert link.controller_up
    finally:
        stop_sim(proc)
    assert seqs == [1, 2, 3]
    fired = events(log, "fired")
    assert sorted(e["bunch_id"] for e in fired) == [1, 2, 3]
    assert all(e["model"] == "demo" and e["across_mm"] == 12.0 for e in fired)
    assert len(link.fire_errors_s) == 3  # each fired report timed (the e2e tests hold it to one frame interval)
    assert m.value("inspector_rejects_acked_total") == 3
    assert m.value("inspector_rejects_fired_total") == 3
    assert m.value("inspector_rejects_due") == 0
    assert m.value("inspector_rejects_missed_total") == 0
    assert m.value("inspector_decision_latency_seconds_count") == 3
    assert m.value("inspector_decision_slack_seconds_count") == 3


def test_fire_times_are_absolute_on_the_controller_clock() -> None:
    """A controller whose clock is 1000 s ahead gets fire times, deadlines and the watermark on its clock."""
    with link_to_raw_controller(offset_s=1000.0) as (link, ctl, _m):
        d = decision(1, 3.0)
        link.set_progress(time.monotonic() + 2.0, True, "ok")
        link.submit(d, stretch_s=0.4)
        r = ctl.next_reject()
        ctl.send(messages.Ack(r.session, r.seq))
        ctl.wait(lambda: link.acked == 1)
        ctl.wait(lambda: len(ctl.heartbeats) >= 3 and ctl.heartbeats[-1].decided_until_s is not None)
        hb = ctl.heartbeats[-1]
    est = link.offsets.best()
    assert est is not None and abs(est.offset_s - 1000.0) < 0.01
    assert abs(r.fire_at_s - (d.fire_at_s - 0.2 + 1000.0)) < 0.01  # a stretch starts half its length early
    assert r.stretch_s == pytest.approx(0.4) and r.deadline_s == pytest.approx(r.fire_at_s + link.cfg.fire_tolerance_s)
    assert hb.healthy and hb.decided_until_s is not None and abs(hb.decided_until_s - (hb.t_send_s + 1000.0)) < 2.5


def test_offset_filter_takes_the_shortest_round_trip() -> None:
    f = OffsetFilter()
    f.add(0.0, 10.2, 10.2, 0.4)  # 0.4 s trip, asymmetric: offset estimate 10.0
    f.add(1.0, 11.0, 11.0, 1.002)  # 2 ms trip: offset 9.999
    f.add(2.0, 1.0, 1.0, 1.0)  # negative trip: impossible, ignored
    best = f.best()
    assert best is not None and best.rtt_s == pytest.approx(0.002) and best.offset_s == pytest.approx(9.999)


def test_nothing_schedulable_is_sent_before_a_clock_estimate_and_stale_rejects_are_counted() -> None:
    port, m = free_port(), fresh_metrics()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)  # a controller that never answers heartbeats
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"tcp://127.0.0.1:{port}")
    try:
        with RejectLink(link_cfg(port), metrics=m) as link:
            link.submit(decision(1, 0.5))
            wait_for(lambda: link.missed == 1)
            kinds = set()
            while router.poll(0):
                kinds.add(json.loads(router.recv_multipart()[-1])["type"])
    finally:
        router.close(0)
        ctx.term()
    assert kinds == {"heartbeat"}
    assert m.value("inspector_rejects_missed_total") == 1
    assert m.value("inspector_rejects_missed_by_cause_total", {"cause": "unacked"}) == 1


def test_controller_absent_at_start_then_appears(tmp_path: Path) -> None:
    port, log, m = free_port(), tmp_path / "sim.jsonl", fresh_metrics()
    with RejectLink(link_cfg(port), metrics=m) as link:
        link.submit(decision(1, 5.0))
        time.sleep(0.8)
        assert link.acked == 0 and not link.controller_up
        assert m.value("inspector_controller_heartbeat_age_seconds") > 0.5  # fault: never heard
        proc = start_sim(log, port)
        try:
            wait_for(lambda: link.fired == 1)
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


def test_dropped_acks_are_retransmitted_with_attempt_and_the_same_fire_time() -> None:
    with link_to_raw_controller() as (link, ctl, m):
        link.submit(decision(1, 5.0))
        copies = [ctl.next_reject() for _ in range(3)]  # no ack: it comes again
        ctl.send(messages.Ack(copies[0].session, 1))
        ctl.wait(lambda: link.acked == 1)
    assert [c.attempt for c in copies] == [0, 1, 2]
    assert max(c.fire_at_s for c in copies) - min(c.fire_at_s for c in copies) < 0.005  # absolute: unchanged
    assert link.retransmits >= 2 and m.value("inspector_reject_retransmits_total") == link.retransmits


def test_ack_of_another_session_is_ignored_and_nack_is_a_counted_miss() -> None:
    with link_to_raw_controller() as (link, ctl, m):
        link.submit(decision(1, 5.0))
        r = ctl.next_reject()
        ctl.send(messages.Ack("other", r.seq))
        again = ctl.next_reject()  # still unacked: retransmitted
        assert again.seq == r.seq and link.acked == 0
        ctl.send(messages.Nack(r.session, r.seq, "late"))
        ctl.wait(lambda: link.missed == 1)
    assert link.refused == 1 and m.value("inspector_rejects_refused_total", {"reason": "late"}) == 1
    assert m.value("inspector_rejects_missed_total") == 1
    assert m.value("inspector_rejects_missed_by_cause_total", {"cause": "refused"}) == 1


def test_acked_but_never_fired_is_a_counted_miss() -> None:
    with link_to_raw_controller() as (link, ctl, m):
        link.submit(decision(1, 0.4))
        r = ctl.next_reject()
        ctl.send(messages.Ack(r.session, r.seq))
        ctl.wait(lambda: link.due_count == 1, what="due")
        assert m.value("inspector_rejects_due") == 1
        ctl.wait(lambda: link.missed == 1)  # heartbeats answered, fired never reported
    assert m.value("inspector_rejects_due") == 0 and m.value("inspector_rejects_missed_total") == 1
    assert m.value("inspector_rejects_missed_by_cause_total", {"cause": "not_fired"}) == 1
    assert m.value("inspector_rejects_missed_by_cause_total") == 1  # one cause each


def test_fired_reports_are_timed_and_one_off_its_time_is_counted() -> None:
    """The controller's `fired` start against the reject's fire time: a fire 0.2 s late (a neighbouring bunch) is
    counted; one within link.fire_tolerance_s is only timed."""
    with link_to_raw_controller() as (link, ctl, m):
        link.submit(decision(1, 2.0))
        link.submit(decision(2, 2.0))
        first, second = ctl.next_reject(), ctl.next_reject()
        for r in (first, second):
            ctl.send(messages.Ack(r.session, r.seq))
        ctl.send(messages.Fired(first.session, first.seq, first.fire_at_s + 0.001))
        ctl.send(messages.Fired(second.session, second.seq, second.fire_at_s + 0.2))
        ctl.wait(lambda: link.fired == 2, what="two fired reports")
    assert m.value("inspector_reject_fire_error_seconds_count") == 2
    assert m.value("inspector_reject_fire_error_seconds_bucket", {"le": "0.003"}) == 1  # on time
    assert m.value("inspector_reject_fire_error_seconds_bucket", {"le": "0.1"}) == 1  # 0.2 s late: above 0.1
    assert m.value("inspector_rejects_fired_off_time_total") == 1
    assert m.value("inspector_rejects_missed_total") == 0


def test_controller_restart_resends_acked_rejects_not_fired(tmp_path: Path) -> None:
    port, log, m = free_port(), tmp_path / "sim.jsonl", fresh_metrics()
    proc = start_sim(log, port)
    with RejectLink(link_cfg(port), metrics=m) as link:
        sent = 0
        for i in range(60):  # ~3 s of rejects every 50 ms, each due 10 s later: after the restart on a busy machine
            link.submit(decision(i + 1, 10.0))
            sent += 1
            if i == 15:
                wait_for(lambda: link.acked >= 10)
                proc.send_signal(signal.SIGKILL)  # acked rejects die with it, unfired
                proc.wait(10)
            if i == 30:
                proc = start_sim(log, port)
            time.sleep(0.05)
        wait_for(lambda: link.fired + link.missed == sent, 60, "every reject fired or counted")
    stop_sim(proc)
    second = events(log)
    second = second[max(i for i, e in enumerate(second) if e["event"] == "start") :]
    fired_seqs = sorted(e["seq"] for e in events(log, "fired"))
    assert m.value("inspector_controller_restarts_total") == 1
    assert link.resent >= 1 and m.value("inspector_rejects_resent_total") == link.resent
    assert link.missed == 0 and fired_seqs == list(range(1, sent + 1))  # each fired exactly once
    # never early; how late is bounded by each reject's deadline (checked by the controller core before it fires)
    assert all(e["error_s"] >= 0 for e in second if e["event"] == "fired")


def test_malformed_controller_messages_are_ignored_and_counted() -> None:
    with link_to_raw_controller() as (link, ctl, m):
        link.submit(decision(1, 5.0))
        r = ctl.next_reject()
        junk = [
            b"\xff",
            b"{}",
            b'{"v": 1, "type": "ack", "session": "x", "seq": 1}',
            b"[]",
            b'{"v": 2, "type": "reject"}',
            b'{"v": 2, "type": "ack", "session": "s", "seq": -4}',
            b'{"v": 2, "type": "ack", "session": "s", "seq": 9223372036854775808000}',
            b'{"v": 2, "type": "fired", "session": "s", "seq": 1, "at_s": NaN}',
        ]
        for j in junk:
            ctl.send(j)
        ctl.sock.send_multipart([ctl.identity, b"two", b"frames"])
        ctl.send(messages.Ack(link.session, r.seq))
        ctl.wait(lambda: link.acked == 1)
        assert link.malformed == len(junk) + 1
        assert link.alive
    assert m.value("inspector_controller_messages_malformed_total") == len(junk) + 1


def test_non_finite_numbers_never_kill_the_link() -> None:
    nan = float("nan")
    with link_to_raw_controller(publish=f"tcp://127.0.0.1:{free_port()}") as (link, ctl, m):
        bad_score = replace(decision(1, 5.0), score=nan, across_mm=math.inf)
        bad_time = replace(decision(2, 5.0), fire_at_s=nan)
        link.submit(bad_time, stretch_s=nan)
        link.submit(bad_score)
        r = ctl.next_reject()
        ctl.wait(lambda: link.missed == 1, what="the reject without a fire time counted missed")
        assert link.alive
    assert r.bunch_id == 1 and r.score is None and r.across_mm is None  # sent, NaN as null
    assert m.value("inspector_link_errors_total", {"kind": "reject"}) == 1
    assert m.value("inspector_rejects_missed_by_cause_total", {"cause": "unencodable"}) == 1


def test_a_dead_link_thread_is_detected_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    m = fresh_metrics()
    with RejectLink(link_cfg(free_port()), metrics=m) as link:
        assert link.alive
        link._inbox.append(("reject", "not a reject"))  # a bug in the link thread
        link._wake()
        wait_for(lambda: not link.alive, what="link death noticed")
    assert link.failed and m.value("inspector_link_failures_total") == 1
    assert any("reject link thread died" in r.getMessage() for r in caplog.records)


def test_heartbeats_say_unhealthy_when_progress_stops_or_the_pipeline_says_so() -> None:
    with link_to_raw_controller() as (link, ctl, _m):
        link.set_progress(time.monotonic() + 5, True, "ok")
        ctl.wait(lambda: any(h.healthy for h in ctl.heartbeats), what="healthy")
        n = len(ctl.heartbeats)
        link.set_progress(time.monotonic() + 5, False, "model_error")
        ctl.wait(lambda: not ctl.heartbeats[-1].healthy, what="unhealthy")
        unhealthy = ctl.heartbeats[-1]
        link.set_progress(time.monotonic() + 5, True, "ok")
        ctl.wait(lambda: ctl.heartbeats[-1].healthy)
        # no set_progress any more: the inspection loop has stalled
        ctl.wait(lambda: "stalled" in ctl.heartbeats[-1].reason, what="stall noticed")
    assert unhealthy.reason == "model_error" and len(ctl.heartbeats) > n


def test_every_decision_is_published_and_subscriptions_are_bounded() -> None:
    pub_port = free_port()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.SUBSCRIBE, b"other-topic")
    sub.setsockopt(zmq.RCVTIMEO, 10_000)
    cfg = link_cfg(free_port(), publish=f"tcp://127.0.0.1:{pub_port}")
    got: list[dict[str, Any]] = []
    m = fresh_metrics()
    try:
        with RejectLink(cfg, metrics=m, model="demo") as link:
            sub.connect(f"tcp://127.0.0.1:{pub_port}")
            wait_for(lambda: m.value("inspector_pub_subscriptions_dropped_total") >= 1, what="subscriptions seen")
            link.submit(decision(1, 0.2, "pass"))
            link.submit(replace(decision(2, 0.2, "reject"), score=float("nan")))
            for _ in range(2):
                _topic, body = sub.recv_multipart()
                got.append(json.loads(body))
    finally:
        sub.close(0)
        ctx.term()
    assert [(g["bunch_id"], g["decision"], g["seq"]) for g in got] == [(1, "pass", 0), (2, "reject", 1)]
    assert all(g["v"] == 2 and g["type"] == "decision" and g["model"] == "demo" for g in got)
    assert got[1]["score"] is None


def test_publish_address_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LinkError, match=r"link\.publish"):
            RejectLink(link_cfg(free_port(), publish=f"tcp://127.0.0.1:{port}"), metrics=fresh_metrics()).start()


def test_close_still_sends_pending_rejects(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "sim.jsonl"
    link = RejectLink(link_cfg(port), metrics=fresh_metrics(), close_timeout_s=20)
    link.start()
    link.submit(decision(1, 10.0))
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


def test_an_unacked_reject_holds_the_watermark_back_to_its_start() -> None:
    """Should a reject never reach the controller, its bunch must arrive in fail-safe: the watermark waits for it."""
    with link_to_raw_controller() as (link, ctl, _m):
        link.set_progress(time.monotonic() + 10.0, True, "ok")
        link.submit(decision(1, 3.0))
        r = ctl.next_reject()
        n = len(ctl.heartbeats)
        ctl.wait(lambda: len(ctl.heartbeats) > n + 1)
        held = ctl.heartbeats[-1].decided_until_s
        ctl.send(messages.Ack(r.session, r.seq))
        ctl.wait(lambda: link.acked == 1)
        n = len(ctl.heartbeats)
        ctl.wait(lambda: len(ctl.heartbeats) > n + 1)
        released = ctl.heartbeats[-1].decided_until_s
    assert held is not None and abs(held - r.fire_at_s) < 0.01
    assert released is not None and released > r.fire_at_s + 5.0


def test_close_waits_for_fired_reports_then_logs_the_unconfirmed(caplog: pytest.LogCaptureFixture) -> None:
    with link_to_raw_controller() as (link, ctl, _m):
        link.close_timeout_s = 0.5
        link.submit(decision(1, 5.0))
        r = ctl.next_reject()
        ctl.send(messages.Ack(r.session, r.seq))
        ctl.wait(lambda: link.due_count == 1)
    assert link.missed == 0  # the controller has it: not a miss, but said
    assert any(
        "not yet reported fired" in rec.getMessage() and "bunches 1" in rec.getMessage() for rec in caplog.records
    )


def test_curve_config_mistakes_are_one_clear_line_each(tmp_path: Path) -> None:
    server_public = zmq.curve_keypair()[0].decode()
    secret_file = tmp_path / "inspector.key_secret"
    public, secret = zmq.curve_keypair()
    secret_file.write_text(
        f'# a zmq certificate\ncurve\n    public-key = "{public.decode()}"\n    secret-key = "{secret.decode()}"\n'
    )
    with pytest.raises(
        LinkError, match=r"curve_client_secret_key_file is set but link\.curve_server_public_key is not"
    ):
        RejectLink(link_cfg(free_port(), curve_client_secret_key_file=secret_file))
    with pytest.raises(LinkError, match="curve_server_public_key is not valid Z85"):
        RejectLink(link_cfg(free_port(), curve_server_public_key="," * 40))
    with pytest.raises(LinkError, match="cannot read CURVE secret key file"):
        RejectLink(
            link_cfg(free_port(), curve_server_public_key=server_public, curve_client_secret_key_file=tmp_path / "no")
        )
    bad = tmp_path / "bad_secret"
    bad.write_text("," * 40)
    with pytest.raises(LinkError, match="the CURVE secret key is not valid Z85"):
        RejectLink(link_cfg(free_port(), curve_server_public_key=server_public, curve_client_secret_key_file=bad))
    assert read_secret_key_file(secret_file) == (public, secret)  # the secret-key line of a certificate


def test_a_bad_controller_address_is_a_clear_error() -> None:
    with pytest.raises(LinkError, match=r"link\.controller '10\.0\.0\.5:5560': .*write e\.g\. tcp://"):
        RejectLink(link_cfg(free_port(), controller="10.0.0.5:5560")).start()  # no transport


def test_a_decision_that_cannot_be_published_is_counted_and_the_link_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with link_to_raw_controller(publish=f"tcp://127.0.0.1:{free_port()}") as (link, ctl, m):
        huge = replace(decision(1, 5.0, kind="pass"), detail="x" * messages.MAX_FRAME_BYTES)  # over the frame limit
        link.submit(huge)
        link.submit(decision(2, 5.0))
        r = ctl.next_reject()
        assert link.alive
    assert r.bunch_id == 2
    assert m.value("inspector_link_errors_total", {"kind": "publish"}) == 1
    assert any("decision of bunch 1 not published" in rec.getMessage() for rec in caplog.records)


def test_a_fire_off_its_time_is_logged_and_repeated_or_unknown_reports_change_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with link_to_raw_controller(fire_tolerance_s=0.03) as (link, ctl, m):
        link.submit(decision(1, 5.0))
        r = ctl.next_reject()
        ctl.send(messages.Ack(r.session, r.seq))
        ctl.send(messages.Fired(r.session, r.seq, r.fire_at_s + 0.5))  # half a second late: the wrong bunch
        ctl.wait(lambda: link.fired == 1)
        for msg in (  # a second report of the same reject, reports of rejects never sent
            messages.Fired(r.session, r.seq, r.fire_at_s),
            messages.Ack(r.session, r.seq),
            messages.Ack(r.session, 99),
            messages.Nack(r.session, 98, "late"),
            messages.Fired(r.session, 97, r.fire_at_s),
        ):
            ctl.send(msg)
        n = len(ctl.heartbeats)
        ctl.wait(lambda: len(ctl.heartbeats) > n + 2)  # the link has read them all
        assert (link.fired, link.acked, link.refused, link.missed) == (1, 1, 0, 0)
    assert len(link.fire_errors_s) == 1 and abs(link.fire_errors_s[0] - 0.5) < 0.01
    assert m.value("inspector_rejects_fired_total") == 1 and m.value("inspector_rejects_acked_total") == 1
    assert any(
        "bunch 1: fired +0.5" in rec.getMessage() and "off its time" in rec.getMessage() for rec in caplog.records
    )


def test_a_forged_or_missing_clock_echo_gives_no_estimate_so_nothing_schedulable_is_sent() -> None:
    """A controller heartbeat without an echo, or with an impossible one (negative round trip), is no clock sample:
    the link keeps saying it has no estimate, sends no reject, and counts the reject missed at its deadline."""
    port, m = free_port(), fresh_metrics()
    ctl = RawController(port)
    try:
        with RejectLink(link_cfg(port), metrics=m) as link:
            link.submit(decision(1, 0.5))
            frames: list[bytes] = []
            answered = 0
            deadline = time.monotonic() + 20.0
            while link.missed == 0 and time.monotonic() < deadline:
                if not ctl.sock.poll(50):
                    continue
                identity, frame = ctl.sock.recv_multipart()
                msg = messages.decode_from_inspector(frame)
                if isinstance(msg, messages.Reject):
                    frames.append(frame)
                    continue
                now = ctl.clock()
                echo = (
                    (None, None)  # no echo at all
                    if answered % 2
                    else (msg.t_send_s, msg.t_send_s - 50.0)  # received 50 s before it was sent: forged
                )
                reply = messages.ControllerHeartbeat("raw1", now, echo[0], echo[1], False, 0.0)
                ctl.sock.send_multipart([identity, messages.encode(reply)])
                ctl.heartbeats.append(msg)
                answered += 1
            assert link.offsets.best() is None and link.missed == 1
            assert link.controller_up  # heard, just no clock
    finally:
        ctl.close()
    assert answered >= 2 and not frames
    assert all(not hb.healthy and hb.decided_until_s is None for hb in ctl.heartbeats)
    assert "no controller clock estimate yet" in ctl.heartbeats[-1].reason
    assert m.value("inspector_rejects_missed_total") == 1
