"""Unsolicited server-to-client APDUs: DataNotification (0x0F, push) and
EventNotificationRequest (0xC2).

The DataNotification date-time is an OCTET STRING: 00 (absent) or 0C + 12 bytes; some Kaifa
meters put an A-XDR Data tag in front (09 0C + 12 bytes). We accept all three and always write
the standard forms, so re-encoding a Kaifa-style push gives the 0C form."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Self

from cosem_objects.apdu.common import AttributeDescriptor, check_end, read_octet_string
from cosem_objects.axdr import decode_data, encode_data
from cosem_objects.data import CompactArray, Data
from cosem_objects.dates import CosemDateTime
from cosem_objects.errors import DecodeError

DATA_NOTIFICATION = 0x0F
EVENT_NOTIFICATION_REQUEST = 0xC2
_U32 = struct.Struct(">I")

# long-invoke-id-and-priority bits
LONG_INVOKE_ID_MASK = 0x00FFFFFF
SELF_DESCRIPTIVE = 1 << 28
BREAK_ON_ERROR = 1 << 29
LONG_CONFIRMED = 1 << 30
LONG_HIGH_PRIORITY = 1 << 31


def _body_length(body: Data) -> int | None:
    value = body.value
    if isinstance(value, tuple | bytes | str):
        return len(value)
    if isinstance(value, CompactArray):
        return len(value.elements)
    return None


@dataclass(frozen=True, slots=True)
class DataNotification:
    long_invoke_id_and_priority: int
    date_time: CosemDateTime | None
    body: Data

    @property
    def invoke_id(self) -> int:
        return self.long_invoke_id_and_priority & LONG_INVOKE_ID_MASK

    def to_bytes(self) -> bytes:
        head = bytes((DATA_NOTIFICATION,)) + _U32.pack(self.long_invoke_id_and_priority)
        stamp = b"\x00" if self.date_time is None else b"\x0c" + self.date_time.to_bytes()
        return head + stamp + encode_data(self.body)

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        size = len(buf)
        if size < 7 or buf[0] != DATA_NOTIFICATION:
            raise DecodeError("not a data-notification (0F + 4 + date-time + body)")
        long_iip = _U32.unpack_from(buf, 1)[0]
        marker = buf[5]
        date_time: CosemDateTime | None = None
        if marker == 0:
            offset = 6
        else:
            start = 6 if marker == 0x0C else 7
            if marker != 0x0C and not (marker == 0x09 and buf[6] == 0x0C):
                raise DecodeError(f"data-notification date-time: unexpected {marker:02X}")
            offset = start + 12
            if offset > size:
                raise DecodeError("truncated data-notification date-time")
            date_time = CosemDateTime.from_bytes(bytes(buf[start:offset]))
        body, offset = decode_data(buf, offset)
        check_end(buf, offset, "data-notification")
        return cls(long_iip, date_time, body)

    def to_json(self) -> dict[str, Any]:
        long_iip = self.long_invoke_id_and_priority
        body = self.body
        return {
            "type": "data-notification",
            "long_invoke_id_and_priority": long_iip,
            "invoke_id": long_iip & LONG_INVOKE_ID_MASK,
            "confirmed": bool(long_iip & LONG_CONFIRMED),
            "high_priority": bool(long_iip & LONG_HIGH_PRIORITY),
            "self_descriptive": bool(long_iip & SELF_DESCRIPTIVE),
            "break_on_error": bool(long_iip & BREAK_ON_ERROR),
            "date_time_hex": None
            if self.date_time is None
            else self.date_time.to_bytes().hex().upper(),
            "body_type": body.type.type_name,
            "body_length": _body_length(body),
            "body": body.to_json(),
        }


@dataclass(frozen=True, slots=True)
class EventNotificationRequest:
    """C2 | time OCTET STRING OPTIONAL (00, or 01 0C + 12 bytes) | descriptor | value (Data)."""

    time: CosemDateTime | None
    attribute: AttributeDescriptor
    value: Data

    def to_bytes(self) -> bytes:
        stamp = b"\x00" if self.time is None else b"\x01\x0c" + self.time.to_bytes()
        return (
            bytes((EVENT_NOTIFICATION_REQUEST,))
            + stamp
            + self.attribute.to_bytes()
            + encode_data(self.value)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        if len(buf) < 2 or buf[0] != EVENT_NOTIFICATION_REQUEST:
            raise DecodeError("not an event-notification-request")
        flag = buf[1]
        time: CosemDateTime | None = None
        if flag == 1:
            raw, offset = read_octet_string(buf, 2, "event-notification time")
            if len(raw) != 12:
                raise DecodeError(f"event-notification time must be 12 bytes, got {len(raw)}")
            time = CosemDateTime.from_bytes(raw)
        elif flag == 0:
            offset = 2
        else:
            raise DecodeError(f"OPTIONAL flag must be 00 or 01, got {flag:02X}")
        attribute, offset = AttributeDescriptor.decode(buf, offset)
        value, offset = decode_data(buf, offset)
        check_end(buf, offset, "event-notification-request")
        return cls(time, attribute, value)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "event-notification-request",
            "time_hex": None if self.time is None else self.time.to_bytes().hex().upper(),
            **self.attribute.to_json(),
            "data": self.value.to_json(),
        }
