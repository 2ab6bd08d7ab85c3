"""The balance pipeline: a durable outbox, event identity per meter, operator holds and their
log, the awaiting-customer clock, command episodes, and the installation's own settings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_FALSE = sa.text("false")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("qos", sa.Integer(), nullable=False),
        sa.Column("retain", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_outbox_message_id")),
    )
    op.create_table(
        "operator_actions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("meter_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_actions")),
    )
    with op.batch_alter_table("operator_actions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_operator_actions_meter_id_ts"), ["meter_id", "ts"], unique=False
        )
    op.create_table(
        "installation",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_installation")),
    )
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hold", sa.Boolean(), server_default=_FALSE, nullable=False))
        batch_op.add_column(sa.Column("hold_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("hold_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("ready_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("awaiting_alarm_raised", sa.Boolean(), server_default=_FALSE, nullable=False)
        )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("episode_started_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("balance_events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_balance_events_event_id", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_balance_events_meter_id_event_id"), ["meter_id", "event_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("balance_events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_balance_events_meter_id_event_id", type_="unique")
        batch_op.create_unique_constraint("uq_balance_events_event_id", ["event_id"])
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_column("episode_started_at")
    with op.batch_alter_table("meters", schema=None) as batch_op:
        for column in ("awaiting_alarm_raised", "ready_since", "hold_at", "hold_reason", "hold"):
            batch_op.drop_column(column)
    op.drop_table("installation")
    with op.batch_alter_table("operator_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_operator_actions_meter_id_ts"))
    op.drop_table("operator_actions")
    op.drop_table("outbox")
