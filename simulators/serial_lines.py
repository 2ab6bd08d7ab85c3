"""Meters on pseudo-terminals: one line per pty, several HDLC addresses per line (RS-485).

The simulator keeps the pty's controller side and hands out the device path of the other side,
which a client opens like any serial port. Every meter on a line sees every byte and answers
only frames addressed to it, as on a multi-drop bus. With pacing on, answers leave at the line's
byte rate (10 bits per byte, 8N1) and only after the request itself would have been on the wire,
so timing looks like a real line; without it the pty is as fast as the machine.

The line also answers the IEC 62056-21 mode E opening (`/?<address>!` -> identification), so
clients that start optical-probe style work too; a pty has no real baud rate to switch."""

from __future__ import annotations

import asyncio
import os
import re
import tty
from collections.abc import Sequence

from cosem_objects.errors import ProtocolError
from drivers.hdlc import HdlcServerConnection
from simulators.meter_runtime import Exchange, MeterRuntime, drive_hdlc

BITS_PER_BYTE = 10  # start + 8 data + stop
READ_SIZE = 4096
MAX_OUTBOX = 1 << 16  # bytes waiting for a reader that never comes are dropped past this
PACING_SLICE_S = 0.01
MODE_E_MANUFACTURER = "SIM"
_MODE_E_REQUEST = re.compile(rb"/\?([!-~]{0,32}?)!\r\n")
_MODE_E_BAUD_CHARS = {300: "0", 600: "1", 1200: "2", 2400: "3", 4800: "4", 9600: "5", 19200: "6"}
_MODE_E_WINDOW = 64


class _Drop:
    """One meter's place on the line."""

    __slots__ = ("exchange", "link", "runtime")

    def __init__(self, runtime: MeterRuntime) -> None:
        self.runtime = runtime
        self.link: HdlcServerConnection = runtime.new_hdlc_link()
        # A line is not a connection: it does not count in the meter's open connections.
        self.exchange = Exchange(runtime, 0)


class SerialLine:
    """A pseudo-terminal shared by `runtimes` (distinct HDLC physical addresses)."""

    def __init__(
        self,
        runtimes: Sequence[MeterRuntime],
        *,
        baud: int = 9600,
        pace: bool = False,
        mode_e: bool = True,
    ) -> None:
        if not runtimes:
            raise ValueError("a serial line needs at least one meter")
        if baud <= 0:
            raise ValueError("baud must be positive")
        self.runtimes = list(runtimes)
        self.baud = baud
        self.pace = pace
        self.mode_e = mode_e
        self.path = ""
        self._drops: list[_Drop] = []
        self._controller = -1
        self._device = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox = bytearray()
        self._due = 0.0
        self._pumping = False
        self._writer_armed = False
        self._text = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def byte_time(self) -> float:
        return BITS_PER_BYTE / self.baud

    def open(self) -> str:
        """Create the pty and start listening; returns the device path clients open."""
        loop = asyncio.get_running_loop()
        controller, device = os.openpty()
        try:
            tty.setraw(device)  # no echo, no line discipline: bytes pass untouched
            os.set_blocking(controller, False)
            self.path = os.ttyname(device)
            loop.add_reader(controller, self._readable)
        except BaseException:
            os.close(controller)
            os.close(device)
            raise
        # The device side stays open here as well, so the controller never sees EIO while
        # no client has the port open.
        self._controller, self._device, self._loop = controller, device, loop
        self._drops = [_Drop(runtime) for runtime in self.runtimes]
        return self.path

    def close(self) -> None:
        if self._loop is not None and self._controller >= 0:
            self._loop.remove_reader(self._controller)
            if self._writer_armed:
                self._loop.remove_writer(self._controller)
        for fd in (self._controller, self._device):
            if fd >= 0:
                os.close(fd)
        self._controller = self._device = -1
        self._drops = []

    # -- receiving ---------------------------------------------------------------------
    def _readable(self) -> None:
        try:
            data = os.read(self._controller, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while the device side is being reopened
        if data:
            self.feed(data)

    def feed(self, data: bytes) -> None:
        """Bytes from the client, as if they arrived on the line."""
        self.bytes_in += len(data)
        on_wire = len(data) * self.byte_time if self.pace else 0.0
        if self.mode_e:
            self._scan_mode_e(data, on_wire)
        for drop in self._drops:
            runtime = drop.runtime
            if runtime.offline():
                continue  # a dead meter on a bus is silent
            try:
                events = drop.link.receive_data(data)
                if not events:
                    continue
                frames, close = drive_hdlc(drop.exchange, drop.link, events)
            except ProtocolError:
                frames, close = [], True  # a link that cannot go on: start over, like a reset
            if close:
                # "Connection closed" on a serial line: the meter drops its link state, so the
                # client's next frame meets DM.
                drop.link = runtime.new_hdlc_link()
                drop.exchange.reset_session()
            if frames:
                self._send(b"".join(frames), drop.exchange.delay() + on_wire)

    def _scan_mode_e(self, data: bytes, on_wire: float) -> None:
        text = self._text
        text += bytes(b & 0x7F for b in data)
        match = _MODE_E_REQUEST.search(text)
        if match is None:
            del text[:-_MODE_E_WINDOW]
            return
        address = match.group(1).decode("ascii")
        del text[: match.end()]
        runtime = self._addressed(address)
        if runtime is None:
            return
        baud_char = _MODE_E_BAUD_CHARS.get(self.baud, "5")
        ident = f"/{MODE_E_MANUFACTURER}{baud_char}\\2{runtime.config.meter_id}\r\n"
        self._send(ident.encode("ascii"), on_wire)

    def _addressed(self, address: str) -> MeterRuntime | None:
        """The meter a mode E request selects: any meter for an empty address (point to point),
        else the one whose serial number or HDLC physical address matches."""
        online = [runtime for runtime in self.runtimes if not runtime.offline()]
        if not address:
            return online[0] if online else None
        for runtime in online:
            config = runtime.config
            if address in (config.meter_id, str(config.server_physical)):
                return runtime
        return None

    # -- sending -----------------------------------------------------------------------
    def _send(self, data: bytes, delay: float) -> None:
        loop = self._loop
        if loop is None:
            return
        due = max(loop.time() + delay, self._due)
        self._due = due
        if due <= loop.time():
            self._enqueue(data)
        else:
            loop.call_at(due, self._enqueue, data)

    def _enqueue(self, data: bytes) -> None:
        if self._controller < 0:
            return
        if len(self._outbox) + len(data) > MAX_OUTBOX:
            return  # nobody reads the line: what a real bus does with it is lose it
        self._outbox += data
        self._pump()

    def _pump(self) -> None:
        if self._controller < 0 or self._pumping or not self._outbox:
            return
        if self.pace:
            size = max(1, int(PACING_SLICE_S / self.byte_time))
            written = self._write(self._outbox[:size])
            if written:
                assert self._loop is not None
                self._pumping = True
                self._loop.call_later(written * self.byte_time, self._paced_next)
        else:
            self._write(self._outbox)

    def _paced_next(self) -> None:
        self._pumping = False
        self._pump()

    def _write(self, data: bytes | bytearray) -> int:
        try:
            written = os.write(self._controller, data)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError:
            self._outbox.clear()
            return 0
        del self._outbox[:written]
        self.bytes_out += written
        if self._outbox and not self._pumping and written < len(data):
            self._arm_writer()
        return written

    def _arm_writer(self) -> None:
        if self._writer_armed or self._loop is None:
            return
        self._writer_armed = True
        self._loop.add_writer(self._controller, self._writable)

    def _writable(self) -> None:
        assert self._loop is not None
        self._loop.remove_writer(self._controller)
        self._writer_armed = False
        self._pump()


def open_lines(
    groups: Sequence[Sequence[MeterRuntime]], *, baud: int, pace: bool, mode_e: bool
) -> list[SerialLine]:
    lines: list[SerialLine] = []
    try:
        for group in groups:
            line = SerialLine(group, baud=baud, pace=pace, mode_e=mode_e)
            line.open()
            lines.append(line)
    except BaseException:
        for line in lines:
            line.close()
        raise
    return lines
