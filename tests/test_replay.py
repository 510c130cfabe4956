from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import pytest
import yaml

from inspector.cli import main
from inspector.config import load_config
from tests.drawn import DrawnBunch, check_rows_against_truth, scene, write_footage
from tests.spot_model import write_spot_model


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    root = tmp_path_factory.mktemp("footage")
    video, cal, labels = write_footage(root)
    return video, cal, labels, write_spot_model(root)


def replay(footage: tuple[Path, Path, Path, Path], out: Path, *extra: str) -> int:
    video, cal, _, model = footage
    return main(["replay", str(video), "--calibration", str(cal), "--model", str(model), "--out", str(out), *extra])


def decisions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]


def test_replay_writes_decisions_evidence_report_and_plots(
    footage: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert replay(footage, out, "--labels", str(footage[2]), "--video") == 0
    rows = decisions(out)
    assert [r["bunch_id"] for r in rows] == [1, 2, 3, 4]
    keys = {
        "bunch_id",
        "decision",
        "reason",
        "score",
        "frame",
        "bbox_xyxy",
        "spider_xy",
        "fire_at_s",
        "inspected_frames",
    }
    assert all(keys <= set(r) for r in rows)
    assert [r["reason"] for r in rows] == ["pass", "spider", "pass", "spider"]
    by_drawn = check_rows_against_truth(rows, scene(), 10.0)
    assert {bid: r["reason"] for bid, r in by_drawn.items()} == {1: "pass", 2: "spider", 3: "pass", 4: "spider"}
    assert sorted(p.name for p in (out / "evidence").iterdir()) == ["bunch_000002.jpg", "bunch_000004.jpg"]
    assert cv2.imread(str(out / "evidence" / "bunch_000002.jpg")) is not None
    spiders = [r for r in rows if r["reason"] == "spider"]  # fields added for people: reason in words, frames, picture
    assert all(r["evidence"] == f"bunch_{r['bunch_id']:06d}.jpg" and r["threshold"] == 0.5 for r in spiders)
    assert all("at or above the threshold" in r["detail"] and len(r["judged_frames"]) >= 2 for r in spiders)
    page = (out / "review.html").read_text()  # the review page, data embedded, newest reject first
    assert page.index('"evidence": "bunch_000004.jpg"') < page.index('"evidence": "bunch_000002.jpg"')
    report = json.loads((out / "report.json").read_text())
    assert (report["tp"], report["fn"], report["fp"], report["tn"]) == (2, 0, 0, 2)
    assert report["recall"] == 1.0 and report["false_reject_rate"] == 0.0 and report["roc_auc"] == 1.0
    assert report["recommended_threshold"] is not None
    assert (report["aggregate"], report["agree_frames"]) == ("max", 1)  # the rule its scores were made with
    assert sorted(b["spider"] for b in report["bunches"]) == [False, False, True, True]  # for pooled `inspector tune`
    assert "| **spider** | 2 (caught) | 0 (missed) |" in (out / "report.md").read_text()
    for plot in ("roc.png", "precision_recall.png", "score_histogram.png", "recall_vs_false_reject.png"):
        assert (out / plot).stat().st_size > 1000
    annotated = cv2.VideoCapture(str(out / "annotated.avi"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 40


def test_a_bunch_only_ever_seen_cut_by_the_exit_edge_is_logged_uninspected(
    footage: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    """Bunch 1 is half out of the exit edge when the footage starts and leaves two frames later: never seen whole,
    it is rejected `uninspected` in decisions.jsonl (and has evidence like every reject); the others as usual."""
    bunches = [DrawnBunch(1, 300.0, 120.0, 40.0, None)] + [replace(b, bunch_id=b.bunch_id + 1) for b in scene()]
    video, cal, labels = write_footage(tmp_path / "edge", bunches=bunches)
    out = tmp_path / "run"
    args = ["replay", str(video), "--calibration", str(cal), "--model", str(footage[3]), "--out", str(out)]
    assert main([*args, "--labels", str(labels)]) == 0
    by_drawn = check_rows_against_truth(decisions(out), bunches, 10.0, through_frame=39)
    assert {bid: (r["decision"], r["reason"]) for bid, r in by_drawn.items()} == {
        1: ("reject", "uninspected"),
        2: ("pass", "pass"),
        3: ("reject", "spider"),
        4: ("pass", "pass"),
        5: ("reject", "spider"),
    }
    assert by_drawn[1]["inspected_frames"] == 1  # frame 0 showed it, cut by the edge
    report = json.loads((out / "report.json").read_text())
    assert (report["tp"], report["fn"], report["fp"], report["tn"]) == (
        2,
        0,
        1,
        2,
    )  # the fail-safe reject costs a clean bunch


def test_same_footage_same_decisions(footage: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    assert replay(footage, tmp_path / "a", "--no-evidence") == 0
    assert replay(footage, tmp_path / "b", "--no-evidence") == 0
    assert (tmp_path / "a" / "decisions.jsonl").read_bytes() == (tmp_path / "b" / "decisions.jsonl").read_bytes()


def test_image_folder_replays_like_the_video(footage: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    capture = cv2.VideoCapture(str(footage[0]))
    n = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        cv2.imwrite(str(folder / f"{n:05d}.png"), frame)
        n += 1
    _, cal, _, model = footage
    out = tmp_path / "folder_run"
    assert (
        main(
            ["replay", str(folder), "--calibration", str(cal), "--model", str(model), "--out", str(out), "--fps", "10"]
        )
        == 0
    )
    assert [r["reason"] for r in decisions(out)] == ["pass", "spider", "pass", "spider"]


def test_tune_writes_the_recommended_threshold_into_a_config_copy(
    footage: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    base = tmp_path / "config.yaml"
    base.write_text(f"model:\n  path: {footage[3]}\ndecision:\n  threshold: 0.5\n")
    assert (
        replay(
            footage,
            out,
            "--labels",
            str(footage[2]),
            "--config",
            str(base),
            "--write-threshold",
            str(tmp_path / "tuned.yaml"),
        )
        == 0
    )
    recommended = json.loads((out / "report.json").read_text())["recommended_threshold"]
    tuned = load_config(tmp_path / "tuned.yaml")
    assert tuned.decision.threshold == pytest.approx(recommended, abs=1e-6)
    assert main(["tune", str(out / "report.json"), "--config", str(base), "--out", str(tmp_path / "t2.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "t2.yaml").read_text())["decision"]["threshold"] == pytest.approx(
        recommended, abs=1e-6
    )


@pytest.mark.parametrize("kind", ["missing", "zero-byte", "garbage"])
def test_unreadable_footage_is_one_clear_line(
    footage: tuple[Path, Path, Path, Path], tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.avi"
    if kind == "zero-byte":
        bad.write_bytes(b"")
    elif kind == "garbage":
        bad.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    _, cal, _, model = footage
    assert (
        main(["replay", str(bad), "--calibration", str(cal), "--model", str(model), "--out", str(tmp_path / "o")]) == 1
    )
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_truncated_video_keeps_what_was_decided(
    footage: tuple[Path, Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = footage[0].read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 2 // 3])
    _, cal, _, model = footage
    out = tmp_path / "o"
    status = main(["replay", str(cut), "--calibration", str(cal), "--model", str(model), "--out", str(out)])
    rows = decisions(out)
    assert rows, "decisions made before the break must be kept"
    assert status == 1  # a broken file is an error, never a clean end of footage
    check_rows_against_truth(rows, scene(), 10.0)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"inspector: error: {cut}") and "truncated or corrupt" in err


def test_labels_that_match_nothing_say_so_and_keep_decisions(
    footage: tuple[Path, Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"bunch_id": 1, "spider": True, "track": [[0, 0, 0, 5, 5]], "spider_track": []}) + "\n")
    out = tmp_path / "o"
    assert replay(footage, out, "--labels", str(wrong)) == 1
    assert "no decision matches any labelled bunch" in capsys.readouterr().err
    assert len(decisions(out)) == 4 and (out / "report.json").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    assert replay(footage, tmp_path / "o2", "--labels", str(bad)) == 1
    assert "bad.jsonl:1: not a label line" in capsys.readouterr().err


def test_realtime_pace_on_a_machine_too_slow_drops_frames_and_never_passes_uninspected(
    footage: tuple[Path, Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1000 fps footage of the same belt (0.3 px per frame): 1 ms per frame is less than any machine needs
    video, cal, _ = write_footage(tmp_path / "fast", n_frames=1000, fps=1000.0)
    out = tmp_path / "rt"
    args = ["replay", str(video), "--calibration", str(cal), "--model", str(footage[3]), "--out", str(out)]
    assert main([*args, "--pace", "realtime", "--no-evidence"]) == 0
    printed = capsys.readouterr().out
    dropped = int(printed.split(" inspected, ")[1].split(" dropped")[0])
    assert dropped > 0
    rows = decisions(out)
    # 300 px of belt in all: bunch 1 (clean) and bunch 2 (spider) are in view at the end, the rest never came
    by_drawn = check_rows_against_truth(rows, scene(), 1000.0)
    assert sorted(by_drawn) == [1, 2]
    assert by_drawn[2]["decision"] == "reject"


def test_a_recorded_clip_replays_to_the_same_decisions(footage: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    from inspector.config import RecordingConfig
    from inspector.recording import Recorder

    video, cal, _, model = footage
    capture = cv2.VideoCapture(str(video))
    with Recorder(RecordingConfig(dir=tmp_path / "clips", seconds=10.0), fps=10.0) as recorder:
        seq = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            recorder.add(frame, seq, seq / 10.0)
            seq += 1
        recorder.snapshot()
    clips = sorted((tmp_path / "clips").glob("*.avi"))
    assert len(clips) == 1
    for name, path in (("original", video), ("clip", clips[0])):
        args = ["replay", str(path), "--calibration", str(cal), "--model", str(model), "--out", str(tmp_path / name)]
        assert main([*args, "--no-evidence"]) == 0
    original = [(r["bunch_id"], r["decision"], r["reason"], r["frame"]) for r in decisions(tmp_path / "original")]
    assert original == [(r["bunch_id"], r["decision"], r["reason"], r["frame"]) for r in decisions(tmp_path / "clip")]
