"""A TCP server that answers each wrapper frame with the next canned frame, in its own
process: `python -m benchmarks._canned_server FILE` (FILE: JSON list of hex frames, sent in
order, starting over on each connection). Prints `ready PORT`.

With `io_floor_client` it gives the IO floor of a session: the same connections and round
trips with the same byte counts through a minimal asyncio Protocol, and no DLMS at all."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

HEADER = 8


class _Canned(asyncio.Protocol):
    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.index = 0
        self.buffer = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER:
            length = int.from_bytes(self.buffer[6:8], "big")
            if len(self.buffer) < HEADER + length:
                return
            del self.buffer[: HEADER + length]
            if self.index < len(self.frames):
                self.transport.write(self.frames[self.index])
                self.index += 1


async def serve(frames: list[bytes]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Canned(frames), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"ready {port}", flush=True)
    async with server:
        await stop.wait()


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= HEADER:
            length = int.from_bytes(self.buffer[6:8], "big")
            if len(self.buffer) >= HEADER + length and self.waiter is not None:
                frame = bytes(self.buffer[: HEADER + length])
                del self.buffer[: HEADER + length]
                if not self.waiter.done():
                    self.waiter.set_result(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def io_floor_session(port: int, requests: list[bytes]) -> None:
    """Connect, send each request and wait for one frame back, close."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_Client, "127.0.0.1", port)
    for request in requests:
        client.waiter = loop.create_future()
        transport.write(request)
        await client.waiter
    transport.close()
    await client.closed


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        canned = [bytes.fromhex(text) for text in json.load(handle)]
    asyncio.run(serve(canned))
