"""Pushes as meters send them, built with our own encoders (cosem_objects, drivers): plain
or general-glo-ciphered DataNotifications and EventNotifications, in wrapper frames or in
(segmented) HDLC UI frames, and a tiny client that sends them to a listener."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket

from cosem_objects.apdu.common import AttributeDescriptor
from cosem_objects.apdu.notifications import DataNotification, EventNotificationRequest
from cosem_objects.data import Data
from cosem_objects.dates import CosemDateTime
from cosem_objects.obis import Obis
from cosem_objects.security import SecurityKeys, wrap_general_glo
from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.frames import LLC_RESPONSE, FrameType, HdlcFrame
from drivers.wrapper import encode_wrapper

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)


def obis(text: str) -> Data:
    return Data.octet_string(Obis.parse(text).to_bytes())


def data_push(
    meter_id: str,
    values: dict[str, int],
    *,
    events: dict[str, int] | None = None,
    at: dt.datetime = T0,
    invoke_id: int = 1,
) -> bytes:
    """A DataNotification in the inline layout {OBIS, value, ...}, naming the meter by its
    logical device name (0.0.42.0.0.255)."""
    elements = [obis("0.0.42.0.0.255"), Data.octet_string(meter_id.encode())]
    for code, value in values.items():
        elements += [obis(code), Data.double_long_unsigned(value)]
    for code, value in (events or {}).items():
        elements += [obis(code), Data.long_unsigned(value)]
    return DataNotification(
        invoke_id, CosemDateTime.from_datetime(at), Data.structure(elements)
    ).to_bytes()


def event_push(log_object: str, code: int, at: dt.datetime = T0) -> bytes:
    """An EventNotificationRequest: the event-code object's value."""
    return EventNotificationRequest(
        CosemDateTime.from_datetime(at),
        AttributeDescriptor(1, Obis.parse(log_object), 2),
        Data.long_unsigned(code),
    ).to_bytes()


def cipher(apdu: bytes, system_title: bytes, enc_key: bytes, auth_key: bytes, ic: int) -> bytes:
    return wrap_general_glo(apdu, 0x30, system_title, ic, SecurityKeys(enc_key, auth_key))


def wrapped(apdu: bytes) -> bytes:
    return encode_wrapper(1, 1, apdu)


def hdlc_frames(apdu: bytes, size: int = 64, physical: int = 17) -> bytes:
    """The APDU in UI frames of `size` information bytes (segmented when longer)."""
    message = LLC_RESPONSE + apdu
    parts = [message[i : i + size] for i in range(0, len(message), size)]
    return b"".join(
        HdlcFrame.make(
            FrameType.UI,
            HdlcAddress.client(16),
            HdlcAddress.server(1, physical),
            segmented=i < len(parts) - 1,
            info=part,
        ).to_bytes()
        for i, part in enumerate(parts)
    )


async def send_tcp(port: int, data: bytes, *, keep_open: float = 0.0) -> None:
    _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.write(data)
    await writer.drain()
    if keep_open:
        await asyncio.sleep(keep_open)
    writer.close()
    await writer.wait_closed()


def send_udp(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ("127.0.0.1", port))
