"""Every message the daemon publishes survives a crash and a broker outage (issue 9).

The messages are rows in the outbox table, written in the transaction of the change they
report and deleted only after the broker acknowledged them; each payload carries a
`message_id`, so a repeat after a crash is recognisable. These tests kill the daemon (SIGKILL,
a real process) and stop a real Mosquitto, then count what an integrator's persistent
subscriber received."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from db_support import DIALECTS
from e2e_support import eventually, fleet_database
from mqtt_support import Broker, Collector, MosquittoProcess, mosquitto_binary, publish_once
from test_daemon_e2e import DaemonProcess, balance_payload, headend

from headend.mqtt.durable_outbox import DurableOutbox
from headend.mqtt.incoming import parse_balance_event
from headend.mqtt.notifier import Notifier
from headend.mqtt.topics import Topics
from headend.relay.controller import RelayController
from headend.relay.intake import BalanceIntake
from headend.relay.operator import create_operator_command
from headend.storage import Repository

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs the mosquitto binary"),
]


def _by_topic(messages: list[aiomqtt.Message]) -> dict[str, list[dict[str, Any]]]:
    seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        payload = bytes(message.payload)  # type: ignore[arg-type]
        if payload in (b"online", b"offline", b""):
            continue
        seen[message.topic.value].append(json.loads(payload))
    return seen


def _assert_repeats_are_identical(messages: list[aiomqtt.Message]) -> int:
    """Every JSON message has a message_id, and a repeated id carries the same payload.
    Returns how many distinct messages there were."""
    payloads: dict[str, bytes] = {}
    for message in messages:
        payload = bytes(message.payload)  # type: ignore[arg-type]
        if payload in (b"online", b"offline", b""):
            continue
        body = json.loads(payload)
        message_id = body["message_id"]
        assert payloads.setdefault(message_id, payload) == payload, message_id
    return len(payloads)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_sigkill_with_the_broker_away_loses_no_message(
    sim_fleet, tmp_path: Path, dialect: str
) -> None:
    """Commands confirmed while the broker is down, then SIGKILL: after the restart every
    command and notification message arrives, each id with one payload."""
    mosquitto = MosquittoProcess(tmp_path)
    await mosquitto.start()
    broker = Broker("mosquitto", mosquitto.host, mosquitto.port, True)
    try:
        async with (
            sim_fleet(3) as fleet,
            headend(
                fleet,
                tmp_path,
                dialect=dialect,
                broker=(mosquitto.host, mosquitto.port),
                start=False,
            ) as h,
        ):
            everything = f"{h.headend_prefix}/#"
            received: list[aiomqtt.Message] = []
            async with Collector(broker, everything, identifier="integrator") as first:
                daemon = DaemonProcess(dict(h.environ), tmp_path)
                await daemon.start()
                try:
                    async with aiomqtt.Client(mosquitto.host, mosquitto.port, timeout=10) as bill:
                        for meter_id in h.ids:
                            payload = balance_payload(meter_id, "-5.00", 1)
                            await bill.publish(h.topic(meter_id), payload, qos=1, timeout=10)

                    async def committed() -> bool:
                        return all([await h.events_recorded(i) == 1 for i in range(3)])

                    await eventually(committed, every=0.02, what="events committed")
                    received += first.messages
                except BaseException:
                    await daemon.signal(signal.SIGKILL)
                    raise
            await mosquitto.stop()  # the broker goes away while the commands run
            assert h.repository is not None
            for i in range(3):
                await h.wait_state(i, "disconnected", within=60)
            depth, oldest = await h.repository.outbox.depth()
            assert depth > 0 and oldest is not None  # confirmations wait in the table
            assert await daemon.signal(signal.SIGKILL) == -signal.SIGKILL

            await mosquitto.start()
            async with Collector(broker, everything, identifier="integrator") as second:
                await daemon.start()
                try:

                    def confirmed_everywhere() -> bool:
                        seen = _by_topic([*received, *second.messages])
                        for meter_id in h.ids:
                            base = f"{h.headend_prefix}/meters/{meter_id}"
                            statuses = {c["status"] for c in seen[f"{base}/commands"]}
                            kinds = {n["type"] for n in seen[f"{base}/notifications"]}
                            if "confirmed" not in statuses:
                                return False
                            if "disconnected_for_arrears" not in kinds:
                                return False
                        return True

                    await eventually(confirmed_everywhere, within=60, what="every message")

                    async def drained() -> bool:
                        assert h.repository is not None
                        return (await h.repository.outbox.depth())[0] == 0

                    await eventually(drained, within=30, what="the outbox drained")
                    received += second.messages
                finally:
                    assert await daemon.signal(signal.SIGTERM) == 0
            assert _assert_repeats_are_identical(received) >= 9
    finally:
        await mosquitto.stop()


async def test_a_redelivered_event_still_has_its_notification(sim_fleet, tmp_path: Path) -> None:
    """The crash between commit and PUBACK: the event and its low_balance notification were
    committed together, the PUBACK never went, the broker offers the event again after the
    restart. The repeat is a duplicate (nothing applied twice), and the notification that the
    first delivery committed still reaches the integrator, once."""
    mosquitto = MosquittoProcess(tmp_path)
    await mosquitto.start()
    broker = Broker("mosquitto", mosquitto.host, mosquitto.port, True)
    try:
        async with (
            sim_fleet(1) as fleet,
            headend(fleet, tmp_path, broker=(mosquitto.host, mosquitto.port), start=False) as h,
        ):
            assert h.repository is not None
            meter_id = h.ids[0]
            raw = balance_payload(meter_id, "5.00", 1, event_id="topup-1")
            # The first delivery, applied by the intake exactly as the daemon does; then the
            # process is gone before anything was published or acknowledged.
            topics = Topics(h.billing_prefix, h.headend_prefix)
            outbox = DurableOutbox(h.repository.outbox)
            notifier = Notifier(outbox, topics)
            controller = RelayController(h.repository, None, notifier)  # type: ignore[arg-type]
            intake = BalanceIntake(h.repository, notifier, controller)
            await intake.handle(parse_balance_event(meter_id, raw), raw)
            assert (await h.repository.outbox.depth())[0] >= 1

            async with Collector(broker, f"{h.headend_prefix}/#") as integrator:
                await h.start()
                await publish_once(broker, h.topic(meter_id), raw)  # the broker's redelivery

                async def recorded_as_duplicate() -> bool:
                    return len(await h.repository.balance_events(meter_id)) == 1

                def low_balance() -> list[dict[str, Any]]:
                    seen = _by_topic(integrator.messages)
                    base = f"{h.headend_prefix}/meters/{meter_id}/notifications"
                    return [n for n in seen[base] if n["type"] == "low_balance"]

                await eventually(low_balance, within=30, what="the low_balance notification")
                assert await recorded_as_duplicate()
                await asyncio.sleep(0.5)  # a second copy would follow at once
                assert len({n["message_id"] for n in low_balance()}) == 1
    finally:
        await mosquitto.stop()


async def test_broker_down_for_a_minute_while_commands_run(sim_fleet, tmp_path: Path) -> None:
    """Operator commands run and confirm while the broker is away for a minute; every
    lifecycle, relay and notification message arrives once it is back."""
    mosquitto = MosquittoProcess(tmp_path)
    await mosquitto.start()
    broker = Broker("mosquitto", mosquitto.host, mosquitto.port, True)
    try:
        async with (
            sim_fleet(4) as fleet,
            headend(fleet, tmp_path, broker=(mosquitto.host, mosquitto.port), start=False) as h,
        ):
            assert h.repository is not None
            everything = f"{h.headend_prefix}/#"
            async with Collector(broker, everything, identifier="integrator-2"):
                await h.start()
            await mosquitto.stop()
            loop = asyncio.get_running_loop()
            down_since = loop.time()
            for meter_id in h.ids:
                await create_operator_command(h.repository, meter_id, "disconnect", "line work")
            for i in range(4):
                await h.wait_state(i, "disconnected", within=60)
            assert (await h.repository.outbox.depth())[0] >= 4 * 3  # queued, sent, confirmed
            await asyncio.sleep(max(0.0, 60.0 - (loop.time() - down_since)))
            await mosquitto.start()
            async with Collector(broker, everything, identifier="integrator-2") as back:

                def all_confirmed() -> bool:
                    seen = _by_topic(back.messages)
                    return all(
                        "confirmed"
                        in {
                            c["status"]
                            for c in seen[f"{h.headend_prefix}/meters/{meter_id}/commands"]
                        }
                        and seen[f"{h.headend_prefix}/meters/{meter_id}/relay"]
                        for meter_id in h.ids
                    )

                await eventually(all_confirmed, within=60, what="messages after the outage")
                assert _assert_repeats_are_identical(back.messages) >= 4 * 4
    finally:
        await mosquitto.stop()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_message_is_staged_in_the_transaction_of_its_change(
    sim_fleet, tmp_path: Path, dialect: str
) -> None:
    """Rolled back: neither the change nor its message; committed: both."""
    async with sim_fleet(1) as fleet, fleet_database(dialect, tmp_path, fleet) as (db, _key):
        repository = Repository(db)
        outbox = DurableOutbox(repository.outbox)
        notifier = Notifier(outbox, Topics("billing", "headend"))
        meter_id = fleet.config(0).meter_id
        with pytest.raises(RuntimeError):
            async with db.transaction():
                await repository.raise_alarm("relay_stuck", meter_id, "x")
                notifier.alarm("relay_stuck", datetime.now(UTC), meter_id=meter_id)
                raise RuntimeError("the change fails")
        assert (await repository.outbox.depth())[0] == 0
        assert await repository.list_alarms() == []
        async with db.transaction():
            await repository.raise_alarm("relay_stuck", meter_id, "x")
            notifier.alarm("relay_stuck", datetime.now(UTC), meter_id=meter_id)
        assert (await repository.outbox.depth())[0] == 1
        message = await outbox.next()
        assert json.loads(message.payload)["message_id"] == message.message_id
        outbox.done(message)
        await outbox.wait_empty()
        assert (await repository.outbox.depth())[0] == 0


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_an_operator_command_from_another_process_is_announced(
    sim_fleet, tmp_path: Path, dialect: str
) -> None:
    """The CLI writes the command and its 'queued' message in one transaction; whichever
    daemon drains the table publishes it."""
    async with sim_fleet(1) as fleet, fleet_database(dialect, tmp_path, fleet) as (db, _key):
        repository = Repository(db)
        outbox = DurableOutbox(repository.outbox)
        notifier = Notifier(outbox, Topics("billing", "headend"))
        meter_id = fleet.config(0).meter_id
        command_id = await create_operator_command(
            repository, meter_id, "disconnect", "fire brigade", notifier=notifier
        )
        message = await outbox.next()
        body = json.loads(message.payload)
        assert message.topic == f"headend/meters/{meter_id}/commands"
        assert (body["command_id"], body["status"], body["action"]) == (
            command_id,
            "queued",
            "disconnect",
        )
