"""Register readings and load/billing profile entries: many rows per poll, each stored once.

A retry of the same poll produces the same keys ((meter, obis, ts) and (meter, profile, ts)),
so writes skip rows already present instead of failing the batch."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from headend.storage.core import (
    BATCH,
    METERS,
    PROFILES,
    READINGS,
    Store,
    dialect_insert,
    parse_sqlite_ts,
)
from headend.storage.models import ProfileEntry, Reading
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
    async def store_readings(self, rows: Iterable[ReadingRow]) -> int:
        """Insert readings in batches; a (meter, obis, ts) already stored is skipped.
        Returns how many rows were new. All rows must belong to known meters."""
        unique: dict[tuple[str, str, datetime], dict[str, Any]] = {}
        latest: dict[str, datetime] = {}
        for row in rows:
            ts = to_utc(row.ts)
            number, text = _split_value(row.value)
            unique.setdefault(
                (row.meter_id, row.obis, ts),
                {
                    "meter_id": row.meter_id,
                    "obis": row.obis,
                    "ts": ts,
                    "value_num": number,
                    "value_text": text,
                    "unit": row.unit,
                },
            )
            if row.meter_id not in latest or latest[row.meter_id] < ts:
                latest[row.meter_id] = ts
        if not unique:
            return 0
        values = list(unique.values())
        async with self.db.transaction() as session:
            inserted = await _insert_new(session, READINGS, ("meter_id", "obis", "ts"), values)
            ts_param = bindparam("b_ts", type_=UtcDateTime())
            await session.execute(
                update(METERS)
                .where(METERS.c.meter_id == bindparam("b_meter"))
                .where(or_(METERS.c.last_reading_at.is_(None), METERS.c.last_reading_at < ts_param))
                .values(last_reading_at=ts_param),
                [{"b_meter": m, "b_ts": ts} for m, ts in sorted(latest.items())],
            )
        return inserted

    async def latest_readings(self, meter_id: str) -> dict[str, ReadingRow]:
        """The newest stored value of each OBIS code of a meter."""
        async with self.db.session() as session:
            newest = (
                select(Reading.obis, func.max(Reading.ts).label("ts"))
                .where(Reading.meter_id == meter_id)
                .group_by(Reading.obis)
                .subquery()
            )
            rows = await session.execute(
                select(Reading).join(
                    newest,
                    and_(
                        Reading.meter_id == meter_id,
                        Reading.obis == newest.c.obis,
                        Reading.ts == newest.c.ts,
                    ),
                )
            )
            return {
                r.obis: ReadingRow(
                    r.meter_id, r.obis, r.ts, _join_value(r.value_num, r.value_text), r.unit
                )
                for r in rows.scalars()
            }

    async def readings(
        self,
        meter_id: str,
        *,
        obis: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[ReadingRow]:
        """Stored readings of a meter, oldest first."""
        stmt = select(Reading).where(Reading.meter_id == meter_id)
        if obis is not None:
            stmt = stmt.where(Reading.obis == obis)
        if since is not None:
            stmt = stmt.where(Reading.ts >= since)
        stmt = stmt.order_by(Reading.ts, Reading.obis).limit(limit)
        async with self.db.session() as session:
            return [
                ReadingRow(r.meter_id, r.obis, r.ts, _join_value(r.value_num, r.value_text), r.unit)
                for r in (await session.scalars(stmt))
            ]

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
        .returning(table.c.id)
    )
    inserted = 0
    for start in range(0, len(values), BATCH):
        result = await session.execute(stmt, values[start : start + BATCH])
        inserted += len(result.all())
    return inserted
