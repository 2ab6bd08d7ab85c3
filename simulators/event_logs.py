"""The simulated meter's event logs: what happened, when, as (time, event code) rows.

Four Profile generic logs, numbered as DSMR/IDIS number them (docs: ../shared/docs/dlms-notes.md
section 10, "Event-log numbering depends on the companion specification"):

* 0.0.99.98.0.255 standard event log, event code object 0.0.96.11.0.255
* 0.0.99.98.1.255 fraud detection log, event code object 0.0.96.11.1.255
* 0.0.99.98.2.255 disconnector control log, event code object 0.0.96.11.2.255
* 1.0.99.97.0.255 power failure event log (dlms-notes.md's OBIS; IDIS captures the failure's
  time and duration there, we keep (clock, event code) like the other logs so one reader fits)

Event codes are the IDIS ones, from the table the head-end names them with
(cosem_objects/event_codes.py): 1 power down, 2 power up, 44 meter cover removed, 45 meter
cover closed; the disconnector codes are in simulators/relay.py. Every recorded event is also handed
to the meter's `sink` (the push agent sends event pushes from it). Kept apart from the meter
so the COSEM objects can name the logs without importing the meter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cosem_objects import event_codes
from cosem_objects.classes import Obises
from cosem_objects.obis import Obis

LOG_CAPACITY = 100

STANDARD_LOG = Obis(0, 0, 99, 98, 0)
FRAUD_LOG = Obis(0, 0, 99, 98, 1)
DISCONNECTOR_LOG = Obises.DISCONNECTOR_LOG
POWER_FAILURE_LOG = Obis(1, 0, 99, 97, 0)

STANDARD_EVENT_CODE = Obis(0, 0, 96, 11, 0)
FRAUD_EVENT_CODE = Obis(0, 0, 96, 11, 1)
DISCONNECTOR_EVENT_CODE = Obis(0, 0, 96, 11, 2)

EVENT_CODE_OBJECTS: dict[Obis, Obis] = {
    STANDARD_LOG: STANDARD_EVENT_CODE,
    FRAUD_LOG: FRAUD_EVENT_CODE,
    DISCONNECTOR_LOG: DISCONNECTOR_EVENT_CODE,
    POWER_FAILURE_LOG: STANDARD_EVENT_CODE,  # a power failure is a standard-log event too
}
"""Each log's event code object: the column of its rows, and its slot in an event push."""


class StandardCode:
    POWER_DOWN = event_codes.POWER_DOWN
    POWER_UP = event_codes.POWER_UP


class FraudCode:
    TERMINAL_COVER_REMOVED = event_codes.TERMINAL_COVER_REMOVED
    TERMINAL_COVER_CLOSED = 41
    METER_COVER_REMOVED = event_codes.METER_COVER_REMOVED
    METER_COVER_CLOSED = 45


@dataclass(frozen=True, slots=True)
class MeterEvent:
    """One log row as it was written: which log, the code, real unix time."""

    log: Obis
    code: int
    time: float


EventSink = Callable[[MeterEvent], None]


class EventLogs:
    """The rows of every log of one meter, oldest first, each bounded to LOG_CAPACITY."""

    __slots__ = ("_logs", "sink")

    def __init__(self) -> None:
        self._logs: dict[Obis, list[tuple[float, int]]] = {}
        self.sink: EventSink | None = None

    def entries(self, log: Obis) -> list[tuple[float, int]]:
        """The log's rows (the list itself: a reset clears it in place)."""
        return self._logs.setdefault(log, [])

    def last_code(self, log: Obis) -> int:
        rows = self._logs.get(log)
        return rows[-1][1] if rows else 0

    def record(self, log: Obis, code: int, t: float) -> MeterEvent:
        rows = self.entries(log)
        rows.append((t, code))
        if len(rows) > LOG_CAPACITY:
            del rows[0]
        event = MeterEvent(log, code, t)
        if self.sink is not None and log != POWER_FAILURE_LOG:
            self.sink(event)
        return event

    def power_down(self, t: float) -> MeterEvent:
        """The supply failed: the standard log and the power failure log both keep it; one
        event push goes out (the last gasp)."""
        self.record(POWER_FAILURE_LOG, StandardCode.POWER_DOWN, t)
        return self.record(STANDARD_LOG, StandardCode.POWER_DOWN, t)

    def power_up(self, t: float) -> MeterEvent:
        return self.record(STANDARD_LOG, StandardCode.POWER_UP, t)

    def cover(self, t: float, *, opened: bool) -> MeterEvent:
        code = FraudCode.METER_COVER_REMOVED if opened else FraudCode.METER_COVER_CLOSED
        return self.record(FRAUD_LOG, code, t)
