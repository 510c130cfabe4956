"""The controller end of the reject protocol (``inspector/messages.py``), free of sockets and of any ejector.

Every controller of this project shares this class: the reference simulator (``inspector/actuator_sim.py``) and any
gateway to a real ejector. The caller owns the ROUTER socket (and the ZAP allow-list) and passes each received frame
to ``receive``; it calls ``tick`` whenever ``next_wake_s`` comes (and at least every few tens of milliseconds) and
sends what both return. The ejector hardware is behind ``Output``::

    core = ControllerCore(output, timeout_s=2.0, expected_keys=["line1"])
    replies = core.receive(route, frame, user_id, clock())     # [(route, message)], encode and send each
    replies += core.tick(clock())                              # fires what is due, re-evaluates the fail-safe

What it does: de-duplicates rejects by (session, seq) and acks every copy; schedules each at its absolute
``fire_at_s`` on the controller clock; refuses (``nack`` late) a reject it cannot start by its ``deadline_s`` — on
arrival or when its time comes — instead of firing late at the wrong bunch; reports ``fired`` with the moment the
output switched; answers every heartbeat with its own (instance id, clock echo); and keeps the **fail-safe** on
(``Output.fail_safe(True, reason)``: eject or divert everything) while any expected peer is silent for
``timeout_s``, says it is unhealthy, or has not decided the belt now reaching the ejector (its watermark
``decided_until_s`` minus ``margin_s`` has passed). It starts with the fail-safe on.
"""

from __future__ import annotations

import heapq
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inspector import messages

Clock = Callable[[], float]
MAX_SESSIONS = 256  # de-duplication state kept for this many inspector sessions (oldest forgotten first)
MAX_PEERS = 256
SEQ_WINDOW = 1 << 16  # rejects this far behind a session's newest seq are taken as already seen
MAX_AHEAD_S = 3600.0  # a fire time further ahead than this is refused as invalid


FAIL_SAFE_KEY = "inspectors"  # the one fail-safe reason the core holds or releases on its Output


class Output(Protocol):
    """The ejector hardware (or its simulation)."""

    def fire(self, across_mm: float | None, at_s: float, stretch_s: float) -> float:
        """Switch the ejector for ``across_mm`` (None: the whole width) on now, for ``stretch_s`` (0: one pulse);
        ``at_s`` is the time it was due. Returns the controller clock when it switched. Raising means it did not
        fire: the core answers ``nack`` (reason ``late`` when the exception's ``outcome`` says so, else ``output``)."""
        ...

    def fail_safe(self, on: bool, reason: str) -> None:
        """Eject (or divert) everything while on. The core always passes ``FAIL_SAFE_KEY`` as ``reason`` (why, in
        words, is ``ControllerCore.failsafe_reason`` and the ``failsafe`` event), so an output that holds several
        reasons (its own, e.g. a PLC connection) can tell them apart."""
        ...


@dataclass
class Peer:
    key: str  # the allow-list name of its CURVE key, or its session without CURVE
    route: bytes
    session: str
    last_heard_s: float
    healthy: bool = False
    reason: str = "no heartbeat yet"
    decided_until_s: float | None = None


@dataclass
class _Session:
    route: bytes
    seen: set[int] = field(default_factory=set)
    refused: dict[int, str] = field(default_factory=dict)  # seq -> nack reason
    max_seq: int = 0


@dataclass(order=True)
class _Scheduled:
    fire_at_s: float
    tiebreak: int
    reject: messages.Reject = field(compare=False)


Send = tuple[bytes, messages.FromController]
EventSink = Callable[..., None]


class ControllerCore:
    """Protocol state of one controller (see module docstring)."""

    def __init__(
        self,
        output: Output,
        *,
        timeout_s: float = 2.0,
        margin_s: float = 0.0,
        expected_keys: Sequence[str] = (),
        expect_peers: int = 1,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        on_event: EventSink | None = None,
        instance: str | None = None,
    ) -> None:
        self.output = output
        self.timeout_s = timeout_s
        self.margin_s = margin_s
        self.expected_keys = tuple(expected_keys)
        self.expect_peers = expect_peers
        self.clock = clock
        self.wall = wall
        self.on_event = on_event
        self.instance = instance or secrets.token_hex(4)
        self.peers: OrderedDict[str, Peer] = OrderedDict()
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self._heap: list[_Scheduled] = []
        self._tiebreak = 0
        self.failsafe = True
        self.failsafe_reason = "starting: no inspector heard yet"
        self.failsafe_since_s = clock()
        self.counts: dict[str, int] = {}
        output.fail_safe(True, FAIL_SAFE_KEY)
        self._emit("failsafe", state="on", why=self.failsafe_reason, at_s=round(self.failsafe_since_s, 6))

    # ------------------------------------------------------------------ events
    def _emit(self, event: str, **info: Any) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1
        if self.on_event is not None:
            self.on_event(event, **info)

    # ------------------------------------------------------------------ input
    def receive(self, route: bytes, frame: bytes, user_id: str | None, now: float) -> list[Send]:
        """One frame from an inspector (``user_id``: its allow-list name under CURVE, else None)."""
        try:
            msg = messages.decode_from_inspector(frame)
        except messages.MalformedMessage as exc:
            self._emit("malformed", error=str(exc)[:200])
            return []
        if self.expected_keys and user_id not in self.expected_keys:
            self._emit("malformed", error=f"peer {user_id!r} is not on the allow-list")
            return []
        key = user_id if user_id is not None else msg.session
        peer = self.peers.get(key)
        if peer is None:
            if len(self.peers) >= MAX_PEERS:
                self._prune_peers(now)
                if len(self.peers) >= MAX_PEERS:
                    self._emit("malformed", error="too many peers")
                    return []
            peer = self.peers[key] = Peer(key, route, msg.session, now)
            self._emit("peer", key=key, session=msg.session)
        peer.route, peer.last_heard_s = route, now
        if peer.session != msg.session:  # the same key, a new inspector run: its old watermark means nothing
            peer.session, peer.healthy, peer.decided_until_s = msg.session, False, None
            peer.reason = "new session, no heartbeat yet"
        if isinstance(msg, messages.Heartbeat):
            peer.healthy, peer.reason, peer.decided_until_s = msg.healthy, msg.reason, msg.decided_until_s
            self._evaluate(now)
            reply = messages.ControllerHeartbeat(
                instance=self.instance,
                t_s=self.clock(),
                echo_t_send_s=msg.t_send_s,
                echo_rx_s=now,
                failsafe=self.failsafe,
                sent_unix_s=self.wall(),
            )
            return [(route, reply)]
        return self._reject(route, msg, now)

    def _reject(self, route: bytes, msg: messages.Reject, now: float) -> list[Send]:
        st = self.sessions.get(msg.session)
        if st is None:
            while len(self.sessions) >= MAX_SESSIONS:
                self.sessions.popitem(last=False)
            st = self.sessions[msg.session] = _Session(route)
        st.route = route
        self.sessions.move_to_end(msg.session)
        info = {
            "session": msg.session,
            "seq": msg.seq,
            "bunch_id": msg.bunch_id,
            "score": msg.score,
            "reason": msg.reason,
            "across_mm": msg.across_mm,
            "fire_at_s": msg.fire_at_s,
            "stretch_s": msg.stretch_s,
            "deadline_s": msg.deadline_s,
            "model": msg.model,
        }
        if msg.seq in st.seen or msg.seq <= st.max_seq - SEQ_WINDOW:
            self._emit("duplicate", session=msg.session, seq=msg.seq, attempt=msg.attempt)
            if msg.seq in st.refused:
                return [(route, messages.Nack(msg.session, msg.seq, st.refused[msg.seq]))]
            return [(route, messages.Ack(msg.session, msg.seq))]
        st.seen.add(msg.seq)
        st.max_seq = max(st.max_seq, msg.seq)
        if len(st.seen) > SEQ_WINDOW:
            st.seen = {s for s in st.seen if s > st.max_seq - SEQ_WINDOW}
            st.refused = {k: v for k, v in st.refused.items() if k in st.seen}
        self._emit("reject", attempt=msg.attempt, arrived_s=now, **info)
        if msg.fire_at_s > now + MAX_AHEAD_S:
            st.refused[msg.seq] = "invalid"
            self._emit("refused", why="invalid", **info)
            return [(route, messages.Nack(msg.session, msg.seq, "invalid"))]
        if now > msg.deadline_s:
            st.refused[msg.seq] = "late"
            self._emit("refused", why="late", late_by_s=round(now - msg.deadline_s, 6), **info)
            return [(route, messages.Nack(msg.session, msg.seq, "late"))]
        self._tiebreak += 1
        heapq.heappush(self._heap, _Scheduled(msg.fire_at_s, self._tiebreak, msg))
        return [(route, messages.Ack(msg.session, msg.seq))]

    # ------------------------------------------------------------------ time
    def next_wake_s(self) -> float | None:
        """When ``tick`` must run next at the latest (the next fire, the next watermark or timeout expiry)."""
        wake = [s.fire_at_s for s in self._heap[:1]]
        for peer in self.peers.values():
            wake.append(peer.last_heard_s + self.timeout_s)
            if peer.decided_until_s is not None:
                wake.append(peer.decided_until_s - self.margin_s)
        return min(wake) if wake else None

    def tick(self, now: float) -> list[Send]:
        """Fire (or refuse) what is due; re-evaluate the fail-safe."""
        out: list[Send] = []
        while self._heap and self._heap[0].fire_at_s <= now:
            r = heapq.heappop(self._heap).reject
            st = self.sessions.get(r.session)
            route = st.route if st is not None else b""
            at = self.clock()
            if at > r.deadline_s:
                if st is not None:
                    st.refused[r.seq] = "late"
                self._emit(
                    "refused",
                    why="late",
                    session=r.session,
                    seq=r.seq,
                    bunch_id=r.bunch_id,
                    late_by_s=round(at - r.deadline_s, 6),
                    fire_at_s=r.fire_at_s,
                )
                out.append((route, messages.Nack(r.session, r.seq, "late")))
                continue
            try:
                at = self.output.fire(r.across_mm, r.fire_at_s, r.stretch_s)
            except Exception as exc:  # the output did not fire: say so, never pretend
                why = "late" if getattr(exc, "outcome", None) == "late" else "output"
                if st is not None:
                    st.refused[r.seq] = why
                self._emit(
                    "refused",
                    why=why,
                    session=r.session,
                    seq=r.seq,
                    bunch_id=r.bunch_id,
                    error=str(exc)[:200],
                    fire_at_s=r.fire_at_s,
                )
                out.append((route, messages.Nack(r.session, r.seq, why)))
                continue
            self._emit(
                "fired",
                session=r.session,
                seq=r.seq,
                bunch_id=r.bunch_id,
                reason=r.reason,
                score=r.score,
                across_mm=r.across_mm,
                model=r.model,
                fire_at_s=r.fire_at_s,
                stretch_s=r.stretch_s,
                at_s=round(at, 6),
                error_s=round(at - r.fire_at_s, 6),
            )
            out.append((route, messages.Fired(r.session, r.seq, at)))
        self._evaluate(now)
        return out

    def pending(self) -> list[messages.Reject]:
        """Scheduled rejects not fired yet, in fire-time order."""
        return [s.reject for s in sorted(self._heap)]

    # ------------------------------------------------------------------ fail-safe
    def _peer_fault(self, peer: Peer, now: float) -> str | None:
        age = now - peer.last_heard_s
        if age > self.timeout_s:
            return f"{peer.key}: silent for {age:.2f} s (timeout {self.timeout_s:.2f} s)"
        if not peer.healthy:
            return f"{peer.key}: unhealthy ({peer.reason})"
        if peer.decided_until_s is None:
            return f"{peer.key}: nothing decided yet"
        if now + self.margin_s > peer.decided_until_s:
            return f"{peer.key}: belt reaching the ejector is undecided (watermark passed {now - peer.decided_until_s:+.3f} s)"
        return None

    def peer_faults(self, now: float) -> dict[str, str | None]:
        """Each expected peer (allow-list name) -> why it holds the fail-safe now, or None; {} without an allow-list."""
        return {
            key: f"{key}: never heard" if (peer := self.peers.get(key)) is None else self._peer_fault(peer, now)
            for key in self.expected_keys
        }

    def fault(self, now: float) -> str | None:
        """Why the fail-safe must be on now, or None."""
        if self.expected_keys:
            return next((why for why in self.peer_faults(now).values() if why is not None), None)
        live = [p for p in self.peers.values() if now - p.last_heard_s <= self.timeout_s]
        for peer in live:
            why = self._peer_fault(peer, now)
            if why is not None:
                return why
        if len(live) < self.expect_peers:
            silent = [p for p in self.peers.values() if p not in live]
            last = max(silent, key=lambda p: p.last_heard_s, default=None)
            why = "" if last is None else f"; {last.key} silent for {now - last.last_heard_s:.2f} s"
            return f"{len(live)} of {self.expect_peers} expected inspector(s) live{why}"
        return None

    def _evaluate(self, now: float) -> None:
        why = self.fault(now)
        on = why is not None
        if on != self.failsafe:
            if on:
                self.failsafe_since_s = now
                self.output.fail_safe(True, FAIL_SAFE_KEY)
                self._emit("failsafe", state="on", why=why, at_s=round(now, 6))
            else:
                start = self.failsafe_since_s
                self.output.fail_safe(False, FAIL_SAFE_KEY)
                self._emit(
                    "failsafe",
                    state="off",
                    why=self.failsafe_reason,
                    at_s=round(now, 6),
                    stretch_start_s=round(start, 6),
                    stretch_s=round(now - start, 6),
                )
            self.failsafe = on
        if why is not None:
            self.failsafe_reason = why
        self._prune_peers(now)

    def _prune_peers(self, now: float) -> None:
        """Forget sessions silent for 10 timeouts (without an allow-list they count as absent long before)."""
        if self.expected_keys:
            return
        for key in [k for k, p in self.peers.items() if now - p.last_heard_s > 10 * self.timeout_s]:
            del self.peers[key]
