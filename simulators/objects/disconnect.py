"""Disconnect control (class 70): the relay, as the head-end reaches it over COSEM."""

from __future__ import annotations

from cosem_objects.apdu.common import ActionResult, DataAccessResult, SelectiveAccess
from cosem_objects.classes import DisconnectControl, Obises, Transition
from cosem_objects.data import Data, DataType
from simulators.objects.model import (
    AccessLevel,
    AssociationContext,
    AttributeDef,
    CosemObject,
    Meter,
    MethodDef,
)
from simulators.objects.registers import logical_name_attribute

# How a relay outcome is answered (dlms-notes 1.5: a forbidden transition is refused with
# read-write-denied; a failing switch reports hardware-fault; a stuck one claims success).
_ACTION_RESULTS = {
    "ok": ActionResult.SUCCESS,
    "stuck": ActionResult.SUCCESS,
    "denied": ActionResult.READ_WRITE_DENIED,
    "failure": ActionResult.HARDWARE_FAULT,
}


def _output_state(meter: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.boolean(meter.output_state)


def _control_state(meter: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.enum(int(meter.control_state))


def _control_mode(meter: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.enum(meter.control_mode)


def _set_control_mode(
    meter: Meter, _ctx: AssociationContext | None, value: Data
) -> DataAccessResult:
    if value.type is not DataType.ENUM:
        return DataAccessResult.TYPE_UNMATCHED
    if not 0 <= value.value <= 6:
        return DataAccessResult.OTHER_REASON
    meter.control_mode = int(value.value)
    return DataAccessResult.SUCCESS


def _remote(transition: Transition) -> MethodDef:
    def call(
        meter: Meter, _ctx: AssociationContext | None, params: Data | None
    ) -> tuple[ActionResult, Data | None]:
        # data ::= integer(0); other integers are tolerated, other types are not.
        if params is not None and params.type not in (DataType.INTEGER, DataType.NULL_DATA):
            return ActionResult.TYPE_UNMATCHED, None
        event = meter.operate(transition)
        return _ACTION_RESULTS[event.outcome.value], None

    return MethodDef(AccessLevel.MANAGEMENT, call)


DISCONNECT_CONTROL = CosemObject(
    class_id=DisconnectControl.CLASS_ID,
    version=DisconnectControl.VERSION,
    obis=Obises.DISCONNECT_CONTROL,
    attributes={
        1: logical_name_attribute(Obises.DISCONNECT_CONTROL, AccessLevel.READER),
        DisconnectControl.OUTPUT_STATE: AttributeDef(AccessLevel.READER, _output_state),
        DisconnectControl.CONTROL_STATE: AttributeDef(AccessLevel.READER, _control_state),
        DisconnectControl.CONTROL_MODE: AttributeDef(
            AccessLevel.READER, _control_mode, AccessLevel.MANAGEMENT, _set_control_mode
        ),
    },
    methods={
        DisconnectControl.REMOTE_DISCONNECT: _remote(Transition.REMOTE_DISCONNECT),
        DisconnectControl.REMOTE_RECONNECT: _remote(Transition.REMOTE_RECONNECT),
    },
)
