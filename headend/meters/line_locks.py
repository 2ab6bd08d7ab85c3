"""One DLMS session at a time per line (a meter's socket or a shared serial line), with a
priority lane: relay commands are served before polls that wait for the same line.

Locks exist only while held or awaited, so 100,000 idle meters cost nothing."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

RECONNECT = -1
"""A paying customer's command: before other commands on a shared line (issue 10)."""
COMMAND = 0
REQUEST = 5
"""On-demand requests over MQTT: after relay commands, before polls."""
POLL = 10


class _PriorityLock:
    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.waiters: list[tuple[int, int, asyncio.Future[None]]] = []

    @property
    def idle(self) -> bool:
        return not self.held and not self.waiters

    async def acquire(self, priority: int, order: int) -> None:
        if not self.held and not self.waiters:
            self.held = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiters, (priority, order, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Ownership was handed over just as we were cancelled: pass it on.
                self.release()
            else:
                future.cancel()
            raise

    def release(self) -> None:
        while self.waiters:
            _, _, future = heapq.heappop(self.waiters)
            if not future.done():
                future.set_result(None)  # ownership moves to that waiter; held stays True
                return
        self.held = False


class LineLocks:
    """`async with locks.hold(line, priority=COMMAND):` -- lower priority value goes first."""

    def __init__(self) -> None:
        self._locks: dict[str, _PriorityLock] = {}
        self._order = itertools.count()

    @asynccontextmanager
    async def hold(self, line: str, priority: int = POLL) -> AsyncIterator[None]:
        lock = self._locks.get(line)
        if lock is None:
            lock = self._locks[line] = _PriorityLock()
        try:
            await lock.acquire(priority, next(self._order))
        except BaseException:
            self._forget_if_idle(line, lock)
            raise
        try:
            yield
        finally:
            lock.release()
            self._forget_if_idle(line, lock)

    def busy(self, line: str) -> bool:
        lock = self._locks.get(line)
        return lock is not None and lock.held

    def __len__(self) -> int:
        return len(self._locks)

    def _forget_if_idle(self, line: str, lock: _PriorityLock) -> None:
        if lock.idle and self._locks.get(line) is lock:
            del self._locks[line]


class RelayPressure:
    """Relay work in progress (balance events being committed, commands being executed).

    Line locks put a command ahead of polls of the same meter; this puts the relay path ahead
    of polling as a whole. While it is busy the collection service starts polls at a trickle,
    so on an event loop saturated by a thousand poll sessions a paying customer's command
    does not wait behind all of them for its turn to run."""

    def __init__(self) -> None:
        self._active = 0

    @property
    def active(self) -> bool:
        return self._active > 0

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
