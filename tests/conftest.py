"""Shared fixtures.

Simulator fleet (for everyone's tests):

    async def test_reads(sim_fleet, sim_connection):
        async with sim_fleet(3, transport="hdlc", security="lls") as fleet:
            connection = sim_connection(fleet, 0)          # drivers.connect.MeterConnection
            async with open_session(connection, timeout=5) as session:
                ...

`sim_fleet(...)` is simulators.fleet.run_fleet: meters on 127.0.0.1 ephemeral ports (or
pseudo-terminals for transport="serial"), stopped when the block ends. `sim_variant` runs a
test once per transport x security combination of the simulator."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

SIM_TRANSPORTS = ("wrapper", "hdlc", "serial")
SIM_SECURITIES = ("none", "lls", "hls-gmac")


@pytest.fixture
def sim_fleet() -> Callable[..., Any]:
    """Factory: `async with sim_fleet(n, transport=..., security=..., faults=...) as fleet`."""
    from simulators.fleet import run_fleet

    return run_fleet


@pytest.fixture
def sim_connection() -> Callable[..., Any]:
    """`sim_connection(fleet, meter_index_or_id, **overrides)` -> drivers MeterConnection."""
    from drivers.connect import MeterConnection

    def make(fleet: Any, key: int | str = 0, **overrides: Any) -> MeterConnection:
        kwargs = fleet.connection_kwargs(key)
        kwargs.update(overrides)
        return MeterConnection(**kwargs)

    return make


@pytest.fixture(
    params=list(itertools.product(SIM_TRANSPORTS, SIM_SECURITIES)),
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def sim_variant(request: pytest.FixtureRequest) -> dict[str, str]:
    """{"transport": ..., "security": ...}: parametrises a test over the whole matrix."""
    transport, security = request.param
    return {"transport": transport, "security": security}
