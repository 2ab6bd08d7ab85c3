"""The integer keys readings are stored under: a meter's key and a register's (obis, unit) id.

Resolved once per batch of readings, in the batch's own transaction, by a lookup of the
batch's distinct meters and registers (a few hundred names for thousands of rows); missing
keys are inserted first (ON CONFLICT DO NOTHING: another writer may add the same key at the
same time). Nothing is cached across transactions: a key inserted by a transaction that then
rolls back, or a meter key removed with its meter, must never be used afterwards.

A meter that is not in the inventory gets no key: its key insert fails on the foreign key to
meters, which fails the batch as a reading for an unknown meter always has."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from headend.storage.core import METER_KEYS, REGISTERS, dialect_insert

__all__ = ["NO_UNIT", "meter_keys", "register_keys"]

NO_UNIT = ""  # registers.unit of a value without one (NULL would not be unique)
_CHUNK = 500  # names per IN (...) lookup


async def meter_keys(session: AsyncSession, meter_ids: Iterable[str]) -> dict[str, int]:
    """meter_id -> key for every meter given, creating keys for meters that have none."""
    wanted = sorted(set(meter_ids))
    found = await _meter_lookup(session, wanted)
    missing = [m for m in wanted if m not in found]
    if missing:
        await _insert_missing(session, METER_KEYS, ["meter_id"], [{"meter_id": m} for m in missing])
        found.update(await _meter_lookup(session, missing))
    return found


async def register_keys(
    session: AsyncSession, registers: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """(obis, unit) -> id for every register given ("" for no unit), creating missing ones."""
    wanted = sorted(set(registers))
    found = await _register_lookup(session, wanted)
    missing = [r for r in wanted if r not in found]
    if missing:
        await _insert_missing(
            session,
            REGISTERS,
            ["obis", "unit"],
            [{"obis": obis, "unit": unit} for obis, unit in missing],
        )
        found.update(await _register_lookup(session, missing))
    return found


# PostgreSQL: the names as one array parameter (a 500-name IN list is 500 parameters to bind
# and a long list for the planner).
_PG_METER_LOOKUP = text(
    "SELECT meter_id, id FROM meter_keys WHERE meter_id = ANY(CAST(:ids AS varchar[]))"
)


async def _meter_lookup(session: AsyncSession, meter_ids: Sequence[str]) -> dict[str, int]:
    if session.bind.dialect.name == "postgresql":
        rows = await session.execute(_PG_METER_LOOKUP, {"ids": list(meter_ids)})
        return {meter_id: key for meter_id, key in rows}
    found: dict[str, int] = {}
    for start in range(0, len(meter_ids), _CHUNK):
        chunk = meter_ids[start : start + _CHUNK]
        rows = await session.execute(
            select(METER_KEYS.c.meter_id, METER_KEYS.c.id).where(METER_KEYS.c.meter_id.in_(chunk))
        )
        found.update({meter_id: key for meter_id, key in rows})
    return found


async def _register_lookup(
    session: AsyncSession, registers: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for start in range(0, len(registers), _CHUNK):
        chunk = registers[start : start + _CHUNK]
        rows = await session.execute(
            select(REGISTERS.c.obis, REGISTERS.c.unit, REGISTERS.c.id).where(
                tuple_(REGISTERS.c.obis, REGISTERS.c.unit).in_(chunk)
            )
        )
        found.update({(obis, unit): key for obis, unit, key in rows})
    return found


async def _insert_missing(
    session: AsyncSession, table: Table, keys: list[str], values: list[dict[str, Any]]
) -> None:
    stmt = dialect_insert(session, table).on_conflict_do_nothing(index_elements=keys)
    await session.execute(stmt, values)
