"""MQTT payloads and topics: balance events are parsed like hostile input; outgoing payloads
follow the contract, carry decimals as strings and never a secret. Also the outbox's rules and
the notifier that fills it."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.config import MqttConfig
from headend.domain import check_meter_id, is_valid_meter_id
from headend.meters.secrets import Secret
from headend.mqtt.incoming import MAX_EVENT_SIZE, BadEvent, BalanceEvent, parse_balance_event
from headend.mqtt.notifier import Notifier
from headend.mqtt.outbox import MemoryOutbox, OutboxMessage
from headend.mqtt.payloads import (
    SCHEMA_VERSION,
    alarm_payload,
    bad_event_alarm,
    command_payload,
    encode_payload,
    format_decimal,
    format_ts,
    notification_payload,
    readings_payload,
    relay_payload,
    scrub_text,
    status_payload,
)
from headend.mqtt.topics import Topics

GOOD: dict[str, Any] = {
    "meter_id": "MTR000042",
    "balance": "12.50",
    "currency": "CNY",
    "seq": 42,
    "event_id": "evt-0001",
    "ts": "2026-11-26T08:00:00Z",
}


def raw(**changes: Any) -> bytes:
    body = {**GOOD, **changes}
    for key in [k for k, v in changes.items() if v is _DROP]:
        del body[key]
    return json.dumps(body).encode()


_DROP = object()


# -- balance events: the good ones ---------------------------------------------------------------


def test_good_event_parses_exactly() -> None:
    event = parse_balance_event("MTR000042", raw())
    assert event == BalanceEvent(
        meter_id="MTR000042",
        balance=Decimal("12.50"),
        currency="CNY",
        seq=42,
        event_id="evt-0001",
        ts=datetime(2026, 11, 26, 8, 0, tzinfo=UTC),
        warning_threshold=None,
    )
    assert str(event.balance) == "12.50"  # the exact decimal, trailing zero and all


@pytest.mark.parametrize(
    ("balance", "expected"),
    [
        ("12.50", Decimal("12.50")),
        ("-3", Decimal("-3")),
        ("+0.01", Decimal("0.01")),
        ("0", Decimal("0")),
        ("-0.00", Decimal("0")),
        (7, Decimal(7)),
        (-250, Decimal(-250)),
        (0.1, Decimal("0.1")),  # a JSON number is read as written, not through a float
        (1e3, Decimal("1000")),
        ("999999999999999.999999", Decimal("999999999999999.999999")),
    ],
)
def test_balance_forms(balance: object, expected: Decimal) -> None:
    event = parse_balance_event("MTR000042", raw(balance=balance))
    assert event.balance == expected
    assert isinstance(event.balance, Decimal)


def test_optional_warning_threshold_and_offsets() -> None:
    event = parse_balance_event(
        "MTR000042", raw(warning_threshold="20.00", ts="2026-11-26T16:00:00+08:00")
    )
    assert event.warning_threshold == Decimal("20.00")
    assert event.ts == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    assert event.ts.tzinfo is UTC
    assert parse_balance_event("MTR000042", raw(warning_threshold=None)).warning_threshold is None
    assert parse_balance_event("MTR000042", raw(warning_threshold=5)).warning_threshold == 5


def test_unknown_fields_are_ignored() -> None:
    event = parse_balance_event("MTR000042", raw(customer_tier="gold", extra={"a": [1]}))
    assert event.seq == 42


# -- balance events: every kind of bad one -------------------------------------------------------

BAD: list[tuple[str, bytes, str]] = [
    ("not utf-8", b'{"meter_id": "\xff"}', "not UTF-8"),
    ("not json", b"balance=12", "not JSON"),
    ("empty", b"", "not JSON"),
    ("truncated", raw()[:-5], "not JSON"),
    ("array", b"[1, 2]", "not a JSON object"),
    ("string", b'"12.50"', "not a JSON object"),
    ("null", b"null", "not a JSON object"),
    ("NaN literal", raw().replace(b'"12.50"', b"NaN"), "non-finite"),
    ("Infinity literal", raw().replace(b'"12.50"', b"Infinity"), "non-finite"),
    ("-Infinity literal", raw().replace(b'"12.50"', b"-Infinity"), "non-finite"),
    ("duplicate key", raw()[:-1] + b', "balance": "-5"}', "duplicate key"),
    ("missing balance", raw(balance=_DROP), "missing field(s): balance"),
    ("missing several", raw(seq=_DROP, ts=_DROP), "missing field(s): seq, ts"),
    ("missing event_id", raw(event_id=_DROP), "missing field(s): event_id"),
    ("balance NaN string", raw(balance="NaN"), "not a decimal"),
    ("balance inf string", raw(balance="Infinity"), "not a decimal"),
    ("balance sNaN", raw(balance="sNaN"), "not a decimal"),
    ("balance words", raw(balance="twelve"), "not a decimal"),
    ("balance exponent string", raw(balance="1e3"), "not a decimal"),
    ("balance spaces", raw(balance=" 12.50"), "not a decimal"),
    ("balance comma", raw(balance="12,50"), "not a decimal"),
    ("balance empty", raw(balance=""), "not a decimal"),
    ("balance bool", raw(balance=True), "not a boolean"),
    ("balance null", raw(balance=None), "decimal string or number"),
    ("balance object", raw(balance={"v": 1}), "decimal string or number"),
    ("balance list", raw(balance=[1]), "decimal string or number"),
    ("balance too big", raw(balance="1000000000000000"), "out of range"),
    ("balance huge number", raw().replace(b'"12.50"', b"1e400"), "out of range"),
    ("balance huge int", raw(balance=10**40), "out of range"),
    ("balance too precise", raw(balance="0.0000001"), "decimal places"),
    ("balance tiny number", raw().replace(b'"12.50"', b"1e-400"), "decimal places"),
    ("threshold negative", raw(warning_threshold="-1"), "negative"),
    ("threshold junk", raw(warning_threshold="lots"), "not a decimal"),
    ("threshold bool", raw(warning_threshold=False), "not a boolean"),
    ("seq string", raw(seq="42"), "seq must be an integer"),
    ("seq float", raw(seq=42.0), "seq must be an integer"),
    ("seq bool", raw(seq=True), "seq must be an integer"),
    ("seq negative", raw(seq=-1), "seq out of range"),
    ("seq huge", raw(seq=2**63), "seq out of range"),
    ("seq null", raw(seq=None), "seq must be an integer"),
    ("currency lower", raw(currency="cny"), "ISO 4217"),
    ("currency long", raw(currency="YUAN"), "ISO 4217"),
    ("currency number", raw(currency=156), "ISO 4217"),
    ("event_id number", raw(event_id=7), "event_id must be a string"),
    ("event_id empty", raw(event_id=""), "event_id must be 1-128"),
    ("event_id control", raw(event_id="a\nb"), "event_id must be 1-128"),
    ("event_id long", raw(event_id="e" * 129), "event_id must be 1-128"),
    ("meter_id mismatch", raw(meter_id="MTR000043"), "does not match the topic"),
    ("meter_id number", raw(meter_id=42), "meter_id must be a string"),
    ("ts garbage", raw(ts="yesterday"), "not ISO 8601"),
    ("ts naive", raw(ts="2026-11-26T08:00:00"), "no time zone"),
    ("ts number", raw(ts=1764144000), "ts must be an ISO 8601 string"),
    ("ts long", raw(ts="2026-11-26T08:00:00" + "0" * 40 + "Z"), "ts must be"),
    ("ts overflows in UTC", raw(ts="0001-01-01T00:00:00+01:00"), "ts out of range"),
    ("too large", raw(padding="x" * MAX_EVENT_SIZE), "payload too large"),
    ("deep nesting", b"[" * 2000 + b"]" * 2000, "not JSON"),
]


@pytest.mark.parametrize(
    ("payload", "reason"), [(p, r) for _, p, r in BAD], ids=[n for n, *_ in BAD]
)
def test_bad_events_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(BadEvent) as caught:
        parse_balance_event("MTR000042", payload)
    assert reason in caught.value.reason
    assert caught.value.meter_id == "MTR000042"


def test_bad_event_keeps_a_usable_event_id_for_correlation() -> None:
    with pytest.raises(BadEvent) as caught:
        parse_balance_event("MTR000042", raw(balance="NaN"))
    assert caught.value.event_id == "evt-0001"
    with pytest.raises(BadEvent) as caught:
        parse_balance_event("MTR000042", raw(event_id="x\x00y", balance="oops"))
    assert caught.value.event_id is None


@pytest.mark.parametrize("topic_id", ["", "a/b", "a+b", "#", "sp ace", "x" * 65, "nul\x00"])
def test_bad_topic_meter_id(topic_id: str) -> None:
    with pytest.raises(BadEvent) as caught:
        parse_balance_event(topic_id, raw(meter_id=topic_id))
    assert caught.value.reason == "bad meter id in topic"
    assert caught.value.meter_id is None


def test_max_size_is_configurable() -> None:
    with pytest.raises(BadEvent, match="payload too large"):
        parse_balance_event("MTR000042", raw(), max_size=50)
    assert parse_balance_event("MTR000042", raw(), max_size=len(raw())).seq == 42


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_give_an_event_or_bad_event(payload: bytes) -> None:
    try:
        event = parse_balance_event("MTR000042", payload)
    except BadEvent as exc:
        assert exc.reason
    else:
        assert event.meter_id == "MTR000042"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "warning_threshold", "x"]), json_values))
def test_any_json_object_gives_an_event_or_bad_event(changes: dict[str, Any]) -> None:
    payload = json.dumps({**GOOD, **changes}).encode()
    try:
        event = parse_balance_event("MTR000042", payload)
    except BadEvent as exc:
        assert exc.reason
    else:
        assert event.balance.is_finite() and event.seq >= 0 and event.ts.tzinfo is UTC


# -- outgoing payloads ---------------------------------------------------------------------------

TS = datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC)


def test_format_ts_and_decimal() -> None:
    assert format_ts(TS) == "2026-11-26T08:00:00Z"
    assert format_ts(TS.astimezone(timezone(timedelta(hours=8)))) == "2026-11-26T08:00:00Z"
    assert format_ts(TS + timedelta(microseconds=123456)) == "2026-11-26T08:00:00.123Z"
    with pytest.raises(ValueError, match="naive"):
        format_ts(datetime(2026, 1, 1))
    assert format_decimal(Decimal("1E+2")) == "100"
    assert format_decimal(Decimal("-12.50")) == "-12.50"
    assert format_decimal(5) == "5"
    with pytest.raises(ValueError):
        format_decimal(Decimal("NaN"))
    with pytest.raises(TypeError):
        format_decimal(True)


def decoded(payload: dict[str, Any]) -> Any:
    return json.loads(encode_payload(payload))


def test_readings_payload() -> None:
    payload = readings_payload(
        "MTR1",
        TS,
        {
            "1.0.1.8.0.255": (Decimal("1234.567"), "kWh"),
            "1.0.32.7.0.255": (230.1, "V"),
            "0.0.96.3.10.255": (True, None),
            "0.0.96.1.0.255": (b"\x01\xab", None),
            "0.0.42.0.0.255": ("LGZ", None),
            "1.0.99.0.0.255": (7, None),
        },
    )
    assert decoded(payload) == {
        "meter_id": "MTR1",
        "ts": "2026-11-26T08:00:00Z",
        "values": {
            "1.0.1.8.0.255": {"value": "1234.567", "unit": "kWh"},
            "1.0.32.7.0.255": {"value": "230.1", "unit": "V"},
            "0.0.96.3.10.255": {"value": True, "unit": None},
            "0.0.96.1.0.255": {"value": "01ab", "unit": None},
            "0.0.42.0.0.255": {"value": "LGZ", "unit": None},
            "1.0.99.0.0.255": {"value": 7, "unit": None},
        },
    }
    with pytest.raises(ValueError):
        readings_payload("MTR1", TS, {"1.0.1.8.0.255": (float("nan"), "kWh")})


def test_relay_and_command_payloads() -> None:
    assert decoded(relay_payload("MTR1", "disconnected", False, TS, "balance -3.00")) == {
        "meter_id": "MTR1",
        "state": "disconnected",
        "output_state": False,
        "hold": False,
        "ts": "2026-11-26T08:00:00Z",
        "reason": "balance -3.00",
    }
    held = decoded(relay_payload("MTR1", "disconnected", False, TS, "line work", hold=True))
    assert held["hold"] is True
    with pytest.raises(ValueError):
        relay_payload("MTR1", "half-open", False, TS)
    payload = command_payload(
        command_id=17,
        meter_id="MTR1",
        action="reconnect",
        status="confirmed",
        attempt=2,
        ts=TS,
        event_id="evt-9",
    )
    assert decoded(payload) == {
        "command_id": 17,
        "meter_id": "MTR1",
        "action": "reconnect",
        "status": "confirmed",
        "attempt": 2,
        "ts": "2026-11-26T08:00:00Z",
        "event_id": "evt-9",
        "error": None,
    }
    for bad in ({"action": "explode"}, {"status": "done"}):
        args: dict[str, Any] = {
            "command_id": "c1",
            "meter_id": "MTR1",
            "action": "disconnect",
            "status": "sent",
            "attempt": 1,
            "ts": TS,
            **bad,
        }
        with pytest.raises(ValueError):
            command_payload(**args)


def test_notification_payloads() -> None:
    assert decoded(
        notification_payload(
            "low_balance",
            "MTR1",
            TS,
            balance=Decimal("9.50"),
            currency="CNY",
            warning_threshold=Decimal("20.00"),
            event_id="e1",
        )
    ) == {
        "type": "low_balance",
        "meter_id": "MTR1",
        "ts": "2026-11-26T08:00:00Z",
        "balance": "9.50",
        "currency": "CNY",
        "warning_threshold": "20.00",
        "event_id": "e1",
    }
    built = [
        notification_payload(
            "disconnected_for_arrears", "MTR1", TS, balance=Decimal("-1"), currency="CNY"
        ),
        notification_payload("reconnected", "MTR1", TS, balance=Decimal("5"), currency="CNY"),
        notification_payload("ready_for_reconnection", "MTR1", TS),
    ]
    assert [p["type"] for p in built] == [
        "disconnected_for_arrears",
        "reconnected",
        "ready_for_reconnection",
    ]
    assert built[0]["balance"] == "-1"
    assert "balance" not in built[2]
    with pytest.raises(ValueError):
        notification_payload("promo", "MTR1", TS)


def test_alarm_and_status_payloads() -> None:
    assert decoded(
        alarm_payload("relay_command_overdue", TS, meter_id="MTR1", detail={"minutes": 31})
    ) == {
        "type": "relay_command_overdue",
        "meter_id": "MTR1",
        "detail": {"minutes": 31},
        "ts": "2026-11-26T08:00:00Z",
    }
    assert alarm_payload("meter_unreachable", TS, meter_id="MTR1", detail="timeout")["detail"] == (
        "timeout"
    )
    assert alarm_payload("relay_stuck", TS)["meter_id"] is None
    with pytest.raises(ValueError):
        alarm_payload("Bad Type", TS)
    hostile = bad_event_alarm(TS, reason="meter_id does not match", meter_id="a/b\x00" * 50)
    assert hostile["meter_id"] is None and hostile["type"] == "bad_event"
    assert status_payload(True) == "online" and status_payload(False) == "offline"
    assert encode_payload("offline") == b"offline"


# -- nothing secret ------------------------------------------------------------------------------

KEY_HEX = "000102030405060708090a0b0c0d0e0f"
PASSWORD = "s3cr3t-Passw0rd"


@pytest.mark.parametrize(
    "text",
    [
        f"association failed: auth_key={KEY_HEX}",
        f"HLS failed with key {KEY_HEX.upper()}",
        f"enc_key: '{KEY_HEX}' rejected",
        f"password={PASSWORD} refused",
        f"LLS password: {PASSWORD}",
        "key bytes 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f",
    ],
)
def test_free_text_is_scrubbed(text: str) -> None:
    scrubbed = scrub_text(text)
    assert KEY_HEX not in scrubbed.lower()
    assert PASSWORD not in scrubbed
    assert "00 01 02 03 04 05 06 07 08 09" not in scrubbed
    assert "<redacted>" in scrubbed


def test_no_secret_reaches_any_payload() -> None:
    error = f"HLS auth failed (auth_key={KEY_HEX}, password={PASSWORD})"
    payloads = [
        command_payload(
            command_id=1,
            meter_id="MTR1",
            action="disconnect",
            status="failed",
            attempt=3,
            ts=TS,
            error=error,
        ),
        relay_payload("MTR1", "connected", True, TS, reason=error),
        alarm_payload("meter_unreachable", TS, meter_id="MTR1", detail=error),
        alarm_payload(
            "meter_unreachable",
            TS,
            meter_id="MTR1",
            detail={"error": error, "password": PASSWORD, "auth_key": KEY_HEX, "nested": [error]},
        ),
        bad_event_alarm(TS, reason=error, meter_id="MTR1"),
    ]
    for payload in payloads:
        wire = encode_payload(payload).decode()
        assert KEY_HEX not in wire.lower()
        assert PASSWORD not in wire
    assert len(scrub_text("x" * 10_000)) <= 500


def test_settings_repr_hides_the_password() -> None:
    settings_ = MqttConfig(username="hes", password=Secret(PASSWORD))
    assert PASSWORD not in repr(settings_)


# -- topics --------------------------------------------------------------------------------------


def test_topics_follow_the_contract() -> None:
    topics = Topics()
    assert topics.balance_filter == "billing/balance/+"
    assert topics.balance("MTR1") == "billing/balance/MTR1"
    assert topics.readings("MTR1") == "headend/meters/MTR1/readings"
    assert topics.relay("MTR1") == "headend/meters/MTR1/relay"
    assert topics.commands("MTR1") == "headend/meters/MTR1/commands"
    assert topics.notifications("MTR1") == "headend/meters/MTR1/notifications"
    assert topics.alarms == "headend/alarms"
    assert topics.status == "headend/status"
    assert topics.balance_meter_id("billing/balance/MTR1") == "MTR1"
    assert topics.balance_meter_id("billing/balance/") == ""
    assert topics.balance_meter_id("billing/balance/a/b") is None
    assert topics.balance_meter_id("headend/status") is None
    custom = Topics("site7/billing", "site7/hes")
    assert custom.balance_filter == "site7/billing/balance/+"
    assert custom.status == "site7/hes/status"


@pytest.mark.parametrize("prefix", ["", "/billing", "billing/", "bill#", "a+b", "$SYS", "a//b"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        Topics(billing_prefix=prefix)


def test_meter_ids_that_would_reshape_a_topic_are_refused() -> None:
    for bad in ["", "a/b", "+", "#", "a b", "x" * 65, "\ud800"]:
        assert not is_valid_meter_id(bad)
        with pytest.raises(ValueError):
            check_meter_id(bad)
        with pytest.raises(ValueError):
            Topics().relay(bad)
    assert is_valid_meter_id("MTR-000_042.7")


# -- outbox --------------------------------------------------------------------------------------


def msg(topic: str, droppable: bool = False, retain: bool = False) -> OutboxMessage:
    return OutboxMessage(topic, topic.encode(), 1, retain, droppable)


def shed(outbox: MemoryOutbox, message: OutboxMessage) -> str | None:
    """Put ``message``; the topic of whatever was shed to make room."""
    dropped = outbox.put(message)
    return None if dropped is None else dropped.topic


def drain(outbox: MemoryOutbox) -> list[str]:
    topics = []
    while (head := outbox.peek()) is not None:
        topics.append(head.topic)
        outbox.done(head)
    return topics


def test_outbox_keeps_put_order_across_classes() -> None:
    outbox = MemoryOutbox(10)
    for topic, droppable in [("r1", True), ("c1", False), ("r2", True), ("c2", False)]:
        assert outbox.put(msg(topic, droppable)) is None
    assert drain(outbox) == ["r1", "c1", "r2", "c2"]


def test_outbox_sheds_oldest_readings_first_and_counts() -> None:
    outbox = MemoryOutbox(3)
    outbox.put(msg("c1"))
    outbox.put(msg("r1", True))
    outbox.put(msg("r2", True))
    assert shed(outbox, msg("c2")) == "r1"
    assert shed(outbox, msg("c3")) == "r2"
    assert shed(outbox, msg("c4")) == "c1"  # nothing droppable left: oldest goes
    assert (outbox.dropped_readings, outbox.dropped_other) == (2, 1)
    assert drain(outbox) == ["c2", "c3", "c4"]


async def test_outbox_never_sheds_the_message_in_flight() -> None:
    outbox = MemoryOutbox(1)
    outbox.put(msg("c1"))
    in_flight = await outbox.next()
    assert shed(outbox, msg("c2")) == "c2"
    outbox.release(in_flight)
    assert drain(outbox) == ["c1"]


async def test_outbox_newer_retained_replaces_queued_older() -> None:
    outbox = MemoryOutbox(10)
    outbox.put(msg("relay/A", retain=True))
    outbox.put(msg("c1"))
    outbox.put(OutboxMessage("relay/A", b"newer", retain=True))
    assert outbox.superseded == 1
    head = await outbox.next()
    assert head.topic == "c1"
    outbox.done(head)
    head = await outbox.next()
    assert head.payload == b"newer"
    # a retained message already in flight is not replaced: both go, in order
    outbox.put(msg("relay/A", retain=True))
    outbox.done(head)
    assert drain(outbox) == ["relay/A"]


async def test_outbox_wait_empty_and_next() -> None:
    outbox = MemoryOutbox(5)
    async with asyncio.timeout(1):
        await outbox.wait_empty()
    waiter = asyncio.create_task(outbox.next())
    await asyncio.sleep(0)
    assert not waiter.done()
    outbox.put(msg("c1"))
    async with asyncio.timeout(1):
        head = await waiter
    empty = asyncio.create_task(outbox.wait_empty())
    await asyncio.sleep(0)
    assert not empty.done()
    outbox.done(head)
    async with asyncio.timeout(1):
        await empty
    with pytest.raises(ValueError):
        MemoryOutbox(0)


def test_outbox_message_refuses_what_no_broker_would_take() -> None:
    for topic in ("", "headend/+/x", "headend/#", "a\x00b", "\ud800", "t" * 65536):
        with pytest.raises(ValueError):
            OutboxMessage(topic, b"{}")
    with pytest.raises(ValueError):
        OutboxMessage("headend/alarms", b"{}", qos=3)
    assert OutboxMessage("headend/alarms", b"{}", qos=0).qos == 0


# -- notifier ------------------------------------------------------------------------------------


def test_notifier_builds_each_kind_of_message_on_its_topic() -> None:
    outbox = MemoryOutbox()
    notifier = Notifier(outbox, Topics("b", "site7/hes"))
    ts = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    notifier.readings("MTR1", ts, {"1.0.1.8.0.255": (Decimal("1.5"), "Wh")})
    notifier.relay_state("MTR1", "disconnected", False, ts, "arrears")
    notifier.command(
        command_id="c1",
        meter_id="MTR1",
        action="disconnect",
        status="confirmed",
        attempt=2,
        ts=ts,
        source="balance",
        state="disconnected",
    )
    notifier.notification("low_balance", "MTR1", ts, balance=Decimal("3"), currency="CNY")
    notifier.alarm("relay_stuck", ts, meter_id="MTR1", detail="still connected")
    notifier.bad_event(ts, reason="payload is not JSON", meter_id="a/b", event_id="e1")
    sent = []
    while (message := outbox.peek()) is not None:
        sent.append(message)
        outbox.done(message)
    assert [(m.topic, m.qos, m.retain, m.droppable) for m in sent] == [
        ("site7/hes/meters/MTR1/readings", 1, False, True),
        ("site7/hes/meters/MTR1/relay", 1, True, False),
        ("site7/hes/meters/MTR1/commands", 1, False, False),
        ("site7/hes/meters/MTR1/notifications", 1, False, False),
        ("site7/hes/alarms", 1, False, False),
        ("site7/hes/alarms", 1, False, False),
    ]
    payloads = [json.loads(m.payload) for m in sent]
    # Every message carries its own id, in the payload and on the message (the outbox's key).
    ids = [body.pop("message_id") for body in payloads]
    assert ids == [m.message_id for m in sent] and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 for i in ids)
    assert {body.pop("schema_version") for body in payloads} == {SCHEMA_VERSION}
    assert payloads[0]["values"] == {"1.0.1.8.0.255": {"value": "1.5", "unit": "Wh"}}
    assert payloads[1]["state"] == "disconnected" and payloads[1]["reason"] == "arrears"
    assert list(payloads[2])[-2:] == ["source", "state"]  # extras after the contract's fields
    assert (payloads[2]["source"], payloads[2]["state"]) == ("balance", "disconnected")
    assert "detail" not in payloads[2]
    assert payloads[3] == {
        "type": "low_balance",
        "meter_id": "MTR1",
        "ts": "2026-11-26T08:00:00Z",
        "balance": "3",
        "currency": "CNY",
    }
    assert payloads[4]["type"] == "relay_stuck" and payloads[4]["detail"] == "still connected"
    assert payloads[5]["type"] == "bad_event" and payloads[5]["meter_id"] is None
    assert payloads[5]["detail"] == {"reason": "payload is not JSON", "event_id": "e1"}


def test_notifier_refuses_a_meter_id_that_would_reshape_the_topic() -> None:
    outbox = MemoryOutbox()
    notifier = Notifier(outbox, Topics())
    with pytest.raises(ValueError):
        notifier.relay_state("a/b", "connected", True, datetime.now(UTC))
    assert len(outbox) == 0
