"""Push setup (class 40, version 0): what a meter pushes, where, and when.

One Push setup, 0.0.25.9.0.255, sends two kinds of DataNotification with the same body
layout: an interval push every `--push-interval` seconds, and an event push for every event
written to the standard, fraud or disconnector log. Its push_object_list starts, as IDIS asks,
with the Push setup's own logical name {40, 0.0.25.9.0.255, 1} (so a receiver knows which list
the body follows), then the logical device name (the sender's identity, which an unciphered
UDP push has no other way to carry), the clock, energy import and export, the relay's
output_state and control_state, and the event code objects of the three logs. An event code
object carries a code only in the push that reports that event (the log that recorded it); in
every other slot, and in interval pushes, it is null-data, so a receiver never takes an old
code for a new event. In an event push the clock element is the time the event was logged.

Event pushes are DataNotifications rather than EventNotificationRequests because that is what
IDIS meters send, and because only a DataNotification body can name the meter."""

from __future__ import annotations

from dataclasses import dataclass

from cosem_objects.apdu.common import ActionResult
from cosem_objects.classes import Obises
from cosem_objects.data import Data
from cosem_objects.obis import Obis
from simulators.event_logs import DISCONNECTOR_EVENT_CODE, FRAUD_EVENT_CODE, STANDARD_EVENT_CODE
from simulators.objects.model import (
    AccessLevel,
    AssociationContext,
    AttributeDef,
    CosemObject,
    Meter,
    MethodDef,
)
from simulators.objects.profiles import CLOCK_COLUMN, Column
from simulators.objects.registers import logical_name_attribute

PUSH_SETUP_CLASS = 40
PUSH_SETUP = Obises.PUSH_SETUP

TRANSPORT_SERVICE = {"tcp": 0, "udp": 1, "hdlc": 5}
"""send_destination_and_method transport_service enum (dlms-notes.md section 7.1)."""
MESSAGE_AXDR = 0

DEVICE_NAME_COLUMN = Column(1, Obises.LOGICAL_DEVICE_NAME, 2)
EVENT_CODE_COLUMNS = (
    Column(1, STANDARD_EVENT_CODE, 2),
    Column(1, FRAUD_EVENT_CODE, 2),
    Column(1, DISCONNECTOR_EVENT_CODE, 2),
)


@dataclass(frozen=True, slots=True)
class PushSetupDef:
    obis: Obis
    objects: tuple[Column, ...]  # push_object_list, its own logical name first


def _setup(obis: Obis, *objects: Column) -> PushSetupDef:
    return PushSetupDef(obis, (Column(PUSH_SETUP_CLASS, obis, 1), DEVICE_NAME_COLUMN, *objects))


PUSH_SETUP_DEF = _setup(
    PUSH_SETUP,
    CLOCK_COLUMN,
    Column(3, Obis(1, 0, 1, 8, 0), 2),
    Column(3, Obis(1, 0, 2, 8, 0), 2),
    Column(70, Obises.DISCONNECT_CONTROL, 2),
    Column(70, Obises.DISCONNECT_CONTROL, 3),
    *EVENT_CODE_COLUMNS,
)
PUSH_SETUPS = (PUSH_SETUP_DEF,)


def _destination(meter: Meter, setup: PushSetupDef) -> Data:
    push = meter.config.push
    if push is None:
        service, where = TRANSPORT_SERVICE["tcp"], b""
    else:
        service, where = TRANSPORT_SERVICE[push.transport], push.destination.encode("ascii")
    return Data.structure([Data.enum(service), Data.octet_string(where), Data.enum(MESSAGE_AXDR)])


def _retries(meter: Meter) -> Data:
    push = meter.config.push
    return Data.unsigned(0 if push is None else min(push.retries, 255))


def _repetition_delay(meter: Meter) -> Data:
    push = meter.config.push
    return Data.long_unsigned(0 if push is None else min(round(push.repetition_delay_s), 0xFFFF))


def push_setup_object(setup: PushSetupDef) -> CosemObject:
    """Readable by every association (a head-end maps pushes with it); nothing is writable;
    management may ask for a push now (method 1)."""
    public = AccessLevel.PUBLIC
    object_list = Data.array([column.to_data() for column in setup.objects])
    return CosemObject(
        class_id=PUSH_SETUP_CLASS,
        version=0,
        obis=setup.obis,
        attributes={
            1: logical_name_attribute(setup.obis, public),
            2: AttributeDef(public, lambda _m, _c, _a: object_list),
            3: AttributeDef(public, lambda meter, _c, _a: _destination(meter, setup)),
            4: AttributeDef(public, lambda _m, _c, _a: Data.array([])),  # always open
            5: AttributeDef(public, lambda _m, _c, _a: Data.long_unsigned(0)),
            6: AttributeDef(public, lambda meter, _c, _a: _retries(meter)),
            7: AttributeDef(public, lambda meter, _c, _a: _repetition_delay(meter)),
        },
        methods={1: MethodDef(AccessLevel.MANAGEMENT, _push_now)},
    )


def _push_now(
    meter: Meter, _ctx: AssociationContext | None, _params: Data | None
) -> tuple[ActionResult, Data | None]:
    """Method 1 (push): one push now, when the meter has somewhere to push to."""
    if meter.push_trigger is None:
        return ActionResult.TEMPORARY_FAILURE, None
    meter.push_trigger()
    return ActionResult.SUCCESS, None
