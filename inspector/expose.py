"""Graph surgery: make any VGG16 ONNX honour the model contract (docs/ARCHITECTURE.md) — `logits`, `fam1..fam5`, a manifest.

Works on PyTorch exports (NCHW input, MaxPool nodes in sequence) and Keras/tf2onnx exports (NHWC input, Transpose
nodes, names like ``block1_pool``), with any classifier head:

1. Nodes are walked in topological order; the five pools are the MaxPool nodes before the first head node
   (Flatten, Reshape, Gemm, MatMul, global pooling). Not exactly five: refused, naming what was found. Conv counts
   per block other than VGG16's 2, 2, 3, 3, 3: a warning.
2. ``fam_l = ReduceSum(pool_l, axis=1, keepdims=0)``. ONNX's MaxPool is defined on (N, C, H, W), so axis 1 of the
   MaxPool's own output is the channel axis whatever the input layout (tf2onnx wraps NHWC pools in Transposes;
   we read the tensor between them). Optionally ``pool_l`` (N, C_l, H_l, W_l) is exposed raw.
3. The classifier output becomes ``logits``: an Identity to it; when the graph ends in Softmax/LogSoftmax, the
   softmax's input is used; a one-unit head (a Sigmoid or a single logit z) becomes two-class logits ``[0, z]`` so
   ``softmax(logits)[:, 1] == sigmoid(z)``.
4. Outputs are replaced by the contract's; nodes and initializers nothing needs any more are dropped.

Needs the `onnx` package (the dev/train extras, not a runtime dependency); imported lazily.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from pydantic import ValidationError

from inspector.errors import ModelError
from inspector.model import Manifest, ManifestInput, ManifestOutputs
from inspector.yamlload import problems_in_words

log = logging.getLogger(__name__)

VGG16_CONVS = (2, 2, 3, 3, 3)
HEAD_OPS = frozenset(
    {"Flatten", "Reshape", "Gemm", "MatMul", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"}
)
PRESETS: dict[str, dict[str, Any]] = {
    "torchvision": {
        "color": "RGB",
        "scale": 1 / 255,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    },
    "keras-caffe": {
        "color": "BGR",
        "scale": 1.0,
        "mean": (103.939, 116.779, 123.68),
        "std": (1.0, 1.0, 1.0),
    },
}
FAM_NAMES = tuple(f"fam{i}" for i in range(1, 6))
POOL_NAMES = tuple(f"pool{i}" for i in range(1, 6))


def import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError:
        raise ModelError(
            "the onnx package is needed to expose pool outputs (it is not a runtime dependency): "
            "pip install 'grape-spider-inspector[dev]' or pip install onnx"
        ) from None
    return onnx


# --------------------------------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class PoolBlock:
    node: str  # MaxPool node name (or its output when unnamed)
    tensor: str  # MaxPool output (N, C, H, W)
    convs: int  # Conv nodes since the previous pool
    channels: int | None  # output channels of the block's last conv, when its weight is an initializer


@dataclass
class VggGraph:
    input_name: str
    size: int
    layout: str  # NCHW | NHWC
    batch_dim: str | int
    elem_type: int
    pools: tuple[PoolBlock, ...]
    logits_src: str  # tensor the logits come from
    head: str  # identity | softmax | logsoftmax | sigmoid (one unit + Sigmoid) | binary (one raw logit)
    original_output: str
    n_classes: int | None
    width: float | list[float] | None  # VGG16's channels over the graph's: one divisor, or one per block
    warnings: list[str] = field(default_factory=list)


def _topo_order(graph: Any) -> list[Any]:
    """Nodes in topological order (Kahn, stable: ties keep file order)."""
    produced_by: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for out in node.output:
            if out:
                produced_by[out] = i
    deps: list[set[int]] = []
    users: dict[int, list[int]] = {i: [] for i in range(len(graph.node))}
    for i, node in enumerate(graph.node):
        d = {produced_by[t] for t in node.input if t in produced_by and produced_by[t] != i}
        deps.append(d)
        for j in d:
            users[j].append(i)
    ready = deque(i for i, d in enumerate(deps) if not d)
    remaining = [len(d) for d in deps]
    order: list[int] = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for u in sorted(users[i]):
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
    if len(order) != len(graph.node):
        raise ModelError("the graph has a cycle; it is not a valid ONNX model")
    return [graph.node[i] for i in order]


def _dims(value_info: Any) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(str(d.dim_param))
        else:
            out.append(None)
    return out


@dataclass(frozen=True)
class _Input:
    name: str
    dims: list[int | str | None]
    layout: str  # NCHW | NHWC
    size: int
    elem_type: int  # ONNX TensorProto element type


@dataclass(frozen=True)
class _Logits:
    tensor: str  # the tensor the contract's logits come from
    original: str  # the graph output named (or chosen) as the classifier's
    head: str  # identity | softmax | logsoftmax | sigmoid | binary
    n_classes: int | None
    shapes: dict[str, list[int | str | None]]  # inferred shapes of every value, for the pool checks
    warnings: list[str]


def _find_input(graph: Any, nodes: list[Any], inits: dict[str, Any], path: Path, size: int | None) -> _Input:
    """The one image input, its layout (NCHW or NHWC) and its square side in pixels."""
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"{path}: expected one image input, found {[i.name for i in inputs]}")
    inp = inputs[0]
    dims = _dims(inp)
    if len(dims) != 4:
        raise ModelError(f"{path}: input {inp.name!r} has rank {len(dims)}, expected 4 (an image batch)")
    consumers = [n for n in nodes if inp.name in n.input]
    if dims[1] == 3 and dims[3] != 3:
        layout = "NCHW"
    elif (dims[3] == 3 and dims[1] != 3) or (consumers and consumers[0].op_type == "Transpose"):
        layout = "NHWC"
    else:
        layout = "NCHW"
    hw = dims[2:4] if layout == "NCHW" else dims[1:3]
    static = [d for d in hw if isinstance(d, int)]
    if size is None:
        if len(static) != 2 or static[0] != static[1]:
            raise ModelError(f"{path}: input {inp.name!r} has shape {dims}; give the square input size with --size")
        size = static[0]
    elif static and any(d != size for d in static):
        raise ModelError(f"{path}: --size {size} contradicts the input shape {dims}")
    if size < 32:
        raise ModelError(f"{path}: input size {size} is below 32 px: five 2x2 poolings need at least 32; use --size")
    return _Input(inp.name, dims, layout, size, int(inp.type.tensor_type.elem_type))


def _find_pools(nodes: list[Any], inits: dict[str, Any], path: Path) -> tuple[list[PoolBlock], list[str]]:
    """The five MaxPool blocks before the classifier head (refused otherwise), and warnings about their convs."""
    pools: list[PoolBlock] = []
    convs_since, n_convs, last_channels = 0, 0, None
    head_node = None
    for node in nodes:
        if node.op_type in HEAD_OPS:
            head_node = node
            break
        if node.op_type == "Conv":
            convs_since += 1
            n_convs += 1
            w = inits.get(node.input[1]) if len(node.input) > 1 else None
            last_channels = int(w.dims[0]) if w is not None else None
        elif node.op_type == "MaxPool":
            pools.append(PoolBlock(node.name or node.output[0], node.output[0], convs_since, last_channels))
            convs_since = 0
    total_pools = sum(1 for n in nodes if n.op_type == "MaxPool")
    if len(pools) != 5:
        where = (
            f"before the classifier head ({head_node.op_type} {head_node.name or head_node.output[0]!r})"
            if head_node
            else "in the graph"
        )
        raise ModelError(
            f"{path}: not a VGG-like graph: found {len(pools)} MaxPool node(s) {where} ({total_pools} in all) and "
            f"{n_convs} Conv node(s); expected 5 max-pools (one per VGG block). Only VGG16-style models are supported"
        )
    counts = tuple(p.convs for p in pools)
    if counts != VGG16_CONVS:
        return pools, [f"conv counts per block are {list(counts)}, VGG16 has {list(VGG16_CONVS)}; exposing anyway"]
    return pools, []


def _first_conv_channels(nodes: list[Any], inits: dict[str, Any], head_at: int) -> int | None:
    """Output channels of the first Conv before the head whose weight is an initializer."""
    for node in nodes[:head_at]:
        w = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if w is not None:
            return int(w.dims[0])
    return None


def _find_logits(model: Any, nodes: list[Any], path: Path, logits: str | None) -> _Logits:
    """The classifier output (by name, or the only output), traced back through Identity/Softmax/Sigmoid."""
    onnx = import_onnx()
    outputs = [o.name for o in model.graph.output]
    if logits is None:
        if len(outputs) == 1:
            logits = outputs[0]
        elif "logits" in outputs:
            logits = "logits"
        else:
            raise ModelError(f"{path}: several outputs {outputs}; name the classifier's with --logits")
    original = logits
    producer = {o: n for n in nodes for o in n.output}
    if logits not in producer:
        raise ModelError(f"{path}: --logits {logits!r} is not a tensor computed by the graph (outputs: {outputs})")
    warnings: list[str] = []
    head = "identity"
    while logits in producer and producer[logits].op_type == "Identity":
        logits = producer[logits].input[0]
    if logits in producer and producer[logits].op_type in ("Softmax", "LogSoftmax"):
        warnings.append(f"{original!r} is a {producer[logits].op_type} output; using its input as logits")
        head = producer[logits].op_type.lower()
        logits = producer[logits].input[0]
    sigmoid = logits in producer and producer[logits].op_type == "Sigmoid"
    if sigmoid:
        logits = producer[logits].input[0]
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: _dims(v) for v in (*inferred.graph.value_info, *inferred.graph.output)}
    logits_dims = shapes.get(logits)
    n_classes = logits_dims[1] if logits_dims and len(logits_dims) == 2 and isinstance(logits_dims[1], int) else None
    if sigmoid or n_classes == 1:
        warnings.append(f"one-unit head on {logits!r}: exposing two-class logits [0, z] (class 1 = sigmoid(z))")
        head, n_classes = ("sigmoid" if sigmoid else "binary"), 2
    elif logits_dims is not None and len(logits_dims) != 2:
        raise ModelError(f"{path}: logits tensor {logits!r} has shape {logits_dims}, expected (N, classes)")
    return _Logits(logits, original, head, n_classes, shapes, warnings)


def _pool_shape_warnings(pools: list[PoolBlock], shapes: dict[str, list[int | str | None]], size: int) -> list[str]:
    """A warning for every pool whose inferred shape is not (N, its block's channels, size/2^l, size/2^l)."""
    warnings = []
    for layer, p in enumerate(pools, start=1):
        pd = shapes.get(p.tensor)
        want = size >> layer
        if (
            pd
            and len(pd) == 4
            and (
                (p.channels is not None and pd[1] not in (p.channels, None) and isinstance(pd[1], int))
                or any(isinstance(d, int) and d != want for d in pd[2:])
            )
        ):
            warnings.append(
                f"pool{layer} {p.node!r} has inferred shape {pd}, expected (N, {p.channels}, {want}, {want})"
            )
    return warnings


def _width(pools: list[PoolBlock], first_channels: int | None) -> float | list[float] | None:
    """VGG16's channels over the graph's: one divisor, or one per block when they differ."""
    width: float | list[float] | None = 64 / first_channels if first_channels else None
    per_block = [p.channels for p in pools]
    if len(per_block) == 5 and all(per_block):
        divisors = [c / float(ch) for c, ch in zip((64, 128, 256, 512, 512), per_block, strict=True) if ch]
        width = divisors[0] if len(set(divisors)) == 1 else divisors
    return width


def analyse(
    model: Any, path: Path, logits: str | None = None, size: int | None = None
) -> VggGraph:  # model: onnx.ModelProto
    """Find input, layout, the five pools and the logits tensor; refuse graphs that are not VGG-like."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = _topo_order(graph)
    inp = _find_input(graph, nodes, inits, path, size)
    pools, pool_warnings = _find_pools(nodes, inits, path)
    head_at = next((i for i, n in enumerate(nodes) if n.op_type in HEAD_OPS), len(nodes))
    found = _find_logits(model, nodes, path, logits)
    return VggGraph(
        input_name=inp.name,
        size=inp.size,
        layout=inp.layout,
        batch_dim=inp.dims[0] if inp.dims[0] is not None else "N",
        elem_type=inp.elem_type,
        pools=tuple(pools),
        logits_src=found.tensor,
        head=found.head,
        original_output=found.original,
        n_classes=found.n_classes,
        width=_width(pools, _first_conv_channels(nodes, inits, head_at)),
        warnings=[*pool_warnings, *found.warnings, *_pool_shape_warnings(pools, found.shapes, inp.size)],
    )


# --------------------------------------------------------------------------------------------- surgery
def _rename(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for seq in (node.input, node.output):
            for i, t in enumerate(seq):
                if t == old:
                    seq[i] = new
    for v in (*graph.output, *graph.value_info):
        if v.name == old:
            v.name = new


def _prune(graph: Any) -> None:
    """Drop nodes no graph output depends on, and initializers no node uses."""
    needed = {o.name for o in graph.output}
    keep: list[Any] = []
    for node in reversed(_topo_order(graph)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(t for t in node.input if t)
    keep_ids = {id(n) for n in keep}
    kept_nodes = [n for n in graph.node if id(n) in keep_ids]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    used_inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used_inits)
    vis = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(vis)


def expose_model(model: Any, g: VggGraph, pools: bool = False) -> Any:
    """A copy of `model` whose outputs are logits, fam1..fam5 (and pool1..pool5 with `pools`)."""
    onnx = import_onnx()
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    targets = {"logits": g.logits_src} | {f: p.tensor for f, p in zip(FAM_NAMES, g.pools, strict=True)}
    if pools:
        targets |= {n: p.tensor for n, p in zip(POOL_NAMES, g.pools, strict=True)}
    existing = {t for n in graph.node for t in (*n.input, *n.output)} | {i.name for i in graph.input}
    taken = existing | {t.name for t in graph.initializer}
    for name in targets:
        keep_logits = name == "logits" and g.logits_src == "logits" and g.head not in ("sigmoid", "binary")
        if name in existing and not keep_logits:
            new = f"{name}__orig"
            while new in taken:
                new += "_"
            _rename(graph, name, new)
            targets = {k: (new if v == name else v) for k, v in targets.items()}
            taken.add(new)
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 13)
    new_nodes = []
    if g.head in ("sigmoid", "binary"):
        z = targets["logits"]
        new_nodes += [
            helper.make_node("Sub", [z, z], ["expose_zero"], name="expose_zero"),
            helper.make_node("Concat", ["expose_zero", z], ["logits"], name="expose_logits", axis=1),
        ]
    elif targets["logits"] != "logits":
        new_nodes.append(helper.make_node("Identity", [targets["logits"]], ["logits"], name="expose_logits"))
    if opset >= 13:
        graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "expose_channel_axis"))
    for layer, name in enumerate(FAM_NAMES):
        src = targets[name]
        if opset >= 13:
            node = helper.make_node(
                "ReduceSum", [src, "expose_channel_axis"], [name], name=f"expose_{name}", keepdims=0
            )
        else:
            node = helper.make_node("ReduceSum", [src], [name], name=f"expose_{name}", axes=[1], keepdims=0)
        new_nodes.append(node)
        if pools:
            new_nodes.append(helper.make_node("Identity", [src], [POOL_NAMES[layer]], name=f"expose_pool{layer + 1}"))
    graph.node.extend(new_nodes)
    b = g.batch_dim
    new_outputs = [helper.make_tensor_value_info("logits", g.elem_type, [b, g.n_classes])]
    for layer, name in enumerate(FAM_NAMES, start=1):
        s = g.size >> layer
        new_outputs.append(helper.make_tensor_value_info(name, g.elem_type, [b, s, s]))
    if pools:
        for layer, (name, p) in enumerate(zip(POOL_NAMES, g.pools, strict=True), start=1):
            s = g.size >> layer
            new_outputs.append(helper.make_tensor_value_info(name, g.elem_type, [b, p.channels, s, s]))
    del graph.output[:]
    graph.output.extend(new_outputs)
    _prune(graph)
    try:
        onnx.checker.check_model(out)
    except Exception as exc:
        raise ModelError(f"the exposed graph does not pass the ONNX checker: {str(exc).splitlines()[0]}") from None
    return out


# --------------------------------------------------------------------------------------------- file level
@dataclass
class ExposeReport:
    manifest: Manifest
    graph: VggGraph
    onnx_path: Path
    manifest_path: Path
    parity: dict[str, float] = field(default_factory=dict)  # max abs differences from the verification run


def normalisation(
    preset: str | None,
    color: str | None = None,
    scale: float | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> dict[str, Any]:
    """Colour/normalisation from a preset, overridden by explicit values; all four must end up known."""
    if preset is not None and preset not in PRESETS:
        raise ModelError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    base = dict(PRESETS[preset]) if preset else {}
    for key, value in (("color", color), ("scale", scale), ("mean", mean), ("std", std)):
        if value is not None:
            base[key] = value
    missing = [k for k in ("color", "scale", "mean", "std") if k not in base]
    if missing:
        raise ModelError(
            f"input normalisation unknown ({', '.join(missing)}): give --preset torchvision (PyTorch models) or "
            "--preset keras-caffe (Keras VGG16), or --color/--scale/--mean/--std"
        )
    return base


def expose_file(
    in_path: Path,
    out_path: Path,
    norm: dict[str, Any],
    spider_index: int = 1,
    name: str | None = None,
    pools: bool = False,
    logits: str | None = None,
    size: int | None = None,
    verify: bool = True,
) -> ExposeReport:
    """Read IN.onnx, expose the contract's outputs, write OUT.onnx + OUT.yaml; verify with onnxruntime."""
    onnx = import_onnx()
    if not in_path.is_file():
        raise ModelError(f"{in_path}: model file not found; give the path of an existing .onnx file")
    if out_path.resolve() == in_path.resolve():
        raise ModelError(f"{out_path}: output would overwrite the input; give another output path")
    try:
        model = onnx.load(str(in_path))
    except Exception as exc:
        raise ModelError(f"{in_path}: not a readable ONNX file ({str(exc).splitlines()[0]})") from None
    g = analyse(model, in_path, logits=logits, size=size)
    exposed = expose_model(model, g, pools=pools)
    if g.n_classes is not None and spider_index >= g.n_classes:
        raise ModelError(f"--spider-index {spider_index} is out of range for {g.n_classes} classes")
    try:
        manifest = _manifest(g, norm, spider_index, name or out_path.stem, pools, in_path.name)
    except ValidationError as exc:
        problems = "; ".join(problems_in_words(exc))
        raise ModelError(f"invalid manifest values for {out_path.name}: {problems}") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(exposed, str(out_path))
    yaml_path = out_path.with_suffix(".yaml")
    yaml_path.write_text(manifest.to_yaml(), encoding="utf-8")
    report = ExposeReport(manifest, g, out_path, yaml_path)
    if verify:
        report.parity = verify_exposed(in_path, out_path, g, pools)
    return report


def _manifest(g: VggGraph, norm: dict[str, Any], spider_index: int, name: str, pools: bool, src: str) -> Manifest:
    width = g.width if isinstance(g.width, list) or (g.width and g.width >= 1) else None
    return Manifest(
        name=name,
        input=ManifestInput(
            name=g.input_name,
            size=g.size,
            layout=g.layout,
            color=norm["color"],
            scale=norm["scale"],
            mean=tuple(norm["mean"]),
            std=tuple(norm["std"]),
        ),
        outputs=ManifestOutputs(logits="logits", fam=FAM_NAMES, pool=POOL_NAMES if pools else None),
        spider_index=spider_index,
        fam_layer_scale=(1.0, 1.0, 1.0, 1.0, 1.0),
        width=width,
        description=f"exposed from {src} ({g.layout}, head: {g.head}) by inspector model expose",
    )


def verify_exposed(in_path: Path, out_path: Path, g: VggGraph, pools: bool, n: int = 2) -> dict[str, float]:
    """Load OUT through `Model` (all contract checks) and compare with IN on random tiles: max abs differences."""
    from inspector.model import Model, import_onnxruntime

    ort = import_onnxruntime()
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (n, g.size, g.size, 3), dtype=np.uint8)
    with Model(out_path, providers=["cpu"], batch_size=n) as model:
        res = model.infer(tiles)
        x = model.preprocess(tiles)
        pool_arrays = model.pools(tiles) if pools else []
    sess = ort.InferenceSession(str(in_path), providers=["CPUExecutionProvider"])
    in_type = sess.get_inputs()[0].type
    feed = x.astype(np.float16) if in_type == "tensor(float16)" else x
    (orig,) = sess.run([g.original_output], {g.input_name: feed})
    orig = np.asarray(orig, dtype=np.float32)
    z = res.logits.astype(np.float64) - res.logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    mine = {
        "softmax": np.exp(log_p),
        "logsoftmax": log_p,
        "sigmoid": np.exp(log_p[:, 1:2]),
        "binary": res.logits[:, 1:2],
    }.get(g.head, res.logits)
    parity = {"original_output": float(np.abs(mine - orig.reshape(mine.shape)).max())}
    for layer, (fam, pool) in enumerate(zip(res.fams, pool_arrays, strict=False), start=1):
        parity[f"fam{layer}_vs_pool{layer}_sum"] = float(np.abs(fam - pool.astype(np.float32).sum(axis=1)).max())
    return parity
