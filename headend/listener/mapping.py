"""What a push says, in OBIS terms (sans-IO): register values, event codes, a time, a name.

A DataNotification's body is one structure whose elements follow the meter's push object list
(Push setup, class 40, attribute 2: {class_id, logical_name, attribute_index, data_index}).
With the list known, element i is object i's attribute: the push setup's own logical name is
skipped, the clock gives the time, the logical device name or serial number names the sender,
an event-code object (0.0.96.11.x.255) is an event of log 0.0.99.98.x.255, and every other
value attribute is a reading. Without the list (first contact, or a meter that will not say),
the vendor layouts of docs/dlms-notes.md 7.2 that name their objects inline ({OBIS, value} in
a structure, flat or nested) are read. An EventNotificationRequest names its attribute itself."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cosem_objects.apdu.notifications import DataNotification, EventNotificationRequest
from cosem_objects.data import Data, DataType
from cosem_objects.dates import CosemDateTime
from cosem_objects.errors import DecodeError
from cosem_objects.obis import Obis

__all__ = [
    "PushContent",
    "PushObject",
    "map_notification",
    "parse_object_list",
    "setup_of",
]

PUSH_SETUP_CLASS: Final = 40
CLOCK: Final = "0.0.1.0.0.255"
NAME_OBJECTS: Final = frozenset({"0.0.42.0.0.255", "0.0.96.1.0.255"})
MAX_VALUES: Final = 512
"""At most this many values are taken from one push (a hostile body cannot flood storage)."""


@dataclass(frozen=True, slots=True)
class PushObject:
    class_id: int
    obis: str
    attribute: int
    data_index: int = 0


@dataclass(slots=True)
class PushContent:
    ts: dt.datetime | None = None
    readings: list[tuple[str, Any]] = field(default_factory=list)
    events: list[tuple[str, int]] = field(default_factory=list)  # (log OBIS, code)
    name: str | None = None
    problems: list[str] = field(default_factory=list)


def event_log_of(obis: str) -> str | None:
    """The log an event-code object (0.0.96.11.x.255) belongs to: 0.0.99.98.x.255."""
    parts = obis.split(".")
    if len(parts) == 6 and parts[:4] == ["0", "0", "96", "11"]:
        return f"0.0.99.98.{parts[4]}.255"
    return None


def _is_push_setup(obis: str) -> bool:
    """Push setups are 0.b.25.9.0.255 (IDIS numbers its alarm push setup b = 4)."""
    parts = obis.split(".")
    return len(parts) == 6 and parts[2:4] == ["25", "9"]


def setup_of(notification: DataNotification | EventNotificationRequest) -> str | None:
    """The Push setup a DataNotification names as its first element (IDIS: every push
    starts with the logical name of the setup whose object list it follows)."""
    if not isinstance(notification, DataNotification):
        return None
    body = notification.body
    if body.type is not DataType.STRUCTURE or not body.value:
        return None
    first = body.value[0]
    raw = first.value
    if first.type is DataType.OCTET_STRING and isinstance(raw, bytes) and len(raw) == 6:
        obis = str(Obis.from_bytes(raw))
        return obis if _is_push_setup(obis) else None
    return None


def parse_object_list(value: Data) -> list[PushObject]:
    """Push setup attribute 2 as read from the meter; DecodeError when it is not one."""
    if value.type is not DataType.ARRAY:
        raise DecodeError("push object list is not an array")
    objects: list[PushObject] = []
    for entry in value.value:
        if entry.type is not DataType.STRUCTURE or len(entry.value) < 3:
            raise DecodeError("push object list entry is not {class, name, attribute, index}")
        class_id, name, attribute = (e.value for e in entry.value[:3])
        index = entry.value[3].value if len(entry.value) > 3 else 0
        if not isinstance(name, bytes) or len(name) != 6:
            raise DecodeError("push object list entry without a 6-byte logical name")
        if not all(isinstance(v, int) for v in (class_id, attribute, index)):
            raise DecodeError("push object list entry with a non-integer field")
        objects.append(
            PushObject(int(class_id), str(Obis.from_bytes(name)), int(attribute), int(index))
        )
    return objects


def _time(value: Data, deviation_sign: int) -> dt.datetime | None:
    raw = value.value
    try:
        if value.type is DataType.DATE_TIME and isinstance(raw, CosemDateTime):
            return raw.utc(deviation_sign)
        if value.type is DataType.OCTET_STRING and isinstance(raw, bytes) and len(raw) == 12:
            return CosemDateTime.from_bytes(raw).utc(deviation_sign)
    except (DecodeError, ValueError, OverflowError):
        return None
    return None


def _text(value: Data) -> str | None:
    raw = value.value
    if isinstance(raw, bytes):
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
        return text if text.isprintable() and text else None
    if isinstance(raw, str):
        return raw if raw.isprintable() and raw else None
    return None


def _scalar(value: Data) -> Any:
    python = value.to_python()
    if isinstance(python, CosemDateTime):
        moment = _time(value, 1)
        return None if moment is None else moment.isoformat()
    if isinstance(python, list):
        return None  # structures are not register values
    return python


def _take(content: PushContent, obis: str, value: Data, deviation_sign: int) -> None:
    if len(content.readings) + len(content.events) >= MAX_VALUES:
        if not content.problems or content.problems[-1] != "too many values":
            content.problems.append("too many values")
        return
    if _is_push_setup(obis):
        return  # an object list layout read without its list: its first element names the setup
    if obis == CLOCK:
        content.ts = _time(value, deviation_sign) or content.ts
        return
    if obis in NAME_OBJECTS:
        content.name = _text(value) or content.name
        return
    log = event_log_of(obis)
    if log is not None:
        if isinstance(value.value, int) and not isinstance(value.value, bool):
            content.events.append((log, int(value.value)))
        return
    scalar = _scalar(value)
    if scalar is not None:
        content.readings.append((obis, scalar))


def _inline(content: PushContent, body: Data, deviation_sign: int, depth: int = 0) -> None:
    """Vendor layouts that name their objects: {OBIS, value, ...} runs, flat or nested."""
    if depth > 4 or body.type not in (DataType.STRUCTURE, DataType.ARRAY):
        return
    elements: Sequence[Data] = body.value
    i = 0
    while i < len(elements):
        element = elements[i]
        raw = element.value
        if (
            element.type is DataType.OCTET_STRING
            and isinstance(raw, bytes)
            and len(raw) == 6
            and i + 1 < len(elements)
        ):
            _take(content, str(Obis.from_bytes(raw)), elements[i + 1], deviation_sign)
            i += 2
            continue
        if element.type in (DataType.STRUCTURE, DataType.ARRAY):
            _inline(content, element, deviation_sign, depth + 1)
        i += 1


def map_notification(
    notification: DataNotification | EventNotificationRequest,
    objects: Sequence[PushObject] | None,
    deviation_sign: int = 1,
) -> PushContent:
    content = PushContent()
    if isinstance(notification, EventNotificationRequest):
        if notification.time is not None:
            content.ts = _safe_utc(notification.time, deviation_sign)
        _take(content, str(notification.attribute.obis), notification.value, deviation_sign)
        return content
    if notification.date_time is not None:
        content.ts = _safe_utc(notification.date_time, deviation_sign)
    body = notification.body
    elements = body.value if body.type is DataType.STRUCTURE else None
    if objects and elements is not None and len(elements) == len(objects):
        for obj, value in zip(objects, elements, strict=True):
            if obj.class_id == PUSH_SETUP_CLASS or (obj.attribute != 2 and obj.obis != CLOCK):
                continue
            _take(content, obj.obis, value, deviation_sign)
        return content
    if objects and elements is not None:
        content.problems.append(
            f"body has {len(elements)} elements, the push object list {len(objects)}"
        )
    _inline(content, body, deviation_sign)
    return content


def _safe_utc(moment: CosemDateTime, deviation_sign: int) -> dt.datetime | None:
    try:
        return moment.utc(deviation_sign)
    except (DecodeError, ValueError, OverflowError):
        return None
