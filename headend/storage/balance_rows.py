"""What a balance event reads and writes, written once for the one-event path
(storage/balances.py) and the batch path (storage/balance_batch.py): the meter columns the
decision needs, the snapshot built from them, and the rows the decision's writes consist of.
A new input to relay/decision.py or a new column it sets goes here, and both paths have it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from headend.balance_event import BalanceEvent
from headend.relay import decision
from headend.relay.decision import ActiveCommand, Decision, MeterSnapshot, StoredEvent
from headend.storage.commands import new_command_values
from headend.storage.core import COMMANDS, METERS
from headend.storage.records import CommandInfo

__all__ = [
    "COMMAND_FIELDS",
    "METER_COLUMNS",
    "STORED_FIELDS",
    "BalancePolicy",
    "command_values",
    "event_values",
    "judge",
    "meter_values",
]

COMMAND_FIELDS = tuple(col.name for col in COMMANDS.c)
STORED_FIELDS = ("outcome", "seq", "balance", "currency", "ts", "warning_threshold")
"""A stored event's content, compared with a new event under the same (meter_id, event_id)."""
_m = METERS.c
METER_COLUMNS = (
    _m.balance_seq.label("m_balance_seq"),
    _m.last_balance.label("m_last_balance"),
    _m.last_balance_at.label("m_last_balance_at"),
    _m.desired_relay_state.label("m_desired_relay_state"),
    _m.confirmed_relay_state.label("m_confirmed_relay_state"),
    _m.hold.label("m_hold"),
    _m.protected.label("m_protected"),
    _m.limit_wanted.label("m_limit_wanted"),
    *[col.label(f"c_{col.name}") for col in COMMANDS.c],
)
"""The meter's prepaid state (m_) and its active command (c_ columns, from an outer join)."""


@dataclass(frozen=True)
class BalancePolicy:
    """The prepaid policies a decision takes from the configuration and the clock: when a
    disconnect for arrears may run (grace, quiet hours; None: at once) and whether arrears
    limit the load instead (arrears_action = "limit")."""

    disconnect_at: datetime | None = None
    limit_on_arrears: bool = False


def judge(
    row: Any,
    same_id: StoredEvent | None,
    event: BalanceEvent,
    threshold: Decimal,
    policy: BalancePolicy = BalancePolicy(),
) -> tuple[Decision, CommandInfo | None]:
    """The decision for `event` from a row of METER_COLUMNS, and the active command."""
    active = None
    if row.c_command_id is not None:
        active = CommandInfo(**{name: getattr(row, f"c_{name}") for name in COMMAND_FIELDS})
    snapshot = MeterSnapshot(
        balance_seq=row.m_balance_seq,
        last_balance=row.m_last_balance,
        desired_state=row.m_desired_relay_state,
        confirmed_state=row.m_confirmed_relay_state,
        active_command=None
        if active is None
        else ActiveCommand(
            active.command_id,
            active.action,
            active.status,
            active.episode_started_at or active.created_at,
        ),
        default_threshold=threshold,
        hold=row.m_hold,
        last_applied_ts=row.m_last_balance_at,
        protected=row.m_protected,
        limit_on_arrears=policy.limit_on_arrears,
        limit_wanted=row.m_limit_wanted,
        same_id=same_id,
    )
    return decision.decide(snapshot, event, disconnect_at=policy.disconnect_at), active


def command_values(event: BalanceEvent, judged: Decision, now: datetime) -> dict[str, Any]:
    """The new command's row (judged.command is set)."""
    assert judged.command is not None
    return new_command_values(
        event.meter_id,
        judged.command.action,
        source="balance",
        now=now,
        event_id=event.event_id,
        seq=event.seq,
        reason=judged.command.reason,
        episode_started_at=judged.command.episode_started_at,
        not_before=judged.command.not_before,
    )


def meter_values(event: BalanceEvent, judged: Decision, now: datetime) -> dict[str, Any]:
    """The meter row's new values (judged.meter is set)."""
    assert judged.meter is not None
    values: dict[str, Any] = {
        "balance_seq": event.seq,
        "last_balance": event.balance,
        "last_balance_currency": event.currency,
        "last_balance_at": event.ts,
        "warning_active": judged.meter.warning_active,
        "updated_at": now,
    }
    if judged.limit is not None:
        values.update(limit_wanted=judged.limit, limit_next_at=now, limit_attempts=0)
    if judged.meter.desired_state is not None:
        values.update(
            desired_relay_state=judged.meter.desired_state, desired_seq=event.seq, desired_at=now
        )
    return values


def event_values(
    event: BalanceEvent, judged: Decision, raw: str | None, now: datetime, command_id: str | None
) -> dict[str, Any]:
    """The stored event's row."""
    return {
        "event_id": event.event_id if judged.holds_identity else None,
        "meter_id": event.meter_id,
        "seq": event.seq,
        "balance": event.balance if event.balance.is_finite() else None,
        "currency": event.currency,
        "warning_threshold": event.warning_threshold,
        "ts": event.ts,
        "raw": raw,
        "received_at": now,
        "outcome": judged.outcome,
        "detail": judged.detail,
        "command_id": command_id,
        "low_balance": judged.low_balance,
    }
