"""Reference ejector controller: the shared controller logic (``inspector/controller.py``) on a ROUTER socket.

    inspector actuator-sim --bind tcp://127.0.0.1:5560 --log fired.jsonl

Speaks the reject protocol of ``inspector/messages.py`` (v2): acks every reject (every copy), "fires" each at its
absolute ``fire_at_s`` on its own monotonic clock, refuses (nack) one it can no longer start by its ``deadline_s``,
reports ``fired`` with the actual time, answers every heartbeat, and keeps the fail-safe on while any expected
inspector is silent, unhealthy or behind its watermark. One JSON object per line, ``event`` one of:

  start, stop, summary                 lifecycle (summary: counts of everything below)
  peer                                 an inspector (allow-list name, or session without CURVE) heard first
  reject                               a new reject arrived (seq, bunch_id, fire_at_s, stretch_s, deadline_s, …)
  duplicate                            the same (session, seq) again — acked again, not fired again
  ack / ack_dropped                    ack sent / deliberately not sent (``--drop-acks``, ``--drop-ack-probability``)
  fired                                the ejector fired: ``at_s`` actual, ``error_s`` = actual − ``fire_at_s``
  refused                              nacked (``why`` late or invalid): it could not be started by its deadline
  missed                               a seq never received although later seqs of that session were
  malformed                            a frame that is not a valid v2 message, or a peer not on the allow-list
  denied                               a CURVE client key not on the allow-list (ZAP)
  failsafe                             ``state`` on / off and why; ``off`` also gives the stretch it covered
  die / back                           ``--die-after-s`` / ``--down-s`` simulate a controller restart (state lost)

Times ``*_s`` are this process's ``time.monotonic()``, the controller clock of the protocol.
Fault injection: ``--drop-acks N`` drops the first N acks of each reject, ``--drop-ack-probability P``,
``--ack-delay-s D``, ``--die-after-s T --down-s D`` (closes its socket for D seconds, then binds again as a new
instance; a real SIGKILL works as well), ``--garbage-every-s S`` sends junk frames to the inspectors.
CURVE: ``--make-keys DIR`` writes ``DIR/controller.key`` (public) and ``DIR/controller.key_secret`` and prints
the public key for ``link.curve_server_public_key``; ``--curve-secret-key-file DIR/controller.key_secret`` serves
with it, and ``--allow KEYFILE`` admits only the client keys listed there (each an expected peer).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

import zmq
import zmq.auth

from inspector import messages
from inspector.controller import ControllerCore, Send
from inspector.controller_socket import ControllerSocket, read_allow_list
from inspector.errors import InspectorError


class SimOutput:
    """The simulated ejector: switching is instantaneous; the core logs every fire and fail-safe change."""

    def __init__(self) -> None:
        self.failsafe = True

    def fire(self, across_mm: float | None, at_s: float, stretch_s: float) -> float:
        return time.monotonic()

    def fail_safe(self, on: bool, reason: str) -> None:
        self.failsafe = on


class Simulator:
    def __init__(self, args: argparse.Namespace, out: IO[str]) -> None:
        self.args = args
        self.out = out
        self.rng = random.Random(args.seed)
        self.allow = read_allow_list(Path(args.allow)) if args.allow else {}
        if self.allow and not args.curve_secret_key_file:
            raise InspectorError("--allow needs --curve-secret-key-file: the allow-list is checked by CURVE")
        self.endpoint = ControllerSocket(
            args.bind, args.curve_secret_key_file, self.allow, self.emit, "actuator simulator"
        )
        self.counts: dict[str, int] = {}
        self.acks: list[tuple[float, int, bytes, bytes]] = []  # (due monotonic, tiebreak, identity, frame)
        self.ack_counts: dict[tuple[str, int], int] = {}
        self.tiebreak = 0
        self.max_seq: dict[str, int] = {}
        self.seen: dict[str, set[int]] = {}
        self.stop = False
        self.core = self._new_core()

    def _new_core(self) -> ControllerCore:
        core = ControllerCore(
            SimOutput(),
            timeout_s=self.args.timeout_s,
            margin_s=self.args.margin_s,
            expected_keys=sorted(set(self.allow.values())),
            expect_peers=self.args.expect_peers,
            on_event=self.emit,
        )
        return core

    # ------------------------------------------------------------------ output
    def emit(self, event: str, **info: Any) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1
        if event == "reject":
            self.seen.setdefault(info["session"], set()).add(info["seq"])
            self.max_seq[info["session"]] = max(self.max_seq.get(info["session"], 0), info["seq"])
        line = {"event": event, "t_unix_s": round(time.time(), 6), "t_s": round(time.monotonic(), 6), **info}
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    # ------------------------------------------------------------------ protocol
    def send_all(self, sends: list[Send], now: float) -> None:
        for identity, msg in sends:
            frame = messages.encode(msg)
            if isinstance(msg, messages.Ack):
                key = (msg.session, msg.seq)
                n = self.ack_counts.get(key, 0)
                self.ack_counts[key] = n + 1
                if n < self.args.drop_acks or self.rng.random() < self.args.drop_ack_probability:
                    self.emit("ack_dropped", session=msg.session, seq=msg.seq)
                    continue
                if self.args.ack_delay_s > 0:
                    self.tiebreak += 1
                    heapq.heappush(self.acks, (now + self.args.ack_delay_s, self.tiebreak, identity, frame))
                    continue
                if self.send(identity, frame):
                    self.emit("ack", session=msg.session, seq=msg.seq)
            else:
                self.send(identity, frame)

    def send(self, identity: bytes, frame: bytes) -> bool:
        return self.endpoint.send(identity, frame)

    def due_acks(self, now: float) -> None:
        while self.acks and self.acks[0][0] <= now:
            _, _, identity, frame = heapq.heappop(self.acks)
            if self.send(identity, frame):
                ack = json.loads(frame)
                self.emit("ack", session=ack["session"], seq=ack["seq"])

    def garbage(self) -> None:
        junk = [
            b"\xff\xfe not json",
            b'{"v": 99, "type": "ack", "session": "x", "seq": 1}',
            b"[1,2,3]",
            b'{"v":2,"type":"ack","seq":"one","session":"x"}',
            bytes(self.rng.randrange(256) for _ in range(64)),
        ]
        for peer in list(self.core.peers.values()):
            self.send(peer.route, self.rng.choice(junk))

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        a = self.args
        self.endpoint.bind()
        self.emit(
            "start",
            bind=a.bind,
            curve=bool(a.curve_secret_key_file),
            allow=sorted(self.allow.values()),
            instance=self.core.instance,
        )
        t0 = time.monotonic()
        next_garbage = t0 + a.garbage_every_s if a.garbage_every_s > 0 else float("inf")
        die_at = t0 + a.die_after_s if a.die_after_s > 0 else float("inf")
        back_at = float("inf")
        end_at = t0 + a.run_s if a.run_s > 0 else float("inf")
        while not self.stop:
            now = time.monotonic()
            if now >= end_at:
                break
            if now >= die_at:
                self.endpoint.unbind()
                self.acks.clear()
                self.emit("die", down_s=a.down_s, unfired=len(self.core.pending()))
                die_at, back_at = float("inf"), now + a.down_s
            if now >= back_at:
                self.core = self._new_core()  # a restarted controller remembers nothing
                self.endpoint.bind()
                self.emit("back", instance=self.core.instance)
                back_at = float("inf")
            if self.endpoint.bound:
                self.send_all(self.core.tick(now), now)
            self.due_acks(now)
            if now >= next_garbage:
                self.garbage()
                next_garbage = now + a.garbage_every_s
            deadlines = [end_at, die_at, back_at, next_garbage, now + 0.02]
            wake = self.core.next_wake_s()
            if wake is not None:
                deadlines.append(wake)
            if self.acks:
                deadlines.append(self.acks[0][0])
            for route, frame, user_id in self.endpoint.poll(min(deadlines) - time.monotonic()):
                now = time.monotonic()
                self.send_all(self.core.receive(route, frame, user_id, now), now)
        return self.finish()

    def finish(self) -> int:
        for session, top in self.max_seq.items():
            seen = self.seen.get(session, set())
            for seq in range(1, top + 1):
                if seq not in seen:
                    self.emit("missed", session=session, seq=seq)
        for r in self.core.pending():
            self.emit(
                "unfired_at_exit",
                session=r.session,
                seq=r.seq,
                bunch_id=r.bunch_id,
                due_in_s=round(r.fire_at_s - time.monotonic(), 6),
            )
        self.emit("stop")
        self.emit("summary", counts=dict(sorted(self.counts.items())))
        self.endpoint.close()
        return 0


def make_keys(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    public_file, _secret_file = zmq.auth.create_certificates(str(directory), "controller")
    public, _ = zmq.auth.load_certificate(public_file)
    print(public.decode())
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The simulator's options (``inspector actuator-sim``)."""
    p.add_argument("--bind", default="tcp://127.0.0.1:5560", help="ROUTER endpoint (default %(default)s)")
    p.add_argument("--log", default="-", help="JSON-lines log file, - for stdout (default)")
    p.add_argument("--timeout-s", type=float, default=2.0, help="fail safe after this long without a message")
    p.add_argument(
        "--margin-s",
        type=float,
        default=0.0,
        help="fail safe this long before an inspector's watermark runs out (the ejector's reaction time)",
    )
    p.add_argument("--expect-peers", type=int, default=1, help="inspectors that must be live (without --allow)")
    p.add_argument("--allow", default=None, metavar="KEYFILE", help="CURVE client public keys admitted (ZAP)")
    p.add_argument("--drop-acks", type=int, default=0, help="drop the first N acks of each reject")
    p.add_argument("--drop-ack-probability", type=float, default=0.0)
    p.add_argument("--ack-delay-s", type=float, default=0.0)
    p.add_argument("--die-after-s", type=float, default=0.0, help="close the socket after this long (0: never)")
    p.add_argument("--down-s", type=float, default=1.0, help="how long to stay dead before binding again")
    p.add_argument("--garbage-every-s", type=float, default=0.0, help="send junk frames to inspectors (0: never)")
    p.add_argument("--run-s", type=float, default=0.0, help="exit after this long (0: run until SIGTERM/SIGINT)")
    p.add_argument("--curve-secret-key-file", default=None, help="serve with CURVE using this secret key")
    p.add_argument("--make-keys", type=Path, default=None, metavar="DIR", help="write a CURVE key pair and exit")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Write keys (``--make-keys``) or serve until ``--run-s`` or SIGTERM/SIGINT, logging to ``--log``."""
    if args.make_keys is not None:
        return make_keys(args.make_keys)
    out: IO[str] = sys.stdout if args.log == "-" else open(args.log, "a", buffering=1)  # noqa: SIM115
    sim = Simulator(args, out)

    def _stop(signum: int, frame: object) -> None:
        sim.stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        return sim.run()
    finally:
        if out is not sys.stdout:
            out.close()
