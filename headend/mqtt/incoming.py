"""Balance events in (``billing/balance/{meter_id}``): the parser, its limits, and what of a
refused message is kept.

Balance events come from another system over the network, so they are parsed like any other
untrusted input: bounded in size, strict about types, and every failure is one ``BadEvent`` with a
reason fit for an alarm, never a stray ``ValueError``/``KeyError``.

The limits are also the database's: an event this parser accepts is storable as it came on
SQLite and on PostgreSQL, so the store can never refuse it and hold up the stream behind it
(issue 9). PostgreSQL refuses a NUL in text and invalid UTF-8 outright, hence no NUL anywhere
(a C publisher's trailing one included) and no unpaired surrogate in any string; the fields it
keeps in bounded columns are bounded here (meter_id 64, event_id 128, currency 3); amounts
fit NUMERIC(21, 6): at most ``MAX_INTEGER_DIGITS`` digits before the point and
``MAX_FRACTION_DIGITS`` after it; ``seq`` fits BIGINT. What is kept of a refused message is
`storable_text`: the raw payload with NULs and invalid bytes escaped, bounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, NoReturn

from headend.balance_event import BalanceEvent
from headend.domain import MAX_METER_ID_LEN, is_valid_meter_id

__all__ = [
    "MAX_ABS_AMOUNT",
    "MAX_EVENT_ID_LEN",
    "MAX_EVENT_SIZE",
    "MAX_FRACTION_DIGITS",
    "MAX_INTEGER_DIGITS",
    "MAX_SEQ",
    "RAW_KEEP",
    "BadEvent",
    "BalanceEvent",
    "DeadLetter",
    "parse_balance_event",
    "storable_text",
]

MAX_EVENT_SIZE: Final = 4096
"""Largest balance event accepted, in bytes; a real one is about 200."""
MAX_INTEGER_DIGITS: Final = 15
MAX_FRACTION_DIGITS: Final = 6
MAX_ABS_AMOUNT: Final = Decimal(10) ** MAX_INTEGER_DIGITS
"""Balances and thresholds lie strictly inside +-10^15 with at most 6 decimals
(NUMERIC(21, 6)); trailing zeros after the point do not count."""
MAX_SEQ: Final = 2**63 - 1
"""BIGINT."""
MAX_EVENT_ID_LEN: Final = 128
RAW_KEEP: Final = MAX_EVENT_SIZE
"""Characters of a payload kept with its record (`storable_text`)."""

_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_AMOUNT_STR_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_PRINTABLE_RE = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]+")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_MAX_TS_LEN = 40


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


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A balance message set aside after its handling failed `tries` times in a row, of
    whatever cause: recorded with the last error, alarmed and acknowledged, so that the
    stream never waits on one message. `message` is what the payload parsed to."""

    message: BalanceEvent | BadEvent
    tries: int
    error: str
    """The last failure, scrubbed of anything secret and bounded."""

    @property
    def meter_id(self) -> str | None:
        return self.message.meter_id

    @property
    def event_id(self) -> str | None:
        return self.message.event_id

    @property
    def seq(self) -> int | None:
        return self.message.seq if isinstance(self.message, BalanceEvent) else None


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
    if not any(digits):
        # Zero written as 0E-400 or 0.000000000: still zero, kept in a storable form.
        return amount if -MAX_FRACTION_DIGITS <= exponent <= 0 else Decimal(0)
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if exponent + trailing < -MAX_FRACTION_DIGITS:
        raise _Reject(f"{name} has more than {MAX_FRACTION_DIGITS} decimal places")
    if amount.adjusted() >= MAX_INTEGER_DIGITS:
        raise _Reject(f"{name} out of range (more than {MAX_INTEGER_DIGITS} integer digits)")
    return amount


def _unstorable_string(obj: object) -> str | None:
    """Why some string (key or value, at any depth) of the parsed payload cannot be stored."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "a string in the payload contains NUL (\\u0000)"
            if _SURROGATE_RE.search(item) is not None:
                return "a string in the payload is not valid Unicode (unpaired surrogate)"
    return None


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
    if b"\x00" in payload:
        raise BadEvent("payload contains a NUL byte", meter_id=meter_id)
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
    unstorable = _unstorable_string(obj)
    if unstorable is not None:
        raise BadEvent(unstorable, meter_id=meter_id, event_id=_usable_event_id(obj))

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
        price_raw = obj.get("price")
        price = None if price_raw is None else _amount(price_raw, "price")
        if price is not None and price <= 0:
            raise _Reject("price must be > 0")
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
        price=price,
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


def storable_text(raw: bytes, limit: int = RAW_KEEP) -> str:
    """What of a payload is kept with its record: text that any database stores, whatever
    arrived. Invalid UTF-8 bytes become ``\\xNN``, a NUL becomes ``\\x00`` (PostgreSQL
    refuses both in text), and at most `limit` characters are kept."""
    text = bytes(raw[: limit * 4]).decode("utf-8", "backslashreplace")
    return text.replace("\x00", "\\x00")[:limit]
