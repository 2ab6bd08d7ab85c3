"""GET-Request (0xC0) and GET-Response (0xC4) in all their CHOICEs (Blue Book, DLMS UA 1000-2).

Hot path of every read: request encoding and response decoding are straight-line slicing with
one struct call for the descriptor; the Data codec does the rest."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Self

from cosem_objects.apdu.common import (
    AttributeDescriptor,
    DataAccessResult,
    SelectiveAccess,
    access_json,
    check_end,
    check_header,
    data_access_result,
    decode_access,
    decode_get_data_result,
    encode_access,
    encode_get_data_result,
    iip_json,
    read_bool,
    read_count,
    read_octet_string,
    read_u32,
    result_json,
)
from cosem_objects.axdr import encode_length
from cosem_objects.data import Data
from cosem_objects.errors import DecodeError

GET_REQUEST = 0xC0
GET_RESPONSE = 0xC4
_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class GetRequestNormal:
    invoke_id_and_priority: int
    attribute: AttributeDescriptor
    access: SelectiveAccess | None = None

    def to_bytes(self) -> bytes:
        access = self.access
        return (
            bytes((GET_REQUEST, 1, self.invoke_id_and_priority))
            + self.attribute.to_bytes()
            + (b"\x00" if access is None else access.to_bytes())
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, GET_REQUEST, 1, "get-request-normal")
        attribute, offset = AttributeDescriptor.decode(buf, 3)
        access, offset = decode_access(buf, offset)
        check_end(buf, offset, "get-request-normal")
        return cls(buf[2], attribute, access)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "get-request-normal",
            **iip_json(self.invoke_id_and_priority),
            **self.attribute.to_json(),
            "access_selection": access_json(self.access),
        }


@dataclass(frozen=True, slots=True)
class GetRequestNext:
    """Asks for the block after `block_number` (the last block received)."""

    invoke_id_and_priority: int
    block_number: int

    def to_bytes(self) -> bytes:
        return bytes((GET_REQUEST, 2, self.invoke_id_and_priority)) + _U32.pack(self.block_number)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, GET_REQUEST, 2, "get-request-next")
        block_number, offset = read_u32(buf, 3, "get-request-next block-number")
        check_end(buf, offset, "get-request-next")
        return cls(buf[2], block_number)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "get-request-next",
            **iip_json(self.invoke_id_and_priority),
            "block_number": self.block_number,
        }


AttributeWithSelection = tuple[AttributeDescriptor, SelectiveAccess | None]


def encode_attribute_list(attributes: tuple[AttributeWithSelection, ...]) -> bytes:
    parts = [encode_length(len(attributes))]
    for descriptor, access in attributes:
        parts.append(descriptor.to_bytes())
        parts.append(encode_access(access))
    return b"".join(parts)


def decode_attribute_list(
    buf: bytes, offset: int, what: str
) -> tuple[tuple[AttributeWithSelection, ...], int]:
    count, offset = read_count(buf, offset, what, min_item_size=10)
    items = []
    for _ in range(count):
        descriptor, offset = AttributeDescriptor.decode(buf, offset)
        access, offset = decode_access(buf, offset)
        items.append((descriptor, access))
    return tuple(items), offset


def attribute_list_json(attributes: tuple[AttributeWithSelection, ...]) -> list[dict[str, Any]]:
    return [
        {**descriptor.to_json(), "access_selection": access_json(access)}
        for descriptor, access in attributes
    ]


@dataclass(frozen=True, slots=True)
class GetRequestWithList:
    invoke_id_and_priority: int
    attributes: tuple[AttributeWithSelection, ...]

    def to_bytes(self) -> bytes:
        return bytes((GET_REQUEST, 3, self.invoke_id_and_priority)) + encode_attribute_list(
            self.attributes
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, GET_REQUEST, 3, "get-request-with-list")
        attributes, offset = decode_attribute_list(buf, 3, "get-request-with-list")
        check_end(buf, offset, "get-request-with-list")
        return cls(buf[2], attributes)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "get-request-with-list",
            **iip_json(self.invoke_id_and_priority),
            "attributes": attribute_list_json(self.attributes),
        }


@dataclass(frozen=True, slots=True)
class GetResponseNormal:
    invoke_id_and_priority: int
    result: Data | DataAccessResult

    def to_bytes(self) -> bytes:
        return bytes((GET_RESPONSE, 1, self.invoke_id_and_priority)) + encode_get_data_result(
            self.result
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, GET_RESPONSE, 1, "get-response-normal")
        result, offset = decode_get_data_result(buf, 3)
        check_end(buf, offset, "get-response-normal")
        return cls(buf[2], result)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "get-response-normal",
            **iip_json(self.invoke_id_and_priority),
            **result_json(self.result),
        }


@dataclass(frozen=True, slots=True)
class GetResponseWithBlock:
    """DataBlock-G: one block of the encoded Data (raw_data), or why the transfer stopped."""

    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes | DataAccessResult

    def to_bytes(self) -> bytes:
        head = bytes(
            (GET_RESPONSE, 2, self.invoke_id_and_priority, 1 if self.last_block else 0)
        ) + _U32.pack(self.block_number)
        raw = self.raw_data
        if isinstance(raw, DataAccessResult):
            return head + bytes((1, raw))
        return head + b"\x00" + encode_length(len(raw)) + raw

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, GET_RESPONSE, 2, "get-response-with-datablock")
        last, offset = read_bool(buf, 3, "last-block")
        block_number, offset = read_u32(buf, offset, "block-number")
        if offset >= len(buf):
            raise DecodeError("truncated get-response-with-datablock: result choice expected")
        choice = buf[offset]
        raw: bytes | DataAccessResult
        if choice == 0:
            raw, offset = read_octet_string(buf, offset + 1, "raw-data")
        elif choice == 1:
            if offset + 1 >= len(buf):
                raise DecodeError("truncated get-response-with-datablock: data-access-result")
            raw, offset = data_access_result(buf[offset + 1]), offset + 2
        else:
            raise DecodeError(f"DataBlock-G result choice must be 00 or 01, got {choice:02X}")
        check_end(buf, offset, "get-response-with-datablock")
        return cls(buf[2], last, block_number, raw)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "get-response-with-datablock",
            **iip_json(self.invoke_id_and_priority),
            "last_block": self.last_block,
            "block_number": self.block_number,
        }
        raw = self.raw_data
        if isinstance(raw, DataAccessResult):
            out["result"] = "data-access-result"
            out["data_access_result"] = int(raw)
            out["data_access_result_name"] = raw.text
        else:
            out["result"] = "raw-data"
            out["raw_data"] = raw.hex().upper()
            out["raw_data_length"] = len(raw)
        return out


@dataclass(frozen=True, slots=True)
class GetResponseWithList:
    invoke_id_and_priority: int
    results: tuple[Data | DataAccessResult, ...]

    def to_bytes(self) -> bytes:
        parts = [
            bytes((GET_RESPONSE, 3, self.invoke_id_and_priority)),
            encode_length(len(self.results)),
        ]
        parts.extend(encode_get_data_result(result) for result in self.results)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, GET_RESPONSE, 3, "get-response-with-list")
        count, offset = read_count(buf, 3, "get-response-with-list", min_item_size=2)
        results = []
        for _ in range(count):
            result, offset = decode_get_data_result(buf, offset)
            results.append(result)
        check_end(buf, offset, "get-response-with-list")
        return cls(buf[2], tuple(results))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "get-response-with-list",
            **iip_json(self.invoke_id_and_priority),
            "results": [result_json(result) for result in self.results],
        }
