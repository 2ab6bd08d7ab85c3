"""IEC 62056-47 wrapper: header codec, stream reassembly, bounds."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import vector_params

from cosem_objects.errors import DecodeError, ProtocolError
from drivers.wrapper import (
    WrapperFrame,
    WrapperHeader,
    WrapperReader,
    encode_wrapper,
    parse_wrapper,
)

FUZZ = settings(max_examples=300, deadline=None)
AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F040000301DFFFF")


@pytest.mark.parametrize("vector", vector_params("wrapper"))
def test_wrapper_vectors(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    frame = parse_wrapper(raw)
    expect = vector["expect"]["wrapper"]
    assert {
        "version": frame.version,
        "src_wport": frame.src_wport,
        "dst_wport": frame.dst_wport,
        "length": frame.length,
    } == expect
    assert frame.apdu.hex().upper() == vector["expect"]["apdu_hex"]
    assert frame.to_bytes() == raw
    assert WrapperReader().feed(raw) == [frame]


def test_aarq_header_as_in_the_notes() -> None:
    wire = encode_wrapper(0x10, 0x01, AARQ)
    assert wire[:8].hex().upper() == "000100100001001F"
    assert wire[8:] == AARQ
    assert WrapperHeader.from_bytes(wire) == WrapperHeader(1, 0x10, 1, 0x1F)


def test_reader_byte_by_byte_and_back_to_back() -> None:
    stream = (
        encode_wrapper(1, 16, b"\x61\x29")
        + encode_wrapper(1, 16, b"")
        + encode_wrapper(1, 16, AARQ)
    )
    reader = WrapperReader()
    frames = [f for i in range(len(stream)) for f in reader.feed(stream[i : i + 1])]
    assert [f.apdu for f in frames] == [b"\x61\x29", b"", AARQ]
    assert reader.buffered == 0


def test_wrong_version_is_a_decode_error_and_the_stream_stays_failed() -> None:
    reader = WrapperReader()
    with pytest.raises(DecodeError, match="version"):
        reader.feed(b"\x00\x02\x00\x10\x00\x01\x00\x01\xc0")
    with pytest.raises(DecodeError):
        reader.feed(encode_wrapper(1, 16, b"\xc4"))


def test_apdu_length_is_bounded() -> None:
    reader = WrapperReader(max_apdu_length=1000)
    with pytest.raises(DecodeError, match="exceeds"):
        reader.feed(b"\x00\x01\x00\x01\x00\x10\x03\xe9")  # 1001 bytes announced
    assert reader.buffered == 0


def test_parse_wrapper_checks_length() -> None:
    with pytest.raises(DecodeError):
        parse_wrapper(encode_wrapper(1, 16, b"\xc4\x01")[:-1])
    with pytest.raises(DecodeError):
        parse_wrapper(b"\x00\x01\x00")


def test_encode_rejects_what_cannot_be_framed() -> None:
    with pytest.raises(ValueError):
        encode_wrapper(0x10000, 1, b"")
    with pytest.raises(ValueError):
        encode_wrapper(1, 1, bytes(0x10000))


frames = st.builds(
    WrapperFrame,
    st.just(1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=600),
)


@given(st.lists(frames, max_size=6), st.data())
@FUZZ
def test_round_trip_over_any_chunking(frame_list: list[WrapperFrame], data: st.DataObject) -> None:
    stream = b"".join(f.to_bytes() for f in frame_list)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = WrapperReader()
    out: list[WrapperFrame] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        out += reader.feed(stream[previous:cut])
        previous = cut
    assert out == frame_list
    for frame in frame_list:
        assert parse_wrapper(frame.to_bytes()) == frame


@given(st.lists(st.binary(max_size=100), max_size=6), st.integers(0, 0xFFFF))
@FUZZ
def test_reader_fuzz(chunks: list[bytes], limit: int) -> None:
    reader = WrapperReader(max_apdu_length=limit)
    for chunk in chunks:
        try:
            for frame in reader.feed(chunk):
                assert frame.version == 1 and frame.length <= limit
        except ProtocolError:
            return
        assert reader.buffered <= 8 + limit + 100
