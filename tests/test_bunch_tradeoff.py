"""`inspector tradeoff`: pooled bunch-level figures of several replay reports, per named set."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRADEOFF = [sys.executable, "-m", "inspector", "tradeoff"]


def _report(path: Path, bunches: list[tuple[bool, float, bool]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "recommended_threshold": None,
                "target_recall": 0.99,
                "aggregate": "max",
                "agree_frames": 1,
                "bunches": [
                    {"label_id": i, "spider": s, "score": p, "fail_safe": f} for i, (s, p, f) in enumerate(bunches)
                ],
            }
        )
    )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRADEOFF, *args], capture_output=True, text=True, check=False)


def test_pooled_figures_by_hand(tmp_path: Path) -> None:
    a = _report(tmp_path / "a.json", [(True, 0.9, False), (True, 0.6, False), (False, 0.7, False), (False, 0.2, False)])
    b = _report(tmp_path / "b.json", [(True, 0.4, False), (False, 0.3, False), (False, 0.0, True)])
    plot = tmp_path / "cmp.png"
    proc = _run("--set", "a=", "--set", f"both={a},{b}", "--threshold", "0.5", "--recall", "1.0", "--plot", str(plot))
    assert proc.returncode == 1 and "NAME=REPORT" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run(
        "--set", f"a={a}", "--set", f"both={a},{b}", "--threshold", "0.5", "--recall", "1.0", "--plot", str(plot)
    )
    assert proc.returncode == 0, proc.stderr
    lines = [" ".join(line.split()) for line in proc.stdout.splitlines()]  # column padding aside
    # a: spiders 0.9, 0.6 / clean 0.7, 0.2 -> AUC 3/4; at 0.5: 2/2 caught, 1/2 false rejects
    assert lines[0] == "a: 4 bunches, 2 with a spider, bunch ROC AUC 0.750"
    assert lines[1] == "at 0.500 recall 100.0 %, false rejects 50.0 %"
    assert lines[2] == "for recall >= 100.0 %: 0.600 recall 100.0 %, false rejects 50.0 %"
    # both: the spider at 0.4 needs threshold 0.4; the fail-safe clean bunch is rejected at every threshold
    assert lines[3] == "both: 7 bunches, 3 with a spider, bunch ROC AUC 0.833"  # 10 of 12 pairs in order
    assert lines[4] == "at 0.500 recall 66.7 %, false rejects 50.0 %"
    assert lines[5] == "for recall >= 100.0 %: 0.400 recall 100.0 %, false rejects 50.0 %"
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert (f"plot: {plot}" in proc.stdout) is has_matplotlib and plot.exists() is has_matplotlib


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "x=missing.json"], "report not found"),
        (["--set", "x=r.json", "--threshold", "1.5"], "[0, 1]"),
        (["--set", "x=r.json", "--recall", "0"], "(0, 1]"),
        (["--set", "x=r.json,old.json"], "no per-bunch scores"),
        (["--set", "x=,"], "NAME=REPORT"),
        (["--set", "x=bad.json"], "not a replay report"),
    ],
    ids=["missing", "threshold", "recall", "old-report", "no-report", "bad-target"],
)
def test_mistakes_are_one_line(tmp_path: Path, args: list[str], words: str) -> None:
    _report(tmp_path / "r.json", [(True, 0.9, False), (False, 0.1, False)])
    (tmp_path / "old.json").write_text(json.dumps({"recommended_threshold": 0.5, "target_recall": 0.99}))
    (tmp_path / "bad.json").write_text(json.dumps({"recommended_threshold": 0.5, "target_recall": "high"}))
    proc = subprocess.run([*TRADEOFF, *args], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 1 and words in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
