"""A-XDR encoding of COSEM Data (IEC 61334-6 as used by DLMS), both directions.

Our own code rather than dlms-cosem's parser: dlms-cosem 21.3.2 encodes lengths over 127 in one
byte, lacks Null/Boolean/DateTime encoders and can loop forever on truncated input (see
tests/test_axdr.py::test_dlms_cosem_defects). Decoding is bounded: every element consumes at least
one byte, counts are checked against the bytes left, nesting depth is capped, so any input gives
a value or DecodeError in time and memory linear in its length."""

from __future__ import annotations

import struct

from cosem_objects.data import BitString, CompactArray, Data, DataType, TypeDescription
from cosem_objects.dates import CosemDate, CosemDateTime, CosemTime
from cosem_objects.errors import DecodeError

MAX_DEPTH = 32
_TYPES_BY_VALUE = {int(t): t for t in DataType}

# Fixed-width numeric types: struct format and byte size.
_FIXED: dict[DataType, struct.Struct] = {
    DataType.DOUBLE_LONG: struct.Struct(">i"),
    DataType.DOUBLE_LONG_UNSIGNED: struct.Struct(">I"),
    DataType.INTEGER: struct.Struct(">b"),
    DataType.LONG: struct.Struct(">h"),
    DataType.UNSIGNED: struct.Struct(">B"),
    DataType.LONG_UNSIGNED: struct.Struct(">H"),
    DataType.LONG64: struct.Struct(">q"),
    DataType.LONG64_UNSIGNED: struct.Struct(">Q"),
    DataType.ENUM: struct.Struct(">B"),
    DataType.FLOAT32: struct.Struct(">f"),
    DataType.FLOAT64: struct.Struct(">d"),
    DataType.BCD: struct.Struct(">b"),
}
_FIXED_BY_TAG = {int(t): (t, s) for t, s in _FIXED.items()}
_INT_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.DOUBLE_LONG: (-(2**31), 2**31 - 1),
    DataType.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
    DataType.INTEGER: (-128, 127),
    DataType.LONG: (-(2**15), 2**15 - 1),
    DataType.UNSIGNED: (0, 255),
    DataType.LONG_UNSIGNED: (0, 2**16 - 1),
    DataType.LONG64: (-(2**63), 2**63 - 1),
    DataType.LONG64_UNSIGNED: (0, 2**64 - 1),
    DataType.ENUM: (0, 255),
    DataType.BCD: (-128, 127),
}


# -- lengths -------------------------------------------------------------------------------
def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length <= 0xFF:
        return bytes((0x81, length))
    if length <= 0xFFFF:
        return bytes((0x82, length >> 8, length & 0xFF))
    if length <= 0xFFFFFFFF:
        return b"\x84" + length.to_bytes(4, "big")
    raise ValueError(f"length too large for A-XDR: {length}")


def decode_length(buf: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(buf):
        raise DecodeError("truncated: length expected")
    first = buf[offset]
    if first < 0x80:
        return first, offset + 1
    size = first & 0x7F
    if size == 0 or size > 4:
        raise DecodeError(f"unsupported length form 0x{first:02X}")
    end = offset + 1 + size
    if end > len(buf):
        raise DecodeError("truncated: long-form length")
    return int.from_bytes(buf[offset + 1 : end], "big"), end


# -- encoding ------------------------------------------------------------------------------
def encode_data(data: Data) -> bytes:
    out = bytearray()
    _encode_into(out, data, tagged=True)
    return bytes(out)


def _encode_into(out: bytearray, data: Data, tagged: bool) -> None:
    kind = data.type
    value = data.value
    if tagged:
        out.append(kind)
    fixed = _FIXED.get(kind)
    if fixed is not None:
        if kind in _INT_RANGES:
            low, high = _INT_RANGES[kind]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{kind.type_name} out of range: {value!r}")
        out += fixed.pack(value)
    elif kind is DataType.OCTET_STRING or kind is DataType.VISIBLE_STRING:
        raw = value if isinstance(value, bytes) else str(value).encode("latin-1")
        out += encode_length(len(raw))
        out += raw
    elif kind is DataType.UTF8_STRING:
        raw = str(value).encode("utf-8")
        out += encode_length(len(raw))
        out += raw
    elif kind is DataType.STRUCTURE or kind is DataType.ARRAY:
        if tagged:  # inside a compact array the type description fixes the counts
            out += encode_length(len(value))
        for element in value:
            _encode_into(out, element, tagged)
    elif kind is DataType.BOOLEAN:
        out.append(0xFF if value else 0x00)
    elif kind is DataType.NULL_DATA or kind is DataType.DONT_CARE:
        pass
    elif kind is DataType.BIT_STRING:
        out += encode_length(len(value.bits))
        out += value.to_bytes()
    elif kind in (DataType.DATE_TIME, DataType.DATE, DataType.TIME):
        out += value.to_bytes()
    elif kind is DataType.COMPACT_ARRAY:
        _encode_compact_array(out, value)
    else:  # pragma: no cover - DataType is closed
        raise ValueError(f"cannot encode {kind!r}")


def _encode_description(out: bytearray, description: TypeDescription) -> None:
    kind = description[0]
    out.append(kind)
    if kind == DataType.ARRAY:
        out += int(description[1]).to_bytes(2, "big")
        _encode_description(out, description[2])
    elif kind == DataType.STRUCTURE:
        out += encode_length(len(description[1]))
        for element in description[1]:
            _encode_description(out, element)


def _encode_compact_array(out: bytearray, value: CompactArray) -> None:
    _encode_description(out, value.description)
    contents = bytearray()
    for element in value.elements:
        _encode_into(contents, element, tagged=False)
    out += encode_length(len(contents))
    out += contents


# -- decoding ------------------------------------------------------------------------------
def decode_data(buf: bytes, offset: int = 0) -> tuple[Data, int]:
    """Decode one tagged Data value at offset; return it and the offset just after it."""
    try:
        return _decode(buf, offset, 0)
    except (IndexError, struct.error) as exc:  # defensive: every path checks bounds
        raise DecodeError(f"truncated A-XDR data: {exc}") from None


def decode_data_all(buf: bytes) -> Data:
    value, end = decode_data(buf, 0)
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} trailing bytes after A-XDR data")
    return value


def _need(buf: bytes, offset: int, size: int) -> None:
    if offset + size > len(buf):
        raise DecodeError(f"truncated A-XDR data: need {size} bytes at {offset}")


def _decode(buf: bytes, offset: int, depth: int) -> tuple[Data, int]:
    if offset >= len(buf):
        raise DecodeError("truncated A-XDR data: tag expected")
    tag = buf[offset]
    offset += 1
    fixed = _FIXED_BY_TAG.get(tag)
    if fixed is not None:
        kind, fmt = fixed
        end = offset + fmt.size
        if end > len(buf):
            raise DecodeError(f"truncated {kind.type_name}")
        return Data(kind, fmt.unpack_from(buf, offset)[0]), end
    if tag == 9 or tag == 10 or tag == 12:
        length, offset = decode_length(buf, offset)
        end = offset + length
        if end > len(buf):
            raise DecodeError("truncated string")
        raw = bytes(buf[offset:end])
        if tag == 9:
            return Data(DataType.OCTET_STRING, raw), end
        try:
            text = raw.decode("utf-8") if tag == 12 else raw.decode("latin-1")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid utf8-string: {exc}") from None
        return Data(_TYPES_BY_VALUE[tag], text), end
    if tag == 1 or tag == 2:
        if depth >= MAX_DEPTH:
            raise DecodeError("A-XDR nesting too deep")
        count, offset = decode_length(buf, offset)
        if count > len(buf) - offset:
            raise DecodeError(f"element count {count} exceeds the bytes left")
        elements = []
        for _ in range(count):
            element, offset = _decode(buf, offset, depth + 1)
            elements.append(element)
        return Data(DataType.ARRAY if tag == 1 else DataType.STRUCTURE, tuple(elements)), offset
    if tag == 3:
        _need(buf, offset, 1)
        return Data(DataType.BOOLEAN, buf[offset] != 0), offset + 1
    if tag == 0:
        return Data.null(), offset
    if tag == 255:
        return Data(DataType.DONT_CARE, None), offset
    if tag == 25 or tag == 26 or tag == 27:
        size = 12 if tag == 25 else (5 if tag == 26 else 4)
        _need(buf, offset, size)
        raw = bytes(buf[offset : offset + size])
        parsed: CosemDateTime | CosemDate | CosemTime
        if tag == 25:
            parsed = CosemDateTime.from_bytes(raw)
        elif tag == 26:
            parsed = CosemDate.from_bytes(raw)
        else:
            parsed = CosemTime.from_bytes(raw)
        return Data(_TYPES_BY_VALUE[tag], parsed), offset + size
    if tag == 4:
        nbits, offset = decode_length(buf, offset)
        nbytes = (nbits + 7) // 8
        _need(buf, offset, nbytes)
        return (
            Data(DataType.BIT_STRING, BitString.from_bytes(buf[offset : offset + nbytes], nbits)),
            offset + nbytes,
        )
    if tag == 19:
        return _decode_compact_array(buf, offset, depth)
    raise DecodeError(f"unknown A-XDR tag 0x{tag:02X}")


def _decode_description(buf: bytes, offset: int, depth: int) -> tuple[TypeDescription, int]:
    if depth >= MAX_DEPTH:
        raise DecodeError("compact-array type description nesting too deep")
    _need(buf, offset, 1)
    tag = buf[offset]
    offset += 1
    if tag == 1:
        _need(buf, offset, 2)
        count = int.from_bytes(buf[offset : offset + 2], "big")
        element, offset = _decode_description(buf, offset + 2, depth + 1)
        return (DataType.ARRAY, count, element), offset
    if tag == 2:
        count, offset = decode_length(buf, offset)
        if count > len(buf) - offset:
            raise DecodeError("structure description longer than the bytes left")
        elements = []
        for _ in range(count):
            element, offset = _decode_description(buf, offset, depth + 1)
            elements.append(element)
        return (DataType.STRUCTURE, tuple(elements)), offset
    if tag not in _TYPES_BY_VALUE or tag in (0, 19, 255):
        raise DecodeError(f"unsupported compact-array element type 0x{tag:02X}")
    return (_TYPES_BY_VALUE[tag],), offset


def _decode_untagged(
    buf: bytes, offset: int, description: TypeDescription, depth: int
) -> tuple[Data, int]:
    if depth >= MAX_DEPTH:
        raise DecodeError("compact-array nesting too deep")
    kind = description[0]
    if kind == DataType.ARRAY:
        count = description[1]
        if count > len(buf) - offset:
            raise DecodeError("compact-array element count exceeds the bytes left")
        elements = []
        for _ in range(count):
            element, offset = _decode_untagged(buf, offset, description[2], depth + 1)
            elements.append(element)
        return Data(DataType.ARRAY, tuple(elements)), offset
    if kind == DataType.STRUCTURE:
        elements = []
        for element_description in description[1]:
            element, offset = _decode_untagged(buf, offset, element_description, depth + 1)
            elements.append(element)
        return Data(DataType.STRUCTURE, tuple(elements)), offset
    # A simple type: decode it as if tagged, by prepending the tag.
    tagged = bytes((kind,)) + bytes(buf[offset : offset + 13])
    if kind in (
        DataType.OCTET_STRING,
        DataType.VISIBLE_STRING,
        DataType.UTF8_STRING,
        DataType.BIT_STRING,
    ):
        length, start = decode_length(buf, offset)
        end = start + (length if kind != DataType.BIT_STRING else (length + 7) // 8)
        _need(buf, start, end - start)
        tagged = bytes((kind,)) + bytes(buf[offset:end])
    value, used = _decode(tagged, 0, depth + 1)
    return value, offset + used - 1


def _decode_compact_array(buf: bytes, offset: int, depth: int) -> tuple[Data, int]:
    description, offset = _decode_description(buf, offset, depth + 1)
    length, offset = decode_length(buf, offset)
    end = offset + length
    if end > len(buf):
        raise DecodeError("truncated compact-array contents")
    contents = bytes(buf[offset:end])
    elements = []
    position = 0
    while position < len(contents):
        element, new_position = _decode_untagged(contents, position, description, depth + 1)
        if new_position <= position:
            raise DecodeError("compact-array element of zero size")
        elements.append(element)
        position = new_position
    return Data(DataType.COMPACT_ARRAY, CompactArray(description, tuple(elements))), end
