"""On-demand requests over MQTT, end to end: the daemon with a simulator fleet, SQLite and the
system Mosquitto (MQTT 5 for the daemon and the requester). Every message seen here is also
checked against docs/schemas by the collector (schema_support.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import aiomqtt
import pytest
from e2e_support import eventually
from mqtt_support import Collector, system_mosquitto
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_daemon_e2e import headend

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]

REGISTERS = ["1.0.1.8.0.255", "1.0.32.7.0.255"]


def _mosquitto() -> tuple[str, int]:
    where = system_mosquitto()
    if where is None:
        pytest.skip("no Mosquitto at 127.0.0.1:1883 (set HEADEND_TEST_MQTT_HOST to use one)")
    return where


async def _request(
    client: aiomqtt.Client,
    topic: str,
    body: dict[str, Any] | bytes,
    *,
    response_topic: str | None = None,
    correlation: bytes | None = None,
) -> None:
    properties = None
    if response_topic is not None:
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = response_topic
        if correlation is not None:
            properties.CorrelationData = correlation
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    await client.publish(topic, payload, qos=1, properties=properties, timeout=10)


async def test_requests_are_answered_values_relay_and_errors(sim_fleet, tmp_path) -> None:
    broker = _mosquitto()
    async with sim_fleet(2) as fleet:
        # Polls are slow here, so the answers are the requests' own reads.
        overrides = {"HEADEND_POLLING_INTERVAL_S": "600", "HEADEND_POLLING_TIMEOUT_S": "5"}
        async with headend(fleet, tmp_path, broker=broker, overrides=overrides) as h:
            assert h.collector is not None
            app = f"{h.headend_prefix.split('/')[0]}/apps/{uuid.uuid4().hex[:6]}/responses/me"
            requests = f"{h.headend_prefix}/requests"

            def answer(request_id: str) -> dict[str, Any] | None:
                assert h.collector is not None
                got = h.collector.payloads(f"{h.headend_prefix}/responses/{request_id}")
                return json.loads(got[-1]) if got else None

            async with (
                Collector(h.broker, app, mqtt5=True) as own,
                aiomqtt.Client(
                    *broker, protocol=aiomqtt.ProtocolVersion.V5, timeout=10
                ) as requester,
            ):
                # A read, MQTT 5 with a response topic: answered on both topics.
                await _request(
                    requester,
                    f"{requests}/read",
                    {"request_id": "r-read", "meter_id": h.ids[0], "obis": REGISTERS},
                    response_topic=app,
                    correlation=b"corr-1",
                )
                read = await eventually(lambda: answer("r-read"), what="read answered")
                assert read["ok"] is True and read["meter_id"] == h.ids[0]
                assert set(read["values"]) == set(REGISTERS)
                energy = read["values"]["1.0.1.8.0.255"]
                assert energy["unit"] == "Wh" and float(energy["value"]) > 0
                await own.wait_for(app)
                # The reply on the response topic carries the request's correlation data.
                mine = [m for m in own.messages if m.topic.value == app]
                assert json.loads(mine[0].payload)["request_id"] == "r-read"  # type: ignore[arg-type]
                assert getattr(mine[0].properties, "CorrelationData", None) == b"corr-1"

                # The relay, as the meter has it (and as on the relay topic).
                await _request(
                    requester,
                    f"{requests}/relay_status",
                    {"request_id": "r-relay", "meter_id": h.ids[1]},
                )
                relay = await eventually(lambda: answer("r-relay"), what="relay answered")
                assert relay["ok"] is True
                assert relay["relay"]["state"] == h.sim_state(1)
                assert relay["relay"]["meter_id"] == h.ids[1]

                # An unknown meter and malformed requests get an error, never silence.
                await _request(
                    requester,
                    f"{requests}/read",
                    {"request_id": "r-unknown", "meter_id": "NO-SUCH-METER", "obis": REGISTERS},
                )
                unknown = await eventually(lambda: answer("r-unknown"), what="unknown answered")
                assert unknown["ok"] is False and unknown["code"] == "unknown_meter"
                assert "NO-SUCH-METER" in unknown["error"]

                await _request(
                    requester,
                    f"{requests}/read",
                    {"request_id": "r-bad", "meter_id": h.ids[0], "obis": ["not-obis"]},
                )
                bad = await eventually(lambda: answer("r-bad"), what="malformed answered")
                assert bad["ok"] is False and bad["code"] == "malformed"
                assert bad["meter_id"] == h.ids[0]

                # No usable request id: answered on the response topic only ...
                await _request(requester, f"{requests}/read", b"\xff not json", response_topic=app)

                def unaddressed() -> list[dict[str, Any]]:
                    return [json.loads(p) for p in own.payloads(app) if b'"request_id":null' in p]

                loose = await eventually(unaddressed, what="answer without request id")
                assert loose[0]["ok"] is False and loose[0]["code"] == "malformed"

                # ... and with nowhere to answer, an alarm for a person.
                await _request(requester, f"{requests}/relay_status", {"meter_id": h.ids[0]})
                alarm = await eventually(
                    lambda: [a for a in h.out("alarms") if a["type"] == "bad_request"],
                    what="bad_request alarm",
                )
                assert "request_id" in alarm[0]["detail"]["reason"]

                # A meter that does not answer: an error within polling.timeout_s (5 s here).
                fleet.go_offline(1)
                await _request(
                    requester,
                    f"{requests}/relay_status",
                    {"request_id": "r-away", "meter_id": h.ids[1]},
                )
                away = await eventually(lambda: answer("r-away"), what="offline answered")
                assert away["ok"] is False and away["code"] in ("timeout", "unreachable")


async def test_requests_go_after_relay_commands_and_before_polls() -> None:
    """The line lock's lanes: whoever waits for a busy line, commands go first, then
    requests, then polls (in arrival order within a lane)."""

    from headend.meters.line_locks import COMMAND, POLL, REQUEST, LineLocks

    locks = LineLocks()
    order: list[str] = []
    held = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with locks.hold("line"):
            held.set()
            await release.wait()

    async def waiter(name: str, priority: int) -> None:
        async with locks.hold("line", priority):
            order.append(name)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(first())
        await held.wait()
        for name, priority in (
            ("poll-1", POLL),
            ("request-1", REQUEST),
            ("poll-2", POLL),
            ("command", COMMAND),
            ("request-2", REQUEST),
        ):
            tg.create_task(waiter(name, priority))
            await asyncio.sleep(0)
        release.set()
    assert order == ["command", "request-1", "request-2", "poll-1", "poll-2"]


async def test_each_requester_has_a_bounded_number_of_requests_in_flight(
    sim_fleet, tmp_path
) -> None:
    """Eight meters that answer slowly, four reads from each of two requesters, one in flight
    per requester: the simulator never sees more than two connections open at once, and
    every request is answered."""

    from e2e_support import KeepingOutbox, fleet_database

    from headend.meters.access import MeterAccess
    from headend.mqtt.notifier import Notifier
    from headend.mqtt.topics import Topics
    from headend.requests.service import RequestService, RequestSettings
    from headend.storage import Repository

    async with (
        sim_fleet(8, latency_ms=150) as fleet,
        fleet_database("sqlite", tmp_path, fleet) as (db, key),
    ):
        repository = Repository(db)
        access = MeterAccess(db, repository, key, timeout_s=10)
        outbox = KeepingOutbox()
        service = RequestService(
            access,
            Notifier(outbox, Topics()),  # type: ignore[arg-type]
            RequestSettings(timeout_s=60, per_requester=1, total=8),
        )
        ids = [fleet.config(i).meter_id for i in range(8)]
        worker = asyncio.create_task(service.run())
        peak = 0
        try:
            for i, meter_id in enumerate(ids):
                body = {"request_id": f"q{i}", "meter_id": meter_id, "obis": REGISTERS}
                service.submit("read", json.dumps(body).encode(), f"app/{i % 2}/responses/x")

            def answered() -> int:
                return sum(len(outbox.on(f"headend/responses/q{i}")) for i in range(8))

            async with asyncio.timeout(90):
                while answered() < 8:
                    peak = max(peak, fleet.status()["open_connections"])
                    await asyncio.sleep(0.005)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        assert 1 <= peak <= 2
        replies = [outbox.on(f"headend/responses/q{i}")[0] for i in range(8)]
        assert all(r["ok"] for r in replies), replies
        assert service.answered == 8
