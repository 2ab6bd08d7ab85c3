"""Usage statements: what a meter used in a period, beside the period before and the same
period a year earlier where the history holds them (None where it does not: a statement never
passes a partly covered period off as a whole one)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from headend.prepaid.consumption import ConsumptionModel

__all__ = ["Statement", "statement"]

_COMPLETE = 0.99


@dataclass(frozen=True)
class Statement:
    period_start: datetime
    period_end: datetime
    energy_kwh: float | None
    previous_kwh: float | None
    last_year_kwh: float | None

    def payload(self) -> dict[str, object]:
        return {
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "energy_kwh": _round(self.energy_kwh),
            "previous_period_kwh": _round(self.previous_kwh),
            "same_period_last_year_kwh": _round(self.last_year_kwh),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def statement(
    model: ConsumptionModel,
    start: datetime,
    end: datetime,
    *,
    register_delta_kwh: float | None = None,
) -> Statement:
    """The statement of [start, end) in local days (the model's days). `register_delta_kwh`,
    when known (the billing profile's two captures), is the period's use as the meter
    itself counted it, and wins over the model's sum."""
    length = end - start
    energy = register_delta_kwh if register_delta_kwh is not None else _energy(model, start, end)
    previous = _energy(model, start - length, start)
    year = timedelta(days=364)  # the same weekdays a year before
    last_year = _energy(model, start - year, end - year)
    return Statement(start, end, energy, previous, last_year)


def _energy(model: ConsumptionModel, start: datetime, end: datetime) -> float | None:
    days = _days(start.date(), end.date())
    if not days:
        return None
    if any(model.day_coverage.get(d, 0.0) < _COMPLETE for d in days):
        return None
    return sum(model.daily_kwh.get(d, 0.0) for d in days)


def _days(first: date, stop: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((stop - first).days)]
