"""Readings from concurrent polls go to the database in few transactions, each poll waits for
its rows to be committed, and one bad poll fails alone (real SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from db_support import DIALECTS, temp_database
from sqlalchemy import func, select
from test_storage import add_meters

from headend.storage import Database, ReadingRow, Repository
from headend.storage.batching import ReadingBatcher
from headend.storage.models import Reading

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.fixture(params=DIALECTS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temp_database(request.param, tmp_path) as database:
        await add_meters(database, "M1", "M2", "M3")
        yield database


def poll_rows(meter_id: str, minute: int) -> list[ReadingRow]:
    ts = T0 + timedelta(minutes=minute)
    return [
        ReadingRow(meter_id, obis, ts, 1.5, "Wh") for obis in ("1.0.1.8.0.255", "1.0.2.8.0.255")
    ]


async def stored(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Reading)) or 0)


async def test_concurrent_polls_share_one_transaction(db: Database) -> None:
    batcher = ReadingBatcher(Repository(db, warning_threshold=Decimal("20")), max_delay_s=0.05)
    writer = asyncio.create_task(batcher.run())
    try:
        polls = [batcher.store_readings(poll_rows(m, i)) for i in range(50) for m in ("M1", "M2")]
        counts = await asyncio.gather(*polls)
        assert counts == [2] * 100
        assert await stored(db) == 200  # every poll returned only after its rows were stored
        assert batcher.batches <= 3  # ... in a handful of transactions, not a hundred
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def test_a_bad_poll_fails_alone(db: Database) -> None:
    batcher = ReadingBatcher(Repository(db, warning_threshold=Decimal("20")), max_delay_s=0.05)
    writer = asyncio.create_task(batcher.run())
    try:
        good = asyncio.create_task(batcher.store_readings(poll_rows("M1", 0)))
        bad = asyncio.create_task(batcher.store_readings(poll_rows("GONE", 0)))  # not a meter
        assert await good == 2
        with pytest.raises(Exception):  # noqa: B017 - the database's own integrity error
            await bad
        assert await stored(db) == 2
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def test_rows_waiting_at_stop_are_still_stored(db: Database) -> None:
    batcher = ReadingBatcher(Repository(db, warning_threshold=Decimal("20")), max_delay_s=60)
    writer = asyncio.create_task(batcher.run())
    waiting = asyncio.create_task(batcher.store_readings(poll_rows("M3", 5)))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # held for the batch
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    assert await waiting == 2
    assert await stored(db) == 2
