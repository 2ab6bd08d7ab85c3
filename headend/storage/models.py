"""The head-end's tables. Every change here needs an Alembic revision in headend/storage/migrations
(tests/test_storage.py checks that the migrated schema matches these models).

Money is exact decimal text, timestamps are UTC. Rows that record what arrived from outside
(balance events, alarms) do not reference meters by foreign key: an event for a meter the
inventory does not know must still be stored. Invocation counters are never deleted with a
meter, so re-adding a meter cannot restart its counter (a reused counter breaks GCM)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from drivers.inventory_columns import SECRET_FIELDS
from headend.storage.types import DecimalText, UtcDateTime

__all__ = [
    "COMMAND_SOURCES",
    "Alarm",
    "BalanceEvent",
    "Base",
    "Command",
    "InstallationSetting",
    "InvocationCounter",
    "Meter",
    "OperatorAction",
    "OutboxRow",
    "ProfileEntry",
    "Reading",
    "RelayState",
    "meter_column",
]

# A command is active (the controller works on it) until it is confirmed or superseded; its
# statuses and their transitions are headend/relay/lifecycle.py's table.
# Who asked: billing, an operator, start-up reconciliation, the release of a hold, or a poll
# that read the relay on while it should be off.
COMMAND_SOURCES = ("balance", "operator", "startup", "release", "drift")

# Autoincrement surrogate keys: BIGINT on PostgreSQL, INTEGER (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Meter(Base):
    """A meter: its inventory row (drivers.inventory_columns.METER_FIELDS, each in the column
    `meter_column` names), what was learnt from it, and its prepaid state."""

    __tablename__ = "meters"

    meter_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    transport: Mapped[str] = mapped_column(String(16))
    client_sap: Mapped[int] = mapped_column(Integer)
    server_logical: Mapped[int] = mapped_column(Integer)
    server_physical: Mapped[int | None] = mapped_column(Integer)
    security: Mapped[str] = mapped_column(String(16))
    password_enc: Mapped[str | None] = mapped_column(Text)
    auth_key_enc: Mapped[str | None] = mapped_column(Text)
    enc_key_enc: Mapped[str | None] = mapped_column(Text)
    system_title: Mapped[str | None] = mapped_column(String(16))  # server's, hex
    serial_port: Mapped[str | None] = mapped_column(String(255))
    baud: Mapped[int | None] = mapped_column(Integer)
    line: Mapped[str] = mapped_column(String(300))  # one session at a time per line
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    capabilities_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    control_mode: Mapped[int | None] = mapped_column(Integer)
    # Prepaid state: what the newest balance asks for, and what the meter last read back.
    desired_relay_state: Mapped[str | None] = mapped_column(String(32))
    desired_seq: Mapped[int | None] = mapped_column(BigInteger)
    desired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    confirmed_relay_state: Mapped[str | None] = mapped_column(String(32))
    confirmed_output_state: Mapped[bool | None] = mapped_column(Boolean)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    balance_seq: Mapped[int | None] = mapped_column(BigInteger)  # newest applied event's seq
    last_balance: Mapped[Decimal | None] = mapped_column(DecimalText)
    last_balance_currency: Mapped[str | None] = mapped_column(String(16))
    last_balance_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    warning_active: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    last_reading_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # An operator hold pins the relay: billing moves the desired state, nothing is switched.
    hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    hold_reason: Mapped[str | None] = mapped_column(Text)
    hold_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Since when the meter has waited in ready_for_reconnection for its customer, and
    # whether awaiting_customer was raised for this episode.
    ready_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    awaiting_alarm_raised: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


def meter_column(field_name: str) -> str:
    """The meters column that holds an inventory field: a secret is kept sealed, in
    `<name>_enc`, so its plaintext has no column at all."""
    return f"{field_name}_enc" if field_name in SECRET_FIELDS else field_name


class Reading(Base):
    __tablename__ = "readings"
    __table_args__ = (UniqueConstraint("meter_id", "obis", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    meter_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("meters.meter_id", ondelete="CASCADE")
    )
    obis: Mapped[str] = mapped_column(String(32))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    value_num: Mapped[float | None] = mapped_column(Double)
    value_text: Mapped[str | None] = mapped_column(Text)  # JSON of a non-numeric value
    unit: Mapped[str | None] = mapped_column(String(32))


class ProfileEntry(Base):
    __tablename__ = "profile_entries"
    __table_args__ = (UniqueConstraint("meter_id", "profile", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    meter_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("meters.meter_id", ondelete="CASCADE")
    )
    profile: Mapped[str] = mapped_column(String(32))  # the profile's OBIS code
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    values: Mapped[Any] = mapped_column(JSON)


class RelayState(Base):
    __tablename__ = "relay_states"
    __table_args__ = (Index(None, "meter_id", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    meter_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("meters.meter_id", ondelete="CASCADE")
    )
    state: Mapped[str] = mapped_column(String(32))
    output_state: Mapped[bool | None] = mapped_column(Boolean)
    control_state: Mapped[str | None] = mapped_column(String(32))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    command_id: Mapped[str | None] = mapped_column(String(36))


class Command(Base):
    __tablename__ = "commands"
    __table_args__ = (
        Index(None, "status", "next_attempt_at"),
        Index(None, "meter_id", "created_at"),
        # At most one active command per meter, whatever races happen above the database.
        Index(
            "uq_commands_active_meter",
            "meter_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'sent', 'failed', 'escalated')"),
            postgresql_where=text("status IN ('queued', 'sent', 'failed', 'escalated')"),
        ),
    )

    command_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    meter_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("meters.meter_id", ondelete="CASCADE")
    )
    action: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    event_id: Mapped[str | None] = mapped_column(String(128))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    overdue_alarm_raised: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    # When the episode this command belongs to began: a command that supersedes another
    # keeps its start, so the overdue clock is not reset by each new balance.
    episode_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class BalanceEvent(Base):
    __tablename__ = "balance_events"
    # An event is identified by (meter_id, event_id): billing may reuse an id for another
    # meter. NULLs (an event with no usable meter id or event id) never collide.
    __table_args__ = (
        Index(None, "meter_id", "seq"),
        UniqueConstraint("meter_id", "event_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(String(128))
    meter_id: Mapped[str | None] = mapped_column(String(64))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    balance: Mapped[Decimal | None] = mapped_column(DecimalText)
    currency: Mapped[str | None] = mapped_column(String(16))
    warning_threshold: Mapped[Decimal | None] = mapped_column(DecimalText)
    ts: Mapped[datetime | None] = mapped_column(UtcDateTime)
    raw: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    command_id: Mapped[str | None] = mapped_column(String(36))
    low_balance: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class Alarm(Base):
    __tablename__ = "alarms"
    __table_args__ = (Index(None, "type", "meter_id", "cleared"), Index(None, "ts"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(64))
    meter_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    cleared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    cleared_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class InvocationCounter(Base):
    __tablename__ = "invocation_counters"

    meter_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)  # the next counter not yet handed out
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OutboxRow(Base):
    """A message to publish, written in the transaction of the state change that causes it
    and deleted once the broker has acknowledged it (README, "MQTT contract": every message
    carries its `message_id`, so a consumer can drop a repeat after a crash)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(36), unique=True)
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    qos: Mapped[int] = mapped_column(Integer)
    retain: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    correlation_data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """MQTT 5 correlation data of a reply to a request's response topic (else null)."""


class OperatorAction(Base):
    """What an operator did outside the command flow (hold, release, reset-seq), and why."""

    __tablename__ = "operator_actions"
    __table_args__ = (Index(None, "meter_id", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    meter_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    ts: Mapped[datetime] = mapped_column(UtcDateTime)


class InstallationSetting(Base):
    """Facts about this installation made once and kept, e.g. the client system title that
    every HLS association of every process of this installation uses."""

    __tablename__ = "installation"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
