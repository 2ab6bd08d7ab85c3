"""The prepaid policies that run between balance events, after polls: the meter's
consumption model refreshed when new readings arrived (at most hourly once it has a daily
rate: a model is 35 days of history, and rebuilding every meter's each minute as polls come
in grew the daemon's CPU per poll with the stored history), the run-out forecast at the balance
billing last reported (credit_running_out, once per episode), usage anomaly hints (each kind
once while it lasts) and usage statements (at the billing-profile boundary, or every
`statement_interval_s`). Every notice is written to the outbox in the transaction that
records it was sent, so a crash neither loses one nor sends it twice with different ids."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from headend import domain
from headend.config_prepaid import PrepaidConfig
from headend.domain import CONNECTED, DISCONNECTED
from headend.mqtt.notifier import Notifier
from headend.observability.logs import get_logger
from headend.prepaid.anomalies import Thresholds, find_anomalies
from headend.prepaid.consumption import ConsumptionModel, UsageSummary, build_model
from headend.prepaid.forecast import Forecast, forecast, running_out
from headend.prepaid.statements import statement
from headend.storage import Repository
from headend.storage.usage import PrepaidMeter

__all__ = ["PrepaidWatch", "estimate_now"]

log = get_logger(__name__)

HISTORY = timedelta(days=35)  # what the rates and anomaly hints look at
MODEL_REFRESH = timedelta(hours=1)
"""A meter's model is rebuilt from new readings at most this often once it has a daily rate
(an hour moves a 7-day average by under 1 %); without one, at the next round."""


def _now() -> datetime:
    return datetime.now(UTC)


def estimate_now(
    usage: UsageSummary | None,
    balance: Decimal,
    balance_at: datetime,
    price: Decimal,
    now: datetime,
    timezone: str,
) -> Forecast:
    """The forecast made when billing reported `balance`, moved on to `now` (the customer has
    been using energy since): days left counted from now."""
    result = forecast(usage, balance, price, now=balance_at, timezone=timezone)
    if result.runs_out_at is None or result.estimated_days_left is None:
        return result
    left = max(0.0, (result.runs_out_at - now).total_seconds() / 86_400.0)
    return Forecast(round(left, 1), result.suggested_topup, result.runs_out_at, result.daily_kwh)


class PrepaidWatch:
    def __init__(
        self,
        repository: Repository,
        notifier: Notifier,
        prepaid: PrepaidConfig,
        *,
        every_s: float = 60.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.repository = repository
        self.notifier = notifier
        self.prepaid = prepaid
        self.every_s = every_s
        self._clock = clock
        self.thresholds = Thresholds(
            prepaid.anomaly_night_factor, prepaid.anomaly_daily_factor, prepaid.anomaly_zero_days
        )

    def __repr__(self) -> str:
        return f"PrepaidWatch(every_s={self.every_s})"

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # the database away: the next round tries again
                log.exception("prepaid watch round failed")
            await asyncio.sleep(self.every_s)

    async def check(self) -> None:
        now = self._clock()
        for meter in await self.repository.prepaid_meters():
            try:
                await self._meter(meter, now)
            except Exception:
                log.exception("prepaid policies for %s failed", meter.meter_id)

    async def _meter(self, meter: PrepaidMeter, now: datetime) -> None:
        usage = meter.usage
        model: ConsumptionModel | None = None
        fresh = meter.last_reading_at is not None and (
            meter.usage_model_at is None
            or (
                meter.last_reading_at > meter.usage_model_at
                and (
                    usage is None
                    or usage.usual_daily_kwh() is None
                    or now - meter.usage_model_at >= MODEL_REFRESH
                )
            )
        )
        if fresh:
            samples = await self.repository.energy_samples(meter.meter_id, now - HISTORY)
            model = build_model(samples, now=now, timezone=self.prepaid.timezone)
            usage = UsageSummary.of(model)
            await self.repository.mark_prepaid(
                meter.meter_id, usage_model=usage.to_json(), usage_model_at=now
            )
        await self._running_out(meter, usage, now)
        if model is not None:
            await self._anomalies(meter, model, now)
        await self._statement(meter, now)

    async def _running_out(
        self, meter: PrepaidMeter, usage: UsageSummary | None, now: datetime
    ) -> None:
        balance = meter.last_balance
        if (
            usage is None
            or balance is None
            or balance <= 0
            or meter.last_balance_at is None
            or meter.running_out_notified
            or meter.desired_relay_state == DISCONNECTED
        ):
            return
        price = meter.last_price or self.prepaid.price_per_kwh
        result = estimate_now(
            usage, balance, meter.last_balance_at, price, now, self.prepaid.timezone
        )
        if not running_out(result, self.prepaid.warn_days_ahead):
            return
        async with self.repository.db.transaction():
            await self.repository.mark_prepaid(meter.meter_id, running_out_notified=True)
            self.notifier.notification(
                domain.CREDIT_RUNNING_OUT,
                meter.meter_id,
                now,
                balance=balance,
                currency=meter.last_balance_currency,
                extra=result.payload(),
            )

    async def _anomalies(self, meter: PrepaidMeter, model: ConsumptionModel, now: datetime) -> None:
        today = now.astimezone(ZoneInfo(self.prepaid.timezone)).date()
        hints = find_anomalies(
            model,
            today=today,
            connected=meter.confirmed_relay_state == CONNECTED,
            thresholds=self.thresholds,
        )
        active = {hint.kind for hint in hints}
        if active == meter.anomalies_notified:
            return
        async with self.repository.db.transaction():
            await self.repository.mark_prepaid(
                meter.meter_id, anomalies_notified=",".join(sorted(active)) or None
            )
            for hint in hints:
                if hint.kind not in meter.anomalies_notified:
                    self.notifier.notification(
                        domain.USAGE_ANOMALY, meter.meter_id, now, extra=hint.payload()
                    )

    async def _statement(self, meter: PrepaidMeter, now: datetime) -> None:
        interval = self.prepaid.statement_interval_s
        if interval > 0:
            if meter.last_statement_at is None:  # the first period starts now
                await self.repository.mark_prepaid(meter.meter_id, last_statement_at=now)
                return
            if (now - meter.last_statement_at).total_seconds() < interval:
                return
            await self._send_statement(meter.meter_id, meter.last_statement_at, now, None, now)
            return
        # At the billing-profile boundary: a new capture closes a period.
        since = meter.last_statement_at or now - timedelta(days=70)
        captures = await self.repository.billing_captures(
            meter.meter_id, since - timedelta(days=62)
        )
        newest = [c for c in captures if meter.last_statement_at is None or c[0] > since]
        if not newest:
            return
        end_ts, end_kwh = newest[-1]
        earlier = [c for c in captures if c[0] < end_ts]
        if not earlier:
            await self.repository.mark_prepaid(meter.meter_id, last_statement_at=end_ts)
            return
        start_ts, start_kwh = earlier[-1]
        delta = end_kwh - start_kwh if end_kwh >= start_kwh else None
        await self._send_statement(meter.meter_id, start_ts, end_ts, delta, now)

    async def _send_statement(
        self,
        meter_id: str,
        start: datetime,
        end: datetime,
        register_delta_kwh: float | None,
        now: datetime,
    ) -> None:
        length = end - start
        since = start - max(length, timedelta(days=364)) - length
        samples = await self.repository.energy_samples(meter_id, since)
        model = build_model(samples, now=now, timezone=self.prepaid.timezone)
        result = statement(model, start, end, register_delta_kwh=register_delta_kwh)
        async with self.repository.db.transaction():
            await self.repository.mark_prepaid(meter_id, last_statement_at=end)
            self.notifier.notification(
                domain.USAGE_STATEMENT, meter_id, now, extra=result.payload()
            )
