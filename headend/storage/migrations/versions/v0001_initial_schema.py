"""Initial schema: meters, readings, profile entries, relay states, commands, balance events,
alarms, invocation counters.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alarms",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("meter_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_ts"), ["ts"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_alarms_type_meter_id_cleared"),
            ["type", "meter_id", "cleared"],
            unique=False,
        )

    op.create_table(
        "balance_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("meter_id", sa.String(length=64), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("balance", sa.String(length=64), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("warning_threshold", sa.String(length=64), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("command_id", sa.String(length=36), nullable=True),
        sa.Column("low_balance", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balance_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_balance_events_event_id")),
    )
    with op.batch_alter_table("balance_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_balance_events_meter_id_seq"), ["meter_id", "seq"], unique=False
        )

    op.create_table(
        "invocation_counters",
        sa.Column("meter_id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("meter_id", "key_id", name=op.f("pk_invocation_counters")),
    )
    op.create_table(
        "meters",
        sa.Column("meter_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("transport", sa.String(length=16), nullable=False),
        sa.Column("client_sap", sa.Integer(), nullable=False),
        sa.Column("server_logical", sa.Integer(), nullable=False),
        sa.Column("server_physical", sa.Integer(), nullable=True),
        sa.Column("security", sa.String(length=16), nullable=False),
        sa.Column("password_enc", sa.Text(), nullable=True),
        sa.Column("auth_key_enc", sa.Text(), nullable=True),
        sa.Column("enc_key_enc", sa.Text(), nullable=True),
        sa.Column("system_title", sa.String(length=16), nullable=True),
        sa.Column("serial_port", sa.String(length=255), nullable=True),
        sa.Column("baud", sa.Integer(), nullable=True),
        sa.Column("line", sa.String(length=300), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=True),
        sa.Column("capabilities_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("control_mode", sa.Integer(), nullable=True),
        sa.Column("desired_relay_state", sa.String(length=32), nullable=True),
        sa.Column("desired_seq", sa.BigInteger(), nullable=True),
        sa.Column("desired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_relay_state", sa.String(length=32), nullable=True),
        sa.Column("confirmed_output_state", sa.Boolean(), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("balance_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_balance", sa.String(length=64), nullable=True),
        sa.Column("last_balance_currency", sa.String(length=16), nullable=True),
        sa.Column("last_balance_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("warning_active", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_reading_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("meter_id", name=op.f("pk_meters")),
    )
    op.create_table(
        "commands",
        sa.Column("command_id", sa.String(length=36), nullable=False),
        sa.Column("meter_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "overdue_alarm_raised", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["meter_id"],
            ["meters.meter_id"],
            name=op.f("fk_commands_meter_id_meters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("command_id", name=op.f("pk_commands")),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_commands_meter_id_created_at"), ["meter_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_commands_status_next_attempt_at"),
            ["status", "next_attempt_at"],
            unique=False,
        )
        batch_op.create_index(
            "uq_commands_active_meter",
            ["meter_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('queued', 'sent', 'failed', 'escalated')"),
            postgresql_where=sa.text("status IN ('queued', 'sent', 'failed', 'escalated')"),
        )

    op.create_table(
        "profile_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("meter_id", sa.String(length=64), nullable=False),
        sa.Column("profile", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["meter_id"],
            ["meters.meter_id"],
            name=op.f("fk_profile_entries_meter_id_meters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_entries")),
        sa.UniqueConstraint(
            "meter_id", "profile", "ts", name=op.f("uq_profile_entries_meter_id_profile_ts")
        ),
    )
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
    op.create_table(
        "relay_states",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("meter_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("output_state", sa.Boolean(), nullable=True),
        sa.Column("control_state", sa.String(length=32), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("command_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["meter_id"],
            ["meters.meter_id"],
            name=op.f("fk_relay_states_meter_id_meters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_states")),
    )
    with op.batch_alter_table("relay_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_relay_states_meter_id_ts"), ["meter_id", "ts"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("relay_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_relay_states_meter_id_ts"))

    op.drop_table("relay_states")
    op.drop_table("readings")
    op.drop_table("profile_entries")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_commands_active_meter",
            sqlite_where=sa.text("status IN ('queued', 'sent', 'failed', 'escalated')"),
            postgresql_where=sa.text("status IN ('queued', 'sent', 'failed', 'escalated')"),
        )
        batch_op.drop_index(batch_op.f("ix_commands_status_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_commands_meter_id_created_at"))

    op.drop_table("commands")
    op.drop_table("meters")
    op.drop_table("invocation_counters")
    with op.batch_alter_table("balance_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_balance_events_meter_id_seq"))

    op.drop_table("balance_events")
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarms_type_meter_id_cleared"))
        batch_op.drop_index(batch_op.f("ix_alarms_ts"))

    op.drop_table("alarms")
