"""`inspector demo`: its footage cache key is the same in every process, and its closing summary says what the run
caught and missed, what the machine managed, and whether it kept up — figures that agree with the files it wrote."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inspector.commands.run import footage_key
from inspector.config import Config

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_footage_cache_key_is_the_same_in_every_process() -> None:
    code = "from inspector.commands.run import footage_key; from inspector.config import Config; " \
           "print(footage_key(Config(), 60.0, None))"
    keys = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, cwd=ROOT,
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        for seed in ("1", "2", "random")
    }
    assert keys == {footage_key(Config(), 60.0, None)}
    assert footage_key(Config(), 30.0, None) != footage_key(Config(), 60.0, None)


@pytest.mark.slow
def test_demo_prints_what_it_caught_and_whether_the_machine_kept_up(tmp_path: Path) -> None:
    config = tmp_path / "ports.yaml"
    config.write_text(yaml.safe_dump({
        "metrics": {"port": free_port()},
        "review": {"port": free_port()},
        "link": {"controller": f"tcp://127.0.0.1:{free_port()}", "publish": f"tcp://127.0.0.1:{free_port()}"},
    }))
    out = tmp_path / "demo"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "inspector", "demo", "--seconds", "8", "--out", str(out), "--config", str(config)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "Traceback" not in proc.stderr
    caught = re.search(r"caught (\d+) of (\d+) spider bunches \(recall [\d.]+ %\), rejected (\d+) of (\d+) clean", text)
    assert caught, text
    frames = re.search(r"frames: (\d+) captured, (\d+) processed, (\d+) inspected \(tiles run\), (\d+) dropped", text)
    assert frames and int(frames[1]) >= int(frames[2]) >= int(frames[3]) > 0, text
    assert re.search(r"decision latency, .*: (p50 [\d.]+ s, p99 [\d.]+ s|n/a)", text), text
    rejects = re.search(r"rejects: (\d+) decided, (\d+) sent, (\d+) acked, (\d+) fired by the simulator, (\d+) missed", text)
    assert rejects, text
    rows = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    fired = [e for line in (out / "actuator_sim.jsonl").read_text().splitlines() if (e := json.loads(line))["event"] == "fired"]
    assert int(rejects[1]) == sum(r["decision"] == "reject" for r in rows)
    assert int(rejects[4]) == len(fired)
    dropped = int(frames[4])
    assert ("THIS MACHINE DID NOT KEEP UP" in text) == (dropped > 0 or int(rejects[5]) > 0 or "after their fire" in text)
    if dropped:
        assert f"{dropped} of {frames[1]} frames were dropped" in text
    assert f"rejects to review: {out / 'review.html'}" in text and (out / "review.html").is_file()
    assert all((out / "evidence" / r["evidence"]).is_file() for r in rows if r["decision"] == "reject")
    # the footage was rendered once into a folder named by the digest; a second demo would find it
    assert [p.name for p in (tmp_path / "cache" / "grape-spider-inspector").iterdir()] == [
        f"synthetic-{footage_key(Config.model_validate(yaml.safe_load(config.read_text())), 8.0, None)}"
    ]
