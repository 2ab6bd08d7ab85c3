"""The I/O floor of a fleet poll: what the event loop alone costs for the session's round trips.

A bare asyncio.Protocol per meter connects, writes the recorded requests one at a time (as
wrapper frames, exactly the bytes our session sent to meter 0) and waits for each reply frame
by its wrapper header, then closes: no DLMS encoding or decoding, no timeouts, no tasks. Run on
the same loop, the same fleet and at the same concurrency as our client, in the same run, its
CPU per session is what the client's CPU per session is compared with (the sans-IO floor of
_replay.py is the other half: the protocol work without the sockets).

The requests are meter 0's: with security none they are what every meter is sent; with
ciphered security other meters refuse them, but still answer each request with one frame, so
the round trips, and the loop's work, are the same."""

from __future__ import annotations

import asyncio
import functools
import struct
import time
from collections.abc import Sequence
from typing import Any, cast

from benchmarks._replay import Recording
from drivers.wrapper import encode_wrapper

__all__ = ["poll_io_floor"]

_HEADER = 8  # version, source wport, destination wport, length: 2 bytes each


class _Rounds(asyncio.Protocol):
    def __init__(self, requests: Sequence[bytes], done: asyncio.Future[None]) -> None:
        self.requests = requests
        self.done = done
        self.next = 0
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.requests[0])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= _HEADER:
            (length,) = struct.unpack_from(">H", self.buffer, 6)
            if len(self.buffer) < _HEADER + length:
                return
            del self.buffer[: _HEADER + length]
            self.next += 1
            assert self.transport is not None
            if self.next == len(self.requests):
                self.transport.close()
                if not self.done.done():
                    self.done.set_result(None)
                return
            self.transport.write(self.requests[self.next])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed before the last reply"))


async def poll_io_floor(
    recording: Recording,
    rows: Sequence[dict[str, str]],
    *,
    concurrency: int,
    request_timeout: float,
) -> dict[str, Any]:
    """Every row's meter once, `concurrency` at a time: CPU and wall of the bare round trips."""
    connection = recording.connection
    requests = [
        encode_wrapper(connection.client_sap, connection.server_logical, request)
        for request, _reply in recording.pairs
    ]
    loop = asyncio.get_running_loop()
    queue = iter(rows)
    sessions = 0
    errors: dict[str, int] = {}

    async def worker() -> None:
        nonlocal sessions
        for row in queue:
            done: asyncio.Future[None] = loop.create_future()
            transport: asyncio.BaseTransport | None = None
            try:
                async with asyncio.timeout(request_timeout * len(requests)):
                    transport, _ = await loop.create_connection(
                        functools.partial(_Rounds, requests, done), row["host"], int(row["port"])
                    )
                    await done
                sessions += 1
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if transport is not None:
                    transport.close()

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(rows))):
            group.create_task(worker())
    return {
        "sessions": sessions,
        "failures": sum(errors.values()),
        "errors": errors,
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
    }
