"""Load limiting on the meter row: what billing wants (limit_wanted, set by the balance
decision), what the meter's Limiter was last read back as (limit_state), the threshold it had
before it was limited (restored on payment), and the retry clock of the worker that gets it
there (headend/prepaid/limiter.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update

from headend.domain import LIMITED
from headend.storage.core import METERS, Store

__all__ = ["LimitDue", "Limits"]


@dataclass(frozen=True)
class LimitDue:
    meter_id: str
    wanted: bool
    state: str | None
    normal_w: float | None
    attempts: int


class Limits(Store):
    async def limits_due(self, now: datetime) -> list[LimitDue]:
        """Meters whose Limiter is not where billing wants it, due for an attempt."""
        m = METERS.c
        off_target = or_(
            and_(m.limit_wanted.is_(True), or_(m.limit_state.is_(None), m.limit_state != LIMITED)),
            and_(m.limit_wanted.is_(False), m.limit_state == LIMITED),
        )
        stmt = (
            select(m.meter_id, m.limit_wanted, m.limit_state, m.limit_normal_w, m.limit_attempts)
            .where(off_target, or_(m.limit_next_at.is_(None), m.limit_next_at <= now))
            .order_by(m.meter_id)
        )
        async with self.db.session() as session:
            return [LimitDue(*row) for row in await session.execute(stmt)]

    async def record_limit(
        self,
        meter_id: str,
        *,
        state: str | None = None,
        normal_w: float | None = None,
        error: str | None = None,
        next_at: datetime | None = None,
        attempts: int = 0,
    ) -> None:
        """An attempt's result: the state read back (and the threshold kept for restoring),
        or its error and when to try again."""
        values: dict[str, object] = {
            "limit_error": error,
            "limit_next_at": next_at,
            "limit_attempts": attempts,
        }
        if state is not None:
            values["limit_state"] = state
        if normal_w is not None:
            values["limit_normal_w"] = normal_w
        async with self.db.transaction() as session:
            await session.execute(
                update(METERS).where(METERS.c.meter_id == meter_id).values(values)
            )
