"""Alarms for a person: raised (once while one of the same type stands for the meter),
listed, cleared. `insert_alarm` is the one place an alarm row is built; the balance and
command modules call it inside their own transactions."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from headend.storage.core import ALARMS, Store
from headend.storage.models import Alarm
from headend.storage.records import AlarmInfo

__all__ = ["Alarms", "clear_standing", "insert_alarm"]


async def insert_alarm(
    session: AsyncSession, type: str, meter_id: str | None, detail: str | None, ts: datetime
) -> AlarmInfo:
    alarm_id = (
        await session.execute(
            insert(ALARMS)
            .values(type=type, meter_id=meter_id, detail=detail, ts=ts, cleared=False)
            .returning(ALARMS.c.id)
        )
    ).scalar_one()
    return AlarmInfo(int(alarm_id), type, meter_id, detail, ts, False)


async def clear_standing(
    session: AsyncSession, types: Iterable[str], meter_id: str | None, now: datetime
) -> int:
    """Clear the standing alarms of these types (for a meter; None: of no meter)."""
    a = ALARMS.c
    meter_match = a.meter_id.is_(None) if meter_id is None else a.meter_id == meter_id
    result = await session.execute(
        update(ALARMS)
        .where(a.type.in_(tuple(types)), meter_match, a.cleared.is_(False))
        .values(cleared=True, cleared_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


class Alarms(Store):
    async def raise_alarm(
        self,
        type: str,
        meter_id: str | None = None,
        detail: str | None = None,
        *,
        ts: datetime | None = None,
        dedupe: bool = True,
    ) -> AlarmInfo | None:
        """Store an alarm. With dedupe, an uncleared alarm of the same type for the same
        meter already stands for it: nothing is stored and None is returned (nothing new to
        publish)."""
        now = self.now()
        async with self.db.transaction() as session:
            if dedupe:
                a = ALARMS.c
                meter_match = a.meter_id.is_(None) if meter_id is None else a.meter_id == meter_id
                existing = await session.scalar(
                    select(a.id).where(a.type == type, meter_match, a.cleared.is_(False)).limit(1)
                )
                if existing is not None:
                    return None
            return await insert_alarm(session, type, meter_id, detail, ts or now)

    async def clear_alarms(self, type: str, meter_id: str | None = None) -> int:
        """Clear the standing alarms of a type (for a meter). Returns how many."""
        now = self.now()
        async with self.db.transaction() as session:
            return await clear_standing(session, (type,), meter_id, now)

    async def list_alarms(
        self, *, active_only: bool = True, meter_id: str | None = None, limit: int = 100
    ) -> list[AlarmInfo]:
        """Alarms, newest first."""
        stmt = select(Alarm)
        if active_only:
            stmt = stmt.where(Alarm.cleared.is_(False))
        if meter_id is not None:
            stmt = stmt.where(Alarm.meter_id == meter_id)
        stmt = stmt.order_by(Alarm.ts.desc(), Alarm.id.desc()).limit(limit)
        async with self.db.session() as session:
            return [AlarmInfo.of(a) for a in await session.scalars(stmt)]
