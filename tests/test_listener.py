"""The push listener against real sockets, a real database (SQLite and PostgreSQL) and the
simulator fleet's inventory (its meters' keys and system titles): pushes over the TCP
wrapper, the UDP wrapper and segmented HDLC, plain and ciphered, become readings, events,
relay states and alarms; bad tags, unknown senders, replays and truncated frames are refused,
alarmed once and change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from db_support import DIALECTS
from e2e_support import KeepingOutbox, eventually, fleet_database
from push_support import (
    T0,
    cipher,
    data_push,
    event_push,
    hdlc_frames,
    send_tcp,
    send_udp,
    wrapped,
)

from cosem_objects import event_codes
from headend.listener.directory import Directory
from headend.listener.handler import PushHandler
from headend.listener.server import Listener
from headend.meters.access import MeterAccess
from headend.meters.inventory import import_inventory
from headend.mqtt.notifier import Notifier
from headend.mqtt.topics import Topics
from headend.storage import Repository

ENERGY = "1.0.1.8.0.255"
RELAY_EVENTS = "0.0.96.11.2.255"


@dataclass
class Rig:
    repository: Repository
    outbox: KeepingOutbox
    listener: Listener
    handler: PushHandler
    meters: list[Any]  # simulator MeterConfigs (hls-gmac): meter_id, system_title, keys
    access: MeterAccess
    plain: Any  # a meter without keys (security none): its pushes are plain

    @property
    def tcp(self) -> int:
        assert self.listener.tcp_port is not None
        return self.listener.tcp_port

    @property
    def udp(self) -> int:
        assert self.listener.udp_port is not None
        return self.listener.udp_port

    def on(self, leaf: str, meter_id: str) -> list[Any]:
        return self.outbox.on(f"headend/meters/{meter_id}/{leaf}")

    def alarms(self) -> list[Any]:
        return self.outbox.on("headend/alarms")

    def ciphered(self, index: int, apdu: bytes, ic: int, *, key: bytes | None = None) -> bytes:
        meter = self.meters[index]
        return cipher(apdu, meter.system_title, key or meter.enc_key, meter.auth_key, ic)


@pytest.fixture(params=DIALECTS)
async def rig(request: pytest.FixtureRequest, tmp_path: Path, sim_fleet: Any) -> AsyncIterator[Rig]:
    async with (
        sim_fleet(2, security="hls-gmac") as fleet,
        sim_fleet(1, security="none", seed=7) as open_fleet,
        fleet_database(request.param, tmp_path, fleet) as (db, key),
    ):
        open_fleet.write_inventory(tmp_path / "open.csv")
        await import_inventory(db, tmp_path / "open.csv", key)
        repository = Repository(db)
        access = MeterAccess(db, repository, key)
        outbox = KeepingOutbox()
        handler = PushHandler(
            repository, Notifier(outbox, Topics()), Directory(await access.refresh())
        )
        listener = Listener(handler, host="127.0.0.1", tcp_port=0, udp_port=0, idle_s=5)
        task = asyncio.create_task(listener.run())
        await asyncio.wait_for(listener.ready(), 5)
        try:
            yield Rig(
                repository,
                outbox,
                listener,
                handler,
                fleet.configs,
                access,
                open_fleet.configs[0],
            )
        finally:
            listener.stop()
            await asyncio.wait_for(task, 5)


async def _energy(rig: Rig, meter_id: str) -> list[Any]:
    return [r.value for r in await rig.repository.readings(meter_id, obis=ENERGY)]


@pytest.mark.parametrize("ciphered", [False, True], ids=["plain", "ciphered"])
@pytest.mark.parametrize("how", ["tcp-wrapper", "udp-wrapper", "tcp-hdlc-segmented"])
async def test_a_push_becomes_readings_events_and_relay_state(
    rig: Rig, how: str, ciphered: bool
) -> None:
    meter_id = rig.meters[0].meter_id if ciphered else rig.plain.meter_id
    apdu = data_push(meter_id, {ENERGY: 12345}, events={RELAY_EVENTS: 62})
    if ciphered:
        apdu = rig.ciphered(0, apdu, ic=7)
    if how == "tcp-wrapper":
        await send_tcp(rig.tcp, wrapped(apdu))
    elif how == "udp-wrapper":
        send_udp(rig.udp, wrapped(apdu))
    else:
        await send_tcp(rig.tcp, hdlc_frames(apdu, size=40))
    await eventually(lambda: rig.on("events", meter_id), within=10, what="the events message")
    assert await _energy(rig, meter_id) == [12345]
    (readings,) = rig.on("readings", meter_id)
    assert readings["source"] == "push" and readings["values"][ENERGY]["value"] == 12345
    (event,) = rig.on("events", meter_id)
    assert {k: event[k] for k in ("log", "code", "name", "source")} == {
        "log": event_codes.DISCONNECTOR_CONTROL_LOG,
        "code": 62,
        "name": "Remote disconnection",
        "source": "push",
    }
    stored = await rig.repository.meter_events(meter_id)
    assert [(e.code, e.source) for e in stored] == [(62, "push")]
    (relay,) = rig.on("relay", meter_id)
    assert relay["state"] == "disconnected" and relay["output_state"] is False
    assert (await rig.repository.get_meter(meter_id)).confirmed_relay_state == "disconnected"
    assert rig.alarms() == []
    if ciphered:
        assert await rig.repository.last_push_counter(meter_id) == 7


async def test_a_power_failure_event_raises_meter_power_failure(rig: Rig) -> None:
    meter_id = rig.meters[1].meter_id
    push = rig.ciphered(1, event_push("0.0.96.11.0.255", event_codes.POWER_DOWN), ic=3)
    await send_tcp(rig.tcp, wrapped(push))
    (alarm,) = await eventually(rig.alarms, within=10, what="the power failure alarm")
    assert alarm["type"] == "meter_power_failure" and alarm["meter_id"] == meter_id
    (event,) = rig.on("events", meter_id)
    assert event["name"] == "Power down" and event["log"] == event_codes.STANDARD_EVENT_LOG


async def _refused(rig: Rig, alarm_type: str) -> dict[str, Any]:
    found = await eventually(
        lambda: [a for a in rig.alarms() if a["type"] == alarm_type], within=10, what=alarm_type
    )
    assert len(found) == 1
    return found[0]


async def _nothing_stored(rig: Rig) -> None:
    for meter in [*rig.meters, rig.plain]:
        assert await rig.repository.readings(meter.meter_id) == []
        assert await rig.repository.meter_events(meter.meter_id) == []
        assert rig.on("readings", meter.meter_id) == []


async def test_a_bad_tag_is_refused_alarmed_once_and_changes_nothing(rig: Rig) -> None:
    apdu = data_push(rig.meters[0].meter_id, {ENERGY: 1})
    forged = rig.ciphered(0, apdu, ic=5, key=bytes(16))  # the wrong key
    await send_tcp(rig.tcp, wrapped(forged) + wrapped(forged))
    alarm = await _refused(rig, "push_bad_tag")
    assert alarm["meter_id"] == rig.meters[0].meter_id
    await eventually(lambda: rig.handler.guard.counts["bad_tag"] == 2, what="both counted")
    assert len(rig.alarms()) == 1  # once per sender and window
    await _nothing_stored(rig)
    assert await rig.repository.last_push_counter(rig.meters[0].meter_id) is None


async def test_an_unknown_system_title_is_refused(rig: Rig) -> None:
    meter = rig.meters[0]
    apdu = cipher(
        data_push("x", {ENERGY: 1}), b"XYZ\x00\x00\x00\x00\x09", meter.enc_key, meter.auth_key, 1
    )
    send_udp(rig.udp, wrapped(apdu))
    alarm = await _refused(rig, "push_unknown_sender")
    assert alarm["meter_id"] is None and "58595a0000000009" in str(alarm["detail"])
    await _nothing_stored(rig)


async def test_a_replayed_counter_is_refused(rig: Rig) -> None:
    meter_id = rig.meters[0].meter_id
    push = wrapped(rig.ciphered(0, data_push(meter_id, {ENERGY: 10}), ic=9))
    await send_tcp(rig.tcp, push)
    await eventually(lambda: rig.on("readings", meter_id), what="the first push")
    older = wrapped(rig.ciphered(0, data_push(meter_id, {ENERGY: 11}, invoke_id=2), ic=8))
    await send_tcp(rig.tcp, push + older)
    await _refused(rig, "push_replay")
    await eventually(lambda: rig.handler.guard.counts["replay"] == 2, what="both replays")
    assert await _energy(rig, meter_id) == [10]
    assert len(rig.on("readings", meter_id)) == 1


async def test_a_truncated_frame_is_refused(rig: Rig) -> None:
    push = wrapped(data_push(rig.meters[0].meter_id, {ENERGY: 1}))
    await send_tcp(rig.tcp, push[: len(push) // 2])
    alarm = await _refused(rig, "push_malformed")
    assert "inside a frame" in str(alarm["detail"])
    await _nothing_stored(rig)


async def test_garbage_and_oversized_frames_never_stop_the_listener(rig: Rig) -> None:
    await send_tcp(rig.tcp, b"GET / HTTP/1.0\r\n\r\n")
    await send_tcp(rig.tcp, b"\x00\x01\x00\x01\x00\x01\xff\xff" + b"\x00" * 100)
    send_udp(rig.udp, b"\x00\x01")
    await eventually(lambda: rig.handler.guard.counts["malformed"] >= 3, what="three refusals")
    meter_id = rig.plain.meter_id
    await send_tcp(rig.tcp, wrapped(data_push(meter_id, {ENERGY: 5})))
    await eventually(lambda: rig.on("readings", meter_id), what="a good push after the bad ones")
    await eventually(lambda: rig.listener.connections == 0, what="every connection closed")


async def test_a_meter_calling_from_a_new_address_is_polled_there_next(rig: Rig) -> None:
    meter_id = rig.meters[0].meter_id
    assert await rig.repository.update_meter_host(meter_id, "192.0.2.50")
    rig.handler.directory.update(await rig.access.refresh())
    # A plain push naming a meter that has keys proves nothing: refused, the address stays.
    await send_tcp(rig.tcp, wrapped(data_push(meter_id, {ENERGY: 1})))
    alarm = await _refused(rig, "push_bad_tag")
    assert "unciphered" in str(alarm["detail"]) and rig.on("readings", meter_id) == []
    assert (await rig.repository.get_meter(meter_id)).host == "192.0.2.50"
    # A verified one moves the meter (and its line) to where it called from.
    push = rig.ciphered(0, data_push(meter_id, {ENERGY: 2}, at=T0 + timedelta(minutes=1)), ic=4)
    await send_tcp(rig.tcp, wrapped(push))

    async def moved() -> bool:
        row = await rig.repository.get_meter(meter_id)
        return row is not None and row.host == "127.0.0.1"

    await eventually(moved, what="the new address")
    row = await rig.repository.get_meter(meter_id)
    assert row is not None and row.line.startswith("tcp:127.0.0.1:")
    known = rig.handler.directory.get(meter_id)  # known there now: not asked on every push
    assert known is not None and known.host == "127.0.0.1"
    assert rig.handler.directory.by_address("192.0.2.50") is None
