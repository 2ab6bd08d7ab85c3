"""The worst offenders in `headend status` (storage/offenders.py), on real SQLite and PostgreSQL:
the meters behind the fleet-wide metrics, worst first, and nothing listed for a healthy one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from db_support import DIALECTS, temp_database
from sqlalchemy import update
from test_balance_identity import add_meters

from headend import domain
from headend.balance_event import BalanceEvent
from headend.status import status_report
from headend.storage import Database, Repository
from headend.storage.core import COMMANDS, METERS
from headend.storage.counters import IC_MAX
from headend.storage.offenders import worst_offenders

NOW = datetime.now(UTC).replace(microsecond=0)
STALE = timedelta(minutes=30)


@pytest.fixture(params=DIALECTS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temp_database(request.param, tmp_path) as database:
        yield database


async def _read_at(db: Database, meter_id: str, at: datetime) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(METERS).where(METERS.c.meter_id == meter_id).values(last_reading_at=at)
        )


async def test_a_healthy_fleet_has_no_offenders(db: Database) -> None:
    await add_meters(db, "M1", "M2")
    for meter_id in ("M1", "M2"):
        await _read_at(db, meter_id, NOW - timedelta(minutes=1))
    offenders = await worst_offenders(db, NOW, stale_after=STALE)
    assert offenders.as_dict() == {
        "silent": [],
        "stuck_commands": [],
        "counters": [],
        "alarming": [],
    }


async def test_the_worst_of_each_kind_come_first(db: Database) -> None:
    await add_meters(db, "FRESH", "NEVER", "OLD", "OLDER", "COUNTED")
    await _read_at(db, "FRESH", NOW - timedelta(minutes=1))
    await _read_at(db, "OLD", NOW - timedelta(hours=2))
    await _read_at(db, "OLDER", NOW - timedelta(days=3))
    await _read_at(db, "COUNTED", NOW - timedelta(minutes=1))
    repo = Repository(db, warning_threshold=Decimal("20"))
    await repo.raise_alarm(domain.METER_UNREACHABLE, "OLDER", "5 polls failed in a row; last: x")
    await repo.raise_alarm(domain.RELAY_COMMAND_FAILED, "OLDER", "timeout")
    await repo.raise_alarm(domain.RELAY_COMMAND_FAILED, "OLD", "timeout")
    # Relay commands: OLD failed 4 times, OLDER once, FRESH is on its first attempt (not stuck).
    for meter_id, status, attempts in (
        ("OLD", "sent", 4),
        ("OLDER", "failed", 1),
        ("FRESH", "sent", 1),
    ):
        event = BalanceEvent(meter_id, Decimal("-5"), "CNY", 1, f"e-{meter_id}", NOW)
        assert (await repo.apply_balance_event(event)).command is not None
        async with db.transaction() as session:
            await session.execute(
                update(COMMANDS)
                .where(COMMANDS.c.meter_id == meter_id)
                .values(status=status, attempt=attempts, last_error="timeout")
            )
    # Invocation counters: COUNTED has used most of its range.
    await repo.reserve_invocation_counter("COUNTED", at_least=IC_MAX - 1000)
    await repo.reserve_invocation_counter("OLD", at_least=10)

    worst = (await worst_offenders(db, NOW, stale_after=STALE, limit=10)).as_dict()

    assert [(r["meter_id"], r["unreachable"]) for r in worst["silent"]] == [
        ("NEVER", None),
        ("OLDER", "5 polls failed in a row; last: x"),
        ("OLD", None),
    ]
    assert worst["silent"][0]["last_reading_at"] is None
    assert [(r["meter_id"], r["attempt"]) for r in worst["stuck_commands"]] == [
        ("OLD", 4),
        ("OLDER", 1),
    ]
    assert worst["stuck_commands"][0]["action"] == "disconnect"
    counted, old = worst["counters"]
    assert counted["meter_id"] == "COUNTED" and counted["headroom"] < 1000
    assert counted["used_percent"] > 99.99
    assert old["meter_id"] == "OLD" and old["headroom"] > IC_MAX - 100
    assert worst["alarming"] == [
        {
            "meter_id": "OLDER",
            "active_alarms": 2,
            "types": [domain.METER_UNREACHABLE, domain.RELAY_COMMAND_FAILED],
        },
        {"meter_id": "OLD", "active_alarms": 1, "types": [domain.RELAY_COMMAND_FAILED]},
    ]
    # Bounded: the limit holds for every list.
    short = (await worst_offenders(db, NOW, stale_after=STALE, limit=1)).as_dict()
    assert {k: len(v) for k, v in short.items()} == {
        "silent": 1,
        "stuck_commands": 1,
        "counters": 1,
        "alarming": 1,
    }
    # `headend status --json` carries them as they are (plain JSON). The report opens the
    # database by its URL: on PostgreSQL the test's schema is not in it.
    if db.dialect == "sqlite":
        report = await status_report(db.url, stale_after_s=STALE.total_seconds())
        assert json.loads(json.dumps(report["worst"])) == worst
