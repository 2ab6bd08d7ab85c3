"""Every SQLite connection of the daemon's pools has the bounded page cache (storage/db.py
SQLITE_CACHE_KIB): the soak benchmark's RSS growth after warm-up was the default 2 MiB cache
of each pooled connection filling up."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from headend.storage import Database
from headend.storage.db import SQLITE_CACHE_KIB


async def test_each_pooled_sqlite_connection_has_the_bounded_cache(tmp_path) -> None:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    try:

        async def cache_size() -> int:
            async with db.session() as session:
                value = (await session.execute(text("PRAGMA cache_size"))).scalar_one()
                await asyncio.sleep(0.05)  # hold it, so that the others open connections too
                return int(value)

        sizes = await asyncio.gather(*(cache_size() for _ in range(4)))
        assert sizes == [-SQLITE_CACHE_KIB] * 4
    finally:
        await db.dispose()
