"""The fleet: configs from flags and fleet files, listeners, inventory, control API and interface.

Real peers only: the head-end's own client (drivers.connect.open_session) on 127.0.0.1 ephemeral
ports, and the JSON-lines control interface over a real socket."""

from __future__ import annotations

import asyncio
import resource
import socket
import stat
from pathlib import Path

import pytest

from drivers.connect import open_session
from drivers.inventory_columns import COLUMNS
from simulators.config import Faults, derive_credentials, meter_id_for
from simulators.control import ControlClient, ControlError, ControlServer, execute
from simulators.fleet import FleetError, raise_fd_limit, run_fleet
from simulators.fleet_spec import (
    FleetFileError,
    FleetSpec,
    build_configs,
    load_fleet_file,
    parse_fleet_document,
)
from simulators.inventory import read_inventory, render_inventory
from simulators.servers import ServerStartError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "fleet.example.toml"
ENERGY = "1.0.1.8.0.255"
SERIAL_NUMBER = "0.0.96.1.0.255"
DESIGN_HEADER = (
    "meter_id,host,port,transport,client_sap,server_logical,server_physical,security,"
    "password,auth_key,enc_key"
)


# -- configs -------------------------------------------------------------------------------
def test_flags_give_consecutive_ports_and_deterministic_credentials() -> None:
    configs = build_configs(FleetSpec(meters=4, port=5000, seed=9, security="lls"))
    assert [c.port for c in configs] == [5000, 5001, 5002, 5003]
    assert [c.meter_id for c in configs] == [meter_id_for(9, i) for i in range(4)]
    again = build_configs(FleetSpec(meters=4, port=5000, seed=9, security="lls"))
    assert [c.password for c in configs] == [c.password for c in again]
    other_seed = build_configs(FleetSpec(meters=4, port=5000, seed=10, security="lls"))
    assert configs[0].password != other_seed[0].password
    assert len({c.password for c in configs}) == 4


def test_example_fleet_file_builds_the_mix_it_describes() -> None:
    spec = load_fleet_file(EXAMPLE)
    configs = build_configs(spec)
    assert len(configs) == spec.meters == 20
    assert configs[0].security.value == "hls-gmac" and configs[0].control_mode == 1
    assert [c.transport for c in configs[1:4]] == ["hdlc"] * 3
    assert configs[2].faults.latency_ms == 200 and configs[2].faults.jitter_ms == 100
    assert configs[4].faults.relay_stuck and not configs[3].faults.relay_stuck
    assert configs[5].faults.relay_failure
    assert configs[6].faults.offline_windows == [(60.0, 120.0)]
    assert [c.transport for c in configs[16:]] == ["serial"] * 4
    assert configs[7].security.value == "lls" and configs[7].port == 4059 + 7
    # Per-meter faults are copies: changing one meter leaves the others alone.
    configs[8].faults.drop_rate = 0.5
    assert configs[9].faults.drop_rate == 0.0


@pytest.mark.parametrize(
    ("document", "names"),
    [
        ({"fleet": {"meterz": 3}}, "fleet.meterz"),
        ({"fleet": {"meters": "3"}}, "fleet.meters"),
        ({"fleet": {"transport": "udp"}}, "transport"),
        ({"fleet": {"meters": 10, "port": 65530}}, "port"),
        ({"faults": {"drop_rate": 1.5}}, "faults.drop_rate"),
        ({"faults": {"offline_windows": [[5, 1]]}}, "faults.offline_windows"),
        ({"meter": [{"index": 7}]}, "meter[0]: index 7"),
        ({"meter": [{"index": 0, "range": [0, 1]}]}, "meter[0]"),
        ({"meter": [{"index": 0, "colour": "red"}]}, "meter[0].colour"),
        ({"meter": [{"index": 0, "faults": {"relay_stuck": 1}}]}, "meter[0].faults.relay_stuck"),
        ({"serial": {"meters_per_line": 0}}, "serial.meters_per_line"),
        ({"bogus": {}}, "bogus"),
    ],
)
def test_bad_fleet_documents_name_the_key(document: dict, names: str) -> None:
    with pytest.raises(FleetFileError, match=names.replace("[", r"\[").replace("]", r"\]")):
        parse_fleet_document(document)


def test_bad_toml_and_missing_file_are_fleet_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[fleet\nmeters = 3\n")
    with pytest.raises(FleetFileError, match="not valid TOML"):
        load_fleet_file(broken)
    with pytest.raises(FleetFileError, match="cannot read"):
        load_fleet_file(tmp_path / "absent.toml")


def test_serial_meters_sharing_a_line_need_distinct_addresses() -> None:
    document = {
        "fleet": {"meters": 2, "transport": "serial"},
        "serial": {"meters_per_line": 2},
        "meter": [{"indexes": [0, 1], "server_physical": 40}],
    }
    with pytest.raises(FleetFileError, match="share a serial line"):
        build_configs(parse_fleet_document(document))


# -- inventory -------------------------------------------------------------------------------
async def test_inventory_rows_follow_the_security_of_each_meter(tmp_path: Path) -> None:
    document = {
        "fleet": {"meters": 3, "port": 0, "seed": 4},
        "meter": [
            {"index": 1, "security": "lls", "transport": "hdlc"},
            {"index": 2, "security": "hls-gmac"},
        ],
    }
    spec = parse_fleet_document(document)
    path = tmp_path / "inventory.csv"
    async with run_fleet(spec=spec, inventory=path) as fleet:
        text = path.read_text()
        assert text.splitlines()[0].startswith(DESIGN_HEADER + ",")
        assert tuple(text.splitlines()[0].split(",")) == COLUMNS
        rows = read_inventory(path)
        assert [row["meter_id"] for row in rows] == [meter_id_for(4, i) for i in range(3)]
        assert [int(row["port"]) for row in rows] == fleet.ports
        assert all(port > 0 for port in fleet.ports)
        none, lls, hls = rows
        password, _, _, _ = derive_credentials(4, 1)
        _, auth_key, enc_key, _ = derive_credentials(4, 2)
        assert (none["client_sap"], none["security"], none["password"], none["auth_key"]) == (
            "16",
            "none",
            "",
            "",
        )
        assert none["server_physical"] == ""  # the wrapper has no physical address
        assert (lls["client_sap"], lls["password"], lls["transport"]) == (
            "32",
            password.decode(),
            "hdlc",
        )
        assert lls["server_physical"] == str(fleet.config(1).server_physical)
        assert (hls["client_sap"], hls["auth_key"], hls["enc_key"], hls["password"]) == (
            "1",
            auth_key.hex(),
            enc_key.hex(),
            "",
        )
    # It holds secrets: owner-only.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_inventory_text_is_reproducible_from_the_seed() -> None:
    from simulators.inventory import InventoryRow

    def text(seed: int) -> str:
        configs = build_configs(FleetSpec(meters=5, port=7000, seed=seed, security="hls-gmac"))
        return render_inventory([InventoryRow.for_meter(c) for c in configs])

    assert text(3) == text(3)
    assert text(3) != text(4)


def test_inventory_row_repr_hides_secrets() -> None:
    from simulators.inventory import InventoryRow

    config = build_configs(FleetSpec(meters=1, security="lls"))[0]
    row = InventoryRow.for_meter(config)
    assert config.password.decode() not in repr(row)


async def test_the_head_end_importer_reads_the_inventory_as_is(tmp_path: Path) -> None:
    from headend.meters.inventory import parse_inventory

    path = tmp_path / "inventory.csv"
    spec = load_fleet_file(EXAMPLE)
    spec.port = 0
    async with run_fleet(spec=spec, inventory=path) as fleet:
        rows = parse_inventory(path)
        assert [row.meter_id for row in rows] == [c.meter_id for c in fleet.configs]
        by_id = {row.meter_id: row for row in rows}
        for index in (0, 1, 7, 16):
            ours = fleet.row(index)
            theirs = by_id[ours.meter_id]
            assert (theirs.transport, theirs.security, theirs.client_sap) == (
                ours.transport,
                ours.security,
                ours.client_sap,
            )
            assert theirs.server_physical == ours.server_physical
            assert theirs.serial_port == ours.serial_port
            if ours.transport != "serial":
                assert (theirs.host, theirs.port) == (ours.host, ours.port)


async def test_head_end_client_in_every_transport_and_security(
    sim_fleet, sim_connection, sim_variant
) -> None:
    async with sim_fleet(2, seed=12, **sim_variant) as fleet:
        async with open_session(sim_connection(fleet, 1), timeout=5) as session:
            readings = await session.read([SERIAL_NUMBER, ENERGY])
            assert readings[SERIAL_NUMBER].value == fleet.config(1).meter_id
            assert readings[ENERGY].value > 0
            if sim_variant["security"] != "lls":  # the reader association may only read
                status = await session.disconnect()
                assert (status.output_state, status.state) == (False, "disconnected")
                status = await session.reconnect()
                assert (status.output_state, status.state) == (True, "connected")
        assert [e["outcome"] for e in fleet.relay(1)["history"]] == (
            [] if sim_variant["security"] == "lls" else ["ok", "ok"]
        )


# -- serving -------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["wrapper", "hdlc"])
async def test_each_meter_answers_on_its_own_port(sim_connection, transport: str) -> None:
    async with run_fleet(3, transport=transport, seed=2) as fleet:
        assert len(set(fleet.ports)) == 3
        for index in (0, 2):
            async with open_session(sim_connection(fleet, index), timeout=5) as session:
                readings = await session.read([SERIAL_NUMBER, ENERGY])
            assert readings[SERIAL_NUMBER].value == fleet.config(index).meter_id
            assert readings[ENERGY].value > 0
        assert fleet.status()["connections"] == 2


async def test_consecutive_ports_from_a_base_port() -> None:
    base = _free_port_run(3)
    async with run_fleet(3, port=base) as fleet:
        assert fleet.ports == [base, base + 1, base + 2]
        for port in fleet.ports:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()


async def test_a_taken_port_fails_the_start_and_names_the_meter() -> None:
    base = _free_port_run(3)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", base + 1))
    blocker.listen()
    try:
        with pytest.raises(ServerStartError, match=r"meter 1 .*already in use"):
            async with run_fleet(3, port=base):
                pass
        # Meter 0's listener was closed again on the failure.
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", base))
        probe.close()
    finally:
        blocker.close()


@pytest.mark.parametrize("transport", ["wrapper", "hdlc", "serial"])
async def test_garbage_does_not_hurt_the_meter(sim_connection, transport: str) -> None:
    import os
    import random

    rng = random.Random(7)
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(30)]
    junk += [b"\x7e\xa0\x07\x03\x21\x93" * 5, b"\x00\x01\x00\x10\x00\x01\xff\xff" + b"x" * 9]
    async with run_fleet(1, transport=transport) as fleet:
        if transport == "serial":
            fd = os.open(fleet.serial_paths[0], os.O_RDWR | os.O_NOCTTY)
            try:
                for chunk in junk:
                    os.write(fd, chunk)
            finally:
                os.close(fd)
        else:
            for chunk in junk:
                _reader, writer = await asyncio.open_connection("127.0.0.1", fleet.ports[0])
                writer.write(chunk)
                await writer.drain()
                writer.close()
                await writer.wait_closed()
        await asyncio.sleep(0.1)
        async with open_session(sim_connection(fleet, 0), timeout=5) as session:
            readings = await session.read([SERIAL_NUMBER])
        assert readings[SERIAL_NUMBER].value == fleet.config(0).meter_id


async def test_stop_closes_open_client_connections() -> None:
    async with run_fleet(1) as fleet:
        reader, writer = await asyncio.open_connection("127.0.0.1", fleet.ports[0])
        await asyncio.sleep(0.05)
        assert fleet.status()["open_connections"] == 1
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_idle_connections_are_dropped() -> None:
    async with run_fleet(1, idle_timeout_s=0.2) as fleet:
        reader, writer = await asyncio.open_connection("127.0.0.1", fleet.ports[0])
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await asyncio.sleep(0.01)
        assert fleet.status()["open_connections"] == 0


def test_fd_limit_is_raised_or_the_failure_explained() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_fd_limit(min(soft, 64)) >= min(soft, 64)
    if hard != resource.RLIM_INFINITY:
        with pytest.raises(FleetError, match=rf"hard limit is {hard}"):
            raise_fd_limit(hard + 1)


# -- control API -------------------------------------------------------------------------------
async def test_python_control_api_relay_button_and_history() -> None:
    async with run_fleet(2, control_mode=1, seed=1) as fleet:
        meter = fleet.meter(1)
        meter.remote_disconnect()
        meter.remote_reconnect()  # mode 1: ready_for_reconnection, relay still open
        assert fleet.relay(1)["state"] == "ready_for_reconnection"
        assert fleet.relay(1)["output_state"] is False
        event = fleet.press_button(fleet.config(1).meter_id)
        assert event["source"] == "manual" and event["after"] == "connected"
        relay = fleet.relay(1)
        assert relay["output_state"] is True
        assert [e["transition"] for e in relay["history"]] == [
            "remote_disconnect",
            "remote_reconnect",
            "manual_reconnect",
        ]
        assert fleet.relay(0)["history"] == []
        with pytest.raises(KeyError):
            fleet.meter("SIM-nope")


async def test_set_value_is_what_a_client_reads(sim_connection) -> None:
    async with run_fleet(1) as fleet:
        fleet.set_value(0, ENERGY, 123456)
        async with open_session(sim_connection(fleet, 0), timeout=5) as session:
            value = (await session.read([ENERGY]))[ENERGY].value
        assert 123456 <= value < 123456 + 1000  # keeps counting from the forced value
        assert fleet.get_value(0, ENERGY) >= 123456


async def test_fault_changes_apply_fleet_wide_or_per_meter() -> None:
    async with run_fleet(3) as fleet:
        assert fleet.set_faults(None, relay_stuck=True) == 3
        assert all(fleet.faults(i)["relay_stuck"] for i in range(3))
        assert fleet.set_faults(1, drop_rate=0.25, offline_windows=[[1, 2]]) == 1
        assert fleet.faults(1)["drop_rate"] == 0.25
        assert fleet.faults(1)["offline_windows"] == [(1.0, 2.0)]
        assert fleet.faults(0)["drop_rate"] == 0.0
        with pytest.raises(FleetFileError, match="drop_rate"):
            fleet.set_faults(0, drop_rate=2)
        with pytest.raises(FleetFileError, match="unknown fault"):
            fleet.set_faults(0, gremlins=True)
        fleet.clear_faults()
        assert fleet.faults(1) == fleet.faults(0)
        assert not fleet.faults(1)["relay_stuck"]
        assert fleet.faults(2) == {name: getattr(Faults(), name) for name in fleet.faults(2)}


async def test_control_interface_over_json_lines() -> None:
    async with run_fleet(2, seed=3, control_mode=1) as fleet:
        async with ControlServer(fleet) as server, ControlClient(port=server.port) as client:
            status = await client.call("status")
            assert status["meters"] == 2 and status["running"] is True
            meter_id = fleet.config(1).meter_id
            fleet.meter(meter_id).remote_disconnect()
            fleet.meter(meter_id).remote_reconnect()
            assert (await client.call("relay", meter=1))["state"] == "ready_for_reconnection"
            event = await client.call("press_button", meter=meter_id)
            assert (event["source"], event["after"], event["outcome"]) == (
                "manual",
                "connected",
                "ok",
            )
            relay = await client.call("relay", meter=meter_id)
            assert relay["state"] == "connected" and relay["output_state"] is True
            assert relay["history"][-1]["transition"] == "manual_reconnect"


async def test_control_interface_operations_and_errors() -> None:
    async with run_fleet(2, seed=3) as fleet:
        async with ControlServer(fleet) as server, ControlClient(port=server.port) as client:
            assert (await client.call("set_faults", faults={"latency_ms": 5}))["changed"] == 2
            assert (await client.call("faults", meter=0))["latency_ms"] == 5
            await client.call("set_faults", meter=1, faults={"relay_failure": True})
            assert fleet.config(1).faults.relay_failure
            await client.call("set_value", meter=0, obis="0.0.96.1.0.255", value="HELLO")
            assert await client.call("get_value", meter=0, obis="0.0.96.1.0.255") == {
                "hex": b"HELLO".hex()
            }
            assert (await client.call("offline", meter=1, for_s=30))["changed"] == 1
            assert (await client.call("meter", meter=1))["offline"] is True
            await client.call("online", meter=1)
            assert (await client.call("meter", meter=1))["offline"] is False
            info = await client.call("meter", meter=0)
            assert "password" not in info and "auth_key" not in info
            await client.call("set_control_mode", meter=0, mode=3)
            assert fleet.meter(0).control_mode == 3
            for request, message in [
                ({"op": "dance"}, "unknown op"),
                ({"op": "relay"}, "needs 'meter'"),
                ({"op": "relay", "meter": 99}, "no meter"),
                ({"op": "set_faults", "faults": {"drop_rate": 3}}, "drop_rate"),
                ({"op": "offline", "for_s": -1}, "for_s"),
            ]:
                answer = await client.request(request)
                assert answer["ok"] is False and message in answer["error"]
            with pytest.raises(ControlError):
                await client.call("get_value", meter=0, obis="9.9.9.9.9.9")
            # Garbage on the line is answered, not fatal.
            assert client._writer is not None and client._reader is not None
            client._writer.write(b"{not json\n")
            assert b"bad JSON" in await client._reader.readline()
            assert (await client.call("status"))["meters"] == 2
    assert execute(fleet, ["op"])["ok"] is False


def _free_port_run(count: int) -> int:
    """A base port with `count` free ports after it (best effort, then bound by the fleet)."""
    for _ in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
        probe.close()
        if base + count > 65535:
            continue
        holders = []
        try:
            for offset in range(count):
                holder = socket.socket()
                holders.append(holder)
                holder.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        finally:
            for holder in holders:
                holder.close()
        return base
    raise RuntimeError("no run of free ports found")
