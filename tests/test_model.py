"""Model contract: manifest validation, graph checks, provider read-back, preprocessing, batched inference."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from inspector.errors import ModelError
from inspector.model import Inference, Manifest, Model, choose_providers, load_manifest, preprocess, softmax_prob
from tests.vgg_graphs import manifest_dict, vgg_graph, write_model

SIZE = 64


def tiles(n: int, size: int = SIZE, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return write_model(tmp_path, vgg_graph(size=SIZE, pool_outputs=True), manifest_dict(size=SIZE, pools=True))


# --------------------------------------------------------------------------------------------- happy path
def test_infer_shapes_probabilities_and_fams_are_channel_sums(tiny: Path) -> None:
    with Model(tiny, providers=["cpu"], batch_size=3) as model:
        assert model.provider == "CPUExecutionProvider"
        assert model.num_classes == 2
        batch = tiles(7)
        out = model.infer(batch)
        assert isinstance(out, Inference) and len(out) == 7
        assert out.logits.shape == (7, 2) and out.logits.dtype == np.float32
        assert [f.shape for f in out.fams] == [(7, SIZE >> k, SIZE >> k) for k in range(1, 6)]
        assert all(f.dtype == np.float32 for f in out.fams)
        e = np.exp(out.logits - out.logits.max(axis=1, keepdims=True))
        np.testing.assert_allclose(out.spider_prob, e[:, 1] / e.sum(axis=1), rtol=1e-5)
        pools = model.pools(batch)
        for fam, pool in zip(out.fams, pools, strict=True):
            np.testing.assert_allclose(fam, pool.sum(axis=1), rtol=1e-4, atol=1e-4)


def test_batching_does_not_change_results(tiny: Path) -> None:
    batch = tiles(5, seed=3)
    with Model(tiny, batch_size=2) as small, Model(tiny, batch_size=16) as big:
        a, b = small.infer(batch), big.infer(batch)
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    for fa, fb in zip(a.fams, b.fams, strict=True):
        np.testing.assert_allclose(fa, fb, rtol=1e-5, atol=1e-4)
    # tiles are independent: tile 3 alone gives what it gave inside the batch
    with Model(tiny) as model:
        single = model.infer(batch[3:4])
    np.testing.assert_allclose(single.logits[0], a.logits[3], rtol=1e-5, atol=1e-5)


def test_empty_batch(tiny: Path) -> None:
    with Model(tiny) as model:
        out = model.infer(np.zeros((0, SIZE, SIZE, 3), np.uint8))
    assert out.logits.shape == (0, 2) and out.spider_prob.shape == (0,)
    assert [f.shape for f in out.fams] == [(0, SIZE >> k, SIZE >> k) for k in range(1, 6)]


def test_fixed_batch_graph_is_padded(tmp_path: Path) -> None:
    fixed = write_model(tmp_path, vgg_graph(size=SIZE, batch=4), manifest_dict(size=SIZE), stem="fixed")
    dyn = write_model(tmp_path, vgg_graph(size=SIZE), manifest_dict(size=SIZE), stem="dyn")
    batch = tiles(5, seed=4)
    with Model(fixed, batch_size=16) as m_fixed, Model(dyn) as m_dyn:
        assert m_fixed.batch_size == 4
        a, b = m_fixed.infer(batch), m_dyn.infer(batch)
    assert a.logits.shape == (5, 2)
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)


def test_nhwc_model_matches_nchw_model(tmp_path: Path) -> None:
    nchw = write_model(tmp_path, vgg_graph(size=SIZE, seed=7), manifest_dict(size=SIZE), stem="a")
    nhwc = write_model(
        tmp_path, vgg_graph(size=SIZE, seed=7, layout="NHWC"), manifest_dict(size=SIZE, layout="NHWC"), stem="b"
    )
    batch = tiles(3, seed=5)
    with Model(nchw) as a, Model(nhwc) as b:
        ra, rb = a.infer(batch), b.infer(batch)
    # same conv weights, so the same heat maps (the heads flatten in different orders, so logits differ)
    for fa, fb in zip(ra.fams, rb.fams, strict=True):
        np.testing.assert_allclose(fa, fb, rtol=1e-4, atol=1e-3)


def test_warmup_describe_and_manifest_extras(tiny: Path) -> None:
    with Model(tiny, threads=1) as model:
        model.warmup()
        assert model.describe() == {
            "name": "tiny-vgg",
            "width": "16",
            "provider": "CPUExecutionProvider",
            "input_size": SIZE,
        }
        assert model.manifest.fam_layer_scale == (1.0, 2.0, 3.0, 4.0, 5.0)


# --------------------------------------------------------------------------------------------- preprocessing
def _reference(tile_bgr: np.ndarray, layout: str, color: str, scale: float, mean: list, std: list) -> np.ndarray:
    s = tile_bgr.shape[0]
    out = np.zeros((3, s, s) if layout == "NCHW" else (s, s, 3), np.float64)
    for y in range(s):
        for x in range(s):
            b, g, r = (float(v) for v in tile_bgr[y, x])
            px = (r, g, b) if color == "RGB" else (b, g, r)
            for c in range(3):
                v = (px[c] * scale - mean[c]) / std[c]
                if layout == "NCHW":
                    out[c, y, x] = v
                else:
                    out[y, x, c] = v
    return out


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_preprocess_matches_per_pixel_reference(layout: str, color: str) -> None:
    d = manifest_dict(size=32, layout=layout, color=color)["input"]
    d["mean"], d["std"], d["scale"] = [10.0, 0.5, -3.0], [2.0, 0.25, 4.0], 0.5
    spec = Manifest.model_validate({**manifest_dict(size=32), "input": d}).input
    batch = tiles(2, size=32, seed=9)
    x = preprocess(batch, spec)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert x.shape == ((2, 3, 32, 32) if layout == "NCHW" else (2, 32, 32, 3))
    for i in range(2):
        ref = _reference(batch[i], layout, color, 0.5, d["mean"], d["std"])
        np.testing.assert_allclose(x[i], ref, rtol=1e-6, atol=1e-5)


def test_preprocess_rejects_wrong_tiles() -> None:
    spec = Manifest.model_validate(manifest_dict(size=32)).input
    with pytest.raises(ValueError, match="tiles must be"):
        preprocess(np.zeros((1, 64, 64, 3), np.uint8), spec)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((1, 32, 32, 3), np.float32), spec)


def test_softmax_prob_is_stable() -> None:
    p = softmax_prob(np.array([[1000.0, 1000.0], [0.0, -1000.0]], np.float32), 0)
    np.testing.assert_allclose(p, [0.5, 1.0])


# --------------------------------------------------------------------------------------------- providers
def test_provider_read_back_warns_when_first_choice_missing(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="inspector.model"), Model(tiny, providers=["cuda", "cpu"]) as m:
        assert m.provider == "CPUExecutionProvider"
    assert any(r.levelno == logging.WARNING and "CUDAExecutionProvider" in r.getMessage() for r in caplog.records)


def test_auto_picks_best_available_without_warning(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="inspector.model"), Model(tiny, providers=["auto"]) as m:
        assert m.provider == "CPUExecutionProvider"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_choose_providers_orders() -> None:
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["auto"], avail) == avail
    assert choose_providers(["cpu", "cuda"], avail) == ["CPUExecutionProvider", "CUDAExecutionProvider"]
    assert choose_providers(["cuda", "auto"], avail[1:]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ModelError, match="none of the requested providers"):
        choose_providers(["tensorrt"], ["CPUExecutionProvider"])


def test_only_unavailable_provider_is_an_error(tiny: Path) -> None:
    with pytest.raises(ModelError, match="install onnxruntime-gpu"):
        Model(tiny, providers=["cuda"])


def test_onnxruntime_missing(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ModelError, match=r"onnxruntime is not installed: pip install 'grape-spider-inspector\[cpu\]'"):
        Model(tiny)


def test_both_onnxruntime_builds_installed_is_a_clear_error(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import inspector.model as model_module

    assert model_module.installed_ort_distributions() == ["onnxruntime"]  # this venv: the CPU build only
    monkeypatch.setattr(model_module, "installed_ort_distributions", lambda: ["onnxruntime", "onnxruntime-gpu"])
    with pytest.raises(ModelError, match="both installed"):
        Model(tiny)


# --------------------------------------------------------------------------------------------- errors
def _one_line(exc: pytest.ExceptionInfo[ModelError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_model_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found") as exc:
        Model(tmp_path / "nope.onnx")
    assert "nope.onnx" in _one_line(exc)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_text("this is not a model\n")
    (tmp_path / "junk.yaml").write_text(yaml.safe_dump(manifest_dict(size=SIZE)))
    with pytest.raises(ModelError, match="not an ONNX file") as exc:
        Model(path)
    assert "junk.onnx" in _one_line(exc)


def test_truncated_onnx_file(tiny: Path) -> None:
    data = tiny.read_bytes()
    tiny.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a loadable ONNX model") as exc:
        Model(tiny)
    _one_line(exc)


def test_manifest_missing(tmp_path: Path) -> None:
    path = write_model(tmp_path, vgg_graph(size=SIZE), None)
    with pytest.raises(ModelError, match=r"no manifest beside it.*tiny\.yaml") as exc:
        Model(path)
    _one_line(exc)


def test_manifest_json_is_accepted(tmp_path: Path) -> None:
    path = write_model(tmp_path, vgg_graph(size=SIZE), None)
    (tmp_path / "tiny.json").write_text(json.dumps(manifest_dict(size=SIZE)))
    assert load_manifest(path).input.size == SIZE


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d.update(colour="RGB"), r"tiny\.yaml:\d+: colour: unknown key; the keys here are name, input,"),
        (
            lambda d: d["input"].update(colour=d["input"].pop("color")),
            r"tiny\.yaml:\d+: input\.colour: unknown key; did you mean color\?",
        ),
        (lambda d: d["input"].update(layout="CHW"), r"tiny\.yaml:\d+: input\.layout: .*'NCHW' or 'NHWC'"),
        (lambda d: d["input"].update(size=16), r"tiny\.yaml:\d+: input\.size: must be at least 32; got 16"),
        (lambda d: d["outputs"].update(fam=["fam1", "fam2"]), r"tiny\.yaml:\d+: outputs\.fam"),
        (lambda d: d.pop("spider_index"), r"tiny\.yaml:\d+: spider_index: required key missing; add it"),
        (lambda d: d.update(fam_layer_scale=[1, 1, 0, 1, 1]), r"tiny\.yaml:\d+: fam_layer_scale\.2"),
        (lambda d: d["input"].update(std=[1, 1, 0]), r"tiny\.yaml:\d+: input\.std\.2"),
    ],
)
def test_manifest_invalid_names_file_line_and_key(tmp_path: Path, edit, pattern: str) -> None:  # type: ignore[no-untyped-def]
    data = manifest_dict(size=SIZE)
    edit(data)
    path = write_model(tmp_path, vgg_graph(size=SIZE), data)
    with pytest.raises(ModelError, match=pattern):
        Model(path)


def _expect(tmp_path: Path, model_kw: dict, manifest_kw: dict, pattern: str) -> None:
    path = write_model(tmp_path, vgg_graph(size=SIZE, **model_kw), manifest_dict(**{"size": SIZE, **manifest_kw}))
    with pytest.raises(ModelError, match=pattern) as exc:
        Model(path)
    assert "tiny.onnx" in _one_line(exc)


def test_input_name_missing(tmp_path: Path) -> None:
    _expect(tmp_path, {}, {"input_name": "images"}, r"input\.name 'images' is not a graph input.*\['input'\]")


def test_input_size_mismatch(tmp_path: Path) -> None:
    _expect(tmp_path, {}, {"size": 96}, r"graph input shape .* does not match manifest size 96")


def test_input_layout_mismatch(tmp_path: Path) -> None:
    _expect(tmp_path, {}, {"layout": "NHWC"}, r"does not match manifest size 64 layout NHWC")


def test_output_missing(tmp_path: Path) -> None:
    _expect(tmp_path, {"fam_outputs": False}, {}, r"output\(s\) \['fam1'.*are not graph outputs")


def test_pool_output_missing(tmp_path: Path) -> None:
    _expect(tmp_path, {}, {"pools": True}, r"\['pool1', .*are not graph outputs")


def test_logits_name_missing(tmp_path: Path) -> None:
    _expect(tmp_path, {"logits_name": "output_0"}, {}, r"\['logits'\] named in the manifest are not graph outputs")


def test_fam_wrong_rank(tmp_path: Path) -> None:
    _expect(tmp_path, {"fam_keepdims": True}, {}, r"fam1 output 'fam1' has rank 4, expected 3")


def test_fam_order_wrong(tmp_path: Path) -> None:
    data = manifest_dict(size=SIZE)
    data["outputs"]["fam"] = ["fam2", "fam1", "fam3", "fam4", "fam5"]
    path = write_model(tmp_path, vgg_graph(size=SIZE), data)
    with pytest.raises(ModelError, match=r"fam1 output 'fam2' is .*expected \(N, 32, 32\)"):
        Model(path)


def test_logits_wrong_rank(tmp_path: Path) -> None:
    _expect(tmp_path, {}, {"logits": "fam1"}, r"logits 'fam1' has rank 3, expected 2")


def test_spider_index_out_of_range(tmp_path: Path) -> None:
    _expect(tmp_path, {}, {"spider_index": 2}, r"spider_index 2 is out of range for 2 classes")


# --------------------------------------------------------------------------------------------- any input size
@pytest.mark.parametrize("size", [64, 72, 81])
def test_the_pipeline_runs_a_model_of_any_input_size(tmp_path: Path, size: int) -> None:
    """Tiles are resized to the manifest's size; 72 and 81 px (not multiples of 32) pool to 36/40, 18/20, 9/10, 4/5,
    2/2 cells, and the heat map still finds each drawn spider where it is."""
    from inspector.config import BeltConfig, Config, ModelConfig
    from inspector.pipeline import Pipeline
    from inspector.types import FrameRef
    from tests.drawn import calibration, center_x, draw, scene
    from tests.spot_model import write_spot_model

    fps = 10.0
    spot = write_spot_model(tmp_path, size=size)
    cal = calibration()
    config = Config(model=ModelConfig(path=spot, batch_size=8), belt=BeltConfig(min_bunch_area_mm2=200))
    bunches = scene()
    finals = []
    with Model(spot, batch_size=8) as model:
        assert model.manifest.input.size == size
        pipe = Pipeline(config, cal, model, fps)
        for f in range(40):
            step = pipe.process(draw(f, bunches, fps, cal), FrameRef(0, f, f / fps))
            finals += step.final
        finals += pipe.finish().final
    truth = {b.bunch_id: b for b in bunches}
    assert sorted(d.bunch_id for d in finals) == [1, 2, 3, 4]
    for d in finals:
        b = truth[d.bunch_id]
        assert d.reason == ("spider" if b.spider_dxy is not None else "pass"), d
        if b.spider_dxy is not None:
            assert d.spider_xy is not None
            cx = center_x(b, d.frame, fps, cal)
            assert abs(d.spider_xy[0] - (cx + b.spider_dxy[0])) <= 8
            assert abs(d.spider_xy[1] - (b.y + b.spider_dxy[1])) <= 8
