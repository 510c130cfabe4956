"""Small ONNX graphs built with onnx.helper for the model and expose tests (no torch, no downloads).

- `vgg_graph`: conv(+relu) blocks each ending in a 2x2 MaxPool, five blocks, Flatten/Gemm head; PyTorch-like NCHW
  or Keras/tf2onnx-like (NHWC input, Transpose nodes, `block1_conv1` / `block1_pool` names, MatMul+Add Dense head
  with a Softmax or Sigmoid).
- `resnet_like_graph`: stem conv + one MaxPool + residual blocks + GlobalAveragePool head (not VGG-like).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def vgg_graph(
    size: int = 64,
    width: int = 4,
    n_classes: int = 2,
    convs_per_block: tuple[int, ...] = (1, 1, 1, 1, 1),
    layout: str = "NCHW",
    keras_names: bool = False,
    transpose_each_block: bool = False,
    fam_outputs: bool = True,
    fam_keepdims: bool = False,
    pool_outputs: bool = False,
    head: str = "gemm",  # gemm | softmax | sigmoid
    input_name: str = "input",
    logits_name: str = "logits",
    batch: int | str = "N",
    seed: int = 0,
) -> onnx.ModelProto:
    """A tiny VGG-like graph; with fam_outputs the contract's fam1..fam5 are ReduceSum over channels."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    in_shape = [batch, 3, size, size] if layout == "NCHW" else [batch, size, size, 3]
    x = input_name
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["x_nchw"], perm=[0, 3, 1, 2], name="to_nchw"))
        x = "x_nchw"
    c_in, k = 3, 0
    pools: list[str] = []
    for block, n_conv in enumerate(convs_per_block, start=1):
        c_out = width * block
        for j in range(1, n_conv + 1):
            name = f"block{block}_conv{j}" if keras_names else f"/features.{k}/Conv"
            w = rng.normal(0, np.sqrt(2.0 / (9 * c_in)), (c_out, c_in, 3, 3)).astype(np.float32)
            b = rng.normal(0, 0.05, c_out).astype(np.float32)
            inits += [_init(f"{name}.w", w), _init(f"{name}.b", b)]
            nodes.append(
                helper.make_node(
                    "Conv",
                    [x, f"{name}.w", f"{name}.b"],
                    [f"{name}.y"],
                    name=name,
                    kernel_shape=[3, 3],
                    pads=[1, 1, 1, 1],
                )
            )
            nodes.append(helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"], name=f"{name}_relu"))
            x, c_in, k = f"{name}.r", c_out, k + 2
        pname = f"block{block}_pool" if keras_names else f"/features.{k}/MaxPool"
        nodes.append(helper.make_node("MaxPool", [x], [f"{pname}.y"], name=pname, kernel_shape=[2, 2], strides=[2, 2]))
        k += 1
        pools.append(f"{pname}.y")
        x = f"{pname}.y"
        if transpose_each_block:  # unoptimised tf2onnx: back to NHWC after each block, to NCHW before the next
            nodes.append(helper.make_node("Transpose", [x], [f"{pname}.nhwc"], perm=[0, 2, 3, 1], name=f"{pname}_t"))
            nodes.append(
                helper.make_node(
                    "Transpose", [f"{pname}.nhwc"], [f"{pname}.nchw"], perm=[0, 3, 1, 2], name=f"{pname}_u"
                )
            )
            x = f"{pname}.nchw"
    hw = size >> len(convs_per_block)
    feat = c_in * hw * hw
    out_classes = 1 if head == "sigmoid" else n_classes
    w_fc = rng.normal(0, np.sqrt(1.0 / feat), (feat, out_classes)).astype(np.float32)
    b_fc = rng.normal(0, 0.1, out_classes).astype(np.float32)
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["feat_nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"))
        inits.append(_init("flat_shape", np.array([-1, feat], dtype=np.int64)))
        nodes.append(helper.make_node("Reshape", ["feat_nhwc", "flat_shape"], ["flat"], name="flatten"))
        inits += [_init("predictions.w", w_fc), _init("predictions.b", b_fc)]
        nodes.append(helper.make_node("MatMul", ["flat", "predictions.w"], ["mm"], name="predictions/MatMul"))
        nodes.append(helper.make_node("Add", ["mm", "predictions.b"], ["z"], name="predictions/BiasAdd"))
    else:
        nodes.append(helper.make_node("Flatten", [x], ["flat"], name="/Flatten", axis=1))
        inits += [_init("fc.w", w_fc.T.copy()), _init("fc.b", b_fc)]
        nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["z"], name="/classifier/Gemm", transB=1))
    if head == "softmax":
        nodes.append(helper.make_node("Softmax", ["z"], [logits_name], name="predictions/Softmax", axis=1))
    elif head == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["z"], [logits_name], name="predictions/Sigmoid"))
    else:
        nodes.append(helper.make_node("Identity", ["z"], [logits_name], name="logits_id"))
    outputs = [helper.make_tensor_value_info(logits_name, TensorProto.FLOAT, [batch, out_classes])]
    if fam_outputs:
        inits.append(_init("axes_c", np.array([1], dtype=np.int64)))
        for layer, p in enumerate(pools, start=1):
            nodes.append(
                helper.make_node(
                    "ReduceSum", [p, "axes_c"], [f"fam{layer}"], name=f"fam{layer}_sum", keepdims=int(fam_keepdims)
                )
            )
            s = size >> layer
            shape = [batch, 1, s, s] if fam_keepdims else [batch, s, s]
            outputs.append(helper.make_tensor_value_info(f"fam{layer}", TensorProto.FLOAT, shape))
    if pool_outputs:
        for layer, p in enumerate(pools, start=1):
            nodes.append(helper.make_node("Identity", [p], [f"pool{layer}"], name=f"pool{layer}_id"))
            s = size >> layer
            outputs.append(
                helper.make_tensor_value_info(f"pool{layer}", TensorProto.FLOAT, [batch, width * layer, s, s])
            )
    graph = helper.make_graph(
        nodes,
        "keras_vgg" if keras_names else "torch_jit",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, in_shape)],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def resnet_like_graph(size: int = 64, width: int = 4, seed: int = 0) -> onnx.ModelProto:
    """Stem conv, one MaxPool, two residual blocks, GlobalAveragePool, Flatten, Gemm: not VGG-like."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def conv(name: str, x: str, c_in: int, c_out: int, stride: int = 1) -> str:
        inits.append(_init(f"{name}.w", rng.normal(0, 0.1, (c_out, c_in, 3, 3)).astype(np.float32)))
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.w"],
                [f"{name}.y"],
                name=name,
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[stride, stride],
            )
        )
        return f"{name}.y"

    x = conv("stem", "input", 3, width, stride=2)
    nodes.append(
        helper.make_node("MaxPool", [x], ["stem_pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    )
    x = "stem_pool"
    for i in range(2):
        y = conv(f"res{i}a", x, width, width)
        nodes.append(helper.make_node("Relu", [y], [f"res{i}r"]))
        y = conv(f"res{i}b", f"res{i}r", width, width)
        nodes.append(helper.make_node("Add", [x, y], [f"res{i}sum"]))
        x = f"res{i}sum"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    inits += [_init("fc.w", rng.normal(0, 0.1, (2, width)).astype(np.float32)), _init("fc.b", np.zeros(2, np.float32))]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "resnet_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def manifest_dict(
    size: int = 64,
    layout: str = "NCHW",
    color: str = "RGB",
    input_name: str = "input",
    logits: str = "logits",
    spider_index: int = 1,
    pools: bool = False,
) -> dict:
    data: dict = {
        "name": "tiny-vgg",
        "input": {
            "name": input_name,
            "size": size,
            "layout": layout,
            "color": color,
            "scale": 1 / 255,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "outputs": {"logits": logits, "fam": [f"fam{i}" for i in range(1, 6)]},
        "spider_index": spider_index,
        "fam_layer_scale": [1.0, 2.0, 3.0, 4.0, 5.0],
        "width": 16,
    }
    if pools:
        data["outputs"]["pool"] = [f"pool{i}" for i in range(1, 6)]
    return data


def write_model(dir_path: Path, model: onnx.ModelProto, manifest: dict | None, stem: str = "tiny") -> Path:
    path = dir_path / f"{stem}.onnx"
    onnx.save(model, str(path))
    if manifest is not None:
        (dir_path / f"{stem}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path
