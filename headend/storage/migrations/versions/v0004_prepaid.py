"""Prepaid policies: protected supply on the meter row, what the customer was told in the
current episode (credit running out, usage anomalies, the last statement), and the meter's
consumption model (rates and weekday shape, refreshed after polls) that forecasts read.

Revision ID: 0004_prepaid
Revises: 0003_meter_events
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_prepaid"
down_revision: str | None = "0003_meter_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FALSE = sa.text("false")


def upgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("protected", sa.Boolean(), server_default=_FALSE, nullable=False)
        )
        batch_op.add_column(sa.Column("protected_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("protected_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("running_out_notified", sa.Boolean(), server_default=_FALSE, nullable=False)
        )
        batch_op.add_column(sa.Column("anomalies_notified", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("last_statement_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("usage_model", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("last_price", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("usage_model_at", sa.DateTime(timezone=True), nullable=True))
        # Load limiting instead of switching off ([prepaid] arrears_action = "limit").
        batch_op.add_column(
            sa.Column("limit_wanted", sa.Boolean(), server_default=_FALSE, nullable=False)
        )
        batch_op.add_column(sa.Column("limit_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("limit_normal_w", sa.Double(), nullable=True))
        batch_op.add_column(
            sa.Column("limit_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(sa.Column("limit_next_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("limit_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        for name in (
            "limit_error",
            "limit_next_at",
            "limit_attempts",
            "limit_normal_w",
            "limit_state",
            "limit_wanted",
            "usage_model_at",
            "last_price",
            "usage_model",
            "last_statement_at",
            "anomalies_notified",
            "running_out_notified",
            "protected_at",
            "protected_reason",
            "protected",
        ):
            batch_op.drop_column(name)
