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
from headend.storage.types import DecimalText, EpochMicros, UtcDateTime

__all__ = [
    "COMMAND_SOURCES",
    "Alarm",
    "BalanceEvent",
    "Base",
    "ClusterLease",
    "ClusterMember",
    "Command",
    "InstallationSetting",
    "InvocationCounter",
    "Meter",
    "MeterEvent",
    "MeterKey",
    "OperatorAction",
    "OutboxRow",
    "ProfileEntry",
    "PushCounter",
    "Reading",
    "Register",
    "RelayState",
    "meter_column",
]

# A command is active (the controller works on it) until it is confirmed or superseded; its
# statuses and their transitions are headend/relay/lifecycle.py's table.
# Who asked: billing, an operator, start-up reconciliation, the release of a hold, or a poll
# that read the relay on while it should be off.
COMMAND_SOURCES = ("balance", "operator", "startup", "release", "drift", "protection")

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
    # Protected supply (life support, hospitals): never disconnected for arrears.
    protected: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    protected_reason: Mapped[str | None] = mapped_column(Text)
    protected_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # What the customer was told in the current episode (prepaid policies).
    running_out_notified: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    anomalies_notified: Mapped[str | None] = mapped_column(Text)  # kinds, comma-separated
    last_statement_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    usage_model: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # prepaid/consumption.py
    usage_model_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_price: Mapped[Decimal | None] = mapped_column(DecimalText)  # a balance event's price
    # Load limiting instead of switching off: wanted by billing, state read back from the
    # meter's Limiter, the threshold it had before (restored on payment).
    limit_wanted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    limit_state: Mapped[str | None] = mapped_column(String(16))  # "limited" | "normal"
    limit_normal_w: Mapped[float | None] = mapped_column(Double)
    limit_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    limit_next_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    limit_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


def meter_column(field_name: str) -> str:
    """The meters column that holds an inventory field: a secret is kept sealed, in
    `<name>_enc`, so its plaintext has no column at all."""
    return f"{field_name}_enc" if field_name in SECRET_FIELDS else field_name


class Register(Base):
    """What a reading is of: an OBIS code and its unit, stored once here rather than on every
    reading ("" = no unit, so (obis, unit) can be a plain unique key on both databases).
    Never deleted: readings refer to it by id."""

    __tablename__ = "registers"
    __table_args__ = (UniqueConstraint("obis", "unit"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    obis: Mapped[str] = mapped_column(String(32))
    unit: Mapped[str] = mapped_column(String(32))


class MeterKey(Base):
    """A meter's small integer key, for readings: four bytes per row instead of its id.

    Created with the meter's first reading. Keys are never reused (AUTOINCREMENT on SQLite, a
    sequence on PostgreSQL), so a meter removed and added again does not inherit readings."""

    __tablename__ = "meter_keys"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meter_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("meters.meter_id", ondelete="CASCADE"), unique=True
    )


class Reading(Base):
    """One register value at one time, in as few bytes as the databases allow: integer keys,
    no surrogate id (the key is the primary key; SQLite stores the row in that index, WITHOUT
    ROWID), the timestamp as 8 bytes (EpochMicros). On PostgreSQL the table is partitioned by
    month (storage/partitions.py creates partitions ahead and drops them past retention)."""

    __tablename__ = "readings"
    __table_args__ = {"postgresql_partition_by": "RANGE (ts)", "sqlite_with_rowid": False}

    # meter_keys.id and registers.id, without foreign keys: a foreign key is a check per
    # inserted row (on PostgreSQL it doubled the insert's time). Keys come only from those
    # tables; registers are never deleted, and a meter's readings go with its key through the
    # trigger migration 0003 puts on meter_keys (ON DELETE), which costs nothing on insert.
    meter_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    register_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(EpochMicros, primary_key=True)
    value_num: Mapped[float | None] = mapped_column(Double)
    value_text: Mapped[str | None] = mapped_column(Text)  # JSON of a non-numeric value


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


class MeterEvent(Base):
    """An entry of a meter's event log, read by a poll or pushed by the meter. The same
    (meter, log, ts, code) from a poll and a push, or from a retried catch-up, is one event."""

    __tablename__ = "meter_events"
    __table_args__ = (UniqueConstraint("meter_id", "log", "ts", "code"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    meter_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("meters.meter_id", ondelete="CASCADE")
    )
    log: Mapped[str] = mapped_column(String(32))  # the event log's OBIS code
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    code: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(8))  # "push" | "poll": who told us first
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PushCounter(Base):
    """The highest invocation counter accepted from a meter's ciphered pushes: a push at or
    below it is a replay. Kept when a meter is deleted, like invocation_counters."""

    __tablename__ = "push_counters"

    meter_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


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


class ClusterLease(Base):
    """Who may talk to a group of meters (headend/cluster/leases.py): a shard of the TCP
    lines, or one serial line. `epoch` grows with every new holder: a result is committed
    only under the epoch its session ran under (the fencing token)."""

    __tablename__ = "cluster_leases"

    name: Mapped[str] = mapped_column(String(320), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acquired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ClusterMember(Base):
    """One running member of a cluster: its heartbeat (a member is alive while it is younger
    than lease_s) and its load, for the fair share of leases and `headend status`."""

    __tablename__ = "cluster_members"

    instance_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime)
    load: Mapped[dict[str, Any] | None] = mapped_column(JSON)
