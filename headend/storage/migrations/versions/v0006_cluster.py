"""A cluster of head-ends on one PostgreSQL: leases on meter shards and serial lines, the
members' heartbeats, and a NOTIFY when a command is created so that the member holding the
meter starts on it at once (headend/cluster/). The tables exist on SQLite too (the models are
one schema), where nothing uses them.

Revision ID: 0006_cluster
Revises: 0005_readings_compact
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_cluster"
down_revision: str | None = "0005_readings_compact"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The channel headend/cluster/notify.py listens on; the payload is the meter_id.
_NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION headend_command_created() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('headend_command', NEW.meter_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""
_NOTIFY_TRIGGER = """
CREATE TRIGGER commands_notify_created AFTER INSERT ON commands
FOR EACH ROW EXECUTE FUNCTION headend_command_created()
"""


def upgrade() -> None:
    op.create_table(
        "cluster_leases",
        sa.Column("name", sa.String(length=320), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("epoch", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cluster_leases")),
    )
    op.create_table(
        "cluster_members",
        sa.Column("instance_id", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("load", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_cluster_members")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_NOTIFY_FUNCTION)
        op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS commands_notify_created ON commands")
        op.execute("DROP FUNCTION IF EXISTS headend_command_created()")
    op.drop_table("cluster_members")
    op.drop_table("cluster_leases")
