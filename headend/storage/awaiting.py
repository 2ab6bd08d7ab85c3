"""Meters waiting for their customer: a reconnect the meter could only arm
(ready_for_reconnection) needs the customer's button. The read-backs keep the clock
(meters.ready_since, storage/relay_states.py); past `relay.overdue_after_s` a person is told,
once per episode (meters.awaiting_alarm_raised), in the transaction that marks it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update

from headend import domain
from headend.relay import decision
from headend.storage.alarms import insert_alarm
from headend.storage.core import METERS, Store
from headend.storage.holds import HELD_ACTION
from headend.storage.records import AlarmInfo

__all__ = ["Awaiting", "AwaitingCustomer"]


@dataclass(frozen=True, slots=True)
class AwaitingCustomer:
    """An awaiting_customer alarm just raised, with what the repeated customer notification
    says (the meter's balance)."""

    alarm: AlarmInfo
    ready_since: datetime
    balance: Decimal | None
    currency: str | None


class Awaiting(Store):
    async def raise_awaiting_customers(self, ready_before: datetime) -> list[AwaitingCustomer]:
        """Raise awaiting_customer for every meter in ready_for_reconnection since before
        `ready_before` that should be connected and has not had it in this episode."""
        now = self.now()
        m = METERS.c
        stmt = (
            select(
                m.meter_id,
                m.ready_since,
                m.desired_relay_state,
                HELD_ACTION.label("held_action"),
                m.last_balance,
                m.last_balance_currency,
            )
            .where(
                m.ready_since < ready_before,
                m.awaiting_alarm_raised.is_(False),
                m.confirmed_relay_state == domain.READY_FOR_RECONNECTION,
            )
            .order_by(m.ready_since)
            .with_for_update(of=METERS)
        )
        raised: list[AwaitingCustomer] = []
        async with self.db.transaction() as session:
            for row in (await session.execute(stmt)).all():
                target = decision.target(row.desired_relay_state, row.held_action)
                if target != domain.CONNECTED:
                    continue  # a disconnect is on its way: nobody waits for the customer
                await session.execute(
                    update(METERS)
                    .where(m.meter_id == row.meter_id)
                    .values(awaiting_alarm_raised=True, updated_at=now)
                )
                waited = (now - row.ready_since).total_seconds()
                detail = (
                    f"ready_for_reconnection for {waited:.0f}s (since "
                    f"{row.ready_since.isoformat()}): the customer has not pressed the button"
                )
                alarm = await insert_alarm(
                    session, domain.AWAITING_CUSTOMER, row.meter_id, detail, now
                )
                raised.append(
                    AwaitingCustomer(
                        alarm, row.ready_since, row.last_balance, row.last_balance_currency
                    )
                )
        return raised
