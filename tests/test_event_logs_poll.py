"""Event logs by polling: the simulator's logs caught up incrementally, stored once, published
with their IDIS names and `"source": "poll"`, and a power failure raising its alarm; and the
simulator's own side (a power failure through the control port lands in its logs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from db_support import DIALECTS
from e2e_support import KeepingOutbox, eventually, fleet_database

from cosem_objects import event_codes
from drivers.connect import MeterConnection, open_session
from headend.collection.poller import Poller, PollSettings
from headend.collection.scheduler import PollJob
from headend.mqtt.notifier import Notifier
from headend.mqtt.topics import Topics
from headend.storage import Repository
from simulators.control import ControlClient, ControlServer
from simulators.event_logs import STANDARD_LOG, FraudCode, StandardCode
from simulators.relay import EventCode

TOPICS = Topics()
SETTINGS = PollSettings(obis=("1.0.1.8.0.255",), load_profile=False, billing_profile=False)
STANDARD = event_codes.STANDARD_EVENT_LOG
FRAUD = event_codes.FRAUD_DETECTION_LOG
DISCONNECTOR = event_codes.DISCONNECTOR_CONTROL_LOG
POWER_FAILURE = event_codes.POWER_FAILURE_LOG


async def _poll(fleet: Any, poller: Poller, meter_id: str) -> dict[str, tuple[int, int]]:
    """One catch-up session; (entries read, entries new) per log."""
    connection = MeterConnection(**fleet.connection_kwargs(0))
    async with open_session(connection, timeout=5) as session:
        report = await poller.poll(
            session, meter_id, PollJob(meter_id, registers=False, load_profile=True)
        )
    assert report.problems == []
    return {result.log: (result.read, result.new) for result in report.event_logs}


def _published(outbox: KeepingOutbox, meter_id: str) -> list[tuple[str, int, str, str]]:
    return [
        (p["log"], p["code"], p["name"], p["source"]) for p in outbox.on(TOPICS.events(meter_id))
    ]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_event_logs_are_caught_up_incrementally_with_names(
    sim_fleet: Any, tmp_path: Any, dialect: str
) -> None:
    async with sim_fleet(1) as fleet, fleet_database(dialect, tmp_path, fleet) as (db, _key):
        meter_id = fleet.config(0).meter_id
        meter = fleet.meter(0)
        meter.remote_disconnect()
        fleet.power_fail(0)
        fleet.open_cover(0)
        repository = Repository(db)
        outbox = KeepingOutbox()
        poller = Poller(repository, Notifier(outbox, TOPICS), SETTINGS)

        first = await _poll(fleet, poller, meter_id)
        assert first == {
            STANDARD: (1, 1),
            FRAUD: (1, 1),
            DISCONNECTOR: (1, 1),
            POWER_FAILURE: (1, 1),
        }
        assert sorted(_published(outbox, meter_id)) == sorted(
            [
                (STANDARD, StandardCode.POWER_DOWN, "Power down", "poll"),
                (FRAUD, FraudCode.METER_COVER_REMOVED, "Meter cover removed", "poll"),
                (DISCONNECTOR, EventCode.REMOTE_DISCONNECTION, "Remote disconnection", "poll"),
                (POWER_FAILURE, StandardCode.POWER_DOWN, "Power down", "poll"),
            ]
        )
        alarms = [a for a in await repository.list_alarms(meter_id=meter_id)]
        assert [a.type for a in alarms] == ["meter_power_failure"]
        assert [p["type"] for p in outbox.on(TOPICS.alarms)] == ["meter_power_failure"]  # once

        # Later events (a second on, so they do not share the last stored entry's time).
        await asyncio.sleep(1.1)
        fleet.close_cover(0)
        meter.remote_reconnect()
        outbox.messages.clear()

        second = await _poll(fleet, poller, meter_id)
        # Each log is read from its last stored entry on: that entry again, then the new ones.
        assert second == {
            STANDARD: (1, 0),
            FRAUD: (2, 1),
            DISCONNECTOR: (2, 1),
            POWER_FAILURE: (1, 0),
        }
        assert sorted(_published(outbox, meter_id)) == sorted(
            [
                (FRAUD, FraudCode.METER_COVER_CLOSED, "Meter cover closed", "poll"),
                (DISCONNECTOR, EventCode.REMOTE_CONNECTION, "Remote connection", "poll"),
            ]
        )
        stored = await repository.meter_events(meter_id)
        assert len(stored) == 6
        assert {e.source for e in stored} == {"poll"}

        third = await _poll(fleet, poller, meter_id)
        assert all(new == 0 for _read, new in third.values())


async def test_a_power_failure_from_the_control_port_lands_in_the_power_failure_log(
    sim_fleet: Any,
) -> None:
    async with sim_fleet(1, security="hls-gmac") as fleet, ControlServer(fleet) as control:
        async with ControlClient(port=control.port) as client:
            await client.call("power_fail", meter=0)
        connection = MeterConnection(**fleet.connection_kwargs(0))
        async with open_session(connection, timeout=5) as session:
            failures = await session.read_profile(POWER_FAILURE)
            standard = await session.read_profile(STANDARD)
        assert [list(row.values.values()) for row in failures.rows] == [[StandardCode.POWER_DOWN]]
        assert [list(row.values.values()) for row in standard.rows] == [[StandardCode.POWER_DOWN]]
        assert failures.rows[0].timestamp is not None


async def test_a_power_failure_that_is_over_leaves_no_alarm_standing(
    sim_fleet: Any, tmp_path: Any
) -> None:
    async with sim_fleet(1) as fleet, fleet_database("sqlite", tmp_path, fleet) as (db, _key):
        meter_id = fleet.config(0).meter_id
        fleet.power_fail(0, duration_s=0.05)
        meter = fleet.meter(0)
        await eventually(lambda: len(meter.event_log(STANDARD_LOG)) == 2, what="power up")
        repository = Repository(db)
        outbox = KeepingOutbox()
        poller = Poller(repository, Notifier(outbox, TOPICS), SETTINGS)
        polled = await _poll(fleet, poller, meter_id)
        assert polled[STANDARD] == (2, 2) and polled[POWER_FAILURE] == (1, 1)
        # All three events are published, in the order they happened ...
        codes = [(p["log"], p["code"]) for p in outbox.on(TOPICS.events(meter_id))]
        assert codes[-1] == (STANDARD, StandardCode.POWER_UP)
        assert sorted(codes[:2]) == sorted(
            [(STANDARD, StandardCode.POWER_DOWN), (POWER_FAILURE, StandardCode.POWER_DOWN)]
        )
        # ... but the supply is back: no alarm stands, none was published.
        assert await repository.list_alarms(meter_id=meter_id) == []
        assert outbox.on(TOPICS.alarms) == []
