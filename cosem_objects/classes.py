"""COSEM interface classes used by the head-end and the simulator: class ids, versions, and the
attribute and method numbers, so callers write `Register.SCALER_UNIT` instead of a bare 3.

Also the small value types with behaviour (scaler/unit, disconnect control states and the
class 70 transition table) that the client and the simulator must agree on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import Any

from cosem_objects.data import Data, DataType
from cosem_objects.errors import DecodeError
from cosem_objects.obis import Obis
from cosem_objects.units import unit_name


class InterfaceClass:
    CLASS_ID = 0
    VERSION = 0
    LOGICAL_NAME = 1


class DataObject(InterfaceClass):
    CLASS_ID = 1
    VALUE = 2


class Register(InterfaceClass):
    CLASS_ID = 3
    VALUE = 2
    SCALER_UNIT = 3
    RESET = 1  # method


class ExtendedRegister(Register):
    CLASS_ID = 4
    STATUS = 4
    CAPTURE_TIME = 5


class DemandRegister(InterfaceClass):
    CLASS_ID = 5
    CURRENT_AVERAGE_VALUE = 2
    LAST_AVERAGE_VALUE = 3
    SCALER_UNIT = 4
    STATUS = 5
    CAPTURE_TIME = 6
    START_TIME_CURRENT = 7
    PERIOD = 8
    NUMBER_OF_PERIODS = 9
    RESET = 1
    NEXT_PERIOD = 2


class ProfileGeneric(InterfaceClass):
    CLASS_ID = 7
    VERSION = 1
    BUFFER = 2
    CAPTURE_OBJECTS = 3
    CAPTURE_PERIOD = 4
    SORT_METHOD = 5
    SORT_OBJECT = 6
    ENTRIES_IN_USE = 7
    PROFILE_ENTRIES = 8
    RESET = 1
    CAPTURE = 2
    SELECTOR_RANGE = 1
    SELECTOR_ENTRY = 2


class Clock(InterfaceClass):
    CLASS_ID = 8
    TIME = 2
    TIME_ZONE = 3
    STATUS = 4
    DAYLIGHT_SAVINGS_BEGIN = 5
    DAYLIGHT_SAVINGS_END = 6
    DAYLIGHT_SAVINGS_DEVIATION = 7
    DAYLIGHT_SAVINGS_ENABLED = 8
    CLOCK_BASE = 9
    ADJUST_TO_QUARTER = 1
    ADJUST_TO_MEASURING_PERIOD = 2
    ADJUST_TO_MINUTE = 3
    ADJUST_TO_PRESET_TIME = 4
    PRESET_ADJUSTING_TIME = 5
    SHIFT_TIME = 6


class AssociationLN(InterfaceClass):
    CLASS_ID = 15
    VERSION = 1
    OBJECT_LIST = 2
    ASSOCIATED_PARTNERS_ID = 3
    APPLICATION_CONTEXT_NAME = 4
    XDLMS_CONTEXT_INFO = 5
    AUTHENTICATION_MECHANISM_NAME = 6
    SECRET = 7
    ASSOCIATION_STATUS = 8
    SECURITY_SETUP_REFERENCE = 9
    REPLY_TO_HLS_AUTHENTICATION = 1  # method
    CHANGE_HLS_SECRET = 2


class PushSetup(InterfaceClass):
    CLASS_ID = 40
    VERSION = 0
    PUSH_OBJECT_LIST = 2
    SEND_DESTINATION_AND_METHOD = 3
    COMMUNICATION_WINDOW = 4
    RANDOMISATION_START_INTERVAL = 5
    NUMBER_OF_RETRIES = 6
    REPETITION_DELAY = 7
    PUSH = 1


class SecuritySetup(InterfaceClass):
    CLASS_ID = 64
    VERSION = 0
    SECURITY_POLICY = 2
    SECURITY_SUITE = 3
    CLIENT_SYSTEM_TITLE = 4
    SERVER_SYSTEM_TITLE = 5
    SECURITY_ACTIVATE = 1
    KEY_TRANSFER = 2


class DisconnectControl(InterfaceClass):
    CLASS_ID = 70
    VERSION = 0
    OUTPUT_STATE = 2
    CONTROL_STATE = 3
    CONTROL_MODE = 4
    REMOTE_DISCONNECT = 1  # method
    REMOTE_RECONNECT = 2


class Limiter(InterfaceClass):
    CLASS_ID = 71
    MONITORED_VALUE = 2
    THRESHOLD_ACTIVE = 3
    THRESHOLD_NORMAL = 4
    THRESHOLD_EMERGENCY = 5
    MIN_OVER_THRESHOLD_DURATION = 6
    MIN_UNDER_THRESHOLD_DURATION = 7
    EMERGENCY_PROFILE = 8
    EMERGENCY_PROFILE_GROUP_ID_LIST = 9
    EMERGENCY_PROFILE_ACTIVE = 10
    ACTIONS = 11


CLASSES: dict[int, type[InterfaceClass]] = {
    cls.CLASS_ID: cls
    for cls in (
        DataObject,
        Register,
        ExtendedRegister,
        DemandRegister,
        ProfileGeneric,
        Clock,
        AssociationLN,
        PushSetup,
        SecuritySetup,
        DisconnectControl,
        Limiter,
    )
}


# Well-known objects.
class Obises:
    CLOCK = Obis(0, 0, 1, 0, 0, 255)
    SERIAL_NUMBER = Obis(0, 0, 96, 1, 0, 255)
    LOGICAL_DEVICE_NAME = Obis(0, 0, 42, 0, 0, 255)
    FIRMWARE = Obis(1, 0, 0, 2, 0, 255)
    DISCONNECT_CONTROL = Obis(0, 0, 96, 3, 10, 255)
    DISCONNECTOR_LOG = Obis(0, 0, 99, 98, 2, 255)
    CURRENT_ASSOCIATION = Obis(0, 0, 40, 0, 0, 255)
    LOAD_PROFILE = Obis(1, 0, 99, 1, 0, 255)
    BILLING_PROFILE = Obis(1, 0, 98, 1, 0, 255)
    INVOCATION_COUNTER = Obis(0, 0, 43, 1, 0, 255)
    SECURITY_SETUP = Obis(0, 0, 43, 0, 0, 255)
    LIMITER = Obis(0, 0, 17, 0, 0, 255)
    PUSH_SETUP = Obis(0, 0, 25, 9, 0, 255)


# -- scaler / unit -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ScalerUnit:
    scaler: int
    unit: int

    @classmethod
    def from_data(cls, data: Data) -> ScalerUnit:
        if data.type is not DataType.STRUCTURE or len(data.value) != 2:
            raise DecodeError(f"scaler_unit must be a structure of 2, got {data.type.type_name}")
        scaler, unit = data.value
        if not isinstance(scaler.value, int) or not isinstance(unit.value, int):
            raise DecodeError("scaler_unit holds non-integer values")
        return cls(int(scaler.value), int(unit.value))

    def to_data(self) -> Data:
        return Data.structure([Data.integer(self.scaler), Data.enum(self.unit)])

    @property
    def unit_name(self) -> str | None:
        return unit_name(self.unit)

    def apply(self, raw: int | float) -> int | float:
        """raw x 10^scaler, exact for integers (Decimal) and returned as int when whole."""
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise DecodeError(f"cannot scale a {type(raw).__name__}")
        if isinstance(raw, float):
            return raw * math.pow(10, self.scaler)
        scaled = Decimal(raw).scaleb(self.scaler)
        if scaled == scaled.to_integral_value():
            return int(scaled)
        return float(scaled)


def plain_value(data: Data) -> Any:
    """A JSON-friendly value: numbers, bools, text; octet strings as OBIS/date-time/hex."""
    value = data.value
    if data.type is DataType.OCTET_STRING:
        if len(value) == 12:
            from cosem_objects.dates import CosemDateTime

            try:
                return CosemDateTime.from_bytes(value).to_datetime().isoformat()
            except DecodeError:
                pass
        if len(value) == 6 and value[5] == 0xFF:
            return str(Obis.from_bytes(value))
        if value and all(32 <= b < 127 for b in value):
            return value.decode("ascii")
        return value.hex().upper()
    if data.type in (DataType.DATE_TIME,):
        try:
            return value.to_datetime().isoformat()
        except DecodeError:
            return value.to_bytes().hex().upper()
    return data.to_python()


# -- disconnect control ------------------------------------------------------------------------
class ControlState(IntEnum):
    DISCONNECTED = 0
    CONNECTED = 1
    READY_FOR_RECONNECTION = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Transition(IntEnum):
    REMOTE_DISCONNECT = 1
    REMOTE_RECONNECT = 2
    MANUAL_DISCONNECT = 3
    MANUAL_RECONNECT = 4
    LOCAL_DISCONNECT = 5
    LOCAL_RECONNECT = 6


# Blue Book transition table (dlms-notes 1.3/1.4): per control mode, the transitions it allows,
# as {(transition, from_state): to_state}. Mode 0: always connected, nothing allowed.
_B = (Transition.REMOTE_DISCONNECT, ControlState.CONNECTED)
_C = (Transition.REMOTE_DISCONNECT, ControlState.READY_FOR_RECONNECTION)
_F = (Transition.MANUAL_DISCONNECT, ControlState.CONNECTED)
_G = (Transition.LOCAL_DISCONNECT, ControlState.CONNECTED)
_A = (Transition.REMOTE_RECONNECT, ControlState.DISCONNECTED)
_D = _A  # same trigger and source as (a); the mode decides the target
_E = (Transition.MANUAL_RECONNECT, ControlState.READY_FOR_RECONNECTION)
_H = (Transition.LOCAL_RECONNECT, ControlState.READY_FOR_RECONNECTION)

_DIS = ControlState.DISCONNECTED
_CON = ControlState.CONNECTED
_RDY = ControlState.READY_FOR_RECONNECTION

TRANSITIONS: dict[int, dict[tuple[Transition, ControlState], ControlState]] = {
    0: {},
    1: {_B: _DIS, _C: _DIS, _F: _RDY, _G: _RDY, _D: _RDY, _E: _CON},
    2: {_B: _DIS, _C: _DIS, _F: _RDY, _G: _RDY, _A: _CON, _E: _CON},
    3: {_B: _DIS, _C: _DIS, _G: _RDY, _D: _RDY, _E: _CON},
    4: {_B: _DIS, _C: _DIS, _G: _RDY, _A: _CON, _E: _CON},
    5: {_B: _DIS, _C: _DIS, _F: _RDY, _G: _RDY, _D: _RDY, _E: _CON, _H: _CON},
    6: {_B: _DIS, _C: _DIS, _G: _RDY, _D: _RDY, _E: _CON, _H: _CON},
}


def next_control_state(
    mode: int, state: ControlState, transition: Transition
) -> ControlState | None:
    """The state a transition leads to under `mode`, or None when the mode forbids it.

    A remote disconnect of an already disconnected relay is allowed and changes nothing, as
    meters treat it (dlms-notes 1.5)."""
    table = TRANSITIONS.get(mode)
    if table is None:
        raise ValueError(f"unknown control mode {mode}")
    if mode and transition is Transition.REMOTE_DISCONNECT and state is ControlState.DISCONNECTED:
        return ControlState.DISCONNECTED
    return table.get((transition, state))


def guess_class_id(obis: Obis) -> int:
    """The interface class an OBIS code usually names, for reads given only an OBIS code.

    Callers fall back to the object list (or other classes) when the meter says otherwise."""
    if obis == Obises.CLOCK:
        return Clock.CLASS_ID
    if obis.c == 96 and obis.d == 3 and obis.a == 0:
        return DisconnectControl.CLASS_ID
    if obis.a == 0 and obis.c == 40 and obis.d == 0:
        return AssociationLN.CLASS_ID
    if obis.c in (98, 99):
        return ProfileGeneric.CLASS_ID
    if obis.a == 0 and obis.c == 17 and obis.d == 0:
        return Limiter.CLASS_ID
    if obis.a == 0 and obis.c == 43 and obis.d == 0:
        return SecuritySetup.CLASS_ID
    if obis.a != 0 and 1 <= obis.c <= 94 and obis.d in (4, 5, 7, 8, 9, 24, 25, 27, 28, 29):
        return Register.CLASS_ID
    return DataObject.CLASS_ID


# The attribute that holds "the value" of an object of each class, for a reading.
VALUE_ATTRIBUTE: dict[int, int] = {
    DataObject.CLASS_ID: DataObject.VALUE,
    Register.CLASS_ID: Register.VALUE,
    ExtendedRegister.CLASS_ID: Register.VALUE,
    DemandRegister.CLASS_ID: DemandRegister.CURRENT_AVERAGE_VALUE,
    Clock.CLASS_ID: Clock.TIME,
    DisconnectControl.CLASS_ID: DisconnectControl.OUTPUT_STATE,
}
SCALER_ATTRIBUTE: dict[int, int] = {
    Register.CLASS_ID: Register.SCALER_UNIT,
    ExtendedRegister.CLASS_ID: Register.SCALER_UNIT,
    DemandRegister.CLASS_ID: DemandRegister.SCALER_UNIT,
}
