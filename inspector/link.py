"""ZeroMQ actuator link: rejects at absolute fire times with deadlines, acks, fired reports, heartbeats, PUB.

The wire protocol (v2) is documented in ``inspector/messages.py``. This module is the inspector side::

    with RejectLink(config.link, model="demo-vgg16-w4") as link:
        ...
        link.set_progress(decided_until_s, healthy, reason)   # every loop: watermark and health for heartbeats
        link.submit(decision, stretch_s)  # publishes every decision; sends rejects reliably; never blocks

One background thread owns all sockets (ZeroMQ sockets are not thread-safe); ``submit``/``send_reject``/``publish``/
``set_progress`` only put work on a queue or a field and wake it through a pipe, so the inspection loop never
blocks on the controller. Times given to the link (``Decision.fire_at_s``, ``decided_until_s``) are on the
``clock`` passed in (default ``time.monotonic``, the daemon's clock); on the wire they are converted to the
controller's clock with the offset estimated from heartbeat round trips (minimum-round-trip filter). Until there is
an estimate nothing schedulable is sent; a reject waits (and is counted missed if its deadline passes).

Reject states: pending (sent, not acked: retransmitted every ``retransmit_interval_s``) → due (acked, waiting for
``fired``: ``inspector_rejects_due``) → fired. Missed (``inspector_rejects_missed_total``, logged at ERROR): no ack
by the deadline, a ``nack``, or no ``fired`` report by the deadline plus the controller timeout. When the
controller's instance id changes (it restarted and forgot its schedule) every due reject still before its deadline
is sent again (``inspector_rejects_resent_total``).

``alive`` is False once the link thread has died (counted in ``inspector_link_failures_total``); the controller sees
its heartbeats stop and goes fail-safe, and the daemon exits non-zero so systemd restarts it.

``close()`` (or leaving the ``with``) stops taking new work and keeps retransmitting pending rejects until each is
acked or its deadline has passed, and waits for the ``fired`` of acked ones, at most ``close_timeout_s``; what is
still unacked then is counted missed, what is acked and not reported fired is logged (the controller has it).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.utils.z85

from inspector import messages
from inspector.config import LinkConfig
from inspector.errors import InspectorError
from inspector.metrics import METRICS, Metrics
from inspector.types import Decision

log = logging.getLogger(__name__)

Clock = Callable[[], float]
CLOCK_SAMPLES = 16  # heartbeat round trips the offset is chosen from (the shortest wins)
STALL_HEARTBEATS = 4  # progress not refreshed for this many heartbeat intervals: the inspection loop stalled


@dataclass
class _Pending:
    seq: int
    decision: Decision
    stretch_s: float = 0.0
    lead_s: float | None = None  # how long before the fire time the stretch starts (None: centred on it)
    sends: int = 0  # successful hand-overs to a connected controller
    next_send_s: float = 0.0
    acked: bool = False

    @property
    def start_s(self) -> float:
        """When the ejector must start (inspector clock): ``lead_s`` before the bunch's fire time (a stretch without
        one is centred on it)."""
        lead = self.stretch_s / 2.0 if self.lead_s is None else self.lead_s
        return self.decision.fire_at_s - lead

    def deadline_s(self, tolerance_s: float) -> float:
        return self.start_s + tolerance_s


@dataclass(frozen=True)
class ClockEstimate:
    offset_s: float  # controller clock − inspector clock
    rtt_s: float


class OffsetFilter:
    """NTP-style offset from heartbeat round trips: of the last CLOCK_SAMPLES, the one with the shortest trip."""

    def __init__(self) -> None:
        self.samples: deque[ClockEstimate] = deque(maxlen=CLOCK_SAMPLES)

    def add(self, t1: float, t2: float, t3: float, t4: float) -> None:
        rtt = (t4 - t1) - (t3 - t2)
        if rtt < 0 or not all(math.isfinite(t) for t in (t1, t2, t3, t4)):
            return  # impossible (a forged or corrupted echo): ignore
        self.samples.append(ClockEstimate(((t2 - t1) + (t3 - t4)) / 2.0, rtt))

    def best(self) -> ClockEstimate | None:
        return min(self.samples, key=lambda s: s.rtt_s) if self.samples else None

    def reset(self) -> None:
        self.samples.clear()


class LinkError(InspectorError):
    """The link cannot start (bad address, address in use, bad CURVE key)."""


def load_curve_keys(cfg: LinkConfig) -> tuple[bytes, bytes, bytes] | None:
    """(server_public, client_public, client_secret) Z85 keys, or None when CURVE is off."""
    if cfg.curve_server_public_key is None:
        if cfg.curve_client_secret_key_file is not None:
            raise LinkError(
                "link.curve_client_secret_key_file is set but link.curve_server_public_key is not; "
                "give the controller's public key (40 Z85 characters)"
            )
        return None
    if not zmq.has("curve"):
        raise LinkError("this libzmq has no CURVE support; install pyzmq wheels (they bundle libsodium)")
    server_pub = cfg.curve_server_public_key.strip().encode()
    if len(server_pub) != 40:
        raise LinkError(
            f"link.curve_server_public_key must be 40 Z85 characters, got {len(server_pub)}; "
            "copy the controller's public key exactly"
        )
    try:
        zmq.utils.z85.decode(server_pub)
    except (ValueError, KeyError):
        raise LinkError(
            "link.curve_server_public_key is not valid Z85; copy the controller's public key exactly"
        ) from None
    path = cfg.curve_client_secret_key_file
    if path is None:
        client_pub, client_secret = zmq.curve_keypair()
        return server_pub, client_pub, client_secret
    return (server_pub, *read_secret_key_file(path))


def read_secret_key_file(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) from a zmq certificate file (``secret-key = "..."``) or a file holding the Z85 secret."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise LinkError(f"{path}: cannot read CURVE secret key file ({exc.strerror}); fix the path") from None
    secret: bytes | None = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("secret-key") and "=" in s:
            secret = s.split("=", 1)[1].strip().strip('"').encode()
    if secret is None:
        secret = text.strip().encode()
    if len(secret) != 40:
        raise LinkError(f"{path}: no 40-character Z85 CURVE secret key found; write one made by zmq.curve_keypair()")
    try:
        public = zmq.curve_public(secret)
    except (zmq.ZMQError, ValueError):
        raise LinkError(f"{path}: the CURVE secret key is not valid Z85") from None
    return public, secret


PUB_MAX_SUBSCRIPTIONS = 64  # subscription frames one XPUB takes before it is reset (a legitimate SUB sends one)
PUB_RCVHWM = 50  # subscription frames libzmq takes in per activation: bounds what a flood stores before a reset


class _Publisher:
    """The decision XPUB. libzmq keeps every subscription it receives in a trie (in manual mode as well), so a
    subscription flood would grow the daemon's memory without bound: we read each subscription (manual mode), give a
    subscriber the decision topic, and once PUB_MAX_SUBSCRIPTIONS have come in since the bind, close the socket and
    bind it again (``inspector_pub_resets_total``): the trie is freed, subscribers reconnect on their own, and no
    more than about PUB_RCVHWM + PUB_MAX_SUBSCRIPTIONS subscriptions are ever held."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, metrics: Metrics) -> None:
        self.ctx, self.endpoint, self.metrics = ctx, endpoint, metrics
        self.sock: zmq.Socket[bytes] | None = None
        self.taken = 0  # subscription frames since the bind
        self.resets = 0
        self.bind()
        assert self.sock is not None
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)  # a port 0 / wildcard resolved once

    def bind(self) -> bool:
        sock = self.ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.RCVHWM, PUB_RCVHWM)
        sock.setsockopt(zmq.MAXMSGSIZE, 256)  # a subscription is a topic: nothing longer comes in
        sock.setsockopt(zmq.XPUB_MANUAL, 1)  # we decide what a subscriber gets
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError:
            sock.close(0)
            if self.sock is None and self.resets == 0:
                raise
            return False  # the port is still closing after a reset: the loop tries again
        self.sock, self.taken = sock, 0
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def send(self, frames: list[bytes]) -> None:
        if self.sock is None:
            self.bind()
        if self.sock is not None:
            with contextlib.suppress(zmq.Again):
                self.sock.send_multipart(frames, zmq.NOBLOCK)

    def drain(self) -> None:
        """Read the subscriptions that came in; reset the socket when there were too many."""
        if self.sock is None:
            self.bind()
            return
        for _ in range(PUB_MAX_SUBSCRIPTIONS + 1):
            try:
                frame = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.taken += 1
            topic = frame[1:]
            if frame[:1] == b"\x01" and messages.PUB_TOPIC_DECISION.startswith(topic):
                self.sock.setsockopt(zmq.SUBSCRIBE, messages.PUB_TOPIC_DECISION)  # for the pipe this came from
            else:
                self.metrics.subscriptions_dropped.inc()
            if self.taken > PUB_MAX_SUBSCRIPTIONS:
                self.resets += 1
                self.metrics.pub_resets.inc()
                if self.resets <= 10 or self.resets % 100 == 0:
                    log.warning(
                        "decision PUB reset #%d: more than %d subscriptions (a flood?)",
                        self.resets,
                        PUB_MAX_SUBSCRIPTIONS,
                    )
                self.close()
                self.bind()
                return


class RejectLink:
    """The inspector's end of the actuator link (see module docstring)."""

    def __init__(
        self,
        config: LinkConfig,
        metrics: Metrics | None = None,
        model: str = "",
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        close_timeout_s: float = 4.0,
    ) -> None:
        self.cfg = config
        self.metrics = metrics if metrics is not None else METRICS
        self.model = model
        self.clock = clock
        self.wall = wall
        self.close_timeout_s = close_timeout_s
        self.session = secrets.token_hex(4)
        self._curve = load_curve_keys(config)
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        self._inbox: deque[tuple[str, object]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closing = threading.Event()
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._last_heard_s: float | None = None
        self._t_start_s = clock()
        self._controller_up = False
        self._state = "unknown"  # unknown -> up / down
        self._progress: tuple[float | None, bool, str, float] = (None, False, "starting", clock())
        self._sent_health: bool | None = None
        self.offsets = OffsetFilter()
        self.instance: str | None = None  # the controller's, from its heartbeats
        self.controller_failsafe: bool | None = None
        self.failed = False  # the link thread died
        self.pub_endpoint: str | None = None
        self._subscribed: set[bytes] = set()  # XPUB pipes given the decision topic (by subscription frame)
        # counters readable from any thread (ints: atomic enough under the GIL)
        self.acked = 0
        self.missed = 0
        self.fired = 0
        self.refused = 0
        self.resent = 0
        self.retransmits = 0
        self.malformed = 0
        self.pending_count = 0
        self.due_count = 0
        self.fire_errors_s: deque[float] = deque(maxlen=10_000)  # controller's actual − requested start

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> RejectLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reject-link", daemon=True)
        self._thread.start()
        self._started.wait(10.0)
        if self._start_error is not None:
            self._thread.join(2.0)
            self._close_pipe()
            raise self._start_error

    def close(self) -> None:
        """Stop taking work; flush pending rejects (bounded by their deadlines and close_timeout_s)."""
        if self._thread is None:
            return
        self._closing.set()
        self._wake()
        self._thread.join(self.close_timeout_s + 2.0)
        self._thread = None
        self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def alive(self) -> bool:
        """False once the link thread has died (or was never started)."""
        return self._thread is not None and self._thread.is_alive() and not self.failed

    # ------------------------------------------------------------------ API (any thread, never blocks)
    def submit(self, decision: Decision, stretch_s: float = 0.0) -> int:
        """Publish the decision; if it is a reject, also send it reliably. Returns its seq (0 for a pass)."""
        seq = self.send_reject(decision, stretch_s) if decision.decision == "reject" else 0
        self.publish(decision, seq)
        return seq

    def send_reject(self, decision: Decision, stretch_s: float = 0.0, lead_s: float | None = None) -> int:
        """Queue a reject; ``stretch_s``: how long the ejector stays on (0: one pulse), starting ``lead_s`` before the
        fire time (None: centred on it)."""
        with self._seq_lock:
            seq = next(self._seq)
        self.metrics.rejects_sent.inc()
        stretch = float(stretch_s) if math.isfinite(stretch_s) else messages.MAX_STRETCH_S
        stretch = min(max(0.0, stretch), messages.MAX_STRETCH_S)
        lead = None if lead_s is None or not math.isfinite(lead_s) else min(max(0.0, float(lead_s)), stretch)
        self._inbox.append(("reject", _Pending(seq, decision, stretch, lead)))
        self._wake()
        return seq

    def publish(self, decision: Decision, seq: int = 0) -> None:
        if self.cfg.publish is None:
            return
        self._inbox.append(("pub", (decision, seq)))
        self._wake()

    def set_progress(self, decided_until_s: float | None, healthy: bool, reason: str) -> None:
        """Watermark (inspector clock: every bunch reaching the ejector up to then is decided) and health, for the
        next heartbeat; a change of health is sent at once."""
        self._progress = (decided_until_s, healthy, reason, self.clock())
        if healthy != self._sent_health:
            self._wake()

    @property
    def controller_up(self) -> bool:
        return self._controller_up

    def heartbeat_age_s(self) -> float:
        last = self._last_heard_s if self._last_heard_s is not None else self._t_start_s
        return max(0.0, self.clock() - last)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    # ------------------------------------------------------------------ the link thread
    def _make_sockets(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> tuple[zmq.Socket[bytes], _Publisher | None]:
        cfg = self.cfg
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IMMEDIATE, 1)  # hand frames only to a connected controller: nothing goes stale
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDHWM, 10_000)
        dealer.setsockopt(zmq.MAXMSGSIZE, messages.MAX_FRAME_BYTES + 1024)
        dealer.setsockopt(zmq.RECONNECT_IVL, 100)
        dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        hb_ms = max(1, int(cfg.heartbeat_interval_s * 1000))
        dealer.setsockopt(zmq.HEARTBEAT_IVL, hb_ms)  # ZMTP pings: drop a dead TCP connection quickly
        dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(hb_ms, int(cfg.controller_timeout_s * 1000)))
        if self._curve is not None:
            server_pub, client_pub, client_secret = self._curve
            dealer.curve_serverkey = server_pub
            dealer.curve_publickey = client_pub
            dealer.curve_secretkey = client_secret
        try:
            dealer.connect(cfg.controller)
        except zmq.ZMQError as exc:
            dealer.close()
            raise LinkError(f"link.controller {cfg.controller!r}: {exc}; write e.g. tcp://10.0.0.5:5560") from None
        pub = None
        if cfg.publish is not None:
            try:
                pub = _Publisher(ctx, cfg.publish, self.metrics)
            except zmq.ZMQError as exc:
                dealer.close()
                raise LinkError(
                    f"link.publish {cfg.publish!r}: cannot bind ({exc}); choose a free port or set it to null"
                ) from None
            self.pub_endpoint = pub.endpoint
        return dealer, pub

    def _run(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            dealer, pub = self._make_sockets(ctx)
        except BaseException as exc:
            self._start_error = exc
            ctx.term()
            self._started.set()
            return
        self._started.set()
        try:
            self._loop(dealer, pub)
        except BaseException:  # the link must never die silently
            self.failed = True
            self.metrics.link_failures.inc()
            self.metrics.controller_up.set(0)
            log.critical("FAULT: the reject link thread died; the controller will fail safe", exc_info=True)
        finally:
            dealer.close(0)
            if pub is not None:
                pub.close()
            ctx.term()

    def _loop(self, dealer: zmq.Socket[bytes], pub: _Publisher | None) -> None:
        pending: dict[int, _Pending] = {}  # not acked yet
        due: dict[int, _Pending] = {}  # acked, not reported fired yet
        next_hb_s = self.clock()
        close_deadline_s: float | None = None
        tol = self.cfg.fire_tolerance_s
        while True:
            now = self.clock()
            if self._closing.is_set() and close_deadline_s is None:
                close_deadline_s = now + self.close_timeout_s
                log.info("link closing: %d reject(s) pending", len(pending) + self._inbox_rejects())
            # ---- new work
            while self._inbox:
                kind, item = self._inbox.popleft()
                if kind == "reject":
                    assert isinstance(item, _Pending)
                    item.next_send_s = now
                    pending[item.seq] = item
                elif pub is not None:
                    self._publish(pub, item)
            # ---- misses and (re)transmissions
            for seq in sorted(pending):
                p = pending[seq]
                if now > p.deadline_s(tol):
                    del pending[seq]
                    self._count_missed(p, now, "unacked", "its deadline passed without an ack")
                elif now >= p.next_send_s and not self._transmit(dealer, p, now):
                    del pending[seq]
            for seq in sorted(due):
                p = due[seq]
                if now > p.deadline_s(tol) + self.cfg.controller_timeout_s:
                    del due[seq]
                    self._count_missed(p, now, "not_fired", "acked, but the controller never reported it fired")
            # ---- heartbeat
            if now >= next_hb_s or self._progress[1] != self._sent_health:
                self._heartbeat(dealer, now, pending)
                next_hb_s = now + self.cfg.heartbeat_interval_s
            self._update_health(now)
            self.pending_count, self.due_count = len(pending), len(due)
            self.metrics.rejects_pending.set(len(pending))
            self.metrics.rejects_due.set(len(due))
            # ---- closing
            if close_deadline_s is not None and not self._inbox:
                if not pending and not due:
                    return
                if now >= close_deadline_s:
                    for p in pending.values():
                        self._count_missed(p, now, "closed", "still unacked when the link closed")
                    if due:  # the controller has them and may well fire them; we cannot know any more
                        log.warning(
                            "link closed with %d acked reject(s) not yet reported fired (bunches %s)",
                            len(due),
                            ", ".join(str(p.decision.bunch_id) for p in due.values()),
                        )
                    self.metrics.rejects_pending.set(0)
                    return
            # ---- wait for input or the next deadline
            wake_at = min([next_hb_s, *(min(p.next_send_s, p.deadline_s(tol)) for p in pending.values())])
            if close_deadline_s is not None:
                wake_at = min(wake_at, close_deadline_s)
            timeout_ms = max(0.0, min(0.1, wake_at - self.clock())) * 1000
            poller = zmq.Poller()
            poller.register(dealer, zmq.POLLIN)
            poller.register(self._wake_r, zmq.POLLIN)
            if pub is not None and pub.sock is not None:
                poller.register(pub.sock, zmq.POLLIN)
            events = dict(poller.poll(int(timeout_ms)))
            if events.get(self._wake_r):
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 4096)
            if events.get(dealer):
                self._receive(dealer, pending, due)
            if pub is not None:
                pub.drain()

    def _inbox_rejects(self) -> int:
        return sum(1 for kind, _ in list(self._inbox) if kind == "reject")

    # ------------------------------------------------------------------ sending
    def _heartbeat(self, dealer: zmq.Socket[bytes], now: float, pending: dict[int, _Pending]) -> None:
        """The watermark is held back to the start of any reject not acked yet: should that reject never arrive,
        the controller is in fail-safe when its bunch does."""
        until_s, healthy, reason, at_s = self._progress
        if until_s is not None and pending:
            until_s = min([until_s, *(p.start_s for p in pending.values() if math.isfinite(p.start_s))])
        est = self.offsets.best()
        stall_s = STALL_HEARTBEATS * self.cfg.heartbeat_interval_s
        if now - at_s > stall_s:
            healthy, reason = False, f"inspection loop stalled: no progress for {now - at_s:.1f} s"
        if est is None:
            healthy, reason = False, "no controller clock estimate yet"
        hb = messages.Heartbeat(
            session=self.session,
            t_send_s=now,
            decided_until_s=None if until_s is None or est is None else until_s + est.offset_s,
            healthy=healthy,
            reason=reason,
            sent_unix_s=self.wall(),
        )
        with contextlib.suppress(zmq.Again):
            dealer.send(messages.encode(hb), zmq.NOBLOCK)
        self._sent_health = self._progress[1]

    def _publish(self, pub: _Publisher, item: object) -> None:
        assert isinstance(item, tuple)
        decision, seq = item
        assert isinstance(decision, Decision) and isinstance(seq, int)
        try:
            frames = messages.encode_decision(decision.to_json_dict(), self.session, seq, self.model)
        except (ValueError, TypeError) as exc:  # never let one decision stop the link
            self.metrics.link_errors.labels(kind="publish").inc()
            log.error("decision of bunch %d not published: %s", decision.bunch_id, exc)
            return
        pub.send(frames)

    def _transmit(self, dealer: zmq.Socket[bytes], p: _Pending, now: float) -> bool:
        """Send (again) if the controller clock is known; False when the reject cannot be encoded (counted)."""
        est = self.offsets.best()
        p.next_send_s = now + self.cfg.retransmit_interval_s
        if est is None:
            return True  # no clock yet: wait (the deadline check counts it missed if none comes)
        d = p.decision
        wall_now = self.wall()
        to_wall = wall_now - now
        start_s = p.start_s
        msg = messages.Reject(
            session=self.session,
            seq=p.seq,
            attempt=p.sends,
            bunch_id=d.bunch_id,
            score=d.score,
            reason=d.reason,
            fire_at_s=start_s + est.offset_s,
            stretch_s=p.stretch_s,
            deadline_s=p.deadline_s(self.cfg.fire_tolerance_s) + est.offset_s,
            across_mm=d.across_mm,
            fire_at_unix_s=start_s + to_wall,
            t_capture_unix_s=d.t_capture_s + to_wall,
            sent_unix_s=wall_now,
            model=self.model,
        )
        try:
            frame = messages.encode(msg)
        except ValueError as exc:
            self.metrics.link_errors.labels(kind="reject").inc()
            self._count_missed(p, now, "unencodable", f"cannot be encoded ({exc})")
            return False
        try:
            dealer.send(frame, zmq.NOBLOCK)
        except zmq.Again:  # no controller connected: try again at the next interval
            return True
        if p.sends == 0:
            self.metrics.decision_latency_seconds.observe(max(0.0, now - d.t_capture_s))
            self.metrics.decision_slack_seconds.observe(start_s - now)
        else:
            self.retransmits += 1
            self.metrics.reject_retransmits.inc()
        p.sends += 1
        return True

    def _count_missed(self, p: _Pending, now: float, cause: str, why: str) -> None:
        """``cause``: one of metrics.MISS_CAUSES; ``why`` in words for the log."""
        self.missed += 1
        self.metrics.rejects_missed.inc()
        self.metrics.rejects_missed_by_cause.labels(cause=cause).inc()
        log.error(
            "REJECT MISSED: seq %d bunch %d (%s, score %.3f): %s; sent %d time(s), fire time %+.3f s from now",
            p.seq,
            p.decision.bunch_id,
            p.decision.reason,
            p.decision.score,
            why,
            p.sends,
            p.start_s - now,
        )

    # ------------------------------------------------------------------ receiving
    def _receive(self, dealer: zmq.Socket[bytes], pending: dict[int, _Pending], due: dict[int, _Pending]) -> None:
        for _ in range(1000):
            try:
                frames = dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            t4 = self.clock()
            try:
                if len(frames) != 1:
                    raise messages.MalformedMessage(f"{len(frames)} frames, expected 1")
                msg = messages.decode_from_controller(frames[0])
            except messages.MalformedMessage as exc:
                self.malformed += 1
                self.metrics.controller_messages_malformed.inc()
                if self.malformed <= 10 or self.malformed % 1000 == 0:
                    log.warning("ignored malformed controller message #%d: %s", self.malformed, exc)
                continue
            self._last_heard_s = t4
            if isinstance(msg, messages.ControllerHeartbeat):
                self._controller_heartbeat(msg, t4, pending, due)
                continue
            if msg.session != self.session:
                log.debug("%s for another session %s ignored", type(msg).__name__, msg.session)
                continue
            if isinstance(msg, messages.Ack):
                p = pending.pop(msg.seq, None)
                if p is not None:
                    p.acked = True
                    due[msg.seq] = p
                    self.acked += 1
                    self.metrics.rejects_acked.inc()
            elif isinstance(msg, messages.Nack):
                p = pending.pop(msg.seq, None) or due.pop(msg.seq, None)
                if p is not None:
                    self.refused += 1
                    self.metrics.rejects_refused.labels(reason=msg.reason).inc()
                    self._count_missed(p, t4, "refused", f"the controller refused it ({msg.reason})")
            else:
                p = due.pop(msg.seq, None) or pending.pop(msg.seq, None)
                if p is not None:
                    self._fired(p, msg)

    def _fired(self, p: _Pending, msg: messages.Fired) -> None:
        self.fired += 1
        self.metrics.rejects_fired.inc()
        est = self.offsets.best()
        if est is not None:
            error_s = msg.at_s - (p.start_s + est.offset_s)
            self.fire_errors_s.append(error_s)
            self.metrics.reject_fire_error_seconds.observe(error_s)
            if abs(error_s) > self.cfg.fire_tolerance_s:
                self.metrics.rejects_fired_off_time.inc()
                log.error(
                    "bunch %d: fired %+.3f s off its time (tolerance %.3f s)",
                    p.decision.bunch_id,
                    error_s,
                    self.cfg.fire_tolerance_s,
                )

    def _controller_heartbeat(
        self, msg: messages.ControllerHeartbeat, t4: float, pending: dict[int, _Pending], due: dict[int, _Pending]
    ) -> None:
        if msg.instance != self.instance:
            if self.instance is not None:
                self.metrics.controller_restarts.inc()
                log.error(
                    "controller restarted (instance %s -> %s): resending %d acked reject(s) not reported fired",
                    self.instance,
                    msg.instance,
                    len(due),
                )
                for seq, p in due.items():
                    p.next_send_s = t4
                    pending[seq] = p
                    self.resent += 1
                    self.metrics.rejects_resent.inc()
                due.clear()
            self.instance = msg.instance
            self.offsets.reset()  # a new controller run may have a new clock
        if msg.echo_t_send_s is not None and msg.echo_rx_s is not None:
            self.offsets.add(msg.echo_t_send_s, msg.echo_rx_s, msg.t_s, t4)
            est = self.offsets.best()
            if est is not None:
                self.metrics.clock_offset.set(est.offset_s)
                self.metrics.clock_rtt.set(est.rtt_s)
        self.controller_failsafe = msg.failsafe
        self.metrics.controller_failsafe.set(1 if msg.failsafe else 0)

    def _update_health(self, now: float) -> None:
        age = self.heartbeat_age_s()
        self.metrics.controller_heartbeat_age.set(age)
        timeout = self.cfg.controller_timeout_s
        state = self._state
        if self._last_heard_s is not None and age <= timeout:
            state = "up"
        elif age > timeout:
            state = "down"
        if state != self._state:
            if state == "up":
                log.info("controller %s is up", self.cfg.controller)
            else:
                log.error("FAULT: controller %s silent for %.1f s (timeout %.1f s)", self.cfg.controller, age, timeout)
            self._state = state
        self._controller_up = state == "up"
        self.metrics.controller_up.set(1 if self._controller_up else 0)
