"""Pushes from many meters, stored in few transactions.

A thousand meters pushing at once would otherwise each take their own write transaction (on
SQLite the one write lock, and a commit each). Each push's storage work is handed to one
writer task, which runs the work of every push waiting (up to `max_items`) in one
transaction, in arrival order, and tells each push its own result once it is committed; so a
push is still reported only when it is stored, and its rows and messages commit together
(storage/unit.py). The work of one push writes nothing before it has decided to (a replayed
counter answers without writing), so pushes never need to be undone one by one; if the batch
fails, each push is tried again alone and only the bad one sees its error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from headend.storage import Database

__all__ = ["PushWriter"]

T = TypeVar("T")
Work = Callable[[], Awaitable[Any]]


class PushWriter:
    def __init__(self, db: Database, *, max_items: int = 500, max_delay_s: float = 0.02) -> None:
        self.db = db
        self.max_items = max_items
        self.max_delay_s = max_delay_s
        self.batches = 0
        self._pending: list[tuple[Work, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._running = False

    def __repr__(self) -> str:
        return f"PushWriter(batches={self.batches}, waiting={len(self._pending)})"

    async def write(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` in a write transaction (a shared one when the writer runs); its result
        once committed."""
        if not self._running:
            async with self.db.transaction():
                return await work()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((work, done))
        self._wake.set()
        result: T = await done
        return result

    async def run(self) -> None:
        self._running = True
        try:
            while True:
                await self._wake.wait()
                if len(self._pending) < self.max_items:
                    await asyncio.sleep(self.max_delay_s)  # let the pushes arriving together join
                self._wake.clear()
                while self._pending:
                    await self.flush()
        finally:
            self._running = False
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        batch, self._pending = self._pending[: self.max_items], self._pending[self.max_items :]
        if not batch:
            return
        results: list[Any] = []
        try:
            async with self.db.transaction():
                for work, _ in batch:
                    results.append(await work())
        except Exception:
            for work, done in batch:
                try:
                    async with self.db.transaction():
                        result = await work()
                except Exception as exc:
                    if not done.done():
                        done.set_exception(exc)
                else:
                    if not done.done():
                        done.set_result(result)
            return
        self.batches += 1
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
