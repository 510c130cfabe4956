"""The model contract (docs/ARCHITECTURE.md): manifest beside the ONNX file, an onnxruntime session behind a narrow backend.

Needs numpy and onnxruntime only (never torch, never the `onnx` package).

- `load_manifest(onnx_path)` reads ``NAME.yaml`` (or ``NAME.json``) beside ``NAME.onnx``.
- `Model(onnx_path, providers, threads, batch_size)` (a context manager) opens the session, reads back the provider
  actually used, checks the graph against the manifest (input name/size/layout, output names, ranks, shapes) and
  runs one probe tile so symbolic shapes are checked too.
- `Model.preprocess(tiles_bgr)` turns uint8 BGR tiles (N, S, S, 3) into the model's float input in one vectorised
  expression: ``x = (pixel * scale - mean) / std`` in the model's colour order and layout.
- `Model.infer(tiles_bgr) -> Inference`: logits (N, C), spider probability (N,), fam1..fam5 (N, H_l, W_l),
  in batches of `batch_size`.

A `Backend` is anything with ``provider``, ``run(batch) -> (logits, fam1, ..., fam5)`` and ``close()``;
`OrtBackend` is the onnxruntime one, `inspector.model_triton.TritonBackend` a Triton Inference Server client.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from inspector.errors import ConfigError, ModelError
from inspector.yamlload import validate

log = logging.getLogger(__name__)

N_LAYERS = 5
PROVIDER_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "cuda", "cpu")
ORT_MISSING = (
    "onnxruntime is not installed: pip install 'grape-spider-inspector[cpu]' (or [gpu] on a GPU line PC, never both)"
)

PositiveFloat = Annotated[float, Field(gt=0)]
Names5 = tuple[str, str, str, str, str]


# --------------------------------------------------------------------------------------------- manifest
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestInput(_Strict):
    """The model input. ``mean``/``std`` are per input channel, in the model's colour order (``color``)."""

    name: str = Field(min_length=1)
    size: int = Field(
        ge=2**N_LAYERS, le=4096, description="square input side in pixels, >= 32 (five 2x2 poolings, floored)"
    )
    layout: Literal["NCHW", "NHWC"]
    color: Literal["RGB", "BGR"]
    scale: PositiveFloat
    mean: tuple[float, float, float]
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat]


class ManifestOutputs(_Strict):
    logits: str = Field(min_length=1)
    fam: Names5
    pool: Names5 | None = None


class Manifest(_Strict):
    """The manifest beside every model (docs/ARCHITECTURE.md, "The model contract"); other tools read these keys."""

    name: str = Field(min_length=1)
    input: ManifestInput
    outputs: ManifestOutputs
    spider_index: int = Field(ge=0)
    fam_layer_scale: tuple[PositiveFloat, PositiveFloat, PositiveFloat, PositiveFloat, PositiveFloat]
    width: PositiveFloat | list[PositiveFloat] | None = Field(
        None, description="width divisor (4: every conv has 1/4 of VGG16's), or one per block ([8, 8, 8, 4, 4])"
    )
    model_card: str | None = None
    description: str | None = None

    @property
    def width_label(self) -> str:
        """``8`` or ``8,8,8,4,4`` (the ``width`` label of inspector_model_info); empty when not stated."""
        ws = self.width if isinstance(self.width, list) else [] if self.width is None else [self.width]
        return ",".join(f"{w:g}" for w in ws)

    def fam_hw(self, layer: int) -> int:
        """Side of fam_layer (1..5): size / 2^layer rounded down, as Keras and PyTorch pool (240: 120 ... 7)."""
        return self.input.size >> layer

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def manifest_path(onnx_path: Path) -> Path | None:
    """The manifest beside ``NAME.onnx``: ``NAME.yaml``, ``NAME.yml`` or ``NAME.json``; None when absent."""
    for suffix in (".yaml", ".yml", ".json"):
        candidate = onnx_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def load_manifest(onnx_path: Path | str) -> Manifest:
    """Read and validate the manifest beside `onnx_path`; ModelError naming the file and the fix otherwise."""
    onnx_path = Path(onnx_path)
    found = manifest_path(onnx_path)
    if found is None:
        raise ModelError(
            f"{onnx_path}: no manifest beside it (looked for {onnx_path.with_suffix('.yaml').name} and "
            f"{onnx_path.with_suffix('.json').name}); write one (docs/ARCHITECTURE.md, model contract) or run "
            "`inspector model expose`"
        )
    try:
        return validate(Manifest, found)
    except ConfigError as exc:
        raise ModelError(str(exc)) from None


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Inference:
    """One inference over N tiles: logits (N, C), spider_prob (N,), fams five (N, H_l, W_l), all float32."""

    logits: np.ndarray
    spider_prob: np.ndarray
    fams: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        n = self.logits.shape[0]
        if self.logits.ndim != 2 or self.spider_prob.shape != (n,) or len(self.fams) != N_LAYERS:
            raise ValueError("Inference: logits (N, C), spider_prob (N,) and five fams expected")
        if any(f.ndim != 3 or f.shape[0] != n for f in self.fams):
            raise ValueError("Inference: every fam must be (N, H_l, W_l)")

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def finite_tiles(self) -> np.ndarray:
        """(N,) bool: the tiles whose logits, probability and every map are finite (the output check: a NaN or an
        infinity is a model error for that tile, never a score)."""
        n = len(self)
        ok = np.isfinite(self.logits).all(axis=1) & np.isfinite(self.spider_prob)
        for fam in self.fams:
            ok &= np.isfinite(fam).reshape(n, int(np.prod(fam.shape[1:]))).all(axis=1)
        return np.asarray(ok, bool)

    def zeroed(self, keep: np.ndarray) -> Inference:
        """A copy with the tiles not in `keep` set to probability 0 and empty maps (after `finite_tiles`)."""
        drop = ~keep
        logits, prob = self.logits.copy(), self.spider_prob.copy()
        logits[drop], prob[drop] = 0.0, 0.0
        fams = []
        for fam in self.fams:
            fam = fam.copy()
            fam[drop] = 0.0
            fams.append(fam)
        return Inference(logits, prob, tuple(fams))


def softmax_prob(logits: np.ndarray, index: int) -> np.ndarray:
    """softmax(logits, axis=1)[:, index] as float32, numerically stable."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e[:, index] / e.sum(axis=1)).astype(np.float32)


# --------------------------------------------------------------------------------------------- preprocessing
def preprocess(tiles_bgr: np.ndarray, spec: ManifestInput) -> np.ndarray:
    """uint8 BGR tiles (N, S, S, 3) -> float32 model input (N, 3, S, S) or (N, S, S, 3).

    ``x = (pixel * scale - mean) / std`` per channel in the model's colour order, written as one vectorised
    multiply-add (``pixel * (scale / std) - mean / std``) straight into a C-contiguous output.
    """
    if tiles_bgr.ndim != 4 or tiles_bgr.shape[1:] != (spec.size, spec.size, 3):
        raise ValueError(f"tiles must be (N, {spec.size}, {spec.size}, 3) BGR, got {tiles_bgr.shape}")
    if tiles_bgr.dtype != np.uint8:
        raise ValueError(f"tiles must be uint8, got {tiles_bgr.dtype}")
    std = np.asarray(spec.std, dtype=np.float64)
    gain = (spec.scale / std).astype(np.float32)
    offset = (np.asarray(spec.mean, dtype=np.float64) / std).astype(np.float32)
    chans = tiles_bgr[..., ::-1] if spec.color == "RGB" else tiles_bgr
    n, s = tiles_bgr.shape[0], spec.size
    if spec.layout == "NCHW":
        chans = chans.transpose(0, 3, 1, 2)
        gain, offset = gain[:, None, None], offset[:, None, None]
        out = np.empty((n, 3, s, s), dtype=np.float32)
    else:
        out = np.empty((n, s, s, 3), dtype=np.float32)
    np.multiply(chans, gain, out=out)
    out -= offset
    return out


# --------------------------------------------------------------------------------------------- backends
class Backend(Protocol):
    """What the Model needs from an inference engine (onnxruntime here, Triton in `inspector.model_triton`)."""

    provider: str

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """float32 input batch -> (logits, fam1, ..., fam5)."""
        ...

    def close(self) -> None: ...


ORT_BOTH = (
    "onnxruntime and onnxruntime-gpu are both installed and overwrite each other's files: "
    "pip uninstall -y onnxruntime onnxruntime-gpu, then pip install 'grape-spider-inspector[gpu]' (or [cpu])"
)


def installed_ort_distributions() -> list[str]:
    """Which onnxruntime distributions pip has installed (they provide the same module)."""
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def import_onnxruntime() -> ModuleType:
    if len(installed_ort_distributions()) > 1:
        raise ModelError(ORT_BOTH)
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(ORT_MISSING) from None
    return onnxruntime


def choose_providers(requested: tuple[str, ...] | list[str], available: list[str]) -> list[str]:
    """onnxruntime provider names to ask for, in order. `auto` = TensorRT -> CUDA -> CPU among the available.

    An explicit list is honoured in order; providers this onnxruntime build lacks are dropped with a warning.
    """
    wanted: list[str] = []
    for key in requested:
        keys = [k for k in AUTO_ORDER if PROVIDER_NAMES[k] in available] if key == "auto" else [key]
        for k in keys:
            if k not in PROVIDER_NAMES:
                raise ModelError(f"unknown provider {k!r}; allowed: auto, tensorrt, cuda, cpu")
            if PROVIDER_NAMES[k] not in wanted:
                wanted.append(PROVIDER_NAMES[k])
    usable = [p for p in wanted if p in available]
    for p in wanted:
        if p not in available:
            log.warning("provider %s requested but this onnxruntime build lacks it (has %s)", p, available)
    if not usable:
        raise ModelError(
            f"none of the requested providers {list(requested)} is available in this onnxruntime "
            f"(available: {available}); install onnxruntime-gpu for cuda/tensorrt or add 'cpu' to model.providers"
        )
    return usable


def _provider_options(name: str) -> dict[str, Any]:
    if name == "TensorrtExecutionProvider":
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grape-spider-inspector" / "trt"
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
    return {}


def _dim(d: Any) -> int | None:
    return d if isinstance(d, int) and d >= 0 else None


class OrtBackend:
    """onnxruntime InferenceSession asking only for the contract's outputs (logits, fam1..fam5)."""

    def __init__(
        self,
        onnx_path: Path,
        manifest: Manifest,
        providers: tuple[str, ...] | list[str] = ("auto",),
        threads: int = 0,
    ) -> None:
        ort = import_onnxruntime()
        self.path = onnx_path
        self.manifest = manifest
        self.requested = choose_providers(providers, list(ort.get_available_providers()))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # our own warnings say what matters; ORT's are noise on the line
        try:
            self.session = ort.InferenceSession(
                str(onnx_path),
                sess_options=opts,
                providers=[(p, _provider_options(p)) for p in self.requested],
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"{onnx_path}: not a loadable ONNX model ({first}); re-export it "
                "(`inspector model export`) or check the file is complete"
            ) from None
        self.providers_used: list[str] = list(self.session.get_providers())
        self.provider = self.providers_used[0]
        if self.provider != self.requested[0]:
            log.warning(
                "%s: asked for %s but onnxruntime runs on %s (missing CUDA/TensorRT libraries or GPU?)",
                onnx_path,
                self.requested[0],
                self.provider,
            )
        inputs = {i.name: i for i in self.session.get_inputs()}
        inp = inputs.get(manifest.input.name)
        if inp is None:
            names = list(inputs)
            raise ModelError(
                f"{onnx_path}: manifest input.name {manifest.input.name!r} is not a graph input (graph has "
                f"{names}); fix input.name in {onnx_path.with_suffix('.yaml').name}"
            )
        self.input_shape: list[Any] = list(inp.shape)
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.output_names = [manifest.outputs.logits, *manifest.outputs.fam]
        self.output_shapes = {o.name: list(o.shape) for o in self.session.get_outputs()}

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        feed = {self.manifest.input.name: batch.astype(self.input_dtype, copy=False)}
        outs = self.session.run(self.output_names, feed)
        return tuple(np.asarray(o, dtype=np.float32) for o in outs)

    def run_named(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """Any outputs by name (debugging: raw pool outputs)."""
        feed = {self.manifest.input.name: batch.astype(self.input_dtype, copy=False)}
        return [np.asarray(o) for o in self.session.run(names, feed)]

    def close(self) -> None:
        # onnxruntime frees the session with the object; drop our reference.
        self.__dict__.pop("session", None)


def check_graph(backend: OrtBackend) -> int | None:
    """Check the session's declared shapes against the manifest; return the class count when declared."""
    m, path = backend.manifest, backend.path
    yaml_name = path.with_suffix(".yaml").name
    shape = backend.input_shape
    size = m.input.size
    if len(shape) != 4:
        raise ModelError(f"{path}: input {m.input.name!r} has rank {len(shape)}, expected 4 (N, C, H, W or N, H, W, C)")
    c_axis, hw_axes = (1, (2, 3)) if m.input.layout == "NCHW" else (3, (1, 2))
    c, h, w = _dim(shape[c_axis]), _dim(shape[hw_axes[0]]), _dim(shape[hw_axes[1]])
    if c not in (None, 3) or any(v not in (None, size) for v in (h, w)):
        raise ModelError(
            f"{path}: graph input shape {shape} does not match manifest size {size} layout {m.input.layout}; "
            f"fix input.size/input.layout in {yaml_name}"
        )
    declared = backend.output_shapes
    missing = [n for n in backend.output_names if n not in declared]
    if m.outputs.pool is not None:
        missing += [n for n in m.outputs.pool if n not in declared]
    if missing:
        raise ModelError(
            f"{path}: output(s) {missing} named in the manifest are not graph outputs (graph has "
            f"{sorted(declared)}); run `inspector model expose` or fix {yaml_name}"
        )
    logits_shape = declared[m.outputs.logits]
    if len(logits_shape) != 2:
        raise ModelError(f"{path}: logits {m.outputs.logits!r} has rank {len(logits_shape)}, expected 2 (N, C)")
    n_classes = _dim(logits_shape[1])
    for layer, name in enumerate(m.outputs.fam, start=1):
        _check_fam(path, name, layer, declared[name], size)
    return n_classes


def _check_fam(path: Path, name: str, layer: int, shape: list[Any] | tuple[int, ...], size: int) -> None:
    want = size >> layer
    if len(shape) != 3:
        raise ModelError(
            f"{path}: fam{layer} output {name!r} has rank {len(shape)}, expected 3 (N, {want}, {want}): the "
            "channel sum of pool{layer}; run `inspector model expose`"
        )
    hw = [_dim(d) for d in shape[1:]]
    if any(v not in (None, want) for v in hw):
        raise ModelError(
            f"{path}: fam{layer} output {name!r} is {list(shape)}, expected (N, {want}, {want}) for input size "
            f"{size}; check outputs.fam order and input.size in the manifest"
        )


def _check_spider_index(path: Path, m: Manifest, n_classes: int) -> None:
    if m.spider_index >= n_classes:
        raise ModelError(
            f"{path}: spider_index {m.spider_index} is out of range for {n_classes} classes; "
            f"fix spider_index in {path.with_suffix('.yaml').name}"
        )


# --------------------------------------------------------------------------------------------- model
class Model:
    """An ONNX model honouring the contract, with batching; use as a context manager."""

    def __init__(
        self,
        onnx_path: Path | str,
        providers: tuple[str, ...] | list[str] = ("auto",),
        threads: int = 0,
        batch_size: int = 16,
        backend: Backend | None = None,
        manifest: Manifest | None = None,
    ) -> None:
        """`manifest` (with a `backend`): the contract of a model that lives elsewhere; `onnx_path` then only names it."""
        self.path = Path(onnx_path)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if manifest is not None and backend is None:
            raise ValueError("a manifest is given only with the backend that serves it")
        if manifest is None and not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found; give the path of an existing .onnx file")
        self.manifest = manifest if manifest is not None else load_manifest(self.path)
        self.batch_size = batch_size
        self.pad_batches = False
        self._ort: OrtBackend | None = None
        n_classes: int | None = None
        if backend is None:
            if not _looks_like_onnx(self.path):
                raise ModelError(
                    f"{self.path}: not an ONNX file (no protobuf model header); give an exported .onnx model"
                )
            ort_backend = OrtBackend(self.path, self.manifest, providers, threads)
            self._ort = ort_backend
            backend = ort_backend
            n_classes = check_graph(ort_backend)
            fixed_n = _dim(ort_backend.input_shape[0])
            if fixed_n is not None:
                self.batch_size, self.pad_batches = fixed_n, True
            elif ort_backend.provider == "TensorrtExecutionProvider":
                self.pad_batches = True  # one engine shape, no rebuild for a short last batch
        self.backend: Backend = backend
        self.provider = backend.provider
        probe = self._run_batch(np.zeros((1, *self._input_shape()), dtype=np.float32))
        self.num_classes = int(probe[0].shape[1])
        if n_classes is not None and n_classes != self.num_classes:
            raise ModelError(f"{self.path}: logits declared with {n_classes} classes but produced {self.num_classes}")
        _check_spider_index(self.path, self.manifest, self.num_classes)
        log.info("model %s loaded on %s (batch %d)", self.manifest.name, self.provider, self.batch_size)

    # -- context manager
    def __enter__(self) -> Model:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    # -- helpers
    def _input_shape(self) -> tuple[int, int, int]:
        s = self.manifest.input.size
        return (3, s, s) if self.manifest.input.layout == "NCHW" else (s, s, 3)

    def _run_batch(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run one batch (<= batch_size), padding when the engine wants a fixed shape; check output shapes."""
        n = batch.shape[0]
        if self.pad_batches and n < self.batch_size:
            pad = np.zeros((self.batch_size - n, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        outs = self.backend.run(batch)
        if len(outs) != 1 + N_LAYERS:
            raise ModelError(f"{self.path}: backend returned {len(outs)} outputs, expected logits + 5 fams")
        logits = outs[0]
        if logits.ndim != 2 or logits.shape[0] != batch.shape[0]:
            raise ModelError(f"{self.path}: logits came back {logits.shape}, expected ({batch.shape[0]}, C)")
        for layer, (name, fam) in enumerate(zip(self.manifest.outputs.fam, outs[1:], strict=True), start=1):
            _check_fam(self.path, name, layer, fam.shape, self.manifest.input.size)
        return tuple(o[:n] for o in outs)

    # -- public API
    def preprocess(self, tiles_bgr: np.ndarray) -> np.ndarray:
        return preprocess(tiles_bgr, self.manifest.input)

    def infer(self, tiles_bgr: np.ndarray) -> Inference:
        """uint8 BGR tiles (N, S, S, 3) -> Inference; batches of `batch_size`; N = 0 gives empty arrays."""
        x = self.preprocess(tiles_bgr)
        n = x.shape[0]
        parts = [self._run_batch(x[i : i + self.batch_size]) for i in range(0, n, self.batch_size)]
        if parts:
            logits = np.concatenate([p[0] for p in parts])
            fams = tuple(np.concatenate([p[1 + layer] for p in parts]) for layer in range(N_LAYERS))
        else:
            s = self.manifest.input.size
            logits = np.zeros((0, self.num_classes), dtype=np.float32)
            fams = tuple(np.zeros((0, s >> layer, s >> layer), dtype=np.float32) for layer in range(1, 6))
        return Inference(logits, softmax_prob(logits, self.manifest.spider_index), fams)

    def pools(self, tiles_bgr: np.ndarray) -> list[np.ndarray]:
        """Raw pool1..pool5 outputs (debugging only; needs `outputs.pool` in the manifest and onnxruntime)."""
        names = self.manifest.outputs.pool
        if names is None or self._ort is None:
            raise ModelError(
                f"{self.path}: no pool outputs in the manifest; expose them with `inspector model expose --pools`"
            )
        return self._ort.run_named(self.preprocess(tiles_bgr), list(names))

    def warmup(self) -> None:
        """Run one full batch so lazy allocation / engine builds happen before the first real frame."""
        self._run_batch(np.zeros((self.batch_size, *self._input_shape()), dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        """name, width, provider, input_size (for inspector_model_info and logs)."""
        return {
            "name": self.manifest.name,
            "width": self.manifest.width_label,
            "provider": self.provider,
            "input_size": self.manifest.input.size,
        }


def _looks_like_onnx(path: Path) -> bool:
    """Cheap check: a serialised ModelProto starts with field 1 (ir_version, varint) -> byte 0x08."""
    try:
        with path.open("rb") as f:
            head = f.read(2)
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc}); check permissions") from None
    return len(head) == 2 and head[0] == 0x08
