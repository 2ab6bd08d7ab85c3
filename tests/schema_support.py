"""The MQTT contract's JSON Schemas (docs/schemas/) as a check every e2e test runs.

`check_message(topic, payload)` finds the schema for a topic by its shape (prefixes differ per
test) and validates the payload: outgoing messages must validate; an incoming one (a balance
event, a request) that does not must also be refused by the head-end's own parser, so the
document never turns away what the code accepts. tests/mqtt_support.py calls it for every
message a Collector sees and every message publish_once sends, so all e2e tests check the
contract without asking."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"

_TOPICS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(^|/)balance/(?P<meter>[^/]+)$"), "balance_event.json"),
    (re.compile(r"(^|/)meters/[^/]+/readings$"), "readings.json"),
    (re.compile(r"(^|/)meters/[^/]+/relay$"), "relay.json"),
    (re.compile(r"(^|/)meters/[^/]+/commands$"), "command.json"),
    (re.compile(r"(^|/)meters/[^/]+/notifications$"), "notification.json"),
    (re.compile(r"(^|/)meters/[^/]+/events$"), "event.json"),
    (re.compile(r"(^|/)alarms$"), "alarm.json"),
    (re.compile(r"(^|/)status$"), "status.json"),
    (re.compile(r"(^|/)requests/read$"), "request_read.json"),
    (re.compile(r"(^|/)requests/relay_status$"), "request_relay_status.json"),
    (re.compile(r"(^|/)responses/[^/]+$"), "response.json"),
]
INCOMING = {"balance_event.json", "request_read.json", "request_relay_status.json"}
TEXT = {"status.json"}


class ContractError(AssertionError):
    """A message the MQTT contract's schemas do not allow."""


@cache
def registry() -> Registry:  # type: ignore[type-arg]
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(contents)
        resources.append((path.name, Resource.from_contents(contents, DRAFT202012)))
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": name}, registry=registry())


def schema_for(topic: str) -> str | None:
    for pattern, name in _TOPICS:
        if pattern.search(topic):
            return name
    return None


def errors(name: str, instance: Any) -> list[str]:
    found: list[ValidationError] = sorted(
        validator(name).iter_errors(instance), key=lambda e: list(e.path)
    )
    return [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}" for e in found]


def _refused_by_headend(name: str, topic: str, payload: bytes) -> bool:
    """Whether the head-end's own parser refuses an incoming payload."""
    if name == "balance_event.json":
        from headend.mqtt.incoming import BadEvent, parse_balance_event

        match = _TOPICS[0][0].search(topic)
        assert match is not None
        try:
            parse_balance_event(match.group("meter"), payload)
        except BadEvent:
            return True
        return False
    parse = _request_parser()
    if parse is None:
        return False
    kind = "read" if name == "request_read.json" else "relay_status"
    try:
        parse(kind, payload)
    except ValueError:  # BadRequest is a ValueError
        return True
    return False


def _request_parser() -> Callable[[str, bytes], Any] | None:
    try:
        from headend.requests.parse import parse_request
    except ImportError:
        return None
    return parse_request


def check_message(topic: str, payload: bytes) -> str | None:
    """Validate one message; returns the schema's file name (None: no schema for the topic).
    Raises ContractError when the message breaks the contract."""
    name = schema_for(topic)
    if name is None:
        if "headend/" in topic or topic.startswith("billing/"):
            raise ContractError(f"{topic}: no schema in docs/schemas for this topic")
        return None
    if not payload:
        return name  # clearing a retained message
    if name in TEXT:
        try:
            instance: Any = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ContractError(f"{topic}: not UTF-8 text") from None
    else:
        try:
            instance = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            instance = _NOT_JSON
    problems = ["payload is not JSON"] if instance is _NOT_JSON else errors(name, instance)
    if not problems:
        return name
    if name in INCOMING and _refused_by_headend(name, topic, payload):
        return name  # invalid on purpose, and the head-end says so too
    raise ContractError(
        f"{topic} breaks {name}:\n  " + "\n  ".join(problems) + f"\n  payload: {payload[:500]!r}"
    )


_NOT_JSON = object()
