"""Profile generic (class 7) reads: selective-access parameters and typed rows.

Pure functions so the session stays thin and the decoding can be fuzzed on its own."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cosem_objects.apdu.common import SelectiveAccess
from cosem_objects.classes import Clock, ProfileGeneric, ScalerUnit
from cosem_objects.data import Data, DataType
from cosem_objects.dates import CosemDateTime
from cosem_objects.errors import DecodeError
from cosem_objects.obis import Obis


@dataclass(frozen=True, slots=True)
class CaptureObject:
    class_id: int
    obis: Obis
    attribute: int
    data_index: int = 0

    @classmethod
    def from_data(cls, data: Data) -> CaptureObject:
        if data.type is not DataType.STRUCTURE or len(data.value) != 4:
            raise DecodeError("capture object definition must be a structure of 4")
        class_id, name, attribute, index = (element.value for element in data.value)
        if not isinstance(name, bytes):
            raise DecodeError("capture object logical name must be an octet-string")
        return cls(int(class_id), Obis.from_bytes(name), int(attribute), int(index))

    def to_data(self) -> Data:
        return Data.structure(
            [
                Data.long_unsigned(self.class_id),
                Data.octet_string(self.obis.to_bytes()),
                Data.integer(self.attribute),
                Data.long_unsigned(self.data_index),
            ]
        )

    @property
    def is_clock(self) -> bool:
        return self.class_id == Clock.CLASS_ID and self.attribute == Clock.TIME

    @property
    def name(self) -> str:
        return f"{self.obis}:{self.attribute}"


def parse_capture_objects(data: Data) -> list[CaptureObject]:
    if data.type is not DataType.ARRAY:
        raise DecodeError("capture_objects must be an array")
    return [CaptureObject.from_data(element) for element in data.value]


def range_access(
    clock_column: CaptureObject, start: dt.datetime, end: dt.datetime, deviation_sign: int = 1
) -> SelectiveAccess:
    """Range descriptor on the clock column, all columns selected."""

    def stamp(moment: dt.datetime) -> Data:
        return Data.octet_string(
            CosemDateTime.from_datetime(moment, deviation_sign=deviation_sign).to_bytes()
        )

    return SelectiveAccess(
        ProfileGeneric.SELECTOR_RANGE,
        Data.structure([clock_column.to_data(), stamp(start), stamp(end), Data.array([])]),
    )


def entry_access(from_entry: int, to_entry: int = 0) -> SelectiveAccess:
    """Entry descriptor: 1-based entries, to_entry 0 = the newest, all columns."""
    return SelectiveAccess(
        ProfileGeneric.SELECTOR_ENTRY,
        Data.structure(
            [
                Data.double_long_unsigned(from_entry),
                Data.double_long_unsigned(to_entry),
                Data.long_unsigned(1),
                Data.long_unsigned(0),
            ]
        ),
    )


@dataclass(frozen=True, slots=True)
class ProfileRow:
    timestamp: dt.datetime | None
    values: dict[str, Any]


def _as_datetime(element: Data, deviation_sign: int) -> dt.datetime | None:
    raw = element.value
    if element.type is DataType.DATE_TIME:
        stamp = raw
    elif element.type is DataType.OCTET_STRING and isinstance(raw, bytes) and len(raw) == 12:
        stamp = CosemDateTime.from_bytes(raw)
    else:
        return None
    try:
        return stamp.to_datetime(deviation_sign)
    except DecodeError:
        return None


def decode_rows(
    buffer: Data,
    columns: list[CaptureObject],
    capture_period_s: int = 0,
    scalers: dict[str, ScalerUnit] | None = None,
    deviation_sign: int = 1,
) -> list[ProfileRow]:
    """Rows of a profile buffer. A null clock cell (buffer compression) is the previous row's
    time plus the capture period."""
    if buffer.type is not DataType.ARRAY:
        raise DecodeError("profile buffer must be an array")
    scalers = scalers or {}
    clock_index = next((i for i, c in enumerate(columns) if c.is_clock), None)
    rows: list[ProfileRow] = []
    previous: dt.datetime | None = None
    for entry in buffer.value:
        if entry.type is not DataType.STRUCTURE:
            raise DecodeError("profile entry must be a structure")
        cells = entry.value
        if columns and len(cells) != len(columns):
            raise DecodeError(f"profile entry has {len(cells)} cells for {len(columns)} columns")
        timestamp: dt.datetime | None = None
        values: dict[str, Any] = {}
        for index, cell in enumerate(cells):
            column = columns[index] if columns else None
            if index == clock_index:
                timestamp = _as_datetime(cell, deviation_sign)
                if timestamp is None and cell.type is DataType.NULL_DATA and previous is not None:
                    timestamp = previous + dt.timedelta(seconds=capture_period_s)
                continue
            name = column.name if column else str(index)
            value = cell.to_python()
            scaler = scalers.get(str(column.obis)) if column else None
            if (
                scaler is not None
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                value = scaler.apply(value)
            values[name] = value
        previous = timestamp or previous
        rows.append(ProfileRow(timestamp, values))
    return rows
