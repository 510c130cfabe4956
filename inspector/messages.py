"""The wire protocol between the inspector and the ejector controller — the one place it is documented.

A PLC-gateway author can implement the controller side from this text alone (``inspector/actuator_sim.py``,
run as ``inspector actuator-sim``, is the reference implementation).

Transport
=========
ZeroMQ (ZMTP 3.x), TCP. The **controller binds a ROUTER** socket (default ``tcp://*:5560``); each inspector
**connects a DEALER** to it. Every message is **one ZeroMQ frame** holding one UTF-8 JSON object (on the
ROUTER side the frame arrives after the peer-identity frame that ROUTER adds; reply with that identity
frame first). The inspector additionally **binds a PUB** socket (default ``tcp://127.0.0.1:5561``) on which
every decision is published as two frames ``[b"decision", JSON]`` for loggers and dashboards.

Optional encryption: CURVE. The controller is the CURVE server (its secret key stays on the controller);
the inspector pins the controller's public key (``link.curve_server_public_key``, 40-character Z85) and uses
its own key pair (``link.curve_client_secret_key_file``; an ephemeral one when absent).

Every object carries ``"v": 1`` (schema version) and ``"type"``. A receiver **ignores and counts** any frame
that is not valid UTF-8 JSON, not an object, has another ``v``, an unknown ``type`` or a missing/ill-typed
field; it never stops for one. Unknown extra fields are ignored (forward-compatible additions keep ``v``).

Clock: relative time to fire
============================
The two machines do not share a clock. The authoritative fire time is therefore **relative**:
``fire_in_s`` = seconds from the moment this frame was sent until the bunch is at the ejector. The
inspector recomputes it on every (re)transmission, so a retransmitted frame is as accurate as the first.
The controller fires at ``(its own monotonic clock when the frame arrived) + fire_in_s``; on a LAN the
transit time (< 1 ms) is the only error. ``fire_in_s`` ≤ 0 means the bunch has already passed the ejector:
the controller acks, must not fire late at the wrong bunch, and should log it as late.
Wall-clock fields (``*_unix_s``, seconds since 1970 UTC) are for logs and for controllers with
NTP/PTP-synchronised clocks only; never schedule from them unless you know the clocks agree.

Messages
========
inspector → controller (DEALER → ROUTER)

``reject`` — eject this bunch::

    {"v": 1, "type": "reject", "session": "5f0c2a9e", "seq": 17, "attempt": 0,
     "bunch_id": 412, "score": 0.93, "reason": "spider",
     "fire_in_s": 2.314, "fire_at_unix_s": 1718000000.123, "t_capture_unix_s": 1717999997.6,
     "sent_unix_s": 1717999997.809, "across_mm": -35.5, "model": "demo-vgg16-w4"}

  - ``session``: random id of one inspector run; ``seq`` starts at 1 and increases by one per reject within
    a session. A controller de-duplicates by ``(session, seq)``: the same reject arrives again (``attempt``
    1, 2, …) whenever an ack was lost — ack it again, fire once.
  - ``reason``: ``spider`` (scored above threshold) or ``uninspected`` (fail-safe: could not be inspected in
    time — eject it all the same).
  - ``across_mm``: position across the belt in mm from the image centre line, measured along the image axis
    perpendicular to travel (positive towards larger pixel coordinates), or ``null`` when unknown (fire the
    whole width).

``heartbeat`` — sent every ``link.heartbeat_interval_s`` (default 0.5 s)::

    {"v": 1, "type": "heartbeat", "session": "5f0c2a9e", "sent_unix_s": 1717999997.809}

controller → inspector (ROUTER → DEALER, addressed with the peer's identity frame)

``ack`` — as soon as a reject is received (every copy of it)::

    {"v": 1, "type": "ack", "session": "5f0c2a9e", "seq": 17}

``heartbeat`` — to every inspector heard within the controller's timeout, every interval::

    {"v": 1, "type": "heartbeat", "sent_unix_s": 1717999997.812}

inspector PUB (two frames: topic, JSON)

``decision`` — every bunch decided, pass or reject: the line of ``decisions.jsonl`` plus ``v``,
``type``, ``session``, ``seq`` (0 for a pass) and ``model``.

Reliability rules
=================
- The inspector retransmits an unacked reject every ``link.retransmit_interval_s`` until it is acked or its
  fire time has passed; then it counts it missed (``inspector_rejects_missed_total``) and logs at ERROR.
  Frames are only handed to connected peers (ZMQ_IMMEDIATE), so no stale reject waits in a queue for a
  controller that is down.
- Fail safe, controller side: **if nothing (heartbeat or reject) has been heard from the inspector for the
  controller's timeout (e.g. 4 × the heartbeat interval), the line must stop or divert everything.**
- Inspector side: when nothing has been heard from the controller for ``link.controller_timeout_s`` the
  inspector raises a fault (log, ``inspector_controller_up`` 0, heartbeat-age metric).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

VERSION = 1
PUB_TOPIC_DECISION = b"decision"


class MalformedMessage(ValueError):
    """A frame that does not follow the schema: ignored and counted by the receiver."""


@dataclass(frozen=True, slots=True)
class Reject:
    session: str
    seq: int
    bunch_id: int
    score: float
    reason: str
    fire_in_s: float
    fire_at_unix_s: float
    t_capture_unix_s: float
    sent_unix_s: float
    across_mm: float | None
    model: str
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Ack:
    session: str
    seq: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    sent_unix_s: float
    session: str | None = None


Message = Reject | Ack | Heartbeat


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def encode(msg: Message) -> bytes:
    """One JSON frame for ``msg``."""
    if isinstance(msg, Reject):
        d: dict[str, Any] = {"v": VERSION, "type": "reject"}
        d.update(
            session=msg.session,
            seq=msg.seq,
            attempt=msg.attempt,
            bunch_id=msg.bunch_id,
            score=round(float(msg.score), 6),
            reason=msg.reason,
            fire_in_s=round(float(msg.fire_in_s), 6),
            fire_at_unix_s=round(float(msg.fire_at_unix_s), 6),
            t_capture_unix_s=round(float(msg.t_capture_unix_s), 6),
            sent_unix_s=round(float(msg.sent_unix_s), 6),
            across_mm=None if msg.across_mm is None else round(float(msg.across_mm), 3),
            model=msg.model,
        )
        return _encode(d)
    if isinstance(msg, Ack):
        return _encode({"v": VERSION, "type": "ack", "session": msg.session, "seq": msg.seq})
    d = {"v": VERSION, "type": "heartbeat", "sent_unix_s": round(float(msg.sent_unix_s), 6)}
    if msg.session is not None:
        d["session"] = msg.session
    return _encode(d)


def encode_decision(decision_json: dict[str, Any], session: str, seq: int, model: str) -> list[bytes]:
    """The two PUB frames for one decision (``decision_json`` is ``Decision.to_json_dict()``)."""
    body = {"v": VERSION, "type": "decision", "session": session, "seq": seq, "model": model, **decision_json}
    return [PUB_TOPIC_DECISION, _encode(body)]


# ------------------------------------------------------------------------------------------------ decoding
def _field(d: dict[str, Any], key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    if key not in d:
        if optional:
            return None
        raise MalformedMessage(f"missing field {key!r}")
    v = d[key]
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, kind):
        raise MalformedMessage(f"field {key!r} has the wrong type ({type(v).__name__})")
    if isinstance(v, float) and not math.isfinite(v):
        raise MalformedMessage(f"field {key!r} is not finite")
    return v


_NUM = (int, float)


def decode(frame: bytes) -> Message:
    """Parse one frame; raise ``MalformedMessage`` for anything that does not follow the schema."""
    if len(frame) > 65536:
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
    kind = d.get("type")
    if kind == "ack":
        seq = _field(d, "seq", int)
        if seq < 1:
            raise MalformedMessage("seq must be >= 1")
        return Ack(session=_field(d, "session", str), seq=seq)
    if kind == "heartbeat":
        return Heartbeat(
            sent_unix_s=float(_field(d, "sent_unix_s", _NUM)), session=_field(d, "session", str, optional=True)
        )
    if kind == "reject":
        seq = _field(d, "seq", int)
        if seq < 1:
            raise MalformedMessage("seq must be >= 1")
        across = _field(d, "across_mm", _NUM, optional=True)
        return Reject(
            session=_field(d, "session", str),
            seq=seq,
            attempt=int(_field(d, "attempt", int, optional=True) or 0),
            bunch_id=_field(d, "bunch_id", int),
            score=float(_field(d, "score", _NUM)),
            reason=_field(d, "reason", str),
            fire_in_s=float(_field(d, "fire_in_s", _NUM)),
            fire_at_unix_s=float(_field(d, "fire_at_unix_s", _NUM)),
            t_capture_unix_s=float(_field(d, "t_capture_unix_s", _NUM)),
            sent_unix_s=float(_field(d, "sent_unix_s", _NUM)),
            across_mm=None if across is None else float(across),
            model=str(_field(d, "model", str)),
        )
    raise MalformedMessage(f"unknown message type {kind!r}")
