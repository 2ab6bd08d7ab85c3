"""`headend probe` and `headend scan` against the simulator: probe in every transport (wrapper,
HDLC over TCP, HDLC on a pseudo-terminal) and security (none, lls, hls-gmac); scan on a
pseudo-terminal bus of 8 meters. The commands run as a user runs them (a real process, JSON on
stdout) while the simulated meters serve in this test's event loop."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from drivers.client_settings import DEFAULT_CONFORMANCE
from headend.fieldtools.probe import ProbeTarget, probe_meter
from simulators.acse import SERVER_CONFORMANCE
from simulators.association import DEFAULT_SERVER_MAX_PDU
from simulators.objects.catalogue import CATALOGUE

WAIT_S = 0.8


async def _headend(*args: str) -> tuple[int, str, str]:
    """The `headend` command in a process of its own (stderr a pipe, not a terminal)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from headend.cli.app import main; main()",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _target(fleet: Any, index: int = 0, **overrides: Any) -> ProbeTarget:
    kwargs = fleet.connection_kwargs(index)
    if kwargs.get("transport") == "serial":
        return ProbeTarget(serial_port=kwargs["serial_port"], **overrides)
    return ProbeTarget(host=kwargs["host"], port=kwargs["port"], **overrides)


EXPECTED_FRAMING = {"wrapper": "wrapper", "hdlc": "hdlc", "serial": "serial"}


async def test_probe_finds_the_simulators_settings(sim_fleet, sim_variant) -> None:
    async with sim_fleet(1, seed=4, **sim_variant) as fleet:
        config = fleet.config(0)
        report = await probe_meter(_target(fleet), wait_s=WAIT_S)
    found = report.to_json()
    assert found["errors"] == []
    assert found["transport"] == EXPECTED_FRAMING[sim_variant["transport"]]
    assert found["server_logical"] == config.server_logical
    outcomes = {c["client_sap"]: c["outcome"] for c in found["clients"]}
    assert outcomes[16] == "accepted"
    assert outcomes[32] == "needs authentication"  # LLS: the reader
    assert outcomes[1] == "needs authentication"  # HLS-GMAC: management
    assert outcomes[17] == outcomes[48] == "refused"  # no such client
    assert found["accepted_without_keys"] == [16]
    granted = SERVER_CONFORMANCE & DEFAULT_CONFORMANCE
    assert found["conformance_hex"] == granted.to_bytes().hex().upper()
    assert "get" in found["conformance"] and "block-transfer-get" in found["conformance"]
    assert found["max_pdu_size"] == DEFAULT_SERVER_MAX_PDU
    assert found["dlms_version"] == 6
    assert found["serial_number"] == config.meter_id
    assert found["logical_device_name"] == config.meter_id[:16]
    assert found["server_system_title"] == config.system_title.hex().upper()
    assert found["object_count"] == len(CATALOGUE)
    if sim_variant["transport"] == "wrapper":
        assert found["hdlc_parameters"] is None
    else:
        assert found["hdlc_parameters"]["window_tx"] == 1


async def test_probe_command_json_and_table(sim_fleet) -> None:
    async with sim_fleet(1, transport="hdlc", security="lls") as fleet:
        kwargs = fleet.connection_kwargs(0)
        where = ["--host", kwargs["host"], "--port", str(kwargs["port"]), "--wait", "0.5"]
        code, out, err = await _headend("probe", *where, "--json")
        assert code == 0, err
        assert json.loads(out)["transport"] == "hdlc"
        code, out, err = await _headend("probe", *where)
        assert code == 0, err
        assert "needs authentication" in out and fleet.config(0).meter_id in out


@asynccontextmanager
async def _silent_server() -> AsyncIterator[int]:
    """A TCP port that accepts and never says a word (not a meter)."""
    peers: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in peers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_probe_of_something_silent_is_exit_3_one_line() -> None:
    async with _silent_server() as port:
        code, out, err = await _headend(
            "probe", "--host", "127.0.0.1", "--port", str(port), "--wait", "0.3", "--json"
        )
    assert code == 3
    assert err.count("\n") == 1 and err.startswith("error: ") and "no answer" in err
    assert json.loads(out)["transport"] is None


async def test_probe_of_a_closed_port_is_exit_3_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends
    code, _, err = await _headend("probe", "--host", "127.0.0.1", "--port", str(port))
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err


async def test_probe_on_a_bus_needs_the_physical_address(sim_fleet) -> None:
    async with sim_fleet(3, transport="serial", meters_per_line=3, seed=8) as fleet:
        shared = await probe_meter(_target(fleet), wait_s=WAIT_S)
        assert shared.transport is None
        assert "--physical" in shared.errors[0]
        chosen = fleet.config(2)
        one = await probe_meter(_target(fleet, physical=chosen.server_physical), wait_s=WAIT_S)
    assert one.errors == []
    assert one.server_physical == chosen.server_physical
    assert one.identity["serial_number"] == chosen.meter_id


def test_probe_needs_one_target() -> None:
    from typer.testing import CliRunner

    from headend.cli.app import app

    runner = CliRunner(mix_stderr=False)
    assert runner.invoke(app, ["probe"]).exit_code == 2
    both = ["probe", "--host", "h", "--serial-port", "/dev/null"]
    assert runner.invoke(app, both).exit_code == 2


# -- scan --------------------------------------------------------------------------------------
async def test_scan_finds_every_meter_on_a_bus_of_8(sim_fleet) -> None:
    async with sim_fleet(8, transport="serial", meters_per_line=8, seed=5) as fleet:
        assert len(fleet.serial_paths) == 1
        path = fleet.serial_paths[0]
        want = {fleet.config(i).server_physical: fleet.config(i).meter_id for i in range(8)}
        low, high = min(want) - 4, max(want) + 4
        code, out, err = await _headend(
            "scan",
            "--serial-port",
            path,
            "--addresses",
            f"{low}-{high}",
            "--wait",
            "0.2",
            "--json",
        )
        assert code == 0, err
        assert err == ""
        found = json.loads(out)
        assert found["addresses_tried"] == high - low + 1
        assert {s["physical"]: s["serial_number"] for s in found["stations"]} == want
        assert all(s["error"] is None for s in found["stations"])
        # The table names them too.
        code, out, err = await _headend(
            "scan", "--serial-port", path, "--addresses", ",".join(map(str, want)), "--wait", "0.2"
        )
        assert code == 0, err
        assert all(meter_id in out for meter_id in want.values())


async def test_scan_of_an_empty_range_is_exit_3_one_line(sim_fleet) -> None:
    async with sim_fleet(1, transport="serial") as fleet:
        taken = fleet.config(0).server_physical
        code, _, err = await _headend(
            "scan",
            "--serial-port",
            fleet.serial_paths[0],
            "--addresses",
            f"{taken + 1}-{taken + 3}",
            "--wait",
            "0.2",
        )
    assert code == 3
    assert err.count("\n") == 1 and "no station answered" in err


@pytest.mark.parametrize("bad", ["x", "30-20", "1-99999", ","])
def test_scan_bad_addresses_are_a_usage_error(bad: str) -> None:
    from typer.testing import CliRunner

    from headend.cli.app import app

    result = CliRunner(mix_stderr=False).invoke(
        app, ["scan", "--serial-port", "/dev/null", "--addresses", bad]
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1


# -- decode on a capture of a real session ---------------------------------------------------
@asynccontextmanager
async def _recording_proxy(host: str, port: int, capture: list[bytes]) -> AsyncIterator[int]:
    """A TCP relay that keeps every chunk of both directions in arrival order (a capture)."""
    tasks: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                capture.append(data)
                writer.write(data)
        finally:
            writer.close()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        meter_r, meter_w = await asyncio.open_connection(host, port)
        for pair in ((client_r, meter_w), (meter_r, client_w)):
            task = asyncio.create_task(pump(*pair))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_decode_joins_segments_and_get_blocks_of_a_captured_session(
    sim_fleet, sim_connection
) -> None:
    import datetime as dt

    from cosem_objects.classes import Obises
    from drivers.connect import open_session
    from headend.fieldtools.decode import decode_input
    from headend.fieldtools.hexinput import parse_hex_texts

    capture: list[bytes] = []
    async with sim_fleet(1, transport="hdlc") as fleet:
        kwargs = fleet.connection_kwargs(0)
        async with _recording_proxy(kwargs["host"], kwargs["port"], capture) as port:
            connection = sim_connection(fleet, 0, port=port)
            async with open_session(connection, timeout=5) as session:
                since = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
                profile = await session.read_profile(Obises.LOAD_PROFILE, since)
    assert len(profile.rows) > 50
    # As an engineer pastes it: spaced hex, wrapped at 48 bytes a line.
    text = "\n".join(
        " ".join(f"{b:02X}" for b in chunk[i : i + 48])
        for chunk in capture
        for i in range(0, len(chunk), 48)
    )
    report = decode_input(parse_hex_texts([text]))
    assert report.layer == "hdlc" and report.errors == []
    assert any(frame["segmented"] for frame in report.frames)  # HDLC segments were joined
    joined = [a for a in report.apdus if a.json["type"] == "get-response-joined"]
    assert len(joined) == 1 and len(joined[0].json["blocks"]) > 1  # so were the GET blocks
    buffer = joined[0].data[0][1]
    assert len(buffer.value) == len(profile.rows)
    types = [a.type_name for a in report.apdus]
    assert types[:2] == ["AARQ", "AARE"] and "RLRQ" in types and "RLRE" in types
