"""How the daemon talks to a meter: its connection parameters (decrypted once, cached) and a
session opened under its line's lock, so there is one session at a time per meter and per
serial line, and relay commands (priority COMMAND) go before waiting polls.

Every session uses the installation's client system title and invocation counters reserved in
the database; an HLS meter whose frame counter is ahead of the stored counter (a restored or
new database) is caught up with once (drivers.connect.associated_session)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Any, cast

from sqlalchemy import select

from drivers.connect import associated_session
from drivers.session import DlmsSession
from headend.meters.counters import invocation_counter_store
from headend.meters.inventory import MeterRecord, decrypt_meter, load_meter
from headend.meters.line_locks import COMMAND, POLL, LineLocks
from headend.meters.secrets import MasterKey
from headend.storage import Database, Repository, installation
from headend.storage.models import Meter, meter_column

__all__ = ["MeterAccess"]

# What decrypt_meter needs, and no more: a refresh of a large fleet reads only these.
_CONNECTION_COLUMNS = tuple(getattr(Meter, meter_column(f.name)) for f in fields(MeterRecord))


class MeterAccess:
    def __init__(
        self,
        db: Database,
        repository: Repository,
        master_key: MasterKey,
        *,
        command_repository: Repository | None = None,
        locks: LineLocks | None = None,
        timeout_s: float = 10.0,
        system_title: bytes | None = None,
    ) -> None:
        self.db = db
        self.repository = repository
        # Relay commands reserve invocation counters through their own repository (its own
        # connection pool), so they never queue behind polls for a database connection.
        self.command_repository = repository if command_repository is None else command_repository
        self.master_key = master_key
        self.locks = locks or LineLocks()
        self.timeout_s = timeout_s
        self._system_title = system_title  # the installation's, read on first use
        self._records: dict[str, MeterRecord] = {}
        self._keys: dict[str, tuple[Any, ...]] = {}

    def __repr__(self) -> str:
        return f"MeterAccess(meters={len(self._records)}, timeout_s={self.timeout_s})"

    async def refresh(self) -> list[MeterRecord]:
        """Bring the cache in line with the inventory: new or changed meters are decrypted
        again, removed ones go. Only what a connection needs is read (no ORM objects), and
        only changed rows are decrypted, so a large fleet refreshes cheaply. A meter whose
        secrets the master key cannot open raises SecretsError naming it (at start: the
        daemon stops before anything connects)."""
        async with self.db.session() as session:
            rows = (await session.execute(select(*_CONNECTION_COLUMNS))).all()
        records: dict[str, MeterRecord] = {}
        keys: dict[str, tuple[Any, ...]] = {}
        for row in rows:
            key = tuple(row)
            meter_id = row.meter_id
            cached = self._records.get(meter_id)
            if cached is not None and self._keys.get(meter_id) == key:
                records[meter_id] = cached
            else:
                records[meter_id] = decrypt_meter(cast(Any, row), self.master_key)
            keys[meter_id] = key
        self._records, self._keys = records, keys
        return list(records.values())

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

    async def system_title(self) -> bytes:
        """The installation's client system title (made and stored on first use)."""
        if self._system_title is None:
            self._system_title = await installation.system_title(self.db)
        return self._system_title

    @asynccontextmanager
    async def session(
        self, record: MeterRecord, priority: int = POLL
    ) -> AsyncIterator[DlmsSession]:
        """An associated session; the line stays locked until the association is released."""
        async with self.locks.hold(record.line, priority):
            async with associated_session(
                record.connection(client_system_title=await self.system_title()),
                timeout=self.timeout_s,
                ic_store=invocation_counter_store(
                    self.command_repository if priority <= COMMAND else self.repository,
                    record.meter_id,
                ),
            ) as session:
                yield session
