"""expose: any VGG16 ONNX (PyTorch NCHW, Keras/tf2onnx NHWC, any head) gets logits + fam1..fam5 + a manifest."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inspector.cli import main as cli_main
from inspector.errors import ModelError
from inspector.expose import PRESETS, expose_file, normalisation
from inspector.fam import tile_fam
from inspector.model import Model, load_manifest
from tests.vgg_graphs import resnet_like_graph, vgg_graph

VGG16_BLOCKS = (2, 2, 3, 3, 3)
TV = normalisation("torchvision")
KERAS = normalisation("keras-caffe")


def tiles(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def save(tmp_path: Path, model: onnx.ModelProto, stem: str = "in") -> Path:
    path = tmp_path / f"{stem}.onnx"
    onnx.save(model, str(path))
    return path


def run_original(path: Path, output: str, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run([output], {sess.get_inputs()[0].name: x})[0])


def assert_fams_are_pool_sums(model: Model, batch: np.ndarray) -> None:
    res = model.infer(batch)
    pools = model.pools(batch)
    assert len(pools) == 5
    for layer, (fam, pool) in enumerate(zip(res.fams, pools, strict=True), start=1):
        s = model.manifest.input.size >> layer
        assert fam.shape == (len(batch), s, s) and pool.shape[2:] == (s, s)
        np.testing.assert_allclose(fam, pool.sum(axis=1), rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------------------------- PyTorch export
@pytest.mark.parametrize(
    ("width", "channels", "manifest_width"),
    [(16, (4, 8, 16, 32, 32), 16), ((16, 16, 16, 8, 8), (4, 8, 16, 64, 64), [16, 16, 16, 8, 8])],
)
def test_pytorch_exported_vgg16(
    tmp_path: Path, width: int | tuple[int, ...], channels: tuple[int, ...], manifest_width: object
) -> None:
    pytest.importorskip("torch")
    import torch

    from inspector.training import vgg

    torch.manual_seed(0)
    net = vgg.VGG16(width=width).eval()

    class LogitsOnly(torch.nn.Module):  # a plain classifier export: no fam outputs
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.head(self.net.pools(x)[-1])

    src = tmp_path / "vgg16_w16.onnx"
    torch.onnx.export(
        LogitsOnly().eval(),
        (torch.zeros(1, 3, 224, 224),),
        str(src),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
        dynamo=False,
    )
    assert [o.name for o in onnx.load(str(src)).graph.output] == ["output"]
    out = tmp_path / "exposed.onnx"
    report = expose_file(src, out, TV, pools=True)
    g = report.graph
    assert (g.layout, g.size, g.head) == ("NCHW", 224, "identity")
    assert tuple(p.convs for p in g.pools) == VGG16_BLOCKS and not g.warnings
    assert tuple(p.channels for p in g.pools) == channels
    assert report.parity["original_output"] < 1e-4
    m = load_manifest(out)
    assert m.width == manifest_width and m.input.color == "RGB" and m.input.mean == PRESETS["torchvision"]["mean"]
    batch = tiles(3, 224)
    with Model(out, batch_size=2) as model:
        assert_fams_are_pool_sums(model, batch)
        res = model.infer(batch)
        x = torch.from_numpy(model.preprocess(batch))
    with torch.no_grad():
        logits_t = net.head(net.pools(x)[-1]).numpy()
        pools_t = [p.numpy() for p in net.pools(x)]
    np.testing.assert_allclose(res.logits, logits_t, rtol=1e-4, atol=1e-4)
    for fam, pool in zip(res.fams, pools_t, strict=True):
        np.testing.assert_allclose(fam, pool.sum(axis=1), rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------------------------- Keras / tf2onnx
@pytest.mark.parametrize("transpose_each_block", [False, True])
def test_keras_style_nhwc_graph(tmp_path: Path, transpose_each_block: bool) -> None:
    src = save(
        tmp_path,
        vgg_graph(
            size=64,
            convs_per_block=VGG16_BLOCKS,
            layout="NHWC",
            keras_names=True,
            transpose_each_block=transpose_each_block,
            fam_outputs=False,
            head="softmax",
            input_name="input_1",
            logits_name="predictions",
        ),
    )
    out = tmp_path / "k.onnx"
    report = expose_file(src, out, KERAS, pools=True, spider_index=0)
    g = report.graph
    assert (g.layout, g.input_name, g.head) == ("NHWC", "input_1", "softmax")
    assert [p.node for p in g.pools] == [f"block{i}_pool" for i in range(1, 6)]
    assert report.parity["original_output"] < 1e-5
    m = load_manifest(out)
    assert (m.input.layout, m.input.color, m.input.scale, m.spider_index) == ("NHWC", "BGR", 1.0, 0)
    assert m.input.mean == (103.939, 116.779, 123.68)
    batch = tiles(5, 64, seed=2)
    with Model(out, batch_size=4) as model:
        assert_fams_are_pool_sums(model, batch)
        res = model.infer(batch)
        # the softmax the Keras model ended with is what the manifest's spider_prob computes
        probs = run_original(src, "predictions", model.preprocess(batch))
    np.testing.assert_allclose(res.spider_prob, probs[:, 0], rtol=1e-5, atol=1e-6)


def test_sigmoid_head_becomes_two_class_logits(tmp_path: Path) -> None:
    src = save(
        tmp_path,
        vgg_graph(size=64, layout="NHWC", keras_names=True, fam_outputs=False, head="sigmoid", logits_name="out"),
    )
    out = tmp_path / "s.onnx"
    report = expose_file(src, out, KERAS)
    assert report.graph.head == "sigmoid" and report.graph.n_classes == 2
    assert any("conv counts per block are [1, 1, 1, 1, 1]" in w for w in report.graph.warnings)
    batch = tiles(3, 64, seed=4)
    with Model(out) as model:
        res = model.infer(batch)
        sig = run_original(src, "out", model.preprocess(batch))
    assert res.logits.shape == (3, 2)
    np.testing.assert_allclose(res.spider_prob, sig[:, 0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- refusals, edge cases
def test_resnet_like_graph_is_refused(tmp_path: Path) -> None:
    src = save(tmp_path, resnet_like_graph())
    with pytest.raises(
        ModelError,
        match=r"not a VGG-like graph: found 1 MaxPool node\(s\) before the classifier head "
        r"\(GlobalAveragePool.*5 Conv node\(s\); expected 5 max-pools",
    ) as exc:
        expose_file(src, tmp_path / "out.onnx", TV)
    assert "\n" not in str(exc.value) and str(src) in str(exc.value)
    assert not (tmp_path / "out.onnx").exists()


def test_four_pools_are_refused(tmp_path: Path) -> None:
    src = save(tmp_path, vgg_graph(size=64, convs_per_block=(1, 1, 1, 1), fam_outputs=False))
    with pytest.raises(ModelError, match=r"found 4 MaxPool node\(s\) before the classifier head \(Flatten"):
        expose_file(src, tmp_path / "out.onnx", TV)


def test_several_outputs_need_logits_flag(tmp_path: Path) -> None:
    src = save(tmp_path, vgg_graph(size=64, logits_name="scores", pool_outputs=True))
    with pytest.raises(ModelError, match=r"several outputs .*'scores'.*--logits"):
        expose_file(src, tmp_path / "out.onnx", TV)
    report = expose_file(src, tmp_path / "out.onnx", TV, logits="scores")
    assert report.parity["original_output"] == 0.0
    with Model(tmp_path / "out.onnx") as model:
        assert model.num_classes == 2


def test_reexposing_an_exposed_model(tmp_path: Path) -> None:
    """A graph already holding fam*/pool*/logits names: the old tensors are renamed, the result is the same."""
    src = save(tmp_path, vgg_graph(size=64, pool_outputs=True))
    report = expose_file(src, tmp_path / "again.onnx", TV, logits="logits", pools=True)
    assert report.parity["original_output"] == 0.0
    exposed = onnx.load(str(tmp_path / "again.onnx"))
    assert [o.name for o in exposed.graph.output] == ["logits"] + [f"fam{i}" for i in range(1, 6)] + [
        f"pool{i}" for i in range(1, 6)
    ]
    with Model(tmp_path / "again.onnx") as model:
        assert_fams_are_pool_sums(model, tiles(2, 64))


def test_dead_nodes_are_pruned(tmp_path: Path) -> None:
    src = save(tmp_path, vgg_graph(size=64, head="softmax", fam_outputs=False))
    expose_file(src, tmp_path / "out.onnx", TV)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node]
    assert "Softmax" not in ops and ops.count("ReduceSum") == 5


def test_normalisation_presets_and_overrides() -> None:
    assert normalisation("keras-caffe")["color"] == "BGR"
    assert normalisation("torchvision", color="BGR")["color"] == "BGR"
    full = normalisation(None, color="RGB", scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert full["scale"] == 1.0
    with pytest.raises(ModelError, match=r"normalisation unknown \(scale, mean, std\).*--preset torchvision"):
        normalisation(None, color="RGB")


def test_output_must_differ_from_input(tmp_path: Path) -> None:
    src = save(tmp_path, vgg_graph(size=64, fam_outputs=False))
    with pytest.raises(ModelError, match="would overwrite the input"):
        expose_file(src, src, TV)


def test_onnx_package_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = save(tmp_path, vgg_graph(size=64, fam_outputs=False))
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ModelError, match=r"the onnx package is needed .*pip install"):
        expose_file(src, tmp_path / "out.onnx", TV)


# --------------------------------------------------------------------------------------------- command line
def test_cli_expose_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save(tmp_path, vgg_graph(size=64, convs_per_block=VGG16_BLOCKS, fam_outputs=False))
    out = tmp_path / "cli.onnx"
    rc = cli_main(["model", "expose", str(src), str(out), "--preset", "torchvision", "--scale", "1/255", "--name", "x"])
    text = capsys.readouterr().out
    assert rc == 0 and "pool5: '/features.30/MaxPool' after 3 conv(s)" in text and "max abs diff" in text
    assert load_manifest(out).name == "x"
    assert cli_main(["model", "info", str(out), "--providers", "cpu", "--run", "--batch-size", "2"]) == 0
    text = capsys.readouterr().out
    assert "provider: CPUExecutionProvider" in text and "fam5 (2, 2, 2)" in text and "output  logits" in text
    rc = cli_main(["model", "expose", str(src), str(tmp_path / "y.onnx")])
    assert rc == 1 and "--preset torchvision" in capsys.readouterr().err


def test_cli_expose_refuses_non_vgg_and_takes_keras_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save(tmp_path, resnet_like_graph())
    assert cli_main(["model", "expose", str(src), str(tmp_path / "o.onnx"), "--preset", "torchvision"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inspector: error: ") and "not a VGG-like graph" in err and "Traceback" not in err
    src = save(tmp_path, vgg_graph(size=64, fam_outputs=False), stem="v")
    assert (
        cli_main(["model", "expose", str(src), str(tmp_path / "o.onnx"), "--preset", "keras-caffe", "--no-verify"]) == 0
    )
    assert load_manifest(tmp_path / "o.onnx").input.color == "BGR"


# --------------------------------------------------------------------------------------------- any input size
@pytest.mark.parametrize("size", [224, 240, 250])
@pytest.mark.parametrize("style", ["pytorch", "keras"])
def test_any_square_input_from_32_px_is_exposed_and_runs(tmp_path: Path, style: str, size: int) -> None:
    """Keras and PyTorch VGG16 take any input >= 32 px; pooling floors odd sizes (240: 120, 60, 30, 15, 7;
    250: 125, 62, 31, 15, 7). Keras: NHWC, a Transpose pair per block, Dense head ending in Softmax."""
    keras = style == "keras"
    src = save(
        tmp_path,
        vgg_graph(
            size=size,
            width=2,
            convs_per_block=VGG16_BLOCKS,
            layout="NHWC" if keras else "NCHW",
            keras_names=keras,
            transpose_each_block=keras,
            fam_outputs=False,
            head="softmax" if keras else "gemm",
            input_name="input_1" if keras else "input",
            logits_name="predictions" if keras else "output",
        ),
    )
    out = tmp_path / "exposed.onnx"
    report = expose_file(src, out, KERAS if keras else TV, pools=True)
    g = report.graph
    assert (g.size, g.layout, g.head) == (size, "NHWC" if keras else "NCHW", "softmax" if keras else "identity")
    assert not any("inferred shape" in w for w in g.warnings), g.warnings  # the floored pool shapes are expected
    assert report.parity["original_output"] < 1e-4
    m = load_manifest(out)
    assert m.input.size == size and [m.fam_hw(layer) for layer in range(1, 6)] == [size >> k for k in range(1, 6)]
    batch = tiles(3, size, seed=size)
    with Model(out, batch_size=2) as model:
        assert_fams_are_pool_sums(model, batch)
        res = model.infer(batch)
        original = run_original(src, "predictions" if keras else "output", model.preprocess(batch))
    assert [f.shape[1:] for f in res.fams] == [(size >> k, size >> k) for k in range(1, 6)]
    if keras:  # the manifest's softmax is the one the model ended with
        np.testing.assert_allclose(res.spider_prob, original[:, 1], rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(res.logits, original, rtol=1e-4, atol=1e-4)
    heat = tile_fam(list(res.fams), 56, "paper", input_size=size)
    assert heat.shape == (3, 56, 56) and np.isfinite(heat).all()


def _dynamic_hw(model: onnx.ModelProto) -> onnx.ModelProto:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims[2:], ("H", "W"), strict=True):
        d.dim_param = name
    return model


def test_an_input_below_32_px_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save(tmp_path, _dynamic_hw(vgg_graph(size=64, fam_outputs=False)))
    with pytest.raises(ModelError, match="input size 16 is below 32 px"):
        expose_file(src, tmp_path / "small.onnx", TV, size=16)
    status = cli_main(["model", "expose", str(src), str(tmp_path / "o.onnx"), "--preset", "torchvision", "--size", "31"])
    err = capsys.readouterr().err
    assert status == 1 and "input size 31 is below 32 px" in err and len(err.strip().splitlines()) == 1
    # the control: the same graph at 33 px, the smallest odd size five poolings allow
    report = expose_file(src, tmp_path / "ok.onnx", TV, size=33, verify=False)
    assert report.manifest.input.size == 33


def test_bad_normalisation_values_are_said_in_plain_words(tmp_path: Path) -> None:
    src = save(tmp_path, vgg_graph(size=64, fam_outputs=False))
    norm = normalisation("torchvision", scale=0.0, std=(0.2, -1.0, 0.2))
    with pytest.raises(ModelError) as err:
        expose_file(src, tmp_path / "o.onnx", norm)
    message = str(err.value)
    assert "scale: must be greater than 0; got 0.0" in message
    assert "std.1: must be greater than 0; got -1.0" in message
    assert "Input should" not in message and "\n" not in message
