"""What every kind of record's module shares: the Core tables, the dialect's INSERT, the clock.

The hot paths (balance events, commands, relay states, alarms) use Core statements over these
tables: a Core statement is compiled once and cached, and its rows skip the ORM's identity map
and unit of work (several times cheaper per call than Session.get / flush on the same rows)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from headend.storage.db import Database
from headend.storage.models import (
    Alarm,
    BalanceEvent,
    Command,
    InvocationCounter,
    Meter,
    MeterEvent,
    MeterKey,
    OperatorAction,
    ProfileEntry,
    PushCounter,
    Reading,
    Register,
    RelayState,
)
from headend.storage.types import to_utc

__all__ = [
    "ALARMS",
    "BATCH",
    "COMMANDS",
    "COUNTERS",
    "EVENTS",
    "METERS",
    "METER_EVENTS",
    "METER_KEYS",
    "OPERATOR_ACTIONS",
    "PROFILES",
    "PUSH_COUNTERS",
    "READINGS",
    "REGISTERS",
    "RELAY_STATES",
    "Clock",
    "Store",
    "dialect_insert",
    "parse_sqlite_ts",
]

BATCH = 5000  # parameter sets per executemany (SQLAlchemy pages them into multi-row INSERTs)

Clock = Callable[[], datetime]


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


METERS = _table(Meter)
COMMANDS = _table(Command)
ALARMS = _table(Alarm)
RELAY_STATES = _table(RelayState)
EVENTS = _table(BalanceEvent)
READINGS = _table(Reading)
REGISTERS = _table(Register)
METER_KEYS = _table(MeterKey)
PROFILES = _table(ProfileEntry)
COUNTERS = _table(InvocationCounter)
OPERATOR_ACTIONS = _table(OperatorAction)
METER_EVENTS = _table(MeterEvent)
PUSH_COUNTERS = _table(PushCounter)


class Store:
    """One kind of record over a Database. Every public method is one transaction: it happens
    completely or not at all, so a kill -9 at any point leaves the database consistent."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self._clock = clock

    def now(self) -> datetime:
        return to_utc(self._clock())


def dialect_insert(session: AsyncSession, table: Table) -> Any:
    """The dialect's INSERT, which offers ON CONFLICT (DO NOTHING / DO UPDATE) on either."""
    name = session.bind.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported dialect {name}")  # pragma: no cover


def parse_sqlite_ts(value: Any) -> datetime:
    """func.max() over a SQLite timestamp comes back as text (no column type on it)."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
