"""Reference ejector controller: speaks the reject protocol of ``inspector/messages.py`` and logs what it does.

    inspector actuator-sim --bind tcp://127.0.0.1:5560 --log fired.jsonl

Binds a ROUTER, acks every reject (every copy), "fires" each reject at its fire time (arrival on its own
monotonic clock + ``fire_in_s``), sends heartbeats to every inspector heard within ``--timeout-s`` and
goes fail-safe (logs it) when it hears nothing for that long. One JSON object per line, ``event`` one of:

  start, stop, summary                 lifecycle (summary: counts of everything below)
  reject                               a new reject arrived (seq, bunch_id, fire_in_s, attempt, …)
  duplicate                            the same (session, seq) again — acked again, not fired again
  ack / ack_dropped                    ack sent / deliberately not sent (``--drop-acks``, ``--drop-ack-probability``)
  fired                                the ejector fired: ``error_s`` = actual − target fire time
  late                                 a reject that arrived after its fire time (fire_in_s <= 0): not fired
  missed                               a seq never received although later seqs of that session were
  malformed                            a frame that is not a valid v1 message (ignored)
  failsafe                             ``state`` on / off: nothing heard from any inspector for ``--timeout-s``
  die / back                           ``--die-after-s`` / ``--down-s`` simulate a controller outage

Fault injection: ``--drop-acks N`` drops the first N acks of each reject, ``--drop-ack-probability P``,
``--ack-delay-s D``, ``--die-after-s T --down-s D`` (closes its socket for D seconds, then binds again;
a real SIGKILL works as well), ``--garbage-every-s S`` sends junk frames to the inspectors.
CURVE: ``--make-keys DIR`` writes ``DIR/controller.key`` (public) and ``DIR/controller.key_secret`` and prints
the public key for ``link.curve_server_public_key``; ``--curve-secret-key-file DIR/controller.key_secret``
serves with it.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zmq
import zmq.auth

from inspector import messages
from inspector.errors import InspectorError


@dataclass
class SessionState:
    seen: set[int] = field(default_factory=set)
    max_seq: int = 0
    ack_counts: dict[int, int] = field(default_factory=dict)


class Simulator:
    def __init__(self, args: argparse.Namespace, out: IO[str]) -> None:
        self.args = args
        self.out = out
        self.rng = random.Random(args.seed)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock: zmq.Socket[bytes] | None = None
        self.sessions: dict[str, SessionState] = {}
        self.peers: dict[bytes, float] = {}  # identity -> monotonic time last heard
        self.fires: list[tuple[float, int, dict[str, Any]]] = []  # (target monotonic, tiebreak, info)
        self.acks: list[tuple[float, int, bytes, bytes]] = []  # (due monotonic, tiebreak, identity, frame)
        self.tiebreak = 0
        self.counts: dict[str, int] = {}
        self.last_heard_s: float | None = None
        self.failsafe = True
        self.stop = False

    # ------------------------------------------------------------------ output
    def emit(self, event: str, **info: Any) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1
        line = {"event": event, "t_unix_s": round(time.time(), 6), **info}
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    # ------------------------------------------------------------------ socket
    def bind(self) -> None:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        if self.args.curve_secret_key_file:
            public, secret = zmq.auth.load_certificate(self.args.curve_secret_key_file)
            if secret is None:
                raise InspectorError(f"{self.args.curve_secret_key_file}: no secret key in this file")
            sock.curve_server = True
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        deadline = time.monotonic() + 10.0
        while True:  # after a restart the port can take a moment to come free
            try:
                sock.bind(self.args.bind)
                break
            except zmq.ZMQError as exc:
                if time.monotonic() > deadline:
                    raise InspectorError(f"actuator simulator: cannot bind {self.args.bind}: {exc}") from None
                time.sleep(0.1)
        self.sock = sock
        self.peers.clear()

    def unbind(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    # ------------------------------------------------------------------ protocol
    def handle(self, identity: bytes, frame: bytes, now: float) -> None:
        try:
            msg = messages.decode(frame)
            if isinstance(msg, messages.Ack):
                raise messages.MalformedMessage("an inspector does not send acks")
        except messages.MalformedMessage as exc:
            self.emit("malformed", error=str(exc)[:200])
            return
        self.peers[identity] = now
        self.last_heard_s = now
        if isinstance(msg, messages.Heartbeat):
            return
        assert isinstance(msg, messages.Reject)
        st = self.sessions.setdefault(msg.session, SessionState())
        if msg.seq in st.seen:
            self.emit("duplicate", session=msg.session, seq=msg.seq, attempt=msg.attempt)
        else:
            st.seen.add(msg.seq)
            st.max_seq = max(st.max_seq, msg.seq)
            info = {
                "session": msg.session,
                "seq": msg.seq,
                "bunch_id": msg.bunch_id,
                "score": msg.score,
                "reason": msg.reason,
                "across_mm": msg.across_mm,
                "fire_at_unix_s": msg.fire_at_unix_s,
                "model": msg.model,
            }
            self.emit("reject", fire_in_s=msg.fire_in_s, attempt=msg.attempt, **info)
            if msg.fire_in_s <= 0:
                self.emit("late", late_by_s=round(-msg.fire_in_s, 6), **info)
            else:
                self.tiebreak += 1
                heapq.heappush(self.fires, (now + msg.fire_in_s, self.tiebreak, info))
        # ack (every copy), unless told to drop it
        n = st.ack_counts.get(msg.seq, 0)
        st.ack_counts[msg.seq] = n + 1
        if n < self.args.drop_acks or self.rng.random() < self.args.drop_ack_probability:
            self.emit("ack_dropped", session=msg.session, seq=msg.seq)
            return
        ack = messages.encode(messages.Ack(session=msg.session, seq=msg.seq))
        self.tiebreak += 1
        heapq.heappush(self.acks, (now + self.args.ack_delay_s, self.tiebreak, identity, ack))

    def send(self, identity: bytes, frame: bytes) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.send_multipart([identity, frame], zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def due_work(self, now: float) -> None:
        while self.acks and self.acks[0][0] <= now:
            _, _, identity, frame = heapq.heappop(self.acks)
            if self.send(identity, frame):
                ack = json.loads(frame)
                self.emit("ack", session=ack["session"], seq=ack["seq"])
        while self.fires and self.fires[0][0] <= now:
            target, _, info = heapq.heappop(self.fires)
            fired = time.monotonic()
            self.emit("fired", error_s=round(fired - target, 6), **info)

    def heartbeat(self, now: float) -> None:
        hb = messages.encode(messages.Heartbeat(sent_unix_s=time.time()))
        for identity, heard in list(self.peers.items()):
            if now - heard > self.args.timeout_s:
                del self.peers[identity]
            else:
                self.send(identity, hb)
        silent = self.last_heard_s is None or now - self.last_heard_s > self.args.timeout_s
        if silent != self.failsafe:
            self.failsafe = silent
            self.emit("failsafe", state="on" if silent else "off")

    def garbage(self) -> None:
        junk = [
            b"\xff\xfe not json",
            b'{"v": 99, "type": "ack", "session": "x", "seq": 1}',
            b"[1,2,3]",
            b'{"v":1,"type":"ack","seq":"one","session":"x"}',
            bytes(self.rng.randrange(256) for _ in range(64)),
        ]
        for identity in list(self.peers):
            self.send(identity, self.rng.choice(junk))

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        a = self.args
        self.bind()
        self.emit("start", bind=a.bind, curve=bool(a.curve_secret_key_file))
        self.emit("failsafe", state="on")
        t0 = time.monotonic()
        next_hb = t0
        next_garbage = t0 + a.garbage_every_s if a.garbage_every_s > 0 else float("inf")
        die_at = t0 + a.die_after_s if a.die_after_s > 0 else float("inf")
        back_at = float("inf")
        end_at = t0 + a.run_s if a.run_s > 0 else float("inf")
        poller = zmq.Poller()
        assert self.sock is not None
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop:
            now = time.monotonic()
            if now >= end_at:
                break
            if now >= die_at:
                poller.unregister(self.sock)
                self.unbind()
                self.acks.clear()
                self.emit("die", down_s=a.down_s)
                die_at, back_at = float("inf"), now + a.down_s
            if now >= back_at:
                self.bind()
                poller.register(self.sock, zmq.POLLIN)
                self.emit("back")
                back_at = float("inf")
            self.due_work(now)
            if now >= next_hb:
                self.heartbeat(now)
                next_hb = now + a.heartbeat_interval_s
            if now >= next_garbage:
                self.garbage()
                next_garbage = now + a.garbage_every_s
            deadlines = [next_hb, end_at, die_at, back_at, next_garbage]
            if self.fires:
                deadlines.append(self.fires[0][0])
            if self.acks:
                deadlines.append(self.acks[0][0])
            timeout_ms = max(0.0, min(min(deadlines) - time.monotonic(), 0.05)) * 1000
            if self.sock is None:
                time.sleep(timeout_ms / 1000)
                continue
            for sock, _ in poller.poll(int(timeout_ms)):
                for _ in range(1000):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(frames) != 2:
                        self.emit("malformed", error=f"{len(frames) - 1} frames, expected 1")
                        continue
                    self.handle(frames[0], frames[1], time.monotonic())
            self.due_work(time.monotonic())
        return self.finish()

    def finish(self) -> int:
        for session, st in self.sessions.items():
            for seq in range(1, st.max_seq + 1):
                if seq not in st.seen:
                    self.emit("missed", session=session, seq=seq)
        for target, _, info in self.fires:
            self.emit("unfired_at_exit", due_in_s=round(target - time.monotonic(), 6), **info)
        self.emit("stop")
        self.emit("summary", counts=dict(sorted(self.counts.items())))
        self.unbind()
        self.ctx.term()
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
    p.add_argument("--heartbeat-interval-s", type=float, default=0.5)
    p.add_argument("--timeout-s", type=float, default=2.0, help="fail safe after this long without a message")
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
