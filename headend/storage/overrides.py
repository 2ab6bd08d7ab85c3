"""Operator overrides: a command from an operator (with or without a hold), and the release of
a hold, each in one transaction with the meter row locked.

A plain override sets the meter's desired state (the next balance event may change it again);
one with a hold leaves the desired state to billing and pins the relay instead, so that on
release the meter goes where its newest balance says (relay/decision.py, `release`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from headend import domain
from headend.relay import decision, lifecycle
from headend.relay.decision import ActiveCommand, Superseded
from headend.storage.commands import apply_step, command_info, insert_command, supersede_command
from headend.storage.core import COMMANDS, METERS, Store
from headend.storage.holds import HoldConflict, pin, unpin
from headend.storage.meters import UnknownMeter
from headend.storage.records import CommandInfo, Release

__all__ = ["Overrides"]

_c = COMMANDS.c
_ACTIVE = tuple(domain.ACTIVE_COMMAND_STATUSES)


class Overrides(Store):
    async def create_command(
        self,
        meter_id: str,
        action: str,
        *,
        source: str = "operator",
        reason: str | None = None,
        hold: bool = False,
    ) -> tuple[CommandInfo, tuple[str, ...]]:
        """An operator's (or start-up's) command: supersedes the meter's active command and
        queues this one, which keeps the superseded one's episode. Without `hold` it sets the
        meter's desired state to where the action leads; with it, it pins the relay there
        (a held meter takes only commands with a hold). Returns the command and the ids it
        superseded. Raises UnknownMeter, HoldConflict, ValueError (unknown action)."""
        now = self.now()
        m = METERS.c
        change = decision.override(action, source)
        async with self.db.transaction() as session:
            found = (
                await session.execute(
                    select(m.hold, m.hold_reason).where(m.meter_id == meter_id).with_for_update()
                )
            ).first()
            if found is None:
                raise UnknownMeter(meter_id)
            if found.hold and not hold:
                raise HoldConflict(
                    f"meter {meter_id} is held ({found.hold_reason}): release it first, "
                    "or move the hold with --hold"
                )
            active = await session.execute(
                select(
                    _c.command_id, _c.action, _c.status, _c.episode_started_at, _c.created_at
                ).where(_c.meter_id == meter_id, _c.status.in_(_ACTIVE))
            )
            superseded: list[str] = []
            episode: datetime | None = None
            for old in active.all():
                await supersede_command(
                    session,
                    Superseded(
                        old.command_id,
                        old.action,
                        lifecycle.go(old.status, lifecycle.SUPERSEDE),
                        change.supersede_reason,
                    ),
                    now,
                )
                superseded.append(old.command_id)
                started = old.episode_started_at or old.created_at
                episode = started if episode is None else min(episode, started)
            command = await insert_command(
                session,
                meter_id,
                action,
                source=source,
                now=now,
                reason=reason,
                episode_started_at=episode,
            )
            if hold:
                detail = f"{action}: command {command.command_id}"
                await pin(session, meter_id, reason or source, detail, now)
            else:
                await session.execute(
                    update(METERS)
                    .where(m.meter_id == meter_id)
                    .values(
                        desired_relay_state=change.desired_state, desired_at=now, updated_at=now
                    )
                )
            return command, tuple(superseded)

    async def release_hold(self, meter_id: str, reason: str) -> Release:
        """Lift the meter's hold: it goes where its newest balance says (a command when it is
        not known to be there, superseding a pending one for the other action). Raises
        UnknownMeter, HoldConflict (not held)."""
        now = self.now()
        m = METERS.c
        async with self.db.transaction() as session:
            meter = (
                await session.execute(
                    select(m.hold, m.desired_relay_state, m.desired_seq, m.confirmed_relay_state)
                    .where(m.meter_id == meter_id)
                    .with_for_update()
                )
            ).first()
            if meter is None:
                raise UnknownMeter(meter_id)
            if not meter.hold:
                raise HoldConflict(f"meter {meter_id} is not held")
            row = (
                await session.execute(
                    select(COMMANDS).where(_c.meter_id == meter_id, _c.status.in_(_ACTIVE))
                )
            ).first()
            active = None if row is None else command_info(row)
            step = decision.release(
                meter.desired_relay_state,
                meter.confirmed_relay_state,
                None if active is None else _active(active),
                reason,
            )
            command = await apply_step(
                session, meter_id, step, source="release", now=now, seq=meter.desired_seq
            )
            await unpin(session, meter_id, reason, step.detail, now)
            return Release(step.detail, command, step.superseded)


def _active(command: CommandInfo) -> ActiveCommand:
    return ActiveCommand(
        command.command_id,
        command.action,
        command.status,
        command.episode_started_at or command.created_at,
    )
