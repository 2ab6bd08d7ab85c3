"""A plain push receiver for tests: real TCP and UDP sockets, decoded with our own codec.

It is what a head-end listener does at its simplest (wrapper or HDLC frames in, APDUs joined,
general-glo-ciphering opened with the sender's keys, DataNotification decoded), written with
cosem_objects and drivers only, so the simulator's pushes are checked by code that is not the
simulator's."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from cosem_objects import security
from cosem_objects.apdu.notifications import DataNotification
from cosem_objects.security.ciphered_apdus import GeneralGloCiphering
from drivers.errors import LinkClosed
from drivers.hdlc.stream import HdlcStreamJoiner, JoinedApdu
from drivers.transports.stream import ByteStream
from drivers.wrapper import WrapperReader


@dataclass
class Received:
    notification: DataNotification
    transport: str
    ciphered: bool
    system_title: bytes | None = None
    invocation_counter: int | None = None
    frames: int = 1
    wports: tuple[int, int] | None = None


@dataclass
class PushReceiver:
    """Listens on TCP (wrapper or HDLC framing) and UDP; `keys` open ciphered pushes."""

    framing: str = "wrapper"  # for TCP connections: "wrapper" | "hdlc"
    keys: security.SecurityKeys | None = None
    received: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    streams: asyncio.Queue[ByteStream] = field(default_factory=asyncio.Queue)
    errors: list[str] = field(default_factory=list)
    serve_streams: bool = True  # False: hand accepted connections over (see `streams`)
    port: int = 0
    _server: asyncio.Server | None = None
    _udp: asyncio.DatagramTransport | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> PushReceiver:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        receiver = self

        class Datagrams(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                for frame in WrapperReader().feed(data):
                    receiver._apdu(frame.apdu, "udp", wports=(frame.src_wport, frame.dst_wport))

        self._udp, _ = await loop.create_datagram_endpoint(
            Datagrams, local_addr=("127.0.0.1", self.port)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def next(self, timeout: float = 5.0) -> Received:  # noqa: ASYNC109 - a test helper
        return await asyncio.wait_for(self.received.get(), timeout)

    def _accept(self) -> ByteStream:
        stream = ByteStream()
        loop = asyncio.get_running_loop()
        if self.serve_streams:
            task = loop.create_task(self._read(stream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.streams.put_nowait(stream)
        return stream

    async def _read(self, stream: ByteStream) -> None:
        if self.framing == "hdlc":
            joiner = HdlcStreamJoiner()
            while True:  # until the stream ends (read raises)
                try:
                    data = await stream.read()
                except LinkClosed:
                    return
                for event in joiner.feed(data):
                    if isinstance(event, JoinedApdu):
                        self._apdu(event.apdu, "hdlc", frames=event.frames)
                    else:
                        self.errors.append(repr(event))
        else:
            reader = WrapperReader()
            while True:  # until the stream ends (read raises)
                try:
                    data = await stream.read()
                except LinkClosed:
                    return
                for frame in reader.feed(data):
                    self._apdu(frame.apdu, "tcp", wports=(frame.src_wport, frame.dst_wport))

    def _apdu(
        self,
        apdu: bytes,
        transport: str,
        *,
        frames: int = 1,
        wports: tuple[int, int] | None = None,
    ) -> None:
        title = ic = None
        ciphered = apdu[:1] == b"\xdb"
        try:
            if ciphered:
                if self.keys is None:
                    raise ValueError("a ciphered push and no keys")
                ic = GeneralGloCiphering.from_bytes(apdu).invocation_counter
                apdu, title, ic = security.unwrap_general_glo(apdu, self.keys)
            notification = DataNotification.from_bytes(apdu)
        except Exception as exc:  # a test collects what went wrong and says so
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.received.put_nowait(
            Received(notification, transport, ciphered, title, ic, frames, wports)
        )
