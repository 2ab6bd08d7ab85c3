"""Use that departs from the meter's own pattern in a way worth the customer's attention.

Three hints, each saying what it compared so the customer (or the call centre) can judge:
- night_base_load: the base load at night over the last nights far above the meter's own
  nights before (an appliance left on, a leak to earth: "check your wiring");
- daily_spike: yesterday's use a large multiple of the usual daily use;
- no_use: zero use for days on a meter whose relay is connected (a stopped meter, a bypass,
  or an empty home: worth a look either way).
Pure: the consumption model in, hints out; the caller sends each hint once per episode."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from statistics import median

from headend.prepaid.consumption import ConsumptionModel, full_days

__all__ = ["Hint", "Thresholds", "find_anomalies"]

NIGHT_BASE_LOAD = "night_base_load"
DAILY_SPIKE = "daily_spike"
NO_USE = "no_use"

_RECENT_NIGHTS = 3
_HISTORY_DAYS = 30
_MIN_HISTORY_NIGHTS = 7
_MIN_NIGHT_W = 30.0  # below this a "multiple" of a tiny base load is noise, not a leak
_MIN_DAILY_KWH = 1.0


@dataclass(frozen=True)
class Thresholds:
    night_factor: float = 3.0
    daily_factor: float = 3.0
    zero_days: int = 3


@dataclass(frozen=True)
class Hint:
    kind: str
    detail: str
    observed: float
    usual: float | None
    unit: str
    factor: float | None

    def payload(self) -> dict[str, object]:
        return {
            "anomaly": self.kind,
            "detail": self.detail,
            "observed": round(self.observed, 3),
            "usual": None if self.usual is None else round(self.usual, 3),
            "unit": self.unit,
            "threshold_factor": self.factor,
        }


def find_anomalies(
    model: ConsumptionModel, *, today: date, connected: bool, thresholds: Thresholds
) -> list[Hint]:
    hints: list[Hint] = []
    night = _night_hint(model, today, thresholds.night_factor)
    if night is not None:
        hints.append(night)
    spike = _spike_hint(model, today, thresholds.daily_factor)
    if spike is not None:
        hints.append(spike)
    if connected:
        idle = _no_use_hint(model, today, thresholds.zero_days)
        if idle is not None:
            hints.append(idle)
    return hints


def _night_hint(model: ConsumptionModel, today: date, factor: float) -> Hint | None:
    recent_days = [today - timedelta(days=i) for i in range(_RECENT_NIGHTS)]
    recent = [model.night_w[d] for d in recent_days if d in model.night_w]
    history = [
        model.night_w[d]
        for i in range(_RECENT_NIGHTS, _RECENT_NIGHTS + _HISTORY_DAYS)
        if (d := today - timedelta(days=i)) in model.night_w
    ]
    if len(recent) < _RECENT_NIGHTS or len(history) < _MIN_HISTORY_NIGHTS:
        return None
    observed = min(recent)  # sustained: every recent night, not one
    usual = median(history)
    if observed < _MIN_NIGHT_W or observed < factor * max(usual, 1.0):
        return None
    return Hint(
        NIGHT_BASE_LOAD,
        f"night base load (01:00-05:00) at least {observed:.0f} W on each of the last "
        f"{_RECENT_NIGHTS} nights, against a usual {usual:.0f} W (median of "
        f"{len(history)} nights before): check for appliances left on or a leak in the wiring",
        observed,
        usual,
        "W",
        factor,
    )


def _spike_hint(model: ConsumptionModel, today: date, factor: float) -> Hint | None:
    yesterday = today - timedelta(days=1)
    days = full_days(model, [yesterday])
    history = full_days(model, [today - timedelta(days=i) for i in range(2, 2 + _HISTORY_DAYS)])
    if not days or len(history) < 7:
        return None
    observed = days[0][1]
    usual = sum(kwh for _, kwh in history) / len(history)
    if observed < _MIN_DAILY_KWH or observed < factor * max(usual, 0.1):
        return None
    return Hint(
        DAILY_SPIKE,
        f"{observed:.1f} kWh used on {yesterday.isoformat()}, against a usual "
        f"{usual:.1f} kWh a day (mean of {len(history)} days)",
        observed,
        usual,
        "kWh",
        factor,
    )


def _no_use_hint(model: ConsumptionModel, today: date, zero_days: int) -> Hint | None:
    days = full_days(model, [today - timedelta(days=i) for i in range(1, zero_days + 1)])
    if len(days) < zero_days or any(kwh > 0.001 for _, kwh in days):
        return None
    return Hint(
        NO_USE,
        f"no energy used for {zero_days} whole days while the relay is connected",
        0.0,
        model.avg_daily_kwh_30,
        "kWh",
        None,
    )
