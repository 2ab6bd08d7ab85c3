"""MQTT payloads of the contract (DESIGN.md): the billing events we accept and everything we send.

Balance events come from another system over the network, so they are parsed like any other
untrusted input: bounded in size, strict about types, and every failure is one ``BadEvent`` with a
reason fit for an alarm, never a stray ``ValueError``/``KeyError``. Outgoing payloads are built
only from the fields the contract names; decimals travel as strings (no float rounding on the
integrator's side) and timestamps as ISO 8601 UTC with ``Z``. Free text (errors, details) is
bounded and scrubbed of anything that looks like a credential, since it often comes from
exception messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, NoReturn

from headend.balance_event import BalanceEvent
from headend.domain import (
    ACTIONS,
    COMMAND_STATUSES,
    MAX_METER_ID_LEN,
    NOTIFICATION_TYPES,
    RELAY_STATES,
    Action,
    CommandStatus,
    NotificationType,
    RelayState,
    is_valid_meter_id,
)

__all__ = [
    "MAX_ABS_AMOUNT",
    "MAX_EVENT_SIZE",
    "MAX_FRACTION_DIGITS",
    "BadEvent",
    "BalanceEvent",
    "alarm_payload",
    "bad_event_alarm",
    "command_payload",
    "encode_payload",
    "format_decimal",
    "format_ts",
    "notification_payload",
    "parse_balance_event",
    "readings_payload",
    "relay_payload",
    "scrub_text",
    "status_payload",
]

MAX_EVENT_SIZE: Final = 4096
"""Largest balance event accepted, in bytes; a real one is about 200."""
MAX_ABS_AMOUNT: Final = Decimal(10) ** 12
"""Balances and thresholds must lie strictly inside +-10^12 (fits NUMERIC(20, 8))."""
MAX_FRACTION_DIGITS: Final = 8
MAX_SEQ: Final = 2**63 - 1
MAX_EVENT_ID_LEN: Final = 128
MAX_TEXT_LEN: Final = 500

_ALARM_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_AMOUNT_STR_RE = re.compile(r"[+-]?[0-9]{1,20}(?:\.[0-9]{1,20})?")
_PRINTABLE_RE = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]+")
_MAX_TS_LEN = 40


# ---------------------------------------------------------------------------------------------
# Incoming: billing/balance/{meter_id}
# ---------------------------------------------------------------------------------------------


class BadEvent(Exception):
    """A balance message that cannot be applied; recorded and alarmed, never executed.

    ``meter_id`` is the topic's meter id when it is a valid one; ``event_id`` is filled in when
    the payload got far enough to carry a usable one, so billing can correlate the alarm.
    """

    def __init__(
        self, reason: str, *, meter_id: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.meter_id = meter_id
        self.event_id = event_id

    def __repr__(self) -> str:
        return f"BadEvent({self.reason!r}, meter_id={self.meter_id!r}, event_id={self.event_id!r})"


class _Reject(Exception):
    pass


def _reject_constant(name: str) -> NoReturn:
    raise _Reject(f"non-finite number {name}")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two "balance" keys would mean two different events depending on the parser; refuse.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Reject(f"duplicate key {key[:40]!r}")
        obj[key] = value
    return obj


def _amount(value: object, name: str) -> Decimal:
    if isinstance(value, bool):
        raise _Reject(f"{name} must be a decimal string or number, not a boolean")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):  # JSON numbers with a fraction or exponent
        amount = value
    elif isinstance(value, str):
        if _AMOUNT_STR_RE.fullmatch(value) is None:
            raise _Reject(f"{name} is not a decimal number")
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise _Reject(f"{name} is not a decimal number") from None
    else:
        raise _Reject(f"{name} must be a decimal string or number")
    _sign, digits, exponent = amount.as_tuple()
    if not isinstance(exponent, int):  # 'n', 'N', 'F': NaN / sNaN / Infinity
        raise _Reject(f"{name} is not finite")
    if any(digits):
        trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
        if exponent + trailing < -MAX_FRACTION_DIGITS:
            raise _Reject(f"{name} has more than {MAX_FRACTION_DIGITS} decimal places")
        if amount.adjusted() >= 12:
            raise _Reject(f"{name} out of range")
    return amount


def _string(obj: Mapping[str, Any], name: str, max_len: int) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise _Reject(f"{name} must be a string")
    if not 1 <= len(value) <= max_len or _PRINTABLE_RE.fullmatch(value) is None:
        raise _Reject(f"{name} must be 1-{max_len} printable characters")
    return value


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str) or len(value) > _MAX_TS_LEN:
        raise _Reject("ts must be an ISO 8601 string")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise _Reject("ts is not ISO 8601") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise _Reject("ts has no time zone")
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise _Reject("ts out of range") from None


def parse_balance_event(
    topic_meter_id: str, payload: bytes, max_size: int = MAX_EVENT_SIZE
) -> BalanceEvent:
    """Parse one ``billing/balance/{meter_id}`` payload, or raise ``BadEvent`` saying why."""
    meter_id = topic_meter_id if is_valid_meter_id(topic_meter_id) else None
    if meter_id is None:
        raise BadEvent("bad meter id in topic")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise BadEvent("payload is not bytes", meter_id=meter_id)
    if len(payload) > max_size:
        raise BadEvent(f"payload too large ({len(payload)} > {max_size} bytes)", meter_id=meter_id)
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise BadEvent("payload is not UTF-8", meter_id=meter_id) from None
    try:
        obj = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_object_without_duplicates,
        )
    except _Reject as exc:
        raise BadEvent(f"payload is not acceptable JSON: {exc}", meter_id=meter_id) from None
    except (ValueError, RecursionError):
        raise BadEvent("payload is not JSON", meter_id=meter_id) from None
    if not isinstance(obj, dict):
        raise BadEvent("payload is not a JSON object", meter_id=meter_id)

    try:
        missing = [
            name
            for name in ("meter_id", "balance", "currency", "seq", "event_id", "ts")
            if name not in obj
        ]
        if missing:
            raise _Reject(f"missing field(s): {', '.join(missing)}")
        event_id = _string(obj, "event_id", MAX_EVENT_ID_LEN)
        body_meter_id = _string(obj, "meter_id", MAX_METER_ID_LEN)
        if body_meter_id != meter_id:
            raise _Reject("meter_id does not match the topic")
        balance = _amount(obj["balance"], "balance")
        currency = obj["currency"]
        if not isinstance(currency, str) or _CURRENCY_RE.fullmatch(currency) is None:
            raise _Reject("currency must be a three-letter ISO 4217 code")
        seq = obj["seq"]
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise _Reject("seq must be an integer")
        if not 0 <= seq <= MAX_SEQ:
            raise _Reject("seq out of range")
        ts = _timestamp(obj["ts"])
        threshold_raw = obj.get("warning_threshold")
        threshold = None if threshold_raw is None else _amount(threshold_raw, "warning_threshold")
        if threshold is not None and threshold < 0:
            raise _Reject("warning_threshold is negative")
    except _Reject as exc:
        raise BadEvent(str(exc), meter_id=meter_id, event_id=_usable_event_id(obj)) from None
    return BalanceEvent(
        meter_id=meter_id,
        balance=balance,
        currency=currency,
        seq=seq,
        event_id=event_id,
        ts=ts,
        warning_threshold=threshold,
    )


def _usable_event_id(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("event_id")
    if (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_EVENT_ID_LEN
        and _PRINTABLE_RE.fullmatch(value) is not None
    ):
        return value
    return None


# ---------------------------------------------------------------------------------------------
# Outgoing
# ---------------------------------------------------------------------------------------------

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
    meter_id: str, ts: datetime, values: Mapping[Any, tuple[ReadingValue, str | None]]
) -> Payload:
    """``{"meter_id", "ts", "values": {"<obis>": {"value", "unit"}}}``; keys via ``str()``."""
    return {
        "meter_id": _meter(meter_id),
        "ts": format_ts(ts),
        "values": {
            str(obis): {"value": _reading_value(value), "unit": unit}
            for obis, (value, unit) in values.items()
        },
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
        "action": _one_of(action, ACTIONS, "command action"),
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
) -> Payload:
    """A customer notification for the SMS gateway; absent facts are left out, not null."""
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


def status_payload(online: bool) -> str:
    """The retained ``headend/status`` text (not JSON): ``online`` or ``offline``."""
    return "online" if online else "offline"
