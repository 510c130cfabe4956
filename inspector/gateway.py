"""The ejector gateway (``inspector gateway --config gateway.yaml``): the controller end of the reject protocol
(``inspector/messages.py``) for a line whose ejectors hang off a PLC.

It is the shared controller core (``inspector/controller.py``: de-duplication, acks, scheduling at absolute fire
times, refusing what cannot be fired on time, per-inspector fail-safe, watermarks) on the shared ROUTER socket
(``inspector/controller_socket.py``: CURVE, ZAP allow-list), with the PLC as its ``Output``
(``inspector/plc.py``: Modbus TCP or OPC UA, pulses, fail-safe output, watchdog, reconnect). This module holds:

- ``GatewayConfig``: the gateway's YAML (``deploy/gateway.example.yaml`` documents every key), validated like the
  daemon's config (one line per mistake, file:line, ``inspector gateway --check FILE``).
- ``GatewayMetrics``: its own Prometheus registry (``inspector_gateway_*``), served on 127.0.0.1 by default.
- ``Gateway``: the running service: protocol loop in the calling thread, PLC in its own thread, systemd
  notification (READY, WATCHDOG while both run), SIGTERM/SIGINT stop it (fail-safe written on the way out).

docs/PLC.md is the register/node map for the PLC programmer.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field, ValidationInfo, field_validator, model_validator

from inspector import messages
from inspector.config import MetricsConfig, Sectioned, Strict, resolve_path
from inspector.controller import ControllerCore, Send
from inspector.controller_socket import ControllerSocket, read_allow_list
from inspector.metrics import serve
from inspector.plc import Address, ModbusDriver, OpcUaDriver, PlcDriver, PlcOutput
from inspector.supervisor import SdNotify
from inspector.yamlload import validate

log = logging.getLogger(__name__)

# an OPC UA node id as text: ns=<index>;s=<name> | ns=<index>;i=<number> | i=<number> | nsu=<uri>;s=<name> ...
_NODE_ID = re.compile(r"^(ns=\d+;|nsu=[^;]+;)?[isgb]=.+$")


# ------------------------------------------------------------------------------------------------ configuration
class ControllerConfig(Strict):
    """The protocol end: the ROUTER socket the inspectors connect to, and when to fail safe for them."""

    bind: str = "tcp://127.0.0.1:5560"
    timeout_s: float = Field(2.0, gt=0, le=600, description="fail safe after this long without an inspector")
    margin_s: float = Field(0.0, ge=0, le=10, description="fail safe this long before a watermark runs out")
    expect_peers: int = Field(1, ge=1, le=256, description="inspectors that must be live (without an allow-list)")
    curve_secret_key_file: Path | None = None
    allow: Path | None = Field(None, description="CURVE client public keys admitted, each an expected inspector")

    @field_validator("curve_secret_key_file", "allow")
    @classmethod
    def _resolve_paths(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(v, info)

    @model_validator(mode="after")
    def _allow_needs_curve(self) -> ControllerConfig:
        if self.allow is not None and self.curve_secret_key_file is None:
            raise ValueError("allow needs curve_secret_key_file: the allow-list is checked by CURVE")
        return self


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

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        path = resolve_path(v, info)
        if path is not None and not path.is_file():
            raise ValueError(f"{path}: no such file; give the file holding the OPC UA user's password")
        return path

    @model_validator(mode="after")
    def _where(self) -> PlcConfig:
        if self.protocol == "modbus" and not self.host:
            raise ValueError("protocol modbus needs host: the PLC's address (e.g. 192.168.10.20)")
        if self.protocol == "opcua" and not (self.endpoint or "").startswith("opc.tcp://"):
            raise ValueError("protocol opcua needs endpoint: opc.tcp://HOST:PORT/PATH")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together (OPC UA user login), or neither")
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
        0.033, ge=0, le=0.1, description="a pulse due longer ago than this is refused, not fired late"
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
EVENTS = ("reject", "duplicate", "fired", "refused", "malformed", "denied", "peer", "failsafe")
_EVENT_LEVEL = {"refused": logging.ERROR, "malformed": logging.WARNING, "denied": logging.WARNING}


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
        self.connects = counter(
            "inspector_gateway_plc_connects_total",
            "PLC connection attempts: ok, failed (unreachable or lost while writing the outputs), refused (the PLC "
            "refused an output)",
            ["result"],
        )
        self.fail_safe = gauge("inspector_gateway_fail_safe", "1 while the gateway holds fail-safe")
        self.fail_safe_reason = gauge(
            "inspector_gateway_fail_safe_reason", "1 while this reason holds fail-safe", ["reason"]
        )
        self.peer_fail_safe = gauge(
            "inspector_gateway_peer_fail_safe",
            "1 while this expected inspector (its allow-list name) holds fail-safe: never heard, silent, unhealthy or "
            "behind its watermark",
            ["peer"],
        )
        self.fail_safe_entered = counter(
            "inspector_gateway_fail_safe_entries_total", "times a reason started holding fail-safe", ["reason"]
        )
        self.watchdog = counter("inspector_gateway_watchdog_writes_total", "watchdog counter writes to the PLC")
        self.events = counter(
            "inspector_gateway_events_total",
            "protocol events: reject, duplicate, fired, refused (nacked), malformed, denied (key not allowed), "
            "peer (an inspector heard first), failsafe (changes)",
            ["event"],
        )
        for event in EVENTS:
            self.events.labels(event=event)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else float(v)


# ------------------------------------------------------------------------------------------------ the service
class Gateway:
    """The controller core on a ROUTER socket with the PLC as its output. ``run`` serves until ``stop()``."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        c = config.controller
        self.allow = read_allow_list(c.allow) if c.allow is not None else {}
        self.endpoint = ControllerSocket(c.bind, c.curve_secret_key_file, self.allow, self._event, "gateway")
        self.plc = PlcOutput(config, open_driver(config.plc), self.metrics)
        self.core: ControllerCore | None = None
        self._stop = threading.Event()
        self.ready = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _event(self, event: str, **info: object) -> None:
        self.metrics.events.labels(event=event).inc()
        if event == "failsafe":
            log.warning("inspectors: fail-safe %s (%s)", info.get("state"), info.get("why"))
            return
        log.log(_EVENT_LEVEL.get(event, logging.INFO), "%s %s", event, json.dumps(info, default=str))

    def _send(self, sends: list[Send]) -> None:
        for route, msg in sends:
            self.endpoint.send(route, messages.encode(msg))

    def run(self, notify: SdNotify | None = None) -> int:
        c = self.config.controller
        sd = notify if notify is not None else SdNotify()
        server = serve(self.config.metrics, self.metrics)
        self.plc.start()
        try:
            self.endpoint.bind()
            core = self.core = ControllerCore(
                self.plc,
                timeout_s=c.timeout_s,
                margin_s=c.margin_s,
                expected_keys=sorted(set(self.allow.values())),
                expect_peers=c.expect_peers,
                on_event=self._event,
            )
            log.info("gateway on %s (instance %s), PLC %s", c.bind, core.instance, self.plc.driver.peer)
            sd.ready(f"serving {c.bind}, PLC {self.plc.driver.peer}")
            self.ready.set()
            next_ping = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                self._send(core.tick(now))
                for peer, why in core.peer_faults(now).items():
                    self.metrics.peer_fail_safe.labels(peer=peer).set(0 if why is None else 1)
                if now >= next_ping and self.plc.alive:  # systemd restarts a gateway whose PLC thread died
                    sd.watchdog()
                    next_ping = now + sd.ping_interval_s()
                wake = core.next_wake_s()
                until = min(now + 0.02, next_ping, wake if wake is not None else now + 0.02)
                for route, frame, user_id in self.endpoint.poll(until - time.monotonic()):
                    now = time.monotonic()
                    self._send(core.receive(route, frame, user_id, now))
            sd.stopping()
            return 0
        finally:
            self.plc.stop()  # fail-safe written before the connection closes
            self.endpoint.close()
            if server is not None:
                server.close()
            sd.close()


def serve_gateway(config: GatewayConfig) -> int:
    """``inspector gateway --config``: serve until SIGTERM/SIGINT."""
    gateway = Gateway(config)

    def _stop(signum: int, frame: object) -> None:
        gateway.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return gateway.run()
