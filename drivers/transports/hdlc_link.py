"""The asyncio edge of the sans-IO HDLC client: timers, retransmission and error mapping,
shared by HDLC over TCP and HDLC over serial lines."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from cosem_objects.errors import ProtocolError
from drivers import trail
from drivers.errors import (
    ConnectionRefusedByPeer,
    LinkClosed,
    LinkProtocolError,
    LinkTimeout,
    TransportError,
)
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.connection import (
    DEFAULT_MAX_APDU_SIZE,
    DEFAULT_MAX_RETRIES,
    HdlcClientConnection,
)
from drivers.hdlc.events import (
    ApduReceived,
    BadFrame,
    FrameRejected,
    HdlcEvent,
    LinkFailed,
    ModeRejected,
    ProtocolViolation,
    SendFrame,
    UiReceived,
)
from drivers.hdlc.numbered import LinkState
from drivers.hdlc.parameters import DEFAULT_MAX_INFO, HdlcParameters
from drivers.transports.stream import ByteStream

log = logging.getLogger(__name__)


class HdlcTransportBase:
    """Subclasses provide the byte stream (`_open_stream` / `_release_stream`)."""

    def __init__(
        self,
        *,
        client_sap: int = 16,
        server_logical: int = 1,
        server_physical: int | None = None,
        server_address_size: int | None = None,
        timeout: float = 10.0,
        max_info_rx: int = DEFAULT_MAX_INFO,
        max_info_tx: int = DEFAULT_MAX_INFO,
        window: int = 1,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_apdu_size: int = DEFAULT_MAX_APDU_SIZE,
        disconnect_timeout: float = 2.0,
    ) -> None:
        self.client_address = HdlcAddress.client(client_sap)
        self.server_address = HdlcAddress.server(
            server_logical, server_physical, server_address_size
        )
        self.timeout = timeout
        self.max_info_rx = max_info_rx
        self.max_info_tx = max_info_tx
        self.window = window
        self.max_retries = max_retries
        self.max_apdu_size = max_apdu_size
        self.disconnect_timeout = disconnect_timeout
        self.connection: HdlcClientConnection | None = None
        self.bad_frames = 0
        self._stream: ByteStream | None = None
        self._opening = False
        self._apdus: deque[bytes] = deque()
        self._sniffer: trail.FrameSniffer | None = None  # the DEBUG trail's view of the line

    # -- subclass hooks --------------------------------------------------------------------
    async def _open_stream(self) -> ByteStream:
        raise NotImplementedError

    async def _release_stream(self, stream: ByteStream) -> None:
        raise NotImplementedError

    def _describe(self) -> str:
        return f"HDLC server {self.server_address}"

    # -- ApduTransport -----------------------------------------------------------------------
    @property
    def hdlc_parameters(self) -> HdlcParameters | None:
        """Negotiated limits (this side's view) once open."""
        conn = self.connection
        return conn.params if conn is not None and conn.connected else None

    async def open(self) -> None:
        conn = HdlcClientConnection(
            self.client_address,
            self.server_address,
            max_info_rx=self.max_info_rx,
            max_info_tx=self.max_info_tx,
            window=self.window,
            max_apdu_size=self.max_apdu_size,
            max_retries=self.max_retries,
        )
        stream = await self._open_stream()
        self._stream = stream
        self._apdus.clear()
        self.connection = conn
        self._sniffer = trail.FrameSniffer(self._describe())
        self._opening = True
        try:
            snrm = conn.connect()
            trail.frames_sent([snrm], peer=self._describe())
            stream.write(snrm)
            await self._pump(lambda: conn.connected, self.timeout)
        except BaseException:
            self._stream = None
            self.connection = None
            await self._release_stream(stream)
            raise
        finally:
            self._opening = False

    async def send(self, apdu: bytes) -> None:
        conn, stream = self._require()
        try:
            frames = conn.send_apdu(apdu)
        except ProtocolError as exc:
            raise LinkClosed(f"HDLC link to {self._describe()} is down: {exc}") from exc
        trail.frames_sent(frames, peer=self._describe())
        for frame in frames:
            stream.write(frame)
        await self._pump(lambda: conn.all_sent, self.timeout)

    async def receive(self, timeout: float) -> bytes:  # noqa: ASYNC109 - the contract
        self._require()
        await self._pump(lambda: bool(self._apdus), timeout)
        return self._apdus.popleft()

    async def close(self) -> None:
        stream, conn = self._stream, self.connection
        if stream is None:
            return
        try:
            if conn is not None and conn.state in (LinkState.CONNECTED, LinkState.CONNECTING):
                stream.write(conn.disconnect())
                await self._pump(
                    lambda: conn.state is LinkState.DISCONNECTED,
                    min(self.timeout, self.disconnect_timeout),
                )
        except (TransportError, ProtocolError, OSError) as exc:
            log.debug("HDLC disconnect from %s incomplete: %s", self._describe(), exc)
        finally:
            self._stream = None
            self.connection = None
            await self._release_stream(stream)

    # -- internals ---------------------------------------------------------------------------
    def _require(self) -> tuple[HdlcClientConnection, ByteStream]:
        if self._stream is None or self.connection is None:
            raise LinkClosed("transport is not open")
        return self.connection, self._stream

    async def _pump(self, done: Callable[[], bool], seconds: float) -> None:
        """Read and process frames until `done()`; retransmit on quiet spells; LinkTimeout."""
        conn, stream = self._require()
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + seconds
        interval = seconds / (conn.max_retries + 1)
        next_retry = start + interval
        while not done():
            now = loop.time()
            if now >= deadline:
                raise LinkTimeout(f"no answer from {self._describe()} within {seconds:g} s")
            if now >= next_retry:
                try:
                    frames = conn.on_timeout()
                except LinkFailed as exc:
                    raise LinkTimeout(f"{self._describe()}: {exc}") from exc
                trail.frames_sent(frames, peer=f"{self._describe()} (retransmission)")
                for frame in frames:
                    stream.write(frame)
                next_retry = now + interval
                continue
            try:
                async with asyncio.timeout(min(next_retry, deadline) - now):
                    data = await stream.read()
            except TimeoutError:
                continue
            if self._sniffer is not None:
                self._sniffer.feed(data)
            if self._handle(conn, stream, conn.receive_data(data)):
                next_retry = loop.time() + interval

    def _handle(
        self, conn: HdlcClientConnection, stream: ByteStream, events: list[HdlcEvent]
    ) -> bool:
        """Act on events; True if the peer said anything valid (which resets the retry timer)."""
        progress = False
        for event in events:
            if isinstance(event, BadFrame):
                self.bad_frames += 1
                log.debug("bad HDLC frame from %s: %s", self._describe(), event.reason)
                continue
            progress = True
            if isinstance(event, SendFrame):
                trail.frames_sent([event.data], peer=self._describe())
                stream.write(event.data)
            elif isinstance(event, ApduReceived):
                trail.hdlc_event("apdu reassembled", peer=self._describe(), size=len(event.apdu))
                self._apdus.append(event.apdu)
            elif isinstance(event, ModeRejected):
                if self._opening:
                    raise ConnectionRefusedByPeer(f"{self._describe()} answered SNRM with DM")
                raise LinkClosed(f"{self._describe()} dropped the link (DM)")
            elif isinstance(event, FrameRejected):
                raise LinkProtocolError(
                    f"{self._describe()} rejected a frame (FRMR {event.info.hex()})"
                )
            elif isinstance(event, ProtocolViolation):
                raise LinkProtocolError(f"{self._describe()}: {event.reason}")
            elif isinstance(event, UiReceived):
                log.debug("UI frame from %s ignored", event.src)
        return progress
