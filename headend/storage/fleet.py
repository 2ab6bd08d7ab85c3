"""The fleet at a glance (`headend status`): counts over meters, commands and alarms."""

from __future__ import annotations

from sqlalchemy import func, select

from headend import domain
from headend.storage.core import ALARMS, COMMANDS, METERS, Store, parse_sqlite_ts
from headend.storage.records import FleetSummary
from headend.storage.types import to_utc

__all__ = ["Fleet"]


class Fleet(Store):
    async def fleet_summary(self) -> FleetSummary:
        async with self.db.session() as session:
            meters = int(await session.scalar(select(func.count()).select_from(METERS)) or 0)
            states: dict[str, int] = {}
            for state, count in await session.execute(
                select(METERS.c.confirmed_relay_state, func.count()).group_by(
                    METERS.c.confirmed_relay_state
                )
            ):
                states[state or "unknown"] = int(count)
            desired_off = int(
                await session.scalar(
                    select(func.count())
                    .select_from(METERS)
                    .where(METERS.c.desired_relay_state == domain.DISCONNECTED)
                )
                or 0
            )
            active = int(
                await session.scalar(
                    select(func.count())
                    .select_from(COMMANDS)
                    .where(COMMANDS.c.status.in_(domain.ACTIVE_COMMAND_STATUSES))
                )
                or 0
            )
            escalated = int(
                await session.scalar(
                    select(func.count())
                    .select_from(COMMANDS)
                    .where(COMMANDS.c.status == domain.ESCALATED)
                )
                or 0
            )
            alarms = int(
                await session.scalar(
                    select(func.count()).select_from(ALARMS).where(ALARMS.c.cleared.is_(False))
                )
                or 0
            )
            last = await session.scalar(select(func.max(METERS.c.last_reading_at)))
        return FleetSummary(
            meters=meters,
            relay_states=states,
            desired_disconnected=desired_off,
            active_commands=active,
            escalated_commands=escalated,
            active_alarms=alarms,
            last_reading_at=None if last is None else to_utc(parse_sqlite_ts(last)),
        )
