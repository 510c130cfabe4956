"""Shortcut probes: a planted sharpness detector fails the sharp-patch probe, a detector of the spider itself passes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inspector.synth.tiles import TileSet, save_tile_set
from inspector.training.probes import (
    SHARP_PATCH_MARGIN,
    ProbeReport,
    ProbeRow,
    add_noise,
    blur,
    format_probes,
    patch_sizes_wh,
    run_probes,
    sharp_patch,
    species_of,
)
from tests.test_evaluate import _red_detector_onnx

SIZE = 224
RATIO_AT_HALF = 6.0  # the sharpness detector's logit is 0 where the sharpest 8 px cell has 6x the mean energy


def _sharpness_detector_onnx(path: Path) -> None:
    """A contract-honouring graph that has learned the shortcut: spider logit = 2 * (max / mean of the 8x8-cell
    Laplacian energy - 6), i.e. "one place much sharper than the rest of the tile"; fam_l = the energy pooled."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from inspector.training.export import manifest_dict, write_manifest

    lap = np.zeros((1, 3, 3, 3), np.float32)
    lap[0, :] = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32) / 3.0
    nodes = [
        helper.make_node("Conv", ["input", "lap"], ["l"]),  # no padding: the tile's edge is not a sharp place
        helper.make_node("Mul", ["l", "l"], ["e"]),
        helper.make_node("AveragePool", ["e"], ["cells"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("GlobalMaxPool", ["cells"], ["mx"]),
        helper.make_node("GlobalAveragePool", ["cells"], ["mn"]),
        helper.make_node("Add", ["mn", "eps"], ["mn_eps"]),
        helper.make_node("Div", ["mx", "mn_eps"], ["ratio"]),
        helper.make_node("Sub", ["ratio", "at_half"], ["centred"]),
        helper.make_node("Mul", ["centred", "two"], ["spider4"]),
        helper.make_node("Flatten", ["spider4"], ["spider"]),
        helper.make_node("Mul", ["spider", "zero"], ["other"]),
        helper.make_node("Concat", ["other", "spider"], ["logits"], axis=1),
        helper.make_node("Pad", ["e", "pads"], ["e224"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])]
    for layer in range(1, 6):
        k = 2**layer
        nodes.append(helper.make_node("AveragePool", ["e224"], [f"p{layer}"], kernel_shape=[k, k], strides=[k, k]))
        nodes.append(helper.make_node("Squeeze", [f"p{layer}", "ax1"], [f"fam{layer}"]))
        outputs.append(helper.make_tensor_value_info(f"fam{layer}", TensorProto.FLOAT, ["N", SIZE // k, SIZE // k]))
    inits = [
        numpy_helper.from_array(lap, "lap"),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
        numpy_helper.from_array(np.array(RATIO_AT_HALF, np.float32), "at_half"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    graph = helper.make_graph(
        nodes,
        "sharpness",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    write_manifest(path.with_suffix(".yaml"), manifest_dict("sharpness-detector", 1))


def _textured_set(n_pos: int = 12, n_neg: int = 24, seed: int = 0) -> TileSet:
    """Green, evenly sharp "grape" texture everywhere; a red square (the spider) inside the box of each spider tile."""
    rng = np.random.default_rng(seed)
    images, labels, boxes, origins = [], [], [], []
    for i in range(n_pos + n_neg):
        noise = rng.normal(0.0, 1.0, (SIZE, SIZE, 3)).astype(np.float32)
        t = np.clip(np.array([40.0, 100.0, 30.0]) + 12.0 * noise, 0, 255).astype(np.uint8)  # BGR, little red
        box = (-1.0, -1.0, -1.0, -1.0)
        if i < n_pos:
            x, y = (int(v) for v in rng.integers(10, SIZE - 40, 2))
            t[y : y + 24, x : x + 24] = (0, 0, 255)
            box = (x, y, x + 24, y + 24)
        images.append(t)
        labels.append(1 if i < n_pos else 0)
        boxes.append(box)
        origins.append(f"holdout/Black_Widow/{i}.jpg" if i < n_pos // 2 else (f"w{i}.jpg" if i < n_pos else ""))
    return TileSet(
        np.stack(images),
        np.asarray(labels, np.int8),
        np.asarray(boxes, np.float32),
        np.asarray(["pos" if v else "neg" for v in labels]),
        {"spider_species": {f"w{i}.jpg": "Wolf_Spider" for i in range(n_pos)}},
        spider_origin=np.asarray(origins),
    )


def _probe(model: Path, tiles: TileSet, seam: TileSet | None = None) -> ProbeReport:
    from inspector.training.evaluation import evaluate_model, scorer

    ev = evaluate_model(model, tiles)
    with scorer(model) as score:
        return run_probes(score, tiles, ev.spider_prob, pointing=ev.figures.pointing, seam=seam)


def test_sharp_patch_keeps_exactly_one_patch_sharp() -> None:
    tiles = _textured_set(n_pos=2, n_neg=3)
    neg = tiles.images[tiles.labels == 0]
    out, boxes = sharp_patch(neg, np.array([[24, 16]]), 3.0, np.random.default_rng(1))
    soft = blur(neg, 3.0)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        assert (x2 - x1, y2 - y1) == (24, 16)
        assert np.array_equal(out[i, y1:y2, x1:x2], neg[i, y1:y2, x1:x2])
        mask = np.ones(out.shape[1:3], bool)
        mask[y1:y2, x1:x2] = False
        assert np.array_equal(out[i][mask], soft[i][mask])
    assert patch_sizes_wh(tiles).tolist() == [[24, 24], [24, 24]]
    no_spider = tiles.take(np.nonzero(tiles.labels == 0)[0])
    assert patch_sizes_wh(no_spider).tolist() == [[39, 39]]  # 3 % of the tile when there is no box to copy


def test_blur_and_noise_levels() -> None:
    img = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    assert np.array_equal(blur(img, 0.0), img) and np.array_equal(add_noise(img, 0.0, np.random.default_rng(0)), img)
    assert blur(img, 2.0).std() < 0.5 * img.std()
    noisy = add_noise(np.full((1, 64, 64, 3), 128, np.uint8), 8.0, np.random.default_rng(0))
    assert 7.0 < noisy.astype(float).std() < 9.0


def test_species_from_the_set_or_the_photo_index() -> None:
    tiles = _textured_set(n_pos=4, n_neg=2)
    got = species_of(tiles, {"holdout/Black_Widow/0.jpg": "Black_Widow", "holdout/Black_Widow/1.jpg": "Black_Widow"})
    assert got.tolist() == ["Black_Widow", "Black_Widow", "Wolf_Spider", "Wolf_Spider", "", ""]
    assert species_of(tiles).tolist() == ["", "", "Wolf_Spider", "Wolf_Spider", "", ""]


def test_a_sharpness_detector_fails_the_sharp_patch_probe(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = tmp_path / "sharp.onnx"
    _sharpness_detector_onnx(model)
    report = _probe(model, _textured_set())
    assert report.normal_false_alarms == 0.0  # evenly sharp grapes: no place stands out
    assert report.sharp_patch_false_alarms >= 0.9  # one sharp patch in a blurred tile: "a spider"
    assert not report.passed
    assert "sharp-patch probe FAILED" in format_probes("t", report)


def test_a_detector_of_the_spider_itself_passes(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = tmp_path / "red.onnx"
    _red_detector_onnx(model)
    tiles = _textured_set()
    seam = tiles.take(np.nonzero(tiles.labels == 0)[0][:4])
    seam.images[:2, 50:70, 50:70] = (0, 0, 200)  # two pasted red non-spiders: the red detector calls them spiders
    report = _probe(model, tiles, seam)
    assert report.passed and report.sharp_patch_false_alarms == 0.0 and report.normal_false_alarms == 0.0
    rows = {r.probe: r for r in report.rows}
    assert rows["blurred spider σ 3"].rate == 1.0  # a blurred red square is still red
    assert rows["seam (pasted non-spider)"].rate == 0.5
    assert rows["unchanged"].rate == 1.0 and rows["unchanged"].roc_auc == 1.0
    assert {"blur σ 1", "blur σ 3", "noise sd 16"} <= set(rows)
    assert report.pointing == 1.0
    assert report.species == {"Wolf_Spider": (6, 1.0)}
    assert "sharp-patch probe passed" in format_probes("t", report)


def test_the_verdict_allows_the_margin_only() -> None:
    def report(sharp: float) -> ProbeReport:
        return ProbeReport(0.5, 0.10, 0.9, 1.0, [ProbeRow("sharp patch σ 3", "false alarms", 100, sharp)])

    assert report(0.10 + SHARP_PATCH_MARGIN - 0.001).passed
    assert not report(0.10 + SHARP_PATCH_MARGIN + 0.001).passed


def _evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inspector", "evaluate", *args], capture_output=True, text=True, check=False
    )


def test_evaluate_probes_cli_exit_status_and_json(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    sharp, red = tmp_path / "sharp.onnx", tmp_path / "red.onnx"
    _sharpness_detector_onnx(sharp)
    _red_detector_onnx(red)
    tiles = _textured_set()
    save_tile_set(tiles, tmp_path / "set")
    save_tile_set(tiles.take(np.nonzero(tiles.labels == 0)[0][:4]), tmp_path / "set" / "seam")
    out = tmp_path / "fig.json"
    failed = _evaluate("--model", str(sharp), "--tiles", f"s={tmp_path / 'set'}", "--probes", "--json", str(out))
    assert failed.returncode == 2, failed.stderr
    assert "FAILED the sharp-patch probe: s" in failed.stdout and "| seam (pasted non-spider) | 4 |" in failed.stdout
    assert json.loads(out.read_text())["s"]["probes"]["passed"] is False
    passed = _evaluate("--model", str(red), "--tiles", f"s={tmp_path / 'set'}", "--probes", "--json", str(out))
    assert passed.returncode == 0, passed.stderr
    assert "sharp-patch probe passed" in passed.stdout
    assert json.loads(out.read_text())["s"]["probes"]["passed"] is True


def test_evaluate_probes_bad_realdata_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    red = tmp_path / "red.onnx"
    _red_detector_onnx(red)
    save_tile_set(_textured_set(2, 2), tmp_path / "set")
    proc = _evaluate("--model", str(red), "--tiles", str(tmp_path / "set"), "--probes", "--real", str(tmp_path / "x"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--real" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
