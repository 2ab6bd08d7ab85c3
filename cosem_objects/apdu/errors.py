"""The two ways a server refuses a request outright: ExceptionResponse (0xD8) and
ConfirmedServiceError (0x0E).

Fields stay plain ints so that a code the table does not know still decodes and re-encodes;
the IntEnums below name the Blue Book values for callers and for to_json."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Self

from cosem_objects.errors import DecodeError

EXCEPTION_RESPONSE = 0xD8
CONFIRMED_SERVICE_ERROR = 0x0E
_U32 = struct.Struct(">I")


class StateError(IntEnum):
    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ServiceError(IntEnum):
    """ExceptionResponse service-error CHOICE."""

    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4
    DECIPHERING_ERROR = 5
    INVOCATION_COUNTER_ERROR = 6


class ConfirmedService(IntEnum):
    """ConfirmedServiceError CHOICE: which service failed."""

    INITIATE_ERROR = 1
    GET_STATUS = 2
    GET_NAME_LIST = 3
    GET_VARIABLE_ATTRIBUTE = 4
    READ = 5
    WRITE = 6
    GET_DATA_SET_ATTRIBUTE = 7
    GET_TI_ATTRIBUTE = 8
    CHANGE_SCOPE = 9
    START = 10
    STOP = 11
    RESUME = 12
    MAKE_USABLE = 13
    INITIATE_LOAD = 14
    LOAD_SEGMENT = 15
    TERMINATE_LOAD = 16
    INITIATE_UP_LOAD = 17
    UP_LOAD_SEGMENT = 18
    TERMINATE_UP_LOAD = 19


class ServiceErrorType(IntEnum):
    """ConfirmedServiceError ServiceError CHOICE: the class of the error."""

    APPLICATION_REFERENCE = 0
    HARDWARE_RESOURCE = 1
    VDE_STATE_ERROR = 2
    SERVICE = 3
    DEFINITION = 4
    ACCESS = 5
    INITIATE = 6
    LOAD_DATA_SET = 7
    CHANGE_SCOPE = 8
    TASK = 9
    OTHER = 10


class InitiateErrorValue(IntEnum):
    """Values of ServiceError 'initiate' (6), the usual content of a refused AARE."""

    OTHER = 0
    DLMS_VERSION_TOO_LOW = 1
    INCOMPATIBLE_CONFORMANCE = 2
    PDU_SIZE_TOO_SHORT = 3
    REFUSED_BY_THE_VDE_HANDLER = 4


def _name(enum: type[IntEnum], value: int) -> str | None:
    try:
        return enum(value).name.lower().replace("_", "-")
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    """D8 | state-error | service-error [| invocation counter u32 when service-error is 6]."""

    state_error: int
    service_error: int
    invocation_counter: int | None = None

    def to_bytes(self) -> bytes:
        head = bytes((EXCEPTION_RESPONSE, self.state_error, self.service_error))
        if self.service_error == ServiceError.INVOCATION_COUNTER_ERROR:
            if self.invocation_counter is None:
                raise ValueError("invocation-counter-error needs the invocation counter")
            return head + _U32.pack(self.invocation_counter)
        return head

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        if len(buf) < 3 or buf[0] != EXCEPTION_RESPONSE:
            raise DecodeError("not an exception-response (D8 + 2 bytes)")
        state_error, service_error = buf[1], buf[2]
        counter: int | None = None
        end = 3
        if service_error == ServiceError.INVOCATION_COUNTER_ERROR:
            end = 7
            if len(buf) < end:
                raise DecodeError("truncated exception-response: invocation counter expected")
            counter = _U32.unpack_from(buf, 3)[0]
        if len(buf) != end:
            raise DecodeError(f"{len(buf) - end} trailing bytes after exception-response")
        return cls(state_error, service_error, counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "exception-response",
            "state_error": self.state_error,
            "state_error_name": _name(StateError, self.state_error),
            "service_error": self.service_error,
            "service_error_name": _name(ServiceError, self.service_error),
            "invocation_counter": self.invocation_counter,
        }


@dataclass(frozen=True, slots=True)
class ConfirmedServiceError:
    """0E | service CHOICE | ServiceError CHOICE (error_type) | ENUMERATED value."""

    service: int
    error_type: int
    error_value: int

    def to_bytes(self) -> bytes:
        return bytes((CONFIRMED_SERVICE_ERROR, self.service, self.error_type, self.error_value))

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        if len(buf) != 4 or buf[0] != CONFIRMED_SERVICE_ERROR:
            raise DecodeError("not a confirmed-service-error (0E + 3 bytes)")
        return cls(buf[1], buf[2], buf[3])

    def to_json(self) -> dict[str, Any]:
        """Keys as the vectors' AARE `confirmed_service_error`, plus type and names."""
        value_name = (
            _name(InitiateErrorValue, self.error_value)
            if self.error_type == ServiceErrorType.INITIATE
            else None
        )
        return {
            "type": "confirmed-service-error",
            "service": self.service,
            "error_class": self.error_type,
            "error": self.error_value,
            "service_name": _name(ConfirmedService, self.service),
            "error_class_name": _name(ServiceErrorType, self.error_type),
            "error_name": value_name,
        }
