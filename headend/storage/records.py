"""Plain immutable values that go in and out of the repository.

The repository never hands out ORM objects: a snapshot cannot lazy-load after its session
closed, and callers cannot change the database by mutating what they were given."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from headend.domain import ACTIVE_COMMAND_STATUSES
from headend.relay.decision import DUPLICATE, Decision, Superseded
from headend.storage import models

__all__ = [
    "AlarmInfo",
    "BalanceOutcome",
    "CommandInfo",
    "FleetSummary",
    "HoldInfo",
    "MeterRow",
    "ProfileRow",
    "ReadingRow",
    "RelayStateInfo",
    "Release",
    "json_safe",
]

Scalar = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class ReadingRow:
    """One register value at one time. `ts` should be the meter's capture time (or the poll
    slot), so that a retry of the same poll produces the same key and is stored once."""

    meter_id: str
    obis: str
    ts: datetime
    value: Any
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class ProfileRow:
    meter_id: str
    profile: str  # the profile generic's OBIS code
    ts: datetime
    values: Any  # the captured values of one entry (JSON-able; see json_safe)


@dataclass(frozen=True, slots=True)
class CommandInfo:
    command_id: str
    meter_id: str
    action: str  # "disconnect" | "reconnect"
    status: str  # domain.COMMAND_STATUSES
    attempt: int
    source: str  # "balance" | "operator" | "startup"
    event_id: str | None
    seq: int | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    overdue_alarm_raised: bool
    last_error: str | None
    episode_started_at: datetime | None = None
    """When the episode began (relay.overdue_after_s counts from here); None: created_at."""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_COMMAND_STATUSES


@dataclass(frozen=True, slots=True)
class BalanceOutcome:
    """What was done about one balance event (stored with it, in the same transaction): the
    decision applied (relay/decision.py; a duplicate or an unknown meter decides nothing but
    says so), the stored event's row, the meter's active command afterwards, and the alarm
    raised with it (bad_event for a meter not in the inventory, conflicting_event,
    stale_event)."""

    decision: Decision
    event_row_id: int | None
    command: CommandInfo | None = None
    alarm: AlarmInfo | None = None

    @property
    def duplicate(self) -> bool:
        return self.decision.outcome == DUPLICATE


@dataclass(frozen=True, slots=True)
class HoldInfo:
    """A meter an operator's hold pins: why, since when, the state it is held in, and the
    state its newest balance asks for (where it goes on release)."""

    meter_id: str
    reason: str | None
    since: datetime | None
    held_state: str | None
    desired_state: str | None
    confirmed_state: str | None


@dataclass(frozen=True, slots=True)
class Release:
    """What lifting a hold did: the command that takes the meter where its balance says
    (None: none needed, or one is already pending) and the commands it superseded."""

    detail: str
    command: CommandInfo | None
    superseded: tuple[Superseded, ...]


@dataclass(frozen=True, slots=True)
class RelayStateInfo:
    meter_id: str
    state: str
    output_state: bool | None
    control_state: str | None
    ts: datetime
    reason: str | None
    command_id: str | None


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    id: int
    type: str
    meter_id: str | None
    detail: str | None
    ts: datetime
    cleared: bool

    @classmethod
    def of(cls, row: models.Alarm) -> AlarmInfo:
        return cls(row.id, row.type, row.meter_id, row.detail, row.ts, row.cleared)


@dataclass(frozen=True, slots=True)
class MeterRow:
    """A meter as stored; secrets stay sealed (see headend.meters.inventory for decrypted ones).
    Each field is a column of models.Meter (tests/test_meter_fields.py)."""

    meter_id: str
    host: str | None
    port: int | None
    transport: str
    client_sap: int
    server_logical: int
    server_physical: int | None
    security: str
    serial_port: str | None
    baud: int | None
    line: str
    system_title: str | None
    capabilities: dict[str, Any] | None
    capabilities_at: datetime | None
    control_mode: int | None
    desired_relay_state: str | None
    desired_seq: int | None
    confirmed_relay_state: str | None
    confirmed_output_state: bool | None
    confirmed_at: datetime | None
    balance_seq: int | None
    last_balance: Decimal | None
    last_balance_currency: str | None
    warning_active: bool
    last_reading_at: datetime | None
    hold: bool  # an operator's hold pins the relay (billing switches nothing)
    hold_reason: str | None
    hold_at: datetime | None
    ready_since: datetime | None  # waiting in ready_for_reconnection for the customer
    awaiting_alarm_raised: bool
    protected: bool  # protected supply: never disconnected for arrears
    protected_reason: str | None
    protected_at: datetime | None
    created_at: datetime
    updated_at: datetime
    password_enc: str | None = field(default=None, repr=False)
    auth_key_enc: str | None = field(default=None, repr=False)
    enc_key_enc: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, row: models.Meter) -> MeterRow:
        return cls(**{name: getattr(row, name) for name in _METER_ROW_FIELDS})


_METER_ROW_FIELDS = tuple(f.name for f in fields(MeterRow))


@dataclass(frozen=True, slots=True)
class FleetSummary:
    meters: int
    relay_states: dict[str, int]  # confirmed relay state -> meters ("unknown" if never read)
    desired_disconnected: int
    active_commands: int
    escalated_commands: int
    active_alarms: int
    last_reading_at: datetime | None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def json_safe(value: Any) -> Any:
    """A JSON-storable copy: datetimes as ISO text, bytes as hex, decimals as text.
    Non-finite floats become strings ("nan", "inf"), which every JSON column accepts."""

    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        return v

    return json.loads(json.dumps(fix(value), default=_json_default))
