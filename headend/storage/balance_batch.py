"""Many balance events applied with a few statements (group commit, issue 10).

`Balances.apply_balance_event` costs four or five statements per event, each a round trip (on
SQLite a few hand-offs to aiosqlite's thread): at a billing run's ten thousand events that is
the bottleneck. Here the events of a batch, one per meter, are judged by the same pure
relay/decision.py from two reads for all of them (the meters with their active commands; the
events stored before under the same (meter_id, event_id) pairs), and their writes go as one
executemany per kind: superseded commands, new commands, meter rows, event rows. The caller
holds the meters' row locks (`Balances.lock_meters`), and runs anything this does not take
(a meter's second event in the batch, an unknown meter) through the one-event path afterwards,
in the same transaction, so each meter's events are still judged in delivery order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from headend import domain
from headend.balance_event import BalanceEvent
from headend.relay import decision
from headend.relay.decision import StoredEvent
from headend.storage.alarms import insert_alarm
from headend.storage.balance_rows import (
    METER_COLUMNS,
    STORED_FIELDS,
    BalancePolicy,
    command_values,
    event_values,
    judge,
    meter_values,
)
from headend.storage.core import COMMANDS, EVENTS, METERS
from headend.storage.records import BalanceOutcome, CommandInfo

__all__ = ["apply_batch"]

_m, _c, _e = METERS.c, COMMANDS.c, EVENTS.c

_SUPERSEDE = (
    update(COMMANDS)
    .where(_c.command_id == bindparam("b_command_id"))
    .values(
        status=bindparam("b_status"),
        updated_at=bindparam("b_now"),
        last_error=bindparam("b_reason"),
    )
)


def _meter_update(columns: tuple[str, ...]) -> Any:
    """UPDATE of these columns for many meters (executemany, b_ parameters)."""
    return (
        update(METERS)
        .where(_m.meter_id == bindparam("b_meter_id"))
        .values({name: bindparam(f"b_{name}") for name in columns})
    )


async def apply_batch(
    session: AsyncSession,
    events: Sequence[BalanceEvent],
    raws: Sequence[str | None],
    now: datetime,
    default_threshold: Decimal,
    policy: BalancePolicy = BalancePolicy(),
) -> list[BalanceOutcome]:
    """Apply `events` (distinct, locked, known meters) as relay/decision.py decides, in
    `session`'s transaction; the outcomes in the order given."""
    ids = [event.meter_id for event in events]
    active = _c.status.in_(tuple(domain.ACTIVE_COMMAND_STATUSES))
    meters = {
        row.meter_id: row
        for row in await session.execute(
            select(_m.meter_id, *METER_COLUMNS)
            .select_from(METERS.outerjoin(COMMANDS, and_(_c.meter_id == _m.meter_id, active)))
            .where(_m.meter_id.in_(ids))
        )
    }
    pairs = [(event.meter_id, event.event_id) for event in events]
    stored = {
        (row.meter_id, row.event_id): row
        for row in await session.execute(
            select(_e.id, _e.meter_id, _e.event_id, *[_e[name] for name in STORED_FIELDS]).where(
                tuple_(_e.meter_id, _e.event_id).in_(pairs)
            )
        )
    }
    outcomes: list[BalanceOutcome] = []
    supersede: list[dict[str, Any]] = []
    commands: list[dict[str, Any]] = []
    meter_rows: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    event_rows: list[dict[str, Any]] = []
    for event, raw in zip(events, raws, strict=True):
        row = meters[event.meter_id]
        earlier = stored.get((event.meter_id, event.event_id))
        same_id = None
        if earlier is not None:
            if earlier.outcome in decision.IDENTITY_OUTCOMES:
                same_id = StoredEvent(*(getattr(earlier, name) for name in STORED_FIELDS))
            else:  # never judged: this copy is
                await session.execute(
                    update(EVENTS).where(_e.id == earlier.id).values(event_id=None)
                )
        judged, current = judge(row, same_id, event, default_threshold, policy)
        if judged.outcome == decision.DUPLICATE:
            outcomes.append(BalanceOutcome(judged, earlier.id if earlier is not None else None))
            continue
        for old in judged.superseded:
            supersede.append(
                {
                    "b_command_id": old.command_id,
                    "b_status": old.status,
                    "b_now": now,
                    "b_reason": old.reason,
                }
            )
            if current is not None and current.command_id == old.command_id:
                current = None
        created = None
        if judged.command is not None:
            values = command_values(event, judged, now)
            commands.append(values)
            created = current = CommandInfo(**values)
        if judged.meter is not None:
            changes = meter_values(event, judged, now)
            columns = tuple(changes)
            values = {f"b_{name}": value for name, value in changes.items()}
            values["b_meter_id"] = event.meter_id
            meter_rows.setdefault(columns, []).append(values)
        command_id = created.command_id if created is not None else None
        event_rows.append(event_values(event, judged, raw, now, command_id))
        alarm = None
        if judged.alarm is not None:
            alarm = await insert_alarm(session, judged.alarm, event.meter_id, judged.detail, now)
        outcomes.append(BalanceOutcome(judged, None, command=created or current, alarm=alarm))
    # Superseded before the new ones (one active command per meter), commands before the
    # events that name them.
    if supersede:
        await session.execute(_SUPERSEDE, supersede)
    if commands:
        await session.execute(insert(COMMANDS), commands)
    for columns, rows in meter_rows.items():
        await session.execute(_meter_update(columns), rows)
    if event_rows:
        await session.execute(insert(EVENTS), event_rows)
    return outcomes
