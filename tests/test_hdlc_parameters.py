"""SNRM/UA parameter negotiation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosem_objects.errors import DecodeError, ProtocolError
from drivers.hdlc.parameters import MAX_INFO_LIMIT, HdlcParameters

FUZZ = settings(max_examples=300, deadline=None)


def test_pwitab_ua_field() -> None:
    info = bytes.fromhex("81801205019A06019A070400000001080400000001")
    params = HdlcParameters.from_bytes(info)
    assert params == HdlcParameters(154, 154, 1, 1)
    assert params.to_bytes() == info


def test_jdlms_two_byte_values() -> None:
    info = bytes.fromhex("8180140502008006020080070400000001080400000001")
    assert HdlcParameters.from_bytes(info) == HdlcParameters(128, 128, 1, 1)


def test_empty_field_means_defaults_and_missing_values_keep_them() -> None:
    assert HdlcParameters.from_bytes(b"") == HdlcParameters(128, 128, 1, 1)
    only_rx = bytes.fromhex("818004060200FF")
    assert HdlcParameters.from_bytes(only_rx) == HdlcParameters(128, 255, 1, 1)


def test_unknown_parameters_are_skipped() -> None:
    info = bytes.fromhex("818009" + "0901AA" + "050140" + "0700")
    # 07 00: zero-length value of a known id -> rejected
    with pytest.raises(DecodeError):
        HdlcParameters.from_bytes(info)
    info = bytes.fromhex("818006" + "0901AA" + "050140")
    assert HdlcParameters.from_bytes(info) == HdlcParameters(64, 128, 1, 1)


@pytest.mark.parametrize(
    "hexfield",
    ["80", "8180", "818005050100", "81800505020080", "818003050400", "8180020501", "828003050101"],
)
def test_malformed_fields(hexfield: str) -> None:
    with pytest.raises(DecodeError):
        HdlcParameters.from_bytes(bytes.fromhex(hexfield))


def test_negotiation_swaps_and_takes_minimum() -> None:
    ours = HdlcParameters(max_info_tx=1024, max_info_rx=256, window_tx=7, window_rx=1)
    peer = HdlcParameters(max_info_tx=512, max_info_rx=128, window_tx=1, window_rx=3)
    # Our TX is capped by the peer's RX and vice versa.
    assert ours.negotiate(peer) == HdlcParameters(128, 256, 3, 1)


def test_negotiation_caps_to_what_frames_and_sequence_numbers_allow() -> None:
    huge = HdlcParameters(0xFFFFFFFF, 0xFFFFFFFF, 100, 100)
    assert huge.negotiate(huge) == HdlcParameters(MAX_INFO_LIMIT, MAX_INFO_LIMIT, 7, 7)


values = st.integers(1, 0xFFFFFFFF)


@given(values, values, values, values)
@FUZZ
def test_round_trip(tx: int, rx: int, wtx: int, wrx: int) -> None:
    params = HdlcParameters(tx, rx, wtx, wrx)
    assert HdlcParameters.from_bytes(params.to_bytes()) == params


@given(st.binary(max_size=40))
@FUZZ
def test_fuzz(info: bytes) -> None:
    for candidate in (info, b"\x81\x80" + bytes([len(info)]) + info):
        try:
            params = HdlcParameters.from_bytes(candidate)
        except ProtocolError:
            continue
        assert params.max_info_tx >= 1 and params.window_rx >= 1
