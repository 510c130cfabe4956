"""The controller's ROUTER socket, shared by the reference simulator (``inspector/actuator_sim.py``) and the PLC
gateway (``inspector/gateway.py``): both put the protocol core (``inspector/controller.py``) behind it.

``ControllerSocket`` binds the ROUTER the inspectors' DEALERs connect to (CURVE server with the controller's key
when one is given; with an allow-list, a ZAP handler that admits only the listed client keys, each by its name),
hands back every frame with the sender's route and allow-list name, and sends replies. A frame of the wrong shape
is reported to ``on_event`` as ``malformed`` and dropped, a refused client key as ``denied`` (the first 10, then
every 100th: a rogue retrying forever must not fill the log).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
import zmq.utils.z85

from inspector import messages
from inspector.errors import InspectorError

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


def read_allow_list(path: Path) -> dict[bytes, str]:
    """{raw 32-byte public key: name} from KEYFILE: one Z85 public key per line, optionally followed by a name
    (default: the key's first 8 characters); a line starting with ``#`` is a comment (Z85 itself uses ``#``); zmq certificate lines ``public-key = "…"``
    work too."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InspectorError(f"{path}: cannot read the allow-list ({exc.strerror})") from None
    keys: dict[bytes, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("#"):
            continue
        if s.startswith("public-key") and "=" in s:
            s = s.split("=", 1)[1].strip().strip('"')
        if not s:
            continue
        parts = s.split()
        z85 = parts[0].encode()
        try:
            raw = zmq.utils.z85.decode(z85) if len(z85) == 40 else b""
        except (ValueError, KeyError):
            raw = b""
        if len(raw) != 32:
            raise InspectorError(f"{path}:{n}: not a 40-character Z85 public key: {parts[0][:50]!r}")
        keys[raw] = parts[1] if len(parts) > 1 else parts[0][:8]
    if not keys:
        raise InspectorError(f"{path}: no public key in the allow-list")
    return keys


class ControllerSocket:
    """One controller's ROUTER socket (see the module docstring); ``who`` names it in errors."""

    def __init__(
        self,
        bind: str,
        curve_secret_key_file: str | Path | None,
        allow: dict[bytes, str],
        on_event: Callable[..., Any],
        who: str,
    ) -> None:
        if allow and not curve_secret_key_file:
            raise InspectorError(f"{who}: an allow-list needs a CURVE secret key: the allow-list is checked by CURVE")
        self.address = bind
        self.curve_secret_key_file = curve_secret_key_file
        self.allow = allow
        self.denied = 0  # refused client keys (logged: the first 10, then every 100th)
        self.emit = on_event
        self.who = who
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock: zmq.Socket[bytes] | None = None
        self.zap: zmq.Socket[bytes] | None = None

    @property
    def bound(self) -> bool:
        return self.sock is not None

    def bind(self) -> None:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, messages.MAX_FRAME_BYTES + 1024)
        if self.curve_secret_key_file:
            public, secret = zmq.auth.load_certificate(self.curve_secret_key_file)
            if secret is None:
                raise InspectorError(f"{self.curve_secret_key_file}: no secret key in this file")
            if self.allow and self.zap is None:
                self.zap = self.ctx.socket(zmq.REP)
                self.zap.setsockopt(zmq.LINGER, 0)
                self.zap.bind(ZAP_ENDPOINT)
            sock.setsockopt(zmq.ZAP_DOMAIN, b"inspector")
            sock.curve_server = True
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        deadline = time.monotonic() + 10.0
        while True:  # after a restart the port can take a moment to come free
            try:
                sock.bind(self.address)
                break
            except zmq.ZMQError as exc:
                if time.monotonic() > deadline:
                    sock.close(0)
                    raise InspectorError(f"{self.who}: cannot bind {self.address}: {exc}") from None
                time.sleep(0.1)
        self.sock = sock

    def unbind(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def close(self) -> None:
        self.unbind()
        if self.zap is not None:
            self.zap.close(0)
            self.zap = None
        self.ctx.term()

    def _answer_zap(self) -> None:
        """One ZAP request: admit a CURVE client whose public key is on the allow-list, as its name."""
        assert self.zap is not None
        req = self.zap.recv_multipart()
        version, request_id = req[0], req[1]
        mechanism = req[5] if len(req) > 5 else b""
        key = req[6] if len(req) > 6 else b""
        name = self.allow.get(key) if mechanism == b"CURVE" else None
        if name is None:
            self.denied += 1
            if self.denied <= 10 or self.denied % 100 == 0:  # a rogue retrying forever must not fill the log
                z85 = zmq.utils.z85.encode(key).decode() if len(key) == 32 else "?"
                address = req[3].decode()
                self.emit(
                    "denied", mechanism=mechanism.decode(errors="replace"), key=z85, address=address, count=self.denied
                )
            self.zap.send_multipart([version, request_id, b"400", b"key not on the allow-list", b"", b""])
        else:
            self.zap.send_multipart([version, request_id, b"200", b"OK", name.encode(), b""])

    def send(self, identity: bytes, frame: bytes) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.send_multipart([identity, frame], zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def poll(self, timeout_s: float) -> list[tuple[bytes, bytes, str | None]]:
        """Wait up to ``timeout_s`` for frames (answering ZAP requests meanwhile); every frame that came, as
        ``(route, frame, allow-list name or None)``, at most 1000."""
        if self.sock is None:
            time.sleep(max(0.0, timeout_s))
            return []
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        if self.zap is not None:
            poller.register(self.zap, zmq.POLLIN)
        ready = dict(poller.poll(max(0, int(timeout_s * 1000 + 0.999))))
        if self.zap is not None and ready.get(self.zap):
            self._answer_zap()
        got: list[tuple[bytes, bytes, str | None]] = []
        if not ready.get(self.sock):
            return got
        for _ in range(1000):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if len(frames) != 2:
                self.emit("malformed", error=f"{len(frames) - 1} frames, expected 1")
                continue
            user_id = str(frames[1].get("User-Id")) if self.allow else None
            got.append((frames[0].bytes, frames[1].bytes, user_id or None))
        return got
