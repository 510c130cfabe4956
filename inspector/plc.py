"""The PLC side of the ejector gateway: output drivers (Modbus TCP via pymodbus, OPC UA via asyncua, one async
interface) and ``PlcOutput``, the thread that owns the PLC connection and drives the outputs.

A driver only writes: a boolean (coil / Boolean node) per ejector and for the fail-safe output, and an unsigned
16-bit counter (holding register / UInt16 node) for the watchdog. What to write when is the gateway's business
(``inspector/gateway.py``); docs/PLC.md is the register/node map for the PLC programmer.

Both libraries are the ``gateway`` extra (``pip install 'grape-spider-inspector[gateway]'``); a missing one is a
one-line error naming the extra. Errors come in two kinds: ``PlcConnectionError`` (the PLC cannot be reached or
stopped answering: the gateway goes fail-safe and reconnects with back-off) and ``PlcWriteRefused`` (the PLC
answered but refused this write — no such address, wrong type, access denied: counted, never retried at another
address).

``PlcOutput`` runs an asyncio loop on the monotonic clock in its own thread. ``fire(across_mm, at_s, stretch_s)``
switches the ejector(s) covering ``across_mm`` on for a pulse (or the stretch) and returns when the write went
out; one whose time ``at_s`` has passed by more than ``late_tolerance_s`` is refused (``PulseRefused``), never
fired late. ``fail_safe(on, reason)`` drives the fail-safe output, held while any reason holds it (the inspectors,
the PLC connection, stopping). A watchdog counter goes to the PLC every ``watchdog.interval_s``; a failed write or
connect means the PLC is gone: fail-safe, and reconnect with a bounded exponential back-off, every attempt
counted. After a reconnect the fail-safe output is written first, then every ejector as it should be.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from inspector.cliopts import require_extra
from inspector.errors import InspectorError

if TYPE_CHECKING:
    from inspector.gateway import GatewayConfig, GatewayMetrics

log = logging.getLogger(__name__)

Address = int | str  # a Modbus coil/register number, or an OPC UA node id ("ns=2;s=Ejector.Left")


class PlcError(InspectorError):
    """A write that did not reach the PLC output."""


class PlcConnectionError(PlcError):
    """The PLC cannot be reached, or the connection broke or timed out."""


class PlcWriteRefused(PlcError):
    """The PLC answered and refused the write (no such address, wrong type, no access)."""


class PlcDriver(Protocol):
    """What the gateway needs from a PLC: connect, write a bit, write a 16-bit counter, close."""

    @property
    def peer(self) -> str: ...

    async def connect(self) -> None: ...

    async def write_bool(self, address: Address, value: bool) -> None: ...

    async def write_u16(self, address: Address, value: int) -> None: ...

    async def close(self) -> None: ...


class ModbusDriver:
    """Modbus TCP: ejector and fail-safe outputs are coils (function 05), the watchdog a holding register (06)."""

    def __init__(self, host: str, port: int, device_id: int, timeout_s: float) -> None:
        self.host, self.port, self.device_id, self.timeout_s = host, port, device_id, timeout_s
        self._client: Any = None

    @property
    def peer(self) -> str:
        return f"modbus://{self.host}:{self.port} device {self.device_id}"

    async def connect(self) -> None:
        require_extra("pymodbus", "the Modbus TCP output of the gateway")
        from pymodbus.client import AsyncModbusTcpClient

        await self.close()
        # reconnect_delay=0: the gateway reconnects itself, with its own bounded back-off, and counts it
        client = AsyncModbusTcpClient(self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0)
        try:
            ok = await asyncio.wait_for(client.connect(), self.timeout_s * 2)
        except (TimeoutError, OSError) as exc:
            client.close()
            raise PlcConnectionError(f"{self.peer}: cannot connect ({exc or 'timed out'})") from None
        if not ok:
            client.close()
            raise PlcConnectionError(f"{self.peer}: cannot connect")
        self._client = client

    async def _call(self, what: str, address: Address, request: Callable[[Any], Awaitable[Any]]) -> None:
        from pymodbus.exceptions import ModbusException

        client = self._client
        if client is None or not client.connected:
            raise PlcConnectionError(f"{self.peer}: not connected")
        try:
            response = await asyncio.wait_for(request(client), self.timeout_s * 2)
        except (TimeoutError, ModbusException, OSError) as exc:
            raise PlcConnectionError(f"{self.peer}: {what} {address}: {exc or 'timed out'}") from None
        if response.isError():
            raise PlcWriteRefused(f"{self.peer}: {what} {address} refused ({response})")

    async def write_bool(self, address: Address, value: bool) -> None:
        await self._call("coil", address, lambda c: c.write_coil(int(address), bool(value), device_id=self.device_id))

    async def write_u16(self, address: Address, value: int) -> None:
        await self._call(
            "holding register",
            address,
            lambda c: c.write_register(int(address), int(value) & 0xFFFF, device_id=self.device_id),
        )

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class OpcUaDriver:
    """OPC UA: ejector and fail-safe outputs are Boolean variables, the watchdog a UInt16 variable."""

    def __init__(self, endpoint: str, timeout_s: float, username: str | None, password: str | None) -> None:
        self.endpoint, self.timeout_s = endpoint, timeout_s
        self.username, self.password = username, password
        self._client: Any = None
        self._nodes: dict[str, Any] = {}

    @property
    def peer(self) -> str:
        return self.endpoint

    async def connect(self) -> None:
        asyncua = require_extra("asyncua", "the OPC UA output of the gateway")
        await self.close()
        client = asyncua.Client(self.endpoint, timeout=self.timeout_s)
        if self.username is not None:
            client.set_user(self.username)
            client.set_password(self.password or "")
        try:
            await asyncio.wait_for(client.connect(), self.timeout_s * 2)
        except (TimeoutError, OSError, asyncua.ua.UaError) as exc:
            raise PlcConnectionError(f"{self.peer}: cannot connect ({exc or 'timed out'})") from None
        self._client = client
        self._nodes.clear()

    async def _write(self, address: Address, variant: Any) -> None:
        from asyncua import ua

        if self._client is None:
            raise PlcConnectionError(f"{self.peer}: not connected")
        node = self._nodes.get(str(address))
        if node is None:
            node = self._nodes[str(address)] = self._client.get_node(str(address))
        try:
            await asyncio.wait_for(node.write_value(ua.DataValue(variant)), self.timeout_s * 2)
        except ua.UaStatusCodeError as exc:
            raise PlcWriteRefused(f"{self.peer}: node {address} refused the write ({type(exc).__name__})") from None
        except (TimeoutError, OSError, ConnectionError, ua.UaError) as exc:
            raise PlcConnectionError(f"{self.peer}: node {address}: {exc or 'timed out'}") from None

    async def write_bool(self, address: Address, value: bool) -> None:
        from asyncua import ua

        await self._write(address, ua.Variant(bool(value), ua.VariantType.Boolean))

    async def write_u16(self, address: Address, value: int) -> None:
        from asyncua import ua

        await self._write(address, ua.Variant(int(value) & 0xFFFF, ua.VariantType.UInt16))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), self.timeout_s)
            except Exception:
                client.disconnect_socket()


# ------------------------------------------------------------------------------------------------ the output
class PulseRefused(InspectorError):
    """A pulse that was not fired: ``outcome`` late | plc_down | plc_refused (never fired late or elsewhere)."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(f"pulse not fired ({outcome}): {detail}")
        self.outcome = outcome


FAIL_SAFE_INSPECTORS = "inspectors"  # held by the controller core: an inspector silent, unhealthy or behind
FAIL_SAFE_PLC = "plc_down"


class PlcOutput:
    """The PLC side of the gateway: a thread with an asyncio loop (monotonic clock) that owns the connection.

    It is the ``Output`` of the controller core (``inspector/controller.py``): ``fire`` (switch now, called by
    the core when a reject is due; blocks for the write) and ``fail_safe``, both thread-safe. Starts in fail-safe
    (reasons ``inspectors``, released by the controller core once the inspectors vouch for the belt, and
    ``plc_down``, released once the PLC has taken every output).
    """

    def __init__(
        self,
        config: GatewayConfig,
        driver: PlcDriver,
        metrics: GatewayMetrics,
    ) -> None:
        self.config = config
        self.driver = driver
        self.metrics = metrics
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="plc-output", daemon=True)
        self._lock: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._connected = False
        self._stopping = False
        self._reasons: set[str] = {FAIL_SAFE_INSPECTORS, FAIL_SAFE_PLC}  # no inspector heard, no PLC written yet
        self._on_until: dict[str, float] = {e.name: -math.inf for e in config.ejectors}
        self._counter = 0
        self._ready = threading.Event()
        self.state_changed = threading.Condition()
        for e in config.ejectors:
            metrics.pulses.labels(ejector=e.name)
        for reason in ("late", "plc_down", "plc_refused"):
            metrics.refused.labels(reason=reason)
        for kind in ("connection", "refused"):
            metrics.write_errors.labels(kind=kind)
        for result in ("ok", "failed", "refused"):
            metrics.connects.labels(result=result)
        self._publish_fail_safe(set())

    # ------------------------------------------------------------------ lifecycle (caller's thread)
    def __enter__(self) -> PlcOutput:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10.0)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Fail safe (reason ``stopping``), close the connection, end the thread."""
        if not self._thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            fut.result(timeout_s)
        except Exception:
            log.exception("PLC output did not stop cleanly")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        """The output thread runs (it owns every PLC write)."""
        return self._thread.is_alive()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def in_fail_safe(self) -> bool:
        return bool(self._reasons)

    @property
    def fail_safe_reasons(self) -> frozenset[str]:
        return frozenset(self._reasons)

    # ------------------------------------------------------------------ entry points (any thread)
    def ejectors_for(self, across_mm: float | None) -> tuple[str, ...]:
        """The ejectors whose span covers ``across_mm``; all of them when it is unknown or outside every span."""
        every = tuple(e.name for e in self.config.ejectors)
        if across_mm is None or not math.isfinite(across_mm):
            return every
        hit = tuple(
            e.name for e in self.config.ejectors if e.across_mm is None or e.across_mm[0] <= across_mm <= e.across_mm[1]
        )
        return hit or every

    def fire(self, across_mm: float | None, at_s: float, stretch_s: float = 0.0) -> float:
        """Switch the ejector(s) covering ``across_mm`` on now, for ``max(pulse_s, stretch_s)``; ``at_s`` is the
        monotonic time it was due. Returns the monotonic time the write went out. Raises ``PulseRefused`` when it
        was not fired: due longer ago than ``late_tolerance_s`` (never fired late), PLC down or refusing."""
        ejectors = self.ejectors_for(across_mm)
        length_s = max(self.config.pulse_s, stretch_s)
        fut = asyncio.run_coroutine_threadsafe(self._pulse(ejectors, at_s, length_s), self._loop)
        try:
            return fut.result(4 * self.config.plc.timeout_s + 1.0)
        except PulseRefused as exc:
            self.metrics.refused.labels(reason=exc.outcome).inc()
            log.error("pulse on %s due at %.3f: %s", ",".join(ejectors), at_s, exc)
            raise
        except concurrent.futures.TimeoutError:
            fut.cancel()
            self.metrics.refused.labels(reason="plc_down").inc()
            raise PulseRefused("plc_down", f"the write to {self.driver.peer} did not finish") from None

    def fail_safe(self, on: bool, reason: str) -> None:
        """Hold (``on``) or release fail-safe for ``reason`` (the controller core's is ``inspectors``); the output
        is on while any reason (inspectors, PLC down, stopping) holds it."""
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._set_reason(reason, on)))

    def wait_for(self, predicate: Callable[[PlcOutput], bool], timeout_s: float) -> bool:
        """Block until ``predicate(self)`` holds after a state change (connection, fail-safe), or time out."""
        deadline = time.monotonic() + timeout_s
        with self.state_changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.state_changed.wait(left)
        return True

    # ------------------------------------------------------------------ the loop (output thread)
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._loop.create_task(self._supervise())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    def _set_connected(self, up: bool) -> None:
        self._connected = up
        self.metrics.plc_up.set(1 if up else 0)
        self._notify()

    def _notify(self) -> None:
        with self.state_changed:
            self.state_changed.notify_all()

    async def _pulse(self, ejectors: tuple[str, ...], at_s: float, length_s: float) -> float:
        late_s = time.monotonic() - at_s
        if late_s > self.config.late_tolerance_s:
            raise PulseRefused("late", f"due {late_s:.3f} s ago (tolerance {self.config.late_tolerance_s} s)")
        if not self._connected:
            raise PulseRefused("plc_down", f"no connection to {self.driver.peer}")
        outputs = {e.name: e.output for e in self.config.ejectors}
        written_at = time.monotonic()
        for name in ejectors:
            self._on_until[name] = max(self._on_until[name], written_at + length_s)
        try:
            for name in ejectors:
                await self._write_bool(outputs[name], True)
                self.metrics.pulses.labels(ejector=name).inc()
        except PlcWriteRefused as exc:
            raise PulseRefused("plc_refused", str(exc)) from None
        except PlcConnectionError as exc:
            raise PulseRefused("plc_down", str(exc)) from None
        finally:
            for name in ejectors:
                self._loop.call_at(self._on_until[name], self._start_release, name)
        self.metrics.fire_error.observe(written_at - at_s)
        return written_at

    def _start_release(self, name: str) -> None:
        self._loop.create_task(self._release(name))

    async def _release(self, name: str) -> None:
        """Switch an ejector off at the end of its last pulse, unless fail-safe holds every ejector on."""
        if time.monotonic() < self._on_until[name] or (self.in_fail_safe and self.config.fail_safe.hold_ejectors):
            return
        output = next(e.output for e in self.config.ejectors if e.name == name)
        try:
            await self._write_bool(output, False)
        except (PlcWriteRefused, PlcConnectionError):
            log.error("ejector %s: could not switch off (written afresh after the reconnect)", name)

    async def _write_bool(self, address: Address, value: bool) -> None:
        await self._write(self.driver.write_bool(address, value))

    async def _write(self, call: Awaitable[None]) -> None:
        assert self._lock is not None
        async with self._lock:
            t0 = time.monotonic()
            try:
                await call
            except PlcWriteRefused as exc:
                self.metrics.write_errors.labels(kind="refused").inc()
                log.error("%s", exc)
                raise
            except PlcConnectionError as exc:
                self.metrics.write_errors.labels(kind="connection").inc()
                await self._lost(str(exc))
                raise
            self.metrics.write_seconds.observe(time.monotonic() - t0)

    async def _lost(self, why: str) -> None:
        if not self._connected:
            return
        log.error("PLC connection lost (%s): fail-safe, reconnecting", why)
        self._set_connected(False)
        self._hold(FAIL_SAFE_PLC)
        await self.driver.close()
        assert self._wake is not None
        self._wake.set()

    def _hold(self, reason: str) -> None:
        before = set(self._reasons)
        if reason not in self._reasons:
            self._reasons.add(reason)
            self.metrics.fail_safe_entered.labels(reason=reason).inc()
        self._publish_fail_safe(before)

    def _publish_fail_safe(self, before: set[str]) -> None:
        for reason in before | self._reasons:
            self.metrics.fail_safe_reason.labels(reason=reason).set(1 if reason in self._reasons else 0)
        self.metrics.fail_safe.set(1 if self._reasons else 0)
        if bool(before) != bool(self._reasons) or before != self._reasons:
            log.warning("fail-safe %s (%s)", "ON" if self._reasons else "off", ", ".join(sorted(self._reasons)) or "-")
        self._notify()

    async def _set_reason(self, reason: str, on: bool) -> None:
        if on:
            self._hold(reason)
        elif reason in self._reasons:
            before = set(self._reasons)
            self._reasons.discard(reason)
            self._publish_fail_safe(before)
        if self._connected:
            # a failed write is counted in _write; a lost connection is reconnected and written afresh
            with contextlib.suppress(PlcWriteRefused, PlcConnectionError):
                await self._write_fail_safe()

    async def _write_fail_safe(self) -> None:
        """The fail-safe output (and, with hold_ejectors, every ejector) as the reasons say now."""
        fs = self.config.fail_safe
        on = self.in_fail_safe
        if fs.output is not None:
            await self._write_bool(fs.output, on)
        if fs.hold_ejectors:
            now = time.monotonic()
            for e in self.config.ejectors:
                await self._write_bool(e.output, on or now < self._on_until[e.name])

    async def _sync_outputs(self) -> None:
        """After a (re)connect: fail-safe first, then every ejector as it should be now."""
        await self._write_fail_safe()
        if not self.config.fail_safe.hold_ejectors:
            now = time.monotonic()
            for e in self.config.ejectors:
                await self._write_bool(e.output, now < self._on_until[e.name])

    async def _keepalive(self) -> None:
        """The watchdog counter (or, without one, the fail-safe state again): proves the PLC is still there."""
        wd = self.config.watchdog
        if wd.output is not None:
            self._counter = (self._counter + 1) & 0xFFFF
            await self._write(self.driver.write_u16(wd.output, self._counter))
            self.metrics.watchdog.inc()
        else:
            await self._write_fail_safe()

    async def _supervise(self) -> None:
        assert self._wake is not None
        backoff_s = self.config.reconnect.initial_s
        while not self._stopping:
            if not self._connected:
                try:
                    await self.driver.connect()
                except PlcConnectionError as exc:
                    self.metrics.connects.labels(result="failed").inc()
                    log.warning("%s; next try in %.1f s", exc, backoff_s)
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(2 * backoff_s, self.config.reconnect.max_s)
                    continue
                try:  # the PLC is up only once it has taken every output
                    await self._sync_outputs()
                except (PlcWriteRefused, PlcConnectionError) as exc:
                    refused = isinstance(exc, PlcWriteRefused)  # outputs the PLC does not have: stay fail-safe
                    self.metrics.connects.labels(result="refused" if refused else "failed").inc()
                    log.warning("%s; stays fail-safe, next try in %.1f s", exc, backoff_s)
                    await self.driver.close()
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(2 * backoff_s, self.config.reconnect.max_s)
                    continue
                self.metrics.connects.labels(result="ok").inc()
                self._set_connected(True)
                log.info("PLC connected: %s", self.driver.peer)
                backoff_s = self.config.reconnect.initial_s
                await self._set_reason(FAIL_SAFE_PLC, False)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.watchdog.interval_s)
                continue  # woken: the connection was lost
            except TimeoutError:
                pass
            if self._connected and not self._stopping:
                with contextlib.suppress(PlcWriteRefused, PlcConnectionError):  # counted; a loss is seen above
                    await self._keepalive()

    async def _shutdown(self) -> None:
        self._stopping = True
        await self._set_reason("stopping", True)
        await self.driver.close()
        self._set_connected(False)
