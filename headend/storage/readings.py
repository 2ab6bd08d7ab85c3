"""Register readings and load/billing profile entries: many rows per poll, each stored once.

A retry of the same poll produces the same keys ((meter, register, ts), a register being an
OBIS code with its unit, and (meter, profile, ts)), so writes skip rows already present
instead of failing the batch. Readings are stored compactly (integer keys for the meter and the
register, storage/reading_keys.py; monthly partitions on PostgreSQL, storage/partitions.py)
and handed back as ReadingRow with the meter id, OBIS code and unit."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from headend.storage.core import (
    BATCH,
    METER_KEYS,
    METERS,
    PROFILES,
    READINGS,
    REGISTERS,
    Clock,
    Store,
    dialect_insert,
    parse_sqlite_ts,
)
from headend.storage.db import Database
from headend.storage.models import ProfileEntry
from headend.storage.partitions import ReadingPartitions
from headend.storage.reading_keys import NO_UNIT, reading_keys
from headend.storage.records import ProfileRow, ReadingRow, json_safe
from headend.storage.types import UtcDateTime, to_utc

__all__ = ["Readings"]

_MAX_EXACT_INT = 2**53


def _split_value(value: Any) -> tuple[float | None, str | None]:
    """A reading value as (number, JSON text): numbers in the numeric column, anything else
    (or what a double cannot hold exactly) as JSON text."""
    if isinstance(value, bool) or value is None:
        return None, json.dumps(value)
    if isinstance(value, int):
        if abs(value) <= _MAX_EXACT_INT:
            return float(value), None
        return None, json.dumps(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value, None
        return None, json.dumps(value)
    if isinstance(value, Decimal):
        return (float(value), None) if value.is_finite() else (None, json.dumps(str(value)))
    return None, json.dumps(json_safe(value))


def _join_value(number: float | None, text: str | None) -> Any:
    if number is not None:
        return number
    return None if text is None else json.loads(text)


class Readings(Store):
    def __init__(self, db: Database, clock: Clock) -> None:
        super().__init__(db, clock)
        self.partitions = ReadingPartitions(db)

    async def prepare(self, rows: Iterable[ReadingRow]) -> None:
        """What must exist before `rows` can be stored, made outside any write transaction
        (the month partitions on PostgreSQL; see storage/partitions.py). store_readings does
        it too, but there it may wait on locks its own transaction holds."""
        await self.partitions.ensure(row.ts for row in rows)

    async def store_readings(self, rows: Iterable[ReadingRow]) -> int:
        """Insert readings in batches; a (meter, obis + unit, ts) already stored is skipped.
        Returns how many rows were new. All rows must belong to known meters."""
        unique: dict[tuple[str, str, str, datetime], ReadingRow] = {}
        latest: dict[str, datetime] = {}
        for row in rows:
            ts = to_utc(row.ts)
            unique.setdefault((row.meter_id, row.obis, row.unit or NO_UNIT, ts), row)
            if row.meter_id not in latest or latest[row.meter_id] < ts:
                latest[row.meter_id] = ts
        if not unique:
            return 0
        await self.partitions.ensure(key[3] for key in unique)
        async with self.db.transaction() as session:
            meters, registers = await reading_keys(session, latest, {(k[1], k[2]) for k in unique})
            records = [
                (meters[meter_id], registers[(obis, unit)], ts, *_split_value(row.value))
                for (meter_id, obis, unit, ts), row in unique.items()
            ]
            if self.db.dialect == "postgresql":
                inserted = await _insert_copied(session, records)
            else:
                values = [dict(zip(_COLUMNS, record, strict=True)) for record in records]
                inserted = await _insert_new(session, READINGS, _COLUMNS[:3], values)
            await _advance_last_reading(session, latest)
        return inserted

    async def latest_readings(self, meter_id: str) -> dict[str, ReadingRow]:
        """The newest stored value of each OBIS code of a meter."""
        async with self.db.session() as session:
            key = await _meter_key(session, meter_id)
            if key is None:
                return {}
            newest = (
                select(READINGS.c.register_id, func.max(READINGS.c.ts).label("ts"))
                .where(READINGS.c.meter_key == key)
                .group_by(READINGS.c.register_id)
                .subquery()
            )
            rows = await session.execute(
                _SELECT.where(READINGS.c.meter_key == key).join_from(
                    READINGS,
                    newest,
                    and_(
                        READINGS.c.register_id == newest.c.register_id,
                        READINGS.c.ts == newest.c.ts,
                    ),
                )
            )
            latest: dict[str, ReadingRow] = {}
            for row in rows:
                reading = _reading(meter_id, row)
                # A register whose unit changed is two registers; the newer one wins.
                if reading.obis not in latest or latest[reading.obis].ts < reading.ts:
                    latest[reading.obis] = reading
            return latest

    async def readings(
        self,
        meter_id: str,
        *,
        obis: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[ReadingRow]:
        """Stored readings of a meter, oldest first."""
        async with self.db.session() as session:
            key = await _meter_key(session, meter_id)
            if key is None:
                return []
            stmt = _SELECT.where(READINGS.c.meter_key == key)
            if obis is not None:
                stmt = stmt.where(REGISTERS.c.obis == obis)
            if since is not None:
                stmt = stmt.where(READINGS.c.ts >= since)
            stmt = stmt.order_by(READINGS.c.ts, REGISTERS.c.obis).limit(limit)
            return [_reading(meter_id, row) for row in await session.execute(stmt)]

    async def store_profile_entries(self, rows: Iterable[ProfileRow]) -> int:
        """Insert profile entries; an entry (meter, profile, ts) already stored is skipped.
        Returns how many were new."""
        unique: dict[tuple[str, str, datetime], dict[str, Any]] = {}
        for row in rows:
            ts = to_utc(row.ts)
            unique.setdefault(
                (row.meter_id, row.profile, ts),
                {
                    "meter_id": row.meter_id,
                    "profile": row.profile,
                    "ts": ts,
                    "values": json_safe(row.values),
                },
            )
        if not unique:
            return 0
        values = list(unique.values())
        async with self.db.transaction() as session:
            return await _insert_new(session, PROFILES, ("meter_id", "profile", "ts"), values)

    async def last_profile_ts(self, meter_id: str, profile: str) -> datetime | None:
        """Where profile catch-up resumes: the newest stored entry's time."""
        async with self.db.session() as session:
            value = await session.scalar(
                select(func.max(ProfileEntry.ts)).where(
                    ProfileEntry.meter_id == meter_id, ProfileEntry.profile == profile
                )
            )
        return None if value is None else to_utc(parse_sqlite_ts(value))

    async def profile_entries(
        self, meter_id: str, profile: str, *, since: datetime | None = None, limit: int = 1000
    ) -> list[ProfileRow]:
        stmt = select(ProfileEntry).where(
            ProfileEntry.meter_id == meter_id, ProfileEntry.profile == profile
        )
        if since is not None:
            stmt = stmt.where(ProfileEntry.ts >= since)
        stmt = stmt.order_by(ProfileEntry.ts).limit(limit)
        async with self.db.session() as session:
            return [
                ProfileRow(r.meter_id, r.profile, r.ts, r.values)
                for r in (await session.scalars(stmt))
            ]


_COLUMNS = ("meter_key", "register_id", "ts", "value_num", "value_text")

_SELECT = select(
    REGISTERS.c.obis, REGISTERS.c.unit, READINGS.c.ts, READINGS.c.value_num, READINGS.c.value_text
).join_from(READINGS, REGISTERS, REGISTERS.c.id == READINGS.c.register_id)

# PostgreSQL. Nearly every batch is new rows only: it goes straight into readings by COPY
# (binary; a third of the server's CPU of an INSERT of the same rows, and the cheapest
# encoding for the client), in a savepoint. A batch holding a row stored already (a retried
# poll) makes the COPY fail on the primary key; it is then inserted as five arrays in one
# statement that skips the stored rows (ON CONFLICT DO NOTHING) and counts the new ones.
_INSERT_NEW = text(
    "WITH new AS (INSERT INTO readings (meter_key, register_id, ts, value_num, value_text) "
    "SELECT * FROM unnest(CAST(:meter_key AS int4[]), CAST(:register_id AS int4[]), "
    "CAST(:ts AS timestamptz[]), CAST(:value_num AS float8[]), CAST(:value_text AS text[])) "
    "ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM new"
)
_ADVANCE_ARRAYS = text(
    "UPDATE meters SET last_reading_at = v.ts "
    "FROM unnest(CAST(:meter_id AS varchar[]), CAST(:ts AS timestamptz[])) AS v(meter_id, ts) "
    "WHERE meters.meter_id = v.meter_id "
    "AND (meters.last_reading_at IS NULL OR meters.last_reading_at < v.ts)"
)


async def _insert_copied(session: AsyncSession, records: list[tuple[Any, ...]]) -> int:
    from asyncpg.exceptions import UniqueViolationError

    # The session's own connection, inside its transaction (begun by the key lookup).
    connection = await (await session.connection()).get_raw_connection()
    driver: Any = connection.driver_connection
    try:
        async with driver.transaction():  # nested in the session's: a savepoint
            await driver.copy_records_to_table(READINGS.name, records=records, columns=_COLUMNS)
    except UniqueViolationError:
        inserted = 0
        for start in range(0, len(records), BATCH):
            columns = zip(*records[start : start + BATCH], strict=True)
            params = {name: list(column) for name, column in zip(_COLUMNS, columns, strict=True)}
            inserted += int((await session.execute(_INSERT_NEW, params)).scalar_one())
        return inserted
    return len(records)


async def _advance_last_reading(session: AsyncSession, latest: dict[str, datetime]) -> None:
    """meters.last_reading_at moves forward only (a late retry must not move it back)."""
    ordered = sorted(latest.items())
    if session.bind.dialect.name == "postgresql":  # one statement, the pairs as two arrays
        params = {"meter_id": [m for m, _ in ordered], "ts": [t for _, t in ordered]}
        await session.execute(_ADVANCE_ARRAYS, params)
        return
    ts_param = bindparam("b_ts", type_=UtcDateTime())
    await session.execute(
        update(METERS)
        .where(METERS.c.meter_id == bindparam("b_meter"))
        .where(or_(METERS.c.last_reading_at.is_(None), METERS.c.last_reading_at < ts_param))
        .values(last_reading_at=ts_param),
        [{"b_meter": m, "b_ts": ts} for m, ts in ordered],
    )


async def _meter_key(session: AsyncSession, meter_id: str) -> int | None:
    return await session.scalar(select(METER_KEYS.c.id).where(METER_KEYS.c.meter_id == meter_id))


def _reading(meter_id: str, row: Any) -> ReadingRow:
    obis, unit, ts, number, text_value = row
    return ReadingRow(meter_id, obis, ts, _join_value(number, text_value), unit or None)


async def _insert_new(
    session: AsyncSession, table: Table, keys: tuple[str, ...], values: list[dict[str, Any]]
) -> int:
    """Insert rows, skipping those whose `keys` are stored already; how many were new.

    One cached statement, executed for many parameter sets: SQLAlchemy batches them as
    multi-row INSERTs ("insertmanyvalues") without compiling SQL per call, and RETURNING
    counts only the rows that were new."""
    stmt = (
        dialect_insert(session, table)
        .on_conflict_do_nothing(index_elements=list(keys))
        .returning(table.c[keys[0]])
    )
    inserted = 0
    for start in range(0, len(values), BATCH):
        result = await session.execute(stmt, values[start : start + BATCH])
        inserted += len(result.all())
    return inserted
