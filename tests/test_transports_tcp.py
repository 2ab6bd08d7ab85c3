"""Wrapper and HDLC-over-TCP transports against small meters on real 127.0.0.1 sockets.

The meters are built from the same sans-IO pieces the simulator uses (WrapperReader,
HdlcServerConnection)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from cosem_objects.errors import ProtocolError
from drivers.errors import ConnectionRefusedByPeer, LinkClosed, LinkProtocolError, LinkTimeout
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.connection import HdlcServerConnection
from drivers.hdlc.events import ApduReceived, Disconnected, SendFrame
from drivers.hdlc.frames import FrameType, HdlcFrame, HdlcFrameReader
from drivers.transports import ApduTransport, HdlcTcpTransport, TcpWrapperTransport
from drivers.wrapper import WrapperReader, encode_wrapper

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None] | object"]


def echo(apdu: bytes) -> bytes:
    return b"\xc4" + apdu


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    tasks: set[asyncio.Task[None]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)  # type: ignore[misc]
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


class HdlcMeter:
    """One HDLC server connection per TCP connection; records what it saw."""

    def __init__(
        self,
        address: HdlcAddress = HdlcAddress.server(1, 17),
        *,
        max_info: int = 128,
        window: int = 1,
        reply: Callable[[bytes], bytes] | None = echo,
    ) -> None:
        self.address = address
        self.max_info = max_info
        self.window = window
        self.reply = reply
        self.apdus: list[bytes] = []
        self.disconnects = 0
        self.frames: list[HdlcFrame] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = HdlcServerConnection(
            self.address, max_info_rx=self.max_info, max_info_tx=self.max_info, window=self.window
        )
        spy = HdlcFrameReader()
        while data := await reader.read(4096):
            self.frames += spy.feed(data)
            for event in conn.receive_data(data):
                if isinstance(event, SendFrame):
                    writer.write(event.data)
                elif isinstance(event, ApduReceived):
                    self.apdus.append(event.apdu)
                    if self.reply is not None:
                        for frame in conn.send_apdu(self.reply(event.apdu)):
                            writer.write(frame)
                elif isinstance(event, Disconnected):
                    self.disconnects += 1
            await writer.drain()


def hdlc_transport(port: int, **kwargs: object) -> HdlcTcpTransport:
    options: dict[str, object] = {"client_sap": 16, "server_logical": 1, "server_physical": 17}
    options.update(kwargs)
    options.setdefault("timeout", 2.0)
    return HdlcTcpTransport("127.0.0.1", port, **options)  # type: ignore[arg-type]


# -- HDLC over TCP -----------------------------------------------------------------------------
async def test_hdlc_tcp_round_trips_small_and_large_apdus() -> None:
    meter = HdlcMeter(max_info=64, window=3)
    async with tcp_server(meter) as port:
        transport = hdlc_transport(port, max_info_rx=256, max_info_tx=256, window=3)
        assert isinstance(transport, ApduTransport)
        await transport.open()
        params = transport.hdlc_parameters
        assert params is not None and (params.max_info_tx, params.window_tx) == (64, 3)
        big = bytes(range(256)) * 12
        for apdu in (b"\xc0\x01\xc1\x00\x08\x00\x00\x01\x00\x00\xff\x02\x00", big):
            await transport.send(apdu)
            assert await transport.receive(2.0) == echo(apdu)
        await transport.close()
        await asyncio.sleep(0.05)
    assert meter.apdus[1] == big
    assert meter.disconnects == 1
    segments = [f for f in meter.frames if f.frame_type is FrameType.I]
    assert len(segments) > 40 and all(len(f.info) <= 64 for f in segments)


async def test_hdlc_tcp_silent_meter_times_out_after_retransmitting() -> None:
    received = bytearray()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            received.extend(data)

    async with tcp_server(silent) as port:
        transport = hdlc_transport(port, timeout=0.6, max_retries=3)
        with pytest.raises(LinkTimeout) as info:
            await transport.open()
        assert isinstance(info.value, TimeoutError)
    snrms = [f for f in HdlcFrameReader().feed(bytes(received)) if f.frame_type is FrameType.SNRM]
    assert len(snrms) >= 2  # the first SNRM and at least one retransmission


async def test_hdlc_tcp_garbage_flood_still_times_out() -> None:
    sent = [0]

    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rng = random.Random(1)
        chunk_templates = [bytes(rng.getrandbits(8) for _ in range(4096)) for _ in range(8)]
        # Plenty of flags and plausible headers in the noise.
        chunk_templates.append(b"\x7e\xa0\x1f\x21\x23\x73" * 700)
        while True:
            writer.write(rng.choice(chunk_templates))
            sent[0] += 4096
            await writer.drain()
            await asyncio.sleep(0)

    async with tcp_server(babble) as port:
        transport = hdlc_transport(port, timeout=0.5)
        with pytest.raises(LinkTimeout):
            await transport.open()
    assert sent[0] > 100_000
    assert transport.bad_frames > 0


async def test_hdlc_tcp_dm_to_snrm_is_a_refusal() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = HdlcFrameReader()
        while data := await reader.read(4096):
            for frame in frames.feed(data):
                writer.write(HdlcFrame.make(FrameType.DM, frame.src, frame.dst).to_bytes())

    async with tcp_server(refuse) as port:
        with pytest.raises(ConnectionRefusedByPeer):
            await hdlc_transport(port).open()


async def test_hdlc_tcp_no_answer_to_a_request_polls_then_times_out() -> None:
    meter = HdlcMeter(reply=None)
    async with tcp_server(meter) as port:
        transport = hdlc_transport(port, timeout=2.0)
        await transport.open()
        await transport.send(b"\xc0\x01")
        with pytest.raises(LinkTimeout):
            await transport.receive(0.5)
        await transport.close()
    polls = [f for f in meter.frames if f.frame_type is FrameType.RR]
    assert polls, "the client polls with RR while it waits"
    assert meter.apdus == [b"\xc0\x01"]  # the request was not duplicated


async def test_hdlc_tcp_peer_closing_is_link_closed() -> None:
    async def hang_up_after_ua(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = HdlcServerConnection(HdlcAddress.server(1, 17))
        while data := await reader.read(4096):
            for event in conn.receive_data(data):
                if isinstance(event, SendFrame):
                    writer.write(event.data)
                if isinstance(event, ApduReceived):
                    return  # close instead of answering

    async with tcp_server(hang_up_after_ua) as port:
        transport = hdlc_transport(port)
        await transport.open()
        await transport.send(b"\xc0\x01")
        with pytest.raises(LinkClosed):
            await transport.receive(2.0)
        await transport.close()


async def test_connection_refused_is_an_os_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        await hdlc_transport(port).open()
    with pytest.raises(OSError):
        await TcpWrapperTransport("127.0.0.1", port, timeout=1.0).open()


# -- wrapper over TCP ----------------------------------------------------------------------------
class WrapperMeter:
    def __init__(self, *, drip: bool = False, push_first: bool = False) -> None:
        self.drip = drip
        self.push_first = push_first
        self.apdus: list[tuple[int, int, bytes]] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = WrapperReader()
        while data := await reader.read(65536):
            for frame in frames.feed(data):
                self.apdus.append((frame.src_wport, frame.dst_wport, frame.apdu))
                answer = encode_wrapper(frame.dst_wport, frame.src_wport, echo(frame.apdu))
                if self.push_first:
                    writer.write(encode_wrapper(1, 0x66, b"\x0f\x00"))
                if self.drip:  # arbitrary TCP segment boundaries
                    for cut in (3, 9, 500):
                        writer.write(answer[:cut])
                        answer = answer[cut:]
                        await writer.drain()
                        await asyncio.sleep(0.01)
                writer.write(answer)
                await writer.drain()


@pytest.mark.parametrize("drip", [False, True])
async def test_wrapper_round_trip(drip: bool) -> None:
    meter = WrapperMeter(drip=drip)
    async with tcp_server(meter) as port:
        transport = TcpWrapperTransport("127.0.0.1", port, client_wport=16, server_wport=1)
        assert isinstance(transport, ApduTransport)
        await transport.open()
        big = bytes(range(256)) * 200
        for apdu in (b"\xc0\x01", big):
            await transport.send(apdu)
            assert await transport.receive(2.0) == echo(apdu)
        await transport.close()
    assert meter.apdus == [(16, 1, b"\xc0\x01"), (16, 1, big)]


async def test_wrapper_skips_frames_for_other_wports() -> None:
    async with tcp_server(WrapperMeter(push_first=True)) as port:
        transport = TcpWrapperTransport("127.0.0.1", port)
        await transport.open()
        await transport.send(b"\xc0\x02")
        assert await transport.receive(2.0) == b"\xc4\xc0\x02"
        assert transport.ignored_frames == 1
        await transport.close()


async def test_wrapper_bad_version_is_a_protocol_error() -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"\x00\x02\x00\x01\x00\x10\x00\x01\xc4")
        await writer.drain()
        await reader.read(100)

    async with tcp_server(bad) as port:
        transport = TcpWrapperTransport("127.0.0.1", port)
        await transport.open()
        await transport.send(b"\xc0")
        with pytest.raises(LinkProtocolError) as info:
            await transport.receive(2.0)
        assert isinstance(info.value, ProtocolError)
        await transport.close()


async def test_wrapper_silent_and_closing_peers() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(100):
            pass

    async def closer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)

    async with tcp_server(silent) as port:
        transport = TcpWrapperTransport("127.0.0.1", port)
        await transport.open()
        await transport.send(b"\xc0")
        with pytest.raises(LinkTimeout):
            await transport.receive(0.3)
        await transport.close()
    async with tcp_server(closer) as port:
        transport = TcpWrapperTransport("127.0.0.1", port)
        await transport.open()
        await transport.send(b"\xc0")
        with pytest.raises(LinkClosed):
            await transport.receive(2.0)
        await transport.close()
