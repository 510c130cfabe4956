"""Bunch-level evaluation of a replay against labels: matching, confusion matrix, ROC AUC, threshold sweep, plots.

Matching: a decision names the frame in which its bunch was most central and its box there; it is matched to the
labelled bunch whose box in that same frame overlaps it most (IoU >= `MIN_IOU`), one-to-one, best overlaps first.
A labelled bunch no decision matched counts as *passed* (the conservative reading for recall) and is listed.

Sweep: at threshold t a bunch is rejected when its score >= t or it was rejected as `uninspected` (the fail-safe
does not depend on the threshold). The recommended threshold is the highest one that reaches the target recall,
so the false-reject rate is as low as that recall allows.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inspector.errors import InspectorError
from inspector.types import Box

MIN_IOU = 0.3


@dataclass(frozen=True)
class LabelledBunch:
    bunch_id: int
    spider: bool
    boxes: dict[int, Box]  # frame -> box


def load_labels(path: Path) -> list[LabelledBunch]:
    """labels.jsonl of the footage generator; a clear one-line error naming the line on bad input."""
    if not path.is_file():
        raise InspectorError(f"{path}: labels file not found; give the labels.jsonl written with the footage")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            boxes = {int(f): Box(int(x1), int(y1), int(x2), int(y2)) for f, x1, y1, x2, y2 in row["track"]}
            out.append(LabelledBunch(int(row["bunch_id"]), bool(row["spider"]), boxes))
        except (ValueError, KeyError, TypeError) as exc:
            raise InspectorError(
                f"{path}:{n}: not a label line ({exc}); expected {{bunch_id, spider, track: [[frame, x1, y1, x2, y2], ...]}}"
            ) from None
    return out


@dataclass
class Matched:
    label_id: int
    spider: bool
    decision: dict[str, Any] | None  # None: no decision matched this labelled bunch


def match(decisions: list[dict[str, Any]], labels: list[LabelledBunch]) -> tuple[list[Matched], list[dict[str, Any]]]:
    """One-to-one matching by IoU in the decision's frame. Returns (per label, unmatched decisions)."""
    pairs = []
    for di, d in enumerate(decisions):
        box = Box(*d["bbox_xyxy"])
        for li, lab in enumerate(labels):
            lbox = lab.boxes.get(int(d["frame"]))
            if lbox is not None:
                iou = box.iou(lbox)
                if iou >= MIN_IOU:
                    pairs.append((iou, di, li))
    pairs.sort(reverse=True)
    used_d: set[int] = set()
    used_l: dict[int, int] = {}
    for _, di, li in pairs:
        if di in used_d or li in used_l:
            continue
        used_d.add(di)
        used_l[li] = di
    matched = [
        Matched(lab.bunch_id, lab.spider, decisions[used_l[li]] if li in used_l else None)
        for li, lab in enumerate(labels)
    ]
    unmatched = [d for di, d in enumerate(decisions) if di not in used_d]
    return matched, unmatched


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Mann-Whitney AUC (ties count half); None when a class is absent."""
    pos, neg = scores[positive], scores[~positive]
    if pos.size == 0 or neg.size == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(order.size, np.float64)
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < allv.size:  # average ranks over ties
        j = i
        while j + 1 < allv.size and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


@dataclass
class SweepRow:
    threshold: float
    recall: float
    false_reject_rate: float
    precision: float


@dataclass(frozen=True)
class BunchScore:
    """One labelled bunch as the replay judged it: kept in report.json so several footages can be pooled."""

    label_id: int
    spider: bool
    score: float  # 0 when no decision matched the label
    fail_safe: bool  # rejected as uninspected, whatever the threshold


def sweep(bunches: list[BunchScore], threshold: float) -> list[SweepRow]:
    """Recall, false-reject rate and precision at every bunch score (and `threshold`), highest first; a fail-safe
    reject counts as rejected at every threshold."""
    positive = np.array([b.spider for b in bunches], bool)
    scores = np.array([b.score for b in bunches], np.float64)
    failsafe = np.array([b.fail_safe for b in bunches], bool)
    rows = []
    for t in sorted({*scores.tolist(), threshold, 1.0 + 1e-9}, reverse=True):
        s_tp, s_fn, s_fp, s_tn = _rates((scores >= t) | failsafe, positive)
        rows.append(
            SweepRow(
                t,
                _div(s_tp, s_tp + s_fn) or 0.0,
                _div(s_fp, s_fp + s_tn) or 0.0,
                _div(s_tp, s_tp + s_fp) or (1.0 if s_fp == 0 else 0.0),
            )
        )
    return rows


def recommend(rows: list[SweepRow], target_recall: float) -> SweepRow | None:
    """The highest threshold (fewest false rejects) whose recall reaches the target; None when none does."""
    reaching = [row for row in rows if row.recall >= target_recall and row.threshold <= 1.0]
    return max(reaching, key=lambda row: row.threshold) if reaching else None


@dataclass
class Report:
    labelled_bunches: int
    spider_bunches: int
    decisions: int
    tp: int
    fn: int
    fp: int
    tn: int
    recall: float | None
    false_reject_rate: float | None
    precision: float | None
    roc_auc: float | None
    uninspected: int
    unmatched_decisions: int
    unmatched_labels: list[int]
    threshold: float
    target_recall: float
    recommended_threshold: float | None
    sweep: list[SweepRow] = field(default_factory=list)
    bunches: list[BunchScore] = field(default_factory=list)
    aggregate: str = "max"  # the decision rule the scores were made with: a threshold only means something with it
    agree_frames: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _rates(rejected: np.ndarray, positive: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.sum(rejected & positive))
    fn = int(np.sum(~rejected & positive))
    fp = int(np.sum(rejected & ~positive))
    tn = int(np.sum(~rejected & ~positive))
    return tp, fn, fp, tn


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def evaluate(
    decisions: list[dict[str, Any]],
    labels: list[LabelledBunch],
    threshold: float,
    target_recall: float = 0.99,
    rule: tuple[str, int] = ("max", 1),
) -> tuple[Report, list[Matched]]:
    """Bunch-level figures of one replay; `rule` = (decision.aggregate, decision.agree_frames) it was made with."""
    matched, unmatched = match(decisions, labels)
    bunches = [
        BunchScore(
            m.label_id,
            m.spider,
            float(m.decision["score"]) if m.decision else 0.0,
            bool(m.decision and m.decision["reason"] == "uninspected"),
        )
        for m in matched
    ]
    positive = np.array([b.spider for b in bunches], bool)
    scores = np.array([b.score for b in bunches], np.float64)
    rejected = np.array([bool(m.decision and m.decision["decision"] == "reject") for m in matched], bool)
    tp, fn, fp, tn = _rates(rejected, positive)
    rows = sweep(bunches, threshold)
    best = recommend(rows, target_recall)
    report = Report(
        labelled_bunches=len(labels),
        spider_bunches=int(positive.sum()),
        decisions=len(decisions),
        tp=tp,
        fn=fn,
        fp=fp,
        tn=tn,
        recall=_div(tp, tp + fn),
        false_reject_rate=_div(fp, fp + tn),
        precision=_div(tp, tp + fp),
        roc_auc=roc_auc(scores, positive),
        uninspected=sum(b.fail_safe for b in bunches),
        unmatched_decisions=len(unmatched),
        unmatched_labels=[m.label_id for m in matched if m.decision is None],
        threshold=threshold,
        target_recall=target_recall,
        recommended_threshold=None if best is None else best.threshold,
        sweep=rows,
        bunches=bunches,
        aggregate=rule[0],
        agree_frames=rule[1],
    )
    return report, matched


def read_report(path: Path) -> dict[str, Any]:
    """report.json of `inspector replay --labels`; one clear line when it is missing or not a report."""
    if not path.is_file():
        raise InspectorError(f"{path}: report not found; run `inspector replay ... --labels LABELS` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InspectorError(f"{path}: not a replay report ({exc}); give the report.json a replay wrote") from None
    if (
        not isinstance(data, dict)
        or not {"recommended_threshold", "target_recall"} <= data.keys()
        or not isinstance(data["target_recall"], int | float)
        or not isinstance(data.get("aggregate", "max"), str)
        or not isinstance(data.get("agree_frames", 1), int)
    ):
        raise InspectorError(f"{path}: not a replay report; give the report.json of `inspector replay --labels`")
    return data


def report_rule(report: dict[str, Any]) -> tuple[str, int]:
    """(aggregate, agree_frames) a report's scores were made with; reports older than the field: max, 1."""
    return str(report.get("aggregate", "max")), int(report.get("agree_frames", 1))


def pool_bunches(reports: dict[Path, dict[str, Any]]) -> tuple[list[BunchScore], tuple[str, int]]:
    """Every labelled bunch of several replays, for one threshold over all their footage. The reports must carry
    per-bunch scores and share one decision rule (scores made with different rules do not mix)."""
    if not reports:
        raise InspectorError("no report given; name at least one report.json")
    bunches: list[BunchScore] = []
    rules = {path: report_rule(report) for path, report in reports.items()}
    first_path, first_rule = next(iter(rules.items()))
    for path, report in reports.items():
        if rules[path] != first_rule:
            raise InspectorError(
                f"{path}: made with decision.aggregate {rules[path][0]}, agree_frames {rules[path][1]}, but "
                f"{first_path} with {first_rule[0]}, {first_rule[1]}; pool replays made with one decision rule"
            )
        if "bunches" not in report:
            raise InspectorError(f"{path}: has no per-bunch scores (written by an older version); replay it again")
        try:
            bunches += [
                BunchScore(int(b["label_id"]), bool(b["spider"]), float(b["score"]), bool(b["fail_safe"]))
                for b in report["bunches"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise InspectorError(f"{path}: a bunch entry is malformed ({exc}); replay it again") from None
    return bunches, first_rule


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def to_markdown(report: Report, footage: str) -> str:
    r = report
    lines = [
        f"# Replay report — {footage}",
        "",
        f"{r.labelled_bunches} labelled bunches ({r.spider_bunches} with a spider), {r.decisions} decisions, "
        f"threshold {r.threshold:.3f}.",
        "",
        "| | decided reject | decided pass |",
        "|---|---|---|",
        f"| **spider** | {r.tp} (caught) | {r.fn} (missed) |",
        f"| **clean** | {r.fp} (false reject) | {r.tn} |",
        "",
        "| figure | value |",
        "|---|---|",
        f"| recall (spider bunches rejected) | {_pct(r.recall)} |",
        f"| false-reject rate (clean bunches rejected) | {_pct(r.false_reject_rate)} |",
        f"| precision | {_pct(r.precision)} |",
        f"| ROC AUC (bunch scores) | {'n/a' if r.roc_auc is None else f'{r.roc_auc:.3f}'} |",
        f"| rejected as uninspected (fail-safe) | {r.uninspected} |",
        f"| decisions matching no label | {r.unmatched_decisions} |",
        f"| labels matching no decision | {len(r.unmatched_labels)} {r.unmatched_labels[:20]} |",
        "",
        f"Recommended threshold for recall >= {_pct(r.target_recall)}: "
        + ("none reaches it" if r.recommended_threshold is None else f"**{r.recommended_threshold:.4f}**"),
        "",
        "Plots: `roc.png`, `precision_recall.png`, `score_histogram.png`, `recall_vs_false_reject.png`.",
        "",
    ]
    return "\n".join(lines)


def write_plots(report: Report, matched: list[Matched], out_dir: Path) -> list[Path]:
    """PNG plots; needs matplotlib (`pip install .[plots]`). Returns the files written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = report.sweep
    recall = [r.recall for r in rows]
    frr = [r.false_reject_rate for r in rows]
    precision = [r.precision for r in rows]
    written = []

    def save(fig: Any, name: str) -> None:
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(frr, recall, marker=".", drawstyle="steps-post")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    auc = "n/a" if report.roc_auc is None else f"{report.roc_auc:.3f}"
    ax.set(xlabel="false-reject rate", ylabel="recall", title=f"ROC (AUC {auc})", xlim=(0, 1), ylim=(0, 1.02))
    save(fig, "roc.png")

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(recall, precision, marker=".")
    ax.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1.02), ylim=(0, 1.02))
    save(fig, "precision_recall.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    pos = [m.decision["score"] for m in matched if m.spider and m.decision]
    neg = [m.decision["score"] for m in matched if not m.spider and m.decision]
    bins = np.linspace(0, 1, 26).tolist()
    ax.hist([neg, pos], bins=bins, label=["clean bunches", "spider bunches"], color=["tab:green", "tab:red"])
    ax.axvline(report.threshold, c="k", ls="--", label=f"threshold {report.threshold:.2f}")
    ax.set(xlabel="bunch score", ylabel="bunches", title="score histogram per class")
    ax.legend()
    save(fig, "score_histogram.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    thresholds = [min(r.threshold, 1.0) for r in rows]
    ax.plot(thresholds, recall, label="recall")
    ax.plot(thresholds, frr, label="false-reject rate")
    if report.recommended_threshold is not None:
        ax.axvline(report.recommended_threshold, c="k", ls="--", label="recommended")
    ax.set(xlabel="threshold", ylabel="rate", title="recall and false rejects against threshold", ylim=(0, 1.02))
    ax.legend()
    save(fig, "recall_vs_false_reject.png")
    return written
