"""Each meter's push object list (Push setup 0.0.25.9.0.255, attribute 2), read from the meter
on first contact and kept for the life of the process.

Reading it is a session with the meter, so it happens outside any transaction and at most
once at a time per meter; a meter that cannot be asked is asked again only after
`retry_s`, and meanwhile its pushes are read by their inline layout (mapping.py). Entries are
kept only for inventory meters, so the cache is bounded by the inventory."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from headend.listener.mapping import PushObject

__all__ = ["PUSH_SETUP", "PushObjectLists"]

log = logging.getLogger(__name__)

PUSH_SETUP = "0.0.25.9.0.255"

Fetch = Callable[[str], Awaitable[list[PushObject] | None]]


class PushObjectLists:
    def __init__(
        self,
        fetch: Fetch | None = None,
        *,
        retry_s: float = 3600.0,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._lists: dict[str, list[PushObject]] = {}
        self._failed_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[list[PushObject] | None]] = set()

    def __repr__(self) -> str:
        return f"PushObjectLists(known={len(self._lists)})"

    def set(self, meter_id: str, objects: list[PushObject]) -> None:
        """Configured per meter, or read over a session that was open anyway."""
        self._lists[meter_id] = list(objects)
        self._failed_at.pop(meter_id, None)

    def forget(self, meter_id: str) -> None:
        self._lists.pop(meter_id, None)
        self._failed_at.pop(meter_id, None)
        self._locks.pop(meter_id, None)

    def known(self, meter_id: str) -> list[PushObject] | None:
        return self._lists.get(meter_id)

    async def get(self, meter_id: str, *, wait: bool = True) -> list[PushObject] | None:
        """The meter's list; read from the meter first if need be. `wait=False` (a shared
        UDP worker must not stall on one meter): start the read and answer None now."""
        cached = self._lists.get(meter_id)
        if cached is not None or self._fetch is None:
            return cached
        failed = self._failed_at.get(meter_id)
        if failed is not None and self._clock() - failed < self.retry_s:
            return None
        if not wait:
            lock = self._locks.get(meter_id)
            if lock is None or not lock.locked():
                task = asyncio.create_task(self._read(meter_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return None
        return await self._read(meter_id)

    async def _read(self, meter_id: str) -> list[PushObject] | None:
        fetch = self._fetch
        if fetch is None:
            return None
        lock = self._locks.setdefault(meter_id, asyncio.Lock())
        async with lock:
            cached = self._lists.get(meter_id)
            if cached is not None:
                return cached
            try:
                async with asyncio.timeout(self.timeout_s):
                    objects = await fetch(meter_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("push object list of %s not read: %s", meter_id, exc)
                objects = None
            if objects is None:
                self._failed_at[meter_id] = self._clock()
                return None
            self.set(meter_id, objects)
            return objects
