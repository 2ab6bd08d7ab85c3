"""A byte pipe on an asyncio transport (TCP socket or serial port) with bounded buffering.

Reads hand over everything buffered so far; when the consumer falls behind, reading from the
OS pauses, so a babbling line costs at most `high_water` bytes of memory here."""

from __future__ import annotations

import asyncio
from typing import cast

from drivers.errors import LinkClosed

DEFAULT_HIGH_WATER = 64 * 1024


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ByteStream(asyncio.Protocol):
    def __init__(self, high_water: int = DEFAULT_HIGH_WATER) -> None:
        self.high_water = high_water
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._eof = False
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= self.high_water and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        if not self._lost.done():
            self._lost.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None:
            _settle(self._waiter)

    # -- use -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._eof or self.transport is None or self.transport.is_closing()

    async def read(self, deadline: float | None = None) -> bytes:
        """Whatever has arrived, at least one byte; LinkClosed at end of stream, TimeoutError
        when nothing came by `deadline` (the loop's clock).

        The deadline is one timer on the wait itself: cheaper than an asyncio.timeout()
        around the call (a Timeout object, the task's cancel and uncancel), which a session
        would otherwise pay for every reply."""
        while not self._buf:
            if self._eof:
                raise LinkClosed("the peer closed the connection")
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        data = bytes(self._buf)
        self._buf.clear()
        self._resume()
        return data

    def discard(self) -> int:
        """Drop what is buffered (stale bytes from an earlier session)."""
        count = len(self._buf)
        self._buf.clear()
        self._resume()
        return count

    def _resume(self) -> None:
        if self._paused and self.transport is not None and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise LinkClosed("the connection is closed")
        self.transport.write(data)

    async def close(self, grace: float = 2.0, *, flush: bool = True) -> None:
        """Close, flushing what is queued unless `flush` is False, and wait (bounded) until
        it is closed; a transport that does not close within `grace` seconds is aborted."""
        transport = self.transport
        if transport is None:
            return
        if not transport.is_closing():
            if flush:
                transport.close()
            else:
                transport.abort()
        if self._lost.done():
            return
        # The same bounded wait as asyncio.timeout around a shield, for one timer and one
        # future (a session pays this on every close).
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(grace, _expire, waiter)
        self._lost.add_done_callback(lambda _lost: _settle(waiter))
        try:
            await waiter
        except TimeoutError:
            transport.abort()
        finally:
            timer.cancel()
