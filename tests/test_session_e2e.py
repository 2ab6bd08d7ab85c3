"""The client session end to end against the bundled simulator: every transport (TCP wrapper,
HDLC over TCP, HDLC over a pseudo-terminal with pyserial) x every security (none, LLS,
HLS-GMAC), plus refusals, timeouts, invocation-counter reuse and the `headend` CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from cosem_objects.classes import ControlState
from drivers.connect import MeterConnection, open_session
from drivers.dlms_errors import ActionFailed, AssociationRefused, AuthenticationFailed
from drivers.session import MemoryInvocationCounterStore

REGISTERS = ["1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255", "0.0.96.3.10.255"]
HEADEND = str(Path(sys.executable).with_name("headend"))


async def test_reads_switches_and_profiles_in_every_variant(
    sim_fleet: Any, sim_connection: Any, sim_variant: dict[str, str]
) -> None:
    async with sim_fleet(1, **sim_variant) as fleet:
        meter = fleet.meter(0)
        async with open_session(sim_connection(fleet, 0), timeout=5) as session:
            readings = await session.read([*REGISTERS, "0.0.96.1.0.255"])
            assert readings["1.0.1.8.0.255"].unit == "Wh"
            assert readings["1.0.1.8.0.255"].value > 0
            assert readings["1.0.32.7.0.255"].unit == "V"
            assert 200 < readings["1.0.32.7.0.255"].value < 260
            assert readings["0.0.96.3.10.255"].value is True
            assert readings["0.0.96.1.0.255"].value == fleet.config(0).meter_id

            status = await session.relay_status()
            assert status.control_state is ControlState.CONNECTED and status.output_state

            if sim_variant["security"] == "lls":
                # The reader association may not switch the relay: only management may.
                with pytest.raises(ActionFailed) as refused:
                    await session.disconnect()
                assert refused.value.result_name == "read-write-denied"
                assert meter.output_state is True
            else:
                after = await session.disconnect()
                assert after.state == "disconnected" and after.output_state is False
                assert meter.output_state is False  # the simulated relay really opened
                after = await session.reconnect()
                assert after.state == "connected" and meter.output_state is True

            profile = await session.read_profile("1.0.99.1.0.255", from_entry=1, to_entry=4)
            assert len(profile.rows) == 4 and profile.capture_period_s == 900
            stamps = [row.timestamp for row in profile.rows]
            assert all(s is not None for s in stamps)
            assert stamps == sorted(stamps)


async def test_profile_by_range_returns_only_that_window(
    sim_fleet: Any, sim_connection: Any
) -> None:
    async with sim_fleet(1) as fleet:
        async with open_session(sim_connection(fleet, 0), timeout=5) as session:
            now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
            start, end = now - dt.timedelta(days=2), now - dt.timedelta(days=1)
            profile = await session.read_profile("1.0.99.1.0.255", start, end)
            assert 90 <= len(profile.rows) <= 97  # 15-minute rows over one day
            assert all(start <= row.timestamp <= end for row in profile.rows)  # type: ignore[operator]
            energies = [next(iter(row.values.values())) for row in profile.rows]
            assert energies == sorted(energies)  # energy never runs backwards


async def test_a_long_profile_comes_by_block_transfer(sim_fleet: Any, sim_connection: Any) -> None:
    async with sim_fleet(1, transport="hdlc") as fleet:
        async with open_session(sim_connection(fleet, 0), timeout=10) as session:
            now = dt.datetime.now(dt.UTC)
            profile = await session.read_profile("1.0.99.1.0.255", now - dt.timedelta(days=35), now)
            assert len(profile.rows) >= 35 * 96 - 1
            objects = await session.object_list()
            assert len(objects) >= 15
            assert any(str(obis) == "0.0.96.3.10.255" and cls == 70 for cls, _v, obis in objects)


async def test_clock_set_and_read_back(sim_fleet: Any, sim_connection: Any) -> None:
    async with sim_fleet(1, security="hls-gmac") as fleet:
        async with open_session(sim_connection(fleet, 0), timeout=5) as session:
            target = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
            await session.set_clock(target)
            read = await session.read_clock()
            assert abs((read - target).total_seconds()) < 5


async def test_wrong_lls_password_is_an_authentication_error(
    sim_fleet: Any, sim_connection: Any
) -> None:
    async with sim_fleet(1, security="lls") as fleet:
        connection = sim_connection(fleet, 0, password=b"wrong-password")
        with pytest.raises(AuthenticationFailed) as failure:
            async with open_session(connection, timeout=5):
                pass
        assert "authentication-failure" in str(failure.value)
        assert "wrong-password" not in str(failure.value) and "wrong-password" not in repr(
            connection
        )


async def test_wrong_hls_key_is_an_authentication_error(
    sim_fleet: Any, sim_connection: Any
) -> None:
    async with sim_fleet(1, security="hls-gmac") as fleet:
        connection = sim_connection(fleet, 0, auth_key=bytes(16))
        with pytest.raises(AuthenticationFailed):
            async with open_session(connection, timeout=5):
                pass
        assert bytes(16).hex() not in repr(connection)


async def test_refused_association_carries_the_meters_diagnostic(
    sim_fleet: Any, sim_connection: Any
) -> None:
    async with sim_fleet(1, faults={"refuse_association": True}) as fleet:
        with pytest.raises(AssociationRefused) as refused:
            async with open_session(sim_connection(fleet, 0), timeout=5):
                pass
        assert refused.value.result in (1, 2)


@pytest.mark.parametrize("transport", ["wrapper", "hdlc"])
async def test_a_silent_meter_times_out(
    sim_fleet: Any, sim_connection: Any, transport: str
) -> None:
    async with sim_fleet(1, transport=transport, faults={"offline": True}) as fleet:
        started = asyncio.get_running_loop().time()
        with pytest.raises((TimeoutError, OSError)):
            async with open_session(sim_connection(fleet, 0), timeout=1.0):
                pass
        assert asyncio.get_running_loop().time() - started < 15  # bounded, never hangs


async def test_unreachable_port_is_an_os_error() -> None:
    connection = MeterConnection(host="127.0.0.1", port=1, transport="wrapper")
    with pytest.raises(OSError):
        async with open_session(connection, timeout=2):
            pass


async def test_reusing_invocation_counters_is_rejected_by_the_meter(
    sim_fleet: Any, sim_connection: Any
) -> None:
    """Why the daemon persists counters: a fresh in-memory store replays old counters."""
    async with sim_fleet(1, security="hls-gmac") as fleet:
        connection = sim_connection(fleet, 0)
        shared = MemoryInvocationCounterStore(start=100)
        for _ in range(2):  # one store across sessions: counters keep growing, both work
            async with open_session(connection, timeout=5, ic_store=shared) as session:
                await session.read(["1.0.1.8.0.255"])
        assert await shared.reserve(1) > 100
        with pytest.raises((AuthenticationFailed, AssociationRefused, TimeoutError, OSError)):
            async with open_session(
                connection, timeout=2, ic_store=MemoryInvocationCounterStore(start=100)
            ) as session:
                await session.read(["1.0.1.8.0.255"])


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        HEADEND,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_read_prints_scaled_values_and_units_as_json(sim_fleet: Any) -> None:
    async with sim_fleet(1) as fleet:
        port = str(fleet.ports[0])
        code, out, err = await _cli(
            "read", "--host", "127.0.0.1", "--port", port, *REGISTERS, "--json"
        )
        assert code == 0, err
        payload = json.loads(out)
        assert set(payload) == set(REGISTERS)
        assert payload["1.0.1.8.0.255"]["unit"] == "Wh"
        assert isinstance(payload["1.0.1.8.0.255"]["value"], int | float)
        assert payload["1.0.32.7.0.255"]["unit"] == "V"
        assert payload["0.0.96.3.10.255"] == {"value": True, "unit": None}


async def test_cli_relay_switches_over_hls(sim_fleet: Any) -> None:
    async with sim_fleet(1, security="hls-gmac") as fleet:
        kwargs = fleet.connection_kwargs(0)
        options = [
            "--host",
            "127.0.0.1",
            "--port",
            str(kwargs["port"]),
            "--security",
            "hls-gmac",
            "--auth-key",
            kwargs["auth_key"].hex(),
            "--enc-key",
            kwargs["enc_key"].hex(),
        ]
        code, out, err = await _cli("relay", *options, "disconnect", "--json")
        assert code == 0, err
        assert json.loads(out)["state"] == "disconnected"
        assert fleet.meter(0).output_state is False
        code, out, err = await _cli("relay", *options, "status", "--json")
        assert json.loads(out)["output_state"] is False


@pytest.mark.parametrize(
    ("args", "expected_code", "message"),
    [
        (["--port", "1"], 3, "unreachable"),
        (["--security", "lls", "--password", "nope"], 4, "authentication failed"),
    ],
)
async def test_cli_errors_are_one_line_with_a_non_zero_exit(
    sim_fleet: Any, args: list[str], expected_code: int, message: str
) -> None:
    async with sim_fleet(1, security="lls") as fleet:
        port = str(fleet.ports[0])
        full = ["read", "--host", "127.0.0.1", "--port", port, *args, "1.0.1.8.0.255"]
        if "--port" in args:
            full = ["read", "--host", "127.0.0.1", *args, "1.0.1.8.0.255"]
        code, _out, err = await _cli(*full)
        assert code == expected_code
        assert message in err and len(err.strip().splitlines()) == 1
        assert "Traceback" not in err and "nope" not in err
