"""The storage API the daemon, the MQTT bridge and the relay controller call.

Every method is one transaction: it either happens completely or not at all, so a kill -9 at
any point leaves the database consistent. What must happen together happens in one method
(a balance event, the desired state it sets and the command it creates; a confirmed command
and the relay state that confirmed it)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from headend import domain
from headend.domain import ACTIVE_COMMAND_STATUSES
from headend.relay import rules
from headend.storage import models
from headend.storage.db import Database
from headend.storage.models import (
    Alarm,
    BalanceEvent,
    Command,
    InvocationCounter,
    Meter,
    ProfileEntry,
    Reading,
    RelayState,
)
from headend.storage.records import (
    AlarmInfo,
    BalanceEventIn,
    BalanceOutcome,
    CommandInfo,
    FleetSummary,
    MeterRow,
    ProfileRow,
    ReadingRow,
    RelayStateInfo,
    json_safe,
)
from headend.storage.types import UtcDateTime, to_utc

__all__ = [
    "IC_MAX",
    "Confirmation",
    "DbInvocationCounterStore",
    "InvocationCounterExhausted",
    "Repository",
    "UnknownMeter",
]

IC_MAX = 0xFFFFFFFF  # invocation counters are 32-bit; past this the key must be changed
_BATCH = 5000  # parameter sets per executemany (SQLAlchemy pages them into multi-row INSERTs)
_MAX_EXACT_INT = 2**53

_UNSET: Any = object()


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


# Core tables for the relay path's hot statements: a Core statement is compiled once and
# cached, and its rows skip the ORM's identity map and unit of work (several times cheaper
# per call than Session.get / flush on the same rows).
_COMMANDS = _table(Command)
_METERS = _table(Meter)
_ALARMS = _table(Alarm)
_RELAY_STATES = _table(RelayState)
_ACTIVE = tuple(ACTIVE_COMMAND_STATUSES)


_EVENTS = _table(BalanceEvent)
_COMMAND_FIELDS = tuple(col.name for col in _COMMANDS.c)


def _balance_read() -> Any:
    """The meter, its active command (c_ columns) and a stored event with the same event_id
    (dup_ columns), in one statement; no row when the meter is unknown."""
    m, c, e = _METERS.c, _COMMANDS.c, _EVENTS.c
    event_id = bindparam("event_id", type_=e.event_id.type)
    dup_id = select(e.id).where(e.event_id == event_id).scalar_subquery()
    dup_outcome = select(e.outcome).where(e.event_id == event_id).scalar_subquery()
    return (
        select(
            m.meter_id.label("m_meter_id"),
            m.balance_seq.label("m_balance_seq"),
            m.last_balance.label("m_last_balance"),
            m.desired_relay_state.label("m_desired_relay_state"),
            m.confirmed_relay_state.label("m_confirmed_relay_state"),
            *[col.label(f"c_{col.name}") for col in _COMMANDS.c],
            dup_id.label("dup_id"),
            dup_outcome.label("dup_outcome"),
        )
        .select_from(
            _METERS.outerjoin(_COMMANDS, and_(c.meter_id == m.meter_id, c.status.in_(_ACTIVE)))
        )
        .where(m.meter_id == bindparam("meter_id", type_=m.meter_id.type))
        .with_for_update(of=_METERS)
    )


_BALANCE_READ = _balance_read()


def _command_info(row: Any) -> CommandInfo:
    """A CommandInfo from a Core row of every commands column (names match the fields)."""
    return CommandInfo(**row._mapping)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What `confirm_command` did: the command as confirmed (None when it was no longer
    active), the meter's confirmed relay state and balance as they were before this
    read-back, and how many alarms were cleared."""

    command: CommandInfo | None
    previous_state: str | None
    last_balance: Decimal | None
    last_balance_currency: str | None
    alarms_cleared: int = 0


class UnknownMeter(LookupError):
    """The meter id is not in the inventory."""


class InvocationCounterExhausted(Exception):
    """A meter's invocation counter would pass 2**32-1: its key must be renewed."""


def _now() -> datetime:
    return datetime.now(UTC)


def _split_value(value: Any) -> tuple[float | None, str | None]:
    """A reading value as (number, JSON text): numbers in the numeric column, anything else
    (or what a double cannot hold exactly) as JSON text."""
    if isinstance(value, bool) or value is None:
        return None, json.dumps(value)
    if isinstance(value, int):
        if abs(value) <= _MAX_EXACT_INT:
            return float(value), None
        return None, json.dumps(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value, None
        return None, json.dumps(value)
    if isinstance(value, Decimal):
        return (float(value), None) if value.is_finite() else (None, json.dumps(str(value)))
    return None, json.dumps(json_safe(value))


def _join_value(number: float | None, text: str | None) -> Any:
    if number is not None:
        return number
    return None if text is None else json.loads(text)


def _insert(session: AsyncSession, table: Any) -> Any:
    """An INSERT that skips rows already present (ON CONFLICT DO NOTHING) on either dialect."""
    name = session.bind.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported dialect {name}")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class DbInvocationCounterStore:
    """drivers.session.InvocationCounterStore backed by the database: a counter handed out
    once is never handed out again, across restarts and head-end processes."""

    repository: Repository
    meter_id: str
    key_id: str = "default"
    at_least: int = 1

    async def reserve(self, count: int) -> int:
        return await self.repository.reserve_invocation_counter(
            self.meter_id, count, key_id=self.key_id, at_least=self.at_least
        )


class Repository:
    """Async storage API over one Database.

    `warning_threshold` is the configured low-balance threshold (notifications section); a
    balance event may override it. `clock` is injectable for tests."""

    def __init__(
        self,
        db: Database,
        *,
        warning_threshold: Decimal = Decimal("20.00"),
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.db = db
        self.warning_threshold = warning_threshold
        self._clock = clock

    def now(self) -> datetime:
        return to_utc(self._clock())

    # -- meters ---------------------------------------------------------------------------

    async def get_meter(self, meter_id: str) -> MeterRow | None:
        async with self.db.session() as session:
            row = await session.get(Meter, meter_id)
            return None if row is None else MeterRow.of(row)

    async def list_meters(self) -> list[MeterRow]:
        async with self.db.session() as session:
            rows = (await session.scalars(select(Meter).order_by(Meter.meter_id))).all()
            return [MeterRow.of(r) for r in rows]

    async def meter_ids(self) -> list[str]:
        async with self.db.session() as session:
            return list(await session.scalars(select(Meter.meter_id).order_by(Meter.meter_id)))

    async def save_capabilities(
        self, meter_id: str, capabilities: Mapping[str, Any], control_mode: int | None = None
    ) -> None:
        """Cache what the meter's object list says it has (and its relay's control mode)."""
        now = self.now()
        async with self.db.transaction() as session:
            result = await session.execute(
                update(Meter)
                .where(Meter.meter_id == meter_id)
                .values(
                    capabilities=json_safe(dict(capabilities)),
                    capabilities_at=now,
                    control_mode=control_mode,
                    updated_at=now,
                )
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise UnknownMeter(meter_id)

    # -- readings and profiles ------------------------------------------------------------

    async def store_readings(self, rows: Iterable[ReadingRow]) -> int:
        """Insert readings in batches; a (meter, obis, ts) already stored is skipped.
        Returns how many rows were new. All rows must belong to known meters."""
        unique: dict[tuple[str, str, datetime], dict[str, Any]] = {}
        latest: dict[str, datetime] = {}
        for row in rows:
            ts = to_utc(row.ts)
            number, text = _split_value(row.value)
            unique.setdefault(
                (row.meter_id, row.obis, ts),
                {
                    "meter_id": row.meter_id,
                    "obis": row.obis,
                    "ts": ts,
                    "value_num": number,
                    "value_text": text,
                    "unit": row.unit,
                },
            )
            if row.meter_id not in latest or latest[row.meter_id] < ts:
                latest[row.meter_id] = ts
        if not unique:
            return 0
        values = list(unique.values())
        inserted = 0
        async with self.db.transaction() as session:
            # One cached statement, executed for many parameter sets: SQLAlchemy batches them
            # as multi-row INSERTs ("insertmanyvalues") without compiling SQL per call, and
            # RETURNING counts only the rows that were new.
            stmt = (
                _insert(session, Reading.__table__)
                .on_conflict_do_nothing(index_elements=["meter_id", "obis", "ts"])
                .returning(Reading.__table__.c.id)
            )
            for start in range(0, len(values), _BATCH):
                result = await session.execute(stmt, values[start : start + _BATCH])
                inserted += len(result.all())
            table = Meter.__table__
            assert isinstance(table, Table)
            ts_param = bindparam("b_ts", type_=UtcDateTime())
            await session.execute(
                update(table)
                .where(table.c.meter_id == bindparam("b_meter"))
                .where(or_(table.c.last_reading_at.is_(None), table.c.last_reading_at < ts_param))
                .values(last_reading_at=ts_param),
                [{"b_meter": m, "b_ts": ts} for m, ts in sorted(latest.items())],
            )
        return inserted

    async def latest_readings(self, meter_id: str) -> dict[str, ReadingRow]:
        """The newest stored value of each OBIS code of a meter."""
        async with self.db.session() as session:
            newest = (
                select(Reading.obis, func.max(Reading.ts).label("ts"))
                .where(Reading.meter_id == meter_id)
                .group_by(Reading.obis)
                .subquery()
            )
            rows = await session.execute(
                select(Reading).join(
                    newest,
                    and_(
                        Reading.meter_id == meter_id,
                        Reading.obis == newest.c.obis,
                        Reading.ts == newest.c.ts,
                    ),
                )
            )
            return {
                r.obis: ReadingRow(
                    r.meter_id, r.obis, r.ts, _join_value(r.value_num, r.value_text), r.unit
                )
                for r in rows.scalars()
            }

    async def readings(
        self,
        meter_id: str,
        *,
        obis: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[ReadingRow]:
        """Stored readings of a meter, oldest first."""
        stmt = select(Reading).where(Reading.meter_id == meter_id)
        if obis is not None:
            stmt = stmt.where(Reading.obis == obis)
        if since is not None:
            stmt = stmt.where(Reading.ts >= since)
        stmt = stmt.order_by(Reading.ts, Reading.obis).limit(limit)
        async with self.db.session() as session:
            return [
                ReadingRow(r.meter_id, r.obis, r.ts, _join_value(r.value_num, r.value_text), r.unit)
                for r in (await session.scalars(stmt))
            ]

    async def store_profile_entries(self, rows: Iterable[ProfileRow]) -> int:
        """Insert profile entries; an entry (meter, profile, ts) already stored is skipped.
        Returns how many were new."""
        unique: dict[tuple[str, str, datetime], dict[str, Any]] = {}
        for row in rows:
            ts = to_utc(row.ts)
            unique.setdefault(
                (row.meter_id, row.profile, ts),
                {
                    "meter_id": row.meter_id,
                    "profile": row.profile,
                    "ts": ts,
                    "values": json_safe(row.values),
                },
            )
        if not unique:
            return 0
        values = list(unique.values())
        inserted = 0
        async with self.db.transaction() as session:
            stmt = (
                _insert(session, ProfileEntry.__table__)
                .on_conflict_do_nothing(index_elements=["meter_id", "profile", "ts"])
                .returning(ProfileEntry.__table__.c.id)
            )
            for start in range(0, len(values), _BATCH):
                result = await session.execute(stmt, values[start : start + _BATCH])
                inserted += len(result.all())
        return inserted

    async def last_profile_ts(self, meter_id: str, profile: str) -> datetime | None:
        """Where profile catch-up resumes: the newest stored entry's time."""
        async with self.db.session() as session:
            value = await session.scalar(
                select(func.max(ProfileEntry.ts)).where(
                    ProfileEntry.meter_id == meter_id, ProfileEntry.profile == profile
                )
            )
        return None if value is None else to_utc(_parse_sqlite_ts(value))

    async def profile_entries(
        self, meter_id: str, profile: str, *, since: datetime | None = None, limit: int = 1000
    ) -> list[ProfileRow]:
        stmt = select(ProfileEntry).where(
            ProfileEntry.meter_id == meter_id, ProfileEntry.profile == profile
        )
        if since is not None:
            stmt = stmt.where(ProfileEntry.ts >= since)
        stmt = stmt.order_by(ProfileEntry.ts).limit(limit)
        async with self.db.session() as session:
            return [
                ProfileRow(r.meter_id, r.profile, r.ts, r.values)
                for r in (await session.scalars(stmt))
            ]

    # -- balance events -------------------------------------------------------------------

    async def apply_balance_event(self, event: BalanceEventIn) -> BalanceOutcome:
        """Store a billing event and act on it, in one transaction.

        If its seq is newer than the last applied for the meter, the meter's balance is
        updated and its desired relay state follows the sign of the balance (0: no change);
        an active command for the other action is superseded, and a command is created when
        the meter is not known to be in the desired state. Otherwise the event is recorded
        as stale and nothing is executed. An event_id seen before is a duplicate: nothing
        is stored again. Acknowledge the MQTT message only after this returns."""
        outcome, _alarm = await self.apply_balance_event_checked(event, unknown_meter_alarm=None)
        return outcome

    async def apply_balance_event_checked(
        self, event: BalanceEventIn, *, unknown_meter_alarm: str | None = "bad_event"
    ) -> tuple[BalanceOutcome, AlarmInfo | None]:
        """`apply_balance_event`, and for a meter not in the inventory what
        `record_balance_event` does (the event stored as it arrived, rejected, with an alarm
        of `unknown_meter_alarm`), in the same single transaction: the MQTT bridge's path,
        one database round trip per event instead of a lookup and then a transaction."""
        try:
            return await self._apply_balance_event(event, unknown_meter_alarm)
        except IntegrityError:
            # A concurrent transaction stored the same event_id first.
            if event.event_id is not None:
                existing = await self._event_by_id(event.event_id)
                if existing is not None:
                    return self._duplicate(event, existing.id, existing.outcome), None
            raise

    async def _event_by_id(self, event_id: str) -> BalanceEvent | None:
        async with self.db.session() as session:
            return await session.scalar(
                select(BalanceEvent).where(BalanceEvent.event_id == event_id)
            )

    @staticmethod
    def _duplicate(
        event: BalanceEventIn, existing_id: int, existing_outcome: str
    ) -> BalanceOutcome:
        return BalanceOutcome(
            outcome="duplicate",
            detail=f"event_id already received (first outcome: {existing_outcome})",
            meter_id=event.meter_id,
            seq=event.seq,
            balance=event.balance,
            event_row_id=existing_id,
        )

    async def _apply_balance_event(
        self, event: BalanceEventIn, unknown_meter_alarm: str | None
    ) -> tuple[BalanceOutcome, AlarmInfo | None]:
        # Core statements: the meter, its active command and a duplicate event_id in one
        # SELECT, then only the writes (the ORM's loads, identity map and flushes cost
        # several times more CPU and round trips on this, the bridge's serial path).
        now = self.now()
        m, c, e = _METERS.c, _COMMANDS.c, _EVENTS.c
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    _BALANCE_READ, {"meter_id": event.meter_id, "event_id": event.event_id}
                )
            ).first()
            if row is None or row.m_meter_id is None:
                dup = None
                if event.event_id is not None:
                    dup = (
                        await session.execute(
                            select(e.id, e.outcome).where(e.event_id == event.event_id)
                        )
                    ).first()
                if unknown_meter_alarm is not None:
                    return await self._store_unknown_meter_event(
                        session, event, unknown_meter_alarm, now, dup is not None
                    )
                if dup is not None:
                    return self._duplicate(event, dup.id, dup.outcome), None
            elif row.dup_id is not None:
                return self._duplicate(event, row.dup_id, row.dup_outcome), None
            values: dict[str, Any] = {
                "event_id": event.event_id,
                "meter_id": event.meter_id,
                "seq": event.seq,
                "balance": event.balance if event.balance.is_finite() else None,
                "currency": event.currency,
                "warning_threshold": event.warning_threshold,
                "ts": event.ts,
                "raw": event.raw,
                "received_at": now,
                "outcome": "rejected",
                "detail": None,
                "command_id": None,
                "low_balance": False,
            }
            problem = None
            if row is None or row.m_meter_id is None:
                problem = "unknown meter: not in the inventory"
            elif not event.balance.is_finite():
                problem = "balance is not a finite number"
            if problem is not None or row is None:
                values["detail"] = problem
                return BalanceOutcome(
                    outcome="rejected",
                    detail=problem or "",
                    meter_id=event.meter_id,
                    seq=event.seq,
                    balance=event.balance,
                    event_row_id=await self._insert_event(session, values),
                ), None
            active: CommandInfo | None = None
            if row.c_command_id is not None:
                active = CommandInfo(
                    **{name: getattr(row, f"c_{name}") for name in _COMMAND_FIELDS}
                )
            previous = row.m_last_balance
            if not rules.is_newer(event.seq, row.m_balance_seq):
                values["outcome"] = "stale"
                values["detail"] = (
                    f"seq {event.seq} is not newer than the last applied {row.m_balance_seq}: "
                    "recorded, not executed"
                )
                return BalanceOutcome(
                    outcome="stale",
                    detail=values["detail"],
                    meter_id=event.meter_id,
                    seq=event.seq,
                    balance=event.balance,
                    event_row_id=await self._insert_event(session, values),
                    previous_balance=previous,
                    desired_state=row.m_desired_relay_state,
                    command=active,
                ), None

            threshold = (
                event.warning_threshold
                if event.warning_threshold is not None
                else self.warning_threshold
            )
            low_balance = rules.low_balance_crossing(previous, event.balance, threshold)
            meter_values: dict[str, Any] = {
                "balance_seq": event.seq,
                "last_balance": event.balance,
                "last_balance_currency": event.currency,
                "last_balance_at": event.ts or now,
                "warning_active": event.balance < threshold,
                "updated_at": now,
            }
            values["low_balance"] = low_balance
            desired_after = row.m_desired_relay_state
            desired = rules.desired_state(event.balance)
            superseded: list[str] = []
            created = False
            if desired is None:
                values["outcome"] = "zero_no_change"
                values["detail"] = "balance is 0: relay left as it is"
            else:
                desired_after = desired
                meter_values.update(desired_relay_state=desired, desired_seq=event.seq)
                meter_values["desired_at"] = now
                action = rules.action_for(desired)
                values["outcome"] = "applied"
                if active is not None and active.action != action:
                    await session.execute(
                        update(_COMMANDS)
                        .where(c.command_id == active.command_id)
                        .values(
                            status="superseded",
                            updated_at=now,
                            last_error=f"superseded by balance event seq {event.seq}",
                        )
                    )
                    superseded.append(active.command_id)
                    active = None
                if active is not None:
                    values["detail"] = f"{desired}: {action} command already pending"
                elif superseded or rules.needs_command(desired, row.m_confirmed_relay_state):
                    # After a superseded command the meter may be in either state: operate
                    # it (an operation towards the state it is in is harmless and confirmed).
                    command = self._new_command_values(
                        event.meter_id,
                        action,
                        source="balance",
                        now=now,
                        event_id=event.event_id,
                        seq=event.seq,
                        reason=_balance_reason(event),
                    )
                    await session.execute(insert(_COMMANDS).values(command))
                    active = CommandInfo(**command)
                    created = True
                    values["command_id"] = active.command_id
                    values["detail"] = f"{desired}: {action} command created"
                else:
                    values["detail"] = f"{desired}: meter already {row.m_confirmed_relay_state}"
            await session.execute(
                update(_METERS).where(m.meter_id == event.meter_id).values(meter_values)
            )
            return BalanceOutcome(
                outcome=values["outcome"],
                detail=values["detail"] or "",
                meter_id=event.meter_id,
                seq=event.seq,
                balance=event.balance,
                event_row_id=await self._insert_event(session, values),
                previous_balance=previous,
                desired_state=desired_after,
                command=active,
                command_created=created,
                superseded=tuple(superseded),
                low_balance=low_balance,
            ), None

    @staticmethod
    async def _insert_event(session: AsyncSession, values: dict[str, Any]) -> int:
        result = await session.execute(insert(_EVENTS).values(values).returning(_EVENTS.c.id))
        return int(result.scalar_one())

    async def _store_unknown_meter_event(
        self,
        session: AsyncSession,
        event: BalanceEventIn,
        alarm_type: str,
        now: datetime,
        duplicate_id: bool,
    ) -> tuple[BalanceOutcome, AlarmInfo]:
        """What record_balance_event stores for an event about a meter not in the
        inventory: the raw event (its event_id dropped when another event has it), rejected,
        and an alarm."""
        detail = "unknown meter: not in the inventory"
        row_id = await self._insert_event(
            session,
            {
                "event_id": None if duplicate_id else event.event_id,
                "meter_id": event.meter_id,
                "seq": event.seq,
                "raw": event.raw,
                "received_at": now,
                "outcome": "rejected",
                "detail": detail,
                "low_balance": False,
            },
        )
        alarm_id = (
            await session.execute(
                insert(_ALARMS)
                .values(
                    type=alarm_type, meter_id=event.meter_id, detail=detail, ts=now, cleared=False
                )
                .returning(_ALARMS.c.id)
            )
        ).scalar_one()
        outcome = BalanceOutcome(
            outcome="rejected",
            detail=detail,
            meter_id=event.meter_id,
            seq=event.seq,
            balance=event.balance,
            event_row_id=row_id,
        )
        return outcome, AlarmInfo(int(alarm_id), alarm_type, event.meter_id, detail, now, False)

    async def record_balance_event(
        self,
        *,
        raw: str | None,
        outcome: str = "rejected",
        detail: str,
        meter_id: str | None = None,
        event_id: str | None = None,
        seq: int | None = None,
        alarm_type: str | None = "bad_event",
    ) -> tuple[int, AlarmInfo | None]:
        """Store an event that cannot be applied (malformed payload, wrong topic...) as it
        arrived, with what was done about it, and raise an alarm, in one transaction.
        Returns the event row id and the alarm (None when alarm_type is None)."""
        now = self.now()
        async with self.db.transaction() as session:
            if event_id is not None:
                existing = await session.scalar(
                    select(BalanceEvent.id).where(BalanceEvent.event_id == event_id)
                )
                if existing is not None:
                    event_id = None  # keep the raw record; the id belongs to another event
            row = BalanceEvent(
                event_id=event_id,
                meter_id=meter_id,
                seq=seq,
                raw=raw,
                received_at=now,
                outcome=outcome,
                detail=detail,
                low_balance=False,
            )
            session.add(row)
            alarm: Alarm | None = None
            if alarm_type is not None:
                alarm = Alarm(
                    type=alarm_type, meter_id=meter_id, detail=detail, ts=now, cleared=False
                )
                session.add(alarm)
            await session.flush()
            return row.id, None if alarm is None else AlarmInfo.of(alarm)

    async def balance_events(self, meter_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """A meter's recent balance events, newest first, with what was done about each."""
        stmt = (
            select(BalanceEvent)
            .where(BalanceEvent.meter_id == meter_id)
            .order_by(BalanceEvent.id.desc())
            .limit(limit)
        )
        async with self.db.session() as session:
            return [
                {
                    "id": r.id,
                    "event_id": r.event_id,
                    "seq": r.seq,
                    "balance": r.balance,
                    "currency": r.currency,
                    "ts": r.ts,
                    "received_at": r.received_at,
                    "outcome": r.outcome,
                    "detail": r.detail,
                    "command_id": r.command_id,
                    "low_balance": r.low_balance,
                    "raw": r.raw,
                }
                for r in await session.scalars(stmt)
            ]

    # -- commands -------------------------------------------------------------------------

    @staticmethod
    def _new_command(
        meter_id: str,
        action: str,
        *,
        source: str,
        now: datetime,
        event_id: str | None = None,
        seq: int | None = None,
        reason: str | None = None,
    ) -> Command:
        if action not in domain.ACTIONS:
            raise ValueError(f"unknown relay action {action!r}")
        if source not in models.COMMAND_SOURCES:
            raise ValueError(f"unknown command source {source!r}")
        return Command(
            command_id=str(uuid.uuid4()),
            meter_id=meter_id,
            action=action,
            status="queued",
            attempt=0,
            event_id=event_id,
            seq=seq,
            reason=reason,
            source=source,
            created_at=now,
            updated_at=now,
            next_attempt_at=now,
            overdue_alarm_raised=False,
        )

    @staticmethod
    def _new_command_values(
        meter_id: str,
        action: str,
        *,
        source: str,
        now: datetime,
        event_id: str | None = None,
        seq: int | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """A new command's columns, for a Core INSERT (same values as _new_command)."""
        if action not in domain.ACTIONS:
            raise ValueError(f"unknown relay action {action!r}")
        if source not in models.COMMAND_SOURCES:
            raise ValueError(f"unknown command source {source!r}")
        return {
            "command_id": str(uuid.uuid4()),
            "meter_id": meter_id,
            "action": action,
            "status": "queued",
            "attempt": 0,
            "source": source,
            "event_id": event_id,
            "seq": seq,
            "reason": reason,
            "created_at": now,
            "updated_at": now,
            "next_attempt_at": now,
            "overdue_alarm_raised": False,
            "last_error": None,
        }

    async def create_command(
        self, meter_id: str, action: str, *, source: str = "operator", reason: str | None = None
    ) -> tuple[CommandInfo, tuple[str, ...]]:
        """An operator's (or start-up's) command: sets the meter's desired state to what the
        action leads to, supersedes the meter's active command, queues this one.
        Returns the command and the ids it superseded. Raises UnknownMeter."""
        now = self.now()
        async with self.db.transaction() as session:
            meter = await session.scalar(
                select(Meter).where(Meter.meter_id == meter_id).with_for_update()
            )
            if meter is None:
                raise UnknownMeter(meter_id)
            superseded: list[str] = []
            for old in await session.scalars(
                select(Command).where(
                    Command.meter_id == meter_id, Command.status.in_(ACTIVE_COMMAND_STATUSES)
                )
            ):
                old.status = "superseded"
                old.updated_at = now
                old.last_error = f"superseded by {source} {action}"
                superseded.append(old.command_id)
            await session.flush()
            meter.desired_relay_state = rules.desired_for(action)
            meter.desired_at = now
            meter.updated_at = now
            command = self._new_command(meter_id, action, source=source, now=now, reason=reason)
            session.add(command)
            await session.flush()
            return CommandInfo.of(command), tuple(superseded)

    async def reconcile_commands(self, *, source: str = "startup") -> list[CommandInfo]:
        """Queue a command for every meter whose desired relay state is not what it last
        read back and that has no active command (run at start-up)."""
        now = self.now()
        created: list[Command] = []
        async with self.db.transaction() as session:
            busy = select(Command.meter_id).where(Command.status.in_(ACTIVE_COMMAND_STATUSES))
            meters = await session.scalars(
                select(Meter).where(
                    Meter.desired_relay_state.is_not(None), Meter.meter_id.not_in(busy)
                )
            )
            for meter in meters:
                if not rules.needs_command(meter.desired_relay_state, meter.confirmed_relay_state):
                    continue
                assert meter.desired_relay_state is not None
                command = self._new_command(
                    meter.meter_id,
                    rules.action_for(meter.desired_relay_state),
                    source=source,
                    now=now,
                    seq=meter.desired_seq,
                    reason=f"desired {meter.desired_relay_state}, last read back "
                    f"{meter.confirmed_relay_state or 'unknown'}",
                )
                session.add(command)
                created.append(command)
            await session.flush()
            return [CommandInfo.of(c) for c in created]

    async def get_command(self, command_id: str) -> CommandInfo | None:
        async with self.db.session() as session:
            row = (
                await session.execute(select(_COMMANDS).where(_COMMANDS.c.command_id == command_id))
            ).first()
            return None if row is None else _command_info(row)

    async def command_and_desired(
        self, command_id: str
    ) -> tuple[CommandInfo | None, bool, str | None]:
        """The command, whether its meter is in the inventory and the meter's desired relay
        state, in one read: what is checked right before a relay is operated."""
        stmt = (
            select(
                _COMMANDS,
                _METERS.c.meter_id.label("m_meter_id"),
                _METERS.c.desired_relay_state.label("m_desired"),
            )
            .select_from(_COMMANDS.outerjoin(_METERS, _METERS.c.meter_id == _COMMANDS.c.meter_id))
            .where(_COMMANDS.c.command_id == command_id)
        )
        async with self.db.session() as session:
            row = (await session.execute(stmt)).first()
        if row is None:
            return None, False, None
        values = dict(row._mapping)
        meter_found = values.pop("m_meter_id") is not None
        desired = values.pop("m_desired")
        return CommandInfo(**values), meter_found, desired

    async def meter_exists(self, meter_id: str) -> bool:
        async with self.db.session() as session:
            found = await session.scalar(
                select(_METERS.c.meter_id).where(_METERS.c.meter_id == meter_id)
            )
            return found is not None

    async def pending_commands(
        self, *, due_before: datetime | None = None, meter_id: str | None = None
    ) -> list[CommandInfo]:
        """Active commands (queued, sent, failed, escalated), oldest first; with due_before,
        only those whose next attempt is due by then."""
        c = _COMMANDS.c
        stmt = select(_COMMANDS).where(c.status.in_(_ACTIVE))
        if due_before is not None:
            stmt = stmt.where(or_(c.next_attempt_at.is_(None), c.next_attempt_at <= due_before))
        if meter_id is not None:
            stmt = stmt.where(c.meter_id == meter_id)
        stmt = stmt.order_by(c.created_at, c.command_id)
        async with self.db.session() as session:
            return [_command_info(r) for r in await session.execute(stmt)]

    async def due_meter_ids(self, due_before: datetime) -> list[str]:
        """Meters with an active command due by `due_before`, oldest command first (the
        periodic scan: one column, no command rows)."""
        c = _COMMANDS.c
        stmt = (
            select(c.meter_id)
            .where(
                c.status.in_(_ACTIVE),
                or_(c.next_attempt_at.is_(None), c.next_attempt_at <= due_before),
            )
            .order_by(c.created_at, c.command_id)
        )
        async with self.db.session() as session:
            return list(await session.scalars(stmt))

    async def commands(self, meter_id: str, *, limit: int = 100) -> list[CommandInfo]:
        """A meter's commands, newest first (history)."""
        stmt = (
            select(Command)
            .where(Command.meter_id == meter_id)
            .order_by(Command.created_at.desc(), Command.command_id)
            .limit(limit)
        )
        async with self.db.session() as session:
            return [CommandInfo.of(c) for c in await session.scalars(stmt)]

    async def update_command(
        self,
        command_id: str,
        *,
        status: str | None = None,
        attempt: int | None = None,
        next_attempt_at: datetime | None = _UNSET,
        last_error: str | None = _UNSET,
        overdue_alarm_raised: bool | None = None,
        keep_escalated: bool = False,
    ) -> CommandInfo | None:
        """Change an active command. Returns None (and changes nothing) when the command is
        no longer active (confirmed or superseded meanwhile): the caller must stop.
        With keep_escalated, an escalated command keeps that status (retries go on)."""
        if status is not None and status not in domain.COMMAND_STATUSES:
            raise ValueError(f"unknown command status {status!r}")
        c = _COMMANDS.c
        values: dict[str, Any] = {"updated_at": self.now()}
        if status is not None:
            values["status"] = (
                case((c.status == "escalated", c.status), else_=status)
                if keep_escalated
                else status
            )
        if attempt is not None:
            values["attempt"] = attempt
        if next_attempt_at is not _UNSET:
            values["next_attempt_at"] = next_attempt_at
        if last_error is not _UNSET:
            values["last_error"] = last_error
        if overdue_alarm_raised is not None:
            values["overdue_alarm_raised"] = overdue_alarm_raised
        stmt = (
            update(_COMMANDS)
            .where(c.command_id == command_id, c.status.in_(_ACTIVE))
            .values(values)
            .returning(*_COMMANDS.c)
        )
        async with self.db.transaction() as session:
            row = (await session.execute(stmt)).first()
            return None if row is None else _command_info(row)

    async def complete_command(
        self,
        command_id: str,
        *,
        state: str,
        output_state: bool | None,
        control_state: str | None,
        reason: str | None = None,
        ts: datetime | None = None,
    ) -> CommandInfo | None:
        """A command's read-back proved it done: mark it confirmed and record the relay
        state, together. The relay state is recorded even if the command was superseded
        meanwhile (it is what the meter says); then None is returned."""
        done = await self.confirm_command(
            command_id,
            state=state,
            output_state=output_state,
            control_state=control_state,
            reason=reason,
            ts=ts,
        )
        return None if done is None else done.command

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
        """`complete_command`, and in the same transaction clear the meter's standing alarms
        of `clear_alarm_types` when the command was still active; returns what the meter
        said before (None when the command does not exist)."""
        if state not in domain.RELAY_STATES:
            raise ValueError(f"unknown relay state {state!r}")
        now = self.now()
        c = _COMMANDS.c
        types = tuple(clear_alarm_types)
        m, a = _METERS.c, _ALARMS.c
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
                        m.last_balance,
                        m.last_balance_currency,
                        standing.label("standing"),
                    )
                    .select_from(_COMMANDS.join(_METERS, _METERS.c.meter_id == c.meter_id))
                    .where(c.command_id == command_id)
                    .with_for_update()
                )
            ).first()
            if found is None:
                meter_id = await session.scalar(
                    select(c.meter_id).where(c.command_id == command_id)
                )
                if meter_id is None:
                    return None
                raise UnknownMeter(meter_id)
            meter_id = found.meter_id
            await self._write_relay_state(
                session,
                meter_id,
                found.confirmed_at,
                state,
                output_state,
                control_state,
                to_utc(ts or now),
                reason,
                command_id,
            )
            before = (found.confirmed_relay_state, found.last_balance, found.last_balance_currency)
            row = (
                await session.execute(
                    update(_COMMANDS)
                    .where(c.command_id == command_id, c.status.in_(_ACTIVE))
                    .values(
                        status="confirmed", updated_at=now, next_attempt_at=None, last_error=None
                    )
                    .returning(*_COMMANDS.c)
                )
            ).first()
            cleared = 0
            if row is not None and found.standing:
                result = await session.execute(
                    update(_ALARMS)
                    .where(a.type.in_(types), a.meter_id == meter_id, a.cleared.is_(False))
                    .values(cleared=True, cleared_at=now)
                )
                cleared = int(result.rowcount)  # type: ignore[attr-defined]
            return Confirmation(
                command=None if row is None else _command_info(row),
                previous_state=before[0],
                last_balance=before[1],
                last_balance_currency=before[2],
                alarms_cleared=cleared,
            )

    async def overdue_commands(self, created_before: datetime) -> list[CommandInfo]:
        """Active commands created before `created_before` with no overdue alarm yet."""
        c = _COMMANDS.c
        stmt = (
            select(_COMMANDS)
            .where(
                c.status.in_(_ACTIVE),
                c.created_at < created_before,
                c.overdue_alarm_raised.is_(False),
            )
            .order_by(c.created_at)
        )
        async with self.db.session() as session:
            return [_command_info(r) for r in await session.execute(stmt)]

    async def escalate_command(
        self, command_id: str, detail: str, *, alarm_type: str = "relay_command_overdue"
    ) -> tuple[CommandInfo, AlarmInfo] | None:
        """Mark an active command escalated and raise its overdue alarm, once (retries go
        on). None when it is no longer active or was escalated before."""
        now = self.now()
        async with self.db.transaction() as session:
            row = await session.scalar(
                select(Command).where(Command.command_id == command_id).with_for_update()
            )
            if row is None or row.status not in ACTIVE_COMMAND_STATUSES or row.overdue_alarm_raised:
                return None
            row.status = "escalated"
            row.overdue_alarm_raised = True
            row.updated_at = now
            alarm = Alarm(
                type=alarm_type, meter_id=row.meter_id, detail=detail, ts=now, cleared=False
            )
            session.add(alarm)
            await session.flush()
            return CommandInfo.of(row), AlarmInfo.of(alarm)

    # -- relay states ---------------------------------------------------------------------

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
        confirmed state unless a newer read-back is already recorded."""
        if state not in domain.RELAY_STATES:
            raise ValueError(f"unknown relay state {state!r}")
        async with self.db.transaction() as session:
            await self._relay_state_core(
                session,
                meter_id,
                state,
                output_state,
                control_state,
                ts or self.now(),
                reason,
                command_id,
            )

    async def _relay_state_core(
        self,
        session: AsyncSession,
        meter_id: str,
        state: str,
        output_state: bool | None,
        control_state: str | None,
        ts: datetime,
        reason: str | None,
        command_id: str | None,
    ) -> tuple[str | None, Decimal | None, str | None]:
        """Record a read-back; returns the meter's (confirmed state, balance, currency) as
        they were before. Raises UnknownMeter."""
        ts = to_utc(ts)
        m = _METERS.c
        before = (
            await session.execute(
                select(
                    m.confirmed_relay_state,
                    m.confirmed_at,
                    m.last_balance,
                    m.last_balance_currency,
                )
                .where(m.meter_id == meter_id)
                .with_for_update()
            )
        ).first()
        if before is None:
            raise UnknownMeter(meter_id)
        await self._write_relay_state(
            session,
            meter_id,
            before.confirmed_at,
            state,
            output_state,
            control_state,
            ts,
            reason,
            command_id,
        )
        return before.confirmed_relay_state, before.last_balance, before.last_balance_currency

    async def _write_relay_state(
        self,
        session: AsyncSession,
        meter_id: str,
        confirmed_at: datetime | None,
        state: str,
        output_state: bool | None,
        control_state: str | None,
        ts: datetime,
        reason: str | None,
        command_id: str | None,
    ) -> None:
        """The history row, and the meter's confirmed state unless a newer read-back (its
        `confirmed_at`, read under the row lock) is already recorded."""
        await session.execute(
            insert(_RELAY_STATES).values(
                meter_id=meter_id,
                state=state,
                output_state=output_state,
                control_state=control_state,
                ts=ts,
                reason=reason,
                command_id=command_id,
            )
        )
        if confirmed_at is None or confirmed_at <= ts:
            await session.execute(
                update(_METERS)
                .where(_METERS.c.meter_id == meter_id)
                .values(
                    confirmed_relay_state=state,
                    confirmed_output_state=output_state,
                    confirmed_at=ts,
                    updated_at=self.now(),
                )
            )

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

    # -- alarms ---------------------------------------------------------------------------

    async def raise_alarm(
        self,
        type: str,
        meter_id: str | None = None,
        detail: str | None = None,
        *,
        ts: datetime | None = None,
        dedupe: bool = True,
    ) -> AlarmInfo | None:
        """Store an alarm. With dedupe, an uncleared alarm of the same type for the same
        meter already stands for it: nothing is stored and None is returned (nothing new to
        publish)."""
        now = self.now()
        async with self.db.transaction() as session:
            if dedupe:
                meter_match = (
                    Alarm.meter_id.is_(None) if meter_id is None else Alarm.meter_id == meter_id
                )
                existing = await session.scalar(
                    select(Alarm.id)
                    .where(Alarm.type == type, meter_match, Alarm.cleared.is_(False))
                    .limit(1)
                )
                if existing is not None:
                    return None
            alarm = Alarm(type=type, meter_id=meter_id, detail=detail, ts=ts or now, cleared=False)
            session.add(alarm)
            await session.flush()
            return AlarmInfo.of(alarm)

    async def clear_alarms(self, type: str, meter_id: str | None = None) -> int:
        """Clear the standing alarms of a type (for a meter). Returns how many."""
        now = self.now()
        a = _ALARMS.c
        meter_match = a.meter_id.is_(None) if meter_id is None else a.meter_id == meter_id
        async with self.db.transaction() as session:
            result = await session.execute(
                update(_ALARMS)
                .where(a.type == type, meter_match, a.cleared.is_(False))
                .values(cleared=True, cleared_at=now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def list_alarms(
        self, *, active_only: bool = True, meter_id: str | None = None, limit: int = 100
    ) -> list[AlarmInfo]:
        """Alarms, newest first."""
        stmt = select(Alarm)
        if active_only:
            stmt = stmt.where(Alarm.cleared.is_(False))
        if meter_id is not None:
            stmt = stmt.where(Alarm.meter_id == meter_id)
        stmt = stmt.order_by(Alarm.ts.desc(), Alarm.id.desc()).limit(limit)
        async with self.db.session() as session:
            return [AlarmInfo.of(a) for a in await session.scalars(stmt)]

    # -- invocation counters --------------------------------------------------------------

    async def reserve_invocation_counter(
        self, meter_id: str, n: int = 1, *, key_id: str = "default", at_least: int = 1
    ) -> int:
        """Reserve `n` consecutive invocation counters for (meter, key); return the first.

        One atomic upsert: concurrent callers (tasks or processes) always get disjoint
        ranges, and a range once handed out is never handed out again, even after a crash
        (the reservation is committed before the counters are used). `at_least` lifts the
        counter to a value learned from the meter. Raises InvocationCounterExhausted past
        2**32-1 (nothing is reserved then)."""
        if n < 1:
            raise ValueError("n must be >= 1")
        floor = max(1, at_least)
        now = self.now()
        table = InvocationCounter.__table__
        async with self.db.transaction() as session:
            dialect = session.bind.dialect.name
            stmt = _insert(session, table).values(
                meter_id=meter_id, key_id=key_id, value=floor + n, updated_at=now
            )
            current = table.c.value
            if dialect == "postgresql":
                lifted = func.greatest(current, floor)
            else:
                lifted = func.max(current, floor)  # SQLite's scalar max()
            stmt = stmt.on_conflict_do_update(
                index_elements=["meter_id", "key_id"],
                set_={"value": lifted + n, "updated_at": stmt.excluded.updated_at},
            ).returning(table.c.value)
            end = int((await session.execute(stmt)).scalar_one())
            first = end - n
            if end - 1 > IC_MAX:
                raise InvocationCounterExhausted(
                    f"meter {meter_id}: invocation counter for key {key_id} exhausted; "
                    "renew the key"
                )
            return first

    def invocation_counter_store(
        self, meter_id: str, key_id: str = "default", at_least: int = 1
    ) -> DbInvocationCounterStore:
        """An InvocationCounterStore (drivers.session) for one meter's key."""
        return DbInvocationCounterStore(self, meter_id, key_id, at_least)

    # -- fleet ----------------------------------------------------------------------------

    async def fleet_summary(self) -> FleetSummary:
        async with self.db.session() as session:
            meters = int(await session.scalar(select(func.count()).select_from(Meter)) or 0)
            states: dict[str, int] = {}
            for state, count in await session.execute(
                select(Meter.confirmed_relay_state, func.count()).group_by(
                    Meter.confirmed_relay_state
                )
            ):
                states[state or "unknown"] = int(count)
            desired_off = int(
                await session.scalar(
                    select(func.count())
                    .select_from(Meter)
                    .where(Meter.desired_relay_state == domain.DISCONNECTED)
                )
                or 0
            )
            active = int(
                await session.scalar(
                    select(func.count())
                    .select_from(Command)
                    .where(Command.status.in_(ACTIVE_COMMAND_STATUSES))
                )
                or 0
            )
            escalated = int(
                await session.scalar(
                    select(func.count()).select_from(Command).where(Command.status == "escalated")
                )
                or 0
            )
            alarms = int(
                await session.scalar(
                    select(func.count()).select_from(Alarm).where(Alarm.cleared.is_(False))
                )
                or 0
            )
            last = await session.scalar(select(func.max(Meter.last_reading_at)))
        return FleetSummary(
            meters=meters,
            relay_states=states,
            desired_disconnected=desired_off,
            active_commands=active,
            escalated_commands=escalated,
            active_alarms=alarms,
            last_reading_at=None if last is None else to_utc(_parse_sqlite_ts(last)),
        )


def _balance_reason(event: BalanceEventIn) -> str:
    currency = f" {event.currency}" if event.currency else ""
    return f"balance {event.balance}{currency} (seq {event.seq})"


def _parse_sqlite_ts(value: Any) -> datetime:
    """func.max() over a SQLite timestamp comes back as text (no column type on it)."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
