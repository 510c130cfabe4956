"""ZeroMQ actuator link: rejects with sequence numbers and fire deadlines, acks, retransmits, heartbeats, PUB.

The wire protocol is documented in ``inspector/messages.py``. This module is the inspector side::

    with RejectLink(config.link, model="demo-vgg16-w4") as link:
        ...
        link.submit(decision)          # publishes every decision; sends rejects reliably; never blocks

One background thread owns all sockets (ZeroMQ sockets are not thread-safe); ``submit``/``send_reject``/
``publish`` only put work on a queue and wake it through a pipe, so the inspection loop never blocks on
the controller. Times given to the link (``Decision.fire_at_s``, ``Decision.t_capture_s``) are on the
``clock`` passed in (default ``time.monotonic``, the daemon's clock); on the wire they become
``fire_in_s`` (relative, recomputed per transmission) plus wall-clock fields for logs.

``close()`` (or leaving the ``with``) stops taking new work and keeps retransmitting pending rejects until
each is acked or its fire time has passed, at most ``close_timeout_s``; what is still unacked then is
counted missed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
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


class LinkError(InspectorError):
    """The link cannot start (bad address, address in use, bad CURVE key)."""


@dataclass
class _Pending:
    seq: int
    decision: Decision
    sends: int = 0  # successful hand-overs to a connected controller
    next_send_s: float = 0.0


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
        self.pub_endpoint: str | None = None
        # counters readable from any thread (ints: atomic enough under the GIL)
        self.acked = 0
        self.missed = 0
        self.retransmits = 0
        self.malformed = 0
        self.pending_count = 0

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
        """Stop taking work; flush pending rejects (bounded by fire times and close_timeout_s)."""
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

    # ------------------------------------------------------------------ API (any thread, never blocks)
    def submit(self, decision: Decision) -> int:
        """Publish the decision; if it is a reject, also send it reliably. Returns its seq (0 for a pass)."""
        seq = self.send_reject(decision) if decision.decision == "reject" else 0
        self.publish(decision, seq)
        return seq

    def send_reject(self, decision: Decision) -> int:
        with self._seq_lock:
            seq = next(self._seq)
        self.metrics.rejects_sent.inc()
        self._inbox.append(("reject", _Pending(seq, decision)))
        self._wake()
        return seq

    def publish(self, decision: Decision, seq: int = 0) -> None:
        if self.cfg.publish is None:
            return
        self._inbox.append(("pub", messages.encode_decision(decision.to_json_dict(), self.session, seq, self.model)))
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
    def _make_sockets(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes] | None]:
        cfg = self.cfg
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IMMEDIATE, 1)  # hand frames only to a connected controller: nothing goes stale
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDHWM, 10_000)
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
            pub = ctx.socket(zmq.PUB)
            pub.setsockopt(zmq.LINGER, 0)
            pub.setsockopt(zmq.SNDHWM, 1000)
            try:
                pub.bind(cfg.publish)
            except zmq.ZMQError as exc:
                pub.close()
                dealer.close()
                raise LinkError(
                    f"link.publish {cfg.publish!r}: cannot bind ({exc}); choose a free port or set it to null"
                ) from None
            self.pub_endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
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
        except Exception:  # the link must never die silently
            log.exception("reject link thread failed")
        finally:
            dealer.close(0)
            if pub is not None:
                pub.close(0)
            ctx.term()

    def _loop(self, dealer: zmq.Socket[bytes], pub: zmq.Socket[bytes] | None) -> None:
        cfg = self.cfg
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        pending: dict[int, _Pending] = {}
        next_hb_s = self.clock()
        close_deadline_s: float | None = None
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
                    assert isinstance(item, list)
                    with contextlib.suppress(zmq.Again):
                        pub.send_multipart(item, zmq.NOBLOCK)
            # ---- misses and (re)transmissions
            for seq in sorted(pending):
                p = pending[seq]
                if now >= p.decision.fire_at_s:
                    del pending[seq]
                    self._count_missed(p, now, "fire time passed without an ack")
                elif now >= p.next_send_s:
                    self._transmit(dealer, p, now)
            # ---- heartbeat
            if now >= next_hb_s:
                hb = messages.Heartbeat(sent_unix_s=self.wall(), session=self.session)
                with contextlib.suppress(zmq.Again):
                    dealer.send(messages.encode(hb), zmq.NOBLOCK)
                next_hb_s = now + cfg.heartbeat_interval_s
            self._update_health(now)
            self.pending_count = len(pending)
            self.metrics.rejects_pending.set(len(pending))
            # ---- closing
            if close_deadline_s is not None and not self._inbox:
                if not pending:
                    return
                if now >= close_deadline_s:
                    for p in pending.values():
                        self._count_missed(p, now, "still unacked when the link closed")
                    self.metrics.rejects_pending.set(0)
                    return
            # ---- wait for input or the next deadline
            wake_at = min([next_hb_s, *(min(p.next_send_s, p.decision.fire_at_s) for p in pending.values())])
            if close_deadline_s is not None:
                wake_at = min(wake_at, close_deadline_s)
            timeout_ms = max(0.0, min(0.1, wake_at - self.clock())) * 1000
            events = dict(poller.poll(int(timeout_ms)))
            if events.get(self._wake_r):
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 4096)
            if events.get(dealer):
                self._receive(dealer, pending)

    def _inbox_rejects(self) -> int:
        return sum(1 for kind, _ in list(self._inbox) if kind == "reject")

    def _transmit(self, dealer: zmq.Socket[bytes], p: _Pending, now: float) -> None:
        d = p.decision
        wall_now = self.wall()
        offset = wall_now - now
        msg = messages.Reject(
            session=self.session,
            seq=p.seq,
            attempt=p.sends,
            bunch_id=d.bunch_id,
            score=d.score,
            reason=d.reason,
            fire_in_s=d.fire_at_s - now,
            fire_at_unix_s=d.fire_at_s + offset,
            t_capture_unix_s=d.t_capture_s + offset,
            sent_unix_s=wall_now,
            across_mm=d.across_mm,
            model=self.model,
        )
        p.next_send_s = now + self.cfg.retransmit_interval_s
        try:
            dealer.send(messages.encode(msg), zmq.NOBLOCK)
        except zmq.Again:  # no controller connected: try again at the next interval
            return
        if p.sends == 0:
            self.metrics.decision_latency_seconds.observe(max(0.0, now - d.t_capture_s))
            self.metrics.decision_slack_seconds.observe(d.fire_at_s - now)
        else:
            self.retransmits += 1
            self.metrics.reject_retransmits.inc()
        p.sends += 1

    def _count_missed(self, p: _Pending, now: float, why: str) -> None:
        self.missed += 1
        self.metrics.rejects_missed.inc()
        log.error(
            "REJECT MISSED: seq %d bunch %d (%s, score %.3f): %s; sent %d time(s), fire time %+.3f s from now",
            p.seq,
            p.decision.bunch_id,
            p.decision.reason,
            p.decision.score,
            why,
            p.sends,
            p.decision.fire_at_s - now,
        )

    def _receive(self, dealer: zmq.Socket[bytes], pending: dict[int, _Pending]) -> None:
        for _ in range(1000):
            try:
                frames = dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if len(frames) != 1:
                    raise messages.MalformedMessage(f"{len(frames)} frames, expected 1")
                msg = messages.decode(frames[0])
                if isinstance(msg, messages.Reject):
                    raise messages.MalformedMessage("a controller does not send rejects")
            except messages.MalformedMessage as exc:
                self.malformed += 1
                self.metrics.controller_messages_malformed.inc()
                if self.malformed <= 10 or self.malformed % 1000 == 0:
                    log.warning("ignored malformed controller message #%d: %s", self.malformed, exc)
                continue
            self._last_heard_s = self.clock()
            if isinstance(msg, messages.Ack):
                if msg.session != self.session:
                    log.debug("ack for another session %s ignored", msg.session)
                    continue
                p = pending.pop(msg.seq, None)
                if p is not None:
                    self.acked += 1
                    self.metrics.rejects_acked.inc()

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
