"""GET, SET and ACTION on a simulated meter: catalogue lookup, access rights, dispatch.

The COSEM services sit here rather than on SimMeter so that the meter (state) and the objects
(the catalogue and its handlers) each stand alone: this module is the one place that joins
them. Every call checks the object, its class, the attribute or method and the association's
rights before a handler runs; a handler's failure becomes the data-access-result a meter would
send. Calls without a context are made with full rights (control API and tests)."""

from __future__ import annotations

from typing import Any

from cosem_objects.apdu.common import ActionResult, DataAccessResult, SelectiveAccess
from cosem_objects.data import Data, DataType
from cosem_objects.errors import ProtocolError
from cosem_objects.obis import Obis
from simulators.meter import ENERGY_REGISTERS, SimMeter
from simulators.objects.catalogue import CATALOGUE
from simulators.objects.model import AccessFailure, AccessLevel, AssociationContext

# What a handler may raise on bad input; answered as type-unmatched.
_BAD_INPUT = (ProtocolError, ValueError, TypeError, AttributeError, IndexError, OverflowError)


def get_attribute(
    meter: SimMeter,
    class_id: int,
    obis: Obis,
    attribute: int,
    access: SelectiveAccess | None = None,
    *,
    context: AssociationContext | None = None,
) -> Data | DataAccessResult:
    item = CATALOGUE.get(obis)
    if item is None:
        return DataAccessResult.OBJECT_UNDEFINED
    if item.class_id != class_id:
        return DataAccessResult.OBJECT_CLASS_INCONSISTENT
    definition = item.attributes.get(attribute)
    if definition is None:
        return DataAccessResult.OBJECT_UNDEFINED
    level = context.level if context is not None else AccessLevel.MANAGEMENT
    if definition.read is None or level < definition.read:
        return DataAccessResult.READ_WRITE_DENIED
    if access is not None and access.selector not in definition.selectors:
        return DataAccessResult.OTHER_REASON
    if attribute == 2 and access is None:
        forced = meter.override(obis)
        if forced is not None:
            return forced
    try:
        return definition.get(meter, context, access)
    except AccessFailure as failure:
        return failure.result
    except _BAD_INPUT:
        return DataAccessResult.TYPE_UNMATCHED


def set_attribute(
    meter: SimMeter,
    class_id: int,
    obis: Obis,
    attribute: int,
    value: Data,
    access: SelectiveAccess | None = None,
    *,
    context: AssociationContext | None = None,
) -> DataAccessResult:
    item = CATALOGUE.get(obis)
    if item is None:
        return DataAccessResult.OBJECT_UNDEFINED
    if item.class_id != class_id:
        return DataAccessResult.OBJECT_CLASS_INCONSISTENT
    definition = item.attributes.get(attribute)
    if definition is None:
        return DataAccessResult.OBJECT_UNDEFINED
    level = context.level if context is not None else AccessLevel.MANAGEMENT
    if definition.set is None or definition.write is None or level < definition.write:
        return DataAccessResult.READ_WRITE_DENIED
    if access is not None:
        return DataAccessResult.OTHER_REASON
    try:
        return definition.set(meter, context, value)
    except AccessFailure as failure:
        return failure.result
    except _BAD_INPUT:
        return DataAccessResult.TYPE_UNMATCHED


def invoke_method(
    meter: SimMeter,
    class_id: int,
    obis: Obis,
    method: int,
    params: Data | None = None,
    *,
    context: AssociationContext | None = None,
) -> tuple[ActionResult, Data | None]:
    item = CATALOGUE.get(obis)
    if item is None:
        return ActionResult.OBJECT_UNDEFINED, None
    if item.class_id != class_id:
        return ActionResult.OBJECT_CLASS_INCONSISTENT, None
    definition = item.methods.get(method)
    if definition is None:
        return ActionResult.OBJECT_UNDEFINED, None
    level = context.level if context is not None else AccessLevel.MANAGEMENT
    if definition.level is None or level < definition.level:
        return ActionResult.READ_WRITE_DENIED, None
    try:
        return definition.call(meter, context, params)
    except AccessFailure as failure:
        return ActionResult(int(failure.result)), None
    except _BAD_INPUT:
        return ActionResult.TYPE_UNMATCHED, None


# -- values by OBIS (control API and tests) ------------------------------------------------------
def get_value(meter: SimMeter, obis: Obis | str) -> Data:
    """Attribute 2 of an object, with full rights."""
    code = obis if isinstance(obis, Obis) else Obis.parse(obis)
    item = CATALOGUE.get(code)
    if item is None:
        raise KeyError(f"no object {code}")
    result = get_attribute(meter, item.class_id, code, 2)
    if not isinstance(result, Data):
        raise KeyError(f"{code} attribute 2 unreadable: {result.name}")
    return result


def set_value(meter: SimMeter, obis: Obis | str, value: Any) -> None:
    """Force an object's value (attribute 2).

    Energy registers take a physical value in Wh and keep counting from it (an offset);
    other objects are frozen at the value. Numbers are physical values (the register's
    scaler is applied); a Data is used as it is."""
    code = obis if isinstance(obis, Obis) else Obis.parse(obis)
    current = get_value(meter, code)
    if code in ENERGY_REGISTERS and not isinstance(value, Data):
        meter.set_energy(code, float(value))
        return
    data = value if isinstance(value, Data) else _coerce(current, value, _scaler(meter, code))
    meter.freeze(code, data)


def _scaler(meter: SimMeter, obis: Obis) -> int:
    item = CATALOGUE.get(obis)
    if item is None or 3 not in item.attributes or item.class_id not in (3, 4):
        return 0
    scaler_unit = get_attribute(meter, item.class_id, obis, 3)
    if isinstance(scaler_unit, Data) and scaler_unit.type is DataType.STRUCTURE:
        return int(scaler_unit.value[0].value)
    return 0


def _coerce(current: Data, value: Any, scaler: int) -> Data:
    """A Python value as Data of the same type as the object's current value."""
    kind = current.type
    if kind is DataType.BOOLEAN:
        return Data.boolean(bool(value))
    if kind in (DataType.OCTET_STRING,):
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return Data.octet_string(raw)
    if kind in (DataType.VISIBLE_STRING, DataType.UTF8_STRING):
        text = value.decode() if isinstance(value, bytes) else str(value)
        return Data(kind, text)
    if kind in (DataType.FLOAT32, DataType.FLOAT64):
        return Data(kind, float(value))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"cannot set a {kind.type_name} from {type(value).__name__}")
    return Data(kind, round(value / 10**scaler))
