"""Hard-example mining: which tiles `hardest` keeps (parametrised, the empty pool included), TileSet.take, and
`inspector tiles mine` end to end on tiles whose scores are known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inspector.synth.tiles import TileSet, load_tile_set
from inspector.training.mining import hardest, shared_geometry
from tests.test_evaluate import _known_tileset, _red_detector_onnx


@pytest.mark.parametrize(
    ("prob", "labels", "neg_share", "pos_share", "kept", "n_neg", "n_pos"),
    [
        ([], [], 0.5, 0.5, [], 0, 0),
        ([0.9, 0.1, 0.7, 0.2], [0, 0, 0, 0], 0.5, 0.5, [0, 2], 2, 0),  # highest-scored negatives; no positives
        ([0.9, 0.1, 0.7, 0.2], [1, 1, 1, 1], 0.5, 0.5, [1, 3], 0, 2),  # lowest-scored positives
        ([0.9, 0.1, 0.7, 0.2, 0.6, 0.3], [0, 1, 0, 1, 1, 0], 1 / 3, 1 / 3, [0, 1], 1, 1),
        ([0.5, 0.5, 0.5, 0.5], [0, 0, 1, 1], 0.5, 0.5, [0, 2], 1, 1),  # ties keep the earlier tile
        ([0.9, 0.1], [0, 1], 0.0, 0.0, [], 0, 0),
        ([0.9, 0.1, 0.4], [0, 1, 0], 1.0, 1.0, [0, 1, 2], 2, 1),
    ],
    ids=["empty", "negatives-only", "positives-only", "mixed", "ties", "none", "all"],
)
def test_hardest_keeps_the_worst_scored_of_each_class(
    prob: list[float], labels: list[int], neg_share: float, pos_share: float, kept: list[int], n_neg: int, n_pos: int
) -> None:
    sel = hardest(np.asarray(prob, np.float32), np.asarray(labels, np.int8), neg_share, pos_share)
    assert sel.indices.tolist() == kept
    assert (sel.n_neg, sel.n_pos) == (n_neg, n_pos)


def test_hardest_reports_where_the_cuts_fell() -> None:
    prob = np.array([0.9, 0.2, 0.7, 0.3, 0.05, 0.6], np.float32)
    labels = np.array([0, 1, 0, 1, 0, 1], np.int8)
    sel = hardest(prob, labels, 2 / 3, 2 / 3)
    assert sel.indices.tolist() == [0, 1, 2, 3]
    assert sel.neg_min_prob == pytest.approx(0.7) and sel.pos_max_prob == pytest.approx(0.3)
    none = hardest(prob, labels, 0.0, 0.0)
    assert np.isnan(none.neg_min_prob) and np.isnan(none.pos_max_prob)


@pytest.mark.parametrize(("neg_share", "pos_share"), [(-0.1, 0.5), (0.5, 1.5)])
def test_hardest_refuses_shares_outside_0_1(neg_share: float, pos_share: float) -> None:
    with pytest.raises(ValueError, match="must lie in"):
        hardest(np.zeros(2, np.float32), np.zeros(2, np.int8), neg_share, pos_share)


def test_hardest_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same 1-D shape"):
        hardest(np.zeros(3, np.float32), np.zeros(2, np.int8), 0.5, 0.5)


def test_take_carries_every_per_tile_field(tmp_path: Path) -> None:
    _known_tileset(tmp_path / "known")
    tiles = load_tile_set(tmp_path / "known")
    tiles.spider_origin = np.array([f"photo{i}.jpg" if i < 4 else "" for i in range(8)])
    sub = tiles.take(np.array([6, 1]), {"source": "sub"})
    assert isinstance(sub, TileSet) and len(sub) == 2
    assert sub.labels.tolist() == [0, 1] and sub.kinds.tolist() == ["hard_neg", "pos"]
    np.testing.assert_array_equal(sub.images, tiles.images[[6, 1]])
    np.testing.assert_array_equal(sub.boxes_xyxy, tiles.boxes_xyxy[[6, 1]])
    assert sub.spider_origin.tolist() == ["", "photo1.jpg"] and sub.tile_scale_px.tolist() == [140, 140]
    assert sub.meta == {"source": "sub"} and tiles.take(np.array([0])).meta == tiles.meta
    assert len(tiles.take(np.zeros(0, np.int64))) == 0


def _red_model_and_tiles(tmp_path: Path) -> Path:
    """The red detector of test_evaluate at tmp_path/red.onnx and its known tiles at tmp_path/a."""
    pytest.importorskip("onnxruntime")
    model = tmp_path / "red.onnx"
    _red_detector_onnx(model)
    _known_tileset(tmp_path / "a")
    return model


def _mine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inspector", "tiles", "mine", *args], capture_output=True, text=True, check=False
    )


def test_mine_tiles_cli_keeps_the_false_alarm(tmp_path: Path) -> None:
    """The red detector flags the one clean tile with a red fleck (index 4) and scores all else right; mining a
    quarter of the negatives must keep exactly that tile, with its scale, and say so."""
    model = _red_model_and_tiles(tmp_path)
    _known_tileset(tmp_path / "b")
    out = tmp_path / "hard"
    proc = _mine(
        "--model",
        str(model),
        "--tiles",
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        "--out",
        str(out),
        "--neg-share",
        "0.25",
        "--pos-share",
        "0",
        "--threads",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    mined = load_tile_set(out)
    pool = load_tile_set(tmp_path / "a")
    assert len(mined) == 2  # a quarter of the 8 negatives: the fleck tile of each set
    np.testing.assert_array_equal(mined.images[0], pool.images[4])
    np.testing.assert_array_equal(mined.images[1], pool.images[4])
    assert mined.labels.tolist() == [0, 0] and mined.tile_scale_px.tolist() == [306, 306]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"] == "mined" and meta["n_candidates"] == 16 and meta["counts"] == {"neg": 2}
    assert meta["neg_min_prob"] > 0.5 and meta["candidates"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert "calibration" not in meta  # the known sets record none; sets that share one pass it on (below)
    assert "negatives: 2 of 8 kept" in proc.stdout and "306 px 2 of 4" in proc.stdout and "140 px 0 of 4" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--neg-share", "1.5"], "--neg-share must be a share"),
        (["--model", "nope.onnx"], "no such model file"),
        (["--neg-share", "0", "--pos-share", "0"], "nothing kept"),
    ],
    ids=["share", "model", "nothing"],
)
def test_mine_tiles_cli_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    model = _red_model_and_tiles(tmp_path)
    proc = _mine("--model", str(model), "--tiles", str(tmp_path / "a"), "--out", str(tmp_path / "o"), *args)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_mine_tiles_cli_missing_candidates(tmp_path: Path) -> None:
    proc = _mine("--tiles", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1 and "nothing" in proc.stderr and "Traceback" not in proc.stderr


def test_mine_tiles_cli_unwritable_out_is_one_line(tmp_path: Path) -> None:
    model = _red_model_and_tiles(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    proc = _mine("--model", str(model), "--tiles", str(tmp_path / "a"), "--out", str(tmp_path / "file" / "o"))
    assert proc.returncode == 1
    assert "cannot write the mined set" in proc.stderr and "Traceback" not in proc.stderr


def test_shared_geometry_passes_on_only_what_every_candidate_set_shares() -> None:
    cal = {"mm_per_px": 0.25}
    same = [{"calibration": cal, "tile_px": 224}, {"calibration": dict(cal), "tile_px": 224}]
    assert shared_geometry(same) == {"calibration": cal, "tile_px": 224}
    differ = [{"calibration": cal, "tile_px": 224}, {"calibration": {"mm_per_px": 0.5}, "tile_px": 224}]
    assert shared_geometry(differ) == {"tile_px": 224}
    assert shared_geometry([]) == {} and shared_geometry(None) == {}
