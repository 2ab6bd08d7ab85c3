"""Storage: SQLAlchemy 2 async on SQLite (embedded default, WAL) or PostgreSQL (asyncpg),
schema by Alembic migrations. The daemon talks to it through `Repository`."""

from headend.storage.db import Database, create_engine, migrate, migrate_sync
from headend.storage.records import (
    AlarmInfo,
    BalanceOutcome,
    CommandInfo,
    FleetSummary,
    HoldInfo,
    MeterRow,
    ProfileRow,
    ReadingRow,
    RelayStateInfo,
)
from headend.storage.repository import (
    HoldConflict,
    InvocationCounterExhausted,
    Repository,
    UnknownMeter,
)

__all__ = [
    "AlarmInfo",
    "BalanceOutcome",
    "CommandInfo",
    "Database",
    "FleetSummary",
    "HoldConflict",
    "HoldInfo",
    "InvocationCounterExhausted",
    "MeterRow",
    "ProfileRow",
    "ReadingRow",
    "RelayStateInfo",
    "Repository",
    "UnknownMeter",
    "create_engine",
    "migrate",
    "migrate_sync",
]
