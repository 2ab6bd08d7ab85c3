"""Relay states read back from meters: the history, the meter's confirmed state, and the clock
of a meter waiting in ready_for_reconnection for its customer.

Read-backs can arrive out of order (a retry's late answer, an operator's tool): the history
keeps them, the meter's confirmed state only the newest. `write_relay_state` is the one place
a read-back is written; confirming a command (storage/commands.py) and a poll's read-back
(storage/readbacks.py) call it inside their own transactions."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from headend import domain
from headend.storage.alarms import clear_standing
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
    session: AsyncSession,
    readback: RelayStateInfo,
    confirmed_at: datetime | None,
    now: datetime,
    *,
    awaiting_alarm_raised: bool = False,
    history: bool = True,
) -> None:
    """The history row (with `history`), and the meter's confirmed state unless a newer
    read-back (its `confirmed_at`, read under the meter's row lock) is already recorded.

    The newest read-back also keeps the customer's clock: ready_for_reconnection starts it
    (once), any other state ends the episode and clears its awaiting_customer alarm
    (`awaiting_alarm_raised`: one was raised, read under the same lock)."""
    readback = replace(readback, ts=to_utc(readback.ts))
    if history:
        await session.execute(insert(RELAY_STATES).values(asdict(readback)))
    if confirmed_at is not None and confirmed_at > readback.ts:
        return
    m = METERS.c
    values: dict[str, Any] = {
        "confirmed_relay_state": readback.state,
        "confirmed_output_state": readback.output_state,
        "confirmed_at": readback.ts,
        "updated_at": now,
    }
    if readback.state == domain.READY_FOR_RECONNECTION:
        values["ready_since"] = func.coalesce(m.ready_since, readback.ts)
    else:
        values.update(ready_since=None, awaiting_alarm_raised=False)
    await session.execute(update(METERS).where(m.meter_id == readback.meter_id).values(values))
    if awaiting_alarm_raised and readback.state != domain.READY_FOR_RECONNECTION:
        await clear_standing(session, (domain.AWAITING_CUSTOMER,), readback.meter_id, now)


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
    ) -> bool:
        """Store a relay state read back from a meter (history), and make it the meter's
        confirmed state unless a newer read-back is already recorded. Returns whether the
        meter is held (the retained relay message says so). Raises UnknownMeter."""
        check_relay_state(state)
        now = self.now()
        readback = RelayStateInfo(
            meter_id, state, output_state, control_state, ts or now, reason, command_id
        )
        m = METERS.c
        async with self.db.transaction() as session:
            meter = (
                await session.execute(
                    select(m.confirmed_at, m.awaiting_alarm_raised, m.hold)
                    .where(m.meter_id == meter_id)
                    .with_for_update()
                )
            ).first()
            if meter is None:
                raise UnknownMeter(meter_id)
            await write_relay_state(
                session,
                readback,
                meter.confirmed_at,
                now,
                awaiting_alarm_raised=meter.awaiting_alarm_raised,
            )
            return bool(meter.hold)

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
