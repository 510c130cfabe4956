"""`inspector bench` (inspector/perf/bench.py) on tiny inputs: FLOP counting, the logits-only cut, the speed model, the pipeline and latency
loops, the table; `inspector soak` (inspector/perf/soak.py). No timing assertions (only that figures exist and add
up)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from inspector.cli import main as cli_main
from inspector.model import Model
from inspector.perf import bench, soak
from tests.drawn import write_footage
from tests.spot_model import spot_model, write_busy_spot_model, write_spot_model


@pytest.fixture(scope="module")
def spot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spot_model(tmp_path_factory.mktemp("spot"))


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Any:
    video, cal_path, _ = write_footage(tmp_path_factory.mktemp("drawn"), n_frames=30, fps=10.0)
    from inspector.config import load_calibration

    return bench.Footage(video, load_calibration(cal_path), 10.0, (320, 240))


def test_conv_fc_flops_counts_the_spot_model_by_hand() -> None:
    # conv1 3->1 3x3 at 64x64, conv2..5 1->1 3x3 at 32, 16, 8, 4; Gemm 4 -> 2
    expected = 2 * 64 * 64 * 27 + 2 * 9 * (32**2 + 16**2 + 8**2 + 4**2) + 2 * 2 * 4
    assert bench.conv_fc_flops(spot_model(64)) == expected


@pytest.mark.parametrize("layers", [1, 3])
def test_the_busy_spot_model_answers_as_the_spot_model(spot: Path, tmp_path: Path, layers: int) -> None:
    # the overload test's model (tests/test_faults.py): work added, answers unchanged, on tiles with and without a spot
    tiles = np.full((4, 64, 64, 3), 150, np.uint8)
    tiles[1:3, 20:30, 20:30] = 10
    busy_path = write_busy_spot_model(tmp_path, layers)
    assert sum(n.op_type == "MatMul" for n in onnx.load(str(busy_path)).graph.node) == layers + 1
    with Model(spot) as plain, Model(busy_path) as busy:
        a, b = plain.infer(tiles), busy.infer(tiles)
    assert np.isfinite(b.spider_prob).all()
    np.testing.assert_allclose(b.spider_prob, a.spider_prob, rtol=1e-6)
    assert (a.spider_prob[1:3] > 0.5).all() and (a.spider_prob[[0, 3]] < 0.5).all()
    for fa, fb in zip(a.fams, b.fams, strict=True):
        np.testing.assert_allclose(fb, fa)


def test_logits_only_drops_fam_branches_and_keeps_logits(spot: Path) -> None:
    full = onnx.load(str(spot))
    lean = bench.logits_only(full, "input", "logits")
    assert [o.name for o in lean.graph.output] == ["logits"]
    assert not [n for n in lean.graph.node if n.op_type == "ReduceSum"]
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    a = bench.ort_session(full.SerializeToString()).run(["logits"], {"input": x})[0]
    b = bench.ort_session(lean.SerializeToString()).run(["logits"], {"input": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-6)
    raw = bench.raw_inference(
        full.SerializeToString(),
        lean.SerializeToString(),
        "input",
        ["logits", *[f"fam{i}" for i in range(1, 6)]],
        64,
        4,
        1,
    )
    assert raw.batch == 4 and raw.tiles_s_contract > 0 and raw.tiles_s_logits_only > 0


def test_sustained_speed_model() -> None:
    # 100 mm of view, 10 mm spider, 0.9 s per inspected frame + one 0.1 s frame interval
    assert bench.sustained_speed_mm_s(0.9, 10.0, 100.0, 10.0, 1) == pytest.approx(90.0)
    assert bench.sustained_speed_mm_s(0.9, 10.0, 100.0, 10.0, 2) == pytest.approx(45.0)
    assert bench.sustained_speed_mm_s(0.9, 10.0, 10.0, 12.0, 1) == 0.0


def test_throughput_rows_fewer_tiles_go_faster(drawn: Any) -> None:
    rows = bench.throughput_rows("m", 0.01, 0.005, 10.0, 40.0, drawn, 2)
    whole, ours = rows
    assert whole.mode.startswith("whole") and ours.mode.startswith("belt")
    assert ours.t_frame_s == pytest.approx(0.005 + 10 * 0.01)
    assert ours.v_max_mm_s > whole.v_max_mm_s
    assert ours.v_max_k_mm_s == pytest.approx(ours.v_max_mm_s / 2)
    assert ours.area_mm2_s == pytest.approx(ours.v_max_mm_s * 240 * drawn.calibration.mm_per_px)


def test_pipeline_run_and_tile_counts(spot: Path, drawn: Any) -> None:
    assert sum(1 for _ in bench.iter_frames(drawn.video)) == 30
    config = bench.bench_config(spot, "belt", 8)
    with Model(spot, ("cpu",), 1, 8) as model:
        run = bench.run_pipeline(bench.iter_frames(drawn.video), drawn, config, model)
        plans, whole = bench.tile_plans(bench.iter_frames(drawn.video), drawn.calibration, config)
        boxes = bench.typical_boxes(plans)
        post_s = bench.fam_post_s(model, boxes, drawn.frame_wh, "paper", 1)
        first = bench.run_pipeline(bench.iter_frames(drawn.video), drawn, config, model, max_inspected=1)
    assert run.frames == 30 and run.inspected >= 2
    assert run.tiles == sum(run.inspected_tiles) > 0
    assert len(run.overhead_frame_s) + run.inspected == run.frames
    assert run.t_tile_s >= 0 and run.tiles_s > 0 and post_s > 0
    assert run.decisions == 4  # the drawn scene's four bunches
    counts = [len(p) for p in plans]
    assert counts and max(counts) <= whole  # the produce mask never asks for more tiles than the whole frame
    mean = float(np.mean(counts))
    assert all(abs(len(boxes) - mean) <= abs(c - mean) for c in counts)
    assert first.inspected == 1 and first.frames < run.frames


def test_latency_loop_samples_every_inspection_and_reject(spot: Path, tmp_path: Path) -> None:
    video, cal_path, _ = write_footage(tmp_path, n_frames=36, fps=30.0)
    from inspector.config import load_calibration

    footage = bench.Footage(video, load_calibration(cal_path), 30.0, (320, 240))
    with Model(spot, ("cpu",), 1, 8) as model:
        run = bench.run_latency(footage, bench.bench_config(spot, "belt", 8), model)
    summary = run.summary()
    assert run.frames_read + run.frames_dropped == 36
    assert run.inspected >= 1 and len(run.inspect_latency_s) == run.inspected
    assert len(run.reject_latency_s) == run.rejects >= 1  # the drawn spider bunch 2 is in view by frame 36
    assert all(v >= 0 for v in run.reject_latency_s + run.inspect_latency_s)
    assert summary["inspect_p99_s"] >= summary["inspect_p50_s"]
    assert run.uninspected <= run.decisions


def test_gemm_and_machine() -> None:
    assert bench.gemm_peak_gflops(64, 1) > 0
    info = bench.machine_info()
    assert info["cores"] >= 1 and info["onnxruntime"]
    assert bench.percentile([], 50) is None and bench.percentile([1.0, 3.0], 50) == 2.0


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--quick", "--no-vgg16", "--work", str(tmp_path / "work"), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert "| Measure | Ours | Baseline | Ratio |" in table
    assert result["pipeline"]["tiles"] > 0 and result["gemm_peak_gflop_s"] > 0
    assert {r["mode"] for r in result["throughput"]} == {"whole_frame (paper)", "belt (ours)"}
    assert result["int8"]["n_tiles"] > 0 and 0 <= result["int8"]["agreement"] <= 1
    assert result["latency"]["double"]["fps"] == 2 * result["latency"]["nominal"]["fps"]


# ------------------------------------------------------------------------------------------------ inspector soak


def test_soak_parses_metrics_and_sums_labelled_series() -> None:
    text = "\n".join(
        [
            "# HELP inspector_bunches_total Bunches decided",
            'inspector_bunches_total{decision="pass",reason="pass"} 7.0',
            'inspector_bunches_total{decision="reject",reason="uninspected"} 2.0',
            'inspector_bunches_total{decision="reject",reason="spider"} 3.0',
            "inspector_decision_latency_seconds_sum 4.5",
            "inspector_decision_latency_seconds_count 3.0",
            "inspector_frames_dropped_total 1e+01",
        ]
    )
    m = soak.parse_metrics(text)
    assert soak.metric_sum(m, "inspector_bunches_total") == 12
    assert soak.metric_sum(m, "inspector_bunches_total", decision="reject") == 5
    assert soak.metric_sum(m, "inspector_bunches_total", reason="uninspected") == 2
    assert soak.metric_sum(m, "inspector_frames_dropped_total") == 10
    assert soak.latency_mean_s(m) == pytest.approx(1.5)
    assert soak.latency_mean_s({}) is None


def test_soak_matches_labels_exactly_and_reads_the_format_as_prometheus_does() -> None:
    text = "\n".join(
        [
            "# TYPE inspector_bunches_total counter",
            'inspector_bunches_total{decision="reject",reason="uninspected"} 2.0',
            'inspector_bunches_total{decision="reject",reason="uninspected_stretch"} 5.0',  # a value that extends it
            'inspector_bunches_total{decision="reject",subreason="uninspected"} 11.0',  # a label name that ends in it
            'inspector_bunches_total{reason="spider",decision="reject"} 3.0',  # labels in another order
            'inspector_bunches_total{decision="reject",reason="say \\"spider\\", then stop"} 13.0',  # escaped quotes
            "# TYPE inspector_decision_latency_seconds histogram",
            'inspector_decision_latency_seconds_bucket{le="+Inf"} 4.0',
            "inspector_decision_latency_seconds_count 4.0",
            "inspector_decision_latency_seconds_sum 2.0",
        ]
    )
    m = soak.parse_metrics(text)
    assert soak.metric_sum(m, "inspector_bunches_total", reason="uninspected") == 2
    assert soak.metric_sum(m, "inspector_bunches_total", reason="spider", decision="reject") == 3
    assert soak.metric_sum(m, "inspector_bunches_total", reason='say "spider", then stop') == 13
    assert soak.metric_sum(m, "inspector_bunches_total", decision="reject") == 34
    assert soak.metric_sum(m, "inspector_bunches") == 0  # the sample name, not the family's
    assert soak.latency_mean_s(m) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        soak.parse_metrics("inspector_bunches_total{decision=reject} 1\n")


def test_soak_memory_growth_after_warmup() -> None:
    flat = [(float(t), 100_000.0 + (50_000.0 if t < 10 else 0.0)) for t in range(100)]
    assert soak.memory_growth(flat, 10.0)["growth_pct"] == pytest.approx(0.0)
    leaking = [(float(t), 100_000.0 + 1_000.0 * t) for t in range(100)]
    assert soak.memory_growth(leaking, 10.0)["growth_pct"] > 5.0
    assert soak.memory_growth(leaking[:3], 0.0)["growth_pct"] is None
    assert soak.rss_kb(-1) is None and soak.children(-1) == []


def test_soak_accounting_finds_lost_and_uncounted_rejects() -> None:
    decisions = [{"bunch_id": b, "decision": "reject"} for b in (1, 2, 3, 4)] + [{"bunch_id": 5, "decision": "pass"}]
    events = [
        {"event": "reject", "bunch_id": 1},
        {"event": "fired", "bunch_id": 1},
        {"event": "reject", "bunch_id": 2},
        {"event": "refused", "bunch_id": 2},
        {"event": "reject", "bunch_id": 3},  # received, never fired, not counted: an uncounted miss
    ]  # bunch 4 never arrived
    acc = soak.account(decisions, events, missed_bunches={2})
    assert acc.daemon_rejects == 4 and acc.received == 3 and acc.fired == 1 and acc.late == 1
    assert acc.lost == [4] and acc.uncounted_misses == [3, 4] and not acc.ok
    good = soak.account(decisions[:2], events[:4], missed_bunches={2})
    assert good.ok and good.lost == [] and good.uncounted_misses == []


@pytest.mark.slow
def test_soak_short_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "soak.json"
    args = [
        "soak",
        "--seconds",
        "14",
        "--warmup-s",
        "4",
        "--clip-s",
        "4",
        "--width",
        "320",
        "--height",
        "240",
        "--fps",
        "10",
        "--work",
        str(tmp_path),
        "--json",
        str(out),
    ]
    status = cli_main(args)
    result = json.loads(out.read_text())
    summary = capsys.readouterr().out
    assert "checks:" in summary
    assert result["daemon_exit"] == 0 and result["rss_samples"] >= 8
    assert result["passed"]["zero_rejects_lost"] and result["passed"]["every_miss_counted"]
    assert result["passed"]["fires_on_time"] and result["passed"]["no_spider_passed"], result["ejector"]
    assert result["metrics"]["frames_captured"] > 0
    assert status in (0, 1)  # memory growth over 14 s on a shared machine is reported, not asserted here


def test_bench_and_soak_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "--quick", "--model", str(tmp_path / "none.onnx"), "--work", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == f"inspector: error: {tmp_path / 'none.onnx'}: model not found; give an .onnx with its manifest\n"
    assert cli_main(["soak", "--seconds", "10", "--warmup-s", "10", "--work", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "inspector: error: --seconds 10 must exceed --warmup-s 10\n"
