"""DLMS over TCP with the IEC 62056-47 wrapper (port 4059)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from cosem_objects.errors import DecodeError
from drivers.errors import LinkClosed, LinkProtocolError, LinkTimeout
from drivers.transports.stream import ByteStream
from drivers.wrapper import MAX_APDU_LENGTH, WrapperReader, encode_wrapper

log = logging.getLogger(__name__)


class TcpWrapperTransport:
    """One TCP connection to one meter; frames for other wPorts (stray pushes) are skipped."""

    def __init__(
        self,
        host: str,
        port: int = 4059,
        *,
        client_wport: int = 16,
        server_wport: int = 1,
        timeout: float = 10.0,
        max_apdu_length: int = MAX_APDU_LENGTH,
    ) -> None:
        self.host = host
        self.port = port
        self.client_wport = client_wport
        self.server_wport = server_wport
        self.timeout = timeout
        self.max_apdu_length = max_apdu_length
        self.max_apdu_size = max_apdu_length
        self.ignored_frames = 0
        self._stream: ByteStream | None = None
        self._reader = WrapperReader(max_apdu_length)
        self._apdus: deque[bytes] = deque()

    def __repr__(self) -> str:
        return (
            f"TcpWrapperTransport({self.host}:{self.port}, "
            f"wports {self.client_wport}->{self.server_wport})"
        )

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._reader = WrapperReader(self.max_apdu_length)
        self._apdus.clear()
        try:
            async with asyncio.timeout(self.timeout):
                _, stream = await loop.create_connection(ByteStream, self.host, self.port)
        except TimeoutError:
            raise LinkTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        self._stream = stream

    def _require(self) -> ByteStream:
        if self._stream is None:
            raise LinkClosed("transport is not open")
        return self._stream

    async def send(self, apdu: bytes) -> None:
        self._require().write(encode_wrapper(self.client_wport, self.server_wport, apdu))

    async def receive(self, timeout: float) -> bytes:  # noqa: ASYNC109 - the contract
        stream = self._require()
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while not self._apdus:
                data = await stream.read(deadline)
                try:
                    frames = self._reader.feed(data)
                except DecodeError as exc:
                    raise LinkProtocolError(f"bad wrapper stream: {exc}") from exc
                for frame in frames:
                    ours = (frame.dst_wport, frame.src_wport)
                    if ours == (self.client_wport, self.server_wport):
                        self._apdus.append(frame.apdu)
                    else:
                        self.ignored_frames += 1
                        log.debug("skipped wrapper frame %d->%d", frame.src_wport, frame.dst_wport)
        except TimeoutError:
            raise LinkTimeout(
                f"no answer from {self.host}:{self.port} within {timeout:g} s"
            ) from None
        return self._apdus.popleft()

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()
