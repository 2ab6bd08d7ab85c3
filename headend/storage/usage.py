"""What the prepaid policies read and keep per meter: the import-energy history (polled
register readings and load-profile captures), the billing profile's captures (statement
periods), the stored consumption model, and what the customer was told this episode."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update

from cosem_objects.classes import Obises
from headend.prepaid.consumption import Sample, UsageSummary
from headend.storage.core import BATCH, METERS, PROFILES, Store
from headend.storage.readings import Readings

__all__ = ["ENERGY_IMPORT", "PrepaidMeter", "Usage"]

ENERGY_IMPORT = "1.0.1.8.0.255"
_PROFILE_KEY = f"{ENERGY_IMPORT}:2"  # the register's value attribute as a capture column
_LOAD_PROFILE = str(Obises.LOAD_PROFILE)
_BILLING_PROFILE = str(Obises.BILLING_PROFILE)
_TO_KWH = {"Wh": 0.001, "kWh": 1.0, "MWh": 1000.0}
_MAX_SAMPLES = 200_000  # 35 days polled every 15 s: more than any real interval gives


@dataclass(frozen=True)
class PrepaidMeter:
    """A meter's row as the prepaid watch sees it."""

    meter_id: str
    last_balance: Decimal | None
    last_balance_currency: str | None
    last_balance_at: datetime | None
    confirmed_relay_state: str | None
    desired_relay_state: str | None
    last_reading_at: datetime | None
    usage: UsageSummary | None
    usage_model_at: datetime | None
    running_out_notified: bool
    anomalies_notified: frozenset[str]
    last_statement_at: datetime | None
    protected: bool
    last_price: Decimal | None


class Usage(Store):
    async def energy_samples(self, meter_id: str, since: datetime) -> list[Sample]:
        """The cumulative import energy in kWh, from readings and the load profile."""
        readings = await Readings(self.db, self._clock).readings(
            meter_id, obis=ENERGY_IMPORT, since=since, limit=_MAX_SAMPLES
        )
        samples: list[Sample] = []
        unit = "Wh"
        for reading in readings:
            value = reading.value
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            unit = reading.unit or unit
            samples.append((reading.ts, float(value) * _TO_KWH.get(unit, 0.001)))
        p = PROFILES.c
        async with self.db.session() as session:
            profile = await session.execute(
                select(p.ts, p["values"]).where(
                    p.meter_id == meter_id, p.profile == _LOAD_PROFILE, p.ts >= since
                )
            )
            scale = _TO_KWH.get(unit, 0.001)  # a profile column has its register's unit
            for ts, values in profile:
                value = values.get(_PROFILE_KEY) if isinstance(values, dict) else None
                if isinstance(value, int | float) and not isinstance(value, bool):
                    samples.append((ts, float(value) * scale))
        return samples

    async def billing_captures(self, meter_id: str, since: datetime) -> list[Sample]:
        """The billing profile's captures of the import register (kWh), oldest first."""
        p = PROFILES.c
        async with self.db.session() as session:
            rows = await session.execute(
                select(p.ts, p["values"])
                .where(p.meter_id == meter_id, p.profile == _BILLING_PROFILE, p.ts >= since)
                .order_by(p.ts)
            )
            out: list[Sample] = []
            for ts, values in rows:
                value = values.get(_PROFILE_KEY) if isinstance(values, dict) else None
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out.append((ts, float(value) * 0.001))
        return out

    async def prepaid_meters(self) -> list[PrepaidMeter]:
        m = METERS.c
        stmt = select(
            m.meter_id,
            m.last_balance,
            m.last_balance_currency,
            m.last_balance_at,
            m.confirmed_relay_state,
            m.desired_relay_state,
            m.last_reading_at,
            m.usage_model,
            m.usage_model_at,
            m.running_out_notified,
            m.anomalies_notified,
            m.last_statement_at,
            m.protected,
            m.last_price,
        ).order_by(m.meter_id)
        async with self.db.session() as session:
            rows = list(await session.execute(stmt))
        return [
            PrepaidMeter(
                meter_id=row.meter_id,
                last_balance=row.last_balance,
                last_balance_currency=row.last_balance_currency,
                last_balance_at=row.last_balance_at,
                confirmed_relay_state=row.confirmed_relay_state,
                desired_relay_state=row.desired_relay_state,
                last_reading_at=row.last_reading_at,
                usage=UsageSummary.from_json(row.usage_model),
                usage_model_at=row.usage_model_at,
                running_out_notified=row.running_out_notified,
                anomalies_notified=frozenset(
                    k for k in (row.anomalies_notified or "").split(",") if k
                ),
                last_statement_at=row.last_statement_at,
                protected=row.protected,
                last_price=row.last_price,
            )
            for row in rows
        ]

    async def usage_of(self, meter_id: str) -> tuple[UsageSummary | None, bool]:
        """The stored model and whether credit_running_out was sent this episode."""
        return (await self.usages_of([meter_id])).get(meter_id, (None, False))

    async def usages_of(
        self, meter_ids: Iterable[str]
    ) -> dict[str, tuple[UsageSummary | None, bool]]:
        """`usage_of` for many meters in one statement (a balance batch's forecasts), read in
        the caller's unit of work when it is in one (no second connection per event)."""
        wanted = sorted(set(meter_ids))
        out: dict[str, tuple[UsageSummary | None, bool]] = {}
        m = METERS.c
        async with self.db.reading() as session:
            for start in range(0, len(wanted), BATCH):
                rows = await session.execute(
                    select(m.meter_id, m.usage_model, m.running_out_notified).where(
                        m.meter_id.in_(wanted[start : start + BATCH])
                    )
                )
                for row in rows:
                    out[row.meter_id] = (
                        UsageSummary.from_json(row.usage_model),
                        bool(row.running_out_notified),
                    )
        return out

    async def mark_prepaid(self, meter_id: str, **values: Any) -> None:
        """Set what the customer was told / the model (columns of the meters row)."""
        allowed = {
            "running_out_notified",
            "anomalies_notified",
            "last_statement_at",
            "usage_model",
            "usage_model_at",
            "last_price",
        }
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"not a prepaid column: {sorted(unknown)}")
        async with self.db.transaction() as session:
            await session.execute(
                update(METERS).where(METERS.c.meter_id == meter_id).values(values)
            )
