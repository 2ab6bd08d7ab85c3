"""An independent peer against the simulator: dlms-cosem 21.3.2's own blocking DlmsClient.

It reads registers and operates the relay over the TCP wrapper, over HDLC on a pseudo-terminal
(its SerialHdlcTransport, unchanged) and over HDLC on TCP (the same transport handed a pyserial
`socket://` port through its constructor). The blocking client runs in a worker thread via
asyncio.to_thread so the in-process fleet keeps serving on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import serial
from dlms_cosem import cosem, dlms_data, enumerations
from dlms_cosem.clients.dlms_client import DlmsClient
from dlms_cosem.clients.hdlc_transport import SerialHdlcTransport

from cosem_objects.axdr import decode_data_all
from simulators.fleet import Fleet, run_fleet

CLIENT_TITLE = b"DLMSCOSM"
TIMEOUT = 5

SERIAL_NUMBER = cosem.CosemAttribute(
    enumerations.CosemInterface.DATA, cosem.Obis(0, 0, 96, 1, 0), 2
)
ENERGY = cosem.CosemAttribute(enumerations.CosemInterface.REGISTER, cosem.Obis(1, 0, 1, 8, 0), 2)
DISCONNECTOR = cosem.Obis(0, 0, 96, 3, 10)
OUTPUT_STATE = cosem.CosemAttribute(enumerations.CosemInterface.DISCONNECT_CONTROL, DISCONNECTOR, 2)
CONTROL_STATE = cosem.CosemAttribute(
    enumerations.CosemInterface.DISCONNECT_CONTROL, DISCONNECTOR, 3
)


def _method(number: int) -> cosem.CosemMethod:
    return cosem.CosemMethod(enumerations.CosemInterface.DISCONNECT_CONTROL, DISCONNECTOR, number)


def _security_kwargs(fleet: Fleet, index: int) -> dict[str, Any]:
    row = fleet.row(index)
    kwargs: dict[str, Any] = {
        "client_logical_address": row.client_sap,
        "server_logical_address": row.server_logical,
        "timeout": TIMEOUT,
    }
    if row.security == "lls":
        kwargs.update(
            authentication_method=enumerations.AuthenticationMechanism.LLS,
            password=row.password,
        )
    elif row.security == "hls-gmac":
        kwargs.update(
            authentication_method=enumerations.AuthenticationMechanism.HLS_GMAC,
            encryption_key=row.enc_key,
            authentication_key=row.auth_key,
            client_system_title=CLIENT_TITLE,
            security_suite=0,
        )
    return kwargs


def _client(fleet: Fleet, index: int, transport: str) -> DlmsClient:
    row = fleet.row(index)
    kwargs = _security_kwargs(fleet, index)
    if transport == "wrapper":
        return DlmsClient.with_tcp_transport(host=row.host, port=row.port, **kwargs)
    if transport == "serial":
        return DlmsClient.with_serial_hdlc_transport(
            serial_port=row.serial_port, server_physical_address=row.server_physical, **kwargs
        )
    # HDLC over TCP: the library's serial HDLC transport on a pyserial socket:// port.
    url = f"socket://{row.host}:{row.port}"
    io = SerialHdlcTransport(
        client_logical_address=row.client_sap,
        server_logical_address=row.server_logical,
        server_physical_address=row.server_physical,
        serial_port=url,
        timeout=TIMEOUT,
        serial=serial.serial_for_url(url, timeout=TIMEOUT),
    )
    security = {k: v for k, v in kwargs.items() if k != "timeout"}
    return DlmsClient(io_interface=io, timeout=TIMEOUT, **security)


def _decode(raw: bytes) -> Any:
    return decode_data_all(bytes(raw)).to_python()


@contextlib.contextmanager
def _session(client: DlmsClient) -> Iterator[DlmsClient]:
    """DlmsClient.session() without the HDLC DISC at the end.

    dlms-cosem 21.3.2 cannot parse a UA without an information field (it always reads an HCS),
    which is how a meter answers DISC, so its disconnect() waits forever on HDLC; see
    test_dlms_cosem_cannot_parse_a_ua_without_information. The TCP wrapper has no DISC."""
    client.connect()
    client.associate()
    yield client
    client.release_association()
    if isinstance(client.io_interface, SerialHdlcTransport):
        client.io_interface._serial.close()
    else:
        client.disconnect()


def _read(client: DlmsClient) -> tuple[bytes, int]:
    with _session(client):
        serial_number = _decode(client.get(SERIAL_NUMBER))
        energy = _decode(client.get(ENERGY))
    return serial_number, energy


def _operate(client: DlmsClient, methods: tuple[int, ...] = (1, 2)) -> list[tuple[bool, int]]:
    """remote_disconnect (1) / remote_reconnect (2), each read back (output and control state)."""
    seen = []
    with _session(client):
        for method in methods:
            client.action(_method(method), dlms_data.IntegerData(0).to_bytes())
            seen.append((_decode(client.get(OUTPUT_STATE)), _decode(client.get(CONTROL_STATE))))
    return seen


def test_dlms_cosem_cannot_parse_a_ua_without_information() -> None:
    from dlms_cosem.hdlc.exceptions import HdlcParsingError
    from dlms_cosem.hdlc.frames import UnNumberedAcknowledgmentFrame

    from drivers.hdlc import FrameType, HdlcAddress, HdlcFrame, parse_frame

    # The UA a meter sends in answer to DISC: no information field, hence no HCS.
    ua = HdlcFrame.make(FrameType.UA, HdlcAddress.client(16), HdlcAddress.server(1, 16))
    raw = ua.to_bytes()
    assert raw == bytes.fromhex("7ea00821022173ca707e")
    assert parse_frame(raw).frame_type is FrameType.UA
    with pytest.raises(HdlcParsingError):
        UnNumberedAcknowledgmentFrame.from_bytes(raw)


@pytest.mark.parametrize("transport", ["wrapper", "hdlc", "serial"])
@pytest.mark.parametrize("security", ["none", "lls", "hls-gmac"])
async def test_dlms_cosem_client_reads_registers(transport: str, security: str) -> None:
    async with run_fleet(1, transport=transport, security=security, seed=21) as fleet:
        serial_number, energy = await _to_thread(_read, _client(fleet, 0, transport))
        assert serial_number == fleet.config(0).meter_id.encode()  # an octet-string
        assert isinstance(energy, int) and energy > 0


@pytest.mark.parametrize("transport", ["wrapper", "hdlc", "serial"])
@pytest.mark.parametrize("security", ["none", "hls-gmac"])
async def test_dlms_cosem_client_operates_the_relay(transport: str, security: str) -> None:
    async with run_fleet(1, transport=transport, security=security, seed=22) as fleet:
        seen = await _to_thread(_operate, _client(fleet, 0, transport))
        assert seen == [(False, 0), (True, 1)]  # disconnected, then connected (mode 2)
        history = fleet.relay(0)["history"]
        assert [(e["source"], e["outcome"]) for e in history] == [
            ("remote", "ok"),
            ("remote", "ok"),
        ]


async def test_dlms_cosem_client_sees_a_stuck_relay() -> None:
    async with run_fleet(1, security="hls-gmac", faults={"relay_stuck": True}, seed=23) as fleet:
        seen = await _to_thread(lambda c: _operate(c, (1,)), _client(fleet, 0, "wrapper"))
        assert seen == [(True, 1)]  # the ACTION "succeeded" but the relay never moved
        assert fleet.relay(0)["history"][-1]["outcome"] == "stuck"


async def _to_thread(function: Any, client: DlmsClient) -> Any:
    try:
        return await asyncio.to_thread(function, client)
    finally:
        io = client.io_interface
        port = getattr(io, "_serial", None)
        if port is not None:
            port.close()
