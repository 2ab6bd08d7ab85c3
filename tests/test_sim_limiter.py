"""The simulator's Limiter (class 71): threshold_normal set over DLMS by the management
client, enforced on the load curve (power capped, energy advancing only by what was let
through), and refused to a reader."""

from __future__ import annotations

import pytest

from cosem_objects.classes import Limiter, Obises
from cosem_objects.data import Data
from simulators.config import MeterConfig
from simulators.limiter import NO_LIMIT_W
from simulators.meter import SimMeter


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_the_limit_caps_power_and_energy() -> None:
    clock = Clock(1_765_000_000.0)
    meter = SimMeter(MeterConfig(index=0, meter_id="LIM1"), clock=clock)
    free = SimMeter(MeterConfig(index=0, meter_id="LIM1"), clock=clock)
    assert meter.limiter.threshold_normal == NO_LIMIT_W
    meter.limiter.set_threshold(100, clock.t)
    clock.t += 6 * 3600
    assert meter.power()[0] <= 100
    used = meter.energy()[0] - meter.energy(clock.t - 6 * 3600)[0]
    assert used <= 100 * 6 + 1  # Wh: at most the limit for six hours
    assert free.energy()[0] - free.energy(clock.t - 6 * 3600)[0] > used
    meter.limiter.set_threshold(NO_LIMIT_W, clock.t)  # restored
    assert meter.power()[0] == pytest.approx(free.power()[0])


async def test_threshold_normal_over_dlms(sim_fleet, sim_connection) -> None:
    from drivers.connect import open_session

    async with sim_fleet(1, security="hls-gmac") as fleet:
        async with open_session(sim_connection(fleet, 0), timeout=5) as session:
            await session.set(
                Limiter.CLASS_ID,
                Obises.LIMITER,
                Limiter.THRESHOLD_NORMAL,
                Data.double_long_unsigned(1500),
            )
            value = await session.get(Limiter.CLASS_ID, Obises.LIMITER, Limiter.THRESHOLD_NORMAL)
        assert value.value == 1500
        assert fleet.relay(0)["limit_w"] == 1500
        assert fleet.relay(0)["power_w"] <= 1500
