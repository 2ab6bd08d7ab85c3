"""Real databases for tests: a SQLite file in tmp_path, or a fresh schema in the local
PostgreSQL (HEADEND_TEST_POSTGRES_URL, default postgresql+asyncpg://postgres@127.0.0.1:5432/test).

    async with temp_database("postgresql", tmp_path) as db:   # headend.storage.Database
        ...

PostgreSQL tests skip (with the reason) when the server cannot be reached."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from headend.storage import Database

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DIALECTS = ("sqlite", "postgresql")


def postgres_url() -> str:
    return os.environ.get("HEADEND_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


async def _admin(url: str, sql: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@asynccontextmanager
async def temp_database(
    dialect: str, tmp_path: Path, *, migrate: bool = True
) -> AsyncIterator[Database]:
    if dialect == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'headend.db'}")
        try:
            if migrate:
                await db.migrate()
            yield db
        finally:
            await db.dispose()
        return
    url = postgres_url()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        await _admin(url, f'CREATE SCHEMA "{schema}"')
    except Exception as exc:  # any failure to reach the server means: skip
        pytest.skip(
            f"PostgreSQL not reachable at {url} (set HEADEND_TEST_POSTGRES_URL): "
            f"{type(exc).__name__}: {exc}"
        )
    db = Database(url, schema=schema)
    try:
        if migrate:
            await db.migrate()
        yield db
    finally:
        await db.dispose()
        await _admin(url, f'DROP SCHEMA "{schema}" CASCADE')
