"""How the daemon talks to a meter: its connection parameters (decrypted once, cached) and a
session opened under its line's lock, so there is one session at a time per meter and per
serial line, and relay commands (priority COMMAND) go before waiting polls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from drivers.connect import open_session
from drivers.session import DlmsSession
from headend.ic_store import invocation_counter_store
from headend.inventory import MeterRecord, load_meter, load_meters
from headend.line_locks import POLL, LineLocks
from headend.secrets import MasterKey
from headend.storage import Database, Repository

__all__ = ["MeterAccess"]


class MeterAccess:
    def __init__(
        self,
        db: Database,
        repository: Repository,
        master_key: MasterKey,
        *,
        locks: LineLocks | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.db = db
        self.repository = repository
        self.master_key = master_key
        self.locks = locks or LineLocks()
        self.timeout_s = timeout_s
        self._records: dict[str, MeterRecord] = {}

    def __repr__(self) -> str:
        return f"MeterAccess(meters={len(self._records)}, timeout_s={self.timeout_s})"

    async def refresh(self) -> list[MeterRecord]:
        """Reload the inventory (new or changed meters show up; removed ones go)."""
        records = await load_meters(self.db, self.master_key)
        self._records = {r.meter_id: r for r in records}
        return records

    @property
    def meter_ids(self) -> list[str]:
        return list(self._records)

    async def record(self, meter_id: str) -> MeterRecord | None:
        record = self._records.get(meter_id)
        if record is None:
            record = await load_meter(self.db, meter_id, self.master_key)
            if record is not None:
                self._records[meter_id] = record
        return record

    @asynccontextmanager
    async def session(
        self, record: MeterRecord, priority: int = POLL
    ) -> AsyncIterator[DlmsSession]:
        """An associated session; the line stays locked until the association is released."""
        async with self.locks.hold(record.line, priority):
            session = open_session(
                record.connection(),
                timeout=self.timeout_s,
                ic_store=invocation_counter_store(self.repository, record.meter_id),
            )
            async with session:
                yield session
