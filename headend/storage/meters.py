"""Meters as the repository reads them (the inventory writes them: headend.meters.inventory),
and the capabilities a meter's object list says it has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update

from headend.storage.core import Store
from headend.storage.models import Meter
from headend.storage.records import MeterRow, json_safe

__all__ = ["Meters", "UnknownMeter"]


class UnknownMeter(LookupError):
    """The meter id is not in the inventory."""


class Meters(Store):
    async def get_meter(self, meter_id: str) -> MeterRow | None:
        async with self.db.session() as session:
            row = await session.get(Meter, meter_id)
            return None if row is None else MeterRow.of(row)

    async def list_meters(self) -> list[MeterRow]:
        async with self.db.session() as session:
            rows = (await session.scalars(select(Meter).order_by(Meter.meter_id))).all()
            return [MeterRow.of(r) for r in rows]

    async def save_capabilities(
        self, meter_id: str, capabilities: Mapping[str, Any], control_mode: int | None = None
    ) -> None:
        """Cache what the meter's object list says it has (and its relay's control mode)."""
        now = self.now()
        async with self.db.transaction() as session:
            result = await session.execute(
                update(Meter)
                .where(Meter.meter_id == meter_id)
                .values(
                    capabilities=json_safe(dict(capabilities)),
                    capabilities_at=now,
                    control_mode=control_mode,
                    updated_at=now,
                )
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise UnknownMeter(meter_id)

    async def update_meter_host(self, meter_id: str, host: str) -> bool:
        """A meter called in from a new address (dynamic IP): poll it there from now on. Its
        line moves with it when it was the default one of its old address. Returns whether
        anything changed."""
        now = self.now()
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(Meter.host, Meter.port, Meter.line).where(Meter.meter_id == meter_id)
                )
            ).first()
            if row is None or row.host == host:
                return False
            values: dict[str, Any] = {"host": host, "updated_at": now}
            if row.line == f"tcp:{row.host}:{row.port}":
                values["line"] = f"tcp:{host}:{row.port}"
            await session.execute(update(Meter).where(Meter.meter_id == meter_id).values(**values))
            return True
