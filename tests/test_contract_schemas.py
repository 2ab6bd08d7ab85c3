"""docs/asyncapi.yaml and docs/schemas: valid documents, in step with the code, and able to
fail. (The e2e tests validate every message they see through tests/mqtt_support.py.)"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from mqtt_support import Collector, open_broker, publish_once
from schema_support import SCHEMAS, ContractError, check_message, errors, registry, schema_for

from headend.mqtt.notifier import Notifier
from headend.mqtt.outbox import MemoryOutbox
from headend.mqtt.payloads import (
    SCHEMA_VERSION,
    relay_payload,
    response_error_payload,
    response_relay_payload,
    response_values_payload,
)
from headend.mqtt.topics import Topics
from headend.requests.parse import BadRequest, parse_request

ASYNCAPI = SCHEMAS.parent / "asyncapi.yaml"
TS = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def _sent_by_notifier() -> list[tuple[str, bytes]]:
    """One message of every kind the Notifier sends, as the wire has them."""
    outbox = MemoryOutbox()
    notifier = Notifier(outbox, Topics())
    notifier.readings(
        "M1", TS, {"1.0.1.8.0.255": (Decimal("1.5"), "Wh"), "0.0.96.3.10.255": (True, None)}
    )
    notifier.relay_state("M1", "disconnected", False, TS, "arrears", hold=True)
    notifier.command(
        command_id=7,
        meter_id="M1",
        action="disconnect",
        status="failed",
        attempt=2,
        ts=TS,
        event_id="e1",
        error="timeout",
        source="balance",
        state="connected",
    )
    for kind in (
        "low_balance",
        "disconnected_for_arrears",
        "reconnected",
        "ready_for_reconnection",
    ):
        notifier.notification(kind, "M1", TS, balance=Decimal("3.5"), currency="CNY", event_id="e")
    notifier.alarm("relay_stuck", TS, meter_id="M1", detail={"tries": 3})
    notifier.bad_event(TS, reason="payload is not JSON", meter_id="a/b", event_id="e1")
    relay = relay_payload("M1", "connected", True, TS, "request")
    notifier.response(response_values_payload("r1", "M1", TS, {"1.0.1.8.0.255": (12, "Wh")}))
    notifier.response(response_values_payload("r2", "M1", TS, {}, ["1.0.99.1.0.255"]))
    notifier.response(response_relay_payload("r3", TS, relay))
    notifier.response(response_error_payload("r4", TS, "unknown_meter", "no meter X", "X"))
    notifier.response(
        response_error_payload(None, TS, "malformed", "not JSON"), response_topic="app/responses/x"
    )
    sent = []
    while (message := outbox.peek()) is not None:
        sent.append((message.topic, message.payload))
        outbox.done(message)
    return sent


def test_every_schema_is_valid_draft_2020_12() -> None:
    names = sorted(p.name for p in SCHEMAS.glob("*.json"))
    assert len(names) >= 12
    for name in names:
        assert json.loads((SCHEMAS / name).read_text())["$schema"].endswith("2020-12/schema")
    registry()  # checks each schema against the metaschema


def test_every_message_the_notifier_sends_validates() -> None:
    sent = _sent_by_notifier()
    assert len(sent) == 14
    for topic, payload in sent:
        assert check_message(topic, payload) is not None, topic
        assert json.loads(payload)["schema_version"] == SCHEMA_VERSION


def _readings() -> dict[str, Any]:
    return json.loads(_sent_by_notifier()[0][1])


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda p: p.pop("schema_version"), "schema_version"),
        (lambda p: p.update(extra=1), "Unevaluated properties"),
        (lambda p: p.update(ts="2026-11-26 08:00"), "ts"),
        (lambda p: p["values"].update({"1.0.1.8.0.255": {"value": 1.5, "unit": "Wh"}}), "values"),
        (lambda p: p.update(meter_id="a/b"), "meter_id"),
    ],
)
def test_a_wrong_payload_fails(change: Any, why: str) -> None:
    payload = _readings()
    assert errors("readings.json", payload) == []
    change(payload)
    problems = errors("readings.json", payload)
    assert problems and why in "\n".join(problems)
    with pytest.raises(ContractError):
        check_message("headend/meters/M1/readings", json.dumps(payload).encode())


def test_notification_shapes_by_type() -> None:
    base = {
        "message_id": str(uuid.uuid4()),
        "schema_version": SCHEMA_VERSION,
        "meter_id": "M1",
        "ts": "2026-11-26T08:00:00Z",
    }
    good = [
        {
            "type": "credit_running_out",
            "estimated_days_left": 2.5,
            "suggested_topup": "216",
            "balance": "10",
            "currency": "CNY",
        },
        {"type": "low_balance", "estimated_days_left": None, "suggested_topup": None},
        {"type": "disconnect_scheduled", "scheduled_at": "2026-11-26T18:00:00+00:00"},
        {
            "type": "usage_statement",
            "period_start": "2026-11-01T00:00:00Z",
            "period_end": "2026-12-01T00:00:00Z",
            "energy_kwh": 312.5,
            "previous_period_kwh": None,
            "same_period_last_year_kwh": 290.0,
        },
        {
            "type": "usage_anomaly",
            "anomaly": "night_base_load",
            "detail": "0.8 kW at night",
            "observed": 0.8,
            "usual": 0.1,
            "unit": "kW",
            "threshold_factor": 3.0,
        },
    ]
    for body in good:
        assert errors("notification.json", {**base, **body}) == [], body["type"]
    bad = [
        {"type": "credit_running_out"},  # its fields are required
        {"type": "reconnected", "scheduled_at": "2026-11-26T18:00:00Z"},  # not its field
        {"type": "something_else"},
    ]
    for body in bad:
        assert errors("notification.json", {**base, **body}), body


def test_every_incoming_schema_refusal_is_a_parser_refusal_too() -> None:
    """Balance events and requests the schema turns away are ones the head-end refuses."""
    good = {"request_id": "r1", "meter_id": "M1", "obis": ["1.0.1.8.0.255"]}
    assert errors("request_read.json", good) == []
    parse_request("read", json.dumps(good).encode())
    for broken in (
        {"meter_id": "M1", "obis": ["1.0.1.8.0.255"]},
        {**good, "obis": []},
        {**good, "obis": ["1.0.1.8.0"]},
        {**good, "request_id": "a/b"},
    ):
        assert errors("request_read.json", broken)
        with pytest.raises(BadRequest):
            parse_request("read", json.dumps(broken).encode())
        check_message("headend/requests/read", json.dumps(broken).encode())  # no ContractError


def test_asyncapi_document_covers_every_schema_and_topic() -> None:
    doc = yaml.safe_load(ASYNCAPI.read_text())
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == SCHEMA_VERSION
    referenced = set()
    for message in doc["components"]["messages"].values():
        ref = message["payload"]["schema"]["$ref"]
        assert (ASYNCAPI.parent / ref).resolve().exists(), ref
        referenced.add(Path(ref).name)
    assert referenced == {p.name for p in SCHEMAS.glob("*.json")} - {"common.json"}
    # Every channel's address maps to the schema its message names (the collectors' map).
    for name, channel in doc["channels"].items():
        if channel["address"] is None:
            continue
        address = re.sub(r"\{[a-z_]+\}", "X", channel["address"])
        (message,) = channel["messages"].values()
        key = message["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["messages"][key]["payload"]["schema"]["$ref"]
        assert schema_for(address) == Path(schema).name, name
    # Every operation's channel exists, and QoS 1 everywhere; retained only relay and status.
    retained = set()
    for operation in doc["operations"].values():
        channel = operation["channel"]["$ref"].rsplit("/", 1)[1]
        assert channel in doc["channels"]
        binding = operation["bindings"]["mqtt"]
        assert binding["qos"] == 1
        if binding.get("retain"):
            retained.add(channel)
    assert retained == {"relay", "status"}


@pytest.mark.mosquitto
async def test_a_collector_fails_on_a_message_that_breaks_the_contract(tmp_path) -> None:
    async with open_broker("mosquitto", tmp_path) as broker:
        topic = f"{broker.prefix}/headend/meters/M1/readings"
        body = _readings()
        del body["schema_version"]
        seen = Collector(broker, f"{broker.prefix}/headend/#")
        with pytest.raises(ContractError, match="schema_version"):
            async with seen:
                await publish_once(broker, topic, json.dumps(_readings()))  # valid: passes
                async with aiomqtt.Client(broker.host, broker.port) as client:
                    await client.publish(topic, json.dumps(body), qos=1)
                await seen.wait_for(topic, json.dumps(body).encode())
        assert len(seen.messages) == 2


def test_an_incoming_message_the_schema_refuses_but_the_headend_takes_fails() -> None:
    """The check on incoming messages can fail too: a document stricter than the parser."""
    event = {
        "meter_id": "M1",
        "balance": "1",
        "currency": "CNY",
        "seq": 1,
        "event_id": "e",
        "ts": "2026-11-26T08:00:00Z",
    }
    assert check_message("billing/balance/M1", json.dumps(event).encode())
    # A space for the "T": the parser takes it (fromisoformat does), the document does not.
    with pytest.raises(ContractError, match="ts"):
        check_message(
            "billing/balance/M1", json.dumps({**event, "ts": "2026-11-26 08:00:00Z"}).encode()
        )
