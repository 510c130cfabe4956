"""Real PLC servers on loopback for the gateway tests: a pymodbus Modbus TCP server or an asyncua OPC UA server.

Run as its own process (``python tests/plc_servers.py modbus|opcua PORT``) so the gateway under test shares no
interpreter with it. It prints ``ready`` when it serves, then one JSON line per write a client made:
``{"t_s": <time.monotonic() on receipt>, "kind": "coil"|"register"|"node", "address": ..., "value": ..., "ok": ...}``
(the monotonic clock is system-wide, so the test compares these times with its own). ``PlcServer`` starts one
and collects the lines.

Modbus map: coils 0..31 and holding registers 0..15 exist; any other address is refused (illegal address).
OPC UA map (namespace ``urn:grape-spider-inspector:test-plc``, index 2): Boolean variables ``Ejector.1`` ..
``Ejector.4`` and ``FailSafe``, UInt16 ``Watchdog``; any other node is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MODBUS_COILS = 32
MODBUS_REGISTERS = 16
OPCUA_BOOLS = ("Ejector.1", "Ejector.2", "Ejector.3", "Ejector.4", "FailSafe")
OPCUA_NS = "urn:grape-spider-inspector:test-plc"


def _emit(kind: str, address: Any, value: Any, ok: bool) -> None:
    line = {"t_s": time.monotonic(), "kind": kind, "address": address, "value": value, "ok": ok}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def serve_modbus(port: int) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def action(fc: int, start: int, address: int, count: int, regs: list[int], values: Any) -> None:
        if values is not None:
            kind = "coil" if fc in (5, 15) else "register"
            for i, v in enumerate(values):
                _emit(kind, address + i, int(v), True)

    blocks = (
        [SimData(0, count=MODBUS_COILS, values=False, datatype=DataType.BITS)],
        [SimData(0, count=1, values=False, datatype=DataType.BITS)],
        [SimData(0, count=MODBUS_REGISTERS, values=0, datatype=DataType.REGISTERS)],
        [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
    )
    server = ModbusTcpServer(SimDevice(id=1, simdata=blocks, action=action), address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.2)
    print("ready", flush=True)
    await task


async def serve_opcua(port: int) -> None:
    from asyncua import Server, ua
    from asyncua.common.callback import CallbackType

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/plc/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(OPCUA_NS)
    obj = await server.nodes.objects.add_object(ns, "Line")
    for name in OPCUA_BOOLS:
        node = await obj.add_variable(ua.NodeId(name, ns), name, False, varianttype=ua.VariantType.Boolean)
        await node.set_writable()
    wd = await obj.add_variable(ua.NodeId("Watchdog", ns), "Watchdog", 0, varianttype=ua.VariantType.UInt16)
    await wd.set_writable()

    def on_write(event: Any, _dispatcher: Any) -> None:
        if not event.is_external:
            return
        results = event.response_params or []
        for i, wv in enumerate(event.request_params.NodesToWrite):
            ok = i < len(results) and results[i].is_good()
            value = wv.Value.Value.Value
            _emit("node", wv.NodeId.to_string(), value if isinstance(value, bool | int) else str(value), ok)

    server.subscribe_server_callback(CallbackType.PostWrite, on_write)
    async with server:
        print("ready", flush=True)
        while True:
            await asyncio.sleep(3600)


class PlcServer:
    """One server process; ``writes`` holds every write it recorded (dicts as printed), in arrival order."""

    def __init__(self, kind: str, port: int) -> None:
        self.kind, self.port = kind, port
        self.writes: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 30.0) -> PlcServer:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), self.kind, str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        ready = threading.Event()
        threading.Thread(target=self._read, args=(self.proc, ready), daemon=True).start()
        if not ready.wait(timeout_s):
            self.kill()
            raise RuntimeError(f"{self.kind} server on port {self.port} did not start in {timeout_s} s")
        return self

    def _read(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "ready":
                ready.set()
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.writes.append(rec)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.writes)

    def wait_for(self, predicate: Any, timeout_s: float) -> list[dict[str, Any]]:
        """Poll until ``predicate(writes)`` is true; the writes then (the caller asserts on them)."""
        deadline = time.monotonic() + timeout_s
        while True:
            writes = self.snapshot()
            if predicate(writes) or time.monotonic() > deadline:
                return writes
            time.sleep(0.01)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> PlcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_modbus(port) if kind == "modbus" else serve_opcua(port))
