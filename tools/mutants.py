#!/usr/bin/env python3
"""Break each safety rule once and check that the suite notices.

Each mutant is one small edit of the source that breaks one rule the README or docs/ARCHITECTURE.md promises
(a bunch not wholly inspected is rejected, a late reject is refused instead of fired late, ...). For each, the
tracked tree is copied to a temporary folder, the edit applied there (it must match exactly once, else the mutant
is out of date and that is an error), and the tests named for it run against the copy. A mutant the tests do not
fail "survived": the suite would pass a copy that breaks that rule. Exit 0 only when every mutant was killed.

    .venv/bin/python tools/mutants.py                 # all of them (about 15 minutes on 2 idle cores)
    .venv/bin/python tools/mutants.py --list
    .venv/bin/python tools/mutants.py --only uninspected-not-sent controller-fires-late
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    rule: str  # the rule it breaks, in words
    path: str  # file under the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments that must fail on the mutant


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "uninspected-not-sent",
        "a bunch that leaves the view not wholly inspected is rejected (the reject reaches the ejector)",
        "inspector/pipeline.py",
        "            record.reject_sent = True\n            result.rejects.append(decision)\n",
        "            record.reject_sent = True\n"
        '            if decision.reason != "uninspected":\n'
        "                result.rejects.append(decision)\n",
        ("tests/test_pipeline.py", "tests/test_deadlines.py"),
    ),
    Mutant(
        "uninspected-passes",
        "the verdict on a bunch not wholly inspected is reject / uninspected",
        "inspector/decision.py",
        "    elif final and not record.fully_inspected(windows, tolerance_px):\n",
        "    elif False:\n",
        ("tests/test_decision.py", "tests/test_pipeline.py"),
    ),
    Mutant(
        "exit-side-not-required",
        "a bunch whose far end was never seen in an inspected frame is not wholly inspected",
        "inspector/decision.py",
        "            and self.exit_side_seen\n",
        "",
        ("tests/test_decision.py", "tests/test_pipeline.py", "tests/test_replay.py"),
    ),
    Mutant(
        "spider-not-sent-at-exit",
        "a spider verdict reached only when the bunch leaves the view is sent to the ejector",
        "inspector/pipeline.py",
        '        if decision.decision == "reject" and not record.reject_sent:\n',
        '        if decision.decision == "reject" and not record.reject_sent and decision.reason != "spider":\n',
        ("tests/test_pipeline.py", "tests/test_replay.py"),
    ),
    Mutant(
        "nan-score-passes",
        "a bunch score that is not a finite number is a model error (reject), never a pass",
        "inspector/decision.py",
        '    error = record.model_error or ("" if np.isfinite(score) else "the bunch score is not a finite number")\n',
        "    error = record.model_error\n",
        ("tests/test_decision.py", "tests/test_model_errors.py"),
    ),
    Mutant(
        "model-error-passes",
        "a bunch whose tiles the model failed on is rejected model_error",
        "inspector/decision.py",
        "    elif error:\n",
        "    elif False:\n",
        ("tests/test_decision.py", "tests/test_model_errors.py"),
    ),
    Mutant(
        "unseen-stretch-not-sent",
        "a stretch of belt that passed between two frames unseen is rejected",
        "inspector/pipeline.py",
        "            result.rejects.append(unseen)\n",
        "            pass\n",
        ("tests/test_pipeline.py", "tests/test_deadlines.py", "tests/test_faults.py"),
    ),
    Mutant(
        "watermark-ignores-undecided",
        "the watermark (decided_until_s) stays behind every bunch in view that is not decided yet",
        "inspector/pipeline.py",
        "            until = min(until, self._last_t_s - self.calibration.mm(past_centre_px) / speed)\n",
        "            pass\n",
        ("tests/test_deadlines.py", "tests/test_pipeline.py"),
    ),
    Mutant(
        "late-frames-inspected",
        "a frame too late for every bunch in it is skipped (freshest-first), not inspected",
        "inspector/pipeline.py",
        "        return all(f - self.margin_s < done_s for f in fire)\n",
        "        return False\n",
        ("tests/test_deadlines.py", "tests/test_pipeline.py"),
    ),
    Mutant(
        "controller-fires-late",
        "the controller refuses (nack late) a reject that arrives after its deadline instead of firing late",
        "inspector/controller.py",
        "        if now > msg.deadline_s:\n",
        "        if False:\n",
        ("tests/test_actuator_sim.py", "tests/test_link.py", "tests/test_gateway.py"),
    ),
    Mutant(
        "controller-fires-late-when-due",
        "the controller refuses a reject whose moment came after its deadline (a stalled controller)",
        "inspector/controller.py",
        "            if at > r.deadline_s:\n",
        "            if False:\n",
        ("tests/test_actuator_sim.py", "tests/test_link.py", "tests/test_gateway.py"),
    ),
    Mutant(
        "controller-ignores-watermark",
        "the controller goes fail-safe when belt beyond the inspector's watermark reaches the ejector",
        "inspector/controller.py",
        "        if now + self.margin_s > peer.decided_until_s:\n",
        "        if False:\n",
        ("tests/test_actuator_sim.py", "tests/test_faults.py"),
    ),
    Mutant(
        "controller-ignores-health",
        "the controller goes fail-safe while an inspector reports itself unhealthy",
        "inspector/controller.py",
        "        if not peer.healthy:\n",
        "        if False:\n",
        ("tests/test_actuator_sim.py", "tests/test_faults.py"),
    ),
    Mutant(
        "controller-ignores-silence",
        "the controller goes fail-safe when an inspector falls silent",
        "inspector/controller.py",
        "        if age > self.timeout_s:\n",
        "        if False:\n",
        ("tests/test_actuator_sim.py", "tests/test_gateway.py"),
    ),
    Mutant(
        "no-resend-after-controller-restart",
        "rejects acked but not fired are sent again to a restarted controller",
        "inspector/link.py",
        "                    pending[seq] = p\n",
        "                    pass\n",
        ("tests/test_link.py", "tests/test_faults.py"),
    ),
    Mutant(
        "stall-not-reported",
        "heartbeats say unhealthy when the inspection loop stops making progress",
        "inspector/link.py",
        '            healthy, reason = False, f"inspection loop stalled: no progress for {now - at_s:.1f} s"\n',
        "            pass\n",
        ("tests/test_link.py", "tests/test_faults.py"),
    ),
    Mutant(
        "capture-restarts-forever",
        "the supervisor gives up after supervisor.max_restarts capture failures in the window",
        "inspector/supervisor.py",
        "        if len(self._restarts) >= self.cfg.max_restarts:\n",
        "        if False:\n",
        ("tests/test_supervisor.py",),
    ),
    Mutant(
        "watchdog-fed-without-progress",
        "the systemd watchdog is fed only while frames and inferences advance",
        "inspector/supervisor.py",
        "(last is None or (frames > last[0] and inferences > last[1]))",
        "True",
        ("tests/test_supervisor.py",),
    ),
    Mutant(
        "out-of-range-seq-accepted",
        "a message whose integer field is out of range is refused, not decoded",
        "inspector/messages.py",
        "        if not lo <= v <= MAX_INT:\n",
        "        if False:\n",
        ("tests/test_messages.py", "tests/test_fuzz.py"),
    ),
)


def tracked_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p]


def stale(m: Mutant, tree: Path) -> str | None:
    """Why the mutant no longer fits the tree (its edit must match exactly once, its test files exist), or None."""
    n = (tree / m.path).read_text().count(m.old)
    if n != 1:
        return f"{m.name}: its text occurs {n} times in {m.path} (expected once): update the mutant"
    missing = [t for t in m.tests if not (tree / t.split("::")[0]).is_file()]
    return f"{m.name}: no test file {', '.join(missing)}" if missing else None


def apply(tree: Path, m: Mutant) -> None:
    why = stale(m, tree)
    if why is not None:
        raise SystemExit(f"mutants: {why}")
    path = tree / m.path
    path.write_text(path.read_text().replace(m.old, m.new))


def run(m: Mutant, files: list[str], timeout_s: float) -> tuple[str, str, float]:
    """(outcome, what killed it, seconds): outcome killed / survived / error."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
        tree = Path(tmp)
        for rel in files:
            dest = tree / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = ROOT / rel
            if src.is_file():
                shutil.copy2(src, dest)
        apply(tree, m)
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests]
        try:
            proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return "error", f"timed out after {timeout_s:.0f} s", time.monotonic() - started
    seconds = time.monotonic() - started
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.MULTILINE)
    if proc.returncode == 1 and failed:
        return "killed", failed[0], seconds
    if proc.returncode == 0:
        return "survived", "", seconds
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    return "error", f"pytest exit {proc.returncode}: {tail[0][:120]}", seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    ap.add_argument("--list", action="store_true", help="list the mutants and the rules they break")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant (default 900)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        print(f"mutants: no mutant named {', '.join(sorted(unknown))} (--list shows them)", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name:36s} {m.rule}")
        return 0
    files = tracked_files(ROOT)
    outcomes: list[str] = []
    for m in chosen:
        outcome, why, seconds = run(m, files, args.timeout)
        outcomes.append(outcome)
        print(f"{outcome:8s} {m.name:36s} {seconds:6.0f} s  {why}", flush=True)
    survived = outcomes.count("survived")
    errors = outcomes.count("error")
    print(f"mutants: {outcomes.count('killed')} of {len(chosen)} killed, {survived} survived, {errors} errors")
    return 0 if survived == 0 and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
