"""Clock (class 8) of the simulated meter: drifting time, settable, with deviation and status."""

from __future__ import annotations

from cosem_objects.apdu.common import ActionResult, DataAccessResult, SelectiveAccess
from cosem_objects.classes import Clock, Obises
from cosem_objects.data import Data, DataType
from cosem_objects.dates import CosemDateTime
from cosem_objects.errors import DecodeError
from simulators.objects.model import (
    AccessFailure,
    AccessLevel,
    AssociationContext,
    AttributeDef,
    CosemObject,
    Meter,
    MethodDef,
)
from simulators.objects.registers import logical_name_attribute

# DST rules shown for completeness (DST itself is disabled): last Sunday of March 02:00 and
# of October 03:00, with wildcards for the year and deviation.
_DST_BEGIN = CosemDateTime(None, 3, 0xFE, 7, 2, 0, 0, 0, None, None)
_DST_END = CosemDateTime(None, 10, 0xFE, 7, 3, 0, 0, 0, None, None)
CLOCK_STATUS_OK = 0x00


def as_date_time(value: Data) -> CosemDateTime:
    """A date-time from either an octet-string(12) or a date-time typed value."""
    if value.type is DataType.DATE_TIME:
        stamp: CosemDateTime = value.value
        return stamp
    if value.type is DataType.OCTET_STRING and len(value.value) == 12:
        try:
            return CosemDateTime.from_bytes(value.value)
        except DecodeError as exc:
            raise AccessFailure(DataAccessResult.TYPE_UNMATCHED) from exc
    raise AccessFailure(DataAccessResult.TYPE_UNMATCHED)


def _time(meter: Meter, _ctx: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    stamp = meter.date_time(meter.meter_time(), CLOCK_STATUS_OK)
    return Data.octet_string(stamp.to_bytes())


def _set_time(meter: Meter, _ctx: AssociationContext | None, value: Data) -> DataAccessResult:
    stamp = as_date_time(value)
    if None in (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute):
        return DataAccessResult.OTHER_REASON
    if (stamp.month is not None and stamp.month > 12) or (stamp.day is not None and stamp.day > 31):
        return DataAccessResult.OTHER_REASON
    meter.set_meter_time(meter.parse_date_time(stamp))
    return DataAccessResult.SUCCESS


def _time_zone(meter: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    # Same sign as the date-time deviation (dlms-notes 4.3: deviation +120 with time_zone 120).
    return Data.long(-meter.utc_offset_min)


def _set_time_zone(meter: Meter, _ctx: AssociationContext | None, value: Data) -> DataAccessResult:
    if value.type is not DataType.LONG:
        return DataAccessResult.TYPE_UNMATCHED
    if not -720 <= value.value <= 720:
        return DataAccessResult.OTHER_REASON
    meter.utc_offset_min = -int(value.value)
    return DataAccessResult.SUCCESS


def _constant(data: Data) -> AttributeDef:
    return AttributeDef(AccessLevel.PUBLIC, lambda _m, _c, _a: data)


def _shift_time(
    meter: Meter, _ctx: AssociationContext | None, params: Data | None
) -> tuple[ActionResult, Data | None]:
    if params is None or params.type is not DataType.LONG:
        return ActionResult.TYPE_UNMATCHED, None
    if not -900 <= params.value <= 900:
        return ActionResult.OTHER_REASON, None
    meter.shift_time(float(params.value))
    return ActionResult.SUCCESS, None


def _adjust(step: int) -> MethodDef:
    def call(
        meter: Meter, _ctx: AssociationContext | None, _params: Data | None
    ) -> tuple[ActionResult, Data | None]:
        now = meter.meter_time()
        meter.shift_time(round(now / step) * step - now)
        return ActionResult.SUCCESS, None

    return MethodDef(AccessLevel.MANAGEMENT, call)


CLOCK = CosemObject(
    class_id=Clock.CLASS_ID,
    version=0,
    obis=Obises.CLOCK,
    attributes={
        1: logical_name_attribute(Obises.CLOCK, AccessLevel.PUBLIC),
        Clock.TIME: AttributeDef(AccessLevel.PUBLIC, _time, AccessLevel.MANAGEMENT, _set_time),
        Clock.TIME_ZONE: AttributeDef(
            AccessLevel.PUBLIC, _time_zone, AccessLevel.MANAGEMENT, _set_time_zone
        ),
        Clock.STATUS: _constant(Data.unsigned(CLOCK_STATUS_OK)),
        Clock.DAYLIGHT_SAVINGS_BEGIN: _constant(Data.octet_string(_DST_BEGIN.to_bytes())),
        Clock.DAYLIGHT_SAVINGS_END: _constant(Data.octet_string(_DST_END.to_bytes())),
        Clock.DAYLIGHT_SAVINGS_DEVIATION: _constant(Data.integer(60)),
        Clock.DAYLIGHT_SAVINGS_ENABLED: _constant(Data.boolean(False)),
        Clock.CLOCK_BASE: _constant(Data.enum(1)),
    },
    methods={
        Clock.ADJUST_TO_QUARTER: _adjust(900),
        Clock.ADJUST_TO_MINUTE: _adjust(60),
        Clock.SHIFT_TIME: MethodDef(AccessLevel.MANAGEMENT, _shift_time),
    },
)
