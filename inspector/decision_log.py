"""The decision log and evidence images, written the same way by the daemon and by replay.

`decisions.jsonl`: one JSON object per decided bunch (`Decision.to_json_dict`), line-buffered, so a run that breaks
off keeps every line written before. The daemon appends across restarts and adds the wall-clock `t_unix_s`; replay
starts the file afresh (the same footage always gives the same file).

Evidence: one JPEG per rejected bunch that has a snapshot, `<run>bunch_<id>.jpg` in the evidence folder
(`evidence_name`). Bunch ids start again at every run, so the daemon prefixes the run's start time; replay's prefix is
empty.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import TextIO

import cv2

from inspector.evidence import Snapshot, render
from inspector.types import Decision


def evidence_name(bunch_id: int, run_prefix: str = "") -> str:
    """File name of a bunch's evidence image."""
    return f"{run_prefix}bunch_{bunch_id:06d}.jpg"


def run_prefix(start_unix_s: float) -> str:
    """The daemon's evidence prefix for a run started at `start_unix_s` (local time, to the second)."""
    return time.strftime("%Y%m%d-%H%M%S-", time.localtime(start_unix_s))


class DecisionLog:
    """Writes decisions and evidence; both optional (None). Use as a context manager."""

    def __init__(
        self,
        jsonl: Path | None,
        evidence_dir: Path | None,
        *,
        append: bool,
        wall_clock: bool,
        prefix: str = "",
    ) -> None:
        self._fh: TextIO | None = None
        self.wall_clock = wall_clock
        self.prefix = prefix
        self.evidence_dir = evidence_dir
        if jsonl is not None:
            jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._fh = jsonl.open("a" if append else "w", encoding="utf-8", buffering=1)
        if evidence_dir is not None:
            evidence_dir.mkdir(parents=True, exist_ok=True)

    def write(self, decisions: list[Decision], evidence: dict[int, Snapshot]) -> None:
        """Log every decision; draw the evidence of every reject that has a snapshot."""
        for d in decisions:
            if self._fh is not None:
                row = d.to_json_dict()
                if self.wall_clock:
                    row["t_unix_s"] = round(time.time(), 3)
                self._fh.write(json.dumps(row) + "\n")
            snap = evidence.get(d.bunch_id)
            if self.evidence_dir is not None and snap is not None and d.decision == "reject":
                cv2.imwrite(str(self.evidence_dir / evidence_name(d.bunch_id, self.prefix)), render(snap, d))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
