"""The decision log shared by the daemon and replay: rows, append/fresh, wall clock, evidence names."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from inspector.decision_log import DecisionLog, evidence_name, run_prefix
from inspector.evidence import Snapshot
from inspector.types import Box, Decision


def decision(bunch_id: int, verdict: str) -> Decision:
    return Decision(
        bunch_id=bunch_id,
        decision=verdict,
        reason="spider" if verdict == "reject" else "pass",
        score=0.9 if verdict == "reject" else 0.1,
        frame=3,
        bbox_xyxy=(10, 10, 50, 50),
        spider_xy=(30.0, 30.0),
        fire_at_s=4.5,
        inspected_frames=2,
        t_capture_s=0.3,
        across_mm=1.0,
    )


def snapshot() -> Snapshot:
    crop = np.full((60, 60, 3), 90, np.uint8)
    return Snapshot(crop, Box(0, 0, 60, 60), np.zeros((60, 60), np.float32), np.zeros((0, 4)), np.zeros(0), 3)


def test_rows_and_evidence_of_rejects_only(tmp_path: Path) -> None:
    with DecisionLog(tmp_path / "d.jsonl", tmp_path / "ev", append=False, wall_clock=False) as log:
        log.write([decision(1, "pass"), decision(2, "reject")], {1: snapshot(), 2: snapshot()})
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [(r["bunch_id"], r["decision"]) for r in rows] == [(1, "pass"), (2, "reject")]
    assert all("t_unix_s" not in r for r in rows)
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["bunch_000002.jpg"]
    assert cv2.imread(str(tmp_path / "ev" / "bunch_000002.jpg")) is not None


def test_daemon_log_appends_with_wall_clock_and_prefixed_evidence(tmp_path: Path) -> None:
    prefix = run_prefix(0.0)
    for bunch_id in (1, 2):
        with DecisionLog(tmp_path / "d.jsonl", tmp_path / "ev", append=True, wall_clock=True, prefix=prefix) as log:
            log.write([decision(bunch_id, "reject")], {bunch_id: snapshot()})
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [r["bunch_id"] for r in rows] == [1, 2]  # appended, not overwritten
    assert all(isinstance(r["t_unix_s"], float) for r in rows)
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == [evidence_name(1, prefix), evidence_name(2, prefix)]
    assert evidence_name(2, prefix).endswith("-bunch_000002.jpg") and len(prefix) == len("19700101-000000-")


def test_replay_log_starts_afresh_and_nothing_is_written_where_nothing_is_asked(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text("old\n")
    with DecisionLog(tmp_path / "d.jsonl", None, append=False, wall_clock=False) as log:
        log.write([decision(1, "reject")], {1: snapshot()})
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 1
    with DecisionLog(None, None, append=False, wall_clock=False) as log:
        log.write([decision(1, "reject")], {1: snapshot()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]
