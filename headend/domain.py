"""The head-end's shared vocabulary: relay states, command actions and statuses, alarm and
notification types, and what a meter id may be.

Storage, relay control, collection and the MQTT contract all speak these words; keeping them
here (importing nothing of ours) lets each of those layers use them without importing another.
The values are the strings of the MQTT contract (README, "MQTT contract")."""

from __future__ import annotations

import re
from typing import Final, Literal

# -- relay ----------------------------------------------------------------------------------
CONNECTED: Final = "connected"
DISCONNECTED: Final = "disconnected"
READY_FOR_RECONNECTION: Final = "ready_for_reconnection"
RelayState = Literal["connected", "disconnected", "ready_for_reconnection"]
RELAY_STATES: Final = (CONNECTED, DISCONNECTED, READY_FOR_RECONNECTION)
DesiredState = Literal["connected", "disconnected"]

DISCONNECT: Final = "disconnect"
RECONNECT: Final = "reconnect"
Action = Literal["disconnect", "reconnect"]
ACTIONS: Final = (DISCONNECT, RECONNECT)
LIMIT: Final = "limit"
"""Load limiting instead of switching off: the Limiter's threshold set ([prepaid] limit_w)."""
RESTORE: Final = "restore"
"""The Limiter's threshold put back after payment."""
LIMIT_ACTIONS: Final = (LIMIT, RESTORE)
LIMITED: Final = "limited"
NOT_LIMITED: Final = "normal"

# -- relay command lifecycle (the transitions are in relay/lifecycle.py) ---------------------
QUEUED: Final = "queued"
SENT: Final = "sent"
CONFIRMED: Final = "confirmed"
FAILED: Final = "failed"
ESCALATED: Final = "escalated"
SUPERSEDED: Final = "superseded"
CommandStatus = Literal["queued", "sent", "confirmed", "failed", "escalated", "superseded"]
COMMAND_STATUSES: Final = (QUEUED, SENT, CONFIRMED, FAILED, ESCALATED, SUPERSEDED)
ACTIVE_COMMAND_STATUSES: Final = (QUEUED, SENT, FAILED, ESCALATED)
TERMINAL_COMMAND_STATUSES: Final = (CONFIRMED, SUPERSEDED)

# -- customer notifications (for the SMS gateway) -------------------------------------------
LOW_BALANCE: Final = "low_balance"
DISCONNECTED_FOR_ARREARS: Final = "disconnected_for_arrears"
RECONNECTED: Final = "reconnected"
NOTIFY_READY_FOR_RECONNECTION: Final = "ready_for_reconnection"
CREDIT_RUNNING_OUT: Final = "credit_running_out"
"""The balance is estimated to run out within prepaid.warn_days_ahead (once per episode)."""
DISCONNECT_SCHEDULED: Final = "disconnect_scheduled"
"""A disconnect for arrears waits for the grace period or the end of quiet hours."""
USAGE_STATEMENT: Final = "usage_statement"
USAGE_ANOMALY: Final = "usage_anomaly"
LOAD_LIMITED: Final = "load_limited"
"""In arrears with arrears_action = "limit": the supply is limited to limit_w, not cut."""
LOAD_RESTORED: Final = "load_restored"
NotificationType = Literal[
    "low_balance",
    "disconnected_for_arrears",
    "reconnected",
    "ready_for_reconnection",
    "credit_running_out",
    "disconnect_scheduled",
    "usage_statement",
    "usage_anomaly",
    "load_limited",
    "load_restored",
]
NOTIFICATION_TYPES: Final = (
    LOW_BALANCE,
    DISCONNECTED_FOR_ARREARS,
    RECONNECTED,
    NOTIFY_READY_FOR_RECONNECTION,
    CREDIT_RUNNING_OUT,
    DISCONNECT_SCHEDULED,
    USAGE_STATEMENT,
    USAGE_ANOMALY,
    LOAD_LIMITED,
    LOAD_RESTORED,
)

# -- alarms (for a person) ------------------------------------------------------------------
RELAY_COMMAND_OVERDUE: Final = "relay_command_overdue"
RELAY_COMMAND_FAILED: Final = "relay_command_failed"
RELAY_STUCK: Final = "relay_stuck"
RELAY_STATE_MISMATCH: Final = "relay_state_mismatch"
"""A poll read the relay in another state than the meter should be in (drift)."""
AWAITING_CUSTOMER: Final = "awaiting_customer"
"""A meter waited in ready_for_reconnection past relay.overdue_after_s: a person calls."""
METER_UNREACHABLE: Final = "meter_unreachable"
BAD_EVENT: Final = "bad_event"
"""A balance message that cannot be stored or applied as it came, or was dead-lettered."""
CONFLICTING_EVENT: Final = "conflicting_event"
"""The same (meter_id, event_id) again with other content: not applied."""
STALE_EVENT: Final = "stale_event"
"""A seq not newer than the last applied one, but a newer ts: billing's sequence went back."""
OUTBOX_OVERFLOW: Final = "outbox_overflow"
PROTECTED_IN_ARREARS: Final = "protected_in_arrears"
"""A protected meter's balance went below zero: not disconnected, a person must act."""
METER_POWER_FAILURE: Final = "meter_power_failure"
"""A meter pushed (or logged) a power failure / last gasp."""
PUSH_UNKNOWN_SENDER: Final = "push_unknown_sender"
"""A push from no meter of the inventory (system title, wrapper address or name unknown)."""
PUSH_BAD_TAG: Final = "push_bad_tag"
"""A ciphered push whose GCM tag does not verify with the meter's keys: not from the meter."""
PUSH_REPLAY: Final = "push_replay"
"""A ciphered push whose invocation counter is not above the last accepted one."""
PUSH_MALFORMED: Final = "push_malformed"
"""Bytes at the listener that are no frame or no notification APDU (or too large)."""
ALARM_TYPES: Final = (
    RELAY_COMMAND_OVERDUE,
    RELAY_COMMAND_FAILED,
    RELAY_STUCK,
    RELAY_STATE_MISMATCH,
    AWAITING_CUSTOMER,
    METER_UNREACHABLE,
    BAD_EVENT,
    CONFLICTING_EVENT,
    STALE_EVENT,
    OUTBOX_OVERFLOW,
    PROTECTED_IN_ARREARS,
    METER_POWER_FAILURE,
    PUSH_UNKNOWN_SENDER,
    PUSH_BAD_TAG,
    PUSH_REPLAY,
    PUSH_MALFORMED,
)
"""Alarm types the head-end raises; the MQTT payload accepts any snake_case name."""

# -- meter events (event logs and event pushes; names in cosem_objects/event_codes.py) -------
EVENT_SOURCE_PUSH: Final = "push"
EVENT_SOURCE_POLL: Final = "poll"
EventSource = Literal["push", "poll"]
EVENT_SOURCES: Final = (EVENT_SOURCE_PUSH, EVENT_SOURCE_POLL)

# -- operator actions (the operator_actions log) ---------------------------------------------
HOLD: Final = "hold"
"""An operator pinned a meter's relay (`headend relay --meter ID ... --hold`)."""
RELEASE: Final = "release"
"""An operator lifted a hold (`headend relay --meter ID release`)."""
PROTECT: Final = "protect"
"""An operator marked a meter's supply protected (`headend meters protect ID`)."""
UNPROTECT: Final = "unprotect"

# -- meter ids ------------------------------------------------------------------------------
MAX_METER_ID_LEN: Final = 64
# Meter ids become MQTT topic levels and CLI arguments: no controls, spaces, topic
# separators/wildcards or lone surrogates (not encodable as UTF-8).
_METER_ID_RE = re.compile(rf"[^\x00-\x20/+#\x7f-\x9f\ud800-\udfff]{{1,{MAX_METER_ID_LEN}}}")


def is_valid_meter_id(meter_id: object) -> bool:
    """1-64 printable characters without spaces, '/', '+' or '#'."""
    return isinstance(meter_id, str) and _METER_ID_RE.fullmatch(meter_id) is not None


def check_meter_id(meter_id: str) -> str:
    if not is_valid_meter_id(meter_id):
        raise ValueError(f"meter id unusable in an MQTT topic: {meter_id!r:.80}")
    return meter_id
