"""Shared serial lines: one open port per device path, one session at a time on it.

On an RS-485 multi-drop bus (or one optical probe) several meters share a line, and only one
HDLC session may talk at a time. Sessions take the line's asyncio lock for their whole life;
the port stays open while sessions queue for it and closes when the last one is done."""

from __future__ import annotations

import asyncio
import os
import termios
from dataclasses import dataclass

import serial
import serial_asyncio_fast

from drivers.errors import LinkTimeout, TransportError
from drivers.transports.stream import ByteStream


@dataclass(frozen=True, slots=True)
class SerialSettings:
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    def as_kwargs(self) -> dict[str, object]:
        return {
            "baudrate": self.baudrate,
            "bytesize": self.bytesize,
            "parity": self.parity,
            "stopbits": self.stopbits,
        }


_CONFIG_ERRORS = (termios.error, serial.SerialException, OSError, ValueError)


class SerialLine:
    """One device path. Use `get_serial_line(path)`; never construct two for one path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.loop = asyncio.get_running_loop()
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.opens = 0
        self.stream: ByteStream | None = None
        self._transport: serial_asyncio_fast.SerialTransport | None = None

    @property
    def serial(self) -> serial.Serial | None:
        return self._transport.serial if self._transport is not None else None

    async def acquire(
        self, settings: SerialSettings, wait_limit: float | None = None
    ) -> ByteStream:
        """Wait for the line (at most `wait_limit` s), open it if needed, apply `settings`."""
        self.waiting += 1
        try:
            if wait_limit is None:
                await self.lock.acquire()
            else:
                try:
                    async with asyncio.timeout(wait_limit):
                        await self.lock.acquire()
                except TimeoutError:
                    raise LinkTimeout(
                        f"serial line {self.path} stayed busy {wait_limit:g} s"
                    ) from None
        finally:
            self.waiting -= 1
        try:
            if self.stream is None or self.stream.closed:
                await self._open(settings)
            else:
                self.configure(settings)
            assert self.stream is not None
            self.stream.discard()
            return self.stream
        except BaseException:
            await self.release()
            raise

    async def release(self) -> None:
        """Hand the line on; close the port if nobody is waiting for it."""
        try:
            if self.waiting == 0:
                await self._close()
        finally:
            if self.waiting == 0 and _LINES.get(self.path) is self:
                del _LINES[self.path]
            if self.lock.locked():
                self.lock.release()

    def configure(self, settings: SerialSettings) -> None:
        port = self.serial
        if port is None:
            raise TransportError(f"serial line {self.path} is not open")
        try:
            port.apply_settings(settings.as_kwargs())
        except _CONFIG_ERRORS as exc:
            raise TransportError(f"cannot set {settings} on {self.path}: {exc}") from exc

    def configure_7e1(self, baudrate: int) -> bool:
        """7 data bits, even parity; False when the device refuses (then 8N1 with the parity
        bit computed by the caller gives the same bits on the wire)."""
        try:
            self.configure(SerialSettings(baudrate, 7, "E", 1))
            return True
        except TransportError:
            self.configure(SerialSettings(baudrate, 8, "N", 1))
            return False

    async def _open(self, settings: SerialSettings) -> None:
        await self._close()
        try:
            transport, stream = await serial_asyncio_fast.create_serial_connection(
                self.loop, ByteStream, self.path, **settings.as_kwargs()
            )
        except _CONFIG_ERRORS as exc:
            raise TransportError(f"cannot open serial port {self.path}: {exc}") from exc
        self._transport = transport
        assert isinstance(stream, ByteStream)
        if stream.transport is None:  # connection_made is scheduled, not yet run
            stream.connection_made(transport)
        self.stream = stream
        self.opens += 1

    async def _close(self) -> None:
        stream, self.stream, self._transport = self.stream, None, None
        if stream is not None:
            # No flush: the session is over, and draining into a stuck line could block.
            await stream.close(flush=False)


_LINES: dict[str, SerialLine] = {}


def line_key(path: str) -> str:
    return path if "://" in path else os.path.realpath(path)


def get_serial_line(path: str) -> SerialLine:
    """The line for `path` in the running event loop (created on first use)."""
    key = line_key(path)
    line = _LINES.get(key)
    if line is None or line.loop is not asyncio.get_running_loop():
        line = SerialLine(key)
        _LINES[key] = line
    return line
