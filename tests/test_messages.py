"""Wire schema: round trips, and every malformed frame is a MalformedMessage (never another exception)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector import messages
from inspector.messages import Ack, Heartbeat, MalformedMessage, Reject, decode, encode


def _reject(**kw: object) -> Reject:
    base: dict[str, object] = dict(
        session="ab12cd34",
        seq=7,
        bunch_id=412,
        score=0.93,
        reason="spider",
        fire_in_s=2.25,
        fire_at_unix_s=1.7e9 + 2.25,
        t_capture_unix_s=1.7e9 - 0.5,
        sent_unix_s=1.7e9,
        across_mm=-35.5,
        model="demo",
        attempt=2,
    )
    base.update(kw)
    return Reject(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "msg",
    [_reject(), _reject(across_mm=None, attempt=0), Ack("ab12cd34", 7), Heartbeat(1.7e9, "s1"), Heartbeat(1.7e9)],
)
def test_round_trip(msg: messages.Message) -> None:
    frame = encode(msg)
    assert json.loads(frame)["v"] == messages.VERSION
    assert decode(frame) == msg


def test_decision_pub_frames() -> None:
    topic, body = messages.encode_decision({"bunch_id": 3, "decision": "pass"}, "s1", 0, "demo")
    assert topic == b"decision"
    assert json.loads(body) == {
        "v": 1,
        "type": "decision",
        "session": "s1",
        "seq": 0,
        "model": "demo",
        "bunch_id": 3,
        "decision": "pass",
    }


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xff\xfe\x00",
        b"not json",
        b"[1, 2]",
        b'{"type": "ack", "session": "s", "seq": 1}',  # no version
        b'{"v": 2, "type": "ack", "session": "s", "seq": 1}',  # future version
        b'{"v": true, "type": "ack", "session": "s", "seq": 1}',
        b'{"v": 1, "type": "nack", "seq": 1}',
        b'{"v": 1, "type": "ack", "session": "s", "seq": "1"}',
        b'{"v": 1, "type": "ack", "session": "s", "seq": 0}',
        b'{"v": 1, "type": "ack", "session": "s", "seq": true}',
        b'{"v": 1, "type": "ack", "seq": 1}',
        b'{"v": 1, "type": "heartbeat", "sent_unix_s": "now"}',
        b'{"v": 1, "type": "heartbeat", "sent_unix_s": NaN}',
        b'{"v": 1, "type": "heartbeat", "sent_unix_s": Infinity}',
        b"[" * 100_000,
        b'{"v": 1, "type": "reject", "session": "s", "seq": 1}',
    ],
)
def test_malformed_frames_raise_malformed(frame: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(frame)


def test_reject_with_a_field_removed_is_malformed() -> None:
    full = json.loads(encode(_reject()))
    for key in ("session", "seq", "bunch_id", "score", "reason", "fire_in_s", "model"):
        partial = {k: v for k, v in full.items() if k != key}
        with pytest.raises(MalformedMessage, match=key):
            decode(json.dumps(partial).encode())


def test_extra_fields_are_ignored() -> None:
    d = json.loads(encode(Ack("s", 3)))
    d["future_field"] = {"x": 1}
    assert decode(json.dumps(d).encode()) == Ack("s", 3)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes_never_crash(frame: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        decode(frame)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "type",
                "session",
                "seq",
                "sent_unix_s",
                "fire_in_s",
                "across_mm",
                "bunch_id",
                "score",
                "reason",
                "model",
            ]
        ),
        _json,
        max_size=11,
    ),
    st.sampled_from(["ack", "heartbeat", "reject", "x"]),
)
def test_fuzz_json_objects_never_crash(obj: dict[str, object], kind: str) -> None:
    obj = {"v": 1, "type": kind, **obj}
    with contextlib.suppress(MalformedMessage):
        decode(json.dumps(obj).encode())
