"""Limiter (class 71, 0.0.17.0.255): the load limit a prepaid head-end may set instead of
switching a customer off. threshold_normal (attribute 4) is what the head-end sets; the
meter enforces the active threshold on its load (simulators/limiter.py)."""

from __future__ import annotations

from cosem_objects.apdu.common import DataAccessResult, SelectiveAccess
from cosem_objects.classes import Limiter, Obises, Register
from cosem_objects.data import Data, DataType
from cosem_objects.obis import Obis
from simulators.objects.model import (
    AccessLevel,
    AssociationContext,
    AttributeDef,
    CosemObject,
    Meter,
)
from simulators.objects.registers import logical_name_attribute

__all__ = ["LIMITER"]

MONITORED = Obis(1, 0, 1, 7, 0, 255)  # active power import (W, scaler 0)
_U32 = (DataType.DOUBLE_LONG_UNSIGNED, DataType.LONG_UNSIGNED, DataType.UNSIGNED)


def _monitored(_m: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.structure(
        [
            Data.long_unsigned(Register.CLASS_ID),
            Data.octet_string(MONITORED.to_bytes()),
            Data.integer(2),
        ]
    )


def _active(meter: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.double_long_unsigned(meter.limiter.threshold_normal)


def _normal(meter: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.double_long_unsigned(meter.limiter.threshold_normal)


def _set_normal(meter: Meter, _c: AssociationContext | None, value: Data) -> DataAccessResult:
    if value.type not in _U32:
        return DataAccessResult.TYPE_UNMATCHED
    meter.limiter.set_threshold(int(value.value), meter.now())
    return DataAccessResult.SUCCESS


def _emergency(meter: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.double_long_unsigned(meter.limiter.threshold_emergency)


def _over(meter: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.double_long_unsigned(meter.limiter.min_over_threshold_duration)


def _under(meter: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.double_long_unsigned(meter.limiter.min_under_threshold_duration)


LIMITER = CosemObject(
    class_id=Limiter.CLASS_ID,
    version=0,
    obis=Obises.LIMITER,
    attributes={
        1: logical_name_attribute(Obises.LIMITER, AccessLevel.READER),
        Limiter.MONITORED_VALUE: AttributeDef(AccessLevel.READER, _monitored),
        Limiter.THRESHOLD_ACTIVE: AttributeDef(AccessLevel.READER, _active),
        Limiter.THRESHOLD_NORMAL: AttributeDef(
            AccessLevel.READER, _normal, AccessLevel.MANAGEMENT, _set_normal
        ),
        Limiter.THRESHOLD_EMERGENCY: AttributeDef(AccessLevel.READER, _emergency),
        Limiter.MIN_OVER_THRESHOLD_DURATION: AttributeDef(AccessLevel.READER, _over),
        Limiter.MIN_UNDER_THRESHOLD_DURATION: AttributeDef(AccessLevel.READER, _under),
    },
    methods={},
)
