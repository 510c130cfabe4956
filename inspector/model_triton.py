"""Inference on a Triton Inference Server (`model.backend: triton`): many cameras, one server.

The same model contract as the local backend (docs/ARCHITECTURE.md): `TritonModel` is a `Model` whose backend,
`TritonBackend`, sends each batch of preprocessed tiles as one request (HTTP or gRPC, `tritonclient`, the `triton`
extra) and gets logits + fam1..fam5 back. Preprocessing, batching, shape checks and the spider probability stay in
`Model`, so decisions are the ones the local backend makes.

At start, one line (`ModelError`) naming the server and the fix when: the server does not answer, the model is not
ready (the repository's models are listed), or its metadata breaks the manifest (input name/shape, outputs). The
server's `max_batch_size` caps the batch. The manifest comes from `model.path` (the ONNX file or its manifest), or,
when none is given (`inspector model info --triton`), from the server's model config, where `inspector model
triton-repo` writes it (parameter ``inspector_manifest``).

At run time a request that times out (`timeout_s`), finds the server gone or gets an error answer raises
`BackendError` (errors.py) with its kind; the pipeline rejects the bunches of that frame, never passes them.
Metrics: `inspector_triton_request_seconds` (every request) and `inspector_triton_errors_total{kind}`.

`write_model_repository` lays out a Triton model repository for the onnxruntime backend (`inspector model
triton-repo`): ``OUT/NAME/config.pbtxt`` and ``OUT/NAME/1/model.onnx``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from inspector.cliopts import require_extra
from inspector.config import TritonConfig
from inspector.errors import BackendError, ModelError
from inspector.metrics import METRICS, Metrics
from inspector.model import Manifest, Model, load_manifest

log = logging.getLogger(__name__)

MANIFEST_PARAMETER = "inspector_manifest"  # model config parameter carrying the manifest as JSON
DTYPES: dict[str, type[np.generic]] = {"FP32": np.float32, "FP16": np.float16}


def config_from_options(what: str, **options: Any) -> TritonConfig:
    """A TritonConfig from command-line options, or one line saying which option is wrong (`what`: the command)."""
    from pydantic import ValidationError

    try:
        return TritonConfig(**options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelError(f"{what}: {where}: {first['msg'].removeprefix('Value error, ')}") from None


def import_client(protocol: str) -> ModuleType:
    """tritonclient.http or tritonclient.grpc, or one line naming the `triton` extra."""
    return require_extra(f"tritonclient.{protocol}", "model.backend triton")


def _first_line(exc: BaseException) -> str:
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    text = (text or "").strip()
    return text.splitlines()[0] if text else type(exc).__name__


def error_kind(exc: BaseException) -> str:
    """timeout | unavailable | server: what went wrong with one request, from either client's exception."""
    status = str(exc.status()) if hasattr(exc, "status") and callable(exc.status) else ""
    text = f"{status} {_first_line(exc)} {type(exc).__name__}".lower()
    if isinstance(exc, TimeoutError) or "deadline" in text or "timed out" in text or "timeout" in text:
        return "timeout"
    if isinstance(exc, OSError) or "unavailable" in text or "connect" in text or "broken pipe" in text:
        return "unavailable"
    return "server"


class _NotReady(ModelError):
    """The server or the model is not there yet (worth waiting for at start, unlike a model that does not fit)."""


@dataclass(frozen=True)
class ServedModel:
    """What the server says about the model: metadata (inputs/outputs), config, the version that answered."""

    name: str
    versions: list[str]
    platform: str
    inputs: dict[str, tuple[str, list[int]]]  # name -> (datatype, shape with -1 for the batch)
    outputs: dict[str, tuple[str, list[int]]]
    max_batch_size: int
    manifest_json: str | None  # the inspector_manifest parameter, when the repository carries it


class TritonBackend:
    """`model.Backend` over tritonclient: one request per batch, a timeout per request, errors as BackendError."""

    def __init__(self, config: TritonConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else METRICS
        self.grpc = config.protocol == "grpc"
        self.client_mod = import_client(config.protocol)
        self.where = f"{config.protocol}://{config.url}"
        self.provider = f"triton:{self.where}/{config.model_name}"
        timeout = config.timeout_s
        if self.grpc:
            self.client: Any = self.client_mod.InferenceServerClient(config.url)
        else:
            self.client = self.client_mod.InferenceServerClient(
                config.url, connection_timeout=timeout, network_timeout=timeout
            )
        self._wait_ready()
        self.served = self._check_start()
        self.input_name = ""
        self.input_dtype: type[np.generic] = np.float32
        self.output_names: list[str] = []

    # -- start-up checks
    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.grpc:  # the HTTP client's timeouts are set on the client; it answers dicts already
            kwargs["client_timeout"] = self.config.timeout_s
            if name.startswith("get_"):
                kwargs["as_json"] = True
        return getattr(self.client, name)(*args, **kwargs)

    def _wait_ready(self) -> None:
        """Server live and model ready, waiting up to `start_wait_s` for both (a server restarting, or started
        after the cameras); then the last reason, in one line."""
        deadline = time.monotonic() + self.config.start_wait_s
        pause_s = 0.5
        while True:
            try:
                self._ready_now()
                return
            except _NotReady as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ModelError(str(exc)) from None
                if pause_s == 0.5:
                    log.warning("%s; waiting up to %.0f s for it", exc, self.config.start_wait_s)
                time.sleep(min(pause_s, left))
                pause_s = min(2 * pause_s, 5.0)

    def _ready_now(self) -> None:
        c = self.config
        try:
            live = self._call("is_server_live")
        except Exception as exc:
            raise _NotReady(
                f"Triton server {self.where} is not reachable ({_first_line(exc)}): start it, or fix model.triton.url "
                "and model.triton.protocol (Triton's HTTP port is 8000, gRPC 8001 by default)"
            ) from None
        if not live:
            raise _NotReady(f"Triton server {self.where} answers but is not live; see the server's log")
        try:
            ready = self._call("is_model_ready", c.model_name, c.model_version)
        except Exception as exc:
            raise _NotReady(f"Triton server {self.where}: model readiness unknown ({_first_line(exc)})") from None
        if not ready:
            raise _NotReady(
                f"model {c.model_name!r}{' version ' + c.model_version if c.model_version else ''} is not ready on the "
                f"Triton server {self.where} ({self._repository()}); fix model.triton.model_name or "
                "see the server's log"
            )

    def _check_start(self) -> ServedModel:
        c = self.config
        try:
            meta = self._call("get_model_metadata", c.model_name, c.model_version)
            cfg = self._call("get_model_config", c.model_name, c.model_version)
        except Exception as exc:
            raise ModelError(
                f"Triton server {self.where}: no metadata for {c.model_name!r} ({_first_line(exc)})"
            ) from None
        cfg = cfg.get("config", cfg)
        param = (cfg.get("parameters") or {}).get(MANIFEST_PARAMETER) or {}

        def tensors(items: list[dict[str, Any]]) -> dict[str, tuple[str, list[int]]]:
            return {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in items}

        return ServedModel(
            name=meta["name"],
            versions=[str(v) for v in meta.get("versions", [])],
            platform=str(meta.get("platform", "")),
            inputs=tensors(meta.get("inputs", [])),
            outputs=tensors(meta.get("outputs", [])),
            max_batch_size=int(cfg.get("max_batch_size", 0)),
            manifest_json=param.get("string_value") or None,
        )

    def _repository(self) -> str:
        try:
            index = self._call("get_model_repository_index")
        except Exception as exc:
            return f"the server does not list its repository: {_first_line(exc)}"
        models = index.get("models", []) if isinstance(index, dict) else index
        named = [f"{m.get('name')} ({(m.get('state') or 'unavailable').lower()})" for m in models]
        return f"its repository: {', '.join(named) or 'empty'}"

    def bind(self, manifest: Manifest) -> None:
        """Check the served model against the manifest and fix the request's input/outputs."""
        s, where = self.served, f"model {self.config.model_name!r} on {self.where}"
        if s.max_batch_size < 1:
            raise ModelError(f"{where} has max_batch_size {s.max_batch_size}: the contract needs a batch dimension")
        name = manifest.input.name
        if name not in s.inputs:
            raise ModelError(f"{where}: no input {name!r} (it has {sorted(s.inputs)}); the manifest does not fit it")
        dtype, shape = s.inputs[name]
        size = manifest.input.size
        want = [3, size, size] if manifest.input.layout == "NCHW" else [size, size, 3]
        if dtype not in DTYPES or [d for d in shape[1:]] != want:
            raise ModelError(
                f"{where}: input {name!r} is {dtype} {shape}, the manifest wants FP32 [-1, {', '.join(map(str, want))}]"
            )
        wanted = [manifest.outputs.logits, *manifest.outputs.fam]
        missing = [n for n in wanted if n not in s.outputs]
        if missing:
            raise ModelError(
                f"{where}: output(s) {missing} missing (it has {sorted(s.outputs)}); serve a contract model"
            )
        self.input_name, self.input_dtype, self.output_names = name, DTYPES[dtype], wanted
        self.datatype = dtype

    # -- Backend
    def run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        mod, c = self.client_mod, self.config
        x = np.ascontiguousarray(batch, dtype=self.input_dtype)
        inp = mod.InferInput(self.input_name, list(x.shape), self.datatype)
        inp.set_data_from_numpy(x)
        outputs = [mod.InferRequestedOutput(n) for n in self.output_names]
        start = time.perf_counter()
        try:
            if self.grpc:
                result = self.client.infer(
                    c.model_name, [inp], model_version=c.model_version, outputs=outputs, client_timeout=c.timeout_s
                )
            else:
                result = self.client.infer(c.model_name, [inp], model_version=c.model_version, outputs=outputs)
            outs = [result.as_numpy(n) for n in self.output_names]
        except Exception as exc:
            kind = error_kind(exc)
            self.metrics.triton_errors.labels(kind=kind).inc()
            spent = time.perf_counter() - start
            raise BackendError(
                f"Triton {self.where} model {c.model_name!r}: {kind} after {spent:.2f} s ({_first_line(exc)})", kind
            ) from None
        finally:
            self.metrics.triton_request_seconds.observe(time.perf_counter() - start)
        if any(o is None for o in outs):
            self.metrics.triton_errors.labels(kind="shape").inc()
            raise BackendError(f"Triton {self.where}: the answer lacks outputs {self.output_names}", "shape")
        return tuple(np.asarray(o, dtype=np.float32) for o in outs)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception as exc:  # closing a client whose server is gone must not mask the real error
            log.debug("closing the Triton client: %s", exc)


def served_manifest(backend: TritonBackend) -> Manifest:
    """The manifest the server's model config carries (written by `inspector model triton-repo`)."""
    text = backend.served.manifest_json
    if text is None:
        raise ModelError(
            f"model {backend.config.model_name!r} on {backend.where} carries no {MANIFEST_PARAMETER} parameter; "
            "give the model's manifest (MODEL.onnx or MODEL.yaml) as well"
        )
    try:
        return Manifest.model_validate(json.loads(text))
    except ValueError as exc:
        raise ModelError(f"{backend.where}: the served {MANIFEST_PARAMETER} is not a valid manifest ({exc})") from None


class TritonModel(Model):
    """A contract `Model` served by Triton; use as a context manager like `Model`."""

    def __init__(
        self,
        config: TritonConfig,
        manifest_of: Path | str | None = None,
        batch_size: int = 16,
        metrics: Metrics | None = None,
    ) -> None:
        backend = TritonBackend(config, metrics)
        try:
            manifest = load_manifest(Path(manifest_of)) if manifest_of is not None else served_manifest(backend)
            backend.bind(manifest)
            capped = min(batch_size, backend.served.max_batch_size)
            if capped < batch_size:
                log.info("batch %d capped at the server's max_batch_size %d", batch_size, capped)
            super().__init__(
                manifest_of or f"{backend.where}/{config.model_name}",
                batch_size=capped,
                backend=backend,
                manifest=manifest,
            )
        except BaseException:
            backend.close()
            raise
        self.triton: TritonBackend = backend

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "server": self.triton.where, "served_name": self.triton.served.name}


# --------------------------------------------------------------------------------------------- model repository
def _pbtxt_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class RepoOptions:
    """How the server runs the model: the batch it may form, instances, and TensorRT inside onnxruntime (GPU)."""

    max_batch_size: int = 64
    kind: str = "gpu"  # instance kind: gpu or cpu
    instances: int = 1
    tensorrt: str | None = None  # None, "fp32" or "fp16" (fp16 changes the numbers: check decisions on the line)

    def check(self) -> None:
        if self.max_batch_size < 1 or self.instances < 1:
            raise ModelError("max batch size and instances must be >= 1")
        if self.kind not in ("gpu", "cpu"):
            raise ModelError(f"instance kind {self.kind!r}: gpu or cpu")
        if self.tensorrt not in (None, "fp32", "fp16") or (self.tensorrt and self.kind != "gpu"):
            raise ModelError(f"tensorrt {self.tensorrt!r}: fp32 or fp16, and only with instance kind gpu")


def model_config_pbtxt(manifest: Manifest, num_classes: int, name: str, options: RepoOptions | None = None) -> str:
    """config.pbtxt for Triton's onnxruntime backend: contract outputs, dynamic batching, the manifest."""
    o = options or RepoOptions()
    o.check()
    s = manifest.input.size
    in_dims = [3, s, s] if manifest.input.layout == "NCHW" else [s, s, 3]
    outs = [(manifest.outputs.logits, [num_classes])]
    outs += [(n, [s >> layer, s >> layer]) for layer, n in enumerate(manifest.outputs.fam, start=1)]
    preferred = [b for b in (8, 16, 32) if b <= o.max_batch_size] or [o.max_batch_size]

    def tensor(n: str, dims: list[int]) -> str:
        return f"  {{ name: {_pbtxt_string(n)} data_type: TYPE_FP32 dims: [ {', '.join(map(str, dims))} ] }}"

    manifest_json = json.dumps(manifest.model_dump(mode="json", exclude_none=True), separators=(",", ":"))
    tensorrt = []
    if o.tensorrt is not None:
        precision = _pbtxt_string(o.tensorrt.upper())
        tensorrt = [
            "optimization { execution_accelerators { gpu_execution_accelerator: [",
            f'  {{ name: "tensorrt" parameters {{ key: "precision_mode" value: {precision} }} }}',
            "] } }",
        ]
    return "\n".join(
        [
            f"# {manifest.name}: the grape spider inspector's model contract (logits + fam1..fam5), written by",
            "# `inspector model triton-repo`; clients read the manifest from the inspector_manifest parameter.",
            f"name: {_pbtxt_string(name)}",
            'backend: "onnxruntime"',
            f"max_batch_size: {o.max_batch_size}",
            "input [",
            tensor(manifest.input.name, in_dims),
            "]",
            "output [",
            ",\n".join(tensor(n, d) for n, d in outs),
            "]",
            "dynamic_batching {",
            f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
            "  max_queue_delay_microseconds: 2000",
            "}",
            f"instance_group [ {{ count: {o.instances} kind: KIND_{o.kind.upper()} }} ]",
            *tensorrt,
            "parameters {",
            f"  key: {_pbtxt_string(MANIFEST_PARAMETER)}",
            f"  value: {{ string_value: {_pbtxt_string(manifest_json)} }}",
            "}",
            "",
        ]
    )


def write_model_repository(onnx_path: Path, out_dir: Path, name: str, options: RepoOptions | None = None) -> list[Path]:
    """OUT/NAME/config.pbtxt and OUT/NAME/1/model.onnx for a contract model (checked by loading it here)."""
    (options or RepoOptions()).check()
    with Model(onnx_path, providers=["cpu"], batch_size=1) as model:
        text = model_config_pbtxt(model.manifest, model.num_classes, name, options)
    model_dir = out_dir / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    config = model_dir / "config.pbtxt"
    config.write_text(text)
    weights = model_dir / "1" / "model.onnx"
    shutil.copyfile(onnx_path, weights)
    return [config, weights]
