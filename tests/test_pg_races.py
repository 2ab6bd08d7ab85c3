"""The two PostgreSQL races of issue 9, driven with two real connections: one holds a
meter's row lock (as a balance event or an operator command in flight does) while the other
runs, and is let go only once the other is seen waiting for it.

(a) Start-up reconciliation met a command committed meanwhile in the one-active-command
index and the daemon exited. (b) A balance event that waited on the meter lock acted on the
command rows as they were before the wait (READ COMMITTED re-reads only the locked row), and
left a meter connected while in arrears."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from db_support import temp_database
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from test_balance_identity import add_meters

from headend.balance_event import BalanceEvent
from headend.storage import Database, Repository
from headend.storage.commands import new_command_values
from headend.storage.core import COMMANDS, METERS

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")
T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with temp_database("postgresql", tmp_path) as database:
        await add_meters(database, "M1")
        yield database


async def hold_meter_lock(conn: AsyncConnection) -> int:
    """Begin a transaction on `conn` that holds M1's row lock; returns its backend pid."""
    await conn.begin()
    await conn.execute(select(METERS.c.meter_id).where(METERS.c.meter_id == "M1").with_for_update())
    return int(await conn.scalar(text("SELECT pg_backend_pid()")))


async def while_blocked(db: Database, holder_pid: int, work: Awaitable[T]) -> asyncio.Task[T]:
    """Start `work` and return once it waits for the holder's transaction."""
    task = asyncio.ensure_future(work)
    async with db.engine.connect() as observer:
        async with asyncio.timeout(10):
            while True:
                waiting = await observer.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE :pid = ANY(pg_blocking_pids(pid))"
                    ),
                    {"pid": holder_pid},
                )
                await observer.rollback()  # pg_stat_activity is a snapshot per transaction
                if waiting:
                    break
                assert not task.done(), task.result()  # it did not wait: the test proves nothing
                await asyncio.sleep(0.02)
    return task


async def active_commands(db: Database) -> list[tuple[str, str]]:
    async with db.session() as session:
        rows = await session.execute(
            select(COMMANDS.c.action, COMMANDS.c.source).where(
                COMMANDS.c.meter_id == "M1",
                COMMANDS.c.status.in_(("queued", "sent", "failed", "escalated")),
            )
        )
        return [(r.action, r.source) for r in rows]


def balance(seq: int, amount: str) -> BalanceEvent:
    return BalanceEvent("M1", Decimal(amount), "CNY", seq, f"e{seq}", T0)


async def test_start_up_reconciliation_waits_for_a_command_in_flight(db: Database) -> None:
    repo = Repository(db)
    # The meter should be off and was last read on, with no command: reconcile's case.
    async with db.transaction() as session:
        await session.execute(
            update(METERS)
            .where(METERS.c.meter_id == "M1")
            .values(desired_relay_state="disconnected", confirmed_relay_state="connected")
        )
    async with db.engine.connect() as other:
        pid = await hold_meter_lock(other)
        # A redelivered balance event is committing a command for the meter meanwhile.
        values: dict[str, Any] = new_command_values("M1", "disconnect", source="balance", now=T0)
        await other.execute(insert(COMMANDS).values(values))
        reconcile = await while_blocked(db, pid, repo.reconcile_commands())
        await other.commit()
    assert await reconcile == []  # it saw the event's command, and raised nothing
    assert await active_commands(db) == [("disconnect", "balance")]
    # With nothing in flight it still does its job.
    async with db.transaction() as session:
        await session.execute(update(COMMANDS).values(status="confirmed"))
    (created,) = await repo.reconcile_commands()
    assert (created.meter_id, created.action, created.source) == ("M1", "disconnect", "startup")


async def test_a_balance_event_that_waited_for_the_meter_sees_the_commands_after_the_wait(
    db: Database,
) -> None:
    repo = Repository(db, warning_threshold=Decimal("20"))
    first = await repo.apply_balance_event(balance(1, "-5"))
    assert first.command is not None and first.command.action == "disconnect"
    async with db.engine.connect() as other:
        pid = await hold_meter_lock(other)
        # An operator reconnect is committing: it supersedes the disconnect, queues a reconnect.
        await other.execute(
            update(COMMANDS)
            .where(COMMANDS.c.command_id == first.command.command_id)
            .values(status="superseded", last_error="superseded by operator reconnect")
        )
        await other.execute(
            insert(COMMANDS).values(
                new_command_values("M1", "reconnect", source="operator", now=T0)
            )
        )
        await other.execute(
            update(METERS).where(METERS.c.meter_id == "M1").values(desired_relay_state="connected")
        )
        arrears = await while_blocked(db, pid, repo.apply_balance_event(balance(2, "-3")))
        await other.commit()
    outcome = await arrears
    # The event acted on the reconnect it waited for, not on the disconnect it saw before:
    # it supersedes the reconnect and disconnects again. Never left on while in arrears.
    assert [(s.action, s.status) for s in outcome.decision.superseded] == [
        ("reconnect", "superseded")
    ]
    assert outcome.command is not None and outcome.command.action == "disconnect"
    assert await active_commands(db) == [("disconnect", "balance")]
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.desired_relay_state == "disconnected"
