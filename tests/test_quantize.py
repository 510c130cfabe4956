"""inspector/quantize.py and `inspector model quantize`: tiles cut from labelled footage, int8 static quantisation of a contract model, the manifest
copy the daemon loads, and the fp32/int8 comparison — on the hand-weighted spot model and drawn footage."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from inspector import quantize
from inspector.cli import main as cli_main
from inspector.model import Model, load_manifest
from tests.drawn import calibration, center_x, draw, scene
from tests.spot_model import write_spot_model

FPS = 10.0
SPOT_SIZE = 64


def write_labelled_footage(out: Path, n_frames: int = 40) -> Path:
    """The drawn scene as footage.avi + calibration.yaml + labels.jsonl with spider tracks (5 px dots = 5 mm)."""
    out.mkdir(parents=True, exist_ok=True)
    cal = calibration()
    bunches = scene()
    wh = (320, 240)
    writer = cv2.VideoWriter(str(out / "footage.avi"), cv2.VideoWriter.fourcc(*"MJPG"), FPS, wh)
    tracks: dict[int, list[list[int]]] = {b.bunch_id: [] for b in bunches}
    spiders: dict[int, list[list[int]]] = {b.bunch_id: [] for b in bunches}
    for f in range(n_frames):
        writer.write(draw(f, bunches, FPS, cal, wh))
        for b in bunches:
            cx = center_x(b, f, FPS, cal)
            x1, x2 = max(0, round(cx - b.radius)), min(wh[0], round(cx + b.radius))
            if x2 > x1:
                tracks[b.bunch_id].append([f, x1, round(b.y - b.radius), x2, round(b.y + b.radius)])
            if b.spider_dxy is not None:
                sx, sy = cx + b.spider_dxy[0], b.y + b.spider_dxy[1]
                box = [max(0, round(sx - 6)), round(sy - 6), min(wh[0], round(sx + 7)), round(sy + 7)]
                if box[2] > box[0]:
                    spiders[b.bunch_id].append([f, *box])
    writer.release()
    with (out / "labels.jsonl").open("w") as fh:
        for b in bunches:
            spider = b.spider_dxy is not None
            line = {
                "bunch_id": b.bunch_id,
                "spider": spider,
                "spider_span_mm": 5.0 if spider else None,
                "track": tracks[b.bunch_id],
                "spider_track": spiders[b.bunch_id],
            }
            fh.write(json.dumps(line) + "\n")
    (out / "calibration.yaml").write_text(cal.to_yaml())
    return out


@pytest.fixture(scope="module")
def spot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spot_model(tmp_path_factory.mktemp("spot"), SPOT_SIZE)


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled_footage(tmp_path_factory.mktemp("footage"))


@pytest.fixture(scope="module")
def tiles(footage: Path) -> Any:
    return quantize.tiles_from_footage(footage, 24, 24, seed=1, size=SPOT_SIZE)


def test_tiles_from_footage_hold_spiders_only_where_labelled(tiles: Any) -> None:
    n_pos = int(tiles.labels.sum())
    assert 16 <= n_pos <= 24 and len(tiles) - n_pos == 24  # spiders cut by the frame edge are skipped
    darkest = tiles.images.reshape(len(tiles), -1, 3).mean(axis=2).min(axis=1)
    assert (darkest[tiles.labels == 1] < 80).all()  # the black dot is in every spider tile
    assert (darkest[tiles.labels == 0] > 80).all()  # and in no spider-free tile


def test_split_is_disjoint_and_stratified(tiles: Any) -> None:
    calib, evaluation = quantize.split_tiles(tiles, 16, seed=0)
    assert len(calib) == 16 and int(calib.labels.sum()) == 8  # half spider, half spider-free
    assert len(calib) + len(evaluation) == len(tiles)
    joined = np.concatenate([calib.images, evaluation.images]).reshape(len(tiles), -1)
    assert len({row.tobytes() for row in joined}) == len(
        {row.tobytes() for row in tiles.images.reshape(len(tiles), -1)}
    )


def test_quantized_model_loads_like_any_other_and_agrees(spot: Path, tiles: Any, tmp_path: Path) -> None:
    calib, evaluation = quantize.split_tiles(tiles, 16, seed=0)
    out = quantize.quantize_model(spot, tmp_path / quantize.int8_path(spot).name, calib.images)
    assert out.name == "spot.int8.onnx"
    manifest = load_manifest(out)
    original = load_manifest(spot)
    assert manifest.name == "spot-detector-int8"
    assert manifest.model_dump(exclude={"name", "description"}) == original.model_dump(exclude={"name", "description"})
    with Model(out, ("cpu",), 1, 8) as model:
        result = model.infer(evaluation.images)
    assert result.logits.dtype == np.float32 and all(f.dtype == np.float32 for f in result.fams)
    import onnx

    graph = onnx.load(str(out)).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    assert not any(n.op_type == "QuantizeLinear" and n.output[0] in {o.name for o in graph.output} for n in graph.node)
    comparison = quantize.compare(spot, out, evaluation, repeats=1)
    assert comparison.n_tiles == len(evaluation)
    assert comparison.fp32_accuracy == 1.0  # the spot model finds every drawn dot
    assert comparison.agreement >= 0.95 and comparison.int8_accuracy >= 0.95
    assert comparison.fam_correlation > 0.9
    assert "tiles/s" in quantize.format_comparison(comparison)


def test_manifest_copy_points_at_the_model_card(tmp_path: Path) -> None:
    src_dir, dst_dir = tmp_path / "a", tmp_path / "b"
    src_dir.mkdir()
    dst_dir.mkdir()
    fp32 = write_spot_model(src_dir, SPOT_SIZE)
    data = yaml.safe_load(fp32.with_suffix(".yaml").read_text())
    data["model_card"] = "card.md"
    fp32.with_suffix(".yaml").write_text(yaml.safe_dump(data))
    dst = quantize.write_int8_manifest(fp32, dst_dir / "spot.int8.onnx")
    copied = yaml.safe_load(dst.read_text())
    assert copied["model_card"] == str((src_dir / "card.md").resolve())
    assert "int8" in copied["description"]


def test_cli(spot: Path, footage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, report = tmp_path / "q.int8.onnx", tmp_path / "q.json"
    args = [str(spot), "--out", str(out), "--footage", str(footage), "--calib-n", "12", "--eval-n", "20"]
    assert cli_main(["model", "quantize", *args, "--json", str(report)]) == 0
    assert out.is_file() and out.with_suffix(".yaml").is_file()
    assert json.loads(report.read_text())["n_tiles"] > 0
    assert "quantize: wrote" in capsys.readouterr().out
    assert cli_main(["model", "quantize", str(tmp_path / "missing.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inspector: error: ") and "model file not found" in err and "Traceback" not in err


def test_cli_without_onnx_names_the_extra(
    spot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # as in an install with only the runtime extras
    assert cli_main(["model", "quantize", str(spot), "--out", str(tmp_path / "q.int8.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'grape-spider-inspector[train]'" in err
    assert not (tmp_path / "q.int8.onnx").exists()
