"""A real, hand-weighted ONNX model that honours the model contract: a VGG-shaped dark-spot detector.

Five blocks of 3x3 conv + ReLU + 2x2 MaxPool on one channel; conv1 responds to dark pixels
(relu(DARK - mean(RGB))), the later convs pass the response on, so pool5 holds the darkest spot's strength;
a Gemm head turns its sum into the spider logit. fam1..fam5 are channel sums of the pools, computed in the graph.
Used by pipeline tests on drawn frames (belt, green bunches, black dots as spiders) so the pipeline's mechanics can be
checked with known answers independently of the trained demo model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

DARK = 0.3  # pixels darker than this (0..1 mean RGB) count as spider


def spot_model(size: int = 64, nan_on_spot: bool = False, raise_on_spot: bool = False) -> onnx.ModelProto:
    """`nan_on_spot`: a broken model whose logits are NaN for every tile with a dark spot (finite elsewhere).
    `raise_on_spot`: a broken model whose run fails (onnxruntime raises: an index out of bounds) for every batch
    holding a tile with a dark spot in it; a batch of clean or wholly dark tiles (the probe and the padding) runs."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    x = "input"
    w1 = np.zeros((1, 3, 3, 3), np.float32)
    w1[0, :, 1, 1] = -1.0 / 3.0
    inits += [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.array([DARK], np.float32), "b1")]
    nodes.append(helper.make_node("Conv", [x, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    nodes.append(helper.make_node("MaxPool", ["r1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]))
    wid = np.zeros((1, 1, 3, 3), np.float32)
    wid[0, 0, 1, 1] = 1.0
    inits += [numpy_helper.from_array(wid, "wid"), numpy_helper.from_array(np.zeros(1, np.float32), "bid")]
    prev = "pool1"
    for block in range(2, 6):
        nodes.append(helper.make_node("Conv", [prev, "wid", "bid"], [f"c{block}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{block}"], [f"r{block}"]))
        nodes.append(helper.make_node("MaxPool", [f"r{block}"], [f"pool{block}"], kernel_shape=[2, 2], strides=[2, 2]))
        prev = f"pool{block}"
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    for block in range(1, 6):
        nodes.append(helper.make_node("ReduceSum", [f"pool{block}", "axis1"], [f"fam{block}"], keepdims=0))
    cells = (size // 32) ** 2
    wh = np.zeros((2, cells), np.float32)
    wh[1, :] = 40.0
    inits += [numpy_helper.from_array(wh, "wh"), numpy_helper.from_array(np.array([0.0, -2.0], np.float32), "bh")]
    nodes.append(helper.make_node("Flatten", ["pool5"], ["flat"], axis=1))
    head = "head" if nan_on_spot or raise_on_spot else "logits"
    nodes.append(helper.make_node("Gemm", ["flat", "wh", "bh"], [head], transB=1))
    if nan_on_spot:  # logits + sqrt(-sum(pool5)): + 0 on a clean tile, NaN where a spot is
        nodes.append(helper.make_node("ReduceSum", ["flat", "axis1"], ["spot_sum"], keepdims=1))
        nodes.append(helper.make_node("Neg", ["spot_sum"], ["neg_sum"]))
        nodes.append(helper.make_node("Sqrt", ["neg_sum"], ["nan_where_spot"]))
        nodes.append(helper.make_node("Add", ["head", "nan_where_spot"], ["logits"]))
    if raise_on_spot:  # logits + [0.0][5 * any(tile partly dark)]: Gather out of bounds where a spot is
        inits += [
            numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
            numpy_helper.from_array(np.array(5.0, np.float32), "five"),
            numpy_helper.from_array(np.array([0.0], np.float32), "one_value"),
        ]
        nodes += [
            helper.make_node("ReduceMax", ["r1"], ["tile_max"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("ReduceMin", ["r1"], ["tile_min"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Greater", ["tile_max", "zero"], ["some_dark"]),
            helper.make_node("Greater", ["tile_min", "zero"], ["all_dark"]),
            helper.make_node("Not", ["all_dark"], ["not_all_dark"]),
            helper.make_node("And", ["some_dark", "not_all_dark"], ["spot"]),
            helper.make_node("Cast", ["spot"], ["spot_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMax", ["spot_f"], ["any_spot"], keepdims=0),
            helper.make_node("Mul", ["any_spot", "five"], ["index_f"]),
            helper.make_node("Cast", ["index_f"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["one_value", "index"], ["fails_on_spot"]),
            helper.make_node("Add", ["head", "fails_on_spot"], ["logits"]),
        ]
    graph = helper.make_graph(
        nodes,
        "spot",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])]
        + [
            helper.make_tensor_value_info(f"fam{b}", TensorProto.FLOAT, ["N", size >> b, size >> b])
            for b in range(1, 6)
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


BUSY_WIDTH = 1024  # the busy model's rows are widened to this many columns, then multiplied by a square matrix


def busy_spot_model(layers: int, size: int = 64) -> onnx.ModelProto:
    """The spot model with work added on purpose, for overload tests: each tile's 3·size rows of ``size`` pixels
    widened to BUSY_WIDTH columns, then ``layers`` products with a BUSY_WIDTH² matrix (2·3·size·BUSY_WIDTH² FLOP per
    layer and tile). The answers stay the spot model's: the products' mean enters the logits as relu(−|mean|) = 0,
    computed on every run (a result no output used would be pruned)."""
    model = spot_model(size)
    g = model.graph
    for node in g.node:
        node.output[:] = ["spot_logits" if o == "logits" else o for o in node.output]
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1, size], np.int64), "busy_rows"),
            numpy_helper.from_array(np.full((size, BUSY_WIDTH), 1.0 / size, np.float32), "busy_widen"),
            numpy_helper.from_array(np.full((BUSY_WIDTH, BUSY_WIDTH), 1.0 / BUSY_WIDTH, np.float32), "busy_mix"),
        ]
    )
    g.node.append(helper.make_node("Reshape", ["input", "busy_rows"], ["busy_in"]))
    g.node.append(helper.make_node("MatMul", ["busy_in", "busy_widen"], ["busy0"]))
    for layer in range(1, layers + 1):
        g.node.append(helper.make_node("MatMul", [f"busy{layer - 1}", "busy_mix"], [f"busy{layer}"]))
    g.node.append(helper.make_node("ReduceMean", [f"busy{layers}"], ["busy_mean"], keepdims=0))
    g.node.append(helper.make_node("Abs", ["busy_mean"], ["busy_abs"]))
    g.node.append(helper.make_node("Neg", ["busy_abs"], ["busy_neg"]))
    g.node.append(helper.make_node("Relu", ["busy_neg"], ["busy_zero"]))
    g.node.append(helper.make_node("Add", ["spot_logits", "busy_zero"], ["logits"]))
    onnx.checker.check_model(model)
    return model


def write_spot_model(dir_path: Path, size: int = 64, nan_on_spot: bool = False, raise_on_spot: bool = False) -> Path:
    stem = "spot-nan" if nan_on_spot else "spot-raise" if raise_on_spot else "spot"
    return _write(dir_path, stem, spot_model(size, nan_on_spot, raise_on_spot), size)


def write_busy_spot_model(dir_path: Path, layers: int, size: int = 64) -> Path:
    """`busy_spot_model` as ``busy.onnx`` with its manifest."""
    return _write(dir_path, "busy", busy_spot_model(layers, size), size)


def _write(dir_path: Path, stem: str, model: onnx.ModelProto, size: int) -> Path:
    path = dir_path / f"{stem}.onnx"
    onnx.save(model, str(path))
    manifest = {
        "name": "spot-detector",
        "input": {
            "name": "input",
            "size": size,
            "layout": "NCHW",
            "color": "RGB",
            "scale": 1 / 255,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
        },
        "outputs": {"logits": "logits", "fam": [f"fam{i}" for i in range(1, 6)]},
        "spider_index": 1,
        "fam_layer_scale": [1.0, 1.0, 1.0, 1.0, 1.0],
    }
    (dir_path / f"{stem}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path
