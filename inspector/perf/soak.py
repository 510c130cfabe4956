"""Soak: the real daemon at twice the nominal frame rate against the actuator simulator, for a bounded time.

    nice -n 10 inspector soak [--seconds 180] [--warmup-s 30] [--fps 15] [--factor 2] [--width 640 --height 360]
                                    [--model MODEL.onnx] [--work DIR] [--json soak.json]

What runs: footage generated at ``fps * factor`` with the nominal belt speed (so the frame rate doubles, not the
belt), looped by a realtime-paced file source; ``inspector actuator-sim`` as the controller; ``inspector run`` as a
subprocess with a config written here (decisions.jsonl, metrics on a free port). While it runs, the RSS of the
daemon and its capture process is sampled from /proc once a second and /metrics is scraped every few seconds. At
``--seconds`` the daemon gets SIGTERM (it decides the bunches in view and flushes the link), the simulator is left
running until the last reject's fire time has passed, then stopped.

Checks (exit status 1 when one fails):
- memory: median RSS over the last 10 % of the run vs over the first 10 % after warm-up: growth < 5 %;
- zero reject messages lost: every reject in the daemon's decisions.jsonl reached the simulator, or the daemon
  itself counted it missed (``REJECT MISSED`` in its log);
- every miss counted: every reject the simulator did not fire on time (refused as late, never received, unfired at
  exit) is one the daemon counted missed;
- fires on time: every reject fired within one frame interval of its bunch's true arrival at the ejector (from the
  footage's labels, ``inspector/perf/ejector.py``), a stretch lasting past the bunch's trailing end;
- no spider passed: every labelled spider bunch that reached the ejector while the simulator ran was fired at or
  arrived while the simulator was in fail-safe.
Also printed: frames captured/dropped/inspected, bunches by reason (``uninspected`` = the fail-safe at work),
acks, retransmits, decision latency mean (from the histogram).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from inspector.config import load_calibration
from inspector.errors import InspectorError
from inspector.perf.ejector import ejector_report

MISSED_RE = re.compile(r"REJECT MISSED: seq (\d+) bunch (\d+)")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# ------------------------------------------------------------------------------------------------ pure helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition -> {(sample name, sorted (label, value) pairs): value}, read by prometheus-client's
    own parser (escaped label values, exponents, NaN/Inf as the format defines them). Raises ValueError on text that
    is not the exposition format."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def metric_sum(metrics: Samples, name: str, **labels: str) -> float:
    """Sum of every series of the sample `name` whose labels include `labels`, each value matched exactly."""
    total = 0.0
    for (sample, series_labels), value in metrics.items():
        have = dict(series_labels)
        if sample == name and all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


def rss_kb(pid: int) -> int | None:
    """VmRSS of a process in KiB, None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return 0


def children(pid: int) -> list[int]:
    """Direct children of `pid` (all threads), from /proc."""
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            kids += [int(k) for k in text]
    except OSError:
        return []
    return kids


def memory_growth(samples: list[tuple[float, float]], warmup_s: float) -> dict[str, float | None]:
    """Median RSS over the first and the last 10 % of the post-warm-up samples, and the growth between them."""
    after = [rss for t, rss in samples if t >= warmup_s]
    if len(after) < 4:
        return {"rss_start_mb": None, "rss_end_mb": None, "growth_pct": None}
    k = max(2, len(after) // 10)
    first = sorted(after[:k])[k // 2]
    last = sorted(after[-k:])[k // 2]
    return {"rss_start_mb": first / 1024, "rss_end_mb": last / 1024, "growth_pct": 100.0 * (last - first) / first}


@dataclass
class Accounting:
    daemon_rejects: int = 0
    received: int = 0
    fired: int = 0
    late: int = 0  # refused by the controller (nack): it could not fire them in time
    unfired_at_exit: int = 0
    sim_missed_seqs: int = 0
    daemon_counted_missed: int = 0
    lost: list[int] = field(default_factory=list)  # bunch ids: neither received nor counted missed
    uncounted_misses: list[int] = field(default_factory=list)  # not fired on time and not counted by the daemon

    @property
    def ok(self) -> bool:
        return not self.lost and not self.uncounted_misses


def account(decisions: list[dict[str, Any]], sim_events: list[dict[str, Any]], missed_bunches: set[int]) -> Accounting:
    """Match the daemon's rejects (decisions.jsonl) against what the simulator logged and what the daemon counted."""
    acc = Accounting()
    rejects = {int(d["bunch_id"]) for d in decisions if d.get("decision") == "reject"}
    acc.daemon_rejects = len(rejects)
    received = {int(e["bunch_id"]) for e in sim_events if e.get("event") == "reject" and "bunch_id" in e}
    fired = {int(e["bunch_id"]) for e in sim_events if e.get("event") == "fired" and "bunch_id" in e}
    acc.received = len(rejects & received)
    acc.fired = len(rejects & fired)
    acc.late = sum(1 for e in sim_events if e.get("event") == "refused")
    acc.unfired_at_exit = sum(1 for e in sim_events if e.get("event") == "unfired_at_exit")
    acc.sim_missed_seqs = sum(1 for e in sim_events if e.get("event") == "missed")
    acc.daemon_counted_missed = len(missed_bunches)
    acc.lost = sorted(b for b in rejects if b not in received and b not in missed_bunches)
    acc.uncounted_misses = sorted(b for b in rejects if b not in fired and b not in missed_bunches)
    return acc


def latency_mean_s(metrics: Samples) -> float | None:
    n = metric_sum(metrics, "inspector_decision_latency_seconds_count")
    return metric_sum(metrics, "inspector_decision_latency_seconds_sum") / n if n else None


# ------------------------------------------------------------------------------------------------ the run
@dataclass(frozen=True)
class SoakSettings:
    model: Path
    work: Path
    seconds: float = 180.0  # how long the daemon runs
    warmup_s: float = 30.0  # the memory baseline starts after this
    fps: float = 15.0  # nominal frame rate
    factor: float = 2.0  # run at this multiple of the nominal rate
    width: int = 640
    height: int = 360
    clip_s: float = 30.0  # length of the looped footage
    threshold: float | None = 0.0  # None: the config default
    seed: int = 0

    def check(self) -> None:
        if self.seconds <= self.warmup_s:
            raise InspectorError(f"--seconds {self.seconds:g} must exceed --warmup-s {self.warmup_s:g}")
        if not self.model.is_file():
            raise InspectorError(f"{self.model}: model not found; give an .onnx with its manifest")


@dataclass
class SoakResult:
    seconds: float
    fps: float
    threshold: float | None
    frame_wh: tuple[int, int]
    model: str
    daemon_exit: int | None
    rss_samples: int
    memory: dict[str, float | None]
    accounting: dict[str, Any]
    metrics: dict[str, float | None]
    passed: dict[str, bool]
    ejector: dict[str, Any] = field(default_factory=dict)  # inspector.perf.ejector.EjectorReport


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def scrape(port: int) -> Samples | None:
    """The daemon's /metrics, parsed; None when it cannot be reached or does not parse (a scrape is retried)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return parse_metrics(response.read().decode())
    except (OSError, ValueError):
        return None


def stop(proc: subprocess.Popen[Any], timeout_s: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return None


def write_config(
    work: Path,
    footage_dir: Path,
    model: Path,
    fps: float,
    controller: str,
    metrics_port: int,
    threshold: float | None = None,
) -> Path:
    config: dict[str, Any] = {
        "calibration": str(footage_dir / "calibration.yaml"),
        "model": {"path": str(model), "providers": ["cpu"]},
        "source": {
            "kind": "file",
            "uri": str(footage_dir / "footage.avi"),
            "pace": "realtime",
            "fps": fps,
            "loop": True,
        },
        "link": {"controller": controller, "publish": None},
        "metrics": {"port": metrics_port},
        "output": {"decisions_jsonl": str(work / "decisions.jsonl")},
        "review": {"port": 0},  # any free port: a soak beside a running daemon must not collide with its page
    }
    if threshold is not None:
        config["decision"] = {"threshold": threshold}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_soak(settings: SoakSettings) -> SoakResult:
    from inspector.synth import generate_footage

    fps = settings.fps * settings.factor
    work: Path = settings.work
    work.mkdir(parents=True, exist_ok=True)
    footage_dir = work / f"footage_{settings.width}x{settings.height}_{fps:g}fps_{settings.clip_s:g}s"
    if not (footage_dir / "footage.avi").is_file():
        print(f"soak: generating {settings.clip_s:g} s of footage at {fps:g} fps into {footage_dir}", file=sys.stderr)
        generate_footage(
            footage_dir,
            width=settings.width,
            height=settings.height,
            fps=fps,
            seconds=settings.clip_s,
            seed=settings.seed,
        )
    run_dir = work / f"run_{int(time.time())}"
    run_dir.mkdir()
    controller = f"tcp://127.0.0.1:{free_port()}"
    metrics_port = free_port()
    config = write_config(run_dir, footage_dir, settings.model, fps, controller, metrics_port, settings.threshold)
    sim_log, daemon_log = run_dir / "sim.jsonl", run_dir / "daemon.log"
    sim = subprocess.Popen(
        [sys.executable, "-m", "inspector", "actuator-sim", "--bind", controller, "--log", str(sim_log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples: list[tuple[float, float]] = []
    last_metrics: Samples = {}
    daemon_exit: int | None = None
    with daemon_log.open("w") as log_fh:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "inspector", "run", "--config", str(config), "--instance", f"soak{os.getpid()}"],
            stdout=subprocess.DEVNULL,
            stderr=log_fh,
        )
        try:
            t0 = time.monotonic()
            next_scrape = t0
            while (elapsed := time.monotonic() - t0) < settings.seconds and daemon.poll() is None:
                total = 0
                for pid in [daemon.pid, *children(daemon.pid)]:
                    total += rss_kb(pid) or 0
                if total:
                    samples.append((elapsed, float(total)))
                if time.monotonic() >= next_scrape:
                    last_metrics = scrape(metrics_port) or last_metrics
                    next_scrape = time.monotonic() + 5.0
                time.sleep(1.0)
            last_metrics = scrape(metrics_port) or last_metrics
        finally:
            daemon_exit = stop(daemon, 30.0)
    decisions = read_jsonl(run_dir / "decisions.jsonl")
    due = [float(d["fire_at_s"]) for d in decisions if d.get("decision") == "reject"]
    wait_s = max([0.0, *(t - time.monotonic() for t in due)]) + 1.0
    time.sleep(min(wait_s, 15.0))  # let the simulator fire what is still due
    stop(sim, 10.0)
    missed = {int(m.group(2)) for m in MISSED_RE.finditer(daemon_log.read_text(errors="replace"))}
    acc = account(decisions, read_jsonl(sim_log), missed)
    memory = memory_growth(samples, settings.warmup_s)
    labels = read_jsonl(footage_dir / "labels.jsonl")
    cal = load_calibration(footage_dir / "calibration.yaml")
    clip_frames = round(settings.clip_s * fps)
    ejector = ejector_report(
        decisions, read_jsonl(sim_log), labels, cal, (settings.width, settings.height), fps, clip_frames
    )
    m = last_metrics
    metrics = {
        "frames_captured": metric_sum(m, "inspector_frames_captured_total"),
        "frames_dropped": metric_sum(m, "inspector_frames_dropped_total"),
        "frames_inspected": metric_sum(m, "inspector_frames_inspected_total"),
        "tiles_inferred": metric_sum(m, "inspector_tiles_inferred_total"),
        "bunches_pass": metric_sum(m, "inspector_bunches_total", decision="pass"),
        "bunches_spider": metric_sum(m, "inspector_bunches_total", reason="spider"),
        "bunches_uninspected": metric_sum(m, "inspector_bunches_total", reason="uninspected"),
        "rejects_acked": metric_sum(m, "inspector_rejects_acked_total"),
        "retransmits": metric_sum(m, "inspector_reject_retransmits_total"),
        "rejects_missed": metric_sum(m, "inspector_rejects_missed_total"),
        "decision_latency_mean_s": latency_mean_s(m),
    }
    growth = memory["growth_pct"]
    passed = {
        "memory_growth_below_5pct": growth is not None and growth < 5.0,
        "zero_rejects_lost": not acc.lost,
        "every_miss_counted": not acc.uncounted_misses,
        "daemon_exited_cleanly": daemon_exit == 0,
        "fires_on_time": not ejector.fires_off and not ejector.short_stretches,
        "no_spider_passed": not ejector.spiders_passed,
    }
    return SoakResult(
        settings.seconds,
        fps,
        settings.threshold,
        (settings.width, settings.height),
        settings.model.name,
        daemon_exit,
        len(samples),
        memory,
        asdict(acc),
        metrics,
        passed,
        asdict(ejector),
    )


def format_summary(r: SoakResult) -> str:
    mem, acc, m = r.memory, r.accounting, r.metrics

    def num(v: float | None, fmt: str = ".0f") -> str:
        return "n/a" if v is None else format(v, fmt)

    lines = [
        f"soak: {r.seconds:g} s of `inspector run` at {r.fps:g} fps ({r.frame_wh[0]}x{r.frame_wh[1]}, {r.model}) "
        f"with inspector actuator-sim, threshold {'config' if r.threshold is None else r.threshold}; "
        f"daemon exit {r.daemon_exit}",
        f"  memory: RSS {num(mem['rss_start_mb'])} MB after warm-up -> {num(mem['rss_end_mb'])} MB at the end "
        f"({num(mem['growth_pct'], '+.1f')} %, {r.rss_samples} samples; limit 5 %)",
        f"  frames: {num(m['frames_captured'])} captured, {num(m['frames_dropped'])} dropped, "
        f"{num(m['frames_inspected'])} inspected, {num(m['tiles_inferred'])} tiles",
        f"  bunches: {num(m['bunches_pass'])} passed, {num(m['bunches_spider'])} rejected as spider, "
        f"{num(m['bunches_uninspected'])} rejected uninspected (fail-safe)",
        f"  rejects: {acc['daemon_rejects']} sent by the daemon, {acc['received']} received by the simulator, "
        f"{acc['fired']} fired, {acc['late']} refused as late, {acc['unfired_at_exit']} unfired at exit; "
        f"{acc['daemon_counted_missed']} counted missed by the daemon; lost {len(acc['lost'])}, "
        f"uncounted misses {len(acc['uncounted_misses'])}",
        f"  ejector: {r.ejector.get('fires_checked', 0)} fires checked against the labels, "
        f"{len(r.ejector.get('fires_off', []))} off their bunch by more than one frame; spider bunches "
        f"{len(r.ejector.get('spiders_fired', []))} fired at, {len(r.ejector.get('spiders_failsafe', []))} in "
        f"fail-safe, {len(r.ejector.get('spiders_passed', []))} passed",
        f"  link: {num(m['rejects_acked'])} acked, {num(m['retransmits'])} retransmits; decision latency mean "
        f"{num(m['decision_latency_mean_s'], '.2f')} s",
        "  checks: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in r.passed.items()),
    ]
    return "\n".join(lines)
