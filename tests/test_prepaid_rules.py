"""The prepaid rules on synthetic histories: the consumption model, the run-out forecast,
anomaly hints, statements and quiet hours (pure functions, so every case is exact)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from headend.config_prepaid import QuietWindow
from headend.prepaid.anomalies import (
    DAILY_SPIKE,
    NIGHT_BASE_LOAD,
    NO_USE,
    Thresholds,
    find_anomalies,
)
from headend.prepaid.consumption import Sample, build_model
from headend.prepaid.forecast import forecast, running_out
from headend.prepaid.quiet_hours import QuietHours, read_holidays
from headend.prepaid.statements import statement

NOW = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)  # a Monday, midnight


def history(
    days: int,
    power_w: Callable[[datetime], float],
    *,
    step: timedelta = timedelta(minutes=15),
    start_kwh: float = 1000.0,
    end: datetime = NOW,
) -> list[Sample]:
    """A cumulative register sampled every `step` for `days` days up to `end`, integrating
    `power_w` (evaluated at the start of each step)."""
    t = end - timedelta(days=days)
    value = start_kwh
    out: list[Sample] = [(t, value)]
    while t < end:
        value += power_w(t) * step.total_seconds() / 3_600_000.0
        t += step
        out.append((t, value))
    return out


def flat(watts: float) -> Callable[[datetime], float]:
    return lambda _t: watts


# -- consumption model --------------------------------------------------------------------


def test_flat_use_gives_its_daily_energy() -> None:
    model = build_model(history(30, flat(500)), now=NOW)
    assert model.avg_daily_kwh_7 == pytest.approx(12.0)
    assert model.avg_daily_kwh_30 == pytest.approx(12.0)
    assert model.covered_days == pytest.approx(30.0)
    assert model.weekday_shape == pytest.approx((1.0,) * 7)
    assert model.night_w[NOW.date() - timedelta(days=1)] == pytest.approx(500)


def test_less_than_a_day_of_history_gives_no_average() -> None:
    model = build_model(history(1, flat(500))[:-8], now=NOW)
    assert model.avg_daily_kwh_7 is None and model.usual_daily_kwh() is None
    assert forecast(model, Decimal("10"), Decimal("0.6"), now=NOW).estimated_days_left is None


def test_weekly_shape_is_learnt() -> None:
    # Weekends at twice the weekday power.
    model = build_model(history(28, lambda t: 1000.0 if t.weekday() >= 5 else 500.0), now=NOW)
    shape = model.weekday_shape
    assert shape[5] == pytest.approx(2 * shape[0])
    assert sum(shape) / 7 == pytest.approx(1.0)
    assert model.avg_daily_kwh_7 == pytest.approx((5 * 12 + 2 * 24) / 7)


def test_a_gap_is_neither_zero_use_nor_a_spike() -> None:
    samples = history(30, flat(500))
    # The meter unreachable for five days: no samples in between.
    gap_from, gap_to = NOW - timedelta(days=12), NOW - timedelta(days=7)
    samples = [s for s in samples if not gap_from < s[0] < gap_to]
    model = build_model(samples, now=NOW)
    assert model.avg_daily_kwh_30 == pytest.approx(12.0)
    assert model.avg_daily_kwh_7 == pytest.approx(12.0)
    # The days inside the gap are spread evenly, never counted as a spike.
    assert find_anomalies(model, today=NOW.date(), connected=True, thresholds=Thresholds()) == []


def test_a_replaced_meter_starts_a_new_run() -> None:
    old = history(10, flat(500), end=NOW - timedelta(days=5))
    new = history(5, flat(500), start_kwh=0.0)  # the new register starts at 0
    model = build_model(old + new, now=NOW)
    assert model.avg_daily_kwh_7 == pytest.approx(12.0, rel=0.01)
    assert all(kwh >= 0 for kwh in model.daily_kwh.values())


def test_clock_steps_are_not_use() -> None:
    samples = history(10, flat(500))
    # A clock set back an hour: a sample repeats an earlier time with a later value, and a
    # jump forward leaves two samples a second apart with a large difference.
    t, v = samples[400]
    samples.append((t - timedelta(hours=1), v + 0.5))
    samples.append((samples[500][0] + timedelta(seconds=1), samples[500][1] + 40.0))
    model = build_model(samples, now=NOW)
    assert model.avg_daily_kwh_7 == pytest.approx(12.0, rel=0.05)


# -- forecast -----------------------------------------------------------------------------


def test_forecast_at_the_customers_own_rate() -> None:
    model = build_model(history(14, flat(500)), now=NOW)  # 12 kWh a day
    result = forecast(model, Decimal("36.00"), Decimal("0.60"), now=NOW)  # 7.20 a day
    assert result.estimated_days_left == 5.0
    assert result.suggested_topup == Decimal("216")  # 30 days x 12 kWh x 0.60
    assert result.payload() == {"estimated_days_left": 5.0, "suggested_topup": "216"}
    assert running_out(result, 6) and not running_out(result, 5)
    assert forecast(model, Decimal("-3"), Decimal("0.60"), now=NOW).estimated_days_left == 0.0


def test_forecast_runs_out_sooner_into_a_weekend() -> None:
    model = build_model(history(28, lambda t: 1000.0 if t.weekday() >= 5 else 500.0), now=NOW)
    # From Thursday midnight, 3.5 weekdays' worth of money.
    thursday = NOW + timedelta(days=3)
    weekday_cost = Decimal(str(model.daily_kwh[date(2026, 12, 3)])) * Decimal("0.60")
    result = forecast(model, weekday_cost * Decimal("3.5"), Decimal("0.60"), now=thursday)
    # Thursday and Friday at 1x, then Saturday at 2x: runs out during Saturday.
    assert result.estimated_days_left is not None and 2.0 < result.estimated_days_left < 3.0


def test_no_use_means_no_forecast() -> None:
    model = build_model(history(14, flat(0)), now=NOW)
    assert forecast(model, Decimal("10"), Decimal("0.6"), now=NOW).estimated_days_left is None


# -- anomalies ----------------------------------------------------------------------------


def _is_night(t: datetime) -> bool:
    return 1 <= t.hour < 5


def test_a_leak_at_night_is_hinted() -> None:
    leak_from = NOW - timedelta(days=3)

    def power(t: datetime) -> float:
        base = 60.0 if _is_night(t) else 600.0
        return base + (400.0 if t >= leak_from else 0.0)

    model = build_model(history(30, power), now=NOW)
    hints = find_anomalies(
        model, today=NOW.date() - timedelta(days=1), connected=True, thresholds=Thresholds()
    )
    assert [h.kind for h in hints] == [NIGHT_BASE_LOAD]
    assert hints[0].observed == pytest.approx(460) and hints[0].usual == pytest.approx(60)
    assert "460 W" in hints[0].detail and "60 W" in hints[0].detail


def test_one_high_night_is_not_a_leak() -> None:
    one_night = NOW - timedelta(days=2)

    def power(t: datetime) -> float:
        return 60.0 + (400.0 if one_night <= t < one_night + timedelta(days=1) else 0.0)

    model = build_model(history(30, power), now=NOW)
    hints = find_anomalies(
        model, today=NOW.date() - timedelta(days=1), connected=True, thresholds=Thresholds()
    )
    assert NIGHT_BASE_LOAD not in [h.kind for h in hints]


def test_a_day_at_four_times_the_usual_is_a_spike() -> None:
    spike_day = NOW - timedelta(days=1)

    def power(t: datetime) -> float:
        return 2000.0 if t >= spike_day else 500.0

    model = build_model(history(30, power), now=NOW)
    hints = find_anomalies(model, today=NOW.date(), connected=True, thresholds=Thresholds())
    assert [h.kind for h in hints] == [DAILY_SPIKE]
    assert hints[0].observed == pytest.approx(48) and hints[0].usual == pytest.approx(12)
    # A higher threshold keeps it quiet: the threshold is honoured.
    assert (
        find_anomalies(
            model, today=NOW.date(), connected=True, thresholds=Thresholds(daily_factor=5)
        )
        == []
    )


def test_days_without_use_on_a_connected_meter() -> None:
    stop = NOW - timedelta(days=4)
    model = build_model(history(30, lambda t: 0.0 if t >= stop else 500.0), now=NOW)
    hints = find_anomalies(model, today=NOW.date(), connected=True, thresholds=Thresholds())
    assert [h.kind for h in hints] == [NO_USE]
    # A disconnected meter uses nothing by design.
    assert find_anomalies(model, today=NOW.date(), connected=False, thresholds=Thresholds()) == []


# -- statements ---------------------------------------------------------------------------


def test_statement_with_previous_period_and_none_for_last_year() -> None:
    model = build_model(history(60, flat(500)), now=NOW)
    start, end = NOW - timedelta(days=30), NOW
    result = statement(model, start, end)
    assert result.energy_kwh == pytest.approx(360.0)
    assert result.previous_kwh == pytest.approx(360.0)
    assert result.last_year_kwh is None  # not stored: not passed off as zero
    assert result.payload()["same_period_last_year_kwh"] is None
    # The meter's own count (billing profile) wins over the model.
    assert statement(model, start, end, register_delta_kwh=359.5).energy_kwh == 359.5


# -- quiet hours and grace ----------------------------------------------------------------


def test_a_window_across_midnight_holds_until_it_ends() -> None:
    quiet = QuietHours(windows=(QuietWindow("18:00", "08:00"),), timezone="Asia/Shanghai")
    # 20:00 in Shanghai is 12:00 UTC.
    evening = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert quiet.quiet(evening)
    assert quiet.disconnect_at(evening) == datetime(2026, 12, 8, 0, 0, tzinfo=UTC)  # 08:00 local
    noon = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)  # 12:00 local
    assert not quiet.quiet(noon) and quiet.disconnect_at(noon) == noon


def test_weekend_days_and_overlapping_windows_chain() -> None:
    quiet = QuietHours(
        windows=(QuietWindow("18:00", "08:00"), QuietWindow("00:00", "23:59", ("sat", "sun")))
    )
    friday_evening = datetime(2026, 12, 11, 19, 0, tzinfo=UTC)
    # Friday night -> Saturday all day -> Sunday all day -> Sunday night -> Monday 08:00.
    assert quiet.disconnect_at(friday_evening) == datetime(2026, 12, 14, 8, 0, tzinfo=UTC)


def test_holidays_are_quiet_all_day(tmp_path: Path) -> None:
    path = tmp_path / "holidays.txt"
    path.write_text("2026-12-25  # Christmas\n\n2026-12-26\n")
    quiet = QuietHours(holidays=read_holidays(path))
    eve = datetime(2026, 12, 24, 23, 0, tzinfo=UTC)
    assert not quiet.quiet(eve)
    assert quiet.disconnect_at(datetime(2026, 12, 25, 9, tzinfo=UTC)) == datetime(
        2026, 12, 27, tzinfo=UTC
    )


def test_grace_then_quiet_hours() -> None:
    quiet = QuietHours(windows=(QuietWindow("18:00", "08:00"),), grace_s=3600)
    assert quiet.active
    at_five = datetime(2026, 12, 7, 17, 0, tzinfo=UTC)
    # Grace ends 18:00, inside the window: 08:00 next day.
    assert quiet.disconnect_at(at_five) == datetime(2026, 12, 8, 8, 0, tzinfo=UTC)
    assert QuietHours(grace_s=90).disconnect_at(at_five) == at_five + timedelta(seconds=90)
    assert not QuietHours().active and QuietHours().disconnect_at(at_five) == at_five


def test_daylight_saving_keeps_local_times() -> None:
    quiet = QuietHours(windows=(QuietWindow("22:00", "06:00"),), timezone="Europe/Berlin")
    # The night of the spring change (29 March 2026): 06:00 local is 04:00 UTC (CEST).
    night = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert quiet.disconnect_at(night) == datetime(2026, 3, 29, 4, 0, tzinfo=UTC)


def test_windows_may_give_seconds() -> None:
    quiet = QuietHours(windows=(QuietWindow("10:15:03", "10:15:20"),))
    assert quiet.disconnect_at(datetime(2026, 12, 6, 10, 15, 10, tzinfo=UTC)) == datetime(
        2026, 12, 6, 10, 15, 20, tzinfo=UTC
    )
