"""Compact readings: integer keys for the meter (meter_keys) and the register (registers: the
OBIS code and its unit, once), no surrogate id, the timestamp in 8 bytes; partitioned by month
on PostgreSQL. Existing readings are moved over.

The rows go through a plain staging table (readings_moving): the new table takes the old one's
name, and on PostgreSQL its constraint and index names too, so the old table is dropped before
the new one is created.

Revision ID: 0005_readings_compact
Revises: 0004_prepaid
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from headend.storage.partitions import create_partition_sql

revision: str = "0005_readings_compact"
down_revision: str | None = "0004_prepaid"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STAGING = "readings_moving"
_METERS_FILLFACTOR = 70
# SQLite: UtcDateTime's text ("2026-01-01 00:00:00.000000") <-> microseconds since 1970.
_SQLITE_TEXT_TO_MICROS = (
    "(CAST(strftime('%s', r.ts) AS INTEGER) * 1000000 + CAST(substr(r.ts, 21, 6) AS INTEGER))"
)
_SQLITE_MICROS_TO_TEXT = (
    "(strftime('%Y-%m-%d %H:%M:%S', r.ts / 1000000, 'unixepoch') || '.' || "
    "printf('%06d', r.ts % 1000000))"
)


# A meter removed (meters -> meter_keys by ON DELETE CASCADE) takes its readings along. A
# trigger rather than a foreign key on readings: a foreign key is checked for every inserted
# reading, this runs only when a meter goes.
_PG_CASCADE_FUNCTION = """
CREATE FUNCTION readings_of_removed_meter() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM readings WHERE meter_key = OLD.id;
    RETURN OLD;
END
$$
"""
_PG_CASCADE_TRIGGER = (
    "CREATE TRIGGER meter_keys_remove_readings AFTER DELETE ON meter_keys "
    "FOR EACH ROW EXECUTE FUNCTION readings_of_removed_meter()"
)
_SQLITE_CASCADE_TRIGGER = (
    "CREATE TRIGGER meter_keys_remove_readings AFTER DELETE ON meter_keys "
    "BEGIN DELETE FROM readings WHERE meter_key = OLD.id; END"
)


def _postgresql() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    op.create_table(
        "registers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("obis", sa.String(length=32), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registers")),
        sa.UniqueConstraint("obis", "unit", name=op.f("uq_registers_obis_unit")),
    )
    op.create_table(
        "meter_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("meter_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["meter_id"],
            ["meters.meter_id"],
            name=op.f("fk_meter_keys_meter_id_meters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_keys")),
        sa.UniqueConstraint("meter_id", name=op.f("uq_meter_keys_meter_id")),
        sqlite_autoincrement=True,
    )
    op.execute(
        "INSERT INTO meter_keys (meter_id) SELECT DISTINCT meter_id FROM readings ORDER BY 1"
    )
    op.execute(
        "INSERT INTO registers (obis, unit) "
        "SELECT DISTINCT obis, coalesce(unit, '') FROM readings ORDER BY 1, 2"
    )
    ts = "r.ts" if _postgresql() else _SQLITE_TEXT_TO_MICROS
    op.execute(
        f"CREATE TABLE {_STAGING} AS "
        f"SELECT k.id AS meter_key, g.id AS register_id, {ts} AS ts, "
        "r.value_num AS value_num, r.value_text AS value_text FROM readings r "
        "JOIN meter_keys k ON k.meter_id = r.meter_id "
        "JOIN registers g ON g.obis = r.obis AND g.unit = coalesce(r.unit, '')"
    )
    op.drop_table("readings")
    postgresql = _postgresql()
    ts_type: sa.types.TypeEngine[Any] = (
        sa.DateTime(timezone=True) if postgresql else sa.BigInteger()
    )
    op.create_table(
        "readings",
        sa.Column("meter_key", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("register_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ts", ts_type, nullable=False),
        sa.Column("value_num", sa.Double(), nullable=True),
        sa.Column("value_text", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("meter_key", "register_id", "ts", name=op.f("pk_readings")),
        postgresql_partition_by="RANGE (ts)",
        sqlite_with_rowid=False,
    )
    if postgresql:
        _create_partitions()
        op.execute(_PG_CASCADE_FUNCTION)
        # Every batch of readings moves meters.last_reading_at of its meters forward: with
        # room left in each page that update is HOT (no new entry in every index of meters),
        # half the cost (existing pages get the room as they are rewritten).
        op.execute(f"ALTER TABLE meters SET (fillfactor = {_METERS_FILLFACTOR})")
    op.execute(_PG_CASCADE_TRIGGER if postgresql else _SQLITE_CASCADE_TRIGGER)
    op.execute(
        "INSERT INTO readings (meter_key, register_id, ts, value_num, value_text) "
        f"SELECT meter_key, register_id, ts, value_num, value_text FROM {_STAGING}"
    )
    op.drop_table(_STAGING)


def _create_partitions() -> None:
    months = op.get_bind().execute(
        sa.text(f"SELECT DISTINCT date_trunc('month', ts AT TIME ZONE 'UTC') FROM {_STAGING}")
    )
    for (month,) in months:
        op.execute(create_partition_sql(datetime(month.year, month.month, 1, tzinfo=UTC)))


def downgrade() -> None:
    ts = "r.ts" if _postgresql() else _SQLITE_MICROS_TO_TEXT
    op.execute(
        f"CREATE TABLE {_STAGING} AS "
        f"SELECT k.meter_id AS meter_id, g.obis AS obis, {ts} AS ts, r.value_num AS value_num, "
        "r.value_text AS value_text, nullif(g.unit, '') AS unit FROM readings r "
        "JOIN meter_keys k ON k.id = r.meter_key JOIN registers g ON g.id = r.register_id"
    )
    op.drop_table("readings")  # on PostgreSQL, with its partitions
    op.drop_table("meter_keys")  # and its trigger
    op.drop_table("registers")
    if _postgresql():
        op.execute("DROP FUNCTION readings_of_removed_meter()")
        op.execute("ALTER TABLE meters RESET (fillfactor)")
    op.create_table(
        "readings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("meter_id", sa.String(length=64), nullable=False),
        sa.Column("obis", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value_num", sa.Double(), nullable=True),
        sa.Column("value_text", sa.Text(), nullable=True),
        sa.Column("unit", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["meter_id"],
            ["meters.meter_id"],
            name=op.f("fk_readings_meter_id_meters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_readings")),
        sa.UniqueConstraint("meter_id", "obis", "ts", name=op.f("uq_readings_meter_id_obis_ts")),
    )
    op.execute(
        "INSERT INTO readings (meter_id, obis, ts, value_num, value_text, unit) "
        f"SELECT meter_id, obis, ts, value_num, value_text, unit FROM {_STAGING} ORDER BY ts"
    )
    op.drop_table(_STAGING)
