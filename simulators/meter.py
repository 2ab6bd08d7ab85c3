"""One simulated meter: its state and behaviour (energy, clock, relay), and COSEM access to it.

State is kept small and lazy so that ten thousand meters idle cheaply: energy is a closed-form
function of time (simulators/objects/loadcurve.py) minus what the open relay held back, so there
are no timers, no per-meter tasks and no stored profile rows. The COSEM object catalogue is
shared by all meters (simulators/objects/catalogue.py); `get`, `set` and `action` check the
association's rights and dispatch to it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cosem_objects.apdu.common import ActionResult, DataAccessResult, SelectiveAccess
from cosem_objects.axdr import Data, DataType
from cosem_objects.classes import ControlState, Transition, next_control_state
from cosem_objects.dates import CosemDateTime
from cosem_objects.errors import ProtocolError
from cosem_objects.obis import Obis
from simulators.config import Faults, MeterConfig
from simulators.objects.loadcurve import LoadCurve
from simulators.objects.model import AccessFailure, AccessLevel, AssociationContext

SECONDS_PER_DAY = 86400.0
DISCONNECTOR_LOG_CAPACITY = 100


class RelayOutcome(StrEnum):
    OK = "ok"  # the relay did what was asked (or was already there)
    DENIED = "denied"  # the control mode forbids the transition
    STUCK = "stuck"  # fault: the meter says yes but nothing moves
    FAILURE = "failure"  # fault: the switch reports a hardware fault


class EventCode:
    """Disconnector control log event codes (IDIS style numbering)."""

    READY_FOR_MANUAL_RECONNECTION = 59
    MANUAL_DISCONNECTION = 60
    MANUAL_CONNECTION = 61
    REMOTE_DISCONNECTION = 62
    LOCAL_DISCONNECTION = 63
    DISCONNECT_RECONNECT_FAILURE = 67
    LOCAL_RECONNECTION = 68
    REMOTE_CONNECTION = 70


_SOURCES = {
    Transition.REMOTE_DISCONNECT: "remote",
    Transition.REMOTE_RECONNECT: "remote",
    Transition.MANUAL_DISCONNECT: "manual",
    Transition.MANUAL_RECONNECT: "manual",
    Transition.LOCAL_DISCONNECT: "local",
    Transition.LOCAL_RECONNECT: "local",
}


def _event_code(transition: Transition, after: ControlState) -> int:
    if transition is Transition.REMOTE_DISCONNECT:
        return EventCode.REMOTE_DISCONNECTION
    if transition is Transition.REMOTE_RECONNECT:
        if after is ControlState.CONNECTED:
            return EventCode.REMOTE_CONNECTION
        return EventCode.READY_FOR_MANUAL_RECONNECTION
    if transition is Transition.MANUAL_DISCONNECT:
        return EventCode.MANUAL_DISCONNECTION
    if transition is Transition.MANUAL_RECONNECT:
        return EventCode.MANUAL_CONNECTION
    if transition is Transition.LOCAL_DISCONNECT:
        return EventCode.LOCAL_DISCONNECTION
    return EventCode.LOCAL_RECONNECTION


@dataclass(frozen=True, slots=True)
class RelayEvent:
    """One relay operation as the control API reports it."""

    time: float  # unix seconds (real time, not the meter's drifting clock)
    source: str  # "remote" | "manual" | "local"
    transition: Transition
    before: ControlState
    after: ControlState
    outcome: RelayOutcome

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "source": self.source,
            "transition": self.transition.name.lower(),
            "before": self.before.label,
            "after": self.after.label,
            "outcome": self.outcome.value,
        }


# Energy registers whose overrides shift the count instead of freezing it.
ENERGY_REGISTERS = {
    Obis(1, 0, 1, 8, 0): 0,
    Obis(1, 0, 1, 8, 1): 1,
    Obis(1, 0, 1, 8, 2): 2,
    Obis(1, 0, 2, 8, 0): 3,
}


class SimMeter:
    """A meter. `clock` gives real unix time; tests pass a fake one to move time."""

    __slots__ = (
        "_clock",
        "_clock_offset",
        "_control_mode",
        "_drift_accum",
        "_drift_rate",
        "_drift_seen",
        "_drift_since",
        "_energy_offsets",
        "_history",
        "_log",
        "_overrides",
        "_utc_offset_min",
        "_windows",
        "client_ic_high",
        "client_system_title",
        "config",
        "control_state",
        "created",
        "curve",
        "last_event_code",
        "server_ic",
    )

    def __init__(self, config: MeterConfig, clock: Callable[[], float] = time.time) -> None:
        if not 0 <= config.control_mode <= 6:
            raise ValueError(f"control mode must be 0..6, got {config.control_mode}")
        self.config = config
        self._clock = clock
        self.created = clock()
        self.curve = LoadCurve(config.seed, config.index)
        self.control_state = ControlState.CONNECTED
        self._control_mode = config.control_mode
        self._windows: list[list[float | None]] | None = None  # relay-open [start, end]
        self._history: list[RelayEvent] | None = None
        self._log: list[tuple[float, int]] | None = None
        self._overrides: dict[Obis, Data] | None = None
        self._energy_offsets: list[float] | None = None
        self._clock_offset = 0.0
        self._drift_rate = config.faults.clock_drift_s_per_day
        self._drift_since = self._drift_seen = self.created
        self._drift_accum = 0.0
        self._utc_offset_min = config.utc_offset_min
        self.server_ic = 0  # last invocation counter the meter used
        self.client_ic_high = -1  # highest client invocation counter accepted
        self.client_system_title: bytes | None = None
        self.last_event_code = 0

    def __repr__(self) -> str:
        return f"SimMeter({self.config.meter_id!r}, state={self.control_state.label})"

    # -- identity and time -----------------------------------------------------------------
    @property
    def meter_id(self) -> str:
        return self.config.meter_id

    @property
    def faults(self) -> Faults:
        return self.config.faults

    def now(self) -> float:
        return self._clock()

    @property
    def utc_offset_min(self) -> int:
        return self._utc_offset_min

    @utc_offset_min.setter
    def utc_offset_min(self, minutes: int) -> None:
        if not -720 <= minutes <= 840:
            raise ValueError(f"UTC offset out of range: {minutes}")
        self._utc_offset_min = minutes

    def _curve_seconds(self, t: float) -> float:
        return t + self.config.utc_offset_min * 60

    # -- clock -------------------------------------------------------------------------------
    def drift(self, t: float | None = None) -> float:
        """Seconds the meter's clock has drifted since it was last set (fault).

        The fault is changed from outside (Faults is mutated in place), so a new rate is taken
        to apply from the last time the meter looked at its clock."""
        t = self.now() if t is None else t
        rate = self.config.faults.clock_drift_s_per_day
        if rate != self._drift_rate:
            seen = min(self._drift_seen, t)
            self._drift_accum += self._drift_rate * (seen - self._drift_since) / SECONDS_PER_DAY
            self._drift_since = seen
            self._drift_rate = rate
        self._drift_seen = max(self._drift_seen, t)
        return self._drift_accum + rate * (t - self._drift_since) / SECONDS_PER_DAY

    def meter_time(self, t: float | None = None) -> float:
        """The meter's own idea of now (unix seconds): real time + set offset + drift."""
        t = self.now() if t is None else t
        return t + self._clock_offset + self.drift(t)

    def set_meter_time(self, target: float) -> None:
        """The clock was set (SET Clock.time): it now reads `target`; drift starts over."""
        t = self.now()
        self._clock_offset = target - t
        self._drift_accum = 0.0
        self._drift_since = self._drift_seen = t
        self._drift_rate = self.config.faults.clock_drift_s_per_day

    def shift_time(self, seconds: float) -> None:
        self._clock_offset += seconds

    def local_datetime(self, unix: float) -> dt.datetime:
        zone = dt.timezone(dt.timedelta(minutes=self._utc_offset_min))
        return dt.datetime.fromtimestamp(unix, zone)

    def date_time(self, unix: float, status: int = 0) -> CosemDateTime:
        """A date-time in the meter's local time with its deviation (UTC = local + dev)."""
        return CosemDateTime.from_datetime(self.local_datetime(unix), clock_status=status)

    def parse_date_time(self, stamp: CosemDateTime, upper: bool = False) -> float:
        """A point in time from a date-time; wildcards become the earliest (or latest) value.

        Without a deviation the time is taken as the meter's local time."""
        year = stamp.year if stamp.year is not None else (9998 if upper else 1971)
        month = stamp.month if stamp.month is not None and stamp.month <= 12 else None
        month = month if month is not None else (12 if upper else 1)
        last_day = _days_in_month(year, month)
        day = stamp.day
        if day is None or day > 31:
            day = last_day if upper or (day is not None and day > 31) else 1
        day = min(day, last_day)
        hour = stamp.hour if stamp.hour is not None else (23 if upper else 0)
        minute = stamp.minute if stamp.minute is not None else (59 if upper else 0)
        second = stamp.second if stamp.second is not None else (59 if upper else 0)
        hundredths = stamp.hundredths if stamp.hundredths is not None else (99 if upper else 0)
        try:
            local = dt.datetime(
                year,
                month,
                day,
                min(hour, 23),
                min(minute, 59),
                min(second, 59),
                min(hundredths, 99) * 10000,
            )
        except ValueError as exc:
            raise AccessFailure(DataAccessResult.TYPE_UNMATCHED) from exc
        deviation = stamp.deviation
        if deviation is None or not -720 <= deviation <= 720:
            offset = self._utc_offset_min
        else:
            offset = -deviation
        aware = local.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset)))
        return aware.timestamp()

    # -- energy and instantaneous values -----------------------------------------------------
    def energy(self, t: float | None = None) -> tuple[float, float, float, float]:
        """(import total, import T1, import T2, export) in Wh at real time t.

        What the relay held back while open is subtracted; set_value offsets are added."""
        t = self.now() if t is None else t
        total, t1, export = self.curve.energy(self._curve_seconds(t))
        if self._windows:
            for start, end in self._windows:
                assert start is not None
                if start >= t:
                    break
                stop = t if end is None or end > t else end
                a = self.curve.energy(self._curve_seconds(start))
                b = self.curve.energy(self._curve_seconds(stop))
                total -= b[0] - a[0]
                t1 -= b[1] - a[1]
                export -= b[2] - a[2]
        values = [total, t1, total - t1, export]
        if self._energy_offsets:
            values = [v + o for v, o in zip(values, self._energy_offsets, strict=True)]
        return values[0], values[1], values[2], values[3]

    def relay_closed_at(self, t: float) -> bool:
        if not self._windows:
            return self.output_state
        for start, end in self._windows:
            assert start is not None
            if start <= t and (end is None or t < end):
                return False
        return True

    def power(self, t: float | None = None) -> tuple[float, float]:
        """(import W, export W) now; zero while the relay is open."""
        t = self.now() if t is None else t
        if not self.relay_closed_at(t):
            return 0.0, 0.0
        return self.curve.power(self._curve_seconds(t))

    def phase_values(self, phase: int, t: float | None = None) -> tuple[float, float, float]:
        """(voltage V, current A, active power import W) of phase 0..2."""
        t = self.now() if t is None else t
        seconds = self._curve_seconds(t)
        voltage = self.curve.voltage(seconds, phase)
        power = self.power(t)[0] * self.curve.shares[phase]
        return voltage, power / voltage, power

    # -- relay (Disconnect control, class 70) ------------------------------------------------
    @property
    def control_mode(self) -> int:
        return self._control_mode

    @control_mode.setter
    def control_mode(self, mode: int) -> None:
        if not 0 <= mode <= 6:
            raise ValueError(f"control mode must be 0..6, got {mode}")
        self._control_mode = mode
        if mode == 0 and self.control_state is not ControlState.CONNECTED:
            # Mode 0: "always connected" -- the switch closes when the mode is selected.
            before = self.control_state
            self._apply_state(ControlState.CONNECTED)
            self._record(
                Transition.LOCAL_RECONNECT,
                before,
                ControlState.CONNECTED,
                RelayOutcome.OK,
                EventCode.LOCAL_RECONNECTION,
            )

    @property
    def output_state(self) -> bool:
        return self.control_state is ControlState.CONNECTED

    @property
    def relay_history(self) -> list[RelayEvent]:
        if self._history is None:
            self._history = []
        return self._history

    @property
    def disconnector_log(self) -> list[tuple[float, int]]:
        """(real unix time, event code) of each relay operation, oldest first."""
        return self._log if self._log is not None else []

    def operate(self, transition: Transition) -> RelayEvent:
        """Apply one transition (remote, manual or local) under the current control mode."""
        before = self.control_state
        after = next_control_state(self._control_mode, before, transition)
        if after is None:
            return self._record(transition, before, before, RelayOutcome.DENIED, None)
        faults = self.config.faults
        if faults.relay_failure:
            return self._record(
                transition,
                before,
                before,
                RelayOutcome.FAILURE,
                EventCode.DISCONNECT_RECONNECT_FAILURE,
            )
        if faults.relay_stuck:
            return self._record(transition, before, before, RelayOutcome.STUCK, None)
        if after is before:
            return self._record(transition, before, after, RelayOutcome.OK, None)
        self._apply_state(after)
        return self._record(
            transition, before, after, RelayOutcome.OK, _event_code(transition, after)
        )

    def remote_disconnect(self) -> RelayEvent:
        return self.operate(Transition.REMOTE_DISCONNECT)

    def remote_reconnect(self) -> RelayEvent:
        return self.operate(Transition.REMOTE_RECONNECT)

    def press_button(self) -> RelayEvent:
        """The customer presses the button: manual reconnection (e)."""
        return self.operate(Transition.MANUAL_RECONNECT)

    def manual_disconnect(self) -> RelayEvent:
        return self.operate(Transition.MANUAL_DISCONNECT)

    def local_disconnect(self) -> RelayEvent:
        """An internal trigger (limiter, supervision) opens the relay (g)."""
        return self.operate(Transition.LOCAL_DISCONNECT)

    def local_reconnect(self) -> RelayEvent:
        return self.operate(Transition.LOCAL_RECONNECT)

    def force_state(self, state: ControlState) -> None:
        """Put the relay in `state` without a transition (a field engineer's reset, or test
        setup): not logged, but energy stops or resumes as the switch says."""
        self._apply_state(ControlState(state))

    def _apply_state(self, after: ControlState) -> None:
        was_closed = self.output_state
        self.control_state = after
        closed = self.output_state
        if was_closed == closed:
            return
        t = self.now()
        if self._windows is None:
            self._windows = []
        if not closed:
            self._windows.append([t, None])
        elif self._windows and self._windows[-1][1] is None:
            self._windows[-1][1] = t

    def _record(
        self,
        transition: Transition,
        before: ControlState,
        after: ControlState,
        outcome: RelayOutcome,
        code: int | None,
    ) -> RelayEvent:
        t = self.now()
        event = RelayEvent(t, _SOURCES[transition], transition, before, after, outcome)
        self.relay_history.append(event)
        if code is not None:
            if self._log is None:
                self._log = []
            self._log.append((t, code))
            if len(self._log) > DISCONNECTOR_LOG_CAPACITY:
                del self._log[0]
            self.last_event_code = code
        return event

    # -- security counters -------------------------------------------------------------------
    def next_server_ic(self) -> int:
        self.server_ic = (self.server_ic + 1) & 0xFFFFFFFF
        return self.server_ic

    def accept_client_ic(self, ic: int) -> bool:
        """True (and remembered) when `ic` is newer than every client counter seen so far."""
        if ic <= self.client_ic_high:
            return False
        self.client_ic_high = ic
        return True

    # -- overrides (control API) -------------------------------------------------------------
    def set_value(self, obis: Obis | str, value: Any) -> None:
        """Force an object's value (attribute 2).

        Energy registers take a physical value in Wh and keep counting from it (an offset);
        other objects are frozen at the value. Numbers are physical values (the register's
        scaler is applied); a Data is used as it is."""
        code = obis if isinstance(obis, Obis) else Obis.parse(obis)
        current = self.get_value(code)
        if code in ENERGY_REGISTERS and not isinstance(value, Data):
            position = ENERGY_REGISTERS[code]
            offsets = self._energy_offsets or [0.0, 0.0, 0.0, 0.0]
            base = self.energy()[position] - offsets[position]
            offsets[position] = float(value) - base
            self._energy_offsets = offsets
            return
        data = value if isinstance(value, Data) else _coerce(current, value, self._scaler(code))
        if self._overrides is None:
            self._overrides = {}
        self._overrides[code] = data

    def clear_value(self, obis: Obis | str | None = None) -> None:
        """Drop one override (or all of them, with no argument)."""
        if obis is None:
            self._overrides = None
            self._energy_offsets = None
            return
        code = obis if isinstance(obis, Obis) else Obis.parse(obis)
        if self._overrides:
            self._overrides.pop(code, None)
        if code in ENERGY_REGISTERS and self._energy_offsets:
            self._energy_offsets[ENERGY_REGISTERS[code]] = 0.0

    def override(self, obis: Obis) -> Data | None:
        return self._overrides.get(obis) if self._overrides else None

    def get_value(self, obis: Obis | str) -> Data:
        """Attribute 2 of an object, with full rights (control API and tests)."""
        from simulators.objects.catalogue import CATALOGUE

        code = obis if isinstance(obis, Obis) else Obis.parse(obis)
        item = CATALOGUE.get(code)
        if item is None:
            raise KeyError(f"no object {code}")
        result = self.get(item.class_id, code, 2)
        if not isinstance(result, Data):
            raise KeyError(f"{code} attribute 2 unreadable: {result.name}")
        return result

    def _scaler(self, obis: Obis) -> int:
        from simulators.objects.catalogue import CATALOGUE

        item = CATALOGUE.get(obis)
        if item is None or 3 not in item.attributes or item.class_id not in (3, 4):
            return 0
        scaler_unit = self.get(item.class_id, obis, 3)
        if isinstance(scaler_unit, Data) and scaler_unit.type is DataType.STRUCTURE:
            return int(scaler_unit.value[0].value)
        return 0

    # -- COSEM services ----------------------------------------------------------------------
    def get(
        self,
        class_id: int,
        obis: Obis,
        attribute: int,
        access: SelectiveAccess | None = None,
        *,
        context: AssociationContext | None = None,
    ) -> Data | DataAccessResult:
        from simulators.objects.catalogue import CATALOGUE

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
        if attribute == 2 and access is None and self._overrides:
            forced = self._overrides.get(obis)
            if forced is not None:
                return forced
        try:
            return definition.get(self, context, access)
        except AccessFailure as failure:
            return failure.result
        except (ProtocolError, ValueError, TypeError, AttributeError, IndexError, OverflowError):
            return DataAccessResult.TYPE_UNMATCHED

    def set(
        self,
        class_id: int,
        obis: Obis,
        attribute: int,
        value: Data,
        access: SelectiveAccess | None = None,
        *,
        context: AssociationContext | None = None,
    ) -> DataAccessResult:
        from simulators.objects.catalogue import CATALOGUE

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
            return definition.set(self, context, value)
        except AccessFailure as failure:
            return failure.result
        except (ProtocolError, ValueError, TypeError, AttributeError, IndexError, OverflowError):
            return DataAccessResult.TYPE_UNMATCHED

    def action(
        self,
        class_id: int,
        obis: Obis,
        method: int,
        params: Data | None = None,
        *,
        context: AssociationContext | None = None,
    ) -> tuple[ActionResult, Data | None]:
        from simulators.objects.catalogue import CATALOGUE

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
            return definition.call(self, context, params)
        except AccessFailure as failure:
            return ActionResult(int(failure.result)), None
        except (ProtocolError, ValueError, TypeError, AttributeError, IndexError, OverflowError):
            return ActionResult.TYPE_UNMATCHED, None


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (dt.date(year, month + 1, 1) - dt.timedelta(days=1)).day


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
