"""A meter's own pattern of use, from the cumulative energy register as stored (polled
readings and load-profile captures alike): average daily use over 7 and 30 days, its
day-of-week shape, the night base load, and the use of each local day.

Real histories are untidy, and each untidiness is handled where it enters:
- gaps (an unreachable meter, a head-end down for a week): the energy between two samples is
  spread evenly over the time between them, and averages divide by the time actually covered,
  so a gap neither counts as zero use nor inflates a day;
- a replaced or reset meter (the register goes back): that pair is dropped, the new register
  starts a new run;
- clock steps (a meter's clock set back or jumping ahead): samples are taken in time order and
  pairs closer than a minute or implying more than `max_power_w` are dropped as not physical.
Pure: samples in, numbers out; time zone for "a day" and "night" given by the caller."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

__all__ = ["ConsumptionModel", "Sample", "UsageSummary", "build_model"]

Sample = tuple[datetime, float]
"""(when, cumulative import energy in kWh)."""

_MIN_PAIR_S = 60.0
_DAY = timedelta(days=1)
NIGHT_START = time(1, 0)  # the night base load is the use between 01:00 and 05:00 local
NIGHT_END = time(5, 0)


@dataclass(frozen=True)
class ConsumptionModel:
    covered_days: float  # days of history the valid pairs cover in all
    daily_kwh: dict[date, float]  # energy per local day (only days with coverage)
    day_coverage: dict[date, float]  # fraction of each local day covered (0..1)
    night_w: dict[date, float]  # average power 01:00-05:00 local, per night fully covered
    avg_daily_kwh_7: float | None  # None: less than a day of history in the window
    avg_daily_kwh_30: float | None
    weekday_shape: tuple[float, ...] = field(default=(1.0,) * 7)  # Monday first, mean 1.0

    def usual_daily_kwh(self) -> float | None:
        """The rate the forecast uses: the last 7 days', else the last 30 days'."""
        return self.avg_daily_kwh_7 if self.avg_daily_kwh_7 is not None else self.avg_daily_kwh_30


@dataclass(frozen=True)
class UsageSummary:
    """What the forecast needs of a model, kept on the meter row (meters.usage_model) so that
    a balance event forecasts without reading the history again."""

    avg_daily_kwh_7: float | None
    avg_daily_kwh_30: float | None
    weekday_shape: tuple[float, ...]
    covered_days: float

    def usual_daily_kwh(self) -> float | None:
        return self.avg_daily_kwh_7 if self.avg_daily_kwh_7 is not None else self.avg_daily_kwh_30

    @classmethod
    def of(cls, model: ConsumptionModel) -> UsageSummary:
        return cls(
            model.avg_daily_kwh_7,
            model.avg_daily_kwh_30,
            model.weekday_shape,
            round(model.covered_days, 3),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "avg_daily_kwh_7": self.avg_daily_kwh_7,
            "avg_daily_kwh_30": self.avg_daily_kwh_30,
            "weekday_shape": list(self.weekday_shape),
            "covered_days": self.covered_days,
        }

    @classmethod
    def from_json(cls, data: object) -> UsageSummary | None:
        """None for anything that is not a summary this code wrote (never raises: a row from
        an older release forecasts nothing rather than failing an event)."""
        if not isinstance(data, dict):
            return None
        try:
            shape = tuple(float(x) for x in data["weekday_shape"])
            if len(shape) != 7:
                return None
            return cls(
                _opt_float(data["avg_daily_kwh_7"]),
                _opt_float(data["avg_daily_kwh_30"]),
                shape,
                float(data["covered_days"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def build_model(
    samples: Iterable[Sample],
    *,
    now: datetime,
    timezone: str = "UTC",
    max_power_w: float = 100_000.0,
) -> ConsumptionModel:
    zone = ZoneInfo(timezone)
    ordered = sorted((ts.astimezone(UTC), float(v)) for ts, v in samples if v == v)
    energy: dict[date, float] = {}
    covered: dict[date, float] = {}  # seconds covered per local day
    night_energy: dict[date, float] = {}
    night_covered: dict[date, float] = {}
    total_s = 0.0
    for (t0, v0), (t1, v1) in pairwise(ordered):
        span_s = (t1 - t0).total_seconds()
        delta = v1 - v0
        if span_s < _MIN_PAIR_S or delta < 0:
            continue  # a clock step or a replaced meter: not a measurement of use
        if delta * 3_600_000.0 / span_s > max_power_w:
            continue  # more than any supply could deliver: a step, not use
        total_s += span_s
        rate = delta / span_s  # kWh per second, spread evenly over the pair
        for day, start, end in _split_by_day(t0, t1, zone):
            part = (end - start).total_seconds()
            energy[day] = energy.get(day, 0.0) + rate * part
            covered[day] = covered.get(day, 0.0) + part
            n_start = datetime.combine(day, NIGHT_START, zone)
            n_end = datetime.combine(day, NIGHT_END, zone)
            overlap = (min(end, n_end) - max(start, n_start)).total_seconds()
            if overlap > 0:
                night_energy[day] = night_energy.get(day, 0.0) + rate * overlap
                night_covered[day] = night_covered.get(day, 0.0) + overlap
    night_s = (
        datetime.combine(date(2000, 1, 1), NIGHT_END)
        - datetime.combine(date(2000, 1, 1), NIGHT_START)
    ).total_seconds()
    night_w = {
        day: night_energy[day] * 3_600_000.0 / night_covered[day]
        for day in night_energy
        if night_covered[day] >= night_s * 0.95
    }
    coverage = {day: min(1.0, s / 86_400.0) for day, s in covered.items()}
    today = now.astimezone(zone).date()
    return ConsumptionModel(
        covered_days=total_s / 86_400.0,
        daily_kwh=energy,
        day_coverage=coverage,
        night_w=night_w,
        avg_daily_kwh_7=_average(energy, covered, today, 7),
        avg_daily_kwh_30=_average(energy, covered, today, 30),
        weekday_shape=_weekday_shape(energy, coverage),
    )


def _split_by_day(
    t0: datetime, t1: datetime, zone: ZoneInfo
) -> Iterable[tuple[date, datetime, datetime]]:
    start = t0.astimezone(zone)
    end = t1.astimezone(zone)
    while start < end:
        day = start.date()
        midnight = datetime.combine(day + _DAY, time(0), zone)
        stop = min(end, midnight)
        yield day, start, stop
        start = stop


def _average(
    energy: dict[date, float], covered: dict[date, float], today: date, days: int
) -> float | None:
    """Energy per covered day over the `days` whole days before today and today's hours so
    far. None below one day of coverage."""
    window = [today - timedelta(days=i) for i in range(days + 1)]
    seconds = sum(covered.get(d, 0.0) for d in window)
    if seconds < 86_400.0 * 0.999:
        return None
    return sum(energy.get(d, 0.0) for d in window) * 86_400.0 / seconds


def _weekday_shape(energy: dict[date, float], coverage: dict[date, float]) -> tuple[float, ...]:
    """Each weekday's mean use over the fully covered days, relative to the mean of all
    seven; flat until every weekday has been seen twice (one odd week is not a shape)."""
    per_day: list[list[float]] = [[] for _ in range(7)]
    for day, kwh in energy.items():
        if coverage.get(day, 0.0) >= 0.99:
            per_day[day.weekday()].append(kwh)
    if any(len(values) < 2 for values in per_day):
        return (1.0,) * 7
    means = [sum(v) / len(v) for v in per_day]
    overall = sum(means) / 7
    if overall <= 0:
        return (1.0,) * 7
    return tuple(m / overall for m in means)


def full_days(model: ConsumptionModel, days: Sequence[date]) -> list[tuple[date, float]]:
    """The days among `days` that are fully covered, with their use."""
    return [(d, model.daily_kwh[d]) for d in days if model.day_coverage.get(d, 0.0) >= 0.99]
