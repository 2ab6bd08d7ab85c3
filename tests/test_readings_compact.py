"""Compact readings on real SQLite and PostgreSQL: monthly partitions made as rows need them,
retention dropping old months (PostgreSQL) or old rows (SQLite), a removed meter's readings
going with it, and migration 0003 moving readings stored under revision 0002."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from db_support import DIALECTS, temp_database
from sqlalchemy import func, select, text
from test_storage import add_meters

from headend.config import ConfigError, load_config
from headend.storage import Database, ReadingRow, Repository
from headend.storage.db import migrate
from headend.storage.models import MeterKey, Reading, Register
from headend.storage.partitions import month_start
from headend.storage.retention import ReadingRetention

JAN = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
FEB = datetime(2026, 2, 15, 8, 0, tzinfo=UTC)
MAR = datetime(2026, 3, 15, 8, 0, tzinfo=UTC)
ENERGY = "1.0.1.8.0.255"


@pytest.fixture(params=DIALECTS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temp_database(request.param, tmp_path) as database:
        await add_meters(database, "M1", "M2")
        yield database


async def rows_in(db: Database, model: type) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_units_are_stored_once_per_register_and_readings_come_back_whole(
    db: Database,
) -> None:
    repo = Repository(db)
    rows = [
        ReadingRow(meter, ENERGY, JAN + timedelta(minutes=15 * i), 100.0 + i, "Wh")
        for meter in ("M1", "M2")
        for i in range(10)
    ] + [ReadingRow("M1", "0.0.96.1.0.255", JAN, "SN-1")]
    assert await repo.store_readings(rows) == 21
    assert await rows_in(db, Register) == 2  # one row per (obis, unit), not per reading
    assert await rows_in(db, MeterKey) == 2
    stored = await repo.readings("M1", obis=ENERGY)
    assert [(r.ts, r.value, r.unit) for r in stored[:2]] == [
        (JAN, 100.0, "Wh"),
        (JAN + timedelta(minutes=15), 101.0, "Wh"),
    ]
    latest = await repo.latest_readings("M1")
    assert latest["0.0.96.1.0.255"].value == "SN-1" and latest["0.0.96.1.0.255"].unit is None
    assert latest[ENERGY].ts == JAN + timedelta(minutes=135)
    # The unit changed (a new register): the newest value of the OBIS code still wins.
    await repo.store_readings([ReadingRow("M1", ENERGY, FEB, 0.5, "kWh")])
    assert (await repo.latest_readings("M1"))[ENERGY].unit == "kWh"
    assert await repo.latest_readings("NOBODY") == {}


async def test_month_partitions_are_made_as_rows_need_them_and_retention_drops_old_ones(
    db: Database,
) -> None:
    repo = Repository(db)
    for month in (JAN, FEB, MAR):
        await repo.store_readings(ReadingRow(m, ENERGY, month, 1.0, "Wh") for m in ("M1", "M2"))
    partitions = repo.reading_partitions
    if db.dialect == "postgresql":
        assert set(await partitions.existing()) == {month_start(t) for t in (JAN, FEB, MAR)}
    # Keep 40 days on April 1st (cutoff February 20th): on PostgreSQL January's partition
    # goes, February's stays (partly younger: retention is by whole month); SQLite deletes
    # every row older than the cutoff, January's and February 15th's.
    retention = ReadingRetention(partitions, 40, clock=lambda: datetime(2026, 4, 1, tzinfo=UTC))
    dropped = await retention.round()
    kept = {r.ts for r in await repo.readings("M1")}
    if db.dialect == "postgresql":
        assert dropped == 1
        assert set(await partitions.existing()) == {
            month_start(t) for t in (FEB, MAR, datetime(2026, 4, 1), datetime(2026, 5, 1))
        }  # and April and May were made ahead
        assert kept == {FEB, MAR}
    else:
        assert dropped == 4
        assert kept == {MAR}
    # A reading for a dropped month can be stored again (its partition is made again).
    assert await repo.store_readings([ReadingRow("M1", ENERGY, JAN, 2.0, "Wh")]) == 1


async def test_retention_zero_keeps_everything(db: Database) -> None:
    repo = Repository(db)
    await repo.store_readings([ReadingRow("M1", ENERGY, JAN, 1.0, "Wh")])
    retention = ReadingRetention(repo.reading_partitions, 0, clock=lambda: JAN.replace(year=2030))
    assert await retention.round() == 0
    assert await rows_in(db, Reading) == 1


async def test_a_removed_meter_takes_its_readings_along(db: Database) -> None:
    repo = Repository(db)
    await repo.store_readings(ReadingRow(m, ENERGY, JAN, 1.0, "Wh") for m in ("M1", "M2"))
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM meters WHERE meter_id = 'M1'"))
    assert await rows_in(db, Reading) == 1
    await add_meters(db, "M1")  # added again: a new key, none of the old readings
    assert await repo.readings("M1") == []
    assert await repo.store_readings([ReadingRow("M1", ENERGY, JAN, 3.0, "Wh")]) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_migration_moves_readings_stored_in_the_old_table(
    dialect: str, tmp_path: Path
) -> None:
    async with temp_database(dialect, tmp_path, migrate=False) as db:
        # The revision before 0005_readings_compact: readings as 0001 made them.
        await migrate(db.engine, revision="0004_prepaid")
        await add_meters(db, "M1", "M2")
        old = [
            ("M1", ENERGY, JAN, 10.5, None, "Wh"),
            ("M1", ENERGY, FEB, 11.5, None, "Wh"),
            ("M1", "0.0.96.3.10.255", JAN, None, "true", None),
            ("M2", ENERGY, FEB, 7.0, None, "kWh"),
            ("M2", "0.0.96.1.0.255", MAR, None, '"SN-2"', None),
        ]
        async with db.transaction() as session:
            for meter, obis, ts, number, text_value, unit in old:
                await session.execute(
                    text(
                        "INSERT INTO readings (meter_id, obis, ts, value_num, value_text, unit) "
                        "VALUES (:m, :o, :ts, :n, :t, :u)"
                    ),
                    {
                        "m": meter,
                        "o": obis,
                        "ts": ts.replace(tzinfo=None).isoformat(" ", "microseconds")
                        if dialect == "sqlite"
                        else ts,
                        "n": number,
                        "t": text_value,
                        "u": unit,
                    },
                )
        await db.migrate()
        repo = Repository(db)
        m1 = await repo.readings("M1")
        assert [(r.obis, r.ts, r.value, r.unit) for r in m1] == [
            ("0.0.96.3.10.255", JAN, True, None),
            (ENERGY, JAN, 10.5, "Wh"),
            (ENERGY, FEB, 11.5, "Wh"),
        ]
        m2 = await repo.latest_readings("M2")
        assert m2[ENERGY].value == 7.0 and m2[ENERGY].unit == "kWh"
        assert m2["0.0.96.1.0.255"].value == "SN-2" and m2["0.0.96.1.0.255"].ts == MAR
        assert await rows_in(db, Register) == 4  # (energy, Wh), (energy, kWh), two unitless
        # Stored once still: the same readings again are not duplicated.
        assert await repo.store_readings([ReadingRow("M1", ENERGY, JAN, 10.5, "Wh")]) == 0
        if dialect == "postgresql":
            parts = await repo.reading_partitions.existing()
            assert set(parts) == {month_start(t) for t in (JAN, FEB, MAR)}


def test_retention_days_is_a_storage_setting(tmp_path: Path) -> None:
    path = tmp_path / "headend.toml"
    path.write_text("[storage]\nretention_days = 400\n")
    assert load_config(path, {}).storage.retention_days == 400
    assert load_config(None, {}).storage.retention_days == 0
    path.write_text("[storage]\nretention_days = -1\n")
    with pytest.raises(ConfigError, match=r"^storage\.retention_days: must be >= 0"):
        load_config(path, {})
