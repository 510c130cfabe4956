"""Fuzzed bad input: every case is a clear one-line-per-problem error or a counted, ignored message — never a crash.

Config and calibration files (random YAML structures, mutations of a valid file, byte-level damage), manifests
beside a dummy ONNX path, damaged videos through the file source and through `inspector replay`, garbage and
wrong-version wire messages through `messages.decode` (refused, or accepted with every field in range; a live link
meeting garbage is in `test_link.py`). Bounded example counts keep the module well under a minute.
"""

from __future__ import annotations

import copy
import json
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector import messages
from inspector.cli import main as cli_main
from inspector.config import DEFAULT_CALIBRATION, Calibration, Config, load_calibration, load_config
from inspector.errors import ConfigError, ModelError, SourceError
from inspector.model import Manifest, load_manifest
from inspector.sources import VideoFileSource
from tests.sim import assert_in_range, sample_messages

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------------ strategies
CONFIG_KEYS = [
    "calibration",
    "model",
    "source",
    "belt",
    "tiling",
    "decision",
    "link",
    "metrics",
    "ring",
    "recording",
    "supervisor",
    "output",
    "path",
    "providers",
    "batch_size",
    "threads",
    "fam_mode",
    "kind",
    "uri",
    "pace",
    "fps",
    "mode",
    "threshold",
    "aggregate",
    "port",
    "slots",
    "mm_per_px",
    "belt_direction",
    "belt_speed_mm_s",
    "camera_to_ejector_mm",
    "spider_span_mm",
    "roi_xyxy",
    "camera_matrix",
    "dist_coeffs",
    "name",
    "input",
    "outputs",
    "spider_index",
    "fam_layer_scale",
    "size",
    "layout",
    "color",
    "scale",
    "mean",
    "std",
    "logits",
    "fam",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["cpu", "auto", "+x", "-y", "NCHW", "RGB", "belt", "whole_frame", "max", "file", "1e3", "~"]),
)
keys = st.one_of(st.sampled_from(CONFIG_KEYS), st.text(string.ascii_lowercase + "_", min_size=1, max_size=8))
yaml_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=12,
)

VALID_CONFIG: dict[str, Any] = {
    "model": {"providers": ["cpu"], "batch_size": 8, "threads": 1, "fam_mode": "paper"},
    "source": {"kind": "synthetic", "pace": "max", "fps": 15.0},
    "belt": {"mode": "belt", "learn_frames": 5, "color_threshold": 28.0, "inspections_per_point": 2},
    "tiling": {"min_fraction": 0.01, "max_fraction": 0.05, "baseline_overlap": 0.25},
    "decision": {"threshold": 0.5, "aggregate": "max"},
    "link": {"enabled": True, "controller": "tcp://127.0.0.1:5560", "heartbeat_interval_s": 0.5},
    "metrics": {"enabled": False, "port": 9108},
    "ring": {"slots": 16},
    "supervisor": {"max_restarts": 5, "stall_timeout_s": 5.0},
}
VALID_CALIBRATION: dict[str, Any] = DEFAULT_CALIBRATION.model_dump(mode="json", exclude_none=True) | {
    "roi_xyxy": [0, 0, 640, 360],
    "camera_matrix": [[800.0, 0.0, 320.0], [0.0, 800.0, 180.0], [0.0, 0.0, 1.0]],
    "dist_coeffs": [0.0, 0.0, 0.0, 0.0, 0.0],
}
VALID_MANIFEST: dict[str, Any] = yaml.safe_load((ROOT / "inspector" / "models" / "demo.yaml").read_text())
VALID_MANIFEST.pop("model_card", None)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path (dict keys and list indices) in `data`."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """`base` with one to three mutations: replace a value, delete a key, add an unknown key, rename a key."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for p in path[:-1]:
            parent = parent[p]
        last = path[-1]
        op = draw(st.sampled_from(["replace", "delete", "add", "rename"]))
        if op == "replace":
            parent[last] = draw(yaml_values)
        elif op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(keys)] = draw(yaml_values)
        elif op == "rename" and isinstance(parent, dict):
            parent[str(last) + draw(st.sampled_from(["s", "_", "X", " "]))] = parent.pop(last)
    return data


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@st.composite
def damaged_text(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """The valid file's YAML with bytes inserted, deleted or overwritten (syntax errors, bad UTF-8, tabs ...)."""
    raw = bytearray(_dump(base).encode())
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(raw)))
        junk = draw(
            st.binary(min_size=1, max_size=4) | st.sampled_from([b":", b"\t", b"- ", b"{", b"]", b"\n  ", b"&a", b"*a"])
        )
        op = draw(st.sampled_from(["insert", "delete", "overwrite"]))
        if op == "insert":
            raw[pos:pos] = junk
        elif op == "delete":
            del raw[pos : pos + len(junk)]
        else:
            raw[pos : pos + len(junk)] = junk
    return bytes(raw)


def test_yaml_reader_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"\x00model: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    check_one_line_per_problem(info.value, path)


def check_one_line_per_problem(exc: Exception, path: Path) -> None:
    text = str(exc)
    assert text.strip(), "empty error message"
    for line in text.splitlines():
        assert line.startswith(str(path)), f"every problem line names the file: {line!r}"
        assert "Traceback" not in line


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------------------------------------------ config files
def _load_config_outcome(path: Path) -> None:
    try:
        assert isinstance(load_config(path), Config)
    except ConfigError as exc:
        check_one_line_per_problem(exc, path)


def test_valid_bases_load(fuzz_dir: Path) -> None:
    """The mutation bases are valid, so every mutation starts from a config that loads."""
    path = fuzz_dir / "base.yaml"
    path.write_text(_dump(VALID_CONFIG))
    assert load_config(path).model.batch_size == 8
    path.write_text(_dump(VALID_CALIBRATION))
    assert load_calibration(path).mm_per_px == DEFAULT_CALIBRATION.mm_per_px


@FUZZ
@given(data=yaml_values)
def test_config_random_structures(fuzz_dir: Path, data: Any) -> None:
    path = fuzz_dir / "random_config.yaml"
    path.write_text(_dump(data))
    _load_config_outcome(path)


@FUZZ
@given(data=mutated(VALID_CONFIG))
def test_config_mutations(fuzz_dir: Path, data: Any) -> None:
    path = fuzz_dir / "mutated_config.yaml"
    path.write_text(_dump(data))
    _load_config_outcome(path)


@FUZZ
@given(raw=damaged_text(VALID_CONFIG))
def test_config_damaged_bytes(fuzz_dir: Path, raw: bytes) -> None:
    path = fuzz_dir / "damaged_config.yaml"
    path.write_bytes(raw)
    _load_config_outcome(path)


# ------------------------------------------------------------------------------------------------ calibration files
def _load_calibration_outcome(path: Path) -> None:
    try:
        assert isinstance(load_calibration(path), Calibration)
    except ConfigError as exc:
        check_one_line_per_problem(exc, path)


@FUZZ
@given(data=st.one_of(yaml_values, mutated(VALID_CALIBRATION)))
def test_calibration_random_and_mutated(fuzz_dir: Path, data: Any) -> None:
    path = fuzz_dir / "calibration.yaml"
    path.write_text(_dump(data))
    _load_calibration_outcome(path)


@FEW
@given(raw=damaged_text(VALID_CALIBRATION))
def test_calibration_damaged_bytes(fuzz_dir: Path, raw: bytes) -> None:
    path = fuzz_dir / "calibration_damaged.yaml"
    path.write_bytes(raw)
    _load_calibration_outcome(path)


# ------------------------------------------------------------------------------------------------ manifests
def _load_manifest_outcome(onnx_path: Path) -> None:
    try:
        assert isinstance(load_manifest(onnx_path), Manifest)
    except ModelError as exc:
        check_one_line_per_problem(exc, onnx_path.with_suffix(".yaml"))


@FUZZ
@given(data=st.one_of(yaml_values, mutated(VALID_MANIFEST)))
def test_manifest_random_and_mutated(fuzz_dir: Path, data: Any) -> None:
    onnx_path = fuzz_dir / "dummy.onnx"
    onnx_path.write_bytes(b"\x08\x07not really a model")
    onnx_path.with_suffix(".yaml").write_text(_dump(data))
    _load_manifest_outcome(onnx_path)


@FEW
@given(raw=damaged_text(VALID_MANIFEST))
def test_manifest_damaged_bytes(fuzz_dir: Path, raw: bytes) -> None:
    onnx_path = fuzz_dir / "dummy2.onnx"
    onnx_path.write_bytes(b"")
    onnx_path.with_suffix(".yaml").write_bytes(raw)
    _load_manifest_outcome(onnx_path)


# ------------------------------------------------------------------------------------------------ videos
@pytest.fixture(scope="module")
def good_video(fuzz_dir: Path) -> Path:
    """A short valid MJPG video with a moving disc on a grey belt."""
    path = fuzz_dir / "good.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (96, 64))
    for f in range(12):
        img = np.full((64, 96, 3), 140, np.uint8)
        cv2.circle(img, (8 * f, 32), 12, (60, 170, 70), -1)
        writer.write(img)
    writer.release()
    assert path.stat().st_size > 1000
    return path


def read_all(path: Path) -> int:
    """Frames read through the file source; SourceError is the only allowed failure."""
    n = 0
    with VideoFileSource(path, "max", clock=None) as src:
        while (frame := src.read()) is not None:
            assert frame.image_bgr.ndim == 3 and frame.image_bgr.dtype == np.uint8
            n += 1
            assert n < 10_000
    return n


def damaged_videos(good: Path, out_dir: Path) -> dict[str, Path]:
    data = good.read_bytes()
    cases = {
        "zero_byte.avi": b"",
        "random_bytes.avi": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "text.avi": b"this is not a video\n" * 50,
        "wrong_codec.avi": data.replace(b"MJPG", b"ZQ9X").replace(b"mjpg", b"zq9x"),
        "header_only.avi": data[:200],
    }
    out = {}
    for name, blob in cases.items():
        p = out_dir / name
        p.write_bytes(blob)
        out[name] = p
    return out


@FEW
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6))
def test_truncated_and_corrupted_videos_through_source(
    fuzz_dir: Path, good_video: Path, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(good_video.read_bytes())
    data = data[: int(len(data) * cut)]
    for where, value in flips:
        if data:
            data[min(len(data) - 1, int(where * len(data)))] = value
    path = fuzz_dir / "truncated.avi"
    path.write_bytes(bytes(data))
    try:
        read_all(path)
    except SourceError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


def test_unreadable_videos_through_source(fuzz_dir: Path, good_video: Path) -> None:
    for name, path in damaged_videos(good_video, fuzz_dir).items():
        try:
            n = read_all(path)
        except SourceError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc), name
        else:
            assert n == 0 or name == "header_only.avi", f"{name}: {n} frames decoded from garbage"


def _cal_file(fuzz_dir: Path) -> Path:
    cal = fuzz_dir / "replay_calibration.yaml"
    cal.write_text(DEFAULT_CALIBRATION.to_yaml())
    return cal


def test_unreadable_videos_through_replay_cli(
    fuzz_dir: Path, good_video: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cal = _cal_file(fuzz_dir)
    for name, path in damaged_videos(good_video, fuzz_dir).items():
        rc = cli_main(["replay", str(path), "--calibration", str(cal), "--out", str(fuzz_dir / f"out_{name}")])
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.startswith("inspector: error:")]
        assert rc == 1, f"{name}: exit {rc}"
        assert len(errors) == 1 and str(path) in errors[0], f"{name}: {captured.err!r}"
        assert "Traceback" not in captured.err + captured.out, name


@pytest.mark.parametrize(
    "name",
    [
        "zero_byte.avi",
        "wrong_codec.avi",
    ],
)
def test_replay_cli_process_prints_exactly_one_line(fuzz_dir: Path, good_video: Path, name: str) -> None:
    """As a user sees it: a fresh process, stderr holds one line and no traceback."""
    path = damaged_videos(good_video, fuzz_dir)[name]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector.cli",
            "replay",
            str(path),
            "--calibration",
            str(_cal_file(fuzz_dir)),
            "--out",
            str(fuzz_dir / "proc_out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("inspector: error:") and str(path) in done.stderr


# ------------------------------------------------------------------------------------------------ wire messages
def _valid_frames() -> list[dict[str, Any]]:
    return [json.loads(messages.encode(m)) for m in sample_messages()]


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=4)),
    max_leaves=10,
)


@st.composite
def mutated_message(draw: st.DrawFn) -> bytes:
    msg = copy.deepcopy(draw(st.sampled_from(_valid_frames())))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*msg.keys(), "extra"]))
        op = draw(st.sampled_from(["replace", "delete", "version"]))
        if op == "replace":
            msg[key] = draw(json_values)
        elif op == "delete":
            msg.pop(key, None)
        else:
            msg["v"] = draw(st.one_of(st.integers(), st.text(max_size=3), st.none(), st.booleans(), st.floats()))
    return json.dumps(msg).encode()


def _decode_outcome(frame: bytes) -> messages.Message | None:
    """None for a MalformedMessage (with a message); an accepted frame has every field in range."""
    try:
        msg = messages.decode(frame)
    except messages.MalformedMessage as exc:
        assert str(exc)
        return None
    assert_in_range(msg)
    return msg


@settings(max_examples=300, deadline=None)
@given(frame=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()), mutated_message()))
def test_decode_garbage_never_raises_anything_else(frame: bytes) -> None:
    _decode_outcome(frame)


def test_decode_wrong_versions_and_odd_frames() -> None:
    for frame in _valid_frames():
        assert _decode_outcome(json.dumps(frame).encode()) is not None
        for v in (0, 1, 3, "2", 2.0001, None, True, [2]):
            assert _decode_outcome(json.dumps({**frame, "v": v}).encode()) is None, v
    odd = [
        b"",
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"v":2,"type":"ack","seq":1e400,"session":"a"}',
        b"x" * 70_000,
        b'{"v": 2, "type": "ack", "seq": 9223372036854775808000, "session": "a"}',
        b'{"v": 2, "type": "ack", "seq": -1, "session": "a"}',
        b"NaN",
        b'"v"',
    ]
    for raw in odd:
        assert _decode_outcome(raw) is None, raw[:60]
