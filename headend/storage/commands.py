"""Relay commands: created, found when due, moved along the lifecycle, confirmed, escalated.

Every status change follows relay/lifecycle.py. Most are a single UPDATE on a row not read
first (the controller's path): its WHERE admits only the statuses the event may leave and its
SET is the table's CASE over them, so a command confirmed or superseded meanwhile is left
alone and the caller is told (None). `new_command_values` is the one place a command row is
built; the balance path inserts it inside its own transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from headend import domain
from headend.relay import decision, lifecycle
from headend.storage import models
from headend.storage.alarms import clear_standing, insert_alarm
from headend.storage.core import ALARMS, COMMANDS, METERS, Store, dialect_insert
from headend.storage.holds import HELD_ACTION
from headend.storage.meters import UnknownMeter
from headend.storage.records import AlarmInfo, CommandInfo, RelayStateInfo
from headend.storage.relay_states import check_relay_state, write_relay_state

__all__ = [
    "Commands",
    "Confirmation",
    "apply_step",
    "command_info",
    "insert_command",
    "new_command_values",
    "supersede_command",
]

_UNSET: Any = object()
_ACTIVE = tuple(domain.ACTIVE_COMMAND_STATUSES)

_c = COMMANDS.c
_BUSY = select(_c.meter_id).where(_c.status.in_(_ACTIVE))
"""Meters with an active command."""
_ACTIVE_ROW = _c.status.in_(_ACTIVE)
"""The predicate of the one-active-command-per-meter index (models.Command)."""
# Per lifecycle event: the statuses it may leave, and the status each one takes.
_LEAVES = {event: _c.status.in_(tuple(lifecycle.moves(event))) for event in lifecycle.EVENTS}
_TAKES = {event: case(dict(lifecycle.moves(event)), value=_c.status) for event in lifecycle.EVENTS}


def command_info(row: Any) -> CommandInfo:
    """A CommandInfo from a Core row of every commands column (names match the fields)."""
    return CommandInfo(**row._mapping)


def new_command_values(
    meter_id: str,
    action: str,
    *,
    source: str,
    now: datetime,
    event_id: str | None = None,
    seq: int | None = None,
    reason: str | None = None,
    episode_started_at: datetime | None = None,
    not_before: datetime | None = None,
) -> dict[str, Any]:
    """A new command's columns (every one, so CommandInfo(**values) describes it);
    `not_before`: a disconnect put off (grace, quiet hours) is first due then."""
    if action not in domain.ACTIONS:
        raise ValueError(f"unknown relay action {action!r}")
    if source not in models.COMMAND_SOURCES:
        raise ValueError(f"unknown command source {source!r}")
    return {
        "command_id": str(uuid.uuid4()),
        "meter_id": meter_id,
        "action": action,
        "status": lifecycle.INITIAL,
        "attempt": 0,
        "source": source,
        "event_id": event_id,
        "seq": seq,
        "reason": reason,
        "created_at": now,
        "updated_at": now,
        "next_attempt_at": not_before or now,
        "overdue_alarm_raised": False,
        "last_error": None,
        "episode_started_at": episode_started_at or now,
    }


async def insert_command(
    session: AsyncSession,
    meter_id: str,
    action: str,
    *,
    source: str,
    now: datetime,
    event_id: str | None = None,
    seq: int | None = None,
    reason: str | None = None,
    episode_started_at: datetime | None = None,
    not_before: datetime | None = None,
) -> CommandInfo:
    """Queue a new command in `session`'s transaction (the caller holds the meter's lock)."""
    values = new_command_values(
        meter_id,
        action,
        source=source,
        now=now,
        event_id=event_id,
        seq=seq,
        reason=reason,
        episode_started_at=episode_started_at,
        not_before=not_before,
    )
    await session.execute(insert(COMMANDS).values(values))
    return CommandInfo(**values)


async def apply_step(
    session: AsyncSession,
    meter_id: str,
    step: decision.Step,
    *,
    source: str,
    now: datetime,
    seq: int | None = None,
) -> CommandInfo | None:
    """Write a step towards a desired state (relay/decision.py `converge`): give up the
    commands it supersedes and queue its command, if any, in `session`'s transaction (the
    caller holds the meter's lock). Returns the command queued."""
    for old in step.superseded:
        await supersede_command(session, old, now)
    if step.command is None:
        return None
    return await insert_command(
        session,
        meter_id,
        step.command.action,
        source=source,
        now=now,
        seq=seq,
        reason=step.command.reason,
        episode_started_at=step.command.episode_started_at,
        not_before=step.command.not_before,
    )


async def supersede_command(session: AsyncSession, old: decision.Superseded, now: datetime) -> None:
    """Give up an active command as a decision said (its status and why)."""
    await session.execute(
        update(COMMANDS)
        .where(COMMANDS.c.command_id == old.command_id)
        .values(status=old.status, updated_at=now, last_error=old.reason)
    )


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What `confirm_command` did: the command as confirmed (None when it was no longer
    active), the meter's confirmed relay state and balance as they were before this
    read-back, how many alarms were cleared, and whether the meter is held."""

    command: CommandInfo | None
    previous_state: str | None
    last_balance: Decimal | None
    last_balance_currency: str | None
    alarms_cleared: int = 0
    hold: bool = False  # the meter is held (the retained relay message says so)


class Commands(Store):
    """Commands as the controller moves them (operators' commands: storage/overrides.py)."""

    async def reconcile_commands(
        self,
        *,
        source: str = "startup",
        on_created: Callable[[CommandInfo], None] | None = None,
    ) -> list[CommandInfo]:
        """Queue a command for every meter whose desired relay state is not what it last
        read back and that has no active command (run at start-up).

        Start-up is when billing's unacknowledged events are redelivered, so each meter this
        finds is settled in a transaction of its own under its row lock, like a balance
        event, from what it reads once it holds the lock: an event or an operator command
        committed meanwhile is seen, not raced into the one-active-command index (issue 9).
        `on_created` runs in each new command's transaction (its 'queued' message commits
        with it: storage/unit.py)."""
        m = METERS.c
        async with self.db.session() as session:
            meters = await session.execute(
                select(m.meter_id, m.desired_relay_state, m.confirmed_relay_state)
                .where(
                    m.desired_relay_state.is_not(None),
                    m.meter_id.not_in(_BUSY),
                    m.hold.is_(False),  # a held meter stays where its hold pins it
                )
                .order_by(m.meter_id)
            )
            candidates = [
                meter.meter_id
                for meter in meters.all()
                if decision.reconcile(meter.desired_relay_state, meter.confirmed_relay_state)
            ]
        created = []
        for meter_id in candidates:
            command = await self._reconcile_meter(meter_id, source, on_created)
            if command is not None:
                created.append(command)
        return created

    async def _reconcile_meter(
        self, meter_id: str, source: str, on_created: Callable[[CommandInfo], None] | None
    ) -> CommandInfo | None:
        now = self.now()
        m = METERS.c
        async with self.db.transaction() as session:
            locked = await session.scalar(
                select(m.meter_id).where(m.meter_id == meter_id).with_for_update()
            )
            if locked is None:
                return None
            meter = (
                await session.execute(
                    select(
                        m.desired_relay_state,
                        m.desired_seq,
                        m.confirmed_relay_state,
                        m.hold,
                        m.meter_id.in_(_BUSY).label("busy"),
                    ).where(m.meter_id == meter_id)
                )
            ).one()
            needed = decision.reconcile(meter.desired_relay_state, meter.confirmed_relay_state)
            if meter.busy or meter.hold or needed is None:
                return None
            values = new_command_values(
                meter_id,
                needed.action,
                source=source,
                now=now,
                seq=meter.desired_seq,
                reason=needed.reason,
            )
            # The index's own guard as well, for a writer that did not take the meter lock.
            inserted = await session.scalar(
                dialect_insert(session, COMMANDS)
                .values(values)
                .on_conflict_do_nothing(index_elements=[_c.meter_id], index_where=_ACTIVE_ROW)
                .returning(_c.command_id)
            )
            if inserted is None:
                return None
            command = CommandInfo(**values)
            if on_created is not None:
                on_created(command)
            return command

    async def get_command(self, command_id: str) -> CommandInfo | None:
        async with self.db.session() as session:
            row = (
                await session.execute(select(COMMANDS).where(_c.command_id == command_id))
            ).first()
            return None if row is None else command_info(row)

    async def command_and_desired(
        self, command_id: str
    ) -> tuple[CommandInfo | None, bool, str | None]:
        """The command, whether its meter is in the inventory and the state the meter should
        be in (what its hold pins, else what its newest balance asks), in one read: what is
        checked right before a relay is operated."""
        stmt = (
            select(
                COMMANDS,
                METERS.c.meter_id.label("m_meter_id"),
                METERS.c.desired_relay_state.label("m_desired"),
                HELD_ACTION.label("m_held_action"),
            )
            .select_from(COMMANDS.outerjoin(METERS, METERS.c.meter_id == _c.meter_id))
            .where(_c.command_id == command_id)
        )
        async with self.db.reading() as session:  # in a group commit: its transaction
            row = (await session.execute(stmt)).first()
        if row is None:
            return None, False, None
        values = dict(row._mapping)
        meter_found = values.pop("m_meter_id") is not None
        wanted = decision.target(values.pop("m_desired"), values.pop("m_held_action"))
        return CommandInfo(**values), meter_found, wanted

    async def pending_commands(
        self, *, due_before: datetime | None = None, meter_id: str | None = None
    ) -> list[CommandInfo]:
        """Active commands (queued, sent, failed, escalated), oldest first; with due_before,
        only those whose next attempt is due by then."""
        stmt = select(COMMANDS).where(_c.status.in_(_ACTIVE))
        if due_before is not None:
            stmt = stmt.where(or_(_c.next_attempt_at.is_(None), _c.next_attempt_at <= due_before))
        if meter_id is not None:
            stmt = stmt.where(_c.meter_id == meter_id)
        stmt = stmt.order_by(_c.created_at, _c.command_id)
        async with self.db.session() as session:
            return [command_info(r) for r in await session.execute(stmt)]

    async def due_meter_ids(self, due_before: datetime) -> list[str]:
        """Meters with an active command due by `due_before`, oldest command first (the
        periodic scan: one column, no command rows)."""
        stmt = (
            select(_c.meter_id)
            .where(
                _c.status.in_(_ACTIVE),
                or_(_c.next_attempt_at.is_(None), _c.next_attempt_at <= due_before),
            )
            .order_by(_c.created_at, _c.command_id)
        )
        async with self.db.session() as session:
            return list(await session.scalars(stmt))

    async def update_command(
        self,
        command_id: str,
        event: lifecycle.Event,
        *,
        attempt: int | None = None,
        next_attempt_at: datetime | None = _UNSET,
        last_error: str | None = _UNSET,
    ) -> CommandInfo | None:
        """Move a command along the lifecycle on `event` (and set the other columns given).
        Returns None (and changes nothing) when the command cannot take that event any more
        (confirmed or superseded meanwhile): the caller must stop."""
        lifecycle.moves(event)  # IllegalTransition for an unknown event
        values: dict[str, Any] = {"updated_at": self.now(), "status": _TAKES[event]}
        if attempt is not None:
            values["attempt"] = attempt
        if next_attempt_at is not _UNSET:
            values["next_attempt_at"] = next_attempt_at
        if last_error is not _UNSET:
            values["last_error"] = last_error
        stmt = (
            update(COMMANDS)
            .where(_c.command_id == command_id, _LEAVES[event])
            .values(values)
            .returning(*COMMANDS.c)
        )
        async with self.db.transaction() as session:
            row = (await session.execute(stmt)).first()
            return None if row is None else command_info(row)

    async def confirm_command(
        self,
        command_id: str,
        *,
        state: str,
        output_state: bool | None,
        control_state: str | None,
        reason: str | None = None,
        ts: datetime | None = None,
        clear_alarm_types: Iterable[str] = (),
    ) -> Confirmation | None:
        """A command's read-back proved it done: record the relay state and confirm the
        command, and clear the meter's standing alarms of `clear_alarm_types` when the command
        was still active, in one transaction. The relay state is recorded even if the command
        was superseded meanwhile (it is what the meter says). Returns what the meter said
        before (None when the command does not exist). Raises UnknownMeter."""
        check_relay_state(state)
        now = self.now()
        types = tuple(clear_alarm_types)
        m, a = METERS.c, ALARMS.c
        standing = (
            select(a.id)
            .where(a.meter_id == m.meter_id, a.type.in_(types), a.cleared.is_(False))
            .exists()
            if types
            else literal(False)
        )
        async with self.db.transaction() as session:
            # The command's meter, what it said before and whether an alarm to clear stands,
            # in one statement (most confirmations have no alarm to clear).
            found = (
                await session.execute(
                    select(
                        m.meter_id,
                        m.confirmed_relay_state,
                        m.confirmed_at,
                        m.awaiting_alarm_raised,
                        m.last_balance,
                        m.last_balance_currency,
                        m.hold,
                        standing.label("standing"),
                    )
                    .select_from(COMMANDS.join(METERS, m.meter_id == _c.meter_id))
                    .where(_c.command_id == command_id)
                    .with_for_update()
                )
            ).first()
            if found is None:
                meter_id = await session.scalar(
                    select(_c.meter_id).where(_c.command_id == command_id)
                )
                if meter_id is None:
                    return None
                raise UnknownMeter(meter_id)
            readback = RelayStateInfo(
                found.meter_id, state, output_state, control_state, ts or now, reason, command_id
            )
            await write_relay_state(
                session,
                readback,
                found.confirmed_at,
                now,
                awaiting_alarm_raised=found.awaiting_alarm_raised,
            )
            row = (
                await session.execute(
                    update(COMMANDS)
                    .where(_c.command_id == command_id, _LEAVES[lifecycle.CONFIRM])
                    .values(
                        status=_TAKES[lifecycle.CONFIRM],
                        updated_at=now,
                        next_attempt_at=None,
                        last_error=None,
                    )
                    .returning(*COMMANDS.c)
                )
            ).first()
            cleared = 0
            if row is not None and found.standing:
                cleared = await clear_standing(session, types, found.meter_id, now)
            return Confirmation(
                command=None if row is None else command_info(row),
                previous_state=found.confirmed_relay_state,
                last_balance=found.last_balance,
                last_balance_currency=found.last_balance_currency,
                alarms_cleared=cleared,
                hold=found.hold,
            )

    async def overdue_commands(self, started_before: datetime) -> list[CommandInfo]:
        """Active commands whose episode started before `started_before` (a command that
        superseded another counts from the first of them) with no overdue alarm yet."""
        started = func.coalesce(_c.episode_started_at, _c.created_at)
        stmt = (
            select(COMMANDS)
            .where(
                _c.status.in_(_ACTIVE),
                started < started_before,
                _c.overdue_alarm_raised.is_(False),
            )
            .order_by(started)
        )
        async with self.db.session() as session:
            return [command_info(r) for r in await session.execute(stmt)]

    async def escalate_command(
        self, command_id: str, detail: str, *, alarm_type: str = domain.RELAY_COMMAND_OVERDUE
    ) -> tuple[CommandInfo, AlarmInfo] | None:
        """Mark an active command escalated and raise its overdue alarm, once (retries go
        on). None when it is no longer active or was escalated before."""
        now = self.now()
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(_c.status, _c.meter_id, _c.overdue_alarm_raised)
                    .where(_c.command_id == command_id)
                    .with_for_update()
                )
            ).first()
            if (
                row is None
                or row.status not in lifecycle.moves(lifecycle.ESCALATE)
                or row.overdue_alarm_raised
            ):
                return None
            escalated = (
                await session.execute(
                    update(COMMANDS)
                    .where(_c.command_id == command_id)
                    .values(
                        status=lifecycle.go(row.status, lifecycle.ESCALATE),
                        overdue_alarm_raised=True,
                        updated_at=now,
                    )
                    .returning(*COMMANDS.c)
                )
            ).one()
            alarm = await insert_alarm(session, alarm_type, row.meter_id, detail, now)
            return command_info(escalated), alarm
