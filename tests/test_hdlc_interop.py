"""Our HDLC against an independent implementation: the dlms-cosem 21.3.2 blocking HDLC client
talks to our HdlcServerConnection over a real pseudo-terminal, and each side decodes the
other's frames."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty

import pytest
from dlms_cosem.clients.hdlc_transport import SerialHdlcTransport
from dlms_cosem.hdlc import address as cosem_address
from dlms_cosem.hdlc import frames as cosem_frames

from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.connection import HdlcServerConnection
from drivers.hdlc.events import ApduReceived, SendFrame
from drivers.hdlc.frames import FrameType, HdlcFrame, parse_frame

SERVER = HdlcAddress.server(1, 17)


def test_dlms_cosem_decodes_our_information_frames() -> None:
    # dlms-cosem only parses I frames in the server -> client direction.
    frame = HdlcFrame.make(
        FrameType.I,
        HdlcAddress.client(16),
        SERVER,
        send_seq=3,
        recv_seq=5,
        segmented=True,
        info=b"\xe6\xe7\x00\xc4\x01\xc1",
    )
    theirs = cosem_frames.InformationFrame.from_bytes(frame.to_bytes())
    assert theirs.payload == frame.info
    assert (theirs.send_sequence_number, theirs.receive_sequence_number) == (3, 5)
    assert theirs.segmented and theirs.final


def test_we_decode_dlms_cosem_frames() -> None:
    server = cosem_address.HdlcAddress(1, 17, "server")
    client = cosem_address.HdlcAddress(16, None, "client")
    snrm = cosem_frames.SetNormalResponseModeFrame(server, client).to_bytes()
    ours = parse_frame(snrm)
    assert ours.frame_type is FrameType.SNRM and ours.src == HdlcAddress.client(16)
    assert ours.dst.upper == 1 and ours.dst.lower == 17
    info = cosem_frames.InformationFrame(
        server, client, b"\xe6\xe6\x00\xc0", send_sequence_number=2, receive_sequence_number=1
    ).to_bytes()
    ours = parse_frame(info)
    assert (ours.send_seq, ours.recv_seq, ours.info) == (2, 1, b"\xe6\xe6\x00\xc0")


@pytest.mark.parametrize("response_size", [5, 400])
async def test_dlms_cosem_client_against_our_server_on_a_pty(response_size: int) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.set_blocking(master, False)
    server = HdlcServerConnection(SERVER)
    seen: list[object] = []
    # Avoid 0x7E in the payload: dlms-cosem splits frames on flags.
    response = bytes((i % 100) + 1 for i in range(response_size))

    def readable() -> None:
        try:
            data = os.read(master, 4096)
        except OSError:
            return
        for event in server.receive_data(data):
            seen.append(event)
            if isinstance(event, SendFrame):
                os.write(master, event.data)
            elif isinstance(event, ApduReceived):
                for frame in server.send_apdu(response):
                    os.write(master, frame)

    loop = asyncio.get_running_loop()
    loop.add_reader(master, readable)

    def blocking_client() -> bytes:
        client = SerialHdlcTransport(
            client_logical_address=16,
            server_logical_address=1,
            server_physical_address=17,
            serial_port=path,
            timeout=3,
        )
        try:
            client.connect()
            answer = bytes(client.send(b"\xc0\x01\xc1\x00\x08"))
            # Not client.disconnect(): dlms-cosem cannot parse a UA without an information
            # field (it always expects an HCS), which is what the standard UA to DISC is.
            return answer
        finally:
            client._serial.close()

    try:
        answer = await asyncio.wait_for(asyncio.to_thread(blocking_client), 10)
    finally:
        loop.remove_reader(master)
        with contextlib.suppress(OSError):
            os.close(master)
        os.close(slave)
    assert answer == response
    assert [e.apdu for e in seen if isinstance(e, ApduReceived)] == [b"\xc0\x01\xc1\x00\x08"]
