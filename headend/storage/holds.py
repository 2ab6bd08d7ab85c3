"""Operator holds (README, "Prepaid relay rules"): a hold pins a meter's relay against billing.

The hold lives on the meter row (hold, hold_reason, hold_at). The state it pins is the action
of the operator's command that set it: while a meter is held no other command is created for
it (billing and drift switch nothing, start-up reconciliation passes it by, an operator
command without --hold is refused), so its newest operator command since hold_at is that
command. Every hold and release goes into operator_actions with its reason; the statements
here run inside the caller's transaction (storage/overrides.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, insert, null, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from headend import domain
from headend.relay import decision
from headend.storage.core import COMMANDS, METERS, OPERATOR_ACTIONS, Store
from headend.storage.records import HoldInfo

__all__ = ["HELD_ACTION", "HoldConflict", "Holds", "log_operator_action", "pin", "unpin"]


class HoldConflict(Exception):
    """The operation does not fit the meter's hold: a command without --hold for a held
    meter, or a release of a meter that is not held."""


def _held_action() -> Any:
    c, m = COMMANDS.c, METERS.c
    newest = (
        select(c.action)
        .where(c.meter_id == m.meter_id, c.source == "operator", c.created_at >= m.hold_at)
        # A re-pin supersedes the command before it, maybe within the same clock tick.
        .order_by(c.created_at.desc(), case((c.status == domain.SUPERSEDED, 1), else_=0))
        .limit(1)
        .correlate(METERS)
        .scalar_subquery()
    )
    return case((m.hold.is_(True), newest), else_=null())


HELD_ACTION = _held_action()
"""The action a meter's hold pins (NULL when it is not held), for a SELECT over meters."""


async def log_operator_action(
    session: AsyncSession,
    meter_id: str,
    action: str,
    reason: str,
    detail: str | None,
    now: datetime,
) -> None:
    await session.execute(
        insert(OPERATOR_ACTIONS).values(
            meter_id=meter_id, action=action, reason=reason, detail=detail, ts=now
        )
    )


async def pin(
    session: AsyncSession, meter_id: str, reason: str, detail: str, now: datetime
) -> None:
    """Hold the meter (its command is the caller's), and log it."""
    await session.execute(
        update(METERS)
        .where(METERS.c.meter_id == meter_id)
        .values(hold=True, hold_reason=reason, hold_at=now, updated_at=now)
    )
    await log_operator_action(session, meter_id, domain.HOLD, reason, detail, now)


async def unpin(
    session: AsyncSession, meter_id: str, reason: str, detail: str, now: datetime
) -> None:
    await session.execute(
        update(METERS)
        .where(METERS.c.meter_id == meter_id)
        .values(hold=False, hold_reason=None, hold_at=None, updated_at=now)
    )
    await log_operator_action(session, meter_id, domain.RELEASE, reason, detail, now)


class Holds(Store):
    async def held_meters(self) -> list[HoldInfo]:
        """Every held meter, longest held first (what `headend status` lists)."""
        m = METERS.c
        stmt = (
            select(
                m.meter_id,
                m.hold_reason,
                m.hold_at,
                HELD_ACTION.label("held_action"),
                m.desired_relay_state,
                m.confirmed_relay_state,
            )
            .where(m.hold.is_(True))
            .order_by(m.hold_at, m.meter_id)
        )
        async with self.db.session() as session:
            rows = (await session.execute(stmt)).all()
        return [
            HoldInfo(
                meter_id=row.meter_id,
                reason=row.hold_reason,
                since=row.hold_at,
                held_state=decision.target(None, row.held_action),
                desired_state=row.desired_relay_state,
                confirmed_state=row.confirmed_relay_state,
            )
            for row in rows
        ]
