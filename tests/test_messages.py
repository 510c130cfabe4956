"""Wire schema v2: round trips, every accepted message in range, every malformed frame a MalformedMessage (never
another exception), and encoding that never fails on a non-finite number it can leave out."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector import messages
from inspector.messages import Ack, MalformedMessage, decode, encode
from tests.sim import assert_in_range, sample_messages


@pytest.mark.parametrize("msg", sample_messages())
def test_round_trip(msg: messages.Message) -> None:
    frame = encode(msg)
    assert json.loads(frame)["v"] == messages.VERSION == 2
    assert decode(frame) == msg
    assert_in_range(decode(frame))


def test_each_side_decodes_only_what_the_other_sends() -> None:
    for msg in sample_messages():
        frame = encode(msg)
        inspector_kind = isinstance(msg, messages.Reject | messages.Heartbeat)
        decoder = messages.decode_from_controller if inspector_kind else messages.decode_from_inspector
        with pytest.raises(MalformedMessage):
            decoder(frame)


def test_decision_pub_frames_clean_nan() -> None:
    topic, body = messages.encode_decision({"bunch_id": 3, "decision": "pass", "score": math.nan}, "s1", 0, "demo")
    assert topic == b"decision"
    assert json.loads(body) == {
        "v": 2,
        "type": "decision",
        "session": "s1",
        "seq": 0,
        "model": "demo",
        "bunch_id": 3,
        "decision": "pass",
        "score": None,
    }


def test_non_finite_numbers_on_encode() -> None:
    """A NaN score or position goes out as null; a NaN time cannot be scheduled: ValueError, never a crash."""
    reject = sample_messages()[0]
    assert isinstance(reject, messages.Reject)
    body = json.loads(encode(messages.Reject(**{**_fields(reject), "score": math.nan, "across_mm": math.inf})))
    assert body["score"] is None and body["across_mm"] is None
    for key in ("fire_at_s", "deadline_s", "stretch_s"):
        with pytest.raises(ValueError, match=key):
            encode(messages.Reject(**{**_fields(reject), key: math.nan}))
    hb = json.loads(encode(messages.Heartbeat("s", 1.0, math.nan, True, "ok", 0.0)))
    assert hb["decided_until_s"] is None and hb["healthy"] is False  # no watermark: never healthy


def _fields(msg: messages.Reject) -> dict[str, object]:
    return {k: getattr(msg, k) for k in msg.__slots__}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xff\xfe\x00",
        b"not json",
        b"[1, 2]",
        b'{"type": "ack", "session": "s", "seq": 1}',  # no version
        b'{"v": 1, "type": "ack", "session": "s", "seq": 1}',  # the old version
        b'{"v": 3, "type": "ack", "session": "s", "seq": 1}',  # a future version
        b'{"v": true, "type": "ack", "session": "s", "seq": 1}',
        b'{"v": 2, "type": "nack", "seq": 1}',
        b'{"v": 2, "type": "ack", "session": "s", "seq": "1"}',
        b'{"v": 2, "type": "ack", "session": "s", "seq": 0}',
        b'{"v": 2, "type": "ack", "session": "s", "seq": true}',
        b'{"v": 2, "type": "ack", "session": "s", "seq": 9223372036854775808000}',
        b'{"v": 2, "type": "ack", "session": "s", "seq": 9007199254740993}',
        b'{"v": 2, "type": "ack", "seq": 1}',
        b'{"v": 2, "type": "fired", "session": "s", "seq": 1, "at_s": NaN}',
        b'{"v": 2, "type": "fired", "session": "s", "seq": 1, "at_s": 1e300}',
        b'{"v": 2, "type": "heartbeat", "instance": "i", "t_s": Infinity, "failsafe": false}',
        b'{"v": 2, "type": "heartbeat", "instance": "i", "t_s": 1.0, "failsafe": 0}',
        b"[" * 100_000,
        b'{"v": 2, "type": "reject", "session": "s", "seq": 1}',
        b'{"v": 2, "type": "ack", "session": "' + b"s" * 300 + b'", "seq": 1}',
    ],
)
def test_malformed_frames_raise_malformed(frame: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(frame)


def test_reject_out_of_range_or_missing_fields_are_malformed() -> None:
    full = json.loads(encode(sample_messages()[0]))
    for key in ("session", "seq", "bunch_id", "reason", "fire_at_s", "stretch_s", "deadline_s"):
        partial = {k: v for k, v in full.items() if k != key}
        with pytest.raises(MalformedMessage, match=key):
            decode(json.dumps(partial).encode())
    for key, bad in (("deadline_s", full["fire_at_s"] - 1), ("stretch_s", 61.0), ("stretch_s", -0.1), ("score", 1.5)):
        with pytest.raises(MalformedMessage):
            decode(json.dumps({**full, key: bad}).encode())


def test_extra_fields_are_ignored() -> None:
    d = json.loads(encode(Ack("s", 3)))
    d["future_field"] = {"x": 1}
    assert decode(json.dumps(d).encode()) == Ack("s", 3)


def _outcome(frame: bytes) -> messages.Message | None:
    """decode's answer: a message with every field in range, or None for MalformedMessage (nothing else)."""
    try:
        msg = decode(frame)
    except MalformedMessage as exc:
        assert str(exc)
        return None
    assert_in_range(msg)
    assert decode(encode(msg)) == msg  # whatever is accepted survives a round trip
    return msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes(frame: bytes) -> None:
    _outcome(frame)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sample_messages()), st.dictionaries(st.text(max_size=16), _json, max_size=4), st.data())
def test_fuzz_mutated_messages(msg: messages.Message, extra: dict[str, object], data: st.DataObject) -> None:
    """Valid messages with fields replaced by arbitrary JSON (NaN and huge numbers included) or removed."""
    obj = json.loads(encode(msg))
    for key in data.draw(st.lists(st.sampled_from(sorted(obj)), max_size=3, unique=True)):
        if data.draw(st.booleans()):
            obj[key] = data.draw(_json)
        else:
            obj.pop(key, None)
    obj.update({k: v for k, v in extra.items() if k not in ("v", "type")})
    got = _outcome(json.dumps(obj).encode())
    if got is not None and type(got) is type(msg) and obj == json.loads(encode(msg)):
        assert got == msg


@pytest.mark.parametrize("key, value", [("across_mm", 0.0625), ("score", 1e-7), ("fire_at_s", 1002.0000001)])
def test_accepted_numbers_survive_a_round_trip_unrounded(key: str, value: float) -> None:
    frame = json.loads(encode(sample_messages()[0]))
    frame[key] = value
    msg = decode(json.dumps(frame).encode())
    assert getattr(msg, key) == value
    assert decode(encode(msg)) == msg
