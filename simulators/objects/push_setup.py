"""Push setup (class 40, version 0): what a meter pushes, where, and when.

Two setups, as IDIS meters have them:

* 0.0.25.9.0.255, the interval push (DataNotification every `--push-interval` seconds);
* 0.4.25.9.0.255, the event push (IDIS numbers its alarm push setup with B = 4): one
  DataNotification per event written to the standard, fraud or disconnector log.

Event pushes are DataNotifications rather than EventNotificationRequests because that is what
IDIS meters send, and because a DataNotification body can name the meter: an unciphered UDP
push carries no other identity. As IDIS asks, the first element of every push is the logical
name of the Push setup that sent it (push_object_list entry {40, own name, 1}), so a receiver
knows which push_object_list the body follows. In an event push the clock element is the time
the event was logged, and of the three event code objects only the one of the log that
recorded the event carries its code; the others are null-data."""

from __future__ import annotations

from dataclasses import dataclass

from cosem_objects.classes import Obises
from cosem_objects.data import Data
from cosem_objects.obis import Obis
from simulators.event_logs import DISCONNECTOR_EVENT_CODE, FRAUD_EVENT_CODE, STANDARD_EVENT_CODE
from simulators.objects.model import AccessLevel, AttributeDef, CosemObject, Meter
from simulators.objects.profiles import CLOCK_COLUMN, Column
from simulators.objects.registers import logical_name_attribute

PUSH_SETUP_CLASS = 40
INTERVAL_PUSH = Obises.PUSH_SETUP
EVENT_PUSH = Obis(0, 4, 25, 9, 0)

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


INTERVAL_SETUP = _setup(
    INTERVAL_PUSH,
    CLOCK_COLUMN,
    Column(3, Obis(1, 0, 1, 8, 0), 2),
    Column(3, Obis(1, 0, 2, 8, 0), 2),
    Column(70, Obises.DISCONNECT_CONTROL, 2),
    Column(70, Obises.DISCONNECT_CONTROL, 3),
)
EVENT_SETUP = _setup(EVENT_PUSH, CLOCK_COLUMN, *EVENT_CODE_COLUMNS)
PUSH_SETUPS = (INTERVAL_SETUP, EVENT_SETUP)


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
    """Readable by every association (a head-end maps pushes with it); nothing is writable."""
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
        methods={},
    )
