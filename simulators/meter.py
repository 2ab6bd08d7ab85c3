"""One simulated meter: its state and behaviour (energy, clock, relay, overrides).

State is kept small and lazy so that ten thousand meters idle cheaply: energy is a closed-form
function of time (simulators/loadcurve.py) minus what the open relay held back, so there are no
timers, no per-meter tasks and no stored profile rows. COSEM access to the meter (the shared
object catalogue, access rights, GET/SET/ACTION) is simulators/objects/services.py; the meter
knows nothing of it, so the objects can see the meter without importing it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from cosem_objects.apdu.common import DataAccessResult
from cosem_objects.classes import ControlState, Transition, next_control_state
from cosem_objects.data import Data
from cosem_objects.dates import CosemDateTime
from cosem_objects.obis import Obis
from simulators.config import Faults, MeterConfig
from simulators.event_logs import DISCONNECTOR_LOG, EventLogs
from simulators.limiter import LimiterState
from simulators.loadcurve import LoadCurve
from simulators.objects.model import AccessFailure
from simulators.relay import (
    SOURCES,
    EventCode,
    RelayEvent,
    RelayOutcome,
    event_code,
)

SECONDS_PER_DAY = 86400.0

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
        "_overrides",
        "_utc_offset_min",
        "_windows",
        "client_ic_high",
        "client_system_title",
        "config",
        "control_state",
        "created",
        "curve",
        "events",
        "last_event_code",
        "limiter",
        "push_trigger",
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
        self.limiter = LimiterState()  # Limiter (class 71): caps the load it lets through
        self._history: list[RelayEvent] | None = None
        self.events = EventLogs()
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
        # Set by the push agent when the meter pushes somewhere: Push setup's ACTION push.
        self.push_trigger: Callable[[], None] | None = None

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

        What the relay held back while open is subtracted; set_energy offsets are added."""
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
        if self.limiter.windows:
            held = self.limiter.held_back_wh(lambda at: self.power(at, limited=False)[0], t)
            share = t1 / total if total > 0 else 0.0
            total -= held
            t1 -= held * share
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

    def power(self, t: float | None = None, *, limited: bool = True) -> tuple[float, float]:
        """(import W, export W) now; zero while the relay is open, at most the limiter's
        threshold while one is in force."""
        t = self.now() if t is None else t
        if not self.relay_closed_at(t):
            return 0.0, 0.0
        imported, exported = self.curve.power(self._curve_seconds(t))
        cap = self.limiter.cap(t) if limited else None
        return (imported if cap is None else min(imported, cap)), exported

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
        return self.events.entries(DISCONNECTOR_LOG)

    def event_log(self, log: Obis) -> list[tuple[float, int]]:
        """(real unix time, event code) rows of one event log, oldest first."""
        return self.events.entries(log)

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
            transition, before, after, RelayOutcome.OK, event_code(transition, after)
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
        event = RelayEvent(t, SOURCES[transition], transition, before, after, outcome)
        self.relay_history.append(event)
        if code is not None:
            self.last_event_code = code
            self.events.record(DISCONNECTOR_LOG, code, t)
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
    def set_energy(self, obis: Obis, wh: float) -> None:
        """An energy register (ENERGY_REGISTERS) reads `wh` now and keeps counting from it."""
        position = ENERGY_REGISTERS[obis]
        offsets = self._energy_offsets or [0.0, 0.0, 0.0, 0.0]
        base = self.energy()[position] - offsets[position]
        offsets[position] = wh - base
        self._energy_offsets = offsets

    def freeze(self, obis: Obis, data: Data) -> None:
        """Attribute 2 of `obis` reads `data` until cleared."""
        if self._overrides is None:
            self._overrides = {}
        self._overrides[obis] = data

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


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (dt.date(year, month + 1, 1) - dt.timedelta(days=1)).day
