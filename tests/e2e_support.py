"""Helpers for the head-end's collection and end-to-end tests: a real database with a
simulator fleet's inventory imported, an outbox that keeps what it is given, and waiting for
a condition with a deadline (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from db_support import temp_database

from headend.meters.inventory import import_inventory
from headend.meters.secrets import MasterKey
from headend.mqtt.outbox import OutboxMessage
from headend.storage import Database


@asynccontextmanager
async def fleet_database(
    dialect: str, tmp_path: Path, fleet: Any, master_key: MasterKey | None = None
) -> AsyncIterator[tuple[Database, MasterKey]]:
    """A migrated database holding `fleet`'s meters (its inventory, imported)."""
    key = master_key or MasterKey.generate()
    inventory = tmp_path / "inventory.csv"
    fleet.write_inventory(inventory)
    async with temp_database(dialect, tmp_path) as db:
        await import_inventory(db, inventory, key)
        yield db, key


class KeepingOutbox:
    """Keeps every message the Notifier leaves, payloads decoded (stands where the MQTT
    outbox would; only ``put``, the side the Notifier uses)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Any, bool]] = []

    def put(self, message: OutboxMessage) -> None:
        self.messages.append((message.topic, json.loads(message.payload), message.retain))

    def on(self, topic: str) -> list[Any]:
        return [p for t, p, _ in self.messages if t == topic]


async def eventually(
    check: Callable[[], Any],
    *,
    within: float = 30.0,
    every: float = 0.1,
    what: str = "condition",
) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `within` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(every)


@asynccontextmanager
async def database_url(dialect: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL a separate head-end (in-process or a subprocess) can open: a SQLite file, or a
    fresh PostgreSQL database created for the test and dropped afterwards."""
    if dialect == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'headend.db'}"
        return
    import uuid

    import asyncpg
    import pytest
    from db_support import postgres_url
    from sqlalchemy.engine import make_url

    admin = make_url(postgres_url())
    name = f"he_{uuid.uuid4().hex[:12]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), 10)
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at {admin} (HEADEND_TEST_POSTGRES_URL): {exc}")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def import_fleet(url: str, tmp_path: Path, fleet: Any, master_key: MasterKey) -> None:
    inventory = tmp_path / "inventory.csv"
    fleet.write_inventory(inventory)
    db = await Database.open(url)
    try:
        await import_inventory(db, inventory, master_key)
    finally:
        await db.dispose()
