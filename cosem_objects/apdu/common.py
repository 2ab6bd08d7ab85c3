"""Pieces shared by the xDLMS service APDUs: result codes, descriptors, invoke-id-and-priority.

Decoding helpers here work on (buffer, offset) pairs and return the new offset, so an APDU is
parsed in one pass without copying the tail at every step; every helper checks the bytes left
and raises DecodeError, never IndexError/struct.error. Unknown result codes from a meter become
pseudo-members ("unknown-N") instead of failing the whole response: the caller still learns the
request failed and sees the raw code."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol, Self

from cosem_objects.axdr import decode_data, decode_length, encode_data, encode_length
from cosem_objects.data import Data
from cosem_objects.errors import DecodeError
from cosem_objects.obis import Obis


class _Code(IntEnum):
    """A one-byte enumerated result; values outside the table decode to 'unknown-N'."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
            member = int.__new__(cls, value)
            member._name_ = f"UNKNOWN_{value}"
            member._value_ = value
            return member
        return None

    @property
    def text(self) -> str:
        """The Blue Book spelling, e.g. 'hardware-fault'."""
        return self.name.lower().replace("_", "-")


class DataAccessResult(_Code):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


class ActionResult(_Code):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_ACTION_ABORTED = 15
    NO_LONG_ACTION_IN_PROGRESS = 16
    OTHER_REASON = 250


# Plain dict lookups: IntEnum's call path is several times slower on the hot path.
_DAR_BY_VALUE: dict[int, DataAccessResult] = {int(m): m for m in DataAccessResult}
_ACTION_BY_VALUE: dict[int, ActionResult] = {int(m): m for m in ActionResult}


def data_access_result(code: int) -> DataAccessResult:
    member = _DAR_BY_VALUE.get(code)
    return member if member is not None else DataAccessResult(code)


def action_result(code: int) -> ActionResult:
    member = _ACTION_BY_VALUE.get(code)
    return member if member is not None else ActionResult(code)


class Apdu(Protocol):
    """What every APDU class offers (xDLMS here, ACSE in cosem_objects.acse)."""

    def to_bytes(self) -> bytes: ...

    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self: ...


# -- invoke-id-and-priority --------------------------------------------------------------------
CONFIRMED = 0x40
HIGH_PRIORITY = 0x80


def invoke_id_and_priority(
    invoke_id: int, confirmed: bool = True, high_priority: bool = True
) -> int:
    """The one-byte Invoke-Id-And-Priority: bits 0-3 invoke id, bit 6 confirmed, bit 7 high."""
    if not 0 <= invoke_id <= 15:
        raise ValueError(f"invoke id must be 0..15, got {invoke_id}")
    return invoke_id | (CONFIRMED if confirmed else 0) | (HIGH_PRIORITY if high_priority else 0)


def iip_json(iip: int) -> dict[str, Any]:
    return {
        "invoke_id_and_priority": iip,
        "invoke_id": iip & 0x0F,
        "confirmed": bool(iip & CONFIRMED),
        "high_priority": bool(iip & HIGH_PRIORITY),
    }


# -- descriptors -------------------------------------------------------------------------------
_DESCRIPTOR = struct.Struct(">HBBBBBBB")  # class_id, OBIS a..f, attribute/method id
DESCRIPTOR_SIZE = _DESCRIPTOR.size
_U32 = struct.Struct(">I")

# A head-end meets a small set of OBIS codes again and again; building an Obis (frozen, with
# validation) costs more than a dict hit. Bounded so hostile input cannot grow it without limit.
_OBIS_CACHE: dict[tuple[int, ...], Obis] = {}
_OBIS_CACHE_MAX = 4096


def _obis(groups: tuple[int, ...]) -> Obis:
    obis = _OBIS_CACHE.get(groups)
    if obis is None:
        obis = Obis(*groups)
        if len(_OBIS_CACHE) < _OBIS_CACHE_MAX:
            _OBIS_CACHE[groups] = obis
    return obis


@dataclass(frozen=True, slots=True)
class AttributeDescriptor:
    """Cosem-Attribute-Descriptor: class-id (u16), instance-id (OBIS), attribute-id."""

    class_id: int
    obis: Obis
    attribute: int

    def to_bytes(self) -> bytes:
        o = self.obis
        return _DESCRIPTOR.pack(self.class_id, o.a, o.b, o.c, o.d, o.e, o.f, self.attribute)

    @classmethod
    def decode(cls, buf: bytes, offset: int) -> tuple[AttributeDescriptor, int]:
        end = offset + DESCRIPTOR_SIZE
        if end > len(buf):
            raise DecodeError("truncated cosem-attribute-descriptor")
        fields = _DESCRIPTOR.unpack_from(buf, offset)
        return cls(fields[0], _obis(fields[1:7]), fields[7]), end

    def to_json(self) -> dict[str, Any]:
        return {"class_id": self.class_id, "obis": str(self.obis), "attribute": self.attribute}


@dataclass(frozen=True, slots=True)
class MethodDescriptor:
    """Cosem-Method-Descriptor: class-id (u16), instance-id (OBIS), method-id."""

    class_id: int
    obis: Obis
    method: int

    def to_bytes(self) -> bytes:
        o = self.obis
        return _DESCRIPTOR.pack(self.class_id, o.a, o.b, o.c, o.d, o.e, o.f, self.method)

    @classmethod
    def decode(cls, buf: bytes, offset: int) -> tuple[MethodDescriptor, int]:
        end = offset + DESCRIPTOR_SIZE
        if end > len(buf):
            raise DecodeError("truncated cosem-method-descriptor")
        fields = _DESCRIPTOR.unpack_from(buf, offset)
        return cls(fields[0], _obis(fields[1:7]), fields[7]), end

    def to_json(self) -> dict[str, Any]:
        return {"class_id": self.class_id, "obis": str(self.obis), "method": self.method}


@dataclass(frozen=True, slots=True)
class SelectiveAccess:
    """Selective-Access-Descriptor: access_selector (e.g. 1 range, 2 entry) and its parameters."""

    selector: int
    parameters: Data

    def to_bytes(self) -> bytes:
        """With the leading 01 'present' flag of the OPTIONAL field."""
        return bytes((1, self.selector)) + encode_data(self.parameters)

    def to_json(self) -> dict[str, Any]:
        return {"selector": self.selector, "parameters": self.parameters.to_json()}


def encode_access(access: SelectiveAccess | None) -> bytes:
    return b"\x00" if access is None else access.to_bytes()


def decode_access(buf: bytes, offset: int) -> tuple[SelectiveAccess | None, int]:
    """The OPTIONAL access-selection: 00, or 01 + selector + parameters (Data)."""
    if offset >= len(buf):
        raise DecodeError("truncated: access-selection flag expected")
    flag = buf[offset]
    if flag == 0:
        return None, offset + 1
    if flag != 1:
        raise DecodeError(f"access-selection flag must be 00 or 01, got {flag:02X}")
    if offset + 2 > len(buf):
        raise DecodeError("truncated: access-selector expected")
    selector = buf[offset + 1]
    parameters, offset = decode_data(buf, offset + 2)
    return SelectiveAccess(selector, parameters), offset


def access_json(access: SelectiveAccess | None) -> dict[str, Any] | None:
    return None if access is None else access.to_json()


# -- small readers -----------------------------------------------------------------------------
def check_header(buf: bytes, tag: int, choice: int, name: str) -> None:
    """Tag, CHOICE byte and invoke-id-and-priority must be there and be the expected ones."""
    if len(buf) < 3:
        raise DecodeError(f"truncated {name}")
    if buf[0] != tag or buf[1] != choice:
        raise DecodeError(f"not a {name}: starts with {bytes(buf[:2]).hex().upper()}")


def check_end(buf: bytes, offset: int, name: str) -> None:
    if offset != len(buf):
        raise DecodeError(f"{len(buf) - offset} trailing bytes after {name}")


def read_u32(buf: bytes, offset: int, what: str) -> tuple[int, int]:
    end = offset + 4
    if end > len(buf):
        raise DecodeError(f"truncated {what}")
    return _U32.unpack_from(buf, offset)[0], end


def read_u8(buf: bytes, offset: int, what: str) -> tuple[int, int]:
    if offset >= len(buf):
        raise DecodeError(f"truncated: {what} expected")
    return buf[offset], offset + 1


def read_bool(buf: bytes, offset: int, what: str) -> tuple[bool, int]:
    """A-XDR BOOLEAN: one byte, zero is FALSE, anything else TRUE."""
    if offset >= len(buf):
        raise DecodeError(f"truncated: {what} expected")
    return buf[offset] != 0, offset + 1


def read_octet_string(buf: bytes, offset: int, what: str) -> tuple[bytes, int]:
    """An untagged A-XDR OCTET STRING: length, then that many bytes."""
    length, offset = decode_length(buf, offset)
    end = offset + length
    if end > len(buf):
        raise DecodeError(f"truncated {what}: {length} bytes announced, {len(buf) - offset} left")
    return bytes(buf[offset:end]), end


def read_count(buf: bytes, offset: int, what: str, min_item_size: int = 1) -> tuple[int, int]:
    """A SEQUENCE OF count (A-XDR length), checked against the bytes left."""
    count, offset = decode_length(buf, offset)
    if count * min_item_size > len(buf) - offset:
        raise DecodeError(f"{what}: {count} items announced, only {len(buf) - offset} bytes left")
    return count, offset


def encode_block(last_block: bool, block_number: int, raw_data: bytes) -> bytes:
    """DataBlock-SA / DataBlock-G raw-data part: last-block, block-number, octet string."""
    return (
        (b"\x01" if last_block else b"\x00")
        + _U32.pack(block_number)
        + encode_length(len(raw_data))
        + raw_data
    )


def decode_block(buf: bytes, offset: int, what: str) -> tuple[bool, int, bytes, int]:
    """DataBlock-SA: last-block BOOLEAN, block-number Unsigned32, raw-data OCTET STRING."""
    last, offset = read_bool(buf, offset, f"{what} last-block")
    number, offset = read_u32(buf, offset, f"{what} block-number")
    raw, offset = read_octet_string(buf, offset, f"{what} raw-data")
    return last, number, raw, offset


def result_json(result: Data | DataAccessResult) -> dict[str, Any]:
    """Get-Data-Result as JSON: {'result': 'data', 'data': ...} or the data-access-result."""
    if isinstance(result, Data):
        return {"result": "data", "data": result.to_json()}
    return {
        "result": "data-access-result",
        "data_access_result": int(result),
        "data_access_result_name": result.text,
    }


def encode_get_data_result(result: Data | DataAccessResult) -> bytes:
    """Get-Data-Result CHOICE: 00 + Data, or 01 + data-access-result."""
    if isinstance(result, Data):
        return b"\x00" + encode_data(result)
    return bytes((1, result))


def decode_get_data_result(buf: bytes, offset: int) -> tuple[Data | DataAccessResult, int]:
    if offset >= len(buf):
        raise DecodeError("truncated: Get-Data-Result choice expected")
    choice = buf[offset]
    if choice == 0:
        return decode_data(buf, offset + 1)
    if choice == 1:
        if offset + 1 >= len(buf):
            raise DecodeError("truncated: data-access-result expected")
        return data_access_result(buf[offset + 1]), offset + 2
    raise DecodeError(f"Get-Data-Result choice must be 00 or 01, got {choice:02X}")
