"""Profile generic (class 7): load profile, daily billing profile and the event logs.

Periodic profiles are not stored: a row is the meter's energy at a capture instant, computed
when it is read (the load curve is closed-form), so a 42-day, 15-minute buffer costs nothing
until someone reads it. Selective access by range (clock column) and by entry are applied to
row positions before any row is built."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cosem_objects.apdu.common import ActionResult, DataAccessResult, SelectiveAccess
from cosem_objects.classes import Obises, ProfileGeneric
from cosem_objects.data import Data, DataType
from cosem_objects.obis import Obis
from simulators.event_logs import (
    DISCONNECTOR_LOG,
    EVENT_CODE_OBJECTS,
    FRAUD_LOG,
    LOG_CAPACITY,
    POWER_FAILURE_LOG,
    STANDARD_LOG,
)
from simulators.objects.clock import as_date_time
from simulators.objects.model import (
    AccessFailure,
    AccessLevel,
    AssociationContext,
    AttributeDef,
    CosemObject,
    Meter,
    MethodDef,
    MethodHandler,
)
from simulators.objects.registers import logical_name_attribute

SORT_FIFO = 1

Row = tuple[Data, ...]


@dataclass(frozen=True, slots=True)
class Column:
    class_id: int
    obis: Obis
    attribute: int
    data_index: int = 0

    def to_data(self) -> Data:
        return Data.structure(
            [
                Data.long_unsigned(self.class_id),
                Data.octet_string(self.obis.to_bytes()),
                Data.integer(self.attribute),
                Data.long_unsigned(self.data_index),
            ]
        )

    def matches(self, definition: Data) -> bool:
        if definition.type is not DataType.STRUCTURE or len(definition.value) < 3:
            raise AccessFailure(DataAccessResult.TYPE_UNMATCHED)
        class_id, name, attribute = (element.value for element in definition.value[:3])
        return (class_id, name, attribute) == (self.class_id, self.obis.to_bytes(), self.attribute)


CLOCK_COLUMN = Column(8, Obises.CLOCK, 2)


class ProfileSource:
    """Where a profile's rows come from; positions are 0-based, oldest first."""

    columns: tuple[Column, ...]
    capture_period: int
    capacity: int

    def entries(self, meter: Meter) -> int:
        raise NotImplementedError

    def locate(self, meter: Meter, start: float, end: float) -> tuple[int, int]:
        """Positions [lo, hi) of the rows captured from `start` to `end` (unix, inclusive)."""
        raise NotImplementedError

    def rows(self, meter: Meter, lo: int, hi: int) -> list[Row]:
        raise NotImplementedError


class PeriodicProfile(ProfileSource):
    """Captures every `capture_period` seconds of local time; always holds `capacity` rows."""

    def __init__(
        self,
        columns: Sequence[Column],
        capture_period: int,
        capacity: int,
        values: Callable[[Meter, float], Sequence[Data]],
    ) -> None:
        self.columns = (CLOCK_COLUMN, *columns)
        self.capture_period = capture_period
        self.capacity = capacity
        self._values = values

    def _offset(self, meter: Meter) -> int:
        return meter.config.utc_offset_min * 60

    def _last(self, meter: Meter) -> int:
        return math.floor((meter.now() + self._offset(meter)) / self.capture_period)

    def entries(self, meter: Meter) -> int:
        return self.capacity

    def locate(self, meter: Meter, start: float, end: float) -> tuple[int, int]:
        offset = self._offset(meter)
        last = self._last(meter)
        first = last - self.capacity + 1
        low = max(math.ceil((start + offset) / self.capture_period), first)
        high = min(math.floor((end + offset) / self.capture_period), last)
        if high < low:
            return 0, 0
        return low - first, high - first + 1

    def rows(self, meter: Meter, lo: int, hi: int) -> list[Row]:
        offset = self._offset(meter)
        first = self._last(meter) - self.capacity + 1
        rows = []
        for position in range(lo, hi):
            t = (first + position) * self.capture_period - offset
            stamp = Data.octet_string(meter.date_time(t).to_bytes())
            rows.append((stamp, *self._values(meter, t)))
        return rows


class EventLog(ProfileSource):
    """An event log: rows stored on the meter as (time, event code), read through `log`."""

    capture_period = 0
    capacity = LOG_CAPACITY

    def __init__(self, log: Obis) -> None:
        self.log = log
        self.columns = (CLOCK_COLUMN, Column(1, EVENT_CODE_OBJECTS[log], 2))

    def entries(self, meter: Meter) -> int:
        return len(meter.event_log(self.log))

    def locate(self, meter: Meter, start: float, end: float) -> tuple[int, int]:
        rows = meter.event_log(self.log)
        positions = [i for i, (t, _) in enumerate(rows) if start <= t <= end]
        if not positions:
            return 0, 0
        return positions[0], positions[-1] + 1

    def rows(self, meter: Meter, lo: int, hi: int) -> list[Row]:
        return [
            (Data.octet_string(meter.date_time(t).to_bytes()), Data.unsigned(code))
            for t, code in meter.event_log(self.log)[lo:hi]
        ]


def _energy_wh(value: float) -> Data:
    return Data.double_long_unsigned(min(max(round(value), 0), 2**32 - 1))


def _load_values(meter: Meter, t: float) -> Sequence[Data]:
    total, _t1, _t2, export = meter.energy(t)
    return _energy_wh(total), _energy_wh(export)


def _billing_values(meter: Meter, t: float) -> Sequence[Data]:
    return tuple(_energy_wh(value) for value in meter.energy(t))


LOAD_PROFILE = PeriodicProfile(
    (Column(3, Obis(1, 0, 1, 8, 0), 2), Column(3, Obis(1, 0, 2, 8, 0), 2)),
    capture_period=900,
    capacity=42 * 96,
    values=_load_values,
)
BILLING_PROFILE = PeriodicProfile(
    (
        Column(3, Obis(1, 0, 1, 8, 0), 2),
        Column(3, Obis(1, 0, 1, 8, 1), 2),
        Column(3, Obis(1, 0, 1, 8, 2), 2),
        Column(3, Obis(1, 0, 2, 8, 0), 2),
    ),
    capture_period=86400,
    capacity=62,
    values=_billing_values,
)
EVENT_LOGS = {
    log: EventLog(log) for log in (STANDARD_LOG, FRAUD_LOG, DISCONNECTOR_LOG, POWER_FAILURE_LOG)
}


# -- selective access --------------------------------------------------------------------------
def _fields(parameters: Data, count: int) -> tuple[Data, ...]:
    if parameters.type is not DataType.STRUCTURE or len(parameters.value) != count:
        raise AccessFailure(DataAccessResult.TYPE_UNMATCHED)
    fields: tuple[Data, ...] = parameters.value
    return fields


def _integer(value: Data) -> int:
    if not isinstance(value.value, int) or isinstance(value.value, bool):
        raise AccessFailure(DataAccessResult.TYPE_UNMATCHED)
    return int(value.value)


def read_buffer(source: ProfileSource, meter: Meter, access: SelectiveAccess | None) -> Data:
    """Attribute 2 (buffer), whole or by range / entry descriptor."""
    columns: Sequence[int] = range(len(source.columns))
    if access is None:
        lo, hi = 0, source.entries(meter)
    elif access.selector == ProfileGeneric.SELECTOR_RANGE:
        restricting, start, end, selected = _fields(access.parameters, 4)
        if not CLOCK_COLUMN.matches(restricting):
            raise AccessFailure(DataAccessResult.OTHER_REASON)
        lo, hi = source.locate(
            meter,
            meter.parse_date_time(as_date_time(start)),
            meter.parse_date_time(as_date_time(end), upper=True),
        )
        if selected.type is not DataType.ARRAY:
            raise AccessFailure(DataAccessResult.TYPE_UNMATCHED)
        if selected.value:
            columns = [_column_index(source, definition) for definition in selected.value]
    elif access.selector == ProfileGeneric.SELECTOR_ENTRY:
        from_entry, to_entry, from_value, to_value = (
            _integer(f) for f in _fields(access.parameters, 4)
        )
        count = source.entries(meter)
        lo = max(from_entry, 1) - 1
        hi = count if to_entry == 0 else min(to_entry, count)
        first_column = max(from_value, 1) - 1
        last_column = len(source.columns) if to_value == 0 else to_value
        if first_column >= len(source.columns) or last_column < first_column + 1:
            raise AccessFailure(DataAccessResult.OTHER_REASON)
        columns = range(first_column, min(last_column, len(source.columns)))
        if hi <= lo:
            lo, hi = 0, 0
    else:
        raise AccessFailure(DataAccessResult.OTHER_REASON)
    rows = source.rows(meter, lo, hi)
    if len(columns) == len(source.columns):
        return Data.array([Data.structure(row) for row in rows])
    return Data.array([Data.structure([row[i] for i in columns]) for row in rows])


def _column_index(source: ProfileSource, definition: Data) -> int:
    for index, column in enumerate(source.columns):
        if column.matches(definition):
            return index
    raise AccessFailure(DataAccessResult.OTHER_REASON)


def _reset_log(log: Obis) -> MethodHandler:
    def reset(
        meter: Meter, _ctx: AssociationContext | None, _params: Data | None
    ) -> tuple[ActionResult, Data | None]:
        meter.event_log(log).clear()
        return ActionResult.SUCCESS, None

    return reset


def _denied(
    _meter: Meter, _ctx: AssociationContext | None, _params: Data | None
) -> tuple[ActionResult, Data | None]:
    return ActionResult.READ_WRITE_DENIED, None


def profile_object(obis: Obis, source: ProfileSource, read: AccessLevel) -> CosemObject:
    capture_objects = Data.array([column.to_data() for column in source.columns])
    period = Data.double_long_unsigned(source.capture_period)
    capacity = Data.double_long_unsigned(source.capacity)
    sort_object = Data.structure(
        [Data.long_unsigned(0), Data.octet_string(bytes(6)), Data.integer(0), Data.long_unsigned(0)]
    )
    reset = _reset_log(source.log) if isinstance(source, EventLog) else None
    return CosemObject(
        class_id=ProfileGeneric.CLASS_ID,
        version=1,
        obis=obis,
        attributes={
            1: logical_name_attribute(obis, read),
            ProfileGeneric.BUFFER: AttributeDef(
                read,
                lambda meter, _ctx, access: read_buffer(source, meter, access),
                selectors=(ProfileGeneric.SELECTOR_RANGE, ProfileGeneric.SELECTOR_ENTRY),
            ),
            ProfileGeneric.CAPTURE_OBJECTS: AttributeDef(read, lambda _m, _c, _a: capture_objects),
            ProfileGeneric.CAPTURE_PERIOD: AttributeDef(read, lambda _m, _c, _a: period),
            ProfileGeneric.SORT_METHOD: AttributeDef(read, lambda _m, _c, _a: Data.enum(SORT_FIFO)),
            ProfileGeneric.SORT_OBJECT: AttributeDef(read, lambda _m, _c, _a: sort_object),
            ProfileGeneric.ENTRIES_IN_USE: AttributeDef(
                read, lambda meter, _c, _a: Data.double_long_unsigned(source.entries(meter))
            ),
            ProfileGeneric.PROFILE_ENTRIES: AttributeDef(read, lambda _m, _c, _a: capacity),
        },
        methods={
            ProfileGeneric.RESET: MethodDef(
                AccessLevel.MANAGEMENT if reset is not None else None,
                reset or _denied,
            ),
            ProfileGeneric.CAPTURE: MethodDef(None, _denied),
        },
    )
