"""What the balance-event parser accepts is storable as it came, on SQLite and PostgreSQL
(issue 9: one unstorable message stopped the whole stream). NULs, invalid Unicode, oversize
fields and amounts beyond NUMERIC(21, 6) are refused as a BadEvent; what is kept of any
payload (`storable_text`) is text any database takes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.mqtt.incoming import (
    MAX_ABS_AMOUNT,
    MAX_FRACTION_DIGITS,
    MAX_INTEGER_DIGITS,
    RAW_KEEP,
    BadEvent,
    parse_balance_event,
    storable_text,
)

GOOD: dict[str, Any] = {
    "meter_id": "MTR000042",
    "balance": "12.50",
    "currency": "CNY",
    "seq": 42,
    "event_id": "evt-0001",
    "ts": "2026-11-26T08:00:00Z",
}


def raw(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def refused(payload: bytes) -> BadEvent:
    with pytest.raises(BadEvent) as caught:
        parse_balance_event("MTR000042", payload)
    return caught.value


def test_nul_anywhere_is_a_bad_event() -> None:
    # A C publisher's trailing NUL, one inside the text, and escaped ones in any string.
    assert "NUL" in refused(raw() + b"\x00").reason
    assert "NUL" in refused(raw().replace(b'"CNY"', b'"C\x00Y"')).reason
    assert "NUL" in refused(raw(note="a\x00b")).reason
    assert "NUL" in refused(raw(nested={"k\x00": ["x"]})).reason
    bad = refused(raw(customer=["ok", "\x00"]))
    assert "NUL" in bad.reason and bad.event_id == "evt-0001"  # still correlatable


def test_invalid_unicode_is_a_bad_event() -> None:
    assert "not UTF-8" in refused(raw()[:-1] + b', "x": "\xed\xa0\x80"}').reason
    lone = raw().replace(b'"12.50"', b'"12.50", "note": "\\ud800"')
    assert "unpaired surrogate" in refused(lone).reason
    paired = raw().replace(b'"12.50"', b'"12.50", "note": "\\ud83d\\ude00"')
    assert parse_balance_event("MTR000042", paired).seq == 42


@pytest.mark.parametrize(
    ("amount", "ok"),
    [
        ("999999999999999.999999", True),
        ("-999999999999999.999999", True),
        ("1000000000000000", False),  # 16 integer digits
        ("1" * 40, False),  # dozens of digits
        ("0.0000001", False),  # 7 decimals
        ("12.5000000000", True),  # trailing zeros do not count
        ("0." + "0" * 30, True),  # zero, however written
        (10**15, False),
        (10**15 - 1, True),
    ],
)
def test_amounts_fit_numeric_21_6(amount: Any, ok: bool) -> None:
    if ok:
        event = parse_balance_event("MTR000042", raw(balance=amount, warning_threshold="1"))
        assert abs(event.balance) < MAX_ABS_AMOUNT
        assert len(str(event.balance)) <= 64  # the balance column's width
    else:
        assert "balance" in refused(raw(balance=amount)).reason
        assert "warning_threshold" in refused(raw(warning_threshold=amount)).reason


def test_amount_limits_are_the_numeric_ones() -> None:
    assert MAX_INTEGER_DIGITS == 15 and MAX_FRACTION_DIGITS == 6
    assert MAX_ABS_AMOUNT == Decimal(10) ** 15
    zero = parse_balance_event("MTR000042", raw().replace(b'"12.50"', b"0E-400")).balance
    assert zero == 0 and str(zero) == "0"
    huge = refused(raw().replace(b'"12.50"', b"1" * 60))
    assert "15 integer digits" in huge.reason


def test_storable_text_escapes_and_bounds() -> None:
    assert storable_text(b'{"a": 1}\x00') == '{"a": 1}\\x00'
    assert storable_text(b"ok \xff\xfe end") == "ok \\xff\\xfe end"
    assert storable_text("\u20ac".encode()) == "\u20ac"
    assert len(storable_text(b"x" * (RAW_KEEP * 3))) == RAW_KEEP
    assert storable_text(b"abcdef", limit=3) == "abc"


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=RAW_KEEP * 5))
def test_storable_text_of_any_bytes_is_storable(payload: bytes) -> None:
    text = storable_text(payload)
    assert _storable(text) and len(text) <= RAW_KEEP


json_strings = st.text(max_size=12)  # any code points, NUL and lone surrogates included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.decimals(allow_nan=False) | json_strings,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_strings, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "warning_threshold", "x"]), json_values))
def test_every_accepted_event_is_storable(changes: dict[str, Any]) -> None:
    payload = json.dumps({**GOOD, **changes}, default=str).encode()
    try:
        event = parse_balance_event("MTR000042", payload)
    except BadEvent as exc:
        assert _storable(exc.reason)
        assert exc.event_id is None or _storable(exc.event_id)
        return
    for text in (event.meter_id, event.event_id, event.currency):
        assert _storable(text)
    assert len(event.event_id) <= 128 and len(event.currency) == 3
    for amount in (event.balance, event.warning_threshold):
        if amount is not None:
            assert abs(amount) < MAX_ABS_AMOUNT
            assert amount == amount.quantize(Decimal(1).scaleb(-MAX_FRACTION_DIGITS))
    assert 0 <= event.seq < 2**63
