"""The listener against the simulator's own pushes (dlms-sim --push-to): interval pushes over
the TCP wrapper, the UDP wrapper and segmented HDLC, plain and ciphered, mapped through the
Push setup's object list that the listener reads from the meter; event pushes from the
meter's logs (cover, relay, power failure); and an inbound-only meter (listening nowhere)
getting its pending disconnect over the connection it opened. Real database, real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from db_support import temp_database
from e2e_support import KeepingOutbox, eventually

from cosem_objects import event_codes
from headend.listener.service import ListenerService
from headend.meters.access import MeterAccess
from headend.meters.inventory import import_inventory
from headend.meters.secrets import MasterKey
from headend.mqtt.notifier import Notifier
from headend.mqtt.topics import Topics
from headend.relay.controller import ControllerSettings, RelayController
from headend.storage import Repository
from simulators.config import PushSpec
from simulators.fleet import run_fleet
from simulators.inventory import write_inventory

ENERGY = "1.0.1.8.0.255"


@dataclasses.dataclass
class Head:
    repository: Repository
    access: MeterAccess
    outbox: KeepingOutbox
    service: ListenerService
    key: MasterKey
    relay: RelayController | None = None

    def on(self, leaf: str, meter_id: str) -> list[Any]:
        return self.outbox.on(f"headend/meters/{meter_id}/{leaf}")

    async def know(self, fleet: Any, tmp_path: Path, *, transport: str | None = None) -> None:
        """Import the fleet's inventory (as `transport` meters) and tell the listener."""
        rows = fleet.rows()
        if transport is not None:
            rows = [dataclasses.replace(r, transport=transport) for r in rows]
        path = tmp_path / "inventory.csv"
        write_inventory(path, rows)
        await import_inventory(self.repository.db, path, self.key)
        self.service.directory.update(await self.access.refresh())


@asynccontextmanager
async def head_end(
    dialect: str, tmp_path: Path, *, with_relay: bool = False
) -> AsyncIterator[Head]:
    async with temp_database(dialect, tmp_path) as db:
        key = MasterKey.generate()
        repository = Repository(db)
        access = MeterAccess(db, repository, key, timeout_s=5)
        outbox = KeepingOutbox()
        notifier = Notifier(outbox, Topics())
        relay = None
        if with_relay:
            relay = RelayController(repository, access, notifier, ControllerSettings())
        service = ListenerService(
            access, repository, notifier, host="127.0.0.1", tcp_port=0, udp_port=0, relay=relay
        )
        task = asyncio.create_task(service.run())
        await asyncio.wait_for(service.listener.ready(), 5)
        try:
            yield Head(repository, access, outbox, service, key, relay)
        finally:
            service.stop()
            await asyncio.wait_for(task, 10)


async def _pushed_energy(head: Head, meter_id: str) -> bool:
    return any(r.value is not None for r in await head.repository.readings(meter_id, obis=ENERGY))


CASES = [(t, s) for t in ("tcp", "udp", "hdlc") for s in ("none", "hls-gmac")]


@pytest.mark.parametrize(("transport", "security"), CASES)
async def test_simulator_pushes_become_readings_and_events(
    tmp_path: Path, transport: str, security: str
) -> None:
    async with head_end("sqlite", tmp_path) as head:
        listener = head.service.listener
        port = listener.udp_port if transport == "udp" else listener.tcp_port
        assert port is not None
        push = PushSpec("127.0.0.1", port, interval_s=0.3, transport=transport, hdlc_max_info=32)
        async with run_fleet(1, security=security, push=push) as fleet:
            await head.know(fleet, tmp_path)
            meter_id = fleet.configs[0].meter_id
            await eventually(lambda: _pushed_energy(head, meter_id), within=15, what="readings")
            readings = head.on("readings", meter_id)
            assert readings and all(r["source"] == "push" for r in readings)
            assert ENERGY in readings[-1]["values"]
            assert head.service.objects.known(meter_id, "0.0.25.9.0.255") is not None
            fleet.open_cover(0)
            events = await eventually(
                lambda: head.on("events", meter_id), within=10, what="the cover event"
            )
            assert (events[0]["code"], events[0]["name"], events[0]["log"]) == (
                44,
                "Meter cover removed",
                event_codes.FRAUD_DETECTION_LOG,
            )
            stored = await head.repository.meter_events(meter_id)
            assert [(e.code, e.source) for e in stored] == [(44, "push")]
            assert head.outbox.on("headend/alarms") == []


async def test_relay_and_power_failure_pushes(tmp_path: Path) -> None:
    async with head_end("postgresql", tmp_path) as head:
        assert head.service.listener.tcp_port is not None
        push = PushSpec("127.0.0.1", head.service.listener.tcp_port, interval_s=30)
        async with run_fleet(1, security="hls-gmac", push=push) as fleet:
            await head.know(fleet, tmp_path)
            meter_id = fleet.configs[0].meter_id
            fleet.manual_disconnect(0)
            relay = await eventually(lambda: head.on("relay", meter_id), what="the relay state")
            assert relay[-1]["state"] == "disconnected" and relay[-1]["output_state"] is False
            fleet.power_fail(0)
            alarms = await eventually(
                lambda: [
                    a
                    for a in head.outbox.on("headend/alarms")
                    if a["type"] == "meter_power_failure"
                ],
                what="meter_power_failure",
            )
            assert alarms[0]["meter_id"] == meter_id
            names = [e["name"] for e in head.on("events", meter_id)]
            assert names == ["Manual disconnection", "Power down"]


@pytest.mark.parametrize("transport", ["tcp", "hdlc"])
async def test_an_inbound_only_meter_gets_its_pending_disconnect_over_its_own_call(
    tmp_path: Path, transport: str
) -> None:
    async with head_end("sqlite", tmp_path, with_relay=True) as head:
        assert head.service.listener.tcp_port is not None
        push = PushSpec(
            "127.0.0.1",
            head.service.listener.tcp_port,
            interval_s=0.5,
            inbound_only=True,
            transport=transport,
        )
        fleet_transport = "hdlc" if transport == "hdlc" else "wrapper"
        async with run_fleet(1, security="hls-gmac", push=push, transport=fleet_transport) as fleet:
            meter_id = fleet.configs[0].meter_id
            assert fleet.relay(0)["state"] == "connected"
            await head.know(fleet, tmp_path, transport="inbound")
            command, _ = await head.repository.create_command(meter_id, "disconnect")
            await eventually(
                lambda: fleet.relay(0)["state"] == "disconnected",
                within=20,
                what="the meter disconnected over its own connection",
            )
            done = await eventually(
                lambda: _confirmed(head, command.command_id), what="the command confirmed"
            )
            assert done.status == "confirmed"
            assert head.service.inbound.sessions >= 1
            # Its interval pushes were mapped with the object list read over that connection.
            await eventually(lambda: _pushed_energy(head, meter_id), within=10, what="readings")
            # The meter keeps its call open: a command made now wakes the call (the controller's
            # scan asks for it) and is run over it.
            assert head.relay is not None
            scan = asyncio.create_task(head.relay.run())
            try:
                again, _ = await head.repository.create_command(meter_id, "reconnect")
                await eventually(
                    lambda: _confirmed(head, again.command_id),
                    within=20,
                    what="the reconnect over the open call",
                )
                assert fleet.relay(0)["state"] != "disconnected"
            finally:
                head.relay.stop()
                await asyncio.wait_for(scan, 10)


async def _confirmed(head: Head, command_id: str) -> Any:
    command = await head.repository.get_command(command_id)
    return command if command is not None and command.status == "confirmed" else None


async def test_headend_listen_prints_each_push(tmp_path: Path) -> None:
    """`headend listen` as a field engineer runs it: a plain push from a meter no inventory
    knows is printed, decoded, as one JSON line."""
    import json
    import sys

    from push_support import data_push, send_tcp, wrapped

    config = tmp_path / "headend.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "h.db"}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "headend.cli",
        "listen",
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--json",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        line = ""
        while "listening" not in line:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "headend listen ended before listening"
        port = int(line.split("tcp ")[1].split(",")[0])
        await send_tcp(port, wrapped(data_push("FIELD42", {ENERGY: 777})))
        shown = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert shown["meter_id"] == "?" and shown["type"] == "data-notification"
        assert shown["values"] == {ENERGY: 777} and shown["ciphered"] is False
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
