"""The listener's decode path on hostile input (hypothesis): framing, unwrapping, mapping and
the whole push handler take any bytes, in any chunking, without raising, and keep their
memory bounded; well-formed pushes with any body still come out as pushes."""

from __future__ import annotations

import asyncio

from axdr_strategies import data_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosem_objects.apdu.notifications import DataNotification
from cosem_objects.data import Data
from cosem_objects.security import SecurityKeys, wrap_general_glo
from drivers.wrapper import encode_wrapper
from headend.listener.directory import Directory
from headend.listener.framing import FramingError, InboundApdu, StreamFraming, datagram_apdu
from headend.listener.handler import Peer, PushHandler
from headend.listener.mapping import PushObject, map_notification
from headend.listener.unwrap import Opened, Rejected, open_apdu
from headend.meters.inventory import MeterRecord
from headend.meters.secrets import Secret

TITLE = b"SIM\x00\x00\x00\x00\x01"
KEYS = SecurityKeys(bytes(range(16)), bytes(range(16, 32)))
RECORD = MeterRecord(
    meter_id="M1",
    host="127.0.0.1",
    port=4059,
    transport="wrapper",
    client_sap=1,
    server_logical=1,
    server_physical=None,
    security="hls-gmac",
    serial_port=None,
    baud=None,
    line="tcp:127.0.0.1:4059",
    system_title=TITLE,
    enc_key=Secret(KEYS.encryption_key),
    auth_key=Secret(bytes(range(16, 32))),
)
DIRECTORY = Directory([RECORD])
MAX_APDU = 512
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that start like the things the listener meets, then anything.
prefixes = st.sampled_from(
    [
        b"",
        b"\x00\x01",
        b"\x00\x01\x00\x01\x00\x66",
        b"\x7e\xa0",
        b"\x7e\xa8",
        b"\x0f",
        b"\xc2",
        b"\xdb\x08" + TITLE,
        b"\xdc\x08" + TITLE,
        b"\xca",
        b"\xe0\x80\x00\x01\x00\x00",
    ]
)
hostile = st.builds(lambda p, b: p + b, prefixes, st.binary(max_size=600))


@FUZZ
@given(st.lists(hostile, max_size=6), st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_stream_framing_takes_any_bytes_in_any_chunks(chunks: list[bytes], cuts: list[int]) -> None:
    framing = StreamFraming(MAX_APDU)
    data = b"".join(chunks)
    pos = 0
    i = 0
    while pos < len(data):
        size = cuts[i % len(cuts)]
        for event in framing.feed(data[pos : pos + size]):
            assert isinstance(event, InboundApdu | FramingError)
            if isinstance(event, InboundApdu):
                assert len(event.apdu) <= MAX_APDU + 16
        assert framing.buffered <= 4 * (MAX_APDU + 16) + 64
        pos += size
        i += 1
    framing.close()


@FUZZ
@given(hostile)
def test_datagrams_and_apdus_never_raise(data: bytes) -> None:
    assert isinstance(datagram_apdu(data, MAX_APDU), InboundApdu | FramingError)
    opened = open_apdu(data, DIRECTORY)
    assert isinstance(opened, Opened | Rejected)
    if isinstance(opened, Opened):
        map_notification(opened.notification, None)


objects = st.lists(
    st.builds(
        PushObject,
        st.integers(0, 100),
        st.sampled_from(
            [
                "0.0.1.0.0.255",
                "0.0.42.0.0.255",
                "1.0.1.8.0.255",
                "0.0.96.11.2.255",
                "0.0.25.9.0.255",
            ]
        ),
        st.integers(0, 5),
    ),
    max_size=6,
)


@FUZZ
@given(data_values, objects, st.integers(0, 0xFFFFFFFF))
def test_any_push_body_maps_and_a_ciphered_one_opens(
    body: Data, listed: list[PushObject], ic: int
) -> None:
    plain = DataNotification(1, None, body).to_bytes()
    map_notification(DataNotification.from_bytes(plain), listed)
    opened = open_apdu(wrap_general_glo(plain, 0x30, TITLE, ic, KEYS), DIRECTORY)
    assert isinstance(opened, Opened) and opened.meter is not None
    assert opened.meter.meter_id == "M1" and opened.invocation_counter == ic


@FUZZ
@given(st.lists(hostile, max_size=5))
def test_the_push_handler_survives_anything(apdus: list[bytes]) -> None:
    handler = PushHandler(None, None, DIRECTORY)
    peer = Peer("192.0.2.1", "tcp")

    async def feed() -> None:
        for apdu in apdus:
            await handler.handle(InboundApdu(encode_wrapper(1, 1, apdu)[8:], "wrapper", 1, 1), peer)

    asyncio.run(feed())
    assert sum(handler.guard.counts.values()) + handler.accepted <= len(apdus)
