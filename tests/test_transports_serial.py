"""HDLC over serial lines, on real pseudo-terminals: multi-drop, silent and babbling lines,
IEC 62056-21 mode E. The meter side of each pty is built from HdlcServerConnection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tty
from collections.abc import AsyncIterator, Callable

import pytest

from cosem_objects.errors import DecodeError
from drivers.errors import LinkProtocolError, LinkTimeout
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.connection import HdlcServerConnection
from drivers.hdlc.events import ApduReceived, Connected, Disconnected, SendFrame
from drivers.iec21 import (
    ModeEHandshake,
    ack_message,
    parse_identification,
    request_message,
    with_even_parity,
)
from drivers.transports import HdlcSerialTransport, get_serial_line


class Pty:
    """The far end of a serial line: reads the pty master inside the event loop."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        os.set_blocking(self.master, False)
        self.on_data: Callable[[bytes], None] = lambda data: None
        self.received = bytearray()

    def start(self, on_data: Callable[[bytes], None]) -> None:
        self.on_data = on_data
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return
        self.received += data
        self.on_data(data)

    def write(self, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.master, data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)


@contextlib.asynccontextmanager
async def pty_line() -> AsyncIterator[Pty]:
    line = Pty()
    try:
        yield line
    finally:
        line.close()


class Meters:
    """Several HDLC meters on one line; each answers `C4 <physical> <request>`."""

    def __init__(self, line: Pty, physicals: list[int]) -> None:
        self.line = line
        self.servers = {p: HdlcServerConnection(HdlcAddress.server(1, p)) for p in physicals}
        self.log: list[tuple[int, str]] = []

    def __call__(self, data: bytes) -> None:
        for physical, server in self.servers.items():
            for event in server.receive_data(data):
                if isinstance(event, SendFrame):
                    self.line.write(event.data)
                elif isinstance(event, Connected):
                    self.log.append((physical, "connect"))
                elif isinstance(event, Disconnected):
                    self.log.append((physical, "disconnect"))
                elif isinstance(event, ApduReceived):
                    self.log.append((physical, "apdu"))
                    for frame in server.send_apdu(b"\xc4" + bytes([physical]) + event.apdu):
                        self.line.write(frame)


def serial_transport(path: str, physical: int = 17, **kwargs: object) -> HdlcSerialTransport:
    options: dict[str, object] = {"timeout": 2.0, "server_physical": physical}
    options.update(kwargs)
    return HdlcSerialTransport(path, 9600, **options)  # type: ignore[arg-type]


async def test_one_session_over_a_pty() -> None:
    async with pty_line() as line:
        meters = Meters(line, [17])
        line.start(meters)
        transport = serial_transport(line.path)
        await transport.open()
        await transport.send(b"\xc0\x01")
        assert await transport.receive(2.0) == b"\xc4\x11\xc0\x01"
        await transport.send(bytes(500))  # segmented both ways at the default 128 bytes
        assert await transport.receive(2.0) == b"\xc4\x11" + bytes(500)
        await transport.close()
        assert meters.log == [(17, "connect"), (17, "apdu"), (17, "apdu"), (17, "disconnect")]


async def test_multi_drop_sessions_take_turns_on_one_open_port() -> None:
    async with pty_line() as line:
        meters = Meters(line, [17, 18, 19])
        line.start(meters)
        shared = get_serial_line(line.path)

        async def session(physical: int) -> bytes:
            transport = serial_transport(line.path, physical)
            await transport.open()
            try:
                await transport.send(b"\xc0" + bytes([physical]))
                answer = await transport.receive(2.0)
                await asyncio.sleep(0.02)  # a chance for another session to barge in
                return answer
            finally:
                await transport.close()

        answers = await asyncio.gather(session(17), session(18), session(19))
        assert answers == [b"\xc4" + bytes([p, 0xC0, p]) for p in (17, 18, 19)]
        # One session at a time: each meter's connect..disconnect is contiguous.
        order = [p for p, _ in meters.log]
        assert len(meters.log) == 9
        assert order == sorted(order, key=order.index)
        for index in range(0, 9, 3):
            assert [what for _, what in meters.log[index : index + 3]] == [
                "connect",
                "apdu",
                "disconnect",
            ]
        # Meter 19 never answered for 17 or 18 (they ignore each other's frames).
        assert all(server.ignored_frames > 0 for server in meters.servers.values())
        assert shared.opens == 1  # the port stayed open while sessions queued
        assert shared.stream is None  # and closed after the last one


async def test_busy_line_wait_is_bounded_when_asked() -> None:
    async with pty_line() as line:
        line.start(Meters(line, [17]))
        holder = serial_transport(line.path)
        await holder.open()
        waiter = serial_transport(line.path, lock_timeout=0.2)
        with pytest.raises(LinkTimeout):
            await waiter.open()
        await holder.close()
        await waiter.open()  # free again
        await waiter.close()


async def test_silent_line_times_out() -> None:
    async with pty_line() as line:
        transport = serial_transport(line.path, timeout=0.4)
        with pytest.raises(LinkTimeout) as info:
            await transport.open()
        assert isinstance(info.value, TimeoutError)
        assert get_serial_line(line.path).stream is None  # the port was released


async def test_babbling_line_still_times_out() -> None:
    async with pty_line() as line:
        rng = random.Random(3)
        noise = [bytes(rng.getrandbits(8) for _ in range(1024)) for _ in range(4)]
        noise.append(b"\x7e\xa0\x08\x21\x23\x73" * 170)
        written = [0]

        async def babble() -> None:
            while True:
                line.write(rng.choice(noise))
                written[0] += 1024
                await asyncio.sleep(0.001)

        line.start(lambda data: None)
        task = asyncio.create_task(babble())
        try:
            transport = serial_transport(line.path, timeout=0.5)
            with pytest.raises(LinkTimeout):
                await transport.open()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert written[0] > 50_000
        assert transport.bad_frames > 0


# -- IEC 62056-21 mode E ------------------------------------------------------------------------
class ModeEMeter:
    """Answers the 300 baud sign-on, then speaks HDLC. Echoes like an optical head."""

    def __init__(self, line: Pty, ident: bytes = b"/ABC5\\2TEST-METER\r\n", echo: bool = True):
        self.line = line
        self.ident = ident
        self.echo = echo
        self.phase = "sign-on"
        self.text = bytearray()
        self.raw_request = bytearray()
        self.request = b""
        self.ack = b""
        self.server = HdlcServerConnection(HdlcAddress.server(1, 17))
        self.apdus: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        if self.phase == "hdlc":
            for event in self.server.receive_data(data):
                if isinstance(event, SendFrame):
                    self.line.write(event.data)
                elif isinstance(event, ApduReceived):
                    self.apdus.append(event.apdu)
                    for frame in self.server.send_apdu(b"\xc4" + event.apdu):
                        self.line.write(frame)
            return
        if self.echo:
            self.line.write(data)
        # What a 7E1 UART makes of the bits: 7 data bits.
        self.text += bytes(b & 0x7F for b in data)
        if self.phase == "sign-on":
            self.raw_request += data
            if self.text.endswith(b"!\r\n"):
                self.request = bytes(self.text)
                self.text.clear()
                self.line.write(with_even_parity(self.ident))
                self.phase = "ack"
        elif self.text.endswith(b"\r\n"):
            self.ack = bytes(self.text)
            self.phase = "hdlc"


async def test_mode_e_opening_over_a_pty() -> None:
    async with pty_line() as line:
        meter = ModeEMeter(line)
        line.start(meter)
        transport = serial_transport(line.path, mode_e=True, mode_e_switch_delay=0.0)
        await transport.open()
        assert meter.request == b"/?!\r\n"
        # Either the port did 7E1 itself or the parity bit was put in by us: same bits.
        assert bytes(meter.raw_request) in (b"/?!\r\n", with_even_parity(b"/?!\r\n"))
        assert meter.ack == b"\x0625" + b"2\r\n"
        ident = transport.identification
        assert ident is not None and (ident.manufacturer, ident.baudrate) == ("ABC", 9600)
        port = get_serial_line(line.path).serial
        assert port is not None and (port.baudrate, port.bytesize, port.parity) == (9600, 8, "N")
        await transport.send(b"\xc0\x01")
        assert await transport.receive(2.0) == b"\xc4\xc0\x01"
        await transport.close()
        assert meter.apdus == [b"\xc0\x01"]


async def test_mode_e_without_answer_times_out() -> None:
    async with pty_line() as line:
        transport = serial_transport(line.path, mode_e=True, timeout=0.3)
        with pytest.raises(LinkTimeout):
            await transport.open()


async def test_mode_e_with_an_unusable_identification_fails_clearly() -> None:
    async with pty_line() as line:
        line.start(ModeEMeter(line, ident=b"/ABCX\\2BAD\r\n", echo=False))
        transport = serial_transport(line.path, mode_e=True)
        with pytest.raises(LinkProtocolError, match="baud"):
            await transport.open()


def test_mode_e_messages() -> None:
    assert request_message() == b"/?!\r\n"
    assert request_message("12345678") == b"/?12345678!\r\n"
    assert ack_message("5") == bytes.fromhex("063235320D0A")
    with pytest.raises(ValueError):
        request_message("a!b")


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        (b"/ISK5\\2MT382-1000\r\n", ("ISK", "5", "2", "MT382-1000", 9600)),
        (b"/LGZ4ZMD3104107.B32\r\n", ("LGZ", "4", None, "ZMD3104107.B32", 4800)),
        (b"/KFM6\\2ABC", ("KFM", "6", "2", "ABC", 19200)),
    ],
)
def test_identification_parsing(line: bytes, fields: tuple[object, ...]) -> None:
    ident = parse_identification(line)
    assert (ident.manufacturer, ident.baud_char, ident.enhanced, ident.ident, ident.baudrate) == (
        fields
    )


@pytest.mark.parametrize("line", [b"", b"ISK5\\2X", b"/IS", b"/ISKZ\\2X"])
def test_bad_identifications(line: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_identification(line)


def test_handshake_skips_echo_and_noise_in_any_chunking() -> None:
    answer = b"\x00\x7f/?!\r\n" + b"noise\r\n" + with_even_parity(b"/XYZ3\\2ID\r\n")
    for size in (1, 2, 5, len(answer)):
        handshake = ModeEHandshake()
        result = None
        for start in range(0, len(answer), size):
            result = handshake.receive_data(answer[start : start + size]) or result
        assert result is not None and result.manufacturer == "XYZ" and result.baudrate == 2400
        assert handshake.acknowledgement() == b"\x06232\r\n"


def test_handshake_gives_up_on_a_runaway_line() -> None:
    handshake = ModeEHandshake()
    with pytest.raises(DecodeError):
        for _ in range(10):
            handshake.receive_data(b"x" * 64)


def test_even_parity_bits() -> None:
    assert with_even_parity(b"/?!\r\n") == bytes([0xAF, 0x3F, 0x21, 0x8D, 0x0A])
    assert all(bin(b).count("1") % 2 == 0 for b in with_even_parity(bytes(range(128))))
