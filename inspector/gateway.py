"""The ejector gateway's PLC side: configuration, metrics and the output scheduler that drives the PLC.

``inspector gateway --config gateway.yaml`` is the controller end of the reject protocol (``inspector/messages.py``)
for a line whose ejectors hang off a PLC. This module holds what is PLC-specific:

- ``GatewayConfig``: the gateway's YAML (``deploy/gateway.example.yaml`` documents every key), validated like the
  daemon's config (one line per mistake, file:line, ``inspector gateway --check FILE``).
- ``PlcOutput``: a thread running an asyncio loop on the monotonic clock that owns the PLC connection (a driver
  from ``inspector/plc.py``). ``fire(across_mm, at_s, stretch_s)`` switches the ejector(s) covering ``across_mm``
  on for a pulse (or the stretch); a pulse whose time ``at_s`` has passed by more than ``late_tolerance_s`` is
  refused (``PulseRefused``), never fired late. ``fail_safe(on, reason)`` drives the fail-safe output (held while
  any reason holds it). A watchdog counter is written every
  ``watchdog.interval_s``; a failed write or connect means the PLC is gone: fail-safe, and reconnect with a
  bounded exponential back-off, every attempt counted. After a reconnect the outputs are written afresh (fail-safe
  first) before anything else.
- ``GatewayMetrics``: its own Prometheus registry, served on 127.0.0.1 by default.

docs/PLC.md is the register/node map for the PLC programmer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field, ValidationInfo, field_validator, model_validator

from inspector.config import MetricsConfig, Sectioned, Strict
from inspector.errors import InspectorError
from inspector.plc import Address, ModbusDriver, OpcUaDriver, PlcConnectionError, PlcDriver, PlcWriteRefused
from inspector.yamlload import validate

log = logging.getLogger(__name__)

# an OPC UA node id as text: ns=<index>;s=<name> | ns=<index>;i=<number> | i=<number> | nsu=<uri>;s=<name> ...
_NODE_ID = re.compile(r"^(ns=\d+;|nsu=[^;]+;)?[isgb]=.+$")


# ------------------------------------------------------------------------------------------------ configuration
class ControllerConfig(Strict):
    """The protocol end: the ROUTER socket the inspectors connect to."""

    bind: str = "tcp://127.0.0.1:5560"
    heartbeat_interval_s: float = Field(0.5, gt=0, le=60)
    timeout_s: float = Field(2.0, gt=0, le=600, description="fail safe after this long without an inspector")
    curve_secret_key_file: Path | None = None


class PlcConfig(Strict):
    """Where the PLC is. Modbus TCP: host, port, device_id. OPC UA: endpoint (opc.tcp://...), optional user."""

    protocol: Literal["modbus", "opcua"]
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    device_id: int = Field(1, ge=0, le=255, description="Modbus unit id")
    endpoint: str | None = None
    username: str | None = None
    password_file: Path | None = None
    timeout_s: float = Field(0.5, gt=0, le=10, description="connect and per-write timeout")

    @model_validator(mode="after")
    def _where(self) -> PlcConfig:
        if self.protocol == "modbus" and not self.host:
            raise ValueError("protocol modbus needs host: the PLC's address (e.g. 192.168.10.20)")
        if self.protocol == "opcua" and not (self.endpoint or "").startswith("opc.tcp://"):
            raise ValueError("protocol opcua needs endpoint: opc.tcp://HOST:PORT/PATH")
        return self


class EjectorConfig(Strict):
    name: str = Field(min_length=1)
    output: int | str = Field(description="Modbus coil number, or OPC UA Boolean node id")
    across_mm: tuple[float, float] | None = Field(
        None, description="[from, to] across the belt from the image centre line; absent: the whole width"
    )

    @field_validator("across_mm")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError("across_mm must be [from, to] with from < to")
        return v


class FailSafeConfig(Strict):
    output: int | str | None = Field(None, description="coil / Boolean node set true while fail-safe")
    hold_ejectors: bool = Field(False, description="also hold every ejector output on while fail-safe")


class WatchdogConfig(Strict):
    output: int | str | None = Field(None, description="holding register / UInt16 node the counter goes to")
    interval_s: float = Field(0.2, gt=0, le=10)


class ReconnectConfig(Strict):
    initial_s: float = Field(0.2, gt=0, le=60)
    max_s: float = Field(5.0, gt=0, le=600)


def _own_output(info: ValidationInfo, address: Address | None, taken: list[Address], what: str) -> None:
    """Raise when ``address`` is not an output of the configured protocol or is already another output's."""
    plc = info.data.get("plc")
    if address is None or plc is None:  # no such output, or the plc section failed (reported there)
        return
    why = _address_ok(plc.protocol, address)
    if why:
        raise ValueError(f"{what}: {why}")
    if address in taken:
        raise ValueError(f"{what}: {address!r} is already another output's; give each output its own address")


def _address_ok(protocol: str, address: Address) -> str | None:
    """Why ``address`` is not an output address of ``protocol`` (None when it is)."""
    if protocol == "modbus":
        if not isinstance(address, int) or not 0 <= address <= 65535:
            return f"a Modbus address is a whole number 0..65535, got {address!r}"
    elif not isinstance(address, str) or not _NODE_ID.match(address):
        return f"an OPC UA output is a node id such as 'ns=2;s=Ejector.Left', got {address!r}"
    return None


class GatewayConfig(Sectioned):
    """The gateway's config (deploy/gateway.example.yaml documents every key)."""

    controller: ControllerConfig = ControllerConfig()
    plc: PlcConfig
    ejectors: list[EjectorConfig] = Field(min_length=1)
    pulse_s: float = Field(0.05, gt=0, le=5, description="how long an ejector output stays on per reject")
    late_tolerance_s: float = Field(
        0.01, ge=0, le=0.1, description="a pulse due longer ago than this is refused, not fired late"
    )
    fail_safe: FailSafeConfig = Field(FailSafeConfig(), validate_default=True)
    watchdog: WatchdogConfig = WatchdogConfig()
    reconnect: ReconnectConfig = ReconnectConfig()
    metrics: MetricsConfig = MetricsConfig(port=9110)

    @field_validator("ejectors")
    @classmethod
    def _ejector_outputs(cls, v: list[EjectorConfig], info: ValidationInfo) -> list[EjectorConfig]:
        names = [e.name for e in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"ejector names must differ; {', '.join(dup)} appears more than once")
        for i, e in enumerate(v):
            _own_output(info, e.output, [o.output for o in v[:i]], f"ejector {i + 1} ({e.name}) output")
        return v

    @field_validator("fail_safe")
    @classmethod
    def _fail_safe_output(cls, v: FailSafeConfig, info: ValidationInfo) -> FailSafeConfig:
        if v.output is None and not v.hold_ejectors:
            raise ValueError(
                "give fail_safe.output (the PLC input that stops or diverts the line) or set "
                "fail_safe.hold_ejectors: true; a gateway without a fail-safe action would pass bunches"
            )
        _own_output(info, v.output, [e.output for e in info.data.get("ejectors") or []], "output")
        return v

    @field_validator("watchdog")
    @classmethod
    def _watchdog_output(cls, v: WatchdogConfig, info: ValidationInfo) -> WatchdogConfig:
        plc, fail_safe = info.data.get("plc"), info.data.get("fail_safe")
        bits = [e.output for e in info.data.get("ejectors") or []] + ([fail_safe.output] if fail_safe else [])
        # Modbus holding registers are an address space apart from the coils; OPC UA nodes are one space
        _own_output(info, v.output, bits if plc is not None and plc.protocol == "opcua" else [], "output")
        return v

    @field_validator("reconnect")
    @classmethod
    def _backoff_ordered(cls, v: ReconnectConfig) -> ReconnectConfig:
        if v.initial_s > v.max_s:
            raise ValueError("reconnect.initial_s must not exceed reconnect.max_s")
        return v


def load_gateway_config(path: Path | str) -> GatewayConfig:
    """Validate a gateway config; ``ConfigError`` with one line per mistake (file:line: key: what is wrong)."""
    return validate(GatewayConfig, Path(path))


def open_driver(plc: PlcConfig) -> PlcDriver:
    """The driver for ``plc.protocol`` (the library is imported when it connects)."""
    if plc.protocol == "modbus":
        assert plc.host is not None
        return ModbusDriver(plc.host, plc.port, plc.device_id, plc.timeout_s)
    assert plc.endpoint is not None
    password = None if plc.password_file is None else plc.password_file.read_text().strip()
    return OpcUaDriver(plc.endpoint, plc.timeout_s, plc.username, password)


# ------------------------------------------------------------------------------------------------ metrics
class GatewayMetrics:
    """The gateway's own metrics, on their own registry (names begin ``inspector_gateway_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        counter, gauge = partial(Counter, registry=r), partial(Gauge, registry=r)
        self.pulses = counter("inspector_gateway_pulses_total", "ejector pulses written to the PLC", ["ejector"])
        self.refused = counter(
            "inspector_gateway_pulses_refused_total",
            "pulses not fired: late (due longer ago than late_tolerance_s), plc_down, plc_refused (the PLC "
            "refused the write)",
            ["reason"],
        )
        fire_buckets = (-0.01, -0.001, 0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1)
        self.fire_error = Histogram(
            "inspector_gateway_fire_error_seconds",
            "ejector write sent minus fire time",
            buckets=fire_buckets,
            registry=r,
        )
        write_buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)
        self.write_seconds = Histogram(
            "inspector_gateway_plc_write_seconds", "round trip of one PLC write", buckets=write_buckets, registry=r
        )
        self.write_errors = counter(
            "inspector_gateway_plc_write_errors_total",
            "PLC writes that failed: connection (lost, timed out) or refused (address, type, access)",
            ["kind"],
        )
        self.plc_up = gauge("inspector_gateway_plc_up", "1 while the PLC connection is up")
        self.connects = counter("inspector_gateway_plc_connects_total", "PLC connection attempts by result", ["result"])
        self.fail_safe = gauge("inspector_gateway_fail_safe", "1 while the gateway holds fail-safe")
        self.fail_safe_reason = gauge(
            "inspector_gateway_fail_safe_reason", "1 while this reason holds fail-safe", ["reason"]
        )
        self.fail_safe_entered = counter(
            "inspector_gateway_fail_safe_entries_total", "times a reason started holding fail-safe", ["reason"]
        )
        self.watchdog = counter("inspector_gateway_watchdog_writes_total", "watchdog counter writes to the PLC")

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else float(v)


# ------------------------------------------------------------------------------------------------ the output
class PulseRefused(InspectorError):
    """A pulse that was not fired: ``outcome`` late | plc_down | plc_refused (never fired late or elsewhere)."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(f"pulse not fired ({outcome}): {detail}")
        self.outcome = outcome


FAIL_SAFE_STARTUP = "startup"
FAIL_SAFE_PLC = "plc_down"


class PlcOutput:
    """The PLC side of the gateway: a thread with an asyncio loop (monotonic clock) that owns the connection.

    It is the ``Output`` of the controller core (``inspector/controller.py``): ``fire`` (switch now, called by
    the core when a reject is due; blocks for the write) and ``fail_safe``, both thread-safe. Starts in fail-safe
    (reasons ``startup``, cleared by the protocol end, and ``plc_down``, cleared once the PLC has taken every
    output).
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
        self._reasons: set[str] = {FAIL_SAFE_STARTUP, FAIL_SAFE_PLC}  # no inspector heard, no PLC written yet
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
        for result in ("ok", "failed"):
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
        """Hold (``on``) or release fail-safe for ``reason``; the output is on while any reason holds it."""
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
                self.metrics.connects.labels(result="ok").inc()
                self._set_connected(True)
                log.info("PLC connected: %s", self.driver.peer)
                try:
                    await self._sync_outputs()
                except PlcWriteRefused:  # outputs the PLC does not have: stay fail-safe, try again later
                    self._set_connected(False)
                    await self.driver.close()
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(2 * backoff_s, self.config.reconnect.max_s)
                    continue
                except PlcConnectionError:
                    continue  # lost again: reconnect
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
