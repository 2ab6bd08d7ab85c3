"""Readings from many concurrent polls, written in few transactions.

A thousand polls in flight would otherwise each take a pooled connection and (on SQLite) the
single write lock for four rows, and a relay command's transaction would wait behind them.
Polls hand their rows to one writer task and wait until the batch holding them is committed,
so a poll still publishes only what is stored, and a failed write fails the polls it carried.
What a poll records and publishes about its rows (`then`) runs inside the batch's transaction,
so the readings, the poll's other small writes (its relay read-back) and their messages in the
outbox commit together (storage/unit.py), in one write transaction for many polls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

from headend.storage.records import ReadingRow
from headend.storage.repository import Repository

Then = Callable[[], Awaitable[None]]
"""What a poll does in its readings' transaction: storage calls and messages, no network."""


class ReadingBatcher:
    def __init__(
        self, repository: Repository, *, max_rows: int = 5000, max_delay_s: float = 0.2
    ) -> None:
        self.repository = repository
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.batches = 0
        self._pending: list[_Batch] = []
        self._count = 0
        self._full = asyncio.Event()
        self._stopping = False

    async def store_readings(self, rows: Iterable[ReadingRow], then: Then | None = None) -> int:
        """Queue rows for the next batch; returns once they are committed (their count).
        `then` runs (awaited) in the committing transaction, after the rows are written."""
        batch = list(rows)
        if not batch:
            return 0
        if self._stopping:
            return await _store(self.repository, [(batch, then)])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, then, done))
        self._count += len(batch)
        if self._count >= self.max_rows:
            self._full.set()
        await done
        return len(batch)

    async def run(self) -> None:
        """Flush every max_delay_s, or at once when max_rows are waiting; flush on the way out."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.max_delay_s):
                        await self._full.wait()
                await self.flush()
        finally:
            self._stopping = True
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        self._full.clear()
        if not self._pending:
            return
        pending, self._pending, self._count = self._pending, [], 0
        try:
            await _store(self.repository, [(batch, then) for batch, then, _ in pending])
        except Exception:
            # One bad poll (say, a meter deleted meanwhile) must not fail the others: store
            # each poll's rows on its own, so only the bad one sees the error.
            for batch, then, waiter in pending:
                try:
                    await _store(self.repository, [(batch, then)])
                except Exception as exc:
                    _settle(waiter, exc)
                else:
                    _settle(waiter, None)
            return
        self.batches += 1
        for _batch, _then, waiter in pending:
            _settle(waiter, None)


class ImmediateReadings:
    """The same contract as ReadingBatcher without the batching: each poll commits its own
    rows (tests, the CLI, and anything without a writer task)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    async def store_readings(self, rows: Iterable[ReadingRow], then: Then | None = None) -> int:
        return await _store(self.repository, [(list(rows), then)])


_Batch = tuple[list[ReadingRow], Then | None, asyncio.Future[None]]


async def _store(repository: Repository, polls: list[tuple[list[ReadingRow], Then | None]]) -> int:
    """Polls' rows and what they publish about them, in one transaction."""
    # Month partitions are made before the transaction, never inside it (storage/partitions.py).
    await repository.prepare_readings(row for rows, _ in polls for row in rows)
    async with repository.db.transaction():
        stored = await repository.store_readings(row for rows, _ in polls for row in rows)
        for _rows, then in polls:
            if then is not None:
                await then()
    return stored


def _settle(waiter: asyncio.Future[None], error: BaseException | None) -> None:
    if waiter.done():
        return
    if error is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(error)
