"""Relay states read back from meters: the history, and the meter's confirmed state.

Read-backs can arrive out of order (a retry's late answer, an operator's tool): the history
keeps every one, the meter's confirmed state only the newest. `write_relay_state` is the one
place a read-back is written; confirming a command calls it inside its own transaction."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from headend import domain
from headend.storage.core import METERS, RELAY_STATES, Store
from headend.storage.meters import UnknownMeter
from headend.storage.models import RelayState
from headend.storage.records import RelayStateInfo
from headend.storage.types import to_utc

__all__ = ["RelayStates", "check_relay_state", "write_relay_state"]


def check_relay_state(state: str) -> None:
    if state not in domain.RELAY_STATES:
        raise ValueError(f"unknown relay state {state!r}")


async def write_relay_state(
    session: AsyncSession, readback: RelayStateInfo, confirmed_at: datetime | None, now: datetime
) -> None:
    """The history row, and the meter's confirmed state unless a newer read-back (its
    `confirmed_at`, read under the meter's row lock) is already recorded."""
    readback = replace(readback, ts=to_utc(readback.ts))
    await session.execute(insert(RELAY_STATES).values(asdict(readback)))
    if confirmed_at is None or confirmed_at <= readback.ts:
        await session.execute(
            update(METERS)
            .where(METERS.c.meter_id == readback.meter_id)
            .values(
                confirmed_relay_state=readback.state,
                confirmed_output_state=readback.output_state,
                confirmed_at=readback.ts,
                updated_at=now,
            )
        )


class RelayStates(Store):
    async def record_relay_state(
        self,
        meter_id: str,
        state: str,
        output_state: bool | None,
        control_state: str | None = None,
        *,
        reason: str | None = None,
        ts: datetime | None = None,
        command_id: str | None = None,
    ) -> None:
        """Store a relay state read back from a meter (history), and make it the meter's
        confirmed state unless a newer read-back is already recorded. Raises UnknownMeter."""
        check_relay_state(state)
        now = self.now()
        readback = RelayStateInfo(
            meter_id, state, output_state, control_state, ts or now, reason, command_id
        )
        m = METERS.c
        async with self.db.transaction() as session:
            confirmed_at = (
                await session.execute(
                    select(m.confirmed_at).where(m.meter_id == meter_id).with_for_update()
                )
            ).first()
            if confirmed_at is None:
                raise UnknownMeter(meter_id)
            await write_relay_state(session, readback, confirmed_at[0], now)

    async def relay_history(self, meter_id: str, *, limit: int = 100) -> list[RelayStateInfo]:
        stmt = (
            select(RelayState)
            .where(RelayState.meter_id == meter_id)
            .order_by(RelayState.ts.desc(), RelayState.id.desc())
            .limit(limit)
        )
        async with self.db.session() as session:
            return [
                RelayStateInfo(
                    r.meter_id,
                    r.state,
                    r.output_state,
                    r.control_state,
                    r.ts,
                    r.reason,
                    r.command_id,
                )
                for r in await session.scalars(stmt)
            ]
