"""`inspector replay` and `inspector tune`: replay footage through the daemon's pipeline; pick a threshold."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from inspector.config import DEMO_MODEL, Config, ModelConfig, load_calibration, load_config
from inspector.errors import ConfigError, InspectorError
from inspector.yamledit import set_value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="replay a video file or image folder through the inspection pipeline")
    p.add_argument("footage", type=Path, help="video file or folder of images")
    p.add_argument("--calibration", type=Path, required=True, help="calibration YAML of the camera that filmed it")
    p.add_argument("--config", type=Path, help="daemon config (embedded defaults when absent)")
    p.add_argument(
        "--model", type=Path, help=f"ONNX model with its manifest (default: config's, else {DEMO_MODEL.name})"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--labels", type=Path, help="labels.jsonl: write report.json, report.md and plots")
    p.add_argument("--pace", choices=["max", "realtime"], default="max", help="max: every frame; realtime: as a camera")
    p.add_argument("--fps", type=float, help="frame rate (image folders; overrides a video's)")
    p.add_argument("--threshold", type=float, help="override decision.threshold")
    p.add_argument("--target-recall", type=float, default=0.99, help="for the recommended threshold (default 0.99)")
    p.add_argument("--video", action="store_true", help="also write annotated.avi with the heat map overlaid")
    p.add_argument("--no-evidence", action="store_true", help="skip evidence images")
    p.add_argument(
        "--write-threshold",
        type=Path,
        metavar="NEW_CONFIG",
        help="with --labels: write a config copy with the recommended threshold",
    )
    p.set_defaults(func=run_replay)

    t = sub.add_parser(
        "tune",
        help="write the threshold recommended by one or more replay reports (pooled) into a config: only its "
        "decision.threshold line changes",
    )
    t.add_argument("report", type=Path, nargs="+", help="report.json of `inspector replay --labels`; several: pooled")
    t.add_argument("--config", type=Path, help="config to tune (embedded defaults when absent)")
    t.add_argument("--out", type=Path, required=True, help="where to write the tuned config (--config's own path: in place)")
    t.add_argument("--target-recall", type=float, help="recall to reach (default: the reports' own)")
    t.set_defaults(func=run_tune)


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config) if args.config else Config()
    updates: dict[str, object] = {}
    if args.model is not None:
        updates["model"] = ModelConfig.model_validate({**config.model.model_dump(), "path": args.model})
    if args.threshold is not None:
        if not 0 <= args.threshold <= 1:
            raise InspectorError(f"--threshold {args.threshold}: must be between 0 and 1")
        updates["decision"] = config.decision.model_copy(update={"threshold": args.threshold})
    return config.model_copy(update=updates)


def run_replay(args: argparse.Namespace) -> int:
    from inspector.replay import replay, write_report

    calibration = load_calibration(args.calibration)
    try:
        config = _config(args)
    except ValueError as exc:  # pydantic validation of --model
        raise InspectorError(f"--model {args.model}: {str(exc).splitlines()[-1].strip()}") from None
    summary = replay(
        args.footage,
        calibration,
        config,
        args.out,
        pace=args.pace,
        evidence=not args.no_evidence,
        video=args.video,
        fps=args.fps,
    )
    print(f"replay: {summary.line()}")
    print(f"replay: decisions in {args.out / 'decisions.jsonl'}")
    if summary.review_html is not None:
        print(f"replay: rejects to review (open in a browser): {summary.review_html}")
    status = 0
    if summary.error:
        print(f"inspector: error: {summary.error} (decisions up to there are kept)", file=sys.stderr)
        status = 1
    if args.labels:
        report = write_report(args.out, args.labels, config.decision, args.target_recall, str(args.footage))
        print(f"report: {report_line(report)} -> {args.out / 'report.md'}")
        if args.write_threshold:
            write_tuned(args.config, [args.out / "report.json"], args.write_threshold)
    return status


def report_line(report: dict[str, Any]) -> str:
    """The console summary of a replay report, floats rounded: percentages to 0.1, AUC and threshold to 0.001."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    return (
        f"recall {pct(report['recall'])}, false-reject rate {pct(report['false_reject_rate'])}, "
        f"precision {pct(report['precision'])}, ROC AUC {num(report['roc_auc'])}, "
        f"recommended threshold {num(report['recommended_threshold'])}"
    )


def write_tuned(
    config_path: Path | None, report_paths: list[Path], out: Path, target_recall: float | None = None
) -> float:
    """Copy the config with the threshold that reaches the recall target on every labelled bunch of the reports."""
    from inspector.report import pool_bunches, read_report, recommend, report_rule, sweep

    reports = {path: read_report(path) for path in report_paths}
    targets = {float(r["target_recall"]) for r in reports.values()}
    if target_recall is None and len(targets) > 1:
        raise InspectorError(f"the reports aim at different recalls {sorted(targets)}; give --target-recall")
    target = target_recall if target_recall is not None else targets.pop()
    if not 0 < target <= 1:
        raise InspectorError(f"--target-recall {target}: must be in (0, 1]")
    config = load_config(config_path) if config_path is not None else Config()  # refuse to copy a broken config
    first = next(iter(reports.values()))
    if len(reports) == 1 and target_recall is None and "bunches" not in first:
        # a report older than per-bunch scores: its own recommendation, as it was written
        threshold, rule, how = first.get("recommended_threshold"), report_rule(first), ""
    else:
        bunches, rule = pool_bunches(reports)
        best = recommend(sweep(bunches, config.decision.threshold), target)
        threshold = None if best is None else best.threshold
        how = (
            ""
            if best is None
            else f" ({len(bunches)} bunches, {sum(b.spider for b in bunches)} with a spider, {len(reports)} "
            f"report(s): recall {100 * best.recall:.1f} %, false rejects {100 * best.false_reject_rate:.1f} %)"
        )
    names = ", ".join(str(p) for p in report_paths)
    if threshold is None:
        raise InspectorError(f"{names}: no threshold reaches the target recall {target}; nothing written")
    have = (config.decision.aggregate, config.decision.agree_frames)
    if have != rule:
        raise InspectorError(
            f"{names}: replayed with decision.aggregate {rule[0]}, agree_frames {rule[1]}, but the config has "
            f"{have[0]}, {have[1]}: the threshold would not mean the same; give --config with that rule"
        )
    written = math.floor(float(threshold) * 1e6) / 1e6  # six decimals, never above: a bunch at it stays rejected
    _write_threshold(config_path, out, written, f"{names} (recall target {target})")
    print(f"tune: decision.threshold = {written:.6g} written to {out}{how}")
    return written


def _write_threshold(config_path: Path | None, out: Path, threshold: float, source: str) -> None:
    """Write `out`: the config at `config_path` with only its `decision.threshold` line changed (comments, order and
    format kept), or a new two-key config; validated before it replaces anything."""
    if config_path is None:
        text = f"# written by `inspector tune` from {source}\n" + set_value("", ("decision", "threshold"), threshold)
    else:
        text = set_value(config_path.read_text(encoding="utf-8"), ("decision", "threshold"), threshold, str(config_path))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_config(tmp)  # relative paths resolve against the new file's folder: check they still do
        tmp.replace(out)
    except ConfigError as exc:
        first = str(exc).splitlines()[0].replace(str(tmp), str(out))
        raise InspectorError(
            f"{out}: the tuned copy would not validate there ({first}); write it beside {config_path} or make its "
            "paths absolute"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def run_tune(args: argparse.Namespace) -> int:
    write_tuned(args.config, args.report, args.out, args.target_recall)
    return 0
