"""HDLC CRC, addresses, frames and the frame reader, against real-meter vectors and fuzz."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import vector_by_id, vector_params

from cosem_objects.errors import DecodeError, ProtocolError
from drivers.hdlc.addresses import HdlcAddress, decode_address, encode_address
from drivers.hdlc.crc import crc16_x25, crc16_x25_bytes, crc16_x25_reference
from drivers.hdlc.frames import (
    BadFrame,
    FrameType,
    HdlcFrame,
    HdlcFrameReader,
    control_byte,
    decode_control,
    parse_frame,
)
from drivers.hdlc.parameters import HdlcParameters

FUZZ = settings(max_examples=200, deadline=None)


# -- CRC -----------------------------------------------------------------------------------
def test_crc_catalogue_check_value() -> None:
    assert crc16_x25(b"123456789") == 0x906E


def test_hcs_example_goes_low_byte_first() -> None:
    assert crc16_x25_bytes(bytes.fromhex("033F")) == bytes.fromhex("5BEC")


@FUZZ
@given(st.binary(max_size=600))
def test_c_backed_crc_matches_the_table_driven_reference(data: bytes) -> None:
    assert crc16_x25(data) == crc16_x25_reference(data)


def test_crc_of_frame_body_plus_its_fcs_is_the_x25_residue() -> None:
    body = bytes.fromhex("A00802232193")
    # The "good CRC" residue of CRC-16/X.25 (before the final XOR) is 0xF0B8.
    assert crc16_x25(body + crc16_x25_bytes(body)) ^ 0xFFFF == 0xF0B8


# -- addresses -----------------------------------------------------------------------------
@pytest.mark.parametrize(("sap", "wire"), [(16, "21"), (1, "03"), (2, "05"), (73, "93")])
def test_client_addresses(sap: int, wire: str) -> None:
    address = HdlcAddress.client(sap)
    assert encode_address(address).hex().upper() == wire
    assert decode_address(bytes.fromhex(wire)) == (address, 1)


@pytest.mark.parametrize(
    ("logical", "physical", "size", "wire"),
    [
        (1, None, 1, "03"),
        (1, 17, 2, "0223"),
        (1, 16, 2, "0221"),
        (1, 17, 4, "00020023"),
        (0x3FFF, 0x3FFF, 4, "FEFEFEFF"),
        (1, 1000 + 4321, 4, None),
        (0x41, 0x7F, 2, "82FF"),
    ],
)
def test_server_addresses(logical: int, physical: int | None, size: int, wire: str | None) -> None:
    address = HdlcAddress.server(logical, physical, size)
    encoded = encode_address(address)
    if wire is not None:
        assert encoded.hex().upper() == wire
    decoded, end = decode_address(encoded)
    assert (decoded.upper, decoded.lower, decoded.size, end) == (logical, physical, size, size)


def test_server_address_picks_the_smallest_size() -> None:
    assert HdlcAddress.server(1).size == 1
    assert HdlcAddress.server(1, 17).size == 2
    assert HdlcAddress.server(1, 5321).size == 4


@pytest.mark.parametrize("wire", ["0002", "000200", "0002000000", "00000000000001"])
def test_bad_address_lengths_are_decode_errors(wire: str) -> None:
    with pytest.raises(DecodeError):
        decode_address(bytes.fromhex(wire))


def test_address_values_compare_across_sizes() -> None:
    two = HdlcAddress.server(1, 17, 2)
    four = HdlcAddress.server(1, 17, 4)
    assert two.same_station(four)
    assert not two.same_station(HdlcAddress.server(1, 18))
    assert HdlcAddress.server(1).same_station(two)  # no physical part: any physical


@given(
    st.sampled_from([1, 2, 4]).flatmap(
        lambda size: st.tuples(
            st.just(size),
            st.integers(0, 0x7F if size < 4 else 0x3FFF),
            st.integers(0, 0x7F if size < 4 else 0x3FFF),
        )
    )
)
@FUZZ
def test_address_round_trip(case: tuple[int, int, int]) -> None:
    size, upper, lower = case
    address = HdlcAddress(upper, None if size == 1 else lower, size)
    wire = encode_address(address)
    assert len(wire) == size
    assert decode_address(wire + b"\x99") == (address, size)


# -- control byte --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("control", "expected"),
    [
        (0x10, (FrameType.I, True, 0, 0)),
        (0x32, (FrameType.I, True, 1, 1)),
        (0x54, (FrameType.I, True, 2, 2)),
        (0x51, (FrameType.RR, True, None, 2)),
        (0x15, (FrameType.RNR, True, None, 0)),
        (0x93, (FrameType.SNRM, True, None, None)),
        (0x83, (FrameType.SNRM, False, None, None)),
        (0x53, (FrameType.DISC, True, None, None)),
        (0x73, (FrameType.UA, True, None, None)),
        (0x1F, (FrameType.DM, True, None, None)),
        (0x97, (FrameType.FRMR, True, None, None)),
        (0x13, (FrameType.UI, True, None, None)),
    ],
)
def test_control_bytes(control: int, expected: tuple[Any, ...]) -> None:
    assert decode_control(control) == expected
    frame_type, pf, ns, nr = expected
    assert control_byte(frame_type, pf, ns or 0, nr or 0) == control


@pytest.mark.parametrize("control", [0x19, 0x1D, 0x2F, 0xFF])
def test_unsupported_control_bytes_are_decode_errors(control: int) -> None:
    with pytest.raises(DecodeError):
        decode_control(control)


# -- real-meter vectors --------------------------------------------------------------------
def _check_hdlc(frame: HdlcFrame, raw: bytes, expect: dict[str, Any]) -> None:
    actual: dict[str, Any] = {
        "format_type": raw[1] >> 4,
        "segmented": frame.segmented,
        "length": frame.length,
        "dst": {
            "hex": raw[3 : 3 + frame.dst.size].hex().upper(),
            "upper": frame.dst.upper,
            "lower": frame.dst.lower,
        },
        "src": {
            "hex": raw[3 + frame.dst.size : 3 + frame.dst.size + frame.src.size].hex().upper(),
            "upper": frame.src.upper,
            "lower": frame.src.lower,
        },
        "control": frame.control,
        "frame_type": frame.frame_type.value,
        "poll_final": frame.poll_final,
        "send_seq": frame.send_seq,
        "recv_seq": frame.recv_seq,
        # parse_frame raises on a bad HCS/FCS, so a parsed frame passed both checks.
        "hcs_ok": True if frame.info else None,
        "fcs_ok": True,
        "info": frame.info.hex().upper() if frame.info else None,
        "llc": frame.llc.hex().upper() if frame.llc else None,
    }
    for key, value in expect.items():
        assert actual[key] == value, key


@pytest.mark.parametrize("vector", vector_params("hdlc"))
def test_hdlc_vectors(vector: dict[str, Any]) -> None:
    hexes = vector["hex"] if isinstance(vector["hex"], list) else [vector["hex"]]
    expects = (
        [f["hdlc"] for f in vector["expect"]["frames"]]
        if "frames" in vector["expect"]
        else [vector["expect"]["hdlc"]]
    )
    assert len(hexes) == len(expects)
    for hex_frame, expect in zip(hexes, expects, strict=True):
        raw = bytes.fromhex(hex_frame)
        frame = parse_frame(raw)
        _check_hdlc(frame, raw, expect)
        assert frame.to_bytes() == raw  # round trip, byte for byte
        rebuilt = HdlcFrame.make(
            frame.frame_type,
            frame.dst,
            frame.src,
            poll_final=frame.poll_final,
            send_seq=frame.send_seq or 0,
            recv_seq=frame.recv_seq or 0,
            segmented=frame.segmented,
            info=frame.info,
        )
        assert rebuilt.to_bytes() == raw
    if "hdlc_parameters" in vector["expect"]:
        params = HdlcParameters.from_bytes(parse_frame(bytes.fromhex(hexes[0])).info)
        expect_params = vector["expect"]["hdlc_parameters"]
        assert {
            "max_info_tx": params.max_info_tx,
            "max_info_rx": params.max_info_rx,
            "window_tx": params.window_tx,
            "window_rx": params.window_rx,
        } == expect_params
    if "apdu_hex" in vector["expect"] and len(hexes) == 1:
        frame = parse_frame(bytes.fromhex(hexes[0]))
        apdu = frame.info[3:] if frame.llc else frame.info
        assert apdu.hex().upper() == vector["expect"]["apdu_hex"]


def test_reader_finds_every_frame_of_a_multi_frame_push() -> None:
    vector = vector_by_id("v8-lg-e450-plain-gbt")
    stream = b"".join(bytes.fromhex(h) for h in vector["hex"])
    reader = HdlcFrameReader()
    frames = [f for i in range(len(stream)) for f in reader.feed(stream[i : i + 1])]
    assert [f.to_bytes().hex().upper() for f in frames] == vector["hex"]
    assert reader.bad_frames == 0


def test_reader_does_not_split_on_a_flag_inside_the_information_field() -> None:
    frames = [bytes.fromhex(vector_by_id(f"v8-lg-e450-enc-frame{n}")["hex"]) for n in (1, 2, 3)]
    assert b"\x7e" in frames[2][1:-1]
    reader = HdlcFrameReader()
    out = reader.feed(b"".join(frames))
    assert [f.to_bytes() for f in out] == frames
    assert reader.bad_frames == 0


# -- frame reader behaviour ------------------------------------------------------------------
SNRM = bytes.fromhex("7EA00802232193BD647E")
UA = bytes.fromhex("7EA01F21022373E6C781801205019A06019A070400000001080400000001CCA27E")


def test_reader_skips_garbage_and_shared_flags() -> None:
    reader = HdlcFrameReader()
    # Garbage, two frames sharing one flag, idle flags.
    stream = b"\x00\x13garbage" + SNRM[:-1] + UA + b"\x7e\x7e\x7e"
    frames = reader.feed(stream)
    assert [f.frame_type for f in frames] == [FrameType.SNRM, FrameType.UA]
    assert reader.buffered <= 1


def test_reader_reports_a_corrupted_frame_and_keeps_going() -> None:
    corrupted = bytearray(UA)
    corrupted[20] ^= 0x01  # inside the information field: FCS fails
    reader = HdlcFrameReader()
    out = reader.feed_events(bytes(corrupted) + SNRM)
    assert isinstance(out[0], BadFrame)
    assert "FCS" in out[0].reason
    assert [item.frame_type for item in out if isinstance(item, HdlcFrame)] == [FrameType.SNRM]
    assert reader.bad_frames >= 1


def test_false_start_claiming_a_long_frame_does_not_swallow_the_next_frame() -> None:
    reader = HdlcFrameReader()
    # A flag and a header that claims 2000 bytes (bad HCS), then a real frame at once.
    false_start = bytes.fromhex("7EA7D0032110") + b"\x00\x00"
    frames = reader.feed(false_start + UA)
    assert [f.frame_type for f in frames] == [FrameType.UA]


def test_reader_memory_stays_bounded_under_a_flood() -> None:
    reader = HdlcFrameReader()
    import random

    rng = random.Random(7)
    for _ in range(200):
        reader.feed(bytes(rng.getrandbits(8) for _ in range(512)))
        assert reader.buffered <= 2048 + 1
    assert reader.feed(UA)[-1].frame_type is FrameType.UA


def test_parse_frame_checks() -> None:
    bad_hcs = bytearray(UA)
    bad_hcs[7] ^= 0xFF
    with pytest.raises(DecodeError, match="HCS"):
        parse_frame(bytes(bad_hcs))
    bad_fcs = bytearray(SNRM)
    bad_fcs[-2] ^= 0xFF
    with pytest.raises(DecodeError, match="FCS"):
        parse_frame(bytes(bad_fcs))
    with pytest.raises(DecodeError, match="length"):
        parse_frame(SNRM[:-2] + b"\x00" + SNRM[-2:])
    with pytest.raises(DecodeError, match="format type"):
        parse_frame(b"\x7e\xb0" + SNRM[2:])


# -- property and fuzz tests -----------------------------------------------------------------
addresses = st.sampled_from([1, 2, 4]).flatmap(
    lambda size: st.builds(
        HdlcAddress,
        st.integers(0, 0x7F if size < 4 else 0x3FFF),
        st.just(None) if size == 1 else st.integers(0, 0x7F if size < 4 else 0x3FFF),
        st.just(size),
    )
)
frames = st.builds(
    lambda kind, dst, src, pf, ns, nr, seg, info: HdlcFrame.make(
        kind, dst, src, poll_final=pf, send_seq=ns, recv_seq=nr, segmented=seg, info=info
    ),
    st.sampled_from(list(FrameType)),
    addresses,
    addresses,
    st.booleans(),
    st.integers(0, 7),
    st.integers(0, 7),
    st.booleans(),
    st.binary(max_size=300),
)


@given(frames)
@FUZZ
def test_frame_round_trip(frame: HdlcFrame) -> None:
    raw = frame.to_bytes()
    assert parse_frame(raw) == frame
    assert HdlcFrameReader().feed(raw) == [frame]


@given(st.lists(frames, min_size=1, max_size=5), st.data())
@FUZZ
def test_reader_reassembles_frames_from_any_chunking(
    frame_list: list[HdlcFrame], data: st.DataObject
) -> None:
    stream = b"".join(f.to_bytes() for f in frame_list)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = HdlcFrameReader()
    out: list[HdlcFrame] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        out += reader.feed(stream[previous:cut])
        previous = cut
    assert out == frame_list


@given(st.binary(max_size=200).map(lambda b: b.replace(b"\x7e", b"")), frames)
@FUZZ
def test_reader_finds_a_frame_after_garbage(garbage: bytes, frame: HdlcFrame) -> None:
    assert HdlcFrameReader().feed(garbage + frame.to_bytes()) == [frame]


@given(st.binary(max_size=400))
@FUZZ
def test_parse_frame_fuzz(raw: bytes) -> None:
    for candidate in (raw, b"\x7e" + raw + b"\x7e", b"\x7e\xa0" + bytes([len(raw) + 2]) + raw):
        try:
            parse_frame(candidate)
        except ProtocolError:
            pass


@given(st.lists(st.binary(max_size=300), max_size=8))
@FUZZ
def test_reader_fuzz(chunks: list[bytes]) -> None:
    reader = HdlcFrameReader()
    for chunk in chunks:
        for item in reader.feed_events(b"\x7e\xa0" + chunk):
            assert isinstance(item, HdlcFrame | BadFrame)
        assert reader.buffered <= 2048 + 302


@given(frames, st.integers(0, 10_000), st.integers(0, 7))
@FUZZ
def test_any_single_bit_flip_is_caught_or_harmless(frame: HdlcFrame, pos: int, bit: int) -> None:
    raw = bytearray(frame.to_bytes())
    index = 1 + pos % (len(raw) - 2)
    raw[index] ^= 1 << bit
    try:
        parsed = parse_frame(bytes(raw))
    except DecodeError:
        return
    # CRC-16 detects every single-bit error; only a change it does not cover may pass.
    assert parsed == frame
