"""SET-Request (0xC1) and SET-Response (0xC5) in all their CHOICEs (Blue Book, DLMS UA 1000-2).

Block transfer: a value too large for the peer's PDU size goes out as the encoded Data cut into
DataBlock-SA blocks (first block with the descriptor, then with-datablock); the server answers
each block with set-response-datablock and the last with set-response-last-datablock."""

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
    decode_block,
    encode_access,
    encode_block,
    iip_json,
    read_count,
    read_u8,
    read_u32,
)
from cosem_objects.apdu.get import (
    AttributeWithSelection,
    attribute_list_json,
    decode_attribute_list,
    encode_attribute_list,
)
from cosem_objects.axdr import decode_data, encode_data, encode_length
from cosem_objects.data import Data

SET_REQUEST = 0xC1
SET_RESPONSE = 0xC5
_U32 = struct.Struct(">I")


def _block_json(last_block: bool, block_number: int, raw_data: bytes) -> dict[str, Any]:
    return {
        "last_block": last_block,
        "block_number": block_number,
        "raw_data": raw_data.hex().upper(),
        "raw_data_length": len(raw_data),
    }


@dataclass(frozen=True, slots=True)
class SetRequestNormal:
    invoke_id_and_priority: int
    attribute: AttributeDescriptor
    access: SelectiveAccess | None
    value: Data

    def to_bytes(self) -> bytes:
        return (
            bytes((SET_REQUEST, 1, self.invoke_id_and_priority))
            + self.attribute.to_bytes()
            + encode_access(self.access)
            + encode_data(self.value)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, SET_REQUEST, 1, "set-request-normal")
        attribute, offset = AttributeDescriptor.decode(buf, 3)
        access, offset = decode_access(buf, offset)
        value, offset = decode_data(buf, offset)
        check_end(buf, offset, "set-request-normal")
        return cls(buf[2], attribute, access, value)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "set-request-normal",
            **iip_json(self.invoke_id_and_priority),
            **self.attribute.to_json(),
            "access_selection": access_json(self.access),
            "data": self.value.to_json(),
        }


@dataclass(frozen=True, slots=True)
class SetRequestWithFirstBlock:
    invoke_id_and_priority: int
    attribute: AttributeDescriptor
    access: SelectiveAccess | None
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return (
            bytes((SET_REQUEST, 2, self.invoke_id_and_priority))
            + self.attribute.to_bytes()
            + encode_access(self.access)
            + encode_block(self.last_block, self.block_number, self.raw_data)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, SET_REQUEST, 2, "set-request-with-first-datablock")
        attribute, offset = AttributeDescriptor.decode(buf, 3)
        access, offset = decode_access(buf, offset)
        last, number, raw, offset = decode_block(buf, offset, "datablock")
        check_end(buf, offset, "set-request-with-first-datablock")
        return cls(buf[2], attribute, access, last, number, raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "set-request-with-first-datablock",
            **iip_json(self.invoke_id_and_priority),
            **self.attribute.to_json(),
            "access_selection": access_json(self.access),
            **_block_json(self.last_block, self.block_number, self.raw_data),
        }


@dataclass(frozen=True, slots=True)
class SetRequestWithBlock:
    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return bytes((SET_REQUEST, 3, self.invoke_id_and_priority)) + encode_block(
            self.last_block, self.block_number, self.raw_data
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, SET_REQUEST, 3, "set-request-with-datablock")
        last, number, raw, offset = decode_block(buf, 3, "datablock")
        check_end(buf, offset, "set-request-with-datablock")
        return cls(buf[2], last, number, raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "set-request-with-datablock",
            **iip_json(self.invoke_id_and_priority),
            **_block_json(self.last_block, self.block_number, self.raw_data),
        }


@dataclass(frozen=True, slots=True)
class SetRequestWithList:
    invoke_id_and_priority: int
    attributes: tuple[AttributeWithSelection, ...]
    values: tuple[Data, ...]

    def to_bytes(self) -> bytes:
        parts = [
            bytes((SET_REQUEST, 4, self.invoke_id_and_priority)),
            encode_attribute_list(self.attributes),
            encode_length(len(self.values)),
        ]
        parts.extend(encode_data(value) for value in self.values)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, SET_REQUEST, 4, "set-request-with-list")
        attributes, offset = decode_attribute_list(buf, 3, "set-request-with-list")
        count, offset = read_count(buf, offset, "set-request-with-list values")
        values = []
        for _ in range(count):
            value, offset = decode_data(buf, offset)
            values.append(value)
        check_end(buf, offset, "set-request-with-list")
        return cls(buf[2], attributes, tuple(values))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "set-request-with-list",
            **iip_json(self.invoke_id_and_priority),
            "attributes": attribute_list_json(self.attributes),
            "values": [value.to_json() for value in self.values],
        }


@dataclass(frozen=True, slots=True)
class SetRequestWithListAndFirstBlock:
    invoke_id_and_priority: int
    attributes: tuple[AttributeWithSelection, ...]
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return (
            bytes((SET_REQUEST, 5, self.invoke_id_and_priority))
            + encode_attribute_list(self.attributes)
            + encode_block(self.last_block, self.block_number, self.raw_data)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        name = "set-request-with-list-and-first-datablock"
        check_header(buf, SET_REQUEST, 5, name)
        attributes, offset = decode_attribute_list(buf, 3, name)
        last, number, raw, offset = decode_block(buf, offset, "datablock")
        check_end(buf, offset, name)
        return cls(buf[2], attributes, last, number, raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "set-request-with-list-and-first-datablock",
            **iip_json(self.invoke_id_and_priority),
            "attributes": attribute_list_json(self.attributes),
            **_block_json(self.last_block, self.block_number, self.raw_data),
        }


def _dar_json(result: DataAccessResult) -> dict[str, Any]:
    return {"result": int(result), "result_name": result.text}


def _encode_results(results: tuple[DataAccessResult, ...]) -> bytes:
    return encode_length(len(results)) + bytes(results)


def _decode_results(buf: bytes, offset: int, what: str) -> tuple[tuple[DataAccessResult, ...], int]:
    count, offset = read_count(buf, offset, what)
    end = offset + count  # read_count checked that count bytes are there
    return tuple(data_access_result(code) for code in buf[offset:end]), end


@dataclass(frozen=True, slots=True)
class SetResponseNormal:
    invoke_id_and_priority: int
    result: DataAccessResult

    def to_bytes(self) -> bytes:
        return bytes((SET_RESPONSE, 1, self.invoke_id_and_priority, self.result))

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, SET_RESPONSE, 1, "set-response-normal")
        code, offset = read_u8(buf, 3, "data-access-result")
        check_end(buf, offset, "set-response-normal")
        return cls(buf[2], data_access_result(code))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "set-response-normal",
            **iip_json(self.invoke_id_and_priority),
            **_dar_json(self.result),
        }


@dataclass(frozen=True, slots=True)
class SetResponseDataBlock:
    """The server took block `block_number` and wants the next one."""

    invoke_id_and_priority: int
    block_number: int

    def to_bytes(self) -> bytes:
        return bytes((SET_RESPONSE, 2, self.invoke_id_and_priority)) + _U32.pack(self.block_number)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, SET_RESPONSE, 2, "set-response-datablock")
        number, offset = read_u32(buf, 3, "block-number")
        check_end(buf, offset, "set-response-datablock")
        return cls(buf[2], number)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "set-response-datablock",
            **iip_json(self.invoke_id_and_priority),
            "block_number": self.block_number,
        }


@dataclass(frozen=True, slots=True)
class SetResponseLastDataBlock:
    invoke_id_and_priority: int
    result: DataAccessResult
    block_number: int

    def to_bytes(self) -> bytes:
        return bytes((SET_RESPONSE, 3, self.invoke_id_and_priority, self.result)) + _U32.pack(
            self.block_number
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, SET_RESPONSE, 3, "set-response-last-datablock")
        code, offset = read_u8(buf, 3, "data-access-result")
        number, offset = read_u32(buf, offset, "block-number")
        check_end(buf, offset, "set-response-last-datablock")
        return cls(buf[2], data_access_result(code), number)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "set-response-last-datablock",
            **iip_json(self.invoke_id_and_priority),
            **_dar_json(self.result),
            "block_number": self.block_number,
        }


@dataclass(frozen=True, slots=True)
class SetResponseLastDataBlockWithList:
    invoke_id_and_priority: int
    results: tuple[DataAccessResult, ...]
    block_number: int

    def to_bytes(self) -> bytes:
        return (
            bytes((SET_RESPONSE, 4, self.invoke_id_and_priority))
            + _encode_results(self.results)
            + _U32.pack(self.block_number)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        name = "set-response-last-datablock-with-list"
        check_header(buf, SET_RESPONSE, 4, name)
        results, offset = _decode_results(buf, 3, name)
        number, offset = read_u32(buf, offset, "block-number")
        check_end(buf, offset, name)
        return cls(buf[2], results, number)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "set-response-last-datablock-with-list",
            **iip_json(self.invoke_id_and_priority),
            "results": [_dar_json(result) for result in self.results],
            "block_number": self.block_number,
        }


@dataclass(frozen=True, slots=True)
class SetResponseWithList:
    invoke_id_and_priority: int
    results: tuple[DataAccessResult, ...]

    def to_bytes(self) -> bytes:
        return bytes((SET_RESPONSE, 5, self.invoke_id_and_priority)) + _encode_results(self.results)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, SET_RESPONSE, 5, "set-response-with-list")
        results, offset = _decode_results(buf, 3, "set-response-with-list")
        check_end(buf, offset, "set-response-with-list")
        return cls(buf[2], results)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "set-response-with-list",
            **iip_json(self.invoke_id_and_priority),
            "results": [_dar_json(result) for result in self.results],
        }
