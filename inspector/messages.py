"""The wire protocol between the inspector and the ejector controller (v2) — the one place it is documented.

A PLC-gateway author can implement the controller side from this text alone. ``inspector/controller.py`` is the
controller logic every controller of this project shares (the reference simulator ``inspector actuator-sim`` and
any gateway): read it beside this text.

Transport
=========
ZeroMQ (ZMTP 3.x), TCP. The **controller binds a ROUTER** socket (default ``tcp://127.0.0.1:5560``); each inspector
**connects a DEALER** to it. Every message is **one ZeroMQ frame** holding one UTF-8 JSON object of at most
``MAX_FRAME_BYTES`` bytes (on the ROUTER side the frame arrives after the peer-identity frame that ROUTER adds;
reply with that identity frame first). Both ends set ZMQ_MAXMSGSIZE so a larger frame drops the connection. The
inspector additionally binds an **XPUB** socket (default ``tcp://127.0.0.1:5561``, loopback) on which every decision
is published as two frames ``[b"decision", JSON]`` for loggers and dashboards; subscribers use a plain SUB socket.
The inspector handles subscriptions itself (XPUB manual mode): a subscriber asking for ``decision`` (or everything)
is given the ``decision`` topic, every other subscription is dropped and counted, and after 64 subscriptions the
socket is closed and bound again (libzmq would keep every one), so a subscription flood cannot grow the inspector's
memory; subscribers reconnect by themselves and may miss the decisions published meanwhile.

Security: CURVE. The controller is the CURVE server (its secret key stays on the controller); the inspector pins
the controller's public key (``link.curve_server_public_key``, 40-character Z85) and uses its own key pair
(``link.curve_client_secret_key_file``). The controller admits only the client public keys on its allow-list
(ZAP, ``--allow KEYFILE``: one Z85 public key per line, optionally followed by a name); every key on it is an
**expected peer** (see fail-safe). Without CURVE anyone who can reach the port is a peer: keep it on a closed network.

Every object carries ``"v": 2`` (schema version) and ``"type"``. A receiver **ignores and counts** any frame that
is not valid UTF-8 JSON, not an object, has another ``v``, an unknown ``type``, a missing or ill-typed field, or a
number out of its range (every number must be finite; integers 0 … 2^53; times within ±1e9 s); it never stops for
one. Unknown extra fields are ignored (forward-compatible additions keep ``v``). v1 peers are refused.

Time base: the controller's clock
=================================
All scheduling times on the wire (``*_s`` fields without ``unix``) are seconds on the **controller's monotonic
clock** (any epoch: a PLC's millisecond counter / 1000 will do; it must not jump). The inspector estimates the
offset between its clock and the controller's from heartbeat round trips (NTP style: the controller echoes the
inspector's send time ``t1`` with its receive time ``t2`` and its own send time ``t3``; the inspector receives at
``t4``; offset = ((t2 − t1) + (t3 − t4)) / 2, round trip = (t4 − t1) − (t3 − t2); of the last 16 samples the one
with the shortest round trip is used). It sends nothing schedulable before it has an estimate, and starts again
from none whenever the controller's ``instance`` changes. A reject held in a queue (a stalled inspector, a slow
network) therefore still names the right moment, and its ``deadline_s`` tells the controller when it went stale.
Wall-clock fields (``*_unix_s``, seconds since 1970 UTC) are for logs only; never schedule from them.

Messages
========
inspector → controller (DEALER → ROUTER)

``heartbeat`` — every ``link.heartbeat_interval_s`` (default 0.5 s), and at once when ``healthy`` changes::

    {"v": 2, "type": "heartbeat", "session": "5f0c2a9e", "t_send_s": 8812.204,
     "decided_until_s": 10433.870, "healthy": true, "reason": "ok", "sent_unix_s": 1717999997.809}

  - ``t_send_s``: the inspector's own clock at sending; echo it back (see the controller's heartbeat).
  - ``decided_until_s`` (controller clock, or ``null``): the **watermark**. Every bunch that reaches the ejector
    at or before this time has been decided, and every reject for it has been sent before this heartbeat. Whatever
    reaches the ejector after it is **uninspected**: the controller must eject it. ``null``: nothing is decided
    (no clock estimate yet, no frame yet).
  - ``healthy`` / ``reason``: false while the inspector is missing its deadlines (inspection late, frames
    skipped, model failing, frame queue full, inspection loop stalled); ``reason`` says which, in words.

``reject`` — eject this bunch (or stretch of belt)::

    {"v": 2, "type": "reject", "session": "5f0c2a9e", "seq": 17, "attempt": 0,
     "bunch_id": 412, "score": 0.93, "reason": "spider",
     "fire_at_s": 10434.512, "stretch_s": 0.0, "deadline_s": 10434.545, "across_mm": -35.5,
     "fire_at_unix_s": 1718000000.123, "t_capture_unix_s": 1717999997.6, "sent_unix_s": 1717999997.809,
     "model": "demo-vgg16-w4"}

  - ``session``: random id of one inspector run; ``seq`` starts at 1 and increases by one per reject within a
    session. A controller de-duplicates by ``(session, seq)``: the same reject arrives again (``attempt`` 1, 2, …)
    whenever an ack was lost or the controller restarted — ack it again, fire once.
  - ``fire_at_s`` (controller clock): when the ejector must start; ``stretch_s`` (0 … 60): how long it must stay
    on — 0 for one standard pulse at a spider, the time the bunch's length takes to pass for an ``uninspected``
    or ``model_error`` bunch (the whole bunch goes, not a point of it).
  - ``deadline_s`` (controller clock, ≥ ``fire_at_s``): the latest moment the start is still on time. A
    controller that cannot start by then must **not fire** (it would hit the wrong bunch): it answers ``nack``
    with reason ``late`` instead.
  - ``reason``: ``spider`` (scored above threshold), ``uninspected`` (could not be inspected in time) or
    ``model_error`` (the model gave no valid answer); eject it whatever the reason, a future one included.
  - ``score``: 0 … 1, or ``null`` when there is none (a model error).
  - ``across_mm``: position across the belt in mm from the image centre line, measured along the image axis
    perpendicular to travel (positive towards larger pixel coordinates), or ``null`` when unknown (fire the
    whole width).

controller → inspector (ROUTER → DEALER, addressed with the peer's identity frame)

``heartbeat`` — the answer to every inspector heartbeat, sent at once::

    {"v": 2, "type": "heartbeat", "instance": "9d2e11f0", "t_s": 10433.120, "echo_t_send_s": 8812.204,
     "echo_rx_s": 10433.119, "failsafe": false, "sent_unix_s": 1717999997.812}

  - ``instance``: random id of this controller run (a new one after every restart or reboot). On a new instance
    the inspector resends every reject that is still due and counts the ones it could not.
  - ``t_s``: the controller clock at sending; ``echo_t_send_s``: the ``t_send_s`` of the heartbeat answered;
    ``echo_rx_s``: the controller clock when that heartbeat arrived. ``failsafe``: the controller is ejecting
    everything (for people and metrics).

``ack`` — a reject was received and scheduled (every copy of it)::

    {"v": 2, "type": "ack", "session": "5f0c2a9e", "seq": 17}

``nack`` — a reject was refused, instead of the ack or after it; it will not be fired::

    {"v": 2, "type": "nack", "session": "5f0c2a9e", "seq": 17, "reason": "late"}

  ``reason``: ``late`` (it cannot be started by ``deadline_s``), ``invalid`` (a field out of range) or ``output``
  (the ejector could not be switched, e.g. the PLC is down).

``fired`` — the ejector started for a reject::

    {"v": 2, "type": "fired", "session": "5f0c2a9e", "seq": 17, "at_s": 10434.513}

  ``at_s``: the controller clock when the output was actually switched.

inspector PUB (two frames: topic, JSON)

``decision`` — every bunch decided, pass or reject: the line of ``decisions.jsonl`` plus ``v``, ``type``,
``session``, ``seq`` (0 for a pass) and ``model``; a non-finite number becomes ``null``.

Reliability and fail-safe rules
===============================
- The inspector retransmits an unacked reject every ``link.retransmit_interval_s`` until it is acked, nacked or
  its deadline has passed; then it counts it missed (``inspector_rejects_missed_total``, logged at ERROR). An
  acked reject stays due (``inspector_rejects_due``) until its ``fired`` arrives; a ``nack``, or no ``fired`` by
  its deadline plus one controller timeout, is counted missed as well. Frames are only handed to a connected
  controller (ZMQ_IMMEDIATE), so no stale reject waits in a queue for a controller that is down.
- **Controller fail-safe** (eject or divert everything reaching the ejector) while, for any expected peer: nothing
  was heard from it for the controller's timeout (e.g. 4 × the heartbeat interval); its last heartbeat said
  ``healthy: false``; or the time now plus the controller's margin is past its ``decided_until_s``. Expected peers
  are the keys on the allow-list with CURVE; without it, at least ``--expect-peers`` live sessions (default 1), and
  every live one must be fine. One live inspector cannot hide a dead one. The controller starts in fail-safe.
- The inspector raises a fault when nothing was heard from the controller for ``link.controller_timeout_s``
  (log, ``inspector_controller_up`` 0, heartbeat-age metric).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

VERSION = 2
PUB_TOPIC_DECISION = b"decision"
MAX_FRAME_BYTES = 65536
MAX_INT = 2**53  # the largest integer every JSON reader holds exactly
MAX_TIME_S = 1e9  # |time| on either clock; wall-clock fields up to 1e10 (year 2286)
MAX_STRETCH_S = 60.0
MAX_TEXT = 200
NACK_REASONS = ("late", "invalid", "output")


class MalformedMessage(ValueError):
    """A frame that does not follow the schema: ignored and counted by the receiver."""


@dataclass(frozen=True, slots=True)
class Reject:
    session: str
    seq: int
    bunch_id: int
    score: float | None
    reason: str
    fire_at_s: float
    stretch_s: float
    deadline_s: float
    across_mm: float | None
    fire_at_unix_s: float
    t_capture_unix_s: float
    sent_unix_s: float
    model: str
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The inspector's heartbeat (progress watermark and health)."""

    session: str
    t_send_s: float
    decided_until_s: float | None
    healthy: bool
    reason: str
    sent_unix_s: float


@dataclass(frozen=True, slots=True)
class ControllerHeartbeat:
    instance: str
    t_s: float
    echo_t_send_s: float | None
    echo_rx_s: float | None
    failsafe: bool
    sent_unix_s: float


@dataclass(frozen=True, slots=True)
class Ack:
    session: str
    seq: int


@dataclass(frozen=True, slots=True)
class Nack:
    session: str
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Fired:
    session: str
    seq: int
    at_s: float


Message = Reject | Heartbeat | ControllerHeartbeat | Ack | Nack | Fired
FromInspector = Reject | Heartbeat
FromController = ControllerHeartbeat | Ack | Nack | Fired


# ------------------------------------------------------------------------------------------------ encoding
def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, or None when it is None, NaN or infinite (JSON has no NaN). Never rounded: Python's float
    repr round-trips exactly, so whatever a receiver accepts it can send back unchanged."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def clean(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (dicts, lists, tuples; for the PUB decision)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj


def _encode(obj: dict[str, Any]) -> bytes:
    frame = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    if len(frame) > MAX_FRAME_BYTES:
        raise ValueError(f"message of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    return frame


def _time(name: str, x: float) -> float:
    v = finite_or_none(x)
    if v is None:
        raise ValueError(f"{name} is not a finite number ({x!r}); the message cannot be sent")
    return v


def encode(msg: Message) -> bytes:
    """One JSON frame for ``msg``. Raises ValueError (never anything else) for a time that is not finite; a
    non-finite score or ``across_mm`` is sent as null."""
    d: dict[str, Any] = {"v": VERSION}
    if isinstance(msg, Reject):
        d.update(
            type="reject",
            session=msg.session,
            seq=msg.seq,
            attempt=msg.attempt,
            bunch_id=msg.bunch_id,
            score=finite_or_none(msg.score),
            reason=msg.reason,
            fire_at_s=_time("fire_at_s", msg.fire_at_s),
            stretch_s=_time("stretch_s", msg.stretch_s),
            deadline_s=_time("deadline_s", msg.deadline_s),
            across_mm=finite_or_none(msg.across_mm),
            fire_at_unix_s=finite_or_none(msg.fire_at_unix_s),
            t_capture_unix_s=finite_or_none(msg.t_capture_unix_s),
            sent_unix_s=finite_or_none(msg.sent_unix_s),
            model=msg.model,
        )
    elif isinstance(msg, Heartbeat):
        d.update(
            type="heartbeat",
            session=msg.session,
            t_send_s=_time("t_send_s", msg.t_send_s),
            decided_until_s=finite_or_none(msg.decided_until_s),
            healthy=bool(msg.healthy) and finite_or_none(msg.decided_until_s) is not None,
            reason=msg.reason[:MAX_TEXT],
            sent_unix_s=finite_or_none(msg.sent_unix_s),
        )
    elif isinstance(msg, ControllerHeartbeat):
        d.update(
            type="heartbeat",
            instance=msg.instance,
            t_s=_time("t_s", msg.t_s),
            echo_t_send_s=finite_or_none(msg.echo_t_send_s),
            echo_rx_s=finite_or_none(msg.echo_rx_s),
            failsafe=bool(msg.failsafe),
            sent_unix_s=finite_or_none(msg.sent_unix_s),
        )
    elif isinstance(msg, Ack):
        d.update(type="ack", session=msg.session, seq=msg.seq)
    elif isinstance(msg, Nack):
        d.update(type="nack", session=msg.session, seq=msg.seq, reason=msg.reason)
    else:
        d.update(type="fired", session=msg.session, seq=msg.seq, at_s=_time("at_s", msg.at_s))
    return _encode(d)


def encode_decision(decision_json: dict[str, Any], session: str, seq: int, model: str) -> list[bytes]:
    """The two PUB frames for one decision (``decision_json`` is ``Decision.to_json_dict()``); NaN becomes null."""
    body = {"v": VERSION, "type": "decision", "session": session, "seq": seq, "model": model, **decision_json}
    return [PUB_TOPIC_DECISION, _encode(clean(body))]


# ------------------------------------------------------------------------------------------------ decoding
class _Fields:
    """Typed, range-checked access to one decoded object."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    def _get(self, key: str, optional: bool) -> Any:
        if key not in self.d or self.d[key] is None:
            if optional:
                return None
            raise MalformedMessage(f"missing field {key!r}")
        return self.d[key]

    def text(self, key: str, optional: bool = False) -> Any:
        v = self._get(key, optional)
        if v is None:
            return None
        if not isinstance(v, str):
            raise MalformedMessage(f"field {key!r} has the wrong type ({type(v).__name__})")
        if len(v) > MAX_TEXT:
            raise MalformedMessage(f"field {key!r} longer than {MAX_TEXT} characters")
        return v

    def integer(self, key: str, lo: int = 0, optional: bool = False) -> Any:
        v = self._get(key, optional)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise MalformedMessage(f"field {key!r} has the wrong type ({type(v).__name__})")
        if not lo <= v <= MAX_INT:
            raise MalformedMessage(f"field {key!r} out of range ({v}; {lo} … 2^53)")
        return v

    def number(self, key: str, lo: float = -MAX_TIME_S, hi: float = MAX_TIME_S, optional: bool = False) -> Any:
        v = self._get(key, optional)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise MalformedMessage(f"field {key!r} has the wrong type ({type(v).__name__})")
        f = float(v)
        if not math.isfinite(f):
            raise MalformedMessage(f"field {key!r} is not finite")
        if not lo <= f <= hi:
            raise MalformedMessage(f"field {key!r} out of range ({f}; {lo} … {hi})")
        return f

    def wall(self, key: str) -> Any:
        return self.number(key, 0.0, 10 * MAX_TIME_S, optional=True)

    def flag(self, key: str) -> bool:
        v = self._get(key, False)
        if not isinstance(v, bool):
            raise MalformedMessage(f"field {key!r} has the wrong type ({type(v).__name__})")
        return v


def _parse(frame: bytes) -> dict[str, Any]:
    if len(frame) > MAX_FRAME_BYTES:
        raise MalformedMessage(f"frame too long ({len(frame)} bytes)")
    try:
        d = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"not UTF-8 JSON: {exc}") from None
    if not isinstance(d, dict):
        raise MalformedMessage("not a JSON object")
    v = d.get("v")
    if v != VERSION or isinstance(v, bool):
        raise MalformedMessage(f"unsupported schema version {v!r} (this side speaks v{VERSION})")
    return d


def decode_from_inspector(frame: bytes) -> FromInspector:
    """Parse a frame a controller received; raise ``MalformedMessage`` for anything off the schema."""
    d = _parse(frame)
    f = _Fields(d)
    kind = d.get("type")
    if kind == "heartbeat":
        until = f.number("decided_until_s", optional=True)
        return Heartbeat(
            session=f.text("session"),
            t_send_s=f.number("t_send_s"),
            decided_until_s=until,
            healthy=f.flag("healthy") and until is not None,  # nothing decided is never healthy
            reason=f.text("reason", optional=True) or "",
            sent_unix_s=f.wall("sent_unix_s") or 0.0,
        )
    if kind == "reject":
        fire_at_s = f.number("fire_at_s")
        deadline_s = f.number("deadline_s")
        if deadline_s < fire_at_s:
            raise MalformedMessage("deadline_s lies before fire_at_s")
        return Reject(
            session=f.text("session"),
            seq=f.integer("seq", 1),
            attempt=f.integer("attempt", optional=True) or 0,
            bunch_id=f.integer("bunch_id"),
            score=f.number("score", 0.0, 1.0, optional=True),
            reason=f.text("reason"),
            fire_at_s=fire_at_s,
            stretch_s=f.number("stretch_s", 0.0, MAX_STRETCH_S),
            deadline_s=deadline_s,
            across_mm=f.number("across_mm", -1e5, 1e5, optional=True),
            fire_at_unix_s=f.wall("fire_at_unix_s") or 0.0,
            t_capture_unix_s=f.wall("t_capture_unix_s") or 0.0,
            sent_unix_s=f.wall("sent_unix_s") or 0.0,
            model=f.text("model", optional=True) or "",
        )
    raise MalformedMessage(f"unknown message type {kind!r} from an inspector")


def decode_from_controller(frame: bytes) -> FromController:
    """Parse a frame an inspector received; raise ``MalformedMessage`` for anything off the schema."""
    d = _parse(frame)
    f = _Fields(d)
    kind = d.get("type")
    if kind == "heartbeat":
        return ControllerHeartbeat(
            instance=f.text("instance"),
            t_s=f.number("t_s"),
            echo_t_send_s=f.number("echo_t_send_s", optional=True),
            echo_rx_s=f.number("echo_rx_s", optional=True),
            failsafe=f.flag("failsafe"),
            sent_unix_s=f.wall("sent_unix_s") or 0.0,
        )
    if kind == "ack":
        return Ack(session=f.text("session"), seq=f.integer("seq", 1))
    if kind == "nack":
        return Nack(session=f.text("session"), seq=f.integer("seq", 1), reason=f.text("reason"))
    if kind == "fired":
        return Fired(session=f.text("session"), seq=f.integer("seq", 1), at_s=f.number("at_s"))
    raise MalformedMessage(f"unknown message type {kind!r} from a controller")


def decode(frame: bytes) -> Message:
    """Parse a frame from either side (tests and tools): the inspector's kinds first, then the controller's."""
    d = _parse(frame)
    if d.get("type") == "reject" or (d.get("type") == "heartbeat" and "session" in d):
        return decode_from_inspector(frame)
    return decode_from_controller(frame)
