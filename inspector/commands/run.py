"""`inspector run` (the daemon) and `inspector demo` (daemon + generated footage + actuator simulator).

`source.kind: synthetic` (the embedded default) renders conveyor footage once into a cache folder and then runs on
it as a file source, paced at its frame rate — the daemon itself never knows the difference.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inspector.config import Config, OutputConfig, SourceConfig, calibration_for, load_config
from inspector.errors import InspectorError

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
    d.set_defaults(func=demo)


def synthetic_source(
    config: Config, cache_dir: Path, seconds: float = SYNTH_SECONDS, real: Path | None = None
) -> SourceConfig:
    """Render footage for this calibration once (cached by its parameters); a file source paced in real time."""
    from inspector.synth.footage import generate_footage

    calibration = calibration_for(config)
    fps = config.source.fps or SYNTH_FPS
    key = f"{calibration.mm_per_px}-{calibration.belt_speed_mm_s}-{calibration.belt_direction}-{fps}-{seconds}-{real}"
    folder = cache_dir / f"synthetic-{abs(hash(key)) % 10**8:08d}"
    video = folder / "footage.avi"
    if not video.is_file():
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
    """Footage → daemon → simulator, all local; prints where to look and a summary at the end."""
    from inspector.daemon import Daemon

    out = args.out or Path(tempfile.mkdtemp(prefix="inspector-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    base = Config(output=OutputConfig(decisions_jsonl=out / "decisions.jsonl", evidence_dir=out / "evidence"))
    print(f"demo: rendering {args.seconds:.0f} s of conveyor footage (cached after the first run) ...", flush=True)
    config = base.model_copy(update={"source": synthetic_source(base, _cache_dir(), args.seconds, args.real)})
    sim_log = out / "actuator_sim.jsonl"
    daemon = Daemon(config)
    sim = subprocess.Popen(
        [sys.executable, "-m", "inspector", "actuator-sim", "--bind", config.link.controller, "--log", str(sim_log)],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        if sim.poll() is not None:
            raise InspectorError(f"actuator simulator exited at start (status {sim.returncode}); is port 5560 in use?")
        print(
            f"demo: daemon starting — metrics http://{config.metrics.address}:{config.metrics.port}/metrics, "
            f"decisions {out / 'decisions.jsonl'}, evidence {out / 'evidence'}, simulator log {sim_log}",
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
    fired = 0
    if sim_log.is_file():
        fired = sum(1 for line in sim_log.read_text().splitlines() if line and json.loads(line).get("event") == "fired")
    print(f"demo: {daemon.summary.line()}; the simulator fired the ejector {fired} times")
    print(f"demo: everything is in {out}")
    return status
