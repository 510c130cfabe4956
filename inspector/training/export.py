"""ONNX export of :class:`~inspector.training.vgg.VGG16` plus the manifest of the model contract of docs/ARCHITECTURE.md.

The exported graph: input ``input`` (N, 3, 224, 224) float32, RGB, x = (pixel/255 - mean)/std with ImageNet
mean/std; outputs ``logits`` (N, 2), ``fam1..fam5`` (N, H_l, W_l) = channel sums of pool1..pool5, and with
``pool_outputs`` the raw ``pool1..pool5``. Batch is dynamic. BatchNorm is folded into the convolutions first,
and training-only heads (anything not in :class:`VGG16`) never reach the graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from inspector.training.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_SIZE,
    VGG16,
    Width,
    block_divisors,
    fold_batchnorm,
    output_names,
)

OPSET = 17
SPIDER_INDEX = 1


def manifest_dict(
    name: str,
    width: Width,
    fam_layer_scale: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0),
    model_card: str | None = None,
    pool_outputs: bool = False,
) -> dict[str, Any]:
    """The manifest (docs/ARCHITECTURE.md keys, in that order, plus ``width`` and optional ``model_card``).

    With ``pool_outputs`` the raw pool maps are named under ``outputs.pool``.
    """
    if len(fam_layer_scale) != 5 or any(not (float(s) > 0) for s in fam_layer_scale):
        raise ValueError(f"fam_layer_scale needs 5 positive numbers, got {list(fam_layer_scale)}")
    manifest: dict[str, Any] = {
        "name": name,
        "input": {
            "name": "input",
            "size": INPUT_SIZE,
            "layout": "NCHW",
            "color": "RGB",
            "scale": 1.0 / 255.0,
            "mean": [float(v) for v in IMAGENET_MEAN],
            "std": [float(v) for v in IMAGENET_STD],
        },
        "outputs": {"logits": "logits", "fam": [f"fam{i}" for i in range(1, 6)]},
        "spider_index": SPIDER_INDEX,
        "fam_layer_scale": [float(s) for s in fam_layer_scale],
        "width": _manifest_width(width),
    }
    if pool_outputs:
        manifest["outputs"]["pool"] = [f"pool{i}" for i in range(1, 6)]
    if model_card:
        manifest["model_card"] = model_card
    return manifest


def _manifest_width(width: Width) -> int | list[int]:
    """``8``, or the five per-block divisors as a list when they differ."""
    ws = block_divisors(width)
    return ws[0] if len(set(ws)) == 1 else list(ws)


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    text = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=110)
    path.write_text(text, encoding="utf-8")


def export_onnx(model: VGG16, onnx_path: Path, pool_outputs: bool = False) -> VGG16:
    """Write ``model`` (BN folded, eval mode) as ONNX opset 17 with a dynamic batch; returns the exported module."""
    plain = fold_batchnorm(model) if model.batch_norm else _plain_copy(model)
    plain.pool_outputs = pool_outputs
    plain.eval()
    names = output_names(pool_outputs)
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    dynamic_axes = {n: {0: "batch"} for n in ["input", *names]}
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            plain,
            (dummy,),
            str(onnx_path),
            input_names=["input"],
            output_names=names,
            opset_version=OPSET,
            dynamic_axes=dynamic_axes,
            dynamo=False,
            do_constant_folding=True,
        )
    return plain


def store_weights_fp16(onnx_path: Path, min_elements: int = 4096) -> tuple[int, int]:
    """Store the large float32 weights of ``onnx_path`` as float16, each behind a ``Cast`` back to float32, in place.

    The file shrinks to about half (the first classifier layer is most of it) while the graph still computes in
    float32: onnxruntime folds each ``Cast`` of a constant when the session opens, so inference speed and the
    contract's float32 input and outputs are unchanged; the weights lose precision below fp16's 11 bits (relative
    error <= 2^-11), which :func:`parity` measures. Tensors under ``min_elements`` (biases) stay float32.
    Returns the file size in bytes before and after.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    before = onnx_path.stat().st_size
    model = onnx.load(str(onnx_path))
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        weights = numpy_helper.to_array(init)
        if not np.all(np.abs(weights) <= np.finfo(np.float16).max):
            raise ValueError(f"{onnx_path.name}: {init.name} holds values outside float16's range")
        name = init.name
        init.CopyFrom(numpy_helper.from_array(weights.astype(np.float16), f"{name}__fp16"))
        casts.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT, name=f"{name}__cast"))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*casts, *nodes])
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    return before, onnx_path.stat().st_size


def _plain_copy(model: VGG16) -> VGG16:
    copy = VGG16(width=model.width, num_classes=model.num_classes, hidden=model.hidden)
    copy.features.load_state_dict(model.features.state_dict())
    copy.classifier.load_state_dict(model.classifier.state_dict())
    return copy.eval()


def parity(model: VGG16, onnx_path: Path, n_samples: int = 2, seed: int = 0) -> dict[str, float]:
    """Max abs difference per output between PyTorch ``model`` (eval) and onnxruntime, on random inputs."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    model.eval()
    with torch.no_grad():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(names, {"input": x})
    expected = output_names(model.pool_outputs)
    if names != expected:
        raise RuntimeError(f"{onnx_path}: outputs {names}, expected {expected}")
    return {n: float(np.max(np.abs(a - b))) for n, a, b in zip(names, ref, got, strict=True)}


def export_model(
    model: VGG16,
    onnx_path: Path,
    name: str | None = None,
    fam_layer_scale: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0),
    model_card: str | None = None,
    pool_outputs: bool = False,
    parity_samples: int = 2,
    fp16_weights: bool = False,
) -> dict[str, float]:
    """Export ONNX + ``NAME.yaml`` beside it; returns the parity figures (max abs diff per output).

    ``fp16_weights``: store the large weights as float16 (:func:`store_weights_fp16`, half the file).
    """
    plain = export_onnx(model, onnx_path, pool_outputs=pool_outputs)
    if fp16_weights:
        store_weights_fp16(onnx_path)
    manifest = manifest_dict(name or onnx_path.stem, model.width, fam_layer_scale, model_card, pool_outputs)
    write_manifest(onnx_path.with_suffix(".yaml"), manifest)
    return parity(plain, onnx_path, n_samples=parity_samples)


def format_parity(diffs: dict[str, float]) -> str:
    return "parity (max abs diff, PyTorch vs onnxruntime): " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
