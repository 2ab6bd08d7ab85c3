"""When a disconnect for arrears may run: after the grace period, and outside the quiet hours
(friendly credit: no switch-off at night, at weekends, on holidays).

Windows are in the installation's local time (`[prepaid] timezone`), so "18:00" stays 18:00
across daylight-saving changes; a window whose end is before its start crosses midnight and
belongs to the day it starts on (a Friday 18:00-08:00 window ends on Saturday 08:00). A
holiday is quiet from its local midnight to the next. Reconnects are never held: only
disconnects ask this module."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from headend.config_prepaid import DAY_NAMES, PrepaidConfig, QuietWindow

__all__ = ["QuietHours", "read_holidays"]

_MAX_SCAN_DAYS = 400  # windows covering every hour of every day: give up, never loop


def read_holidays(path: Path | None) -> frozenset[date]:
    """The holidays file: one ISO date a line, '#' starts a comment (checked at config load)."""
    if path is None:
        return frozenset()
    days = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            days.add(date.fromisoformat(text))
    return frozenset(days)


def _hhmm(text: str) -> time:
    """ "18:00" or "18:00:30" (checked at config load)."""
    parts = [int(part) for part in text.split(":")]
    return time(parts[0], parts[1], parts[2] if len(parts) > 2 else 0)


@dataclass(frozen=True)
class _Span:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class QuietHours:
    windows: tuple[QuietWindow, ...] = ()
    holidays: frozenset[date] = frozenset()
    timezone: str = "UTC"
    grace_s: float = 0.0

    @classmethod
    def from_config(cls, prepaid: PrepaidConfig) -> QuietHours:
        return cls(
            windows=prepaid.no_disconnect,
            holidays=read_holidays(prepaid.holidays_file),
            timezone=prepaid.timezone,
            grace_s=prepaid.disconnect_grace_s,
        )

    @property
    def active(self) -> bool:
        """Whether a disconnect can ever be put off (else it runs at once, the published rule)."""
        return bool(self.windows or self.holidays or self.grace_s > 0)

    def disconnect_at(self, now: datetime) -> datetime:
        """The earliest moment at or after now + grace that lies in no quiet span."""
        return self.next_allowed(now + timedelta(seconds=self.grace_s))

    def next_allowed(self, moment: datetime) -> datetime:
        """`moment` itself when it is outside every quiet span, else the end of the span (or
        run of overlapping spans) it falls in. Aware datetimes in, UTC out."""
        tz = ZoneInfo(self.timezone)
        at = moment.astimezone(tz)
        for _ in range(_MAX_SCAN_DAYS * 4):
            span = self._span_containing(at, tz)
            if span is None:
                return at.astimezone(UTC)
            at = span.end
        return at.astimezone(UTC)  # pragma: no cover - quiet for a year: run anyway

    def quiet(self, moment: datetime) -> bool:
        return self._span_containing(moment.astimezone(ZoneInfo(self.timezone)), None) is not None

    def _span_containing(self, at: datetime, tz: ZoneInfo | None) -> _Span | None:
        zone = tz or ZoneInfo(self.timezone)
        latest: _Span | None = None
        for span in self._spans_around(at.date(), zone):
            if span.start <= at < span.end and (latest is None or span.end > latest.end):
                latest = span
        return latest

    def _spans_around(self, day: date, zone: ZoneInfo) -> Iterable[_Span]:
        """Every quiet span that starts on the day before `day` or on `day` (a span lasts at
        most a day, so these are all that can contain a moment of `day`)."""
        for start_day in (day - timedelta(days=1), day):
            if start_day in self.holidays:
                yield _Span(
                    datetime.combine(start_day, time(0), zone),
                    datetime.combine(start_day + timedelta(days=1), time(0), zone),
                )
            weekday = DAY_NAMES[start_day.weekday()]
            for window in self.windows:
                if window.days and weekday not in {d.lower() for d in window.days}:
                    continue
                begin, end = _hhmm(window.start), _hhmm(window.end)
                end_day = start_day if end > begin else start_day + timedelta(days=1)
                # A window "to 23:59" means to the end of that minute: quiet till midnight.
                end_at = (
                    datetime.combine(end_day + timedelta(days=1), time(0), zone)
                    if window.end == "23:59"
                    else datetime.combine(end_day, end, zone)
                )
                yield _Span(datetime.combine(start_day, begin, zone), end_at)
