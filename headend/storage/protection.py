"""Protected supply on the meter row (protected, protected_reason, protected_at), set and
lifted by an operator (`headend meters protect|unprotect ID --reason TEXT`) under the meter's
row lock, logged in operator_actions; what it means for the relay is relay/protection.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from headend import domain
from headend.prepaid.quiet_hours import QuietHours
from headend.relay import protection
from headend.relay.decision import ActiveCommand, Step, Superseded
from headend.storage.alarms import insert_alarm
from headend.storage.commands import apply_step, command_info
from headend.storage.core import COMMANDS, METERS, Clock, Store
from headend.storage.db import Database
from headend.storage.holds import log_operator_action
from headend.storage.meters import UnknownMeter
from headend.storage.records import AlarmInfo, CommandInfo

__all__ = ["Protection", "ProtectionChange"]

_ACTIVE = tuple(domain.ACTIVE_COMMAND_STATUSES)


@dataclass(frozen=True)
class ProtectionChange:
    detail: str
    command: CommandInfo | None
    superseded: tuple[Superseded, ...]
    alarm: AlarmInfo | None
    scheduled_at: datetime | None


class Protection(Store):
    def __init__(self, db: Database, clock: Clock, quiet_hours: QuietHours | None = None) -> None:
        super().__init__(db, clock)
        self.quiet_hours = quiet_hours or QuietHours()

    async def set_protected(self, meter_id: str, reason: str, protected: bool) -> ProtectionChange:
        """Raises UnknownMeter."""
        now = self.now()
        m = METERS.c
        async with self.db.transaction() as session:
            meter = (
                await session.execute(
                    select(
                        m.last_balance,
                        m.desired_relay_state,
                        m.confirmed_relay_state,
                        m.desired_seq,
                        m.hold,
                    )
                    .where(m.meter_id == meter_id)
                    .with_for_update()
                )
            ).first()
            if meter is None:
                raise UnknownMeter(meter_id)
            row = (
                await session.execute(
                    select(COMMANDS).where(
                        COMMANDS.c.meter_id == meter_id, COMMANDS.c.status.in_(_ACTIVE)
                    )
                )
            ).first()
            active_info = None if row is None else command_info(row)
            active = None
            if active_info is not None:
                active = ActiveCommand(
                    active_info.command_id,
                    active_info.action,
                    active_info.status,
                    active_info.episode_started_at or active_info.created_at,
                )
            if meter.hold:  # an operator's hold pins the relay: only the flag changes
                result = protection.ProtectionStep(
                    Step("flag changed; the meter is held by an operator"), None
                )
            elif protected:
                result = protection.protect(
                    meter.last_balance,
                    meter.desired_relay_state,
                    meter.confirmed_relay_state,
                    active,
                    None if active_info is None else active_info.source,
                    reason,
                )
            else:
                at = self.quiet_hours.disconnect_at(now) if self.quiet_hours.active else None
                result = protection.unprotect(
                    meter.last_balance,
                    meter.confirmed_relay_state,
                    active,
                    reason,
                    at if at is not None and at > now else None,
                )
            step = result.step
            command = await apply_step(
                session, meter_id, step, source="protection", now=now, seq=meter.desired_seq
            )
            values: dict[str, Any] = {
                "protected": protected,
                "protected_reason": reason if protected else None,
                "protected_at": now if protected else None,
                "updated_at": now,
            }
            if result.desired_state is not None:
                values.update(desired_relay_state=result.desired_state, desired_at=now)
            await session.execute(update(METERS).where(m.meter_id == meter_id).values(values))
            action = domain.PROTECT if protected else domain.UNPROTECT
            await log_operator_action(session, meter_id, action, reason, step.detail, now)
            alarm = None
            if result.alarm is not None:
                alarm = await insert_alarm(
                    session,
                    result.alarm,
                    meter_id,
                    f"protected supply in arrears (balance {meter.last_balance}): "
                    "not disconnected; settle the account",
                    now,
                )
            return ProtectionChange(
                step.detail, command, step.superseded, alarm, result.scheduled_at
            )

    async def protected_meters(self) -> list[dict[str, Any]]:
        m = METERS.c
        stmt = (
            select(m.meter_id, m.protected_reason, m.protected_at, m.last_balance)
            .where(m.protected.is_(True))
            .order_by(m.meter_id)
        )
        async with self.db.session() as session:
            return [dict(r._mapping) for r in await session.execute(stmt)]
