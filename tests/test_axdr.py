"""A-XDR Data codec (cosem_objects.axdr): round trips, exact bytes, bounded decoding of junk, and
the dlms-cosem 21.3.2 defects that are the reason we keep our own codec."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest
from axdr_strategies import (
    compact_arrays,
    data_values,
    date_times,
    simple_data,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosem_objects.axdr import (
    decode_data,
    decode_data_all,
    decode_length,
    encode_data,
    encode_length,
)
from cosem_objects.data import CompactArray, Data, DataType
from cosem_objects.dates import CosemDateTime
from cosem_objects.errors import DecodeError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _round_trip(value: Data) -> Data:
    encoded = encode_data(value)
    decoded, end = decode_data(encoded)
    assert end == len(encoded)
    return decoded


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind",
    [t for t in DataType if t not in (DataType.ARRAY, DataType.STRUCTURE, DataType.COMPACT_ARRAY)],
    ids=lambda t: t.type_name,
)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_simple_type_round_trips(kind: DataType, data: st.DataObject) -> None:
    value = data.draw(simple_data(kind))
    decoded = _round_trip(value)
    assert decoded == value
    assert decoded.type is kind


@FUZZ
@given(data_values)
def test_nested_data_round_trips(value: Data) -> None:
    assert _round_trip(value) == value
    # Encoding is canonical: the decoded value encodes to the same bytes.
    assert encode_data(_round_trip(value)) == encode_data(value)


@settings(max_examples=150, deadline=None)
@given(compact_arrays())
def test_compact_array_of_simple_elements_round_trips(value: Data) -> None:
    assert _round_trip(value) == value


def test_compact_array_of_structures_round_trips() -> None:
    description = (DataType.STRUCTURE, ((DataType.UNSIGNED,), (DataType.LONG_UNSIGNED,)))
    elements = (
        Data.structure([Data.unsigned(1), Data.long_unsigned(2)]),
        Data.structure([Data.unsigned(3), Data.long_unsigned(4)]),
    )
    value = Data(DataType.COMPACT_ARRAY, CompactArray(description, elements))
    # 13 | 02 02 11 12 | contents length 6 | 01 0002 03 0004
    assert encode_data(value) == bytes.fromhex("130202111206010002030004")
    assert _round_trip(value) == value


def test_compact_array_of_structures_decodes_per_description() -> None:
    """The decoding side of the case above (Gurux layout): no counts inside the contents."""
    decoded = decode_data_all(bytes.fromhex("130202111206010002030004"))
    assert decoded.type is DataType.COMPACT_ARRAY
    assert decoded.to_python() == [[1, 2], [3, 4]]


def test_visible_string_with_high_bytes_round_trips() -> None:
    raw = bytes.fromhex("0A02E9E9")
    assert encode_data(decode_data_all(raw)) == raw


@settings(max_examples=200, deadline=None)
@given(date_times)
def test_date_time_with_wildcards_round_trips(moment: CosemDateTime) -> None:
    value = Data.date_time(moment)
    encoded = encode_data(value)
    assert encoded[0] == 0x19 and len(encoded) == 13
    assert decode_data_all(encoded) == value


@pytest.mark.parametrize(
    ("size", "prefix"),
    [
        (0, "00"),
        (127, "7F"),
        (128, "8180"),
        (255, "81FF"),
        (256, "820100"),
        (65535, "82FFFF"),
        (65536, "8400010000"),
    ],
)
def test_long_form_lengths(size: int, prefix: str) -> None:
    assert encode_length(size).hex().upper() == prefix
    assert decode_length(bytes.fromhex(prefix), 0) == (size, len(prefix) // 2)
    value = Data.octet_string(bytes(range(256)) * (size // 256) + bytes(size % 256))
    encoded = encode_data(value)
    assert encoded[: 1 + len(prefix) // 2].hex().upper() == "09" + prefix
    assert decode_data_all(encoded) == value


def test_long_form_lengths_for_arrays_and_strings() -> None:
    structure = Data.structure([Data.unsigned(i % 256) for i in range(300)])
    assert encode_data(structure)[:4] == bytes.fromhex("0282012C")
    assert decode_data_all(encode_data(structure)) == structure
    text = Data.visible_string("x" * 200)
    assert encode_data(text)[:3] == bytes.fromhex("0A81C8")
    assert decode_data_all(encode_data(text)) == text


# -- exact bytes -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "hex_"),
    [
        (Data.null(), "00"),
        (Data.boolean(True), "03FF"),
        (Data.boolean(False), "0300"),
        (Data.integer(-3), "0FFD"),
        (Data.long(120), "100078"),
        (Data.unsigned(0), "1100"),
        (Data.long_unsigned(941), "1203AD"),
        (Data.double_long(-2), "05FFFFFFFE"),
        (Data.double_long_unsigned(5009), "0600001391"),
        (Data.long64(-1), "14FFFFFFFFFFFFFFFF"),
        (Data.long64_unsigned(2**64 - 1), "15FFFFFFFFFFFFFFFF"),
        (Data.enum(30), "161E"),
        (Data.float32(1.5), "173FC00000"),
        (Data.float64(-2.0), "18C000000000000000"),
        (Data.octet_string(bytes.fromhex("0000010000FF")), "09060000010000FF"),
        (Data.visible_string("V0411"), "0A055630343131"),
        (Data.utf8_string("é"), "0C02C3A9"),
        (Data.bit_string("101"), "0403A0"),
        (Data(DataType.DONT_CARE), "FF"),
        # scaler_unit of a register: {scaler -3, unit 30 (Wh)}
        (Data.structure([Data.integer(-3), Data.enum(30)]), "02020FFD161E"),
        (
            Data.date_time(CosemDateTime.from_bytes(bytes.fromhex("07D20C04030A060BFF007800"))),
            "1907D20C04030A060BFF007800",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else v.type.type_name,
)
def test_known_encodings(value: Data, hex_: str) -> None:
    assert encode_data(value).hex().upper() == hex_
    assert decode_data_all(bytes.fromhex(hex_)) == value


def test_array_of_1440_elements_uses_82_05A0() -> None:
    """pwitab/dlms-cosem test_get.py: a profile buffer of 1440 entries (`01 82 05 A0`)."""
    entry = Data.structure(
        [Data.octet_string(b"\x07\xe3" + bytes(10)), Data.double_long_unsigned(7)]
    )
    value = Data.array([entry] * 1440)
    encoded = encode_data(value)
    assert encoded[:4] == bytes.fromhex("018205A0")
    decoded = decode_data_all(encoded)
    assert len(decoded.value) == 1440
    assert decoded == value


def test_kaifa_scaler_unit_decodes() -> None:
    value = decode_data_all(bytes.fromhex("02020FFF1623"))
    assert value.to_python() == [-1, 35]


# -- hostile input -----------------------------------------------------------------------------
TRUNCATIONS = [
    "06000013",  # double-long-unsigned with 3 of 4 bytes
    "0905AABB",  # octet-string shorter than announced
    "0203110111",  # structure of 3 with 2 elements
    "018205A0",  # array of 1440, no elements
    "09820100",  # long-form length, no content
    "0982",  # long-form length cut short
    "0985000000000001",  # 5-byte length form: not A-XDR
    "1907E3",  # date-time cut short
    "13",  # compact-array without description
    "1301",  # compact-array array description without count
    "21",  # unknown tag
    "",
]


@pytest.mark.parametrize("hex_", TRUNCATIONS)
def test_truncated_or_invalid_input_is_a_decode_error(hex_: str) -> None:
    with pytest.raises(DecodeError):
        decode_data_all(bytes.fromhex(hex_))


def test_trailing_bytes_are_rejected_by_decode_data_all() -> None:
    with pytest.raises(DecodeError):
        decode_data_all(bytes.fromhex("110100"))
    assert decode_data(bytes.fromhex("110100")) == (Data.unsigned(1), 2)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(DecodeError):
        decode_data_all(bytes.fromhex("0201" * 200 + "00"))


def test_huge_counts_fail_fast() -> None:
    # 4 billion elements announced in 7 bytes: refused before any allocation.
    with pytest.raises(DecodeError):
        decode_data_all(bytes.fromhex("0184FFFFFFFF00"))


_TAGS = [0, 1, 2, 3, 4, 5, 6, 9, 10, 12, 13, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27]
# Random bytes, with a bias towards real tags so that the decoder gets past the first byte.
junk = st.lists(st.one_of(st.sampled_from(_TAGS), st.integers(0, 255)), max_size=60).map(bytes)


@FUZZ
@given(junk | st.binary(max_size=80))
def test_random_bytes_give_data_or_decode_error(raw: bytes) -> None:
    try:
        value, end = decode_data(raw)
    except DecodeError:
        return
    assert 0 < end <= len(raw)
    # Whatever decodes, re-encodes to a stable canonical form.
    canonical = encode_data(value)
    assert encode_data(decode_data_all(canonical)) == canonical


@FUZZ
@given(data_values, st.data())
def test_truncated_valid_encodings_fail_cleanly(value: Data, data: st.DataObject) -> None:
    """A-XDR is prefix-free: no strict prefix of an encoding is itself a complete value."""
    encoded = encode_data(value)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DecodeError):
        decode_data_all(encoded[:cut])


# -- dlms-cosem 21.3.2 -------------------------------------------------------------------------
_LOOP_PROBE = textwrap.dedent(
    """
    import resource, threading, os
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    from dlms_cosem import dlms_data
    parser = dlms_data.DlmsDataParser()
    worker = threading.Thread(target=parser.parse, args=(bytes.fromhex("060000"),), daemon=True)
    worker.start()
    worker.join(0.3)
    print(worker.is_alive(), len(parser.data), parser.pointer, len(parser.buffer), flush=True)
    os._exit(0)
    """
)


def test_dlms_cosem_defects() -> None:
    """What dlms-cosem 21.3.2 (our pinned, MIT-licensed version) gets wrong, observed here.

    Each assertion states the behaviour actually seen, next to what our codec does."""
    assert importlib.metadata.version("dlms-cosem") == "21.3.2"
    from dlms_cosem import dlms_data
    from dlms_cosem.protocol.xdlms import get
    from dlms_cosem.protocol.xdlms.invoke_id_and_priority import InvokeIdAndPriority

    # 1. Lengths over 127 are written in one byte: a 200-byte octet string gets length C8,
    #    which an A-XDR reader takes as a long form announcing 0x48 length bytes.
    theirs = dlms_data.OctetStringData(bytes(200)).to_bytes()
    assert theirs[:2] == bytes.fromhex("09C8")
    with pytest.raises(DecodeError):
        decode_data_all(theirs)
    assert encode_data(Data.octet_string(bytes(200)))[:3] == bytes.fromhex("0981C8")
    #    ... and over 255 it cannot encode at all.
    with pytest.raises(ValueError, match="byte must be in range"):
        dlms_data.OctetStringData(bytes(300)).to_bytes()

    # 2. Encoders missing: null-data, boolean, date-time raise; an array cannot be encoded
    #    at all (it appends a bytes object to a bytearray).
    for missing in (
        dlms_data.NullData(None),
        dlms_data.BooleanData(True),
        dlms_data.DateTimeData(None),
    ):
        with pytest.raises(NotImplementedError):
            missing.to_bytes()
    with pytest.raises(TypeError):
        dlms_data.DataArray([dlms_data.UnsignedIntegerData(1)]).to_bytes()
    assert encode_data(Data.array([Data.unsigned(1)])) == bytes.fromhex("01011101")

    # 3. GetResponseNormal.to_bytes raises (bytearray.append of a bytes object).
    response = get.GetResponseNormal(b"\x11\x05", InvokeIdAndPriority(1, True, True))
    with pytest.raises(TypeError):
        response.to_bytes()

    # 4. The Data parser never ends on truncated input: "06 00 00" (a double-long-unsigned cut
    #    after 2 of its 4 bytes) moves the read pointer past the end, and the loop `while
    #    pointer != len(buffer)` then produces values from nothing for ever. Run it in a
    #    subprocess (memory-capped) and look at it after 0.3 s.
    probe = subprocess.run(
        [sys.executable, "-c", _LOOP_PROBE], capture_output=True, text=True, timeout=60
    )
    alive, produced, pointer, size = probe.stdout.split()
    assert alive == "True"  # still parsing 3 bytes after 0.3 s
    assert int(produced) > 1000  # thousands of values out of 3 bytes
    assert int(pointer) > int(size)
    with pytest.raises(DecodeError):
        decode_data_all(bytes.fromhex("060000"))
