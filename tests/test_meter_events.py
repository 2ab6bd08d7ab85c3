"""The events record: meter events stored once whatever their source, the new ones returned
(to publish once), the catch-up point, the IDIS names, the events payload, and the push
invocation counter that refuses replays. Real SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from db_support import DIALECTS, temp_database
from test_storage import T0, add_meters

from cosem_objects import event_codes
from headend.mqtt.notifier import Notifier
from headend.mqtt.outbox import MemoryOutbox
from headend.mqtt.topics import Topics
from headend.storage import Repository
from headend.storage.events import EventRow

LOG = event_codes.DISCONNECTOR_CONTROL_LOG


@pytest.fixture(params=DIALECTS)
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Repository]:
    async with temp_database(request.param, tmp_path) as database:
        await add_meters(database, "M1", "M2")
        yield Repository(database, clock=lambda: T0)


def row(meter_id: str, minutes: int, code: int, source: str = "push") -> EventRow:
    return EventRow(
        meter_id,
        LOG,
        T0 + timedelta(minutes=minutes),
        code,
        event_codes.event_name(code, LOG),
        source,
    )


async def test_events_are_stored_once_and_only_new_ones_returned(repo: Repository) -> None:
    first = await repo.store_events([row("M1", 1, 62), row("M1", 2, 63), row("M1", 1, 62)])
    assert [(e.code, e.source) for e in first] == [(62, "push"), (63, "push")]
    # The poll that catches the log up finds the pushed one and one more.
    again = await repo.store_events([row("M1", 1, 62, "poll"), row("M1", 3, 60, "poll")])
    assert [(e.code, e.source) for e in again] == [(60, "poll")]
    stored = await repo.meter_events("M1")
    assert [(e.code, e.name, e.source) for e in stored] == [
        (62, "Remote disconnection", "push"),
        (63, "Remote connection", "push"),
        (60, "Manual disconnection", "poll"),
    ]
    assert await repo.meter_events("M2") == []
    assert await repo.last_event_ts("M1", LOG) == T0 + timedelta(minutes=3)
    assert await repo.last_event_ts("M1", event_codes.STANDARD_EVENT_LOG) is None


async def test_an_unknown_source_is_refused(repo: Repository) -> None:
    with pytest.raises(ValueError, match="source"):
        await repo.store_events([row("M1", 1, 62, "rumour")])
    assert await repo.meter_events("M1") == []


async def test_push_counter_accepts_only_increasing_values(repo: Repository) -> None:
    assert await repo.last_push_counter("M1") is None
    assert await repo.accept_push_counter("M1", 5) is True
    assert await repo.accept_push_counter("M1", 5) is False  # the same push again: replay
    assert await repo.accept_push_counter("M1", 4) is False
    assert await repo.accept_push_counter("M2", 1) is True  # per meter
    assert await repo.accept_push_counter("M1", 6) is True
    assert await repo.last_push_counter("M1") == 6


def test_event_names_come_from_the_log_table_then_any_idis_table() -> None:
    assert event_codes.event_name(1, event_codes.STANDARD_EVENT_LOG) == "Power down"
    assert event_codes.event_name(62) == "Remote disconnection"
    assert event_codes.event_name(44, event_codes.STANDARD_EVENT_LOG) == "Meter cover removed"
    assert event_codes.event_name(231) == "unknown event 231"
    assert event_codes.RELAY_EVENT_STATES[62] == ("disconnected", False)
    assert event_codes.POWER_DOWN in event_codes.POWER_FAILURE_CODES


def test_the_event_payload_has_the_contract_fields() -> None:
    outbox = MemoryOutbox()
    notifier = Notifier(outbox, Topics(headend_prefix="h"))
    notifier.event("M1", T0, LOG, 62, "Remote disconnection", "push")
    message = outbox.peek()
    assert message is not None
    assert message.topic == "h/meters/M1/events"
    body = json.loads(message.payload)
    assert set(body) == {
        "message_id",
        "schema_version",
        "meter_id",
        "ts",
        "log",
        "code",
        "name",
        "source",
    }
    assert body["code"] == 62 and body["source"] == "push" and body["ts"] == "2026-11-26T08:00:00Z"
    with pytest.raises(ValueError):
        notifier.event("M1", T0, LOG, 62, "x", "rumour")
