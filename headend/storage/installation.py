"""This installation's own facts, made once and kept (the `installation` table): above all the
client system title that every HLS association of every process of the installation (the
daemon, its cluster members, the CLI) uses.

The title is half of every GCM nonce, so it must not be a constant shared by every copy of the
software: two installations with one title and a meter key in common (a meter moved, a key
from a vendor's default set) would reuse nonces. Made at random on first use, it stays with the
database, as the invocation counters it goes with do."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from sqlalchemy import Table, select

from drivers.connect import new_system_title
from headend.storage.core import dialect_insert
from headend.storage.db import Database
from headend.storage.models import InstallationSetting

__all__ = ["SYSTEM_TITLE", "InstallationError", "installation_setting", "system_title"]

SYSTEM_TITLE = "system_title"  # 16 hex digits

_SETTINGS = cast(Table, InstallationSetting.__table__)


class InstallationError(RuntimeError):
    """A stored installation setting is not what it must be (edited by hand, corrupt)."""


async def installation_setting(db: Database, key: str, make: Callable[[], str]) -> str:
    """The value stored under `key`; the first caller stores `make()`. Callers racing on a
    fresh database (two processes starting) all get the one value that was stored."""
    query = select(_SETTINGS.c.value).where(_SETTINGS.c.key == key)
    async with db.session() as session:
        value = (await session.execute(query)).scalar_one_or_none()
    if value is not None:
        return str(value)
    async with db.transaction() as session:
        insert = dialect_insert(session, _SETTINGS).values(key=key, value=make())
        await session.execute(insert.on_conflict_do_nothing(index_elements=["key"]))
        return str((await session.execute(query)).scalar_one())


async def system_title(db: Database) -> bytes:
    """The installation's client system title (8 bytes), made on first use."""
    text = await installation_setting(db, SYSTEM_TITLE, lambda: new_system_title().hex())
    try:
        title = bytes.fromhex(text)
    except ValueError:
        title = b""
    if len(title) != 8:
        raise InstallationError(
            f"installation setting {SYSTEM_TITLE!r} must be 16 hex digits, got {text!r}"
        )
    return title
