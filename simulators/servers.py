"""TCP listeners: one per meter, speaking the IEC 62056-47 wrapper or HDLC over TCP.

asyncio Protocols rather than streams: a connection costs one small object and no task, and
bytes flow straight into the sans-IO cores (WrapperReader, HdlcServerConnection, ServerSession).
Listening sockets are made and bound synchronously and handed to `create_server`, so ten
thousand listeners start without a resolver round trip each."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Sequence
from typing import cast

from cosem_objects.errors import ProtocolError
from drivers.hdlc import HdlcServerConnection
from drivers.wrapper import WrapperReader, encode_wrapper
from simulators.faults_runtime import Verdict, corrupt_wrapper
from simulators.meter_runtime import Exchange, MeterRuntime, drive_hdlc

DEFAULT_IDLE_TIMEOUT_S = 120.0  # a real meter drops a silent connection after a while
LISTEN_BACKLOG = 32
START_BATCH = 500


class ServerStartError(OSError):
    """A meter could not listen (port taken, no permission, out of file descriptors)."""


class _MeterProtocol(asyncio.Protocol):
    """What both TCP flavours share: offline handling, ordered delayed writes, idle timeout."""

    def __init__(self, runtime: MeterRuntime, idle_timeout_s: float) -> None:
        self.runtime = runtime
        self.idle_timeout_s = idle_timeout_s
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self._loop = asyncio.get_running_loop()
        self._due = 0.0  # loop time of the last scheduled write: keeps answers in order
        self._idle: asyncio.TimerHandle | None = None
        self._last_activity = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not asyncio.Transport
        # subclasses (the simulator runs on uvloop where it is installed).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.runtime.live.add(transport)
        if self.runtime.offline():
            # Offline: the modem takes the call but there is no meter behind it.
            transport.abort()
            return
        self.exchange = self.runtime.open_exchange()
        self._setup()
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.runtime.live.discard(self.transport)
        if self.exchange is not None:
            self.exchange.close()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def data_received(self, data: bytes) -> None:
        if self.exchange is None or self.transport is None or self.transport.is_closing():
            return
        if self.runtime.offline():
            self.transport.abort()
            return
        self._touch()
        try:
            self._on_data(data)
        except ProtocolError:
            # A byte stream that cannot be resynchronised (bad wrapper header): hang up.
            self.transport.abort()

    def _setup(self) -> None:
        raise NotImplementedError

    def _on_data(self, data: bytes) -> None:
        raise NotImplementedError

    def _emit(self, chunks: Sequence[bytes], delay: float, *, close: bool = False) -> None:
        due = max(self._loop.time() + delay, self._due)
        self._due = due
        payload = b"".join(chunks)

        def deliver() -> None:
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            if payload:
                transport.write(payload)
            if close:
                transport.close()

        if due <= self._loop.time():
            deliver()
        else:
            self._loop.call_at(due, deliver)

    def _touch(self) -> None:
        # Re-arming a timer on every request would churn handles; check lazily instead.
        self._last_activity = self._loop.time()
        if self._idle is None and self.idle_timeout_s > 0:
            self._idle = self._loop.call_at(
                self._last_activity + self.idle_timeout_s, self._idle_check
            )

    def _idle_check(self) -> None:
        self._idle = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        deadline = self._last_activity + self.idle_timeout_s
        if self._loop.time() >= deadline:
            transport.close()
        else:
            self._idle = self._loop.call_at(deadline, self._idle_check)


class WrapperMeterProtocol(_MeterProtocol):
    """IEC 62056-47: each request is one wrapper PDU; the answer swaps the wPorts."""

    reader: WrapperReader

    def _setup(self) -> None:
        self.reader = WrapperReader()

    def _on_data(self, data: bytes) -> None:
        assert self.exchange is not None
        frames = self.reader.feed(data)
        if not frames:
            return
        delay = self.exchange.delay()
        logical = self.runtime.config.server_logical
        for frame in frames:
            if frame.dst_wport != logical:
                continue  # not our logical device: a real stack stays silent
            reply, close = self.exchange.answer(frame.src_wport, frame.apdu)
            if close:
                self._emit((), delay, close=True)
                self.exchange.close()
                self.exchange = None
                return
            if reply is None:
                continue
            try:
                pdu = encode_wrapper(logical, frame.src_wport, reply)
            except ValueError:
                self._emit((), delay, close=True)
                return
            fate = self.exchange.frame_fate()
            if fate is Verdict.DROP:
                continue
            if fate is Verdict.CORRUPT:
                pdu = corrupt_wrapper(pdu)
            self._emit((pdu,), delay)


class HdlcMeterProtocol(_MeterProtocol):
    """HDLC over TCP (a terminal server in front of a serial meter): one link per connection."""

    link: HdlcServerConnection

    def _setup(self) -> None:
        self.link = self.runtime.new_hdlc_link()

    def _on_data(self, data: bytes) -> None:
        assert self.exchange is not None
        events = self.link.receive_data(data)
        if not events:
            return
        frames, close = drive_hdlc(self.exchange, self.link, events)
        delay = self.exchange.delay()
        self._emit(frames, delay, close=close)
        if close:
            self.exchange.close()
            self.exchange = None


ProtocolFactory = Callable[[], asyncio.Protocol]


def protocol_factory(runtime: MeterRuntime, idle_timeout_s: float) -> ProtocolFactory:
    transport = runtime.config.transport
    if transport == "wrapper":
        return lambda: WrapperMeterProtocol(runtime, idle_timeout_s)
    if transport == "hdlc":
        return lambda: HdlcMeterProtocol(runtime, idle_timeout_s)
    raise ValueError(f"meter {runtime.config.meter_id}: transport {transport!r} is not TCP")


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if port:
            # Restart on the same ports despite TIME_WAIT. Not for port 0: the kernel's search
            # for a free ephemeral port gets ~70x slower with it across thousands of sockets.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_tcp_servers(
    runtimes: Sequence[MeterRuntime], *, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
) -> list[asyncio.Server]:
    """Listen for every meter; on the first failure close what was opened and raise.

    Each runtime's config.port is updated to the bound port (for port 0 = ephemeral)."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    try:
        for first in range(0, len(runtimes), START_BATCH):
            batch = runtimes[first : first + START_BATCH]
            sockets: list[socket.socket] = []
            for runtime in batch:
                config = runtime.config
                try:
                    sock = listening_socket(config.host, config.port)
                except OSError as exc:
                    for opened in sockets:
                        opened.close()
                    raise _start_error(runtime, exc) from exc
                config.port = sock.getsockname()[1]
                sockets.append(sock)
            created = await asyncio.gather(
                *(
                    loop.create_server(
                        protocol_factory(runtime, idle_timeout_s),
                        sock=sock,
                        backlog=LISTEN_BACKLOG,
                    )
                    for runtime, sock in zip(batch, sockets, strict=True)
                )
            )
            servers.extend(created)
    except BaseException:
        await close_servers(servers)
        raise
    return servers


async def close_servers(servers: Sequence[asyncio.Server], grace_s: float = 5.0) -> None:
    for server in servers:
        server.close()
    # Server.wait_closed waits for open connections too; do not hang on a stuck client.
    if servers:
        waiters = [asyncio.ensure_future(server.wait_closed()) for server in servers]
        _done, pending = await asyncio.wait(waiters, timeout=grace_s)
        for waiter in pending:
            waiter.cancel()


def _start_error(runtime: MeterRuntime, exc: OSError) -> ServerStartError:
    config = runtime.config
    where = f"meter {config.index} ({config.meter_id}) on {config.host}:{config.port}"
    if exc.errno == errno.EADDRINUSE:
        reason = "the port is already in use"
    elif exc.errno == errno.EMFILE:
        reason = "out of file descriptors (raise `ulimit -n`)"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "no permission to listen on that port"
    else:
        reason = exc.strerror or str(exc)
    return ServerStartError(exc.errno or 0, f"{where}: {reason}")
