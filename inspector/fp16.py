"""Halve a contract model's file: store its large weights as float16, each behind a Cast back to float32.

The graph still computes in float32 (onnxruntime folds the casts when a session opens: same speed, same float32
input and outputs); only the stored weights are rounded to fp16's 11 bits. `write_fp16_copy` writes OUT.onnx and
OUT.yaml (MODEL's manifest, unchanged) and measures the largest change of every output and of the spider
probability on random inputs. Needs the ``train`` extra (torch, onnx); imported lazily.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inspector.errors import InspectorError


@dataclass(frozen=True)
class Fp16Report:
    out_path: Path
    bytes_before: int
    bytes_after: int
    samples: int
    max_abs_change: dict[str, float]  # output name -> max abs difference on the random inputs
    spider_prob_change: float  # max abs difference of softmax(logits)[:, spider_index]

    def lines(self) -> list[str]:
        before, after = self.bytes_before, self.bytes_after
        diffs = ", ".join(f"{name} {d:.2e}" for name, d in self.max_abs_change.items())
        return [
            f"wrote {self.out_path} ({after / 1e6:.1f} MB, was {before / 1e6:.1f} MB: x{after / before:.2f})",
            f"max abs change on {self.samples} random inputs: {diffs}; spider probability {self.spider_prob_change:.1e}",
        ]


def _softmax_column(logits_nc: np.ndarray, index: int) -> np.ndarray:
    e = np.exp(logits_nc - logits_nc.max(axis=1, keepdims=True))
    return np.asarray(e[:, index] / e.sum(axis=1))


def write_fp16_copy(src: Path, out: Path, samples: int = 4) -> Fp16Report:
    """Copy `src` (a contract model with its manifest) to `out` with fp16 weight storage; compare the two."""
    from inspector.model import import_onnxruntime, load_manifest, manifest_path

    if not src.is_file():
        raise InspectorError(f"{src}: no such model file")
    if out.suffix != ".onnx" or out.resolve() == src.resolve():
        raise InspectorError(f"{out}: the output must be another file ending in .onnx")
    manifest = load_manifest(src)  # a contract model: its manifest travels with it
    manifest_file = manifest_path(src)
    assert manifest_file is not None
    try:
        import onnx  # noqa: F401  (store_weights_fp16 rewrites the graph with it)

        from inspector.training.export import store_weights_fp16
    except ImportError:
        raise InspectorError(
            "fp16 weight storage needs the train extra (torch, onnx): pip install 'grape-spider-inspector[train]'"
        ) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out)
    shutil.copyfile(manifest_file, out.with_suffix(manifest_file.suffix))
    try:
        before, after = store_weights_fp16(out)
    except ValueError as exc:
        out.unlink()
        raise InspectorError(str(exc)) from None
    ort = import_onnxruntime()
    size = manifest.input.size
    x = np.random.default_rng(0).standard_normal((samples, 3, size, size)).astype(np.float32)
    ref, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, out))
    names = [o.name for o in ref.get_outputs()]
    a = ref.run(names, {manifest.input.name: x})
    b = got.run(names, {manifest.input.name: x})
    diffs = {n: float(np.max(np.abs(u - v))) for n, u, v in zip(names, a, b, strict=True)}
    k, spider = names.index(manifest.outputs.logits), manifest.spider_index
    dp = float(np.max(np.abs(_softmax_column(a[k], spider) - _softmax_column(b[k], spider))))
    return Fp16Report(out, before, after, samples, diffs, dp)
