"""`dlms-sim` as users run it: a real process, its stdout, its inventory, its signals."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from drivers.connect import MeterConnection, open_session
from simulators.cli import build_parser, spec_from_args
from simulators.fleet_spec import FleetFileError
from simulators.inventory import read_inventory

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "fleet.example.toml"
SERIAL_NUMBER = "0.0.96.1.0.255"
START_TIMEOUT = 30.0


class SimProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def wait_for_ready(self) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    stderr = await self.process.stderr.read() if self.process.stderr else b""
                    raise AssertionError(f"dlms-sim exited early: {stderr.decode()}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if line.startswith("ready:"):
                    return line

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signum)
        async with asyncio.timeout(15):
            return await self.process.wait()


@asynccontextmanager
async def dlms_sim(*args: str) -> AsyncIterator[SimProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    sim = SimProcess(process)
    try:
        yield sim
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def run_to_end(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _connection(row: dict[str, str]) -> MeterConnection:
    def optional_int(text: str) -> int | None:
        return int(text) if text else None

    return MeterConnection(
        host=row["host"] or None,
        port=int(row["port"] or 0),
        transport=row["transport"],
        client_sap=int(row["client_sap"]),
        server_logical=int(row["server_logical"]),
        server_physical=optional_int(row["server_physical"]),
        security=row["security"],
        password=row["password"].encode() or None,
        auth_key=bytes.fromhex(row["auth_key"]) or None,
        enc_key=bytes.fromhex(row["enc_key"]) or None,
        serial_port=row["serial_port"] or None,
        baud=int(row["baud"] or 9600),
    )


def _free_base_port(count: int) -> int:
    for _ in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
        probe.close()
        if base + count > 65535:
            continue
        try:
            holders = []
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
    raise RuntimeError("no free port run")


# -- flags -----------------------------------------------------------------------------
def test_flags_map_onto_the_fleet_spec() -> None:
    args = build_parser().parse_args(
        "--meters 5 --host 127.0.0.2 --port 5000 --transport hdlc --security hls-gmac "
        "--latency-ms 12 --inventory inv.csv --seed 3 --drop-rate 0.1 --relay-stuck "
        "--offline-window 5:9".split()
    )
    spec = spec_from_args(args)
    assert (spec.meters, spec.host, spec.port, spec.transport, spec.security) == (
        5,
        "127.0.0.2",
        5000,
        "hdlc",
        "hls-gmac",
    )
    assert (spec.latency_ms, spec.inventory, spec.seed) == (12.0, "inv.csv", 3)
    assert spec.faults == {"drop_rate": 0.1, "relay_stuck": True, "offline_windows": [(5.0, 9.0)]}


def test_flags_win_over_the_fleet_file() -> None:
    args = build_parser().parse_args(
        ["--fleet", str(EXAMPLE), "--meters", "30", "--security", "none", "--port", "0"]
    )
    spec = spec_from_args(args)
    assert (spec.meters, spec.security, spec.port) == (30, "none", 0)
    assert spec.seed == 7 and spec.serial.meters_per_line == 4  # from the file
    assert spec_from_args(build_parser().parse_args(["--serial"])).transport == "serial"


def test_bad_flag_values_are_refused_by_name() -> None:
    with pytest.raises(FleetFileError, match="--offline-window"):
        spec_from_args(build_parser().parse_args(["--offline-window", "soon"]))
    with pytest.raises(FleetFileError, match="drop_rate"):
        spec_from_args(build_parser().parse_args(["--drop-rate", "7"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--transport", "carrier-pigeon"])


# -- the process -------------------------------------------------------------------------
async def test_serves_meters_writes_inventory_and_stops_on_sigterm(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.csv"
    base = _free_base_port(3)
    async with dlms_sim(
        "--meters",
        "3",
        "--port",
        str(base),
        "--security",
        "lls",
        "--seed",
        "11",
        "--inventory",
        str(inventory),
    ) as sim:
        assert await sim.wait_for_ready() == "ready: 3 meters"
        assert f"inventory: {inventory}" in sim.lines
        rows = read_inventory(inventory)
        assert [int(row["port"]) for row in rows] == [base, base + 1, base + 2]
        assert {row["client_sap"] for row in rows} == {"32"}
        async with open_session(_connection(rows[2]), timeout=5) as session:
            readings = await session.read([SERIAL_NUMBER])
        assert readings[SERIAL_NUMBER].value == rows[2]["meter_id"]
        assert await sim.stop() == 0
        assert sim.process.stderr is not None
        assert b"stopped" in await sim.process.stderr.read()


async def test_ctrl_c_stops_cleanly() -> None:
    async with dlms_sim("--meters", "2", "--port", "0", "--transport", "hdlc") as sim:
        await sim.wait_for_ready()
        assert await sim.stop(signal.SIGINT) == 0


async def test_serial_prints_device_paths(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.csv"
    async with dlms_sim(
        "--meters", "4", "--serial", "--meters-per-line", "2", "--inventory", str(inventory)
    ) as sim:
        assert await sim.wait_for_ready() == "ready: 4 meters"
        serial_lines = [line for line in sim.lines if line.startswith("serial: ")]
        assert len(serial_lines) == 2
        paths = [line.split()[1] for line in serial_lines]
        assert all(_is_device(path) for path in paths)
        rows = read_inventory(inventory)
        assert [row["serial_port"] for row in rows] == [paths[0], paths[0], paths[1], paths[1]]
        assert all(
            f"{r['meter_id']}@{r['server_physical']}" in " ".join(serial_lines) for r in rows
        )
        async with open_session(_connection(rows[3]), timeout=5) as session:
            readings = await session.read([SERIAL_NUMBER])
        assert readings[SERIAL_NUMBER].value == rows[3]["meter_id"]
        assert await sim.stop() == 0


async def test_fleet_file_and_control_port(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.csv"
    async with dlms_sim(
        "--fleet",
        str(EXAMPLE),
        "--port",
        "0",
        "--control-port",
        "0",
        "--inventory",
        str(inventory),
    ) as sim:
        assert await sim.wait_for_ready() == "ready: 20 meters"
        control = next(line for line in sim.lines if line.startswith("control: "))
        port = int(control.rsplit(":", 1)[1])
        rows = read_inventory(inventory)
        assert rows[0]["security"] == "hls-gmac" and rows[1]["transport"] == "hdlc"
        assert rows[16]["transport"] == "serial" and rows[16]["serial_port"]
        # The control module's own command line, as a field engineer would use it.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulators.control",
            "--port",
            str(port),
            json.dumps({"op": "set_faults", "meter": 7, "faults": {"relay_stuck": True}}),
            json.dumps({"op": "faults", "meter": 7}),
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0
        answers = [json.loads(line) for line in out.decode().splitlines()]
        assert answers[0] == {"ok": True, "result": {"changed": 1}}
        assert answers[1]["result"]["relay_stuck"] is True
        assert await sim.stop() == 0


async def test_bad_arguments_exit_with_a_message(tmp_path: Path) -> None:
    code, out, err = await run_to_end("--meters", "0")
    assert code == 2 and "meters" in err and "ready" not in out
    bad = tmp_path / "fleet.toml"
    bad.write_text("[fleet]\nsecurity = 'rot13'\n")
    code, _, err = await run_to_end("--fleet", str(bad))
    assert code == 2 and "security" in err and "rot13" in err


async def test_port_in_use_is_reported() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        port = blocker.getsockname()[1]
        code, out, err = await run_to_end("--meters", "1", "--port", str(port))
    finally:
        blocker.close()
    assert code == 2 and "already in use" in err and "ready" not in out


def _is_device(path: str) -> bool:
    return Path(path).is_char_device()
