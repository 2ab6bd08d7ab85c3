"""The listener's sockets: a TCP server (wrapper or HDLC, per connection) and a UDP endpoint
(wrapper datagrams), feeding the sans-IO framing and the push handler.

Bounds: at most `max_connections` TCP connections (more are closed at once and counted), an
idle connection is closed after `idle_s`, a frame is at most `max_apdu` bytes (framing.py),
UDP datagrams wait in a queue of `udp_queue` (more are dropped and counted), and per-sender
UDP state is an LRU of `max_udp_senders`. Every per-connection failure ends that connection
only; the listener keeps running.

When a connection has proved which meter it is and `on_identified` is set (inbound.py), the
connection is lent to it for the meter's due work before the listener reads on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from drivers.errors import LinkClosed
from drivers.transports.stream import ByteStream
from headend.listener.framing import (
    DEFAULT_MAX_APDU,
    FramingError,
    InboundApdu,
    StreamFraming,
    datagram_apdu,
)
from headend.listener.handler import Accepted, Peer, PushHandler
from headend.listener.unwrap import MALFORMED

__all__ = ["Listener"]

log = logging.getLogger(__name__)

OnIdentified = Callable[[Peer, ByteStream, StreamFraming], Awaitable[list[InboundApdu]]]
OnAccepted = Callable[[Accepted], None]


class _Accepted(ByteStream):
    def __init__(self, listener: Listener) -> None:
        super().__init__()
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._listener._accept(self)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._listener._datagram(data, str(addr[0]), int(addr[1]))


class Listener:
    def __init__(
        self,
        handler: PushHandler,
        *,
        host: str = "0.0.0.0",
        tcp_port: int | None = None,
        udp_port: int | None = None,
        max_connections: int = 5000,
        idle_s: float = 120.0,
        max_apdu: int = DEFAULT_MAX_APDU,
        udp_queue: int = 10000,
        max_udp_senders: int = 10000,
        on_identified: OnIdentified | None = None,
        on_accepted: OnAccepted | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.tcp_port = tcp_port
        self.udp_port = udp_port
        self.max_connections = max_connections
        self.idle_s = idle_s
        self.max_apdu = max_apdu
        self.on_identified = on_identified
        self.on_accepted = on_accepted
        self.connections = 0
        self.refused_connections = 0
        self.dropped_datagrams = 0
        self._udp_queue: asyncio.Queue[tuple[bytes, str, int]] = asyncio.Queue(udp_queue)
        self._udp_peers: OrderedDict[tuple[str, int], Peer] = OrderedDict()
        self._max_udp_senders = max_udp_senders
        self._tg: asyncio.TaskGroup | None = None
        self._pending: list[_Accepted] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    def __repr__(self) -> str:
        return f"Listener(tcp={self.tcp_port}, udp={self.udp_port}, connections={self.connections})"

    async def ready(self) -> None:
        """Wait until the sockets are bound (their ports are then in tcp_port / udp_port)."""
        await self._ready.wait()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        server: asyncio.Server | None = None
        udp: asyncio.DatagramTransport | None = None
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                if self.tcp_port is not None:
                    server = await loop.create_server(
                        lambda: _Accepted(self), self.host, self.tcp_port, backlog=1024
                    )
                    self.tcp_port = server.sockets[0].getsockname()[1]
                if self.udp_port is not None:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _Datagrams(self), local_addr=(self.host, self.udp_port)
                    )
                    udp = cast(asyncio.DatagramTransport, transport)
                    self.udp_port = udp.get_extra_info("sockname")[1]
                    self._track(tg.create_task(self._udp_worker(), name="listener-udp"))
                for stream in self._pending:
                    self._start(stream)
                self._pending.clear()
                log.info("listener on %s: tcp %s, udp %s", self.host, self.tcp_port, self.udp_port)
                self._ready.set()
                await self._stop.wait()
            finally:
                if server is not None:
                    server.close()
                if udp is not None:
                    udp.close()
                self._tg = None
                for task in list(self._tasks):  # connections end with the listener
                    task.cancel()

    # -- TCP -------------------------------------------------------------------------------
    def _accept(self, stream: _Accepted) -> None:
        if self.connections >= self.max_connections:
            self.refused_connections += 1
            if stream.transport is not None:
                stream.transport.abort()
            return
        if self._tg is None:
            self._pending.append(stream)
            return
        self._start(stream)

    def _start(self, stream: _Accepted) -> None:
        assert self._tg is not None
        self.connections += 1
        self._track(self._tg.create_task(self._connection(stream)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(self, stream: _Accepted) -> None:
        transport = stream.transport
        peername = transport.get_extra_info("peername") if transport is not None else None
        peer = Peer(str(peername[0]) if peername else "?", "tcp")
        framing = StreamFraming(self.max_apdu)
        worked = False
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_s):
                        data = await stream.read()
                except (LinkClosed, TimeoutError):
                    break
                fatal = await self._events(framing.feed(data), peer)
                if fatal:
                    return
                if peer.known is not None and not worked and self.on_identified is not None:
                    worked = True
                    pushed = await self.on_identified(peer, stream, framing)
                    await self._events(pushed, peer)
                if peer.waiting:  # no lent connection read their lists: map them as they are
                    await self.handler.complete(peer)
            await self._events(framing.close(), peer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("listener connection from %s failed", peer.host)
        finally:
            self.connections -= 1
            with contextlib.suppress(Exception):
                await stream.close(grace=1.0)

    async def _events(self, events: Sequence[InboundApdu | FramingError], peer: Peer) -> bool:
        """Handle what one read brought; True when the stream cannot go on."""
        fatal = False
        for event in events:
            if isinstance(event, FramingError):
                await self.handler.reject(MALFORMED, peer, event.reason, peer.known)
                fatal = fatal or event.fatal
                continue
            accepted = await self.handler.handle(event, peer)
            if accepted is not None and self.on_accepted is not None:
                self.on_accepted(accepted)
        return fatal

    # -- UDP -------------------------------------------------------------------------------
    def _datagram(self, data: bytes, host: str, port: int) -> None:
        try:
            self._udp_queue.put_nowait((data, host, port))
        except asyncio.QueueFull:
            self.dropped_datagrams += 1

    def _udp_peer(self, host: str, port: int) -> Peer:
        key = (host, port)
        peer = self._udp_peers.get(key)
        if peer is None:
            peer = self._udp_peers[key] = Peer(host, "udp")
            while len(self._udp_peers) > self._max_udp_senders:
                self._udp_peers.popitem(last=False)
        self._udp_peers.move_to_end(key)
        return peer

    async def _udp_worker(self) -> None:
        while True:
            data, host, port = await self._udp_queue.get()
            try:
                await self._events([datagram_apdu(data, self.max_apdu)], self._udp_peer(host, port))
            except Exception:
                log.exception("listener datagram from %s failed", host)
