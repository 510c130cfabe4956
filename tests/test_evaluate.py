"""Evaluation figures: hand-computed metric values, and `inspector evaluate` on a tile set with known answers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inspector.synth.tiles import TileSet, load_tile_set, save_tile_set
from inspector.training.metrics import (
    peak_xy,
    pointing_hits,
    recall_at_false_reject,
    roc_auc,
    tile_figures,
)


def _evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inspector", "evaluate", *args], capture_output=True, text=True, check=False
    )


def test_roc_auc_by_hand() -> None:
    labels = np.array([1, 1, 0, 0])
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 0.0
    # pairs (pos, neg): (0.9,0.5)=1 (0.9,0.1)=1 (0.3,0.5)=0 (0.3,0.1)=1 -> 3/4
    assert roc_auc(np.array([0.9, 0.3, 0.5, 0.1]), labels) == pytest.approx(0.75)
    # ties count half: all equal -> 0.5
    assert roc_auc(np.full(4, 0.5), labels) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_recall_at_false_reject_by_hand() -> None:
    neg = np.linspace(0.0, 0.99, 100)  # 100 negatives; at 1 % one may lie above the threshold -> t = 0.98
    pos = np.array([0.985, 0.995, 0.5, 0.97])
    scores = np.concatenate([neg, pos])
    labels = np.concatenate([np.zeros(100, int), np.ones(4, int)])
    assert recall_at_false_reject(scores, labels, 0.01) == pytest.approx(2 / 4)
    assert recall_at_false_reject(scores, labels, 0.0) == pytest.approx(1 / 4)  # above 0.99 only


def test_pointing_with_tolerance() -> None:
    maps = np.zeros((3, 224, 224), np.float32)
    maps[0, 50, 60] = 1.0  # inside [55, 45, 70, 60]
    maps[1, 50, 73] = 1.0  # 3.5 px right of the box: inside the 4 px tolerance
    maps[2, 50, 80] = 1.0  # 10.5 px right: miss
    boxes = np.tile(np.array([[55, 45, 70, 60]], np.float32), (3, 1))
    assert peak_xy(maps).tolist() == [[60, 50], [73, 50], [80, 50]]
    assert pointing_hits(maps, boxes, 4.0).tolist() == [True, True, False]
    assert pointing_hits(maps, boxes, 0.0).tolist() == [True, False, False]


def test_tile_figures_by_hand() -> None:
    probs = np.array([0.9, 0.6, 0.4, 0.2, 0.7, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    f = tile_figures(probs, labels)
    # predictions at 0.5: 1 1 0 0 1 0 -> tp 2, fn 1, fp 1, tn 2
    assert f.accuracy == pytest.approx(4 / 6)
    assert f.precision == pytest.approx(2 / 3)
    assert f.recall == pytest.approx(2 / 3)
    assert f.roc_auc == pytest.approx(7 / 9)
    assert np.isnan(f.pointing)


# --------------------------------------------------------------------------- end to end through onnxruntime
def _red_detector_onnx(path: Path, channel: int = 0) -> None:
    """A tiny contract-honouring graph: spider logit = 4 * max(normalised red); fam_l = avg-pooled red channel.

    ``channel`` 1 makes it a green detector instead, which finds no spider in the known tiles."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from inspector.training.export import manifest_dict, write_manifest

    nodes = [
        helper.make_node("Slice", ["input", "c0", "c1", "ax1"], ["red"]),
        helper.make_node("GlobalMaxPool", ["red"], ["mx"]),
        helper.make_node("Flatten", ["mx"], ["mxf"]),
        helper.make_node("Mul", ["mxf", "four"], ["spider"]),
        helper.make_node("Mul", ["mxf", "zero"], ["other"]),
        helper.make_node("Concat", ["other", "spider"], ["logits"], axis=1),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])]
    for layer in range(1, 6):
        k = 2**layer
        nodes.append(helper.make_node("AveragePool", ["red"], [f"p{layer}"], kernel_shape=[k, k], strides=[k, k]))
        nodes.append(helper.make_node("Squeeze", [f"p{layer}", "ax1"], [f"fam{layer}"]))
        outputs.append(helper.make_tensor_value_info(f"fam{layer}", TensorProto.FLOAT, ["N", 224 // k, 224 // k]))
    inits = [
        helper.make_tensor("c0", TensorProto.INT64, [1], [channel]),
        helper.make_tensor("c1", TensorProto.INT64, [1], [channel + 1]),
        helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("four", TensorProto.FLOAT, [], [4.0]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "red",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    write_manifest(path.with_suffix(".yaml"), manifest_dict("red-detector", 1))


def _known_tileset(out: Path) -> None:
    """4 spider tiles (red square; the 4th square drawn outside its box) and 4 clean tiles (one with a red fleck)."""
    tiles, boxes, labels, kinds = [], [], [], []
    for i in range(4):
        t = np.full((224, 224, 3), 40, np.uint8)
        x, y = 30 + 40 * i, 100
        box = (x, y, x + 24, y + 24)
        sq_x = x if i < 3 else 180  # the 4th: the square lies far from the labelled box
        t[y : y + 24, sq_x : sq_x + 24] = (0, 0, 255)  # BGR red
        tiles.append(t)
        boxes.append(box)
        labels.append(1)
        kinds.append("pos")
    for i in range(4):
        t = np.full((224, 224, 3), 40, np.uint8)
        if i == 0:
            t[10:14, 10:14] = (0, 0, 255)  # a red fleck: the red detector flags it (a false reject)
        tiles.append(t)
        boxes.append((-1, -1, -1, -1))
        labels.append(0)
        kinds.append("neg" if i < 2 else "hard_neg")
    data = TileSet(
        np.stack(tiles).astype(np.uint8),
        np.asarray(labels, np.int8),
        np.asarray(boxes, np.float32),
        np.asarray(kinds, dtype=str),
        {"source": "test", "seed": 0, "split": "test"},
        tile_scale_px=np.array([140, 140, 306, 306, 306, 140, 140, 306], np.int32),  # the fleck tile: 306 px
    )
    save_tile_set(data, out)


def test_evaluate_cli_on_known_tiles(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = tmp_path / "red.onnx"
    _red_detector_onnx(model)
    _known_tileset(tmp_path / "known")
    assert load_tile_set(tmp_path / "known").images.shape == (8, 224, 224, 3)
    out_json = tmp_path / "fig.json"
    proc = _evaluate("--model", str(model), "--tiles", f"known={tmp_path / 'known'}", "--json", str(out_json))
    assert proc.returncode == 0, proc.stderr
    assert "CAM (paper)" in proc.stdout and "95.3 %" in proc.stdout
    fig = json.loads(out_json.read_text())["known"]
    # all 4 spider tiles are red -> predicted spider; 1 of 4 clean tiles has a red fleck -> false reject
    assert fig["accuracy"] == pytest.approx(7 / 8)
    assert fig["precision"] == pytest.approx(4 / 5)
    assert fig["recall"] == pytest.approx(1.0)
    # FAM peak on the red square: inside the box for 3 of the 4 spider tiles
    assert fig["pointing"] == pytest.approx(3 / 4)
    assert fig["per_kind_accuracy"] == {"hard_neg": 1.0, "neg": 0.5, "pos": 1.0}
    # the one false reject (the fleck) was cut at 306 px: that scale carries it, 140 px is clean
    assert fig["per_scale_accuracy"] == {
        "140": {"all": 1.0, "hard_neg": 1.0, "neg": 1.0, "pos": 1.0},
        "306": {"all": 0.75, "hard_neg": 1.0, "neg": 0.0, "pos": 1.0},
    }
    assert "tiles cut at 306 px (4): accuracy 75.0 % (hard_neg 100.0 %, neg 0.0 %, pos 100.0 %)" in proc.stdout


def test_evaluate_cli_reports_missing_tiles(tmp_path: Path) -> None:
    proc = _evaluate("--tiles", str(tmp_path / "nothing"))
    assert proc.returncode == 1
    assert "nothing" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("prob", "labels", "missed", "alarms"),
    [
        ([], [], [], []),
        ([0.9, 0.1, 0.2, 0.8], [1, 0, 0, 0], [], [3]),
        ([0.3, 0.1, 0.7, 0.95, 0.6, 0.5], [1, 1, 1, 0, 0, 0], [1, 0], [3, 4, 5]),  # worst first; 0.5 is an alarm
    ],
    ids=["empty", "one-alarm", "ordered"],
)
def test_misclassified_worst_first(prob: list[float], labels: list[int], missed: list[int], alarms: list[int]) -> None:
    from inspector.training.evaluation import misclassified

    assert misclassified(np.asarray(prob, np.float32), np.asarray(labels, np.int8), 0.5) == (missed, alarms)


@pytest.mark.parametrize(
    ("prob", "labels", "origins", "expect"),
    [
        ([], [], [], []),
        ([0.9, 0.1], [1, 0], ["a.jpg", ""], []),  # nothing missed
        ([0.1, 0.2], [1, 1], ["", ""], []),  # missed, but no origin recorded
        (
            [0.1, 0.9, 0.2, 0.3, 0.6, 0.4, 0.1],
            [1, 1, 1, 1, 1, 1, 0],
            ["a.jpg", "a.jpg", "b.jpg", "b.jpg", "c.jpg", "d.jpg", ""],
            [("b.jpg", 2, 2), ("d.jpg", 1, 1), ("a.jpg", 1, 2)],  # most misses, then the higher share
        ),
    ],
    ids=["empty", "none-missed", "unrecorded", "ordered"],
)
def test_missed_by_origin(prob: list[float], labels: list[int], origins: list[str], expect: list[object]) -> None:
    from inspector.training.evaluation import missed_by_origin

    got = missed_by_origin(np.asarray(prob, np.float32), np.asarray(labels, np.int8), np.asarray(origins, str), 0.5)
    assert got == expect


def test_evaluate_cli_draws_the_errors_with_their_maps(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import cv2

    model = tmp_path / "red.onnx"
    _red_detector_onnx(model)
    _known_tileset(tmp_path / "known")
    proc = _evaluate("--model", str(model), "--tiles", f"known={tmp_path / 'known'}", "--errors", str(tmp_path / "err"))
    assert proc.returncode == 0, proc.stderr
    assert "false alarms: 1 ->" in proc.stdout
    assert not (tmp_path / "err" / "known_missed.png").exists()  # every spider tile was found
    picture = cv2.imread(str(tmp_path / "err" / "known_false_alarms.png"))
    assert picture is not None and picture.shape == (160, 8 * 160, 3)


def test_error_mosaic_puts_the_heat_where_the_model_looked(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")

    from inspector.training.evaluation import error_mosaic

    model = tmp_path / "red.onnx"
    _red_detector_onnx(model)
    tile = np.full((1, 224, 224, 3), 40, np.uint8)
    tile[0, 150:162, 100:112] = (0, 0, 255)  # a red fleck low in the middle: the red detector's false alarm
    tiles = TileSet(tile, np.zeros(1, np.int8), np.full((1, 4), -1, np.float32), np.asarray(["neg"]))
    assert error_mosaic(model, tiles, [], np.zeros(1, np.float32)) is None
    picture = error_mosaic(model, tiles, [0], np.ones(1, np.float32), cols=1, cell_px=224)
    assert picture is not None and picture.shape == (224, 224, 3)
    change = np.abs(picture.astype(int) - tile[0].astype(int)).sum(axis=2)
    assert change[150:162, 100:112].mean() > 20  # the heat is on the fleck ...
    assert change[30:140].max() == 0 and change[172:].max() == 0  # ... and nowhere else (rows 0-30: the label)


def test_evaluate_cli_errors_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = tmp_path / "red.onnx"
    _red_detector_onnx(model)
    _known_tileset(tmp_path / "known")
    (tmp_path / "file").write_text("not a folder")
    proc = _evaluate(
        "--model", str(model), "--tiles", f"known={tmp_path / 'known'}", "--errors", str(tmp_path / "file" / "err")
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--errors" in proc.stderr and "cannot create it" in proc.stderr


def test_evaluate_cli_picks_the_threshold_and_compares_with_a_baseline(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model, green = tmp_path / "red.onnx", tmp_path / "green.onnx"
    _red_detector_onnx(model)
    _red_detector_onnx(green, channel=1)
    _known_tileset(tmp_path / "known")
    out_json = tmp_path / "fig.json"
    both = f"{tmp_path / 'known'},{tmp_path / 'known'}"
    proc = _evaluate(
        "--model", str(model), "--baseline", str(green), "--tiles", f"known={tmp_path / 'known'}", f"twice={both}",
        "--pick-threshold", "known", "--sweep", "--plots", str(tmp_path / "plots"), "--json", str(out_json),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # the red detector scores ~1 on red tiles and ~0 elsewhere: every sweep threshold is 7/8 right -> the lowest
    assert "threshold 0.05: the most accurate on known" in proc.stdout
    fig = json.loads(out_json.read_text())
    assert fig["known"]["threshold"] == pytest.approx(0.05) and fig["known"]["accuracy"] == pytest.approx(7 / 8)
    assert [round(s["accuracy"], 4) for s in fig["known"]["sweep"]] == [0.875] * 19
    assert fig["twice"]["n"] == 16 and fig["twice"]["accuracy"] == pytest.approx(7 / 8)  # two dirs, one set
    # the green detector flags nothing: right on the 4 clean tiles only. Red alone right: the 4 spider tiles;
    # green alone right: the red-flecked clean tile -> (4 - 1) / 8
    paired = fig["known"]["baseline"]["paired"]
    assert (paired["n"], paired["only_a"], paired["only_b"]) == (8, 4, 1)
    assert paired["difference"] == pytest.approx(3 / 8)
    assert fig["known"]["baseline"]["accuracy"] == pytest.approx(4 / 8)
    assert fig["twice"]["baseline"]["paired"]["only_a"] == 8
    assert "model right where baseline is wrong on 4 tiles, the reverse on 1: +37.50" in proc.stdout
    assert "| known (baseline) | 8 (4) | 50.0 %" in proc.stdout
    if importlib.util.find_spec("matplotlib"):  # the dev extra has it
        assert proc.stdout.count("sweep plot ->") == 2
        assert (tmp_path / "plots" / "known_sweep.png").stat().st_size > 1000
    else:
        assert proc.stdout.count("sweep plot: needs matplotlib") == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pick-threshold", "nosuch"], "--pick-threshold nosuch: no such tile set (given: known)"),
        (["--pick-threshold", "known", "--threshold", "0.4"], "give --threshold or --pick-threshold, not both"),
        (["--baseline-threshold", "1.5"], "--baseline-threshold must lie in (0, 1)"),
    ],
    ids=["unknown-set", "both", "baseline-threshold"],
)
def test_evaluate_cli_threshold_options_are_one_line_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    _known_tileset(tmp_path / "known")
    proc = _evaluate("--tiles", f"known={tmp_path / 'known'}", *extra)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_many_tile_sizes_are_reported_in_quartiles() -> None:
    from inspector.training.evaluation import scale_groups

    few = np.array([140, 306, 140, 0], np.int32)
    assert scale_groups(few).tolist() == [140, 306, 140, 0]  # the planner's scales: as they are
    many = np.array([0, *range(40, 120)], np.int32)  # sizes drawn per tile (cross-style sets): 80 of them
    groups = scale_groups(many)
    assert groups[0] == 0 and sorted(set(groups.tolist()) - {0}) == [60, 80, 100, 119]
    assert (groups[1:] >= many[1:]).all()
    assert [int((groups == g).sum()) for g in (60, 80, 100, 119)] == [21, 20, 20, 19]
