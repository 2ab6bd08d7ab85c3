"""The one interface a DLMS session needs from any transport: whole APDUs each way."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ApduTransport(Protocol):
    """`receive` waits at most `timeout` seconds and raises LinkTimeout (a TimeoutError)."""

    async def open(self) -> None: ...

    async def send(self, apdu: bytes) -> None: ...

    async def receive(self, timeout: float) -> bytes: ...  # noqa: ASYNC109 - the contract

    async def close(self) -> None: ...
