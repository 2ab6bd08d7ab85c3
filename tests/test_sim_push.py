"""Simulator pushes (`dlms-sim --push-to`) received over real sockets and decoded with our codec.

Every transport (TCP wrapper, UDP wrapper, HDLC UI frames over TCP, segmented) in every push
security (plain, general-glo-ciphered under hls-gmac); event pushes on a relay operation, a
power failure and a cover opening; the Push setup objects readable by GET; and an inbound-only
meter that listens nowhere, calls the head-end and is served over its own connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from e2e_support import eventually
from push_receiver import PushReceiver, Received

from cosem_objects.data import Data, DataType
from cosem_objects.security import SecurityKeys
from drivers.connect import MeterConnection
from drivers.session import DlmsSession
from drivers.transports import HdlcTcpTransport
from drivers.transports.accepted import AcceptedWrapperTransport
from drivers.transports.stream import ByteStream
from simulators.cli import build_parser, spec_from_args
from simulators.config import PushSpec, derive_credentials
from simulators.event_logs import (
    DISCONNECTOR_LOG,
    POWER_FAILURE_LOG,
    STANDARD_LOG,
    FraudCode,
    StandardCode,
)
from simulators.fleet import run_fleet
from simulators.fleet_spec import FleetFileError
from simulators.objects import services
from simulators.objects.push_setup import PUSH_SETUP
from simulators.push_messages import PUSH_CLIENT_SAP
from simulators.relay import EventCode

CASES = [(t, s) for t in ("tcp", "udp", "hdlc") for s in ("none", "hls-gmac")]


def _keys(index: int = 0, seed: int = 0) -> SecurityKeys:
    _password, auth_key, enc_key, _title = derive_credentials(seed, index)
    return SecurityKeys(enc_key, auth_key)


def _body(received: Received) -> tuple[Data, ...]:
    body = received.notification.body
    assert body.type is DataType.STRUCTURE
    values: tuple[Data, ...] = body.value
    return values


def _event_codes(received: Received) -> list[Any]:
    """(standard, fraud, disconnector) event code slots of a push."""
    return [value.value for value in _body(received)[7:10]]


async def _next_push(receiver: PushReceiver, *, event: bool) -> Received:
    """The next event push (or interval push: no event code); the others go on meanwhile."""
    for _ in range(50):
        received = await receiver.next()
        assert _body(received)[0].value == PUSH_SETUP.to_bytes()  # it names its Push setup
        if any(code is not None for code in _event_codes(received)) == event:
            return received
    raise AssertionError(f"no {'event' if event else 'interval'} push")


@pytest.mark.parametrize(("transport", "security"), CASES)
async def test_pushes_decode_in_every_transport_and_security(transport: str, security: str) -> None:
    framing = "hdlc" if transport == "hdlc" else "wrapper"
    async with PushReceiver(framing=framing, keys=_keys()) as receiver:
        push = PushSpec(
            "127.0.0.1", receiver.port, interval_s=0.2, transport=transport, hdlc_max_info=32
        )
        async with run_fleet(1, security=security, push=push) as fleet:
            config = fleet.config(0)
            interval = await _next_push(receiver, event=False)
            values = _body(interval)
            assert values[1].value == config.meter_id.encode()
            assert values[4].type is DataType.DOUBLE_LONG_UNSIGNED  # export energy, Wh
            assert values[5].value is True  # relay output_state
            assert interval.ciphered == (security == "hls-gmac")
            if interval.ciphered:
                assert interval.system_title == config.system_title
            if transport == "hdlc":
                assert interval.frames > 1  # LLC + APDU is longer than 32 bytes: segmented
            else:
                assert interval.wports == (config.server_logical, PUSH_CLIENT_SAP)

            fleet.meter(0).remote_disconnect()
            relay = await _next_push(receiver, event=True)
            assert _event_codes(relay) == [None, None, EventCode.REMOTE_DISCONNECTION]
            later = await _next_push(receiver, event=False)
            assert _body(later)[5].value is False  # the relay is open now
            if security == "hls-gmac":
                assert relay.invocation_counter is not None
                assert later.invocation_counter is not None
                assert later.invocation_counter > relay.invocation_counter
            assert receiver.errors == []


async def test_power_failure_and_cover_push_and_log() -> None:
    async with PushReceiver(keys=_keys()) as receiver:
        push = PushSpec("127.0.0.1", receiver.port, interval_s=0)
        async with run_fleet(1, security="hls-gmac", push=push) as fleet:
            meter = fleet.meter(0)
            fleet.power_fail(0)
            gasp = await _next_push(receiver, event=True)
            assert _event_codes(gasp) == [StandardCode.POWER_DOWN, None, None]
            fleet.open_cover(0)
            cover = await _next_push(receiver, event=True)
            assert _event_codes(cover) == [None, FraudCode.METER_COVER_REMOVED, None]
            # The logs hold them, readable as Profile generic buffers.
            failures = services.get_value(meter, POWER_FAILURE_LOG).value
            assert [row.value[1].value for row in failures] == [StandardCode.POWER_DOWN]
            standard = services.get_value(meter, STANDARD_LOG).value
            assert [row.value[1].value for row in standard] == [StandardCode.POWER_DOWN]
            assert fleet.pushes(0)["sent"] == 2
            assert receiver.errors == []


async def test_power_comes_back_after_the_duration() -> None:
    async with run_fleet(1) as fleet:
        fleet.power_fail(0, duration_s=0.05)
        meter = fleet.meter(0)
        await eventually(lambda: len(meter.event_log(STANDARD_LOG)) == 2, what="power up")
        codes = [code for _t, code in meter.event_log(STANDARD_LOG)]
        assert codes == [StandardCode.POWER_DOWN, StandardCode.POWER_UP]
        assert len(meter.event_log(POWER_FAILURE_LOG)) == 1


async def test_an_unreachable_push_address_is_retried_then_counted_as_failed() -> None:
    async with PushReceiver() as receiver:
        port = receiver.port
    # Nothing listens there any more.
    push = PushSpec("127.0.0.1", port, interval_s=0, retries=1, repetition_delay_s=0.01)
    async with run_fleet(1, push=push) as fleet:
        fleet.open_cover(0)
        await eventually(lambda: fleet.pushes(0)["failed"], what="the push to fail")
        assert fleet.pushes(0) == {"sent": 0, "failed": 1, "connections": 0}
        # The meter still serves its listening port meanwhile.
        async with DlmsSession(
            MeterConnection(**fleet.connection_kwargs(0)).transport_object(5),
            MeterConnection(**fleet.connection_kwargs(0)).settings(),
            timeout=5,
        ) as session:
            assert (await session.relay_status()).output_state is True


# -- inbound only: the meter calls in and is served over its own connection --------------------
class _AcceptedHdlc(HdlcTcpTransport):
    def __init__(self, stream: ByteStream, **kwargs: Any) -> None:
        super().__init__("inbound", 0, **kwargs)
        self._accepted = stream

    async def _open_stream(self) -> ByteStream:
        return self._accepted


@pytest.mark.parametrize(("transport", "security"), [("tcp", "hls-gmac"), ("hdlc", "none")])
async def test_inbound_only_meter_is_served_over_its_own_connection(
    transport: str, security: str
) -> None:
    async with PushReceiver(serve_streams=False) as receiver:
        push = PushSpec(
            "127.0.0.1", receiver.port, interval_s=0, transport=transport, inbound_only=True
        )
        meter_transport = "hdlc" if transport == "hdlc" else "wrapper"
        async with run_fleet(1, transport=meter_transport, security=security, push=push) as fleet:
            assert fleet.ports == [0]  # it listens nowhere
            stream = await asyncio.wait_for(receiver.streams.get(), 5)
            connection = MeterConnection(**fleet.connection_kwargs(0))
            kwargs = {
                "client_sap": connection.client_sap,
                "server_logical": connection.server_logical,
                "timeout": 5.0,
            }
            assert connection.transport == "inbound"  # so its inventory row says
            client: AcceptedWrapperTransport | HdlcTcpTransport
            if transport == "hdlc":
                client = _AcceptedHdlc(stream, server_physical=connection.server_physical, **kwargs)
            else:
                client = AcceptedWrapperTransport(
                    stream,
                    client_wport=connection.client_sap,
                    server_wport=connection.server_logical,
                )
            async with DlmsSession(client, connection.settings(), timeout=5) as session:
                objects = await session.get(40, PUSH_SETUP, 2)
                assert len(objects.value) == 10
                destination = await session.get(40, PUSH_SETUP, 3)
                assert destination.value[1].value == f"127.0.0.1:{receiver.port}".encode()
                assert destination.value[0].value == (5 if transport == "hdlc" else 0)
                settings = [(await session.get(40, PUSH_SETUP, n)).value for n in (4, 5, 6, 7)]
                assert settings == [(), 0, push.retries, push.repetition_delay_s]
                # Method 1 (push): one push now.
                before = fleet.pushes(0)["sent"]
                await session.action(40, PUSH_SETUP, 1)
                await eventually(lambda: fleet.pushes(0)["sent"] > before, what="the asked push")
                if security == "hls-gmac":
                    status = await session.disconnect()
                    assert status.output_state is False
                    # Its event push crossed our requests on the same connection.
                    assert fleet.meter(0).disconnector_log[-1][1] == EventCode.REMOTE_DISCONNECTION
            assert fleet.pushes(0)["connections"] == 1
            # The head-end lets the call go: the meter calls again a moment later.
            await stream.close()
            again = await asyncio.wait_for(receiver.streams.get(), 5)
            assert not again.closed
            assert fleet.pushes(0)["connections"] == 2


# -- the command line ----------------------------------------------------------------------------
def test_push_flags_make_a_push_spec() -> None:
    args = build_parser().parse_args(
        ["--push-to", "10.0.0.5:4059", "--push-interval", "15", "--push-transport", "hdlc"]
    )
    spec = spec_from_args(args)
    assert spec.push == PushSpec("10.0.0.5", 4059, interval_s=15, transport="hdlc")


@pytest.mark.parametrize(
    "argv",
    [
        ["--push-interval", "5"],
        ["--inbound-only"],
        ["--push-to", "nohost"],
        ["--push-to", "h:99999"],
        ["--push-to", "h:4059", "--push-transport", "udp", "--inbound-only"],
    ],
)
def test_bad_push_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(FleetFileError):
        spec_from_args(build_parser().parse_args(argv))


# -- the contract with the head-end's listener ------------------------------------------------
def test_the_listeners_mapping_reads_simulator_pushes_through_the_push_object_list() -> None:
    from cosem_objects.apdu.notifications import DataNotification
    from headend.listener.mapping import map_notification, parse_object_list
    from simulators.config import MeterConfig
    from simulators.event_logs import MeterEvent
    from simulators.meter import SimMeter
    from simulators.objects.push_setup import PUSH_SETUP_DEF
    from simulators.push_messages import push_apdu

    meter = SimMeter(MeterConfig.create(0))
    object_list = services.get_attribute(meter, 40, PUSH_SETUP, 2)
    assert isinstance(object_list, Data)
    objects = parse_object_list(object_list)

    interval = map_notification(
        DataNotification.from_bytes(push_apdu(meter, PUSH_SETUP_DEF, 1)), objects
    )
    assert interval.problems == [] and interval.events == []
    assert interval.name == meter.meter_id
    assert {obis for obis, _value in interval.readings} == {
        "1.0.1.8.0.255",
        "1.0.2.8.0.255",
        "0.0.96.3.10.255",
    }

    event = meter.remote_disconnect()
    logged = MeterEvent(DISCONNECTOR_LOG, EventCode.REMOTE_DISCONNECTION, event.time)
    pushed = map_notification(
        DataNotification.from_bytes(push_apdu(meter, PUSH_SETUP_DEF, 2, logged)), objects
    )
    assert pushed.events == [(str(DISCONNECTOR_LOG), EventCode.REMOTE_DISCONNECTION)]
    assert pushed.ts is not None and abs(pushed.ts.timestamp() - event.time) < 1


async def test_dlms_sim_pushes_from_the_command_line_over_udp() -> None:
    from test_sim_cli import dlms_sim

    async with PushReceiver(keys=_keys(seed=3)) as receiver:
        async with dlms_sim(
            "--meters", "1", "--port", "0", "--seed", "3", "--security", "hls-gmac",
            "--push-to", f"127.0.0.1:{receiver.port}", "--push-interval", "0.2",
            "--push-transport", "udp",
        ) as sim:  # fmt: skip
            await sim.wait_for_ready()
            assert f"push: 127.0.0.1:{receiver.port} (udp)" in sim.lines
            received = await receiver.next(timeout=10)
            assert received.transport == "udp" and received.ciphered
            assert _body(received)[1].value == b"SIM0030000000"
            assert await sim.stop() == 0


async def test_a_meter_that_pushes_nowhere_refuses_the_push_method() -> None:
    from cosem_objects.apdu.common import ActionResult

    async with run_fleet(1) as fleet:
        result = services.invoke_method(fleet.meter(0), 40, PUSH_SETUP, 1)
        assert result == (ActionResult.TEMPORARY_FAILURE, None)
