"""The wrapper, or an HDLC link, over a connection the meter opened (an inbound meter calling
the listener): the head-end is the TCP server but still the DLMS client.

The connection belongs to the listener, which lends it for one session: `open` and `close`
neither connect nor disconnect, and the listener's WrapperReader is shared, so bytes it had
already read are not lost. A notification the meter pushes in the middle of the session
(DataNotification, EventNotification, even to our wPort) is handed to `on_other` rather than
taken for the answer to our request."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from cosem_objects.errors import DecodeError
from drivers.errors import LinkClosed, LinkProtocolError, LinkTimeout
from drivers.hdlc.events import HdlcEvent, UiReceived
from drivers.hdlc.frames import LLC_RESPONSE
from drivers.transports.hdlc_link import HdlcTransportBase
from drivers.transports.stream import ByteStream
from drivers.wrapper import MAX_APDU_LENGTH, WrapperFrame, WrapperReader, encode_wrapper

__all__ = ["AcceptedHdlcTransport", "AcceptedWrapperTransport"]

_NOTIFICATIONS = frozenset({0x0F, 0xC2, 0xCA})  # data-, event-, glo-event-notification


class AcceptedWrapperTransport:
    def __init__(
        self,
        stream: ByteStream,
        *,
        reader: WrapperReader | None = None,
        client_wport: int = 16,
        server_wport: int = 1,
        on_other: Callable[[WrapperFrame], None] | None = None,
        max_apdu_length: int = MAX_APDU_LENGTH,
    ) -> None:
        self.stream = stream
        self.reader = reader or WrapperReader(max_apdu_length)
        self.client_wport = client_wport
        self.server_wport = server_wport
        self.on_other = on_other
        self.max_apdu_size = max_apdu_length
        self._apdus: deque[bytes] = deque()

    def __repr__(self) -> str:
        return f"AcceptedWrapperTransport(wports {self.client_wport}->{self.server_wport})"

    async def open(self) -> None:
        if self.stream.closed:
            raise LinkClosed("the meter's connection is closed")

    async def send(self, apdu: bytes) -> None:
        self.stream.write(encode_wrapper(self.client_wport, self.server_wport, apdu))

    async def receive(self, timeout: float) -> bytes:  # noqa: ASYNC109 - the contract
        try:
            async with asyncio.timeout(timeout):
                while not self._apdus:
                    data = await self.stream.read()
                    try:
                        frames = self.reader.feed(data)
                    except DecodeError as exc:
                        raise LinkProtocolError(f"bad wrapper stream: {exc}") from exc
                    for frame in frames:
                        ours = (
                            frame.dst_wport == self.client_wport
                            and frame.src_wport == self.server_wport
                            and frame.apdu[:1] not in (bytes((t,)) for t in _NOTIFICATIONS)
                        )
                        if ours:
                            self._apdus.append(frame.apdu)
                        elif self.on_other is not None:
                            self.on_other(frame)
        except TimeoutError:
            raise LinkTimeout(f"no answer from the inbound meter within {timeout:g} s") from None
        return self._apdus.popleft()

    async def close(self) -> None:
        """Nothing to close: the connection goes back to the listener."""


class AcceptedHdlcTransport(HdlcTransportBase):
    """An HDLC link (SNRM .. DISC) over a connection the meter opened; the connection stays
    the listener's. An unsegmented UI frame the meter pushes meanwhile goes to `on_other`
    (its APDU, LLC removed); a segmented one is dropped (counted in `ignored_ui`)."""

    def __init__(
        self,
        stream: ByteStream,
        *,
        on_other: Callable[[bytes], None] | None = None,
        **hdlc_options: Any,
    ) -> None:
        super().__init__(**hdlc_options)
        self.accepted_stream = stream
        self.on_other = on_other
        self.ignored_ui = 0

    def __repr__(self) -> str:
        return f"AcceptedHdlcTransport({self._describe()})"

    def _describe(self) -> str:
        return f"inbound HDLC server {self.server_address}"

    async def _open_stream(self) -> ByteStream:
        if self.accepted_stream.closed:
            raise LinkClosed("the meter's connection is closed")
        return self.accepted_stream

    async def _release_stream(self, stream: ByteStream) -> None:
        """Nothing to close: the connection goes back to the listener."""

    def _handle(self, conn: Any, stream: ByteStream, events: list[HdlcEvent]) -> bool:
        rest: list[HdlcEvent] = []
        for event in events:
            if isinstance(event, UiReceived):
                if self.on_other is not None and event.info.startswith(LLC_RESPONSE):
                    self.on_other(event.info[len(LLC_RESPONSE) :])
                else:
                    self.ignored_ui += 1
            else:
                rest.append(event)
        return super()._handle(conn, stream, rest)
