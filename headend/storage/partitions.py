"""Readings over time: monthly partitions on PostgreSQL, created ahead, dropped past retention.

At a million meters the readings table grows by hundreds of millions of rows a month, and
deleting old rows one by one would cost as much as inserting them did. On PostgreSQL the table
is partitioned by month (RANGE on ts), so old data goes by dropping a whole partition.
Partitions are created before rows need them, in a short transaction of their own on a
separate connection (advisory-locked, so two head-ends do not race), never inside the
transaction that inserts the rows: creating one locks the parent table exclusively, and a
transaction that already inserted readings holds a lock on it until it commits (a DDL lock
timeout turns such a wait into an error rather than a hang).

SQLite has no partitions: retention deletes old rows there, in chunks, each chunk one short
write transaction (SQLite has one writer; polls must not wait behind a long delete).

Retention is by month on PostgreSQL: a partition goes once its whole month is older than
`storage.retention_days`, so up to a month more than asked is kept."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from headend.storage.db import Database
from headend.storage.types import to_micros, to_utc

__all__ = ["ReadingPartitions", "create_partition_sql", "month_start", "partition_name"]

PARENT = "readings"
_NAME = re.compile(rf"^{PARENT}_y(\d{{4}})m(\d{{2}})$")
_LOCK_ID = 0x72656164  # "read": one partition maker at a time per database
LOCK_TIMEOUT = "5s"  # a DDL that cannot get its lock fails (and is retried) rather than queues
DDL_TIMEOUT_S = 30.0
SQLITE_DELETE_CHUNK = 10_000


def month_start(ts: datetime) -> datetime:
    ts = to_utc(ts)
    return datetime(ts.year, ts.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"{PARENT}_y{start.year:04d}m{start.month:02d}"


def create_partition_sql(start: datetime) -> str:
    """The DDL for the partition of the month starting at `start` (DDL takes no bind
    parameters; this text is built from integers only)."""
    end = next_month(start)
    return (
        f'CREATE TABLE "{partition_name(start)}" PARTITION OF {PARENT} '
        f"FOR VALUES FROM ('{start:%Y-%m-%d %H:%M:%S}+00') TO ('{end:%Y-%m-%d %H:%M:%S}+00')"
    )


class ReadingPartitions:
    """This process's view of which months have a partition, and the work on them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: set[datetime] = set()

    @property
    def partitioned(self) -> bool:
        return self.db.dialect == "postgresql"

    async def ensure(self, stamps: Iterable[datetime]) -> None:
        """Partitions for the months of `stamps` exist when this returns (PostgreSQL)."""
        if not self.partitioned:
            return
        # A batch holds thousands of rows but a few distinct times (one per poll slot).
        months = {month_start(ts) for ts in set(stamps)} - self._known
        if months:
            await self._create(months)

    async def ensure_ahead(self, now: datetime, months: int = 2) -> None:
        """This month's partition and the next ones, before any row needs them."""
        start = month_start(now)
        wanted = []
        for _ in range(months):
            wanted.append(start)
            start = next_month(start)
        await self.ensure(wanted)

    async def existing(self) -> dict[datetime, str]:
        """The partitions there are (PostgreSQL), by the month they hold."""
        if not self.partitioned:
            return {}
        async with self.db.engine.connect() as conn:
            return await _existing(conn)

    async def _create(self, months: set[datetime]) -> None:
        async with asyncio.timeout(DDL_TIMEOUT_S), self.db.engine.begin() as conn:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
            have = await _existing(conn)
            for start in sorted(months - have.keys()):
                await conn.execute(text(create_partition_sql(start)))
        self._known |= months

    async def prune(self, retention_days: int, now: datetime) -> int:
        """Drop what is older than `retention_days` (0 = keep forever): whole partitions on
        PostgreSQL (returns how many), rows on SQLite (returns how many)."""
        if retention_days <= 0:
            return 0
        cutoff = to_utc(now) - timedelta(days=retention_days)
        if not self.partitioned:
            return await self._delete_rows_before(cutoff)
        dropped = 0
        async with asyncio.timeout(DDL_TIMEOUT_S), self.db.engine.begin() as conn:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
            for start, name in sorted((await _existing(conn)).items()):
                if next_month(start) <= cutoff:
                    await conn.execute(text(f'DROP TABLE "{name}"'))
                    self._known.discard(start)
                    dropped += 1
        return dropped

    async def _delete_rows_before(self, cutoff: datetime) -> int:
        deleted = 0
        while True:
            async with self.db.transaction() as session:
                result = await session.execute(
                    text(
                        f"DELETE FROM {PARENT} WHERE (meter_key, register_id, ts) IN "
                        f"(SELECT meter_key, register_id, ts FROM {PARENT} WHERE ts < :cutoff "
                        "LIMIT :chunk)"
                    ),
                    {"cutoff": to_micros(cutoff), "chunk": SQLITE_DELETE_CHUNK},
                )
            count = int(getattr(result, "rowcount", 0) or 0)
            deleted += count
            if count < SQLITE_DELETE_CHUNK:
                return deleted


async def _existing(conn: AsyncConnection) -> dict[datetime, str]:
    result = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            f"WHERE i.inhparent = '{PARENT}'::regclass"
        )
    )
    found: dict[datetime, str] = {}
    for (name,) in result:
        match = _NAME.match(name)
        if match:
            found[datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)] = name
    return found
