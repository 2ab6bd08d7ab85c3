"""When a balance runs out at the customer's own rate, and what to suggest they top up.

The published rule warns the customer when the balance is *estimated* to run short; the
estimate walks forward day by day from now at the usual daily use shaped by the day of the
week (a household that uses more at weekends runs out sooner into a weekend)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

__all__ = ["Forecast", "forecast", "running_out"]

_HORIZON_DAYS = 3660  # beyond ten years "when" means nothing: say None
_TOPUP_DAYS = 30  # "about a month of their usual use"


@dataclass(frozen=True)
class Forecast:
    estimated_days_left: float | None  # one decimal; None: no estimate (no history, no use)
    suggested_topup: Decimal | None  # in the balance's currency, whole units, rounded up
    runs_out_at: datetime | None
    daily_kwh: float | None  # the rate used

    def payload(self) -> dict[str, object]:
        """The fields the notifications carry (JSON types: number and decimal string)."""
        return {
            "estimated_days_left": self.estimated_days_left,
            "suggested_topup": None if self.suggested_topup is None else str(self.suggested_topup),
        }


NO_FORECAST = Forecast(None, None, None, None)


class Rates(Protocol):
    """A consumption model or its stored summary."""

    @property
    def avg_daily_kwh_30(self) -> float | None: ...

    @property
    def weekday_shape(self) -> tuple[float, ...]: ...

    def usual_daily_kwh(self) -> float | None: ...


def forecast(
    model: Rates | None,
    balance: Decimal,
    price_per_kwh: Decimal,
    *,
    now: datetime,
    timezone: str = "UTC",
) -> Forecast:
    if model is None:
        return NO_FORECAST
    daily = model.usual_daily_kwh()
    if daily is None or daily <= 0 or price_per_kwh <= 0:
        return NO_FORECAST
    month_kwh = model.avg_daily_kwh_30 if model.avg_daily_kwh_30 is not None else daily
    topup = (Decimal(repr(month_kwh * _TOPUP_DAYS)) * price_per_kwh).quantize(
        Decimal(1), rounding=ROUND_CEILING
    )
    if balance <= 0:
        return Forecast(0.0, topup, now, daily)
    left = float(balance / price_per_kwh)  # kWh the balance buys
    local = now.astimezone(ZoneInfo(timezone))
    days = 0.0
    # The rest of today first (at today's weekday weight), then whole days.
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    fraction_left_today = 1.0 - (local - day_start).total_seconds() / 86_400.0
    cursor = local
    weight = model.weekday_shape[local.weekday()]
    today_use = daily * weight * fraction_left_today
    if today_use >= left:
        days = fraction_left_today * left / today_use
    else:
        left -= today_use
        days = fraction_left_today
        cursor = day_start + timedelta(days=1)
        while days < _HORIZON_DAYS:
            use = daily * model.weekday_shape[cursor.weekday()]
            if use >= left:
                days += left / use
                break
            left -= use
            days += 1.0
            cursor += timedelta(days=1)
        else:
            return Forecast(None, topup, None, daily)
    return Forecast(round(days, 1), topup, now + timedelta(days=days), daily)


def running_out(result: Forecast, warn_days_ahead: float) -> bool:
    """Whether the forecast is under the warning limit (no forecast: never)."""
    return result.estimated_days_left is not None and result.estimated_days_left < warn_days_ahead
