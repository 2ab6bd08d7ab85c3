"""The ``[prepaid]`` section: the policies beyond on/off (forecast, statements, anomaly
hints, quiet hours, grace, load limiting). Its own module because the quiet-hours windows are
a list of tables with their own checks; the defaults keep the utility's published rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from headend.config_loader import ConfigError

__all__ = ["ARREARS_ACTIONS", "DAY_NAMES", "PREPAID_CHECKS", "PrepaidConfig", "QuietWindow"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ARREARS_ACTIONS = ("disconnect", "limit")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")  # seconds optional


@dataclass(frozen=True)
class QuietWindow:
    """One no-disconnect window in local time; `end` before `start` crosses midnight (the
    window belongs to the day it starts on). No `days`: every day."""

    start: str = field(default="00:00", metadata={"key": "from"})
    end: str = field(default="00:00", metadata={"key": "to"})
    days: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrepaidConfig:
    price_per_kwh: Decimal = Decimal("0.60")  # for the forecast, unless an event carries price
    warn_days_ahead: float = 3.0  # credit_running_out below this many days left
    disconnect_grace_s: float = 0.0  # below zero -> switch-off delay (0: the published rule)
    timezone: str = "UTC"  # IANA name, for quiet hours and statement periods
    no_disconnect: tuple[QuietWindow, ...] = ()
    holidays_file: Path | None = None  # one ISO date a line: quiet all day
    statement_interval_s: float = 0.0  # 0: at the billing-profile boundary
    arrears_action: str = "disconnect"  # or "limit" (Limiter, class 71) with limit_w
    limit_w: float = 0.0
    # Usage anomaly hints: what "far above" and "for days" mean.
    anomaly_night_factor: float = 3.0  # night base load vs the meter's own history
    anomaly_daily_factor: float = 3.0  # one day's use vs the usual daily use
    anomaly_zero_days: int = 3  # days of zero use on a connected meter


def _timezone(v: str) -> str | None:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return f"not an IANA time zone name: {v!r} (e.g. Asia/Shanghai)"
    return None


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v:g}"


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v:g}"


def _holidays(v: Path | None) -> str | None:
    if v is None:
        return None
    if not v.is_file():
        return f"file not found: {v}"
    from datetime import date

    for n, line in enumerate(v.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            date.fromisoformat(text)
        except ValueError:
            return f"{v}:{n}: not an ISO date (YYYY-MM-DD): {text!r}"
    return None


PREPAID_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "prepaid.price_per_kwh": lambda v: None if v >= 0 else f"must be >= 0, got {v}",
    "prepaid.warn_days_ahead": _non_negative,
    "prepaid.disconnect_grace_s": _non_negative,
    "prepaid.timezone": _timezone,
    "prepaid.holidays_file": _holidays,
    "prepaid.statement_interval_s": _non_negative,
    "prepaid.arrears_action": lambda v: (
        None if v in ARREARS_ACTIONS else f"must be one of {', '.join(ARREARS_ACTIONS)}, got {v!r}"
    ),
    "prepaid.limit_w": _non_negative,
    "prepaid.anomaly_night_factor": _positive,
    "prepaid.anomaly_daily_factor": _positive,
    "prepaid.anomaly_zero_days": _positive,
}


def validate_prepaid(prepaid: PrepaidConfig) -> None:
    """The checks that span keys or list items (single keys are in PREPAID_CHECKS)."""
    for i, window in enumerate(prepaid.no_disconnect):
        key = f"prepaid.no_disconnect[{i}]"
        for name, value in (("from", window.start), ("to", window.end)):
            if not _HHMM.match(value):
                raise ConfigError(
                    f"{key}.{name}", f'must be "HH:MM" or "HH:MM:SS" (24 h), got {value!r}'
                )
        if window.start == window.end:
            raise ConfigError(f"{key}.to", "must differ from 'from' (an empty window)")
        for day in window.days:
            if day.lower() not in DAY_NAMES:
                raise ConfigError(
                    f"{key}.days", f"must name days among {', '.join(DAY_NAMES)}, got {day!r}"
                )
    if prepaid.arrears_action == "limit" and prepaid.limit_w <= 0:
        raise ConfigError("prepaid.limit_w", 'must be > 0 when arrears_action = "limit"')
