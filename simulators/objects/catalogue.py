"""Every COSEM object of the simulated meter, built once and shared by all meters.

Rights: the public client (SAP 16) reads identity, clock, invocation counter, association and
security setup; the reader (LLS) reads everything; only management (HLS-GMAC) sets the clock,
changes the control mode and switches the relay. With security "none" the public client is
treated as management (a lab setting)."""

from __future__ import annotations

from cosem_objects.classes import Obises, SecuritySetup
from cosem_objects.data import Data
from cosem_objects.obis import Obis
from simulators.event_logs import (
    DISCONNECTOR_EVENT_CODE,
    FRAUD_EVENT_CODE,
    FRAUD_LOG,
    STANDARD_EVENT_CODE,
    STANDARD_LOG,
)
from simulators.objects.association_ln import association_object
from simulators.objects.clock import CLOCK
from simulators.objects.disconnect import DISCONNECT_CONTROL
from simulators.objects.limiter import LIMITER
from simulators.objects.model import AccessLevel, AttributeDef, CosemObject, Meter
from simulators.objects.profiles import (
    BILLING_PROFILE,
    EVENT_LOGS,
    LOAD_PROFILE,
    profile_object,
)
from simulators.objects.push_setup import PUSH_SETUPS, push_setup_object
from simulators.objects.registers import (
    REGISTERS,
    data_object,
    logical_name_attribute,
    register_object,
)

FIRMWARE_VERSION = b"SIM-1.0.0"
SECURITY_POLICY_AUTHENTICATED_ENCRYPTED = 3


def _serial(meter: Meter) -> Data:
    # ASCII in an octet-string, as DSMR/IDIS meters send it (and as dlms-cosem 21.3.2 can
    # decode: it has no visible-string parser).
    return Data.octet_string(meter.meter_id.encode("ascii", "replace"))


def _device_name(meter: Meter) -> Data:
    return Data.octet_string(meter.meter_id.encode("ascii", "replace")[:16])


def _invocation_counter(meter: Meter) -> Data:
    # The meter's frame counter: above every counter it used and every client counter it took,
    # so a client that lost its own counter can resume from it.
    return Data.double_long_unsigned(max(meter.server_ic, meter.client_ic_high, 0))


def _security_setup() -> CosemObject:
    obis = Obises.SECURITY_SETUP
    p = AccessLevel.PUBLIC

    def client_title(meter: Meter) -> Data:
        return Data.octet_string(meter.client_system_title or b"")

    def server_title(meter: Meter) -> Data:
        return Data.octet_string(meter.config.system_title)

    return CosemObject(
        class_id=SecuritySetup.CLASS_ID,
        version=SecuritySetup.VERSION,
        obis=obis,
        attributes={
            1: logical_name_attribute(obis, p),
            SecuritySetup.SECURITY_POLICY: AttributeDef(
                p, lambda _m, _c, _a: Data.enum(SECURITY_POLICY_AUTHENTICATED_ENCRYPTED)
            ),
            SecuritySetup.SECURITY_SUITE: AttributeDef(p, lambda _m, _c, _a: Data.enum(0)),
            SecuritySetup.CLIENT_SYSTEM_TITLE: AttributeDef(
                p, lambda meter, _c, _a: client_title(meter)
            ),
            SecuritySetup.SERVER_SYSTEM_TITLE: AttributeDef(
                p, lambda meter, _c, _a: server_title(meter)
            ),
        },
        methods={},
    )


_OBJECT_LISTS: dict[AccessLevel, Data] = {}


def object_list(level: AccessLevel) -> Data:
    """Association LN object_list as an association of `level` sees it (built once)."""
    cached = _OBJECT_LISTS.get(level)
    if cached is None:
        cached = Data.array([item.list_entry(level) for item in CATALOGUE.values()])
        _OBJECT_LISTS[level] = cached
    return cached


def _build() -> dict[Obis, CosemObject]:
    public, reader = AccessLevel.PUBLIC, AccessLevel.READER
    objects: list[CosemObject] = [
        association_object(object_list),
        CLOCK,
        data_object(Obises.SERIAL_NUMBER, public, _serial),
        data_object(Obises.LOGICAL_DEVICE_NAME, public, _device_name),
        data_object(Obises.FIRMWARE, public, lambda _m: Data.octet_string(FIRMWARE_VERSION)),
        data_object(Obises.INVOCATION_COUNTER, public, _invocation_counter),
        _security_setup(),
        *(register_object(spec, reader) for spec in REGISTERS),
        DISCONNECT_CONTROL,
        LIMITER,
        data_object(DISCONNECTOR_EVENT_CODE, reader, lambda m: Data.unsigned(m.last_event_code)),
        data_object(
            STANDARD_EVENT_CODE, reader, lambda m: Data.unsigned(m.events.last_code(STANDARD_LOG))
        ),
        data_object(
            FRAUD_EVENT_CODE, reader, lambda m: Data.unsigned(m.events.last_code(FRAUD_LOG))
        ),
        profile_object(Obises.LOAD_PROFILE, LOAD_PROFILE, reader),
        profile_object(Obises.BILLING_PROFILE, BILLING_PROFILE, reader),
        *(profile_object(log, source, reader) for log, source in EVENT_LOGS.items()),
        *(push_setup_object(setup) for setup in PUSH_SETUPS),
    ]
    return {item.obis: item for item in objects}


CATALOGUE: dict[Obis, CosemObject] = _build()
