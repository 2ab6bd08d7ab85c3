"""Many small units of work committed as one transaction (group commit).

A thousand relay commands in flight each record a few state changes (sent, confirmed,
failed), each a short write transaction with its messages. One transaction per change puts
them in a queue for the database (on SQLite its single writer) in which a paying customer's
confirmation waits behind every disconnect's. Here each change is handed to one writer task
that runs all that are waiting in one transaction (the unit of work of storage/unit.py, so
their outbox rows commit with them) and wakes each caller once it is committed, with what its
work returned.

Per-meter row locks are taken first, for the whole group, in one statement in meter_id order
(`Balances.lock_meters`), and the works then run in meter_id order: every writer that locks
meters does so in that order (the balance batches too), so two of them cannot deadlock on
PostgreSQL. A work that raises is taken out and the others run again in a new transaction;
its caller gets the exception, nothing of it is stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from headend.storage import unit
from headend.storage.db import RELAY_LANE
from headend.storage.repository import Repository

__all__ = ["GroupCommit"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_FALLOUTS = 3
"""Works that failed in one group before the rest fail too (a database that is away fails
every one of them: not worth a transaction each)."""


@dataclass(eq=False)
class _Work:
    priority: int
    key: str
    run: Callable[[], Awaitable[Any]]
    done: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    def __init__(self, repository: Repository, *, max_works: int = 100) -> None:
        self.repository = repository
        self.max_works = max_works
        self.groups = 0
        self.works = 0
        self._queue: list[_Work] = []
        self._wake = asyncio.Event()
        self._serving = False

    def __repr__(self) -> str:
        return f"GroupCommit(waiting={len(self._queue)}, groups={self.groups})"

    async def run(self, key: str, work: Callable[[], Awaitable[T]], priority: int = 0) -> T:
        """Run `work` (storage calls and messages, no network) in the next group's
        transaction; returns its result once that is committed. `key`: the meter it locks;
        a lower `priority` goes into an earlier group when more are waiting than fit.
        Without a running `serve` the work is a transaction of its own; inside a unit of work
        already (a work calling another) it joins that one."""
        if unit.current_unit() is not None or not self._serving:
            async with self.repository.db.transaction():
                return await work()
        item = _Work(priority, key, work)
        self._queue.append(item)
        self._wake.set()
        return await asyncio.shield(item.done)  # type: ignore[no-any-return]

    async def serve(self) -> None:
        """The writer; meant for a TaskGroup. Works still queued when it ends fail."""
        self._serving = True
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    if len(self._queue) > self.max_works:
                        self._queue.sort(key=lambda item: item.priority)  # stable: FIFO within
                    group, self._queue = (
                        self._queue[: self.max_works],
                        self._queue[self.max_works :],
                    )
                    await self._commit(group)
        finally:
            self._serving = False
            for item in self._queue:
                _fail(item, RuntimeError("group commit stopped"))
            self._queue = []

    async def _commit(self, group: list[_Work]) -> None:
        pending = sorted(group, key=lambda item: item.key)
        fallouts = 0
        while pending:
            results: list[Any] = []
            current: _Work | None = None
            try:
                async with self.repository.db.transaction(lane=RELAY_LANE):
                    if self.repository.db.dialect != "sqlite":  # SQLite: one writer anyway
                        await self.repository.lock_meters(item.key for item in pending)
                    for item in pending:
                        current = item
                        results.append(await item.run())
                    current = None
            except asyncio.CancelledError:
                for item in pending:
                    _fail(item, RuntimeError("group commit stopped"))
                raise
            except Exception as exc:
                if current is None or fallouts >= MAX_FALLOUTS:
                    for item in pending:
                        _fail(item, exc)
                    return
                log.debug("group commit: one work of %d failed: %s", len(pending), exc)
                _fail(current, exc)
                pending.remove(current)
                fallouts += 1
                continue
            self.groups += 1
            self.works += len(pending)
            for item, result in zip(pending, results, strict=True):
                if not item.done.done():
                    item.done.set_result(result)
            return


def _fail(item: _Work, exc: BaseException) -> None:
    if not item.done.done():
        item.done.set_exception(exc)
        with contextlib.suppress(BaseException):
            item.done.exception()  # retrieved: a caller cancelled meanwhile logs nothing
