"""Storage on real SQLite files and the local PostgreSQL: migrations, idempotent writes,
balance-event semantics, commands, alarms, invocation counters, crash consistency."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from db_support import DIALECTS, temp_database
from sqlalchemy import func, select, text

from headend.balance_event import BalanceEvent as Event
from headend.domain import ACTIVE_COMMAND_STATUSES
from headend.meters.counters import invocation_counter_store
from headend.relay.lifecycle import FAIL, SEND
from headend.storage import (
    Database,
    InvocationCounterExhausted,
    ProfileRow,
    ReadingRow,
    Repository,
    UnknownMeter,
)
from headend.storage.models import BalanceEvent, Command, Meter, Reading

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=DIALECTS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temp_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
async def repo(db: Database) -> Repository:
    await add_meters(db, "M1", "M2", "M3")
    return Repository(db, warning_threshold=Decimal("20.00"))


async def add_meters(db: Database, *meter_ids: str) -> None:
    async with db.transaction() as session:
        for meter_id in meter_ids:
            session.add(
                Meter(
                    meter_id=meter_id,
                    host="127.0.0.1",
                    port=4059,
                    transport="wrapper",
                    client_sap=16,
                    server_logical=1,
                    security="none",
                    line=f"tcp:127.0.0.1:{meter_id}",
                    created_at=T0,
                    updated_at=T0,
                )
            )


def event(
    meter_id: str,
    seq: int,
    balance: str,
    event_id: str | None = None,
    warning_threshold: str | None = None,
) -> Event:
    return Event(
        meter_id=meter_id,
        seq=seq,
        balance=Decimal(balance),
        currency="CNY",
        event_id=event_id or f"{meter_id}-{seq}-{balance}",
        ts=T0 + timedelta(seconds=seq),
        warning_threshold=None if warning_threshold is None else Decimal(warning_threshold),
    )


async def count(db: Database, model: type, *where: object) -> int:
    async with db.session() as session:
        stmt = select(func.count()).select_from(model)
        for clause in where:
            stmt = stmt.where(clause)  # type: ignore[arg-type]
        return int(await session.scalar(stmt) or 0)


# -- migrations ---------------------------------------------------------------------------------


async def test_migrations_upgrade_head_and_match_the_models(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from headend.storage.db import MIGRATIONS_DIR
    from headend.storage.models import Base

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    await db.migrate()  # a second run is a no-op

    def check(sync_conn: object) -> tuple[str | None, list[object]]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})  # type: ignore[arg-type]
        return context.get_current_revision(), compare_metadata(context, Base.metadata)

    async with db.engine.connect() as conn:
        revision, diff = await conn.run_sync(check)
    assert revision == head
    assert diff == [], f"models and migrations differ: {diff}"


async def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    async with temp_database("sqlite", tmp_path) as db, db.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert int((await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()) >= 1000


async def test_database_open_migrates_a_new_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'new.db'}"
    db = await Database.open(url)
    try:
        assert await Repository(db).list_meters() == []
        assert "new.db" in repr(db)
    finally:
        await db.dispose()


# -- readings and profiles ----------------------------------------------------------------------


async def test_a_reading_is_stored_once_whatever_the_retries(
    repo: Repository, db: Database
) -> None:
    rows = [
        ReadingRow("M1", "1.0.1.8.0.255", T0, 1234.5, "kWh"),
        ReadingRow("M1", "1.0.32.7.0.255", T0, 229.9, "V"),
        ReadingRow("M1", "0.0.96.3.10.255", T0, True),
        ReadingRow("M2", "1.0.1.8.0.255", T0, 10, "kWh"),
    ]
    assert await repo.store_readings(rows) == 4
    assert await repo.store_readings(rows) == 0  # the retry
    # Same instant in another time zone, and a duplicate inside one batch: still once.
    cst = timezone(timedelta(hours=8))
    again = [
        ReadingRow("M1", "1.0.1.8.0.255", T0.astimezone(cst), 1234.5, "kWh"),
        ReadingRow("M1", "1.0.1.8.0.255", T0 + timedelta(minutes=15), 1235.0, "kWh"),
        ReadingRow("M1", "1.0.1.8.0.255", T0 + timedelta(minutes=15), 1235.0, "kWh"),
    ]
    assert await repo.store_readings(again) == 1
    assert await count(db, Reading) == 5
    latest = await repo.latest_readings("M1")
    assert latest["1.0.1.8.0.255"].value == 1235.0
    assert latest["1.0.1.8.0.255"].ts == T0 + timedelta(minutes=15)
    assert latest["0.0.96.3.10.255"].value is True
    assert latest["1.0.32.7.0.255"].unit == "V"
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.last_reading_at == T0 + timedelta(minutes=15)


async def test_reading_values_round_trip(repo: Repository) -> None:
    values = {
        "a": 1.25,
        "b": -7,
        "c": "SN-0001",
        "d": False,
        "e": None,
        "f": 2**63 - 1,  # more than a double holds exactly
        "g": float("nan"),
    }
    await repo.store_readings(ReadingRow("M1", obis, T0, v) for obis, v in values.items())
    stored = {r.obis: r.value for r in await repo.readings("M1")}
    assert stored["a"] == 1.25 and stored["b"] == -7 and stored["c"] == "SN-0001"
    assert stored["d"] is False and stored["e"] is None and stored["f"] == 2**63 - 1
    assert stored["g"] != stored["g"]  # NaN survives (SQLite would turn a NaN double into NULL)


async def test_large_batches_are_split_and_counted(repo: Repository, db: Database) -> None:
    rows = [
        ReadingRow(f"M{1 + i % 3}", "1.0.1.8.0.255", T0 + timedelta(minutes=i), float(i), "kWh")
        for i in range(1300)
    ]
    assert await repo.store_readings(rows[:700]) == 700
    assert await repo.store_readings(rows) == 600
    assert await count(db, Reading) == 1300


async def test_a_failing_batch_stores_nothing(repo: Repository, db: Database) -> None:
    rows = [
        ReadingRow("M1", "1.0.1.8.0.255", T0, 1.0),
        ReadingRow("NOT-A-METER", "1.0.1.8.0.255", T0, 2.0),
    ]
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        await repo.store_readings(rows)
    assert await count(db, Reading) == 0


async def test_profile_entries_are_stored_once_and_resume_point(repo: Repository) -> None:
    profile = "1.0.99.1.0.255"
    assert await repo.last_profile_ts("M1", profile) is None
    rows = [
        ProfileRow("M1", profile, T0 + timedelta(minutes=15 * i), [f"{i}", i * 0.5, b"\x01"])
        for i in range(10)
    ]
    assert await repo.store_profile_entries(rows) == 10
    assert await repo.store_profile_entries(rows[5:]) == 0
    assert await repo.last_profile_ts("M1", profile) == T0 + timedelta(minutes=135)
    assert await repo.last_profile_ts("M2", profile) is None
    entries = await repo.profile_entries("M1", profile, since=T0 + timedelta(minutes=120))
    assert [e.values for e in entries] == [["8", 4.0, "01"], ["9", 4.5, "01"]]


# -- balance events -----------------------------------------------------------------------------


async def test_newer_seq_sets_desired_state_and_creates_a_command(repo: Repository) -> None:
    outcome = await repo.apply_balance_event(event("M1", 5, "-3.20"))
    assert outcome.decision.outcome == "applied"
    assert outcome.decision.desired_state == "disconnected"
    assert outcome.decision.command is not None and outcome.command is not None
    assert outcome.command.action == "disconnect" and outcome.command.status == "queued"
    assert outcome.command.source == "balance" and outcome.command.event_id == "M1-5--3.20"
    meter = await repo.get_meter("M1")
    assert meter is not None
    assert (meter.desired_relay_state, meter.desired_seq, meter.balance_seq) == (
        "disconnected",
        5,
        5,
    )
    assert meter.last_balance == Decimal("-3.20") and str(meter.last_balance) == "-3.20"
    assert [c.command_id for c in await repo.pending_commands()] == [outcome.command.command_id]


async def test_older_or_equal_seq_is_recorded_as_stale_and_executes_nothing(
    repo: Repository, db: Database
) -> None:
    first = await repo.apply_balance_event(event("M1", 10, "-1.00"))
    assert first.command is not None
    for seq, balance in ((10, "50.00"), (9, "50.00"), (1, "0")):
        outcome = await repo.apply_balance_event(event("M1", seq, balance))
        assert outcome.decision.outcome == "stale", (seq, balance)
        assert outcome.decision.command is None and outcome.decision.superseded == ()
    meter = await repo.get_meter("M1")
    assert meter is not None
    assert meter.desired_relay_state == "disconnected" and meter.balance_seq == 10
    assert meter.last_balance == Decimal("-1.00")
    pending = await repo.pending_commands()
    assert [(c.command_id, c.action) for c in pending] == [(first.command.command_id, "disconnect")]
    # Every event is on record with what was done about it.
    outcomes = [e["outcome"] for e in await repo.balance_events("M1")]
    assert outcomes == ["stale", "stale", "stale", "applied"]
    assert await count(db, BalanceEvent) == 4


async def test_zero_balance_changes_nothing_but_is_the_newest(repo: Repository) -> None:
    await repo.apply_balance_event(event("M1", 1, "-5"))
    zero = await repo.apply_balance_event(event("M1", 2, "0.00"))
    assert zero.decision.outcome == "zero_no_change" and zero.decision.command is None
    assert zero.decision.desired_state == "disconnected"
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.balance_seq == 2 and meter.desired_seq == 1
    assert len(await repo.pending_commands()) == 1
    # An older positive event arriving late stays stale: the newest balance (0) decides.
    late = await repo.apply_balance_event(event("M1", 1, "30"))
    assert late.decision.outcome == "stale"
    # A zero first balance on a fresh meter: no desired state at all, no command.
    fresh = await repo.apply_balance_event(event("M2", 1, "0"))
    assert fresh.decision.outcome == "zero_no_change" and fresh.decision.desired_state is None
    assert await repo.pending_commands(meter_id="M2") == []


async def test_duplicate_event_is_ignored(repo: Repository, db: Database) -> None:
    # (The same pair with other content: tests/test_balance_identity.py.)
    first = await repo.apply_balance_event(event("M1", 3, "-2", event_id="evt-1"))
    again = await repo.apply_balance_event(event("M1", 3, "-2", event_id="evt-1"))
    assert first.decision.outcome == "applied"
    assert again.duplicate
    assert again.event_row_id == first.event_row_id
    assert await count(db, BalanceEvent) == 1
    assert await count(db, Command) == 1
    # Copies are told apart by (meter_id, event_id): another id with the same content is stored.
    await repo.apply_balance_event(event("M2", 1, "5", event_id="evt-2"))
    other = await repo.apply_balance_event(event("M2", 1, "5", event_id="evt-3"))
    assert not other.duplicate and other.decision.outcome == "stale"
    assert await count(db, BalanceEvent, BalanceEvent.meter_id == "M2") == 2


async def test_concurrent_copies_of_one_event_are_applied_once(
    repo: Repository, db: Database
) -> None:
    outcomes = await asyncio.gather(
        *(repo.apply_balance_event(event("M1", 7, "-9", event_id="same")) for _ in range(8))
    )
    assert sorted(o.decision.outcome for o in outcomes) == ["applied"] + ["duplicate"] * 7
    assert await count(db, BalanceEvent) == 1
    assert await count(db, Command) == 1


async def test_direction_change_supersedes_the_active_command(repo: Repository) -> None:
    off = await repo.apply_balance_event(event("M1", 1, "-1"))
    assert off.command is not None
    sent = await repo.update_command(off.command.command_id, SEND, attempt=1)
    assert sent is not None and sent.status == "sent"
    on = await repo.apply_balance_event(event("M1", 2, "25"))
    assert [(s.command_id, s.action, s.status) for s in on.decision.superseded] == [
        (off.command.command_id, "disconnect", "superseded")
    ]
    assert on.decision.command is not None
    assert on.command is not None and on.command.action == "reconnect"
    old = await repo.get_command(off.command.command_id)
    assert old is not None and old.status == "superseded"
    assert old.last_error == on.decision.superseded[0].reason == "superseded by balance event seq 2"
    # The controller's late update of the superseded command is refused.
    assert await repo.update_command(off.command.command_id, FAIL) is None
    # Same direction again: the pending command stands, no new one.
    more = await repo.apply_balance_event(event("M1", 3, "40"))
    assert more.decision.outcome == "applied" and more.decision.command is None
    assert more.command is not None and more.command.command_id == on.command.command_id
    assert [c.command_id for c in await repo.pending_commands()] == [on.command.command_id]


async def test_no_command_when_the_meter_already_reads_back_the_desired_state(
    repo: Repository,
) -> None:
    await repo.record_relay_state("M1", "connected", True, "connected", ts=T0)
    outcome = await repo.apply_balance_event(event("M1", 1, "100"))
    assert outcome.decision.outcome == "applied"
    assert outcome.decision.desired_state == "connected"
    assert outcome.decision.command is None and outcome.command is None
    # ready_for_reconnection also satisfies "connected": the customer must press the button.
    await repo.record_relay_state("M2", "ready_for_reconnection", False, "ready_for_reconnection")
    assert (await repo.apply_balance_event(event("M2", 1, "5"))).decision.command is None


async def test_low_balance_notification_once_per_entry_into_the_band(repo: Repository) -> None:
    flags = []
    for seq, balance in enumerate(["50", "19.99", "10", "25", "5", "-1", "3", "4"], start=1):
        flags.append(
            (await repo.apply_balance_event(event("M1", seq, balance))).decision.low_balance
        )
    # ... a top-up from below zero into the band (-1 -> 3) included.
    assert flags == [False, True, False, False, True, False, True, False]
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.warning_active
    # A per-event threshold overrides the configured one.
    custom = await repo.apply_balance_event(event("M2", 1, "40", warning_threshold="50.00"))
    assert custom.decision.low_balance and custom.decision.threshold == Decimal("50.00")
    # ... even a threshold of 0, which warns of nothing (not "fall back to the configured").
    zero = await repo.apply_balance_event(event("M3", 1, "5", warning_threshold="0"))
    assert not zero.decision.low_balance and zero.decision.threshold == Decimal("0")
    meter = await repo.get_meter("M3")
    assert meter is not None and not meter.warning_active


async def test_unknown_meter_event_is_recorded_as_rejected(repo: Repository) -> None:
    outcome = await repo.apply_balance_event(event("GHOST", 1, "-5"), raw='{"balance": "-5"}')
    assert outcome.decision.outcome == "rejected" and "unknown meter" in outcome.decision.detail
    assert outcome.command is None
    # ... with its alarm, in the same transaction.
    assert outcome.alarm is not None and outcome.alarm.type == "bad_event"
    assert outcome.alarm.meter_id == "GHOST" and outcome.alarm.detail == outcome.decision.detail
    assert [a.id for a in await repo.list_alarms(meter_id="GHOST")] == [outcome.alarm.id]
    rows = await repo.balance_events("GHOST")
    assert rows[0]["outcome"] == "rejected" and rows[0]["raw"] == '{"balance": "-5"}'
    # A second copy of it is stored too (the raw record), without the event_id it repeats.
    again = await repo.apply_balance_event(event("GHOST", 1, "-5"), raw="copy")
    assert again.decision.outcome == "rejected" and again.alarm is not None
    rows = await repo.balance_events("GHOST")
    assert [(r["raw"], r["event_id"]) for r in rows] == [
        ("copy", None),
        ('{"balance": "-5"}', "GHOST-1--5"),
    ]
    nan = await repo.apply_balance_event(event("M1", 1, "NaN", event_id="n"))
    assert nan.decision.outcome == "rejected" and "finite" in nan.decision.detail
    assert nan.alarm is None
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.balance_seq is None and meter.desired_relay_state is None


async def test_bad_event_is_stored_raw_with_an_alarm(repo: Repository) -> None:
    event_row, alarm = await repo.record_balance_event(
        raw="{not json", detail="payload is not JSON", meter_id="M1"
    )
    assert event_row > 0 and alarm is not None and alarm.type == "bad_event"
    assert (await repo.balance_events("M1"))[0]["raw"] == "{not json"
    assert [a.type for a in await repo.list_alarms(meter_id="M1")] == ["bad_event"]


# -- commands, relay states, alarms -------------------------------------------------------------


async def test_command_lifecycle_to_confirmation(repo: Repository) -> None:
    outcome = await repo.apply_balance_event(event("M1", 1, "-10"))
    assert outcome.command is not None
    command_id = outcome.command.command_id
    retry_at = T0 + timedelta(minutes=5)
    failed = await repo.update_command(
        command_id, FAIL, attempt=1, next_attempt_at=retry_at, last_error="timeout"
    )
    assert failed is not None and failed.active and failed.last_error == "timeout"
    assert await repo.pending_commands(due_before=T0) == []
    assert len(await repo.pending_commands(due_before=retry_at)) == 1
    confirmation = await repo.confirm_command(
        command_id,
        state="disconnected",
        output_state=False,
        control_state="disconnected",
        reason="read back",
    )
    assert confirmation is not None and confirmation.previous_state is None
    done = confirmation.command
    assert done is not None and done.status == "confirmed" and not done.active
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.confirmed_relay_state == "disconnected"
    assert meter.confirmed_output_state is False
    history = await repo.relay_history("M1")
    assert history[0].command_id == command_id and history[0].state == "disconnected"
    assert await repo.pending_commands() == []
    again = await repo.confirm_command(
        command_id, state="disconnected", output_state=False, control_state="disconnected"
    )
    assert again is not None and again.command is None  # no longer active: not confirmed twice
    assert again.previous_state == "disconnected"
    assert len(await repo.relay_history("M1")) == 2  # what the meter said is kept all the same
    assert (
        await repo.confirm_command(
            "no-such-command", state="disconnected", output_state=False, control_state=None
        )
        is None
    )


async def test_older_read_back_does_not_overwrite_the_confirmed_state(repo: Repository) -> None:
    await repo.record_relay_state("M1", "disconnected", False, "disconnected", ts=T0)
    await repo.record_relay_state("M1", "connected", True, "connected", ts=T0 - timedelta(hours=1))
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.confirmed_relay_state == "disconnected"
    assert len(await repo.relay_history("M1")) == 2
    with pytest.raises(ValueError):
        await repo.record_relay_state("M1", "half-open", None)
    with pytest.raises(UnknownMeter):
        await repo.record_relay_state("NOPE", "connected", True)


async def test_overdue_escalation_happens_once_and_retries_go_on(repo: Repository) -> None:
    outcome = await repo.apply_balance_event(event("M1", 1, "-10"))
    assert outcome.command is not None
    later = datetime.now(UTC) + timedelta(hours=1)
    overdue = await repo.overdue_commands(later)
    assert [c.command_id for c in overdue] == [outcome.command.command_id]
    escalated = await repo.escalate_command(outcome.command.command_id, "not confirmed in 30 min")
    assert escalated is not None
    command, alarm = escalated
    assert command.status == "escalated" and command.active and command.overdue_alarm_raised
    assert alarm.type == "relay_command_overdue" and alarm.meter_id == "M1"
    assert await repo.escalate_command(outcome.command.command_id, "again") is None
    assert await repo.overdue_commands(later) == []
    assert [c.status for c in await repo.pending_commands()] == ["escalated"]
    # Retries go on and the escalation stands (the lifecycle's CASE, applied in one UPDATE).
    for step, attempt in ((SEND, 1), (FAIL, None), (SEND, 2)):
        moved = await repo.update_command(outcome.command.command_id, step, attempt=attempt)
        assert moved is not None and moved.status == "escalated" and moved.active
    assert moved.attempt == 2
    done = await repo.confirm_command(
        outcome.command.command_id, state="disconnected", output_state=False, control_state=None
    )
    assert done is not None and done.command is not None and done.command.status == "confirmed"


async def test_operator_command_and_startup_reconcile(repo: Repository) -> None:
    command, superseded = await repo.create_command(
        "M1", "disconnect", source="operator", reason="tamper"
    )
    assert superseded == () and command.source == "operator"
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.desired_relay_state == "disconnected"
    second, superseded = await repo.create_command("M1", "reconnect", reason="resolved")
    assert superseded == (command.command_id,)
    with pytest.raises(UnknownMeter):
        await repo.create_command("NOPE", "reconnect")
    with pytest.raises(ValueError):
        await repo.create_command("M1", "explode")
    # Start-up: M2 wants to be disconnected but has no command (and read back connected).
    await repo.apply_balance_event(event("M2", 1, "-1"))
    pending = await repo.pending_commands(meter_id="M2")
    await repo.update_command(pending[0].command_id, FAIL)
    async with repo.db.transaction() as session:  # simulate a lost command
        await session.execute(
            text("UPDATE commands SET status = 'superseded' WHERE meter_id = 'M2'")
        )
    await repo.record_relay_state("M2", "connected", True, "connected")
    created = await repo.reconcile_commands()
    assert [(c.meter_id, c.action, c.source) for c in created] == [("M2", "disconnect", "startup")]
    assert await repo.reconcile_commands() == []  # M1 and M2 have active commands now
    assert second.command_id in {c.command_id for c in await repo.pending_commands()}


async def test_one_active_command_per_meter_is_enforced_by_the_database(
    repo: Repository, db: Database
) -> None:
    from sqlalchemy.exc import IntegrityError

    await repo.create_command("M1", "disconnect")
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            session.add(
                Command(
                    command_id="manual",
                    meter_id="M1",
                    action="reconnect",
                    status="queued",
                    source="operator",
                    created_at=T0,
                    updated_at=T0,
                )
            )
    assert await count(db, Command, Command.status.in_(ACTIVE_COMMAND_STATUSES)) == 1


async def test_alarms_dedupe_list_and_clear(repo: Repository) -> None:
    first = await repo.raise_alarm("meter_unreachable", "M1", "timeout x3")
    assert first is not None
    assert await repo.raise_alarm("meter_unreachable", "M1", "timeout x4") is None
    assert await repo.raise_alarm("meter_unreachable", "M2", "timeout") is not None
    assert await repo.raise_alarm("broker_down", None, "x") is not None
    assert await repo.raise_alarm("broker_down", None, "y") is None
    assert len(await repo.list_alarms()) == 3
    assert await repo.clear_alarms("meter_unreachable", "M1") == 1
    assert [a.meter_id for a in await repo.list_alarms(meter_id="M1")] == []
    assert len(await repo.list_alarms(active_only=False, meter_id="M1")) == 1
    assert await repo.raise_alarm("meter_unreachable", "M1", "again") is not None


async def test_fleet_summary(repo: Repository) -> None:
    await repo.apply_balance_event(event("M1", 1, "-1"))
    await repo.record_relay_state("M2", "connected", True, "connected")
    await repo.raise_alarm("meter_unreachable", "M3")
    await repo.store_readings([ReadingRow("M2", "1.0.1.8.0.255", T0, 1.0)])
    summary = await repo.fleet_summary()
    assert summary.meters == 3
    assert summary.relay_states == {"unknown": 2, "connected": 1}
    assert summary.desired_disconnected == 1
    assert summary.active_commands == 1 and summary.escalated_commands == 0
    assert summary.active_alarms == 1
    assert summary.last_reading_at == T0


async def test_capabilities_are_cached(repo: Repository) -> None:
    await repo.save_capabilities("M1", {"disconnect_control": True, "objects": ["a"]}, 4)
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.control_mode == 4
    assert meter.capabilities == {"disconnect_control": True, "objects": ["a"]}
    with pytest.raises(UnknownMeter):
        await repo.save_capabilities("NOPE", {})


# -- invocation counters ------------------------------------------------------------------------


async def test_invocation_counters_are_never_reused_under_concurrency(repo: Repository) -> None:
    async def reserve(n: int) -> tuple[int, int]:
        first = await repo.reserve_invocation_counter("M1", n)
        return first, n

    ranges = await asyncio.gather(*(reserve(1 + i % 4) for i in range(40)))
    used: list[int] = []
    for first, n in ranges:
        used.extend(range(first, first + n))
    assert len(used) == len(set(used)) == sum(n for _, n in ranges)
    assert sorted(used) == list(range(1, 1 + len(used)))  # dense: nothing skipped or repeated
    # Sequential reservations are strictly increasing; other keys/meters are independent.
    a = await repo.reserve_invocation_counter("M1")
    b = await repo.reserve_invocation_counter("M1")
    assert b > a > max(used)
    assert await repo.reserve_invocation_counter("M1", key_id="broadcast") == 1
    assert await repo.reserve_invocation_counter("M2") == 1


async def test_invocation_counter_floor_and_exhaustion(repo: Repository) -> None:
    assert await repo.reserve_invocation_counter("M1", 10, at_least=1000) == 1000
    assert await repo.reserve_invocation_counter("M1", 1, at_least=5) == 1010
    store = invocation_counter_store(repo, "M2")
    assert await store.reserve(100) == 1 and await store.reserve(1) == 101
    await repo.reserve_invocation_counter("M3", 1, at_least=0xFFFFFFFF)
    with pytest.raises(InvocationCounterExhausted):
        await repo.reserve_invocation_counter("M3", 1)
    with pytest.raises(ValueError):
        await repo.reserve_invocation_counter("M3", 0)


async def test_invocation_counter_survives_meter_removal(repo: Repository, db: Database) -> None:
    first = await repo.reserve_invocation_counter("M1", 50)
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM meters WHERE meter_id = 'M1'"))
    await add_meters(db, "M1")
    assert await repo.reserve_invocation_counter("M1") == first + 50


# -- crash consistency --------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from decimal import Decimal
    from headend.balance_event import BalanceEvent
    from headend.storage import Database, ReadingRow, Repository
    from datetime import datetime, timedelta, UTC

    async def main():
        db = Database(sys.argv[1])
        repo = Repository(db)
        print("ready", flush=True)
        seq = 0
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        while True:
            seq += 1
            for m in ("M1", "M2", "M3"):
                balance = Decimal(seq % 7 - 3)
                event = BalanceEvent(
                    meter_id=m, balance=balance, currency="CNY", seq=seq,
                    event_id=f"{m}-{seq}", ts=t0,
                )
                await repo.apply_balance_event(event)
                await repo.reserve_invocation_counter(m, 5)
            await repo.store_readings(
                ReadingRow(m, "1.0.1.8.0.255", t0 + timedelta(minutes=seq), float(seq))
                for m in ("M1", "M2", "M3")
            )
            print("seq", seq, flush=True)

    asyncio.run(main())
    """
)


async def test_kill_9_leaves_a_consistent_database(tmp_path: Path) -> None:
    async with temp_database("sqlite", tmp_path) as db:
        await add_meters(db, "M1", "M2", "M3")
        url = db.url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        url,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
        # Let it get well into its work (and mid-transaction, most likely), then kill it.
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "writer exited early"
            if int(line.split()[1]) >= 20:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    async with temp_database("sqlite", tmp_path, migrate=False) as db:
        async with db.session() as session:
            for meter in await session.scalars(select(Meter)):
                applied = await session.scalar(
                    select(func.max(BalanceEvent.seq)).where(
                        BalanceEvent.meter_id == meter.meter_id,
                        BalanceEvent.outcome.in_(("applied", "zero_no_change")),
                    )
                )
                # The meter's state is exactly that of its newest applied event.
                assert meter.balance_seq == applied
                newest = await session.scalar(
                    select(BalanceEvent).where(
                        BalanceEvent.meter_id == meter.meter_id, BalanceEvent.seq == applied
                    )
                )
                assert newest is not None and meter.last_balance == newest.balance
                active = list(
                    await session.scalars(
                        select(Command).where(
                            Command.meter_id == meter.meter_id,
                            Command.status.in_(ACTIVE_COMMAND_STATUSES),
                        )
                    )
                )
                assert len(active) <= 1
                if meter.desired_relay_state is not None:
                    wanted = (
                        "disconnect" if meter.desired_relay_state == "disconnected" else "reconnect"
                    )
                    assert [c.action for c in active] == [wanted]
            # Every event that says it created a command has that command.
            orphans = await session.scalar(
                select(func.count())
                .select_from(BalanceEvent)
                .where(
                    BalanceEvent.command_id.is_not(None),
                    BalanceEvent.command_id.not_in(select(Command.command_id)),
                )
            )
            assert orphans == 0
        # Counters continue past everything reserved before the kill.
        repo = Repository(db)
        async with db.session() as session:
            stored = int(
                await session.scalar(
                    text("SELECT value FROM invocation_counters WHERE meter_id='M1'")
                )
            )
        assert await repo.reserve_invocation_counter("M1") == stored
