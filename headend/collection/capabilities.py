"""What each meter has, from its object list, discovered once and cached in the database.

A poll then reads only what the meter has (no refused GETs, no profile reads on a meter
without profiles) and the relay's control mode is known before a command runs. Meters of one
model share one object list, so the in-memory cache keeps one set per distinct list: 100,000
meters of a few models cost a few sets, not 100,000."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cosem_objects.classes import DisconnectControl, Obises
from drivers.dlms_errors import DlmsError
from drivers.session import DlmsSession
from headend.storage import Repository

REDISCOVER_AFTER = dt.timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Capabilities:
    objects: frozenset[str]  # OBIS codes (dotted) the association's object list shows
    control_mode: int | None

    def has(self, obis: str) -> bool:
        return obis in self.objects

    def to_json(self) -> dict[str, Any]:
        return {"objects": sorted(self.objects)}


class CapabilityCache:
    def __init__(
        self,
        repository: Repository,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.repository = repository
        self._clock = clock
        self._by_meter: dict[str, Capabilities] = {}
        self._shared: dict[frozenset[str], frozenset[str]] = {}
        self.discoveries = 0

    def known(self, meter_id: str) -> Capabilities | None:
        return self._by_meter.get(meter_id)

    async def get(self, session: DlmsSession, meter_id: str) -> Capabilities | None:
        """The meter's capabilities: from memory, else the database, else its object list
        (read over this session and stored). None when the meter will not show its list."""
        cached = self._by_meter.get(meter_id)
        if cached is not None:
            return cached
        row = await self.repository.get_meter(meter_id)
        if row is not None and row.capabilities and row.capabilities_at is not None:
            if self._clock() - row.capabilities_at < REDISCOVER_AFTER:
                objects = row.capabilities.get("objects")
                if isinstance(objects, list):
                    return self._remember(meter_id, objects, row.control_mode)
        try:
            listing = await session.object_list()
        except DlmsError:
            return None  # the association may not read its object list: read blind
        objects = [str(obis) for _class_id, _version, obis in listing]
        control_mode: int | None = None
        if any(str(Obises.DISCONNECT_CONTROL) == o for o in objects):
            try:
                mode = await session.get(
                    DisconnectControl.CLASS_ID,
                    Obises.DISCONNECT_CONTROL,
                    DisconnectControl.CONTROL_MODE,
                )
                control_mode = int(mode.value)
            except (DlmsError, TypeError, ValueError):
                control_mode = None
        capabilities = self._remember(meter_id, objects, control_mode)
        await self.repository.save_capabilities(meter_id, capabilities.to_json(), control_mode)
        self.discoveries += 1
        return capabilities

    def _remember(
        self, meter_id: str, objects: list[Any], control_mode: int | None
    ) -> Capabilities:
        key = frozenset(str(o) for o in objects)
        shared = self._shared.setdefault(key, key)
        capabilities = Capabilities(shared, control_mode)
        self._by_meter[meter_id] = capabilities
        return capabilities
