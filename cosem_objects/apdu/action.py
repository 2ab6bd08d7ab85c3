"""ACTION-Request (0xC3) and ACTION-Response (0xC7) in all their CHOICEs (Blue Book).

Method invocation parameters and return parameters are OPTIONAL: 00 absent, 01 present. The
return parameters are a Get-Data-Result (00 Data / 01 data-access-result), so an ACTION can
succeed as a whole yet report that its return value could not be produced (v9-action-dar-rsp).
Large parameters or return values travel as DataBlock-SA "pblocks"."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Self

from cosem_objects.apdu.common import (
    ActionResult,
    DataAccessResult,
    MethodDescriptor,
    action_result,
    check_end,
    check_header,
    decode_block,
    decode_get_data_result,
    encode_block,
    encode_get_data_result,
    iip_json,
    read_count,
    read_u8,
    read_u32,
)
from cosem_objects.axdr import decode_data, encode_data, encode_length
from cosem_objects.data import Data
from cosem_objects.errors import DecodeError

ACTION_REQUEST = 0xC3
ACTION_RESPONSE = 0xC7
_U32 = struct.Struct(">I")

ReturnData = Data | DataAccessResult | None


def _block_json(last_block: bool, block_number: int, raw_data: bytes) -> dict[str, Any]:
    return {
        "last_block": last_block,
        "block_number": block_number,
        "raw_data": raw_data.hex().upper(),
        "raw_data_length": len(raw_data),
    }


def _encode_methods(methods: tuple[MethodDescriptor, ...]) -> bytes:
    return encode_length(len(methods)) + b"".join(m.to_bytes() for m in methods)


def _decode_methods(buf: bytes, offset: int, what: str) -> tuple[tuple[MethodDescriptor, ...], int]:
    count, offset = read_count(buf, offset, what, min_item_size=9)
    methods = []
    for _ in range(count):
        method, offset = MethodDescriptor.decode(buf, offset)
        methods.append(method)
    return tuple(methods), offset


@dataclass(frozen=True, slots=True)
class ActionRequestNormal:
    invoke_id_and_priority: int
    method: MethodDescriptor
    parameters: Data | None

    def to_bytes(self) -> bytes:
        head = bytes((ACTION_REQUEST, 1, self.invoke_id_and_priority)) + self.method.to_bytes()
        if self.parameters is None:
            return head + b"\x00"
        return head + b"\x01" + encode_data(self.parameters)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, ACTION_REQUEST, 1, "action-request-normal")
        method, offset = MethodDescriptor.decode(buf, 3)
        flag, offset = read_u8(buf, offset, "method-invocation-parameters flag")
        parameters: Data | None = None
        if flag == 1:
            parameters, offset = decode_data(buf, offset)
        elif flag != 0:
            raise DecodeError(f"OPTIONAL flag must be 00 or 01, got {flag:02X}")
        check_end(buf, offset, "action-request-normal")
        return cls(buf[2], method, parameters)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "action-request-normal",
            **iip_json(self.invoke_id_and_priority),
            **self.method.to_json(),
            "parameters": None if self.parameters is None else self.parameters.to_json(),
        }


@dataclass(frozen=True, slots=True)
class ActionRequestNextPBlock:
    """Asks the server for the return-parameter block after `block_number`."""

    invoke_id_and_priority: int
    block_number: int

    def to_bytes(self) -> bytes:
        return bytes((ACTION_REQUEST, 2, self.invoke_id_and_priority)) + _U32.pack(
            self.block_number
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, ACTION_REQUEST, 2, "action-request-next-pblock")
        number, offset = read_u32(buf, 3, "block-number")
        check_end(buf, offset, "action-request-next-pblock")
        return cls(buf[2], number)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "action-request-next-pblock",
            **iip_json(self.invoke_id_and_priority),
            "block_number": self.block_number,
        }


@dataclass(frozen=True, slots=True)
class ActionRequestWithList:
    invoke_id_and_priority: int
    methods: tuple[MethodDescriptor, ...]
    parameters: tuple[Data, ...]

    def to_bytes(self) -> bytes:
        parts = [
            bytes((ACTION_REQUEST, 3, self.invoke_id_and_priority)),
            _encode_methods(self.methods),
            encode_length(len(self.parameters)),
        ]
        parts.extend(encode_data(p) for p in self.parameters)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, ACTION_REQUEST, 3, "action-request-with-list")
        methods, offset = _decode_methods(buf, 3, "action-request-with-list")
        count, offset = read_count(buf, offset, "action-request-with-list parameters")
        parameters = []
        for _ in range(count):
            value, offset = decode_data(buf, offset)
            parameters.append(value)
        check_end(buf, offset, "action-request-with-list")
        return cls(buf[2], methods, tuple(parameters))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "action-request-with-list",
            **iip_json(self.invoke_id_and_priority),
            "methods": [m.to_json() for m in self.methods],
            "parameters": [p.to_json() for p in self.parameters],
        }


@dataclass(frozen=True, slots=True)
class ActionRequestWithFirstPBlock:
    invoke_id_and_priority: int
    method: MethodDescriptor
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return (
            bytes((ACTION_REQUEST, 4, self.invoke_id_and_priority))
            + self.method.to_bytes()
            + encode_block(self.last_block, self.block_number, self.raw_data)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, ACTION_REQUEST, 4, "action-request-with-first-pblock")
        method, offset = MethodDescriptor.decode(buf, 3)
        last, number, raw, offset = decode_block(buf, offset, "pblock")
        check_end(buf, offset, "action-request-with-first-pblock")
        return cls(buf[2], method, last, number, raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "action-request-with-first-pblock",
            **iip_json(self.invoke_id_and_priority),
            **self.method.to_json(),
            **_block_json(self.last_block, self.block_number, self.raw_data),
        }


@dataclass(frozen=True, slots=True)
class ActionRequestWithListAndFirstPBlock:
    invoke_id_and_priority: int
    methods: tuple[MethodDescriptor, ...]
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return (
            bytes((ACTION_REQUEST, 5, self.invoke_id_and_priority))
            + _encode_methods(self.methods)
            + encode_block(self.last_block, self.block_number, self.raw_data)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        name = "action-request-with-list-and-first-pblock"
        check_header(buf, ACTION_REQUEST, 5, name)
        methods, offset = _decode_methods(buf, 3, name)
        last, number, raw, offset = decode_block(buf, offset, "pblock")
        check_end(buf, offset, name)
        return cls(buf[2], methods, last, number, raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "action-request-with-list-and-first-pblock",
            **iip_json(self.invoke_id_and_priority),
            "methods": [m.to_json() for m in self.methods],
            **_block_json(self.last_block, self.block_number, self.raw_data),
        }


@dataclass(frozen=True, slots=True)
class ActionRequestWithPBlock:
    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return bytes((ACTION_REQUEST, 6, self.invoke_id_and_priority)) + encode_block(
            self.last_block, self.block_number, self.raw_data
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, ACTION_REQUEST, 6, "action-request-with-pblock")
        last, number, raw, offset = decode_block(buf, 3, "pblock")
        check_end(buf, offset, "action-request-with-pblock")
        return cls(buf[2], last, number, raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "action-request-with-pblock",
            **iip_json(self.invoke_id_and_priority),
            **_block_json(self.last_block, self.block_number, self.raw_data),
        }


# -- responses ---------------------------------------------------------------------------------
def _encode_outcome(result: ActionResult, return_data: ReturnData) -> bytes:
    """Action-Response-With-Optional-Data."""
    if return_data is None:
        return bytes((result, 0))
    return bytes((result, 1)) + encode_get_data_result(return_data)


def _decode_outcome(buf: bytes, offset: int) -> tuple[ActionResult, ReturnData, int]:
    if offset + 2 > len(buf):
        raise DecodeError("truncated action-result")
    result = action_result(buf[offset])
    flag = buf[offset + 1]
    if flag == 0:
        return result, None, offset + 2
    if flag != 1:
        raise DecodeError(f"return-parameters flag must be 00 or 01, got {flag:02X}")
    returned, offset = decode_get_data_result(buf, offset + 2)
    return result, returned, offset


def _outcome_json(result: ActionResult, return_data: ReturnData) -> dict[str, Any]:
    parameters: dict[str, Any] | None
    if return_data is None:
        parameters = None
    elif isinstance(return_data, Data):
        parameters = {"choice": "data", "data": return_data.to_json()}
    else:
        parameters = {
            "choice": "data-access-result",
            "data_access_result": int(return_data),
            "data_access_result_name": return_data.text,
        }
    return {
        "action_result": int(result),
        "action_result_name": result.text,
        "return_parameters": parameters,
    }


@dataclass(frozen=True, slots=True)
class ActionResponseNormal:
    invoke_id_and_priority: int
    result: ActionResult
    return_data: ReturnData

    def to_bytes(self) -> bytes:
        return bytes((ACTION_RESPONSE, 1, self.invoke_id_and_priority)) + _encode_outcome(
            self.result, self.return_data
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, ACTION_RESPONSE, 1, "action-response-normal")
        result, returned, offset = _decode_outcome(buf, 3)
        check_end(buf, offset, "action-response-normal")
        return cls(buf[2], result, returned)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "action-response-normal",
            **iip_json(self.invoke_id_and_priority),
            **_outcome_json(self.result, self.return_data),
        }


@dataclass(frozen=True, slots=True)
class ActionResponseWithPBlock:
    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes

    def to_bytes(self) -> bytes:
        return bytes((ACTION_RESPONSE, 2, self.invoke_id_and_priority)) + encode_block(
            self.last_block, self.block_number, self.raw_data
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, ACTION_RESPONSE, 2, "action-response-with-pblock")
        last, number, raw, offset = decode_block(buf, 3, "pblock")
        check_end(buf, offset, "action-response-with-pblock")
        return cls(buf[2], last, number, raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "action-response-with-pblock",
            **iip_json(self.invoke_id_and_priority),
            **_block_json(self.last_block, self.block_number, self.raw_data),
        }


@dataclass(frozen=True, slots=True)
class ActionResponseWithList:
    invoke_id_and_priority: int
    results: tuple[tuple[ActionResult, ReturnData], ...]

    def to_bytes(self) -> bytes:
        parts = [
            bytes((ACTION_RESPONSE, 3, self.invoke_id_and_priority)),
            encode_length(len(self.results)),
        ]
        parts.extend(_encode_outcome(result, returned) for result, returned in self.results)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, ACTION_RESPONSE, 3, "action-response-with-list")
        count, offset = read_count(buf, 3, "action-response-with-list", min_item_size=2)
        results = []
        for _ in range(count):
            result, returned, offset = _decode_outcome(buf, offset)
            results.append((result, returned))
        check_end(buf, offset, "action-response-with-list")
        return cls(buf[2], tuple(results))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "action-response-with-list",
            **iip_json(self.invoke_id_and_priority),
            "results": [_outcome_json(result, returned) for result, returned in self.results],
        }


@dataclass(frozen=True, slots=True)
class ActionResponseNextPBlock:
    """The server took parameter block `block_number` and wants the next one."""

    invoke_id_and_priority: int
    block_number: int

    def to_bytes(self) -> bytes:
        return bytes((ACTION_RESPONSE, 4, self.invoke_id_and_priority)) + _U32.pack(
            self.block_number
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        check_header(buf, ACTION_RESPONSE, 4, "action-response-next-pblock")
        number, offset = read_u32(buf, 3, "block-number")
        check_end(buf, offset, "action-response-next-pblock")
        return cls(buf[2], number)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "action-response-next-pblock",
            **iip_json(self.invoke_id_and_priority),
            "block_number": self.block_number,
        }
