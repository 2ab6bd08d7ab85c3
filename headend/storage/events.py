"""Meter events: entries of a meter's event logs, whether a poll read them or the meter pushed
them. An event is (meter, log, ts, code); the same one arriving twice (a push, then the poll
that catches the log up; a retried catch-up) is stored once, and only the new ones are
returned, so that the caller publishes each event once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from headend.domain import EVENT_SOURCES
from headend.storage.core import BATCH, METER_EVENTS, Store, dialect_insert, parse_sqlite_ts
from headend.storage.models import MeterEvent
from headend.storage.types import to_utc

__all__ = ["EventRow", "MeterEvents", "insert_events"]

_KEYS = ("meter_id", "log", "ts", "code")
_MAX_NAME = 128


@dataclass(frozen=True, slots=True)
class EventRow:
    meter_id: str
    log: str  # the event log's OBIS code, e.g. "0.0.99.98.2.255"
    ts: datetime  # when the meter recorded it
    code: int
    name: str  # cosem_objects.event_codes.event_name(code, log)
    source: str  # "push" | "poll"


async def insert_events(
    session: AsyncSession, rows: Iterable[EventRow], received_at: datetime
) -> list[EventRow]:
    """Insert events in `session`, skipping those stored already; the new ones, in order.
    For callers that store events together with other changes in one transaction."""
    unique: dict[tuple[Any, ...], EventRow] = {}
    for row in rows:
        if row.source not in EVENT_SOURCES:
            raise ValueError(f"unknown event source: {row.source!r:.20}")
        row = EventRow(
            row.meter_id, row.log, to_utc(row.ts), int(row.code), row.name[:_MAX_NAME], row.source
        )
        unique.setdefault((row.meter_id, row.log, row.ts, row.code), row)
    if not unique:
        return []
    values = [
        {
            "meter_id": r.meter_id,
            "log": r.log,
            "ts": r.ts,
            "code": r.code,
            "name": r.name,
            "source": r.source,
            "received_at": received_at,
        }
        for r in unique.values()
    ]
    c = METER_EVENTS.c
    stmt = (
        dialect_insert(session, METER_EVENTS)
        .on_conflict_do_nothing(index_elements=list(_KEYS))
        .returning(c.meter_id, c.log, c.ts, c.code)
    )
    new: set[tuple[Any, ...]] = set()
    for start in range(0, len(values), BATCH):
        result = await session.execute(stmt, values[start : start + BATCH])
        new.update((m, lg, to_utc(parse_sqlite_ts(ts)), code) for m, lg, ts, code in result.all())
    return [row for key, row in unique.items() if key in new]


class MeterEvents(Store):
    async def store_events(self, rows: Iterable[EventRow]) -> list[EventRow]:
        """Store events (of known meters); return those that were new, to publish."""
        now = self.now()
        async with self.db.transaction() as session:
            return await insert_events(session, rows, now)

    async def meter_events(
        self,
        meter_id: str,
        *,
        log: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[EventRow]:
        """Stored events of a meter, oldest first."""
        stmt = select(MeterEvent).where(MeterEvent.meter_id == meter_id)
        if log is not None:
            stmt = stmt.where(MeterEvent.log == log)
        if since is not None:
            stmt = stmt.where(MeterEvent.ts >= since)
        stmt = stmt.order_by(MeterEvent.ts, MeterEvent.id).limit(limit)
        async with self.db.session() as session:
            return [
                EventRow(e.meter_id, e.log, e.ts, e.code, e.name, e.source)
                for e in await session.scalars(stmt)
            ]

    async def last_event_ts(self, meter_id: str, log: str) -> datetime | None:
        """Where an event log's catch-up resumes: the newest stored entry's time."""
        async with self.db.session() as session:
            value = await session.scalar(
                select(func.max(MeterEvent.ts)).where(
                    MeterEvent.meter_id == meter_id, MeterEvent.log == log
                )
            )
        return None if value is None else to_utc(parse_sqlite_ts(value))
