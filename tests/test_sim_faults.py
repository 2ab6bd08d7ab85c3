"""Each injected fault, and what a client sees of it.

The client is the head-end's own session (drivers.connect.open_session) over real sockets and
pseudo-terminals. Faults are switched at start (run_fleet(faults=...)) and at run time
(Fleet.set_faults / go_offline), also on a connection that is already open."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from drivers.connect import open_session
from drivers.dlms_errors import ActionFailed, AssociationRefused
from drivers.errors import LinkClosed, LinkProtocolError, LinkTimeout
from simulators.config import Faults
from simulators.faults_runtime import (
    FaultDice,
    Verdict,
    corrupt_hdlc_frame,
    corrupt_wrapper,
    is_offline,
)
from simulators.fleet import run_fleet
from simulators.meter_runtime import is_i_frame

SERIAL_NUMBER = "0.0.96.1.0.255"
ENERGY = "1.0.1.8.0.255"
QUICK = 0.3  # client timeout where a timeout is the expected outcome


# -- unit level: the dice and the damage ---------------------------------------------------
def test_dice_are_reproducible_per_meter_and_connection() -> None:
    faults = Faults(drop_rate=0.5, corrupt_rate=0.5, close_mid_session_rate=0.5, jitter_ms=10)

    def run(seed: int, index: int, connection: int) -> list[object]:
        dice = FaultDice(seed, index, connection)
        return [
            (dice.frame_fate(faults), dice.close_now(faults, mid_session=True), dice.delay(faults))
            for _ in range(50)
        ]

    assert run(1, 2, 3) == run(1, 2, 3)
    assert run(1, 2, 3) != run(1, 2, 4)
    fates = {fate for fate, _, _ in run(1, 2, 3)}
    assert fates == {Verdict.SEND, Verdict.DROP, Verdict.CORRUPT}
    assert all(0.0 <= delay <= 0.010 for _, _, delay in run(1, 2, 3))
    # Never closes before the first answer, whatever the rate.
    assert not FaultDice(0, 0, 0).close_now(Faults(close_mid_session_rate=1.0), mid_session=False)


def test_offline_flag_and_windows() -> None:
    assert is_offline(Faults(offline=True), 0.0)
    windows = Faults(offline_windows=[(10.0, 20.0), (30.0, 31.0)])
    assert [is_offline(windows, t) for t in (5, 10, 19.9, 20, 30.5, 40)] == [
        False,
        True,
        True,
        False,
        True,
        False,
    ]


def test_damaged_frames_fail_their_checks() -> None:
    from cosem_objects.errors import DecodeError
    from drivers.hdlc import FrameType, HdlcAddress, HdlcFrame, parse_frame
    from drivers.wrapper import encode_wrapper, parse_wrapper

    frame = HdlcFrame.make(
        FrameType.I, HdlcAddress.client(16), HdlcAddress.server(1, 17), info=b"\xe6\xe7\x00\xc4"
    ).to_bytes()
    assert is_i_frame(frame)
    assert not is_i_frame(
        HdlcFrame.make(FrameType.UA, HdlcAddress.client(16), HdlcAddress.server(1, 17)).to_bytes()
    )
    with pytest.raises(DecodeError, match="FCS"):
        parse_frame(corrupt_hdlc_frame(frame))
    with pytest.raises(DecodeError, match="version"):
        parse_wrapper(corrupt_wrapper(encode_wrapper(1, 16, b"\x61\x00")))


# -- what a client sees ----------------------------------------------------------------------
TCP = ["wrapper", "hdlc"]


@pytest.mark.parametrize("transport", TCP)
async def test_latency_beyond_the_client_timeout_is_a_timeout(sim_connection, transport) -> None:
    async with run_fleet(1, transport=transport, latency_ms=800) as fleet:
        with pytest.raises(LinkTimeout):
            async with open_session(sim_connection(fleet), timeout=QUICK):
                pass
        # A patient client gets its answer; the latency changes at run time, too.
        fleet.set_faults(0, latency_ms=20, jitter_ms=30)
        async with open_session(sim_connection(fleet), timeout=5) as session:
            readings = await session.read([SERIAL_NUMBER])
        assert readings[SERIAL_NUMBER].value == fleet.config(0).meter_id


async def test_dropped_answers_over_the_wrapper_time_out(sim_connection) -> None:
    async with run_fleet(1, faults={"drop_rate": 1.0}) as fleet:
        with pytest.raises(LinkTimeout):
            async with open_session(sim_connection(fleet), timeout=QUICK):
                pass


async def test_dropped_hdlc_answers_time_out_after_retries(sim_connection) -> None:
    async with run_fleet(1, transport="hdlc", faults={"drop_rate": 1.0}) as fleet:
        with pytest.raises(LinkTimeout):
            async with open_session(sim_connection(fleet), timeout=QUICK):
                pass
        # The link itself came up (UA is never dropped): only I frames are lost.
        assert fleet.runtime(0).connections == 1


async def test_hdlc_retransmission_recovers_from_some_lost_frames(sim_connection) -> None:
    async with run_fleet(1, transport="hdlc", seed=5, faults={"drop_rate": 0.3}) as fleet:
        async with open_session(sim_connection(fleet), timeout=0.5) as session:
            readings = await session.read([SERIAL_NUMBER, ENERGY])
        assert readings[SERIAL_NUMBER].value == fleet.config(0).meter_id


async def test_corrupted_wrapper_answer_is_a_protocol_error(sim_connection) -> None:
    async with run_fleet(1, faults={"corrupt_rate": 1.0}) as fleet:
        with pytest.raises(LinkProtocolError, match="wrapper"):
            async with open_session(sim_connection(fleet), timeout=2):
                pass


async def test_hdlc_frames_with_bad_fcs_are_discarded_so_the_client_times_out(
    sim_connection,
) -> None:
    async with run_fleet(1, transport="hdlc", faults={"corrupt_rate": 1.0}) as fleet:
        with pytest.raises(LinkTimeout):
            async with open_session(sim_connection(fleet), timeout=QUICK):
                pass


@pytest.mark.parametrize("transport", TCP)
async def test_connection_closed_mid_session(sim_connection, transport) -> None:
    async with run_fleet(1, transport=transport) as fleet:
        async with open_session(sim_connection(fleet), timeout=2) as session:
            await session.read([SERIAL_NUMBER])
            fleet.set_faults(0, close_mid_session_rate=1.0)  # on the open connection
            with pytest.raises(LinkClosed):
                await session.read([ENERGY])
        assert fleet.runtime(0).open_connections == 0


@pytest.mark.parametrize("transport", TCP)
async def test_offline_meter_hangs_up_and_comes_back(sim_connection, transport) -> None:
    async with run_fleet(2, transport=transport) as fleet:
        fleet.go_offline(0)
        with pytest.raises(ConnectionError):
            async with open_session(sim_connection(fleet, 0), timeout=2):
                pass
        async with open_session(sim_connection(fleet, 1), timeout=2) as session:
            await session.read([SERIAL_NUMBER])  # the other meter is unaffected
        fleet.go_online(0)
        async with open_session(sim_connection(fleet, 0), timeout=2) as session:
            await session.read([SERIAL_NUMBER])


async def test_offline_window_ends_by_itself(sim_connection) -> None:
    async with run_fleet(1) as fleet:
        fleet.go_offline(0, for_s=0.5)
        with pytest.raises(ConnectionError):
            async with open_session(sim_connection(fleet), timeout=2):
                pass
        await asyncio.sleep(0.6)
        async with open_session(sim_connection(fleet), timeout=2) as session:
            await session.read([SERIAL_NUMBER])


async def test_serial_offline_meter_is_silent_and_close_means_dm(sim_connection) -> None:
    async with run_fleet(2, transport="serial", meters_per_line=2) as fleet:
        fleet.go_offline(0)
        with pytest.raises(LinkTimeout):
            async with open_session(sim_connection(fleet, 0), timeout=QUICK):
                pass
        async with open_session(sim_connection(fleet, 1), timeout=2) as session:
            await session.read([SERIAL_NUMBER])
            fleet.set_faults(1, close_mid_session_rate=1.0)
            with pytest.raises(LinkClosed):
                await session.read([ENERGY])


# -- model faults, wired from the fleet ------------------------------------------------------
@pytest.mark.parametrize("transport", TCP)
async def test_refused_association(sim_connection, transport) -> None:
    async with run_fleet(1, transport=transport, faults={"refuse_association": True}) as fleet:
        with pytest.raises(AssociationRefused):
            async with open_session(sim_connection(fleet), timeout=2):
                pass
        fleet.set_faults(0, refuse_association=False)
        async with open_session(sim_connection(fleet), timeout=2) as session:
            await session.read([SERIAL_NUMBER])


async def test_stuck_relay_says_yes_but_stays_connected(sim_connection) -> None:
    async with run_fleet(1, faults={"relay_stuck": True}) as fleet:
        async with open_session(sim_connection(fleet), timeout=2) as session:
            status = await session.disconnect()
        assert status.output_state is True and status.state == "connected"
        assert fleet.relay(0)["history"][-1]["outcome"] == "stuck"


async def test_relay_failure_is_an_action_error(sim_connection) -> None:
    async with run_fleet(1, faults={"relay_failure": True}) as fleet:
        async with open_session(sim_connection(fleet), timeout=2) as session:
            with pytest.raises(ActionFailed):
                await session.disconnect()
            fleet.set_faults(0, relay_failure=False)
            status = await session.disconnect()
        assert status.output_state is False
        assert [e["outcome"] for e in fleet.relay(0)["history"]] == ["failure", "ok"]


async def test_clock_drift_shows_in_the_clock_a_client_reads(sim_connection) -> None:
    start = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    now = [start]
    async with run_fleet(1, clock=lambda: now[0], faults={"clock_drift_s_per_day": 864.0}) as fleet:
        now[0] += 86400.0  # one day later the clock is 864 s fast
        async with open_session(sim_connection(fleet), timeout=2) as session:
            reading = await session.read_clock()
        real = dt.datetime.fromtimestamp(now[0], dt.UTC)
        assert abs((reading - real).total_seconds() - 864.0) < 2.0
