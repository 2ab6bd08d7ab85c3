"""Each meter's push object lists (Push setup 0.b.25.9.0.255, attribute 2; one per setup the
meter pushes from), read from the meter on first contact and kept for the life of the process.

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

Fetch = Callable[[str, str], Awaitable[list[PushObject] | None]]
Key = tuple[str, str]  # (meter id, push setup OBIS)


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
        self._lists: dict[Key, list[PushObject]] = {}
        self._failed_at: dict[Key, float] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._background: set[asyncio.Task[list[PushObject] | None]] = set()

    def __repr__(self) -> str:
        return f"PushObjectLists(known={len(self._lists)})"

    def set(self, meter_id: str, setup: str, objects: list[PushObject]) -> None:
        """Configured per meter, or read over a session that was open anyway."""
        self._lists[meter_id, setup] = list(objects)
        self._failed_at.pop((meter_id, setup), None)

    def forget(self, meter_id: str) -> None:
        for table in (self._lists, self._failed_at, self._locks):
            for key in [k for k in table if k[0] == meter_id]:
                del table[key]

    def pending(self, meter_id: str, setup: str) -> bool:
        """The list is not known but may be soon: it can be read and was not just tried."""
        key = (meter_id, setup)
        if self._fetch is None or key in self._lists:
            return False
        failed = self._failed_at.get(key)
        return failed is None or self._clock() - failed >= self.retry_s

    def known(self, meter_id: str, setup: str) -> list[PushObject] | None:
        return self._lists.get((meter_id, setup))

    async def get(
        self, meter_id: str, setup: str, *, wait: bool = True, retry: bool = False
    ) -> list[PushObject] | None:
        """The meter's list; read from the meter first if need be. `wait=False` (a shared
        UDP worker must not stall on one meter): start the read and answer None now."""
        key = (meter_id, setup)
        cached = self._lists.get(key)
        if cached is not None or self._fetch is None:
            return cached
        failed = self._failed_at.get(key)
        if failed is not None and self._clock() - failed < self.retry_s and not retry:
            return None
        if not wait:
            lock = self._locks.get(key)
            if lock is None or not lock.locked():
                task = asyncio.create_task(self._read(key))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return None
        return await self._read(key)

    async def _read(self, key: Key) -> list[PushObject] | None:
        fetch = self._fetch
        if fetch is None:
            return None
        meter_id, setup = key
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._lists.get(key)
            if cached is not None:
                return cached
            try:
                async with asyncio.timeout(self.timeout_s):
                    objects = await fetch(meter_id, setup)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("push object list of %s not read: %s", meter_id, exc)
                objects = None
            if objects is None:
                self._failed_at[key] = self._clock()
                return None
            self.set(meter_id, setup, objects)
            return objects
