"""`inspector run` (the daemon) and `inspector demo` (daemon + generated footage + actuator simulator).

`source.kind: synthetic` (the embedded default) renders conveyor footage once into a cache folder and then runs on
it as a file source, paced at its frame rate — the daemon itself never knows the difference. The cache folder is
named by a SHA-256 digest of what the footage depends on (calibration, frame rate, length, photo folder), so every
run with the same parameters finds it.

`inspector demo` ends with what the run achieved, measured: recall and false-reject rate against the footage's
labels (`report.evaluate`), frames captured / processed / inspected / dropped, decision latency p50 / p99, rejects
sent / acked / fired (the simulator's log) / missed, and says plainly when the machine could not keep up (dropped
frames, rejects sent late or missed, bunches rejected uninspected). While it runs, the reject review page is live
(`review.port`); at the end `review.html` in the out dir keeps it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.config import Config, OutputConfig, SourceConfig, calibration_for, load_config
from inspector.errors import InspectorError

if TYPE_CHECKING:
    from inspector.daemon import Daemon

log = logging.getLogger(__name__)

SYNTH_SECONDS = 60.0
SYNTH_FPS = 10.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the inspection daemon (the systemd service's command)")
    p.add_argument("--config", type=Path, help="daemon config YAML (embedded defaults when absent)")
    p.add_argument("--instance", default="default", help="name of this camera's daemon (shared-memory ring name)")
    p.set_defaults(func=run)

    d = sub.add_parser("demo", help="run the daemon on generated footage with a local actuator simulator")
    d.add_argument("--seconds", type=float, default=SYNTH_SECONDS, help="length of the generated footage")
    d.add_argument("--out", type=Path, help="where to keep footage, decisions and simulator log (default: a temp dir)")
    d.add_argument("--real", type=Path, help="compose footage from real photos (e.g. ../shared/realdata)")
    d.add_argument(
        "--config", type=Path, help="daemon config to start from (ports, model, decision); source and output are the demo's"
    )
    d.set_defaults(func=demo)


FOOTAGE_GENERATOR = "camera-model-1"  # bump when generated footage changes, so cached clips are made again


def footage_key(config: Config, seconds: float, real: Path | None) -> str:
    """Digest of everything the generated footage depends on: the same parameters give the same folder name in
    every process (Python's `hash()` of a string is randomised per process)."""
    calibration = calibration_for(config)
    params = {
        "calibration": calibration.model_dump(mode="json"),
        "fps": config.source.fps or SYNTH_FPS,
        "seconds": seconds,
        "real": None if real is None else str(real.resolve()),
        "seed": 1,
        "generator": FOOTAGE_GENERATOR,
    }
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def synthetic_folder(config: Config, cache_dir: Path, seconds: float = SYNTH_SECONDS, real: Path | None = None) -> Path:
    """The cache folder of the footage for these parameters (footage.avi, labels.jsonl, calibration.yaml)."""
    return cache_dir / f"synthetic-{footage_key(config, seconds, real)}"


def synthetic_source(
    config: Config, cache_dir: Path, seconds: float = SYNTH_SECONDS, real: Path | None = None
) -> SourceConfig:
    """Render footage for this calibration once (cached by its parameters); a file source paced in real time."""
    from inspector.synth.footage import generate_footage

    calibration = calibration_for(config)
    fps = config.source.fps or SYNTH_FPS
    folder = synthetic_folder(config, cache_dir, seconds, real)
    video = folder / "footage.avi"
    if not (video.is_file() and (folder / "labels.jsonl").is_file()):
        log.info("rendering %.0f s of synthetic conveyor footage into %s", seconds, folder)
        generate_footage(folder, fps=fps, seconds=seconds, calibration=calibration, seed=1, real_dir=real)
    return SourceConfig(kind="file", uri=str(video), pace="realtime", fps=fps, loop=config.source.loop)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "grape-spider-inspector"


def run(args: argparse.Namespace) -> int:
    from inspector.daemon import Daemon

    config = load_config(args.config) if args.config else Config()
    if config.source.kind == "synthetic":
        config = config.model_copy(update={"source": synthetic_source(config, _cache_dir())})
    return Daemon(config, args.config, args.instance).run()


def demo(args: argparse.Namespace) -> int:
    """Footage → daemon → simulator, all local; prints where to look and, at the end, what the run achieved."""
    from inspector.daemon import Daemon
    from inspector.review import write_static_page

    out = args.out or Path(tempfile.mkdtemp(prefix="inspector-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    start = load_config(args.config) if args.config else Config()
    jsonl = out / "decisions.jsonl"
    base = start.model_copy(update={"output": OutputConfig(decisions_jsonl=jsonl, evidence_dir=out / "evidence")})
    cached = synthetic_folder(base, _cache_dir(), args.seconds, args.real) / "footage.avi"
    print(
        f"demo: {'using the cached' if cached.is_file() else 'rendering'} {args.seconds:.0f} s of conveyor footage "
        f"({cached.parent}) ...",
        flush=True,
    )
    config = base.model_copy(update={"source": synthetic_source(base, _cache_dir(), args.seconds, args.real)})
    footage_dir = Path(str(config.source.uri)).parent
    log_start = jsonl.stat().st_size if jsonl.is_file() else 0  # the log appends: this run's rows start here
    sim_log = out / "actuator_sim.jsonl"
    daemon = Daemon(config)
    sim = subprocess.Popen(
        [sys.executable, "-m", "inspector", "actuator-sim", "--bind", config.link.controller, "--log", str(sim_log)],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        if sim.poll() is not None:
            raise InspectorError(
                f"actuator simulator exited at start (status {sim.returncode}); is {config.link.controller} in use?"
            )
        review = f"http://{config.review.address}:{config.review.port}/review" if config.review.port else "a free port"
        metrics = f"http://{config.metrics.address}:{config.metrics.port}/metrics" if config.metrics.port else "a free port"
        print(
            f"demo: daemon starting — rejects to review live at {review}, metrics {metrics}, decisions {jsonl}, "
            f"evidence {out / 'evidence'}, simulator log {sim_log}",
            flush=True,
        )
        status = daemon.run()
    finally:
        # let the simulator fire the last rejects (their bunches are still riding towards the ejector)
        time.sleep(min(15.0, max(0.5, daemon.summary.last_fire_at_s - time.monotonic() + 0.5)))
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(5)
        except subprocess.TimeoutExpired:
            sim.kill()
    page = write_static_page(out, jsonl, source=str(footage_dir / "footage.avi"))
    for line in demo_summary(daemon, config, _rows_from(jsonl, log_start), footage_dir / "labels.jsonl", sim_log):
        print(f"demo: {line}")
    print(f"demo: rejects to review: {page} (open in a browser; live at {daemon.review_url} while the daemon runs)")
    print(f"demo: everything is in {out}")
    return status


def _rows_from(jsonl: Path, offset: int) -> list[dict[str, Any]]:
    if not jsonl.is_file():
        return []
    with jsonl.open("rb") as fh:
        fh.seek(offset)
        raw = fh.read().decode("utf-8", "replace")
    rows = []
    for line in raw.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _sim_events(sim_log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if not sim_log.is_file():
        return counts
    for line in sim_log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line).get("event")
        except (ValueError, AttributeError):
            continue
        if isinstance(event, str):
            counts[event] = counts.get(event, 0) + 1
    return counts


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))]


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def demo_summary(
    daemon: Daemon, config: Config, rows: list[dict[str, Any]], labels_path: Path, sim_log: Path
) -> list[str]:
    """The demo's closing lines: what was caught and missed, what the machine managed, and whether it kept up."""
    from inspector.report import evaluate, load_labels

    m, s = daemon.metrics, daemon.summary
    lines: list[str] = []
    if labels_path.is_file() and rows:
        rule = config.decision
        report, _ = evaluate(rows, load_labels(labels_path), rule.threshold, 0.99, (rule.aggregate, rule.agree_frames))
        lines.append(
            f"caught {report.tp} of {report.tp + report.fn} spider bunches (recall {_pct(report.recall)}), "
            f"rejected {report.fp} of {report.fp + report.tn} clean ones (false-reject rate "
            f"{_pct(report.false_reject_rate)}); {report.uninspected} rejected uninspected; "
            f"{len(report.unmatched_labels)} labelled bunches without a decision (threshold {rule.threshold:.2f})"
        )
    else:
        lines.append(f"no recall figure: no labels at {labels_path} or no decision was logged")
    captured = int(m.value("inspector_frames_captured_total"))
    dropped = int(m.value("inspector_frames_dropped_total"))
    inspected = int(m.value("inspector_frames_inspected_total"))
    lines.append(
        f"frames: {captured} captured, {s.frames} processed, {inspected} inspected (tiles run), {dropped} dropped"
    )
    p50, p99 = _percentile(list(s.reject_latency_s), 50), _percentile(list(s.reject_latency_s), 99)
    latency = "n/a (no reject)" if p50 is None or p99 is None else f"p50 {p50:.2f} s, p99 {p99:.2f} s"
    lines.append(
        f"decision latency, capture of the judged frame -> reject sent: {latency} over {len(s.reject_latency_s)} "
        "rejects (an uninspected reject is decided only when its bunch leaves the view)"
    )
    events = _sim_events(sim_log)
    sent = int(m.value("inspector_rejects_sent_total"))
    acked = int(m.value("inspector_rejects_acked_total"))
    missed = int(m.value("inspector_rejects_missed_total"))
    fired, late_at_sim = events.get("fired", 0), events.get("refused", 0)
    lines.append(
        f"rejects: {s.rejects} decided, {sent} sent, {acked} acked, {fired} fired by the simulator, {missed} missed"
        + (f", {late_at_sim} refused as too late to fire" if late_at_sim else "")
    )
    uninspected = sum(1 for r in rows if r.get("reason") == "uninspected")
    problems = []
    if dropped:
        problems.append(f"{dropped} of {captured} frames were dropped")
    if s.late_rejects:
        problems.append(f"{s.late_rejects} reject(s) were sent after their fire time")
    if missed or late_at_sim:
        problems.append(f"{missed + late_at_sim} reject(s) were not fired in time")
    if uninspected:
        problems.append(
            f"{uninspected} reject(s) were uninspected (a bunch not inspected whole, or a stretch of belt no frame showed)"
        )
    if problems and (dropped or s.late_rejects or missed or late_at_sim):
        lines.append(
            "THIS MACHINE DID NOT KEEP UP: " + "; ".join(problems) + ". On a line that means good fruit rejected "
            "(fail-safe) or, with missed rejects, spiders passed: use a faster machine (a GPU), the int8 model, "
            "or a slower belt."
        )
    elif problems:
        lines.append("kept up with the footage (no frame dropped, no reject late); " + "; ".join(problems))
    else:
        lines.append("kept up with the footage: no frame dropped, no reject late or missed")
    return lines
