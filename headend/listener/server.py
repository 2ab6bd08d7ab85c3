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
import socket
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol, cast

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


class OnIdentified(Protocol):
    """What the listener does with a connection whose meter is known (inbound.py)."""

    async def __call__(
        self, peer: Peer, stream: ByteStream, framing: StreamFraming
    ) -> list[InboundApdu]: ...

    def open_call(self, peer: Peer, framing: StreamFraming) -> asyncio.Event | None: ...

    def close_call(self, peer: Peer, wake: asyncio.Event) -> None: ...


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
        max_udp_senders: int = 2048,
        udp_concurrency: int = 256,
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
        if on_accepted is not None:
            handler.on_accepted = on_accepted  # every push taken, however late it was stored
        self.connections = 0
        self.refused_connections = 0
        self.dropped_datagrams = 0
        self._udp_queue: asyncio.Queue[tuple[bytes, str, int]] = asyncio.Queue(udp_queue)
        self._udp_peers: OrderedDict[tuple[str, int], Peer] = OrderedDict()
        self._max_udp_senders = max_udp_senders
        self.udp_concurrency = udp_concurrency
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
                    _widen_receive_buffer(udp)
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
        wake: asyncio.Event | None = None
        try:
            while True:
                if wake is not None and wake.is_set():
                    wake.clear()  # work came due while the meter's call is open: lend it again
                    await self._lend(peer, stream, framing)
                    continue
                try:
                    data = await self._read(stream, wake)
                except (LinkClosed, TimeoutError):
                    break
                if data is None:
                    continue
                fatal = await self._events(framing.feed(data), peer)
                if fatal:
                    return
                if peer.known is not None and not worked and self.on_identified is not None:
                    worked = True
                    await self._lend(peer, stream, framing)
                    wake = self.on_identified.open_call(peer, framing)
                if peer.waiting:  # no lent connection read their lists: map them as they are
                    await self.handler.complete(peer)
            await self._events(framing.close(), peer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("listener connection from %s failed", peer.host)
        finally:
            self.connections -= 1
            if wake is not None and self.on_identified is not None:
                self.on_identified.close_call(peer, wake)
            with contextlib.suppress(Exception):
                await stream.close(grace=1.0)

    async def _lend(self, peer: Peer, stream: ByteStream, framing: StreamFraming) -> None:
        assert self.on_identified is not None
        pushed = await self.on_identified(peer, stream, framing)
        await self._events(pushed, peer)

    async def _read(self, stream: ByteStream, wake: asyncio.Event | None) -> bytes | None:
        """The next bytes (TimeoutError after `idle_s` of silence), or None when `wake` was
        set first (the read is given up; nothing it had buffered is lost)."""
        if wake is None:
            async with asyncio.timeout(self.idle_s):
                return await stream.read()
        read = asyncio.ensure_future(stream.read())
        woken = asyncio.ensure_future(wake.wait())
        try:
            done, _ = await asyncio.wait(
                {read, woken}, timeout=self.idle_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            woken.cancel()
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await read
        if read.done() and not read.cancelled():
            return read.result()
        if not done:
            raise TimeoutError
        return None

    async def _events(self, events: Sequence[InboundApdu | FramingError], peer: Peer) -> bool:
        """Handle what one read brought; True when the stream cannot go on."""
        fatal = False
        for event in events:
            if isinstance(event, FramingError):
                await self.handler.reject(MALFORMED, peer, event.reason, peer.known)
                fatal = fatal or event.fatal
                continue
            await self.handler.handle(event, peer)
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
        """Datagrams are taken in arrival order, each handled in a task of its own (at most
        `udp_concurrency` at once) so that their storage shares batches (batching.py). A
        task runs up to its first await at once, in order, and the block joining and
        deciphering come before any await: a sender's blocks are still joined in order."""
        slots = asyncio.Semaphore(self.udp_concurrency)
        while True:
            data, host, port = await self._udp_queue.get()
            await slots.acquire()
            peer = self._udp_peer(host, port)
            self._track(asyncio.create_task(self._datagram_task(data, peer, slots)))

    async def _datagram_task(self, data: bytes, peer: Peer, slots: asyncio.Semaphore) -> None:
        try:
            await self._events([datagram_apdu(data, self.max_apdu)], peer)
        except Exception:
            log.exception("listener datagram from %s failed", peer.host)
        finally:
            slots.release()


UDP_RECEIVE_BUFFER = 4 << 20
"""Meters that push at once (on the hour, after a power cut) send their datagrams together:
the kernel keeps this many bytes of them until the worker reads them (capped by
net.core.rmem_max)."""


def _widen_receive_buffer(udp: asyncio.DatagramTransport) -> None:
    sock = udp.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
