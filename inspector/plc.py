"""PLC output drivers of the ejector gateway: Modbus TCP (pymodbus) and OPC UA (asyncua), one async interface.

A driver only writes: a boolean (coil / Boolean node) per ejector and for the fail-safe output, and an unsigned
16-bit counter (holding register / UInt16 node) for the watchdog. What to write when is the gateway's business
(``inspector/gateway.py``); docs/PLC.md is the register/node map for the PLC programmer.

Both libraries are the ``gateway`` extra (``pip install 'grape-spider-inspector[gateway]'``); a missing one is a
one-line error naming the extra. Errors come in two kinds: ``PlcConnectionError`` (the PLC cannot be reached or
stopped answering: the gateway goes fail-safe and reconnects with back-off) and ``PlcWriteRefused`` (the PLC
answered but refused this write — no such address, wrong type, access denied: counted, never retried at another
address).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from inspector.cliopts import require_extra
from inspector.errors import InspectorError

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
