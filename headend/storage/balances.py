"""Balance events, each stored with what was done about it in the transaction that does it.

The meter's row lock is taken first, then the meter, its active command and a stored event
with the same (meter_id, event_id) are read in one SELECT; relay/decision.py decides what the
event means; then only the writes follow, as Core statements (the ORM's loads, identity map
and flushes cost several times more CPU and round trips on this, the MQTT bridge's serial
path). The read is a statement of its own after the lock: under PostgreSQL's READ COMMITTED a
locking SELECT that waited re-reads only the locked row, and would show the command rows as
they were before the wait (issue 9). A kill -9 at any point leaves the event either applied
completely (balance, desired state, superseded and new command) or not stored at all, so
billing's redelivery applies it then."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from headend import domain
from headend.balance_event import BalanceEvent
from headend.prepaid.quiet_hours import QuietHours
from headend.relay import decision
from headend.relay.decision import Decision, StoredEvent
from headend.storage import unit
from headend.storage.alarms import clear_standing, insert_alarm
from headend.storage.balance_batch import apply_batch
from headend.storage.balance_rows import (
    METER_COLUMNS,
    STORED_FIELDS,
    BalancePolicy,
    command_values,
    event_values,
    judge,
    meter_values,
)
from headend.storage.commands import supersede_command
from headend.storage.core import COMMANDS, EVENTS, METERS, Clock, Store
from headend.storage.db import Database
from headend.storage.meters import UnknownMeter
from headend.storage.models import OperatorAction
from headend.storage.records import AlarmInfo, BalanceOutcome, CommandInfo

__all__ = ["Balances"]

RESET_SEQ = "reset_seq"
"""operator_actions.action of `headend meters reset-seq`."""

_LOCK_METER = (
    select(METERS.c.meter_id)
    .where(METERS.c.meter_id == bindparam("meter_id", type_=METERS.c.meter_id.type))
    .with_for_update()
)
"""The meter's row lock, which every writer of its prepaid state and commands takes first;
no row when the meter is unknown."""


def _balance_read() -> Any:
    """The meter, its active command (c_ columns) and a stored event with the same
    (meter_id, event_id) (e_ columns), in one statement, run once the meter is locked."""
    m, c, e = METERS.c, COMMANDS.c, EVENTS.c
    active = and_(c.meter_id == m.meter_id, c.status.in_(tuple(domain.ACTIVE_COMMAND_STATUSES)))
    same_id = and_(
        e.meter_id == m.meter_id, e.event_id == bindparam("event_id", type_=e.event_id.type)
    )
    return (
        select(
            *METER_COLUMNS,
            e.id.label("e_id"),
            *[e[name].label(f"e_{name}") for name in STORED_FIELDS],
        )
        .select_from(METERS.outerjoin(COMMANDS, active).outerjoin(EVENTS, same_id))
        .where(m.meter_id == bindparam("meter_id", type_=m.meter_id.type))
    )


_BALANCE_READ = _balance_read()


class Balances(Store):
    """`warning_threshold` is the configured low-balance threshold (notifications section);
    a balance event may override it."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        warning_threshold: Decimal,
        quiet_hours: QuietHours | None = None,
        limit_on_arrears: bool = False,
    ) -> None:
        super().__init__(db, clock)
        self.warning_threshold = warning_threshold
        self.quiet_hours = quiet_hours or QuietHours()
        self.limit_on_arrears = limit_on_arrears

    def _policy(self, now: datetime) -> BalancePolicy:
        """The prepaid policies for a decision made now: when a disconnect for arrears may
        run (None: at once), and whether arrears limit the load instead."""
        at = self.quiet_hours.disconnect_at(now) if self.quiet_hours.active else None
        return BalancePolicy(at if at is not None and at > now else None, self.limit_on_arrears)

    async def lock_meters(self, meter_ids: Iterable[str]) -> set[str]:
        """Take the row locks of `meter_ids` in one statement, in meter_id order (two
        transactions locking overlapping sets in a stable order cannot deadlock), inside the
        caller's transaction (a batch of balance events: relay/intake.py); returns the ids
        that are in the inventory. Pass the answer to `apply_balance_event` as `known`."""
        wanted = sorted(set(meter_ids))
        if not wanted:
            return set()
        m = METERS.c
        async with self.db.transaction() as session:
            rows = await session.scalars(
                select(m.meter_id)
                .where(m.meter_id.in_(wanted))
                .order_by(m.meter_id)
                .with_for_update()
            )
            return set(rows)

    async def apply_balance_batch(
        self, events: Sequence[BalanceEvent], raws: Sequence[str | None]
    ) -> list[BalanceOutcome]:
        """Apply events of distinct meters that `lock_meters` found in this transaction, with
        a few statements for all of them (storage/balance_batch.py); outcomes in order."""
        async with self.db.transaction() as session:
            now = self.now()
            return await apply_batch(
                session, events, raws, now, self.warning_threshold, self._policy(now)
            )

    async def apply_balance_event(
        self, event: BalanceEvent, *, raw: str | None = None, known: set[str] | None = None
    ) -> BalanceOutcome:
        """Store a billing event (`raw`: its payload as received) and act on it, in one
        transaction, as relay/decision.py decides. An event about a meter not in the
        inventory is stored as it arrived, rejected, with a bad_event alarm in the same
        transaction (no lookup first). A (meter_id, event_id) seen before is a duplicate
        (nothing stored again) or, with other content, a conflicting event (stored without
        the pair, alarmed, not applied). `known`: the meters `lock_meters` locked in this
        transaction (the meter's own lock is then not taken again)."""
        try:
            return await self._apply(event, raw, known)
        except IntegrityError:
            if unit.current_unit() is not None:
                raise  # the caller's transaction is spoilt: it must roll back (and retry)
            # A concurrent transaction stored the same (meter_id, event_id) first (only
            # possible for a meter not in the inventory: the others are locked).
            e = EVENTS.c
            async with self.db.session() as session:
                existing = (
                    await session.execute(
                        select(e.id, e.outcome).where(
                            e.meter_id == event.meter_id, e.event_id == event.event_id
                        )
                    )
                ).first()
            if existing is None:
                raise
            return BalanceOutcome(decision.duplicate(existing.outcome), existing.id)

    async def _apply(
        self, event: BalanceEvent, raw: str | None, known: set[str] | None
    ) -> BalanceOutcome:
        now = self.now()
        params = {"meter_id": event.meter_id, "event_id": event.event_id}
        async with self.db.transaction() as session:
            if known is None:
                locked = await session.scalar(_LOCK_METER, {"meter_id": event.meter_id}) is not None
            else:
                locked = event.meter_id in known
            if not locked:
                judged = decision.decide(None, event)
                row_id, alarm = await _store_unapplied(
                    session,
                    now,
                    raw=raw,
                    outcome=judged.outcome,
                    detail=judged.detail,
                    meter_id=event.meter_id,
                    event_id=event.event_id,
                    seq=event.seq,
                    alarm_type=domain.BAD_EVENT,
                )
                return BalanceOutcome(judged, row_id, alarm=alarm)
            row = (await session.execute(_BALANCE_READ, params)).one()
            same_id = None
            if row.e_id is not None:
                if row.e_outcome in decision.IDENTITY_OUTCOMES:
                    same_id = StoredEvent(*(getattr(row, f"e_{name}") for name in STORED_FIELDS))
                else:  # never judged: this copy is
                    await session.execute(
                        update(EVENTS).where(EVENTS.c.id == row.e_id).values(event_id=None)
                    )
            judged, active = judge(row, same_id, event, self.warning_threshold, self._policy(now))
            if judged.outcome == decision.DUPLICATE:
                return BalanceOutcome(judged, row.e_id)
            active = await _apply_decision(session, now, event, judged, active)
            command_id = active.command_id if judged.command and active else None
            row_id = await _insert_event(
                session, **event_values(event, judged, raw, now, command_id)
            )
            alarm = None
            if judged.alarm is not None:
                alarm = await insert_alarm(
                    session, judged.alarm, event.meter_id, judged.detail, now
                )
            return BalanceOutcome(judged, row_id, command=active, alarm=alarm)

    async def record_balance_event(
        self,
        *,
        raw: str | None,
        outcome: str = decision.REJECTED,
        detail: str,
        meter_id: str | None = None,
        event_id: str | None = None,
        seq: int | None = None,
        alarm_type: str | None = domain.BAD_EVENT,
    ) -> tuple[int, AlarmInfo | None]:
        """Store an event that cannot be applied (malformed payload, wrong topic...) as it
        arrived, with what was done about it, and raise an alarm, in one transaction.
        Returns the event row id and the alarm (None when alarm_type is None)."""
        now = self.now()
        async with self.db.transaction() as session:
            return await _store_unapplied(
                session,
                now,
                raw=raw,
                outcome=outcome,
                detail=detail,
                meter_id=meter_id,
                event_id=event_id,
                seq=seq,
                alarm_type=alarm_type,
            )

    async def reset_balance_seq(self, meter_id: str, reason: str) -> int | None:
        """An operator accepts a new sequence from billing for the meter (`headend meters
        reset-seq`): its last applied seq is forgotten, so the next event applies whatever
        its seq, the action is recorded with its reason, and the meter's standing
        stale_event alarms are cleared. Under the meter's row lock, like a balance event, so
        a running daemon's intake sees either the old or the new sequence, never half.
        Returns the seq forgotten. Raises UnknownMeter."""
        now = self.now()
        m = METERS.c
        async with self.db.transaction() as session:
            if await session.scalar(_LOCK_METER, {"meter_id": meter_id}) is None:
                raise UnknownMeter(meter_id)
            previous = await session.scalar(select(m.balance_seq).where(m.meter_id == meter_id))
            await session.execute(
                update(METERS)
                .where(m.meter_id == meter_id)
                .values(balance_seq=None, updated_at=now)
            )
            await session.execute(
                insert(OperatorAction).values(
                    meter_id=meter_id,
                    action=RESET_SEQ,
                    reason=reason,
                    detail=f"balance_seq {previous} forgotten: the next event applies",
                    ts=now,
                )
            )
            await clear_standing(session, (domain.STALE_EVENT,), meter_id, now)
            return None if previous is None else int(previous)

    async def balance_events(self, meter_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """A meter's recent balance events, newest first, with what was done about each."""
        e = EVENTS.c
        stmt = (
            select(
                e.id,
                e.event_id,
                e.seq,
                e.balance,
                e.currency,
                e.ts,
                e.received_at,
                e.outcome,
                e.detail,
                e.command_id,
                e.low_balance,
                e.raw,
            )
            .where(e.meter_id == meter_id)
            .order_by(e.id.desc())
            .limit(limit)
        )
        async with self.db.session() as session:
            return [dict(r._mapping) for r in await session.execute(stmt)]


async def _apply_decision(
    session: AsyncSession,
    now: datetime,
    event: BalanceEvent,
    judged: Decision,
    active: CommandInfo | None,
) -> CommandInfo | None:
    """Write what `judged` says; returns the meter's active command afterwards."""
    for old in judged.superseded:
        await supersede_command(session, old, now)
        if active is not None and active.command_id == old.command_id:
            active = None
    if judged.command is not None:
        values = command_values(event, judged, now)
        await session.execute(insert(COMMANDS).values(values))
        active = CommandInfo(**values)
    if judged.meter is not None:
        await session.execute(
            update(METERS)
            .where(METERS.c.meter_id == event.meter_id)
            .values(meter_values(event, judged, now))
        )
    return active


async def _insert_event(session: AsyncSession, **columns: Any) -> int:
    result = await session.execute(insert(EVENTS).values(columns).returning(EVENTS.c.id))
    return int(result.scalar_one())


async def _store_unapplied(
    session: AsyncSession,
    now: datetime,
    *,
    raw: str | None,
    outcome: str,
    detail: str,
    meter_id: str | None,
    event_id: str | None,
    seq: int | None,
    alarm_type: str | None,
) -> tuple[int, AlarmInfo | None]:
    """An event stored as it arrived, not applied, with an alarm of `alarm_type` (if any).
    Its event_id is dropped when another event of the meter has it: the raw record is kept,
    the pair belongs to the other event."""
    if event_id is not None and meter_id is not None:
        e = EVENTS.c
        taken = await session.scalar(
            select(e.id).where(e.meter_id == meter_id, e.event_id == event_id)
        )
        if taken is not None:
            event_id = None
    row_id = await _insert_event(
        session,
        event_id=event_id,
        meter_id=meter_id,
        seq=seq,
        raw=raw,
        received_at=now,
        outcome=outcome,
        detail=detail,
        low_balance=False,
    )
    alarm = None
    if alarm_type is not None:
        alarm = await insert_alarm(session, alarm_type, meter_id, detail, now)
    return row_id, alarm
