"""Whose relay command runs next: reconnects before disconnects, each in the order it came.

The controller runs at most `max_concurrent` command attempts at once. When billing posts a
batch of ten thousand disconnects, thousands of attempts wait for a turn, and a customer who
has just paid must not wait behind all of them (issue 10): a waiting reconnect gets the next
free turn, ahead of every waiting disconnect. Within one priority turns go first come, first
served. A turn covers the whole attempt (its database steps as well as the meter session), so
the reconnect does not queue behind the disconnects for the database either. Polls are kept
behind both by the line locks (meters/line_locks.py) and the relay pressure."""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Concatenate, Final, ParamSpec, Protocol, TypeVar

from headend import domain
from headend.storage import CommandInfo
from headend.storage.group_commit import GroupCommit

__all__ = ["RECONNECT_FIRST", "Turns", "grouped", "priority_of"]

RECONNECT_FIRST: Final = {domain.RECONNECT: 0, domain.DISCONNECT: 1}
"""Lower goes first."""


def priority_of(action: str) -> int:
    return RECONNECT_FIRST.get(action, len(RECONNECT_FIRST))


class Turns:
    """A counting semaphore whose waiters are served by (priority, arrival)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._taken = 0
        self._order = itertools.count()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"Turns(taken={self._taken}/{self.size}, waiting={len(self._waiters)})"

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def turn(self, priority: int) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._taken < self.size and not self._waiters:
            self._taken += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # handed a turn just as it was cancelled: pass it on
            else:
                future.cancel()
            raise

    def _release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # the turn moves to that waiter; taken stays
                return
        self._taken -= 1


class _Grouping(Protocol):
    group: GroupCommit


S = TypeVar("S", bound=_Grouping)
P = ParamSpec("P")
R = TypeVar("R")


def grouped(
    method: Callable[Concatenate[S, CommandInfo, P], Awaitable[R]],
) -> Callable[Concatenate[S, CommandInfo, P], Awaitable[R]]:
    """A command's step as one unit of work (its storage calls and messages commit
    together), committed with other commands' steps in one transaction (`self.group`,
    storage/group_commit.py); a reconnect's step goes into the earliest group."""

    @functools.wraps(method)
    async def wrapper(self: S, command: CommandInfo, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.group.run(
            command.meter_id,
            functools.partial(method, self, command, *args, **kwargs),
            priority_of(command.action),
        )

    return wrapper
