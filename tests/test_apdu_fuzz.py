"""Hostile bytes into the xDLMS APDU decoders and the GBT reassembler: whatever comes in, the
only exception that escapes is DecodeError (a ProtocolError), and decoding stays bounded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from axdr_strategies import (
    attribute_descriptors,
    data_values,
    optional_access,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import vector_params

import cosem_objects.apdu as apdu_module
from cosem_objects.apdu import (
    DataNotification,
    GbtReassembler,
    GeneralBlockTransfer,
    GetRequestNormal,
    GetResponseNormal,
    SetRequestNormal,
)
from cosem_objects.decode import decode_apdu
from cosem_objects.errors import DecodeError, ProtocolError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

APDU_CLASSES = [
    getattr(apdu_module, name)
    for name in apdu_module.__all__
    if hasattr(getattr(apdu_module, name), "from_bytes")
    and hasattr(getattr(apdu_module, name), "to_json")
]
# First bytes that reach a real decoder (tag, and CHOICE where there is one).
HEADERS = [
    bytes((tag, choice))
    for tag, count in ((0xC0, 3), (0xC4, 3), (0xC1, 5), (0xC5, 5), (0xC3, 6), (0xC7, 4))
    for choice in range(1, count + 1)
] + [b"\x0f", b"\xc2", b"\xd8", b"\x0e", b"\xe0", b"\x60", b"\x61", b"\x62", b"\x63"]


def _seeds() -> list[bytes]:
    """Valid APDUs to mutate: every plain APDU in the vectors plus a few of our own."""
    seeds = [
        GetRequestNormal.from_bytes(bytes.fromhex("C001C1000100002B0100FF0200")).to_bytes(),
        bytes.fromhex("C402C1000000000100820004DEADBEEF"),
        bytes.fromhex("C403C10200060000139101" + "04"),
        bytes.fromhex("C104C102000301000108" + "00FF0200000800000100" + "00FF020002110110FFFF"),
        bytes.fromhex("C703C1030000" + "0B01010B" + "0001001107"),
        bytes.fromhex("C2010C07E6011801123A32FF80000000010000600B00FF02120001"),
        bytes.fromhex("D8010601020304"),
        bytes.fromhex("E0C000040000" + "03010203"),
    ]
    for param in vector_params():
        vector = param.values[0]
        if vector is None:
            continue
        expect = vector["expect"]
        for key in ("plaintext_hex", "apdu_hex", "reassembled_apdu_hex"):
            if isinstance(expect.get(key), str):
                seeds.append(bytes.fromhex(expect[key]))
        if vector["layer"] == "apdu":
            seeds.append(bytes.fromhex(vector["hex"]))
    return seeds


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid APDU with a few bytes flipped, inserted, deleted, or the tail cut off."""
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set-ff"]))
        position = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            raw.insert(position, draw(st.integers(0, 255)))
        elif kind == "delete" and raw:
            del raw[position]
        elif kind == "truncate":
            del raw[position:]
        elif kind == "set-ff" and raw:
            raw[position] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF]))
    return bytes(raw)


with_header = st.tuples(st.sampled_from(HEADERS), st.binary(max_size=120)).map(
    lambda parts: parts[0] + parts[1]
)
hostile = st.binary(max_size=200) | with_header | mutated()


def _decode_or_error(raw: bytes) -> Any:
    try:
        apdu = decode_apdu(raw)
    except DecodeError:
        return None
    # Whatever decodes can be shown and re-encoded, and its encoding decodes to it again.
    json.dumps(apdu.to_json())
    again = decode_apdu(apdu.to_bytes())
    assert again == apdu
    return apdu


@FUZZ
@given(hostile)
def test_decode_apdu_gives_apdu_or_decode_error(raw: bytes) -> None:
    _decode_or_error(raw)


@pytest.mark.parametrize("cls", APDU_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=hostile)
def test_every_from_bytes_raises_only_decode_error(cls: type, raw: bytes) -> None:
    """Called directly: decode_apdu's safety net around the decoders is not in the way."""
    try:
        cls.from_bytes(raw)  # type: ignore[attr-defined]
    except DecodeError:
        pass


@pytest.mark.parametrize(
    "hex_",
    [
        "C003C184FFFFFFFF",  # 4 billion attribute descriptors announced
        "C403C184FFFFFFFF00",  # 4 billion results
        "C504C184FFFFFFFF",
        "C703C184FFFFFFFF",
        "C303C184FFFFFFFF",
        "C402C10000000001008480000000",  # raw-data of 2 GiB announced
        "E0C0000100008480000000",  # GBT block of 2 GiB announced
        "0F0000000000" + "01" + "84FFFFFFFF",  # notification body: array of 4 billion
        "C401C100" + "0201" * 100 + "00",  # nesting deeper than the Data limit
    ],
)
def test_huge_announcements_fail_fast(hex_: str) -> None:
    with pytest.raises(DecodeError):
        decode_apdu(bytes.fromhex(hex_))


def test_unknown_tags_and_variants() -> None:
    for raw in (
        b"\x00",
        b"\xc0",
        b"\xc0\x04\xc1",
        b"\xc4\x00\xc1",
        b"\xc7\x05\xc1\x00\x00",
        b"\xdb\x00",
        b"\xff",
        b"",
    ):
        with pytest.raises(DecodeError):
            decode_apdu(raw)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=60), attribute_descriptors, optional_access, data_values)
def test_bytes_after_a_valid_apdu_are_refused(
    tail: bytes, attribute: Any, access: Any, value: Any
) -> None:
    for apdu in (
        GetRequestNormal(0xC1, attribute, access),
        SetRequestNormal(0xC1, attribute, access, value),
        GetResponseNormal(0xC1, value),
        DataNotification(1, None, value),
    ):
        raw = apdu.to_bytes()
        assert decode_apdu(raw) == apdu
        if tail:
            with pytest.raises(DecodeError):
                decode_apdu(raw + tail)


# -- the reassembler ---------------------------------------------------------------------------
blocks = st.builds(
    GeneralBlockTransfer,
    st.booleans(),
    st.booleans(),
    st.integers(0, 63),
    st.integers(0, 6) | st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=40),
)


@FUZZ
@given(st.lists(blocks, max_size=30), st.integers(16, 400))
def test_reassembler_raises_only_decode_error_and_stays_bounded(
    sequence: list[GeneralBlockTransfer], max_size: int
) -> None:
    reassembler = GbtReassembler(max_size=max_size)
    for block in sequence:
        try:
            whole = reassembler.feed(block)
        except DecodeError:
            assert not reassembler.in_progress  # an error leaves a clean state
            continue
        if whole is not None:
            assert len(whole) <= max_size
            assert not reassembler.in_progress


@FUZZ
@given(st.lists(hostile, max_size=10))
def test_reassembler_fed_from_hostile_frames(frames: list[bytes]) -> None:
    reassembler = GbtReassembler(max_size=256)
    for raw in frames:
        try:
            block = decode_apdu(raw)
            if isinstance(block, GeneralBlockTransfer):
                whole = reassembler.feed(block)
                if whole is not None:
                    _decode_or_error(whole)
        except ProtocolError as exc:
            assert isinstance(exc, DecodeError)
