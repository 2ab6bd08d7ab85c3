"""Readings from many concurrent polls, written in few transactions.

A thousand polls in flight would otherwise each take a pooled connection and (on SQLite) the
single write lock for four rows, and a relay command's transaction would wait behind them.
Polls hand their rows to one writer task and wait until the batch holding them is committed,
so a poll still publishes only what is stored, and a failed write fails the polls it carried."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from headend.storage.records import ReadingRow
from headend.storage.repository import Repository


class ReadingBatcher:
    def __init__(
        self, repository: Repository, *, max_rows: int = 5000, max_delay_s: float = 0.2
    ) -> None:
        self.repository = repository
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.batches = 0
        self._pending: list[tuple[list[ReadingRow], asyncio.Future[None]]] = []
        self._count = 0
        self._full = asyncio.Event()
        self._stopping = False

    async def store_readings(self, rows: Iterable[ReadingRow]) -> int:
        """Queue rows for the next batch; returns once they are committed (their count)."""
        batch = list(rows)
        if not batch:
            return 0
        if self._stopping:
            return await self.repository.store_readings(batch)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, done))
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
            await self.repository.store_readings(rows for batch, _ in pending for rows in batch)
        except Exception:
            # One bad poll (say, a meter deleted meanwhile) must not fail the others: store
            # each poll's rows on its own, so only the bad one sees the error.
            for batch, waiter in pending:
                try:
                    await self.repository.store_readings(batch)
                except Exception as exc:
                    _settle(waiter, exc)
                else:
                    _settle(waiter, None)
            return
        self.batches += 1
        for _batch, waiter in pending:
            _settle(waiter, None)


def _settle(waiter: asyncio.Future[None], error: BaseException | None) -> None:
    if waiter.done():
        return
    if error is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(error)
