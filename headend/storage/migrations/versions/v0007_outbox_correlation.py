"""Outbox rows keep the MQTT 5 correlation data of a reply to an on-demand request, so that
a reply sent to the requester's response topic carries it as the request did.

Revision ID: 0007_outbox_correlation
Revises: 0006_cluster
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_outbox_correlation"
down_revision: str | None = "0006_cluster"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("correlation_data", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("correlation_data")
