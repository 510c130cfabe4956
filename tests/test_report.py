"""Bunch-level report helpers and `inspector tune` over one or several replay reports (pooled)."""

from __future__ import annotations

import difflib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from inspector.cli import main
from inspector.errors import InspectorError
from inspector.report import BunchScore, pool_bunches, read_report, recommend, sweep


def bunch(i: int, spider: bool, score: float, fail_safe: bool = False) -> BunchScore:
    return BunchScore(i, spider, score, fail_safe)


A = [bunch(1, True, 0.9), bunch(2, True, 0.6), bunch(3, False, 0.7), bunch(4, False, 0.2)]
B = [bunch(1, True, 0.4), bunch(2, False, 0.3), bunch(3, False, 0.0, fail_safe=True)]


@pytest.mark.parametrize(
    "bunches, target, threshold, recall, false_rejects",
    [
        ([], 0.5, None, None, None),  # nothing labelled: no threshold reaches any recall
        (A, 1.0, 0.6, 1.0, 0.5),
        (A, 0.5, 0.9, 0.5, 0.0),
        (A + B, 1.0, 0.4, 1.0, 2 / 4),  # pooled: the fail-safe reject counts at every threshold
        (A + B, 0.6, 0.6, 2 / 3, 2 / 4),
        # the only spider bunch is a fail-safe reject: every threshold reaches it; the highest row <= 1 is the config's
        ([bunch(1, True, 0.0, fail_safe=True), bunch(2, False, 0.1)], 1.0, 0.5, 1.0, 0.0),
    ],
    ids=["empty", "one-report-all", "one-report-half", "pooled-all", "pooled-two-thirds", "fail-safe-only"],
)
def test_recommend_is_the_highest_threshold_reaching_the_recall(
    bunches: list[BunchScore], target: float, threshold: float | None, recall: float, false_rejects: float
) -> None:
    best = recommend(sweep(bunches, 0.5), target)
    if threshold is None:
        assert best is None
        return
    assert best is not None
    assert (best.threshold, best.recall, best.false_reject_rate) == pytest.approx((threshold, recall, false_rejects))


def _report(path: Path, bunches: list[BunchScore] | None, agree_frames: int = 1, target: float = 1.0) -> Path:
    data: dict[str, object] = {"recommended_threshold": 0.123, "target_recall": target}
    if bunches is not None:
        data |= {"bunches": [b.__dict__ for b in bunches], "aggregate": "max", "agree_frames": agree_frames}
    path.write_text(json.dumps(data))
    return path


def test_tune_pools_several_reports_into_one_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _report(tmp_path / "a.json", A), _report(tmp_path / "b.json", B)
    assert main(["tune", str(a), "--out", str(tmp_path / "one.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "one.yaml").read_text())["decision"]["threshold"] == pytest.approx(0.6)
    assert main(["tune", str(a), str(b), "--out", str(tmp_path / "both.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "both.yaml").read_text())["decision"]["threshold"] == pytest.approx(0.4)
    out = capsys.readouterr().out
    assert "7 bunches, 3 with a spider, 2 report(s): recall 100.0 %, false rejects 50.0 %" in out
    assert main(["tune", str(a), str(b), "--target-recall", "0.6", "--out", str(tmp_path / "t.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "t.yaml").read_text())["decision"]["threshold"] == pytest.approx(0.6)


def test_tune_keeps_a_report_without_per_bunch_scores_working_alone(tmp_path: Path) -> None:
    old = _report(tmp_path / "old.json", None)
    assert main(["tune", str(old), "--out", str(tmp_path / "o.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "o.yaml").read_text())["decision"]["threshold"] == pytest.approx(0.123)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: [_report(d / "a.json", A), _report(d / "old.json", None)], "no per-bunch scores"),
        (lambda d: [_report(d / "a.json", A), _report(d / "k2.json", B, agree_frames=2)], "one decision rule"),
        (lambda d: [_report(d / "a.json", A), _report(d / "b.json", B, target=0.9)], "--target-recall"),
        (lambda d: [_report(d / "k2.json", A, agree_frames=2)], "agree_frames 2, but the config has max, 1"),
        (lambda d: [_report(d / "a.json", [bunch(1, True, 0.2), bunch(2, False, 0.1)], target=1.0)], None),
        (lambda d: [d / "missing.json"], "report not found"),
        (lambda d: [d / "garbage.json"], "not a replay report"),
    ],
    ids=["old-and-new", "two-rules", "two-targets", "rule-not-in-config", "reachable", "missing", "garbage"],
)
def test_tune_mistakes_are_one_clear_line(
    tmp_path: Path, make: Callable[[Path], list[Path]], words: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "garbage.json").write_text("{not json")
    paths = make(tmp_path)
    status = main(["tune", *map(str, paths), "--out", str(tmp_path / "new.yaml")])
    err = capsys.readouterr().err
    if words is None:  # the control: a well-formed report tunes
        assert status == 0 and err == ""
        return
    assert status != 0 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new.yaml").exists()


def test_tune_writes_the_rule_the_reports_were_made_with_into_the_copy(tmp_path: Path) -> None:
    k2 = _report(tmp_path / "k2.json", A, agree_frames=2)
    base = tmp_path / "config.yaml"
    base.write_text("decision:\n  threshold: 0.5\n  agree_frames: 2\n")
    assert main(["tune", str(k2), "--config", str(base), "--out", str(tmp_path / "new.yaml")]) == 0
    written = yaml.safe_load((tmp_path / "new.yaml").read_text())["decision"]
    assert written == {"threshold": pytest.approx(0.6), "agree_frames": 2}


def test_pool_and_read_report(tmp_path: Path) -> None:
    a, b = _report(tmp_path / "a.json", A), _report(tmp_path / "b.json", B)
    bunches, rule = pool_bunches({a: read_report(a), b: read_report(b)})
    assert bunches == A + B and rule == ("max", 1)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InspectorError, match="not a replay report"):
        read_report(tmp_path / "list.json")


def _changed_lines(before: str, after: str) -> list[str]:
    return [d for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d[:1] in "+-"]


def test_tune_changes_only_the_threshold_line_of_a_commented_config(tmp_path: Path) -> None:
    deploy = Path(__file__).resolve().parents[1] / "deploy"
    base = tmp_path / "config.yaml"
    shutil.copy(deploy / "config.example.yaml", base)
    shutil.copy(deploy / "calibration.yaml", tmp_path / "calibration.yaml")
    before = base.read_text()
    a = _report(tmp_path / "a.json", A)
    assert main(["tune", str(a), "--config", str(base), "--out", str(tmp_path / "tuned.yaml")]) == 0
    after = (tmp_path / "tuned.yaml").read_text()
    changed = _changed_lines(before, after)
    assert len(changed) == 2, changed  # one line out, one line in
    assert changed[0].startswith("-   threshold: 0.5 ") and changed[1].startswith("+   threshold: 0.6 ")
    assert changed[1].endswith("# bunch spider probability at or above which the bunch is rejected")
    comments = [line for line in before.splitlines() if line.lstrip().startswith("#")]
    assert comments and all(line in after.splitlines() for line in comments)
    assert len(after.splitlines()) == len(before.splitlines())
    # in place: --out the config itself
    assert main(["tune", str(a), "--config", str(base), "--out", str(base)]) == 0
    assert base.read_text() == after


@pytest.mark.parametrize(
    "text, added",
    [
        ("# line 1\nmodel:\n  batch_size: 4  # tiles\n\n# the end\n", ["+ decision:", "+   threshold: 0.6"]),
        ("decision:\n  aggregate: max  # rule\n\n# next section\nbelt:\n  mode: belt\n", ["+   threshold: 0.6"]),
        ("decision:\nbelt:\n  mode: belt  # segment\n", ["+   threshold: 0.6"]),
    ],
    ids=["no-decision-section", "no-threshold-key", "empty-decision-section"],
)
def test_tune_adds_an_absent_threshold_cleanly(tmp_path: Path, text: str, added: list[str]) -> None:
    base = tmp_path / "config.yaml"
    base.write_text(text)
    assert main(["tune", str(_report(tmp_path / "a.json", A)), "--config", str(base), "--out", str(base)]) == 0
    after = base.read_text()
    assert _changed_lines(text, after) == added
    assert yaml.safe_load(after)["decision"]["threshold"] == pytest.approx(0.6)


def test_tune_refuses_a_copy_whose_relative_paths_break(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "line").mkdir()
    (tmp_path / "line" / "calibration.yaml").write_text(
        (Path(__file__).resolve().parents[1] / "deploy" / "calibration.yaml").read_text()
    )
    base = tmp_path / "line" / "config.yaml"
    base.write_text("calibration: calibration.yaml\n")
    out = tmp_path / "elsewhere" / "config.yaml"
    assert main(["tune", str(_report(tmp_path / "a.json", A)), "--config", str(base), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "would not validate there" in err and "calibration file" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list((tmp_path / "elsewhere").iterdir()) == []


def test_the_console_report_line_rounds_its_figures() -> None:
    from inspector.commands.replay import report_line

    line = report_line(
        {
            "recall": 15 / 22,
            "false_reject_rate": 1 / 3,
            "precision": None,
            "roc_auc": 0.9523809523809523,
            "recommended_threshold": 0.123456789,
        }
    )
    assert line == (
        "recall 68.2 %, false-reject rate 33.3 %, precision n/a, ROC AUC 0.952, recommended threshold 0.123"
    )


def test_the_written_threshold_never_rounds_above_the_spider_it_must_catch(tmp_path: Path) -> None:
    score = 0.12345678  # rounding to six decimals would give 0.123457, above this spider bunch's score
    report = _report(tmp_path / "a.json", [bunch(1, True, score), bunch(2, False, 0.05)], target=1.0)
    assert main(["tune", str(report), "--out", str(tmp_path / "t.yaml")]) == 0
    written = yaml.safe_load((tmp_path / "t.yaml").read_text())["decision"]["threshold"]
    assert written == 0.123456 and written <= score
