"""The simulator's `stats` control op: associations per meter and the most open at once, the
figure the cluster tests and benchmark use to prove one session per meter."""

from __future__ import annotations

import pytest

from drivers.connect import open_session
from simulators.control import ControlClient, ControlServer

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("transport", ["wrapper", "hdlc"])
async def test_stats_count_sessions_and_the_most_open_at_once(
    sim_fleet, sim_connection, transport: str
) -> None:
    async with sim_fleet(2, transport=transport, security="lls") as fleet:
        first, second = fleet.config(0).meter_id, fleet.config(1).meter_id
        async with open_session(sim_connection(fleet, 0), timeout=5) as a:
            await a.relay_status()
            async with open_session(sim_connection(fleet, 0), timeout=5) as b:
                await b.relay_status()
                assert fleet.stats()["meters"][first]["max_concurrent_sessions"] == 2
        for _ in range(3):
            async with open_session(sim_connection(fleet, 1), timeout=5) as c:
                await c.relay_status()
        async with ControlServer(fleet) as server, ControlClient(port=server.port) as client:
            stats = await client.call("stats")
        assert stats["meters"][first] == {"sessions": 2, "max_concurrent_sessions": 2}
        assert stats["meters"][second] == {"sessions": 3, "max_concurrent_sessions": 1}
        assert fleet.runtime(0).open_sessions == 0  # released associations are closed again
