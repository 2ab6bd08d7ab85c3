"""The listener's sans-IO parts one by one: the alarm guard's window and bound, the ways a
push is opened (general-glo, general-ded, glo-event-notification, encryption without
authentication refused), the directory's names and addresses, mapping by push object list,
and block transfer joined by the handler."""

from __future__ import annotations

import asyncio
import datetime as dt

from push_support import T0, event_push, obis

from cosem_objects.apdu.gbt import GeneralBlockTransfer
from cosem_objects.apdu.notifications import DataNotification
from cosem_objects.data import Data
from cosem_objects.dates import CosemDateTime
from cosem_objects.security import SecurityKeys, wrap_general_glo, wrap_service_specific
from headend.listener.directory import Directory
from headend.listener.framing import InboundApdu
from headend.listener.guard import Guard
from headend.listener.handler import Peer, PushHandler
from headend.listener.mapping import PushObject, map_notification, setup_of
from headend.listener.unwrap import BAD_TAG, UNKNOWN_SENDER, Opened, Rejected, open_apdu
from headend.meters.inventory import MeterRecord
from headend.meters.secrets import Secret

TITLE = b"SIM\x00\x00\x00\x00\x07"
ENC, AUTH = bytes(range(16)), bytes(range(16, 32))
KEYS = SecurityKeys(ENC, AUTH)


def record(meter_id: str, host: str, physical: int | None = None, **kw: object) -> MeterRecord:
    fields: dict[str, object] = {
        "meter_id": meter_id,
        "host": host,
        "port": 4059,
        "transport": "wrapper",
        "client_sap": 1,
        "server_logical": 1,
        "server_physical": physical,
        "security": "hls-gmac",
        "serial_port": None,
        "baud": None,
        "line": f"tcp:{host}:{meter_id}",
    }
    fields.update(kw)
    return MeterRecord(**fields)  # type: ignore[arg-type]


DIRECTORY = Directory(
    [
        record("M7", "10.0.0.7", system_title=TITLE, enc_key=Secret(ENC), auth_key=Secret(AUTH)),
        record("A1", "10.0.0.9", 17),
        record("A2", "10.0.0.9", 18),
    ]
)
PLAIN = DataNotification(1, None, Data.structure([obis("1.0.1.8.0.255"), Data.unsigned(5)]))


def test_the_guard_alarms_once_per_sender_and_window_and_stays_bounded() -> None:
    now = [0.0]
    guard = Guard(window_s=60, max_senders=3, clock=lambda: now[0])
    assert guard.report("bad_tag", "M1") is True
    assert guard.report("bad_tag", "M1") is False
    assert guard.report("replay", "M1") is True  # another kind: its own alarm
    assert guard.report("bad_tag", "M2") is True  # another sender too
    now[0] = 61
    assert guard.report("bad_tag", "M1") is True  # a new window
    for n in range(10):
        guard.report("malformed", f"10.0.0.{n}")
    assert len(guard._alarmed) == 3
    assert guard.counts["bad_tag"] == 4 and guard.counts["malformed"] == 10


def test_general_ded_and_glo_event_notifications_open_with_the_meters_keys() -> None:
    ded = b"\xdc" + wrap_general_glo(PLAIN.to_bytes(), 0x30, TITLE, 11, KEYS)[1:]
    opened = open_apdu(ded, DIRECTORY)
    assert isinstance(opened, Opened) and opened.meter is not None
    assert opened.meter.meter_id == "M7" and opened.invocation_counter == 11
    glo = wrap_service_specific(event_push("0.0.96.11.0.255", 1), 0x30, TITLE, 12, KEYS)
    assert isinstance(open_apdu(glo, DIRECTORY), Rejected)  # no meter known on the line yet
    known = DIRECTORY.get("M7")
    opened = open_apdu(glo, DIRECTORY, known)
    assert isinstance(opened, Opened) and opened.invocation_counter == 12


def test_encryption_without_authentication_is_refused() -> None:
    unauthenticated = wrap_general_glo(PLAIN.to_bytes(), 0x20, TITLE, 3, KEYS)
    refused = open_apdu(unauthenticated, DIRECTORY)
    assert isinstance(refused, Rejected) and refused.kind == BAD_TAG
    assert "without authentication" in refused.reason
    other = wrap_general_glo(PLAIN.to_bytes(), 0x30, b"XXX\x00\x00\x00\x00\x01", 3, KEYS)
    refused = open_apdu(other, DIRECTORY)
    assert isinstance(refused, Rejected) and refused.kind == UNKNOWN_SENDER


def test_the_directory_names_meters_by_name_prefix_and_address() -> None:
    assert DIRECTORY.by_name("M7").meter_id == "M7"  # type: ignore[union-attr]
    assert DIRECTORY.by_name("KFMM7").meter_id == "M7"  # type: ignore[union-attr]
    assert DIRECTORY.by_address("10.0.0.7").meter_id == "M7"  # type: ignore[union-attr]
    assert DIRECTORY.by_address("10.0.0.9") is None  # two meters there
    assert DIRECTORY.by_address("10.0.0.9", 18).meter_id == "A2"  # type: ignore[union-attr]
    assert "secret" not in repr(DIRECTORY.get("M7")).lower() or "hidden" in repr(
        DIRECTORY.get("M7")
    )


def test_a_push_is_mapped_through_its_object_list() -> None:
    setup = "0.4.25.9.0.255"
    objects = [
        PushObject(40, setup, 1),
        PushObject(1, "0.0.42.0.0.255", 2),
        PushObject(8, "0.0.1.0.0.255", 2),
        PushObject(3, "1.0.1.8.0.255", 2),
        PushObject(1, "0.0.96.11.2.255", 2),
        PushObject(1, "0.0.96.11.0.255", 2),
    ]
    at = T0 + dt.timedelta(minutes=5)
    body = Data.structure(
        [
            obis(setup),
            Data.octet_string(b"M7"),
            Data.octet_string(CosemDateTime.from_datetime(at).to_bytes()),
            Data.double_long_unsigned(42),
            Data.unsigned(62),
            Data.null(),
        ]
    )
    push = DataNotification(1, None, body)
    assert setup_of(push) == setup
    content = map_notification(push, objects)
    assert content.ts == at and content.name == "M7"
    assert content.readings == [("1.0.1.8.0.255", 42)]
    assert content.events == [("0.0.99.98.2.255", 62)]
    short = map_notification(push, objects[:3])
    assert short.problems and short.readings == []  # no inline pairs in this layout


def test_block_transfer_is_joined_before_the_push_is_opened() -> None:
    apdu = DataNotification(
        1,
        None,
        Data.structure(
            [
                obis("0.0.42.0.0.255"),
                Data.octet_string(b"A1"),
                obis("1.0.1.8.0.255"),
                Data.unsigned(9),
            ]
        ),
    ).to_bytes()
    half = len(apdu) // 2
    blocks = [
        GeneralBlockTransfer(False, False, 0, 1, 0, apdu[:half]).to_bytes(),
        GeneralBlockTransfer(True, False, 0, 2, 0, apdu[half:]).to_bytes(),
    ]
    handler = PushHandler(None, None, DIRECTORY)
    peer = Peer("192.0.2.1", "tcp")

    async def feed() -> list[object]:
        return [await handler.handle(InboundApdu(b, "wrapper", 1, 0x66), peer) for b in blocks]

    first, second = asyncio.run(feed())
    assert first is None and second is not None
    assert second.meter_id == "A1" and second.content.readings == [("1.0.1.8.0.255", 9)]


async def test_connections_over_the_limit_are_closed_at_once() -> None:
    from headend.listener.server import Listener

    listener = Listener(
        PushHandler(None, None, DIRECTORY), host="127.0.0.1", tcp_port=0, max_connections=1
    )
    task = asyncio.create_task(listener.run())
    await asyncio.wait_for(listener.ready(), 5)
    assert listener.tcp_port is not None
    try:
        first = await asyncio.open_connection("127.0.0.1", listener.tcp_port)
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.tcp_port)
        try:  # closed by the listener (an abort may arrive as a reset)
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionResetError:
            pass
        assert listener.refused_connections == 1 and listener.connections == 1
        writer.close()
        first[1].close()
    finally:
        listener.stop()
        await asyncio.wait_for(task, 5)
