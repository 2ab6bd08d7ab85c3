"""Event identity and sequence on real SQLite and PostgreSQL (issue 9, "Silent losses"):
an event is (meter_id, event_id): a copy is a duplicate, the same pair with other content is a
`conflicting_event`, the same id for another meter is another event. A seq that is not newer
is never applied, and raises `stale_event` when its ts is newer than the last applied one's;
`reset_balance_seq` (the CLI's `meters reset-seq`) lets the next event apply."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from db_support import DIALECTS, temp_database
from sqlalchemy import func, select
from typer.testing import CliRunner

from headend.balance_event import BalanceEvent
from headend.cli.app import app
from headend.storage import Database, Repository, UnknownMeter
from headend.storage.models import BalanceEvent as EventRow
from headend.storage.models import Command, Meter, OperatorAction

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@pytest.fixture(params=DIALECTS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temp_database(request.param, tmp_path) as database:
        yield database


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
                    line=f"tcp:{meter_id}",
                    created_at=T0,
                    updated_at=T0,
                )
            )


@pytest.fixture
async def repo(db: Database) -> Repository:
    await add_meters(db, "M1", "M2")
    return Repository(db, warning_threshold=Decimal("20.00"))


def event(meter_id: str, seq: int, balance: str, event_id: str, **changes: Any) -> BalanceEvent:
    base = BalanceEvent(
        meter_id=meter_id,
        balance=Decimal(balance),
        currency="CNY",
        seq=seq,
        event_id=event_id,
        ts=T0 + timedelta(seconds=seq),
    )
    return replace(base, **changes)


async def rows(db: Database, model: type, *where: Any) -> int:
    async with db.session() as session:
        stmt = select(func.count()).select_from(model)
        for clause in where:
            stmt = stmt.where(clause)
        return int(await session.scalar(stmt) or 0)


async def test_same_pair_same_content_is_a_duplicate(repo: Repository, db: Database) -> None:
    first = await repo.apply_balance_event(event("M1", 3, "-2.00", "evt-1"))
    copy = await repo.apply_balance_event(event("M1", 3, "-2.00", "evt-1"))
    # The same amount written otherwise is the same content.
    rewritten = await repo.apply_balance_event(event("M1", 3, "-2", "evt-1"))
    assert first.decision.outcome == "applied"
    assert copy.duplicate and rewritten.duplicate and copy.alarm is None
    assert copy.event_row_id == first.event_row_id
    assert await rows(db, EventRow) == 1 and await rows(db, Command) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 4},
        {"balance": Decimal("25")},
        {"currency": "EUR"},
        {"ts": T0 + timedelta(hours=1)},
        {"warning_threshold": Decimal("5")},
    ],
    ids=lambda c: next(iter(c)),
)
async def test_same_pair_other_content_is_conflicting_and_not_applied(
    repo: Repository, db: Database, change: dict[str, Any]
) -> None:
    first = await repo.apply_balance_event(event("M1", 3, "-2", "evt-1"))
    assert first.command is not None
    copy = replace(event("M1", 3, "-2", "evt-1"), **change)
    other = await repo.apply_balance_event(copy, raw="second")
    assert other.decision.outcome == "conflicting" and not other.duplicate
    name = next(iter(change))
    assert f"{name} differ" in other.decision.detail and "evt-1" in other.decision.detail
    assert other.decision.command is None and other.decision.meter is None
    assert other.alarm is not None and other.alarm.type == "conflicting_event"
    assert other.alarm.meter_id == "M1" and other.alarm.detail == other.decision.detail
    # Stored (raw and all) without the pair, which stays the first event's; nothing applied.
    stored = await repo.balance_events("M1")
    assert [(r["outcome"], r["event_id"], r["raw"]) for r in stored] == [
        ("conflicting", None, "second"),
        ("applied", "evt-1", None),
    ]
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.balance_seq == 3 and meter.last_balance == Decimal("-2")
    assert [c.command_id for c in await repo.pending_commands()] == [first.command.command_id]
    assert [a.type for a in await repo.list_alarms(meter_id="M1")] == ["conflicting_event"]
    # A third copy conflicts again; a copy of the first is still a duplicate.
    assert (await repo.apply_balance_event(event("M1", 9, "50", "evt-1"))).alarm is not None
    assert (await repo.apply_balance_event(event("M1", 3, "-2", "evt-1"))).duplicate


async def test_same_event_id_for_another_meter_is_another_event(
    repo: Repository, db: Database
) -> None:
    await repo.apply_balance_event(event("M1", 1, "-2", "shared"))
    other = await repo.apply_balance_event(event("M2", 1, "-7", "shared"))
    assert other.decision.outcome == "applied" and other.alarm is None
    assert other.command is not None and other.command.meter_id == "M2"
    meter = await repo.get_meter("M2")
    assert meter is not None and meter.last_balance == Decimal("-7")
    assert await rows(db, EventRow, EventRow.event_id == "shared") == 2


async def test_an_event_never_judged_gives_its_pair_to_a_later_copy(
    repo: Repository, db: Database
) -> None:
    # A payload refused (it kept its usable event_id), then billing resends it corrected.
    await repo.record_balance_event(raw="{bad", detail="not JSON", meter_id="M1", event_id="e1")
    fixed = await repo.apply_balance_event(event("M1", 1, "-2", "e1"))
    assert fixed.decision.outcome == "applied" and fixed.command is not None
    # An event for a meter not yet in the inventory, resent once it was imported.
    ghost = await repo.apply_balance_event(event("M3", 1, "-4", "e2"))
    assert ghost.decision.outcome == "rejected"
    await add_meters(db, "M3")
    again = await repo.apply_balance_event(event("M3", 1, "-4", "e2"))
    assert again.decision.outcome == "applied" and again.command is not None
    held = {
        (r["outcome"], r["event_id"]) for m in ("M1", "M3") for r in await repo.balance_events(m)
    }
    assert held == {("rejected", None), ("applied", "e1"), ("applied", "e2")}


async def test_a_stale_seq_with_a_newer_ts_raises_stale_event(repo: Repository) -> None:
    await repo.apply_balance_event(event("M1", 100, "-5", "a", ts=T0))
    # Older seq, older or equal ts: out of order, as billing's retries go; no alarm.
    late = await repo.apply_balance_event(event("M1", 99, "30", "b", ts=T0 - timedelta(1)))
    same = await repo.apply_balance_event(event("M1", 100, "30", "c", ts=T0))
    assert (late.decision.outcome, late.alarm) == ("stale", None)
    assert (same.decision.outcome, same.alarm) == ("stale", None)
    # Older seq, newer ts: billing's sequence went back; a person is told, nothing applied.
    reset = await repo.apply_balance_event(event("M1", 1, "30", "d", ts=T0 + timedelta(hours=2)))
    assert reset.decision.outcome == "stale" and reset.decision.command is None
    assert reset.alarm is not None and reset.alarm.type == "stale_event"
    assert "seq 1 is not newer than the last applied 100" in reset.alarm.detail
    assert "reset-seq" in reset.alarm.detail and "event_id d" in reset.alarm.detail
    meter = await repo.get_meter("M1")
    assert (
        meter is not None
        and meter.balance_seq == 100
        and meter.desired_relay_state == ("disconnected")
    )
    # Each such event is one more payment not applied: each one is alarmed.
    more = await repo.apply_balance_event(event("M1", 2, "30", "e", ts=T0 + timedelta(hours=3)))
    assert more.alarm is not None and more.alarm.type == "stale_event"


async def test_reset_seq_lets_the_next_event_apply(repo: Repository, db: Database) -> None:
    await repo.apply_balance_event(event("M1", 100, "-5", "a", ts=T0))
    await repo.apply_balance_event(event("M1", 1, "30", "b", ts=T0 + timedelta(hours=1)))
    assert [a.type for a in await repo.list_alarms(meter_id="M1")] == ["stale_event"]

    assert await repo.reset_balance_seq("M1", "billing restored a backup (ticket 42)") == 100
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.balance_seq is None
    assert meter.last_balance == Decimal("-5")  # the balance stands until an event says else
    assert await repo.list_alarms(meter_id="M1") == []  # the stale_event alarm is settled
    async with db.session() as session:
        (action,) = (await session.scalars(select(OperatorAction))).all()
    assert (action.meter_id, action.action) == ("M1", "reset_seq")
    assert action.reason == "billing restored a backup (ticket 42)"
    assert "100" in (action.detail or "")

    nxt = await repo.apply_balance_event(event("M1", 2, "30", "c", ts=T0 + timedelta(hours=2)))
    assert nxt.decision.outcome == "applied" and nxt.command is not None
    assert nxt.command.action == "reconnect"
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.balance_seq == 2
    assert await repo.reset_balance_seq("M2", "never had a balance") is None
    with pytest.raises(UnknownMeter):
        await repo.reset_balance_seq("NOPE", "typo")


def test_reset_seq_command_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    async def prepare() -> None:
        async with await Database.open(url) as db:
            await add_meters(db, "M1")
            await Repository(db).apply_balance_event(event("M1", 9, "-1", "a"))

    asyncio.run(prepare())
    env = {"HEADEND_DATABASE_URL": url}
    runner = CliRunner(mix_stderr=False)
    ok = runner.invoke(app, ["meters", "reset-seq", "M1", "--reason", "backup restored"], env=env)
    assert ok.exit_code == 0, ok.stderr
    assert "last applied seq: 9" in ok.stdout
    again = runner.invoke(
        app, ["meters", "reset-seq", "M1", "--reason", "again", "--json"], env=env
    )
    assert json.loads(again.stdout) == {"meter_id": "M1", "previous_seq": None}
    no_reason = runner.invoke(app, ["meters", "reset-seq", "M1", "--reason", " "], env=env)
    assert no_reason.exit_code == 2 and "--reason" in no_reason.stderr
    unknown = runner.invoke(app, ["meters", "reset-seq", "NOPE", "--reason", "x"], env=env)
    assert unknown.exit_code == 1 and "no meter 'NOPE'" in unknown.stderr
