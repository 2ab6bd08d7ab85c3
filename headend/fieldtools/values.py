"""COSEM Data as a field engineer reads it: every value with its type, and the meter values a
push or a reply carries (OBIS, raw, scaler, unit, value).

Octet strings are shown as hex, and also as what they most likely are: an OBIS code
(a.b.c.d.e.f), a date-time (ISO 8601 with its offset when the deviation is given) or text when
every byte is printable. Numbers stay raw; where the structure carries a scaler_unit the scaler
and unit are printed beside, with the scaled value, never instead of the raw number.

The layouts of meter values are the ones the real captures in ../shared/vectors show (see
docs in dlms-notes 7.2): {OBIS, value[, {scaler, unit}]} structures (Aidon, Kaifa), flat OBIS,
value pairs (Kamstrup, L+G encrypted), and the L+G push whose first element is the push object
list ({class, OBIS, attribute, index} per capture object) followed by one value per object."""

from __future__ import annotations

from typing import Any

from cosem_objects.classes import plain_value
from cosem_objects.data import Data, DataType
from cosem_objects.dates import CosemDate, CosemDateTime, CosemTime
from cosem_objects.errors import DecodeError
from cosem_objects.obis import Obis
from cosem_objects.units import unit_name

_CONTAINERS = (DataType.ARRAY, DataType.STRUCTURE)
_NUMBER_TYPES = frozenset(
    {
        DataType.INTEGER,
        DataType.LONG,
        DataType.UNSIGNED,
        DataType.LONG_UNSIGNED,
        DataType.DOUBLE_LONG,
        DataType.DOUBLE_LONG_UNSIGNED,
        DataType.LONG64,
        DataType.LONG64_UNSIGNED,
        DataType.FLOAT32,
        DataType.FLOAT64,
        DataType.ENUM,
    }
)
MAX_ROWS = 10_000
"""Rows shown per APDU: a profile buffer can hold far more than a screen (the JSON has all)."""


def printable(raw: bytes) -> str | None:
    if raw and all(32 <= b < 127 for b in raw):
        return raw.decode("ascii")
    return None


def datetime_text(stamp: CosemDateTime) -> str:
    """ISO 8601 (with the offset when the deviation is given); wildcards as '*'."""
    if stamp.is_complete:
        try:
            return stamp.to_datetime().isoformat()
        except DecodeError:
            pass  # a deviation out of range, or a day that does not exist: show the fields
    parts = [stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second]
    y, mo, d, h, mi, s = ("*" if p is None else f"{p:02d}" for p in parts)
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}"


def _date_like(value: CosemDateTime | CosemDate | CosemTime) -> str:
    if isinstance(value, CosemDateTime):
        return datetime_text(value)
    fields = (
        (value.year, value.month, value.day)
        if isinstance(value, CosemDate)
        else (value.hour, value.minute, value.second)
    )
    text = ["*" if f is None else f"{f:02d}" for f in fields]
    return ("-" if isinstance(value, CosemDate) else ":").join(text)


def octet_views(raw: bytes) -> dict[str, str]:
    """hex, and the readings an octet string most likely has (obis, datetime, text)."""
    views = {"hex": raw.hex().upper()}
    if len(raw) == 12:
        try:
            stamp = CosemDateTime.from_bytes(raw)
            if stamp.is_complete:
                stamp.local_datetime()  # raises on a day that does not exist
                views["datetime"] = datetime_text(stamp)
        except DecodeError:
            pass
    if len(raw) == 6 and raw[5] == 0xFF:
        views["obis"] = str(Obis.from_bytes(raw))
    text = printable(raw)
    if text is not None:
        views["text"] = text
    return views


def typed(data: Data) -> dict[str, Any]:
    """The typed JSON tree of one value: containers nest under "items"."""
    kind = data.type
    out: dict[str, Any] = {"type": kind.type_name}
    if kind in _CONTAINERS:
        out["items"] = [typed(item) for item in data.value]
    elif kind is DataType.COMPACT_ARRAY:
        out["items"] = [typed(item) for item in data.value.elements]
    elif kind is DataType.OCTET_STRING:
        out.update(octet_views(data.value))
    elif kind in (DataType.DATE_TIME, DataType.DATE, DataType.TIME):
        out["hex"] = data.value.to_bytes().hex().upper()
        out["text"] = _date_like(data.value)
    elif kind is DataType.BIT_STRING:
        out["value"] = data.value.bits
    else:
        out["value"] = data.value
    return out


def shown(data: Data) -> str:
    """One line for a table cell."""
    kind = data.type
    if kind in _CONTAINERS:
        return f"{len(data.value)} elements"
    if kind is DataType.COMPACT_ARRAY:
        return f"{len(data.value.elements)} elements"
    if kind is DataType.OCTET_STRING:
        views = octet_views(data.value)
        best = views.get("obis") or views.get("datetime") or views.get("text")
        return f"{best}  ({views['hex']})" if best else views["hex"] or "(empty)"
    if kind in (DataType.DATE_TIME, DataType.DATE, DataType.TIME):
        return _date_like(data.value)
    if kind is DataType.BIT_STRING:
        return data.value.bits
    if kind is DataType.NULL_DATA:
        return "null"
    return repr(data.value) if isinstance(data.value, str) else str(data.value)


def rows(data: Data, path: str = "") -> list[tuple[str, str, str]]:
    """(path, type, shown) for the value and everything inside it, depth first."""
    out: list[tuple[str, str, str]] = []
    stack: list[tuple[str, Data]] = [(path or "value", data)]
    while stack and len(out) < MAX_ROWS:
        where, item = stack.pop()
        out.append((where, item.type.type_name, shown(item)))
        children: tuple[Data, ...] = ()
        if item.type in _CONTAINERS:
            children = item.value
        elif item.type is DataType.COMPACT_ARRAY:
            children = item.value.elements
        stack.extend((f"{where}[{i}]", child) for i, child in reversed(list(enumerate(children))))
    return out


# -- meter values --------------------------------------------------------------------------------
def _is_obis(item: Data) -> bool:
    return item.type is DataType.OCTET_STRING and len(item.value) == 6


def _is_scaler_unit(item: Data) -> bool:
    return (
        item.type is DataType.STRUCTURE
        and len(item.value) == 2
        and item.value[0].type is DataType.INTEGER
        and item.value[1].type is DataType.ENUM
    )


def meter_value(
    obis: Obis, item: Data, scaler_unit: Data | None = None, **extra: Any
) -> dict[str, Any]:
    """One meter value in the vectors' `values` shape (plus the unit's name)."""
    scaler = unit = None
    if scaler_unit is not None:
        scaler, unit = scaler_unit.value[0].value, scaler_unit.value[1].value
    raw: Any = item.value
    value: Any
    if item.type is DataType.OCTET_STRING:
        raw = item.value.hex().upper()
        value = plain_value(item)
    elif item.type in _NUMBER_TYPES:
        value = raw if scaler is None else _scaled(raw, scaler)
    else:
        raw = value = plain_value(item) if item.type not in _CONTAINERS else typed(item)
    return {
        "obis": str(obis),
        **extra,
        "type": item.type.type_name,
        "raw": raw,
        "scaler": scaler,
        "unit": unit,
        "unit_name": unit_name(unit),
        "value": value,
    }


def _scaled(raw: int | float, scaler: int) -> int | float:
    if scaler >= 0 and isinstance(raw, int):
        return raw * 10**scaler
    return float(raw) * 10.0**scaler


def _push_object_list(first: Data) -> list[tuple[int, Obis, int]] | None:
    """(class, OBIS, attribute) of each capture object, when `first` is a push object list."""
    if first.type is not DataType.ARRAY or not first.value:
        return None
    out = []
    for entry in first.value:
        parts: tuple[Data, ...] = entry.value if entry.type is DataType.STRUCTURE else ()
        if (
            len(parts) != 4
            or not _is_obis(parts[1])
            or not isinstance(parts[0].value, int)
            or not isinstance(parts[2].value, int)
        ):
            return None
        out.append((int(parts[0].value), Obis.from_bytes(parts[1].value), int(parts[2].value)))
    return out


def meter_values(body: Data) -> list[dict[str, Any]]:
    """The OBIS-named values in a push body or a reply (empty when it has none)."""
    if body.type not in _CONTAINERS:
        return []
    items: tuple[Data, ...] = body.value
    if items:
        described = _push_object_list(items[0])
        if described is not None and len(described) == len(items):
            # The L+G layout: item 0 is the push object list (whose own value is itself).
            return [
                meter_value(obis, value, class_id=class_id, attribute=attribute)
                for (class_id, obis, attribute), value in zip(described[1:], items[1:], strict=True)
            ]
    found: list[dict[str, Any]] = []
    index = 0
    while index < len(items):
        item = items[index]
        parts: tuple[Data, ...] = item.value if item.type is DataType.STRUCTURE else ()
        if 2 <= len(parts) <= 3 and _is_obis(parts[0]):
            scaler_unit = parts[2] if len(parts) == 3 and _is_scaler_unit(parts[2]) else None
            found.append(meter_value(Obis.from_bytes(parts[0].value), parts[1], scaler_unit))
            index += 1
        elif (
            _is_obis(item) and index + 1 < len(items) and items[index + 1].type not in (_CONTAINERS)
        ):
            found.append(meter_value(Obis.from_bytes(item.value), items[index + 1]))
            index += 2
        elif item.type in _CONTAINERS and body.type is DataType.ARRAY:
            found.extend(meter_values(item))
            index += 1
        else:  # a list identifier, a header date-time, ...
            index += 1
    return found
