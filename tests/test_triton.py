"""model.backend triton against a real Triton Inference Server (PyTriton, tests/triton_server.py), the model
repository writer, the config, and the per-camera systemd template.

The server tests skip where the server's venv cannot be had (tools/triton-venv.sh builds it); under CI=true they
fail instead, since .ci/run builds it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from inspector.cli import main
from inspector.config import DEMO_MODEL, Config, TritonConfig, load_config
from inspector.errors import BackendError, ConfigError, InspectorError, ModelError
from inspector.metrics import METRICS
from inspector.model import Model, load_manifest
from inspector.model_triton import (
    MANIFEST_PARAMETER,
    RepoOptions,
    TritonModel,
    error_kind,
    model_config_pbtxt,
    write_model_repository,
)
from inspector.pipeline import Pipeline, open_model
from inspector.types import Decision, FrameRef
from tests.drawn import write_footage
from tests.spot_model import write_spot_model
from tests.test_deploy import DEPLOY, _verify, need_tool
from tests.triton_server import TritonServer, TritonServerError, free_ports, unavailable_reason

TEMPLATE = DEPLOY / "inspector@.service"
SHIPPED_REPO = DEPLOY / "triton" / "demo_vgg16" / "config.pbtxt"


# ------------------------------------------------------------------------------------------------ no server needed
def test_config_needs_the_triton_section_and_a_host_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text(
        "model:\n  backend: triton\n  triton: {url: 'http://10.0.0.5:8000/', model_name: m, protocol: http}\n"
    )
    model = load_config(ok).model
    assert model.triton is not None and model.triton.url == "10.0.0.5:8000" and model.triton.timeout_s == 2.0
    for text, words in (
        ("model:\n  backend: triton\n", "backend triton needs a triton section"),
        ("model:\n  backend: triton\n  triton: {url: 10.0.0.5, model_name: m}\n", "give host:port"),
        ("model:\n  backend: triton\n  triton: {url: 'https://h:8000', model_name: m}\n", "TLS"),
        ("model:\n  backend: triton\n  triton: {url: h:8001, model_name: m, model_version: latest}\n", "whole number"),
        ("model:\n  backend: triton\n  triton: {url: h:8001, model_name: m, timeout_s: 0}\n", "timeout_s"),
        ("model:\n  backend: remote\n", "backend"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(bad)
        assert words in str(err.value), str(err.value)
        assert main(["check-config", str(bad)]) == 1
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_missing_triton_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # what an environment without the extra has
    with pytest.raises(InspectorError, match=r"pip install 'grape-spider-inspector\[triton\]'"):
        TritonModel(TritonConfig(url="127.0.0.1:1", model_name="m"), DEMO_MODEL)


def test_error_kinds_of_both_clients() -> None:
    InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException  # extra triton

    assert error_kind(InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED")) == "timeout"
    assert error_kind(InferenceServerException("failed to connect", status="StatusCode.UNAVAILABLE")) == "unavailable"
    assert error_kind(ConnectionRefusedError(111, "Connection refused")) == "unavailable"
    assert error_kind(TimeoutError("timed out")) == "timeout"
    assert error_kind(InferenceServerException("unexpected shape for input", status="400")) == "server"


def test_model_repository_is_a_valid_triton_config_carrying_the_manifest(tmp_path: Path) -> None:
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")  # the triton extra
    from google.protobuf import text_format

    assert (
        main(["model", "triton-repo", "--model", str(DEMO_MODEL), "--out", str(tmp_path), "--name", "demo_vgg16"]) == 0
    )
    written = (tmp_path / "demo_vgg16" / "config.pbtxt").read_text()
    assert (tmp_path / "demo_vgg16" / "1" / "model.onnx").read_bytes() == DEMO_MODEL.read_bytes()
    config = text_format.Parse(written, model_config_pb2.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("demo_vgg16", "onnxruntime", 64)
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [3, 224, 224])]
    assert [(o.name, list(o.dims)) for o in config.output] == [
        ("logits", [2]),
        ("fam1", [112, 112]),
        ("fam2", [56, 56]),
        ("fam3", [28, 28]),
        ("fam4", [14, 14]),
        ("fam5", [7, 7]),
    ]
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    served = json.loads(config.parameters[MANIFEST_PARAMETER].string_value)
    assert served == load_manifest(DEMO_MODEL).model_dump(mode="json", exclude_none=True)
    # the shipped layout for the demo model is what the command writes
    assert SHIPPED_REPO.read_text() == written
    # a spot model with another size and class count gets its own dims
    spot = write_spot_model(tmp_path)
    text = model_config_pbtxt(load_manifest(spot), 2, "spot", RepoOptions(max_batch_size=4, kind="cpu"))
    parsed = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert list(parsed.input[0].dims) == [3, 64, 64] and list(parsed.output[5].dims) == [2, 2]
    assert list(parsed.dynamic_batching.preferred_batch_size) == [4]
    assert not parsed.optimization.execution_accelerators.gpu_execution_accelerator
    # TensorRT inside onnxruntime, on the GPU
    text = model_config_pbtxt(load_manifest(spot), 2, "spot", RepoOptions(tensorrt="fp16"))
    accelerators = text_format.Parse(text, model_config_pb2.ModelConfig()).optimization.execution_accelerators
    trt = accelerators.gpu_execution_accelerator[0]
    assert (trt.name, dict(trt.parameters)) == ("tensorrt", {"precision_mode": "FP16"})
    for bad, words in (
        (RepoOptions(max_batch_size=0), "max batch size"),
        (RepoOptions(kind="tpu"), "gpu or cpu"),
        (RepoOptions(kind="cpu", tensorrt="fp32"), "only with instance kind gpu"),
    ):
        with pytest.raises(ModelError, match=words):
            write_model_repository(DEMO_MODEL, tmp_path, "x", bad)
    assert not (tmp_path / "x").exists()


def test_systemd_template_verifies_per_camera(tmp_path: Path) -> None:
    need_tool("systemd-analyze", "systemd")
    text = TEMPLATE.read_text()
    assert "--config /etc/inspector/%i.yaml --instance %i" in text
    assert "check-config /etc/inspector/%i.yaml" in text and "StateDirectory=inspector/%i" in text
    for name in ("inspector@line1-left.service", "inspector@.service"):
        assert _verify(text, tmp_path, name) == "", name
        merged = text + "\n" + (DEPLOY / "gpu.conf").read_text()
        assert _verify(merged, tmp_path, name) == "", name
    assert "Unknown key" in _verify(text.replace("PrivateTmp=", "PrivateTemp="), tmp_path, "inspector@x.service")


def test_template_is_the_single_camera_unit_per_instance() -> None:
    """The template may differ from deploy/inspector.service only where the instance name goes (no drift)."""

    def body(text: str) -> list[str]:
        return [line for line in text[text.index("[Unit]") :].splitlines() if not line.startswith("Description=")]

    template = body(TEMPLATE.read_text())
    template.remove("# a Triton server on this PC, when there is one, starts first (no effect where there is none)")
    template.remove("After=tritonserver.service")
    as_single = [
        line.replace("/etc/inspector/%i.yaml", "/etc/inspector/config.yaml")
        .replace(" --instance %i", "")
        .replace("inspector/%i", "inspector")
        for line in template
    ]
    assert as_single == body((DEPLOY / "inspector.service").read_text())


def test_install_lays_out_the_template_beside_the_unit(tmp_path: Path) -> None:
    import subprocess

    root = tmp_path / "root"
    run = ["bash", str(DEPLOY / "install.sh"), "--prefix", str(root), "--no-venv"]
    assert subprocess.run([*run, "--gpu"], capture_output=True, text=True, check=False).returncode == 0
    units = root / "etc/systemd/system"
    assert (units / "inspector@.service").read_text() == TEMPLATE.read_text()
    assert (units / "inspector@.service.d/gpu.conf").is_file()
    assert subprocess.run([*run, "--cpu"], capture_output=True, text=True, check=False).returncode == 0
    assert not (units / "inspector@.service.d/gpu.conf").exists()
    assert subprocess.run([*run, "--uninstall"], capture_output=True, text=True, check=False).returncode == 0
    assert not (units / "inspector@.service").exists()


# ------------------------------------------------------------------------------------------------ a real server
def _skip(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(reason + "; under CI=true .ci/run builds the server's venv and the server must start")
    pytest.skip(reason)


def _start_or_skip(models: dict[str, Path], log_path: Path, ports: tuple[int, int] | None = None) -> TritonServer:
    """A server for `models`, or a skip saying why none can start here (a failure under CI=true)."""
    reason = unavailable_reason()
    if reason is not None:
        _skip(reason)
    try:
        return TritonServer.start(models, log_path, ports=ports)
    except TritonServerError as exc:
        _skip(f"the Triton server cannot start here: {exc}")
        raise


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"demo_vgg16": DEMO_MODEL, "spot": write_spot_model(tmp_path_factory.mktemp("spot"))}


@pytest.fixture(scope="module")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with _start_or_skip(models, tmp_path_factory.mktemp("triton") / "server.log") as srv:
        yield srv


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_gives_what_the_local_backend_gives(server: TritonServer, protocol: str) -> None:
    tiles = np.random.default_rng(1).integers(0, 256, (37, 224, 224, 3), dtype=np.uint8)
    with Model(DEMO_MODEL, providers=["cpu"], threads=1) as local:
        want = local.infer(tiles)
    requests = METRICS.triton_request_seconds.collect()[0]
    before = next(s.value for s in requests.samples if s.name.endswith("_count"))
    manifest_only = DEMO_MODEL.with_suffix(".yaml")  # a camera PC needs the manifest, not the weights
    with TritonModel(server.config("demo_vgg16", protocol), manifest_only, batch_size=16) as remote:
        assert remote.provider == f"triton:{protocol}://{server.url(protocol)}/demo_vgg16"
        got = remote.infer(tiles)
    np.testing.assert_array_equal(got.logits, want.logits)
    np.testing.assert_array_equal(got.spider_prob, want.spider_prob)
    for g, w in zip(got.fams, want.fams, strict=True):
        np.testing.assert_array_equal(g, w)
    requests = METRICS.triton_request_seconds.collect()[0]
    after = next(s.value for s in requests.samples if s.name.endswith("_count"))
    assert after - before == 1 + 3  # the probe at start, then 16 + 16 + 5 tiles


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_model_info_against_the_server(server: TritonServer, protocol: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["model", "info", "--triton", server.url(protocol), "--protocol", protocol, "--model-name", "demo_vgg16"]
    assert main([*args, str(DEMO_MODEL), "--run"]) == 0
    out = capsys.readouterr().out
    assert "name: demo-vgg16-w8d4-cam3" in out and "max_batch_size 64" in out
    assert "output  fam5                     FP32             [-1, 7, 7]" in out
    assert f"provider: triton:{protocol}://{server.url(protocol)}/demo_vgg16" in out
    assert "run: 16 random tiles" in out
    # PyTriton's model config has no inspector_manifest: without MODEL that is said in one line
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and MANIFEST_PARAMETER in err and "MODEL.onnx" in err


@pytest.mark.slow
def test_missing_server_or_model_is_one_line(
    server: TritonServer, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    nobody = f"127.0.0.1:{free_ports(1)[0]}"
    for protocol in ("grpc", "http"):
        assert (
            main(["model", "info", str(DEMO_MODEL), "--triton", nobody, "--protocol", protocol, "--model-name", "m"])
            == 1
        )
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is not reachable" in err and "model.triton.url" in err, err
        args = ["model", "info", str(DEMO_MODEL), "--triton", server.url(protocol), "--protocol", protocol]
        assert main([*args, "--model-name", "nope"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "'nope' is not ready" in err and "model_name" in err, err
    # a served model that does not fit the manifest (the spot model, 64 px, under the demo manifest) fails at once:
    # no waiting, unlike a server or model not there yet
    with (
        caplog.at_level(logging.WARNING, "inspector.model_triton"),
        pytest.raises(ModelError, match=r"input 'input' is FP32 \[-1, 3, 64, 64\]"),
    ):
        TritonModel(server.config("spot", start_wait_s=600.0), DEMO_MODEL)
    assert not [r for r in caplog.records if "waiting up to" in r.getMessage()]


@pytest.mark.slow
def test_a_daemon_started_before_the_server_waits_for_it(models: dict[str, Path], tmp_path: Path) -> None:
    """Cameras booting before the inference server (or during its restart) wait `start_wait_s` for it."""
    if (reason := unavailable_reason()) is not None:
        _skip(reason)
    http, grpc = free_ports(2)
    config = TritonConfig(url=f"127.0.0.1:{grpc}", model_name="spot", start_wait_s=300.0)
    opened: list[object] = []
    waiter = threading.Thread(target=lambda: opened.append(_open_or_error(config, models["spot"])), daemon=True)
    waiter.start()
    time.sleep(1.0)  # it is waiting: no server yet
    assert waiter.is_alive() and not opened
    with _start_or_skip({"spot": models["spot"]}, tmp_path / "server.log", ports=(http, grpc)):
        waiter.join(timeout=300)
        assert isinstance(opened[0], TritonModel), opened
        opened[0].close()
    # without waiting, the same start fails at once with the one line
    with pytest.raises(ModelError, match="is not reachable"):
        TritonModel(config.model_copy(update={"start_wait_s": 0.0}), models["spot"])


def _open_or_error(config: TritonConfig, manifest_of: Path) -> object:
    try:
        return TritonModel(config, manifest_of, 4)
    except Exception as exc:
        return exc


def _replay_config(tmp_path: Path, name: str, model: Path, triton: dict[str, object] | None) -> Path:
    data: dict[str, object] = {"model": {"path": str(model)}}
    if triton is not None:
        data["model"] = {"path": str(model), "backend": "triton", "triton": triton}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _decisions(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    video, cal, _ = write_footage(tmp_path_factory.mktemp("footage"), n_frames=40, n_bunches=4)
    return video, cal


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_replay_through_triton_decides_as_the_local_backend(
    server: TritonServer, models: dict[str, Path], footage: tuple[Path, Path], tmp_path: Path, protocol: str
) -> None:
    video, cal = footage
    spot = models["spot"]
    triton = {"url": server.url(protocol), "model_name": "spot", "protocol": protocol}
    rows = {}
    for name, section in (("local", None), ("triton", triton)):
        config = _replay_config(tmp_path, name, spot, section)
        args = ["replay", str(video), "--calibration", str(cal), "--config", str(config), "--no-evidence"]
        assert main([*args, "--out", str(tmp_path / name)]) == 0
        rows[name] = _decisions(tmp_path / name)
    assert rows["triton"] == rows["local"]
    reasons = {(r["decision"], r["reason"]) for r in rows["local"]}
    assert ("reject", "spider") in reasons and ("pass", "pass") in reasons  # the comparison covers both verdicts


def _errors(kind: str) -> float:
    return METRICS.triton_errors.labels(kind=kind)._value.get()


def _run_until_failure(
    model: Model, video: Path, cal: Path, after_frames: int, fail: Callable[[], None]
) -> tuple[list[Decision], tuple[bool, str]]:
    """Replay `video` frame by frame through `model`, calling `fail()` before frame `after_frames`: every decision,
    and the pipeline's health after the last frame."""
    import cv2

    from inspector.config import load_calibration

    pipeline = Pipeline(Config(), load_calibration(cal), model, 10.0)
    decided: list[Decision] = []
    capture = cv2.VideoCapture(str(video))
    seq = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if seq == after_frames:
            fail()
        decided += pipeline.process(frame, FrameRef(0, seq, seq / 10.0)).final
        seq += 1
    capture.release()
    health = pipeline.health()
    return decided + pipeline.finish().final, health


@pytest.mark.slow
@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_server_lost_mid_run_rejects_the_bunches_never_passes(
    models: dict[str, Path], footage: tuple[Path, Path], tmp_path: Path, how: str
) -> None:
    """The server is killed (or hangs) while bunches are in view: no bunch inspected after that passes."""
    video, cal = footage
    lost_at = 12
    kind = "unavailable" if how == "killed" else "timeout"
    before = _errors(kind)
    with _start_or_skip({"spot": models["spot"]}, tmp_path / "server.log") as server:
        section = server.config("spot", timeout_s=1.0)
        model_config = Config().model.model_copy(
            update={"path": models["spot"], "backend": "triton", "triton": section}
        )
        with open_model(model_config) as model:
            decisions, health = _run_until_failure(
                model, video, cal, lost_at, server.kill if how == "killed" else server.freeze
            )
        server.kill()
    assert _errors(kind) > before, {k: _errors(k) for k in ("timeout", "unavailable", "server", "shape")}
    assert health == (False, "the model failed on a frame (model_error rejects)"), health
    assert len(decisions) == 4, decisions  # every drawn bunch was decided
    for d in decisions:
        if d.decision == "pass":  # only on frames inspected before the server was lost
            assert d.judged_frames and max(d.judged_frames) < lost_at, d
    failed = [d for d in decisions if "inference failed" in d.detail]
    assert failed and all(d.decision == "reject" and d.reason in ("uninspected", "model_error") for d in failed)


@pytest.mark.slow
def test_bench_measures_clients_of_one_server_against_the_local_backend(
    server: TritonServer, models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--triton", server.url("grpc"), "--model-name", "spot", "--model", str(models["spot"])]
    assert main([*args, "--clients", "1,2", "--seconds", "1", "--batch", "4", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [(r["backend"], r["clients"]) for r in result["rows"]] == [
        ("local (threads all)", 1),
        ("triton grpc", 1),
        ("triton grpc", 2),
    ]
    for row in result["rows"]:
        assert row["tiles"] > 0 and row["tiles"] % 4 == 0 and row["tiles_per_s"] == row["tiles"] / 1.0
        assert f"{row['tiles_per_s']:>9.1f}" in table
    assert "best server row / local" in table
    # a client that cannot reach the server fails the run in one line
    assert main([*args, "--model-name", "nope", "--no-local", "--clients", "1", "--seconds", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'nope' is not ready" in err, err


@pytest.mark.slow
def test_a_restarted_server_is_used_again_without_restarting_the_client(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """Server maintenance: while it is down requests fail (their bunches rejected); once it is back on the same
    address the same client's next request is answered, for both protocols."""
    tiles = np.zeros((4, 64, 64, 3), np.uint8)
    with _start_or_skip({"spot": models["spot"]}, tmp_path / "first.log") as first:
        clients = {p: TritonModel(first.config("spot", p, timeout_s=5.0), models["spot"], 4) for p in ("grpc", "http")}
        want = clients["grpc"].infer(tiles).logits
        first.kill()
        for client in clients.values():
            with pytest.raises(BackendError) as err:
                client.infer(tiles)
            assert err.value.kind == "unavailable"
        with TritonServer.start(
            {"spot": models["spot"]}, tmp_path / "second.log", ports=(first.http_port, first.grpc_port)
        ):
            for client in clients.values():
                np.testing.assert_array_equal(client.infer(tiles).logits, want)
                client.close()


@pytest.mark.slow
def test_the_daemon_inspects_through_the_server(server: TritonServer, tmp_path: Path) -> None:
    """`inspector run` with model.backend triton on drawn footage against the simulator: the spider bunches are
    rejected, the model is reported as served by Triton and every request is timed in its metrics."""
    from tests.sim import Line, stop, wait_exit, waited

    line = Line(tmp_path, n_frames=60)
    config = yaml.safe_load(line.config.read_text())
    config["model"].update({"backend": "triton", "triton": {"url": server.url("grpc"), "model_name": "spot"}})
    line.config.write_text(yaml.safe_dump(config))
    sim = line.simulator()
    seen: list[str] = []
    try:
        daemon = line.daemon()

        def scrape() -> bool:
            try:
                seen[:] = [line.metrics()]
            except OSError:
                return False
            return "inspector_bunches_total{" in seen[0]

        assert waited(scrape, 60), "metrics never showed a decided bunch"
        status, err = wait_exit(daemon, 120)
        assert status == 0, err
    finally:
        stop(sim)
    provider = f'provider="triton:grpc://{server.url("grpc")}/spot"'
    assert any(row.startswith("inspector_model_info{") and provider in row for row in seen[0].splitlines()), seen[0]
    count = next(r for r in seen[0].splitlines() if r.startswith("inspector_triton_request_seconds_count"))
    assert float(count.split()[-1]) > 0
    rows = {r["bunch_id"]: r for r in line.decided()}
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[2]["decision"] == rows[4]["decision"] == "reject"  # the spider bunches, whatever the load
    assert not [r for r in rows.values() if r["reason"] == "model_error"], rows  # the server answered every frame
