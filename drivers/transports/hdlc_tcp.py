"""HDLC over a TCP socket: meters behind terminal servers, or the simulator's HDLC mode."""

from __future__ import annotations

import asyncio
from typing import Any

from drivers.errors import LinkTimeout
from drivers.transports.hdlc_link import HdlcTransportBase
from drivers.transports.stream import ByteStream


class HdlcTcpTransport(HdlcTransportBase):
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_sap: int = 16,
        server_logical: int = 1,
        server_physical: int | None = None,
        timeout: float = 10.0,
        **hdlc_options: Any,
    ) -> None:
        super().__init__(
            client_sap=client_sap,
            server_logical=server_logical,
            server_physical=server_physical,
            timeout=timeout,
            **hdlc_options,
        )
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return f"HdlcTcpTransport({self.host}:{self.port}, {self._describe()})"

    def _describe(self) -> str:
        return f"HDLC server {self.server_address} at {self.host}:{self.port}"

    async def _open_stream(self) -> ByteStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                _, stream = await loop.create_connection(ByteStream, self.host, self.port)
        except TimeoutError:
            raise LinkTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        return stream

    async def _release_stream(self, stream: ByteStream) -> None:
        await stream.close()
