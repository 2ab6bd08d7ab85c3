"""The shape of the simulated meter's COSEM object model: objects, attributes, methods, rights.

Object definitions are built once at import and shared by every meter; only the handlers touch
per-meter state, so ten thousand meters cost one catalogue. Access rights are given as the
lowest association level allowed to read, write or invoke. Handlers see a meter through the
`Meter` protocol (simulators/meter.py's SimMeter satisfies it), so the objects never import the
meter and the meter never imports the objects."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from cosem_objects.apdu.common import ActionResult, DataAccessResult, SelectiveAccess
from cosem_objects.classes import ControlState, Transition
from cosem_objects.data import Data
from cosem_objects.dates import CosemDateTime
from cosem_objects.obis import Obis
from simulators.config import MeterConfig
from simulators.event_logs import EventLogs
from simulators.limiter import LimiterState
from simulators.relay import RelayEvent


class AccessLevel(IntEnum):
    """What an association may do; higher levels include the lower ones."""

    PUBLIC = 0  # client SAP 16 when security is on: a read-only subset
    READER = 1  # client SAP 32, LLS: read everything
    MANAGEMENT = 2  # client SAP 1, HLS-GMAC (or the public client with security "none")


@dataclass(slots=True)
class AssociationContext:
    """The association a request arrives in, as the object model needs to see it."""

    level: AccessLevel = AccessLevel.MANAGEMENT
    client_sap: int = 1
    server_sap: int = 1
    application_context: int = 1
    mechanism: int = 0
    conformance: bytes = b"\x00\x00\x00"
    client_max_pdu: int = 0xFFFF
    server_max_pdu: int = 1024
    dlms_version: int = 6
    status: int = 2  # 0 non-associated, 1 association-pending, 2 associated
    client_system_title: bytes | None = None


class Meter(Protocol):
    """What the object handlers read and change on a meter."""

    config: MeterConfig
    server_ic: int
    client_ic_high: int
    client_system_title: bytes | None
    last_event_code: int
    events: EventLogs
    push_trigger: Callable[[], None] | None
    control_state: ControlState
    control_mode: int
    utc_offset_min: int
    limiter: LimiterState

    @property
    def meter_id(self) -> str: ...

    @property
    def output_state(self) -> bool: ...

    @property
    def disconnector_log(self) -> list[tuple[float, int]]: ...

    def event_log(self, log: Obis) -> list[tuple[float, int]]: ...

    def now(self) -> float: ...

    def meter_time(self, t: float | None = None) -> float: ...

    def set_meter_time(self, target: float) -> None: ...

    def shift_time(self, seconds: float) -> None: ...

    def date_time(self, unix: float, status: int = 0) -> CosemDateTime: ...

    def parse_date_time(self, stamp: CosemDateTime, upper: bool = False) -> float: ...

    def energy(self, t: float | None = None) -> tuple[float, float, float, float]: ...

    def power(self, t: float | None = None) -> tuple[float, float]: ...

    def phase_values(self, phase: int, t: float | None = None) -> tuple[float, float, float]: ...

    def operate(self, transition: Transition) -> RelayEvent: ...


class AccessFailure(Exception):
    """Raised by handlers to answer with a data-access-result instead of a value."""

    def __init__(self, result: DataAccessResult) -> None:
        super().__init__(result.name)
        self.result = result


Getter = Callable[[Meter, AssociationContext | None, SelectiveAccess | None], Data]
Setter = Callable[[Meter, AssociationContext | None, Data], DataAccessResult]
MethodHandler = Callable[
    [Meter, AssociationContext | None, Data | None], tuple[ActionResult, Data | None]
]


@dataclass(frozen=True, slots=True)
class AttributeDef:
    read: AccessLevel | None  # lowest level that may read; None = nobody
    get: Getter
    write: AccessLevel | None = None
    set: Setter | None = None
    selectors: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class MethodDef:
    level: AccessLevel | None
    call: MethodHandler


@dataclass(frozen=True, slots=True)
class CosemObject:
    class_id: int
    version: int
    obis: Obis
    attributes: Mapping[int, AttributeDef]
    methods: Mapping[int, MethodDef]

    def rights(self, level: AccessLevel) -> Data:
        """access_rights of the object_list entry as seen by an association of `level`."""
        attribute_access = []
        for number in sorted(self.attributes):
            attribute = self.attributes[number]
            mode = 0
            if attribute.read is not None and level >= attribute.read:
                mode |= 1
            if (
                attribute.write is not None
                and attribute.set is not None
                and level >= attribute.write
            ):
                mode |= 2
            selectors = (
                Data.array([Data.integer(s) for s in attribute.selectors])
                if attribute.selectors
                else Data.null()
            )
            attribute_access.append(
                Data.structure([Data.integer(number), Data.enum(mode), selectors])
            )
        method_access = [
            Data.structure(
                [
                    Data.integer(number),
                    Data.enum(1 if method.level is not None and level >= method.level else 0),
                ]
            )
            for number, method in sorted(self.methods.items())
        ]
        return Data.structure([Data.array(attribute_access), Data.array(method_access)])

    def list_entry(self, level: AccessLevel) -> Data:
        return Data.structure(
            [
                Data.long_unsigned(self.class_id),
                Data.unsigned(self.version),
                Data.octet_string(self.obis.to_bytes()),
                self.rights(level),
            ]
        )
