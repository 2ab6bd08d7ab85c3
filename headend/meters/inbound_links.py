"""Which inbound meters are connected right now, and how to talk to each over its connection.

An inbound meter (inventory transport `inbound`) is reachable only while the connection it
opened to the listener is open. The listener registers a transport maker for it while it
lends that connection out; MeterAccess asks here instead of connecting anywhere. A meter not
connected is MeterNotConnected (an OSError, as any unreachable meter's error is)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drivers.connect import MeterConnection
from drivers.transports.base import ApduTransport

__all__ = ["InboundLinks", "MeterNotConnected"]

MakeTransport = Callable[[MeterConnection], ApduTransport]


class MeterNotConnected(ConnectionError):
    """An inbound meter with no open connection to the listener now."""


class InboundLinks:
    def __init__(self) -> None:
        self._links: dict[str, MakeTransport] = {}
        self._calls: dict[str, asyncio.Event] = {}

    def __repr__(self) -> str:
        return f"InboundLinks(connected={len(self._links)})"

    def register(self, meter_id: str, make: MakeTransport) -> None:
        self._links[meter_id] = make

    def unregister(self, meter_id: str, make: MakeTransport) -> None:
        if self._links.get(meter_id) is make:
            del self._links[meter_id]

    def open_call(self, meter_id: str) -> asyncio.Event:
        """The meter's connection is open (and read by the listener): its wake-up."""
        wake = self._calls[meter_id] = asyncio.Event()
        return wake

    def close_call(self, meter_id: str, wake: asyncio.Event) -> None:
        if self._calls.get(meter_id) is wake:
            del self._calls[meter_id]

    def request(self, meter_id: str) -> bool:
        """Work is due for the meter: wake its open call, if it has one (True)."""
        wake = self._calls.get(meter_id)
        if wake is None:
            return False
        wake.set()
        return True

    def connected(self, meter_id: str) -> bool:
        return meter_id in self._links

    def transport(self, meter_id: str, connection: MeterConnection) -> ApduTransport:
        make = self._links.get(meter_id)
        if make is None:
            raise MeterNotConnected(f"inbound meter {meter_id} is not connected now")
        return make(connection)
