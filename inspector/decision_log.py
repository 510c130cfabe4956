"""The decision log and evidence images, written the same way by the daemon and by replay.

`decisions.jsonl`: one JSON object per decided bunch (`Decision.to_json_dict`), line-buffered, so a run that breaks
off keeps every line written before. The daemon appends across restarts and adds the wall-clock `t_unix_s`; replay
starts the file afresh (the same footage always gives the same file).

Evidence: one JPEG per reject, `<run>bunch_<id>.jpg` in the evidence folder (`evidence_name`): the bunch as it was
inspected, the schematic of an unseen stretch of belt, or — when no frame was kept — a card with the verdict and the
reason (`evidence.render_any`). The row of a reject whose picture was written names it in `evidence` (the file name
in the evidence folder; the review page links it). Bunch ids start again at every run, so the daemon prefixes the
run's start time; replay's prefix is empty. A picture that cannot be written is logged; its row is written anyway.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import TracebackType
from typing import TextIO

import cv2

from inspector.evidence import EvidenceItem, render_any
from inspector.types import Decision

log = logging.getLogger(__name__)


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

    def write(self, decisions: list[Decision], evidence: dict[int, EvidenceItem]) -> None:
        """Log every decision; draw the evidence of every reject (whatever is known of it)."""
        for d in decisions:
            row = d.to_json_dict()
            if self.wall_clock:
                row["t_unix_s"] = round(time.time(), 3)
            if self.evidence_dir is not None and d.decision == "reject":
                name = evidence_name(d.bunch_id, self.prefix)
                if self._draw(self.evidence_dir / name, evidence.get(d.bunch_id), d):
                    row["evidence"] = name
            if self._fh is not None:
                self._fh.write(json.dumps(row) + "\n")

    @staticmethod
    def _draw(path: Path, item: EvidenceItem | None, decision: Decision) -> bool:
        try:
            ok = bool(cv2.imwrite(str(path), render_any(item, decision)))
        except (cv2.error, OSError, ValueError) as exc:
            log.error("bunch %d: evidence picture not written (%s); its decision is logged", decision.bunch_id, exc)
            return False
        if not ok:
            log.error("bunch %d: evidence picture not written to %s; its decision is logged", decision.bunch_id, path)
        return ok

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
