"""MQTT payloads the head-end sends (DESIGN.md, "MQTT contract"), and the text rules they share.

Outgoing payloads are built only from the fields the contract names; decimals travel as strings
(no float rounding on the integrator's side) and timestamps as ISO 8601 UTC with ``Z``. Free
text (errors, details) is bounded and scrubbed of anything that looks like a credential, since
it often comes from exception messages. Incoming balance events are parsed in ``incoming.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from headend.domain import (
    ACTIONS,
    COMMAND_STATUSES,
    EVENT_SOURCES,
    LIMIT_ACTIONS,
    NOTIFICATION_TYPES,
    RELAY_STATES,
    Action,
    CommandStatus,
    NotificationType,
    RelayState,
    is_valid_meter_id,
)
from headend.mqtt.incoming import MAX_EVENT_ID_LEN

__all__ = [
    "MAX_TEXT_LEN",
    "RESPONSE_ERROR_CODES",
    "SCHEMA_VERSION",
    "Payload",
    "ReadingValue",
    "alarm_payload",
    "bad_event_alarm",
    "command_payload",
    "encode_payload",
    "event_payload",
    "format_decimal",
    "format_ts",
    "notification_payload",
    "publishable",
    "readings_payload",
    "relay_payload",
    "response_error_payload",
    "response_relay_payload",
    "response_values_payload",
    "scrub_text",
    "status_payload",
]

RESPONSE_ERROR_CODES: Final = (
    "malformed",
    "unknown_meter",
    "busy",
    "timeout",
    "unreachable",
    "refused",
    "meter_error",
)

MAX_TEXT_LEN: Final = 500
SCHEMA_VERSION: Final = "1.0"
"""The version of docs/schemas (and docs/asyncapi.yaml) the payloads follow: every outgoing
JSON message carries it. MINOR grows when fields are added, MAJOR when one changes meaning or
goes; keep it in step with ``info.version`` of docs/asyncapi.yaml (a test checks)."""

_ALARM_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")

Payload = dict[str, Any]
ReadingValue = Decimal | int | float | str | bool | bytes | None

_SECRET_KEY_RE = re.compile(
    r"(?i)(pass(?:word|wd)?|pwd|secret|token|credential|auth[_-]?key|enc[_-]?key|"
    r"(?:hls|lls|master|dedicated|global)[_-]?key|key)"
)
_SECRET_ASSIGN_RE = re.compile(
    r"(?i)\b(pass(?:word|wd)?|pwd|secret|token|auth[_-]?key|enc[_-]?key|[a-z_]*key)"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)
_LONG_HEX_RE = re.compile(r"(?i)(?:0x)?[0-9a-f]{32,}|(?:[0-9a-f]{2}[ :]){15,}[0-9a-f]{2}")
_REDACTED = "<redacted>"


def scrub_text(text: object, max_len: int = MAX_TEXT_LEN) -> str:
    """Bounded, credential-free text for payloads: ``key=...`` values and long hex go away."""
    value = str(text)[: max_len * 4]
    value = _SECRET_ASSIGN_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", value)
    value = _LONG_HEX_RE.sub(_REDACTED, value)
    value = "".join(ch if ch.isprintable() else " " for ch in value)
    if len(value) > max_len:
        value = value[: max_len - 3] + "..."
    return value


def _scrub_detail(value: object, depth: int = 0) -> Any:
    if depth > 4:
        return scrub_text(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in list(value.items())[:50]:
            name = scrub_text(key, 64)
            out[name] = _REDACTED if _SECRET_KEY_RE.search(name) else _scrub_detail(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_scrub_detail(item, depth + 1) for item in value[:50]]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, datetime):
        return format_ts(value)
    return scrub_text(value)


def format_ts(ts: datetime) -> str:
    """ISO 8601 in UTC with ``Z``; milliseconds only when there are any."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("naive datetime: say which time zone it is in")
    utc = ts.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def format_decimal(value: Decimal | int) -> str:
    """Plain notation, never an exponent: ``Decimal('1E+2')`` is ``"100"``."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"not a decimal: {type(value).__name__}")
    amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError("non-finite decimal")
    return format(amount, "f")


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, datetime):
        return format_ts(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode_payload(payload: Mapping[str, Any] | str) -> bytes:
    """Wire bytes: compact JSON for objects, the bare UTF-8 text for strings (status)."""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(
        payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    ).encode("utf-8")


def _meter(meter_id: str) -> str:
    if not is_valid_meter_id(meter_id):
        raise ValueError(f"bad meter id: {meter_id!r:.80}")
    return meter_id


def _one_of(value: str, allowed: Collection[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what}: {value!r:.40}")
    return value


def publishable(value: object) -> ReadingValue:
    """A value read from a meter as a reading payload takes it: anything beyond numbers,
    text, booleans and octets (a date, a structure) as its text."""
    if value is None or isinstance(value, bool | int | float | Decimal | str | bytes):
        return value
    return str(value)


def _reading_value(value: ReadingValue) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, float):
        return format_decimal(Decimal(repr(value)))  # raises for nan/inf
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str):
        return value[:256]
    raise TypeError(f"unsupported reading value: {type(value).__name__}")


def readings_payload(
    meter_id: str,
    ts: datetime,
    values: Mapping[Any, tuple[ReadingValue, str | None]],
    source: str | None = None,
) -> Payload:
    """``{"meter_id", "ts", "values": {"<obis>": {"value", "unit"}}}``; keys via ``str()``.
    ``source`` ("push" for values a meter pushed) is left out unless given."""
    payload: Payload = {
        "meter_id": _meter(meter_id),
        "ts": format_ts(ts),
        "values": _reading_values(values),
    }
    if source is not None:
        payload["source"] = _one_of(source, EVENT_SOURCES, "reading source")
    return payload


def event_payload(
    meter_id: str, ts: datetime, log: str, code: int, name: str, source: str
) -> Payload:
    """A meter event: ``{"meter_id", "ts", "log", "code", "name", "source"}``; ``log`` is the
    event log's OBIS code, ``name`` the event code's IDIS name, ``source`` push or poll."""
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError("event code must be an integer")
    return {
        "meter_id": _meter(meter_id),
        "ts": format_ts(ts),
        "log": scrub_text(log, 32),
        "code": code,
        "name": scrub_text(name, 128),
        "source": _one_of(source, EVENT_SOURCES, "event source"),
    }


def relay_payload(
    meter_id: str,
    state: RelayState | str,
    output_state: bool,
    ts: datetime,
    reason: str | None = None,
    *,
    hold: bool = False,
) -> Payload:
    """Retained relay state as read back from the meter; `hold`: an operator's hold pins it."""
    return {
        "meter_id": _meter(meter_id),
        "state": _one_of(state, RELAY_STATES, "relay state"),
        "output_state": bool(output_state),
        "hold": bool(hold),
        "ts": format_ts(ts),
        "reason": None if reason is None else scrub_text(reason),
    }


def command_payload(
    *,
    command_id: str | int,
    meter_id: str,
    action: Action | str,
    status: CommandStatus | str,
    attempt: int,
    ts: datetime,
    event_id: str | None = None,
    error: str | None = None,
    source: str | None = None,
    state: str | None = None,
    detail: str | None = None,
) -> Payload:
    """One step of a relay command's lifecycle; ``source``, ``state`` (read back) and
    ``detail`` go beyond the contract's fields and are left out unless given."""
    if isinstance(command_id, bool) or not isinstance(command_id, str | int):
        raise TypeError("command_id must be a string or an integer")
    payload: Payload = {
        "command_id": command_id,
        "meter_id": _meter(meter_id),
        "action": _one_of(action, (*ACTIONS, *LIMIT_ACTIONS), "command action"),
        "status": _one_of(status, COMMAND_STATUSES, "command status"),
        "attempt": int(attempt),
        "ts": format_ts(ts),
        "event_id": event_id,
        "error": None if error is None else scrub_text(error),
    }
    for name, value in (("source", source), ("state", state), ("detail", detail)):
        if value is not None:
            payload[name] = value
    return payload


def notification_payload(
    kind: NotificationType | str,
    meter_id: str,
    ts: datetime,
    *,
    balance: Decimal | None = None,
    currency: str | None = None,
    warning_threshold: Decimal | None = None,
    event_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Payload:
    """A customer notification for the SMS gateway; absent facts are left out, not null.
    `extra`: the fields a prepaid policy adds (forecast, schedule, statement, anomaly), kept
    as given (a forecast's null means "no estimate", which the customer may be told)."""
    payload: Payload = {
        "type": _one_of(kind, NOTIFICATION_TYPES, "notification type"),
        "meter_id": _meter(meter_id),
        "ts": format_ts(ts),
    }
    if balance is not None:
        payload["balance"] = format_decimal(balance)
    if currency is not None:
        payload["currency"] = currency
    if warning_threshold is not None:
        payload["warning_threshold"] = format_decimal(warning_threshold)
    if event_id is not None:
        payload["event_id"] = event_id
    for key, value in (extra or {}).items():
        if key in payload:
            raise ValueError(f"notification field {key!r} given twice")
        payload[key] = value
    return payload


def alarm_payload(
    kind: str,
    ts: datetime,
    *,
    meter_id: str | None = None,
    detail: str | Mapping[str, Any] | None = None,
) -> Payload:
    """``{"type", "meter_id", "detail", "ts"}``; ``detail`` text or a small object, scrubbed."""
    if not isinstance(kind, str) or _ALARM_TYPE_RE.fullmatch(kind) is None:
        raise ValueError(f"alarm type must be snake_case: {kind!r:.40}")
    return {
        "type": kind,
        "meter_id": None if meter_id is None else _meter(meter_id),
        "detail": None if detail is None else _scrub_detail(detail),
        "ts": format_ts(ts),
    }


def bad_event_alarm(
    ts: datetime,
    *,
    reason: str,
    meter_id: str | None = None,
    event_id: str | None = None,
    topic: str | None = None,
) -> Payload:
    """Alarm for a balance event that was refused; safe for any (even hostile) meter id."""
    detail: dict[str, Any] = {"reason": scrub_text(reason)}
    if event_id is not None:
        detail["event_id"] = scrub_text(event_id, MAX_EVENT_ID_LEN)
    if topic is not None:
        detail["topic"] = scrub_text(topic, 200)
    valid_id = meter_id if meter_id is not None and is_valid_meter_id(meter_id) else None
    return alarm_payload("bad_event", ts, meter_id=valid_id, detail=detail)


def _reading_values(values: Mapping[Any, tuple[ReadingValue, str | None]]) -> Payload:
    return {
        str(obis): {"value": _reading_value(value), "unit": unit}
        for obis, (value, unit) in values.items()
    }


def response_values_payload(
    request_id: str,
    meter_id: str,
    ts: datetime,
    values: Mapping[Any, tuple[ReadingValue, str | None]],
    missing: Collection[str] = (),
) -> Payload:
    """A read answered: ``{"request_id", "meter_id", "ok": true, "ts", "values"}``, and the
    codes the meter does not have in ``missing`` (left out when none)."""
    payload: Payload = {
        "request_id": request_id,
        "meter_id": _meter(meter_id),
        "ok": True,
        "ts": format_ts(ts),
        "values": _reading_values(values),
    }
    if missing:
        payload["missing"] = list(missing)
    return payload


def response_relay_payload(request_id: str, ts: datetime, relay: Payload) -> Payload:
    """A relay status answered; ``relay`` is a ``relay_payload`` (as on the relay topic)."""
    return {
        "request_id": request_id,
        "meter_id": relay["meter_id"],
        "ok": True,
        "ts": format_ts(ts),
        "relay": relay,
    }


def response_error_payload(
    request_id: str | None, ts: datetime, code: str, error: str, meter_id: str | None = None
) -> Payload:
    """A request not answered: ``{"request_id", "ok": false, "error", "code"}`` (and the
    meter id when the request had a usable one)."""
    return {
        "request_id": request_id,
        "meter_id": meter_id if meter_id is not None and is_valid_meter_id(meter_id) else None,
        "ok": False,
        "ts": format_ts(ts),
        "code": _one_of(code, RESPONSE_ERROR_CODES, "response error code"),
        "error": scrub_text(error),
    }


def status_payload(online: bool) -> str:
    """The retained ``headend/status`` text (not JSON): ``online`` or ``offline``."""
    return "online" if online else "offline"
